//! Test support: a Gemini-wire-compatible fake server.
#![forbid(unsafe_code)]
