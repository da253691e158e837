//! Partitioning kept records by learner: a stable learner → partition hash,
//! and a writer that streams records as JSON Lines (or compact frames, see
//! [`SpoolFormat`]) into caller-supplied sinks.
//!
//! All of a learner's records in one piece land in one partition, so a match
//! job can take one partition and see every record of its learners from that
//! piece. The hash is the first four bytes of SHA-256 of the user id (big
//! endian) modulo the partition count: it is the same in every process, on
//! every platform and in every version, unlike `std`'s randomised hasher.

use std::io::{BufWriter, Write};

use engage_model::ActivityRecord;

use super::compact;
use super::parse::RecordView;

/// Largest buffer per partition sink.
pub const SINK_BUFFER: usize = 64 * 1024;

/// Smallest buffer per partition sink.
pub const MIN_SINK_BUFFER: usize = 4 * 1024;

/// What one writer's sink buffers may take together: with many partitions
/// each buffer shrinks (down to [`MIN_SINK_BUFFER`]) instead of memory
/// growing with the partition count, which `engage run` derives from the
/// log's size. A writer holds `max(SINK_BUDGET, partitions × MIN_SINK_BUFFER)`
/// at most, and [`SINK_BUFFER`] per sink up to 128 partitions.
pub const SINK_BUDGET: usize = 8 * 1024 * 1024;

/// The buffer each of `partitions` sinks gets.
pub fn sink_buffer(partitions: usize) -> usize {
    (SINK_BUDGET / partitions.max(1)).clamp(MIN_SINK_BUFFER, SINK_BUFFER)
}

/// How kept records are written into the partition sinks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SpoolFormat {
    /// JSON Lines of [`ActivityRecord`]: the clean stage's stored output,
    /// read by the match and aggregate stages.
    #[default]
    JsonLines,
    /// [`super::compact`] frames of the `matched.csv` fields only: the
    /// scratch spool of `engage run --stop-after match`.
    Compact,
}

impl SpoolFormat {
    /// The partition (0..`partitions`) of a learner in spools of this
    /// format. JSON Lines spools are stored and read by other processes and
    /// versions, so they use the pinned SHA-256 [`partition_of`]. Compact
    /// spools are written and read by one process, so they use foldhash
    /// with a fixed seed: SHA-256 of every kept record's learner was about
    /// 5% of `engage run --stop-after match`. `partitions == 0` is treated as 1.
    pub fn partition_of(self, user_id: &str, partitions: u32) -> u32 {
        if partitions <= 1 {
            // One sink (e.g. `engage run --stop-after clean`): nothing to hash.
            return 0;
        }
        match self {
            Self::JsonLines => partition_of(user_id, partitions),
            Self::Compact => {
                use std::hash::BuildHasher;
                const SEED: u64 = 0x656e_6761_6765_2d70; // "engage-p"
                let h = foldhash::fast::FixedState::with_seed(SEED).hash_one(user_id);
                // The high half: foldhash mixes it best.
                ((h >> 32) % u64::from(partitions.max(1))) as u32
            }
        }
    }
}

