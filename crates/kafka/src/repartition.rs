//! Scale-out by re-keying (`[kafka.repartition]`): detection behind an internal topic keyed by
//! tenant, so the producers' keying of the provider topics does not matter.
//!
//! - **Ingest** (the group `group_id`, over the provider topics): normalize and enrich, then
//!   produce each event (native JSON) to the internal topic, keyed by tenant, in the same
//!   transaction as the provider offsets — exactly once across the hop. Each event carries its
//!   source partition, source offset and the source's *progress* (its newest event time so
//!   far, which never decreases). At every checkpoint the ingest stage writes, for each of its
//!   partitions, a progress marker to every internal partition, or an idle marker once the
//!   partition has had no new record for `idle_after`.
//! - **Detect** (the group `<group_id>.detect`, over the internal topic): one task per internal
//!   partition, as without repartitioning, behind a merge. An internal partition holds an
//!   interleaving of events from every source partition, and that interleaving depends on how
//!   many ingest instances run and how fast they are. The merge makes detection independent of
//!   it: it holds events back and releases them only strictly below the lowest progress over
//!   the non-idle sources, in (progress, source, source offset) order — Flink's per-channel
//!   watermark alignment, with the progress of each source as its watermark. Within a source
//!   that order is the source's own, and across sources it depends only on the records, so a
//!   task sees the same sequence whatever the interleaving. The held events and the progress
//!   of every source are part of the task's checkpoint, taken at the offsets the consumer has
//!   read, so a restore continues the merge exactly.
//!
//! Idle sources are the one place where timing enters: a source declared idle no longer holds
//! the others back, and an event it produces later is merged when it arrives. With live
//! traffic its event times are current and the order is unchanged; see docs/KAFKA.md.

use crate::client::Inputs;
use crate::error::KafkaError;
use authwatch_event::AuthEvent;
use authwatch_normalize::Format;
use authwatch_pipeline::config::{KafkaTopic, RepartitionKey};
use authwatch_pipeline::{Config, Origin, RawBatch, RawLine, StateParts};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Header: the source partition of an event or a marker (`topic/partition`).
const H_SRC: &str = "aw.src";
/// Header: the event's offset in its source partition.
const H_OFF: &str = "aw.off";
/// Header: the source's progress (ms) with this event or marker.
const H_AT: &str = "aw.at";
/// Header: `progress` or `idle` on a marker (markers have no value).
const H_MARK: &str = "aw.mark";
/// The checkpoint part holding a detect task's merge state.
const PART: &str = "merge";

/// Which stages one `authwatch run` process runs when `[kafka.repartition]` is enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Both, each with its own consumer group and producer (the default).
    #[default]
    All,
    /// Provider topics → normalize + enrich → internal topic.
    Ingest,
    /// Internal topic → merge → detect → alerts.
    Detect,
}

/// What one supervised runtime runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Provider topics straight to detection (no repartitioning).
    Whole,
    /// The ingest stage.
    Ingest,
    /// The detect stage; `providers` are the provider topics whose partitions are the sources.
    Detect { providers: Vec<String> },
}

/// The consumer group of the detect stage.
pub(crate) fn detect_group(group_id: &str) -> String {
    format!("{group_id}.detect")
}

/// The configuration one stage runs with: its own group (detect), transactional id and inputs.
pub(crate) fn stage_config(config: &Config, stage: &Stage, instance: &str) -> Config {
    let mut c = config.clone();
    let internal = config.kafka.repartition.topic_for(&config.kafka.group_id);
    // Named once from the provider group: the detect stage has a group of its own.
    c.kafka.repartition.topic = Some(internal.clone());
    match stage {
        Stage::Whole => {}
        Stage::Ingest => {
            c.kafka.transactional_id = Some(format!("{instance}.ingest"));
            // Enriched events and responses belong to the stage that sees detection's view.
            c.kafka.enriched_topic = None;
            c.respond.enabled = false;
        }
        Stage::Detect { .. } => {
            c.kafka.transactional_id = Some(format!("{instance}.detect"));
            c.kafka.group_id = detect_group(&config.kafka.group_id);
            c.kafka.topics = vec![KafkaTopic {
                name: internal,
                format: Format::Native,
            }];
            // `input.max_line_bytes` bounds provider records, and the ingest stage applies it.
            // The internal topic holds authwatch's own records, each bounded by the ingest
            // producer's record limit; an enriched event is larger than the provider record it
            // came from (a few hundred bytes of enrichment), so a provider record just under
            // the limit became a `line_too_long` dead letter here, after it had been accepted.
            c.input.max_line_bytes = usize::MAX;
        }
    }
    c
}

/// The events reach the detect stage enriched by the ingest stage: enriching them again would
/// only repeat the lookups.
pub(crate) struct AlreadyEnriched;

impl authwatch_pipeline::Enricher for AlreadyEnriched {
    fn enrich(&self, _event: &mut AuthEvent) {}
}

fn header(headers: OwnedHeaders, key: &str, value: &str) -> OwnedHeaders {
    headers.insert(Header {
        key,
        value: Some(value),
    })
}

