//! `authwatch run`: the live pipeline over Kafka (see docs/KAFKA.md).

use anyhow::{Context, Result};
use authwatch_kafka::{KafkaMetrics, PipelineStage, Role, Runtime};
use authwatch_pipeline::Config;
use authwatch_telemetry::{ActionCount, PartitionLag, Telemetry};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Consume provider topics in a consumer group; write alerts, dead letters, audit records (and
/// enriched events) to topics, with state checkpointed together with the input offsets. Stops
/// gracefully on SIGTERM or Ctrl-C: drains, checkpoints, commits; a second signal stops at once
/// (the next start resumes from the last commit).
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The configuration file ([kafka], [checkpoint] and the pipeline sections).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Stop once every assigned partition is consumed up to the end offset it had when
    /// assigned (backfills, benchmarks); otherwise run until SIGTERM. Exits 0 only once that
    /// end is committed: a failed last checkpoint restarts from the one before, and a stop by
    /// signal before the end exits with an error.
    #[arg(long)]
    until_end: bool,
    /// With `[kafka.repartition] enabled`: run the ingest stage (provider topics → internal
    /// topic), the detect stage (internal topic → alerts), or both.
    #[arg(long, value_enum, default_value = "all")]
    role: RoleArg,
}

/// `--role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RoleArg {
    All,
    Ingest,
    Detect,
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let config = Config::load(&args.config)?;
    authwatch_telemetry::apply_log_format(config.telemetry.log_format);
    let pack = crate::replay::load_rules(&config)?;
    // Before anything connects: the runtime builds the responder only after joining Kafka.
    crate::respond::check_responder(&config, &pack)?;
    let stop = Arc::new(AtomicBool::new(false));
    spawn_signal_watcher(Arc::clone(&stop))?;
    let telemetry =
        Arc::new(Telemetry::start(&config.telemetry).context("starting the telemetry endpoint")?);
    if let Some(addr) = telemetry.local_addr() {
        tracing::info!(%addr, "telemetry: /metrics /livez /readyz /startupz");
    }
    let sql_config = config.clone();
    let repartitioned = config.kafka.repartition.enabled && args.role != RoleArg::Ingest;
    let both_stages = config.kafka.repartition.enabled && args.role == RoleArg::All;
    let runtime = Runtime::new(config, pack, Arc::clone(&stop))?
        .until_end(args.until_end)
        .role(match args.role {
            RoleArg::All => Role::All,
            RoleArg::Ingest => Role::Ingest,
            RoleArg::Detect => Role::Detect,
        })
        .with_observer(telemetry.batch_observer());
    let runtime = {
        let t = Arc::clone(&telemetry);
        // The one pipeline a process runs is the exported one. A process running both stages
        // exports the detect stage's, and adds the ingest stage's dead letters (the provider
        // records it could not read, most of a run's) and liveness to it.
        runtime.on_pipeline(move |stage, metrics| match stage {
            PipelineStage::Ingest if both_stages => t.attach_additional_pipeline("ingest", metrics),
            PipelineStage::Whole | PipelineStage::Ingest | PipelineStage::Detect => {
                t.attach_pipeline(metrics)
            }
        })
    };
    let runtime = crate::sql_cmd::attach_to_runtime(runtime, &sql_config, &telemetry)?;
    let feed = connect_kafka_metrics(&telemetry, &runtime.stage_metrics(), repartitioned);
    let counts = runtime.response_counts();
    telemetry.register_response_actions(move || {
        counts()
            .into_iter()
            .map(|(action, result, count)| ActionCount {
                action,
                result,
                count,
            })
            .collect()
    });
    let report = runtime.run();
    // The runtime's hooks hold the telemetry too.
    drop(runtime);
    // The graceful stop's checkpoint and snapshot store finish after the stop flag is set: they
    // reach the final OTLP export only if taken after the run.
    feed.finish();
    match Arc::try_unwrap(telemetry) {
        Ok(telemetry) => {
            if let Err(e) = telemetry.shutdown() {
                tracing::warn!(error = %e, "the final telemetry export failed");
            }
        }
        // Whatever still holds it pushes the final export when it drops it, with a failure
        // logged at debug level only.
        Err(_) => tracing::warn!("telemetry still shared at exit"),
    }
    let report = report.context("authwatch run")?;
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
    // A backfill (a Kubernetes Job) succeeds only if the end it was asked for is committed; a
    // stop by signal — committed or not — leaves the rest for the next run.
    if args.until_end && !report.reached_end {
        anyhow::bail!(
            "authwatch run --until-end: stopped before every partition was read to its end and \
             committed (a signal, or a failure while stopping); the next run resumes from the \
             group's committed offsets"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Feeds the runtime's own numbers to the exporter: consumer lag per partition and checkpoint
/// age are read at each scrape, and so are failed snapshot stores and, with a repartitioned
/// detect stage (`merge`), the events its merge holds back; readiness follows the consumer's
/// assignment and state restore; each checkpoint's and snapshot store's duration goes into its
/// histogram (taken every 200 ms by a small thread, as the runtime finishes them on its own
/// threads, and once more when the run has returned). A repartitioned process runs two stages,
/// each with its numbers: lag covers both consumers (the internal topic's partitions among
/// them), the checkpoint age is the older stage's, and the process is ready when every stage
/// has restored its state and one holds partitions.
fn connect_kafka_metrics(
    telemetry: &Arc<Telemetry>,
    stages: &[Arc<KafkaMetrics>],
    merge: bool,
) -> Feed {
    let lag = stages.to_vec();
    telemetry.register_consumer_lag(move || {
        lag.iter()
            .flat_map(|km| km.consumer_lag())
            .map(|l| PartitionLag {
                topic: l.topic,
                partition: l.partition,
                lag: l.lag,
            })
            .collect()
    });
    let age = stages.to_vec();
    telemetry.register_checkpoint_age(move || {
        age.iter()
            .filter_map(|km| km.checkpoint_age_seconds())
            .reduce(f64::max)
            .map(|s| std::time::Duration::from_secs_f64(s.max(0.0)))
    });
    let failures = stages.to_vec();
    telemetry.register_snapshot_store_failures(move || {
        failures.iter().map(|km| km.snapshot_store_failures()).sum()
    });
    let audit = stages.to_vec();
    telemetry.register_audit_record_failures(move || {
        audit.iter().map(|km| km.audit_records_failed()).sum()
    });
    if merge {
        let held = stages.to_vec();
        telemetry.register_merge_held(move || held.iter().map(|km| km.merge_held()).sum());
    }
    let (restored, assigned) = (stages.to_vec(), stages.to_vec());
    telemetry.health().follow(
        move || restored.iter().all(|km| km.restored()),
        move || assigned.iter().any(|km| km.assigned()),
    );
    let done = Arc::new(AtomicBool::new(false));
    let (t, stages, stopped) = (Arc::clone(telemetry), stages.to_vec(), Arc::clone(&done));
    let spawned = std::thread::Builder::new()
        .name("aw-telemetry-feed".into())
        .spawn(move || {
            let take = || {
                if stages.iter().all(|km| km.started()) {
                    t.health().set_started();
                }
                for km in &stages {
                    for took in km.take_checkpoint_durations() {
                        t.record_checkpoint(took);
                    }
                    for store in km.take_snapshot_stores() {
                        t.record_snapshot_store(store.duration, store.after_commit);
                    }
                }
            };
            // Not until the stop flag: the graceful stop's own checkpoint and snapshot store
            // finish after it is set. `Feed::finish` ends the loop once the run has returned.
            while !stopped.load(Ordering::Acquire) {
                take();
                std::thread::park_timeout(std::time::Duration::from_millis(200));
            }
            take();
        });
    let thread = spawned
        .inspect_err(|e| tracing::warn!(error = %e, "checkpoint durations will not be exported"))
        .ok();
    Feed { done, thread }
}

/// The thread that hands finished checkpoints and snapshot stores to the exporter.
struct Feed {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Feed {
    /// Ends the feed once the run has returned, after one last take: the graceful stop's own
    /// checkpoint and snapshot store are then in the final export.
    fn finish(self) {
        self.done.store(true, Ordering::Release);
        if let Some(thread) = self.thread {
            thread.thread().unpark();
            if thread.join().is_err() {
                tracing::warn!("the telemetry feed thread panicked");
            }
        }
    }
}

/// What the first signal prints: at the default log level (`warn`) a stop that takes tens of
/// seconds (the last batch, the checkpoint, the commit; longer with an unreachable broker)
/// would otherwise look like a hang.
const STOPPING: &str = "authwatch run: stopping: draining, checkpointing, committing; press \
                        Ctrl-C again to stop at once";

/// What a second signal prints before the process exits without its final commit.
const STOPPED_AT_ONCE: &str = "authwatch run: stopped at once, without the final checkpoint \
                               and commit; the next start resumes from the last commit";

/// SIGTERM (Kubernetes) and SIGINT set the stop flag; the source sees it between polls. A
/// second signal ends the process at once (exit 130 for SIGINT, 143 for SIGTERM, as a shell
/// reports a death by that signal): no drain, no checkpoint, no commit. That is safe because
/// state and offsets are only ever committed together: the next start resumes from the last
/// commit and reprocesses what came after it, as after a crash (docs/KAFKA.md).
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
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    tracing::error!("cannot watch SIGTERM and SIGINT");
                    return;
                };
                // The handlers stay installed for the life of the process: without them, once
                // tokio has taken SIGINT over, further Ctrl-C's would do nothing at all.
                let mut stopping = false;
                loop {
                    let code = tokio::select! {
                        _ = term.recv() => 143,
                        _ = int.recv() => 130,
                    };
                    if stopping {
                        eprintln!("{STOPPED_AT_ONCE}");
                        std::process::exit(code);
                    }
                    stopping = true;
                    let name = if code == 130 { "SIGINT" } else { "SIGTERM" };
                    tracing::info!(signal = name, "stopping");
                    eprintln!("{STOPPING}");
                    stop.store(true, Ordering::Relaxed);
                }
            });
        })
        .context("starting the signal watcher")?;
    Ok(())
}