/// Why writing partitioned output failed.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// No sinks were supplied (at least one partition is needed).
    #[error("at least one partition sink is required")]
    NoSinks,
    /// More sinks than a `u32` partition number can address.
    #[error("too many partition sinks: {0}")]
    TooManySinks(usize),
    /// A record cannot be written in the compact format.
    #[error("compact spool: {0}")]
    Compact(#[from] super::compact::CompactError),
    /// Writing or flushing a sink failed.
    #[error("writing partition {partition}: {source}")]
    Io {
        /// The partition whose sink failed.
        partition: u32,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The partition (0..`partitions`) of a learner; `partitions == 0` is treated
/// as 1. Defined once in the shared layout, because the aggregate stage must
/// find a learner's records in the same partition clean wrote them to.
pub use engage_model::layout::partition_of;

/// Writes kept records as JSON Lines (serde of [`ActivityRecord`]) or
/// compact frames ([`SpoolFormat`]), each into the sink of its learner's
/// partition. Each sink is buffered; call [`PartitionWriter::finish`] to
/// flush them and get them back.
pub struct PartitionWriter<W: Write> {
    sinks: Vec<BufWriter<W>>,
    counts: Vec<u64>,
    scratch: Vec<u8>,
    format: SpoolFormat,
}

impl<W: Write> PartitionWriter<W> {
    /// One sink per partition, JSON Lines; the number of sinks is the
    /// partition count.
    pub fn new(sinks: Vec<W>) -> Result<Self, PartitionError> {
        Self::with_format(sinks, SpoolFormat::JsonLines)
    }

    /// One sink per partition, written in `format`.
    pub fn with_format(sinks: Vec<W>, format: SpoolFormat) -> Result<Self, PartitionError> {
        if sinks.is_empty() {
            return Err(PartitionError::NoSinks);
        }
        if u32::try_from(sinks.len()).is_err() {
            return Err(PartitionError::TooManySinks(sinks.len()));
        }
        let counts = vec![0; sinks.len()];
        let buffer = sink_buffer(sinks.len());
        Ok(Self {
            sinks: sinks
                .into_iter()
                .map(|w| BufWriter::with_capacity(buffer, w))
                .collect(),
            counts,
            scratch: Vec::with_capacity(512),
            format,
        })
    }

    /// The number of partitions.
    pub fn partitions(&self) -> u32 {
        // Checked in `new`.
        self.sinks.len() as u32
    }

    /// Writes one record into its partition; returns the partition.
    pub fn write(&mut self, record: &ActivityRecord) -> Result<u32, PartitionError> {
        match self.format {
            // Serialising a plain struct of strings and numbers into a Vec cannot fail.
            SpoolFormat::JsonLines => self.write_entry(&record.user_id, |buf| {
                serde_json::to_writer(&mut *buf, record).map_err(std::io::Error::from)?;
                buf.push(b'\n');
                Ok(())
            }),
            SpoolFormat::Compact => {
                let id = compact::id_from_hex(&record.response_id)?;
                self.write_entry(&record.user_id, |buf| {
                    compact::encode_fields(
                        &id,
                        record.timestamp,
                        &record.user_id,
                        record.audio_url.as_deref(),
                        record.accuracy,
                        buf,
                    )
                    .map_err(std::io::Error::other)
                })
            }
        }
    }

    /// Writes one borrowed record into its partition (the same bytes as
    /// [`Self::write`] of the owned record); returns the partition.
    pub fn write_view(&mut self, record: &RecordView<'_>) -> Result<u32, PartitionError> {
        match self.format {
            SpoolFormat::JsonLines => self.write_entry(&record.user_id, |buf| {
                record.write_json(buf).map_err(std::io::Error::from)?;
                buf.push(b'\n');
                Ok(())
            }),
            SpoolFormat::Compact => self.write_entry(&record.user_id, |buf| {
                compact::encode(record, buf).map_err(std::io::Error::other)
            }),
        }
    }

    /// Writes what `entry` puts into the scratch buffer into the learner's
    /// partition; returns the partition.
    fn write_entry(
        &mut self,
        user_id: &str,
        entry: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> Result<u32, PartitionError> {
        // Not memoised per learner: a map of 20k learners missed the cache
        // on most lookups and cost more than the SHA-256 (SHA-NI) it saved.
        let partition = self.format.partition_of(user_id, self.partitions());
        self.scratch.clear();
        entry(&mut self.scratch).map_err(|source| PartitionError::Io { partition, source })?;
        let idx = partition as usize;
        self.sinks[idx]
            .write_all(&self.scratch)
            .map_err(|source| PartitionError::Io { partition, source })?;
        self.counts[idx] += 1;
        Ok(partition)
    }

    /// Records written so far, per partition.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Flushes every sink and returns them with the per-partition counts.
    pub fn finish(self) -> Result<(Vec<W>, Vec<u64>), PartitionError> {
        let mut out = Vec::with_capacity(self.sinks.len());
        for (i, sink) in self.sinks.into_iter().enumerate() {
            let mut inner = sink.into_inner().map_err(|e| PartitionError::Io {
                partition: i as u32,
                source: e.into_error(),
            })?;
            // `into_inner` writes the buffer out but does not flush the sink.
            inner.flush().map_err(|source| PartitionError::Io {
                partition: i as u32,
                source,
            })?;
            out.push(inner);
        }
        Ok((out, self.counts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(user: &str, ts: i64) -> ActivityRecord {
        ActivityRecord {
            response_id: engage_model::response_id(user, ts, None),
            user_id: user.into(),
            timestamp: ts,
            audio_url: None,
            accuracy: Some(50.0),
            original_text: None,
            response_text: None,
            session_id: None,
            sub_session_id: None,
        }
    }

    /// Sink buffers shrink as partitions grow, so a writer's memory is
    /// bounded whatever partition count a log's size asks for.
    #[test]
    fn sink_buffers_fit_the_budget() {
        assert_eq!(
            sink_buffer(16),
            SINK_BUFFER,
            "the fleet's 16 partitions keep 64 KiB"
        );
        assert_eq!(sink_buffer(0), SINK_BUFFER);
        for n in [1usize, 128, 129, 300, 2048, 4096, 100_000] {
            let b = sink_buffer(n);
            assert!((MIN_SINK_BUFFER..=SINK_BUFFER).contains(&b));
            assert!(
                b * n <= SINK_BUDGET.max(n * MIN_SINK_BUFFER),
                "{n} partitions"
            );
        }
        let w = PartitionWriter::new(vec![Vec::<u8>::new(); 4096]).unwrap();
        assert!(w.sinks.iter().all(|s| s.capacity() == MIN_SINK_BUFFER));
    }

    /// The compact spool's hash spreads learners about evenly (it decides
    /// how much of the log one match partition holds in memory).
    #[test]
    fn compact_partitions_are_balanced() {
        let n = 16u32;
        let mut counts = vec![0u32; n as usize];
        for i in 0..16_000 {
            counts[SpoolFormat::Compact.partition_of(&format!("learner-{i}"), n) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn partition_of_is_pinned() {
        // Pinned values: changing the hash would scatter learners across
        // pieces written by different versions of the fleet.
        // sha256("42") starts with 73475cb4 = 1934056628.
        assert_eq!(partition_of("42", 1000), 628);
        assert_eq!(partition_of("42", 1 << 31), 0x73475cb4);
        assert_eq!(partition_of("", 1), 0);
        assert_eq!(partition_of("anything", 0), 0);
    }

    #[test]
    fn spreads_learners_over_partitions() {
        let mut seen = [0u32; 8];
        for i in 0..8000 {
            seen[partition_of(&format!("learner-{i}"), 8) as usize] += 1;
        }
        assert!(seen.iter().all(|n| (800..1200).contains(n)), "{seen:?}");
    }

    #[test]
    fn writes_each_learner_into_its_partition() {
        let mut w = PartitionWriter::new(vec![Vec::new(), Vec::new(), Vec::new()]).unwrap();
        let records: Vec<_> = (0..60).map(|i| rec(&format!("u{}", i % 7), i)).collect();
        for r in &records {
            w.write(r).unwrap();
        }
        assert_eq!(w.counts().iter().sum::<u64>(), 60);
        let (sinks, counts) = w.finish().unwrap();
        let mut back = Vec::new();
        for (p, sink) in sinks.iter().enumerate() {
            let lines: Vec<ActivityRecord> = sink
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap())
                .collect();
            assert_eq!(lines.len() as u64, counts[p]);
            for r in &lines {
                assert_eq!(partition_of(&r.user_id, 3), p as u32);
            }
            back.extend(lines);
        }
        back.sort_by_key(|r| r.timestamp);
        assert_eq!(back, records);
    }

    #[test]
    fn no_sinks_is_an_error() {
        assert!(matches!(
            PartitionWriter::<Vec<u8>>::new(vec![]),
            Err(PartitionError::NoSinks)
        ));
    }

    #[test]
    fn sink_failure_is_reported() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::Error::other("disk full"))
            }
        }
        let mut w = PartitionWriter::new(vec![Broken]).unwrap();
        // Buffered: the failure shows at the latest when flushing.
        let err = match w.write(&rec("u", 1)) {
            Err(e) => e,
            Ok(_) => match w.finish() {
                Err(e) => e,
                Ok(_) => panic!("the broken sink must fail the flush"),
            },
        };
        assert!(
            matches!(&err, PartitionError::Io { partition: 0, source } if source.to_string() == "disk full"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn partition_is_in_range(user in ".{0,40}", n in 1u32..1000) {
            prop_assert!(partition_of(&user, n) < n);
            prop_assert_eq!(partition_of(&user, n), partition_of(&user, n));
            for f in [SpoolFormat::JsonLines, SpoolFormat::Compact] {
                prop_assert!(f.partition_of(&user, n) < n);
                prop_assert_eq!(f.partition_of(&user, n), f.partition_of(&user, n));
            }
            prop_assert_eq!(SpoolFormat::JsonLines.partition_of(&user, n), partition_of(&user, n));
        }
    }
}
