//! `engage-download`: the download stage worker binary.
#![forbid(unsafe_code)]

fn main() {}
