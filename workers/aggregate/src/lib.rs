//! The aggregate stage: pure domain logic (no I/O) and the worker stage built on the shared runtime.
//!
//! - [`domain`]: per-(learner, phase) report rows from matched records and
//!   analysis outcomes (docs/data-contracts.md "Report").
//! - [`report`]: the output files (`report.csv`, `report.json`, `matched.csv`,
//!   `analysis.csv`) over any [`std::io::Write`].
#![forbid(unsafe_code)]

pub mod domain;
pub mod outputs;
pub mod report;
pub mod stage;

pub use domain::{
    ReportRow, Weights, WeightsError, aggregate_all, aggregate_learner, row_order, sort_rows,
};
pub use report::{
    ReportError, format_float, write_analysis_csv, write_matched_csv, write_report_csv,
    write_report_json,
};
pub use stage::AggregateStage;
