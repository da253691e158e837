//! The worker loop, written once for every stage:
//!
//! consume → decode → batch held? → dedupe → handle → publish follow-ups
//! with confirms → mark done → ack.
//!
//! A job of a batch an operator paused is parked on the wait ladder, one of
//! a cancelled batch acked and dropped ([`crate::batch_control`]).
//!
//! A crash at any point loses nothing (the message is unacked and comes back)
//! and duplicates nothing observable (effects are under deterministic keys,
//! follow-ups carry stable job ids and are deduplicated downstream). The ack
//! rule lives in one place: `Worker::decide` (decode → run → route) returns
//! a `Disposition` (ack or requeue) and [`crate::acks`] settles it, in
//! batches. Outcomes are logged and counted through [`crate::events`].
//!
//! The loop imports the stage contract ([`crate::stage`],
//! [`crate::job_error`]); nothing imports the loop but [`crate::app`].
//!
//! Reconnection: lapin does not recover by itself, so the loop reconnects with
//! exponential backoff (backon) whenever the connection or the consumer ends.
//! Shutdown: a [`CancellationToken`] stops consuming; in-flight jobs finish
//! within the drain timeout; [`run`] returns only when every task is done.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use futures::{FutureExt, StreamExt};
use lapin::{
    message::Delivery,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::acks::{self, AckPolicy, Acks};
use crate::batch_control::{self, Control, PAUSED_RECHECK};
use crate::broker::{self, DeadLetter, Publisher};
use crate::events::{
    DeadLetterReason, DeadLettered, DelayScheduled, DuplicateSkipped, FatalStop, InternalEvent,
    JobFinished, JobOutcome, Reconnecting, RetryScheduled,
};
use crate::job_error::{ErrorClass, JobError};
use crate::ledger::Halt;
use crate::services::Services;
use crate::stage::{JobCtx, Stage};
use engage_model::envelope::{Envelope, StageName};
use engage_model::job_ids::CheckIds;
use engage_model::layout::valid_batch_id;

/// Why a delivery did not complete, before [`Worker::route`] decides where
/// the message goes.
#[derive(Debug)]
enum Failure {
    /// The job body does not decode: dead-letter it.
    Body(String),
    /// Redis or the broker failed around the job: retry, no attempt spent.
    Infra(ErrorClass, anyhow::Error),
    /// The handler failed: its variant decides.
    Job(JobError),
}

/// How often an idle worker checks that its publishing channel is alive (a
/// dead one turns `/readyz` false and rebuilds the connection).
const PUBLISHER_CHECK: Duration = Duration::from_secs(1);

/// What to do with a delivery once processed (the ack rule).
#[derive(Debug, PartialEq, Eq)]
enum Disposition {
    /// Effects durable, follow-ups confirmed (or moved to retry/DLQ): ack.
    Ack,
    /// Could not even move it elsewhere (broker trouble) or a fatal error: requeue.
    Requeue,
}

struct Worker<S: Stage> {
    stage: Arc<S>,
    svc: Arc<Services>,
    fatal: CancellationToken,
}

/// Runs a stage until `shutdown` is cancelled. Returns when every in-flight job
/// has finished (or the drain timeout passed).
pub async fn run<S: Stage>(
    stage: Arc<S>,
    svc: Arc<Services>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let worker = Arc::new(Worker {
        stage,
        svc: svc.clone(),
        fatal: CancellationToken::new(),
    });
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        match worker.clone().consume(shutdown.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                svc.health.set_amqp(false);
                let wait = delays.next().unwrap_or(Duration::from_secs(10));
                Reconnecting {
                    stage: S::NAME,
                    wait,
                    error: &e,
                }
                .emit(&svc.metrics);
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

impl<S: Stage> Worker<S> {
    /// One connection's life: declare, consume, drain. `Ok` only on shutdown.
    async fn consume(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let svc = &self.svc;
        let name = S::NAME.as_str();
        let conn = broker::connect(
            svc.cfg.broker.amqp_url.expose(),
            &format!("engage-{name}@{}", svc.cfg.fleet.namespace),
        )
        .await?;
        let setup = conn.create_channel().await?;
        svc.topology.declare(&setup, &StageName::ALL).await?;
        let publisher = Publisher::open(&conn, svc.topology.clone()).await?;
        let ch = conn.create_channel().await?;
        let policy = AckPolicy::for_concurrency(svc.cfg.limits.concurrency);
        ch.basic_qos(
            policy.prefetch(svc.cfg.limits.concurrency),
            BasicQosOptions::default(),
        )
        .await?;
        // Jobs run at most `concurrency` at a time; the prefetch window also
        // holds the finished deliveries whose acks are being batched, so
        // holding them never starves the jobs.
        let slots = Arc::new(Semaphore::new(usize::from(svc.cfg.limits.concurrency)));
        let tag = format!("engage-{name}-{}", uuid::Uuid::new_v4());
        let mut consumer = ch
            .basic_consume(
                svc.topology.work_queue(S::NAME).into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                consumer_args(S::NAME, &svc.cfg),
            )
            .await?;
        let (acks, settling) =
            acks::spawn(ch.clone(), policy, name, svc.metrics.ack_frames.clone());
        svc.health.set_amqp(true);
        info!(stage = name, queue = %svc.topology.work_queue(S::NAME), concurrency = svc.cfg.limits.concurrency, "consuming");

        // Cancelled when this connection's publishing channel is found dead:
        // every job would fail to publish, so the connection is rebuilt
        // instead of cycling messages toward the dead-letter queue.
        let broken = CancellationToken::new();
        let mut watch = tokio::time::interval(PUBLISHER_CHECK);
        let mut tasks = JoinSet::new();
        let result = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                _ = broken.cancelled() => break Err(anyhow::anyhow!(
                    "the publishing channel closed (a publish failed on it)"
                )),
                _ = watch.tick() => if !publisher.channel().status().connected() {
                    break Err(anyhow::anyhow!("the publishing channel closed"));
                },
                _ = self.fatal.cancelled() => {
                    // Stop consuming but stay up (not ready) until SIGTERM, so the
                    // operator sees the cause on /readyz and in the logs.
                    let _ = ch.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    shutdown.cancelled().await;
                    break Ok(());
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done { error!(stage = name, error = %e, "job task failed"); }
                }
                next = consumer.next(), if slots.available_permits() > 0 => match next {
                    Some(Ok(delivery)) => {
                        acks.delivered(delivery.delivery_tag);
                        let slot = slots.clone().try_acquire_owned();
                        let me = self.clone();
                        let p = publisher.clone();
                        let a = acks.clone();
                        let b = broken.clone();
                        tasks.spawn(async move {
                            me.process(delivery, &p, &a, &b).await;
                            drop(slot);
                        });
                    }
                    Some(Err(e)) => break Err(anyhow::Error::from(e).context("consumer failed")),
                    None => break Err(anyhow::anyhow!("consumer stream ended (channel or connection closed)")),
                },
            }
        };
        // Drain: no new deliveries; let in-flight jobs finish and ack.
        let _ = ch
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
        let drain = svc.cfg.drain_timeout();
        let inflight = tasks.len();
        if inflight > 0 {
            info!(stage = name, inflight, ?drain, "draining in-flight jobs");
        }
        let drained =
            tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            warn!(
                stage = name,
                left = tasks.len(),
                "drain timeout: unfinished jobs return to the queue"
            );
            tasks.shutdown().await;
        }
        // Every job has reported: settle what is left before the channel closes.
        drop(acks);
        if tokio::time::timeout(Duration::from_secs(5), settling)
            .await
            .is_err()
        {
            warn!(
                stage = name,
                "acks not settled in time; those messages will be redelivered"
            );
        }
        let _ = ch.close(200, "bye".into()).await;
        let _ = publisher.channel().close(200, "bye".into()).await;
        let _ = conn.close(200, "bye".into()).await;
        svc.health.set_amqp(false);
        result
    }

    /// Handles one delivery end to end and applies the ack rule.
    async fn process(
        &self,
        delivery: Delivery,
        publisher: &Publisher,
        acks: &Acks,
        broken: &CancellationToken,
    ) {
        let name = S::NAME.as_str();
        let m = &self.svc.metrics;
        m.in_flight.with_label_values(&[name]).inc();
        let started = Instant::now();
        let (disposition, outcome) = self.decide(&delivery, publisher).await;
        m.in_flight.with_label_values(&[name]).dec();
        if disposition == Disposition::Requeue
            && outcome != JobOutcome::Fatal
            && !publisher.channel().status().connected()
        {
            // Our own publishing channel died, not the job: rebuild the
            // connection instead of nacking it round and round toward the
            // delivery limit. The delivery stays unsettled and returns when
            // the old channel closes (one delivery of the limit, not one per
            // requeue on a dead channel).
            broken.cancel();
            return;
        }
        JobFinished {
            stage: S::NAME,
            outcome,
            elapsed: started.elapsed(),
        }
        .emit(m);
        acks.finished(delivery.delivery_tag, disposition == Disposition::Ack);
    }

    /// decode → run → route: returns the ack rule's decision and the outcome.
    async fn decide(
        &self,
        delivery: &Delivery,
        publisher: &Publisher,
    ) -> (Disposition, JobOutcome) {
        // A parked job back from a rung before it is due goes down the
        // ladder again, untouched: nothing is decoded, no attempt is spent.
        if let Some(due) = broker::header_str(&delivery.properties, broker::DUE_HEADER)
            .and_then(|d| d.parse::<i64>().ok())
        {
            let left = Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0));
            if let Some(rung) = broker::rung_for(left) {
                let id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map_or("?", |m| m.as_str());
                let (disposition, _) = self.park(publisher, &delivery.data, id, rung, due).await;
                return (disposition, JobOutcome::Waiting);
            }
        }
        let env = match Envelope::decode(&delivery.data) {
            Ok(env) => env,
            Err(e) => {
                let reason = DeadLetterReason::Undecodable;
                return self
                    .dead_letter(publisher, &delivery.data, "?", reason, 0, &e.to_string())
                    .await;
            }
        };
        let span = info_span!("job", stage = S::NAME.as_str(), batch_id = %env.batch_id, job_id = %env.job_id, trace_id = %env.trace_id, attempt = env.attempt);
        async {
            // The broker dead-letters a message returned more often than the
            // delivery limit, where nothing can make its items final; on its
            // last allowed delivery the worker gives up on it itself (unless
            // the job is done already: then it is an ordinary duplicate).
            let deliveries = broker::header_str(&delivery.properties, "x-delivery-count")
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0);
            // Decoded and its ids checked first (no I/O): ids are checked
            // before they name a key. Then one Redis round trip answers both
            // whether an operator holds the batch and whether the job
            // completed already.
            let job = self.decode(&env);
            let (control, done) = match self.look_up(&env, job.is_ok()).await {
                Ok(answers) => answers,
                Err(e) => {
                    return self
                        .retry_free(publisher, &env, ErrorClass::Redis, e.into())
                        .await;
                }
            };
            if let Some(held) = self.held(publisher, &delivery.data, &env, control).await {
                return held;
            }
            let ran = match job {
                Ok(_) if done => {
                    DuplicateSkipped { stage: S::NAME }.emit(&self.svc.metrics);
                    Ok(JobOutcome::Duplicate)
                }
                Ok(_) if deliveries >= self.svc.cfg.broker.delivery_limit => {
                    let reason = DeadLetterReason::DeliveryLimit;
                    let why = format!("delivered {} times without finishing", deliveries + 1);
                    return self
                        .give_up(publisher, &env, reason, env.attempt, &why)
                        .await;
                }
                Ok(job) => self.run(&env, job, publisher).await,
                Err(failure) => Err(failure),
            };
            self.route(publisher, &delivery.data, &env, ran).await
        }
        .instrument(span)
        .await
    }

    /// The job's batch's control state ([`crate::batch_control`]; `Running`
    /// for an invalid batch id, which names no key) and, when its ids
    /// checked out (`ids_ok`), whether it completed already (a redelivery):
    /// both in one Redis round trip (the pause/cancel check was a round trip
    /// of its own on every job). It is still made for every job, when the
    /// job is received, so a pause or cancel is seen by the next job that
    /// arrives after it.
    async fn look_up(
        &self,
        env: &Envelope<serde_json::Value>,
        ids_ok: bool,
    ) -> Result<(Control, bool), redis::RedisError> {
        let svc = &self.svc;
        let control = valid_batch_id(&env.batch_id)
            .then(|| batch_control::control_cmd(&svc.ledger, &env.batch_id));
        let done = ids_ok.then(|| svc.idempotency.is_done_cmd(S::NAME, &env.job_id));
        let mut conn = svc.redis.clone();
        Ok(match (control, done) {
            (Some(control), Some(done)) => {
                let (answer, done) = svc.redis.query_pair(&control, &done).await?;
                (batch_control::control_of(answer), done)
            }
            (Some(control), None) => {
                let answer = control.query_async(&mut conn).await?;
                (batch_control::control_of(answer), false)
            }
            (None, Some(done)) => (Control::Running, done.query_async(&mut conn).await?),
            (None, None) => (Control::Running, false),
        })
    }

    /// An operator's hold on the job's batch ([`crate::batch_control`]): a
    /// paused batch's job is parked on the wait ladder (no attempt spent)
    /// and looked at again after [`PAUSED_RECHECK`]; a cancelled batch's job
    /// is acked and dropped before it costs anything. `None`: run it.
    async fn held(
        &self,
        publisher: &Publisher,
        body: &[u8],
        env: &Envelope<serde_json::Value>,
        control: Control,
    ) -> Option<(Disposition, JobOutcome)> {
        match control {
            Control::Running => None,
            Control::Cancelled => {
                debug!("the batch is cancelled; dropping the job");
                Some((Disposition::Ack, JobOutcome::Cancelled))
            }
            Control::Paused => {
                let wait = i64::try_from(PAUSED_RECHECK.as_millis()).unwrap_or(i64::MAX);
                let rung = broker::rung_for(PAUSED_RECHECK).unwrap_or(0);
                let (disposition, _) = self
                    .park(
                        publisher,
                        body,
                        &env.job_id,
                        rung,
                        now_ms().saturating_add(wait),
                    )
                    .await;
                Some((disposition, JobOutcome::Paused))
            }
        }
    }

    /// The job body with its ids checked (no I/O).
    fn decode(&self, env: &Envelope<serde_json::Value>) -> Result<S::Job, Failure> {
        // Ids are checked before they name a key: a forged job is poison.
        let job: S::Job = env.job_as().map_err(|e| Failure::Body(e.to_string()))?;
        job.check_ids(&env.batch_id, &env.job_id)
            .map_err(|e| Failure::Body(e.to_string()))?;
        Ok(job)
    }

    /// Runs the handler (a panic is a transient failure), publishes its
    /// follow-ups with confirms, then marks the job done.
    async fn run(
        &self,
        env: &Envelope<serde_json::Value>,
        job: S::Job,
        publisher: &Publisher,
    ) -> Result<JobOutcome, Failure> {
        let svc = &self.svc;
        let ctx = self.ctx(env, publisher);
        let result = AssertUnwindSafe(self.stage.handle(&ctx, job))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let err = anyhow::anyhow!("handler panicked: {msg}");
                Err(JobError::transient(ErrorClass::Panic, err))
            });
        let emits = result.map_err(Failure::Job)?;
        if let Err(e) = publish_all(publisher, (&env.batch_id, &env.trace_id), emits).await {
            return Err(Failure::Infra(ErrorClass::Amqp, e.into()));
        }
        if let Err(e) = svc.idempotency.mark_done(S::NAME, &env.job_id).await {
            // Follow-ups are confirmed; a lost marker only means a harmless re-run.
            warn!(error = %e, "could not record completion");
        }
        Ok(JobOutcome::Ok)
    }

    fn ctx(&self, env: &Envelope<serde_json::Value>, publisher: &Publisher) -> JobCtx {
        JobCtx {
            publisher: publisher.clone(),
            svc: self.svc.clone(),
            batch_id: env.batch_id.clone(),
            job_id: env.job_id.clone(),
            attempt: env.attempt,
            trace_id: env.trace_id.clone(),
        }
    }

    /// Dead-letters a job whose attempts or deliveries ran out, after making
    /// the items it stood for final (`dead_lettered:<reason>`, see
    /// [`Stage::dead_lettered`]) so that its batch still ends. If that
    /// cannot be recorded now (Redis or the broker is down), the message is
    /// requeued and given up on again later.
    async fn give_up(
        &self,
        publisher: &Publisher,
        env: &Envelope<serde_json::Value>,
        reason: DeadLetterReason,
        attempts: u32,
        error: &str,
    ) -> (Disposition, JobOutcome) {
        if let Err(e) = self.finish_items(publisher, env, reason).await {
            warn!(error = %format!("{e:#}"), "cannot record the dead-lettered job's items; requeueing");
            return (Disposition::Requeue, JobOutcome::DeadLetter);
        }
        if !self.halt_batch(env, reason, error).await {
            return (Disposition::Requeue, JobOutcome::DeadLetter);
        }
        let body = serde_json::to_vec(env).unwrap_or_default();
        self.dead_letter(publisher, &body, &env.job_id, reason, attempts, error)
            .await
    }

    async fn finish_items(
        &self,
        publisher: &Publisher,
        env: &Envelope<serde_json::Value>,
        reason: DeadLetterReason,
    ) -> anyhow::Result<()> {
        // A job that does not decode or has forged ids stands for nothing.
        let Ok(job) = env.job_as::<S::Job>() else {
            return Ok(());
        };
        if job.check_ids(&env.batch_id, &env.job_id).is_err() {
            return Ok(());
        }
        // A job that completed already made its items final with its result.
        if self.svc.idempotency.is_done(S::NAME, &env.job_id).await? {
            return Ok(());
        }
        let emits = self
            .stage
            .dead_lettered(&self.ctx(env, publisher), job, reason.as_str())
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        publish_all(publisher, (&env.batch_id, &env.trace_id), emits).await?;
        Ok(())
    }

    /// Moves the message where its result says: acked, retried, delayed,
    /// dead-lettered or (fatal) requeued while the worker stops.
    async fn route(
        &self,
        publisher: &Publisher,
        body: &[u8],
        env: &Envelope<serde_json::Value>,
        ran: Result<JobOutcome, Failure>,
    ) -> (Disposition, JobOutcome) {
        let (job_id, attempt) = (env.job_id.as_str(), env.attempt);
        let err = match ran {
            Ok(outcome) => return (Disposition::Ack, outcome),
            Err(Failure::Body(e)) => {
                let reason = DeadLetterReason::Poison;
                if !self.halt_batch(env, reason, &e).await {
                    return (Disposition::Requeue, JobOutcome::DeadLetter);
                }
                return self
                    .dead_letter(publisher, body, job_id, reason, attempt, &e)
                    .await;
            }
            Err(Failure::Infra(class, e)) => {
                return self.retry_free(publisher, env, class, e).await;
            }
            Err(Failure::Job(err)) => err,
        };
        match err {
            JobError::Fatal(e) => {
                FatalStop { error: &e }.emit(&self.svc.metrics);
                self.svc
                    .health
                    .set_fatal(crate::redact::redact_text(&format!("{e:#}")));
                self.fatal.cancel();
                (Disposition::Requeue, JobOutcome::Fatal)
            }
            JobError::Poison(e) => {
                let (reason, e) = (DeadLetterReason::Poison, format!("{e:#}"));
                if !self.halt_batch(env, reason, &e).await {
                    return (Disposition::Requeue, JobOutcome::DeadLetter);
                }
                self.dead_letter(publisher, body, job_id, reason, attempt, &e)
                    .await
            }
            JobError::Delay { after, reason } => {
                let error = JobError::Delay { after, reason };
                DelayScheduled {
                    stage: S::NAME,
                    reason,
                    attempt,
                    error: &error,
                }
                .emit(&self.svc.metrics);
                let due =
                    now_ms().saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX));
                let Some(rung) = broker::rung_for(after) else {
                    // Due at once: through the work queue, no attempt spent.
                    return self
                        .send_again(publisher, env, 0, attempt, JobOutcome::Delayed)
                        .await;
                };
                let Ok(body) = serde_json::to_vec(env) else {
                    return (Disposition::Requeue, JobOutcome::Delayed);
                };
                self.park(publisher, &body, job_id, rung, due).await
            }
            JobError::Transient { class, error } => self.retry(publisher, env, class, error).await,
        }
    }

    /// The job failed transiently: run it again later, spending an attempt.
    async fn retry(
        &self,
        publisher: &Publisher,
        env: &Envelope<serde_json::Value>,
        class: ErrorClass,
        error: anyhow::Error,
    ) -> (Disposition, JobOutcome) {
        let err = JobError::Transient { class, error };
        self.reschedule(publisher, env, env.attempt + 1, class, &err)
            .await
    }

    /// Broker or Redis trouble around the job, not the job's fault: run it
    /// again later without spending an attempt.
    async fn retry_free(
        &self,
        publisher: &Publisher,
        env: &Envelope<serde_json::Value>,
        class: ErrorClass,
        error: anyhow::Error,
    ) -> (Disposition, JobOutcome) {
        let err = JobError::Transient { class, error };
        self.reschedule(publisher, env, env.attempt, class, &err)
            .await
    }

    /// Schedules attempt `next` on the backoff tier of the current attempt,
    /// or dead-letters the job once `max_attempts` is reached.
    async fn reschedule(
        &self,
        publisher: &Publisher,
        env: &Envelope<serde_json::Value>,
        next: u32,
        class: ErrorClass,
        err: &JobError,
    ) -> (Disposition, JobOutcome) {
        if next >= self.svc.cfg.limits.max_attempts {
            let reason = DeadLetterReason::MaxAttempts;
            return self
                .give_up(publisher, env, reason, next, &err.to_string())
                .await;
        }
        let tier = self.svc.topology.tier_for_attempt(env.attempt);
        RetryScheduled {
            stage: S::NAME,
            class,
            tier,
            attempt: next,
            error: err,
        }
        .emit(&self.svc.metrics);
        self.send_again(publisher, env, tier, next, JobOutcome::Retry)
            .await
    }

    /// Publishes the job to retry tier `tier` carrying `attempt`.
    async fn send_again(
        &self,
        publisher: &Publisher,
        env: &Envelope<serde_json::Value>,
        tier: usize,
        attempt: u32,
        outcome: JobOutcome,
    ) -> (Disposition, JobOutcome) {
        let mut again = env.clone();
        again.attempt = attempt;
        let Ok(body) = serde_json::to_vec(&again) else {
            return (Disposition::Requeue, outcome);
        };
        match publisher
            .publish_retry(S::NAME, tier, &body, &env.job_id)
            .await
        {
            Ok(()) => (Disposition::Ack, outcome),
            Err(e) => {
                warn!(error = %e, "cannot schedule retry; requeueing");
                (Disposition::Requeue, outcome)
            }
        }
    }

    /// Halts the job's batch when this stage's work is the batch's own
    /// ([`Stage::HALTS_BATCH`]), so that the batch ends instead of waiting
    /// for work that sits in a dead-letter queue. `false`: it could not be
    /// recorded (Redis down): requeue, and dead-letter it again later.
    async fn halt_batch(
        &self,
        env: &Envelope<serde_json::Value>,
        reason: DeadLetterReason,
        error: &str,
    ) -> bool {
        if !S::HALTS_BATCH || !valid_batch_id(&env.batch_id) {
            return true;
        }
        let halt = Halt {
            job_id: env.job_id.clone(),
            stage: S::NAME.as_str().to_owned(),
            reason: reason.as_str().to_owned(),
            error: error.chars().take(500).collect(),
        };
        let ttl = self.svc.cfg.redis.finished_batch_ttl();
        match self.svc.ledger.halt(&env.batch_id, &halt, ttl).await {
            Ok(()) => {
                warn!(
                    reason = reason.as_str(),
                    "the batch is halted until this job is replayed"
                );
                true
            }
            Err(e) => {
                warn!(error = %e, "cannot record the batch's halt; requeueing");
                false
            }
        }
    }

    /// Puts a job on the wait ladder until `due_ms` (its attempt unchanged).
    async fn park(
        &self,
        publisher: &Publisher,
        body: &[u8],
        job_id: &str,
        rung: u32,
        due_ms: i64,
    ) -> (Disposition, JobOutcome) {
        match publisher
            .publish_wait(S::NAME, rung, body, job_id, due_ms)
            .await
        {
            Ok(()) => (Disposition::Ack, JobOutcome::Delayed),
            Err(e) => {
                warn!(error = %e, "cannot park the job; requeueing");
                (Disposition::Requeue, JobOutcome::Delayed)
            }
        }
    }

    async fn dead_letter(
        &self,
        publisher: &Publisher,
        body: &[u8],
        job_id: &str,
        reason: DeadLetterReason,
        attempts: u32,
        error: &str,
    ) -> (Disposition, JobOutcome) {
        let stage = S::NAME;
        DeadLettered {
            stage,
            reason,
            attempts,
            error,
        }
        .emit(&self.svc.metrics);
        let dl = DeadLetter {
            reason: reason.as_str().to_string(),
            attempts,
            error: error.to_string(),
        };
        match publisher
            .publish_dead_letter(stage, body, job_id, &dl)
            .await
        {
            Ok(()) => (Disposition::Ack, JobOutcome::DeadLetter),
            Err(e) => {
                warn!(error = %e, "cannot dead-letter; requeueing");
                (Disposition::Requeue, JobOutcome::DeadLetter)
            }
        }
    }
}

