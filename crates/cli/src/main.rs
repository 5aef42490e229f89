//! `authwatch`: the one binary. Argument parsing and presentation only; the work is done by the
//! library crates, and this is the only place that uses `anyhow`.

mod bench;
mod eval;
mod explain;
mod gen_cmd;
mod geo_bundle;
mod normalize_cmd;
mod paths;
mod progress;
mod replay;
mod respond;
mod rules;
mod rules_test;
mod run;
mod sigma_cmd;
mod sql_cmd;
mod table;
mod telemetry_opts;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

// Events are allocated on the normalize workers and freed on the detect thread; glibc's malloc
// handles such cross-thread frees poorly, mimalloc well (measured with `authwatch bench`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// authwatch: detect MFA fatigue, credential stuffing, password spraying and other attacks in
/// authentication logs, and tell the help desk why ordinary MFA failures happen.
#[derive(Debug, Parser)]
#[command(name = "authwatch", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay the bundled recorded stream (attacks included) through the full pipeline: no
    /// Kafka, no network, no files needed.
    Demo(replay::DemoArgs),
    /// Replay recorded files through the same pipeline as live traffic.
    Replay(replay::ReplayArgs),
    /// Normalize provider logs to native JSON, OCSF or ECS, enriched.
    Normalize(normalize_cmd::NormalizeArgs),
    /// Generate realistic authentication traffic with injected attacks, and its labels.
    Gen(gen_cmd::GenArgs),
    /// Score alerts against a labels file: recall and precision per category.
    Eval(eval::EvalArgs),
    /// The help-desk view of one user: recent sign-ins, failures grouped by cause, next steps.
    Explain(explain::ExplainArgs),
    /// Measure the pipeline against a plain JSON parse of the same generated file.
    Bench(bench::BenchArgs),
    /// Run live over Kafka: consumer group in, alert/dead-letter/audit topics out, checkpointed.
    Run(run::RunArgs),
    /// Detection rules: list, check, run their test cases, import Sigma rules.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Automated response: list, approve or reject pending actions.
    Respond(respond::RespondArgs),
    /// Ad-hoc SQL over the Parquet archive and/or recorded files (tables events, alerts).
    Sql(sql_cmd::SqlArgs),
    /// Serve the same tables read-only over the Postgres wire protocol (psql, BI tools).
    Serve(sql_cmd::ServeArgs),
    /// Print a schema: the event or alert JSON Schema, or the event Arrow schema.
    Schema {
        /// `event`, `alert` or `arrow`.
        #[arg(value_parser = ["event", "alert", "arrow"])]
        which: String,
    },
}

/// Where the rules come from, shared by the commands that run them.
#[derive(Debug, clap::Args)]
struct RulesArg {
    /// A rules directory or file (default: the built-in pack).
    #[arg(long, value_name = "DIR|FILE")]
    rules: Option<PathBuf>,
}

fn main() -> ExitCode {
    // AUTHWATCH_LOG filters, AUTHWATCH_LOG_FORMAT=json switches to JSON lines.
    authwatch_telemetry::init_logging("warn");
    quiet_on_closed_stdout_panic();
    let matches = command().get_matches();
    if let Err(e) = check_demo_options(&matches) {
        e.exit();
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli) {
        Ok(code) => code,
        // The reader of standard output went away (`authwatch … | head`): stop quietly, with
        // success, as Unix tools do. See [`StdoutClosed`].
        Err(e) if stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let text = error_text(&e);
            // With JSON logs, one JSON line a log collector parses like the others.
            if !authwatch_telemetry::log_fatal_error(&text) {
                eprintln!("authwatch: error: {text}");
            }
            ExitCode::from(2)
        }
    }
}

/// The command line, with the constraints between options of different commands' shared
/// argument groups: an option that another one replaces is refused when both are given,
/// rather than one being silently ignored.
fn command() -> clap::Command {
    let mapping_replaces = |format: &'static str| {
        move |c: clap::Command| c.mut_arg("mapping", |a| a.conflicts_with(format))
    };
    Cli::command()
        .mut_subcommand("replay", mapping_replaces("format"))
        .mut_subcommand("normalize", mapping_replaces("from"))
}

