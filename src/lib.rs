//! rampart: a TLS-first, Raft-replicated key-value store that speaks the etcd v3 API.
//!
//! One binary is the store, its own certificate authority, its installer and its client.
//!
//! ```text
//!   cli ──(client side of api)──▶ member
//!   server ──▶ api ──▶ raft ──▶ mvcc, lease (a member: gRPC services, replication, state)
//!   tls, pki                                 (leaves, used by server and cli)
//! ```
//!
//! Dependency rules, kept on purpose:
//! - `pki` knows no tokio, server or network: it is the certificate authority as pure functions
//!   over files.
//! - `tls` builds on `pki` (file rules, identity syntax) and knows no server, raft or storage:
//!   rustls configs, the acceptor and the dialer, and who a peer certificate names.
//! - `mvcc` knows no tonic, openraft or protobuf types.
//! - only `raft` names openraft types; `api` converts protobuf to domain types and back.
//! - `anyhow` appears only in `main.rs` and `cli`; every other module has its own `thiserror` enum.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod lease;
pub mod metrics;
pub mod mvcc;
pub mod pki;
pub mod raft;
pub mod server;
pub mod tls;
