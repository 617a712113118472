//! Coalesced lookups: lookups waiting for the database go out together, as one statement.
//!
//! Natural batching, no fixed timer. One dispatcher on the database runtime takes the first
//! waiting lookup and a connection for it; everything that queued meanwhile (up to
//! `--db-batch-max` lookups) joins the same statement. Identical instance ids in a batch are
//! looked up once. Each waiter gets exactly its own candidates, the same as alone; a failed
//! batch gives each of its waiters the same failure; a waiter that went away (its client left,
//! or its deadline passed) is dropped before the statement, without touching the others.
//!
//! When a statement goes ([`opens_at`]): a lookup with no statement of its dispatcher in flight
//! goes at once, so a lone lookup costs one statement and no wait. While one is in flight, the
//! queue rides the next statement when that one comes back, rather than taking another free
//! connection at once, unless it already holds a full batch or its oldest lookup has waited
//! twice the recent round trip (a late statement does not hold the others up). More
//! connections only help while batches are full: below that, each extra statement splits the
//! same lookups over more round trips, and the database pays its fixed cost per statement
//! once more. Measured on this machine's loopback at 256 clients on a pool of 4, the queue
//! taking every free connection sent 0.16-0.19 statements per authentication; riding the
//! next statement sends 0.03-0.04, and the database's CPU per authentication halves
//! (docs/benchmarks.md, "Goodput").

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot};

use crate::db::{Database, DatabaseSettings, Failure, Lease, Pool, StatementMode};
use crate::metrics::Metrics;

use super::Candidate;
use super::query::{self, Statement};

/// What one lookup got.
#[derive(Debug)]
pub(crate) struct Served {
    pub(crate) result: Result<Vec<Candidate>, Arc<Failure>>,
    /// From the lookup being queued to its statement being sent: the wait for the database.
    pub(crate) waited: Duration,
    /// The statement's round trip.
    pub(crate) db: Duration,
    /// Statements sent for this lookup: 1, or 0 when it failed before one was sent.
    pub(crate) statements: u32,
    /// Lookups the statement answered, this one included.
    pub(crate) shared: usize,
}

struct Waiter {
    instance_id: String,
    queued: Instant,
    reply: oneshot::Sender<Served>,
}

/// The queue in front of the dispatcher; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Coalescer {
    queue: mpsc::UnboundedSender<Waiter>,
    /// Lookups queued and not yet sent, for admission control and the dispatcher's gate.
    pending: Arc<AtomicUsize>,
    /// Wakes the dispatcher's gate: `pending` reached a full batch.
    wake: Arc<Notify>,
    batch_max: usize,
    /// The recent round trip of a statement, in microseconds (a moving average).
    round_trip_micros: Arc<AtomicU64>,
    /// Lookups one round of statements carries: every connection with a full batch.
    per_round: usize,
    /// Longest a lookup may wait for its statement: the acquire timeout.
    wait_budget: Duration,
    /// Longest a lookup waits for its answer in all (the pool's deadline).
    deadline: Duration,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter")
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

impl Coalescer {
    /// Starts the dispatcher of `pool` (the primary's or a replica's, named `target` in the
    /// metrics) on `database`'s runtime. At most `settings.batch_max` lookups share a
    /// statement; 1 turns coalescing off. A lookup waits at most `wait_budget` for a
    /// connection (then fails as a pool timeout) and `deadline` for its answer in all.
    pub(crate) fn start(
        database: &Database,
        target: (Arc<str>, &Pool),
        metrics: Metrics,
        settings: &DatabaseSettings,
        (wait_budget, deadline): (Duration, Duration),
    ) -> Self {
        let (target, pool) = target;
        let (queue, incoming) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let wake = Arc::new(Notify::new());
        let round_trip_micros = Arc::new(AtomicU64::new(0));
        let batch_max = settings.batch_max.max(1);
        let dispatcher = Dispatcher {
            line: Line {
                target,
                pool: pool.clone(),
                mode: pool.statement_mode(),
                metrics,
                round_trip_micros: Arc::clone(&round_trip_micros),
            },
            batch_max,
            pending: Arc::clone(&pending),
            in_flight: Arc::new(AtomicUsize::new(0)),
            wake: Arc::clone(&wake),
            wait_budget,
        };
        database.handle().spawn(dispatcher.run(incoming));
        let connections = usize::try_from(settings.max_connections).unwrap_or(usize::MAX);
        Self {
            queue,
            pending,
            wake,
            batch_max,
            round_trip_micros,
            per_round: batch_max.saturating_mul(connections).max(1),
            wait_budget,
            deadline,
        }
    }