/// `demo` shares `replay`'s options, but its input is the bundled stream, in authwatch's native
/// format, and its alerts go to `--alerts`: `--format` or `--mapping` could only make every
/// line unreadable, and an output named twice would be written by two writers at once.
fn check_demo_options(matches: &clap::ArgMatches) -> Result<(), clap::Error> {
    let Some(("demo", demo)) = matches.subcommand() else {
        return Ok(());
    };
    let given = |id: &str| demo.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    for id in ["format", "mapping"] {
        if given(id) {
            return Err(command().error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "demo replays the bundled stream (native JSON): --{id} is for `authwatch \
                     replay FILE…`"
                ),
            ));
        }
    }
    let outputs: Vec<(&str, &std::path::Path)> = [
        ("--alerts", "alerts"),
        ("--dead-letter", "dead_letter"),
        ("--late-events", "late_events"),
    ]
    .into_iter()
    .filter_map(|(name, id)| Some((name, demo.get_one::<PathBuf>(id)?.as_path())))
    .collect();
    paths::refuse_overwrites(&[], &outputs)
        .map_err(|e| command().error(clap::error::ErrorKind::ArgumentConflict, error_text(&e)))
}

/// The error and its causes, each cause once: library errors often name their source in their
/// own message already (`{path}: cannot open: {source}`), and anyhow's `{:#}` would repeat it.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

/// Standard output was closed by its reader (`authwatch schema event | head -1`): the command
/// stops at once, prints nothing more and exits 0, as `cat` or `grep` would stop. This is done
/// with an error rather than with SIGPIPE's default action (which Rust programs ignore): `authwatch
/// run` writes to sockets, where a peer that went away is an error to report and retry, not a
/// reason to die.
///
/// Every command writes its data through [`stdout`] or [`shared_stdout`], whose write errors on
/// a closed pipe carry this type, so that `main` recognizes them however the command wrapped
/// them (see [`stdout_closed`]).
#[derive(Debug)]
pub(crate) struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

/// A writer to standard output whose "broken pipe" errors carry [`StdoutClosed`]; other errors
/// (a full disk behind a redirection) pass unchanged.
pub(crate) struct Stdout<W> {
    inner: W,
    closed: bool,
}

impl<W> Stdout<W> {
    /// Whether a write found the pipe closed: for writers that turn the I/O error into text
    /// (the Arrow JSON writer), which [`stdout_closed`] cannot recognize.
    pub(crate) fn closed(&self) -> bool {
        self.closed
    }

    fn check<T>(&mut self, result: std::io::Result<T>) -> std::io::Result<T> {
        result.map_err(|e| {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return e;
            }
            self.closed = true;
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed)
        })
    }
}

/// Standard output, locked, for a command that prints its data from the main thread. Take it
/// where the printing starts, not for the whole command: while it is held, any other thread
/// that prints waits.
pub(crate) fn stdout() -> Stdout<std::io::StdoutLock<'static>> {
    Stdout {
        inner: std::io::stdout().lock(),
        closed: false,
    }
}

/// Standard output for a writer handed to other threads (`Send`), e.g. `gen --out -`.
pub(crate) fn shared_stdout() -> Stdout<std::io::Stdout> {
    Stdout {
        inner: std::io::stdout(),
        closed: false,
    }
}

impl<W: Write> Write for Stdout<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let result = self.inner.write(buf);
        self.check(result)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let result = self.inner.flush();
        self.check(result)
    }
}

/// Whether `e` comes from writing to a standard output its reader closed: a [`StdoutClosed`]
/// anywhere in the chain, also inside an `io::Error` (whose `source()` skips its payload), or
/// a "broken pipe" of the pipeline's own `-` output (`replay --alerts -`), which the pipeline
/// crate opens itself. A broken pipe anywhere else (a socket, a FIFO named as a file) stays an
/// error.
fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.is::<StdoutClosed>()
            || cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<StdoutClosed>())
            || cause
                .downcast_ref::<authwatch_pipeline::SinkError>()
                .is_some_and(pipeline_stdout_closed)
            // A transparent variant: its `source()` skips the `SinkError` itself.
            || matches!(
                cause.downcast_ref::<authwatch_pipeline::PipelineError>(),
                Some(authwatch_pipeline::PipelineError::Sink(s)) if pipeline_stdout_closed(s)
            )
    })
}

fn pipeline_stdout_closed(s: &authwatch_pipeline::SinkError) -> bool {
    s.output == "-" && s.source.kind() == std::io::ErrorKind::BrokenPipe
}

