//! The consumer-group source: provider topics → raw line batches, with checkpoint barriers and
//! partition assignments sent in order with the batches.
//!
//! Rebalances use the eager protocol: at a revocation the source sends a barrier that snapshots
//! and releases every task and *waits* until the sink has committed it (state files, offsets and
//! alerts in one transaction), so the next owner resumes exactly there. Records polled but not
//! yet handed down when the rebalance happens are discarded: they lie after the committed
//! position and are fetched again. At an assignment the source reads each partition's committed
//! offset C, loads the newest snapshot at or before it (offset S; up to eight partitions at
//! once) and sends it ahead of the partition's first record; when S < C it fetches from S and
//! the task replays S..C with muted outputs (their results were committed before), leaving the
//! partition out of the barriers' positions until it is back at C so the group's offset never
//! moves backwards.

use crate::audit::{Audit, AuditPartition};
use crate::client::Inputs;
use crate::error::KafkaError;
use crate::metrics::{KafkaMetrics, SnapshotStore, lag_from_statistics};
use crate::repartition::{Merge, MergeHandle};
use crate::sink::SinkWatch;
use crate::store::CheckpointStore;
use authwatch_pipeline::{
    Barrier, BarrierAck, Control, ControlSender, RawBatch, RawLine, Source, SourceError, StateParts,
};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// State shared between the source and its rebalance callbacks (which run on the source thread,
/// inside `poll`).
pub(crate) struct Shared {
    pub(crate) controls: Option<ControlSender>,
    pub(crate) inputs: Arc<Inputs>,
    /// Per input, the consumer's position after the records already handed down the pipeline:
    /// the next offset to read, past any transaction markers after them.
    pub(crate) sent: BTreeMap<u32, i64>,
    pub(crate) assigned: BTreeSet<u32>,
    /// A rebalance happened during the last poll: the partial batch is stale, and the source's
    /// copy of `assigned` must be refreshed. An atomic, so the source reads it per record
    /// without taking the lock (the callbacks that set it run on the source thread, in `poll`).
    pub(crate) rebalanced: Arc<AtomicBool>,
    pub(crate) error: Option<KafkaError>,
    pub(crate) next_barrier: u64,
    pub(crate) store: CheckpointStore,
    pub(crate) audit: Arc<Audit>,
    pub(crate) metrics: Arc<KafkaMetrics>,
    /// How long a barrier may wait while the sink completes no checkpoint at all (neither
    /// commits nor fails one): only a wedged pipeline reaches it, a failed sink is seen through
    /// `sink` at once.
    pub(crate) ack_timeout: Duration,
    /// The bound of the broker calls of an assignment (committed offsets, watermarks): the
    /// run's transaction timeout. A committed offset pending in a dead owner's open transaction
    /// is answered only once the broker aborts that transaction, which it does after the
    /// transaction timeout: a shorter bound failed the assignment (and restarted the run) while
    /// it waited for exactly that.
    pub(crate) broker_timeout: Duration,
    /// Fires when the sink has failed: the barrier waited for may never be acknowledged.
    pub(crate) sink: SinkWatch,
    /// Stop once every assigned partition reaches the end it had when assigned (backfills,
    /// benchmarks).
    pub(crate) until_end: bool,
    /// The end offsets of the assigned partitions, when `until_end`.
    pub(crate) ends: BTreeMap<u32, i64>,
    /// The detect stage of a repartitioned run: the merge state of its tasks, restored,
    /// checkpointed and released with them.
    pub(crate) merge: Option<MergeHandle>,
    /// Partitions replaying from an older snapshot → their committed offset: not committed
    /// again until they are back there.
    pub(crate) replay: BTreeMap<u32, i64>,
    /// How often a barrier asks for state snapshots (every barrier commits offsets).
    pub(crate) snapshot_interval: Duration,
    pub(crate) last_snapshot: Instant,
    /// Where a partition without a committed offset starts (`auto.offset.reset`).
    pub(crate) fresh_start: FreshStart,
    /// An assignment (possibly empty) was handled in this run: an empty `assigned` then means
    /// the group gave this consumer nothing, rather than that it has not joined yet.
    pub(crate) assignment_handled: bool,
    /// When the assignment being restored arrived, until its partitions are restored (state
    /// read and any muted replay up to the committed offsets done): its duration is logged,
    /// for sizing `startupz` and the pod's start-up probe.
    pub(crate) restoring_since: Option<Instant>,
}

/// Where a partition new to the group starts, from `auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FreshStart {
    /// At the oldest record still kept (authwatch's default).
    Earliest,
    /// At the next record produced (for a read-committed consumer the last stable offset,
    /// which is what the broker answers it for the end of the partition).
    Latest,
    /// Left to librdkafka (`error`, or a value it will refuse itself).
    Consumer,
}

