//! `authwatch replay` and `authwatch demo`: recorded streams through the full pipeline.

use crate::RulesArg;
use crate::progress::Progress;
use crate::table;
use anyhow::{Context, Result};
use authwatch_detect::RulePack;
use authwatch_pipeline::{
    Config, JsonLinesSink, Language, LatePolicy, LineSource, Pipeline, RunSummary, Source, Speed,
    WatermarkJump,
};
use authwatch_query::QueryError;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The bundled recorded stream: `authwatch gen --users 300 --days 3 --seed 7`, gzip-compressed
/// (see data/demo/README.md).
const DEMO_STREAM: &[u8] = include_bytes!("../../../data/demo/authwatch-demo.jsonl.gz");

/// Options shared by `demo` and `replay`.
#[derive(Debug, clap::Args)]
pub struct RunOptions {
    /// Configuration file (TOML; see config/authwatch.example.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    rules: RulesArg,
    /// Rejected lines as JSON lines.
    #[arg(long, value_name = "FILE")]
    dead_letter: Option<PathBuf>,
    /// Late events as JSON lines (sets event_time.late_events = side_output).
    #[arg(long, value_name = "FILE")]
    late_events: Option<PathBuf>,
    /// Replay speed: `max` or a factor of event time such as `60x`.
    #[arg(long, default_value = "max", value_name = "max|Nx")]
    speed: Speed,
    /// Input format (`auto` detects it per line); overrides input.format.
    #[arg(long, value_name = "FORMAT")]
    format: Option<authwatch_normalize::Format>,
    /// A declarative mapping (YAML) for a provider that is not built in; overrides input.mapping.
    #[arg(long, value_name = "FILE")]
    mapping: Option<PathBuf>,
    /// Language of the printed summaries: `en` or `ja`.
    #[arg(long, value_name = "en|ja")]
    lang: Option<String>,
    /// Also write enriched events and alerts as Parquet to this directory or object store URL
    /// (sets archive.enabled and archive.location).
    #[arg(long, value_name = "DIR|URL")]
    archive: Option<String>,
    /// Also run the windowed SQL detections of this directory (sets sql.enabled and sql.dir).
    #[arg(long, value_name = "DIR")]
    sql: Option<PathBuf>,
    /// With `[respond]` in mode "automatic": act at the identity provider for real. Without
    /// it the replay's responder runs in "dry_run" (it decides and audits everything and
    /// changes nothing), and says so: a replay paces actions by the alerts' own times, so
    /// replaying last month would suspend a month's worth of accounts within seconds. No
    /// effect in the other modes.
    #[arg(long)]
    respond_live: bool,
    /// No progress display.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    telemetry: crate::telemetry_opts::TelemetryOptions,
}

/// `authwatch demo`
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where to write all alerts as JSON lines.
    #[arg(
        long,
        default_value = "authwatch-demo-alerts.jsonl",
        value_name = "FILE"
    )]
    alerts: PathBuf,
    /// How many alerts the table shows, most severe first.
    #[arg(long, default_value_t = 40)]
    show: usize,
    #[command(flatten)]
    options: RunOptions,
}