    /// The candidates of `instance_id`, newest first, within the deadline.
    pub(crate) async fn candidates(&self, instance_id: &str) -> Served {
        let queued = Instant::now();
        let (reply, answer) = oneshot::channel();
        let ahead = self.pending.fetch_add(1, Ordering::Relaxed);
        let sent = self.queue.send(Waiter {
            instance_id: instance_id.to_owned(),
            queued,
            reply,
        });
        if ahead + 1 == self.batch_max {
            self.wake.notify_one();
        }
        let unanswered = |failure: Failure| Served {
            result: Err(Arc::new(failure)),
            waited: queued.elapsed(),
            db: Duration::ZERO,
            statements: 0,
            shared: 0,
        };
        if sent.is_err() {
            // The dispatcher has stopped with the runtime: the service is shutting down.
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return unanswered(Failure::Sql(sqlx::Error::PoolClosed));
        }
        match tokio::time::timeout(self.deadline, answer).await {
            Ok(Ok(served)) => served,
            Ok(Err(_)) => unanswered(Failure::Sql(sqlx::Error::PoolClosed)),
            // Dropping `answer` closes the waiter: the dispatcher skips it if still queued.
            Err(_) => unanswered(Failure::Deadline(self.deadline)),
        }
    }

    /// Whether a lookup queued now would wait longer than the acquire timeout
    /// ([`would_wait_too_long`] on the queue and the recent round trip). The limit follows the
    /// database: a fast one queues many lookups, a slow one few.
    pub(crate) fn queue_full(&self) -> bool {
        would_wait_too_long(
            self.pending.load(Ordering::Relaxed),
            self.per_round,
            Duration::from_micros(self.round_trip_micros.load(Ordering::Relaxed)),
            self.wait_budget,
        )
    }
}

/// Whether a lookup behind `pending` others would wait longer than `budget`: the rounds of
/// statements ahead of it (`per_round` lookups each: every connection with a full batch) times
/// `round_trip`. With nothing queued a lookup always goes: that is also how a stale, slow round
/// trip gets measured again.
fn would_wait_too_long(
    pending: usize,
    per_round: usize,
    round_trip: Duration,
    budget: Duration,
) -> bool {
    if pending == 0 {
        return false;
    }
    let rounds = u32::try_from(pending / per_round.max(1) + 1).unwrap_or(u32::MAX);
    round_trip.saturating_mul(rounds) > budget
}

/// What decides whether queued lookups take another connection.
#[derive(Debug, Clone, Copy)]
struct Gate {
    /// Statements of this dispatcher in flight.
    in_flight: usize,
    /// Lookups queued, the channel's included.
    pending: usize,
    batch_max: usize,
    /// When the oldest queued lookup was queued.
    oldest: Instant,
    /// The recent round trip of a statement (zero before the first).
    round_trip: Duration,
    wait_budget: Duration,
}

/// When the queued lookups may take another connection: `None` for at once, or the instant
/// the oldest of them stops waiting for the statement in flight (module docs).
fn opens_at(gate: Gate, now: Instant) -> Option<Instant> {
    if gate.in_flight == 0 || gate.pending >= gate.batch_max {
        return None;
    }
    let opens_at = gate.oldest + (gate.round_trip * 2).min(gate.wait_budget);
    (opens_at > now).then_some(opens_at)
}

/// Forms the batches and starts their statements.
struct Dispatcher {
    line: Line,
    batch_max: usize,
    pending: Arc<AtomicUsize>,
    /// Statements sent and not yet back.
    in_flight: Arc<AtomicUsize>,
    /// Wakes the gate: the queue reached a full batch, or a statement came back.
    wake: Arc<Notify>,
    /// Longest a lookup waits for its statement: the acquire timeout.
    wait_budget: Duration,
}

/// Where a dispatcher's statements go and what they report to; cloned into each batch's task.
#[derive(Clone)]
struct Line {
    /// The `target` label of its metrics.
    target: Arc<str>,
    pool: Pool,
    mode: StatementMode,
    metrics: Metrics,
    round_trip_micros: Arc<AtomicU64>,
}

/// Lookups going out in one statement.
struct Batch {
    /// Distinct instance ids, in queue order.
    ids: Vec<String>,
    /// Each waiter with the slot of its instance id in `ids`.
    waiters: Vec<(usize, Waiter)>,
}

