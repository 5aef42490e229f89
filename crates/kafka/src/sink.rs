//! The transactional sink: alerts, dead letters, late events and enriched events go to their
//! topics inside a Kafka transaction; at each checkpoint the input offsets are added to the
//! transaction and the transaction is committed, and the task states of a snapshot barrier are
//! stored in the checkpoint store (before the commit, or after it for a partition that has a
//! stored snapshot already: `snapshots.rs`). A read-committed consumer of the alert topic
//! therefore sees exactly the alerts of the committed input: after a crash, the aborted
//! transaction's alerts are invisible and the input after the last commit is processed again
//! from the newest stored state at or before it.

use crate::client::Inputs;
use crate::metrics::KafkaMetrics;
use crate::repartition::{Routed, Router};
use crate::snapshots::{SnapshotFile, SnapshotWriter};
use crate::store::CheckpointStore;
use authwatch_event::{Alert, AuthEvent};
use authwatch_pipeline::{Checkpoint, DeadLetter, LateEvent, Origin, Sink, SinkError};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Output topics.
#[derive(Debug, Clone)]
pub(crate) struct Topics {
    pub alerts: String,
    pub dead_letters: String,
    pub enriched: Option<String>,
}

/// Writes results to Kafka in transactions committed at checkpoints.
pub struct KafkaSink {
    producer: ThreadedProducer<DefaultProducerContext>,
    topics: Topics,
    inputs: Arc<Inputs>,
    store: CheckpointStore,
    metrics: Arc<KafkaMetrics>,
    timeout: Duration,
    buf: Vec<u8>,
    /// Tripped when this sink fails, so a source waiting for an acknowledgement learns it at once.
    down: SinkDown,
    /// The ingest stage of a repartitioned run: events go to the internal topic.
    router: Option<Router>,
    /// Stores periodic snapshots after their commit.
    writer: SnapshotWriter,
    /// Inputs with a stored snapshot since they were assigned (the one they were restored from,
    /// the empty state a new partition gets at assignment, or one this sink stored before a
    /// commit): their later snapshots may be stored after the commit, since the stored one
    /// covers a crash until then. A partition handed on leaves the set.
    stored: BTreeSet<u32>,
    /// Inputs whose store was looked up for a snapshot since they were assigned.
    looked_up: BTreeSet<u32>,
}

fn fail(output: &str, message: impl std::fmt::Display) -> SinkError {
    SinkError {
        output: output.to_owned(),
        source: std::io::Error::other(message.to_string()),
    }
}

impl KafkaSink {
    pub(crate) fn new(
        producer: ThreadedProducer<DefaultProducerContext>,
        topics: Topics,
        inputs: Arc<Inputs>,
        store: CheckpointStore,
        metrics: Arc<KafkaMetrics>,
        timeout: Duration,
        down: SinkDown,
    ) -> std::io::Result<Self> {
        Ok(KafkaSink {
            writer: SnapshotWriter::start(store.clone(), Arc::clone(&metrics))?,
            stored: BTreeSet::new(),
            looked_up: BTreeSet::new(),
            producer,
            topics,
            inputs,
            store,
            metrics,
            timeout,
            buf: Vec::with_capacity(4096),
            down,
            router: None,
        })
    }

    /// Routes events to the internal topic (the ingest stage of a repartitioned run).
    pub(crate) fn with_router(mut self, router: Router) -> Self {
        self.router = Some(router);
        self
    }