/// Wall-clock milliseconds since the epoch: wait ladder due times are
/// compared across workers, so they are wall-clock, not monotonic.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Publishes a job's follow-ups (same batch and trace) with confirms.
pub(crate) async fn publish_all(
    publisher: &Publisher,
    (batch_id, trace_id): (&str, &str),
    emits: Vec<crate::stage::Emit>,
) -> Result<(), broker::BrokerError> {
    let publishes = emits.into_iter().map(|e| {
        let env = Envelope::new(batch_id, e.job_id, trace_id, e.job);
        async move { publisher.publish_job(e.stage, &env).await }
    });
    futures::future::try_join_all(publishes).await.map(|_| ())
}

/// The consumer's arguments: the clean stage asks RabbitMQ for its own
/// acknowledgement timeout (`x-consumer-timeout`, `[clean]
/// consumer_timeout_s`), because a gzip or JSON-array log is one job however
/// big it is; the other stages' jobs are short and keep the broker's timeout.
/// Brokers older than 3.11.15 ignore the argument.
fn consumer_args(stage: StageName, cfg: &crate::config::FleetConfig) -> FieldTable {
    let mut args = FieldTable::default();
    let secs = cfg.clean.consumer_timeout_s;
    if stage == StageName::Clean && secs > 0 {
        let ms = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        args.insert("x-consumer-timeout".into(), AMQPValue::LongLongInt(ms));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_clean_consumer_asks_for_its_own_timeout() {
        let mut cfg = crate::config::FleetConfig::default();
        let clean = consumer_args(StageName::Clean, &cfg);
        assert_eq!(
            clean.inner().get("x-consumer-timeout"),
            Some(&AMQPValue::LongLongInt(6 * 3600 * 1000))
        );
        assert!(consumer_args(StageName::Analyze, &cfg).inner().is_empty());
        cfg.clean.consumer_timeout_s = 0;
        assert!(consumer_args(StageName::Clean, &cfg).inner().is_empty());
    }
}
