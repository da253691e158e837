//! Aggregation: one report row per (learner, phase) from matched responses and
//! their analysis outcomes, with the rules of docs/data-contracts.md "Report".
//!
//! Rules, as implemented:
//!
//! - Input records are deduplicated by `response_id` first (the same response
//!   can arrive from two clean pieces); unmatched records are ignored. If two
//!   copies of one response differ (they should not), the copy kept is chosen
//!   by content, never by input position: a matched copy, then the smallest
//!   `(session created_at, session_id, phase, accuracy)`.
//! - A learner's phase is the matched session's `phase`. Within a phase,
//!   responses are visited in `(timestamp, response_id)` order; every sum is
//!   taken in that order, so the floats are identical whatever the input order
//!   (a distributed run and a single-process run give the same bytes).
//! - `avg_accuracy` is the mean over the responses that have a finite
//!   accuracy; `avg_emotional_score` / `avg_engagement_score` over the
//!   responses whose outcome is [`AnalysisOutcome::Ok`] with a result that
//!   passes [`AnalysisResult::validate`] (an out-of-range result is not
//!   trusted). `None` (an empty cell) when there is none.
//! - `dominant_emotion` / `engagement_state`: the most frequent value among
//!   those trusted results; a tie goes to the value seen first, i.e. on the
//!   response with the earliest timestamp, then the smallest `response_id`.
//! - `session_duration_s`: last minus first response timestamp of the phase.
//! - Phases of a learner are ordered by their first response (then by name).
//!   `gap_to_next_phase_s` is the next phase's first timestamp minus this
//!   phase's last timestamp, `None` for the learner's last phase. When a
//!   learner goes back to an earlier phase, phases interleave in time and
//!   the gap is negative: it is reported as is, not clamped.
//! - `combined_score`: `Σ wᵢ·xᵢ / Σ wᵢ` over the parts present (engagement,
//!   emotional, accuracy averages), so missing parts are re-weighted away;
//!   `None` when no part is present or the present parts' weights sum to 0.
//!   The result is clamped to the parts' `[min, max]` against rounding.
//! - Rows are sorted by `user_id`, then phase start, then phase name.

use std::cmp::Ordering;
use std::collections::HashMap;

use engage_model::time::seconds_between;
use engage_model::{
    AnalysisOutcome, AnalysisResult, DominantEmotion, EngagementState, MatchedRecord, SessionMatch,
    Timestamp,
};
use serde::{Deserialize, Serialize};

/// Why a [`Weights`] value is not usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WeightsError {
    /// A weight is NaN or infinite.
    #[error("weight `{0}` is not a finite number")]
    NotFinite(&'static str),
    /// A weight is below zero.
    #[error("weight `{0}` is negative")]
    Negative(&'static str),
    /// Every weight is zero, so no combined score could be computed.
    #[error("all weights are zero")]
    AllZero,
}

/// Weights of the combined score's three parts (re-weighted over the parts present).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    /// Weight of `avg_engagement_score` (default 0.4).
    pub engagement: f64,
    /// Weight of `avg_emotional_score` (default 0.2).
    pub emotional: f64,
    /// Weight of `avg_accuracy` (default 0.4).
    pub accuracy: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            engagement: 0.4,
            emotional: 0.2,
            accuracy: 0.4,
        }
    }
}

impl Weights {
    /// Checks that every weight is finite and non-negative, and not all are zero.
    pub fn validate(&self) -> Result<(), WeightsError> {
        for (name, w) in self.named() {
            if !w.is_finite() {
                return Err(WeightsError::NotFinite(name));
            }
            if w < 0.0 {
                return Err(WeightsError::Negative(name));
            }
        }
        if self.named().iter().all(|&(_, w)| w == 0.0) {
            return Err(WeightsError::AllZero);
        }
        Ok(())
    }

