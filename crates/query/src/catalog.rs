//! The catalog analysts query: `events` and `alerts` from the archive and/or recorded files,
//! `live_events` from a running pipeline, and authwatch's UDFs.

use crate::convert::{
    alert_schema, alerts_to_batch, event_schema, events_to_batch, string_views, with_string_views,
};
use crate::error::describe_datafusion_error;
use crate::live::LiveWindow;
use crate::{InternedAggregation, QueryError, open_store, register_udfs};
use async_trait::async_trait;
use authwatch_event::{Alert, AuthEvent};
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{SetExpr, Statement as SqlStatement};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

mod bounds;
mod yielding;

/// How long [`Catalog::new`] reuses a listing of the archive's files: a file the archive writer
/// completes shows in queries after at most this long.
pub const ARCHIVE_LISTING_TTL: Duration = Duration::from_secs(5);

/// The rows and schema of a query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Result schema (also for empty results).
    pub schema: SchemaRef,
    /// Result rows.
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// The `live_events` table: a snapshot of the live window per scan.
#[derive(Clone)]
struct LiveTable(LiveWindow);

impl std::fmt::Debug for LiveTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveTable({} rows)", self.0.rows())
    }
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }
    fn table_type(&self) -> TableType {
        TableType::Temporary
    }
    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let batches = self
            .0
            .batches()
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.0.schema(),
            projection.cloned(),
        )?)
    }
}

/// The partition columns of archive tables (hive style `dt=…/hour=…`).
fn partition_fields() -> Vec<Field> {
    vec![
        Field::new("dt", DataType::Utf8, false),
        Field::new("hour", DataType::Utf8, false),
    ]
}

fn with_partitions(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(partition_fields());
    Arc::new(Schema::new(fields))
}

/// Adds `dt` and `hour` columns computed from a time column, so recorded files line up with
/// the archive's partition columns.
fn add_partitions(batch: &RecordBatch, time_column: &str) -> Result<RecordBatch, QueryError> {
    let conv = |e: datafusion::arrow::error::ArrowError| QueryError::Convert(e.to_string());
    let times = batch
        .column_by_name(time_column)
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .cloned()
        })
        .ok_or_else(|| QueryError::Convert(format!("no Int64 column {time_column}")))?;
    let (dts, hours): (Vec<String>, Vec<String>) = times
        .values()
        .iter()
        .map(
            |&ms| match chrono::DateTime::from_timestamp(ms.div_euclid(1000), 0) {
                Some(t) => (t.format("%Y-%m-%d").to_string(), t.format("%H").to_string()),
                None => ("1970-01-01".into(), "00".into()),
            },
        )
        .unzip();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(StringArray::from(dts)));
    columns.push(Arc::new(StringArray::from(hours)));
    RecordBatch::try_new(with_partitions(&batch.schema()), columns).map_err(conv)
}

/// A DataFusion session with authwatch's tables and functions. Read-only: [`Catalog::plan`]
/// (behind [`Catalog::query`] and [`Catalog::query_limited`]) refuses DDL, DML and session
/// statements.
pub struct Catalog {
    ctx: SessionContext,
    archive_events: bool,
    archive_alerts: bool,
    input_events: bool,
    input_alerts: bool,
}

impl Catalog {
    /// An empty catalog: no tables yet, UDFs registered; archive listings are reused for
    /// [`ARCHIVE_LISTING_TTL`].
    pub fn new() -> Result<Catalog, QueryError> {
        Catalog::with_listing_ttl(ARCHIVE_LISTING_TTL)
    }

    /// [`Catalog::new`] with another lifetime for a listing of the archive's files.
    pub fn with_listing_ttl(ttl: Duration) -> Result<Catalog, QueryError> {
        Catalog::with_limits(ttl, None)
    }

