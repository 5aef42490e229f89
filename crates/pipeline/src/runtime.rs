//! The pipeline runtime: source → normalize+enrich (parallel) → order → detect (shards) → sink,
//! each stage on its own thread(s), joined by bounded channels.
//!
//! Backpressure: every channel holds at most `runtime.channel_batches` batches, so a slow sink
//! stalls detection, which stalls the workers, which stall the source; memory is bounded by
//! configuration, never by input size. Normalize and enrich are chained on the same worker
//! thread (as Flink chains operators): both are stateless per event, and a channel between them
//! would only add a hand-off. Workers finish batches out of order; the order stage restores
//! sequence order before any state is touched, so results do not depend on thread timing. A
//! partitioned source's tasks share nothing, so they run on several detect shards; the sink
//! writes the shards' outputs back in stream order, and a checkpoint after every shard passed it.

use crate::checkpoint::{
    Checkpoint, CheckpointError, Checkpointed, Control, ControlSender, StateParts, Step, Watermark,
};
use crate::config::{Config, LatePolicy};
use crate::deadletter::DeadLetter;
use crate::dedup::Seen;
use crate::enrich::Enricher;
use crate::metrics::{BatchObserver, BatchReport, Metrics, Stage};
use crate::sink::{LateEvent, Sink, SinkError};
use crate::source::{RawBatch, Source, SourceError};
use authwatch_detect::{EngineLimits, RulePack, RuleStats};
use authwatch_enrich::{EnrichError, EventEnricher, ProfileStats, Reloader, UserProfiles};
use authwatch_event::{Alert, AuthEvent, Text};
use authwatch_normalize::mapping::{Mapping, MappingError};
use authwatch_normalize::{Format, Limits, Normalizer, RejectKind, Rejection};
use crossbeam_channel::{Receiver, Sender, bounded};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as possible.
    Max,
    /// `N`× real time, by event time (1.0 = as recorded).
    Factor(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(Speed::Max);
        }
        let n = s.strip_suffix('x').unwrap_or(s);
        // Slower than a millionth of real time, a day of events would take millennia: a typo.
        match n.parse::<f64>() {
            Ok(f) if f.is_finite() && (1e-6..=1e12).contains(&f) => Ok(Speed::Factor(f)),
            _ => Err(format!(
                "speed {s:?} must be \"max\" or a factor from 0.000001x to 1e12x, such as \"60x\""
            )),
        }
    }
}

/// A pipeline that cannot be built from its configuration. Whose fault: the operator's.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The input mapping file is invalid.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// An enrichment file is invalid.
    #[error(transparent)]
    Enrich(#[from] EnrichError),
}

/// A run that could not complete.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An input failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// An output failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A stage thread panicked: a bug in authwatch.
    #[error("internal error: the {0} stage stopped unexpectedly")]
    Internal(&'static str),
    /// Task state could not be snapshotted or restored.
    #[error("input {input}: {source}")]
    Checkpoint {
        /// The input (partition) whose state failed.
        input: String,
        /// What failed.
        #[source]
        source: CheckpointError,
    },
}

/// How [`Pipeline::run_with`] runs, beyond the configuration.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Pace by event time.
    pub speed: Speed,
    /// At the end of input, decide every alert still settling. A recorded file ends for good;
    /// a Kafka run that stops resumes later from its checkpoint, where those alerts are still
    /// pending, so it must not flush.
    pub flush_at_end: bool,
    /// Input format per input index, overriding `input.format`/`input.mapping` (a topic's own
    /// format); `None` or a missing entry uses the configured normalizer.
    pub input_formats: Vec<Option<Format>>,
    /// Normalize and enrich only: every event goes to [`Sink::route`] with its origin and its
    /// partition's progress, with no watermark, late policy, profiles or rules (the first
    /// stage of a repartitioned Kafka run; detection happens behind the internal topic).
    pub route_only: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            speed: Speed::Max,
            flush_at_end: true,
            input_formats: Vec::new(),
            route_only: false,
        }
    }
}

/// What a completed run did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Lines read.
    pub lines: u64,
    /// Bytes read (decompressed).
    pub bytes: u64,
    /// Events that passed normalization.
    pub events: u64,
    /// Rejected lines by reason.
    pub dead_letters: Vec<(RejectKind, u64)>,
    /// Events behind the watermark.
    pub late_events: u64,
    /// Repeated deliveries of an event already seen: counted, not detected on again.
    pub duplicate_events: u64,
    /// Alerts produced.
    pub alerts: u64,
    /// Per-rule counters at the end.
    pub rules: Vec<(String, RuleStats)>,
    /// Per-user profile counters at the end.
    pub profiles: ProfileStats,
    /// Wall time of the run.
    pub elapsed: Duration,
}

struct ParsedBatch {
    seq: u64,
    control: Option<Control>,
    /// Numbers and timings so far, for the batch observer.
    report: BatchReport,
    started: Option<Instant>,
    /// One part per detect shard: the events and rejected lines of the partitions it hosts.
    parts: Vec<Part>,
}

/// What one detect shard gets of a batch.
#[derive(Default)]
struct Part {
    events: Vec<AuthEvent>,
    /// Where each event came from (for the late-event side output).
    origins: Vec<crate::source::Origin>,
    dead: Vec<DeadLetter>,
}

impl Part {
    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.dead.is_empty()
    }
}

/// What a detect shard is handed, in stream order.
enum ShardIn {
    Data(Part),
    Assign {
        input: u32,
        state: Option<StateParts>,
        mute_before: Option<i64>,
    },
    Barrier(ShardBarrier),
}

/// A shard's share of a [`crate::checkpoint::Barrier`].
struct ShardBarrier {
    /// The inputs whose positions the barrier carries.
    covered: Arc<std::collections::BTreeSet<u32>>,
    /// Tasks to drop after it.
    release: Arc<[u32]>,
    snapshot: bool,
    /// The source's own state of this shard's tasks.
    source_parts: Vec<(u32, StateParts)>,
}

/// What the sink writes next, in stream order: the outputs of the named shards for one batch,
/// or a checkpoint once every shard has passed the barrier.
enum Order {
    Data {
        shards: Vec<usize>,
        /// The batch's numbers so far, when someone observes batches.
        report: Option<(BatchReport, Instant)>,
    },
    Barrier(crate::checkpoint::Barrier),
}

/// A shard's numbers for its part of a batch, for the batch observer.
#[derive(Debug, Default, Clone, Copy)]
struct PartReport {
    dead_letters: u64,
    late_events: u64,
    alerts: u64,
    paced: Duration,
    detect: Duration,
}

impl PartReport {
    /// Shards run side by side: counts add up, the batch waited for the slowest.
    fn merge(&mut self, other: PartReport) {
        self.dead_letters += other.dead_letters;
        self.late_events += other.late_events;
        self.alerts += other.alerts;
        self.paced = self.paced.max(other.paced);
        self.detect = self.detect.max(other.detect);
    }
}

