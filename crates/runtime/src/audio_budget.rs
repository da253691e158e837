//! The per-worker budget of audio bytes in memory: a semaphore on bytes, not
//! on jobs, so that a worker's peak memory is bounded by configuration
//! (`[limits] audio_memory_bytes`) whatever the files and the concurrency.
//!
//! A job that holds audio reserves, *once and before it fetches anything*,
//! every byte it may hold at its peak: the fetched object and the decoder's
//! and feature extractor's working memory (`engage_audio::decode_memory_bound`
//! says how much that is). It never reserves more while it
//! holds a reservation, so jobs cannot deadlock waiting for each other; it
//! may give back what it turned out not to need ([`AudioPermit::shrink_to`]).
//! A job whose need exceeds the whole budget can never run and fails its
//! item as `audio_too_large` ([`BudgetError::OverBudget`]) instead of waiting
//! forever.
//!
//! Units: the semaphore counts KiB (rounded up), so one reservation can name
//! up to 4 TiB while tokio's `acquire_many` takes a `u32`.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes per semaphore permit.
const UNIT: u64 = 1024;

/// Why a reservation cannot be granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The job needs more than the whole budget: it could never run.
    #[error(
        "the audio needs {needed} bytes of memory, more than the worker's whole audio budget \
         of {budget} bytes ([limits] audio_memory_bytes)"
    )]
    OverBudget {
        /// Bytes the job would hold at its peak.
        needed: u64,
        /// The configured budget.
        budget: u64,
    },
}

impl BudgetError {
    /// The failed-item reason (the same name as the decoder's own size refusal).
    pub fn name(&self) -> &'static str {
        "audio_too_large"
    }
}

/// Why [`AudioBudget::hold`] holds nothing.
#[derive(Debug, thiserror::Error)]
pub enum HoldError<E> {
    /// The object needs more than the whole budget.
    #[error(transparent)]
    Budget(#[from] BudgetError),
    /// Fetching failed.
    #[error(transparent)]
    Fetch(E),
    /// The object kept changing size between fetches (it is being rewritten).
    #[error("the object changed size on every one of {0} fetches")]
    Changing(u32),
}

/// An object's bytes with the reservation that covers them and what the job
/// will do with them.
#[derive(Debug)]
pub struct Held {
    /// The reservation; keep it alive as long as the bytes or anything derived
    /// from them (decoded samples, a request body) lives.
    pub permit: AudioPermit,
    /// The object's bytes.
    pub bytes: Bytes,
}

/// Gauges and counters of a budget (process-wide: one worker process, one budget).
#[derive(Debug, Clone)]
pub struct BudgetMetrics {
    /// Bytes reserved now.
    pub reserved: IntGauge,
    /// Reservations that had to wait for memory to be given back.
    pub waits: IntCounter,
}

/// A worker's audio memory budget. Cheap to clone (shared semaphore).
#[derive(Debug, Clone)]
pub struct AudioBudget {
    sem: Arc<Semaphore>,
    total_units: u64,
    metrics: Option<BudgetMetrics>,
}

/// Bytes held by one job; given back when dropped.
#[derive(Debug)]
pub struct AudioPermit {
    permit: Option<OwnedSemaphorePermit>,
    units: u64,
    metrics: Option<BudgetMetrics>,
}

fn units_of(bytes: u64) -> u64 {
    bytes.div_ceil(UNIT).max(1)
}

impl AudioBudget {
    /// A budget of `bytes` (at least one KiB, at most 4 TiB).
    pub fn new(bytes: u64) -> Self {
        let total_units = units_of(bytes).min(u64::from(u32::MAX));
        Self {
            sem: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
            metrics: None,
        }
    }

