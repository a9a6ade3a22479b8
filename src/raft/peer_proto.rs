//! The peer protocol (`proto/rampart/peer/v1/peer.proto`), generated at build time.

// Generated code: its docs come from the .proto comments, which do not cover every item.
#![allow(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/rampart.peer.v1.rs"));
