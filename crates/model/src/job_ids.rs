//! Every job's ids are checked before they touch a key or a path: an
//! internal job is data from the broker, and anyone who can publish to the
//! exchange can forge one.
//!
//! The rules are the plan's: the batch id is 1–64 of `[A-Za-z0-9._-]`
//! ([`valid_batch_id`]); a piece id is what the plan names pieces
//! (`f<digits>-r<digits>`); a content hash is 64 lowercase hex digits (a
//! SHA-256); a format hint is 1–8 ASCII alphanumerics; partitions are within
//! [`MAX_PARTITIONS`]; learner and response ids may hold any characters (they
//! are hashed before they name a path) but not be empty. And an internal job
//! must carry the job id its emitter gives it ([`ids`]), so a forged message
//! cannot mark another job done or take its place. A batch (plan) job may use
//! any non-empty job id up to [`MAX_JOB_ID_BYTES`]: producers choose it
//! (`plan:<batch>` is recommended).

use crate::jobs::{AggregateJob, AnalyzeJob, CleanJob, DownloadJob, MatchJob, ids};
use crate::layout::valid_batch_id;

/// Most learner partitions a job may name.
pub const MAX_PARTITIONS: u32 = 4096;
/// Longest job id a producer may choose for a batch job.
pub const MAX_JOB_ID_BYTES: usize = 256;

/// Why a job's ids are refused (the message is dead-lettered as poison).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgedJob {
    /// The envelope's batch id breaks the batch id rule.
    #[error("forged_job: batch id is not 1-64 of [A-Za-z0-9._-]")]
    BatchId,
    /// The job id is not the one this job's emitter gives it.
    #[error("forged_job: job id does not match the job (expected the {0} job id)")]
    JobId(&'static str),
    /// A field breaks its rule.
    #[error("forged_job: field `{field}` {why}")]
    Field {
        /// The field.
        field: &'static str,
        /// The rule it breaks.
        why: &'static str,
    },
}

/// A job whose ids can be checked against its envelope.
pub trait CheckIds {
    /// Checks the job's own ids, the envelope's batch id and its job id.
    fn check_ids(&self, batch_id: &str, job_id: &str) -> Result<(), ForgedJob>;
}

fn batch(b: &str) -> Result<(), ForgedJob> {
    if valid_batch_id(b) {
        Ok(())
    } else {
        Err(ForgedJob::BatchId)
    }
}

fn expect(job_id: &str, expected: String, kind: &'static str) -> Result<(), ForgedJob> {
    if job_id == expected {
        Ok(())
    } else {
        Err(ForgedJob::JobId(kind))
    }
}

fn field(ok: bool, field: &'static str, why: &'static str) -> Result<(), ForgedJob> {
    if ok {
        Ok(())
    } else {
        Err(ForgedJob::Field { field, why })
    }
}

/// `f<1-6 digits>-r<1-9 digits>`, the plan's piece ids, optionally followed
/// by `-s<6 digits>`, a segment the pre-pass cut from that piece.
pub fn valid_piece_id(p: &str) -> bool {
    let digits =
        |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let (p, seg) = match p.split_once("-s") {
        Some((p, s)) => (p, Some(s)),
        None => (p, None),
    };
    seg.is_none_or(|s| s.len() == 6 && digits(s, 6))
        && p.strip_prefix('f')
            .and_then(|rest| rest.split_once("-r"))
            .is_some_and(|(f, r)| digits(f, 6) && digits(r, 9))
}

