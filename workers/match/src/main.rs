//! `engage-match`: the match stage worker binary.
#![forbid(unsafe_code)]

fn main() {}
