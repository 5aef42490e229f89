//! The pipeline runtime: source → normalize+enrich (parallel) → detect → sink, each stage on its
//! own thread(s), joined by bounded channels.
//!
//! Backpressure: every channel holds at most `runtime.channel_batches` batches, so a slow sink
//! stalls detection, which stalls the workers, which stall the source; memory is bounded by
//! configuration, never by input size. Normalize and enrich are chained on the same worker
//! thread (as Flink chains operators): both are stateless per event, and a channel between them
//! would only add a hand-off. Workers finish batches out of order; the detect stage restores
//! sequence order before any state is touched, so results do not depend on thread timing.

use crate::config::{Config, LatePolicy};
use crate::deadletter::DeadLetter;
use crate::enrich::Enricher;
use crate::metrics::Metrics;
use crate::sink::{LateEvent, Sink, SinkError};
use crate::source::{RawBatch, Source, SourceError};
use authwatch_detect::{EngineLimits, RulePack, RuleStats};
use authwatch_enrich::{EnrichError, EventEnricher, ProfileStats, Reloader, UserProfiles};
use authwatch_event::{Alert, AuthEvent};
use authwatch_normalize::mapping::{Mapping, MappingError};
use authwatch_normalize::{Limits, Normalizer, RejectKind, Rejection};
use crossbeam_channel::{Receiver, Sender, bounded};
use std::collections::BTreeMap;
use std::sync::Arc;
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
        match n.parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
            _ => Err(format!(
                "speed {s:?} must be \"max\" or a positive factor such as \"60x\""
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
    events: Vec<AuthEvent>,
    /// Where each event came from (for the late-event side output).
    origins: Vec<crate::source::Origin>,
    dead: Vec<DeadLetter>,
}

#[derive(Default)]
struct SinkBatch {
    events: Vec<AuthEvent>,
    alerts: Vec<Alert>,
    dead: Vec<DeadLetter>,
    late: Vec<LateEvent>,
}

impl SinkBatch {
    fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.alerts.is_empty()
            && self.dead.is_empty()
            && self.late.is_empty()
    }
}

