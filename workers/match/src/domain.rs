//! Matching responses to sessions with the semantics of pandas
//! `merge_asof(responses, sessions, left_on="timestamp", right_on="created_at",
//! by="user_id", direction="nearest", tolerance=pd.Timedelta("5min"))`.
//!
//! For each response, the candidate sessions are the same learner's sessions,
//! ordered by `(created_at, row)` (the order a stable sort by `created_at` of
//! the sessions file gives, which is what pandas walks). Then, exactly as
//! pandas' `asof_join_nearest` does:
//!
//! - the *backward* candidate is the last session with `created_at <= ts`
//!   (for several sessions at the same instant: the one last in the file);
//! - the *forward* candidate is the first session with `created_at >= ts`
//!   (for several sessions at the same instant: the one **first** in the file,
//!   see [`SameInstantRule`]);
//! - a candidate further than the tolerance away is dropped (the tolerance is
//!   inclusive: exactly 5 minutes matches, 5 minutes + 1 ns does not);
//! - if both remain, the backward one wins unless the forward one is strictly
//!   nearer, so an equal distance before and after goes to the earlier session,
//!   and an exact match (distance 0) always goes to the last session at that
//!   instant.
//!
//! Verified against pandas 3.1.1 (see `bench/match/golden.py` and the golden
//! test below): when the nearest sessions share a `created_at` *after* the
//! response, pandas picks the first of them in file order, not the last. The
//! rule "the one last in the sessions file wins" of docs/data-contracts.md holds whenever the
//! shared instant is at or before the response. [`SameInstantRule::LastInFile`]
//! applies the data contract's wording literally in both directions.
//!
//! Pure logic: no I/O. Timestamps are nanoseconds (pandas `datetime64[ns]`),
//! distances are computed without overflow over the whole `i64` range.

use std::collections::HashMap;
use std::ops::Range;

use compact_str::CompactString;
use engage_model::time::NANOS_PER_SEC;
use engage_model::{ActivityRecord, MatchedRecord, Session, SessionMatch, Timestamp};
use serde::{Deserialize, Serialize};

/// The default match tolerance: 5 minutes, inclusive.
pub const DEFAULT_TOLERANCE_NS: i64 = 5 * 60 * NANOS_PER_SEC;

/// Which session wins among several sessions of one learner that share the
/// nearest `created_at` when that instant lies *after* the response.
///
/// (At or before the response both rules pick the last in the file.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SameInstantRule {
    /// What pandas `merge_asof(direction="nearest")` does: the forward search
    /// takes the first session at that instant in file order.
    #[default]
    Pandas,
    /// the data contract's wording taken literally: the last session at that instant in
    /// file order, whichever side of the response it is on.
    LastInFile,
}

/// Counts of one matching run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MatchStats {
    /// Responses matched to a session within the tolerance.
    pub matched: u64,
    /// Responses with no session of their learner within the tolerance.
    pub unmatched: u64,
}

impl MatchStats {
    /// Adds another run's counts to these.
    pub fn merge(&mut self, other: MatchStats) {
        self.matched += other.matched;
        self.unmatched += other.unmatched;
    }
}

/// Learner id → value. Keys are inline strings (ids up to 24 bytes live in the
/// table slot itself, so a lookup does not chase a pointer to compare keys);
/// the hasher is foldhash, hashbrown's default, randomly seeded per map.
type LearnerMap<V> = HashMap<CompactString, V, foldhash::fast::RandomState>;

/// Every learner's sessions, sorted by `(created_at, row)`, ready for lookups.
///
/// Built once per batch; lookups are a hash of the learner id plus a binary
/// search over that learner's sessions. With millions of responses in random
/// learner order, lookups are bound by memory latency (hash slot, then the
/// learner's `created_at` run); inputs grouped by learner, as match jobs are,
/// stay in cache.
#[derive(Debug, Clone, Default)]
pub struct SessionIndex {
    /// Learner id → range into `created_at` / `sessions`.
    learners: LearnerMap<Range<usize>>,
    /// `created_at` of `sessions[i]`, kept apart for cache-friendly searches.
    created_at: Vec<Timestamp>,
    /// All sessions, grouped by learner, each group sorted by `(created_at, row)`.
    sessions: Vec<Session>,
    /// The tie rule applied by [`SessionIndex::nearest`].
    rule: SameInstantRule,
}

