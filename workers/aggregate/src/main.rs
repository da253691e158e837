//! `engage-aggregate`: the aggregate stage worker binary.
#![forbid(unsafe_code)]

fn main() {}
