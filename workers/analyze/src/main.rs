//! `engage-analyze`: the analyze stage worker binary.
#![forbid(unsafe_code)]

fn main() {}
