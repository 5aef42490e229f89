//! Windowed streaming SQL: each detection is planned once, then evaluated over the Arrow record
//! batches of the windows the watermark closes.
//!
//! Events are staged, converted to Arrow in batches, and each detection keeps only the rows its
//! query can read: the filters DataFusion pushes into the scan of `events` are evaluated once at
//! ingestion (so a detection over failed logons buffers failed logons, not all traffic). When the
//! watermark passes the end of windows, their rows — with `window_start` and `window_end`
//! columns, one copy per window for hopping windows, as Flink's window table functions do — are
//! handed to the planned query in one execution, and result rows become alerts.

use crate::convert::{batch_to_events, event_schema, events_to_batch};
use crate::error::describe_datafusion_error;
use crate::rule::{SqlRule, WindowSpec};
use crate::{QueryError, register_udfs};
use async_trait::async_trait;
use authwatch_event::{
    Alert, AuthEvent, Entity, Lang, Localized, MetricValue, Observed, Text, Timestamp, Window,
    duration_text, time_text,
};
use authwatch_pipeline::{CheckpointError, Checkpointed, DetectorFactory, StreamDetector};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, tree_node::TreeNode, tree_node::TreeNodeRecursion};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{
    Expr, LogicalPlan, TableProviderFilterPushDown, utils::conjunction, utils::disjunction,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::memory::{LazyBatchGenerator, LazyMemoryExec};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Events staged before they are converted to Arrow together.
const STAGE_EVENTS: usize = 4096;
/// Most event ids an alert lists as evidence (as the compiled rules).
const MAX_EVIDENCE: usize = 20;

/// The `events` table of a detection: the rows of the windows being decided.
#[derive(Debug)]
struct WindowTable {
    schema: SchemaRef,
    rows: Arc<Mutex<Vec<RecordBatch>>>,
}

#[async_trait]
impl TableProvider for WindowTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
    fn table_type(&self) -> TableType {
        TableType::Base
    }
    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        // Read when executed, not when planned: the physical plan is made once per detection.
        Ok(Arc::new(
            LazyMemoryExec::try_new(
                Arc::clone(&self.schema),
                vec![WindowRows::start(&self.rows)],
            )?
            .with_projection(projection.cloned()),
        ))
    }
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        // Inexact: the filters stay in the plan, and the detector also applies them at
        // ingestion so that only rows the query can read are buffered.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }
}

/// The rows of the execution under way, as one partition: each execution of the scan starts
/// from a fresh copy of this generator ([`LazyBatchGenerator::reset_state`]), which takes the
/// batches from the shared slot when first polled.
#[derive(Debug)]
struct WindowRows {
    rows: Arc<Mutex<Vec<RecordBatch>>>,
    pending: Option<std::vec::IntoIter<RecordBatch>>,
}

impl WindowRows {
    /// A generator that has not read `rows` yet.
    fn start(rows: &Arc<Mutex<Vec<RecordBatch>>>) -> Arc<RwLock<dyn LazyBatchGenerator>> {
        Arc::new(RwLock::new(WindowRows {
            rows: Arc::clone(rows),
            pending: None,
        }))
    }
}

impl std::fmt::Display for WindowRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("window rows")
    }
}

impl LazyBatchGenerator for WindowRows {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn generate_next_batch(&mut self) -> datafusion::error::Result<Option<RecordBatch>> {
        let rows = &self.rows;
        let pending = self.pending.get_or_insert_with(|| {
            rows.lock()
                .map(|r| r.clone())
                .unwrap_or_default()
                .into_iter()
        });
        Ok(pending.next())
    }

    fn reset_state(&self) -> Arc<RwLock<dyn LazyBatchGenerator>> {
        WindowRows::start(&self.rows)
    }
}

/// Per-detection counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SqlRuleStats {
    /// Rows kept after the ingestion filter.
    pub rows_buffered: u64,
    /// Query executions (each decides every window that closed together).
    pub executions: u64,
    /// Alerts emitted.
    pub alerts: u64,
    /// Result rows absorbed by an open incident of the same key.
    pub suppressed: u64,
    /// Rows dropped because the buffer was full (`sql.max_buffered_rows`).
    pub evicted: u64,
    /// Failures (logged): executions that failed, windows whose rows could not be built, and
    /// result rows that could not become alerts.
    pub errors: u64,
}

/// [`SqlRuleStats`] over every task of one detection (each task's detector counts its own),
/// for metrics and the end of a run.
#[derive(Debug, Default)]
struct Totals {
    rows_buffered: AtomicU64,
    executions: AtomicU64,
    alerts: AtomicU64,
    suppressed: AtomicU64,
    evicted: AtomicU64,
    errors: AtomicU64,
}

impl Totals {
    fn get(&self) -> SqlRuleStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SqlRuleStats {
            rows_buffered: get(&self.rows_buffered),
            executions: get(&self.executions),
            alerts: get(&self.alerts),
            suppressed: get(&self.suppressed),
            evicted: get(&self.evicted),
            errors: get(&self.errors),
        }
    }
}

/// A counter of [`SqlRuleStats`].
#[derive(Debug, Clone, Copy)]
enum Stat {
    RowsBuffered,
    Executions,
    Alerts,
    Suppressed,
    Evicted,
}

/// What bounds the detections' memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlLimits {
    /// Most rows one detection buffers for its open windows (after its filter); beyond, the
    /// oldest are dropped and counted (`sql.max_buffered_rows`).
    pub max_buffered_rows: usize,
    /// Most memory (bytes) one execution of a detection's query may hold in DataFusion's
    /// operators (sorts, joins, aggregations, window functions): each detection has a memory
    /// pool of this size (`sql.max_memory_mib`). An execution that needs more fails, is counted
    /// as a failure of the detection, and the run goes on; nothing spills to disk.
    pub max_memory: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            max_buffered_rows: 1_000_000,
            max_memory: DEFAULT_MAX_MEMORY,
        }
    }
}

/// The default of [`SqlLimits::max_memory`]: 256 MiB per detection.
pub const DEFAULT_MAX_MEMORY: usize = 256 << 20;

/// One buffered chunk of rows of a detection.
struct Chunk {
    batch: RecordBatch,
    times: Vec<i64>,
    /// The detection key of each row (session windows only).
    keys: Vec<Option<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Incident {
    first_seen: i64,
    last_seen: i64,
}

/// A detection planned once, shared by the detectors of every task.
struct PlannedRule {
    rule: SqlRule,
    ctx: SessionContext,
    /// The rows the `events` table serves during one execution.
    rows: Arc<Mutex<Vec<RecordBatch>>>,
    /// Held for the whole of an execution: the tasks' detectors share `rows`.
    executing: Mutex<()>,
    /// The physical plan, made once (from the logical plan optimized once). Every execution
    /// runs a copy with fresh state ([`reset_plan_states`]); planning per window was most of a
    /// detection's cost.
    physical: Arc<dyn ExecutionPlan>,
    /// The scan filters of the plan, evaluated at ingestion.
    prefilter: Option<Arc<dyn PhysicalExpr>>,
    /// Counts over every task, for metrics and the end of a run.
    totals: Totals,
}

impl RuleRun {
    /// Counts a failure of this detection (already logged by the caller).
    fn failed(&mut self) {
        self.failed_by(1);
    }