/// A record the ingest sink writes to the internal topic.
pub(crate) struct Routed {
    pub partition: i32,
    pub key: String,
    pub headers: OwnedHeaders,
}

/// What the ingest stage knows of one source partition.
#[derive(Debug)]
struct SourceProgress {
    /// Newest progress routed.
    at: Option<i64>,
    /// Progress last written as a marker.
    marked: Option<i64>,
    /// Events routed so far.
    routed: u64,
    /// `routed` at the last checkpoint.
    routed_at_checkpoint: u64,
    /// The position at the last checkpoint.
    position: Option<i64>,
    /// When the last checkpoint saw an event routed since the one before (or when the source
    /// was first seen).
    quiet_since: Instant,
    /// An idle marker was written since the last event was routed.
    idle_marked: bool,
}

impl SourceProgress {
    /// A source seen for the first time at `now`: nothing routed or marked yet.
    fn new(now: Instant) -> Self {
        SourceProgress {
            at: None,
            marked: None,
            routed: 0,
            routed_at_checkpoint: 0,
            position: None,
            quiet_since: now,
            idle_marked: false,
        }
    }
}

/// The ingest stage's side of the internal topic: where each event goes, and the markers.
pub(crate) struct Router {
    topic: String,
    partitions: i32,
    key: RepartitionKey,
    idle_after: Duration,
    inputs: Arc<Inputs>,
    sources: BTreeMap<u32, SourceProgress>,
}

impl Router {
    pub(crate) fn new(
        topic: String,
        partitions: i32,
        key: RepartitionKey,
        idle_after: Duration,
        inputs: Arc<Inputs>,
    ) -> Self {
        Router {
            topic,
            partitions: partitions.max(1),
            key,
            idle_after,
            inputs,
            sources: BTreeMap::new(),
        }
    }

    /// The internal topic.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    fn source_name(&self, input: u32) -> String {
        self.inputs
            .get(input)
            .map_or_else(|| format!("input {input}"), |(t, p)| format!("{t}/{p}"))
    }

    /// The internal partition of a key: a hash fixed here rather than the client's
    /// partitioner, so that every instance (and every client library) agrees.
    fn partition_of(&self, key: &str) -> i32 {
        match self.key {
            RepartitionKey::Global => 0,
            RepartitionKey::Tenant => {
                let n = u64::try_from(self.partitions).unwrap_or(1).max(1);
                i32::try_from(xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % n).unwrap_or(0)
            }
        }
    }

    /// Where `event` goes, with its source, offset and progress as headers.
    pub(crate) fn event(&mut self, event: &AuthEvent, origin: Origin, progress: i64) -> Routed {
        let key = match self.key {
            RepartitionKey::Tenant => event.tenant.as_str().to_owned(),
            RepartitionKey::Global => String::new(),
        };
        let src = self.source_name(origin.input);
        let p = self
            .sources
            .entry(origin.input)
            .or_insert_with(|| SourceProgress::new(Instant::now()));
        p.at = Some(p.at.map_or(progress, |a| a.max(progress)));
        // Counted rather than timed: the checkpoint reads the clock once for every source,
        // instead of once per event here.
        p.routed += 1;
        let h = header(OwnedHeaders::new_with_capacity(3), H_SRC, &src);
        let h = header(h, H_OFF, &origin.offset.to_string());
        let h = header(h, H_AT, &progress.to_string());
        Routed {
            partition: self.partition_of(&key),
            key,
            headers: h,
        }
    }

    /// The markers of a checkpoint over `positions` (input → next offset): for every source
    /// whose progress grew since its last marker, a progress marker; for one that has routed no
    /// event for `idle_after`, one idle marker. Each goes to every internal partition.
    ///
    /// `caught_up` holds the inputs known to be at their end (lag 0).
    ///
    /// For a caught-up source idleness counts routed events, not records read: a partition
    /// whose new records all become dead letters moves its position but gives the merge no
    /// progress, and would otherwise hold every detect task back for as long as such records
    /// keep coming. A source still reading a backlog is idle only while its position stands
    /// still: valid events may lie behind the rejected records it is reading through, and
    /// declaring it idle would let the other sources move the merge past them (they would
    /// arrive late). One that falls behind again after an idle marker gets a progress marker,
    /// which makes it hold the merge again.
    pub(crate) fn markers(
        &mut self,
        positions: &BTreeMap<u32, i64>,
        caught_up: &BTreeSet<u32>,
    ) -> Vec<Routed> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (input, position) in positions {
            let src = self.source_name(*input);
            let p = self
                .sources
                .entry(*input)
                .or_insert_with(|| SourceProgress::new(now));
            let moved = p.position.replace(*position) != Some(*position);
            let mut wake = false;
            if p.routed != p.routed_at_checkpoint {
                p.routed_at_checkpoint = p.routed;
                p.quiet_since = now;
                p.idle_marked = false;
            } else if moved && !caught_up.contains(input) {
                p.quiet_since = now;
                wake = std::mem::take(&mut p.idle_marked);
            }
            let mark = match p.at {
                Some(at) if p.marked.is_none_or(|m| at > m) => {
                    p.marked = Some(at);
                    Some(("progress", at))
                }
                // Progress is never lowered by a marker: this only clears the idle flag.
                _ if wake => Some(("progress", p.at.unwrap_or(i64::MIN))),
                _ if !p.idle_marked && now.duration_since(p.quiet_since) >= self.idle_after => {
                    p.idle_marked = true;
                    Some(("idle", p.at.unwrap_or(i64::MIN)))
                }
                _ => None,
            };
            if let Some((kind, at)) = mark {
                for partition in 0..self.partitions {
                    let h = header(OwnedHeaders::new_with_capacity(3), H_SRC, &src);
                    let h = header(h, H_AT, &at.to_string());
                    out.push(Routed {
                        partition,
                        key: String::new(),
                        headers: header(h, H_MARK, kind),
                    });
                }
            }
        }
        out
    }

    /// Forgets partitions handed to another owner (it writes their markers from now on).
    pub(crate) fn release(&mut self, inputs: &[u32]) {
        for i in inputs {
            self.sources.remove(i);
        }
    }
}