/// What a detect shard hands the sink.
#[derive(Default)]
struct SinkBatch {
    events: Vec<AuthEvent>,
    /// Route-only runs: each event with its origin and its partition's progress.
    routed: Vec<(AuthEvent, crate::source::Origin, i64)>,
    alerts: Vec<Alert>,
    dead: Vec<DeadLetter>,
    late: Vec<LateEvent>,
    /// The shard's answer to a barrier: its tasks' snapshots (possibly none).
    snapshots: Option<Vec<(u32, StateParts)>>,
    /// More of the same part follows (a paced replay makes alerts visible before it waits).
    more: bool,
    part: PartReport,
}

impl SinkBatch {
    fn is_empty(&self) -> bool {
        self.snapshots.is_none() && self.records() == 0
    }

    fn records(&self) -> u64 {
        (self.events.len()
            + self.routed.len()
            + self.alerts.len()
            + self.dead.len()
            + self.late.len()) as u64
    }
}

/// State the detect shards share: rarely written, so a lock is cheap.
struct ShardShared {
    /// The first partition each tenant's events arrived on, and the tenants found on a second
    /// one (partitioned detection only).
    tenants: std::sync::Mutex<TenantHomes>,
    /// Each shard's lowest task watermark (`i64::MAX` without tasks).
    lows: Vec<std::sync::atomic::AtomicI64>,
}

#[derive(Default)]
struct TenantHomes {
    home: std::collections::HashMap<Text, u32>,
    split: std::collections::HashSet<Text>,
}

/// A configured pipeline, ready to run over a source.
pub struct Pipeline {
    config: Config,
    pack: RulePack,
    normalizer: Arc<dyn Normalizer>,
    enricher: Arc<dyn Enricher>,
    metrics: Arc<Metrics>,
    observer: Option<Arc<dyn BatchObserver>>,
    /// Makes the detectors that run after the rule engine, one set per task.
    detectors: Vec<Arc<dyn crate::DetectorFactory>>,
    /// Re-reads replaced geo databases while the pipeline lives.
    _reloader: Option<Reloader>,
    /// The largest step forward of the last run's event time (see [`Pipeline::largest_jump`]).
    last_jump: std::sync::Mutex<Option<WatermarkJump>>,
}

/// How far ahead of the stream an event held by `event_time.max_jump` may be and still teach
/// the user profiles.
const PROFILE_HOLD_MS: i64 = 86_400_000;

/// A confirmed step forward of the stream's time longer than this starts a paced replay's
/// clock over (`--speed`): a replay does not wait out a quiet night, nor years after an old
/// first line.
const PACE_GAP_MS: i64 = 3_600_000;

/// A step forward of a task's newest event time by more than `event_time.max_jump` (and the
/// lateness), with the event it stepped to and the late events that would have been on time
/// without it: where to look when most events came late (a wrong timestamp, confirmed by a
/// second one, moves the watermark past everything after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkJump {
    /// The input of the event.
    pub file: String,
    /// Its 1-based line.
    pub line: u64,
    /// The newest event time before it (ms).
    pub from: i64,
    /// Its time, the newest after it (ms).
    pub to: i64,
    /// Late events dated after `from` minus the lateness: on time but for this step.
    pub late_events: u64,
}

/// A task's last big step forward, while late events are counted against it.
#[derive(Debug, Clone, Copy)]
struct Jump {
    from: i64,
    to: i64,
    at: crate::source::Origin,
    late: u64,
}

impl Jump {
    /// Keeps in `worst` whichever of it and `other` made more events late (the earlier on a
    /// tie, so that the result does not depend on anything but the stream).
    fn keep_worst(worst: &mut Option<Jump>, other: Option<Jump>) {
        if let Some(o) = other
            && worst.is_none_or(|w| o.late > w.late)
        {
            *worst = Some(o);
        }
    }
}

impl Pipeline {
    /// A pipeline with the configured input format (or mapping) and enrichment. Fails when a
    /// mapping or an enrichment file exists but cannot be used (a corrupt database, a bad CIDR
    /// list line); a missing database only disables its lookups, with a warning.
    pub fn new(config: Config, pack: RulePack) -> Result<Self, BuildError> {
        let normalizer: Arc<dyn Normalizer> = match &config.input.mapping {
            Some(path) => Arc::new(Mapping::load(path)?),
            None => Arc::from(config.input.format.normalizer()),
        };
        let enricher = Arc::new(EventEnricher::new(&config.enrich)?);
        // Without a reload thread a replaced database is only seen by explicit reloads; a
        // thread that cannot start is worth a warning, not a failed run.
        let reloader = enricher
            .spawn_reloader()
            .inspect_err(|e| tracing::warn!(error = %e, "geo database reload thread did not start"))
            .ok();
        let metrics = Arc::new(Metrics::for_rules(pack.rules()));
        Ok(Pipeline {
            config,
            pack,
            normalizer,
            enricher,
            metrics,
            observer: None,
            detectors: Vec::new(),
            _reloader: reloader,
            last_jump: std::sync::Mutex::new(None),
        })
    }

