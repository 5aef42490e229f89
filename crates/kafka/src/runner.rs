//! The supervisor: builds clients and the pipeline, runs until stopped, and restarts from the
//! last checkpoint when the broker or a transaction fails.

use crate::audit::{Audit, ResponseAuditTopic};
use crate::client::{Inputs, base_config, instance_id};
use crate::error::KafkaError;
use crate::metrics::KafkaMetrics;
use crate::repartition::{self, MergeHandle, Role, Router, Stage};
use crate::sink::{KafkaSink, Topics};
use crate::source::{ConsumerCtx, FreshStart, KafkaSource, Shared};
use crate::store::CheckpointStore;
use authwatch_detect::RulePack;
use authwatch_pipeline::{Config, Metrics, Pipeline, RunOptions, RunSummary, Speed, StateParts};
use authwatch_respond::{
    AuditSink, JsonLinesAudit, Responder, ResponderThread, ResponseClock, StateSaver, TeeSink,
    saved_inbox,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a run did, over all its restarts.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Summary of the last pipeline run (the one that ended with the stop).
    pub last: Option<RunSummary>,
    /// Restarts after failures.
    pub restarts: u64,
    /// With `--until-end`: the run stopped because every partition was read to its end, and
    /// that end is committed. False when a signal stopped it first (whatever it committed).
    pub reached_end: bool,
}

/// The Kafka runtime of one `authwatch run` process.
pub struct Runtime {
    config: Config,
    pack: RulePack,
    stop: Arc<AtomicBool>,
    metrics: Arc<KafkaMetrics>,
    pipeline_metrics: Arc<Mutex<Option<Arc<Metrics>>>>,
    until_end: bool,
    observer: Option<Arc<dyn authwatch_pipeline::BatchObserver>>,
    on_pipeline: Option<PipelineHook>,
    /// Detectors after the compiled rules (windowed SQL, the SQL endpoint's live window).
    detectors: Vec<Arc<dyn authwatch_pipeline::DetectorFactory>>,
    /// Wraps the sink of every pipeline this runtime builds (the Parquet archive).
    sink_layer: Option<SinkLayer>,
    /// The decision counts of the responder of the current run (a restart starts a new one).
    response_counts: Arc<Mutex<Option<authwatch_respond::SharedCounts>>>,
    /// What this runtime runs: everything, or one stage of a repartitioned run.
    stage: Stage,
    /// The stages a repartitioned process runs.
    role: Role,
    /// The ingest stage's numbers, when a repartitioned process runs it.
    ingest_metrics: Arc<KafkaMetrics>,
}

/// Wraps the sink of a pipeline (e.g. archiving what passes through); fails as configuration.
pub type SinkLayer = Arc<
    dyn Fn(Box<dyn authwatch_pipeline::Sink>) -> Result<Box<dyn authwatch_pipeline::Sink>, String>
        + Send
        + Sync,
>;

/// Called with the counters of every pipeline the runtime builds (one per start or restart) and
/// the stage it runs.
type PipelineHook = Arc<dyn Fn(PipelineStage, Arc<Metrics>) + Send + Sync>;

/// Which stage a pipeline built by the runtime runs, as the [`Runtime::on_pipeline`] hook is
/// told: a repartitioned process running both stages builds one pipeline for each, and an
/// exporter must tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineStage {
    /// Provider topics straight to detection (`[kafka.repartition]` off).
    Whole,
    /// A repartitioned run's ingest stage: provider topics → normalize + enrich → internal
    /// topic. Its dead letters are the provider records that could not be read.
    Ingest,
    /// A repartitioned run's detect stage: internal topic → merge → detect → alerts.
    Detect,
}

impl PipelineStage {
    fn of(stage: &Stage) -> PipelineStage {
        match stage {
            Stage::Whole => PipelineStage::Whole,
            Stage::Ingest => PipelineStage::Ingest,
            Stage::Detect { .. } => PipelineStage::Detect,
        }
    }
}

impl Runtime {
    /// A runtime for `config` and `pack`; set `stop` (e.g. on SIGTERM) to drain, checkpoint,
    /// commit and return.
    pub fn new(config: Config, pack: RulePack, stop: Arc<AtomicBool>) -> Result<Self, KafkaError> {
        if config.kafka.topics.is_empty() {
            return Err(KafkaError::Config(
                "kafka.topics is empty: name at least one provider topic".to_owned(),
            ));
        }
        Ok(Runtime {
            config,
            pack,
            stop,
            metrics: Arc::new(KafkaMetrics::new()),
            pipeline_metrics: Arc::new(Mutex::new(None)),
            until_end: false,
            observer: None,
            on_pipeline: None,
            detectors: Vec::new(),
            sink_layer: None,
            response_counts: Arc::new(Mutex::new(None)),
            stage: Stage::Whole,
            role: Role::All,
            ingest_metrics: Arc::new(KafkaMetrics::new()),
        })
    }

    /// With `[kafka.repartition] enabled`: which stages this process runs (default both).
    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// The numbers of every stage this process runs: the detect stage's (or the only one's)
    /// first, then the ingest stage's when repartitioning runs it here.
    pub fn stage_metrics(&self) -> Vec<Arc<KafkaMetrics>> {
        if !self.config.kafka.repartition.enabled {
            return vec![Arc::clone(&self.metrics)];
        }
        match self.role {
            Role::All => vec![Arc::clone(&self.metrics), Arc::clone(&self.ingest_metrics)],
            Role::Detect => vec![Arc::clone(&self.metrics)],
            Role::Ingest => vec![Arc::clone(&self.ingest_metrics)],
        }
    }