/// 64 lowercase hex digits.
pub fn valid_content_hash(h: &str) -> bool {
    h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn partitions(n: u32) -> Result<(), ForgedJob> {
    field(
        (1..=MAX_PARTITIONS).contains(&n),
        "partitions",
        "is outside 1..=4096",
    )
}

fn id(s: &str, name: &'static str) -> Result<(), ForgedJob> {
    field(!s.is_empty(), name, "is empty")
}

impl CheckIds for CleanJob {
    fn check_ids(&self, b: &str, job_id: &str) -> Result<(), ForgedJob> {
        batch(b)?;
        match self {
            CleanJob::Batch(_) => field(
                !job_id.is_empty() && job_id.len() <= MAX_JOB_ID_BYTES,
                "job_id",
                "is empty or longer than 256 bytes",
            ),
            CleanJob::Piece(p) => {
                field(valid_piece_id(&p.piece), "piece", "is not a piece id")?;
                partitions(p.partitions)?;
                if let Some((start, end)) = p.range {
                    field(start < end, "range", "is empty or reversed")?;
                }
                let whole = p.range.is_none();
                match &p.segment {
                    Some(s) => field(
                        whole
                            && !p.split
                            && p.piece
                                .split_once("-s")
                                .is_some_and(|(of, _)| p.piece == ids::segment(of, s.index)),
                        "segment",
                        "does not match its piece id",
                    )?,
                    None => field(
                        !p.piece.contains("-s") && (whole || !p.split),
                        "piece",
                        "is a segment id without a segment, or a ranged split",
                    )?,
                }
                expect(job_id, ids::clean(b, &p.piece), "clean piece")
            }
        }
    }
}

impl CheckIds for MatchJob {
    fn check_ids(&self, b: &str, job_id: &str) -> Result<(), ForgedJob> {
        batch(b)?;
        field(valid_piece_id(&self.piece), "piece", "is not a piece id")?;
        field(
            self.partition < MAX_PARTITIONS,
            "partition",
            "is outside 0..4096",
        )?;
        expect(
            job_id,
            ids::match_job(b, &self.piece, self.partition),
            "match",
        )
    }
}

impl CheckIds for DownloadJob {
    fn check_ids(&self, b: &str, job_id: &str) -> Result<(), ForgedJob> {
        batch(b)?;
        id(&self.response_id, "response_id")?;
        id(&self.user_id, "user_id")?;
        expect(job_id, ids::download(b, &self.response_id), "download")
    }
}

impl CheckIds for AnalyzeJob {
    fn check_ids(&self, b: &str, job_id: &str) -> Result<(), ForgedJob> {
        batch(b)?;
        id(&self.response_id, "response_id")?;
        id(&self.user_id, "user_id")?;
        field(
            valid_content_hash(&self.content_hash),
            "content_hash",
            "is not 64 lowercase hex digits",
        )?;
        if let Some(f) = &self.format {
            field(
                (1..=8).contains(&f.len()) && f.bytes().all(|c| c.is_ascii_alphanumeric()),
                "format",
                "is not 1-8 ASCII letters or digits",
            )?;
        }
        expect(job_id, ids::analyze(b, &self.response_id), "analyze")
    }
}

impl CheckIds for AggregateJob {
    fn check_ids(&self, b: &str, job_id: &str) -> Result<(), ForgedJob> {
        batch(b)?;
        match self {
            AggregateJob::Learner { user_id } => {
                id(user_id, "user_id")?;
                expect(job_id, ids::aggregate(b, user_id), "aggregate")
            }
            AggregateJob::Report => expect(job_id, ids::report(b), "report"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{BatchSpec, CleanPiece};
    use crate::selection::Selection;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn analyze(hash: &str, format: Option<&str>) -> AnalyzeJob {
        AnalyzeJob {
            response_id: "r/../1".into(),
            user_id: "=u 1".into(),
            content_hash: hash.into(),
            format: format.map(str::to_string),
        }
    }

    #[test]
    fn jobs_as_their_emitters_write_them_pass() {
        let b = "b-1";
        let piece = CleanJob::Piece(CleanPiece {
            piece: "f000-r0001".into(),
            activity: "s3://raw/a.jsonl".into(),
            range: Some((0, 10)),
            partitions: 8,
            selected: false,
            split: false,
            segment: None,
        });
        piece.check_ids(b, &ids::clean(b, "f000-r0001")).unwrap();
        let seg_id = ids::segment("f000-r0001", 3);
        let segment = |piece: &str, index: u32, split: bool| CleanPiece {
            piece: piece.into(),
            activity: "s3://raw/a.gz".into(),
            range: None,
            partitions: 8,
            selected: false,
            split,
            segment: Some(crate::jobs::SegmentStart {
                index,
                offset: 10,
                line: 2,
                array: false,
                last: false,
            }),
        };
        CleanJob::Piece(segment(&seg_id, 3, false))
            .check_ids(b, &ids::clean(b, &seg_id))
            .unwrap();
        // A segment whose index or kind disagrees with its id is forged.
        for bad in [segment(&seg_id, 4, false), segment(&seg_id, 3, true)] {
            assert!(
                CleanJob::Piece(bad)
                    .check_ids(b, &ids::clean(b, &seg_id))
                    .is_err()
            );
        }
        let mut no_segment = segment(&seg_id, 3, false);
        no_segment.segment = None;
        assert!(
            CleanJob::Piece(no_segment)
                .check_ids(b, &ids::clean(b, &seg_id))
                .is_err()
        );
        let m = MatchJob {
            piece: "f000-r0001".into(),
            partition: 7,
        };
        m.check_ids(b, &ids::match_job(b, "f000-r0001", 7)).unwrap();
        let d = DownloadJob {
            response_id: "r 1/..".into(),
            user_id: "ü".into(),
            audio_url: "s3://x/y".into(),
        };
        d.check_ids(b, &ids::download(b, "r 1/..")).unwrap();
        analyze(HASH, Some("wav"))
            .check_ids(b, &ids::analyze(b, "r/../1"))
            .unwrap();
        let l = AggregateJob::Learner {
            user_id: "=u 1".into(),
        };
        l.check_ids(b, &ids::aggregate(b, "=u 1")).unwrap();
        AggregateJob::Report.check_ids(b, &ids::report(b)).unwrap();
        let plan = CleanJob::Batch(BatchSpec {
            activity: vec![],
            sessions: String::new(),
            selection: Selection::default(),
        });
        plan.check_ids(b, "any-producer-id").unwrap();
    }

    #[test]
    fn forged_ids_are_refused_by_name() {
        let b = "b-1";
        let job = ids::analyze(b, "r/../1");
        assert_eq!(
            analyze("../../batches/b-2/output/report", None).check_ids(b, &job),
            Err(ForgedJob::Field {
                field: "content_hash",
                why: "is not 64 lowercase hex digits"
            })
        );
        assert!(analyze(HASH, Some("wav/..")).check_ids(b, &job).is_err());
        assert_eq!(
            analyze(HASH, None).check_ids("../b-2", &job),
            Err(ForgedJob::BatchId)
        );
        assert_eq!(
            analyze(HASH, None).check_ids(b, "analyze:b-1:other"),
            Err(ForgedJob::JobId("analyze"))
        );
        assert_eq!(
            AggregateJob::Report.check_ids(b, "report:b-2"),
            Err(ForgedJob::JobId("report"))
        );
        let m = MatchJob {
            piece: "../f0".into(),
            partition: 0,
        };
        assert!(m.check_ids(b, &ids::match_job(b, "../f0", 0)).is_err());
        let plan = CleanJob::Batch(BatchSpec {
            activity: vec![],
            sessions: String::new(),
            selection: Selection::default(),
        });
        assert!(plan.check_ids(b, "").is_err());
        assert!(plan.check_ids(b, &"x".repeat(257)).is_err());
    }

    #[test]
    fn piece_ids() {
        assert!(valid_piece_id("f000-r0000"));
        assert!(valid_piece_id("f1-r123456789"));
        assert!(valid_piece_id("f000-r0000-s000012"));
        for bad in [
            "f000-r0000-s12",
            "f000-r0000-s",
            "f000-r0000-s0000001",
            "f0-s000001",
        ] {
            assert!(!valid_piece_id(bad), "{bad}");
        }
        for bad in [
            "",
            "f-r1",
            "f1-r",
            "f1r1",
            "g1-r1",
            "f1-r1/..",
            "f1234567-r1",
            "f1-r1-r2",
        ] {
            assert!(!valid_piece_id(bad), "{bad}");
        }
    }
}