    /// Reports every batch's numbers and timings to `observer` (metrics, slow-batch traces).
    pub fn with_observer(mut self, observer: Arc<dyn BatchObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Also runs the detectors `factory` makes, after the compiled rules (e.g. windowed SQL, the
    /// live window of the SQL endpoint): each task (input partition) gets its own, checkpointed
    /// with it.
    pub fn with_stream_detectors(mut self, factory: Arc<dyn crate::DetectorFactory>) -> Self {
        self.detectors.push(factory);
        self
    }

    /// Replaces the enricher.
    pub fn with_enricher(mut self, enricher: Arc<dyn Enricher>) -> Self {
        self.enricher = enricher;
        self
    }

    /// Of the last run's big steps forward of a task's newest event time, the one most late
    /// events fell behind (`None` when no late event did). Kept out of [`RunSummary`], which
    /// other crates build.
    pub fn largest_jump(&self) -> Option<WatermarkJump> {
        self.last_jump
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Live counters, for progress reports while [`Pipeline::run`] works.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Runs the source to its end. Returns the summary and the sink (for what it kept).
    pub fn run<S: Sink>(
        &self,
        source: &mut dyn Source,
        sink: S,
        speed: Speed,
    ) -> Result<(RunSummary, S), PipelineError> {
        let options = RunOptions {
            speed,
            ..RunOptions::default()
        };
        self.run_with(source, sink, &options)
    }

    /// [`Pipeline::run`] with options: per-input formats, and no final flush for sources that
    /// resume from a checkpoint.
    pub fn run_with<S: Sink>(
        &self,
        source: &mut dyn Source,
        sink: S,
        options: &RunOptions,
    ) -> Result<(RunSummary, S), PipelineError> {
        let speed = options.speed;
        let started = Instant::now();
        let cap = self.config.runtime.channel_batches;
        let workers = self.config.workers();
        let (raw_tx, raw_rx) = bounded::<RawBatch>(cap);
        let (recycle_tx, recycle_rx) = bounded::<RawBatch>(cap * 2 + workers + 2);
        let (parsed_tx, parsed_rx) = bounded::<ParsedBatch>(cap);
        // Event vectors go back from the detect stage to the workers: a batch of events is a
        // megabyte or two, and allocating it afresh per batch costs page faults and zeroing.
        let names: Vec<String> = source.names().to_vec();
        let forward_events = sink.wants_events();
        let partitioned = source.partitioned();
        // Tasks are independent, so a partitioned source's tasks are spread over shards, each on
        // a thread of its own; one stream is one task, on one shard.
        let shards = if partitioned {
            self.config.detect_threads()
        } else {
            1
        };
        let (vectors_tx, vectors_rx) = bounded::<Vec<AuthEvent>>((cap * 2 + workers + 2) * shards);
        let mut shard_txs = Vec::with_capacity(shards);
        let mut shard_rxs = Vec::with_capacity(shards);
        let mut out_txs = Vec::with_capacity(shards);
        let mut out_rxs = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = bounded::<ShardIn>(cap);
            shard_txs.push(tx);
            shard_rxs.push(rx);
            let (tx, rx) = bounded::<SinkBatch>(cap);
            out_txs.push(tx);
            out_rxs.push(rx);
        }
        // Orders wait for the shards' outputs, which are bounded by their own channels: this one
        // only needs room for what is in flight between them.
        let (order_tx, order_rx) = bounded::<Order>(cap * (shards + 2) + workers);
        let shared = ShardShared {
            tenants: std::sync::Mutex::new(TenantHomes::default()),
            lows: (0..shards)
                .map(|_| std::sync::atomic::AtomicI64::new(i64::MAX))
                .collect(),
        };
        let normalizers: Vec<Option<Arc<dyn Normalizer>>> = options
            .input_formats
            .iter()
            .map(|f| f.map(|f| Arc::from(f.normalizer())))
            .collect();
        let seq = Arc::new(AtomicU64::new(0));
        source.attach(ControlSender {
            tx: raw_tx.clone(),
            seq: Arc::clone(&seq),
        });

        let (source_result, worker_results, shard_results, sink_result) =
            std::thread::scope(|scope| {
                // Named threads: `top -H`, perf and debuggers show which stage is busy.
                let spawn = |name: String| std::thread::Builder::new().name(name);
                let sink_handle = spawn("aw-sink".into())
                    .spawn_scoped(scope, move || self.sink_stage(sink, order_rx, out_rxs));
                let shard_handles: Vec<_> = shard_rxs
                    .into_iter()
                    .zip(out_txs)
                    .enumerate()
                    .map(|(i, (rx, out_tx))| {
                        let names = &names;
                        let shared = &shared;
                        let vectors = vectors_tx.clone();
                        // One shard keeps the old thread name: its thread is the detect stage.
                        let name = if shards == 1 {
                            "aw-detect".to_owned()
                        } else {
                            format!("aw-detect-{i}")
                        };
                        spawn(name).spawn_scoped(scope, move || {
                            let stage = DetectStage {
                                names,
                                shard: i,
                                partitioned,
                                flush_at_end: options.flush_at_end,
                                route_only: options.route_only,
                                forward_events,
                                vectors,
                                shared,
                            };
                            self.shard_stage(stage, rx, out_tx, speed)
                        })
                    })
                    .collect();
                let order_handle = {
                    let vectors = vectors_tx;
                    spawn("aw-order".into()).spawn_scoped(scope, move || {
                        self.order_stage(parsed_rx, shard_txs, order_tx, vectors)
                    })
                };
                let worker_handles: Vec<_> = (0..workers)
                    .map(|i| {
                        let raw_rx = raw_rx.clone();
                        let parsed_tx = parsed_tx.clone();
                        let recycle_tx = recycle_tx.clone();
                        let vectors_rx = vectors_rx.clone();
                        let names = &names;
                        let normalizers = &normalizers;
                        spawn(format!("aw-normalize-{i}")).spawn_scoped(scope, move || {
                            self.worker_stage(
                                WorkerStage {
                                    names,
                                    normalizers,
                                    shards,
                                },
                                raw_rx,
                                parsed_tx,
                                recycle_tx,
                                vectors_rx,
                            )
                        })
                    })
                    .collect();
                drop(parsed_tx);
                drop(raw_rx);
                let source_result = self.source_stage(source, raw_tx, recycle_rx, &seq);
                let worker_results: Vec<_> = worker_handles
                    .into_iter()
                    .map(|h| join_stage(h, "normalize"))
                    .collect();
                let order_result = join_stage(order_handle, "detect");
                let mut shard_results: Vec<_> = shard_handles
                    .into_iter()
                    .map(|h| join_stage(h, "detect"))
                    .collect();
                if let Err(e) = order_result {
                    shard_results.push(Err(e));
                }
                let sink_result = join_stage(sink_handle, "sink");
                (source_result, worker_results, shard_results, sink_result)
            });

        // Report the cause, not its echo: a failed sink makes upstream sends fail too.
        let sink = sink_result??;
        let mut rules: Vec<(String, RuleStats)> = Vec::new();
        let mut profiles = ProfileStats::default();
        let mut worst_jump: Option<Jump> = None;
        for result in shard_results {
            let end = result??;
            add_stats(&mut rules, &mut profiles, end.rules, end.profiles);
            Jump::keep_worst(&mut worst_jump, end.jump);
        }
        for w in worker_results {
            w?;
        }
        source_result?;
        let jump = worst_jump.filter(|j| j.late > 0).map(|j| WatermarkJump {
            file: names
                .get(j.at.input as usize)
                .cloned()
                .unwrap_or_else(|| format!("input {}", j.at.input)),
            line: j.at.line,
            from: j.from,
            to: j.to,
            late_events: j.late,
        });
        *self
            .last_jump
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = jump;

        let m = &self.metrics;
        let summary = RunSummary {
            lines: Metrics::get(&m.lines_read),
            bytes: Metrics::get(&m.bytes_read),
            events: Metrics::get(&m.events),
            dead_letters: m.dead_letters_by_reason(),
            late_events: Metrics::get(&m.late_events),
            duplicate_events: Metrics::get(&m.duplicate_events),
            alerts: Metrics::get(&m.alerts),
            rules,
            profiles,
            elapsed: started.elapsed(),
        };
        Ok((summary, sink))
    }

    /// Reads batches until the source ends or downstream stops.
    fn source_stage(
        &self,
        source: &mut dyn Source,
        raw_tx: Sender<RawBatch>,
        recycle_rx: Receiver<RawBatch>,
        seq: &AtomicU64,
    ) -> Result<(), SourceError> {
        let mut last_bytes = 0;
        let mut spare: Option<RawBatch> = None;
        let stage = self.metrics.stage(Stage::Source);
        loop {
            let mut batch = spare
                .take()
                .or_else(|| recycle_rx.try_recv().ok())
                .unwrap_or_default();
            batch.control = None;
            let started = Instant::now();
            if !source.fill(&mut batch, self.config.runtime.batch_lines)? {
                return Ok(());
            }
            if batch.lines.is_empty() && batch.unreadable.is_empty() {
                // A live source returns empty-handed when nothing arrived in its poll window.
                spare = Some(batch);
                continue;
            }
            batch.seq = seq.fetch_add(1, Ordering::SeqCst);
            let lines = batch.lines.len() as u64;
            Metrics::add(&self.metrics.lines_read, lines);
            let bytes = source.bytes_read();
            Metrics::add(&self.metrics.bytes_read, bytes - last_bytes);
            last_bytes = bytes;
            // Reading is not counted as busy: a consumer waiting for messages is idle, not stuck.
            Metrics::add(&stage.events_in, lines);
            batch.report = BatchReport {
                seq: batch.seq,
                lines,
                read: started.elapsed(),
                ..BatchReport::default()
            };
            batch.started = Some(started);
            if raw_tx.send(batch).is_err() {
                // Downstream stopped; it reports why.
                return Ok(());
            }
            Metrics::add(&stage.events_out, lines);
            stage.beat();
        }
    }

    /// Normalizes and enriches batches.
    fn worker_stage(
        &self,
        stage: WorkerStage<'_>,
        raw_rx: Receiver<RawBatch>,
        parsed_tx: Sender<ParsedBatch>,
        recycle_tx: Sender<RawBatch>,
        vectors_rx: Receiver<Vec<AuthEvent>>,
    ) {
        let WorkerStage {
            names,
            normalizers,
            shards,
        } = stage;
        let input = &self.config.input;
        let skew = input.max_future_skew.millis();
        let limits = Limits {
            max_future_skew_ms: (skew > 0).then_some(skew),
            ..Limits::default()
        };
        let keep = input.dead_letter_raw_bytes;
        let stage = self.metrics.stage(Stage::Normalize);
        for mut batch in raw_rx {
            if let Some(control) = batch.control.take() {
                let parsed = ParsedBatch {
                    seq: batch.seq,
                    control: Some(control),
                    report: BatchReport::default(),
                    started: None,
                    parts: Vec::new(),
                };
                if parsed_tx.send(parsed).is_err() {
                    return;
                }
                continue;
            }
            let working = Instant::now();
            stage.begin(batch.lines.len() as u64);
            let ingest_time = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            // Each line goes to the part of the shard that hosts its partition's task.
            let share = batch.lines.len().div_ceil(shards);
            let mut parts: Vec<Part> = (0..shards)
                .map(|_| {
                    let mut events = vectors_rx.try_recv().unwrap_or_default();
                    events.reserve(share);
                    Part {
                        events,
                        origins: Vec::with_capacity(share),
                        dead: Vec::new(),
                    }
                })
                .collect();
            let mut events_total = 0u64;
            for line in &batch.lines {
                let part = &mut parts[shard_of(line.origin.input, shards)];
                let bytes = batch.bytes(line);
                let name = names
                    .get(line.origin.input as usize)
                    .map_or("?", |s| s.as_str());
                if line.len > input.max_line_bytes as u64 {
                    let rejection = Rejection::new(
                        RejectKind::LineTooLong,
                        format!(
                            "line is {} bytes, over the limit of {} (input.max_line_bytes)",
                            line.len, input.max_line_bytes
                        ),
                    );
                    part.dead.push(DeadLetter::new(
                        name,
                        line.origin,
                        rejection,
                        bytes,
                        line.len,
                        keep,
                    ));
                    continue;
                }
                let normalizer = normalizers
                    .get(line.origin.input as usize)
                    .and_then(Option::as_ref)
                    .unwrap_or(&self.normalizer);
                match normalizer.normalize(bytes, ingest_time, &limits) {
                    Ok(mut event) => {
                        self.enricher.enrich(&mut event);
                        part.events.push(event);
                        part.origins.push(line.origin);
                        events_total += 1;
                    }
                    Err(rejection) => {
                        part.dead.push(DeadLetter::new(
                            name,
                            line.origin,
                            rejection,
                            bytes,
                            line.len,
                            keep,
                        ));
                    }
                }
            }
            for u in &batch.unreadable {
                let name = names
                    .get(u.origin.input as usize)
                    .map_or("?", |s| s.as_str());
                let rejection = Rejection::new(RejectKind::UnreadableInput, u.message.clone());
                // The head of the line read before the failure, as for any rejected line.
                let head = batch.data.get(u.start..u.end).unwrap_or_default();
                parts[shard_of(u.origin.input, shards)]
                    .dead
                    .push(DeadLetter::new(
                        name, u.origin, rejection, head, u.len, keep,
                    ));
            }
            Metrics::add(&self.metrics.events, events_total);
            // Dead letters are counted by the detect stage, which knows which lines replay
            // committed input (their dead letters are not written again).
            let mut report = std::mem::take(&mut batch.report);
            report.events = events_total;
            report.dead_letters = parts.iter().map(|p| p.dead.len() as u64).sum();
            report.normalize = working.elapsed();
            stage.end(events_total);
            let (seq, started) = (batch.seq, batch.started);
            // The buffer goes back to the source; if its queue is full, it is simply dropped.
            let _ = recycle_tx.try_send(batch);
            if parsed_tx
                .send(ParsedBatch {
                    seq,
                    control: None,
                    report,
                    started,
                    parts,
                })
                .is_err()
            {
                return;
            }
        }
    }

    /// Puts batches back in sequence order (workers finish out of order), hands each detect
    /// shard its part of them in that order, and tells the sink in which order to write what
    /// the shards make of them.
    fn order_stage(
        &self,
        parsed_rx: Receiver<ParsedBatch>,
        shard_txs: Vec<Sender<ShardIn>>,
        order_tx: Sender<Order>,
        vectors: Sender<Vec<AuthEvent>>,
    ) {
        let shards = shard_txs.len();
        let mut pending: BTreeMap<u64, ParsedBatch> = BTreeMap::new();
        let mut next_seq = 0;
        // A send fails only when a shard or the sink stopped; they report why.
        for batch in parsed_rx {
            pending.insert(batch.seq, batch);
            while let Some(batch) = pending.remove(&next_seq) {
                next_seq += 1;
                let order = match batch.control {
                    Some(Control::Assign {
                        input,
                        state,
                        mute_before,
                    }) => {
                        let assign = ShardIn::Assign {
                            input,
                            state,
                            mute_before,
                        };
                        if shard_txs[shard_of(input, shards)].send(assign).is_err() {
                            return;
                        }
                        continue;
                    }
                    Some(Control::Barrier(mut barrier)) => {
                        // Every shard passes the barrier; the sink checkpoints once all have.
                        let covered: Arc<std::collections::BTreeSet<u32>> =
                            Arc::new(barrier.positions.iter().map(|(i, _)| *i).collect());
                        let release: Arc<[u32]> = barrier.release.as_slice().into();
                        let mut own: Vec<Vec<(u32, StateParts)>> =
                            (0..shards).map(|_| Vec::new()).collect();
                        for (input, parts) in std::mem::take(&mut barrier.source_parts) {
                            own[shard_of(input, shards)].push((input, parts));
                        }
                        for (tx, source_parts) in shard_txs.iter().zip(own) {
                            let part = ShardBarrier {
                                covered: Arc::clone(&covered),
                                release: Arc::clone(&release),
                                snapshot: barrier.snapshot,
                                source_parts,
                            };
                            if tx.send(ShardIn::Barrier(part)).is_err() {
                                return;
                            }
                        }
                        Order::Barrier(barrier)
                    }
                    None => {
                        let mut to = Vec::with_capacity(shards);
                        for (i, part) in batch.parts.into_iter().enumerate() {
                            if part.is_empty() {
                                // Its vector keeps its capacity for another batch.
                                let _ = vectors.try_send(part.events);
                                continue;
                            }
                            if shard_txs[i].send(ShardIn::Data(part)).is_err() {
                                return;
                            }
                            to.push(i);
                        }
                        let report = batch
                            .started
                            .filter(|_| self.observer.is_some())
                            .map(|started| (batch.report, started));
                        Order::Data { shards: to, report }
                    }
                };
                if order_tx.send(order).is_err() {
                    return;
                }
            }
        }
    }

    /// One detect shard: tracks its tasks' watermarks, handles late and repeated events, and
    /// runs the profiles and rules, on its parts of the batches in stream order. Returns the
    /// rule and profile counters of the tasks still held at the end.
    fn shard_stage(
        &self,
        stage: DetectStage<'_>,
        shard_rx: Receiver<ShardIn>,
        sink_tx: Sender<SinkBatch>,
        speed: Speed,
    ) -> Result<ShardEnd, PipelineError> {
        let DetectStage {
            names,
            shard,
            partitioned,
            flush_at_end,
            route_only,
            forward_events,
            vectors,
            shared,
        } = stage;
        let lateness = self.config.event_time.allowed_lateness.millis();
        let side_output = self.config.event_time.late_events == LatePolicy::SideOutput;
        let max_jump = self.config.event_time.max_jump.millis();
        // Events held ahead of the stream in this run, and of the steps forward of a task's
        // time by more than this, the one most late events fell behind (for the replay's
        // explanation of late events).
        let mut held = 0u64;
        let big_step = max_jump.max(lateness);
        let mut worst_jump: Option<Jump> = None;
        let mut pace: Option<(i64, Instant)> = None;
        let stage = self.metrics.stage(Stage::Detect);
        // Task per input partition (partitioned sources) or one task for the whole stream.
        let mut tasks: BTreeMap<u32, Task> = BTreeMap::new();
        // Partitions handed to another owner: their lines still in flight are dropped, because
        // the new owner reprocesses them from the committed position.
        let mut released: std::collections::BTreeSet<u32> = std::collections::BTreeSet::new();
        if !partitioned {
            tasks.insert(0, self.new_task());
        }
        let input_of: std::collections::HashMap<&str, u32> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u32))
            .collect();
        let input_name = |input: u32| {
            names
                .get(input as usize)
                .cloned()
                .unwrap_or_else(|| format!("input {input}"))
        };
        // What this shard knows of the shared tenant homes, so that the lock is taken once per
        // tenant and partition, not whenever a partition's tenant changes.
        let mut homes: std::collections::HashMap<Text, u32> = Default::default();
        let mut split_here: std::collections::HashSet<Text> = Default::default();
        'parts: for input in shard_rx {
            let part = match input {
                ShardIn::Assign {
                    input,
                    state,
                    mute_before,
                } => {
                    let mut task = self.new_task();
                    if let Some(state) = &state {
                        task.restore(state)
                            .map_err(|source| PipelineError::Checkpoint {
                                input: input_name(input),
                                source,
                            })?;
                        // The state is a snapshot on the store already.
                        task.snapshotted = true;
                        task.dirty = false;
                    }
                    task.mute_before = mute_before.unwrap_or(i64::MIN);
                    released.remove(&input);
                    tasks.insert(input, task);
                    continue;
                }
                ShardIn::Barrier(barrier) => {
                    let mut snapshots = Vec::new();
                    let snapshotting = Instant::now();
                    // The source's own state of a task (a merging source's buffer) joins the
                    // task's snapshots; a task whose source state changed is snapshotted even
                    // if no line of it arrived since. It stays with the task: a barrier that
                    // does not snapshot must not lose it.
                    for (input, parts) in barrier.source_parts {
                        if let Some(task) = tasks.get_mut(&input) {
                            task.source_parts = Some(parts);
                            task.dirty = true;
                        }
                    }
                    // Only tasks whose position the barrier carries: a snapshot is named by
                    // that position (a partition still replaying has none).
                    for (input, task) in tasks.iter_mut().filter(|(i, t)| {
                        t.dirty
                            && (barrier.snapshot || !t.snapshotted)
                            && barrier.covered.contains(i)
                    }) {
                        let mut parts =
                            task.snapshot()
                                .map_err(|source| PipelineError::Checkpoint {
                                    input: input_name(*input),
                                    source,
                                })?;
                        if let Some(extra) = &task.source_parts {
                            parts.parts.extend(extra.parts.clone());
                        }
                        task.dirty = false;
                        task.snapshotted = true;
                        snapshots.push((*input, parts));
                    }
                    if !snapshots.is_empty() {
                        // The shard stalls this long: what a snapshot costs.
                        tracing::debug!(
                            shard,
                            tasks = snapshots.len(),
                            ms = snapshotting.elapsed().as_millis() as u64,
                            "tasks snapshotted"
                        );
                    }
                    if !barrier.release.is_empty() {
                        for input in barrier.release.iter() {
                            tasks.remove(input);
                            released.insert(*input);
                        }
                        // The gauges must not keep what this shard held before: it may get no batch
                        // again for a while.
                        self.publish_shard(shared, shard, &tasks);
                    }
                    let out = SinkBatch {
                        snapshots: Some(snapshots),
                        ..SinkBatch::default()
                    };
                    if sink_tx.send(out).is_err() {
                        break 'parts;
                    }
                    continue;
                }
                ShardIn::Data(part) => part,
            };
            let working = Instant::now();
            let mut paced = Duration::ZERO;
            let received = part.events.len() as u64;
            let mut late = 0u64;
            let mut repeated = 0u64;
            let mut alerts = 0u64;
            stage.begin(received);
            let mut out = SinkBatch {
                dead: part.dead,
                ..SinkBatch::default()
            };
            if partitioned {
                // A rejected line advances its partition's position like an event does, so
                // the task must be checkpointed at that position too.
                out.dead.retain(|d| match input_of.get(d.file.as_str()) {
                    Some(input) if released.contains(input) => false,
                    Some(input) => match tasks.get_mut(input) {
                        Some(task) => {
                            task.dirty = true;
                            // Replayed: this dead letter was committed before.
                            !task.muted(d.offset)
                        }
                        None => true,
                    },
                    None => true,
                });
            }
            // Counted once written: a replay's rejections (muted above) were counted by the
            // run that committed them, and a restore followed by a replay counted them
            // again (78 malformed records read as 156 in `authwatch_dead_letters_total` and
            // the summary while the topic held 78).
            for d in &out.dead {
                Metrics::add(&self.metrics.dead_letters[d.reason.index()], 1);
            }
            let dead_letters = out.dead.len() as u64;
            let mut events = part.events;
            let mut stream = events.drain(..);
            let mut origins = part.origins.into_iter();
            // Drained side by side rather than zipped, so that the next event can be read in
            // place (`as_slice`) while this one is processed.
            while let Some(origin) = origins.next() {
                let Some(mut event) = stream.next() else {
                    break;
                };
                // The next event's profile starts loading now and is in the cache when its
                // turn comes: the lookup among many users otherwise waits on memory. Read
                // in place (a peeking iterator would move every event twice more).
                if self.config.enrich.enabled
                    && let (Some(next), Some(at)) =
                        (stream.as_slice().first(), origins.as_slice().first())
                    && let Some(t) = tasks.get(&if partitioned { at.input } else { 0 })
                {
                    t.profiles.prefetch(next);
                }
                let key = if partitioned { origin.input } else { 0 };
                if released.contains(&key) {
                    continue;
                }
                let task = tasks.entry(key).or_insert_with(|| self.new_task());
                task.dirty = true;
                let muted = task.muted(origin.offset);
                if partitioned && !route_only && task.tenant.as_ref() != Some(&event.tenant) {
                    // Checked when a partition's tenant changes, not per event.
                    task.tenant = Some(event.tenant.clone());
                    if !split_here.contains(&event.tenant) {
                        let home = match homes.get(&event.tenant) {
                            Some(home) => *home,
                            None => {
                                let mut t = shared.lock_tenants();
                                let home = *t.home.entry(event.tenant.clone()).or_insert(key);
                                homes.insert(event.tenant.clone(), home);
                                home
                            }
                        };
                        let newly_split = if home != key {
                            split_here.insert(event.tenant.clone());
                            let mut t = shared.lock_tenants();
                            t.split
                                .insert(event.tenant.clone())
                                .then_some(t.split.len())
                        } else {
                            None
                        };
                        if let Some(split) = newly_split {
                            Metrics::add(&self.metrics.split_tenants, 1);
                            // Named for the first few only: an unkeyed topic splits them all.
                            if split <= 10 {
                                tracing::warn!(
                                    tenant = %event.tenant,
                                    first = %input_name(home),
                                    also = %input_name(key),
                                    "a tenant's events arrive on more than one input \
                                     partition: state is per partition, so detections keyed \
                                     by address, network, tenant or device see only part of \
                                     them; key the provider topics by tenant or enable \
                                     kafka.repartition (docs/KAFKA.md, Scale-out)"
                                );
                            }
                        }
                    }
                }
                if route_only {
                    // The partition's progress: the newest event time so far, which only
                    // grows, so a merge downstream can order by it deterministically.
                    task.wm.max_time = task.wm.max_time.max(event.time);
                    // A replay of committed input was routed already.
                    if !muted {
                        out.routed.push((event, origin, task.wm.max_time));
                    }
                    continue;
                }
                let watermark = task.wm.watermark;
                if event.time < watermark {
                    if muted {
                        continue;
                    }
                    Metrics::add(&self.metrics.late_events, 1);
                    late += 1;
                    // On time but for the task's last big step forward: that step's doing.
                    if let Some(j) = &mut task.jump
                        && event.time >= j.from.saturating_sub(lateness)
                    {
                        j.late += 1;
                    }
                    if side_output {
                        out.late.push(LateEvent {
                            file: input_name(origin.input),
                            line: origin.line,
                            offset: origin.offset,
                            watermark,
                            event,
                        });
                    }
                    continue;
                }
                // A second delivery of one provider record would count twice (five wrong
                // passwords become a brute force). Checked in replay too: the state it
                // rebuilds must be the committed one.
                if task.seen.repeat(&event) {
                    if !muted {
                        Metrics::add(&self.metrics.duplicate_events, 1);
                        repeated += 1;
                    }
                    continue;
                }
                let step = task.wm.observe(event.time, lateness, max_jump);
                match step {
                    Step::Held => {
                        task.held_origin = Some(origin);
                        if !muted {
                            held += 1;
                        }
                        // The first few by name. Not a warning: traffic resuming after a
                        // quiet hour looks the same until its second event; the harm (most
                        // events late) is reported where it shows (the replay's closing
                        // note, the late-event counters).
                        if !muted && held <= 5 {
                            tracing::info!(
                                input = %input_name(origin.input),
                                line = origin.line,
                                time = event.time,
                                ahead_ms = event.time.saturating_sub(task.wm.max_time),
                                "an event far ahead of the stream does not move the \
                                 watermark until a second one confirms the jump \
                                 (event_time.max_jump)"
                            );
                        }
                    }
                    Step::Moved {
                        from,
                        to_held,
                        holds_current,
                    } => {
                        if from != i64::MIN && task.wm.max_time.saturating_sub(from) > big_step {
                            let at = match (to_held, task.held_origin) {
                                (true, Some(o)) => o,
                                _ => origin,
                            };
                            let jump = Jump {
                                from,
                                to: task.wm.max_time,
                                at,
                                late: 0,
                            };
                            Jump::keep_worst(&mut worst_jump, task.jump.replace(jump));
                        }
                        // What is held now: this event, the one held before, or nothing.
                        if holds_current {
                            task.held_origin = Some(origin);
                        } else if task.wm.held.is_none() {
                            task.held_origin = None;
                        }
                    }
                    Step::Stay => {}
                }
                if let Speed::Factor(factor) = speed {
                    // Paced by the stream's time, not each event's: an event held ahead
                    // does not make the replay wait for it, and after a confirmed jump
                    // (an outlier first, or a quiet night) pacing starts over from there.
                    let now = task.wm.max_time;
                    let restart = match (step, pace) {
                        (Step::Moved { from, .. }, _) => {
                            from == i64::MIN || now.saturating_sub(from) > PACE_GAP_MS
                        }
                        (_, None) => now != i64::MIN,
                        _ => false,
                    };
                    if restart {
                        pace = Some((now, Instant::now()));
                    }
                    // Nothing to wait for before the stream has a time.
                    let (t0, w0) = pace.unwrap_or((now, Instant::now()));
                    // Saturates: a tiny factor puts the next event beyond any wait
                    // (the parser bounds it, but a Duration must never panic here).
                    let due = Duration::try_from_secs_f64(
                        (now.saturating_sub(t0).max(0) as f64) / 1000.0 / factor,
                    )
                    .unwrap_or(Duration::MAX);
                    let ahead = due.saturating_sub(w0.elapsed());
                    if ahead > Duration::from_millis(2) {
                        // Make what was decided so far visible before waiting.
                        alerts += out.alerts.len() as u64;
                        if !out.is_empty()
                            && sink_tx
                                .send(SinkBatch {
                                    more: true,
                                    ..std::mem::take(&mut out)
                                })
                                .is_err()
                        {
                            // The sink stopped on an error: not a stage that hangs.
                            stage.abandon();
                            break 'parts;
                        }
                        let sleeping = Instant::now();
                        // In slices, each a heartbeat: waiting for event time is not stuck.
                        let mut left = ahead;
                        while !left.is_zero() {
                            let slice = left.min(Duration::from_millis(500));
                            std::thread::sleep(slice);
                            left -= slice;
                            stage.beat();
                        }
                        paced += sleeping.elapsed();
                    }
                }
                // Profiles are read and taught in stream order, before the rules see the
                // event, so `context` reflects only what came before it. An event held
                // ahead of the stream teaches them only when it is within a day of it (the
                // first of the morning after a quiet night is an ordinary sign-in): the
                // profiles' clock follows what they are taught, and an outlier further
                // ahead would age every profile by as much.
                let ahead = event.time.saturating_sub(task.wm.max_time);
                if self.config.enrich.enabled
                    && (!step.holds_current()
                        || (task.wm.max_time != i64::MIN && ahead <= PROFILE_HOLD_MS))
                {
                    task.profiles.observe(&mut event);
                }
                let before = out.alerts.len();
                task.engine.on_event(&event, &mut out.alerts);
                for d in &mut task.detectors {
                    d.on_event(&event, &mut out.alerts);
                }
                if let Step::Moved { .. } = step {
                    task.seen.expire(task.wm.watermark);
                    if task.engine.on_watermark(task.wm.watermark, &mut out.alerts) {
                        task.profiles.expire(task.wm.watermark);
                    }
                    for d in &mut task.detectors {
                        d.on_watermark(task.wm.watermark, &mut out.alerts);
                    }
                }
                if muted {
                    // Replayed to rebuild the state: these alerts were committed before.
                    out.alerts.truncate(before);
                    continue;
                }
                self.metrics.record_alerts(&out.alerts[before..]);
                if forward_events {
                    out.events.push(event);
                }
            }
            drop(stream);
            // An empty vector keeps its capacity for the next batch; if the queue is full it
            // is simply dropped.
            let _ = vectors.try_send(events);
            self.publish_shard(shared, shard, &tasks);
            stage.end(received - late - repeated);
            out.part = PartReport {
                dead_letters,
                late_events: late,
                alerts: alerts + out.alerts.len() as u64,
                paced,
                detect: working.elapsed().saturating_sub(paced),
            };
            // Always sent, even empty: the sink waits for the end of every part it is told of.
            if sink_tx.send(out).is_err() {
                break 'parts;
            }
        }
        for task in tasks.values_mut() {
            Jump::keep_worst(&mut worst_jump, task.jump.take());
        }
        // End of input: alerts still settling are decided now.
        if flush_at_end {
            let mut out = SinkBatch::default();
            for task in tasks.values_mut() {
                task.engine.flush(&mut out.alerts);
                for d in &mut task.detectors {
                    d.flush(&mut out.alerts);
                }
            }
            self.metrics.record_alerts(&out.alerts);
            self.metrics
                .publish_rule_state_of(shard, tasks.values().map(|t| &t.engine));
            if !out.is_empty() {
                let _ = sink_tx.send(out);
            }
        }
        let (rules, profiles) = task_stats(&tasks);
        Ok(ShardEnd {
            rules,
            profiles,
            jump: worst_jump,
        })
    }

    /// Publishes a shard's part of the watermark and rule-state gauges.
    fn publish_shard(&self, shared: &ShardShared, shard: usize, tasks: &BTreeMap<u32, Task>) {
        // The pipeline's watermark is the slowest task's: no task will alert on anything older.
        let low = tasks.values().map(|t| t.wm.watermark).min();
        shared.lows[shard].store(low.unwrap_or(i64::MAX), Ordering::Relaxed);
        let low = shared
            .lows
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .min()
            .filter(|&l| l != i64::MAX);
        self.metrics
            .watermark
            .store(low.unwrap_or(i64::MIN), Ordering::Relaxed);
        self.metrics
            .publish_rule_state_of(shard, tasks.values().map(|t| &t.engine));
    }

    fn new_task(&self) -> Task {
        Task {
            engine: self.pack.engine(EngineLimits {
                max_keys_per_rule: self.config.detect.max_keys_per_rule,
                sweep_interval_ms: self.config.detect.sweep_interval.millis(),
            }),
            profiles: UserProfiles::new(&self.config.enrich.profiles),
            wm: Watermark::default(),
            seen: Seen::new(self.config.detect.dedup_capacity),
            detectors: self.detectors.iter().flat_map(|f| f.create()).collect(),
            // A task is checkpointed at its first barrier even without events, so that every
            // committed position has a state file at or before it.
            dirty: true,
            snapshotted: false,
            mute_before: i64::MIN,
            source_parts: None,
            tenant: None,
            held_origin: None,
            jump: None,
        }
    }
}

