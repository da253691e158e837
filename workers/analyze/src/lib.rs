//! The analyze stage: pure domain logic and the worker stage built on the shared runtime.
//!
//! - [`acoustic`]: the offline acoustic analyzer (pure; also the free pre-filter).
//! - [`gemini`]: the Gemini REST client (our own, reqwest + serde).
//! - [`paid`]: the Gemini path of the stage (lease, fleet-wide limit, dispositions).
//! - [`stage`]: the worker stage (result cache first, then the analyzer).
#![forbid(unsafe_code)]

pub mod acoustic;
pub mod gemini;
pub mod paid;
pub mod ratelimit;
pub mod stage;

pub use stage::{AnalyzeStage, Analyzer};
