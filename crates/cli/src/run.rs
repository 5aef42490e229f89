//! `authwatch run`: the live pipeline over Kafka (see docs/KAFKA.md).

use anyhow::{Context, Result};
use authwatch_kafka::Runtime;
use authwatch_pipeline::Config;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Consume provider topics in a consumer group; write alerts, dead letters, audit records (and
/// enriched events) to topics, with state checkpointed together with the input offsets. Stops
/// gracefully on SIGTERM or Ctrl-C: drains, checkpoints, commits.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The configuration file ([kafka], [checkpoint] and the pipeline sections).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Stop once every assigned partition is consumed up to the end offset it had when
    /// assigned (backfills, benchmarks); otherwise run until SIGTERM.
    #[arg(long)]
    until_end: bool,
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let pack = crate::replay::load_rules(&config)?;
    let stop = Arc::new(AtomicBool::new(false));
    spawn_signal_watcher(Arc::clone(&stop))?;
    let runtime = Runtime::new(config, pack, stop)?.until_end(args.until_end);
    let report = runtime.run().context("authwatch run")?;
    if let Some(last) = &report.last {
        eprintln!(
            "authwatch run: stopped after {} records, {} events, {} alerts, {} restarts in {:.3} s",
            last.lines,
            last.events,
            last.alerts,
            report.restarts,
            last.elapsed.as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM (Kubernetes) and SIGINT set the stop flag; the source sees it between polls.
fn spawn_signal_watcher(stop: Arc<AtomicBool>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting the signal watcher")?;
    std::thread::Builder::new()
        .name("aw-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut term) = signal(SignalKind::terminate()) else {
                    tracing::error!("cannot watch SIGTERM");
                    return;
                };
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
                }
                stop.store(true, Ordering::Relaxed);
            });
        })
        .context("starting the signal watcher")?;
    Ok(())
}