/// The state of one input partition (or of the whole stream).
struct Task {
    engine: authwatch_detect::Engine,
    profiles: UserProfiles,
    wm: Watermark,
    /// Events seen within the allowed lateness, to drop repeated deliveries.
    seen: Seen,
    /// The tenant of the partition's last event, to notice a tenant on two partitions.
    tenant: Option<Text>,
    /// Where the event held ahead of the stream (`wm.held`) came from, to name it if it turns
    /// out to be where the stream jumped; not checkpointed (a report, not state).
    held_origin: Option<crate::source::Origin>,
    /// The task's last big step forward, counting the late events behind it (a report).
    jump: Option<Jump>,
    /// Detectors after the rule engine (windowed SQL), in registration order.
    detectors: Vec<Box<dyn crate::StreamDetector>>,
    /// Changed since its last snapshot.
    dirty: bool,
    /// Has a snapshot on the store (restored from one, or snapshotted since it started).
    snapshotted: bool,
    /// Lines at offsets below this are a replay of committed input: no outputs.
    mute_before: i64,
    /// The source's own state of this task (a merging source's buffer), as of the last
    /// barrier that carried it: part of every snapshot of the task.
    source_parts: Option<StateParts>,
}

impl Task {
    fn muted(&self, offset: u64) -> bool {
        i64::try_from(offset).is_ok_and(|o| o < self.mute_before)
    }