    /// [`Catalog::with_listing_ttl`], and with `memory_limit` (bytes) the most memory the
    /// session's queries hold together, their result rows included
    /// ([`Catalog::query_limited`]): beyond it sorts and aggregations spill to disk or fail,
    /// and results are cut. For a long-lived endpoint inside another process (`authwatch
    /// run`), where one analyst's query must not take the pipeline's memory.
    ///
    /// With a limit, what queries build outside DataFusion's own reservations is bounded too
    /// (see the `bounds` module): calls of functions whose result an argument multiplies
    /// (`repeat`, `lpad`, `array_repeat`, `range`, …) check their result's size before they
    /// build it, a literal too large to repeat over a batch is refused, and the batches that
    /// projections, joins, unnest and window operators emit are counted in the pool.
    pub fn with_limits(ttl: Duration, memory_limit: Option<usize>) -> Result<Catalog, QueryError> {
        let mut config = SessionConfig::new().with_information_schema(true);
        // Spans let planning errors name the line and column of the query.
        config.options_mut().sql_parser.collect_spans = true;
        // Analyst queries filter on a few columns and read others (`WHERE outcome = 'failure'
        // GROUP BY src.ip`): evaluating the filter while decoding skips the other columns' rows
        // that fail it. Measured with DataFusion 55 on the 10M-event archive of
        // benches/sql_vs_duckdb.sh: top_failing_ips 207 → 101 ms, push_fatigue 304 → 224 ms.
        config.options_mut().execution.parquet.pushdown_filters = true;
        config.options_mut().execution.parquet.reorder_filters = true;
        // DataFusion caches a table's file listing, by default for ever: a long-lived catalog
        // (the endpoint of `authwatch run`, next to the archive writer) would never see a new
        // archive file. Listings expire instead; statistics and footers stay cached per file
        // (checked against its size and modification time).
        let mut runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_ttl(Some(ttl)));
        if let Some(bytes) = memory_limit {
            // DataFusion's greedy pool (reporting its largest consumers when it refuses),
            // shared by every connection of the endpoint.
            runtime = runtime.with_memory_limit(bytes, 1.0);
        }
        let runtime = runtime.build_arc()?;
        let pool = Arc::clone(&runtime.memory_pool);
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_optimizer_rules(crate::count_distinct::optimizer_rules())
            .with_physical_optimizer_rule(Arc::new(InternedAggregation));
        if let Some(limit) = memory_limit {
            // Both last: the guard rewrites calls after type coercion, and the other physical
            // rules see the plan without the counting wrappers.
            state = state
                .with_analyzer_rule(Arc::new(bounds::GuardAmplifiers { pool, limit }))
                .with_physical_optimizer_rule(Arc::new(bounds::CountOutputs));
        }
        // Last of all: joins yield between the batches they emit, so that a query can be
        // stopped (and share its threads) however much one probe batch matches.
        let state = state
            .with_physical_optimizer_rule(Arc::new(yielding::YieldAfterJoins))
            .build();
        let ctx = SessionContext::new_with_state(state);
        register_udfs(&ctx);
        Ok(Catalog {
            ctx,
            archive_events: false,
            archive_alerts: false,
            input_events: false,
            input_alerts: false,
        })
    }

    /// Plans queries for at most `partitions` threads (DataFusion's `target_partitions`; one
    /// per core by default): the endpoint inside `authwatch run` runs on a few threads of its
    /// own, and more partitions than threads only add buffers.
    pub fn set_target_partitions(&self, partitions: usize) {
        let state = self.ctx.state_ref();
        let mut state = state.write();
        state.config_mut().options_mut().execution.target_partitions = partitions.max(1);
    }

    /// The session (for embedding: the Postgres endpoint, tests).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Adds the archive at `location` (directory or object store URL): its `events/` and
    /// `alerts/` become the `events` and `alerts` tables, with `dt` and `hour` partition
    /// columns that prune files in `WHERE dt = '…'`.
    pub async fn add_archive(&mut self, location: &str) -> Result<(), QueryError> {
        let (store, prefix, root) = open_store(location)?;
        // Object stores are looked up by scheme and bucket, and a table's paths are full paths
        // in it; the local store the archive writer uses is rooted at the archive directory, so
        // local archives are read through DataFusion's own (unrooted) local store instead.
        if root.scheme() != "file" {
            self.ctx.register_object_store(&root, store);
        }
        let base = {
            let mut u = root.clone();
            let p = prefix.as_ref();
            let path = if p.is_empty() {
                root.path().to_owned()
            } else {
                format!("{}{p}/", root.path())
            };
            u.set_path(&path);
            u
        };
        // Archives written before strings were stored as views read the same: DataFusion casts
        // their columns to the table's types.
        for (table, schema) in [("events", event_schema()?), ("alerts", alert_schema())] {
            let schema = with_string_views(&schema);
            let url = base
                .join(&format!("{table}/"))
                .map_err(|e| QueryError::Config(format!("archive {location}: {e}")))?;
            let table_url = ListingTableUrl::parse(url.as_str())?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(
                    partition_fields()
                        .into_iter()
                        .map(|f| (f.name().clone(), f.data_type().clone()))
                        .collect(),
                );
            let config = ListingTableConfig::new(table_url)
                .with_listing_options(options)
                .with_schema(schema);
            // Without the runtime's statistics cache the table re-derives every file's
            // statistics from its footer on each query: on the 10M-event archive of
            // benches/sql_vs_duckdb.sh (112 files) that was most of a `count(*)` (41 → 7 ms)
            // and about 90 ms of `GROUP BY outcome`. Entries are keyed by path and checked
            // against size and mtime, so a rewritten file is read again.
            let provider = ListingTable::try_new(config)?.with_cache(
                self.ctx
                    .runtime_env()
                    .cache_manager
                    .get_file_statistic_cache(),
            );
            let name = format!("archive_{table}");
            self.ctx.register_table(&name, Arc::new(provider))?;
            match table {
                "events" => self.archive_events = true,
                _ => self.archive_alerts = true,
            }
        }
        self.define_views().await
    }

    /// Adds recorded events (already normalized and enriched) to the `events` table.
    pub async fn add_events(&mut self, events: &[AuthEvent]) -> Result<(), QueryError> {
        let batches: Vec<RecordBatch> = events
            .chunks(65_536)
            .map(|c| {
                events_to_batch(c)
                    .and_then(|b| string_views(&b))
                    .and_then(|b| add_partitions(&b, "time"))
            })
            .collect::<Result<_, _>>()?;
        let schema = with_partitions(&with_string_views(event_schema()?.as_ref()));
        let table = MemTable::try_new(schema, vec![batches])?;
        self.ctx.deregister_table("input_events")?;
        self.ctx.register_table("input_events", Arc::new(table))?;
        self.input_events = true;
        self.define_views().await
    }

    /// Adds alerts (e.g. of the same replay) to the `alerts` table.
    pub async fn add_alerts(&mut self, alerts: &[Alert]) -> Result<(), QueryError> {
        let batches: Vec<RecordBatch> = alerts
            .chunks(65_536)
            .map(|c| {
                alerts_to_batch(c)
                    .and_then(|b| string_views(&b))
                    .and_then(|b| add_partitions(&b, "window_start"))
            })
            .collect::<Result<_, _>>()?;
        let schema = with_partitions(&with_string_views(&alert_schema()));
        let table = MemTable::try_new(schema, vec![batches])?;
        self.ctx.deregister_table("input_alerts")?;
        self.ctx.register_table("input_alerts", Arc::new(table))?;
        self.input_alerts = true;
        self.define_views().await
    }

    /// Makes a running pipeline's recent events the `live_events` table (`authwatch run`
    /// registers its pipeline's window here, `authwatch serve --input …` the window of the
    /// replay of its files).
    pub fn with_live_window(&mut self, window: LiveWindow) -> Result<(), QueryError> {
        self.ctx.deregister_table("live_events")?;
        self.ctx
            .register_table("live_events", Arc::new(LiveTable(window)))?;
        Ok(())
    }

    /// `events` / `alerts`: the archive, the recorded files, or both (UNION ALL).
    async fn define_views(&mut self) -> Result<(), QueryError> {
        for (table, archive, input) in [
            ("events", self.archive_events, self.input_events),
            ("alerts", self.archive_alerts, self.input_alerts),
        ] {
            let sources: Vec<String> = [
                archive.then(|| format!("archive_{table}")),
                input.then(|| format!("input_{table}")),
            ]
            .into_iter()
            .flatten()
            .collect();
            if sources.is_empty() {
                continue;
            }
            let provider: Arc<dyn TableProvider> = if sources.len() == 1 {
                self.ctx.table_provider(sources[0].as_str()).await?
            } else {
                let sql = sources
                    .iter()
                    .map(|s| format!("SELECT * FROM {s}"))
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ");
                let plan = self.ctx.state().create_logical_plan(&sql).await?;
                Arc::new(datafusion::datasource::ViewTable::new(plan, Some(sql)))
            };
            self.ctx.deregister_table(table)?;
            self.ctx.register_table(table, provider)?;
        }
        Ok(())
    }

    /// Plans one read-only statement without running anything. Every way in (the endpoint's
    /// simple query, parse and describe, `authwatch sql`) comes through here.
    ///
    /// The text is parsed once with DataFusion's own parser, so what is checked is what would
    /// run: only a query, `EXPLAIN` of a query, `SHOW TABLES`, `SHOW COLUMNS`, `SHOW` of a
    /// setting and `DESCRIBE` pass ([`QueryError::ReadOnly`] otherwise). The plan is then made
    /// with the session state, not with `SessionContext::sql`, which runs DDL and `SET` as it
    /// plans, and checked again with [`SQLOptions`] (no DDL, DML or session statements): a
    /// query that would write (`SELECT … INTO`) is refused as well.
    pub async fn plan(&self, sql: &str) -> Result<LogicalPlan, QueryError> {
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state
            .sql_to_statement(sql, &dialect)
            .map_err(|e| sql_error(&e))?;
        check_statement(&statement)?;
        let plan = state
            .statement_to_plan(statement.clone())
            .await
            .map_err(|e| sql_error(&e))?;
        read_only_options()
            .verify_plan(&plan)
            .map_err(|_| QueryError::ReadOnly(statement_kind(&statement)))?;
        Ok(plan)
    }

    /// Runs one read-only statement ([`Catalog::plan`]) and collects every row (for
    /// `authwatch sql`, whose output is the caller's to bound).
    pub async fn query(&self, sql: &str) -> Result<QueryResult, QueryError> {
        let plan = self.plan(sql).await?;
        let df = self
            .ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|e| sql_error(&e))?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(|e| sql_error(&e))?;
        Ok(QueryResult { schema, batches })
    }

    /// Runs one read-only statement ([`Catalog::plan`]) and keeps at most `max_rows` rows: the
    /// result is streamed and no more is pulled once `max_rows + 1` rows (one more tells a cut
    /// result from one that fits) have arrived, or once the rows kept would exceed the
    /// session's memory limit ([`Catalog::with_limits`]). The rows kept are reserved in the
    /// session's memory pool until the result is dropped.
    pub async fn query_limited(
        &self,
        sql: &str,
        max_rows: usize,
    ) -> Result<LimitedResult, QueryError> {
        let plan = self.plan(sql).await?;
        // A limit on top lets DataFusion stop early (a top-k instead of a full sort, scans that
        // end). EXPLAIN is left alone: its output describes the plan under it.
        let plan = match plan {
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => plan,
            plan => LogicalPlanBuilder::from(plan)
                .limit(0, Some(max_rows.saturating_add(1)))
                .and_then(LogicalPlanBuilder::build)
                .map_err(|e| sql_error(&e))?,
        };
        let df = self
            .ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|e| sql_error(&e))?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let mut stream = df.execute_stream().await.map_err(|e| sql_error(&e))?;
        let reservation = MemoryConsumer::new("authwatch result rows")
            .register(&self.ctx.runtime_env().memory_pool);
        let mut batches = Vec::new();
        let mut rows = 0usize;
        let mut truncated = None;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| sql_error(&e))?;
            let (batch, more) = if rows + batch.num_rows() > max_rows {
                (batch.slice(0, max_rows - rows), true)
            } else {
                (batch, false)
            };
            if reservation.try_grow(batch.get_array_memory_size()).is_err() {
                truncated = Some(Truncation::Memory { rows });
                break;
            }
            rows += batch.num_rows();
            if batch.num_rows() > 0 {
                batches.push(batch);
            }
            if more {
                truncated = Some(Truncation::MaxRows(max_rows));
                break;
            }
        }
        // Dropping the stream stops the execution: nothing more is read.
        drop(stream);
        Ok(LimitedResult {
            result: QueryResult { schema, batches },
            truncated,
            _reservation: reservation,
        })
    }
}

