//! Pipeline counters, shared between the stages and whoever reports progress.
//!
//! Plain atomics: every stage bumps its own counters once per batch, so contention is nil; the
//! OpenTelemetry exporter (`authwatch-telemetry`) reads the same struct.

use authwatch_detect::{CompiledRule, Engine};
use authwatch_event::{Alert, Severity};
use authwatch_normalize::RejectKind;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters of one pipeline run.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Lines read by the source.
    pub lines_read: AtomicU64,
    /// Bytes read by the source (decompressed).
    pub bytes_read: AtomicU64,
    /// Lines that became events.
    pub events: AtomicU64,
    /// Rejected lines handed to the sink as dead letters, by [`RejectKind`] index (plus the
    /// sink's own, e.g. `output_too_large`). A line of a muted replay (committed input read
    /// again after a restore) is not counted: its dead letter was written and counted before.
    pub dead_letters: [AtomicU64; RejectKind::ALL.len()],
    /// Events older than the watermark.
    pub late_events: AtomicU64,
    /// Repeated deliveries of an event already seen (not detected on again).
    pub duplicate_events: AtomicU64,
    /// Tenants whose events arrived on more than one input partition in this process: state is
    /// per partition, so detections keyed by address, network, tenant or device saw only part
    /// of each such tenant's events.
    pub split_tenants: AtomicU64,
    /// Alerts produced.
    pub alerts: AtomicU64,
    /// The current watermark (ms; `i64::MIN` before the first event).
    pub watermark: std::sync::atomic::AtomicI64,
    /// Per-stage counters, by [`Stage::index`].
    pub stages: [StageMetrics; 4],
    /// Per-rule counters, in rule order (empty unless built with [`Metrics::for_rules`]).
    pub rules: Vec<RuleMetrics>,
    /// Rule id → position in `rules`.
    rule_index: HashMap<String, usize>,
    /// Live keys and evictions per rule of each detect shard, summed into `rules`.
    shard_rule_state: std::sync::Mutex<Vec<Vec<(u64, u64)>>>,
}

impl Metrics {
    /// Fresh counters.
    pub fn new() -> Self {
        let m = Metrics::default();
        m.watermark.store(i64::MIN, Ordering::Relaxed);
        m
    }

    /// Fresh counters with one [`RuleMetrics`] per rule, in the engine's rule order.
    pub fn for_rules(rules: &[CompiledRule]) -> Self {
        Metrics {
            rule_index: rules
                .iter()
                .enumerate()
                .map(|(i, r)| (r.id.clone(), i))
                .collect(),
            rules: rules
                .iter()
                .map(|r| RuleMetrics {
                    id: r.id.clone(),
                    category: r.category.clone(),
                    severity: r.severity,
                    ..RuleMetrics::default()
                })
                .collect(),
            ..Metrics::new()
        }
    }

    /// The counters of one stage.
    pub fn stage(&self, stage: Stage) -> &StageMetrics {
        &self.stages[stage.index()]
    }

    /// Counts emitted alerts, in all and per rule.
    pub fn record_alerts(&self, alerts: &[Alert]) {
        Metrics::add(&self.alerts, alerts.len() as u64);
        for a in alerts {
            if let Some(&i) = self.rule_index.get(a.rule_id.as_str()) {
                Metrics::add(&self.rules[i].alerts, 1);
            }
        }
    }

    /// Publishes live state keys and evictions per rule, summed over `engines` (one per
    /// partition task, or the one engine of a stream); call after each batch.
    pub fn publish_rule_state<'a>(&self, engines: impl IntoIterator<Item = &'a Engine>) {
        self.publish_rule_state_of(0, engines);
    }

    /// [`Metrics::publish_rule_state`] for the engines of one detect shard: the published
    /// numbers are the sums over every shard's latest.
    pub fn publish_rule_state_of<'a>(
        &self,
        shard: usize,
        engines: impl IntoIterator<Item = &'a Engine>,
    ) {
        let mut mine = vec![(0u64, 0u64); self.rules.len()];
        for engine in engines {
            for (i, (_, keys, evicted)) in engine.state_gauges().enumerate() {
                if let Some(t) = mine.get_mut(i) {
                    t.0 += keys;
                    t.1 += evicted;
                }
            }
        }
        // Per batch, not per event; a shard that panicked left consistent numbers behind.
        let mut all = self
            .shard_rule_state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if all.len() <= shard {
            all.resize(shard + 1, Vec::new());
        }
        all[shard] = mine;
        for (i, m) in self.rules.iter().enumerate() {
            let (keys, evicted) = all
                .iter()
                .filter_map(|s| s.get(i))
                .fold((0, 0), |(k, e), (k2, e2)| (k + k2, e + e2));
            m.keys.store(keys, Ordering::Relaxed);
            m.evictions.store(evicted, Ordering::Relaxed);
        }
    }

    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Total rejected lines.
    pub fn dead_letter_total(&self) -> u64 {
        self.dead_letters.iter().map(Metrics::get).sum()
    }

    /// Rejected lines per reason, non-zero only.
    pub fn dead_letters_by_reason(&self) -> Vec<(RejectKind, u64)> {
        RejectKind::ALL
            .iter()
            .map(|k| (*k, Metrics::get(&self.dead_letters[k.index()])))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// A stage of the pipeline, for per-stage counters and liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Reads raw lines (files, or a Kafka consumer).
    Source,
    /// Normalizes and enriches lines into events (the worker threads).
    Normalize,
    /// Restores order, applies the watermark, updates profiles and runs the rules.
    Detect,
    /// Writes alerts, dead letters, late events (and events, when asked).
    Sink,
}

