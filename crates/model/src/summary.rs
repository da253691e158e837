//! The batch summary (`summary.json` and the text `engage run` prints): counts
//! per stage and per rejection or failure reason. The same type is written by
//! `engage run` and by the fleet's report job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Counts of the clean stage over all pieces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityCounts {
    /// Records read (blank lines excluded).
    pub read: u64,
    /// Records kept (unique responses, English, selected, well-formed).
    pub kept: u64,
    /// Dropped as not English.
    pub non_english: u64,
    /// Dropped as outside the selection.
    pub deselected: u64,
    /// Dropped as a repeat of a kept response.
    pub duplicates: u64,
    /// Rejected, by reason.
    pub rejected: BTreeMap<String, u64>,
}

impl ActivityCounts {
    /// Adds another piece's counts.
    pub fn merge(&mut self, o: &ActivityCounts) {
        self.read += o.read;
        self.kept += o.kept;
        self.non_english += o.non_english;
        self.deselected += o.deselected;
        self.duplicates += o.duplicates;
        for (k, v) in &o.rejected {
            *self.rejected.entry(k.clone()).or_insert(0) += v;
        }
    }
}

/// Counts of the sessions file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCounts {
    /// Well-formed sessions.
    pub kept: u64,
    /// Rejected rows, by reason.
    pub rejected: BTreeMap<String, u64>,
}

/// Paid-analysis accounting (Gemini): calls made and saved, tokens used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostCounts {
    /// Model calls made for this batch.
    pub calls: u64,
    /// Items answered from the durable result cache.
    pub cache_hits: u64,
    /// Items never sent because the pre-filter judged them (silent, too short).
    pub prefiltered: u64,
    /// Prompt tokens used.
    pub prompt_tokens: u64,
    /// Output tokens used.
    pub output_tokens: u64,
}

/// The whole batch summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Activity log counts.
    pub activity: ActivityCounts,
    /// Sessions counts.
    pub sessions: SessionCounts,
    /// Kept responses matched to a session.
    pub matched: u64,
    /// Kept responses with no session within the tolerance.
    pub unmatched: u64,
    /// Matched responses without audio.
    pub no_audio: u64,
    /// Items analyzed successfully.
    pub analyzed: u64,
    /// Items failed, by reason.
    pub failed: BTreeMap<String, u64>,
    /// Learners with at least one kept response.
    pub learners: u64,
    /// Rows in report.csv.
    pub report_rows: u64,
    /// Cost accounting of the analyzer.
    pub cost: CostCounts,
}

impl Summary {
    /// A short human-readable rendering.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let a = &self.activity;
        s += &format!(
            "activity: {} read, {} kept, {} non-English, {} deselected, {} duplicates, {} rejected\n",
            a.read,
            a.kept,
            a.non_english,
            a.deselected,
            a.duplicates,
            a.rejected.values().sum::<u64>()
        );
        for (r, n) in &a.rejected {
            s += &format!("  rejected {r}: {n}\n");
        }
        s += &format!(
            "sessions: {} kept, {} rejected\n",
            self.sessions.kept,
            self.sessions.rejected.values().sum::<u64>()
        );
        for (r, n) in &self.sessions.rejected {
            s += &format!("  rejected {r}: {n}\n");
        }
        s += &format!(
            "match: {} matched, {} unmatched, {} without audio\n",
            self.matched, self.unmatched, self.no_audio
        );
        s += &format!(
            "analysis: {} analyzed, {} failed\n",
            self.analyzed,
            self.failed.values().sum::<u64>()
        );
        for (r, n) in &self.failed {
            s += &format!("  failed {r}: {n}\n");
        }
        let c = &self.cost;
        if c.calls + c.cache_hits + c.prefiltered > 0 {
            s += &format!(
                "cost: {} model calls, {} saved by cache, {} by pre-filter, {} prompt + {} output tokens\n",
                c.calls, c.cache_hits, c.prefiltered, c.prompt_tokens, c.output_tokens
            );
        }
        s += &format!(
            "report: {} learners, {} rows\n",
            self.learners, self.report_rows
        );
        s
    }
}