impl FreshStart {
    /// From the value of `auto.offset.reset` (librdkafka's names and aliases).
    pub(crate) fn from_reset(value: &str) -> Self {
        // librdkafka compares these without regard to case.
        match value.to_ascii_lowercase().as_str() {
            "earliest" | "smallest" | "beginning" => FreshStart::Earliest,
            "latest" | "largest" | "end" => FreshStart::Latest,
            _ => FreshStart::Consumer,
        }
    }
}

impl Shared {
    /// Every assigned partition has been handed down up to its end offset.
    fn at_end(&self) -> bool {
        self.until_end
            && !self.assigned.is_empty()
            && self.assigned.iter().all(|i| {
                let end = self.ends.get(i).copied().unwrap_or(0);
                end <= 0 || self.sent.get(i).is_some_and(|s| *s >= end)
            })
    }

    /// Logs how long the last assignment took to restore, once.
    fn log_restored(&mut self) {
        if let Some(since) = self.restoring_since.take() {
            tracing::info!(
                partitions = self.assigned.len(),
                seconds = since.elapsed().as_secs_f64(),
                "partitions restored: state read and replayed up to the committed offsets"
            );
        }
    }

    fn fail(&mut self, e: KafkaError) {
        tracing::error!(error = %e, "kafka source");
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// Sends a barrier over the assigned partitions; with `wait`, blocks until it is durable.
    /// It asks for snapshots when `snapshot_interval` has passed and when it releases tasks (the
    /// next owner then resumes without a replay).
    fn barrier(
        &mut self,
        consumer: &BaseConsumer<ConsumerCtx>,
        release: Vec<u32>,
        wait: bool,
    ) -> Result<(), KafkaError> {
        if self.controls.is_none() {
            return Ok(());
        }
        let replay = &mut self.replay;
        let positions: Vec<(u32, i64)> = self
            .assigned
            .iter()
            .filter_map(|i| {
                let sent = *self.sent.get(i)?;
                match replay.get(i) {
                    Some(committed) if sent < *committed => None,
                    Some(_) => {
                        replay.remove(i);
                        Some((*i, sent))
                    }
                    None => Some((*i, sent)),
                }
            })
            .collect();
        if self.replay.is_empty() && !self.metrics.restored() {
            self.metrics.set_restored(true);
            self.log_restored();
        }
        let snapshot =
            !release.is_empty() || self.last_snapshot.elapsed() >= self.snapshot_interval;
        if snapshot {
            self.last_snapshot = Instant::now();
        }
        let Some(controls) = &self.controls else {
            return Ok(());
        };
        let (ack_tx, ack_rx) = crossbeam_channel::bounded::<BarrierAck>(1);
        let id = self.next_barrier;
        self.next_barrier += 1;
        let barrier = Barrier {
            id,
            positions,
            release,
            snapshot,
            token: consumer
                .group_metadata()
                .map(|m| Box::new(m) as Box<dyn std::any::Any + Send>),
            ack: wait.then_some(ack_tx),
            source_parts: self
                .merge
                .as_ref()
                .map(MergeHandle::barrier_parts)
                .unwrap_or_default(),
        };
        if !controls.send(Control::Barrier(barrier)) {
            // The pipeline stopped; it reports why.
            return Ok(());
        }
        if wait {
            self.await_ack(id, &ack_rx)?;
        }
        Ok(())
    }

    /// Waits until barrier `id` is committed, the sink fails, or the sink makes no progress for
    /// `ack_timeout`. Progress rather than a total bound: on a slow machine a long queue of
    /// barriers ahead of this one may each take a while, and that is not a failure.
    fn await_ack(
        &self,
        id: u64,
        ack_rx: &crossbeam_channel::Receiver<BarrierAck>,
    ) -> Result<(), KafkaError> {
        let progress = || self.metrics.checkpoints() + self.metrics.checkpoint_failures();
        let mut seen = progress();
        loop {
            crossbeam_channel::select! {
                recv(ack_rx) -> ack => return match ack {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(message)) => Err(KafkaError::Commit { id, message }),
                    Err(_) => Err(KafkaError::Commit {
                        id,
                        message: "the pipeline stopped before committing it".to_owned(),
                    }),
                },
                recv(self.sink.receiver()) -> _ => {
                    // The sink answers a barrier before tripping the latch: an answer already
                    // sent is this barrier's own outcome.
                    return match ack_rx.try_recv() {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(message)) => Err(KafkaError::Commit { id, message }),
                        Err(_) => Err(KafkaError::Commit {
                            id,
                            message: format!(
                                "not committed: the sink failed at an earlier checkpoint ({})",
                                self.sink.down().unwrap_or_default()
                            ),
                        }),
                    };
                }
                default(self.ack_timeout) => {
                    let now = progress();
                    if now == seen {
                        return Err(KafkaError::Commit {
                            id,
                            message: format!(
                                "not committed: no checkpoint completed for {:?}",
                                self.ack_timeout
                            ),
                        });
                    }
                    seen = now;
                }
            }
        }
    }

    fn on_revoke(&mut self, consumer: &BaseConsumer<ConsumerCtx>, tpl: &TopicPartitionList) {
        let mut release = Vec::new();
        let mut audit = Vec::new();
        for e in tpl.elements() {
            if let Some(i) = self.inputs.index(e.topic(), e.partition()) {
                release.push(i);
                audit.push(AuditPartition {
                    topic: e.topic().to_owned(),
                    partition: e.partition(),
                    offset: self.sent.get(&i).copied(),
                });
            }
        }
        if let Err(e) = self.barrier(consumer, release.clone(), true) {
            self.fail(e);
        }
        for i in &release {
            if let Some(merge) = &self.merge {
                merge.release(*i);
            }
            self.assigned.remove(i);
            self.sent.remove(i);
            self.ends.remove(i);
            self.replay.remove(i);
        }
        self.rebalanced.store(true, Ordering::Relaxed);
        self.metrics.set_assigned(!self.assigned.is_empty());
        self.audit.record("revoked", audit, None);
    }

    fn on_assign(&mut self, consumer: &BaseConsumer<ConsumerCtx>, tpl: &TopicPartitionList) {
        self.rebalanced.store(true, Ordering::Relaxed);
        if self.error.is_some() {
            // This run is ending and restarts from the committed checkpoint: restoring state
            // now would only delay it.
            return;
        }
        self.metrics.set_restored(false);
        self.restoring_since = Some(Instant::now());
        let committed = match consumer.committed_offsets(tpl.clone(), self.broker_timeout) {
            Ok(c) => c,
            Err(e) => {
                self.fail(KafkaError::client("reading committed offsets", e));
                return;
            }
        };
        let mut parts = Vec::new();
        for e in committed.elements() {
            let (topic, partition) = (e.topic(), e.partition());
            let Some(input) = self.inputs.index(topic, partition) else {
                self.fail(KafkaError::Topology(format!(
                    "{topic}/{partition} was assigned but did not exist at start"
                )));
                return;
            };
            // The request can succeed while a partition's own answer is an error (e.g. a topic
            // the principal may not describe): librdkafka puts it in the element and leaves the
            // offset invalid, which must not read as "new to the group" (that stores an empty
            // state over the partition's snapshots and starts it over from the reset). Ask
            // again at a restart. (A pending transactional commit, `UNSTABLE_OFFSET_COMMIT`,
            // librdkafka retries until the request's timeout, which fails it as a whole.)
            if let Err(err) = e.error() {
                self.fail(KafkaError::client(
                    format!("reading the committed offset of {topic}/{partition}"),
                    err,
                ));
                return;
            }
            let offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            parts.push(AssignedPartition {
                topic: topic.to_owned(),
                partition,
                input,
                offset,
            });
        }
        // Each partition's state and offsets take a request or two of their own (tens of
        // milliseconds each on an object store, once per partition at every restart): they are
        // asked for all partitions at once.
        let lookup = Lookup {
            store: &self.store,
            metrics: &self.metrics,
            fresh_start: self.fresh_start,
            until_end: self.until_end,
            consumer,
            timeout: self.broker_timeout,
        };
        let answers = parallel_map(&parts, LOOKUP_THREADS, |p| lookup.look_up(p));
        let mut audit = Vec::new();
        // Where each partition is fetched from: its committed offset, or an older snapshot's.
        let mut starts = TopicPartitionList::new();
        let mut seek = false;
        let mut answered = parts.iter().zip(answers);
        while let Some((part, answer)) = answered.next() {
            let (topic, partition, input, offset) =
                (part.topic.as_str(), part.partition, part.input, part.offset);
            let Looked {
                mut state,
                from,
                marks,
                fresh,
            } = match answer {
                Ok(looked) => looked,
                Err(e) => {
                    // The run restarts from its checkpoint with the first failure. The lookups
                    // of the later partitions have run as well: a starting state one of them
                    // stored is stored again, at the same start, by the next assignment.
                    self.fail(e);
                    for (_, later) in answered {
                        if let Err(e) = later {
                            tracing::warn!(error = %e, "another partition's lookup failed too");
                        }
                    }
                    return;
                }
            };
            tracing::info!(
                topic,
                partition,
                offset = ?offset,
                snapshot = ?from,
                restored = state.is_some(),
                "partition assigned"
            );
            // Where the partition's records are read from, when known before the first one.
            let position = match (from, offset) {
                (Some(at), Some(committed)) if at < committed => {
                    seek = true;
                    self.replay.insert(input, committed);
                    Some(at)
                }
                (_, Some(committed)) => Some(committed),
                // No committed offset: where `auto.offset.reset` points, fixed by the lookup,
                // with the fresh state stored there.
                (_, None) => {
                    if fresh.is_some() {
                        seek = true;
                        // The task starts from the state just stored, as it would after a
                        // restart: its first snapshot waits for the snapshot interval instead
                        // of being taken, empty, at the first barrier.
                        state = Some(StateParts::default());
                    }
                    fresh
                }
            };
            let start = position.map_or(Offset::Invalid, Offset::Offset);
            if let Err(e) = starts.add_partition_offset(topic, partition, start) {
                self.fail(KafkaError::client("assigning start offsets", e));
                return;
            }
            // The partition has a position in every barrier from now on, even before its first
            // record: `--until-end` sees a partition that starts at its end as done, and a
            // repartitioned run's ingest stage can mark the source idle.
            if let Some(o) = position {
                self.sent.insert(input, o);
            }
            if self.until_end
                && let Some((_, high)) = marks
            {
                self.ends.insert(input, high);
            }
            if let Some(merge) = &self.merge
                && let Err(message) = merge.assign(input, state.as_ref())
            {
                // The stored merge state does not restore: reading it again would not help.
                self.fail(KafkaError::Store {
                    path: self.store.location(),
                    message: format!("{topic}/{partition} at offset {offset:?}: {message}"),
                    retryable: false,
                });
                return;
            }
            self.assigned.insert(input);
            if let Some(controls) = &self.controls {
                controls.send(Control::Assign {
                    input,
                    state,
                    mute_before: self.replay.get(&input).copied(),
                });
            }
            audit.push(AuditPartition {
                topic: topic.to_owned(),
                partition,
                offset,
            });
        }
        // The assignment just made starts at the committed offsets (or the reset); a partition
        // resuming from an older snapshot, or new to the group, must be fetched from the
        // offset of its stored state instead. Assigning again with explicit offsets (eager
        // protocol: it replaces the assignment) does that before the first fetch.
        if seek && let Err(e) = consumer.assign(&starts) {
            self.fail(KafkaError::client("assigning start offsets", e));
            return;
        }
        self.metrics.set_assigned(!self.assigned.is_empty());
        // A partition replaying from an older snapshot is not restored until it is back at its
        // committed offset: not ready before then (the barrier that sees it there says so).
        self.metrics.set_restored(self.replay.is_empty());
        if self.replay.is_empty() {
            self.log_restored();
        }
        self.metrics.set_started();
        self.assignment_handled = true;
        self.audit.record("assigned", audit, None);
    }
}