/// A configured pipeline, ready to run over a source.
pub struct Pipeline {
    config: Config,
    pack: RulePack,
    normalizer: Arc<dyn Normalizer>,
    enricher: Arc<dyn Enricher>,
    metrics: Arc<Metrics>,
    /// Detectors run after the rule engine (taken for the duration of a run).
    detectors: std::sync::Mutex<Vec<Box<dyn crate::StreamDetector>>>,
    /// Re-reads replaced geo databases while the pipeline lives.
    _reloader: Option<Reloader>,
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
        Ok(Pipeline {
            config,
            pack,
            normalizer,
            enricher,
            metrics: Arc::new(Metrics::new()),
            detectors: std::sync::Mutex::new(Vec::new()),
            _reloader: reloader,
        })
    }

    /// Replaces the enricher.
    pub fn with_enricher(mut self, enricher: Arc<dyn Enricher>) -> Self {
        self.enricher = enricher;
        self
    }

    /// Adds a detector that runs after the compiled rules (e.g. windowed SQL).
    pub fn with_stream_detector(self, detector: Box<dyn crate::StreamDetector>) -> Self {
        if let Ok(mut d) = self.detectors.lock() {
            d.push(detector);
        }
        self
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
        let started = Instant::now();
        let cap = self.config.runtime.channel_batches;
        let workers = self.config.workers();
        let (raw_tx, raw_rx) = bounded::<RawBatch>(cap);
        let (recycle_tx, recycle_rx) = bounded::<RawBatch>(cap * 2 + workers + 2);
        let (parsed_tx, parsed_rx) = bounded::<ParsedBatch>(cap);
        // Event vectors go back from the detect stage to the workers: a batch of events is a
        // megabyte or two, and allocating it afresh per batch costs page faults and zeroing.
        let (vectors_tx, vectors_rx) = bounded::<Vec<AuthEvent>>(cap * 2 + workers + 2);
        let (sink_tx, sink_rx) = bounded::<SinkBatch>(cap);
        let names: Vec<String> = source.names().to_vec();
        let forward_events = sink.wants_events();
        let mut profiles = UserProfiles::new(&self.config.enrich.profiles);
        let mut detectors = self
            .detectors
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        let mut engine = self.pack.engine(EngineLimits {
            max_keys_per_rule: self.config.detect.max_keys_per_rule,
            sweep_interval_ms: self.config.detect.sweep_interval.millis(),
        });

        let (source_result, worker_results, detect_result, sink_result) =
            std::thread::scope(|scope| {
                // Named threads: `top -H`, perf and debuggers show which stage is busy.
                let spawn = |name: String| std::thread::Builder::new().name(name);
                let sink_handle =
                    spawn("aw-sink".into()).spawn_scoped(scope, move || sink_stage(sink, sink_rx));
                let detect_handle = {
                    let names = &names;
                    let engine = &mut engine;
                    let profiles = &mut profiles;
                    let detectors = &mut detectors;
                    spawn("aw-detect".into()).spawn_scoped(scope, move || {
                        let stage = DetectStage {
                            engine,
                            detectors,
                            profiles,
                            names,
                            forward_events,
                            vectors: vectors_tx,
                        };
                        self.detect_stage(stage, parsed_rx, sink_tx, speed)
                    })
                };
                let worker_handles: Vec<_> = (0..workers)
                    .map(|i| {
                        let raw_rx = raw_rx.clone();
                        let parsed_tx = parsed_tx.clone();
                        let recycle_tx = recycle_tx.clone();
                        let vectors_rx = vectors_rx.clone();
                        let names = &names;
                        spawn(format!("aw-normalize-{i}")).spawn_scoped(scope, move || {
                            self.worker_stage(names, raw_rx, parsed_tx, recycle_tx, vectors_rx)
                        })
                    })
                    .collect();
                drop(parsed_tx);
                drop(raw_rx);
                let source_result = self.source_stage(source, raw_tx, recycle_rx);
                let worker_results: Vec<_> = worker_handles
                    .into_iter()
                    .map(|h| join_stage(h, "normalize"))
                    .collect();
                let detect_result = join_stage(detect_handle, "detect");
                let sink_result = join_stage(sink_handle, "sink");
                (source_result, worker_results, detect_result, sink_result)
            });

        if let Ok(mut d) = self.detectors.lock() {
            *d = detectors;
        }
        // Report the cause, not its echo: a failed sink makes upstream sends fail too.
        let sink = sink_result??;
        detect_result?;
        for w in worker_results {
            w?;
        }
        source_result?;

        let m = &self.metrics;
        let summary = RunSummary {
            lines: Metrics::get(&m.lines_read),
            bytes: Metrics::get(&m.bytes_read),
            events: Metrics::get(&m.events),
            dead_letters: m.dead_letters_by_reason(),
            late_events: Metrics::get(&m.late_events),
            alerts: Metrics::get(&m.alerts),
            rules: engine
                .stats()
                .into_iter()
                .map(|(id, s)| (id.to_owned(), s))
                .collect(),
            profiles: profiles.stats(),
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
    ) -> Result<(), SourceError> {
        let mut seq = 0;
        let mut last_bytes = 0;
        loop {
            let mut batch = recycle_rx.try_recv().unwrap_or_default();
            if !source.fill(&mut batch, self.config.runtime.batch_lines)? {
                return Ok(());
            }
            batch.seq = seq;
            seq += 1;
            Metrics::add(&self.metrics.lines_read, batch.lines.len() as u64);
            let bytes = source.bytes_read();
            Metrics::add(&self.metrics.bytes_read, bytes - last_bytes);
            last_bytes = bytes;
            if raw_tx.send(batch).is_err() {
                // Downstream stopped; it reports why.
                return Ok(());
            }
        }
    }

    /// Normalizes and enriches batches.
    fn worker_stage(
        &self,
        names: &[String],
        raw_rx: Receiver<RawBatch>,
        parsed_tx: Sender<ParsedBatch>,
        recycle_tx: Sender<RawBatch>,
        vectors_rx: Receiver<Vec<AuthEvent>>,
    ) {
        let input = &self.config.input;
        let skew = input.max_future_skew.millis();
        let limits = Limits {
            max_future_skew_ms: (skew > 0).then_some(skew),
            ..Limits::default()
        };
        let keep = input.dead_letter_raw_bytes;
        for batch in raw_rx {
            let ingest_time = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            let mut events = vectors_rx.try_recv().unwrap_or_default();
            events.reserve(batch.lines.len());
            let mut origins = Vec::with_capacity(batch.lines.len());
            let mut dead = Vec::new();
            for line in &batch.lines {
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
                    dead.push(DeadLetter::new(
                        name,
                        line.origin,
                        rejection,
                        bytes,
                        line.len,
                        keep,
                    ));
                    continue;
                }
                match self.normalizer.normalize(bytes, ingest_time, &limits) {
                    Ok(mut event) => {
                        self.enricher.enrich(&mut event);
                        events.push(event);
                        origins.push(line.origin);
                    }
                    Err(rejection) => {
                        dead.push(DeadLetter::new(
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
            Metrics::add(&self.metrics.events, events.len() as u64);
            for d in &dead {
                Metrics::add(&self.metrics.dead_letters[d.reason.index()], 1);
            }
            let seq = batch.seq;
            // The buffer goes back to the source; if its queue is full, it is simply dropped.
            let _ = recycle_tx.try_send(batch);
            if parsed_tx
                .send(ParsedBatch {
                    seq,
                    events,
                    origins,
                    dead,
                })
                .is_err()
            {
                return;
            }
        }
    }

    /// Restores batch order, tracks the watermark, handles late events and runs the rules.
    fn detect_stage(
        &self,
        stage: DetectStage<'_>,
        parsed_rx: Receiver<ParsedBatch>,
        sink_tx: Sender<SinkBatch>,
        speed: Speed,
    ) {
        let DetectStage {
            engine,
            detectors,
            profiles,
            names,
            forward_events,
            vectors,
        } = stage;
        let lateness = self.config.event_time.allowed_lateness.millis();
        let side_output = self.config.event_time.late_events == LatePolicy::SideOutput;
        let mut pending: BTreeMap<u64, ParsedBatch> = BTreeMap::new();
        let mut next_seq = 0;
        let mut max_time = i64::MIN;
        let mut watermark = i64::MIN;
        let mut pace: Option<(i64, Instant)> = None;
        for batch in parsed_rx {
            pending.insert(batch.seq, batch);
            while let Some(batch) = pending.remove(&next_seq) {
                next_seq += 1;
                let mut out = SinkBatch {
                    dead: batch.dead,
                    ..SinkBatch::default()
                };
                let mut events = batch.events;
                for (mut event, origin) in events.drain(..).zip(batch.origins) {
                    if let Speed::Factor(factor) = speed {
                        let (t0, w0) = *pace.get_or_insert((event.time, Instant::now()));
                        let due = Duration::from_secs_f64(
                            ((event.time - t0).max(0) as f64) / 1000.0 / factor,
                        );
                        let ahead = due.saturating_sub(w0.elapsed());
                        if ahead > Duration::from_millis(2) {
                            // Make what was decided so far visible before waiting.
                            if !out.is_empty() && sink_tx.send(std::mem::take(&mut out)).is_err() {
                                return;
                            }
                            std::thread::sleep(ahead);
                        }
                    }
                    if event.time < watermark {
                        Metrics::add(&self.metrics.late_events, 1);
                        if side_output {
                            out.late.push(LateEvent {
                                file: names
                                    .get(origin.input as usize)
                                    .cloned()
                                    .unwrap_or_default(),
                                line: origin.line,
                                offset: origin.offset,
                                watermark,
                                event,
                            });
                        }
                        continue;
                    }
                    // Profiles are read and taught in stream order, before the rules see the
                    // event, so `context` reflects only what came before it.
                    if self.config.enrich.enabled {
                        profiles.observe(&mut event);
                    }
                    let before = out.alerts.len();
                    engine.on_event(&event, &mut out.alerts);
                    for d in detectors.iter_mut() {
                        d.on_event(&event, &mut out.alerts);
                    }
                    if event.time > max_time {
                        max_time = event.time;
                        watermark = max_time.saturating_sub(lateness);
                        if engine.on_watermark(watermark, &mut out.alerts) {
                            profiles.expire(watermark);
                        }
                        for d in detectors.iter_mut() {
                            d.on_watermark(watermark, &mut out.alerts);
                        }
                    }
                    Metrics::add(&self.metrics.alerts, (out.alerts.len() - before) as u64);
                    if forward_events {
                        out.events.push(event);
                    }
                }
                // An empty vector keeps its capacity for the next batch; if the queue is full it
                // is simply dropped.
                let _ = vectors.try_send(events);
                self.metrics
                    .watermark
                    .store(watermark, std::sync::atomic::Ordering::Relaxed);
                if !out.is_empty() && sink_tx.send(out).is_err() {
                    return;
                }
            }
        }
        // End of input: alerts still settling are decided now.
        let mut out = SinkBatch::default();
        engine.flush(&mut out.alerts);
        for d in detectors.iter_mut() {
            d.flush(&mut out.alerts);
        }
        Metrics::add(&self.metrics.alerts, out.alerts.len() as u64);
        if !out.is_empty() {
            let _ = sink_tx.send(out);
        }
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
    engine: &'a mut authwatch_detect::Engine,
    /// Registered detectors, after the engine.
    detectors: &'a mut Vec<Box<dyn crate::StreamDetector>>,
    profiles: &'a mut UserProfiles,
    names: &'a [String],
    /// Copy processed events to the sink (it asked for them).
    forward_events: bool,
    /// Where emptied event vectors go back to the workers.
    vectors: Sender<Vec<AuthEvent>>,
}

fn sink_stage<S: Sink>(mut sink: S, sink_rx: Receiver<SinkBatch>) -> Result<S, SinkError> {
    for batch in sink_rx {
        for e in &batch.events {
            sink.event(e)?;
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
    }
    sink.flush()?;
    Ok(sink)
}