impl SessionIndex {
    /// Indexes sessions with the pandas tie rule ([`SameInstantRule::Pandas`]).
    pub fn build(sessions: impl IntoIterator<Item = Session>) -> Self {
        Self::build_with_rule(sessions, SameInstantRule::Pandas)
    }

    /// Indexes sessions with an explicit tie rule.
    pub fn build_with_rule(
        sessions: impl IntoIterator<Item = Session>,
        rule: SameInstantRule,
    ) -> Self {
        let sessions: Vec<Session> = sessions.into_iter().collect();
        // Intern learner ids into dense numbers, then sort small integer keys
        // (not whole sessions) and move each session once into its place.
        let mut ids: LearnerMap<usize> = LearnerMap::default();
        let mut keys: Vec<(usize, Timestamp, u64, usize)> = Vec::with_capacity(sessions.len());
        for (i, s) in sessions.iter().enumerate() {
            let next = ids.len();
            let id = *ids
                .entry(CompactString::from(s.user_id.as_str()))
                .or_insert(next);
            keys.push((id, s.created_at, s.row, i));
        }
        // The input position makes the order total: rows sharing (learner,
        // created_at, row), possible only with hand-made rows, keep input order.
        keys.sort_unstable();

        let mut slots: Vec<Option<Session>> = sessions.into_iter().map(Some).collect();
        let mut ranges: Vec<Range<usize>> = vec![0..0; ids.len()];
        let mut created_at = Vec::with_capacity(keys.len());
        let mut out = Vec::with_capacity(keys.len());
        for (pos, &(id, ts, _, i)) in keys.iter().enumerate() {
            if let Some(session) = slots.get_mut(i).and_then(Option::take) {
                if let Some(r) = ranges.get_mut(id) {
                    if r.end == 0 {
                        // First session of this learner (end >= 1 once set).
                        r.start = pos;
                    }
                    r.end = pos + 1;
                }
                created_at.push(ts);
                out.push(session);
            }
        }
        let mut learners: LearnerMap<Range<usize>> =
            LearnerMap::with_capacity_and_hasher(ids.len(), Default::default());
        for (user, id) in ids {
            if let Some(r) = ranges.get(id) {
                learners.insert(user, r.clone());
            }
        }
        Self {
            learners,
            created_at,
            sessions: out,
            rule,
        }
    }

    /// Number of learners with at least one session.
    pub fn learners(&self) -> usize {
        self.learners.len()
    }

    /// Number of indexed sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is indexed.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The tie rule this index applies.
    pub fn rule(&self) -> SameInstantRule {
        self.rule
    }

    /// The session of `user_id` nearest to `ts` within `tolerance_ns`
    /// (inclusive), with the tie rules of the module documentation.
    /// A negative tolerance matches nothing.
    pub fn nearest(&self, user_id: &str, ts: Timestamp, tolerance_ns: i64) -> Option<&Session> {
        self.sessions
            .get(self.nearest_position(user_id, ts, tolerance_ns)?)
    }

    /// Like [`SessionIndex::nearest`], but returns the session's position in
    /// this index (see [`SessionIndex::session`]) instead of a reference.
    pub fn nearest_position(
        &self,
        user_id: &str,
        ts: Timestamp,
        tolerance_ns: i64,
    ) -> Option<usize> {
        let range = self.learners.get(user_id)?;
        let tol = u64::try_from(tolerance_ns).ok()?;
        let created = &self.created_at[range.clone()];
        nearest_in(created, ts, tol, self.rule).map(|i| range.start + i)
    }

    /// The session at a position returned by [`SessionIndex::nearest_position`]
    /// or [`match_positions`].
    pub fn session(&self, position: usize) -> Option<&Session> {
        self.sessions.get(position)
    }
}

/// The index in `created` (sorted ascending; equal instants in file order) of
/// the nearest instant to `ts` within `tol` nanoseconds, per the module rules.
fn nearest_in(
    created: &[Timestamp],
    ts: Timestamp,
    tol: u64,
    rule: SameInstantRule,
) -> Option<usize> {
    // First index with created > ts: the backward candidate is just before it,
    // and is the last (highest row) of its group of equal instants.
    let after = created.partition_point(|&c| c <= ts);
    let backward = after
        .checked_sub(1)
        .map(|b| (b, ts.abs_diff(created[b])))
        .filter(|&(_, d)| d <= tol);
    if let Some((b, 0)) = backward {
        // Exact match: distance 0 cannot be beaten.
        return Some(b);
    }
    // No exact match, so `after` is also the first index with created >= ts.
    let forward = created.get(after).map(|&c| (c, c.abs_diff(ts)));
    let forward = match forward {
        Some((c, d)) if d <= tol => {
            let f = match rule {
                SameInstantRule::Pandas => after,
                SameInstantRule::LastInFile => created.partition_point(|&x| x <= c) - 1,
            };
            Some((f, d))
        }
        _ => None,
    };
    match (backward, forward) {
        (Some((b, bd)), Some((f, fd))) => Some(if bd <= fd { b } else { f }),
        (Some((b, _)), None) => Some(b),
        (None, Some((f, _))) => Some(f),
        (None, None) => None,
    }
}