/// How many partitions an assignment looks up at once: enough to hide an object store's round
/// trips for the few partitions an instance usually holds, few enough not to flood the store (or
/// the broker, for the watermarks) when one instance takes a whole topic.
const LOOKUP_THREADS: usize = 8;

/// A partition of an assignment, before its lookup.
struct AssignedPartition {
    topic: String,
    partition: i32,
    input: u32,
    /// The group's committed offset.
    offset: Option<i64>,
}

/// What the store and the broker say of an assigned partition.
struct Looked {
    /// The newest snapshot at or before the committed offset.
    state: Option<StateParts>,
    /// The offset that snapshot was taken at.
    from: Option<i64>,
    /// The partition's low and high watermarks, when `--until-end` or a fresh start needs them.
    marks: Option<(i64, i64)>,
    /// A partition without a committed offset: where it starts, its empty state stored there.
    fresh: Option<i64>,
}

/// The lookups of one assignment, run on several threads at once (the rebalance callback waits
/// for all of them).
struct Lookup<'a> {
    store: &'a CheckpointStore,
    metrics: &'a KafkaMetrics,
    fresh_start: FreshStart,
    until_end: bool,
    consumer: &'a BaseConsumer<ConsumerCtx>,
    /// The bound of a broker call ([`Shared::broker_timeout`]).
    timeout: Duration,
}

