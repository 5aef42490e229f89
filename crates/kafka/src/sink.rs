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
use crate::repartition::{MergeHandle, Router};
use crate::snapshots::{SnapshotFile, SnapshotWriter};
use crate::store::CheckpointStore;
use authwatch_event::{Alert, AuthEvent};
use authwatch_normalize::RejectKind;
use authwatch_pipeline::{Checkpoint, DeadLetter, LateEvent, Metrics, Origin, Sink, SinkError};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sizes the sink works within.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The producer's `message.max.bytes`: librdkafka refuses a larger record (key, value and
    /// headers) when it is handed over.
    pub max_record: usize,
    /// `input.dead_letter_raw_bytes`: how much of a record a dead letter keeps.
    pub keep_bytes: usize,
}

/// The dead-letter reason of an output record too large for the producer.
const OUTPUT_TOO_LARGE: &str = RejectKind::OutputTooLarge.as_str();

/// Room left in a record for its key, headers and librdkafka's framing when the value is cut
/// to fit `message.max.bytes`.
const HEADROOM: usize = 4096;

/// The longest alert key (the entity) kept when an alert is cut down to fit.
const TRIMMED_KEY_BYTES: usize = 1024;

/// How an alert too large for the producer is cut down, tried in order until it fits: the
/// longest strings first (a user agent, a user name or an application of megabytes), then the
/// lists (evidence is at most 20 event ids, each of which may be long).
const ALERT_TRIMS: &[(usize, usize)] = &[
    (16 * 1024, usize::MAX),
    (1024, usize::MAX),
    (128, usize::MAX),
    (128, 8),
    (64, 2),
];

/// What the producer did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    Yes,
    /// Refused for its size (over `message.max.bytes`). librdkafka checks that when the record
    /// is handed over, so nothing of it is in the transaction, and the transaction can go on.
    TooLarge,
}

/// A record of the dead-letter topic: the fields of the pipeline's [`DeadLetter`], so the
/// pipeline's rejections, the sink's own dead letters (`output_too_large`) and late events
/// (`late_event`) read the same; a few optional fields follow.
#[derive(Clone, Copy, serde::Serialize)]
struct DeadRecord<'a> {
    file: &'a str,
    line: u64,
    offset: u64,
    reason: &'a str,
    detail: &'a str,
    raw: &'a str,
    raw_len: u64,
    /// The detect stage of a repartitioned run: the provider partition (`topic/partition`) of
    /// the event, where `file` and `offset` are the internal topic's.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    /// ... and its offset there.
    #[serde(skip_serializing_if = "Option::is_none")]
    source_offset: Option<i64>,
    /// A late event: the watermark it was behind (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    watermark: Option<i64>,
    /// A late event: the whole event (`raw` is the head of its JSON, as for every dead letter).
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a AuthEvent>,
}

impl<'a> DeadRecord<'a> {
    /// The record of a pipeline's rejection.
    fn of(record: &'a DeadLetter) -> Self {
        DeadRecord {
            file: &record.file,
            line: record.line,
            offset: record.offset,
            reason: record.reason.as_str(),
            detail: &record.detail,
            raw: &record.raw,
            raw_len: record.raw_len,
            source: None,
            source_offset: None,
            watermark: None,
            event: None,
        }
    }

    /// The record of a late event: reason `late_event`, a detail saying by how much, and the
    /// head of the event's JSON (`json`) as `raw`, at most `keep` bytes.
    fn late(record: &'a LateEvent, detail: &'a str, json: &'a str, keep: usize) -> Self {
        DeadRecord {
            file: &record.file,
            line: record.line,
            offset: record.offset,
            reason: LATE_EVENT,
            detail,
            raw: head(json, keep),
            raw_len: json.len() as u64,
            source: None,
            source_offset: None,
            watermark: Some(record.watermark),
            event: Some(&record.event),
        }
    }

    fn with_source(self, source: Option<&'a (String, i64)>) -> Self {
        DeadRecord {
            source: source.map(|(s, _)| s.as_str()),
            source_offset: source.map(|(_, o)| *o),
            ..self
        }
    }
}

