//! Settling one consuming channel's deliveries in batches.
//!
//! Each finished job reports its disposition here instead of sending its own
//! `basic.ack`. One task per channel acks every finished delivery whose
//! predecessors are all settled with a single `basic.ack` (`multiple`), so a
//! burst of completions costs the broker one settle command instead of one
//! per message (and the client one frame instead of one RPC hop per message).
//! Requeues (`basic.nack`, `requeue`) go out at once, one by one.
//!
//! A finished delivery behind a slow one is *held* for at most
//! [`AckPolicy::hold`] and at most [`AckPolicy::max_held`] at a time; after
//! that it is acked on its own, so a long job never stalls the window. Held
//! deliveries still count against the prefetch window, which is why the
//! window is the job concurrency plus `max_held` ([`AckPolicy::prefetch`]). Holding only delays the ack of work that
//! is already complete: a crash before the ack means a redelivery that the
//! idempotency markers absorb, exactly as for a crash just before any ack.
//!
//! [`AckBook`] is the pure bookkeeping (unit- and property-tested); [`spawn`]
//! runs it against a lapin channel.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use prometheus::IntCounterVec;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

/// How long and how many finished deliveries may wait for a slower
/// predecessor before they are acked on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckPolicy {
    /// Longest wait of a finished delivery for its predecessors.
    pub hold: Duration,
    /// Most finished deliveries held at once.
    pub max_held: usize,
}

impl AckPolicy {
    /// The policy for a worker running `concurrency` jobs at once: hold at
    /// most that many finished deliveries, for at most 50 ms (about the p99
    /// job time under load in the pipeline benchmark). The analyze stage
    /// finishes jobs a group-commit chunk at a time, often ahead of an older
    /// delivery in the next chunk; with half of the concurrency most held
    /// acks overflowed and went alone (0.2-0.4 frames per job), with the whole
    /// concurrency 0.04-0.2.
    pub fn for_concurrency(concurrency: u16) -> Self {
        Self {
            hold: Duration::from_millis(50),
            max_held: usize::from(concurrency).max(1),
        }
    }

    /// The channel's prefetch: room for `concurrency` running jobs plus the
    /// held acks, so holding never starves the jobs of deliveries.
    pub fn prefetch(&self, concurrency: u16) -> u16 {
        concurrency.saturating_add(u16::try_from(self.max_held).unwrap_or(u16::MAX))
    }
}

/// One frame to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// `basic.ack` with `multiple`: every outstanding delivery up to this tag.
    UpTo(u64),
    /// `basic.ack` of this delivery alone.
    One(u64),
    /// `basic.nack` with `requeue` of this delivery alone.
    Requeue(u64),
}

/// Delivered-but-unsettled deliveries of one channel, in tag order.
#[derive(Debug)]
pub struct AckBook {
    policy: AckPolicy,
    /// Unsettled tags: `None` while the job runs, `Some(when it finished)`.
    open: BTreeMap<u64, Option<Instant>>,
}

impl AckBook {
    /// An empty book.
    pub fn new(policy: AckPolicy) -> Self {
        Self {
            policy,
            open: BTreeMap::new(),
        }
    }

    /// A delivery arrived (its job is about to run).
    pub fn delivered(&mut self, tag: u64) {
        self.open.insert(tag, None);
    }

    /// A delivery's job finished: `ack` true to ack, false to requeue.
    /// Returns the requeue to send now, if any. Unknown tags are ignored.
    pub fn finished(&mut self, tag: u64, ack: bool, now: Instant) -> Option<Settle> {
        if !self.open.contains_key(&tag) {
            return None;
        }
        if ack {
            self.open.insert(tag, Some(now));
            None
        } else {
            self.open.remove(&tag);
            Some(Settle::Requeue(tag))
        }
    }

    /// The acks to send now: one `UpTo` for the finished prefix, then each
    /// held delivery on its own if the hold is over (`flush`, too many held,
    /// or the oldest held waited `hold`).
    pub fn settle(&mut self, now: Instant, flush: bool) -> Vec<Settle> {
        let mut out = Vec::new();
        let mut last = None;
        while let Some(entry) = self.open.first_entry() {
            if entry.get().is_none() {
                break;
            }
            last = Some(*entry.key());
            entry.remove();
        }
        if let Some(tag) = last {
            out.push(Settle::UpTo(tag));
        }
        let held: Vec<(u64, Instant)> = self
            .open
            .iter()
            .filter_map(|(t, f)| f.map(|f| (*t, f)))
            .collect();
        let overdue = held
            .iter()
            .any(|(_, f)| now.saturating_duration_since(*f) >= self.policy.hold);
        if flush || overdue || held.len() > self.policy.max_held {
            for (tag, _) in held {
                self.open.remove(&tag);
                out.push(Settle::One(tag));
            }
        }
        out
    }