/// Inputs at least this long are matched on rayon's thread pool; shorter ones
/// (a match job's single learner) on the calling thread.
pub const PARALLEL_THRESHOLD: usize = 16 * 1024;

/// The join indexer alone: for each record (same order), the position in
/// `index` of its session ([`SessionIndex::session`]), or `None` when
/// unmatched. Copies nothing, so a caller that streams its output (writes
/// rows, emits jobs) avoids building a [`MatchedRecord`] per response.
/// Parallel above [`PARALLEL_THRESHOLD`] records, like [`match_records`].
pub fn match_positions(
    records: &[ActivityRecord],
    index: &SessionIndex,
    tolerance_ns: i64,
) -> (Vec<Option<usize>>, MatchStats) {
    let one = |r: &ActivityRecord| index.nearest_position(&r.user_id, r.timestamp, tolerance_ns);
    let out: Vec<Option<usize>> = if records.len() >= PARALLEL_THRESHOLD {
        use rayon::prelude::*;
        records.par_iter().map(one).collect()
    } else {
        records.iter().map(one).collect()
    };
    let matched = out.iter().filter(|p| p.is_some()).count() as u64;
    let stats = MatchStats {
        matched,
        unmatched: out.len() as u64 - matched,
    };
    (out, stats)
}

/// Matches every record to its learner's nearest session.
///
/// The output is in input order (record `i` of the input is record `i` of
/// the output); unmatched records carry `session: None`. Inputs of
/// [`PARALLEL_THRESHOLD`] records or more are split across rayon's global
/// pool (the result is the same); call it from a blocking context, not from
/// an async task, when the input can be that large.
pub fn match_records(
    records: Vec<ActivityRecord>,
    index: &SessionIndex,
    tolerance_ns: i64,
) -> (Vec<MatchedRecord>, MatchStats) {
    let one = |record: ActivityRecord| {
        let session = index
            .nearest(&record.user_id, record.timestamp, tolerance_ns)
            .map(SessionMatch::from);
        MatchedRecord { record, session }
    };
    let out: Vec<MatchedRecord> = if records.len() >= PARALLEL_THRESHOLD {
        use rayon::prelude::*;
        records.into_par_iter().map(one).collect()
    } else {
        records.into_iter().map(one).collect()
    };
    let matched = out.iter().filter(|m| m.session.is_some()).count() as u64;
    let stats = MatchStats {
        matched,
        unmatched: out.len() as u64 - matched,
    };
    (out, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: i64 = 60 * NANOS_PER_SEC;
    const T0: i64 = 1_709_287_200 * NANOS_PER_SEC;

    fn session(user: &str, id: &str, created_at: Timestamp, row: u64) -> Session {
        Session {
            user_id: user.into(),
            session_id: id.into(),
            created_at,
            milestone: "M1".into(),
            lesson: "P1".into(),
            progress: "10".into(),
            phase: format!("phase-{id}"),
            row,
        }
    }

    fn record(user: &str, ts: Timestamp) -> ActivityRecord {
        ActivityRecord {
            response_id: engage_model::response_id(user, ts, None),
            user_id: user.into(),
            timestamp: ts,
            audio_url: None,
            accuracy: None,
            original_text: None,
            response_text: None,
            session_id: None,
            sub_session_id: None,
        }
    }

    fn near<'a>(ix: &'a SessionIndex, user: &str, ts: Timestamp) -> Option<&'a str> {
        ix.nearest(user, ts, DEFAULT_TOLERANCE_NS)
            .map(|s| s.session_id.as_str())
    }

    #[test]
    fn tolerance_is_inclusive_on_both_sides() {
        let ix = SessionIndex::build([session("a", "s", T0, 0)]);
        assert_eq!(
            near(&ix, "a", T0 - 5 * MIN),
            Some("s"),
            "exactly 5 min before"
        );
        assert_eq!(
            near(&ix, "a", T0 + 5 * MIN),
            Some("s"),
            "exactly 5 min after"
        );
        assert_eq!(
            near(&ix, "a", T0 - 5 * MIN - 1),
            None,
            "5 min + 1 ns before"
        );
        assert_eq!(near(&ix, "a", T0 + 5 * MIN + 1), None, "5 min + 1 ns after");
        assert_eq!(near(&ix, "a", T0), Some("s"));
    }

    #[test]
    fn equal_distance_goes_to_the_earlier_session() {
        let ix = SessionIndex::build([
            session("a", "late", T0 + 2 * MIN, 0),
            session("a", "early", T0, 1),
        ]);
        assert_eq!(near(&ix, "a", T0 + MIN), Some("early"));
        assert_eq!(near(&ix, "a", T0 + MIN + 1), Some("late"));
        assert_eq!(near(&ix, "a", T0 + MIN - 1), Some("early"));
    }

    #[test]
    fn same_instant_at_or_before_goes_to_last_row() {
        let ix = SessionIndex::build([
            session("a", "first", T0, 3),
            session("a", "last", T0, 7),
            session("a", "middle", T0, 5),
        ]);
        assert_eq!(near(&ix, "a", T0), Some("last"), "exact match");
        assert_eq!(near(&ix, "a", T0 + MIN), Some("last"), "after the group");
    }

    #[test]
    fn same_instant_after_the_response_follows_the_rule() {
        let sessions = [
            session("a", "first", T0, 3),
            session("a", "last", T0, 7),
            session("a", "middle", T0, 5),
        ];
        let pandas = SessionIndex::build(sessions.clone());
        assert_eq!(near(&pandas, "a", T0 - MIN), Some("first"));
        let literal = SessionIndex::build_with_rule(sessions, SameInstantRule::LastInFile);
        assert_eq!(near(&literal, "a", T0 - MIN), Some("last"));
        assert_eq!(near(&literal, "a", T0), Some("last"));
    }

    #[test]
    fn other_learners_sessions_are_never_used() {
        let ix = SessionIndex::build([
            session("b", "theirs", T0, 0),
            session("a", "mine", T0 + 4 * MIN, 1),
        ]);
        assert_eq!(near(&ix, "a", T0), Some("mine"));
        assert_eq!(near(&ix, "a", T0 - 2 * MIN), None);
        assert_eq!(near(&ix, "b", T0 + 4 * MIN), Some("theirs"));
        assert_eq!(ix.learners(), 2);
        assert_eq!(ix.len(), 2);
    }

    #[test]
    fn learner_without_sessions_and_empty_inputs() {
        let ix = SessionIndex::build([session("a", "s", T0, 0)]);
        assert_eq!(near(&ix, "nobody", T0), None);
        let empty = SessionIndex::build(Vec::new());
        assert!(empty.is_empty());
        assert_eq!(empty.learners(), 0);
        assert_eq!(near(&empty, "a", T0), None);
        let (out, stats) = match_records(Vec::new(), &ix, DEFAULT_TOLERANCE_NS);
        assert!(out.is_empty());
        assert_eq!(stats, MatchStats::default());
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let ix = SessionIndex::build([
            session("a", "min", i64::MIN, 0),
            session("a", "max", i64::MAX, 1),
        ]);
        assert_eq!(near(&ix, "a", 0), None);
        assert_eq!(near(&ix, "a", i64::MAX - 1), Some("max"));
        assert_eq!(ix.nearest("a", 0, i64::MAX).map(|s| s.row), Some(1));
        assert_eq!(ix.nearest("a", i64::MIN, -1), None, "negative tolerance");
    }

    #[test]
    fn match_records_keeps_input_order_and_counts() {
        let ix = SessionIndex::build([session("a", "s1", T0, 0), session("b", "s2", T0, 1)]);
        let input = vec![
            record("b", T0 + MIN),
            record("a", T0 + 10 * MIN),
            record("a", T0),
        ];
        let ids: Vec<String> = input.iter().map(|r| r.response_id.clone()).collect();
        let (out, stats) = match_records(input, &ix, DEFAULT_TOLERANCE_NS);
        assert_eq!(
            stats,
            MatchStats {
                matched: 2,
                unmatched: 1
            }
        );
        let got: Vec<&str> = out.iter().map(|m| m.record.response_id.as_str()).collect();
        assert_eq!(got, ids);
        let sessions: Vec<Option<&str>> = out
            .iter()
            .map(|m| m.session.as_ref().map(|s| s.session_id.as_str()))
            .collect();
        assert_eq!(sessions, [Some("s2"), None, Some("s1")]);
        assert_eq!(out[0].phase(), Some("phase-s2"));
    }

    #[test]
    fn positions_agree_with_records_sequential_and_parallel() {
        let sessions: Vec<Session> = (0..50)
            .map(|i| {
                session(
                    &format!("u{}", i % 7),
                    &format!("s{i}"),
                    T0 + (i as i64 % 11) * MIN,
                    i,
                )
            })
            .collect();
        let ix = SessionIndex::build(sessions);
        for n in [10, PARALLEL_THRESHOLD + 5] {
            let records: Vec<ActivityRecord> = (0..n)
                .map(|i| record(&format!("u{}", i % 8), T0 + (i as i64 % 97) * MIN / 7))
                .collect();
            let (positions, pstats) = match_positions(&records, &ix, DEFAULT_TOLERANCE_NS);
            let (matched, mstats) = match_records(records.clone(), &ix, DEFAULT_TOLERANCE_NS);
            assert_eq!(pstats, mstats);
            assert!(mstats.matched > 0 && mstats.unmatched > 0);
            for ((p, m), r) in positions.iter().zip(&matched).zip(&records) {
                let by_pos = p.and_then(|p| ix.session(p)).map(SessionMatch::from);
                assert_eq!(by_pos, m.session);
                assert_eq!(&m.record, r, "input order kept");
                let direct = ix.nearest(&r.user_id, r.timestamp, DEFAULT_TOLERANCE_NS);
                assert_eq!(direct.map(SessionMatch::from), m.session);
            }
        }
    }

    /// The rules written out one by one over a linear scan, as the reference.
    fn brute_force(
        sessions: &[Session],
        user: &str,
        ts: Timestamp,
        tol: i64,
        rule: SameInstantRule,
    ) -> Option<u64> {
        let mine: Vec<&Session> = sessions.iter().filter(|s| s.user_id == user).collect();
        let within =
            |s: &&&Session| (i128::from(ts) - i128::from(s.created_at)).abs() <= i128::from(tol);
        let backward = mine
            .iter()
            .filter(|s| s.created_at <= ts)
            .max_by_key(|s| (s.created_at, s.row))
            .filter(within)
            .copied();
        let forward_instant = mine
            .iter()
            .filter(|s| s.created_at >= ts)
            .map(|s| s.created_at)
            .min();
        let forward = forward_instant.and_then(|c| {
            let group = mine.iter().filter(|s| s.created_at == c);
            match rule {
                SameInstantRule::Pandas => group.min_by_key(|s| s.row),
                SameInstantRule::LastInFile => group.max_by_key(|s| s.row),
            }
            .filter(within)
            .copied()
        });
        match (backward, forward) {
            (Some(b), Some(f)) => {
                let bd = i128::from(ts) - i128::from(b.created_at);
                let fd = i128::from(f.created_at) - i128::from(ts);
                Some(if bd <= fd { b.row } else { f.row })
            }
            (b, f) => b.or(f).map(|s| s.row),
        }
    }

    /// Small, clustered datasets: few learners, instants on a coarse grid so
    /// equal distances and equal `created_at` happen often.
    fn dataset() -> impl Strategy<Value = (Vec<Session>, Vec<(String, Timestamp)>)> {
        let user = prop::sample::select(vec!["a", "b", "c"]);
        let instant = (0i64..20).prop_map(|k| T0 + k * MIN);
        let sessions = prop::collection::vec((user.clone(), instant.clone()), 0..25);
        let queries = prop::collection::vec(
            (
                user,
                instant,
                prop::sample::select(vec![-1i64, 0, 1, MIN / 2]),
            ),
            0..40,
        );
        (sessions, queries).prop_map(|(ss, qs)| {
            let sessions = ss
                .into_iter()
                .enumerate()
                .map(|(row, (u, c))| session(u, &format!("s{row}"), c, row as u64))
                .collect();
            let queries = qs
                .into_iter()
                .map(|(u, t, jitter)| (u.to_string(), t + jitter))
                .collect();
            (sessions, queries)
        })
    }

    proptest! {
        #[test]
        fn index_agrees_with_brute_force(
            (sessions, queries) in dataset(),
            tol in prop::sample::select(vec![0i64, MIN, 2 * MIN, DEFAULT_TOLERANCE_NS]),
            literal in any::<bool>(),
            seed in any::<u64>(),
        ) {
            use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
            let rule = if literal { SameInstantRule::LastInFile } else { SameInstantRule::Pandas };
            // Build from a (seeded) shuffled order: the index must not depend on input order.
            let mut shuffled = sessions.clone();
            shuffled.shuffle(&mut StdRng::seed_from_u64(seed));
            let ix = SessionIndex::build_with_rule(shuffled, rule);
            for (user, ts) in &queries {
                let got = ix.nearest(user, *ts, tol).map(|s| s.row);
                prop_assert_eq!(got, brute_force(&sessions, user, *ts, tol, rule), "user {} ts {}", user, ts - T0);
            }
        }

        #[test]
        fn match_records_counts_add_up((sessions, queries) in dataset()) {
            let ix = SessionIndex::build(sessions);
            let records: Vec<ActivityRecord> = queries.iter().map(|(u, t)| record(u, *t)).collect();
            let n = records.len() as u64;
            let (out, stats) = match_records(records, &ix, DEFAULT_TOLERANCE_NS);
            prop_assert_eq!(stats.matched + stats.unmatched, n);
            prop_assert_eq!(out.iter().filter(|m| m.session.is_some()).count() as u64, stats.matched);
        }
    }
}

