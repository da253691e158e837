//! The download stage: pure rules in [`domain`], the worker stage in [`stage`].
#![forbid(unsafe_code)]

pub mod domain;
pub mod stage;

pub use stage::DownloadStage;