/// `authwatch replay`
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Recorded files (JSON lines, optionally gzip-compressed); `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Where to write alerts as JSON lines; `-` is standard output.
    #[arg(long, value_name = "FILE|-")]
    alerts: Option<PathBuf>,
    /// Print a table of the first N alerts on standard error at the end.
    #[arg(long, default_value_t = 0, value_name = "N")]
    table: usize,
    #[command(flatten)]
    options: RunOptions,
}

pub(crate) fn load_config(options: &RunOptions) -> Result<Config> {
    let mut config = match &options.config {
        Some(path) => Config::load(path)?,
        None => Config::from_env()?,
    };
    if let Some(rules) = &options.rules.rules {
        config.detect.rules = Some(rules.clone());
    }
    if let Some(format) = options.format {
        config.input.format = format;
    }
    if let Some(mapping) = &options.mapping {
        config.input.mapping = Some(mapping.clone());
    }
    if let Some(p) = &options.dead_letter {
        config.output.dead_letter = Some(p.clone());
    }
    if let Some(p) = &options.late_events {
        config.output.late_events = Some(p.clone());
        config.event_time.late_events = authwatch_pipeline::LatePolicy::SideOutput;
    }
    if let Some(location) = &options.archive {
        config.archive.enabled = true;
        config.archive.location = location.clone();
    }
    if let Some(dir) = &options.sql {
        check_sql_option(dir)?;
        config.sql.enabled = true;
        config.sql.dir = dir.clone();
    }
    if let Some(lang) = &options.lang {
        config.output.language = match lang.as_str() {
            "en" => Language::En,
            "ja" => Language::Ja,
            other => anyhow::bail!("--lang {other:?}: expected en or ja"),
        };
    }
    config.validate()?;
    authwatch_telemetry::apply_log_format(config.telemetry.log_format);
    Ok(config)
}

pub fn load_rules(config: &Config) -> Result<RulePack> {
    Ok(match &config.detect.rules {
        Some(path) => RulePack::load(path)?,
        None => RulePack::builtin()?,
    })
}

/// `--sql DIR`, checked where the option is still known: reading the directory later fails
/// with the system's words alone ("Not a directory" for `--sql sql/x.sql`), naming neither the
/// option nor what it takes.
fn check_sql_option(dir: &Path) -> Result<()> {
    if dir.is_file() {
        anyhow::bail!(
            "--sql {}: is a file; --sql takes the directory of the windowed SQL detections \
             (its *.sql files, one detection each)",
            dir.display()
        );
    }
    std::fs::read_dir(dir).with_context(|| format!("--sql {}", dir.display()))?;
    Ok(())
}

/// An error of `[sql]`'s detections: one about the directory names the setting (`--sql` was
/// checked when given: [`check_sql_option`]); one about a detection names its file already, and
/// its SQL error is mended as `sql` prints one ([`crate::sql_cmd::error_text`]).
pub(crate) fn sql_dir_error(dir: &Path, e: QueryError) -> anyhow::Error {
    match e {
        QueryError::Io { path, source } if path == dir => {
            anyhow::anyhow!("sql.dir {}: {source}", dir.display())
        }
        e => anyhow::Error::msg(crate::sql_cmd::error_text(&e.to_string())),
    }
}

/// Registers the windowed SQL detections when `[sql]` is enabled.
pub fn with_sql_detections(pipeline: Pipeline, config: &Config) -> Result<(Pipeline, SqlFailures)> {
    if !config.sql.enabled {
        return Ok((pipeline, SqlFailures(None)));
    }
    let dir = &config.sql.dir;
    let rules = authwatch_query::load_dir(dir).map_err(|e| sql_dir_error(dir, e))?;
    let detections = std::sync::Arc::new(
        authwatch_query::SqlDetections::with_limits(rules, crate::sql_cmd::sql_limits(config))
            .map_err(|e| sql_dir_error(dir, e))?,
    );
    let failures = SqlFailures(Some(std::sync::Arc::clone(&detections)));
    Ok((pipeline.with_stream_detectors(detections), failures))
}

/// The SQL detections of a run, to report their failures at its end.
pub struct SqlFailures(Option<std::sync::Arc<authwatch_query::SqlDetections>>);

impl SqlFailures {
    /// Exports each detection's failures and counters
    /// (`authwatch_sql_detection_failures_total{detection}`, …).
    pub fn export(&self, telemetry: &authwatch_telemetry::Telemetry) {
        if let Some(detections) = &self.0 {
            crate::sql_cmd::export_sql_metrics(telemetry, detections);
        }
    }

    /// Each detection's alerts so far, for the run's summary.
    pub fn alerts(&self) -> Vec<(String, u64)> {
        let stats = self.0.as_ref().map(|d| d.stats()).unwrap_or_default();
        stats.into_iter().map(|(id, s)| (id, s.alerts)).collect()
    }

    /// Prints each detection that failed during the run; true if any did. A failed execution is
    /// logged as it happens and the run goes on, but the windows it decided may have missed
    /// alerts: a run with one does not end as a success.
    pub fn report(&self) -> bool {
        let mut failed = self.0.as_ref().map(|d| d.failures()).unwrap_or_default();
        failed.retain(|(_, n)| *n > 0);
        for (id, n) in &failed {
            eprintln!(
                "sql detection {id}: {n} failures (failed executions, or result rows that became \
                 no alert; each is logged above); alerts of the windows they decided may be missing"
            );
        }
        !failed.is_empty()
    }
}

/// The archive writer when `[archive]` is enabled.
fn open_archive(config: &Config) -> Result<Option<authwatch_query::ArchiveWriter>> {
    if !config.archive.enabled {
        return Ok(None);
    }
    let options = crate::sql_cmd::archive_options(config);
    Ok(Some(authwatch_query::ArchiveWriter::open(options)?))
}

fn execute(
    config: Config,
    source: &mut dyn Source,
    total_bytes: Option<u64>,
    options: &RunOptions,
    keep: usize,
) -> Result<Executed> {
    if config.event_time.late_events == LatePolicy::SideOutput
        && config.output.late_events.is_none()
    {
        // `authwatch run` writes them to its dead-letter topic; a replay has only files.
        tracing::warn!(
            "event_time.late_events is \"side_output\" but there is no late-events output \
             (--late-events FILE or output.late_events): late events are counted and not \
             written anywhere"
        );
    }
    let pack = load_rules(&config)?;
    crate::respond::check_responder(&config, &pack)?;
    let responder = crate::respond::ReplayResponder::start(&config, options.respond_live)?;
    let telemetry = options.telemetry.start(&config)?;
    let archive = open_archive(&config)?;
    let location = config.archive.location.clone();
    let (mut pipeline, sql_failures) =
        with_sql_detections(Pipeline::new(config.clone(), pack)?, &config)?;
    // Created (truncated) last: a start-up error above (a bad mapping, enrichment file or SQL
    // directory) must leave the previous run's outputs as they were.
    let sink = responder.tee(
        JsonLinesSink::create(
            config.output.alerts.as_ref(),
            config.output.dead_letter.as_ref(),
            config.output.late_events.as_ref(),
        )?
        .keep_alerts(keep),
    );
    if let Some(t) = &telemetry {
        pipeline = t.connect(pipeline, &sql_failures);
        if let Some(counts) = responder.counts() {
            t.register_responder(counts);
        }
    }
    let progress = (!options.quiet).then(|| Progress::start(pipeline.metrics(), total_bytes));
    let result = match archive {
        Some(archive) => pipeline
            .run(
                source,
                authwatch_query::ArchiveSink::new(sink, archive),
                options.speed,
            )
            .map_err(anyhow::Error::from)
            .and_then(|(summary, sink)| {
                let (sink, stats) = sink.finish()?;
                Ok((summary, sink, Some(stats)))
            }),
        None => pipeline
            .run(source, sink, options.speed)
            .map(|(summary, sink)| (summary, sink, None))
            .map_err(anyhow::Error::from),
    };
    if let Some(p) = progress {
        p.finish();
    }
    let (summary, sink, stats) = match result {
        // The tee is dropped here, before the responder is waited for: it ends the responder's
        // input.
        Ok((summary, sink, stats)) => (summary, sink.into_inner(), stats),
        Err(e) => {
            // The responder's own error (if it stopped) explains the pipeline's.
            responder.finish()?;
            return Err(e);
        }
    };
    responder.finish()?;
    if let Some(s) = stats {
        eprintln!(
            "archive {location}: {} events and {} alerts in {} Parquet files ({} bytes)",
            s.events, s.alerts, s.files, s.bytes
        );
    }
    Ok(Executed {
        summary,
        sink,
        telemetry,
        sql_failures,
        jump: pipeline.largest_jump(),
    })
}

/// What a replay or demo run did.
struct Executed {
    summary: RunSummary,
    sink: JsonLinesSink,
    telemetry: Option<crate::telemetry_opts::ReplayTelemetry>,
    sql_failures: SqlFailures,
    /// Where the stream's time jumped furthest, to name when most events came late.
    jump: Option<WatermarkJump>,
}

pub fn demo(args: DemoArgs) -> Result<ExitCode> {
    let mut config = load_config(&args.options)?;
    config.output.alerts = Some(args.alerts.clone());
    // The enricher memory-maps files: give it the bundled test databases in a private temporary
    // directory, unless the configuration names databases of its own.
    let geo_dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let geo = &mut config.enrich.geo;
    if geo.city_db.is_none() && geo.asn_db.is_none() && geo.anonymous_db.is_none() {
        crate::geo_bundle::install(geo_dir.path(), geo)?;
    }
    // The recorded stream is synthetic and dated in the past; nothing to check against "now".
    let mut decompressed = Vec::new();
    flate2::read::GzDecoder::new(DEMO_STREAM)
        .read_to_end(&mut decompressed)
        .context("the bundled demo stream is corrupt")?;
    let total = decompressed.len() as u64;
    let mut source = LineSource::from_readers(
        vec![(
            "<bundled demo stream>".to_owned(),
            Box::new(std::io::Cursor::new(decompressed)),
        )],
        config.input.max_line_bytes,
        config.input.dead_letter_raw_bytes,
    );
    let lang = config.output.language;
    eprintln!(
        "authwatch demo: replaying the bundled recorded stream (300 users, 3 days, attacks injected) \
         through the full pipeline with the built-in rules…"
    );
    // The bundled stream yields about a hundred alerts: keep them all, then show the most severe
    // first, so a wave of low-severity lockouts does not push the critical ones off the screen.
    let Executed {
        summary,
        sink,
        telemetry,
        sql_failures,
        ..
    } = execute(config, &mut source, Some(total), &args.options, 100_000)?;
    let (alerts, seen) = sink.kept_alerts();
    let mut shown: Vec<_> = alerts.to_vec();
    shown.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.window.start.cmp(&b.window.start))
    });
    shown.truncate(args.show);
    println!("{}", table::alerts(&shown, seen, lang));
    println!("{}", table::summary(&summary, &sql_failures.alerts()));
    println!(
        "All {seen} alerts written as JSON lines to {}",
        args.alerts.display()
    );
    if let Some(t) = telemetry {
        t.finish()?;
    }
    crate::table::require_events(&summary, ["the bundled demo stream"])?;
    if sql_failures.report() {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let mut config = load_config(&args.options)?;
    if let Some(a) = &args.alerts {
        config.output.alerts = Some(a.clone());
    }
    let outputs: Vec<(&str, &std::path::Path)> = [
        ("alerts output", config.output.alerts.as_deref()),
        ("dead-letter output", config.output.dead_letter.as_deref()),
        ("late-events output", config.output.late_events.as_deref()),
    ]
    .into_iter()
    .filter_map(|(name, path)| Some((name, path?)))
    .collect();
    crate::paths::refuse_overwrites(&args.files, &outputs)?;
    let total: u64 = args
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let mut source = LineSource::open_files(
        &args.files,
        config.input.max_line_bytes,
        config.input.dead_letter_raw_bytes,
    )?;
    let order = OrderCheck::new(&config);
    // Compressed inputs are larger than the files; show bytes without a bar then.
    let compressed = args
        .files
        .iter()
        .any(|f| f.extension().is_some_and(|e| e == "gz"));
    let lang = config.output.language;
    let to_stdout = config.output.alerts.as_deref() == Some(std::path::Path::new("-"));
    let quiet_progress = args.options.quiet || to_stdout;
    let options = RunOptions {
        quiet: quiet_progress,
        ..args.options
    };
    let Executed {
        summary,
        sink,
        telemetry,
        sql_failures,
        jump,
    } = execute(
        config,
        &mut source,
        (!compressed).then_some(total),
        &options,
        args.table,
    )?;
    if args.table > 0 {
        let (alerts, seen) = sink.kept_alerts();
        eprintln!("{}", table::alerts(alerts, seen, lang));
    }
    eprintln!("{}", table::summary(&summary, &sql_failures.alerts()));
    if let Some(hint) = order.hint(&summary, &args.files, jump.as_ref(), lang) {
        eprintln!("{hint}");
    }
    if let Some(t) = telemetry {
        t.finish()?;
    }
    crate::table::require_events(&summary, args.files.iter().map(|f| f.display()))?;
    if sql_failures.report() {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Lines read from the start of each input file to tell an input sorted newest first from a
/// shuffled one.
const ORDER_SAMPLE_LINES: usize = 1000;

/// What a replay needs to explain, after the run, why most events came too late: a stream is
/// read in the order given (nothing is buffered), so an export sorted newest first (Entra
/// portal downloads, Okta's descending sort) leaves every event but the first minutes behind
/// the watermark, and a summary of "0 alerts" would read as "nothing happened".
pub(crate) struct OrderCheck {
    lateness: std::time::Duration,
    max_line_bytes: usize,
    keep_bytes: usize,
    normalizer: Option<Box<dyn authwatch_normalize::Normalizer>>,
}

impl OrderCheck {
    pub(crate) fn new(config: &Config) -> OrderCheck {
        let input = &config.input;
        let normalizer = match &input.mapping {
            Some(path) => authwatch_normalize::Mapping::load(path)
                .ok()
                .map(|m| Box::new(m) as Box<dyn authwatch_normalize::Normalizer>),
            None => Some(input.format.normalizer()),
        };
        OrderCheck {
            lateness: config.event_time.allowed_lateness.0,
            max_line_bytes: input.max_line_bytes,
            keep_bytes: input.dead_letter_raw_bytes,
            normalizer,
        }
    }

    /// A hint when most events came too late: how to put the input in order, or which event
    /// moved the stream's time furthest ahead (one wrong timestamp, confirmed by a second or
    /// with `event_time.max_jump` off, makes every event after it late).
    pub(crate) fn hint(
        &self,
        summary: &RunSummary,
        files: &[PathBuf],
        jump: Option<&WatermarkJump>,
        lang: Language,
    ) -> Option<String> {
        let late = summary.late_events;
        if late == 0 || late.saturating_mul(2) < summary.events {
            return None;
        }
        let events = summary.events;
        let lateness = crate::explain::duration_words(self.lateness, lang);
        let newest_first = self.newest_first(files);
        // Named when most late events would have been on time without it.
        let jump = jump.filter(|j| j.late_events.saturating_mul(2) >= late);
        if let (false, Some(j)) = (newest_first, jump) {
            let by = std::time::Duration::from_millis(
                u64::try_from(j.to.saturating_sub(j.from)).unwrap_or(0),
            );
            let by = crate::explain::duration_words(by, lang);
            let at = authwatch_event::format_rfc3339_ms(j.to).unwrap_or_else(|_| j.to.to_string());
            let (file, line, behind) = (&j.file, j.line, j.late_events);
            return Some(match lang {
                Language::Ja => format!(
                    "注: {events} 件中 {late} 件のイベントが新しいイベントより {lateness}（event_time.allowed_lateness）を超えて遅れて届いたため、分析されませんでした。そのうち {behind} 件は、イベント時刻が {file} の {line} 行目で {at} へ（それまでの最新より {by} 先へ）進んだために遅れとなりました。この時刻が誤り（時計のずれや不正な行）なら、その行を直すか除いてから再度実行してください（event_time.max_jump は先へ飛んだイベント 1 件だけでは透かしを進めず、2 件目で進めます）。誤りでなければ入力の時刻の順序が乱れています。時刻の古い順に並べ替えてから実行してください。"
                ),
                _ => format!(
                    "Note: {late} of {events} events came more than {lateness} \
                     (event_time.allowed_lateness) behind newer ones and were not analysed; \
                     {behind} of them were late because the stream's time jumped at {file} line \
                     {line}, to {at} ({by} ahead of the events before it). If that time is \
                     wrong (a bad clock, a crafted line), fix or remove that line and replay \
                     again (event_time.max_jump keeps one such event from moving the watermark, \
                     not a second). Otherwise the input is out of time order: sort it by event \
                     time, oldest first."
                ),
            });
        }
        Some(match (lang, newest_first) {
            (Language::Ja, true) => format!(
                "注: {events} 件中 {late} 件のイベントが新しいイベントより {lateness}（event_time.allowed_lateness）を超えて遅れて届いたため、分析されませんでした。入力は新しい順（降順）に並んでいるようです（Entra ポータルのダウンロードや降順で並べた Okta のエクスポートなど）。replay は入力を与えられた順に読みます。古い順に並べ替えてから実行してください。例: `tac FILE > FILE.asc.jsonl`（gzip は `zcat FILE.gz | tac > FILE.asc.jsonl`）。authwatch explain はファイルを自動で時刻順に読みます。"
            ),
            (Language::Ja, false) => format!(
                "注: {events} 件中 {late} 件のイベントが新しいイベントより {lateness}（event_time.allowed_lateness）を超えて遅れて届いたため、分析されませんでした。入力の時刻の順序が大きく乱れています（シャッフルされているか、複数のエクスポートが連結されています）。replay は入力を与えられた順に読みます。時刻の古い順に並べ替えてから実行してください。authwatch explain はファイルを自動で時刻順に読みます。"
            ),
            (_, true) => format!(
                "Note: {late} of {events} events came more than {lateness} \
                 (event_time.allowed_lateness) behind newer ones and were not analysed: the \
                 input looks sorted newest first (as Entra portal downloads and exports sorted \
                 descending are). replay reads its input in the order given; sort it oldest \
                 first and replay again, e.g. `tac FILE > FILE.asc.jsonl` (gzip: `zcat FILE.gz | \
                 tac > FILE.asc.jsonl`). authwatch explain reorders files by itself."
            ),
            (_, false) => format!(
                "Note: {late} of {events} events came more than {lateness} \
                 (event_time.allowed_lateness) behind newer ones and were not analysed: the \
                 input is far out of time order (shuffled, or several exports put one after \
                 another). replay reads its input in the order given; sort it by event time, \
                 oldest first, and replay again. authwatch explain reorders files by itself."
            ),
        })
    }

    /// Whether the first lines of the input files mostly go back in time. Reads at most
    /// [`ORDER_SAMPLE_LINES`] lines of each regular file (standard input and pipes were
    /// consumed by the run).
    fn newest_first(&self, files: &[PathBuf]) -> bool {
        let Some(normalizer) = &self.normalizer else {
            return false;
        };
        let limits = authwatch_normalize::Limits::default();
        let (mut back, mut ahead) = (0u64, 0u64);
        for path in files {
            let regular = path != std::path::Path::new("-")
                && std::fs::metadata(path).is_ok_and(|m| m.is_file());
            if !regular {
                continue;
            }
            let Ok(mut source) = LineSource::open_files(
                std::slice::from_ref(path),
                self.max_line_bytes,
                self.keep_bytes,
            ) else {
                continue;
            };
            let mut batch = authwatch_pipeline::RawBatch::default();
            if !source.fill(&mut batch, ORDER_SAMPLE_LINES).unwrap_or(false) {
                continue;
            }
            let mut previous: Option<i64> = None;
            for line in &batch.lines {
                let Ok(e) = normalizer.normalize(batch.bytes(line), 0, &limits) else {
                    continue;
                };
                match previous {
                    Some(p) if e.time < p => back += 1,
                    Some(p) if e.time > p => ahead += 1,
                    _ => {}
                }
                previous = Some(e.time);
            }
        }
        back > 0 && back >= ahead.saturating_mul(4)
    }
}
