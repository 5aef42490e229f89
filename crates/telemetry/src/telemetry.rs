//! [`Telemetry`]: the meter provider, its instruments, the sources they read, and the thread
//! that serves the HTTP endpoint.

use crate::TelemetryError;
use crate::batch::BatchRecorder;
use crate::health::Health;
use crate::names;
use crate::server;
use authwatch_normalize::RejectKind;
use authwatch_pipeline::config::TelemetryConfig;
use authwatch_pipeline::{BatchObserver, BatchReport, Metrics, Stage};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter, MeterProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// The consumer lag of one partition, as a lag source reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Messages between the consumer's position and the high watermark; negative when not
    /// known yet (such partitions are left out).
    pub lag: i64,
}

/// How many response actions ended with one result, as an action source reports it. A source
/// reports every pair it can count from the start, zeros included: a series appears with the
/// first report of its pair, and Prometheus' `rate()` ignores a series' first sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionCount {
    /// The action (`suspend`, `revoke_sessions`, `reset_mfa`, `notify`).
    pub action: String,
    /// How it ended: the responder's decision (`executed`, `dry_run`, `already_done`,
    /// `refused`, `duplicate`, `queued`, `pending_approval`, `rejected`, `failed`).
    pub result: String,
    /// How many so far (a running total).
    pub count: u64,
}

/// One windowed SQL detection's counters, as a source of
/// [`Telemetry::register_sql_detection_stats`] reports them: running totals over every task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlDetectionCounts {
    /// The detection's id.
    pub detection: String,
    /// Alerts it emitted.
    pub alerts: u64,
    /// Result rows an open incident of their key absorbed.
    pub suppressed: u64,
    /// Rows dropped because its buffer was full (`sql.max_buffered_rows`).
    pub evicted_rows: u64,
}

type LagSource = Box<dyn Fn() -> Vec<PartitionLag> + Send + Sync>;
type SqlStatsSource = Box<dyn Fn() -> Vec<SqlDetectionCounts> + Send + Sync>;
type ActionSource = Box<dyn Fn() -> Vec<ActionCount> + Send + Sync>;
type AgeSource = Box<dyn Fn() -> Option<Duration> + Send + Sync>;
type CountSource = Box<dyn Fn() -> u64 + Send + Sync>;
type NamedCountSource = Box<dyn Fn() -> Vec<(String, u64)> + Send + Sync>;

/// Dead-letter counts by [`RejectKind::index`].
type DeadLetterCounts = [u64; RejectKind::ALL.len()];

/// The pipelines the instruments read: the exported one and the additional ones (see
/// [`Telemetry::attach_additional_pipeline`]). One lock for all, so that a collection never
/// sees a pipeline replaced but its counts not yet carried over.
#[derive(Default)]
struct Pipelines {
    /// The exported pipeline, which every pipeline counter reads.
    main: Option<Arc<Metrics>>,
    /// Additional pipelines by name: only their dead letters are exported, added to the main's.
    additional: BTreeMap<String, Arc<Metrics>>,
    /// The dead letters of pipelines replaced while an additional one was attached.
    retired: DeadLetterCounts,
}

impl Pipelines {
    /// Keeps `old`'s dead letters in the sum when it is replaced by `new` (a restart). The
    /// exported total adds counters that restart independently: without this, one stage's
    /// restart would lower the sum, which Prometheus reads as a counter reset, and the other
    /// stage's whole total would count as a new increase (a false `AuthwatchDeadLettersHigh`).
    fn retire(&mut self, old: &Arc<Metrics>, new: &Arc<Metrics>) {
        // The same counters attached again are still counting: nothing is retired.
        if Arc::ptr_eq(old, new) {
            return;
        }
        for kind in RejectKind::ALL {
            let i = kind.index();
            self.retired[i] = self.retired[i].saturating_add(Metrics::get(&old.dead_letters[i]));
        }
    }

    /// The dead letters to export, by reason index: the main pipeline's, plus the additional
    /// pipelines' and the retired counts; `None` while no pipeline is attached.
    fn dead_letters(&self) -> Option<DeadLetterCounts> {
        if self.main.is_none() && self.additional.is_empty() {
            return None;
        }
        let mut sum = self.retired;
        for m in self.main.iter().chain(self.additional.values()) {
            for kind in RejectKind::ALL {
                let i = kind.index();
                sum[i] = sum[i].saturating_add(Metrics::get(&m.dead_letters[i]));
            }
        }
        Some(sum)
    }
}