/// Reproduces real pandas on the fixtures written by `bench/match/golden.py`.
#[cfg(test)]
mod golden {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use engage_model::time::parse_timestamp_str;

    use super::*;

    fn fixture(name: &str) -> csv::Reader<std::fs::File> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/pandas")
            .join(name);
        csv::Reader::from_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn rows(name: &str) -> Vec<HashMap<String, String>> {
        fixture(name)
            .deserialize()
            .collect::<Result<_, _>>()
            .expect("fixture rows")
    }

    fn sessions() -> Vec<Session> {
        rows("sessions.csv")
            .into_iter()
            .enumerate()
            .map(|(row, r)| Session {
                user_id: r["user_id"].clone(),
                session_id: r["session_id"].clone(),
                created_at: parse_timestamp_str(&r["created_at"]).expect("created_at"),
                milestone: r["milestone"].clone(),
                lesson: r["lesson"].clone(),
                progress: r["progress"].clone(),
                phase: r["phase"].clone(),
                row: row as u64,
            })
            .collect()
    }

    fn responses() -> Vec<ActivityRecord> {
        rows("responses.csv")
            .into_iter()
            .map(|r| ActivityRecord {
                response_id: r["response_id"].clone(),
                user_id: r["user_id"].clone(),
                timestamp: parse_timestamp_str(&r["timestamp"]).expect("timestamp"),
                audio_url: None,
                accuracy: None,
                original_text: None,
                response_text: None,
                session_id: None,
                sub_session_id: None,
            })
            .collect()
    }