    /// Counts `n` failures of this detection (already logged by the caller).
    fn failed_by(&mut self, n: u64) {
        self.stats.errors += n;
        self.planned.totals.errors.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` to one of this task's counters and to the detection's totals.
    fn count(&mut self, stat: Stat, n: u64) {
        let (own, total) = match stat {
            Stat::RowsBuffered => (
                &mut self.stats.rows_buffered,
                &self.planned.totals.rows_buffered,
            ),
            Stat::Executions => (&mut self.stats.executions, &self.planned.totals.executions),
            Stat::Alerts => (&mut self.stats.alerts, &self.planned.totals.alerts),
            Stat::Suppressed => (&mut self.stats.suppressed, &self.planned.totals.suppressed),
            Stat::Evicted => (&mut self.stats.evicted, &self.planned.totals.evicted),
        };
        *own += n;
        total.fetch_add(n, Ordering::Relaxed);
    }
}

/// One detection's state in one task.
struct RuleRun {
    rule: SqlRule,
    planned: Arc<PlannedRule>,
    buffer: Vec<Chunk>,
    buffered: usize,
    /// Tumbling and hopping: the end of the next window to decide.
    next_end: Option<i64>,
    /// Session windows: per key, its open sessions (start, last event), ordered.
    sessions: HashMap<String, Vec<(i64, i64)>>,
    /// Session windows: per key, the last time decided of its open session that was decided
    /// in part (see [`session_parts`]; at most one session of a key can be).
    decided: HashMap<String, i64>,
    incidents: HashMap<String, Incident>,
    stats: SqlRuleStats,
}

/// The windowed SQL detections of `sql/`, parsed and planned once; a [`DetectorFactory`] that
/// gives each task of the pipeline its own [`SqlDetector`].
pub struct SqlDetections {
    runtime: Arc<tokio::runtime::Runtime>,
    rules: Vec<Arc<PlannedRule>>,
    window_schema: SchemaRef,
    event_columns: usize,
    max_buffered_rows: usize,
}

/// The windowed SQL detections' state in one task, as a [`StreamDetector`] of the pipeline.
pub struct SqlDetector {
    runtime: Arc<tokio::runtime::Runtime>,
    rules: Vec<RuleRun>,
    staged: Vec<AuthEvent>,
    window_schema: SchemaRef,
    event_columns: usize,
    max_buffered_rows: usize,
    /// No window can close before the watermark reaches this.
    next_due: i64,
}

fn rule_error(rule: &SqlRule, e: impl std::fmt::Display) -> QueryError {
    QueryError::Rule {
        path: rule.path.clone(),
        message: e.to_string(),
    }
}

/// The canonical text of a key part, as the compiled rules write it in `alert_id`.
fn key_part(field: &str, e: &AuthEvent) -> Option<String> {
    let text = |t: &Text| (!t.is_empty()).then(|| t.to_string());
    match field {
        "user" => text(&e.user.name).or_else(|| text(&e.user.id)),
        "ip" => e.src.ip.map(|ip| ip.to_string()),
        "tenant" => text(&e.tenant),
        "asn" => e.src.asn.map(|n| n.to_string()),
        "device" => text(&e.device.fingerprint),
        "country" => e.src.geo.as_ref().and_then(|g| text(&g.country)),
        "app" => text(&e.app),
        _ => None,
    }
}

/// The event's key text, as the compiled rules write it ([`authwatch_event::entity_key_text`]).
fn canonical_key(fields: &[String], e: &AuthEvent) -> Option<String> {
    let parts: Option<Vec<(&str, String)>> = fields
        .iter()
        .map(|f| key_part(f, e).map(|v| (f.as_str(), v)))
        .collect();
    parts.map(authwatch_event::entity_key_text)
}

impl SqlDetections {
    /// Plans every detection once, with the default memory pool
    /// ([`SqlDetections::with_limits`]).
    pub fn new(rules: Vec<SqlRule>, max_buffered_rows: usize) -> Result<SqlDetections, QueryError> {
        SqlDetections::with_limits(
            rules,
            SqlLimits {
                max_buffered_rows,
                ..SqlLimits::default()
            },
        )
    }

    /// Plans every detection once, each in a session with its own memory pool of
    /// `limits.max_memory`. Fails, naming the file and the position in it (line and column
    /// from the top of the `.sql` file), when a query does not plan against the `events`
    /// table or lacks the result columns an alert needs (the key columns, `first_seen`,
    /// `last_seen`).
    pub fn with_limits(
        rules: Vec<SqlRule>,
        limits: SqlLimits,
    ) -> Result<SqlDetections, QueryError> {
        // An empty pool would fail every execution: a mistake, not a limit.
        if limits.max_memory == 0 {
            return Err(QueryError::Config(
                "sql.max_memory_mib must be positive".to_owned(),
            ));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| QueryError::Sql(format!("cannot start the query runtime: {e}")))?;
        let events = event_schema()?;
        let event_columns = events.fields().len();
        let mut fields: Vec<Arc<Field>> = events.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new("window_start", DataType::Int64, false)));
        fields.push(Arc::new(Field::new("window_end", DataType::Int64, false)));
        let window_schema = Arc::new(Schema::new(fields));
        let mut runs = Vec::with_capacity(rules.len());
        for rule in rules {
            let run =
                runtime.block_on(plan_rule(rule, &window_schema, &events, limits.max_memory))?;
            runs.push(Arc::new(run));
        }
        Ok(SqlDetections {
            runtime: Arc::new(runtime),
            rules: runs,
            window_schema,
            event_columns,
            max_buffered_rows: limits.max_buffered_rows.max(1),
        })
    }

    /// The rule ids, in file order.
    pub fn rule_ids(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.rule.id.as_str()).collect()
    }

    /// Each detection's failures so far, over every task (logged as they happen): failed
    /// executions, and result rows that could not become alerts (unusable times, or a session
    /// detection's row that matches no session). `(id, count)` for every detection, 0 for
    /// those that never failed.
    pub fn failures(&self) -> Vec<(String, u64)> {
        self.rules
            .iter()
            .map(|r| {
                let n = r.totals.errors.load(Ordering::Relaxed);
                (r.rule.id.clone(), n)
            })
            .collect()
    }

    /// Each detection's counters so far, summed over every task (alerts, result rows
    /// suppressed, rows evicted, failures, …): `(id, counters)` for every detection, in file
    /// order, zeros included.
    pub fn stats(&self) -> Vec<(String, SqlRuleStats)> {
        self.rules
            .iter()
            .map(|r| (r.rule.id.clone(), r.totals.get()))
            .collect()
    }

    /// A detector with empty windows.
    pub fn detector(&self) -> SqlDetector {
        SqlDetector {
            runtime: Arc::clone(&self.runtime),
            rules: self
                .rules
                .iter()
                .map(|p| RuleRun {
                    rule: p.rule.clone(),
                    planned: Arc::clone(p),
                    buffer: Vec::new(),
                    buffered: 0,
                    next_end: None,
                    sessions: HashMap::new(),
                    decided: HashMap::new(),
                    incidents: HashMap::new(),
                    stats: SqlRuleStats::default(),
                })
                .collect(),
            staged: Vec::new(),
            window_schema: Arc::clone(&self.window_schema),
            event_columns: self.event_columns,
            max_buffered_rows: self.max_buffered_rows,
            next_due: i64::MAX,
        }
    }
}

impl DetectorFactory for SqlDetections {
    fn create(&self) -> Vec<Box<dyn StreamDetector>> {
        vec![Box::new(self.detector())]
    }
}

impl SqlDetector {
    /// Per-detection counters.
    pub fn stats(&self) -> Vec<(String, SqlRuleStats)> {
        self.rules
            .iter()
            .map(|r| (r.rule.id.clone(), r.stats.clone()))
            .collect()
    }

    /// Converts staged events to Arrow and gives each detection the rows its filter keeps.
    fn ingest(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        let staged = std::mem::take(&mut self.staged);
        let batch = match events_to_batch(&staged) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "sql: events could not be converted to Arrow; skipped");
                for r in &mut self.rules {
                    r.failed();
                }
                return;
            }
        };
        for r in &mut self.rules {
            let mask = match &r.planned.prefilter {
                Some(f) => match f
                    .evaluate(&batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
                {
                    Ok(a) => a.as_boolean_opt().cloned(),
                    Err(e) => {
                        tracing::warn!(rule = %r.rule.id, error = %e, "sql: ingestion filter failed; keeping every row");
                        None
                    }
                },
                None => None,
            };
            let keep: Vec<usize> = (0..staged.len())
                .filter(|&i| mask.as_ref().is_none_or(|m| m.is_valid(i) && m.value(i)))
                .collect();
            let keys: Vec<Option<String>> = match r.rule.window {
                WindowSpec::Session { .. } => keep
                    .iter()
                    .map(|&i| canonical_key(&r.rule.key, &staged[i]))
                    .collect(),
                _ => Vec::new(),
            };
            // Rows without the key cannot be in a session (as the compiled rules skip them).
            let (keep, keys): (Vec<usize>, Vec<Option<String>>) = match r.rule.window {
                WindowSpec::Session { .. } => keep
                    .into_iter()
                    .zip(keys)
                    .filter(|(_, k)| k.is_some())
                    .unzip(),
                _ => (keep, Vec::new()),
            };
            if keep.is_empty() {
                continue;
            }
            let idx = UInt32Array::from_iter_values(keep.iter().map(|&i| i as u32));
            let columns: Result<Vec<ArrayRef>, _> = batch
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), &idx, None))
                .collect();
            let Ok(chunk) = columns.and_then(|c| RecordBatch::try_new(batch.schema(), c)) else {
                r.failed();
                continue;
            };
            let times: Vec<i64> = keep.iter().map(|&i| staged[i].time).collect();
            if let WindowSpec::Session { gap_ms, .. } = r.rule.window {
                for (t, k) in times.iter().zip(&keys) {
                    if let Some(k) = k {
                        add_to_session(r.sessions.entry(k.clone()).or_default(), *t, gap_ms);
                    }
                }
            } else if let Some(&t) = times.iter().min() {
                // The first window still to decide may be earlier than the one the first rows
                // opened: events come out of order within the allowed lateness. It is never
                // one already decided: events are never behind the watermark, and windows are
                // decided only once the watermark passes their end.
                let end = window_end_after(t, slide_ms(&r.rule.window));
                r.next_end = Some(r.next_end.map_or(end, |n| n.min(end)));
            }
            r.count(Stat::RowsBuffered, keep.len() as u64);
            r.buffered += keep.len();
            r.buffer.push(Chunk {
                batch: chunk,
                times,
                keys,
            });
            if r.buffered > self.max_buffered_rows {
                evict_oldest(r, self.max_buffered_rows);
            }
        }
        self.recompute_due();
    }

    fn recompute_due(&mut self) {
        let staged_min = self.staged.iter().map(|e| e.time).min();
        let mut due = i64::MAX;
        for r in &self.rules {
            due = due.min(rule_due(r));
            if let Some(t) = staged_min {
                due = due.min(first_due(&r.rule.window, t));
            }
        }
        self.next_due = due;
    }

    /// Decides every window that ends at or before `watermark`.
    fn advance(&mut self, watermark: i64, out: &mut Vec<Alert>) {
        self.ingest();
        for i in 0..self.rules.len() {
            if rule_due(&self.rules[i]) <= watermark {
                self.decide(i, watermark, out);
            }
            forget_incidents(&mut self.rules[i], watermark);
        }
        self.recompute_due();
    }

    fn decide(&mut self, i: usize, watermark: i64, out: &mut Vec<Alert>) {
        let window_schema = Arc::clone(&self.window_schema);
        let event_columns = self.event_columns;
        let r = &mut self.rules[i];
        // Which rows go to which window: (chunk, row, window start, window end).
        let mut assigned: Vec<(usize, usize, i64, i64)> = Vec::new();
        // Session windows: the parts decided now, and the index in `parts` of each assigned
        // row's part.
        let mut parts: Vec<Part> = Vec::new();
        let mut assigned_part: Vec<usize> = Vec::new();
        match r.rule.window.clone() {
            WindowSpec::Tumbling { size_ms } | WindowSpec::Hopping { size_ms, .. } => {
                let slide = slide_ms(&r.rule.window);
                let Some(first_end) = r.next_end else {
                    return;
                };
                // The last window end the watermark has passed.
                let last_end = watermark - (watermark - first_end).rem_euclid(slide);
                if last_end < first_end {
                    return;
                }
                for (c, chunk) in r.buffer.iter().enumerate() {
                    for (j, &t) in chunk.times.iter().enumerate() {
                        // Window ends e (aligned to slide) with e - size <= t < e.
                        let mut e = t - t.rem_euclid(slide) + slide;
                        while e - size_ms <= t && e <= last_end {
                            if e >= first_end {
                                assigned.push((c, j, e - size_ms, e));
                            }
                            e += slide;
                        }
                    }
                }
                r.next_end = Some(last_end.saturating_add(slide));
            }
            WindowSpec::Session {
                gap_ms,
                max_span_ms,
            } => {
                // No part to decide still goes on to forget rows of sessions that closed.
                parts = session_parts(r, watermark, gap_ms, max_span_ms);
                let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
                for (n, p) in parts.iter().enumerate() {
                    by_key.entry(p.key.clone()).or_default().push(n);
                }
                for (c, chunk) in r.buffer.iter().enumerate() {
                    for (j, (&t, k)) in chunk.times.iter().zip(&chunk.keys).enumerate() {
                        let Some(list) = k.as_deref().and_then(|k| by_key.get(k)) else {
                            continue;
                        };
                        if let Some(&n) = list
                            .iter()
                            .find(|&&n| parts[n].from <= t && t <= parts[n].last)
                        {
                            assigned.push((c, j, parts[n].start, parts[n].end));
                            assigned_part.push(n);
                            if t >= parts[n].start {
                                let p = &mut parts[n];
                                p.last_row = Some(p.last_row.map_or(t, |l| l.max(t)));
                            }
                        }
                    }
                }
            }
        }
        let rows = if assigned.is_empty() {
            None
        } else {
            match window_rows(&r.buffer, &assigned, &window_schema) {
                Ok(b) => Some(b),
                Err(e) => {
                    r.failed();
                    tracing::error!(
                        rule = %r.rule.id,
                        windows = %describe_windows(&assigned, &parts, &assigned_part),
                        error = %e,
                        "sql: window rows could not be built"
                    );
                    None
                }
            }
        };
        let results = match &rows {
            Some(rows) => {
                r.count(Stat::Executions, 1);
                let planned = Arc::clone(&r.planned);
                let executing = planned.executing.lock();
                let result = self.runtime.block_on(execute(&planned, rows.clone()));
                drop(executing);
                match result {
                    Ok(b) => b,
                    Err(e) => {
                        r.failed();
                        let windows = describe_windows(&assigned, &parts, &assigned_part);
                        if matches!(e, QueryError::ResourcesExhausted(_)) {
                            tracing::error!(
                                rule = %r.rule.id,
                                windows = %windows,
                                error = %e,
                                "sql: the detection query needed more memory than the \
                                 detection's pool (sql.max_memory_mib) on these windows; they \
                                 are not decided"
                            );
                        } else {
                            tracing::error!(
                                rule = %r.rule.id,
                                windows = %windows,
                                error = %e,
                                "sql: detection query failed on a window"
                            );
                        }
                        Vec::new()
                    }
                }
            }
            None => Vec::new(),
        };
        let mut found = match collect_rows(&r.rule, &results) {
            Ok((found, bad)) => {
                // The other rows of the window still become alerts.
                if let Some(e) = bad {
                    r.failed();
                    tracing::error!(rule = %r.rule.id, error = %e, "sql: result rows skipped");
                }
                found
            }
            Err(e) => {
                r.failed();
                tracing::error!(rule = %r.rule.id, error = %e, "sql: result rows unusable");
                Vec::new()
            }
        };
        // The earliest decision of an incident is its alert; later ones are absorbed.
        found.sort_by(|a, b| {
            (a.last_seen, a.first_seen, &a.key, &a.event_id).cmp(&(
                b.last_seen,
                b.first_seen,
                &b.key,
                &b.event_id,
            ))
        });
        let suppress = r.rule.suppress_ms;
        if let WindowSpec::Session { gap_ms, .. } = r.rule.window {
            // Which part of a session each row is about.
            let index = SessionIndex {
                parts: &parts,
                rows: rows.as_ref(),
                assigned_part: &assigned_part,
                by_event: std::cell::OnceCell::new(),
            };
            let part_of: Vec<Option<usize>> = found.iter().map(|f| index.part_of(f)).collect();
            let unmatched = part_of.iter().filter(|m| m.is_none()).count();
            if unmatched > 0 {
                // Each such row is a finding lost: one failure per row.
                r.failed_by(unmatched as u64);
                let first = found
                    .iter()
                    .zip(&part_of)
                    .find(|(_, m)| m.is_none())
                    .map(|(f, _)| f.key.clone())
                    .unwrap_or_default();
                tracing::error!(
                    rule = %r.rule.id,
                    rows = unmatched,
                    first_key = %first,
                    "sql: result rows match no session that closed; they are skipped. The key \
                     columns must hold the key as the engine computes it (see docs/SQL.md), or \
                     the row must return its window_start, event_id or evidence"
                );
            }
            // An incident spans whole sessions: a session that fired extends it to its last
            // event, as a compiled rule's condition, once it holds in a session, holds on each
            // later event of it. A session is absorbed when it first fires (its deciding row)
            // within `suppress` of the incident: a compiled incident ends `suppress` after its
            // condition last held, however much activity below the thresholds goes on, so a
            // session without a finding neither extends it nor keeps it open. A long session's
            // parts follow each other, so its incident absorbs every later part.
            for (n, p) in parts.iter().enumerate() {
                // A row whose deciding time is before its part's window_start is about the
                // context rows carried from the part before, which that part decided with all
                // of their own context: not decided again.
                let rows_here: Vec<_> = found
                    .iter()
                    .zip(&part_of)
                    .filter(|(f, m)| **m == Some(n) && f.last_seen >= p.start)
                    .map(|(f, _)| f)
                    .collect();
                let Some(last_row) = p.last_row else {
                    continue;
                };
                let incident = r.incidents.get(&p.key);
                // A later part of a session that the incident already reached is the same
                // session: absorbed whatever `suppress` is.
                let same_session = incident.is_some_and(|inc| {
                    p.start > p.session_start && inc.last_seen >= p.session_start
                });
                let open = same_session
                    || incident.zip(rows_here.first()).is_some_and(|(inc, f)| {
                        f.last_seen <= inc.last_seen.saturating_add(suppress)
                    });
                if open {
                    r.count(Stat::Suppressed, rows_here.len() as u64);
                    if let Some(inc) = r.incidents.get_mut(&p.key) {
                        inc.last_seen = inc.last_seen.max(last_row);
                    }
                    continue;
                }
                if let Some((f, rest)) = rows_here.split_first() {
                    r.count(Stat::Suppressed, rest.len() as u64);
                    r.incidents.insert(
                        p.key.clone(),
                        Incident {
                            first_seen: f.first_seen,
                            last_seen: last_row,
                        },
                    );
                    r.count(Stat::Alerts, 1);
                    out.push(build_alert(&r.rule, f, rows.as_ref(), event_columns));
                }
            }
            // Forget the rows no part still to decide can read: those of sessions that
            // closed, and those more than `gap` before the part still to decide of a session
            // decided in part.
            let sessions = std::mem::take(&mut r.sessions);
            let decided = std::mem::take(&mut r.decided);
            retain_rows(r, |t, k| {
                k.is_some_and(|k| {
                    sessions
                        .get(k)
                        .is_some_and(|open| open.iter().any(|&(s, l)| s <= t && t <= l))
                        && decided.get(k).is_none_or(|&d| t > d.saturating_sub(gap_ms))
                })
            });
            r.sessions = sessions;
            r.decided = decided;
        } else {
            for f in &found {
                if let Some(inc) = r.incidents.get_mut(&f.key)
                    && f.first_seen <= inc.last_seen.saturating_add(suppress)
                {
                    inc.last_seen = inc.last_seen.max(f.last_seen);
                    r.count(Stat::Suppressed, 1);
                    continue;
                }
                r.incidents.insert(
                    f.key.clone(),
                    Incident {
                        first_seen: f.first_seen,
                        last_seen: f.last_seen,
                    },
                );
                r.count(Stat::Alerts, 1);
                out.push(build_alert(&r.rule, f, rows.as_ref(), event_columns));
            }
            // Forget rows no open window can read.
            if let WindowSpec::Tumbling { size_ms } | WindowSpec::Hopping { size_ms, .. } =
                r.rule.window
            {
                let from = r.next_end.map_or(i64::MIN, |e| e.saturating_sub(size_ms));
                retain_rows(r, |t, _| t >= from);
            }
        }
    }
}

/// A part of one key's session, decided in one execution: the whole session when it closes,
/// or, while it goes on, the part not decided yet once that spans more than `max_span`.
#[derive(Debug)]
struct Part {
    key: String,
    /// The first row of its session.
    session_start: i64,
    /// The part's `window_start`: the session's first row, or for a later part the time just
    /// after the part before it.
    start: i64,
    /// The first row it reads: `gap` before `start` for a later part (rows that the part
    /// before decided, carried as context: each row's `[t - gap, t]` is whole), else `start`.
    from: i64,
    /// The last row it reads: the session's last row, or the watermark − 1 for a part of a
    /// session that goes on (every row before the watermark is final: later events that
    /// early are late).
    last: i64,
    /// The part's `window_end`: the session's last row + `gap`, or the watermark.
    end: i64,
    /// Its newest row from `start` on (None: it read context rows alone).
    last_row: Option<i64>,
}

/// The first time of a session `(s, …)` that is not decided yet, given its key's mark.
fn undecided_start(s: i64, decided: Option<i64>) -> i64 {
    match decided {
        // The mark lies in this session: it was decided in part up to it.
        Some(d) if d >= s => d.saturating_add(1),
        _ => s,
    }
}

/// The parts of sessions to decide at `watermark`; closed sessions leave `r.sessions`, and
/// sessions decided in part record how far (`r.decided`).
///
/// A session closes once the watermark passes its last row + `gap`: its part not decided yet
/// is decided. A session that goes on is decided in part once its part not decided yet spans
/// more than `max_span` (all its rows before the watermark), else a key with steady traffic
/// (a busy tenant) would be decided never, its rows piling up until the oldest (the attack)
/// were evicted. Each part after the first also reads the `gap` of rows before it, so that a
/// row's `[t - gap, t]` is whole wherever it falls, as the compiled rules' sliding window of
/// `gap` sees it; results about those context rows are not taken again.
///
/// A key has at most one open session with rows before the watermark (two such sessions
/// would be less than `gap` apart, hence one), so one mark per key is enough.
fn session_parts(r: &mut RuleRun, watermark: i64, gap: i64, max_span: i64) -> Vec<Part> {
    let mut parts = Vec::new();
    for (k, sessions) in &mut r.sessions {
        let decided = r.decided.get(k).copied();
        let mut decided_now = None;
        sessions.retain(|&(s, l)| {
            let start = undecided_start(s, decided);
            let from = s.max(start.saturating_sub(gap));
            if l.saturating_add(gap) < watermark {
                if start <= l {
                    parts.push(Part {
                        key: k.clone(),
                        session_start: s,
                        start,
                        from,
                        last: l,
                        end: l.saturating_add(gap),
                        last_row: None,
                    });
                }
                return false;
            }
            if watermark > start.saturating_add(max_span) && start <= l {
                let last = watermark - 1;
                parts.push(Part {
                    key: k.clone(),
                    session_start: s,
                    start,
                    from,
                    last,
                    end: watermark,
                    last_row: None,
                });
                decided_now = Some(last);
            }
            true
        });
        if let Some(d) = decided_now {
            r.decided.insert(k.clone(), d);
        }
    }
    r.sessions.retain(|_, s| !s.is_empty());
    // A mark goes with its session: once that closed, no open session of the key holds it.
    let sessions = &r.sessions;
    r.decided.retain(|k, d| {
        sessions
            .get(k)
            .is_some_and(|open| open.iter().any(|&(s, _)| s <= *d))
    });
    parts.sort_by(|a, b| (a.start, &a.key).cmp(&(b.start, &b.key)));
    parts
}

/// The windows of an execution, for the log line of its failure: how many, their span, their
/// rows, and the largest (with its key, for sessions).
fn describe_windows(
    assigned: &[(usize, usize, i64, i64)],
    parts: &[Part],
    assigned_part: &[usize],
) -> String {
    let time = |ms: i64| Timestamp(ms).to_string();
    let mut rows: BTreeMap<(i64, i64, Option<usize>), usize> = BTreeMap::new();
    for (n, a) in assigned.iter().enumerate() {
        *rows
            .entry((a.2, a.3, assigned_part.get(n).copied()))
            .or_default() += 1;
    }
    let (Some(first), Some(last)) = (
        assigned.iter().map(|a| a.2).min(),
        assigned.iter().map(|a| a.3).max(),
    ) else {
        return "none".to_owned();
    };
    let windows = match rows.len() {
        1 => "1 window".to_owned(),
        n => format!("{n} windows"),
    };
    let mut text = format!(
        "{windows} from {} to {}, {} rows",
        time(first),
        time(last),
        assigned.len()
    );
    if let Some(((s, e, part), n)) = rows.iter().max_by_key(|(_, n)| **n) {
        let key = part
            .and_then(|p| parts.get(p))
            .map(|p| format!(" of {}", p.key))
            .unwrap_or_default();
        text.push_str(&format!(
            "; the largest{key}: {} to {}, {n} rows",
            time(*s),
            time(*e)
        ));
    }
    text
}

fn slide_ms(w: &WindowSpec) -> i64 {
    match w {
        WindowSpec::Tumbling { size_ms } => *size_ms,
        WindowSpec::Hopping { slide_ms, .. } => *slide_ms,
        WindowSpec::Session { gap_ms, .. } => *gap_ms,
    }
}

/// The end of the first window (aligned to `slide`) that ends after `t`: the earliest window
/// end of a row at `t`.
fn window_end_after(t: i64, slide: i64) -> i64 {
    t.saturating_sub(t.rem_euclid(slide)).saturating_add(slide)
}

/// Forgets the incidents that no window still to decide can extend. An incident absorbs a
/// finding of its key that starts within `suppress` of its last activity, so it is kept while
/// such a finding can still come:
/// - tumbling and hopping: while `last_seen + suppress` reaches the start of the earliest
///   window not decided yet (a finding's `first_seen` is in its window); rows buffered for
///   that window may be older than the watermark;
/// - session: while it reaches the watermark (a new session starts at or after it), or the
///   start of an open session of its key.
fn forget_incidents(r: &mut RuleRun, watermark: i64) {
    let suppress = r.rule.suppress_ms;
    match r.rule.window {
        WindowSpec::Session { .. } => {
            let sessions = &r.sessions;
            r.incidents.retain(|key, inc| {
                let reach = inc.last_seen.saturating_add(suppress);
                reach >= watermark
                    || sessions
                        .get(key)
                        .is_some_and(|open| open.iter().any(|&(start, _)| start <= reach))
            });
        }
        WindowSpec::Tumbling { size_ms } | WindowSpec::Hopping { size_ms, .. } => {
            let next = window_end_after(watermark, slide_ms(&r.rule.window));
            let earliest_start = r
                .next_end
                .map_or(next, |e| e.min(next))
                .saturating_sub(size_ms);
            r.incidents
                .retain(|_, inc| inc.last_seen.saturating_add(suppress) >= earliest_start);
        }
    }
}

/// The earliest watermark at which a window holding an event at `t` can close.
fn first_due(w: &WindowSpec, t: i64) -> i64 {
    match w {
        WindowSpec::Session {
            gap_ms,
            max_span_ms,
        } => t
            .saturating_add((*gap_ms).min(*max_span_ms))
            .saturating_add(1),
        _ => window_end_after(t, slide_ms(w)),
    }
}

/// The earliest watermark at which a buffered window of this detection closes.
fn rule_due(r: &RuleRun) -> i64 {
    match r.rule.window {
        WindowSpec::Session {
            gap_ms,
            max_span_ms,
        } => r
            .sessions
            .iter()
            .flat_map(|(k, open)| {
                let decided = r.decided.get(k).copied();
                open.iter().map(move |&(s, l)| {
                    // It closes once the watermark passes its last row + gap; before, its
                    // part not decided yet is decided once that spans more than max_span.
                    let close = l.saturating_add(gap_ms).saturating_add(1);
                    let start = undecided_start(s, decided);
                    if start <= l {
                        close.min(start.saturating_add(max_span_ms).saturating_add(1))
                    } else {
                        close
                    }
                })
            })
            .min()
            .unwrap_or(i64::MAX),
        _ if r.buffered == 0 => i64::MAX,
        _ => r.next_end.unwrap_or(i64::MAX),
    }
}

/// Adds an event time to a key's sessions, merging sessions it bridges.
fn add_to_session(sessions: &mut Vec<(i64, i64)>, t: i64, gap: i64) {
    let mut start = t;
    let mut last = t;
    sessions.retain(|&(s, l)| {
        if t >= s.saturating_sub(gap) && t <= l.saturating_add(gap) {
            start = start.min(s);
            last = last.max(l);
            false
        } else {
            true
        }
    });
    let at = sessions.partition_point(|&(s, _)| s < start);
    sessions.insert(at, (start, last));
}

fn retain_rows(r: &mut RuleRun, keep: impl Fn(i64, Option<&str>) -> bool) {
    let mut buffered = 0;
    let mut chunks = Vec::with_capacity(r.buffer.len());
    for chunk in std::mem::take(&mut r.buffer) {
        let mask: Vec<bool> = chunk
            .times
            .iter()
            .enumerate()
            .map(|(j, &t)| keep(t, chunk.keys.get(j).and_then(|k| k.as_deref())))
            .collect();
        let n = mask.iter().filter(|&&m| m).count();
        if n == 0 {
            continue;
        }
        if n == mask.len() {
            buffered += n;
            chunks.push(chunk);
            continue;
        }
        let Ok(batch) = filter_record_batch(&chunk.batch, &BooleanArray::from(mask.clone())) else {
            r.failed();
            continue;
        };
        buffered += n;
        chunks.push(Chunk {
            batch,
            times: pick(chunk.times, &mask),
            keys: if chunk.keys.is_empty() {
                Vec::new()
            } else {
                pick(chunk.keys, &mask)
            },
        });
    }
    r.buffer = chunks;
    r.buffered = buffered;
}

/// The items of `v` whose mask entry is set.
fn pick<T>(v: Vec<T>, mask: &[bool]) -> Vec<T> {
    v.into_iter()
        .zip(mask)
        .filter_map(|(x, &m)| m.then_some(x))
        .collect()
}

/// Bounded memory: drops the oldest rows beyond the limit (counted).
fn evict_oldest(r: &mut RuleRun, limit: usize) {
    let over = r.buffered.saturating_sub(limit);
    if over == 0 {
        return;
    }
    let mut times: Vec<i64> = r
        .buffer
        .iter()
        .flat_map(|c| c.times.iter().copied())
        .collect();
    times.sort_unstable();
    let cut = times
        .get(over.saturating_sub(1))
        .copied()
        .unwrap_or(i64::MIN);
    let before = r.buffered;
    retain_rows(r, |t, _| t > cut);
    r.count(Stat::Evicted, (before - r.buffered) as u64);
    tracing::warn!(rule = %r.rule.id, limit, "sql: window buffer full; oldest rows dropped (sql.max_buffered_rows)");
}

/// The rows assigned to windows, with their `window_start` and `window_end`.
fn window_rows(
    buffer: &[Chunk],
    assigned: &[(usize, usize, i64, i64)],
    schema: &SchemaRef,
) -> Result<RecordBatch, QueryError> {
    let conv = |e: datafusion::arrow::error::ArrowError| QueryError::Convert(e.to_string());
    let mut parts = Vec::new();
    let mut at = 0;
    while at < assigned.len() {
        let c = assigned[at].0;
        let end = at + assigned[at..].iter().take_while(|a| a.0 == c).count();
        let idx = UInt32Array::from_iter_values(assigned[at..end].iter().map(|a| a.1 as u32));
        let mut columns: Vec<ArrayRef> = buffer[c]
            .batch
            .columns()
            .iter()
            .map(|col| take(col.as_ref(), &idx, None))
            .collect::<Result<_, _>>()
            .map_err(conv)?;
        columns.push(Arc::new(Int64Array::from_iter_values(
            assigned[at..end].iter().map(|a| a.2),
        )));
        columns.push(Arc::new(Int64Array::from_iter_values(
            assigned[at..end].iter().map(|a| a.3),
        )));
        parts.push(RecordBatch::try_new(Arc::clone(schema), columns).map_err(conv)?);
        at = end;
    }
    concat_batches(schema, &parts).map_err(conv)
}

async fn plan_rule(
    rule: SqlRule,
    window_schema: &SchemaRef,
    events: &SchemaRef,
    max_memory: usize,
) -> Result<PlannedRule, QueryError> {
    // One partition: each detector executes on its task's thread (a current-thread runtime),
    // so more partitions would add repartitioning and merging but no parallelism.
    let mut config = SessionConfig::new().with_target_partitions(1);
    // The physical plan is executed again and again after `reset_plan_states`, which does not
    // cover dynamic filters: a join's or top-k's filter from one window would prune the next.
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.enable_dynamic_filter_pushdown = false;
    optimizer.enable_join_dynamic_filter_pushdown = false;
    optimizer.enable_topk_dynamic_filter_pushdown = false;
    optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    // Spans on the parsed query, so that planning errors can name their position.
    config.options_mut().sql_parser.collect_spans = true;
    // A window far larger than usual (a burst, a flood from one address) must fail its own
    // execution, not take the process and every other detection down: the detection's
    // operators (sorts, joins, aggregations, window functions) hold at most `max_memory`
    // together (DataFusion's greedy pool, which names its largest consumers when it refuses).
    // Nothing spills: a pipeline's disk may be small or read-only, and a detection whose
    // windows need more than its pool is better told than slowed down by disk.
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(max_memory, 1.0)
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
        .map_err(|e| rule_error(&rule, describe_datafusion_error(&e)))?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    register_udfs(&ctx);
    let rows = Arc::new(Mutex::new(Vec::new()));
    ctx.register_table(
        "events",
        Arc::new(WindowTable {
            schema: Arc::clone(window_schema),
            rows: Arc::clone(&rows),
        }),
    )
    .map_err(|e| rule_error(&rule, describe_datafusion_error(&e)))?;
    let df = ctx
        .sql(&rule.sql)
        .await
        .map_err(|e| rule_error(&rule, format!("query: {}", located(&rule, &e))))?;
    let state = ctx.state();
    let plan = state
        .optimize(df.logical_plan())
        .map_err(|e| rule_error(&rule, format!("query: {}", located(&rule, &e))))?;
    let out = plan.schema();
    let mut required: Vec<&str> = rule.key.iter().map(String::as_str).collect();
    required.extend(["first_seen", "last_seen"]);
    for col in required {
        if out.fields().iter().all(|f| f.name() != col) {
            return Err(rule_error(
                &rule,
                format!(
                    "query: the result has no column {col:?}; a detection returns its key columns ({}), first_seen and last_seen (ms), and optionally event_id, evidence and metrics",
                    rule.key.join(", ")
                ),
            ));
        }
    }
    check_placeholders(&rule, out.fields().iter().map(|f| f.name().as_str()))?;
    let prefilter = ingestion_filter(&ctx, &plan, events)?;
    let physical = state
        .query_planner()
        .create_physical_plan(&plan, &state)
        .await
        .map_err(|e| rule_error(&rule, format!("query: {}", located(&rule, &e))))?;
    Ok(PlannedRule {
        rule,
        ctx,
        rows,
        executing: Mutex::new(()),
        physical,
        prefilter,
        totals: Totals::default(),
    })
}

/// The filters of the plan's scans of `events` that read only event columns: OR across
/// scans, AND within one. None when some scan reads every row.
fn ingestion_filter(
    ctx: &SessionContext,
    plan: &LogicalPlan,
    events: &SchemaRef,
) -> Result<Option<Arc<dyn PhysicalExpr>>, QueryError> {
    let mut per_scan: Vec<Option<Expr>> = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && scan.table_name.table() == "events"
        {
            let usable = scan.filters.iter().filter(|f| {
                f.column_refs()
                    .iter()
                    .all(|c| events.field_with_name(&c.name).is_ok())
            });
            per_scan.push(conjunction(usable.cloned()));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if per_scan.is_empty() || per_scan.iter().any(Option::is_none) {
        return Ok(None);
    }
    let Some(expr) = disjunction(per_scan.into_iter().flatten()) else {
        return Ok(None);
    };
    // Scan filters are qualified by the table name.
    let schema = DFSchema::try_from_qualified_schema("events", events.as_ref())?;
    Ok(Some(ctx.create_physical_expr(expr, &schema)?))
}

fn check_placeholders<'a>(
    rule: &SqlRule,
    columns: impl Iterator<Item = &'a str>,
) -> Result<(), QueryError> {
    let mut known: Vec<String> = columns.map(str::to_owned).collect();
    known.extend(
        crate::rule::KEY_FIELDS
            .iter()
            .chain(&["window", "first_seen", "last_seen", "src_ip"])
            .map(|s| s.to_string()),
    );
    let texts = [&rule.summary.en, &rule.summary.ja];
    for t in texts {
        let mut rest = t.as_str();
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                return Err(rule_error(
                    rule,
                    format!("summary: unclosed placeholder in {t:?}"),
                ));
            };
            let name = &rest[open + 1..open + close];
            if !known.iter().any(|k| k == name) {
                return Err(rule_error(
                    rule,
                    format!(
                        "summary: unknown placeholder {{{name}}}: not a result column, key field or window/first_seen/last_seen/src_ip"
                    ),
                ));
            }
            rest = &rest[open + close + 1..];
        }
    }
    Ok(())
}

async fn execute(r: &PlannedRule, rows: RecordBatch) -> Result<Vec<RecordBatch>, QueryError> {
    if let Ok(mut slot) = r.rows.lock() {
        *slot = vec![rows];
    }
    let physical = reset_plan_states(Arc::clone(&r.physical))?;
    let out = collect(physical, r.ctx.task_ctx()).await;
    if let Ok(mut slot) = r.rows.lock() {
        slot.clear();
    }
    out.map_err(|e| match e.find_root() {
        // The detection's memory pool refused: the windows' size, not the query's mistake.
        datafusion::error::DataFusionError::ResourcesExhausted(_) => {
            QueryError::ResourcesExhausted(describe_datafusion_error(&e))
        }
        _ => QueryError::from(e),
    })
}

/// DataFusion's message about a detection's query, with its position counted from the top of
/// the `.sql` file (DataFusion counts from the start of the query, below the header): the
/// parser's own "Line: l, Column: c" rewritten, else the span of the error's diagnostic (the
/// planner's, as `collect_spans` is on) appended.
fn located(rule: &SqlRule, e: &datafusion::error::DataFusionError) -> String {
    // "Optimizer rule 'simplify_expressions' failed, caused by …" names DataFusion's
    // internals; the cause is what the author needs.
    let text = match e {
        datafusion::error::DataFusionError::Context(..) => describe_datafusion_error(e.find_root()),
        _ => describe_datafusion_error(e),
    };
    let (first_line, first_column) = rule.sql_start;
    let in_file = |line: u64, column: u64| {
        let line = usize::try_from(line).unwrap_or(usize::MAX);
        let column = usize::try_from(column).unwrap_or(usize::MAX);
        // The query's first line starts where the header's `---*/` left off (usually column
        // 1 of the next line); its other lines are the file's lines.
        if line <= 1 {
            (
                first_line,
                first_column.saturating_add(column.saturating_sub(1)),
            )
        } else {
            (first_line.saturating_add(line - 1), column)
        }
    };
    if let Some(rewritten) = rewrite_parser_positions(&text, in_file) {
        return rewritten;
    }
    match e.diagnostic().and_then(|d| d.span) {
        Some(span) if span.start.line > 0 => {
            let (line, column) = in_file(span.start.line, span.start.column);
            format!("{text} (at line {line}, column {column})")
        }
        _ => match misspelt_field(&text, &rule.sql) {
            // DataFusion checks struct fields while optimizing, with no span: the field's
            // first use in the query is where the author looks.
            Some((name, line, column)) => {
                let (line, column) = in_file(line, column);
                format!("{text} (.{name}: first at line {line}, column {column})")
            }
            None => text,
        },
    }
}

/// For DataFusion's "Field NAME not found in struct": NAME and the line and column (in the
/// query, 1-based) of its first use as `.NAME`, if the query has one.
fn misspelt_field<'a>(text: &'a str, sql: &str) -> Option<(&'a str, u64, u64)> {
    let rest = &text[text.find("Field ")? + "Field ".len()..];
    let name = &rest[..rest.find(" not found in struct")?];
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let needle = format!(".{name}");
    let at = sql.match_indices(&needle).map(|(at, _)| at).find(|&at| {
        sql[at + needle.len()..]
            .chars()
            .next()
            .is_none_or(|c| !ident(c))
    })?;
    // The position of the name, after the dot.
    let before = &sql[..at + 1];
    let line = before.matches('\n').count() as u64 + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
    Some((name, line, column))
}

/// `text` with each "Line: l, Column: c" of the SQL parser as "line L, column C" of the file,
/// or None when it has none.
fn rewrite_parser_positions(
    text: &str,
    in_file: impl Fn(u64, u64) -> (usize, usize),
) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut found = false;
    while let Some(at) = rest.find("Line: ") {
        let after = &rest[at + "Line: ".len()..];
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let n = digits(after);
        let parsed = after[..n].parse::<u64>().ok().and_then(|line| {
            let tail = after[n..].strip_prefix(", Column: ")?;
            let m = digits(tail);
            let column = tail[..m].parse::<u64>().ok()?;
            Some((line, column, &tail[m..]))
        });
        match parsed {
            Some((line, column, tail)) => {
                let (line, column) = in_file(line, column);
                out.push_str(&rest[..at]);
                out.push_str(&format!("line {line}, column {column}"));
                rest = tail;
                found = true;
            }
            None => {
                out.push_str(&rest[..at + "Line: ".len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    found.then_some(out)
}

/// One result row.
struct Found {
    key: String,
    key_values: Vec<(String, String)>,
    first_seen: i64,
    last_seen: i64,
    /// The row's `window_start` and `window_end`, when the query returns them.
    window_start: Option<i64>,
    window_end: Option<i64>,
    event_id: Option<String>,
    evidence: Vec<String>,
    metrics: BTreeMap<String, MetricValue>,
}

fn column_text(a: &ArrayRef, i: usize) -> Option<String> {
    if a.is_null(i) {
        return None;
    }
    let s = cast(&a.slice(i, 1), &DataType::Utf8).ok()?;
    let s = s.as_string_opt::<i32>()?;
    (!s.is_null(0)).then(|| s.value(0).to_owned())
}

fn column_i64(a: &ArrayRef, i: usize) -> Option<i64> {
    if a.is_null(i) {
        return None;
    }
    let target = match a.data_type() {
        DataType::Timestamp(_, _) => DataType::Int64,
        _ => DataType::Int64,
    };
    let v = cast(&a.slice(i, 1), &target).ok()?;
    let v = v.as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>()?;
    (!v.is_null(0)).then(|| v.value(0))
}

/// The rows of a result as alert candidates, and what was wrong with the rows that could not be
/// (the first of them, with their count).
fn collect_rows(
    rule: &SqlRule,
    batches: &[RecordBatch],
) -> Result<(Vec<Found>, Option<String>), QueryError> {
    // Event times an alert may carry: the normalizers' own bounds of a plausible event.
    let limits = authwatch_normalize::Limits::default();
    let plausible_ms = limits.min_time_ms..limits.max_time_ms;
    let mut found = Vec::new();
    let (mut bad_rows, mut first_bad) = (0usize, None);
    for b in batches {
        let schema = b.schema();
        let col = |name: &str| schema.index_of(name).ok().map(|i| b.column(i));
        let (Some(first), Some(last)) = (col("first_seen"), col("last_seen")) else {
            return Err(QueryError::Sql("result lacks first_seen/last_seen".into()));
        };
        let keys: Vec<(&String, Option<&ArrayRef>)> =
            rule.key.iter().map(|k| (k, col(k))).collect();
        let reserved = |n: &str| {
            matches!(
                n,
                "first_seen"
                    | "last_seen"
                    | "event_id"
                    | "evidence"
                    | "window_start"
                    | "window_end"
            ) || rule.key.iter().any(|k| k == n)
        };
        'row: for i in 0..b.num_rows() {
            let mut key_values = Vec::new();
            for (k, a) in &keys {
                // A row without its key names no entity: skipped, as the compiled rules skip
                // events without the key. The empty text is no key either (as `key_part` has
                // it for sessions): a key the query computes (`coalesce(…, '')`) can be one.
                let Some(v) = a.and_then(|a| column_text(a, i)).filter(|v| !v.is_empty()) else {
                    continue 'row;
                };
                key_values.push(((*k).clone(), v));
            }
            // Every alert needs both, as plausible times: a row without them is the detection's
            // mistake, reported (and counted) rather than skipped in silence.
            let plausible = |t: Option<i64>| t.filter(|t| plausible_ms.contains(t));
            let (Some(first_seen), Some(last_seen)) = (
                plausible(column_i64(first, i)),
                plausible(column_i64(last, i)),
            ) else {
                bad_rows += 1;
                first_bad.get_or_insert(i + 1);
                continue;
            };
            let evidence = col("evidence")
                .and_then(|a| a.as_list_opt::<i32>())
                .filter(|l| !l.is_null(i))
                .map(|l| {
                    let v = l.value(i);
                    (0..v.len()).filter_map(|j| column_text(&v, j)).collect()
                })
                .unwrap_or_default();
            let mut metrics = BTreeMap::new();
            for (f, a) in schema.fields().iter().zip(b.columns()) {
                if reserved(f.name()) || a.is_null(i) {
                    continue;
                }
                let m = match f.data_type() {
                    DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
                        column_i64(a, i).map(|v| match u64::try_from(v) {
                            Ok(n) => MetricValue::Count(n),
                            Err(_) => MetricValue::Real(v as f64),
                        })
                    }
                    DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
                        column_i64(a, i).map(|v| MetricValue::Count(v.max(0) as u64))
                    }
                    DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                        cast(&a.slice(i, 1), &DataType::Float64).ok().and_then(|v| {
                            v.as_primitive_opt::<datafusion::arrow::datatypes::Float64Type>()
                                .map(|p| MetricValue::Real(p.value(0)))
                        })
                    }
                    _ => column_text(a, i).map(MetricValue::Text),
                };
                if let Some(m) = m {
                    metrics.insert(f.name().clone(), m);
                }
            }
            found.push(Found {
                key: authwatch_event::entity_key_text(
                    key_values.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                ),
                key_values,
                first_seen,
                last_seen,
                window_start: col("window_start").and_then(|a| column_i64(a, i)),
                window_end: col("window_end").and_then(|a| column_i64(a, i)),
                event_id: col("event_id").and_then(|a| column_text(a, i)),
                evidence,
                metrics,
            });
        }
    }
    let bad = first_bad.map(|row| {
        format!(
            "{bad_rows} result rows without usable first_seen/last_seen (the first: row {row}); \
             both must be event times in ms, 2000-01-01 to 2100-01-01"
        )
    });
    Ok((found, bad))
}

/// Finds the part of a session a result row of a session detection is about.
struct SessionIndex<'a> {
    /// The parts of sessions decided in this execution, sorted.
    parts: &'a [Part],
    /// The rows the query read, and the index in `parts` of each one's part.
    rows: Option<&'a RecordBatch>,
    assigned_part: &'a [usize],
    /// Event id → part, built when a row first needs it.
    by_event: std::cell::OnceCell<HashMap<String, usize>>,
}

impl SessionIndex<'_> {
    /// The part of `f`, tried in this order:
    /// 1. its key columns hold a session's key (the documented contract): that key's part
    ///    that starts at the row's `window_start`, else holds its `last_seen`, else its
    ///    `first_seen` (from the first row the part reads to its `window_end`);
    /// 2. its `event_id`, else the first of its `evidence`, is an event the query read: that
    ///    event's part;
    /// 3. its `window_start` (and `window_end`, if returned) is that of exactly one part.
    fn part_of(&self, f: &Found) -> Option<usize> {
        let same_key = || {
            self.parts
                .iter()
                .enumerate()
                .filter(move |(_, p)| p.key == f.key)
        };
        let holding = |t: i64| {
            same_key()
                .find(|(_, p)| p.from <= t && t <= p.end)
                .map(|(n, _)| n)
        };
        let by_key = f
            .window_start
            .and_then(|ws| same_key().find(|(_, p)| p.start == ws).map(|(n, _)| n))
            .or_else(|| holding(f.last_seen))
            .or_else(|| holding(f.first_seen));
        if by_key.is_some() {
            return by_key;
        }
        let by_event = self.by_event.get_or_init(|| self.event_parts());
        let by_id = f
            .event_id
            .iter()
            .chain(&f.evidence)
            .find_map(|id| by_event.get(id).copied());
        if by_id.is_some() {
            return by_id;
        }
        let ws = f.window_start?;
        let mut bounds = self
            .parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.start == ws && f.window_end.is_none_or(|we| we == p.end));
        match (bounds.next(), bounds.next()) {
            (Some((n, _)), None) => Some(n),
            _ => None,
        }
    }

    /// The part of each event id the query read (the first, should an id repeat).
    fn event_parts(&self) -> HashMap<String, usize> {
        let mut map = HashMap::new();
        let Some(ids) = self
            .rows
            .and_then(|b| b.column_by_name("event_id"))
            .and_then(|c| cast(c, &DataType::Utf8).ok())
        else {
            return map;
        };
        let Some(ids) = ids.as_string_opt::<i32>() else {
            return map;
        };
        for (i, &n) in self.assigned_part.iter().enumerate() {
            if i < ids.len() && !ids.is_null(i) {
                map.entry(ids.value(i).to_owned()).or_insert(n);
            }
        }
        map
    }
}

/// The deciding event, looked up among the window rows by id.
fn deciding_event(rows: Option<&RecordBatch>, id: &str, event_columns: usize) -> Option<AuthEvent> {
    let rows = rows?;
    let ids = rows.column_by_name("event_id")?;
    let ids = cast(ids, &DataType::Utf8).ok()?;
    let ids = ids.as_string_opt::<i32>()?;
    let at = (0..ids.len()).find(|&i| !ids.is_null(i) && ids.value(i) == id)?;
    let one = rows
        .slice(at, 1)
        .project(&(0..event_columns).collect::<Vec<_>>())
        .ok()?;
    batch_to_events(&one).ok()?.into_iter().next()
}

fn metric_text(m: &MetricValue) -> String {
    match m {
        MetricValue::Count(n) => n.to_string(),
        MetricValue::Real(v) => format!("{v:.0}"),
        MetricValue::Text(t) => t.clone(),
    }
}

fn render(template: &str, lookup: &dyn Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        match rest[open..].find('}') {
            Some(close) => {
                out.push_str(&lookup(&rest[open + 1..open + close]));
                rest = &rest[open + close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn build_alert(
    rule: &SqlRule,
    f: &Found,
    rows: Option<&RecordBatch>,
    event_columns: usize,
) -> Alert {
    let decided = f
        .event_id
        .as_deref()
        .and_then(|id| deciding_event(rows, id, event_columns));
    let mut entity = Entity::default();
    for (k, v) in &f.key_values {
        match k.as_str() {
            "user" => entity.user = Some(Text::from(v.as_str())),
            "tenant" => entity.tenant = Some(Text::from(v.as_str())),
            "device" => entity.device_fingerprint = Some(Text::from(v.as_str())),
            "country" => entity.country = Some(Text::from(v.as_str())),
            "app" => entity.app = Some(Text::from(v.as_str())),
            "ip" => entity.ip = v.parse::<IpAddr>().ok(),
            "asn" => entity.asn = v.parse().ok(),
            _ => {}
        }
    }
    let lookup = |name: &str, lang: Lang| -> String {
        if let Some((_, v)) = f.key_values.iter().find(|(k, _)| k == name) {
            return v.clone();
        }
        if let Some(m) = f.metrics.get(name) {
            return metric_text(m);
        }
        match name {
            "window" => duration_text(rule.window.span_ms(), lang),
            "first_seen" => time_text(f.first_seen, lang),
            "last_seen" => time_text(f.last_seen, lang),
            "src_ip" => decided
                .as_ref()
                .and_then(|e| e.src.ip)
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            other => decided
                .as_ref()
                .and_then(|e| key_part(other, e))
                .unwrap_or_default(),
        }
    };
    let skip = f.evidence.len().saturating_sub(MAX_EVIDENCE);
    let observed = match &decided {
        Some(e) => Observed {
            event_id: e.event_id.clone(),
            tenant: e.tenant.clone(),
            time: Timestamp(e.time),
            src: e.src.clone(),
            device: e.device.clone(),
            app: e.app.clone(),
            context: e.context.clone(),
        },
        None => Observed {
            event_id: Text::from(f.event_id.as_deref().unwrap_or_default()),
            time: Timestamp(f.last_seen),
            ..Observed::default()
        },
    };
    Alert {
        alert_id: Alert::make_id(&rule.id, rule.version, &f.key, f.first_seen),
        rule_id: rule.id.clone(),
        rule_version: rule.version,
        category: rule.category.clone(),
        cause_class: rule.cause_class,
        severity: rule.severity,
        attack_technique: rule.attack_technique.clone(),
        entity,
        window: Window {
            start: Timestamp(f.first_seen),
            end: Timestamp(f.last_seen),
        },
        metrics: f.metrics.clone(),
        evidence: f.evidence[skip..].to_vec(),
        observed,
        first_seen: Timestamp(f.first_seen),
        last_seen: Timestamp(f.last_seen),
        summary: Localized {
            en: render(&rule.summary.en, &|name| lookup(name, Lang::En)),
            ja: render(&rule.summary.ja, &|name| lookup(name, Lang::Ja)),
        },
        steps: rule.steps.clone(),
        related: Vec::new(),
    }
}

/// What a snapshot holds per detection.
#[derive(Serialize, Deserialize)]
struct RuleState {
    id: String,
    events: Vec<AuthEvent>,
    next_end: Option<i64>,
    sessions: Vec<(String, Vec<(i64, i64)>)>,
    /// Absent from snapshots written before sessions were decided in part: none was.
    #[serde(default)]
    decided: Vec<(String, i64)>,
    incidents: Vec<(String, Incident)>,
}

#[derive(Serialize, Deserialize)]
struct DetectorState {
    staged: Vec<AuthEvent>,
    rules: Vec<RuleState>,
}

impl StreamDetector for SqlDetector {
    fn on_event(&mut self, event: &AuthEvent, _out: &mut Vec<Alert>) {
        if self.rules.is_empty() {
            return;
        }
        self.next_due = self.next_due.min(
            self.rules
                .iter()
                .map(|r| first_due(&r.rule.window, event.time))
                .min()
                .unwrap_or(i64::MAX),
        );
        self.staged.push(event.clone());
        if self.staged.len() >= STAGE_EVENTS {
            self.ingest();
        }
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Alert>) {
        if watermark >= self.next_due {
            self.advance(watermark, out);
        }
    }

    fn flush(&mut self, out: &mut Vec<Alert>) {
        self.advance(i64::MAX, out);
    }
}

fn snapshot_err(message: String) -> CheckpointError {
    CheckpointError::Snapshot {
        part: "sql".into(),
        message,
    }
}

fn restore_err(message: String) -> CheckpointError {
    CheckpointError::Restore {
        part: "sql".into(),
        message,
    }
}

fn sorted<V: Clone>(map: &HashMap<String, V>) -> Vec<(String, V)> {
    let mut v: Vec<(String, V)> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

impl Checkpointed for SqlDetector {
    fn name(&self) -> &str {
        "sql"
    }

    fn snapshot(&self) -> Result<Vec<u8>, CheckpointError> {
        // Same state, same bytes: maps are written sorted by key.
        let err = snapshot_err;
        let mut rules = Vec::new();
        for r in &self.rules {
            let mut events = Vec::new();
            for c in &r.buffer {
                events.extend(batch_to_events(&c.batch).map_err(|e| err(e.to_string()))?);
            }
            rules.push(RuleState {
                id: r.rule.id.clone(),
                events,
                next_end: r.next_end,
                sessions: sorted(&r.sessions),
                decided: sorted(&r.decided),
                incidents: sorted(&r.incidents),
            });
        }
        serde_json::to_vec(&DetectorState {
            staged: self.staged.clone(),
            rules,
        })
        .map_err(|e| err(e.to_string()))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), CheckpointError> {
        let err = restore_err;
        let state: DetectorState =
            serde_json::from_slice(state).map_err(|e| err(format!("corrupt snapshot: {e}")))?;
        for saved in state.rules {
            // A detection that no longer exists leaves its state behind; a new one starts empty.
            let Some(r) = self.rules.iter_mut().find(|r| r.rule.id == saved.id) else {
                continue;
            };
            r.buffer.clear();
            r.buffered = 0;
            if !saved.events.is_empty() {
                let batch = events_to_batch(&saved.events).map_err(|e| err(e.to_string()))?;
                let keys = match r.rule.window {
                    WindowSpec::Session { .. } => saved
                        .events
                        .iter()
                        .map(|e| canonical_key(&r.rule.key, e))
                        .collect(),
                    _ => Vec::new(),
                };
                r.buffered = saved.events.len();
                r.buffer.push(Chunk {
                    batch,
                    times: saved.events.iter().map(|e| e.time).collect(),
                    keys,
                });
            }
            r.next_end = saved.next_end;
            r.sessions = saved.sessions.into_iter().collect();
            r.decided = saved.decided.into_iter().collect();
            r.incidents = saved.incidents.into_iter().collect();
        }
        self.staged = state.staged;
        self.recompute_due();
        Ok(())
    }
}