    fn snapshot(&self) -> Result<StateParts, CheckpointError> {
        let mut parts = StateParts::default();
        parts.add(&self.engine)?;
        parts.add(&self.profiles)?;
        parts.add(&self.wm)?;
        parts.add(&self.seen)?;
        for d in &self.detectors {
            parts.add(d.as_ref())?;
        }
        Ok(parts)
    }

    fn restore(&mut self, state: &StateParts) -> Result<(), CheckpointError> {
        let parts: [&mut dyn Checkpointed; 4] = [
            &mut self.engine,
            &mut self.profiles,
            &mut self.wm,
            &mut self.seen,
        ];
        let mut own = Vec::with_capacity(parts.len());
        for part in parts {
            state.restore(part)?;
            own.push(part.name().to_owned());
        }
        for d in &mut self.detectors {
            state.restore(d.as_mut())?;
            own.push(d.name().to_owned());
        }
        // The rest is the source's (a merging source's buffer): it belongs in the task's next
        // snapshot even if the source does not send it again before then.
        let mut rest = state.clone();
        rest.parts.retain(|name, _| !own.contains(name));
        self.source_parts = (!rest.parts.is_empty()).then_some(rest);
        Ok(())
    }
}

/// Rule counters summed over tasks, in rule order, and profile counters summed.
fn task_stats(tasks: &BTreeMap<u32, Task>) -> (Vec<(String, RuleStats)>, ProfileStats) {
    let mut rules: Vec<(String, RuleStats)> = Vec::new();
    let mut profiles = ProfileStats::default();
    for task in tasks.values() {
        let these = task
            .engine
            .stats()
            .into_iter()
            .map(|(id, s)| (id.to_owned(), s));
        add_stats(&mut rules, &mut profiles, these, task.profiles.stats());
    }
    (rules, profiles)
}