/// One source partition as a detect task sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SourceState {
    /// Every later event of this source has at least this progress.
    progress: i64,
    /// Declared idle: it does not hold the merge back until it sends again.
    idle: bool,
}

/// An event held back by the merge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Held {
    at: i64,
    src: String,
    off: i64,
    /// Its offset in the internal partition (for dead letters and late events).
    offset: i64,
    payload: String,
}

/// An event the merge released, with the source record it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Released {
    /// The source partition (`topic/partition`).
    src: String,
    /// Its offset there.
    off: i64,
    payload: String,
}

/// The merge of one detect task (one internal partition).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MergeTask {
    sources: BTreeMap<String, SourceState>,
    held: BTreeMap<(i64, String, i64), (i64, String)>,
    /// Changed since its last checkpoint.
    changed: bool,
}

#[derive(Serialize, Deserialize)]
struct MergeSnapshot {
    sources: BTreeMap<String, SourceState>,
    held: Vec<Held>,
}

impl MergeTask {
    fn new(known: &[String]) -> Self {
        let mut t = MergeTask {
            changed: true,
            ..MergeTask::default()
        };
        t.know(known);
        t
    }

    /// Sources not heard of yet hold the merge back until they send (or are declared idle).
    fn know(&mut self, known: &[String]) {
        for s in known {
            self.sources.entry(s.clone()).or_insert(SourceState {
                progress: i64::MIN,
                idle: false,
            });
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        let snap = MergeSnapshot {
            sources: self.sources.clone(),
            held: self
                .held
                .iter()
                .map(|((at, src, off), (offset, payload))| Held {
                    at: *at,
                    src: src.clone(),
                    off: *off,
                    offset: *offset,
                    payload: payload.clone(),
                })
                .collect(),
        };
        serde_json::to_vec(&snap).map_err(|e| e.to_string())
    }

    fn restore(bytes: &[u8], known: &[String]) -> Result<Self, String> {
        let snap: MergeSnapshot = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut t = MergeTask {
            sources: snap.sources,
            held: snap
                .held
                .into_iter()
                .map(|h| ((h.at, h.src, h.off), (h.offset, h.payload)))
                .collect(),
            changed: true,
        };
        t.know(known);
        Ok(t)
    }

    fn source(&mut self, src: &str) -> &mut SourceState {
        self.sources.entry(src.to_owned()).or_insert(SourceState {
            progress: i64::MIN,
            idle: false,
        })
    }

    /// The lowest progress over the sources that hold the merge back; `None` when every source
    /// is idle.
    fn frontier(&self) -> Option<i64> {
        self.sources
            .values()
            .filter(|s| !s.idle)
            .map(|s| s.progress)
            .min()
    }

    /// Applies one record; returns the events it releases, in merge order.
    ///
    /// An event is released once its progress is strictly below the frontier: every source
    /// that holds the merge back has then progressed past it, so each event still to come
    /// sorts after it, and the order released is the same whatever the interleaving. An event
    /// *at* the frontier waits: the source at the frontier may still send one with the same
    /// progress and a lower (source, offset), which would have to go first (an interleaving
    /// that brought it earlier would have released it first). When every source is idle
    /// nothing holds the merge back and everything held is released.
    fn apply(&mut self, record: Record, offset: i64, out: &mut Vec<Released>) {
        self.changed = true;
        match record {
            Record::Event {
                src,
                off,
                at,
                payload,
            } => {
                let s = self.source(&src);
                s.idle = false;
                s.progress = s.progress.max(at);
                self.held.insert((at, src, off), (offset, payload));
            }
            Record::Progress { src, at } => {
                let s = self.source(&src);
                s.idle = false;
                s.progress = s.progress.max(at);
            }
            Record::Idle { src, at } => {
                let s = self.source(&src);
                s.idle = true;
                s.progress = s.progress.max(at);
            }
            Record::Plain { .. } => {}
        }
        let frontier = self.frontier();
        while let Some(entry) = self.held.first_entry() {
            if frontier.is_some_and(|f| entry.key().0 >= f) {
                break;
            }
            let ((_, src, off), (_, payload)) = entry.remove_entry();
            out.push(Released { src, off, payload });
        }
    }
}

/// A record of the internal topic, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    Event {
        src: String,
        off: i64,
        at: i64,
        payload: String,
    },
    Progress {
        src: String,
        at: i64,
    },
    Idle {
        src: String,
        at: i64,
    },
    /// Without the ingest stage's headers (written by something else): processed where it is.
    Plain {
        payload: Vec<u8>,
    },
}

