//! The built-in certificate authority: one command makes a cluster's whole PKI.
//!
//! `pki` is a leaf: it knows files and certificates, no tokio, server or network. The server
//! and the TLS layer consume what it writes (see [`layout`] for the file names) and share its
//! identity rules ([`Identity`]).
//!
//! Every write is atomic and durable (temp file, fsync, rename, fsync of the directory); keys
//! are created with mode 0600 in 0700 directories and refused when group or others can read
//! them.

mod authority;
mod bundle;
mod certinfo;
mod crl;
mod error;
pub mod files;
pub mod layout;
mod names;
mod profile;
pub mod rotation;
mod verify;

pub use authority::{
    Authority, InitOptions, InitReport, Issued, LeafSpec, current_certificates,
    default_member_sans, init, kubernetes_members, local_members, read_ca_cert,
};
pub use bundle::pkcs12;
pub use certinfo::{CertInfo, hex, normalize_serial, parse_cert_pem};
pub use crl::{CrlState, REASONS, RevokedEntry, parse_reason, read as read_crl, reason_name};
pub use error::PkiError;
pub use layout::PkiLayout;
pub use names::{Identity, Kind, San, parse_trust_domain, validate_name};
pub use profile::{Profiles, profiles};
pub use verify::{Problem, Trust, verify};

/// Formats seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_time(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => unix.to_string(),
    }
}

/// Seconds since the epoch, now.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