    /// The same budget, reporting to `metrics`.
    pub fn with_metrics(mut self, metrics: BudgetMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The whole budget in bytes.
    pub fn total(&self) -> u64 {
        self.total_units * UNIT
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> u64 {
        self.sem.available_permits() as u64 * UNIT
    }

    /// Reserves `bytes`, waiting (FIFO) until that much is free. Call it at
    /// most once per job and before holding any audio. (While it waits,
    /// tokio's semaphore sets aside for it what is given back, so a large
    /// reservation is not starved by a stream of small ones.)
    pub async fn reserve(&self, bytes: u64) -> Result<AudioPermit, BudgetError> {
        let units = self.check(bytes)?;
        let permit = match Arc::clone(&self.sem).try_acquire_many_owned(units as u32) {
            Ok(p) => p,
            Err(_) => {
                if let Some(m) = &self.metrics {
                    m.waits.inc();
                }
                Arc::clone(&self.sem)
                    .acquire_many_owned(units as u32)
                    .await
                    .expect("the budget's semaphore is never closed")
            }
        };
        Ok(self.granted(permit, units))
    }

    /// [`reserve`](Self::reserve) for a synchronous caller (a rayon thread of
    /// `engage run`); never call it on an async runtime thread.
    pub fn reserve_blocking(&self, bytes: u64) -> Result<AudioPermit, BudgetError> {
        futures::executor::block_on(self.reserve(bytes))
    }

    /// Fetches an object and holds it within the budget, with room for what
    /// the job will then do with it: reserves `size` (the object's size,
    /// known before fetching), fetches, then grows the reservation to
    /// `need(&bytes)` (which includes the bytes) *without waiting*. When
    /// that much is not free it gives everything back, waits for the whole
    /// need and fetches again: a job never waits while it holds memory (so
    /// jobs cannot deadlock on each other), and every byte it holds is
    /// reserved. A need above the whole budget is [`HoldError::Budget`].
    pub async fn hold<F, Fut, E>(
        &self,
        size: u64,
        mut fetch: F,
        need: impl Fn(&[u8]) -> u64,
    ) -> Result<Held, HoldError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        const FETCHES: u32 = 3;
        let mut want = size;
        for _ in 0..FETCHES {
            let mut permit = self.reserve(want).await?;
            let bytes = fetch().await.map_err(HoldError::Fetch)?;
            let needed = need(&bytes).max(bytes.len() as u64);
            if permit.try_grow_to(needed, self) {
                permit.shrink_to(needed);
                return Ok(Held { permit, bytes });
            }
            // Not free now: give it all back before waiting for more.
            drop(bytes);
            drop(permit);
            self.check(needed)?;
            want = needed;
        }
        Err(HoldError::Changing(FETCHES))
    }

    fn check(&self, bytes: u64) -> Result<u64, BudgetError> {
        let units = units_of(bytes);
        if units > self.total_units {
            return Err(BudgetError::OverBudget {
                needed: bytes,
                budget: self.total(),
            });
        }
        Ok(units)
    }

    fn granted(&self, permit: OwnedSemaphorePermit, units: u64) -> AudioPermit {
        if let Some(m) = &self.metrics {
            m.reserved.add((units * UNIT) as i64);
        }
        AudioPermit {
            permit: Some(permit),
            units,
            metrics: self.metrics.clone(),
        }
    }
}

impl AudioPermit {
    /// Bytes this permit holds.
    pub fn bytes(&self) -> u64 {
        self.units * UNIT
    }

    /// Grows this reservation to `bytes` if that much is free now; never
    /// waits. `false` leaves it as it was.
    pub fn try_grow_to(&mut self, bytes: u64, budget: &AudioBudget) -> bool {
        let want = units_of(bytes);
        if want <= self.units {
            return true;
        }
        let extra = want - self.units;
        let Ok(extra_units) = u32::try_from(extra) else {
            return false;
        };
        let Ok(more) = Arc::clone(&budget.sem).try_acquire_many_owned(extra_units) else {
            return false;
        };
        match self.permit.as_mut() {
            Some(p) => p.merge(more),
            None => self.permit = Some(more),
        }
        self.units = want;
        if let Some(m) = &self.metrics {
            m.reserved.add((extra * UNIT) as i64);
        }
        true
    }

