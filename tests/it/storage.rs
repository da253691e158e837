//! Storage against a real S3-compatible server and the local file store.
