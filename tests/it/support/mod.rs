//! Test support: starting real services on loopback and unique namespaces,
//! and driving headless Chromium.

pub mod browser;
pub mod fleet;
pub mod s3;