    fn named(&self) -> [(&'static str, f64); 3] {
        [
            ("engagement", self.engagement),
            ("emotional", self.emotional),
            ("accuracy", self.accuracy),
        ]
    }

    /// The weighted mean of the parts present, re-weighted over them; `None`
    /// if no part is present or their weights sum to zero (or are not usable).
    pub fn combine(
        &self,
        engagement: Option<f64>,
        emotional: Option<f64>,
        accuracy: Option<f64>,
    ) -> Option<f64> {
        let parts = [
            (self.engagement, engagement),
            (self.emotional, emotional),
            (self.accuracy, accuracy),
        ];
        let (mut num, mut den) = (0.0, 0.0);
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for (w, x) in parts {
            if let Some(x) = x {
                num += w * x;
                den += w;
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
        let mean = num / den;
        (den > 0.0 && mean.is_finite()).then(|| mean.clamp(lo, hi))
    }
}

/// One row of the report: one learner in one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRow {
    /// The learner.
    pub user_id: String,
    /// The learning phase.
    pub phase: String,
    /// Matched responses of the learner in this phase.
    pub responses: u64,
    /// Mean accuracy over the responses that have one.
    pub avg_accuracy: Option<f64>,
    /// Mean emotional score over the analyzed responses.
    pub avg_emotional_score: Option<f64>,
    /// Mean engagement score over the analyzed responses.
    pub avg_engagement_score: Option<f64>,
    /// Most frequent emotion (ties: the one seen first in time).
    pub dominant_emotion: Option<DominantEmotion>,
    /// Most frequent engagement state (ties: the one seen first in time).
    pub engagement_state: Option<EngagementState>,
    /// Last minus first response timestamp of the phase, in seconds.
    pub session_duration_s: f64,
    /// Next phase's first timestamp minus this phase's last, in seconds
    /// (negative when phases interleave); `None` for the last phase.
    pub gap_to_next_phase_s: Option<f64>,
    /// Weighted mean of engagement, emotional score and accuracy, re-weighted
    /// over the parts present.
    pub combined_score: Option<f64>,
    /// First response timestamp of the phase (orders phases; not a report column).
    pub first_response_at: Timestamp,
    /// Last response timestamp of the phase (not a report column).
    pub last_response_at: Timestamp,
}

/// The report order: `user_id`, then phase start, then phase name.
pub fn row_order(a: &ReportRow, b: &ReportRow) -> Ordering {
    (&a.user_id, a.first_response_at, &a.phase).cmp(&(&b.user_id, b.first_response_at, &b.phase))
}

/// Sorts rows into the report order (e.g. after concatenating per-learner results).
pub fn sort_rows(rows: &mut [ReportRow]) {
    rows.sort_by(row_order);
}

/// Aggregates one learner's records.
///
/// A learner's rows depend only on that learner's records, so aggregating each
/// learner separately and [`sort_rows`] over the concatenation gives exactly
/// [`aggregate_all`]'s output. Records of several learners are not mixed:
/// each learner gets their own rows, as in [`aggregate_all`].
pub fn aggregate_learner(
    records: &[MatchedRecord],
    outcomes: &HashMap<String, AnalysisOutcome>,
    weights: &Weights,
) -> Vec<ReportRow> {
    aggregate_all(records, outcomes, weights)
}

/// Aggregates every learner's records into report rows, in report order.
///
/// `outcomes` maps `response_id` to the item's final analysis outcome; a
/// matched response without an entry (no audio, not analyzed) still counts in
/// `responses`, `avg_accuracy` and the timings.
pub fn aggregate_all(
    records: &[MatchedRecord],
    outcomes: &HashMap<String, AnalysisOutcome>,
    weights: &Weights,
) -> Vec<ReportRow> {
    let mut matched: Vec<(&MatchedRecord, &SessionMatch)> = records
        .iter()
        .filter_map(|m| m.session.as_ref().map(|s| (m, s)))
        .collect();
    // Deduplicate by response id, keeping a copy chosen by content only.
    matched.sort_by(|a, b| {
        a.0.record
            .response_id
            .cmp(&b.0.record.response_id)
            .then_with(|| copy_preference(a, b))
    });
    matched.dedup_by(|later, kept| later.0.record.response_id == kept.0.record.response_id);
    // Group by learner and phase, responses in time order inside each group.
    matched.sort_by(|(a, sa), (b, sb)| {
        (
            &a.record.user_id,
            &sa.phase,
            a.record.timestamp,
            &a.record.response_id,
        )
            .cmp(&(
                &b.record.user_id,
                &sb.phase,
                b.record.timestamp,
                &b.record.response_id,
            ))
    });

    let mut rows = Vec::new();
    for learner in matched.chunk_by(|(a, _), (b, _)| a.record.user_id == b.record.user_id) {
        let start = rows.len();
        for phase in learner.chunk_by(|(_, sa), (_, sb)| sa.phase == sb.phase) {
            rows.push(phase_row(phase, outcomes, weights));
        }
        let mine = &mut rows[start..];
        mine.sort_by(row_order);
        for i in 1..mine.len() {
            let next_first = mine[i].first_response_at;
            let prev = &mut mine[i - 1];
            prev.gap_to_next_phase_s = Some(seconds_between(prev.last_response_at, next_first));
        }
    }
    // Learners came out in user_id order and each learner's rows are sorted.
    rows
}

/// Which of two copies of one response to keep (the smaller).
fn copy_preference(
    a: &(&MatchedRecord, &SessionMatch),
    b: &(&MatchedRecord, &SessionMatch),
) -> Ordering {
    let (ra, sa) = a;
    let (rb, sb) = b;
    (sa.created_at, &sa.session_id, &sa.phase)
        .cmp(&(sb.created_at, &sb.session_id, &sb.phase))
        .then_with(|| match (ra.record.accuracy, rb.record.accuracy) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (x, y) => x.is_some().cmp(&y.is_some()),
        })
}

/// One phase's row; `records` are that phase's responses in `(timestamp, response_id)` order.
fn phase_row(
    records: &[(&MatchedRecord, &SessionMatch)],
    outcomes: &HashMap<String, AnalysisOutcome>,
    weights: &Weights,
) -> ReportRow {
    let mut accuracy = Mean::default();
    let mut emotional = Mean::default();
    let mut engagement = Mean::default();
    let mut emotions = Mode::default();
    let mut states = Mode::default();
    for (m, _) in records {
        if let Some(a) = m.record.accuracy.filter(|a| a.is_finite()) {
            accuracy.add(a);
        }
        if let Some(r) = outcomes
            .get(&m.record.response_id)
            .and_then(AnalysisOutcome::result)
            .filter(|r| AnalysisResult::validate(r).is_ok())
        {
            emotional.add(r.emotional_score);
            engagement.add(r.engagement_score);
            emotions.add(r.dominant_emotion);
            states.add(r.engagement_state);
        }
    }
    let (first, last) = match (records.first(), records.last()) {
        (Some((f, _)), Some((l, _))) => (f.record.timestamp, l.record.timestamp),
        _ => (0, 0),
    };
    let (user_id, phase) = records
        .first()
        .map(|(m, s)| (m.record.user_id.clone(), s.phase.clone()))
        .unwrap_or_default();
    let (avg_engagement_score, avg_emotional_score, avg_accuracy) =
        (engagement.get(), emotional.get(), accuracy.get());
    ReportRow {
        user_id,
        phase,
        responses: records.len() as u64,
        avg_accuracy,
        avg_emotional_score,
        avg_engagement_score,
        dominant_emotion: emotions.get(),
        engagement_state: states.get(),
        session_duration_s: seconds_between(first, last),
        gap_to_next_phase_s: None,
        combined_score: weights.combine(avg_engagement_score, avg_emotional_score, avg_accuracy),
        first_response_at: first,
        last_response_at: last,
    }
}

/// A running mean; values must be added in a fixed order for reproducible bits.
#[derive(Default)]
struct Mean {
    sum: f64,
    n: u64,
}

impl Mean {
    fn add(&mut self, x: f64) {
        self.sum += x;
        self.n += 1;
    }

