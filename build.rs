//! Generates the etcd v3 API and rampart's peer protocol (messages, clients and servers) from
//! `proto/`.
//!
//! `protox` parses the .proto files in pure Rust, so building needs no system `protoc`.

use std::error::Error;

const PROTO_ROOT: &str = "proto";

const PROTO_FILES: &[&str] = &[
    "proto/etcd/api/mvccpb/kv.proto",
    "proto/etcd/api/authpb/auth.proto",
    "proto/etcd/api/etcdserverpb/rpc.proto",
    "proto/etcd/api/v3lock/v3lockpb/v3lock.proto",
    "proto/etcd/api/v3election/v3electionpb/v3election.proto",
    "proto/rampart/peer/v1/peer.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed=build.rs");

    let descriptors = protox::compile(PROTO_FILES, [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;
    Ok(())
}