impl Lookup<'_> {
    fn look_up(&self, part: &AssignedPartition) -> Result<Looked, KafkaError> {
        let (topic, partition) = (part.topic.as_str(), part.partition);
        let (state, from) = match part.offset {
            None => (None, None),
            Some(o) => match self.store.load_latest(topic, partition, o)? {
                Some((at, state)) => (Some(state), Some(at)),
                None => {
                    return Err(KafkaError::MissingState {
                        topic: topic.to_owned(),
                        partition,
                        offset: o,
                        dir: self.store.location(),
                        legacy: self.store.legacy_hint(),
                    });
                }
            },
        };
        // One lookup serves both a new partition's start and `--until-end`'s end.
        let marks = if self.until_end
            || (part.offset.is_none() && self.fresh_start != FreshStart::Consumer)
        {
            let marks = self
                .consumer
                .fetch_watermarks(topic, partition, self.timeout)
                .map_err(|e| KafkaError::client("reading the partition's offsets", e))?;
            Some(marks)
        } else {
            None
        };
        let fresh = match (part.offset, marks) {
            (None, Some(marks)) => self.store_fresh_state(topic, partition, marks)?,
            _ => None,
        };
        Ok(Looked {
            state,
            from,
            marks,
            fresh,
        })
    }

    /// For a partition new to the group, with its `(low, high)` watermarks: the offset it starts
    /// at, where an empty snapshot (the state of a task that has read nothing) is now stored.
    /// Its first commit then already has a snapshot at or before it, so its next snapshot waits
    /// for the snapshot interval and is stored after its commit (`snapshots.rs`) instead of
    /// holding back the first alerts. The start is fixed here, rather than left to the
    /// consumer's reset, so the file and the first record read agree. `None`: the reset is left
    /// to librdkafka, and no file is stored.
    fn store_fresh_state(
        &self,
        topic: &str,
        partition: i32,
        (low, high): (i64, i64),
    ) -> Result<Option<i64>, KafkaError> {
        let at = match self.fresh_start {
            FreshStart::Consumer => return Ok(None),
            FreshStart::Latest => high,
            FreshStart::Earliest => low,
        };
        let writing = Instant::now();
        // Any other file of the partition is from a run whose offsets were never committed, or
        // were since deleted (another start offset, other rules): nothing may resume from it, so
        // one left behind fails the store like a failed write.
        let stored = self
            .store
            .write(topic, partition, at, &StateParts::default())
            .and_then(|()| self.store.prune(topic, partition, at));
        if let Err(e) = stored {
            self.metrics.snapshot_store_failed();
            return Err(KafkaError::FreshState {
                topic: topic.to_owned(),
                partition,
                source: Box::new(e),
            });
        }
        // Before the first fetch, so in front of the partition's first commit too.
        let duration = writing.elapsed();
        self.metrics.snapshot_stored(SnapshotStore {
            duration,
            after_commit: false,
        });
        tracing::info!(
            topic,
            partition,
            offset = at,
            ms = duration.as_millis() as u64,
            "starting state stored"
        );
        Ok(Some(at))
    }
}