/// What the observable instruments read at collection time (a scrape or an OTLP export).
#[derive(Default)]
pub(crate) struct Sources {
    pipelines: RwLock<Pipelines>,
    lag: RwLock<Vec<LagSource>>,
    actions: RwLock<Vec<ActionSource>>,
    action_counts: Mutex<BTreeMap<(String, String), u64>>,
    checkpoint_age: RwLock<Option<AgeSource>>,
    snapshot_failures: RwLock<Vec<CountSource>>,
    audit_failures: RwLock<Vec<CountSource>>,
    merge_held: RwLock<Vec<CountSource>>,
    sql_failures: RwLock<Vec<NamedCountSource>>,
    sql_stats: RwLock<Vec<SqlStatsSource>>,
    last_checkpoint: Mutex<Option<SystemTime>>,
    /// f64 bits: input records per second over the throughput window.
    throughput: AtomicU64,
    /// (when, records read) samples over the throughput window.
    reads: Mutex<VecDeque<(Instant, u64)>>,
}

/// How far back the throughput gauge looks.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(10);

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // The guarded values are plain data or callbacks; a panic elsewhere leaves them usable.
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sources {
    /// The exported (main) pipeline.
    fn pipeline(&self) -> Option<Arc<Metrics>> {
        read(&self.pipelines).main.clone()
    }

    /// Records a throughput sample; called once a second by the telemetry thread.
    pub(crate) fn sample_throughput(&self, now: Instant) {
        let Some(metrics) = self.pipeline() else {
            return;
        };
        let total = Metrics::get(&metrics.stage(Stage::Source).events_in);
        let mut reads = lock(&self.reads);
        // A new pipeline's counters start again from zero: start the window again too.
        if reads.back().is_some_and(|&(_, n)| n > total) {
            reads.clear();
        }
        reads.push_back((now, total));
        while reads.len() > 2
            && reads
                .front()
                .is_some_and(|&(t, _)| now.duration_since(t) > THROUGHPUT_WINDOW)
        {
            reads.pop_front();
        }
        let rate = match (reads.front(), reads.back()) {
            (Some(&(t0, n0)), Some(&(t1, n1))) if t1 > t0 => {
                (n1 - n0) as f64 / t1.duration_since(t0).as_secs_f64()
            }
            _ => 0.0,
        };
        self.throughput.store(rate.to_bits(), Ordering::Relaxed);
    }

    fn checkpoint_age(&self) -> Option<Duration> {
        if let Some(source) = read(&self.checkpoint_age).as_ref() {
            return source();
        }
        let last = (*lock(&self.last_checkpoint))?;
        Some(SystemTime::now().duration_since(last).unwrap_or_default())
    }
}

/// A running total of response actions by action and result; see
/// [`Telemetry::response_actions`]. Cheap to clone (shared).
#[derive(Clone)]
pub struct ResponseActions {
    sources: Arc<Sources>,
}

impl std::fmt::Debug for ResponseActions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseActions").finish_non_exhaustive()
    }
}

impl ResponseActions {
    /// One action ended with `result`.
    pub fn record(&self, action: &str, result: &str) {
        *lock(&self.sources.action_counts)
            .entry((action.to_owned(), result.to_owned()))
            .or_default() += 1;
    }

    /// Exports the (action, result) series at 0 until its first [`record`](Self::record), so
    /// that its first event is an increase (a Prometheus `rate()` ignores a series' first
    /// sample). Declaring a pair that was recorded already changes nothing.
    pub fn declare(&self, action: &str, result: &str) {
        lock(&self.sources.action_counts)
            .entry((action.to_owned(), result.to_owned()))
            .or_default();
    }
}

