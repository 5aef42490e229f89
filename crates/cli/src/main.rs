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
use clap::{Parser, Subcommand};
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
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
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
                _ => {
                    let schema = authwatch_event::schema::event_arrow_schema()?;
                    println!("{schema:#?}");
                    return Ok(ExitCode::SUCCESS);
                }
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(ExitCode::SUCCESS)
        }
    }
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
}
