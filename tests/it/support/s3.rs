//! Starts a real S3-compatible server (s3s-fs) on a free loopback port for a test.