/// Why [`Catalog::query_limited`] returned fewer rows than the query has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncation {
    /// The query has more rows than the limit given (`serve.max_rows`).
    MaxRows(usize),
    /// Keeping more rows would have gone beyond the session's memory limit; `rows` were kept.
    Memory {
        /// Rows kept.
        rows: usize,
    },
}

impl std::fmt::Display for Truncation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Truncation::MaxRows(n) => write!(
                f,
                "result cut at {n} rows (serve.max_rows); add a LIMIT or a narrower WHERE to see the rest"
            ),
            Truncation::Memory { rows } => write!(
                f,
                "result cut at {rows} rows: more would exceed the endpoint's memory limit; add a LIMIT or select fewer columns"
            ),
        }
    }
}

/// The rows [`Catalog::query_limited`] kept, and whether it cut them short. Holds their memory
/// reservation until dropped.
#[derive(Debug)]
pub struct LimitedResult {
    /// The rows kept.
    pub result: QueryResult,
    /// Why rows are missing, if they are.
    pub truncated: Option<Truncation>,
    /// The rows' share of the session's memory pool, released on drop.
    _reservation: MemoryReservation,
}

/// What a read-only session may plan: no DDL (which could also read any file the process can,
/// through `CREATE EXTERNAL TABLE`), no DML, no `SET` or transactions.
fn read_only_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// A DataFusion error as a [`QueryError`]: memory refusals apart (the endpoint reports them
/// with their own SQLSTATE), everything else with its position in the query.
fn sql_error(e: &datafusion::error::DataFusionError) -> QueryError {
    match e.find_root() {
        // The refusal's own words: the rule or task it came through adds nothing for the
        // analyst ("authwatch_guard_amplifiers caused by …").
        root @ datafusion::error::DataFusionError::ResourcesExhausted(_) => {
            QueryError::ResourcesExhausted(root.to_string())
        }
        _ => QueryError::Sql(with_position(e)),
    }
}