/// Adds one task's or shard's counters to `rules` (in rule order) and `profiles`.
fn add_stats(
    rules: &mut Vec<(String, RuleStats)>,
    profiles: &mut ProfileStats,
    these: impl IntoIterator<Item = (String, RuleStats)>,
    p: ProfileStats,
) {
    for (i, (id, s)) in these.into_iter().enumerate() {
        if rules.len() <= i {
            rules.push((id, RuleStats::default()));
        }
        let r = &mut rules[i].1;
        r.events_matched += s.events_matched;
        r.alerts += s.alerts;
        r.suppressed += s.suppressed;
        r.expired += s.expired;
        r.evicted += s.evicted;
        r.keys += s.keys;
    }
    profiles.users += p.users;
    profiles.created += p.created;
    profiles.evictions += p.evictions;
    profiles.expiries += p.expiries;
}

/// What a detect shard ends with.
struct ShardEnd {
    rules: Vec<(String, RuleStats)>,
    profiles: ProfileStats,
    /// Its tasks' step forward that made the most events late.
    jump: Option<Jump>,
}

/// The detect shard that hosts an input partition's task.
fn shard_of(input: u32, shards: usize) -> usize {
    input as usize % shards.max(1)
}

impl ShardShared {
    fn lock_tenants(&self) -> std::sync::MutexGuard<'_, TenantHomes> {
        // The map stays consistent if a shard panicked while holding it (inserts only).
        self.tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Waits for a stage thread. A thread that could not start (its closure, and the channel ends
/// it owned, are dropped, so the other stages wind down) or that panicked is an internal error.
fn join_stage<T>(
    handle: std::io::Result<std::thread::ScopedJoinHandle<'_, T>>,
    stage: &'static str,
) -> Result<T, PipelineError> {
    handle
        .map_err(|_| PipelineError::Internal(stage))?
        .join()
        .map_err(|_| PipelineError::Internal(stage))
}

/// What the detect stage works on.
struct DetectStage<'a> {
    names: &'a [String],
    /// Which shard this is.
    shard: usize,
    /// One task per input partition.
    partitioned: bool,
    /// Decide settling alerts at the end of input.
    flush_at_end: bool,
    /// Only forward events with their origins and progress (see [`RunOptions::route_only`]).
    route_only: bool,
    /// Copy processed events to the sink (it asked for them).
    forward_events: bool,
    /// Where emptied event vectors go back to the workers.
    vectors: Sender<Vec<AuthEvent>>,
    shared: &'a ShardShared,
}

/// What a normalize worker works with.
struct WorkerStage<'a> {
    names: &'a [String],
    /// Per-input normalizers (a topic's own format).
    normalizers: &'a [Option<Arc<dyn Normalizer>>],
    /// Detect shards: a batch is split into one part per shard.
    shards: usize,
}