    /// When the oldest held delivery's hold ends, if any is held.
    pub fn deadline(&self) -> Option<Instant> {
        self.open
            .values()
            .flatten()
            .min()
            .map(|f| *f + self.policy.hold)
    }

    /// Deliveries not settled yet.
    pub fn unsettled(&self) -> usize {
        self.open.len()
    }
}

#[derive(Debug)]
enum Event {
    Delivered(u64),
    Finished(u64, bool),
}

/// The handle jobs use to report; cheap to clone. When every handle is
/// dropped the task settles what is left and ends.
#[derive(Clone, Debug)]
pub struct Acks {
    tx: mpsc::UnboundedSender<Event>,
}

impl Acks {
    /// Registers a delivery; call before its job can finish.
    pub fn delivered(&self, tag: u64) {
        let _ = self.tx.send(Event::Delivered(tag));
    }

    /// Reports a finished job: `ack` true to ack, false to requeue.
    pub fn finished(&self, tag: u64, ack: bool) {
        // A closed task means the channel is gone: the broker redelivers.
        let _ = self.tx.send(Event::Finished(tag, ack));
    }
}

impl Settle {
    /// The `kind` label of `engage_ack_frames_total`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::UpTo(_) => "multiple",
            Self::One(_) => "single",
            Self::Requeue(_) => "requeue",
        }
    }
}

/// Starts the settling task of `channel`; counts frames in `frames_sent`
/// (labels: stage, kind).
pub fn spawn(
    channel: Channel,
    policy: AckPolicy,
    stage: &'static str,
    frames_sent: IntCounterVec,
) -> (Acks, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut book = AckBook::new(policy);
        let mut events = Vec::with_capacity(256);
        let mut broken = false;
        loop {
            let received = match book.deadline() {
                Some(at) => tokio::time::timeout_at(at.into(), rx.recv_many(&mut events, 256))
                    .await
                    .ok(),
                None => Some(rx.recv_many(&mut events, 256).await),
            };
            let now = Instant::now();
            let mut frames = Vec::new();
            for ev in events.drain(..) {
                match ev {
                    Event::Delivered(tag) => book.delivered(tag),
                    Event::Finished(tag, ack) => frames.extend(book.finished(tag, ack, now)),
                }
            }
            let closed = received == Some(0);
            frames.extend(book.settle(now, closed));
            for frame in frames {
                if broken {
                    break;
                }
                frames_sent.with_label_values(&[stage, frame.kind()]).inc();
                if let Err(e) = send(&channel, frame).await {
                    // The channel is gone: unsettled deliveries come back.
                    warn!(stage, error = %e, "ack/nack failed; unsettled messages will be redelivered");
                    broken = true;
                }
            }
            if closed {
                break;
            }
        }
    });
    (Acks { tx }, task)
}