    /// Gives back everything above `bytes` (never grows: growing while
    /// holding could deadlock).
    pub fn shrink_to(&mut self, bytes: u64) {
        let keep = units_of(bytes);
        if keep >= self.units {
            return;
        }
        let give = self.units - keep;
        if let Some(p) = self.permit.as_mut() {
            drop(p.split(give as usize));
        }
        self.units = keep;
        if let Some(m) = &self.metrics {
            m.reserved.sub((give * UNIT) as i64);
        }
    }
}

impl Drop for AudioPermit {
    fn drop(&mut self) {
        if self.permit.take().is_some()
            && let Some(m) = &self.metrics
        {
            m.reserved.sub((self.units * UNIT) as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_need_over_the_whole_budget_is_refused_at_once() {
        let b = AudioBudget::new(1 << 20);
        let err = b.reserve_blocking((1 << 20) + 1).unwrap_err();
        assert_eq!(err.name(), "audio_too_large");
        assert!(err.to_string().contains("audio_memory_bytes"), "{err}");
        // The whole budget itself is grantable.
        let p = b.reserve_blocking(1 << 20).unwrap();
        assert_eq!(p.bytes(), 1 << 20);
        assert_eq!(b.available(), 0);
        drop(p);
        assert_eq!(b.available(), 1 << 20);
    }

    #[tokio::test(start_paused = true)]
    async fn reservations_wait_for_bytes_not_for_jobs() {
        let b = AudioBudget::new(10 * UNIT);
        let big = b.reserve(8 * UNIT).await.unwrap();
        // Two small jobs fit beside each other…
        let s1 = b.reserve(UNIT).await.unwrap();
        let s2 = b.reserve(UNIT).await.unwrap();
        assert_eq!(b.available(), 0);
        // …a third waits until bytes are given back.
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.reserve(2 * UNIT).await.map(|p| p.bytes()) });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !waiter.is_finished(),
            "granted although the budget was full"
        );
        drop(s1);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !waiter.is_finished(),
            "granted 2 KiB when only 1 KiB was free"
        );
        drop(s2);
        assert_eq!(waiter.await.unwrap().unwrap(), 2 * UNIT);
        drop(big);
        assert_eq!(b.available(), 10 * UNIT);
    }

    #[tokio::test(start_paused = true)]
    async fn hold_never_waits_while_holding_and_refetches_when_memory_is_short() {
        let b = AudioBudget::new(100 * UNIT);
        let fetches = std::sync::atomic::AtomicU32::new(0);
        let fetch = || {
            fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, ()>(Bytes::from(vec![0u8; 10 * 1024])) }
        };
        // Plenty free: one fetch, the reservation grows to the need.
        let h = b.hold(10 * UNIT, fetch, |_| 40 * UNIT).await.unwrap();
        assert_eq!(
            (
                h.permit.bytes(),
                fetches.load(std::sync::atomic::Ordering::SeqCst)
            ),
            (40 * UNIT, 1)
        );
        // 60 KiB free, a second job needs 70: it gives its 10 back, waits for
        // the first job to finish, then fetches again.
        let b2 = b.clone();
        let n = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let n2 = n.clone();
        let second = tokio::spawn(async move {
            let f = || {
                n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { Ok::<_, ()>(Bytes::from(vec![0u8; 10 * 1024])) }
            };
            b2.hold(10 * UNIT, f, |_| 70 * UNIT)
                .await
                .unwrap()
                .permit
                .bytes()
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!second.is_finished(), "granted 70 KiB with 60 free");
        assert_eq!(
            n.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "fetched once, then waits"
        );
        drop(h);
        assert_eq!(second.await.unwrap(), 70 * UNIT);
        assert_eq!(
            n.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "fetched again once granted"
        );
        assert_eq!(b.available(), 100 * UNIT);
        // A need over the whole budget is refused by name, holding nothing.
        let err = b.hold(10 * UNIT, fetch, |_| 101 * UNIT).await.unwrap_err();
        assert!(matches!(
            err,
            HoldError::Budget(BudgetError::OverBudget { .. })
        ));
        assert_eq!(b.available(), 100 * UNIT);
    }

    #[test]
    fn shrinking_gives_back_the_rest_and_the_gauge_follows() {
        let reserved = IntGauge::new("r", "r").unwrap();
        let waits = IntCounter::new("w", "w").unwrap();
        let b = AudioBudget::new(100 * UNIT).with_metrics(BudgetMetrics {
            reserved: reserved.clone(),
            waits,
        });
        let mut p = b.reserve_blocking(60 * UNIT).unwrap();
        assert_eq!(reserved.get(), (60 * UNIT) as i64);
        p.shrink_to(10 * UNIT + 1);
        assert_eq!(p.bytes(), 11 * UNIT);
        assert_eq!(b.available(), 89 * UNIT);
        assert_eq!(reserved.get(), (11 * UNIT) as i64);
        p.shrink_to(50 * UNIT);
        assert_eq!(p.bytes(), 11 * UNIT, "shrink never grows");
        drop(p);
        assert_eq!(reserved.get(), 0);
        assert_eq!(b.available(), 100 * UNIT);
    }
}
