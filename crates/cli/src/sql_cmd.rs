//! `authwatch sql`: ad-hoc SQL over the Parquet archive and/or recorded files, and
//! `authwatch serve`: the same catalog over the Postgres wire protocol.

use anyhow::{Context, Result, bail};
use authwatch_event::{Alert, AuthEvent};
use authwatch_pipeline::{
    Config, DeadLetter, LateEvent, LineSource, Pipeline, Sink, SinkError, Speed,
};
use authwatch_query::{
    ARCHIVE_LISTING_TTL, ArchiveOptions, ArchiveSink, ArchiveWriter, Catalog, LiveWindow,
    OutputFormat, QueryError, SqlDetections, server, server::ServerOptions, write_result,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// `authwatch sql`
#[derive(Debug, clap::Args)]
#[command(override_usage = "authwatch sql [OPTIONS] <QUERY>\n       \
                            authwatch sql <QUERY> --input <FILE>... [OPTIONS]")]
pub struct SqlArgs {
    /// One query (SELECT, WITH, SHOW, EXPLAIN, DESCRIBE). Tables: `events`, `alerts`.
    /// Required: it may also follow `--input FILE…` (`sql --input f.jsonl "SELECT …"`).
    #[arg(value_name = "QUERY")]
    query: Option<String>,
    #[command(flatten)]
    sources: SourceArgs,
    /// Output: `table`, `csv` or `json` (one object per line).
    #[arg(long, default_value = "table", value_name = "table|csv|json")]
    format: OutputFormat,
    /// Benchmark: run the query N times and print the best wall time and the row count instead
    /// of the rows (used by benches/sql_vs_duckdb.sh).
    #[arg(long, value_name = "N")]
    bench: Option<u32>,
}

/// Where the tables come from (shared by `sql` and `serve`).
#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    /// An archive written by `replay --archive` (directory or s3:// gs:// az:// URL).
    #[arg(long, value_name = "DIR|URL")]
    archive: Option<String>,
    /// Recorded files of any supported format, replayed through the pipeline (normalized,
    /// enriched, with the rules' alerts) into the `events` and `alerts` tables, in the order
    /// given (oldest first: events far behind newer ones are left out, and counted).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    input: Vec<PathBuf>,
    /// Configuration file (enrichment, rules, [archive], [serve]).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// `authwatch serve`
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    sources: SourceArgs,
    /// Address to listen on; overrides serve.listen.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

/// Unreadable lines named one by one on standard error before the summary gives only their
/// total: a binary file would otherwise print one line for each of its thousands of lines.
const DEAD_LETTERS_SHOWN: u64 = 10;

/// Keeps what a replay of the inputs produced.
struct CollectSink {
    events: Vec<AuthEvent>,
    alerts: Vec<Alert>,
    dead_letters: u64,
}

impl Sink for CollectSink {
    fn alert(&mut self, alert: &Alert) -> Result<(), SinkError> {
        self.alerts.push(alert.clone());
        Ok(())
    }
    fn dead_letter(&mut self, record: &DeadLetter) -> Result<(), SinkError> {
        self.dead_letters += 1;
        if self.dead_letters <= DEAD_LETTERS_SHOWN {
            eprintln!(
                "authwatch: {}:{}: skipped: {}",
                record.file, record.line, record.detail
            );
        }
        Ok(())
    }
    fn late_event(&mut self, _: &LateEvent) -> Result<(), SinkError> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    fn wants_events(&self) -> bool {
        true
    }
    fn event(&mut self, event: &AuthEvent) -> Result<(), SinkError> {
        self.events.push(event.clone());
        Ok(())
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    let config = match path {
        Some(p) => Config::load(p)?,
        None => Config::from_env()?,
    };
    config.validate()?;
    Ok(config)
}

/// What a replay of the inputs produced: events, alerts, and the live window it fed.
struct Loaded {
    events: Vec<AuthEvent>,
    alerts: Vec<Alert>,
    live: LiveWindow,
}

/// Replays the inputs through the pipeline (outside any async runtime: the pipeline and the SQL
/// detections run their own threads and runtimes).
fn load_inputs(sources: &SourceArgs, config: &Config) -> Result<Option<Loaded>> {
    if sources.archive.is_none() && sources.input.is_empty() {
        bail!("nothing to query: give --archive DIR and/or --input FILE…");
    }
    if sources.input.is_empty() {
        return Ok(None);
    }
    let live = LiveWindow::new(
        config.serve.live_window.millis(),
        config.serve.live_max_rows,
    )?;
    let pack = crate::replay::load_rules(config)?;
    let mut source = LineSource::open_files(
        &sources.input,
        config.input.max_line_bytes,
        config.input.dead_letter_raw_bytes,
    )?;
    let pipeline =
        Pipeline::new(config.clone(), pack)?.with_stream_detectors(Arc::new(live.clone()));
    let (pipeline, sql_failures) = crate::replay::with_sql_detections(pipeline, config)?;
    let sink = CollectSink {
        events: Vec::new(),
        alerts: Vec::new(),
        dead_letters: 0,
    };
    let order = crate::replay::OrderCheck::new(config);
    let (summary, sink) = pipeline.run(&mut source, sink, Speed::Max)?;
    // The query still runs; the `alerts` table may lack what a failed detection missed.
    sql_failures.report();
    // Late events are not in the tables: a count without a word would read as the answer.
    eprintln!("{}", loaded_summary(&summary, config));
    let jump = pipeline.largest_jump();
    if let Some(hint) = order.hint(
        &summary,
        &sources.input,
        jump.as_ref(),
        config.output.language,
    ) {
        eprintln!("{hint}");
    }
    crate::table::require_events(&summary, sources.input.iter().map(|f| f.display()))?;
    Ok(Some(Loaded {
        events: sink.events,
        alerts: sink.alerts,
        live,
    }))
}

/// One line on what `--input` loaded: events, late events left out, unreadable lines by
/// reason (the same counts `replay` prints).
fn loaded_summary(summary: &authwatch_pipeline::RunSummary, config: &Config) -> String {
    let mut line = format!(
        "authwatch: --input: {} events read, {} alerts",
        summary.events, summary.alerts
    );
    if summary.late_events > 0 {
        let lateness = crate::explain::duration_words(
            config.event_time.allowed_lateness.0,
            config.output.language,
        );
        line.push_str(&format!(
            "; {} of the events left out of the tables as late (more than {lateness} behind \
             newer ones, event_time.allowed_lateness: give the files oldest first)",
            summary.late_events
        ));
    }
    let rejected: u64 = summary.dead_letters.iter().map(|(_, n)| n).sum();
    if rejected > 0 {
        let parts: Vec<String> = summary
            .dead_letters
            .iter()
            .map(|(k, n)| format!("{} {n}", k.as_str()))
            .collect();
        line.push_str(&format!(
            "; {rejected} unreadable lines skipped ({})",
            parts.join(", ")
        ));
    }
    line
}

/// The catalog: archive tables, then what the inputs produced (and `live_events`); with
/// `memory_limit`, the most memory its queries hold together (the endpoint's).
async fn build_catalog(
    sources: &SourceArgs,
    loaded: Option<Loaded>,
    memory_limit: Option<usize>,
) -> Result<Catalog> {
    let mut catalog = Catalog::with_limits(ARCHIVE_LISTING_TTL, memory_limit)?;
    if let Some(location) = &sources.archive {
        // A local archive that is not there is a wrong path: opening it would create it, and
        // every query would answer "nothing" with success. (An object store prefix with nothing
        // under it is a new archive, as is an empty directory.)
        if let Some(dir) = authwatch_query::local_dir(location)
            && !std::path::Path::new(dir).is_dir()
        {
            bail!("--archive {location}: no such directory");
        }
        catalog
            .add_archive(location)
            .await
            .with_context(|| format!("cannot open the archive {location}"))?;
    }
    if let Some(l) = loaded {
        catalog.add_events(&l.events).await?;
        catalog.add_alerts(&l.alerts).await?;
        catalog.with_live_window(l.live)?;
    }
    Ok(catalog)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    endpoint_runtime(0)
}

/// Workers of the endpoint's own runtime, which serves connections (accept, TLS, SCRAM,
/// sending rows, timers, cancel requests); its queries execute on threads of their own
/// (`serve.worker_threads`, [`ServerOptions::query_threads`]).
const CONNECTION_THREADS: usize = 2;

/// A runtime with `threads` workers (0: one per core), and, for blocking file reads, at most
/// four times as many blocking threads (tokio's default would allow 512; reads mostly wait on
/// the disk, so a few more than the workers keep scans from queueing behind each other), so
/// this caps the cores they take.
fn endpoint_runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder
            .worker_threads(threads)
            .max_blocking_threads(threads.saturating_mul(4));
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The query, wherever it was given. `--input` takes several files (`--input a.jsonl
/// b.jsonl`), so in `sql --input f.jsonl "SELECT …"` it takes the query too: the last `--input`
/// value is the query when no query was given apart and it is not a file but words.
fn take_query(args: &mut SqlArgs) -> Result<String> {
    if let Some(query) = args.query.take() {
        return Ok(query);
    }
    let inputs = &mut args.sources.input;
    if let Some(last) = inputs.last()
        && !last.exists()
        && last
            .to_str()
            .is_some_and(|q| q.trim().contains(char::is_whitespace))
    {
        let query = last.to_string_lossy().into_owned();
        inputs.pop();
        return Ok(query);
    }
    bail!(
        "no QUERY given: authwatch sql QUERY [--input FILE…] [--archive DIR] (a file given to \
         --input is not a query)"
    )
}

pub fn run_sql(mut args: SqlArgs) -> Result<ExitCode> {
    let query = take_query(&mut args)?;
    let config = load_config(args.sources.config.as_ref())?;
    let loaded = load_inputs(&args.sources, &config)?;
    let rt = runtime()?;
    rt.block_on(async {
        // The analyst's own process: no memory limit but the machine's.
        let catalog = build_catalog(&args.sources, loaded, None).await?;
        let archive = args.sources.archive.as_deref();
        if let Some(n) = args.bench {
            let mut best = std::time::Duration::MAX;
            let mut rows = 0;
            for _ in 0..n.max(1) {
                let started = std::time::Instant::now();
                let result = match catalog.query(&query).await {
                    Ok(result) => result,
                    Err(e) => bail!("{}", query_failure(&catalog, archive, &e).await),
                };
                best = best.min(started.elapsed());
                rows = result.rows();
            }
            writeln!(
                crate::stdout(),
                "best_ms={:.1} rows={rows}",
                best.as_secs_f64() * 1000.0
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        match catalog.query(&query).await {
            Ok(result) => {
                let mut out = crate::stdout();
                let written = write_result(&result, args.format, &mut out)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| Ok(out.flush()?));
                // The JSON writer turns an I/O error into text; the writer remembers
                // that standard output went away.
                if written.is_err() && out.closed() {
                    return Err(crate::StdoutClosed.into());
                }
                written?;
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!(
                    "authwatch sql: {}",
                    query_failure(&catalog, archive, &e).await
                );
                Ok(ExitCode::from(1))
            }
        }
    })
}

/// What a failed query tells the analyst: [`error_text`], and for a Parquet error of an
/// archive, the option and the file. DataFusion's Parquet errors name no file ("Invalid Parquet
/// file. Corrupt footer"), and an archive holds a file per partition and flush.
async fn query_failure(catalog: &Catalog, archive: Option<&str>, e: &QueryError) -> String {
    let text = error_text(&e.to_string());
    // "Parquet error: …", "Parquet argument error: …": the Parquet crate's words, as
    // DataFusion passes them on.
    let Some(location) = archive.filter(|_| text.contains("Parquet")) else {
        return text;
    };
    let bad = match authwatch_query::local_dir(location) {
        Some(dir) => unreadable_parquet(catalog, Path::new(dir)).await,
        // A remote archive's objects are listed through the store the catalog keeps to itself:
        // the option is named, not the object.
        None => Vec::new(),
    };
    match bad.as_slice() {
        [] => format!("--archive {location}: {text}"),
        [(file, why)] => format!("--archive {location}: {}: {why}", file.display()),
        [(file, why), rest @ ..] => format!(
            "--archive {location}: {}: {why} (and {} more unreadable Parquet files)",
            file.display(),
            rest.len()
        ),
    }
}

/// The Parquet files of a local archive's tables whose footer cannot be read, with why, in name
/// order. Each is read as the failed query read it: by DataFusion, through the catalog's
/// session. A file whose footer reads but whose data pages are corrupt is not found: finding it
/// would mean decoding the whole archive again.
async fn unreadable_parquet(catalog: &Catalog, dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.join("events"), dir.join("alerts")];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            // Not through symbolic links to directories: a link to a parent would never end.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "parquet") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut bad = Vec::new();
    for file in files {
        let Some(name) = file.to_str() else {
            continue;
        };
        if let Err(e) = catalog
            .context()
            .read_parquet(name, Default::default())
            .await
        {
            let why = error_text(&e.to_string());
            bad.push((file, why));
        }
    }
    bad
}

/// A SQL-side error as the user should read it. DataFusion's message for a SQL syntax error
/// carries the parser's error in its Debug form (`SQL error: ParserError("Expected: …")`: its
/// own `Display` formats it with `{:?}`), and a Parquet error's prefix comes twice (DataFusion's
/// and the Parquet crate's). `crates/query` hands these messages on as text, so they are mended
/// here: the parser's error in its Display form, the prefix once.
pub(crate) fn error_text(message: &str) -> String {
    const PARSER: &str = "sql parser error: ";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((at, len)) = ["ParserError(\"", "TokenizerError(\""]
        .iter()
        .filter_map(|p| Some((rest.find(p)?, p.len())))
        .min()
    {
        let (before, after) = rest.split_at(at + len);
        match debug_str(after) {
            Some((inner, tail)) if tail.starts_with(')') => {
                out.push_str(&before[..at]);
                out.push_str(PARSER);
                out.push_str(&inner);
                rest = &tail[1..];
            }
            _ => {
                out.push_str(before);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    let out = out.replace(
        "SQL error: RecursionLimitExceeded",
        "SQL error: sql parser error: recursion limit exceeded",
    );
    out.replace("Parquet error: Parquet error: ", "Parquet error: ")
}

/// The text of a string literal as `{:?}` writes it, read up to its closing quote: the text and
/// what follows the quote; `None` if `s` is not such a literal.
fn debug_str(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut rest = s;
    loop {
        let mut chars = rest.chars();
        let c = chars.next()?;
        rest = chars.as_str();
        match c {
            '"' => return Some((out, rest)),
            '\\' => {
                let mut chars = rest.chars();
                let escaped = chars.next()?;
                rest = chars.as_str();
                match escaped {
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    '0' => out.push('\0'),
                    '\\' | '"' | '\'' => out.push(escaped),
                    'u' => {
                        let (hex, after) = rest.strip_prefix('{')?.split_once('}')?;
                        out.push(char::from_u32(u32::from_str_radix(hex, 16).ok()?)?);
                        rest = after;
                    }
                    _ => return None,
                }
            }
            c => out.push(c),
        }
    }
}

fn read_secret(config: &Config) -> Result<String> {
    let serve = &config.serve;
    if let Some(path) = &serve.password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("serve.password_file {}", path.display()))?;
        let line = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_end()
            .to_owned();
        if line.is_empty() {
            bail!("serve.password_file {}: the file is empty", path.display());
        }
        return Ok(line);
    }
    if let Some(var) = &serve.password_env {
        let value = std::env::var(var).with_context(|| {
            format!("serve.password_env: environment variable {var} is not set")
        })?;
        if value.is_empty() {
            bail!("serve.password_env: environment variable {var} is empty");
        }
        return Ok(value);
    }
    bail!(
        "serve needs a password: set serve.password_file or serve.password_env (never the password itself in the config)"
    )
}

/// The endpoint's authentication and TLS, from `[serve]` (secrets from files or env).
fn server_options(config: &Config) -> Result<ServerOptions> {
    let password = read_secret(config)?;
    let tls = match (&config.serve.tls_cert, &config.serve.tls_key) {
        (Some(c), Some(k)) => Some((
            std::fs::read(c).with_context(|| format!("serve.tls_cert {}", c.display()))?,
            std::fs::read(k).with_context(|| format!("serve.tls_key {}", k.display()))?,
        )),
        (None, None) => None,
        _ => bail!("serve.tls_cert and serve.tls_key go together"),
    };
    Ok(ServerOptions {
        user: config.serve.user.clone(),
        password,
        tls,
        max_rows: config.serve.max_rows,
        statement_timeout: Some(config.serve.statement_timeout.0).filter(|d| !d.is_zero()),
        // 0: one per core (`authwatch serve`); `authwatch run` sets its own default.
        query_threads: config.serve.worker_threads,
    })
}

pub fn run_serve(args: ServeArgs) -> Result<ExitCode> {
    let mut config = load_config(args.sources.config.as_ref())?;
    if let Some(listen) = &args.listen {
        config.serve.listen = listen.clone();
    }
    let options = server_options(&config)?;
    let loaded = load_inputs(&args.sources, &config)?;
    let threads = config.serve.worker_threads;
    let rt = endpoint_runtime(CONNECTION_THREADS)?;
    rt.block_on(async {
        let catalog =
            build_catalog(&args.sources, loaded, Some(server::default_memory_limit())).await?;
        if threads > 0 {
            catalog.set_target_partitions(threads);
        }
        let catalog = Arc::new(catalog);
        let listener = tokio::net::TcpListener::bind(&config.serve.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.serve.listen))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "authwatch serve: read-only SQL on postgres://{}@{addr}/ ({}), tables: events, alerts{}",
            config.serve.user,
            if options.tls.is_some() { "TLS" } else { "no TLS" },
            if args.sources.input.is_empty() { "" } else { ", live_events" },
        );
        tokio::select! {
            r = authwatch_query::server::serve(catalog, options, listener) => r?,
            _ = tokio::signal::ctrl_c() => eprintln!("authwatch serve: stopped"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The archive's options from `[archive]`.
pub fn archive_options(config: &Config) -> ArchiveOptions {
    let a = &config.archive;
    ArchiveOptions {
        location: a.location.clone(),
        file_rows: a.file_rows,
        max_buffered_rows: a.max_buffered_rows,
        row_group_rows: a.row_group_rows,
        max_buffer_age: a.max_buffer_age.0,
    }
}

/// The SQL detections' limits from `[sql]`.
pub fn sql_limits(config: &Config) -> authwatch_query::SqlLimits {
    authwatch_query::SqlLimits {
        max_buffered_rows: config.sql.max_buffered_rows,
        max_memory: config.sql.max_memory_mib.saturating_mul(1 << 20),
    }
}

/// Exports the SQL detections' counters, summed over every task, by `detection`:
/// `authwatch_sql_detection_failures_total`, `…_alerts_total`, `…_suppressed_total` and
/// `…_evicted_rows_total`.
pub fn export_sql_metrics(
    telemetry: &authwatch_telemetry::Telemetry,
    detections: &Arc<SqlDetections>,
) {
    let counted = Arc::clone(detections);
    telemetry.register_sql_detection_failures(move || counted.failures());
    let counted = Arc::clone(detections);
    telemetry.register_sql_detection_stats(move || {
        counted
            .stats()
            .into_iter()
            .map(|(detection, s)| authwatch_telemetry::SqlDetectionCounts {
                detection,
                alerts: s.alerts,
                suppressed: s.suppressed,
                evicted_rows: s.evicted,
            })
            .collect()
    });
}

/// `authwatch run`'s SQL side, as `[sql]`, `[archive]` and `[serve]` ask: the windowed SQL
/// detections in every pipeline, the Parquet archive in front of the Kafka sink, and the
/// Postgres-wire endpoint over the pipeline's live window (`live_events`) and the archive
/// (`events`, `alerts`). The endpoint runs on its own thread for the life of the process.
pub fn attach_to_runtime(
    mut runtime: authwatch_kafka::Runtime,
    config: &Config,
    telemetry: &authwatch_telemetry::Telemetry,
) -> Result<authwatch_kafka::Runtime> {
    if config.sql.enabled {
        let dir = &config.sql.dir;
        let named = |e| crate::replay::sql_dir_error(dir, e);
        let rules = authwatch_query::load_dir(dir).map_err(named)?;
        let detections =
            Arc::new(SqlDetections::with_limits(rules, sql_limits(config)).map_err(named)?);
        tracing::info!(rules = ?detections.rule_ids(), "windowed SQL detections");
        export_sql_metrics(telemetry, &detections);
        runtime = runtime.with_stream_detectors(detections);
    }
    if config.archive.enabled {
        let options = archive_options(config);
        // Opened once now, so that a bad location fails the start rather than each restart.
        ArchiveWriter::open(options.clone())
            .with_context(|| format!("archive {}", options.location))?;
        runtime = runtime.with_sink_layer(Arc::new(move |sink| {
            let writer = ArchiveWriter::open(options.clone()).map_err(|e| e.to_string())?;
            Ok(Box::new(ArchiveSink::new(sink, writer)) as Box<dyn Sink>)
        }));
    }
    if config.serve.enabled {
        let live = LiveWindow::new(
            config.serve.live_window.millis(),
            config.serve.live_max_rows,
        )?;
        runtime = runtime.with_stream_detectors(Arc::new(live.clone()));
        spawn_endpoint(config, live)?;
    }
    Ok(runtime)
}

/// Starts the endpoint of `authwatch run` on its own thread; returns once it listens (or
/// with the reason it cannot).
fn spawn_endpoint(config: &Config, live: LiveWindow) -> Result<()> {
    let mut options = server_options(config)?;
    let listen = config.serve.listen.clone();
    let archive = config
        .archive
        .enabled
        .then(|| config.archive.location.clone());
    // Few threads: the pipeline keeps the other cores.
    let threads = match config.serve.worker_threads {
        0 => 2,
        n => n,
    };
    options.query_threads = threads;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<std::net::SocketAddr>>();
    std::thread::Builder::new()
        .name("aw-sql-serve".into())
        .spawn(move || {
            let started = endpoint_runtime(CONNECTION_THREADS).and_then(|rt| {
                rt.block_on(async {
                    // Bounded: the endpoint shares the process with the pipeline.
                    let mut catalog = Catalog::with_limits(
                        ARCHIVE_LISTING_TTL,
                        Some(server::default_memory_limit()),
                    )?;
                    catalog.set_target_partitions(threads);
                    if let Some(location) = &archive {
                        catalog
                            .add_archive(location)
                            .await
                            .with_context(|| format!("cannot open the archive {location}"))?;
                    }
                    catalog.with_live_window(live)?;
                    let listener = tokio::net::TcpListener::bind(&listen)
                        .await
                        .with_context(|| format!("serve.listen: cannot listen on {listen}"))?;
                    let _ = ready_tx.send(Ok(listener.local_addr()?));
                    authwatch_query::server::serve(Arc::new(catalog), options, listener).await?;
                    Ok::<(), anyhow::Error>(())
                })
            });
            if let Err(e) = started {
                tracing::error!(error = %format!("{e:#}"), "SQL endpoint stopped");
                let _ = ready_tx.send(Err(e));
            }
        })
        .context("starting the SQL endpoint thread")?;
    match ready_rx.recv() {
        Ok(Ok(addr)) => {
            tracing::info!(%addr, "SQL endpoint: read-only Postgres wire (live_events, events, alerts)");
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => bail!("the SQL endpoint thread ended before it listened"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_errors_read_as_their_display_text() {
        let cases = [
            (
                r#"SQL error: ParserError("Expected: an expression, found: EOF")"#,
                "SQL error: sql parser error: Expected: an expression, found: EOF",
            ),
            (
                r#"x.sql: query: SQL error: TokenizerError("Unterminated string literal at Line: 1, Column: 8")"#,
                "x.sql: query: SQL error: sql parser error: Unterminated string literal at Line: \
                 1, Column: 8",
            ),
            (
                r#"SQL error: ParserError("Expected: ), found: \"a\\b\"\n\u{1b} at line 2, column 3")"#,
                "SQL error: sql parser error: Expected: ), found: \"a\\b\"\n\u{1b} at line 2, \
                 column 3",
            ),
            (
                "SQL error: RecursionLimitExceeded",
                "SQL error: sql parser error: recursion limit exceeded",
            ),
            (
                "Parquet error: Parquet error: Invalid Parquet file. Corrupt footer",
                "Parquet error: Invalid Parquet file. Corrupt footer",
            ),
            // Not a debug string literal: left as it is.
            (
                r#"ParserError("unterminated"#,
                r#"ParserError("unterminated"#,
            ),
            (r#"ParserError("a\q")"#, r#"ParserError("a\q")"#),
            (
                "Schema error: No field named nosuch.",
                "Schema error: No field named nosuch.",
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(error_text(message), expected, "{message}");
        }
    }

    /// The text DataFusion itself gives for a syntax error, through the catalog.
    #[tokio::test]
    async fn a_syntax_error_of_a_query_is_the_parser_s_text() {
        let catalog = Catalog::new().unwrap();
        let e = catalog.query("SELECT 1 WHERE").await.unwrap_err();
        let text = error_text(&e.to_string());
        assert!(
            text.starts_with("SQL error: sql parser error: Expected: an expression"),
            "{text}"
        );
    }
}
