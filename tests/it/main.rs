//! Integration tests: the real `rampart` binary, real TLS stacks (OpenSSL, Go's via etcd),
//! with PKIs minted at test time. One binary, one harness.

mod attack;
mod auth;
mod cluster;
mod door;
mod durability;
mod etcd_client;
mod harness;
mod interop_etcd;
mod interop_openssl;
mod k8s;
mod lease;
mod lock;
mod member;
mod metrics;
mod peer_door;
mod pki_cli;
mod reload;
mod rotation;
mod snapshot;
mod systemd;
mod watch;
