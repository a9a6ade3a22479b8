//! The etcd v3 gRPC API: generated protobuf types and the services rampart implements.

pub mod proto;
pub mod status;