impl Record {
    fn read(msg: &BorrowedMessage<'_>) -> Record {
        let payload = msg.payload().unwrap_or_default();
        let (mut src, mut off, mut at, mut mark) = (None, None, None, None);
        if let Some(headers) = msg.headers() {
            for h in headers.iter() {
                let value = h.value.and_then(|v| std::str::from_utf8(v).ok());
                match h.key {
                    H_SRC => src = value.map(str::to_owned),
                    H_OFF => off = value.and_then(|v| v.parse::<i64>().ok()),
                    H_AT => at = value.and_then(|v| v.parse::<i64>().ok()),
                    H_MARK => mark = value.map(str::to_owned),
                    _ => {}
                }
            }
        }
        let plain = || Record::Plain {
            payload: payload.to_vec(),
        };
        match (src, at, mark.as_deref(), off) {
            (Some(src), Some(at), Some("progress"), _) => Record::Progress { src, at },
            (Some(src), Some(at), Some("idle"), _) => Record::Idle { src, at },
            (Some(src), Some(at), None, Some(off)) => match std::str::from_utf8(payload) {
                Ok(text) => Record::Event {
                    src,
                    off,
                    at,
                    payload: text.to_owned(),
                },
                Err(_) => plain(),
            },
            _ => plain(),
        }
    }
}

/// The merge state of every detect task of this instance. Shared by the source (which applies
/// records) and its rebalance callbacks (which restore, snapshot and release tasks); both run on
/// the source thread.
pub(crate) struct Merger {
    known: Vec<String>,
    tasks: BTreeMap<u32, MergeTask>,
    /// Per released line not muted, by its task (input), the offset of the internal record
    /// that released it and its position among that record's releases (`line` - 1): the source
    /// record it was read from, for the sink's dead letters and late events. The sink forgets
    /// what a checkpoint covers.
    origins: BTreeMap<(u32, i64), Vec<(String, i64)>>,
}

/// A handle on the [`Merger`].
#[derive(Clone)]
pub(crate) struct MergeHandle(Arc<Mutex<Merger>>);

