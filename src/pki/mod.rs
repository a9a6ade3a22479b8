//! The built-in certificate authority.
