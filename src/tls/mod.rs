//! TLS for every port: rustls configs, our own acceptor, and who the caller is.
//!
//! The policy is fixed, not configurable: ring as the only crypto provider, TLS 1.3 only,
//! ALPN `h2`, a client certificate required on every port and verified against the cluster CA
//! and its CRL. On top of that WebPki check, the identity a certificate names
//! (`spiffe://<cluster>/member|user/<name>`, else its CN) is parsed in one function,
//! [`identity`].
//!
//! ```text
//!   TlsFiles --Material::load--> Material --server_config(policy)--> ServerConfig
//!                                        \--client_config---------> ClientConfig
//!   TcpListener + watch<ServerConfig> --TlsIncoming--> TlsConnection (PeerInfo) --> tonic
//!   connect_channel(url, ClientConfig) --> tonic Channel
//! ```
//!
//! `tls` is a leaf beside `pki`: it uses `pki` for file rules and identity syntax and knows
//! nothing of the server, raft or storage.

mod acceptor;
mod caller;
mod config;
mod connector;
mod error;
mod material;

pub use acceptor::{
    DEFAULT_HANDSHAKE_TIMEOUT, ListenerLimits, LiveConnections, PeerInfo, TlsConnection,
    TlsIncoming,
};
pub use caller::{Caller, PeerIdentity, caller_from_cert, identity};
pub use config::{
    ALPN_H2, ClientPolicy, PROTOCOL_VERSIONS, client_config, client_verifier, crypto_provider,
    server_config,
};
pub use connector::{
    DEFAULT_CONNECT_TIMEOUT, TlsDialer, connect_channel, https_endpoint, lazy_channel,
};
pub use error::{IdentityError, TlsError};
pub use material::{Material, TlsFiles};

#[cfg(test)]
mod tests;