    fn get(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

/// The most frequent value; ties go to the value added first.
struct Mode<T> {
    /// (value, count), in order of first appearance.
    seen: Vec<(T, u64)>,
}

impl<T> Default for Mode<T> {
    fn default() -> Self {
        Self { seen: Vec::new() }
    }
}

impl<T: Copy + PartialEq> Mode<T> {
    fn add(&mut self, value: T) {
        match self.seen.iter_mut().find(|(v, _)| *v == value) {
            Some((_, n)) => *n += 1,
            None => self.seen.push((value, 1)),
        }
    }

    fn get(&self) -> Option<T> {
        // `max_by_key` keeps the last maximum: scan in reverse so the first seen wins.
        self.seen
            .iter()
            .rev()
            .max_by_key(|(_, n)| *n)
            .map(|(v, _)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engage_model::time::NANOS_PER_SEC;
    use engage_model::{ActivityRecord, AudioQuality, PronunciationQuality};
    use proptest::prelude::*;

    const T0: Timestamp = 1_709_287_200 * NANOS_PER_SEC;
    const SEC: i64 = NANOS_PER_SEC;

    fn rec(
        user: &str,
        id: &str,
        ts: Timestamp,
        phase: Option<&str>,
        accuracy: Option<f64>,
    ) -> MatchedRecord {
        MatchedRecord {
            record: ActivityRecord {
                response_id: id.into(),
                user_id: user.into(),
                timestamp: ts,
                audio_url: None,
                accuracy,
                original_text: None,
                response_text: None,
                session_id: None,
                sub_session_id: None,
            },
            session: phase.map(|p| SessionMatch {
                session_id: format!("s-{p}"),
                created_at: T0,
                milestone: "M1".into(),
                lesson: p.into(),
                phase: p.into(),
                progress: "1".into(),
            }),
        }
    }

    fn ok(emo: f64, eng: f64, e: DominantEmotion, s: EngagementState) -> AnalysisOutcome {
        AnalysisOutcome::Ok(AnalysisResult {
            emotional_score: emo,
            engagement_score: eng,
            dominant_emotion: e,
            engagement_state: s,
            pronunciation_quality: PronunciationQuality::Good,
            audio_quality: AudioQuality::Good,
            analyzer: "acoustic:1".into(),
        })
    }

    fn failed() -> AnalysisOutcome {
        AnalysisOutcome::Failed {
            reason: "undecodable".into(),
            detail: String::new(),
        }
    }

    fn outcomes(items: &[(&str, AnalysisOutcome)]) -> HashMap<String, AnalysisOutcome> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn approx(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn weights_default_and_validation() {
        let w = Weights::default();
        assert_eq!((w.engagement, w.emotional, w.accuracy), (0.4, 0.2, 0.4));
        assert_eq!(w.validate(), Ok(()));
        let zero = Weights {
            engagement: 0.0,
            emotional: 0.0,
            accuracy: 0.0,
        };
        assert_eq!(zero.validate(), Err(WeightsError::AllZero));
        let neg = Weights {
            emotional: -0.1,
            ..w
        };
        assert_eq!(neg.validate(), Err(WeightsError::Negative("emotional")));
        let nan = Weights {
            accuracy: f64::NAN,
            ..w
        };
        assert_eq!(nan.validate(), Err(WeightsError::NotFinite("accuracy")));
        let partial: Weights = serde_json::from_str(r#"{"accuracy": 1.0}"#).expect("json");
        assert_eq!(partial, Weights { accuracy: 1.0, ..w });
        let e = serde_json::from_str::<Weights>(r#"{"acuracy": 1.0}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `acuracy`"), "{e}");
    }

    #[test]
    fn combine_reweights_over_present_parts() {
        let w = Weights::default();
        assert!(approx(
            w.combine(Some(50.0), Some(100.0), Some(80.0)),
            0.4 * 50.0 + 0.2 * 100.0 + 0.4 * 80.0
        ));
        // Without the emotional part: (0.4*50 + 0.4*80) / 0.8.
        assert!(approx(w.combine(Some(50.0), None, Some(80.0)), 65.0));
        assert!(approx(w.combine(None, None, Some(80.0)), 80.0));
        assert_eq!(w.combine(None, None, None), None);
        let only_acc = Weights {
            engagement: 0.0,
            emotional: 0.0,
            accuracy: 1.0,
        };
        assert_eq!(only_acc.combine(Some(50.0), Some(60.0), None), None);
    }

    #[test]
    fn averages_use_only_present_values_and_trusted_results() {
        let records = vec![
            rec("u", "r1", T0, Some("P1"), Some(80.0)),
            rec("u", "r2", T0 + SEC, Some("P1"), None),
            rec("u", "r3", T0 + 2 * SEC, Some("P1"), Some(60.0)),
            rec("u", "r4", T0 + 3 * SEC, Some("P1"), Some(10.0)),
            rec("u", "unmatched", T0 + 4 * SEC, None, Some(0.0)),
        ];
        let mut bad = ok(
            500.0,
            0.0,
            DominantEmotion::Sad,
            EngagementState::Disengaged,
        );
        if let AnalysisOutcome::Ok(r) = &mut bad {
            r.emotional_score = 500.0;
        }
        let out = outcomes(&[
            (
                "r1",
                ok(40.0, 90.0, DominantEmotion::Happy, EngagementState::Engaged),
            ),
            ("r2", failed()),
            (
                "r3",
                ok(60.0, 70.0, DominantEmotion::Calm, EngagementState::Engaged),
            ),
            ("r4", bad),
        ]);
        let rows = aggregate_all(&records, &out, &Weights::default());
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.responses, 4, "unmatched responses are not counted");
        assert!(approx(r.avg_accuracy, 50.0));
        assert!(approx(r.avg_emotional_score, 50.0));
        assert!(approx(r.avg_engagement_score, 80.0));
        assert!(approx(
            r.combined_score,
            0.4 * 80.0 + 0.2 * 50.0 + 0.4 * 50.0
        ));
        assert_eq!(r.session_duration_s, 3.0);
        assert_eq!(r.gap_to_next_phase_s, None);
    }

    #[test]
    fn empty_when_nothing_is_present() {
        let records = vec![rec("u", "r1", T0, Some("P1"), None)];
        let rows = aggregate_all(
            &records,
            &outcomes(&[("r1", failed())]),
            &Weights::default(),
        );
        let r = &rows[0];
        assert_eq!(
            (
                r.avg_accuracy,
                r.avg_emotional_score,
                r.avg_engagement_score
            ),
            (None, None, None)
        );
        assert_eq!(
            (r.dominant_emotion, r.engagement_state, r.combined_score),
            (None, None, None)
        );
        assert_eq!(r.session_duration_s, 0.0);
        assert!(aggregate_all(&[], &HashMap::new(), &Weights::default()).is_empty());
    }

    #[test]
    fn mode_ties_go_to_the_value_seen_first_in_time() {
        use DominantEmotion::{Calm, Happy};
        use EngagementState::{Disengaged, Engaged};
        // Input order is the reverse of time order on purpose.
        let records = vec![
            rec("u", "r4", T0 + 3 * SEC, Some("P1"), None),
            rec("u", "r3", T0 + 2 * SEC, Some("P1"), None),
            rec("u", "r2", T0 + SEC, Some("P1"), None),
            rec("u", "r1", T0 + SEC, Some("P1"), None),
        ];
        let out = outcomes(&[
            ("r1", ok(1.0, 1.0, Calm, Disengaged)),
            ("r2", ok(1.0, 1.0, Happy, Engaged)),
            ("r3", ok(1.0, 1.0, Happy, Engaged)),
            ("r4", ok(1.0, 1.0, Calm, Disengaged)),
        ]);
        let r = &aggregate_all(&records, &out, &Weights::default())[0];
        // 2–2 ties; r1 and r2 share the earliest timestamp and r1 < r2 by id.
        assert_eq!(r.dominant_emotion, Some(Calm));
        assert_eq!(r.engagement_state, Some(Disengaged));
        // A strict majority beats first-seen.
        let out = outcomes(&[
            ("r1", ok(1.0, 1.0, Calm, Disengaged)),
            ("r2", ok(1.0, 1.0, Happy, Engaged)),
            ("r3", ok(1.0, 1.0, Happy, Engaged)),
            ("r4", failed()),
        ]);
        let r = &aggregate_all(&records, &out, &Weights::default())[0];
        assert_eq!(r.dominant_emotion, Some(Happy));
        assert_eq!(r.engagement_state, Some(Engaged));
    }

    #[test]
    fn phases_are_ordered_by_start_with_gaps_and_interleaving() {
        let records = vec![
            rec("u", "a1", T0 + 100 * SEC, Some("P2"), None),
            rec("u", "a2", T0 + 160 * SEC, Some("P2"), None),
            rec("u", "b1", T0, Some("P1"), None),
            rec("u", "b2", T0 + 40 * SEC, Some("P1"), None),
            rec("u", "c1", T0 + 150 * SEC, Some("S1"), None),
            rec("u", "c2", T0 + 400 * SEC, Some("S1"), None),
        ];
        let rows = aggregate_all(&records, &HashMap::new(), &Weights::default());
        let phases: Vec<&str> = rows.iter().map(|r| r.phase.as_str()).collect();
        assert_eq!(phases, ["P1", "P2", "S1"]);
        assert_eq!(rows[0].gap_to_next_phase_s, Some(60.0));
        assert_eq!(rows[0].session_duration_s, 40.0);
        // S1 starts before P2 ends: a negative gap.
        assert_eq!(rows[1].gap_to_next_phase_s, Some(-10.0));
        assert_eq!(rows[2].gap_to_next_phase_s, None);
        assert_eq!(rows[2].session_duration_s, 250.0);
    }

    #[test]
    fn rows_sorted_by_learner_then_start_then_name() {
        let records = vec![
            rec("b", "1", T0, Some("P1"), None),
            rec("a", "2", T0 + SEC, Some("Z"), None),
            rec("a", "3", T0 + SEC, Some("A"), None),
            rec("a", "4", T0 + 5 * SEC, Some("P0"), None),
        ];
        let rows = aggregate_all(&records, &HashMap::new(), &Weights::default());
        let keys: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.user_id.as_str(), r.phase.as_str()))
            .collect();
        assert_eq!(keys, [("a", "A"), ("a", "Z"), ("a", "P0"), ("b", "P1")]);
        assert_eq!(rows[0].gap_to_next_phase_s, Some(0.0));
    }

    #[test]
    fn duplicates_are_counted_once() {
        let r = rec("u", "r1", T0, Some("P1"), Some(50.0));
        let unmatched_copy = rec("u", "r1", T0, None, Some(50.0));
        let rows = aggregate_all(
            &[r.clone(), unmatched_copy, r],
            &HashMap::new(),
            &Weights::default(),
        );
        assert_eq!(rows[0].responses, 1);
    }

    fn arb_records() -> impl Strategy<Value = (Vec<MatchedRecord>, HashMap<String, AnalysisOutcome>)>
    {
        let item = (
            0usize..3,
            0i64..50,
            prop::option::weighted(0.8, prop::sample::select(vec!["P1", "P2", "S1"])),
            prop::option::of(0.0f64..=100.0),
            0usize..4,
            (0.0f64..=100.0, 0.0f64..=100.0),
            (
                0usize..DominantEmotion::ALL.len(),
                0usize..EngagementState::ALL.len(),
            ),
        );
        prop::collection::vec(item, 0..40).prop_map(|items| {
            let mut records = Vec::new();
            let mut outs = HashMap::new();
            for (i, (u, t, phase, acc, kind, (emo, eng), (e, s))) in items.into_iter().enumerate() {
                let id = format!("r{i:03}");
                records.push(rec(&format!("u{u}"), &id, T0 + t * SEC, phase, acc));
                match kind {
                    0 => {}
                    1 => {
                        outs.insert(id, failed());
                    }
                    _ => {
                        outs.insert(
                            id,
                            ok(emo, eng, DominantEmotion::ALL[e], EngagementState::ALL[s]),
                        );
                    }
                }
            }
            (records, outs)
        })
    }

    proptest! {
        #[test]
        fn order_independent_and_duplicate_insensitive(
            (records, outs) in arb_records(),
            seed in any::<u64>(),
            dups in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
            let w = Weights::default();
            let want = aggregate_all(&records, &outs, &w);
            let mut with_dups = records.clone();
            if !records.is_empty() {
                for d in &dups {
                    with_dups.push(records[d.index(records.len())].clone());
                }
            }
            // Several real (seeded, reproducible) permutations per case.
            for s in 0..4u64 {
                let mut shuffled = with_dups.clone();
                shuffled.shuffle(&mut StdRng::seed_from_u64(seed.wrapping_add(s)));
                prop_assert_eq!(aggregate_all(&shuffled, &outs, &w), want.clone());
            }
        }

        #[test]
        fn per_learner_runs_concatenate_to_the_whole((records, outs) in arb_records()) {
            let w = Weights::default();
            let mut users: Vec<&str> = records.iter().map(|r| r.record.user_id.as_str()).collect();
            users.sort();
            users.dedup();
            let mut parts: Vec<ReportRow> = users
                .iter()
                .rev()
                .flat_map(|u| {
                    let mine: Vec<MatchedRecord> =
                        records.iter().filter(|r| r.record.user_id == *u).cloned().collect();
                    aggregate_learner(&mine, &outs, &w)
                })
                .collect();
            sort_rows(&mut parts);
            prop_assert_eq!(parts, aggregate_all(&records, &outs, &w));
        }

        #[test]
        fn counts_and_combined_bounds((records, outs) in arb_records(), we in 0.0f64..1.0, wm in 0.0f64..1.0, wa in 0.01f64..1.0) {
            let w = Weights { engagement: we, emotional: wm, accuracy: wa };
            let rows = aggregate_all(&records, &outs, &w);
            let matched = records.iter().filter(|r| r.session.is_some()).count() as u64;
            prop_assert_eq!(rows.iter().map(|r| r.responses).sum::<u64>(), matched);
            for r in &rows {
                prop_assert!(r.session_duration_s >= 0.0);
                let parts: Vec<f64> = [r.avg_engagement_score, r.avg_emotional_score, r.avg_accuracy]
                    .into_iter()
                    .flatten()
                    .collect();
                match r.combined_score {
                    Some(c) => {
                        let lo = parts.iter().copied().fold(f64::INFINITY, f64::min);
                        let hi = parts.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        prop_assert!(lo <= c && c <= hi, "{} not in [{}, {}]", c, lo, hi);
                    }
                    // Accuracy has a positive weight, so None means no accuracy and
                    // no part with a positive weight.
                    None => prop_assert!(r.avg_accuracy.is_none()),
                }
            }
            // Sorted, and gaps link each phase to the next one of the same learner.
            for pair in rows.windows(2) {
                prop_assert!(row_order(&pair[0], &pair[1]) == Ordering::Less);
                if pair[0].user_id == pair[1].user_id {
                    prop_assert_eq!(
                        pair[0].gap_to_next_phase_s,
                        Some(seconds_between(pair[0].last_response_at, pair[1].first_response_at))
                    );
                } else {
                    prop_assert_eq!(pair[0].gap_to_next_phase_s, None);
                }
            }
        }
    }
}