/// Refuses every parsed statement but queries and the catalog's read-only introspection.
fn check_statement(statement: &DFStatement) -> Result<(), QueryError> {
    let refused = || Err(QueryError::ReadOnly(statement_kind(statement)));
    match statement {
        DFStatement::Statement(s) => match s.as_ref() {
            SqlStatement::Query(q) => {
                // `SELECT … INTO t` creates a table (also refused by the plan check below;
                // refused here with a clearer name).
                if let SetExpr::Select(select) = q.body.as_ref()
                    && select.into.is_some()
                {
                    return Err(QueryError::ReadOnly("SELECT … INTO".into()));
                }
                Ok(())
            }
            SqlStatement::Explain { statement, .. } => match statement.as_ref() {
                SqlStatement::Query(_) => Ok(()),
                _ => refused(),
            },
            SqlStatement::ShowTables { .. }
            | SqlStatement::ShowColumns { .. }
            | SqlStatement::ShowVariable { .. }
            | SqlStatement::ShowFunctions { .. }
            | SqlStatement::ShowCreate { .. }
            | SqlStatement::ExplainTable { .. } => Ok(()),
            _ => refused(),
        },
        DFStatement::Explain(explain) => match explain.statement.as_ref() {
            inner @ DFStatement::Statement(s) if matches!(s.as_ref(), SqlStatement::Query(_)) => {
                check_statement(inner)
            }
            _ => refused(),
        },
        DFStatement::CreateExternalTable(_) | DFStatement::CopyTo(_) | DFStatement::Reset(_) => {
            refused()
        }
    }
}

