//! A member: configuration, storage, start-up, listeners.

pub mod config;
pub mod ids;
pub mod member;
pub mod notify;
pub mod reload;
pub mod restore;
pub mod storage;

pub use config::{ClusterState, ConfigError, MemberConfig, ServeArgs, TlsPaths};
pub use member::{ServeError, serve};
