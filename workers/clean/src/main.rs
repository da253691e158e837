//! `engage-clean`: the clean stage worker binary.
#![forbid(unsafe_code)]

fn main() {}