/// authwatch's telemetry: OpenTelemetry metrics exported on `/metrics` (Prometheus text) and,
/// when configured, pushed over OTLP/HTTP; the health probes; slow-batch traces.
///
/// [`Telemetry::start`] binds `[telemetry] listen` and serves `/metrics`, `/livez`, `/readyz`
/// and `/startupz` from a thread of its own until the value is dropped (or
/// [`Telemetry::shutdown`]). The runtime then connects what it has:
///
/// ```no_run
/// # use authwatch_telemetry::{Telemetry, PartitionLag};
/// # use authwatch_pipeline::{Config, Pipeline};
/// # use authwatch_detect::RulePack;
/// # use std::sync::Arc;
/// let config = Config::default();
/// let telemetry = Telemetry::start(&config.telemetry)?;
/// let pipeline = Pipeline::new(config.clone(), RulePack::builtin()?)?
///     .with_observer(telemetry.batch_observer());
/// telemetry.attach_pipeline(pipeline.metrics());
/// telemetry.register_consumer_lag(|| {
///     vec![PartitionLag { topic: "okta".into(), partition: 0, lag: 42 }]
/// });
/// telemetry.health().set_started(); // state restored
/// telemetry.health().set_assigned(true); // partitions assigned
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Telemetry {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    meter: Meter,
    pub(crate) sources: Arc<Sources>,
    health: Health,
    batches: BatchRecorder,
    checkpoint_duration: Histogram<f64>,
    snapshot_store_duration: Histogram<f64>,
    server: Option<server::Server>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("listen", &self.server.as_ref().map(|s| s.local_addr()))
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

/// Histogram buckets for a batch's wall time (seconds): most batches take milliseconds.
const BATCH_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Histogram buckets for writing a checkpoint (seconds).
const CHECKPOINT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// `service.instance.id`, the resource attribute that tells one process's series from
/// another's (OpenTelemetry semantic conventions).
const SERVICE_INSTANCE_ID: &str = "service.instance.id";

/// The resource every exported series carries: what the SDK detects (`OTEL_RESOURCE_ATTRIBUTES`,
/// `OTEL_SERVICE_NAME`), `service.name` = `authwatch` when those name no service, plus
/// `service.instance.id` from `host` when they give none. Without an instance id, the
/// cumulative counters that several pods push over OTLP carry identical resources and collide
/// in the backend (one pod's series overwrites another's, or they read as counter resets).
pub(crate) fn resource(host: Option<String>) -> Resource {
    with_instance_id(named(Resource::builder().build()), host)
}

/// `detected` with `service.name` = `authwatch` unless the operator named the service
/// (`OTEL_SERVICE_NAME`, or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`): the SDK's own
/// default, `unknown_service…`, is replaced. (Setting the name on the builder overrode the
/// operator's, so two deployments told apart by service name reported as one.)
pub(crate) fn named(detected: Resource) -> Resource {
    let key = opentelemetry::Key::from_static_str("service.name");
    let operator_named = detected
        .get(&key)
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    if operator_named {
        return detected;
    }
    Resource::builder_empty()
        .with_attributes(
            detected
                .iter()
                .filter(|(k, _)| **k != key)
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_service_name("authwatch")
        .build()
}

/// `resource` as it is when it names its instance already (the operator's
/// `OTEL_RESOURCE_ATTRIBUTES` wins); else with `service.instance.id` = `host`, or, without a
/// host name, an id made of the process id and the start time (unique, though not stable over
/// restarts).
pub(crate) fn with_instance_id(resource: Resource, host: Option<String>) -> Resource {
    if resource
        .get(&opentelemetry::Key::from_static_str(SERVICE_INSTANCE_ID))
        .is_some()
    {
        return resource;
    }
    let id = host.unwrap_or_else(|| {
        let started = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        format!("authwatch-{}-{started}", std::process::id())
    });
    Resource::builder_empty()
        .with_attributes(
            resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_attribute(KeyValue::new(SERVICE_INSTANCE_ID, id))
        .build()
}

/// The host name: `HOSTNAME` (in Kubernetes the pod's name, stable for a StatefulSet pod), else
/// `/etc/hostname`. The same lookup as the Kafka runtime's default `transactional_id`, so an
/// instance's metrics and its transactions name the same host.
fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
}

impl Telemetry {
    /// Builds the meter provider (Prometheus reader, plus an OTLP/HTTP push reader when
    /// `otlp_endpoint` is set), binds `listen` and starts serving. Fails when the address cannot
    /// be bound or the OTLP endpoint is not a valid URL.
    pub fn start(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
        let mut telemetry = Telemetry::build(config)?;
        telemetry.server = Some(server::Server::start(
            config.listen,
            telemetry.server_state(),
        )?);
        Ok(telemetry)
    }

    /// The provider, instruments and health, without the HTTP endpoint (for embedding and tests:
    /// [`Telemetry::render_prometheus`] gives what `/metrics` would).
    pub fn build(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
        config
            .validate()
            .map_err(|e| TelemetryError::Config(e.to_string()))?;
        let registry = prometheus::Registry::new();
        // Scope labels would add otel_scope_* to every series; authwatch has one scope, so they
        // carry nothing but cost.
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let resource = resource(host_name());
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(exporter);
        if let Some(endpoint) = &config.otlp_endpoint {
            builder = builder.with_reader(otlp_reader(endpoint, config.export_interval.0)?);
        }
        let provider = builder.build();
        let meter = provider.meter("authwatch");
        let sources = Arc::new(Sources::default());
        register_instruments(&meter, &sources);
        let batches = BatchRecorder::new(&meter, config.slow_batch.0, BATCH_BUCKETS);
        let checkpoint_duration = meter
            .f64_histogram(names::CHECKPOINT_DURATION.otel)
            .with_unit("s")
            .with_description("Time to write a checkpoint (state and the offsets it reflects).")
            .with_boundaries(CHECKPOINT_BUCKETS.to_vec())
            .build();
        let snapshot_store_duration = meter
            .f64_histogram(names::SNAPSHOT_STORE_DURATION.otel)
            .with_unit("s")
            .with_description(
                "Time to store state snapshots, by when: before_commit (the commit and its alerts \
                 waited for it) or after_commit (stored on the snapshot thread).",
            )
            .with_boundaries(CHECKPOINT_BUCKETS.to_vec())
            .build();
        Ok(Telemetry {
            provider,
            registry,
            meter,
            sources,
            health: Health::new(config.stall_timeout.0),
            batches,
            checkpoint_duration,
            snapshot_store_duration,
            server: None,
        })
    }

    fn server_state(&self) -> server::State {
        server::State {
            registry: self.registry.clone(),
            health: self.health.clone(),
            sources: Arc::clone(&self.sources),
        }
    }

    /// Where the HTTP endpoint listens (the bound port when `listen` asked for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(|s| s.local_addr())
    }

    /// The health state: call [`Health::set_started`] once state is restored and
    /// [`Health::set_assigned`] as partitions come and go.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The meter, for instruments beyond the built-in ones.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// Observes a pipeline: per-stage events in and out, dead letters by reason, late events,
    /// per-rule state keys and evictions, alerts by category and severity, throughput; and
    /// watches its stages for liveness. A later call replaces the pipeline (its counters start
    /// from zero, which Prometheus treats as a counter reset) and its liveness watches. Once an
    /// additional pipeline is attached, the replaced pipeline's dead letters stay in
    /// `authwatch_dead_letters_total`, which is then a sum (see
    /// [`Telemetry::attach_additional_pipeline`]).
    pub fn attach_pipeline(&self, metrics: Arc<Metrics>) {
        self.health.watch_pipeline(&metrics);
        let mut pipelines = write(&self.sources.pipelines);
        if let Some(old) = pipelines.main.take() {
            // Without an additional pipeline the counter is the main's alone and resets with
            // it, as it always did.
            if !pipelines.additional.is_empty() {
                pipelines.retire(&old, &metrics);
            }
        }
        pipelines.main = Some(metrics);
    }

    /// Observes a second pipeline of the same process under `name` (a repartitioned run's
    /// `ingest` stage, beside the detect stage's [`Telemetry::attach_pipeline`]): its dead
    /// letters are added to `authwatch_dead_letters_total` per reason, and its stages are
    /// watched for liveness as `<name>.source`, `<name>.normalize`, `<name>.detect` and
    /// `<name>.sink`; its other counters are not exported. A later call with the same `name`
    /// (a restart) replaces that pipeline and its watches, keeping the dead letters it counted
    /// in the sum, so that the sum never decreases while both stages run.
    pub fn attach_additional_pipeline(&self, name: &str, metrics: Arc<Metrics>) {
        self.health.watch_named_pipeline(name, &metrics);
        let mut pipelines = write(&self.sources.pipelines);
        if let Some(old) = pipelines
            .additional
            .insert(name.to_owned(), Arc::clone(&metrics))
        {
            pipelines.retire(&old, &metrics);
        }
    }

    /// The batch observer for [`authwatch_pipeline::Pipeline::with_observer`]: records
    /// `authwatch_batch_duration_seconds` and logs slow batches.
    pub fn batch_observer(&self) -> Arc<dyn BatchObserver> {
        Arc::new(self.batches.clone())
    }

    /// Records one batch (for runtimes that batch outside [`authwatch_pipeline::Pipeline`]).
    pub fn record_batch(&self, report: &BatchReport) {
        self.batches.batch_done(report);
    }

    /// Reports consumer lag per topic and partition, read from `source` at each collection
    /// (keep it quick: a few loads, no broker round trip). Several sources add up.
    pub fn register_consumer_lag(
        &self,
        source: impl Fn() -> Vec<PartitionLag> + Send + Sync + 'static,
    ) {
        write(&self.sources.lag).push(Box::new(source));
    }

    /// Reports response actions from running totals kept elsewhere (e.g. the responder's own
    /// counters), read from `source` at each collection. Adds to [`Telemetry::response_actions`].
    pub fn register_response_actions(
        &self,
        source: impl Fn() -> Vec<ActionCount> + Send + Sync + 'static,
    ) {
        write(&self.sources.actions).push(Box::new(source));
    }

    /// A counter handle for response actions, for code that records each action as it ends.
    pub fn response_actions(&self) -> ResponseActions {
        ResponseActions {
            sources: Arc::clone(&self.sources),
        }
    }

    /// A checkpoint was written in `duration`: recorded in
    /// `authwatch_checkpoint_duration_seconds`, and the checkpoint age starts again from zero.
    pub fn record_checkpoint(&self, duration: Duration) {
        self.checkpoint_duration.record(duration.as_secs_f64(), &[]);
        *lock(&self.sources.last_checkpoint) = Some(SystemTime::now());
    }

    /// State snapshots were stored in `duration`, before the commit that references them
    /// (`after_commit = false`) or after it: recorded in
    /// `authwatch_snapshot_store_duration_seconds{when}`.
    pub fn record_snapshot_store(&self, duration: Duration, after_commit: bool) {
        let when = if after_commit {
            "after_commit"
        } else {
            "before_commit"
        };
        self.snapshot_store_duration
            .record(duration.as_secs_f64(), &[KeyValue::new("when", when)]);
    }

    /// Reports failed snapshot stores from a running total kept elsewhere, read at each
    /// collection (`authwatch_snapshot_store_failures_total`, 0 until the first). Several
    /// sources add up.
    pub fn register_snapshot_store_failures(
        &self,
        source: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        write(&self.sources.snapshot_failures).push(Box::new(source));
    }

    /// Reports audit-topic records that were not delivered (refused by the broker, or given up
    /// after retries) from a running total kept elsewhere, read at each collection
    /// (`authwatch_audit_record_failures_total`, 0 until the first). Several sources add up.
    pub fn register_audit_record_failures(&self, source: impl Fn() -> u64 + Send + Sync + 'static) {
        write(&self.sources.audit_failures).push(Box::new(source));
    }

    /// Reports failed executions of windowed SQL detections from running totals kept elsewhere,
    /// `(detection id, failures)`, read at each collection
    /// (`authwatch_sql_detection_failures_total{detection}`). Every detection should be listed
    /// from the start, with 0, so that the first failure is an increase of its series.
    pub fn register_sql_detection_failures(
        &self,
        source: impl Fn() -> Vec<(String, u64)> + Send + Sync + 'static,
    ) {
        write(&self.sources.sql_failures).push(Box::new(source));
    }

    /// Reports the counters of windowed SQL detections from running totals kept elsewhere,
    /// read at each collection: `authwatch_sql_detection_alerts_total`,
    /// `authwatch_sql_detection_suppressed_total` and
    /// `authwatch_sql_detection_evicted_rows_total`, each by `detection`. As with failures,
    /// every detection should be listed from the start, with zeros.
    pub fn register_sql_detection_stats(
        &self,
        source: impl Fn() -> Vec<SqlDetectionCounts> + Send + Sync + 'static,
    ) {
        write(&self.sources.sql_stats).push(Box::new(source));
    }

    /// Reports the events a repartitioned detect stage holds back, read at each collection
    /// (`authwatch_merge_held`, exported once a source is registered). Several sources
    /// add up.
    pub fn register_merge_held(&self, source: impl Fn() -> u64 + Send + Sync + 'static) {
        write(&self.sources.merge_held).push(Box::new(source));
    }

    /// The newest checkpoint was written at `at` (e.g. the one restored at start), for
    /// `authwatch_checkpoint_age_seconds` until the next [`Telemetry::record_checkpoint`].
    pub fn set_last_checkpoint(&self, at: SystemTime) {
        *lock(&self.sources.last_checkpoint) = Some(at);
    }

    /// Reports the checkpoint age from `source` instead (None: no checkpoint yet).
    pub fn register_checkpoint_age(
        &self,
        source: impl Fn() -> Option<Duration> + Send + Sync + 'static,
    ) {
        *write(&self.sources.checkpoint_age) = Some(Box::new(source));
    }

    /// Every metric in the Prometheus text format: what `/metrics` serves.
    pub fn render_prometheus(&self) -> Result<String, TelemetryError> {
        server::render(&self.registry)
    }

    /// Samples liveness and throughput now (the telemetry thread does this once a second).
    pub fn sample(&self) {
        let now = Instant::now();
        self.health.sample(now);
        self.sources.sample_throughput(now);
    }

    /// Stops the endpoint and pushes the last OTLP export.
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), TelemetryError> {
        if let Some(server) = self.server.take() {
            server.stop();
        }
        self.provider
            .shutdown()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            // Shut down twice (shutdown() then drop) is expected; anything else is worth a note.
            let text = e.to_string();
            if !text.contains("already shut") && !text.contains("AlreadyShutdown") {
                tracing::debug!(error = %text, "telemetry shutdown");
            }
        }
    }
}

