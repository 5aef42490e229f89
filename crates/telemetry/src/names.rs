//! The metric names: OpenTelemetry instrument names (dotted) and the Prometheus names they are
//! exported as. These are a contract with dashboards and alert rules (docs/TELEMETRY.md); a test
//! scrapes `/metrics` and checks every Prometheus name below.

/// One metric: the instrument name and its Prometheus form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricName {
    /// The OpenTelemetry instrument name.
    pub otel: &'static str,
    /// The Prometheus name (`_total` for counters, unit suffixes) on `/metrics`.
    pub prometheus: &'static str,
}

macro_rules! names {
    ($($(#[$doc:meta])* $id:ident = $otel:literal => $prom:literal;)+) => {
        $($(#[$doc])* pub const $id: MetricName = MetricName { otel: $otel, prometheus: $prom };)+
        /// Every metric authwatch exports.
        pub const ALL: &[MetricName] = &[$($id),+];
    };
}

names! {
    /// Records each stage took in, by `stage`.
    EVENTS_IN = "authwatch.events.in" => "authwatch_events_in_total";
    /// Records each stage passed on, by `stage`.
    EVENTS_OUT = "authwatch.events.out" => "authwatch_events_out_total";
    /// Rejected input, by `reason`.
    DEAD_LETTERS = "authwatch.dead_letters" => "authwatch_dead_letters_total";
    /// Events behind the watermark.
    LATE_EVENTS = "authwatch.late_events" => "authwatch_late_events_total";
    /// Repeated deliveries of an event already seen.
    DUPLICATE_EVENTS = "authwatch.duplicate_events" => "authwatch_duplicate_events_total";
    /// Tenants whose events arrived on more than one input partition of this process.
    SPLIT_TENANTS = "authwatch.split_tenants" => "authwatch_split_tenants";
    /// Live detector state keys, by `rule`.
    RULE_STATE_KEYS = "authwatch.rule.state_keys" => "authwatch_rule_state_keys";
    /// Detector keys evicted at the per-rule limit, by `rule`.
    RULE_EVICTIONS = "authwatch.rule.evictions" => "authwatch_rule_evictions_total";
    /// Alerts, by `category` and `severity`.
    ALERTS = "authwatch.alerts" => "authwatch_alerts_total";
    /// Response actions, by `action` and `result`.
    RESPONSE_ACTIONS = "authwatch.response.actions" => "authwatch_response_actions_total";
    /// Consumer lag in messages, by `topic` and `partition`.
    CONSUMER_LAG = "authwatch.consumer.lag" => "authwatch_consumer_lag";
    /// Time to write a checkpoint.
    CHECKPOINT_DURATION = "authwatch.checkpoint.duration" => "authwatch_checkpoint_duration_seconds";
    /// Time to store state snapshots, by `when` (`before_commit`: it held a commit back;
    /// `after_commit`: stored on the snapshot thread).
    SNAPSHOT_STORE_DURATION = "authwatch.snapshot.store.duration" => "authwatch_snapshot_store_duration_seconds";
    /// Snapshot stores that failed.
    SNAPSHOT_STORE_FAILURES = "authwatch.snapshot.store.failures" => "authwatch_snapshot_store_failures_total";
    /// Records for the audit topic that the broker refused or that were given up on.
    AUDIT_RECORD_FAILURES = "authwatch.audit.record.failures" => "authwatch_audit_record_failures_total";
    /// Failed executions of windowed SQL detections, by `detection`.
    SQL_DETECTION_FAILURES = "authwatch.sql.detection.failures" => "authwatch_sql_detection_failures_total";
    /// Alerts of windowed SQL detections, by `detection`.
    SQL_DETECTION_ALERTS = "authwatch.sql.detection.alerts" => "authwatch_sql_detection_alerts_total";
    /// Result rows of windowed SQL detections absorbed by an open incident, by `detection`.
    SQL_DETECTION_SUPPRESSED = "authwatch.sql.detection.suppressed" => "authwatch_sql_detection_suppressed_total";
    /// Rows windowed SQL detections dropped at `sql.max_buffered_rows`, by `detection`.
    SQL_DETECTION_EVICTED_ROWS = "authwatch.sql.detection.evicted_rows" => "authwatch_sql_detection_evicted_rows_total";
    /// Events a repartitioned detect stage holds back until every source has progressed.
    MERGE_HELD = "authwatch.merge.held" => "authwatch_merge_held";
    /// Time since the last checkpoint.
    CHECKPOINT_AGE = "authwatch.checkpoint.age" => "authwatch_checkpoint_age_seconds";
    /// A batch's time from read to results written.
    BATCH_DURATION = "authwatch.batch.duration" => "authwatch_batch_duration_seconds";
    /// Batches slower than `telemetry.slow_batch`.
    SLOW_BATCHES = "authwatch.batch.slow" => "authwatch_batch_slow_total";
    /// Input records read per second, over the last ten seconds.
    THROUGHPUT = "authwatch.throughput.events" => "authwatch_throughput_events_per_second";
}
