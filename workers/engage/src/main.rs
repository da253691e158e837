//! `engage`: the producer and operator command-line tool.
#![forbid(unsafe_code)]

fn main() {}