    fn expected() -> Vec<(String, Option<String>)> {
        rows("expected.csv")
            .into_iter()
            .map(|r| {
                let sid = r["session_id"].clone();
                (r["response_id"].clone(), (!sid.is_empty()).then_some(sid))
            })
            .collect()
    }

    fn run(rule: SameInstantRule) -> Vec<(String, Option<String>)> {
        let index = SessionIndex::build_with_rule(sessions(), rule);
        let (out, _) = match_records(responses(), &index, DEFAULT_TOLERANCE_NS);
        let mut got: Vec<(String, Option<String>)> = out
            .into_iter()
            .map(|m| (m.record.response_id, m.session.map(|s| s.session_id)))
            .collect();
        got.sort();
        got
    }

    #[test]
    fn matches_pandas_row_for_row() {
        let want = expected();
        assert!(want.len() > 200, "fixture too small: {}", want.len());
        let got = run(SameInstantRule::Pandas);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "response {}", w.0);
        }
    }

    #[test]
    fn literal_rule_differs_from_pandas_only_on_forward_ties() {
        // The fixture has responses before a group of same-instant sessions;
        // there the literal docs/data-contracts.md rule picks another session than pandas.
        let want = expected();
        let got = run(SameInstantRule::LastInFile);
        let differing: Vec<&str> = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| g != w)
            .map(|(g, _)| g.0.as_str())
            .collect();
        assert!(!differing.is_empty());
        assert!(
            got.iter()
                .zip(&want)
                .all(|(g, w)| g.1.is_some() == w.1.is_some())
        );
    }
}