/// `f` over `items` on up to `threads` threads (the caller's among them); the results in the
/// order of `items`. A thread that cannot be started leaves its share to the others.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    use std::sync::atomic::AtomicUsize;
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, f(item)));
        }
    };
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads.min(items.len()))
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("aw-assign".into())
                    .spawn_scoped(scope, work)
                    .ok()
            })
            .collect();
        let mut results = work();
        for helper in helpers {
            match helper.join() {
                Ok(done) => results.extend(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        results
    });
    results.sort_unstable_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The consumer's context: rebalance callbacks, librdkafka logs and statistics.
pub struct ConsumerCtx {
    pub(crate) shared: Arc<Mutex<Shared>>,
    pub(crate) metrics: Arc<KafkaMetrics>,
}

impl ConsumerCtx {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }
}

/// A poisoned lock means a callback panicked; the state is still usable for shutdown.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientContext for ConsumerCtx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::log_librdkafka("consumer", level, fac, log_message);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        if let Ok(text) = std::str::from_utf8(statistics) {
            self.metrics.set_lag(lag_from_statistics(text));
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // Broker down, connection refused, …: librdkafka retries by itself.
        tracing::warn!(%error, reason, "kafka consumer");
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.lock().on_revoke(consumer, tpl);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.lock().on_assign(consumer, tpl),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// Provider topics as a partitioned [`Source`].
pub struct KafkaSource {
    consumer: BaseConsumer<ConsumerCtx>,
    shared: Arc<Mutex<Shared>>,
    names: Vec<String>,
    /// The consumer's positions after the records in the batch being filled.
    pending: BTreeMap<u32, i64>,
    poll_wait: Duration,
    interval: Duration,
    last_barrier: Instant,
    stop: Arc<AtomicBool>,
    bytes: u64,
    max_line_bytes: usize,
    keep_bytes: usize,
    finished: bool,
    /// `--until-end`: every assigned partition was read to the end it had when assigned, so
    /// the run stops (with `finished`, that last checkpoint is committed too).
    reached_end: bool,
    /// The detect stage of a repartitioned run merges the internal partition's records.
    merge: Option<Merge>,
    /// The rebalance callbacks' flag, read per record without the lock.
    rebalanced: Arc<AtomicBool>,
    routing: Routing,
}