async fn send(channel: &Channel, frame: Settle) -> lapin::Result<()> {
    match frame {
        Settle::UpTo(tag) => {
            channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
        }
        Settle::One(tag) => channel.basic_ack(tag, BasicAckOptions::default()).await,
        Settle::Requeue(tag) => {
            channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    },
                )
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(max_held: usize) -> AckPolicy {
        AckPolicy {
            hold: Duration::from_millis(10),
            max_held,
        }
    }

    #[test]
    fn the_window_leaves_room_for_held_acks() {
        let p = AckPolicy::for_concurrency(32);
        assert_eq!(p.max_held, 32);
        assert_eq!(p.prefetch(32), 64);
        let one = AckPolicy::for_concurrency(1);
        assert_eq!(one.max_held, 1);
        assert_eq!(one.prefetch(1), 2);
        assert_eq!(
            AckPolicy::for_concurrency(u16::MAX).prefetch(u16::MAX),
            u16::MAX
        );
    }

    #[test]
    fn in_order_completions_are_one_frame() {
        let t0 = Instant::now();
        let mut b = AckBook::new(policy(8));
        for t in 1..=5 {
            b.delivered(t);
        }
        for t in 1..=5 {
            assert_eq!(b.finished(t, true, t0), None);
        }
        assert_eq!(b.settle(t0, false), vec![Settle::UpTo(5)]);
        assert_eq!(b.unsettled(), 0);
        assert_eq!(b.settle(t0, false), vec![]);
    }

    #[test]
    fn a_slow_head_holds_later_acks_until_it_finishes() {
        let t0 = Instant::now();
        let mut b = AckBook::new(policy(8));
        for t in 1..=4 {
            b.delivered(t);
        }
        for t in 2..=4 {
            b.finished(t, true, t0);
        }
        assert_eq!(b.settle(t0, false), vec![]);
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(10)));
        b.finished(1, true, t0);
        assert_eq!(b.settle(t0, false), vec![Settle::UpTo(4)]);
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn held_acks_go_alone_after_the_hold_or_when_too_many() {
        let t0 = Instant::now();
        let mut b = AckBook::new(policy(2));
        for t in 1..=5 {
            b.delivered(t);
        }
        b.finished(2, true, t0);
        b.finished(3, true, t0);
        assert_eq!(b.settle(t0, false), vec![]);
        // The hold is over: each goes alone, the slow head stays open.
        let later = t0 + Duration::from_millis(10);
        assert_eq!(b.settle(later, false), vec![Settle::One(2), Settle::One(3)]);
        // Too many held at once.
        b.finished(4, true, later);
        b.finished(5, true, later);
        assert_eq!(b.settle(later, false), vec![]);
        b.delivered(6);
        b.finished(6, true, later);
        assert_eq!(
            b.settle(later, false),
            vec![Settle::One(4), Settle::One(5), Settle::One(6)]
        );
        // The head finishes: an ack of it alone via UpTo (nothing else outstanding).
        b.finished(1, true, later);
        assert_eq!(b.settle(later, false), vec![Settle::UpTo(1)]);
    }

    #[test]
    fn requeues_are_sent_at_once_and_never_covered_twice() {
        let t0 = Instant::now();
        let mut b = AckBook::new(policy(8));
        for t in 1..=3 {
            b.delivered(t);
        }
        assert_eq!(b.finished(1, false, t0), Some(Settle::Requeue(1)));
        assert_eq!(b.finished(1, true, t0), None, "already settled");
        assert_eq!(b.finished(9, true, t0), None, "unknown tag");
        b.finished(3, true, t0);
        b.finished(2, true, t0);
        assert_eq!(b.settle(t0, false), vec![Settle::UpTo(3)]);
    }

    #[test]
    fn flush_sends_every_finished_delivery_and_leaves_running_ones() {
        let t0 = Instant::now();
        let mut b = AckBook::new(policy(8));
        for t in 1..=3 {
            b.delivered(t);
        }
        b.finished(2, true, t0);
        assert_eq!(b.settle(t0, true), vec![Settle::One(2)]);
        assert_eq!(b.unsettled(), 2);
    }

    proptest! {
        /// Whatever the completion order and timing, every delivery is settled
        /// exactly once, an `UpTo` never covers a delivery whose job is still
        /// running, and a requeued delivery is never acked.
        #[test]
        fn every_delivery_is_settled_once(
            order in Just((1u64..=40).collect::<Vec<_>>()).prop_shuffle(),
            requeue in proptest::collection::vec(any::<bool>(), 40),
            steps in proptest::collection::vec(0u64..15, 40),
            max_held in 1usize..10,
        ) {
            let t0 = Instant::now();
            let mut b = AckBook::new(policy(max_held));
            for t in 1..=40 {
                b.delivered(t);
            }
            let mut settled: BTreeMap<u64, Settle> = BTreeMap::new();
            let mut running: std::collections::BTreeSet<u64> = (1..=40).collect();
            let record = |frames: Vec<Settle>, running: &std::collections::BTreeSet<u64>, settled: &mut BTreeMap<u64, Settle>| {
                for f in frames {
                    match f {
                        Settle::UpTo(tag) => {
                            prop_assert!(running.range(..=tag).next().is_none(), "UpTo({}) covers a running job", tag);
                            for t in 1..=tag {
                                settled.entry(t).or_insert(f);
                            }
                        }
                        Settle::One(t) | Settle::Requeue(t) => {
                            prop_assert!(settled.insert(t, f).is_none(), "{} settled twice", t);
                        }
                    }
                }
                Ok(())
            };
            let mut now = t0;
            for (i, tag) in order.iter().enumerate() {
                now += Duration::from_millis(steps[i]);
                running.remove(tag);
                let ack = !requeue[i];
                let frames: Vec<Settle> = b.finished(*tag, ack, now).into_iter().collect();
                record(frames, &running, &mut settled)?;
                let frames = b.settle(now, false);
                record(frames, &running, &mut settled)?;
            }
            let frames = b.settle(now, true);
            record(frames, &running, &mut settled)?;
            prop_assert_eq!(settled.len(), 40);
            prop_assert_eq!(b.unsettled(), 0);
            for (i, tag) in order.iter().enumerate() {
                let requeued = matches!(settled[tag], Settle::Requeue(_));
                prop_assert_eq!(requeued, requeue[i]);
            }
        }
    }
}
