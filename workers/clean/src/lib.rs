//! The clean stage: pure domain logic (no I/O) and the worker stage built on the shared runtime.
#![forbid(unsafe_code)]

pub mod domain;

pub mod plan;
pub mod stage;

pub use stage::CleanStage;