impl Pipeline {
    /// Writes results in stream order (the orders say which shards' outputs come next, and
    /// where the checkpoints go); reports each finished batch to the observer.
    fn sink_stage<S: Sink>(
        &self,
        mut sink: S,
        orders: Receiver<Order>,
        shards: Vec<Receiver<SinkBatch>>,
    ) -> Result<S, SinkError> {
        let stage = self.metrics.stage(Stage::Sink);
        let write = |sink: &mut S, batch: &SinkBatch| -> Result<(), SinkError> {
            let records = batch.records();
            stage.begin(records);
            if let Err(e) = write_batch(sink, batch) {
                // A run that stopped on an error is not a stage that hangs: `/livez` would name
                // it stuck while the Kafka runtime retries.
                stage.abandon();
                return Err(e);
            }
            stage.end(records);
            Ok(())
        };
        // A shard that stopped (on an error it reports) ends the run: what it owes never comes,
        // and what the others decided after it is not written out of order.
        let mut complete = true;
        'orders: for order in orders {
            match order {
                Order::Data {
                    shards: which,
                    report,
                } => {
                    // Writing only: waiting for a shard is its detect time, not the sink's.
                    let mut writing = Duration::ZERO;
                    let mut part = PartReport::default();
                    for s in which {
                        loop {
                            let Ok(batch) = shards[s].recv() else {
                                complete = false;
                                break 'orders;
                            };
                            let working = Instant::now();
                            write(&mut sink, &batch)?;
                            writing += working.elapsed();
                            part.merge(batch.part);
                            if !batch.more {
                                break;
                            }
                        }
                    }
                    if let (Some((mut report, started)), Some(observer)) = (report, &self.observer)
                    {
                        report.dead_letters = part.dead_letters;
                        report.late_events = part.late_events;
                        report.alerts = part.alerts;
                        report.paced = part.paced;
                        report.detect = part.detect;
                        report.sink = writing;
                        report.total = started.elapsed();
                        observer.batch_done(&report);
                    }
                }
                Order::Barrier(barrier) => {
                    let mut tasks = Vec::new();
                    for rx in &shards {
                        let Ok(batch) = rx.recv() else {
                            complete = false;
                            break 'orders;
                        };
                        tasks.extend(batch.snapshots.unwrap_or_default());
                    }
                    // In partition order, whichever shard held them.
                    tasks.sort_by_key(|(input, _)| *input);
                    sink.checkpoint(Checkpoint { barrier, tasks })?;
                }
            }
        }
        // The end of input: what the shards decide last (alerts still settling).
        if complete {
            for rx in &shards {
                for batch in rx {
                    write(&mut sink, &batch)?;
                }
            }
        }
        sink.flush()?;
        Ok(sink)
    }
}

fn write_batch<S: Sink>(sink: &mut S, batch: &SinkBatch) -> Result<(), SinkError> {
    for e in &batch.events {
        sink.event(e)?;
    }
    for (e, origin, progress) in &batch.routed {
        sink.route(e, *origin, *progress)?;
    }
    for d in &batch.dead {
        sink.dead_letter(d)?;
    }
    for l in &batch.late {
        sink.late_event(l)?;
    }
    for a in &batch.alerts {
        sink.alert(a)?;
    }
    // Alerts must not wait in a buffer for the next batch: latency is part of the contract.
    if !batch.alerts.is_empty() {
        sink.flush()?;
    }
    Ok(())
}
