//! The etcd v3 gRPC API: generated protobuf types and the services rampart implements.
//!
//! `api` converts protobuf to the store's domain types and back ([`convert`]); failures become
//! gRPC statuses with etcd's exact text in one place ([`status`]).

pub mod auth;
pub mod authz;
pub mod cluster;
pub mod convert;
pub mod core;
pub mod election;
pub mod grpc_metrics;
pub mod health;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod proto;
pub mod recipes;
pub mod status;
pub mod stream;
pub mod watch;