/// The name of a statement for messages: its first words as the parser prints it back (no
/// comments left to mislead), e.g. `DROP`, `CREATE EXTERNAL TABLE`, `COPY`.
fn statement_kind(statement: &DFStatement) -> String {
    match statement {
        DFStatement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE".into(),
        DFStatement::CopyTo(_) => "COPY".into(),
        DFStatement::Reset(_) => "RESET".into(),
        DFStatement::Explain(_) => "EXPLAIN".into(),
        DFStatement::Statement(s) => s
            .to_string()
            .split(|c: char| !c.is_ascii_alphabetic())
            .find(|w| !w.is_empty())
            .unwrap_or("this")
            .to_ascii_uppercase(),
    }
}

/// DataFusion's message, with the line and column of the query when the error carries a span
/// (the parser puts "at Line: l, Column: c" in its own messages).
pub(crate) fn with_position(e: &datafusion::error::DataFusionError) -> String {
    let text = describe_datafusion_error(e);
    match e.diagnostic().and_then(|d| d.span) {
        Some(span) if !text.contains("Line:") => format!(
            "{text} (at line {}, column {})",
            span.start.line, span.start.column
        ),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use datafusion::arrow::array::Int64Array;

    /// A catalog whose `events` table has one column `n` holding 0..rows, in batches of 100.
    fn catalog_with(rows: i64, memory_limit: Option<usize>) -> Catalog {
        let catalog = Catalog::with_limits(ARCHIVE_LISTING_TTL, memory_limit).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batches: Vec<RecordBatch> = (0..rows)
            .step_by(100)
            .map(|from| {
                let values = Int64Array::from_iter_values(from..(from + 100).min(rows));
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(values)]).unwrap()
            })
            .collect();
        let table = MemTable::try_new(schema, vec![batches]).unwrap();
        catalog
            .context()
            .register_table("events", Arc::new(table))
            .unwrap();
        catalog
    }

    async fn count(c: &Catalog) -> i64 {
        let r = c.query("SELECT count(*) AS n FROM events").await.unwrap();
        r.batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0)
    }

    #[tokio::test]
    async fn statements_other_than_queries_are_refused() {
        let c = catalog_with(10, None);
        for ok in [
            "SELECT 1",
            "  -- note\n with x as (select 1) select * from x",
            "(SELECT 1)",
            "SELECT n FROM events;",
            "VALUES (1)",
            "EXPLAIN SELECT n FROM events",
            "SHOW TABLES",
            "SHOW COLUMNS FROM events",
            "DESCRIBE events",
        ] {
            c.plan(ok).await.unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let e = c.plan("DROP TABLE events").await.unwrap_err().to_string();
        assert!(e.contains("read-only: DROP statements are refused"), "{e}");
        for (sql, kind) in [
            ("/* x */ insert into events values (1)", "INSERT"),
            ("COPY events TO 'x.csv'", "COPY"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("SELECT n INTO copy_of_events FROM events", "SELECT … INTO"),
            ("EXPLAIN DROP TABLE events", "EXPLAIN"),
            ("BEGIN", "BEGIN"),
        ] {
            match c.plan(sql).await {
                Err(QueryError::ReadOnly(k)) => assert_eq!(k, kind, "{sql}"),
                other => panic!("{sql}: {other:?}"),
            }
        }
        // A typo is a syntax error with its position, not a refused statement.
        let e = c.plan("SELEC 1").await.unwrap_err();
        assert!(matches!(e, QueryError::Sql(_)), "{e}");
        assert!(e.to_string().contains("SELEC"), "{e}");
        assert_eq!(count(&c).await, 10);
    }

    /// Regression: a guard that read the first keyword after comments was fooled by nested
    /// comments, and `SessionContext::sql` ran the DDL it let through.
    #[tokio::test]
    async fn nested_comments_do_not_hide_ddl() {
        let c = catalog_with(10, None);
        for sql in [
            "/* /* */ SELECT */ DROP TABLE events",
            "/* /* */ SELECT */ CREATE EXTERNAL TABLE passwd (line VARCHAR) STORED AS CSV \
             LOCATION '/etc/passwd'",
            "/* /* */ SELECT */ SET datafusion.execution.batch_size = 1",
        ] {
            assert!(
                matches!(c.plan(sql).await, Err(QueryError::ReadOnly(_))),
                "{sql}"
            );
            assert!(
                matches!(c.query(sql).await, Err(QueryError::ReadOnly(_))),
                "{sql}"
            );
        }
        assert_eq!(count(&c).await, 10);
        assert!(c.query("SELECT * FROM passwd").await.is_err());
        let batch_size = c
            .context()
            .state()
            .config()
            .options()
            .execution
            .batch_size
            .get();
        assert_ne!(batch_size, 1);
        // No file can be read by naming it either.
        assert!(c.query("SELECT * FROM '/etc/passwd'").await.is_err());
    }

    #[tokio::test]
    async fn results_stop_at_max_rows_and_say_so() {
        let c = catalog_with(1000, None);
        let r = c.query_limited("SELECT n FROM events", 250).await.unwrap();
        assert_eq!(r.result.rows(), 250);
        assert_eq!(r.truncated, Some(Truncation::MaxRows(250)));
        // Exactly as many rows as allowed is not a cut.
        let r = c.query_limited("SELECT n FROM events", 1000).await.unwrap();
        assert_eq!((r.result.rows(), r.truncated), (1000, None));
        // An ordered result is the first rows of the order.
        let r = c
            .query_limited("SELECT n FROM events ORDER BY n DESC", 3)
            .await
            .unwrap();
        let first = r.result.batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!((r.result.rows(), first), (3, 999));
        // EXPLAIN is not cut into.
        let r = c
            .query_limited("EXPLAIN SELECT n FROM events", 1000)
            .await
            .unwrap();
        assert!(r.result.rows() >= 2 && r.truncated.is_none());
    }

    #[tokio::test]
    async fn results_are_held_within_the_memory_limit() {
        // Room for a few batches of 100 rows only.
        let c = catalog_with(100_000, Some(8 * 1024));
        let r = c
            .query_limited("SELECT n FROM events", 1_000_000)
            .await
            .unwrap();
        assert!(
            matches!(r.truncated, Some(Truncation::Memory { rows }) if rows == r.result.rows() && rows < 100_000),
            "{:?}",
            r.truncated
        );
        // The reservation goes with the result.
        let pool = Arc::clone(&c.context().runtime_env().memory_pool);
        assert!(pool.reserved() > 0);
        drop(r);
        assert_eq!(pool.reserved(), 0);
        // A query refused memory fails as such (SQLSTATE 53200 at the endpoint), even when
        // DataFusion wraps the refusal.
        let refused = datafusion::error::DataFusionError::ResourcesExhausted("sort".into());
        let wrapped = datafusion::error::DataFusionError::Context("x".into(), Box::new(refused));
        assert!(matches!(
            sql_error(&wrapped),
            QueryError::ResourcesExhausted(_)
        ));
    }

    const MIB: usize = 1024 * 1024;

    /// The error of a query the endpoint's catalog must refuse for its size.
    async fn refused(c: &Catalog, sql: &str) -> String {
        match c.query_limited(sql, 1_000_000).await {
            Err(QueryError::ResourcesExhausted(e)) => e,
            Err(e) => panic!("{sql}: not refused for its size: {e}"),
            Ok(r) => panic!(
                "{sql}: answered ({} rows, {:?}) instead of refused",
                r.result.rows(),
                r.truncated
            ),
        }
    }

    /// Regression: the pool only saw operators that reserve memory, so
    /// `SELECT repeat('x', 100000000) FROM range(20)` built 2 GB with the pool at 512 MiB. Calls
    /// whose result an argument multiplies are checked before they build it, whether the
    /// argument is a literal or a column.
    #[tokio::test]
    async fn amplifying_calls_are_refused_before_they_build() {
        let c = catalog_with(10, Some(16 * MIB));
        for (sql, function) in [
            ("SELECT repeat('x', 10000000) FROM range(20)", "repeat()"),
            ("SELECT repeat('x', n * 10000000) FROM events", "repeat()"),
            ("SELECT lpad('x', 100000000)", "lpad()"),
            (
                "SELECT rpad(CAST(n AS VARCHAR), 5000000, 'é') FROM events",
                "rpad()",
            ),
            (
                "SELECT array_repeat(n, 10000000) FROM events",
                "array_repeat()",
            ),
            ("SELECT range(n * 1000000) FROM events", "range()"),
            (
                "SELECT generate_series(DATE '1970-01-01', DATE '9999-12-31', INTERVAL '1 second')",
                "generate_series()",
            ),
            ("SELECT array_resize([1, 2], 10000000)", "array_resize()"),
            (
                "SELECT array_to_string(range(1000000), repeat('-', 100))",
                "array_to_string()",
            ),
            (
                "SELECT replace(repeat('ab', 2000), 'a', repeat('z', 10000))",
                "replace()",
            ),
            (
                "SELECT regexp_replace(repeat('ab', 2000), '', repeat('z', 8000), 'g')",
                "regexp_replace()",
            ),
        ] {
            let e = refused(&c, sql).await;
            assert!(e.contains(function) && e.contains("16.0 MiB"), "{sql}: {e}");
        }
        // Calls of a sensible size answer as before, columns named as before.
        let r = c
            .query_limited(
                "SELECT repeat('ab', 2) AS r, lpad(CAST(n AS VARCHAR), 3, '0') AS p, \
                 array_repeat(n, 2) AS a, range(n) AS s, replace('a-b', '-', '+') AS x \
                 FROM events WHERE n = 2",
                10,
            )
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&r.result.batches)
            .unwrap()
            .to_string();
        for value in ["abab", "002", "[2, 2]", "[0, 1]", "a+b"] {
            assert!(text.contains(value), "{value}: {text}");
        }
        drop(r);
        let r = c.query("SELECT repeat('x', 3)").await.unwrap();
        assert_eq!(r.schema.field(0).name(), "repeat(Utf8(\"x\"),Int64(3))");
        drop(r);
        // What the calls reserved is released with their query.
        assert_eq!(c.context().runtime_env().memory_pool.reserved(), 0);
    }

    /// What a chain of steps builds (each doubling its input here) is counted as it leaves
    /// each projection, and the query refused before it outgrows the pool.
    #[tokio::test]
    async fn batches_that_projections_build_are_counted() {
        let c = catalog_with(10, Some(16 * MIB));
        let e = refused(
            &c,
            "WITH a AS (SELECT repeat('x', 100000) AS s FROM range(8)), \
                  b AS (SELECT s || s AS s FROM a), c AS (SELECT s || s AS s FROM b), \
                  d AS (SELECT s || s AS s FROM c), e AS (SELECT s || s AS s FROM d), \
                  f AS (SELECT s || s AS s FROM e), g AS (SELECT s || s AS s FROM f) \
             SELECT length(s) FROM g",
        )
        .await;
        assert!(e.contains("ProjectionExec built a batch"), "{e}");
        assert_eq!(c.context().runtime_env().memory_pool.reserved(), 0);
        // A literal the size of the limit over a batch is refused as the query is planned.
        let big = "y".repeat(64 * 1024);
        let e = refused(&c, &format!("SELECT '{big}' AS s FROM range(10)")).await;
        assert!(e.starts_with("Resources exhausted: a literal of"), "{e}");
        // The catalog of `authwatch sql` (no limit) is left alone.
        let unbounded = catalog_with(10, None);
        let plan = unbounded
            .query("EXPLAIN SELECT n + 1 FROM events")
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&plan.batches)
            .unwrap()
            .to_string();
        assert!(!text.contains("CountedOutput"), "{text}");
        let plan = c.query("EXPLAIN SELECT n + 1 FROM events").await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&plan.batches)
            .unwrap()
            .to_string();
        assert!(text.contains("CountedOutput"), "{text}");
    }
}
