//! Object storage behind URIs: `s3://bucket/key` (aws-sdk-s3) and `file:///dir` (local).
