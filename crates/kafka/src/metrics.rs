//! The runtime's own numbers, as plain atomics with getters, for the telemetry exporter
//! (OpenTelemetry/Prometheus) to read and for the periodic tracing log.
//!
//! Pipeline counters (events, dead letters by reason, late events, alerts, watermark) stay in
//! [`authwatch_pipeline::Metrics`]; this adds what only the Kafka runtime knows.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Consumer lag of one partition, from librdkafka's statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// High watermark minus the consumer's position (records); -1 when unknown.
    pub lag: i64,
}

/// Numbers of the Kafka runtime. Shared as `Arc<KafkaMetrics>`; every getter is cheap.
#[derive(Debug, Default)]
pub struct KafkaMetrics {
    assigned: AtomicBool,
    restored: AtomicBool,
    started: AtomicBool,
    records_in: AtomicU64,
    bytes_in: AtomicU64,
    alerts_out: AtomicU64,
    dead_letters_out: AtomicU64,
    outputs_too_large: AtomicU64,
    alerts_trimmed: AtomicU64,
    enriched_out: AtomicU64,
    checkpoints: AtomicU64,
    checkpoint_failures: AtomicU64,
    last_checkpoint_ms: AtomicI64,
    last_checkpoint_duration_us: AtomicU64,
    restarts: AtomicU64,
    throughput: AtomicU64,
    merge_held: AtomicU64,
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// Durations of checkpoints not yet taken by [`KafkaMetrics::take_checkpoint_durations`]
    /// (bounded: an exporter that stops reading loses the oldest, never memory).
    recent_checkpoints: Mutex<std::collections::VecDeque<std::time::Duration>>,
    /// Snapshot stores not yet taken by [`KafkaMetrics::take_snapshot_stores`] (bounded like
    /// `recent_checkpoints`).
    recent_snapshot_stores: Mutex<std::collections::VecDeque<SnapshotStore>>,
    snapshot_store_failures: AtomicU64,
    audit_failures: AtomicU64,
}

/// One store of state snapshots (one or more partitions' files, written together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStore {
    /// From the first write to the last file's `fsync` (or PUT), older files' removal included.
    pub duration: std::time::Duration,
    /// Stored after the commit that references it, on the snapshot thread (`true`), or before
    /// it, holding the commit and the alerts in it back (`false`: a hand-over, a stop, a new
    /// partition's empty state at its assignment, or the first snapshot of a partition that has
    /// none stored).
    pub after_commit: bool,
}

