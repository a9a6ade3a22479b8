//! A member: configuration, start-up, listeners.

pub mod config;
pub mod ids;

pub use config::{ClusterState, ConfigError, MemberConfig, ServeArgs, TlsPaths};