impl Stage {
    /// Every stage, in data-flow order.
    pub const ALL: [Stage; 4] = [Stage::Source, Stage::Normalize, Stage::Detect, Stage::Sink];

    /// The stage's name as it appears in metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Source => "source",
            Stage::Normalize => "normalize",
            Stage::Detect => "detect",
            Stage::Sink => "sink",
        }
    }

    /// Position in [`Stage::ALL`] and [`Metrics::stages`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What one stage took in, passed on, and whether it is working.
///
/// The units are the stage's records: lines for `source` (in = read, out = handed to the
/// workers) and for `normalize`'s input (its output is events; the difference went to dead
/// letter); events for `detect` (in = received, out = evaluated by the rules; the difference was
/// late); written records (alerts, dead letters, late events, forwarded events) for `sink`.
#[derive(Debug, Default)]
pub struct StageMetrics {
    /// Records the stage took in.
    pub events_in: AtomicU64,
    /// Records the stage passed on.
    pub events_out: AtomicU64,
    /// Batches the stage is working on now. Waiting for input or for room downstream does not
    /// count: only a stage that holds work and makes no progress is stuck.
    pub busy: AtomicU64,
    /// Bumped whenever the stage finishes a batch, or shows that it is alive while it waits on
    /// purpose (pacing by event time).
    pub progress: AtomicU64,
}

impl StageMetrics {
    /// A batch of `n` records was taken in and work on it begins.
    pub fn begin(&self, n: u64) {
        self.events_in.fetch_add(n, Ordering::Relaxed);
        self.busy.fetch_add(1, Ordering::Relaxed);
    }

    /// Work on a batch stopped without passing anything on (the run ends on an error).
    pub fn abandon(&self) {
        self.busy.fetch_sub(1, Ordering::Relaxed);
    }

    /// Work on a batch ended with `n` records passed on.
    pub fn end(&self, n: u64) {
        self.events_out.fetch_add(n, Ordering::Relaxed);
        self.busy.fetch_sub(1, Ordering::Relaxed);
        self.beat();
    }

    /// The stage is alive (for waits that are part of its work).
    pub fn beat(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters of one rule, for the `rule` and `category`/`severity` metric labels.
#[derive(Debug, Default)]
pub struct RuleMetrics {
    /// The rule id.
    pub id: String,
    /// Its detection category.
    pub category: String,
    /// Its severity (every alert of the rule carries it).
    pub severity: Severity,
    /// Live state keys now (updated after every batch).
    pub keys: AtomicU64,
    /// Keys evicted so far because the rule reached `detect.max_keys_per_rule`.
    pub evictions: AtomicU64,
    /// Alerts emitted.
    pub alerts: AtomicU64,
}

/// The numbers of one batch, from the start of its read to its results written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchReport {
    /// The batch's sequence number in the run.
    pub seq: u64,
    /// Lines read.
    pub lines: u64,
    /// Events that passed normalization.
    pub events: u64,
    /// Lines rejected to dead letter (not those of a muted replay, which are not written).
    pub dead_letters: u64,
    /// Events behind the watermark.
    pub late_events: u64,
    /// Alerts decided in this batch.
    pub alerts: u64,
    /// Reading the lines.
    pub read: Duration,
    /// Normalizing and enriching them (on one worker).
    pub normalize: Duration,
    /// Profiles and rules, without pacing: the slowest detect shard's part of the batch (the
    /// shards work on their parts side by side).
    pub detect: Duration,
    /// Waiting for event time (`--speed`); part of `total`, but on purpose.
    pub paced: Duration,
    /// Writing the results (every shard's), without waiting for them.
    pub sink: Duration,
    /// From the start of the read to the results written, queues included.
    pub total: Duration,
}

impl BatchReport {
    /// The batch's wall time without deliberate pacing: what a slow-batch threshold compares.
    pub fn busy_time(&self) -> Duration {
        self.total.saturating_sub(self.paced)
    }
}

/// Told about every batch once its results are written (on the sink thread: keep it quick).
pub trait BatchObserver: Send + Sync {
    /// One batch is done.
    fn batch_done(&self, report: &BatchReport);
}