/// The backstop for a `println!` left in a command (or added later): on a closed standard
/// output it panics with "failed printing to stdout: Broken pipe (os error 32)", which would
/// print a backtrace and exit 101. That panic ends the process as [`StdoutClosed`] does;
/// every other panic goes to the default hook.
fn quiet_on_closed_stdout_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        if message.is_some_and(is_closed_stdout_panic) {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Whether a panic message is std's for a `print!` to a closed pipe. The OS error number is
/// turned back into its kind rather than compared with "Broken pipe", whose wording is the C
/// library's.
fn is_closed_stdout_panic(message: &str) -> bool {
    let Some(rest) = message.strip_prefix("failed printing to stdout: ") else {
        return false;
    };
    rest.rsplit_once("(os error ")
        .and_then(|(_, code)| code.strip_suffix(')')?.parse::<i32>().ok())
        .is_some_and(|code| {
            std::io::Error::from_raw_os_error(code).kind() == std::io::ErrorKind::BrokenPipe
        })
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Demo(args) => replay::demo(args),
        Command::Replay(args) => replay::replay(args),
        Command::Normalize(args) => normalize_cmd::run(args),
        Command::Gen(args) => gen_cmd::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Run(args) => run::run(args),
        Command::Rules(cmd) => rules::run(cmd),
        Command::Respond(args) => respond::run(args),
        Command::Sql(args) => sql_cmd::run_sql(args),
        Command::Serve(args) => sql_cmd::run_serve(args),
        Command::Schema { which } => {
            let value = match which.as_str() {
                "event" => authwatch_event::schema::event_json_schema(),
                "alert" => authwatch_event::schema::alert_json_schema(),
                _ => event_arrow_schema_json()?,
            };
            let mut out = stdout();
            writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `schema arrow`: the event Arrow schema as JSON, one object per top-level column in table
/// order: `name`, `type` (Arrow's own type text, the form `DataType::from_str` reads, with the
/// children of a struct or list inside it), `nullable`. Not `{:#?}`: Rust's debug output is
/// neither parseable nor stable across arrow releases.
fn event_arrow_schema_json() -> Result<serde_json::Value> {
    let schema = authwatch_event::schema::event_arrow_schema()?;
    let fields: Vec<serde_json::Value> = schema
        .fields()
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name(),
                "type": f.data_type().to_string(),
                "nullable": f.is_nullable(),
            })
        })
        .collect();
    Ok(serde_json::json!({ "fields": fields }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let inner = anyhow::Error::from(io).context("x.jsonl: cannot open: No such file");
        assert_eq!(error_text(&inner), "x.jsonl: cannot open: No such file");
        let outer = inner.context("replay failed");
        assert_eq!(
            error_text(&outer),
            "replay failed: x.jsonl: cannot open: No such file"
        );
        let plain = anyhow::anyhow!("bad").context("loading rules");
        assert_eq!(error_text(&plain), "loading rules: bad");
    }

    #[test]
    fn a_closed_stdout_is_recognized_however_wrapped() {
        let closed = std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed);
        let e = anyhow::Error::from(closed).context("writing the report");
        assert!(stdout_closed(&e));
        let sink = authwatch_pipeline::SinkError {
            output: "-".into(),
            source: std::io::ErrorKind::BrokenPipe.into(),
        };
        let pipeline = authwatch_pipeline::PipelineError::from(sink);
        assert!(stdout_closed(
            &anyhow::Error::from(pipeline).context("replay")
        ));
        // A broken pipe that is not standard output's (a socket, a FIFO) stays an error.
        let socket = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(!stdout_closed(&anyhow::Error::from(socket)));
        let fifo = authwatch_pipeline::SinkError {
            output: "alerts.fifo".into(),
            source: std::io::ErrorKind::BrokenPipe.into(),
        };
        assert!(!stdout_closed(&anyhow::Error::from(fifo)));
    }

    #[test]
    fn only_a_print_to_a_closed_stdout_is_a_quiet_panic() {
        let epipe = std::io::Error::from_raw_os_error(32);
        assert_eq!(epipe.kind(), std::io::ErrorKind::BrokenPipe);
        assert!(is_closed_stdout_panic(&format!(
            "failed printing to stdout: {epipe}"
        )));
        let full = std::io::Error::from_raw_os_error(28);
        assert!(!is_closed_stdout_panic(&format!(
            "failed printing to stdout: {full}"
        )));
        assert!(!is_closed_stdout_panic("index out of bounds (os error 32)"));
    }
}