/// The poll loop's own view of which partitions are ours, so that a record costs no lock.
struct Routing {
    /// The partition table, fixed for the run.
    inputs: Arc<Inputs>,
    /// By input: assigned. Copied from `Shared::assigned` after every rebalance.
    assigned: Vec<bool>,
    /// The last record's topic and partition and their input: records come in runs from one
    /// partition, so this spares most lookups.
    last: Option<(String, i32, u32)>,
}

impl Routing {
    /// The assigned input a record belongs to, or `None` for a partition not (or no longer)
    /// ours.
    fn input_of(&mut self, topic: &str, partition: i32) -> Option<u32> {
        let input = match &self.last {
            Some((t, p, i)) if *p == partition && t == topic => *i,
            _ => {
                let i = self.inputs.index(topic, partition)?;
                self.last = Some((topic.to_owned(), partition, i));
                i
            }
        };
        self.assigned
            .get(input as usize)
            .copied()
            .unwrap_or(false)
            .then_some(input)
    }

    /// Copies the assignment the rebalance callbacks left in the shared state.
    fn refresh(&mut self, assigned: &BTreeSet<u32>) {
        self.assigned.fill(false);
        for &i in assigned {
            if let Some(slot) = self.assigned.get_mut(i as usize) {
                *slot = true;
            }
        }
    }
}

impl KafkaSource {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        consumer: BaseConsumer<ConsumerCtx>,
        shared: Arc<Mutex<Shared>>,
        names: Vec<String>,
        poll_wait: Duration,
        interval: Duration,
        stop: Arc<AtomicBool>,
        max_line_bytes: usize,
        keep_bytes: usize,
    ) -> Self {
        let (inputs, rebalanced) = {
            let shared = lock(&shared);
            (Arc::clone(&shared.inputs), Arc::clone(&shared.rebalanced))
        };
        KafkaSource {
            consumer,
            shared,
            names,
            pending: BTreeMap::new(),
            poll_wait,
            interval,
            last_barrier: Instant::now(),
            stop,
            bytes: 0,
            max_line_bytes,
            keep_bytes,
            finished: false,
            reached_end: false,
            merge: None,
            rebalanced,
            routing: Routing {
                assigned: vec![false; inputs.len()],
                inputs,
                last: None,
            },
        }
    }

    /// Merges records through `merge` instead of handing them down as read (the detect stage
    /// of a repartitioned run, see [`crate::repartition`]).
    pub(crate) fn with_merge(mut self, merge: Merge) -> Self {
        self.merge = Some(merge);
        self
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    /// The error that stopped the source, if any (the pipeline only sees its message).
    pub(crate) fn take_error(&self) -> Option<KafkaError> {
        self.lock().error.take()
    }

    /// `--until-end`: the run stopped because every partition was read to its end, and the
    /// checkpoint of that end is committed. False after a stop by signal, or when that last
    /// checkpoint failed.
    pub(crate) fn reached_end(&self) -> bool {
        self.reached_end && self.finished
    }

    /// Takes the consumer's positions into the batch's pending ones. A position is past every
    /// record polled so far and also past the transaction markers (control records) polled
    /// after them, which `poll` handles without returning. The last record's offset + 1 would
    /// stay short of a transactional partition's end for good: `--until-end` never stopped on
    /// one, and the committed offset left a lag of 1 for monitors to see. Only this thread
    /// polls, so the positions cover exactly the records polled into this batch; a partition
    /// assigned (or re-assigned) and not read since has no position and keeps what it has.
    /// librdkafka resets a partition's position when its fetcher stops (the unassign of every
    /// eager rebalance, and the re-assign with start offsets in `on_assign`) and at a seek, and
    /// drops what was fetched before: after a rebalance a position comes only from a record or
    /// a transaction marker polled since. (Taking positions only of partitions with a record
    /// polled since would lose the markers: a partition whose last records are a transaction's
    /// would never reach its end.)
    fn take_positions(&mut self) {
        let positions = match self.consumer.position() {
            Ok(positions) => positions,
            Err(e) => {
                // The records' own offsets still count; only a marker at the end waits.
                tracing::debug!(error = %e, "consumer positions not read");
                return;
            }
        };
        for e in positions.elements() {
            let (Offset::Offset(position), Some(input)) =
                (e.offset(), self.routing.input_of(e.topic(), e.partition()))
            else {
                continue;
            };
            let next = self.pending.entry(input).or_insert(position);
            *next = (*next).max(position);
        }
    }

    /// The consumer, to leave the group after the run.
    pub(crate) fn consumer(&self) -> &BaseConsumer<ConsumerCtx> {
        &self.consumer
    }

    fn source_error(&self, e: &KafkaError) -> SourceError {
        SourceError::Read {
            name: "kafka consumer".to_owned(),
            offset: self.bytes,
            source: std::io::Error::other(e.to_string()),
        }
    }

    fn check_error(&self) -> Result<(), SourceError> {
        let mut shared = self.lock();
        if shared.error.is_none()
            && let Some(reason) = shared.sink.down()
        {
            // Everything polled from now on would go into a transaction that cannot commit.
            shared.error = Some(KafkaError::Commit {
                id: shared.next_barrier,
                message: format!("the sink failed: {reason}"),
            });
        }
        match &shared.error {
            Some(e) => Err(self.source_error(e)),
            None => Ok(()),
        }
    }
}

