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
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use std::sync::Arc;
use std::time::Duration;

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

/// A DataFusion session with authwatch's tables and functions. Read-only: [`Catalog::query`]
/// refuses DDL, DML and session statements.
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
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_ttl(Some(ttl)))
            .build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_optimizer_rules(crate::count_distinct::optimizer_rules())
            .with_physical_optimizer_rule(Arc::new(InternedAggregation))
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

    /// Makes a running pipeline's recent events the `live_events` table (the Kafka runtime and
    /// `authwatch serve --follow` register theirs here).
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

    /// Runs one read-only statement.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, QueryError> {
        check_read_only(sql)?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self
            .ctx
            .sql_with_options(sql, options)
            .await
            .map_err(|e| QueryError::Sql(with_position(&e)))?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df
            .collect()
            .await
            .map_err(|e| QueryError::Sql(with_position(&e)))?;
        Ok(QueryResult { schema, batches })
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

/// The first keyword of a statement, after comments and whitespace.
fn first_keyword(sql: &str) -> String {
    let mut rest = sql.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    rest.trim_start_matches('(')
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase()
}

/// Refuses anything but queries, with a message naming the statement.
pub(crate) fn check_read_only(sql: &str) -> Result<(), QueryError> {
    let kw = first_keyword(sql);
    match kw.as_str() {
        "SELECT" | "WITH" | "SHOW" | "EXPLAIN" | "DESCRIBE" | "DESC" | "VALUES" | "TABLE" => Ok(()),
        "" => Err(QueryError::Sql("empty query".into())),
        // Not a SQL keyword at all: a typo, which deserves a syntax error, not a refusal.
        other
            if datafusion::sql::sqlparser::keywords::ALL_KEYWORDS
                .binary_search(&other)
                .is_err() =>
        {
            Err(QueryError::Sql(format!(
                "syntax error at line 1: {other:?} does not start a SQL statement; queries start \
                 with SELECT, WITH, SHOW, EXPLAIN or DESCRIBE"
            )))
        }
        other => Err(QueryError::ReadOnly(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_other_than_queries_are_refused() {
        assert!(check_read_only("SELECT 1").is_ok());
        assert!(check_read_only("  -- note\n with x as (select 1) select * from x").is_ok());
        assert!(check_read_only("(SELECT 1)").is_ok());
        let e = check_read_only("DROP TABLE events")
            .unwrap_err()
            .to_string();
        assert!(e.contains("read-only: DROP statements are refused"), "{e}");
        assert!(matches!(
            check_read_only("/* x */ insert into events values (1)"),
            Err(QueryError::ReadOnly(k)) if k == "INSERT"
        ));
        assert!(matches!(
            check_read_only("COPY events TO 'x'"),
            Err(QueryError::ReadOnly(_))
        ));
        // A typo is a syntax error, not a refused statement.
        let e = check_read_only("SELEC 1").unwrap_err();
        assert!(matches!(e, QueryError::Sql(_)), "{e}");
        assert!(e.to_string().contains("\"SELEC\" does not start"), "{e}");
    }
}
