//! Integration tests against real RabbitMQ, Redis, an S3-compatible server and
//! the Gemini-wire fake. One test binary (zero-to-production style); every test
//! uses its own namespace so tests run in parallel without interfering.

mod control;
mod corpus;
mod csv_injection;
mod dashboard;
mod fleet;
mod gemini;
mod ledger;
mod ops;
mod ops_cli;
mod prepass;
mod presence;
mod quota;
mod report_html;
mod resilience;
mod run_match;
mod secrets;
mod storage;
mod support;
