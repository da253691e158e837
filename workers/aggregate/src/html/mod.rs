//! `report.html`: one self-contained page over the batch's data, rendered in
//! memory with no I/O, so the fleet's report job and `engage run` write the
//! same bytes for the same input.
//!
//! The page needs no network (a strict Content-Security-Policy forbids every
//! fetch), no JavaScript to read (a short inline script only adds sorting and
//! filtering to the learner table) and works from `file://` or as an e-mail
//! attachment. Charts are inline SVG. Everything from the data is escaped.
//! Its size is bounded: learner details are given for the first learners (by
//! id) within [`Limits`]; the learner table has one row per learner.
//!
//! - [`escape`]: HTML escaping of untrusted text;
//! - [`stats`]: five-number summaries and number formatting;
//! - [`palette`]: colour-blind-safe colours;
//! - [`svg`]: the charts;
//! - [`digest`]: per-phase and per-learner figures;
//! - [`rejects`]: order-independent examples of rejected records;
//! - [`page`]: the layout.
//!
//! Only figures that are the same in the fleet and in `engage run` are shown:
//! no time of rendering, no rejects' line numbers (they count from a piece's
//! start), and the model-call section only for a paid analyzer (its cache
//! counts depend on what earlier batches analyzed).

mod digest;
mod escape;
mod page;
mod palette;
mod rejects;
mod stats;
mod svg;

use std::collections::BTreeMap;

use engage_model::summary::Summary;
use engage_model::{AnalysisOutcome, MatchedRecord};

use crate::domain::ReportRow;

pub use escape::text as escape_text;
pub use rejects::{EXAMPLES_PER_REASON, RejectExample, RejectExamples};

/// The output file's name.
pub const REPORT_HTML: &str = "report.html";

/// Bounds on the page's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Learners with a detail section, at most (the first by id).
    pub detail_learners: usize,
    /// Bytes of learner details, at most (the first learner that would pass
    /// it ends the details).
    pub detail_bytes: usize,
    /// Responses listed per learner detail.
    pub responses_per_learner: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            detail_learners: 1000,
            detail_bytes: 2 << 20,
            responses_per_learner: 50,
        }
    }
}

/// What the page is built from: the same data as the other output files.
#[derive(Debug, Clone, Copy)]
pub struct HtmlInput<'a> {
    /// Every kept response, matched or not (any order).
    pub records: &'a [MatchedRecord],
    /// Each analyzed or failed item's outcome, by response id.
    pub outcomes: &'a BTreeMap<String, AnalysisOutcome>,
    /// The report rows (any order).
    pub rows: &'a [ReportRow],
    /// The batch summary.
    pub summary: &'a Summary,
    /// Examples of rejected records.
    pub rejects: &'a RejectExamples,
}

/// Renders `report.html` with the default [`Limits`].
pub fn render_html(input: &HtmlInput<'_>) -> String {
    render_html_with(input, &Limits::default())
}

/// Renders `report.html` within `limits`.
pub fn render_html_with(input: &HtmlInput<'_>, limits: &Limits) -> String {
    page::render(input, limits)
}

#[cfg(test)]
mod tests;