impl Source for KafkaSource {
    fn names(&self) -> &[String] {
        &self.names
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }

    fn partitioned(&self) -> bool {
        true
    }

    fn attach(&mut self, controls: ControlSender) {
        self.lock().controls = Some(controls);
    }

    fn fill(&mut self, batch: &mut RawBatch, max_lines: usize) -> Result<bool, SourceError> {
        let result = self.fill_batch(batch, max_lines);
        if !matches!(result, Ok(true)) {
            // The pipeline ends when every sender of its first channel is gone, including the
            // control handle the callbacks use.
            self.lock().controls = None;
        }
        result
    }
}

impl KafkaSource {
    fn fill_batch(&mut self, batch: &mut RawBatch, max_lines: usize) -> Result<bool, SourceError> {
        if self.finished {
            return Ok(false);
        }
        // The previous batch has been handed down: its records are now covered by barriers.
        {
            let pending = std::mem::take(&mut self.pending);
            let mut shared = self.lock();
            for (input, next) in pending {
                if shared.assigned.contains(&input) {
                    shared.sent.insert(input, next);
                }
            }
        }
        self.check_error()?;
        // Not the stop flag, which a signal sets: the runner must tell a backfill that reached
        // its end (and retries a failed last checkpoint) from one stopped before it.
        if !self.reached_end && self.lock().at_end() {
            tracing::info!("every partition reached its end offset: stopping");
            self.reached_end = true;
        }
        if self.reached_end || self.stop.load(Ordering::Relaxed) {
            // Graceful stop: drain, checkpoint, commit, then end the run.
            let mut shared = self.lock();
            let release: Vec<u32> = shared.assigned.iter().copied().collect();
            let result = shared.barrier(&self.consumer, release, true);
            drop(shared);
            if let Err(e) = result {
                let err = self.source_error(&e);
                self.lock().fail(e);
                return Err(err);
            }
            self.finished = true;
            return Ok(false);
        }
        if self.last_barrier.elapsed() >= self.interval {
            self.last_barrier = Instant::now();
            let mut shared = self.lock();
            if shared.assigned.is_empty() {
                // Nothing to commit once the group has given this consumer an empty assignment
                // (not before its first one, nor in a run that is failing): its checkpoint is as
                // fresh as a committed one.
                if shared.assignment_handled && shared.error.is_none() {
                    shared.metrics.nothing_to_commit();
                }
            } else if let Err(e) = shared.barrier(&self.consumer, Vec::new(), false) {
                shared.fail(e);
            }
        }
        batch.data.clear();
        batch.lines.clear();
        let deadline = Instant::now() + self.poll_wait;
        let mut records = 0u64;
        let mut bytes = 0u64;
        // A poll came back empty: the consumer has handed over everything it had.
        let mut drained = false;
        while batch.lines.len() + self.merge.as_ref().map_or(0, Merge::staged) < max_lines {
            // Take what librdkafka has queued without waiting, and wait (up to the deadline)
            // only when its queue is empty. A poll with a timeout reads the clock more often
            // (inside librdkafka, and here for the time left); clock reads were a quarter of
            // this thread's time (perf, docs/KAFKA.md), about a fifth with this.
            let polled = match self.consumer.poll(Duration::ZERO) {
                Some(polled) => Some(polled),
                None => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        None
                    } else {
                        self.consumer.poll(remaining)
                    }
                }
            };
            // A load, not a swap, per record: only this thread's callbacks set the flag.
            if self.rebalanced.load(Ordering::Relaxed) {
                self.rebalanced.store(false, Ordering::Relaxed);
                // Records polled before the rebalance lie after the committed position of
                // partitions that may now belong to another instance: drop them, they are
                // fetched again by whoever owns the partition.
                batch.data.clear();
                batch.lines.clear();
                self.pending.clear();
                if let Some(merge) = &mut self.merge {
                    merge.discard();
                }
                records = 0;
                bytes = 0;
                self.routing.refresh(&lock(&self.shared).assigned);
            }
            match polled {
                None => {
                    drained = true;
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                Some(Err(e)) => {
                    // Transient broker trouble arrives here too; librdkafka keeps retrying.
                    tracing::warn!(error = %e, "kafka poll");
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                Some(Ok(msg)) => {
                    let Some(input) = self.routing.input_of(msg.topic(), msg.partition()) else {
                        continue;
                    };
                    if let Some(merge) = &mut self.merge {
                        merge.stage(input, &msg);
                        self.pending.insert(input, msg.offset() + 1);
                        records += 1;
                        bytes += msg.payload_len() as u64;
                        continue;
                    }
                    let payload = msg.payload().unwrap_or_default();
                    let len = payload.len();
                    // An over-long record is kept only as far as the dead-letter record needs.
                    let kept = if len > self.max_line_bytes {
                        &payload[..self.keep_bytes.min(len)]
                    } else {
                        payload
                    };
                    let start = batch.data.len();
                    batch.data.extend_from_slice(kept);
                    batch.lines.push(RawLine {
                        start,
                        end: batch.data.len(),
                        origin: authwatch_pipeline::Origin {
                            input,
                            line: 1,
                            offset: u64::try_from(msg.offset()).unwrap_or(0),
                        },
                        len: len as u64,
                    });
                    self.pending.insert(input, msg.offset() + 1);
                    records += 1;
                    bytes += len as u64;
                }
            }
        }
        // Only when caught up: a marker between records is passed by the next record's offset
        // anyway, and reading the positions is a round trip to librdkafka's main thread
        // (its assignment), not worth paying for every batch of a busy stream.
        if drained {
            self.take_positions();
        }
        if let Some(merge) = &mut self.merge {
            let muted = lock(&self.shared).replay.clone();
            merge.apply(batch, &muted);
        }
        self.bytes += bytes;
        self.lock().metrics.add_records(records, bytes);
        self.check_error()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_map_runs_at_once_and_keeps_the_order() {
        use std::sync::atomic::AtomicUsize;
        let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let items: Vec<usize> = (0..20).collect();
        let out = parallel_map(&items, 4, |i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            running.fetch_sub(1, Ordering::SeqCst);
            i * 10
        });
        assert_eq!(out, (0..20).map(|i| i * 10).collect::<Vec<_>>());
        let most = most.load(Ordering::SeqCst);
        assert!((2..=4).contains(&most), "{most} lookups at once");
        // One thread, one item, none.
        assert_eq!(
            parallel_map(&items, 1, |i| i + 1),
            (1..21).collect::<Vec<_>>()
        );
        assert_eq!(parallel_map(&[7], 8, |i| i + 1), [8]);
        assert!(parallel_map(&[] as &[usize], 8, |i| i + 1).is_empty());
    }