impl Dispatcher {
    async fn run(self, mut incoming: mpsc::UnboundedReceiver<Waiter>) {
        let mut queue = VecDeque::new();
        loop {
            if queue.is_empty() {
                match incoming.recv().await {
                    Some(waiter) => queue.push_back(waiter),
                    None => return,
                }
            }
            if let Some(opens_at) = self.opens_at(&queue) {
                // The queue rides the next statement. Later lookups stay in the channel until
                // it goes, so they cost this task no wake-up each.
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep_until(opens_at.into()) => {}
                }
                continue;
            }
            self.send_next(&mut queue, &mut incoming).await;
        }
    }

    /// [`opens_at`] for the dispatcher's queue now.
    fn opens_at(&self, queue: &VecDeque<Waiter>) -> Option<Instant> {
        opens_at(
            Gate {
                in_flight: self.in_flight.load(Ordering::Relaxed),
                pending: self.pending.load(Ordering::Relaxed),
                batch_max: self.batch_max,
                oldest: queue.front()?.queued,
                round_trip: Duration::from_micros(
                    self.line.round_trip_micros.load(Ordering::Relaxed),
                ),
                wait_budget: self.wait_budget,
            },
            Instant::now(),
        )
    }

    /// Takes a connection for the front of `queue` and sends the next batch on it.
    async fn send_next(
        &self,
        queue: &mut VecDeque<Waiter>,
        incoming: &mut mpsc::UnboundedReceiver<Waiter>,
    ) {
        // A connection for the oldest waiter, within what is left of its wait.
        let budget = queue.front().map_or(self.wait_budget, |oldest: &Waiter| {
            self.wait_budget.saturating_sub(oldest.queued.elapsed())
        });
        let started = Instant::now();
        let lease = self.line.pool.get_within(budget).await;
        let acquire = started.elapsed();
        self.line.metrics.observe_acquire(
            &self.line.target,
            acquire,
            matches!(lease, Err(sqlx::Error::PoolTimedOut)),
        );
        while let Ok(waiter) = incoming.try_recv() {
            queue.push_back(waiter);
        }
        match lease {
            Ok(lease) => {
                let batch = self.take(queue);
                if batch.waiters.is_empty() {
                    // Everyone who waited went away; the connection goes back unused.
                    return;
                }
                let in_flight = InFlight::start(&self.in_flight, &self.wake);
                tokio::spawn(send(self.line.clone(), lease, batch, in_flight));
            }
            // No connection within the acquire timeout: whoever has waited that long gets
            // the 503; the others keep their place and what is left of their wait.
            Err(sqlx::Error::PoolTimedOut) => {
                let failure = Arc::new(Failure::Sql(sqlx::Error::PoolTimedOut));
                let expired = self.expire(queue);
                answer_all(expired, &failure);
            }
            // The database refused or failed the connection: the next batch learns it.
            Err(err) => {
                let batch = self.take(queue).waiters.into_iter();
                answer_all(
                    batch.map(|(_, waiter)| waiter),
                    &Arc::new(Failure::Sql(err)),
                );
            }
        }
    }

    /// The waiters that have waited the whole acquire timeout, out of `queue`.
    fn expire(&self, queue: &mut VecDeque<Waiter>) -> Vec<Waiter> {
        let mut expired = Vec::new();
        let mut kept = VecDeque::with_capacity(queue.len());
        for waiter in queue.drain(..) {
            if waiter.queued.elapsed() >= self.wait_budget || waiter.reply.is_closed() {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                expired.push(waiter);
            } else {
                kept.push_back(waiter);
            }
        }
        *queue = kept;
        expired
    }

    /// The next batch from the front of `queue`: up to `batch_max` live waiters, their
    /// instance ids once each; waiters that went away are dropped.
    fn take(&self, queue: &mut VecDeque<Waiter>) -> Batch {
        let mut batch = Batch {
            ids: Vec::new(),
            waiters: Vec::new(),
        };
        while batch.waiters.len() < self.batch_max
            && let Some(waiter) = queue.pop_front()
        {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            if waiter.reply.is_closed() {
                continue;
            }
            batch.waiters.push((usize::MAX, waiter));
        }
        // A map, not a scan of `ids`: comparing each id with every earlier one was the
        // database thread's largest item in a profile at 256 clients (8 % of its samples,
        // with the same scan when the rows come back).
        let mut slots: HashMap<&str, usize> = HashMap::with_capacity(batch.waiters.len());
        for (slot, waiter) in &mut batch.waiters {
            *slot = *slots.entry(&waiter.instance_id).or_insert_with(|| {
                batch.ids.push(waiter.instance_id.clone());
                batch.ids.len() - 1
            });
        }
        batch
    }
}

/// A statement in flight, counted until dropped (also if its task dies), which wakes the gate.
struct InFlight {
    count: Arc<AtomicUsize>,
    wake: Arc<Notify>,
}

