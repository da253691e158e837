//! The shared library of the engagement fleet.
#![forbid(unsafe_code)]
