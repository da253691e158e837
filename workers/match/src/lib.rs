//! The match stage: pure domain logic (no I/O) and the worker stage built on the shared runtime.
//!
//! [`domain`] pairs each response with its learner's nearest session, with the
//! semantics of pandas `merge_asof(direction="nearest", tolerance=5min)`.
#![forbid(unsafe_code)]

pub mod domain;
pub mod stage;

pub use domain::{
    DEFAULT_TOLERANCE_NS, MatchStats, PARALLEL_THRESHOLD, SameInstantRule, SessionIndex,
    match_positions, match_records,
};
pub use stage::MatchStage;