/// The dead-letter reason (and `reason` header) of an event behind the watermark.
const LATE_EVENT: &str = "late_event";

/// The `detail` of a late event's dead letter.
fn late_detail(record: &LateEvent) -> String {
    format!(
        "event time {} is {} ms behind the watermark {} (the newest event time of the partition \
         less event_time.allowed_lateness): not detected on",
        record.event.time,
        record.watermark.saturating_sub(record.event.time),
        record.watermark
    )
}

/// Where a record that could not be written came from, for its dead letter.
struct Oversize<'a> {
    /// The input (`topic/partition`) when the sink knows it, else the output topic.
    file: &'a str,
    line: u64,
    offset: u64,
    /// What it is, for the detail ("the enriched event okta/abc").
    what: String,
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn head(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `value` with every string over `string_cap` bytes cut there and every list over `list_cap`
/// items cut to that many, each cut marked in the value itself (a string ends with
/// `…[N bytes cut]`, a list of strings gets a last item `…[N more cut]`), so a reader sees that
/// something is missing and where. Map keys (metric names) stay whole.
fn trim_json(value: &mut serde_json::Value, string_cap: usize, list_cap: usize) {
    use serde_json::Value;
    match value {
        Value::String(s) if s.len() > string_cap => {
            let keep = head(s, string_cap).len();
            let cut = s.len() - keep;
            s.truncate(keep);
            s.push_str(&format!("…[{cut} bytes cut]"));
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                trim_json(item, string_cap, list_cap);
            }
            if items.len() > list_cap {
                let cut = items.len() - list_cap;
                let strings = items.iter().all(Value::is_string);
                items.truncate(list_cap);
                if strings {
                    items.push(Value::String(format!("…[{cut} more cut]")));
                }
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                trim_json(item, string_cap, list_cap);
            }
        }
        _ => {}
    }
}

/// The alert's JSON cut down (see [`ALERT_TRIMS`]) to at most `budget` bytes; `None` when even
/// the last cut is over. Deterministic, so a replay after a restart writes the same bytes.
fn trimmed_alert(alert: &Alert, budget: usize) -> Option<Vec<u8>> {
    let full = serde_json::to_value(alert).ok()?;
    ALERT_TRIMS.iter().find_map(|&(string_cap, list_cap)| {
        let mut value = full.clone();
        trim_json(&mut value, string_cap, list_cap);
        serde_json::to_vec(&value)
            .ok()
            .filter(|bytes| bytes.len() <= budget)
    })
}

fn alert_headers(alert: &Alert) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(6);
    h = header(h, "alert_id", &alert.alert_id);
    h = header(h, "rule_id", &alert.rule_id);
    h = header(h, "category", &alert.category);
    h = header(h, "severity", alert.severity.as_str());
    header(h, "cause_class", alert.cause_class.as_str())
}

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
    /// The pipeline's counters, where the sink's own dead letters are counted too.
    pipeline_metrics: Option<Arc<Metrics>>,
    /// Stores periodic snapshots after their commit.
    writer: SnapshotWriter,
    /// Inputs with a stored snapshot since they were assigned (the one they were restored from,
    /// the empty state a new partition gets at assignment, or one this sink stored before a
    /// commit): their later snapshots may be stored after the commit, since the stored one
    /// covers a crash until then. A partition handed on leaves the set.
    stored: BTreeSet<u32>,
    /// Inputs whose store was looked up for a snapshot since they were assigned.
    looked_up: BTreeSet<u32>,
    limits: Limits,
    /// The detect stage of a repartitioned run: which source record each released line came
    /// from, for its dead letters and late events.
    provenance: Option<MergeHandle>,
}

fn fail(output: &str, message: impl std::fmt::Display) -> SinkError {
    SinkError {
        output: output.to_owned(),
        source: std::io::Error::other(message.to_string()),
    }
}

