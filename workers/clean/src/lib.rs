//! The clean stage: pure domain logic (no I/O: [`domain`], [`plan`]), the
//! blocking spool step ([`spool`]) and the worker stage built on the shared
//! runtime ([`stage`], its batch job in [`batch`]).
#![forbid(unsafe_code)]

pub mod batch;
pub mod domain;
pub mod plan;
mod prepass;
pub mod spool;
pub mod stage;
mod store;

pub use stage::CleanStage;
