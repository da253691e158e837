//! Test support: starting real services on loopback and unique namespaces.

pub mod fleet;
pub mod s3;