impl KafkaSink {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        producer: ThreadedProducer<DefaultProducerContext>,
        topics: Topics,
        inputs: Arc<Inputs>,
        store: CheckpointStore,
        metrics: Arc<KafkaMetrics>,
        timeout: Duration,
        down: SinkDown,
        limits: Limits,
    ) -> std::io::Result<Self> {
        Ok(KafkaSink {
            limits,
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
            pipeline_metrics: None,
            provenance: None,
        })
    }

    /// Names the source record (provider partition and offset) of the dead letters and late
    /// events of the detect stage of a repartitioned run, from its merge.
    pub(crate) fn with_provenance(mut self, merge: MergeHandle) -> Self {
        self.provenance = Some(merge);
        self
    }

    /// The source record of the line at `file` (`topic/partition` of the internal topic),
    /// `offset` and `line`, in the detect stage of a repartitioned run.
    fn source_of(&self, file: &str, offset: u64, line: u64) -> Option<(String, i64)> {
        let merge = self.provenance.as_ref()?;
        let (topic, partition) = file.rsplit_once('/')?;
        let input = self.inputs.index(topic, partition.parse().ok()?)?;
        merge.source_of(input, i64::try_from(offset).ok()?, line)
    }

    /// Counts the sink's own dead letters with the pipeline's, where `/metrics` reads them.
    pub(crate) fn counting_in(mut self, metrics: Arc<Metrics>) -> Self {
        self.pipeline_metrics = Some(metrics);
        self
    }

    /// Routes events to the internal topic (the ingest stage of a repartitioned run).
    pub(crate) fn with_router(mut self, router: Router) -> Self {
        self.router = Some(router);
        self
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

    /// Queues one record; waits while librdkafka's queue is full (backpressure). A record
    /// over `message.max.bytes` is not an error of the sink: the caller writes something that
    /// fits instead.
    fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<Queued, SinkError> {
        let mut record = BaseRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        let started = Instant::now();
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(Queued::Yes),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        RDKafkaErrorCode::MessageSizeTooLarge,
                    ),
                    _,
                )) => return Ok(Queued::TooLarge),
                Err((rdkafka::error::KafkaError::MessageProduction(code), r))
                    if code == RDKafkaErrorCode::QueueFull && started.elapsed() < self.timeout =>
                {
                    record = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(self.failed(fail(topic, e))),
            }
        }
    }

    /// Writes a dead letter. One that is itself too large (a long `detail`, or a configured
    /// `dead_letter_raw_bytes` near `message.max.bytes`, with JSON escapes that can grow the
    /// raw head sixfold) keeps less of the raw head until it fits; `raw_len` still tells the
    /// record's whole length.
    fn send_dead(&mut self, record: DeadRecord<'_>) -> Result<(), SinkError> {
        let topic = self.topics.dead_letters.clone();
        let detail = head(record.detail, 4096);
        let mut raw = record.raw;
        loop {
            let dead = DeadRecord {
                detail,
                raw,
                ..record
            };
            self.json(&topic, &dead)?;
            let h = header(OwnedHeaders::new(), "reason", record.reason);
            let h = header(h, "source", record.file);
            match self.send(&topic, None, record.file.as_bytes(), &self.buf, h)? {
                Queued::Yes => {
                    self.metrics.add_dead_letter();
                    return Ok(());
                }
                Queued::TooLarge if !raw.is_empty() => {
                    raw = head(raw, (raw.len() / 2).min(self.limits.max_record / 8));
                }
                Queued::TooLarge => {
                    return Err(self.failed(fail(
                        &topic,
                        format!(
                            "a dead letter of {} without its raw head is still over \
                             message.max.bytes ({})",
                            record.file, self.limits.max_record
                        ),
                    )));
                }
            }
        }
    }

    /// The record in `self.buf` is too large for the producer: a dead letter with reason
    /// `output_too_large` takes its place, with the head of the record as `raw` (capped like
    /// every dead letter's) and its size as `raw_len`, so nothing is lost without a trace and
    /// the stream goes on. Retrying could not help: the same record would be refused again,
    /// and the run would restart from its checkpoint over and over.
    fn oversize(&mut self, topic: &str, what: Oversize<'_>) -> Result<(), SinkError> {
        let len = self.buf.len();
        let keep = self.limits.keep_bytes.min(len);
        let raw = String::from_utf8_lossy(&self.buf[..keep]).into_owned();
        let detail = format!(
            "{} is {len} bytes, over the producer's message.max.bytes ({}) for topic {topic}",
            what.what, self.limits.max_record
        );
        tracing::warn!(
            file = what.file,
            offset = what.offset,
            topic,
            bytes = len,
            "{}: written to the dead-letter topic as {OUTPUT_TOO_LARGE}",
            what.what
        );
        self.metrics.add_output_too_large();
        // The pipeline's counter is the one exported as `authwatch_dead_letters_total{reason}`.
        if let Some(counts) = &self.pipeline_metrics {
            Metrics::add(&counts.dead_letters[RejectKind::OutputTooLarge.index()], 1);
        }
        self.send_dead(DeadRecord {
            file: what.file,
            line: what.line,
            offset: what.offset,
            reason: OUTPUT_TOO_LARGE,
            detail: &detail,
            raw: &raw,
            raw_len: len as u64,
            source: None,
            source_offset: None,
            watermark: None,
            event: None,
        })
    }

    /// The alert in `self.buf` is too large for the producer. Dropping it would hide an
    /// incident, and a dead letter is not where a SOC looks: it is written cut down (see
    /// [`trimmed_alert`]: every string over a cap is cut, the entity's fields included; the
    /// id, rule, category, severity and cause are short and also in the headers), with its key
    /// (the entity) kept to 1 KiB and a `truncated` header holding its full size. Only if even that does not fit does it
    /// become an `output_too_large` dead letter.
    fn trimmed(&mut self, topic: &str, alert: &Alert, key: &str) -> Result<(), SinkError> {
        let full = self.buf.len();
        let key = head(key, TRIMMED_KEY_BYTES);
        let budget = self.limits.max_record.saturating_sub(key.len() + HEADROOM);
        if let Some(bytes) = trimmed_alert(alert, budget) {
            let h = header(alert_headers(alert), "truncated", &full.to_string());
            if self.send(topic, None, key.as_bytes(), &bytes, h)? == Queued::Yes {
                tracing::warn!(
                    alert_id = %alert.alert_id,
                    rule_id = %alert.rule_id,
                    bytes = full,
                    written = bytes.len(),
                    "alert too large for the producer: written with its longest fields cut"
                );
                self.metrics.add_alert_trimmed();
                self.metrics.add_alert();
                return Ok(());
            }
        }
        self.oversize(
            topic,
            Oversize {
                file: topic,
                line: 0,
                offset: 0,
                what: format!(
                    "alert {} of rule {} ({}), even cut down,",
                    alert.alert_id, alert.rule_id, alert.entity
                ),
            },
        )
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
            // Lag from the consumer's statistics (every 5 s); unknown counts as behind, where
            // only a position standing still makes a source idle.
            let lags = self.metrics.consumer_lag();
            let caught_up: BTreeSet<u32> = lags
                .iter()
                .filter(|l| l.lag == 0)
                .filter_map(|l| self.inputs.index(&l.topic, l.partition))
                .collect();
            let markers = router.markers(&positions, &caught_up);
            router.release(&checkpoint.barrier.release);
            for m in markers {
                let queued = self
                    .send(&topic, Some(m.partition), m.key.as_bytes(), &[], m.headers)
                    .map_err(|e| e.to_string())?;
                // A marker is a few headers, far below the smallest `message.max.bytes` (64 KiB).
                if queued == Queued::TooLarge {
                    return Err(format!(
                        "a progress marker is over message.max.bytes ({})",
                        self.limits.max_record
                    ));
                }
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
        //    Only older ones are removed, as on the snapshot thread: once the commit is made the
        //    partition may already belong to another owner (this instance was evicted from the
        //    group just after its commit), whose newer files must stay. Removing every other
        //    file could delete the one that owner's committed offset needs, after that owner
        //    removed this one: no state at or before the offset, and the run stops.
        for (input, offset) in now {
            if let Some((topic, partition)) = self.inputs.get(input) {
                prune_committed(&self.store, topic, partition, offset);
                self.stored.insert(input);
            }
        }
        // The lines before these positions are all written: their sources are not asked for
        // again.
        if let Some(merge) = &self.provenance {
            for (input, offset) in &positions {
                merge.forget_before(*input, *offset);
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

/// After the commit that made `offset` the partition's committed offset, with its snapshot
/// stored before: removes the partition's older snapshots, which nothing resumes from any more.
/// Newer files stay (see `commit`, step 4). One left by a transaction that never committed is
/// not picked while the committed offset is before it (a restore takes the newest file at or
/// before that offset); it holds the state at its offset as any run computes it from the same
/// records, and the partition's next snapshot past it removes it.
fn prune_committed(store: &CheckpointStore, topic: &str, partition: i32, offset: i64) {
    if let Err(e) = store.prune_before(topic, partition, offset) {
        tracing::warn!(error = %e, "old checkpoint files not removed");
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
        match self.send(
            &topic,
            None,
            key.as_bytes(),
            &self.buf,
            alert_headers(alert),
        )? {
            Queued::Yes => {
                self.metrics.add_alert();
                Ok(())
            }
            Queued::TooLarge => self.trimmed(&topic, alert, &key),
        }
    }

    fn dead_letter(&mut self, record: &DeadLetter) -> Result<(), SinkError> {
        let source = self.source_of(&record.file, record.offset, record.line);
        let dead = DeadRecord::of(record).with_source(source.as_ref());
        // The whole record first; one too large keeps less of its raw head.
        self.send_dead(dead)
    }

    fn late_event(&mut self, record: &LateEvent) -> Result<(), SinkError> {
        let topic = self.topics.dead_letters.clone();
        let source = self.source_of(&record.file, record.offset, record.line);
        let json = match serde_json::to_string(&record.event) {
            Ok(json) => json,
            Err(e) => return Err(self.failed(fail(&topic, e))),
        };
        let detail = late_detail(record);
        let dead = DeadRecord::late(record, &detail, &json, self.limits.keep_bytes)
            .with_source(source.as_ref());
        self.json(&topic, &dead)?;
        let h = header(OwnedHeaders::new(), "reason", LATE_EVENT);
        let h = header(h, "source", &record.file);
        match self.send(&topic, None, record.file.as_bytes(), &self.buf, h)? {
            Queued::Yes => {
                self.metrics.add_dead_letter();
                Ok(())
            }
            Queued::TooLarge => self.oversize(
                &topic,
                Oversize {
                    file: &record.file,
                    line: record.line,
                    offset: record.offset,
                    what: format!(
                        "the late event {}/{} (behind the watermark {}, not detected on)",
                        record.event.provider, record.event.event_id, record.watermark
                    ),
                },
            ),
        }
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
        match self.send(&topic, None, key.as_bytes(), &self.buf, OwnedHeaders::new())? {
            Queued::Yes => {
                self.metrics.add_enriched();
                Ok(())
            }
            // The sink is handed processed events without their input partition and offset:
            // the dead letter names the output topic, and the detail names the event.
            Queued::TooLarge => self.oversize(
                &topic,
                Oversize {
                    file: &topic,
                    line: 0,
                    offset: 0,
                    what: format!(
                        "the enriched event {}/{} (detected on; only its copy here is missing)",
                        event.provider, event.event_id
                    ),
                },
            ),
        }
    }

    fn route(&mut self, event: &AuthEvent, origin: Origin, progress: i64) -> Result<(), SinkError> {
        let Some(router) = &mut self.router else {
            return self.event(event);
        };
        let routed = router.event(event, origin, progress);
        let topic = router.topic().to_owned();
        self.json(&topic, event)?;
        match self.send(
            &topic,
            Some(routed.partition),
            routed.key.as_bytes(),
            &self.buf,
            routed.headers,
        )? {
            Queued::Yes => {
                self.metrics.add_enriched();
                Ok(())
            }
            Queued::TooLarge => {
                let source = self
                    .inputs
                    .get(origin.input)
                    .map_or_else(|| topic.clone(), |(t, p)| format!("{t}/{p}"));
                self.oversize(
                    &topic,
                    Oversize {
                        file: &source,
                        line: origin.line,
                        offset: origin.offset,
                        what: format!(
                            "the event {}/{} (not routed to detection)",
                            event.provider, event.event_id
                        ),
                    },
                )
            }
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn alert(user_agent: &str, evidence: usize) -> Alert {
        serde_json::from_value(serde_json::json!({
            "alert_id": "7f1c2a9e-0000-5000-8000-000000000001",
            "rule_id": "mfa_fatigue",
            "rule_version": 1,
            "category": "mfa_fatigue",
            "cause_class": "attack",
            "severity": "high",
            "attack_technique": ["T1621"],
            "entity": {"user": "alice@example.com"},
            "window": {"start": "2026-01-05T10:00:00.000Z", "end": "2026-01-05T10:10:00.000Z"},
            "metrics": {"pushes": 12},
            "evidence": (0..evidence).map(|i| format!("event-{i}-{}", "e".repeat(200))).collect::<Vec<_>>(),
            "observed": {
                "event_id": "event-0",
                "time": "2026-01-05T10:09:00.000Z",
                "device": {"user_agent": user_agent},
            },
            "first_seen": "2026-01-05T10:00:00.000Z",
            "last_seen": "2026-01-05T10:09:00.000Z",
            "summary": {"en": "12 pushes", "ja": "12 件"},
            "steps": {"en": ["call the user"], "ja": ["本人に電話"]},
        }))
        .unwrap()
    }

    #[test]
    fn head_cuts_on_a_character_boundary() {
        assert_eq!(head("abc", 10), "abc");
        assert_eq!(head("abc", 2), "ab");
        // "é" is two bytes: a cut in its middle keeps the character before it.
        assert_eq!(head("aé", 2), "a");
        assert_eq!(head("日本", 4), "日");
        assert_eq!(head("x", 0), "");
    }

    // An alert made huge by one field of its deciding event (a 1 MB user agent) is written cut
    // down rather than failing the transaction (and every retry of it): every field is still
    // there, with the same id, and the cut is marked where it was made.
    #[test]
    fn an_oversized_alert_is_cut_to_fit_and_stays_an_alert() {
        let ua = format!("Mozilla/5.0 {}", "é".repeat(600_000));
        let big = alert(&ua, 20);
        let budget = 1_000_000 - 1024 - HEADROOM;
        assert!(serde_json::to_vec(&big).unwrap().len() > budget);
        let bytes = trimmed_alert(&big, budget).unwrap();
        assert!(bytes.len() <= budget, "{}", bytes.len());
        let back: Alert = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.alert_id, big.alert_id);
        assert_eq!(back.rule_id, big.rule_id);
        assert_eq!(back.entity, big.entity);
        assert_eq!(back.evidence, big.evidence, "short enough to stay whole");
        let kept = back.observed.device.user_agent.as_str();
        assert!(kept.starts_with("Mozilla/5.0 éé"), "{}", head(kept, 40));
        assert!(
            kept.ends_with(" bytes cut]"),
            "{}",
            &kept[kept.len() - 40..]
        );
        assert!(kept.len() <= 16 * 1024 + 32);
        // Deterministic: a replay writes the same bytes.
        assert_eq!(trimmed_alert(&big, budget).unwrap(), bytes);
        // A small budget cuts the lists too, marking how much is missing.
        let bytes = trimmed_alert(&big, 2_500).unwrap();
        let back: Alert = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.evidence.len(), 9, "{:?}", back.evidence);
        assert_eq!(back.evidence[8], "…[12 more cut]");
        assert!(back.evidence[0].ends_with("…[80 bytes cut]"));
        // An alert that does not fit even cut down is left to the dead-letter path.
        assert_eq!(trimmed_alert(&big, 300), None);
    }

    #[test]
    fn trimming_marks_each_cut_and_leaves_other_values_alone() {
        let mut v = serde_json::json!({
            "s": "abcdef",
            "n": 123456789,
            "list": ["a", "b", "c", "d"],
            "objects": [{"k": 1}, {"k": 2}, {"k": 3}],
            "long_key_is_kept_whole": true,
        });
        trim_json(&mut v, 3, 2);
        assert_eq!(v["s"], "abc…[3 bytes cut]");
        assert_eq!(v["n"], 123456789);
        assert_eq!(v["list"], serde_json::json!(["a", "b", "…[2 more cut]"]));
        // Only a list of strings gets a marker item: another would change the item type.
        assert_eq!(v["objects"], serde_json::json!([{"k": 1}, {"k": 2}]));
        assert_eq!(v["long_key_is_kept_whole"], true);
    }

    // A consumer of the dead-letter topic reads every record the same way: a late event has
    // the fields of a rejection (`reason` = `late_event`, a detail, the head of the event as
    // `raw`), plus the watermark and the whole event.
    #[test]
    fn a_late_event_reads_like_every_dead_letter() {
        let record = LateEvent {
            file: "okta/0".to_owned(),
            line: 1,
            offset: 42,
            watermark: 5_000,
            event: AuthEvent {
                time: 1_000,
                ..AuthEvent::default()
            },
        };
        let detail = late_detail(&record);
        let json = serde_json::to_string(&record.event).unwrap();
        let v = serde_json::to_value(DeadRecord::late(&record, &detail, &json, 16)).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for key in [
            "file", "line", "offset", "reason", "detail", "raw", "raw_len",
        ] {
            assert!(keys.contains(&key), "{key} missing: {v}");
        }
        assert_eq!(v["reason"], "late_event");
        assert_eq!(v["file"], "okta/0");
        assert_eq!(v["offset"], 42);
        assert_eq!(v["raw"].as_str().unwrap(), &json[..16]);
        assert_eq!(v["raw_len"], json.len());
        assert_eq!(v["watermark"], 5_000);
        assert_eq!(v["event"]["time"], 1_000);
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.contains("4000 ms behind the watermark 5000"),
            "{detail}"
        );
        assert!(v.get("source").is_none(), "{v}");
        // The detect stage of a repartitioned run names the provider record too.
        let source = ("okta.system-log/3".to_owned(), 17);
        let v = serde_json::to_value(
            DeadRecord::late(&record, "d", &json, 4096).with_source(Some(&source)),
        )
        .unwrap();
        assert_eq!(v["source"], "okta.system-log/3");
        assert_eq!(v["source_offset"], 17);
        assert_eq!(v["raw"].as_str().unwrap(), json);
    }

    // The partition may have moved on by the time its committed snapshot's older files are
    // removed (this instance evicted just after its commit): the next owner's newer files stay,
    // or its committed offset could be left without a state at or before it.
    #[test]
    fn pruning_after_a_commit_leaves_newer_files_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), "g");
        let state = authwatch_pipeline::StateParts::default();
        for offset in [10, 20, 30] {
            store.write("auth", 0, offset, &state).unwrap();
        }
        prune_committed(&store, "auth", 0, 20);
        assert_eq!(store.offsets("auth", 0).unwrap(), [20, 30]);
    }

    // The pipeline's rejections are written exactly as before (the pipeline's own JSON).
    #[test]
    fn a_rejection_is_written_as_the_pipelines_dead_letter() {
        let dead = DeadLetter {
            file: "okta/0".to_owned(),
            line: 1,
            offset: 7,
            reason: RejectKind::MalformedJson,
            detail: "expected value at line 1 column 1".to_owned(),
            raw: "{oops".to_owned(),
            raw_len: 5,
        };
        assert_eq!(
            serde_json::to_string(&DeadRecord::of(&dead)).unwrap(),
            serde_json::to_string(&dead).unwrap()
        );
    }
}