impl InFlight {
    fn start(count: &Arc<AtomicUsize>, wake: &Arc<Notify>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self {
            count: Arc::clone(count),
            wake: Arc::clone(wake),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

/// Sends one batch's statement on `lease` and answers its waiters.
async fn send(line: Line, mut lease: Lease, batch: Batch, in_flight: InFlight) {
    let Line {
        target,
        pool,
        mode,
        metrics,
        round_trip_micros,
    } = line;
    let statement = Statement::for_lookup(mode, batch.ids.len());
    let sent = Instant::now();
    metrics.sql_statement(&target, statement.name());
    metrics.observe_batch(batch.ids.len(), batch.waiters.len());
    for (_, waiter) in &batch.waiters {
        metrics.observe_queue_wait(sent.duration_since(waiter.queued));
    }
    let ids = &batch.ids;
    let (result, db) = pool
        .run_on(&mut lease, async |conn| {
            query::candidates_of(conn, mode, ids).await
        })
        .await;
    // Back to the pool before anyone is answered.
    drop(lease);
    remember_round_trip(&round_trip_micros, db);
    drop(in_flight);
    let shared = batch.waiters.len();
    match result {
        Ok(mut found) => {
            // The last waiter of an id takes its rows; any before it (the same instance asked
            // twice) get a copy.
            let mut remaining = vec![0_usize; found.len()];
            for (slot, _) in &batch.waiters {
                remaining[*slot] += 1;
            }
            for (slot, waiter) in batch.waiters {
                remaining[slot] -= 1;
                let candidates = if remaining[slot] == 0 {
                    std::mem::take(&mut found[slot])
                } else {
                    found[slot].clone()
                };
                let _ = waiter.reply.send(Served {
                    result: Ok(candidates),
                    waited: sent.duration_since(waiter.queued),
                    db,
                    statements: 1,
                    shared,
                });
            }
        }
        Err(failure) => {
            let failure = Arc::new(failure);
            for (_, waiter) in batch.waiters {
                let _ = waiter.reply.send(Served {
                    result: Err(Arc::clone(&failure)),
                    waited: sent.duration_since(waiter.queued),
                    db,
                    statements: 1,
                    shared,
                });
            }
        }
    }
}

/// Folds one round trip into the moving average (weight 1/8), so a few slow statements move
/// it and one does not.
fn remember_round_trip(average: &AtomicU64, took: Duration) {
    let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    let _ = average.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
        Some(if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        })
    });
}

/// Gives every one of `waiters` the same failure, before any statement was sent.
fn answer_all(waiters: impl IntoIterator<Item = Waiter>, failure: &Arc<Failure>) {
    let now = Instant::now();
    for waiter in waiters {
        let _ = waiter.reply.send(Served {
            result: Err(Arc::clone(failure)),
            waited: now.duration_since(waiter.queued),
            db: Duration::ZERO,
            statements: 0,
            shared: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_queue_rides_the_statement_in_flight_unless_it_is_full_or_late() {
        let now = Instant::now();
        let gate = Gate {
            in_flight: 1,
            pending: 5,
            batch_max: 64,
            oldest: now,
            round_trip: 3 * MS,
            wait_budget: 2000 * MS,
        };
        let with = |change: fn(&mut Gate)| {
            let mut changed = gate;
            change(&mut changed);
            changed
        };
        let cases = [
            // One statement in flight: the queue waits up to two round trips for it.
            (gate, now, Some(now + 6 * MS)),
            // Nothing in flight: at once, however little is queued.
            (with(|g| (g.in_flight, g.pending) = (0, 1)), now, None),
            // A full batch: at once, on another connection; one short of it waits.
            (with(|g| g.pending = 64), now, None),
            (with(|g| g.pending = 63), now, Some(now + 6 * MS)),
            // Coalescing off: every lookup is a full batch.
            (with(|g| (g.batch_max, g.pending) = (1, 1)), now, None),
            // The oldest has waited two round trips: the statement in flight is late.
            (gate, now + 6 * MS, None),
            // No round trip measured yet: at once.
            (with(|g| g.round_trip = Duration::ZERO), now, None),
            // Never longer than the wait budget.
            (
                with(|g| g.round_trip = 5000 * MS),
                now,
                Some(now + 2000 * MS),
            ),
        ];
        for (case, at, expected) in cases {
            assert_eq!(opens_at(case, at), expected, "{case:?} at +{:?}", at - now);
        }
    }

    #[test]
    fn a_lookup_waits_no_longer_than_the_budget() {
        let budget = 2000 * MS;
        // Nothing queued: always admitted, however slow the last round trip was.
        assert!(!would_wait_too_long(0, 256, 5000 * MS, budget));
        // 4 connections x 64: 1 000 queued are 4 rounds of 1 ms.
        assert!(!would_wait_too_long(1000, 256, MS, budget));
        // The same queue behind 600 ms round trips would wait 2.4 s.
        assert!(would_wait_too_long(1000, 256, 600 * MS, budget));
        // Coalescing off on 4 connections: 3 000 queued are 751 rounds of 3 ms.
        assert!(would_wait_too_long(3000, 4, 3 * MS, budget));
        assert!(!would_wait_too_long(2000, 4, 3 * MS, budget));
        // One round trip longer than the budget: only a lookup with an empty queue goes.
        assert!(would_wait_too_long(1, 256, 2500 * MS, budget));
    }
}