    #[test]
    fn fresh_start_follows_auto_offset_reset() {
        for v in ["earliest", "smallest", "beginning"] {
            assert_eq!(FreshStart::from_reset(v), FreshStart::Earliest, "{v}");
        }
        for v in ["latest", "largest", "end"] {
            assert_eq!(FreshStart::from_reset(v), FreshStart::Latest, "{v}");
        }
        assert_eq!(FreshStart::from_reset("Latest"), FreshStart::Latest);
        assert_eq!(FreshStart::from_reset("error"), FreshStart::Consumer);
    }

    fn routing() -> Routing {
        let inputs = Inputs::new(vec![
            ("okta".to_owned(), 0),
            ("okta".to_owned(), 1),
            ("entra".to_owned(), 0),
        ]);
        Routing {
            assigned: vec![false; inputs.len()],
            inputs,
            last: None,
        }
    }

    #[test]
    fn routes_only_assigned_partitions_of_known_topics() {
        let mut r = routing();
        assert_eq!(r.input_of("okta", 0), None, "nothing assigned yet");
        r.refresh(&BTreeSet::from([0, 2]));
        assert_eq!(r.input_of("okta", 0), Some(0));
        assert_eq!(r.input_of("okta", 1), None, "not assigned");
        assert_eq!(r.input_of("entra", 0), Some(2));
        assert_eq!(r.input_of("entra", 1), None, "no such partition");
        assert_eq!(r.input_of("google", 0), None, "no such topic");
        assert_eq!(r.input_of("okta", -1), None);
    }

    #[test]
    fn a_rebalance_replaces_the_assignment_and_the_cached_lookup_follows_it() {
        let mut r = routing();
        r.refresh(&BTreeSet::from([0, 1]));
        assert_eq!(r.input_of("okta", 1), Some(1));
        // The same partition again hits the cache; after a revocation it must not route.
        r.refresh(&BTreeSet::from([0]));
        assert_eq!(r.input_of("okta", 1), None);
        assert_eq!(r.input_of("okta", 0), Some(0));
        // An input number past the table (a stale assignment) is ignored, not a panic.
        r.refresh(&BTreeSet::from([7, 2]));
        assert_eq!(r.input_of("okta", 0), None);
        assert_eq!(r.input_of("entra", 0), Some(2));
    }
}
