//! The aggregate stage: pure domain logic (no I/O) and the worker stage built on the shared runtime.
//!
//! - [`domain`]: per-(learner, phase) report rows from matched records and
//!   analysis outcomes (docs/data-contracts.md "Report").
//! - [`rollup`]: the learner rows document, missing states and the batch
//!   summary's counters, rolled up from the stage's documents.
//! - [`stage`] (a learner's job) and [`report_job`] (the batch's outputs):
//!   the worker stage's I/O glue.
//! - [`report`]: the output files (`report.csv`, `report.json`, `matched.csv`,
//!   `analysis.csv`) over any [`std::io::Write`].
//! - [`html`]: `report.html`, the batch's self-contained report page.
//! - [`matched_runs`]: `matched.csv` from sorted runs and a k-way merge, for
//!   batches not held in memory.
#![forbid(unsafe_code)]

pub mod domain;
pub mod html;
pub mod matched_runs;
pub mod outputs;
pub mod report;
pub mod report_job;
pub mod rollup;
pub mod stage;

pub use domain::{
    ReportRow, Weights, WeightsError, aggregate_all, aggregate_learner, row_order, sort_rows,
};
pub use report::{
    MatchedView, ReportError, SessionView, format_float, matched_cells, write_analysis_csv,
    write_matched_csv, write_report_csv, write_report_json,
};
pub use rollup::LearnerRows;
pub use stage::AggregateStage;