    /// One stage of a repartitioned run, as a runtime of its own: its own clients, group,
    /// transactional id, checkpoints and restarts.
    fn stage_runtime(&self, stage: Stage) -> Runtime {
        let instance = instance_id(&self.config.kafka);
        let detect = matches!(stage, Stage::Detect { .. });
        Runtime {
            config: repartition::stage_config(&self.config, &stage, &instance),
            pack: self.pack.clone(),
            stop: Arc::clone(&self.stop),
            metrics: if detect {
                Arc::clone(&self.metrics)
            } else {
                Arc::clone(&self.ingest_metrics)
            },
            pipeline_metrics: if detect {
                Arc::clone(&self.pipeline_metrics)
            } else {
                Arc::new(Mutex::new(None))
            },
            until_end: false,
            // Batch durations are those of the process's main pipeline: the detect stage's, or
            // the ingest stage's in a process that runs only that one. Two stages' batches in
            // one histogram would mix two different latencies.
            observer: if detect || self.role == Role::Ingest {
                self.observer.clone()
            } else {
                None
            },
            // Both stages' pipelines go to the hook, tagged with their stage: the exporter
            // decides what each contributes (the ingest stage's dead letters and liveness).
            on_pipeline: self.on_pipeline.clone(),
            // SQL detections and the archive (enriched events, alerts) belong to detection.
            detectors: if detect {
                self.detectors.clone()
            } else {
                Vec::new()
            },
            sink_layer: if detect {
                self.sink_layer.clone()
            } else {
                None
            },
            response_counts: Arc::clone(&self.response_counts),
            stage,
            role: self.role,
            ingest_metrics: Arc::clone(&self.ingest_metrics),
        }
    }

    /// Runs the stages of a repartitioned run this process has: both on their own threads
    /// until stopped (one failing for good stops the other), or one of them.
    fn run_stages(&self) -> Result<RunReport, KafkaError> {
        if self.until_end {
            return Err(KafkaError::Config(
                "--until-end is not supported with kafka.repartition: the detect stage cannot \
                 know where the ingest stage will end"
                    .to_owned(),
            ));
        }
        let providers: Vec<String> = self
            .config
            .kafka
            .topics
            .iter()
            .map(|t| t.name.clone())
            .collect();
        let ingest = self.stage_runtime(Stage::Ingest);
        let detect = self.stage_runtime(Stage::Detect { providers });
        match self.role {
            Role::Ingest => ingest.run(),
            Role::Detect => detect.run(),
            Role::All => std::thread::scope(|scope| {
                let stop = Arc::clone(&self.stop);
                let handle = std::thread::Builder::new()
                    .name("aw-ingest".into())
                    .spawn_scoped(scope, move || {
                        let result = ingest.run();
                        if result.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        result
                    })
                    .map_err(|e| {
                        KafkaError::Config(format!("cannot start the ingest stage: {e}"))
                    })?;
                let detected = detect.run();
                if detected.is_err() {
                    self.stop.store(true, Ordering::Relaxed);
                }
                let ingested = handle.join().unwrap_or_else(|_| {
                    Err(KafkaError::Config("the ingest stage panicked".into()))
                });
                let (mut report, ingested) = (detected?, ingested?);
                report.restarts += ingested.restarts;
                Ok(report)
            }),
        }
    }

    /// The responder's decisions so far as (action, result, count), for the metrics exporter;
    /// empty when `[respond]` is off. A restart starts the totals again (a counter reset).
    pub fn response_counts(&self) -> impl Fn() -> Vec<(String, String, u64)> + Send + Sync + use<> {
        let current = Arc::clone(&self.response_counts);
        move || {
            let Some(counts) = current.lock().ok().and_then(|c| c.clone()) else {
                return Vec::new();
            };
            let Ok(counts) = counts.lock() else {
                return Vec::new();
            };
            counts
                .iter()
                .map(|((action, decision), n)| {
                    (action.as_str().to_owned(), decision.as_str().to_owned(), *n)
                })
                .collect()
        }
    }