/// A reader that pushes every `interval` to an OTLP/HTTP (protobuf) endpoint, on its own thread.
fn otlp_reader(
    endpoint: &str,
    interval: Duration,
) -> Result<PeriodicReader<opentelemetry_otlp::MetricExporter>, TelemetryError> {
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    let timeout = interval.min(Duration::from_secs(10));
    let client =
        crate::otlp_client::OtlpHttpClient::new(timeout).map_err(TelemetryError::Thread)?;
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(timeout)
        .build()
        .map_err(|e| TelemetryError::Otlp {
            endpoint: endpoint.to_owned(),
            message: e.to_string(),
        })?;
    Ok(PeriodicReader::builder(exporter)
        .with_interval(interval)
        .build())
}

fn stage_label(stage: Stage) -> [KeyValue; 1] {
    [KeyValue::new("stage", stage.as_str())]
}

/// The observable instruments: each reads [`Sources`] when collected.
fn register_instruments(meter: &Meter, sources: &Arc<Sources>) {
    let s = Arc::clone(sources);
    meter
        .u64_observable_counter(names::EVENTS_IN.otel)
        .with_description(
            "Records each pipeline stage took in: lines (source, normalize), events (detect), \
             results (sink).",
        )
        .with_callback(move |o| {
            if let Some(m) = s.pipeline() {
                for stage in Stage::ALL {
                    o.observe(Metrics::get(&m.stage(stage).events_in), &stage_label(stage));
                }
            }
        })
        .build();
    let s = Arc::clone(sources);
    meter
        .u64_observable_counter(names::EVENTS_OUT.otel)
        .with_description(
            "Records each pipeline stage passed on: lines (source), events (normalize), events \
             evaluated by the rules (detect), results written (sink).",
        )
        .with_callback(move |o| {
            if let Some(m) = s.pipeline() {
                for stage in Stage::ALL {
                    o.observe(
                        Metrics::get(&m.stage(stage).events_out),
                        &stage_label(stage),
                    );
                }
            }
        })
        .build();
    let s = Arc::clone(sources);
    meter
        .u64_observable_counter(names::DEAD_LETTERS.otel)
        .with_description("Input records rejected to dead letter, by reason.")
        .with_callback(move |o| {
            if let Some(counts) = read(&s.pipelines).dead_letters() {
                for kind in RejectKind::ALL {
                    o.observe(
                        counts[kind.index()],
                        &[KeyValue::new("reason", kind.as_str())],
                    );
                }
            }
        })
        .build();
    let s = Arc::clone(sources);
    meter
        .u64_observable_counter(names::LATE_EVENTS.otel)
        .with_description("Events older than the watermark (dropped or side-output).")
        .with_callback(move |o| {
            if let Some(m) = s.pipeline() {
                o.observe(Metrics::get(&m.late_events), &[]);
            }
        })
        .build();
    let s = Arc::clone(sources);
    meter
        .u64_observable_counter(names::DUPLICATE_EVENTS.otel)
        .with_description(
            "Repeated deliveries of an event already seen (same provider, tenant, id and time): \
             not detected on again.",
        )
        .with_callback(move |o| {
            if let Some(m) = s.pipeline() {
                o.observe(Metrics::get(&m.duplicate_events), &[]);
            }
        })
        .build();
    let s = Arc::clone(sources);
    meter
        .u64_observable_gauge(names::SPLIT_TENANTS.otel)
        .with_unit("{tenant}")
        .with_description(
            "Tenants whose events arrived on more than one input partition of this process: \
             state is per partition, so detections keyed by address, network, tenant or device \
             saw only part of them (key the provider topics by tenant, or repartition).",
        )
        .with_callback(move |o| {
            if let Some(m) = s.pipeline() {
                o.observe(Metrics::get(&m.split_tenants), &[]);
            }
        })
        .build();
    let s = Arc::clone(sources);
    meter
        .u64_observable_gauge(names::RULE_STATE_KEYS.otel)
        .with_unit("{key}")
        .with_description("Live detector state keys per rule.")
        .with_callback(move |o| {
            if let Some(m) = s.pipeline() {
                for r in &m.rules {
                    o.observe(
                        Metrics::get(&r.keys),
                        &[KeyValue::new("rule", r.id.clone())],
                    );
                }
            }
        })
        .build();
    let s = Arc::clone(sources);
    meter
        .u64_observable_counter(names::RULE_EVICTIONS.otel)
        .with_unit("{key}")
        .with_description(
            "Detector keys evicted because the rule reached detect.max_keys_per_rule (state lost \
             early), per rule.",
        )
        .with_callback(move |o| {
            if let Some(m) = s.pipeline() {
                for r in &m.rules {
                    o.observe(
                        Metrics::get(&r.evictions),
                        &[KeyValue::new("rule", r.id.clone())],
                    );
                }
            }
        })
        .build();
    let s = Arc::clone(sources);
    meter
        .u64_observable_counter(names::ALERTS.otel)
        .with_unit("{alert}")
        .with_description("Alerts emitted, by detection category and severity.")
        .with_callback(move |o| {
            if let Some(m) = s.pipeline() {
                // Several rules share a category: one series per (category, severity).
                let mut totals: BTreeMap<(&str, &str), u64> = BTreeMap::new();
                for r in &m.rules {
                    *totals
                        .entry((r.category.as_str(), r.severity.as_str()))
                        .or_default() += Metrics::get(&r.alerts);
                }
                for ((category, severity), n) in totals {
                    o.observe(
                        n,
                        &[
                            KeyValue::new("category", category.to_owned()),
                            KeyValue::new("severity", severity),
                        ],
                    );
                }
            }
        })
        .build();
    let s = Arc::clone(sources);
    meter
        .u64_observable_counter(names::RESPONSE_ACTIONS.otel)
        .with_unit("{action}")
        .with_description("Response actions, by action and result.")
        .with_callback(move |o| {
            let mut totals = lock(&s.action_counts).clone();
            for source in read(&s.actions).iter() {
                for c in source() {
                    *totals.entry((c.action, c.result)).or_default() += c.count;
                }
            }
            for ((action, result), n) in totals {
                o.observe(
                    n,
                    &[
                        KeyValue::new("action", action),
                        KeyValue::new("result", result),
                    ],
                );
            }
        })
        .build();
    let s = Arc::clone(sources);
    meter
        .i64_observable_gauge(names::CONSUMER_LAG.otel)
        .with_unit("{message}")
        .with_description("Consumer lag in messages, by topic and partition.")
        .with_callback(move |o| {
            let mut totals: BTreeMap<(String, i32), i64> = BTreeMap::new();
            for source in read(&s.lag).iter() {
                // A negative lag means "not known yet" (no position or high watermark).
                for p in source().into_iter().filter(|p| p.lag >= 0) {
                    *totals.entry((p.topic, p.partition)).or_default() += p.lag;
                }
            }
            for ((topic, partition), lag) in totals {
                o.observe(
                    lag,
                    &[
                        KeyValue::new("topic", topic),
                        KeyValue::new("partition", i64::from(partition)),
                    ],
                );
            }
        })
        .build();
    let s = Arc::clone(sources);
    meter
        .f64_observable_gauge(names::CHECKPOINT_AGE.otel)
        .with_unit("s")
        .with_description("Time since the newest checkpoint was written.")
        .with_callback(move |o| {
            if let Some(age) = s.checkpoint_age() {
                o.observe(age.as_secs_f64(), &[]);
            }
        })
        .build();
    let s = Arc::clone(sources);
    meter
        .u64_observable_counter(names::SNAPSHOT_STORE_FAILURES.otel)
        .with_description(
            "Snapshot stores that failed (each fails its checkpoint, or a new partition's \
             assignment; the run restarts from the snapshots still stored).",
        )
        .with_callback(move |o| {
            o.observe(read(&s.snapshot_failures).iter().map(|f| f()).sum(), &[]);
        })
        .build();
    let s = Arc::clone(sources);
    meter
        .u64_observable_counter(names::AUDIT_RECORD_FAILURES.otel)
        .with_description(
            "Records for the audit topic that were not delivered: the broker refused them or \
             the producer gave up. The audit trail on Kafka is missing them.",
        )
        .with_callback(move |o| {
            o.observe(read(&s.audit_failures).iter().map(|f| f()).sum(), &[]);
        })
        .build();
    let s = Arc::clone(sources);
    meter
        .u64_observable_counter(names::SQL_DETECTION_FAILURES.otel)
        .with_description(
            "Failures of a windowed SQL detection: failed executions, and result rows that \
             could become no alert. The run goes on, but the windows they decided may be \
             missing alerts.",
        )
        .with_callback(move |o| {
            for source in read(&s.sql_failures).iter() {
                for (detection, n) in source() {
                    o.observe(n, &[KeyValue::new("detection", detection)]);
                }
            }
        })
        .build();
    // One instrument per counter of the detections; each reads every source at collection.
    type Pick = fn(&SqlDetectionCounts) -> u64;
    let sql_counters: [(names::MetricName, &'static str, Pick); 3] = [
        (
            names::SQL_DETECTION_ALERTS,
            "Alerts of a windowed SQL detection.",
            |c| c.alerts,
        ),
        (
            names::SQL_DETECTION_SUPPRESSED,
            "Result rows of a windowed SQL detection that an open incident of their key \
             absorbed (later decisions of an incident already alerted).",
            |c| c.suppressed,
        ),
        (
            names::SQL_DETECTION_EVICTED_ROWS,
            "Rows a windowed SQL detection dropped, oldest first, because its buffer was full \
             (sql.max_buffered_rows): the windows that held them were decided without them.",
            |c| c.evicted_rows,
        ),
    ];
    for (name, description, pick) in sql_counters {
        let s = Arc::clone(sources);
        meter
            .u64_observable_counter(name.otel)
            .with_description(description)
            .with_callback(move |o| {
                for source in read(&s.sql_stats).iter() {
                    for c in source() {
                        o.observe(pick(&c), &[KeyValue::new("detection", c.detection)]);
                    }
                }
            })
            .build();
    }
    let s = Arc::clone(sources);
    meter
        .u64_observable_gauge(names::MERGE_HELD.otel)
        .with_unit("{event}")
        .with_description(
            "Events read from the internal topic that the repartitioned detect stage holds back \
             until every source partition has progressed past them; growing: a source \
             partition's ingest is behind.",
        )
        .with_callback(move |o| {
            let sources = read(&s.merge_held);
            if !sources.is_empty() {
                o.observe(sources.iter().map(|f| f()).sum(), &[]);
            }
        })
        .build();
    let s = Arc::clone(sources);
    meter
        .f64_observable_gauge(names::THROUGHPUT.otel)
        .with_unit("{event}/s")
        .with_description("Input records read per second, averaged over the last ten seconds.")
        .with_callback(move |o| {
            if s.pipeline().is_some() {
                o.observe(f64::from_bits(s.throughput.load(Ordering::Relaxed)), &[]);
            }
        })
        .build();
}
