//! The clean stage: pure domain logic (no I/O) and the worker stage built on the shared runtime.
#![forbid(unsafe_code)]