    fn send_routed(&self, topic: &str, r: Routed, payload: &[u8]) -> Result<(), SinkError> {
        let mut record = BaseRecord::to(topic)
            .partition(r.partition)
            .key(r.key.as_bytes())
            .payload(payload)
            .headers(r.headers);
        let started = Instant::now();
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((rdkafka::error::KafkaError::MessageProduction(code), rec))
                    if code == rdkafka::types::RDKafkaErrorCode::QueueFull
                        && started.elapsed() < self.timeout =>
                {
                    record = rec;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(self.failed(fail(topic, e))),
            }
        }
    }

    /// The sink cannot go on: every later record of this run belongs to a transaction that can
    /// no longer commit. Tell the source first (it may be waiting for a barrier that is queued
    /// behind the failed one and will never be acknowledged), then abort the transaction so
    /// read-committed consumers of the output partitions are not held back until the broker
    /// times it out. The abort is best effort: a fenced or fatal producer cannot abort, and the
    /// restarted producer's `init_transactions` aborts whatever is still open.
    fn failed(&self, error: SinkError) -> SinkError {
        self.down.trip(&error.to_string());
        // The abort holds up the restart (the pipeline joins the sink before the runner starts
        // over), so it gets a fraction of the commit timeout, never less than a few round trips.
        let timeout = (self.timeout / 4).max(Duration::from_secs(2));
        match self.producer.abort_transaction(timeout) {
            Ok(()) => tracing::info!("open transaction aborted after the failure"),
            Err(e) => tracing::warn!(
                error = %e,
                "open transaction not aborted here; the restarted producer fences it"
            ),
        }
        error
    }

    /// Queues one record; waits while librdkafka's queue is full (backpressure).
    fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), SinkError> {
        let mut record = BaseRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        let started = Instant::now();
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((rdkafka::error::KafkaError::MessageProduction(code), r))
                    if code == rdkafka::types::RDKafkaErrorCode::QueueFull
                        && started.elapsed() < self.timeout =>
                {
                    record = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(self.failed(fail(topic, e))),
            }
        }
    }

    fn json<T: serde::Serialize>(&mut self, topic: &str, value: &T) -> Result<(), SinkError> {
        self.buf.clear();
        if let Err(e) = serde_json::to_writer(&mut self.buf, value) {
            return Err(self.failed(fail(topic, e)));
        }
        Ok(())
    }

    /// Whether `input` has a stored snapshot at or before `offset` that stays until a newer one
    /// is stored: one this sink stored since the partition was assigned, or one the source
    /// found or wrote at the assignment (the one it was restored from, or a new partition's
    /// empty state). Looked up once per assignment.
    fn has_stored(
        &mut self,
        input: u32,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<bool, String> {
        if self.stored.contains(&input) {
            return Ok(true);
        }
        if !self.looked_up.insert(input) {
            return Ok(false);
        }
        let found = self
            .store
            .offsets(topic, partition)
            .map_err(|e| e.to_string())?
            .first()
            .is_some_and(|oldest| *oldest <= offset);
        if found {
            self.stored.insert(input);
        }
        Ok(found)
    }

    fn commit(&mut self, checkpoint: &mut Checkpoint) -> Result<(), String> {
        let positions: BTreeMap<u32, i64> = checkpoint.barrier.positions.iter().copied().collect();
        // A snapshot the writer failed to store fails this checkpoint: the run restarts from
        // the older snapshot, which is still stored.
        self.writer.poll().map_err(|e| e.to_string())?;
        // A barrier that hands partitions on (a revocation, the stop) or that the source waits
        // for is durable when acknowledged: the next owner resumes from these snapshots, so
        // they are stored before the commit, after everything in flight.
        let handing_on = !checkpoint.barrier.release.is_empty() || checkpoint.barrier.ack.is_some();
        if handing_on {
            self.writer.wait().map_err(|e| e.to_string())?;
        }
        // 1. The snapshots (at snapshot barriers), each named by the offset it reflects. A
        //    committed offset must have a stored snapshot at or before it, so the snapshot of a
        //    partition without one, and every one at a handing-on barrier, is stored before the
        //    commit; any other is stored after it (`snapshots.rs`).
        let writing = Instant::now();
        let mut bytes = 0usize;
        let mut now = Vec::new();
        let mut later = Vec::new();
        let inputs = Arc::clone(&self.inputs);
        for (input, state) in std::mem::take(&mut checkpoint.tasks) {
            let (Some((topic, partition)), Some(offset)) =
                (inputs.get(input), positions.get(&input).copied())
            else {
                continue;
            };
            if !handing_on && self.has_stored(input, topic, partition, offset)? {
                later.push(SnapshotFile {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    state,
                });
                continue;
            }
            bytes += state.size();
            if let Err(e) = self.store.write(topic, partition, offset, &state) {
                self.metrics.snapshot_store_failed();
                return Err(e.to_string());
            }
            now.push((input, offset));
        }
        if !now.is_empty() {
            crate::snapshots::stored(&self.metrics, now.len(), bytes, writing, false);
        }
        // 2. Repartitioning: the sources' progress (or idleness) at these positions, in the
        //    same transaction as the events it covers.
        if let Some(router) = &mut self.router {
            let topic = router.topic().to_owned();
            let markers = router.markers(&positions);
            router.release(&checkpoint.barrier.release);
            for m in markers {
                self.send_routed(&topic, m, &[])
                    .map_err(|e| e.to_string())?;
            }
        }
        // 3. The offsets join the transaction of the alerts they produced; one commit makes
        //    both visible.
        let mut tpl = TopicPartitionList::new();
        for (input, offset) in &positions {
            if let Some((topic, partition)) = self.inputs.get(*input) {
                tpl.add_partition_offset(topic, partition, Offset::Offset(*offset))
                    .map_err(|e| e.to_string())?;
            }
        }
        if tpl.count() > 0 {
            let group = checkpoint
                .barrier
                .token
                .as_ref()
                .and_then(|t| t.downcast_ref::<ConsumerGroupMetadata>())
                .ok_or("the consumer is not in a group (no group metadata)")?;
            self.producer
                .send_offsets_to_transaction(&tpl, group, self.timeout)
                .map_err(|e| format!("adding offsets to the transaction: {e}"))?;
        }
        // With nothing left to flush, `commit_transaction` skips its own flush, whose 100 ms
        // polls made every checkpoint 100 ms longer than the broker needed (and stalled the
        // pipeline behind the sink for that long). The flush and the commit share one
        // `timeout`, as the commit alone had before.
        let flushing = Instant::now();
        crate::client::flush_threaded(&self.producer, self.timeout)
            .map_err(|e| format!("flushing the transaction: {e}"))?;
        self.producer
            .commit_transaction(self.timeout.saturating_sub(flushing.elapsed()))
            .map_err(|e| format!("committing the transaction: {e}"))?;
        self.producer
            .begin_transaction()
            .map_err(|e| format!("beginning a transaction: {e}"))?;
        // 4. Older snapshots of the partitions just snapshotted can no longer be resumed from.
        for (input, offset) in now {
            if let Some((topic, partition)) = self.inputs.get(input) {
                if let Err(e) = self.store.prune(topic, partition, offset) {
                    tracing::warn!(error = %e, "old checkpoint files not removed");
                }
                self.stored.insert(input);
            }
        }
        // A partition handed on is another owner's to snapshot and prune.
        for input in &checkpoint.barrier.release {
            self.stored.remove(input);
            self.looked_up.remove(input);
        }
        if !later.is_empty() {
            // This transaction has committed; an error here is the batch before's.
            self.writer.submit(later).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn header(headers: OwnedHeaders, key: &str, value: &str) -> OwnedHeaders {
    headers.insert(Header {
        key,
        value: Some(value),
    })
}

impl Sink for KafkaSink {
    fn alert(&mut self, alert: &Alert) -> Result<(), SinkError> {
        let topic = self.topics.alerts.clone();
        self.json(&topic, alert)?;
        let key = alert.entity.to_string();
        let mut h = OwnedHeaders::new_with_capacity(5);
        h = header(h, "alert_id", &alert.alert_id);
        h = header(h, "rule_id", &alert.rule_id);
        h = header(h, "category", &alert.category);
        h = header(h, "severity", alert.severity.as_str());
        h = header(h, "cause_class", alert.cause_class.as_str());
        self.send(&topic, key.as_bytes(), &self.buf, h)?;
        self.metrics.add_alert();
        Ok(())
    }

    fn dead_letter(&mut self, record: &DeadLetter) -> Result<(), SinkError> {
        let topic = self.topics.dead_letters.clone();
        self.json(&topic, record)?;
        let h = header(OwnedHeaders::new(), "reason", record.reason.as_str());
        let h = header(h, "source", &record.file);
        self.send(&topic, record.file.as_bytes(), &self.buf, h)?;
        self.metrics.add_dead_letter();
        Ok(())
    }

    fn late_event(&mut self, record: &LateEvent) -> Result<(), SinkError> {
        let topic = self.topics.dead_letters.clone();
        self.json(&topic, record)?;
        let h = header(OwnedHeaders::new(), "reason", "late_event");
        let h = header(h, "source", &record.file);
        self.send(&topic, record.file.as_bytes(), &self.buf, h)?;
        self.metrics.add_dead_letter();
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        // Records become visible at the transaction commit of the next checkpoint.
        Ok(())
    }

    fn wants_events(&self) -> bool {
        self.topics.enriched.is_some()
    }

    fn event(&mut self, event: &AuthEvent) -> Result<(), SinkError> {
        let Some(topic) = self.topics.enriched.clone() else {
            return Ok(());
        };
        self.json(&topic, event)?;
        let key = event.user.id.as_str().to_owned();
        self.send(&topic, key.as_bytes(), &self.buf, OwnedHeaders::new())?;
        self.metrics.add_enriched();
        Ok(())
    }

    fn route(&mut self, event: &AuthEvent, origin: Origin, progress: i64) -> Result<(), SinkError> {
        let Some(router) = &mut self.router else {
            return self.event(event);
        };
        let routed = router.event(event, origin, progress);
        let topic = router.topic().to_owned();
        self.json(&topic, event)?;
        self.send_routed(&topic, routed, &self.buf)?;
        self.metrics.add_enriched();
        Ok(())
    }

    fn checkpoint(&mut self, mut checkpoint: Checkpoint) -> Result<(), SinkError> {
        let started = Instant::now();
        let tasks = checkpoint.tasks.len();
        match self.commit(&mut checkpoint) {
            Ok(()) => {
                self.metrics.checkpoint_done(started.elapsed());
                tracing::debug!(
                    id = checkpoint.barrier.id,
                    tasks,
                    ms = started.elapsed().as_millis() as u64,
                    "checkpoint committed"
                );
                checkpoint.acknowledge(Ok(()));
                Ok(())
            }
            Err(message) => {
                self.metrics.checkpoint_failed();
                // Answer first: a source waiting for this very barrier then reports its own
                // error rather than the latch's.
                checkpoint.acknowledge(Err(message.clone()));
                Err(self.failed(fail(
                    "kafka transaction",
                    format!("checkpoint {}: {message}", checkpoint.barrier.id),
                )))
            }
        }
    }
}

/// The sink's side of the failure latch (see [`SinkWatch`]): dropped or tripped, it tells the
/// source the sink will acknowledge nothing more.
pub(crate) struct SinkDown {
    alive: Mutex<Option<Sender<()>>>,
    reason: Arc<Mutex<Option<String>>>,
}

impl SinkDown {
    /// Records the first reason and disconnects the latch; later calls change nothing.
    fn trip(&self, reason: &str) {
        if let Ok(mut r) = self.reason.lock()
            && r.is_none()
        {
            *r = Some(reason.to_owned());
        }
        if let Ok(mut alive) = self.alive.lock() {
            *alive = None;
        }
    }
}

/// The source's side of the failure latch. A barrier the source waits for can sit behind a
/// checkpoint whose commit failed: the failed sink stops reading, but a channel keeps its
/// buffered messages (and the barrier's acknowledgement sender) while the stage before it lives,
/// and that stage waits for the source — so without this latch the source would wait for an
/// acknowledgement that can never come.
#[derive(Clone)]
pub(crate) struct SinkWatch {
    alive: Receiver<()>,
    reason: Arc<Mutex<Option<String>>>,
}

impl SinkWatch {
    /// Fires (stays ready) once the sink has failed or is gone.
    pub(crate) fn receiver(&self) -> &Receiver<()> {
        &self.alive
    }

    /// Why the sink stopped, once it has.
    pub(crate) fn down(&self) -> Option<String> {
        match self.alive.try_recv() {
            Err(TryRecvError::Disconnected) => Some(
                self.reason
                    .lock()
                    .ok()
                    .and_then(|r| r.clone())
                    .unwrap_or_else(|| "the sink stopped".to_owned()),
            ),
            _ => None,
        }
    }
}

/// A new failure latch: the sink keeps [`SinkDown`], the source [`SinkWatch`].
pub(crate) fn sink_latch() -> (SinkDown, SinkWatch) {
    // Nothing is ever sent: only the disconnection carries meaning, and it is permanent.
    let (tx, rx) = crossbeam_channel::bounded(0);
    let reason = Arc::new(Mutex::new(None));
    (
        SinkDown {
            alive: Mutex::new(Some(tx)),
            reason: Arc::clone(&reason),
        },
        SinkWatch { alive: rx, reason },
    )
}