/// Checkpoint durations kept for an exporter between two reads.
const RECENT_CHECKPOINTS: usize = 1024;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl KafkaMetrics {
    /// Fresh numbers.
    pub fn new() -> Self {
        KafkaMetrics::default()
    }

    /// The consumer holds at least one partition (readiness, with [`KafkaMetrics::restored`]).
    pub fn assigned(&self) -> bool {
        self.assigned.load(Ordering::Relaxed)
    }

    /// The state of every assigned partition is restored from its checkpoint (or started fresh
    /// where none was committed).
    pub fn restored(&self) -> bool {
        self.restored.load(Ordering::Relaxed)
    }

    /// Start-up finished: clients created, first assignment handled.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// Ready to serve: assigned and restored.
    pub fn ready(&self) -> bool {
        self.assigned() && self.restored()
    }

    /// Records consumed.
    pub fn records_in(&self) -> u64 {
        self.records_in.load(Ordering::Relaxed)
    }

    /// Record payload bytes consumed.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Alerts produced to the alert topic (including ones in transactions that later aborted).
    pub fn alerts_out(&self) -> u64 {
        self.alerts_out.load(Ordering::Relaxed)
    }

    /// Records produced to the dead-letter topic.
    pub fn dead_letters_out(&self) -> u64 {
        self.dead_letters_out.load(Ordering::Relaxed)
    }

    /// Output records (enriched or routed events, late events, alerts beyond trimming) too
    /// large for the producer's `message.max.bytes`, written to the dead-letter topic instead
    /// with reason `output_too_large` (also counted in [`KafkaMetrics::dead_letters_out`]).
    pub fn outputs_too_large(&self) -> u64 {
        self.outputs_too_large.load(Ordering::Relaxed)
    }

    /// Alerts too large for the producer, written with their longest strings and lists cut
    /// (and a `truncated` header).
    pub fn alerts_trimmed(&self) -> u64 {
        self.alerts_trimmed.load(Ordering::Relaxed)
    }

    /// Events produced to the enriched-events topic.
    pub fn enriched_out(&self) -> u64 {
        self.enriched_out.load(Ordering::Relaxed)
    }

    /// Checkpoints committed.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }

    /// Checkpoints that failed (each followed by a restart from the previous one).
    pub fn checkpoint_failures(&self) -> u64 {
        self.checkpoint_failures.load(Ordering::Relaxed)
    }

    /// Seconds since everything the stage holds was last committed: since the last committed
    /// checkpoint, or, while its consumer holds no partition (more instances than partitions,
    /// or all of them moved to others), since the last checkpoint interval, as nothing is left
    /// to commit; `None` before either.
    pub fn checkpoint_age_seconds(&self) -> Option<f64> {
        match self.last_checkpoint_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some((now_ms() - t).max(0) as f64 / 1000.0),
        }
    }

    /// Duration of the last checkpoint (state files + transaction commit), seconds.
    pub fn checkpoint_duration_seconds(&self) -> f64 {
        self.last_checkpoint_duration_us.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// The durations of the checkpoints finished since the last call, oldest first: an exporter
    /// records each in a histogram.
    pub fn take_checkpoint_durations(&self) -> Vec<std::time::Duration> {
        match self.recent_checkpoints.lock() {
            Ok(mut q) => q.drain(..).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The snapshot stores finished since the last call, oldest first: an exporter records each
    /// in a histogram.
    pub fn take_snapshot_stores(&self) -> Vec<SnapshotStore> {
        match self.recent_snapshot_stores.lock() {
            Ok(mut q) => q.drain(..).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Snapshot stores that failed, before a commit (that checkpoint failed with it) or after
    /// one (the next checkpoint fails; the older snapshot covers the committed offset).
    pub fn snapshot_store_failures(&self) -> u64 {
        self.snapshot_store_failures.load(Ordering::Relaxed)
    }

    /// The runtime's own audit records (started, assigned, revoked, restarting, stopped) that
    /// did not reach the audit topic: not queued, refused by the broker (a record over the
    /// topic's `max.message.bytes`, no permission to write) or given up after the producer's
    /// retries. Each is also logged; none stops the run. (The responder's records are not
    /// counted here: a failed one stops the responder.)
    pub fn audit_records_failed(&self) -> u64 {
        self.audit_failures.load(Ordering::Relaxed)
    }

    /// Restarts from the last checkpoint after a broker or transaction failure.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Records consumed per second over the last report interval.
    pub fn throughput_events_per_second(&self) -> u64 {
        self.throughput.load(Ordering::Relaxed)
    }

    /// The detect stage of a repartitioned run: events read from the internal topic and held
    /// back by the merge until every source has progressed past them (0 otherwise). A count
    /// that keeps growing names a source partition whose ingest is behind.
    pub fn merge_held(&self) -> u64 {
        self.merge_held.load(Ordering::Relaxed)
    }

    /// Consumer lag per assigned partition (from the last statistics report of the run now
    /// going; empty between runs: while a run fails, backs off and restarts, and after the
    /// last one, until the next run's consumer reports again).
    pub fn consumer_lag(&self) -> Vec<PartitionLag> {
        self.lag
            .lock()
            .map(|m| {
                m.iter()
                    .map(|((topic, partition), lag)| PartitionLag {
                        topic: topic.clone(),
                        partition: *partition,
                        lag: *lag,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Total lag over partitions with a known lag.
    pub fn total_lag(&self) -> i64 {
        self.consumer_lag()
            .iter()
            .filter(|l| l.lag >= 0)
            .map(|l| l.lag)
            .sum()
    }

    pub(crate) fn set_assigned(&self, v: bool) {
        self.assigned.store(v, Ordering::Relaxed);
    }
    pub(crate) fn set_restored(&self, v: bool) {
        self.restored.store(v, Ordering::Relaxed);
    }
    pub(crate) fn set_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }
    pub(crate) fn add_records(&self, n: u64, bytes: u64) {
        self.records_in.fetch_add(n, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }
    pub(crate) fn add_alert(&self) {
        self.alerts_out.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_dead_letter(&self) {
        self.dead_letters_out.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_output_too_large(&self) {
        self.outputs_too_large.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_alert_trimmed(&self) {
        self.alerts_trimmed.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_enriched(&self) {
        self.enriched_out.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn checkpoint_done(&self, duration: std::time::Duration) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.last_checkpoint_ms.store(now_ms(), Ordering::Relaxed);
        self.last_checkpoint_duration_us.store(
            u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if let Ok(mut q) = self.recent_checkpoints.lock() {
            if q.len() >= RECENT_CHECKPOINTS {
                q.pop_front();
            }
            q.push_back(duration);
        }
    }
    /// A checkpoint interval passed while the consumer held no partition: nothing is left to
    /// commit, so the age counts from now, as after a commit (the checkpoint counters do not
    /// move). Without it the age of an instance that lost every partition grew for as long as
    /// it held none, and the stale-checkpoint alert fired on a healthy scaled-out group.
    pub(crate) fn nothing_to_commit(&self) {
        self.last_checkpoint_ms.store(now_ms(), Ordering::Relaxed);
    }
    pub(crate) fn snapshot_stored(&self, store: SnapshotStore) {
        if let Ok(mut q) = self.recent_snapshot_stores.lock() {
            if q.len() >= RECENT_CHECKPOINTS {
                q.pop_front();
            }
            q.push_back(store);
        }
    }
    pub(crate) fn snapshot_store_failed(&self) {
        self.snapshot_store_failures.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn checkpoint_failed(&self) {
        self.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn set_merge_held(&self, held: u64) {
        self.merge_held.store(held, Ordering::Relaxed);
    }
    pub(crate) fn set_throughput(&self, per_second: u64) {
        self.throughput.store(per_second, Ordering::Relaxed);
    }
    pub(crate) fn audit_record_failed(&self) {
        self.audit_failures.fetch_add(1, Ordering::Relaxed);
    }
    /// The run's consumer is gone (the run ended, failed or is restarting): the lag it last
    /// reported no longer describes anything, and left in place it would read as current (a
    /// healthy 0 while nothing is consumed). Unknown until the next run's consumer reports.
    pub(crate) fn clear_lag(&self) {
        self.set_lag(Vec::new());
    }
    pub(crate) fn set_lag(&self, lags: Vec<PartitionLag>) {
        if let Ok(mut m) = self.lag.lock() {
            m.clear();
            for l in lags {
                m.insert((l.topic, l.partition), l.lag);
            }
        }
    }
}

/// Reads per-partition consumer lag from a librdkafka statistics JSON document.
pub(crate) fn lag_from_statistics(json: &str) -> Vec<PartitionLag> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Some(topics) = value.get("topics").and_then(|t| t.as_object()) else {
        return out;
    };
    for (topic, t) in topics {
        let Some(partitions) = t.get("partitions").and_then(|p| p.as_object()) else {
            continue;
        };
        for (p, stats) in partitions {
            let Ok(partition) = p.parse::<i32>() else {
                continue;
            };
            // -1 is librdkafka's internal "unassigned" partition.
            if partition < 0 {
                continue;
            }
            let assigned = stats
                .get("fetch_state")
                .and_then(|s| s.as_str())
                .is_some_and(|s| s != "none" && s != "stopped");
            if !assigned {
                continue;
            }
            // Offsets are committed inside producer transactions, which librdkafka's own
            // `consumer_lag` does not see: lag is the last stable offset (read_committed; the
            // high watermark otherwise) minus the position handed to the application.
            let int = |k: &str| stats.get(k).and_then(|v| v.as_i64()).filter(|v| *v >= 0);
            let end = int("ls_offset").or_else(|| int("hi_offset"));
            let lag = match (end, int("app_offset")) {
                (Some(end), Some(pos)) => (end - pos).max(0),
                _ => -1,
            };
            out.push(PartitionLag {
                topic: topic.clone(),
                partition,
                lag,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_read_per_assigned_partition() {
        let json = r#"{"topics":{"in":{"partitions":{
            "0":{"fetch_state":"active","ls_offset":100,"hi_offset":120,"app_offset":93},
            "2":{"fetch_state":"active","hi_offset":5,"app_offset":-1001},
            "1":{"fetch_state":"none","consumer_lag":3},
            "-1":{"fetch_state":"none","consumer_lag":-1}}}}}"#;
        let lags = lag_from_statistics(json);
        assert_eq!(
            lags,
            vec![
                PartitionLag {
                    topic: "in".into(),
                    partition: 0,
                    lag: 7
                },
                PartitionLag {
                    topic: "in".into(),
                    partition: 2,
                    lag: -1
                }
            ]
        );
        assert!(lag_from_statistics("not json").is_empty());
    }

    #[test]
    fn checkpoint_age_is_unknown_before_the_first() {
        let m = KafkaMetrics::new();
        assert_eq!(m.checkpoint_age_seconds(), None);
        m.checkpoint_done(std::time::Duration::from_millis(12));
        assert!(m.checkpoint_age_seconds().is_some_and(|a| a < 5.0));
        assert!((m.checkpoint_duration_seconds() - 0.012).abs() < 1e-9);
        assert!(!m.ready());
        m.set_assigned(true);
        m.set_restored(true);
        assert!(m.ready());
    }

    #[test]
    fn snapshot_stores_are_taken_once_and_bounded() {
        let m = KafkaMetrics::new();
        let store = |ms, after_commit| SnapshotStore {
            duration: std::time::Duration::from_millis(ms),
            after_commit,
        };
        m.snapshot_stored(store(3, false));
        m.snapshot_stored(store(40, true));
        assert_eq!(m.take_snapshot_stores(), [store(3, false), store(40, true)]);
        assert!(m.take_snapshot_stores().is_empty());
        for ms in 0..(RECENT_CHECKPOINTS as u64 + 5) {
            m.snapshot_stored(store(ms, true));
        }
        let kept = m.take_snapshot_stores();
        assert_eq!(kept.len(), RECENT_CHECKPOINTS);
        assert_eq!(kept[0], store(5, true), "the oldest are dropped first");
        m.snapshot_store_failed();
        assert_eq!(m.snapshot_store_failures(), 1);
    }
}