impl MergeHandle {
    /// A merger whose tasks wait for every partition of `known` (`topic/partition`).
    pub(crate) fn new(known: Vec<String>) -> Self {
        MergeHandle(Arc::new(Mutex::new(Merger {
            known,
            tasks: BTreeMap::new(),
            origins: BTreeMap::new(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Merger> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A task starts: from the merge part of its restored state, or fresh.
    pub(crate) fn assign(&self, input: u32, state: Option<&StateParts>) -> Result<(), String> {
        let mut m = self.lock();
        let task = match state.and_then(|s| s.parts.get(PART)) {
            Some(bytes) => MergeTask::restore(bytes, &m.known)
                .map_err(|e| format!("checkpoint part {PART}: restore failed: {e}"))?,
            None => MergeTask::new(&m.known),
        };
        m.tasks.insert(input, task);
        Ok(())
    }

    /// Tasks handed to another owner.
    pub(crate) fn release(&self, input: u32) {
        let mut m = self.lock();
        m.tasks.remove(&input);
        m.origins.retain(|(i, _), _| *i != input);
    }

    /// The source record (`topic/partition`, offset) of the event released as line `line` by
    /// the record at `offset` of task `input`, while the sink has not passed it.
    pub(crate) fn source_of(&self, input: u32, offset: i64, line: u64) -> Option<(String, i64)> {
        let index = usize::try_from(line.checked_sub(1)?).ok()?;
        self.lock()
            .origins
            .get(&(input, offset))?
            .get(index)
            .cloned()
    }

    /// The sink has passed every line of `input` released before `offset` (a checkpoint at
    /// that position).
    pub(crate) fn forget_before(&self, input: u32, offset: i64) {
        let mut m = self.lock();
        let passed: Vec<(u32, i64)> = m
            .origins
            .range((input, i64::MIN)..(input, offset))
            .map(|(k, _)| *k)
            .collect();
        for key in passed {
            m.origins.remove(&key);
        }
    }

    /// The merge parts of the tasks that changed since their last checkpoint.
    pub(crate) fn barrier_parts(&self) -> Vec<(u32, StateParts)> {
        let mut m = self.lock();
        let mut out = Vec::new();
        for (input, task) in m.tasks.iter_mut().filter(|(_, t)| t.changed) {
            match task.snapshot() {
                Ok(bytes) => {
                    let mut parts = StateParts::default();
                    parts.parts.insert(PART.to_owned(), bytes);
                    out.push((*input, parts));
                    task.changed = false;
                }
                // Serializing strings and integers does not fail; if it ever did, the task
                // stays changed and the file of this checkpoint lacks the part, which its
                // restore would report.
                Err(e) => tracing::error!(input, error = %e, "merge state not snapshotted"),
            }
        }
        out
    }
}

/// The detect stage's source-side merge: records read in one poll round are staged, then
/// applied in order once the round is over (a rebalance during the round discards them, as
/// the plain source discards its partial batch), and what they release becomes the batch.
pub(crate) struct Merge {
    handle: MergeHandle,
    metrics: Arc<crate::metrics::KafkaMetrics>,
    staged: Vec<(u32, i64, Record)>,
    released: Vec<Released>,
}

impl Merge {
    pub(crate) fn new(handle: MergeHandle, metrics: Arc<crate::metrics::KafkaMetrics>) -> Self {
        Merge {
            handle,
            metrics,
            staged: Vec::new(),
            released: Vec::new(),
        }
    }

    /// Records staged in this round.
    pub(crate) fn staged(&self) -> usize {
        self.staged.len()
    }

    /// Stages one record of input (internal partition) `input`.
    pub(crate) fn stage(&mut self, input: u32, msg: &BorrowedMessage<'_>) {
        self.staged.push((input, msg.offset(), Record::read(msg)));
    }

    /// Forgets the round (a rebalance: the records are fetched again).
    pub(crate) fn discard(&mut self) {
        self.staged.clear();
    }

    /// Applies the round to the tasks and fills `batch` with what it releases, in order.
    /// `muted` holds the tasks replaying after a restore, with the offset their outputs are
    /// muted before (nothing of a muted line reaches the sink, so its source is not kept).
    pub(crate) fn apply(&mut self, batch: &mut RawBatch, muted: &BTreeMap<u32, i64>) {
        let mut m = self.handle.lock();
        let Merger { tasks, origins, .. } = &mut *m;
        for (input, offset, record) in self.staged.drain(..) {
            let Some(task) = tasks.get_mut(&input) else {
                continue;
            };
            if let Record::Plain { payload } = &record {
                push_line(batch, input, offset, 1, payload);
                task.changed = true;
                continue;
            }
            task.apply(record, offset, &mut self.released);
            // A released line carries the offset of the record that released it, not its own:
            // what a barrier at offset C covers is what records before C released, and a replay
            // after a restore mutes exactly that (a line held across C is released after it).
            // Its line number is its place among that record's releases.
            let kept = muted.get(&input).is_none_or(|before| offset >= *before);
            let mut sources = Vec::new();
            for (line, released) in (1..).zip(self.released.drain(..)) {
                push_line(batch, input, offset, line, released.payload.as_bytes());
                if kept {
                    sources.push((released.src, released.off));
                }
            }
            if !sources.is_empty() {
                origins.insert((input, offset), sources);
            }
        }
        let held: usize = tasks.values().map(|t| t.held.len()).sum();
        self.metrics.set_merge_held(held as u64);
    }
}

fn push_line(batch: &mut RawBatch, input: u32, offset: i64, line: u64, payload: &[u8]) {
    let start = batch.data.len();
    batch.data.extend_from_slice(payload);
    batch.lines.push(RawLine {
        start,
        end: batch.data.len(),
        origin: Origin {
            input,
            line,
            offset: u64::try_from(offset).unwrap_or(0),
        },
        len: payload.len() as u64,
    });
}

/// The partitions of `topics`, as `topic/partition`, and an error naming a missing topic.
pub(crate) fn partition_names(
    probe: &rdkafka::consumer::BaseConsumer,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<String>, KafkaError> {
    let mut out = Vec::new();
    for t in topics {
        let n = partition_count(probe, t, timeout)?;
        out.extend((0..n).map(|p| format!("{t}/{p}")));
    }
    Ok(out)
}

/// The number of partitions of `topic`.
pub(crate) fn partition_count(
    probe: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<i32, KafkaError> {
    crate::admin::partitions_of(probe, topic, timeout)?
        .map(|n| i32::try_from(n).unwrap_or(i32::MAX))
        .map_err(KafkaError::Config)
}

/// [`partition_count`] of a topic that may have been created a moment ago: until every broker
/// has its metadata it can be reported unknown, without a leader, or without partitions. Asks
/// again until `timeout` rather than fail the run (or route to no partition).
pub(crate) fn created_partition_count(
    probe: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<i32, KafkaError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let result = partition_count(probe, topic, timeout);
        match result {
            Ok(n) if n > 0 => return Ok(n),
            _ if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(_) => {
                return Err(KafkaError::Config(format!(
                    "topic {topic} has no partitions"
                )));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(src: &str, off: i64, at: i64) -> Record {
        Record::Event {
            src: src.to_owned(),
            off,
            at,
            payload: format!("{src}@{off}"),
        }
    }

    fn progress(src: &str, at: i64) -> Record {
        Record::Progress {
            src: src.to_owned(),
            at,
        }
    }

    fn idle(src: &str) -> Record {
        Record::Idle {
            src: src.to_owned(),
            at: i64::MIN,
        }
    }

    /// Feeds `records` to a fresh task over sources a and b; returns the released payloads.
    fn run(records: Vec<Record>) -> Vec<String> {
        let known = vec!["a".to_owned(), "b".to_owned()];
        let mut task = MergeTask::new(&known);
        let mut out = Vec::new();
        for (i, r) in records.into_iter().enumerate() {
            task.apply(r, i as i64, &mut out);
        }
        out.into_iter().map(|r| r.payload).collect()
    }

    // Two interleavings of the same two source streams release the same sequence: what the
    // detector sees does not depend on which ingest instance was faster.
    #[test]
    fn release_order_does_not_depend_on_the_interleaving() {
        let a = [event("a", 0, 10), event("a", 1, 30), progress("a", 50)];
        let b = [event("b", 0, 20), event("b", 1, 20), event("b", 2, 40)];
        let first: Vec<Record> = a.iter().chain(b.iter()).cloned().collect();
        let second: Vec<Record> = vec![
            b[0].clone(),
            a[0].clone(),
            b[1].clone(),
            a[1].clone(),
            b[2].clone(),
            a[2].clone(),
        ];
        let one = run(first);
        let two = run(second);
        assert_eq!(one, two);
        // Below the lowest progress (b at 40): in progress order, ties by source then offset.
        // b@2, at 40 itself, waits: b may still send another event at 40.
        assert_eq!(one, ["a@0", "b@0", "b@1", "a@1"]);
    }

    // The reviewer's case (rk_ties): equal progress values from two sources. Released up to
    // and including the frontier, one interleaving gave b@0, c@0, b@1 and the other b@0, b@1,
    // c@0 — the detector's order depended on which ingest instance was faster.
    #[test]
    fn ties_release_in_one_order_whatever_the_interleaving() {
        let known = vec!["b".to_owned(), "c".to_owned()];
        let feed = |records: Vec<Record>| {
            let mut task = MergeTask::new(&known);
            let mut out = Vec::new();
            for (i, r) in records.into_iter().enumerate() {
                task.apply(r, i as i64, &mut out);
            }
            out.into_iter().map(|r| r.payload).collect::<Vec<_>>()
        };
        // b: two events whose progress is 100 (same millisecond, or the second out of order);
        // c: one event at 100.
        let one = feed(vec![
            event("b", 0, 100),
            event("c", 0, 100),
            event("b", 1, 100),
        ]);
        let two = feed(vec![
            event("b", 0, 100),
            event("b", 1, 100),
            event("c", 0, 100),
        ]);
        assert_eq!(one, two);
        assert!(one.is_empty(), "nothing is below the frontier yet: {one:?}");
        // Once both sources are past 100 (or idle), all three go, in (progress, source,
        // offset) order, in both interleavings.
        let tail = [progress("b", 101), progress("c", 101)];
        let one = feed(
            [event("b", 0, 100), event("c", 0, 100), event("b", 1, 100)]
                .into_iter()
                .chain(tail.clone())
                .collect(),
        );
        let two = feed(
            [event("b", 0, 100), event("b", 1, 100), event("c", 0, 100)]
                .into_iter()
                .chain(tail)
                .collect(),
        );
        assert_eq!(one, ["b@0", "b@1", "c@0"]);
        assert_eq!(one, two);
        let idle = feed(vec![
            event("b", 0, 100),
            event("c", 0, 100),
            event("b", 1, 100),
            idle("b"),
            idle("c"),
        ]);
        assert_eq!(idle, ["b@0", "b@1", "c@0"]);
    }

    #[test]
    fn a_silent_source_holds_back_until_it_is_idle() {
        let out = run(vec![event("a", 0, 10), event("a", 1, 20)]);
        assert!(out.is_empty(), "b has not spoken: {out:?}");
        // b idle: a alone holds the merge back; its event at its own progress (20) waits for
        // it to move past 20 (it may send another event at 20), or to go idle too.
        let out = run(vec![event("a", 0, 10), event("a", 1, 20), idle("b")]);
        assert_eq!(out, ["a@0"]);
        let out = run(vec![
            event("a", 0, 10),
            event("a", 1, 20),
            idle("b"),
            idle("a"),
        ]);
        assert_eq!(out, ["a@0", "a@1"]);
        // b comes back: it holds the merge back again from its own progress on.
        let out = run(vec![
            idle("b"),
            event("a", 0, 10),
            event("b", 0, 15),
            event("a", 1, 20),
        ]);
        assert_eq!(out, ["a@0"]);
        let out = run(vec![
            idle("b"),
            event("a", 0, 10),
            event("b", 0, 15),
            event("a", 1, 20),
            progress("b", 16),
        ]);
        assert_eq!(out, ["a@0", "b@0"]);
    }

    #[test]
    fn snapshot_restores_the_same_merge() {
        let known = vec!["a".to_owned(), "b".to_owned()];
        let mut task = MergeTask::new(&known);
        let mut out = Vec::new();
        for (i, r) in [event("a", 0, 10), event("a", 1, 30), event("b", 0, 20)]
            .into_iter()
            .enumerate()
        {
            task.apply(r, i as i64, &mut out);
        }
        // Below b's 20: a@0 only.
        assert_eq!(out.len(), 1);
        assert_eq!(task.held.len(), 2);
        let bytes = task.snapshot().unwrap();
        let mut restored = MergeTask::restore(&bytes, &known).unwrap();
        assert_eq!(restored.sources, task.sources);
        assert_eq!(restored.held, task.held);
        assert_eq!(restored.snapshot().unwrap(), bytes);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        task.apply(progress("b", 40), 3, &mut x);
        restored.apply(progress("b", 40), 3, &mut y);
        assert_eq!(x, y);
        // Below a's 30: b@0.
        assert_eq!(x.len(), 1);
    }

    // A late event or dead letter of the detect stage names the provider record it came from:
    // each released line's number is its place among the releases of the record at its
    // offset, and the merge keeps the source of every line not muted until the sink passes it.
    #[test]
    fn released_lines_name_their_source_record_until_the_sink_passes_them() {
        let handle = MergeHandle::new(vec!["a".to_owned(), "b".to_owned()]);
        handle.assign(0, None).unwrap();
        handle.assign(1, None).unwrap();
        let mut merge = Merge::new(
            handle.clone(),
            Arc::new(crate::metrics::KafkaMetrics::new()),
        );
        merge.staged = vec![
            (0, 10, event("a", 5, 100)),
            (0, 11, event("a", 6, 150)),
            (0, 12, progress("a", 250)),
            // Releases a@5 and a@6 (below min(250, 300)): lines 1 and 2 at offset 13.
            (0, 13, event("b", 7, 300)),
            (0, 14, progress("a", 400)),
            // Releases b@7 (below min(400, 301)).
            (0, 15, progress("b", 301)),
            // Task 1 replays up to its committed offset 50: muted, no source kept.
            (1, 20, event("a", 8, 100)),
            (1, 21, event("b", 9, 300)),
            (1, 22, progress("a", 350)),
        ];
        let mut batch = RawBatch::default();
        let muted = BTreeMap::from([(1, 50)]);
        merge.apply(&mut batch, &muted);
        let origins: Vec<(u32, u64, u64)> = batch
            .lines
            .iter()
            .map(|l| (l.origin.input, l.origin.offset, l.origin.line))
            .collect();
        assert_eq!(origins, [(0, 13, 1), (0, 13, 2), (0, 15, 1), (1, 22, 1)]);
        assert_eq!(handle.source_of(0, 13, 1), Some(("a".to_owned(), 5)));
        assert_eq!(handle.source_of(0, 13, 2), Some(("a".to_owned(), 6)));
        assert_eq!(handle.source_of(0, 15, 1), Some(("b".to_owned(), 7)));
        assert_eq!(handle.source_of(0, 13, 3), None);
        assert_eq!(handle.source_of(0, 13, 0), None);
        assert_eq!(handle.source_of(1, 22, 1), None, "muted");
        // A checkpoint at 14 passes the lines of offset 13; a hand-over forgets the task.
        handle.forget_before(0, 14);
        assert_eq!(handle.source_of(0, 13, 1), None);
        assert_eq!(handle.source_of(0, 15, 1), Some(("b".to_owned(), 7)));
        handle.release(0);
        assert_eq!(handle.source_of(0, 15, 1), None);
    }

    // The detect stage reads authwatch's own records, each an enriched event that is larger
    // than the provider record it came from: the provider's line limit must not apply there.
    #[test]
    fn the_detect_stage_does_not_apply_the_provider_line_limit() {
        let mut config = Config::default();
        config.input.max_line_bytes = 4096;
        let detect = stage_config(
            &config,
            &Stage::Detect {
                providers: vec!["in".to_owned()],
            },
            "i",
        );
        assert_eq!(detect.input.max_line_bytes, usize::MAX);
        let ingest = stage_config(&config, &Stage::Ingest, "i");
        assert_eq!(ingest.input.max_line_bytes, 4096);
    }

    fn kinds(markers: &[Routed]) -> Vec<String> {
        markers
            .iter()
            .filter(|m| m.partition == 0)
            .map(|m| {
                let mut src = String::new();
                let mut mark = String::new();
                for h in m.headers.iter() {
                    let v = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                    match h.key {
                        H_SRC => src = v.into_owned(),
                        H_MARK => mark = v.into_owned(),
                        _ => {}
                    }
                }
                format!("{src} {mark}")
            })
            .collect()
    }

    // A partition whose records all become dead letters moves its position at every
    // checkpoint but routes nothing: it must still be declared idle, or every detect task
    // waits for its progress forever (the merge held every event).
    #[test]
    fn a_source_that_routes_nothing_is_idle_even_while_its_position_moves() {
        let inputs = Inputs::new(vec![("in".into(), 0), ("in".into(), 1)]);
        let idle_after = Duration::from_millis(40);
        let mut r = Router::new("t".into(), 2, RepartitionKey::Tenant, idle_after, inputs);
        let origin = |offset| Origin {
            input: 0,
            line: 1,
            offset,
        };
        let e = AuthEvent::default();
        let both: BTreeSet<u32> = [0, 1].into();
        let mut seen = Vec::new();
        for step in 0..6_i64 {
            // Source 0 routes an event per checkpoint; source 1 only has rejected records.
            r.event(&e, origin(step as u64), 1_000 + step);
            let positions: BTreeMap<u32, i64> = [(0, step + 1), (1, 10 * (step + 1))].into();
            seen.extend(kinds(&r.markers(&positions, &both)));
            std::thread::sleep(idle_after);
        }
        assert_eq!(
            seen.iter().filter(|k| *k == "in/1 idle").count(),
            1,
            "one idle marker for the source that routes nothing: {seen:?}"
        );
        assert!(!seen.iter().any(|k| k == "in/0 idle"), "{seen:?}");
        assert_eq!(seen.iter().filter(|k| *k == "in/0 progress").count(), 6);
        // Once it routes an event again it gives progress, and can be idle again later.
        r.event(&e, origin(6), 1_006);
        r.event(
            &e,
            Origin {
                input: 1,
                line: 1,
                offset: 70,
            },
            5,
        );
        let positions: BTreeMap<u32, i64> = [(0, 7), (1, 71)].into();
        assert_eq!(
            kinds(&r.markers(&positions, &both)),
            ["in/0 progress", "in/1 progress"]
        );
        std::thread::sleep(idle_after);
        let after = kinds(&r.markers(&positions, &both));
        assert!(after.contains(&"in/1 idle".to_owned()), "{after:?}");
    }

    // During a backlog, a partition reading through rejected records may still have valid
    // events behind them: declared idle, the other sources would move the merge past those
    // events and the detect stage would treat them as late.
    #[test]
    fn a_source_behind_its_end_is_not_idle_while_its_position_moves() {
        let inputs = Inputs::new(vec![("in".into(), 0), ("in".into(), 1)]);
        let idle_after = Duration::from_millis(40);
        let mut r = Router::new("t".into(), 1, RepartitionKey::Tenant, idle_after, inputs);
        let e = AuthEvent::default();
        let only0: BTreeSet<u32> = [0].into();
        let mut seen = Vec::new();
        for step in 0..4_i64 {
            r.event(
                &e,
                Origin {
                    input: 0,
                    line: 1,
                    offset: step as u64,
                },
                1_000 + step,
            );
            let positions: BTreeMap<u32, i64> = [(0, step + 1), (1, 10 * (step + 1))].into();
            seen.extend(kinds(&r.markers(&positions, &only0)));
            std::thread::sleep(idle_after);
        }
        assert!(!seen.iter().any(|k| k == "in/1 idle"), "{seen:?}");
        // Standing still, it is idle as before.
        let still: BTreeMap<u32, i64> = [(0, 4), (1, 40)].into();
        assert_eq!(
            kinds(&r.markers(&still, &only0)),
            ["in/0 idle", "in/1 idle"]
        );
        // Caught up, then behind again: a progress marker makes it hold the merge again.
        let both: BTreeSet<u32> = [0, 1].into();
        let moved: BTreeMap<u32, i64> = [(0, 4), (1, 50)].into();
        assert!(r.markers(&moved, &both).is_empty());
        let behind: BTreeMap<u32, i64> = [(0, 4), (1, 60)].into();
        assert_eq!(kinds(&r.markers(&behind, &only0)), ["in/1 progress"]);
    }

    #[test]
    fn tenants_always_land_in_the_same_partition() {
        let inputs = Inputs::new(vec![("in".into(), 0), ("in".into(), 1)]);
        let mut r = Router::new(
            "t".into(),
            8,
            RepartitionKey::Tenant,
            Duration::from_secs(30),
            inputs,
        );
        let e = AuthEvent {
            tenant: authwatch_event::Text::new("acme"),
            ..AuthEvent::default()
        };
        let origin = |input| Origin {
            input,
            line: 1,
            offset: 5,
        };
        let p0 = r.event(&e, origin(0), 1).partition;
        let p1 = r.event(&e, origin(1), 2).partition;
        assert_eq!(p0, p1);
        assert!((0..8).contains(&p0));
        // Progress markers for both sources, to every partition; none again until progress.
        let positions: BTreeMap<u32, i64> = [(0, 6), (1, 6)].into_iter().collect();
        let none = BTreeSet::new();
        assert_eq!(r.markers(&positions, &none).len(), 16);
        assert!(r.markers(&positions, &none).is_empty());
    }
}