    /// Reports every batch of every pipeline this runtime builds to `observer` (telemetry).
    pub fn with_observer(mut self, observer: Arc<dyn authwatch_pipeline::BatchObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Calls `hook` with the stage and the counters of each pipeline this runtime builds: a
    /// restart builds a new pipeline, and an exporter must follow it. A repartitioned process
    /// with [`Role::All`] calls it for both stages' pipelines, each from its own thread and
    /// each stage restarting on its own.
    pub fn on_pipeline(
        mut self,
        hook: impl Fn(PipelineStage, Arc<Metrics>) + Send + Sync + 'static,
    ) -> Self {
        self.on_pipeline = Some(Arc::new(hook));
        self
    }

    /// Also runs the detectors `factory` makes in every pipeline this runtime builds (each task
    /// gets its own, checkpointed with the task's state).
    pub fn with_stream_detectors(
        mut self,
        factory: Arc<dyn authwatch_pipeline::DetectorFactory>,
    ) -> Self {
        self.detectors.push(factory);
        self
    }

    /// Wraps the sink of every pipeline this runtime builds with `layer` (made anew at each
    /// start or restart). The layer sees every result and checkpoint before the Kafka sink.
    pub fn with_sink_layer(mut self, layer: SinkLayer) -> Self {
        self.sink_layer = Some(layer);
        self
    }

    /// Stop (gracefully) once every assigned partition is consumed up to the end offset it had
    /// when assigned: a backfill, or a benchmark over a loaded topic. A failed last checkpoint
    /// restarts from the one before, as any failure does; [`RunReport::reached_end`] tells
    /// whether the run ended there, with the end committed, or was stopped first.
    pub fn until_end(mut self, yes: bool) -> Self {
        self.until_end = yes;
        self
    }

    /// The runtime's numbers (lag, checkpoints, readiness), for the telemetry endpoint.
    pub fn metrics(&self) -> Arc<KafkaMetrics> {
        Arc::clone(&self.metrics)
    }

    /// The counters of the pipeline now running (events, dead letters by reason, alerts,
    /// watermark): the detect stage's in a repartitioned process that runs it, `None` in one
    /// that runs only the ingest stage; `None` before the first start.
    pub fn pipeline_metrics(&self) -> Option<Arc<Metrics>> {
        self.pipeline_metrics.lock().ok().and_then(|m| m.clone())
    }

    /// Runs until `stop` is set, restarting from the last checkpoint after broker or transaction
    /// failures (backoff 1 s doubling to 30 s). Configuration and state errors end the run.
    pub fn run(&self) -> Result<RunReport, KafkaError> {
        if self.stage == Stage::Whole && self.config.kafka.repartition.enabled {
            return self.run_stages();
        }
        if self.stage == Stage::Whole && self.role != Role::All {
            return Err(KafkaError::Config(
                "--role ingest|detect needs [kafka.repartition] enabled = true".to_owned(),
            ));
        }
        let mut report = RunReport::default();
        let mut backoff = Duration::from_secs(1);
        let mut first = true;
        loop {
            let started = Instant::now();
            let result = self.run_once(first);
            first = false;
            // The run's consumer is closed: no statistics report the lag any more, and the last
            // one (often a healthy 0) would read as current while the run backs off, restarts
            // or has ended. Cleared here, after the consumer's close, which may still serve a
            // report.
            self.metrics.clear_lag();
            match result {
                Ok((summary, reached_end)) => {
                    report.last = Some(summary);
                    report.reached_end = reached_end;
                    return Ok(report);
                }
                // A backfill that reached its end but failed to commit it is not done: the
                // source stops there by itself (not through `stop`), so it restarts from the
                // last checkpoint like any failed run and reads to the end again.
                Err(e) if e.is_retryable() && !self.stop.load(Ordering::Relaxed) => {
                    report.restarts += 1;
                    self.metrics.add_restart();
                    self.metrics.set_assigned(false);
                    self.metrics.set_restored(false);
                    if started.elapsed() > Duration::from_secs(60) {
                        backoff = Duration::from_secs(1);
                    }
                    tracing::warn!(error = %e, ?backoff, "restarting from the last checkpoint");
                    let until = Instant::now() + backoff;
                    while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    if self.stop.load(Ordering::Relaxed) {
                        return Ok(report);
                    }
                }
                Err(e) if e.is_retryable() => {
                    // Stopping while a run fails or recovers: the failed sink aborted its open
                    // transaction (or the broker times it out), so what is committed is exactly
                    // the last checkpoint — offsets, state files and alerts together — and the
                    // next start resumes from it. Retrying first only to commit once more would
                    // stretch the shutdown past a pod's grace period for no gain in correctness.
                    tracing::warn!(
                        error = %e,
                        "stopping: the work after the last committed checkpoint was not committed \
                         and is processed again at the next start"
                    );
                    return Ok(report);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One run from the last checkpoint; with the summary, whether it stopped at the end of
    /// every partition (`--until-end`) with that end committed.
    ///
    /// `first`: the process's first run, where a checkpoint store that cannot be used is a
    /// configuration error (a wrong bucket, endpoint or credentials); at a restart it is
    /// retried like any other store error.
    fn run_once(&self, first: bool) -> Result<(RunSummary, bool), KafkaError> {
        let kafka = &self.config.kafka;
        let instance = instance_id(kafka);
        let base = base_config(kafka)?;
        // Broker calls (metadata, init/commit of transactions, committed offsets) are bounded by
        // the transaction timeout: the broker aborts a transaction older than that anyway, so
        // waiting longer for its commit cannot succeed.
        let txn_timeout = (self.config.checkpoint.interval.0 * 2 + Duration::from_secs(10))
            .max(Duration::from_secs(30));
        let timeout = txn_timeout;

        let internal = kafka.repartition.topic_for(&kafka.group_id);
        // One metadata client for the start: the input partitions, which output topics are
        // missing, and the repartitioned stages' partition tables. It never creates a topic by
        // asking for it, whatever `kafka.properties` says: a topic created that way would get
        // the broker's default partition count.
        let probe: BaseConsumer = base
            .clone()
            .set("allow.auto.create.topics", "false")
            .create()
            .map_err(|e| KafkaError::client("creating the metadata client", e))?;
        if self.stage != Stage::Whole {
            // Either stage may start first: whichever does creates the internal topic.
            let topic = [(internal.as_str(), kafka.repartition.partitions)];
            crate::admin::ensure_topics(
                &base,
                &crate::admin::missing_topics(&probe, &topic, timeout)?,
            )?;
        }
        let inputs = self.discover(&probe, timeout)?;
        let store = match &self.config.checkpoint.url {
            Some(url) => CheckpointStore::open(url, &kafka.group_id)?,
            None => CheckpointStore::new(&self.config.checkpoint.dir, &kafka.group_id),
        };
        store
            .prepare()
            .map_err(|e| if first { e.fatal() } else { e })?;

        // Output topics are created when missing (broker defaults for partitions); input topics
        // are the providers' and must exist.
        let mut outputs: Vec<(&str, i32)> = vec![
            (kafka.dead_letter_topic.as_str(), -1),
            (kafka.audit_topic.as_str(), -1),
        ];
        if self.stage != Stage::Ingest {
            outputs.push((kafka.alert_topic.as_str(), -1));
        }
        if let Some(t) = &kafka.enriched_topic {
            outputs.push((t.as_str(), -1));
        }
        crate::admin::ensure_topics(
            &base,
            &crate::admin::missing_topics(&probe, &outputs, timeout)?,
        )?;
        // The detect stage merges the records of every provider partition; the ingest stage
        // spreads events over the internal topic's partitions as they are.
        let (merge, router) = match &self.stage {
            Stage::Whole => (None, None),
            Stage::Detect { providers } => (
                Some(MergeHandle::new(repartition::partition_names(
                    &probe, providers, timeout,
                )?)),
                None,
            ),
            Stage::Ingest => {
                let n = repartition::created_partition_count(&probe, &internal, timeout)?;
                let r = &kafka.repartition;
                (
                    None,
                    Some(Router::new(
                        internal.clone(),
                        n,
                        r.key,
                        r.idle_after.0,
                        Arc::clone(&inputs),
                    )),
                )
            }
        };
        drop(probe);

        let audit = Arc::new(Audit::new(
            base.clone(),
            &kafka.audit_topic,
            &instance,
            &kafka.group_id,
            Arc::clone(&self.metrics),
        )?);

        // The transactional producer: initializing it fences (and aborts the open transaction
        // of) a previous incarnation with the same id.
        let txn_timeout_ms = txn_timeout.as_millis();
        // The topics this producer writes: a record over any one's `max.message.bytes` would
        // be refused by the broker at the commit, so the producer's limit is held to theirs.
        let mut written: Vec<&str> = vec![kafka.dead_letter_topic.as_str()];
        if self.stage != Stage::Ingest {
            written.push(kafka.alert_topic.as_str());
        }
        if let Some(t) = &kafka.enriched_topic {
            written.push(t.as_str());
        }
        if self.stage == Stage::Ingest {
            written.push(internal.as_str());
        }
        // Reading topic configs needs the DescribeConfigs permission, which a least-privilege
        // principal may lack: without it the run still starts, held to the producer's own limit
        // only, as before this check existed.
        let limits = crate::admin::max_message_bytes(&base, &written).unwrap_or_else(|e| {
            tracing::warn!(
                error = %e,
                "cannot read the output topics' max.message.bytes; records are held to the \
                 producer's message.max.bytes only, and one over a smaller topic limit fails \
                 its checkpoint"
            );
            Vec::new()
        });
        let max_record =
            crate::client::fit_to_topics(crate::client::producer_max_bytes(&base)?, &limits)?;
        let pc = producer_config(&base, max_record, &instance, txn_timeout_ms);
        let producer: ThreadedProducer<DefaultProducerContext> = pc
            .create()
            .map_err(|e| KafkaError::client("creating the producer", e))?;
        crate::client::connect(&producer, &kafka.audit_topic, timeout)?;
        producer
            .init_transactions(timeout)
            .map_err(|e| KafkaError::client("initializing transactions", e))?;
        producer
            .begin_transaction()
            .map_err(|e| KafkaError::client("beginning a transaction", e))?;

        let cc = consumer_config(&base, &kafka.group_id);
        let (sink_down, sink_watch) = crate::sink::sink_latch();
        let shared = Arc::new(Mutex::new(Shared {
            // The consumer's own value: `kafka.properties` or `kafka.properties_file` over
            // authwatch's default.
            fresh_start: FreshStart::from_reset(cc.get("auto.offset.reset").unwrap_or("earliest")),
            controls: None,
            inputs: Arc::clone(&inputs),
            sent: BTreeMap::new(),
            assigned: Default::default(),
            rebalanced: Default::default(),
            error: None,
            next_barrier: 0,
            store: store.clone(),
            audit: Arc::clone(&audit),
            metrics: Arc::clone(&self.metrics),
            // One checkpoint is at most a send_offsets_to_transaction and a commit_transaction,
            // each bounded by `timeout`; a sink that completes none for longer is wedged.
            ack_timeout: timeout * 2 + self.config.checkpoint.interval.0,
            broker_timeout: timeout,
            sink: sink_watch,
            until_end: self.until_end,
            ends: BTreeMap::new(),
            merge: merge.clone(),
            replay: BTreeMap::new(),
            snapshot_interval: self.config.checkpoint.snapshot_interval.0,
            last_snapshot: std::time::Instant::now(),
            assignment_handled: false,
            restoring_since: None,
        }));
        let consumer: BaseConsumer<ConsumerCtx> = cc
            .create_with_context(ConsumerCtx {
                shared: Arc::clone(&shared),
                metrics: Arc::clone(&self.metrics),
            })
            .map_err(|e| KafkaError::client("creating the consumer", e))?;
        let topics: Vec<&str> = kafka.topics.iter().map(|t| t.name.as_str()).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| KafkaError::client("subscribing", e))?;
        audit.record("started", Vec::new(), None);

        let mut pipeline = Pipeline::new(self.config.clone(), self.pack.clone())
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        if let Some(observer) = &self.observer {
            pipeline = pipeline.with_observer(Arc::clone(observer));
        }
        if merge.is_some() {
            pipeline = pipeline.with_enricher(Arc::new(repartition::AlreadyEnriched));
        }
        for factory in &self.detectors {
            pipeline = pipeline.with_stream_detectors(Arc::clone(factory));
        }
        self.announce(pipeline.metrics());
        let formats: BTreeMap<&str, authwatch_normalize::Format> = kafka
            .topics
            .iter()
            .map(|t| (t.name.as_str(), t.format))
            .collect();
        let options = RunOptions {
            speed: Speed::Max,
            flush_at_end: false,
            input_formats: (0..inputs.len() as u32)
                .map(|i| {
                    inputs
                        .get(i)
                        .and_then(|(topic, _)| formats.get(topic).copied())
                })
                .collect(),
            route_only: self.stage == Stage::Ingest,
        };
        let mut source = KafkaSource::new(
            consumer,
            Arc::clone(&shared),
            inputs.names(),
            kafka.poll_wait.0,
            self.config.checkpoint.interval.0,
            Arc::clone(&self.stop),
            self.config.input.max_line_bytes,
            self.config.input.dead_letter_raw_bytes,
        );
        if let Some(handle) = &merge {
            source = source.with_merge(repartition::Merge::new(
                handle.clone(),
                Arc::clone(&self.metrics),
            ));
        }
        let mut sink = KafkaSink::new(
            producer,
            Topics {
                alerts: kafka.alert_topic.clone(),
                dead_letters: kafka.dead_letter_topic.clone(),
                enriched: kafka.enriched_topic.clone(),
            },
            Arc::clone(&inputs),
            store.clone(),
            Arc::clone(&self.metrics),
            timeout,
            sink_down,
            crate::sink::Limits {
                max_record,
                keep_bytes: self.config.input.dead_letter_raw_bytes,
            },
        )
        .map_err(|e| KafkaError::Store {
            path: store.location(),
            message: format!("starting the snapshot writer thread: {e}"),
            retryable: true,
        })?;
        sink = sink.counting_in(pipeline.metrics());
        if let Some(router) = router {
            sink = sink.with_router(router);
        }
        if let Some(handle) = &merge {
            sink = sink.with_provenance(handle.clone());
        }
        let responder = self.start_responder(&base, &store, &instance)?;
        let sink = match &responder {
            Some(thread) => thread.tee(sink),
            None => TeeSink::without_responder(sink),
        };
        let sink: Box<dyn authwatch_pipeline::Sink> = match &self.sink_layer {
            Some(layer) => match layer(Box::new(sink)) {
                Ok(sink) => sink,
                Err(e) => {
                    if let Some(Err(re)) = responder.map(ResponderThread::finish) {
                        tracing::warn!(error = %re, "responder stopped with an error");
                    }
                    return Err(KafkaError::Config(e));
                }
            },
            None => Box::new(sink),
        };
        let reporter = Reporter::start(Arc::clone(&self.metrics), pipeline.metrics());
        let result = pipeline.run_with(&mut source, sink, &options);
        drop(reporter);
        // The sink (returned or dropped with the error) no longer hands alerts over: the
        // responder finishes the ones it has and saves its state.
        let result = result.map(|(summary, _sink)| summary);
        let responder_error = match responder.map(ResponderThread::finish) {
            Some(Err(e)) => Some(e),
            Some(Ok(report)) => {
                let decisions: Vec<String> = report
                    .counts
                    .iter()
                    .map(|((action, decision), n)| {
                        format!("{n} {} {}", action.as_str(), decision.as_str())
                    })
                    .collect();
                tracing::info!(
                    queued = report.queued,
                    decisions = decisions.join(", "),
                    "responder stopped"
                );
                None
            }
            None => None,
        };
        let source_error = source.take_error();
        source.consumer().unsubscribe();
        self.metrics.set_assigned(false);
        match run_outcome(result, source_error, responder_error) {
            Err(e) => {
                audit.record("restarting", Vec::new(), Some(e.to_string()));
                audit.flush();
                Err(e)
            }
            Ok(summary) => {
                audit.record("stopped", Vec::new(), None);
                audit.flush();
                Ok((summary, source.reached_end()))
            }
        }
    }

    /// The responder, when `[respond] enabled`: audit records to the audit file and the audit
    /// topic, wall-clock time, its state restored from the instance's checkpoint file and saved
    /// there again (see docs/RESPONSE.md, "In the Kafka runtime").
    fn start_responder(
        &self,
        base: &rdkafka::ClientConfig,
        store: &CheckpointStore,
        instance: &str,
    ) -> Result<Option<ResponderThread>, KafkaError> {
        let config = &self.config.respond;
        if !config.enabled {
            return Ok(None);
        }
        let respond = |e: &dyn std::fmt::Display| KafkaError::Respond(e.to_string());
        let path = config.audit_path();
        let file = JsonLinesAudit::open(&path).map_err(|e| respond(&e))?;
        let topic = ResponseAuditTopic::new(base.clone(), &self.config.kafka.audit_topic)?;
        let sinks: Vec<Box<dyn AuditSink>> = vec![Box::new(file), Box::new(topic)];
        // A responder that cannot be built (secret missing, bad URL) or a state that cannot be
        // restored is the operator's to fix: restarting would not help.
        let mut responder = Responder::new(config, ResponseClock::wall(), sinks)
            .map_err(|e| KafkaError::Config(format!("respond: {e}")))?;
        let mut inbox = Vec::new();
        if let Some(state) = store.load_instance(instance)? {
            state
                .restore(&mut responder)
                .map_err(|e| KafkaError::Config(format!("respond: {e}")))?;
            inbox = saved_inbox(&state).map_err(|e| KafkaError::Config(format!("respond: {e}")))?;
            tracing::info!(
                instance,
                unfinished_alerts = inbox.len(),
                "responder state restored"
            );
        }
        let saver = InstanceState {
            store: store.clone(),
            instance: instance.to_owned(),
        };
        let thread = ResponderThread::spawn_live(responder, inbox, Box::new(saver), RESPOND_TICK)
            .map_err(|e| respond(&e))?;
        if let Ok(mut current) = self.response_counts.lock() {
            *current = Some(thread.counts());
        }
        Ok(Some(thread))
    }

    /// A new pipeline is built: tells the hook (with this runtime's stage) and keeps its
    /// counters for [`Runtime::pipeline_metrics`].
    fn announce(&self, metrics: Arc<Metrics>) {
        if let Some(hook) = &self.on_pipeline {
            hook(PipelineStage::of(&self.stage), Arc::clone(&metrics));
        }
        if let Ok(mut m) = self.pipeline_metrics.lock() {
            *m = Some(metrics);
        }
    }

    /// Numbers every partition of the input topics; a missing topic is a configuration error.
    fn discover(&self, probe: &BaseConsumer, timeout: Duration) -> Result<Arc<Inputs>, KafkaError> {
        let mut partitions = Vec::new();
        for t in &self.config.kafka.topics {
            let md = probe
                .fetch_metadata(Some(&t.name), timeout)
                .map_err(|e| KafkaError::client(format!("reading metadata of {}", t.name), e))?;
            let Some(topic) = md.topics().iter().find(|m| m.name() == t.name) else {
                return Err(KafkaError::Config(format!("topic {} not found", t.name)));
            };
            if let Some(e) = topic.error() {
                let e = rdkafka::error::KafkaError::MetadataFetch(e.into());
                return Err(KafkaError::Config(format!("topic {}: {e}", t.name)));
            }
            let mut ps: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
            ps.sort_unstable();
            partitions.extend(ps.into_iter().map(|p| (t.name.clone(), p)));
        }
        Ok(Inputs::new(partitions))
    }
}

/// How a run ended, from the pipeline's result, the source's error and the responder's.
///
/// The source's or the responder's own error names the cause better than the pipeline's echo
/// of it (a failed source reads as a failed read to the pipeline) — except when the pipeline
/// failed for good on its own (a task state that does not restore, a snapshot that cannot be
/// taken, a stage that panicked): a source waiting for a barrier then sees only that the
/// barrier was never committed, a retryable error, and reporting that one would restart the run
/// over and over (or, on a stop, end it with status 0) instead of stopping it on the cause.
fn run_outcome(
    result: Result<RunSummary, authwatch_pipeline::PipelineError>,
    source_error: Option<KafkaError>,
    responder_error: Option<authwatch_respond::RespondError>,
) -> Result<RunSummary, KafkaError> {
    let result = result.map_err(KafkaError::Pipeline);
    match (result, source_error, responder_error) {
        (_, Some(e), _) if !e.is_retryable() => Err(e),
        (Err(e), source, _) if !e.is_retryable() => {
            if let Some(source) = source {
                tracing::warn!(error = %source, "the source failed too");
            }
            Err(e)
        }
        (_, Some(e), _) => Err(e),
        (_, None, Some(e)) => Err(KafkaError::Respond(e.to_string())),
        (result, None, None) => result,
    }
}

/// The transactional producer's configuration: authwatch's defaults, then the operator's
/// properties (`base`), then what the sink and the checkpoints rely on. `message.max.bytes` is
/// explicit and known to the sink: a record over it is refused when it is handed to the
/// producer, so the sink can write it as a dead letter (or trim an alert) and go on; it is the
/// operator's value held to the output topics' limits (over a topic's `max.message.bytes` the
/// broker would refuse the record at the commit instead, which fails the whole transaction every
/// time it is retried).
fn producer_config(
    base: &rdkafka::ClientConfig,
    max_record: usize,
    instance: &str,
    txn_timeout_ms: u128,
) -> rdkafka::ClientConfig {
    let mut pc =
        crate::client::with_defaults(base, &[("linger.ms", "5"), ("compression.type", "lz4")]);
    pc.set("message.max.bytes", max_record.to_string())
        .set("transactional.id", instance)
        .set("enable.idempotence", "true")
        // A transaction spans one checkpoint interval. An instance that dies and comes back
        // under another id leaves its transaction open this long, holding back read-committed
        // consumers of its output partitions.
        .set("transaction.timeout.ms", txn_timeout_ms.to_string());
    pc
}

/// The consumer's configuration: authwatch's defaults, then the operator's properties
/// (`base`, checked for the eager protocol and the reserved keys by `base_config`), then what
/// the checkpoints rely on (offsets committed only in the producer's transactions, read
/// committed).
fn consumer_config(base: &rdkafka::ClientConfig, group_id: &str) -> rdkafka::ClientConfig {
    let mut cc = crate::client::with_defaults(
        base,
        &[
            // Dynamic membership: a stopping instance leaves the group at once, a killed one is
            // replaced after the session timeout. (`group.instance.id` in kafka.properties
            // turns on static membership for instances with stable names.)
            ("session.timeout.ms", "10000"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("statistics.interval.ms", "5000"),
            ("fetch.wait.max.ms", "50"),
            ("queued.max.messages.kbytes", "65536"),
            // librdkafka (2.4+) postpones a partition's next fetch by this much once its local
            // queue is over `queued.min.messages`; the default, 1 s, leaves a consumer that
            // drains 100k records in well under a second idle for the rest of it. Measured on
            // a 2M-record topic: 1 s → 141k records/s (and up to 1 s of added latency), 10 ms →
            // 400–460k records/s, 0 → more system time for no more speed (docs/KAFKA.md).
            ("fetch.queue.backoff.ms", "10"),
        ],
    );
    cc.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    cc
}

/// How often the responder lets queued actions go out and checks the breaker when no alert
/// comes.
const RESPOND_TICK: Duration = Duration::from_secs(2);

/// The responder's state in the instance's checkpoint file.
struct InstanceState {
    store: CheckpointStore,
    instance: String,
}

impl StateSaver for InstanceState {
    fn save(&mut self, state: &StateParts) -> Result<(), String> {
        self.store
            .write_instance(&self.instance, state)
            .map_err(|e| e.to_string())
    }
}

/// Logs throughput, lag and checkpoint age every 10 s while a run lasts.
struct Reporter {
    /// Dropped to stop the thread: its wait ends at once, not at its next wake-up.
    stop: Option<crossbeam_channel::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    const EVERY: Duration = Duration::from_secs(10);

    fn start(metrics: Arc<KafkaMetrics>, pipeline: Arc<Metrics>) -> Self {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let handle = std::thread::Builder::new()
            .name("aw-kafka-report".into())
            .spawn(move || {
                let mut last = (Instant::now(), metrics.records_in());
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(Self::EVERY)
                {
                    let records = metrics.records_in();
                    let secs = last.0.elapsed().as_secs_f64().max(1e-3);
                    let rate = ((records - last.1) as f64 / secs) as u64;
                    metrics.set_throughput(rate);
                    last = (Instant::now(), records);
                    tracing::info!(
                        records,
                        events_per_second = rate,
                        lag = metrics.total_lag(),
                        alerts = Metrics::get(&pipeline.alerts),
                        dead_letters = pipeline.dead_letter_total(),
                        checkpoints = metrics.checkpoints(),
                        checkpoint_age_s = metrics.checkpoint_age_seconds().unwrap_or(-1.0),
                        checkpoint_ms = metrics.checkpoint_duration_seconds() * 1000.0,
                        merge_held = metrics.merge_held(),
                        audit_failures = metrics.audit_records_failed(),
                        outputs_too_large = metrics.outputs_too_large(),
                        alerts_trimmed = metrics.alerts_trimmed(),
                        "kafka runtime"
                    );
                }
            })
            .ok();
        Reporter {
            stop: Some(stop),
            handle,
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use authwatch_pipeline::config::KafkaConfig;

    /// A `[kafka]` with `properties` and a properties file holding `file`.
    fn kafka(
        dir: &std::path::Path,
        properties: &[(&str, &str)],
        file: &[(&str, &str)],
    ) -> KafkaConfig {
        let path = dir.join("client.properties");
        let text: String = file.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(&path, text).unwrap();
        KafkaConfig {
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            properties_file: Some(path),
            ..KafkaConfig::default()
        }
    }

    // authwatch's producer defaults (linger, compression) are defaults: an operator's
    // `kafka.properties` wins; what the transactions rely on is authwatch's whatever they say.
    #[test]
    fn the_operators_producer_properties_win_over_authwatchs_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let k = kafka(
            dir.path(),
            &[("linger.ms", "50"), ("compression.type", "zstd")],
            &[("batch.size", "65536")],
        );
        let base = base_config(&k).unwrap();
        let pc = producer_config(&base, 500_000, "i-1", 30_000);
        assert_eq!(pc.get("linger.ms"), Some("50"));
        assert_eq!(pc.get("compression.type"), Some("zstd"));
        assert_eq!(pc.get("batch.size"), Some("65536"));
        assert_eq!(pc.get("transactional.id"), Some("i-1"));
        assert_eq!(pc.get("enable.idempotence"), Some("true"));
        assert_eq!(pc.get("transaction.timeout.ms"), Some("30000"));
        assert_eq!(pc.get("message.max.bytes"), Some("500000"));
        assert_eq!(pc.get("bootstrap.servers"), Some(k.brokers.as_str()));
        // Without the operator's values, authwatch's.
        let base = base_config(&kafka(dir.path(), &[], &[])).unwrap();
        let pc = producer_config(&base, 1_000_000, "i-1", 30_000);
        assert_eq!(pc.get("linger.ms"), Some("5"));
        assert_eq!(pc.get("compression.type"), Some("lz4"));
    }

    /// What a hook was told: each pipeline's stage and the address of its counters.
    type Seen = Arc<Mutex<Vec<(PipelineStage, usize)>>>;

    /// A runtime over one provider topic, repartitioned or not, running `role`, whose hook
    /// records the stage of every pipeline it is told about.
    fn tagged_runtime(repartition: bool, role: Role) -> (Runtime, Seen) {
        let mut config = Config::default();
        config.kafka.topics = vec![authwatch_pipeline::config::KafkaTopic {
            name: "okta".into(),
            format: authwatch_normalize::Format::Auto,
        }];
        config.kafka.repartition.enabled = repartition;
        let pack = RulePack::from_rules(Vec::new()).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let runtime = Runtime::new(config, pack, Arc::new(AtomicBool::new(false)))
            .unwrap()
            .role(role)
            .with_observer(Arc::new(NoObserver))
            .on_pipeline(move |stage, metrics| {
                s.lock()
                    .unwrap()
                    .push((stage, Arc::as_ptr(&metrics) as usize));
            });
        (runtime, seen)
    }

    struct NoObserver;

    impl authwatch_pipeline::BatchObserver for NoObserver {
        fn batch_done(&self, _: &authwatch_pipeline::BatchReport) {}
    }

    // The exporter hears of both stages' pipelines, each tagged with its stage (the ingest
    // stage's dead letters are most of a repartitioned run's); `pipeline_metrics` and batch
    // durations stay the detect stage's, or the ingest stage's where it runs alone.
    #[test]
    fn the_hook_is_told_the_stage_of_every_pipeline() {
        let (whole, seen) = tagged_runtime(false, Role::All);
        let m = Arc::new(Metrics::new());
        whole.announce(Arc::clone(&m));
        assert_eq!(
            *seen.lock().unwrap(),
            [(PipelineStage::Whole, Arc::as_ptr(&m) as usize)]
        );
        assert!(whole.pipeline_metrics().is_some());

        let (all, seen) = tagged_runtime(true, Role::All);
        let ingest = all.stage_runtime(Stage::Ingest);
        let detect = all.stage_runtime(Stage::Detect {
            providers: vec!["okta".into()],
        });
        assert!(ingest.observer.is_none(), "batch durations are detect's");
        assert!(detect.observer.is_some());
        let (mi, md) = (Arc::new(Metrics::new()), Arc::new(Metrics::new()));
        ingest.announce(Arc::clone(&mi));
        assert!(
            all.pipeline_metrics().is_none(),
            "{:?}",
            seen.lock().unwrap()
        );
        detect.announce(Arc::clone(&md));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (PipelineStage::Ingest, Arc::as_ptr(&mi) as usize),
                (PipelineStage::Detect, Arc::as_ptr(&md) as usize),
            ]
        );
        assert!(Arc::ptr_eq(&all.pipeline_metrics().unwrap(), &md));

        let (alone, seen) = tagged_runtime(true, Role::Ingest);
        let ingest = alone.stage_runtime(Stage::Ingest);
        assert!(ingest.observer.is_some(), "the only stage's batches");
        ingest.announce(Arc::new(Metrics::new()));
        assert_eq!(seen.lock().unwrap()[0].0, PipelineStage::Ingest);
    }

    fn summary() -> RunSummary {
        RunSummary {
            lines: 0,
            bytes: 0,
            events: 0,
            dead_letters: Vec::new(),
            late_events: 0,
            duplicate_events: 0,
            alerts: 0,
            rules: Vec::new(),
            profiles: Default::default(),
            elapsed: Duration::ZERO,
        }
    }

    // A task state that does not restore fails the detect stage for good; a source waiting for
    // a barrier meanwhile sees the barrier dropped, a retryable commit error. Reported instead
    // of the pipeline's, that restarted the run over and over (and a stop exited 0).
    #[test]
    fn the_pipelines_own_failure_for_good_wins_over_the_sources_echo() {
        use authwatch_pipeline::PipelineError;
        use authwatch_pipeline::checkpoint::CheckpointError;
        let broken = || {
            Err(PipelineError::Checkpoint {
                input: "okta/0".into(),
                source: CheckpointError::Restore {
                    part: "engine".into(),
                    message: "written by other rules".into(),
                },
            })
        };
        let dropped = || KafkaError::Commit {
            id: 7,
            message: "the pipeline stopped before committing it".into(),
        };
        let e = run_outcome(broken(), Some(dropped()), None).unwrap_err();
        assert!(!e.is_retryable(), "{e}");
        assert!(e.to_string().contains("written by other rules"), "{e}");
        // A source's error that is final itself stays the one reported.
        let missing = KafkaError::MissingState {
            topic: "okta".into(),
            partition: 0,
            offset: 9,
            dir: "/ckpt".into(),
            legacy: String::new(),
        };
        let e = run_outcome(broken(), Some(missing), None).unwrap_err();
        assert!(matches!(e, KafkaError::MissingState { .. }), "{e}");
        // The pipeline's echo of a failed source (a failed read) is not the cause.
        let echo = Err(PipelineError::Source(
            authwatch_pipeline::SourceError::Read {
                name: "kafka consumer".into(),
                offset: 0,
                source: std::io::Error::other("checkpoint 7 failed"),
            },
        ));
        let e = run_outcome(echo, Some(dropped()), None).unwrap_err();
        assert!(matches!(e, KafkaError::Commit { id: 7, .. }), "{e}");
        let responder = authwatch_respond::RespondError::CannotApprove("no target".into());
        let e = run_outcome(Ok(summary()), None, Some(responder)).unwrap_err();
        assert!(
            matches!(e, KafkaError::Respond(_)) && e.is_retryable(),
            "{e}"
        );
        assert!(run_outcome(Ok(summary()), None, None).is_ok());
    }

    // The properties file (secrets, but also any other key) is read like kafka.properties:
    // over authwatch's consumer defaults, and the fresh start follows its auto.offset.reset.
    #[test]
    fn the_operators_consumer_properties_win_over_authwatchs_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let k = kafka(
            dir.path(),
            &[("session.timeout.ms", "45000")],
            &[
                ("auto.offset.reset", "latest"),
                ("fetch.wait.max.ms", "200"),
            ],
        );
        let base = base_config(&k).unwrap();
        let cc = consumer_config(&base, "g");
        assert_eq!(cc.get("auto.offset.reset"), Some("latest"));
        assert_eq!(cc.get("fetch.wait.max.ms"), Some("200"));
        assert_eq!(cc.get("session.timeout.ms"), Some("45000"));
        assert_eq!(cc.get("group.id"), Some("g"));
        assert_eq!(cc.get("enable.auto.commit"), Some("false"));
        assert_eq!(cc.get("isolation.level"), Some("read_committed"));
        assert_eq!(cc.get("statistics.interval.ms"), Some("5000"));
        let base = base_config(&kafka(dir.path(), &[], &[])).unwrap();
        let cc = consumer_config(&base, "g");
        assert_eq!(cc.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(cc.get("fetch.wait.max.ms"), Some("50"));
    }

    // What the exactly-once effect relies on cannot be changed by a property: the run stops
    // with a configuration error naming the key instead.
    #[test]
    fn properties_that_would_break_the_checkpoints_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let refused = [
            ("isolation.level", "read_uncommitted"),
            ("enable.auto.commit", "true"),
            ("enable.idempotence", "false"),
            ("group.id", "other"),
            ("transactional.id", "shared"),
            ("transaction.timeout.ms", "900000"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("group.protocol", "consumer"),
        ];
        for (key, value) in refused {
            for k in [
                kafka(dir.path(), &[(key, value)], &[]),
                kafka(dir.path(), &[], &[(key, value)]),
            ] {
                let e = base_config(&k).unwrap_err();
                assert!(matches!(e, KafkaError::Config(_)), "{key}: {e}");
                assert!(!e.is_retryable());
                assert!(e.to_string().contains(key), "{e}");
            }
        }
        // Repeating the value authwatch runs with is harmless (a copied client config).
        let same = kafka(
            dir.path(),
            &[("isolation.level", "read_committed")],
            &[
                ("enable.auto.commit", "false"),
                ("enable.idempotence", "TRUE"),
            ],
        );
        assert!(base_config(&same).is_ok());
    }
}
