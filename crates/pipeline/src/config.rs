//! authwatch's configuration: one TOML file, layered as built-in defaults → file → environment.
//!
//! Every key is documented here where it is declared and in `config/authwatch.example.toml`
//! (a test keeps the two equal). Unknown keys are rejected so that a typo is an error, not a
//! silently ignored setting. Environment variables `AUTHWATCH__SECTION__KEY=value` override the
//! file (values are read as TOML, falling back to a plain string).

use authwatch_normalize::Format;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration that cannot be used. Whose fault: the operator's; not retryable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a bad key or value (the message has line and column).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with the position and the key.
        message: String,
    },
    /// An environment override is malformed.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// An `[enrich]` value is out of range or inconsistent with another.
    #[error("config key enrich.{}: {}", .0.key, .0.message)]
    Enrich(#[from] authwatch_enrich::ConfigError),
    /// A value is out of range or inconsistent with another.
    #[error("config key {key}: {message}")]
    Invalid {
        /// The dotted key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

pub use authwatch_event::DurationText;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How input lines are read and checked.
    pub input: InputConfig,
    /// Event time: watermark and lateness.
    pub event_time: EventTimeConfig,
    /// Threads and buffers.
    pub runtime: RuntimeConfig,
    /// Rules and detector state bounds.
    pub detect: DetectConfig,
    /// Geo-IP, ASN, anonymizer, CIDR tags, user agents and per-user profiles.
    pub enrich: authwatch_enrich::EnrichConfig,
    /// Where results go and in which language.
    pub output: OutputConfig,
    /// `authwatch run`: brokers, input and output topics.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// `authwatch run`: where and how often detector state is checkpointed.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// The automated responder (docs/RESPONSE.md).
    #[serde(default)]
    pub respond: RespondConfig,
    /// Metrics, health probes, slow-batch traces and log format.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Windowed SQL detections.
    #[serde(default)]
    pub sql: SqlConfig,
    /// The Parquet archive of enriched events and alerts.
    #[serde(default)]
    pub archive: ArchiveConfig,
    /// The read-only Postgres-wire SQL endpoint.
    #[serde(default)]
    pub serve: ServeConfig,
}

/// `[input]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// Input format of every line; `auto` detects it line by line. Default `auto`.
    pub format: Format,
    /// A declarative mapping file (YAML) for a provider that is not built in; replaces
    /// `format`. Unset by default.
    pub mapping: Option<PathBuf>,
    /// Longest accepted line in bytes; longer lines go to dead letter. Default 1 MiB.
    pub max_line_bytes: usize,
    /// How far an event may claim to be ahead of the time authwatch read it; further is an
    /// impossible timestamp. Default `15m`. An accepted event can put the watermark this far
    /// ahead of real time (`event_time.max_jump` holds only events further ahead than that),
    /// taking as much off `event_time.allowed_lateness` for the events after it; a tighter
    /// bound would turn a host clock a few minutes slow into every live event dead-lettered
    /// (the dead letters say so). Set to `0s` to disable (e.g. for synthetic data).
    pub max_future_skew: DurationText,
    /// How many bytes of a rejected line the dead-letter record keeps. Default 4096.
    pub dead_letter_raw_bytes: usize,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            format: Format::Auto,
            mapping: None,
            max_line_bytes: 1 << 20,
            max_future_skew: DurationText(Duration::from_secs(900)),
            dead_letter_raw_bytes: 4096,
        }
    }
}

/// What happens to an event older than the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    /// Count it and drop it.
    #[default]
    Drop,
    /// Count it and write it to the late-events output.
    SideOutput,
}

/// `[event_time]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventTimeConfig {
    /// How far behind the newest event time the watermark trails: events older than the
    /// watermark are late. Default `5m` (providers deliver minutes out of order).
    pub allowed_lateness: DurationText,
    /// `drop` or `side_output`. Default `drop`.
    pub late_events: LatePolicy,
    /// How far ahead of the newest event time so far one event may be and still move the
    /// watermark on its own. An event further ahead (a wrong device or collector clock, a
    /// crafted line, or the first after a quiet spell) is detected on but leaves the watermark
    /// where it was until a second event beyond the same bound confirms the jump; otherwise one
    /// wrong clock would make every later event late. Default `1h`. After a quiet spell the
    /// watermark follows at the second event, so alerts that wait for it (`settle`) come one
    /// event later; a held event more than a day ahead teaches the user profiles nothing (their
    /// clock would follow it). `0s` lets any event move it.
    pub max_jump: DurationText,
}

impl Default for EventTimeConfig {
    fn default() -> Self {
        EventTimeConfig {
            allowed_lateness: DurationText(Duration::from_secs(300)),
            late_events: LatePolicy::Drop,
            max_jump: DurationText(Duration::from_secs(3600)),
        }
    }
}

/// `[runtime]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Normalize/enrich worker threads; 0 = one per core. Default 0.
    pub workers: usize,
    /// Detect threads for a partitioned source (`authwatch run`): each input partition's task
    /// runs on one of them (partition index modulo this), so partitions are detected on side
    /// by side; 0 = one per core. A recorded stream is one task, on one thread. Default 0.
    pub detect_threads: usize,
    /// Lines per batch handed between stages. Default 2048.
    pub batch_lines: usize,
    /// Batches each bounded channel holds before its producer waits (backpressure). Default 4.
    pub channel_batches: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            workers: 0,
            detect_threads: 0,
            batch_lines: 2048,
            channel_batches: 4,
        }
    }
}

/// `[detect]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// A rules directory or file; unset = the built-in pack.
    pub rules: Option<PathBuf>,
    /// Live keys per rule before the least recently active are evicted. Default 1000000.
    pub max_keys_per_rule: usize,
    /// How often (event time) idle keys are swept. Default `1m`.
    pub sweep_interval: DurationText,
    /// Events remembered per task to recognise a repeated delivery of one provider record
    /// (same provider, tenant, event id and time): a repeat is counted and not detected on
    /// again. Only events within the allowed lateness are remembered, at most this many per
    /// partition (about 40 bytes each in memory, 16 in snapshots); 0 turns the check off.
    /// Default 500000.
    pub dedup_capacity: usize,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            rules: None,
            max_keys_per_rule: 1_000_000,
            sweep_interval: DurationText(Duration::from_secs(60)),
            dedup_capacity: 500_000,
        }
    }
}

/// A language for summaries and steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    /// English.
    #[default]
    En,
    /// Japanese.
    Ja,
}

impl Language {
    /// `en` or `ja`.
    pub fn code(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Ja => "ja",
        }
    }
}

/// `[output]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Language of printed summaries and steps (alerts carry both). Default `en`.
    pub language: Language,
    /// Alerts as JSON lines; `-` is standard output. Unset: not written (the CLI may choose).
    pub alerts: Option<PathBuf>,
    /// Dead-letter records as JSON lines. Unset: counted only.
    pub dead_letter: Option<PathBuf>,
    /// Late events as JSON lines, with `event_time.late_events = "side_output"`.
    pub late_events: Option<PathBuf>,
}

impl Config {
    /// Reads a config file (defaults for absent keys), applies environment overrides, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(path, &text, std::env::vars())
    }

    /// The built-in defaults with environment overrides, validated.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("<defaults>"), "", std::env::vars())
    }

    /// Parses `text` (named `path` in errors) and applies `AUTHWATCH__…` overrides from `env`.
    pub fn from_toml(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let parse_err = |e: toml::de::Error| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        };
        // Parse the file on its own first, so that errors carry its line and column.
        let mut config: Config = toml::from_str(text).map_err(parse_err)?;
        let overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("AUTHWATCH__"))
            .collect();
        if !overrides.is_empty() {
            let mut table: toml::Table = toml::from_str(text).map_err(parse_err)?;
            for (var, value) in &overrides {
                apply_override(&mut table, var, value)?;
            }
            let names: Vec<&str> = overrides.iter().map(|(k, _)| k.as_str()).collect();
            config =
                Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Env {
                    var: names.join(", "),
                    message: e.to_string().trim_end().to_owned(),
                })?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Cross-field and range checks, in one place.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if !(1024..=256 << 20).contains(&self.input.max_line_bytes) {
            return invalid("input.max_line_bytes", "must be between 1024 and 268435456");
        }
        if self.input.dead_letter_raw_bytes > self.input.max_line_bytes {
            return invalid(
                "input.dead_letter_raw_bytes",
                "must not exceed input.max_line_bytes",
            );
        }
        if self.runtime.workers > 256 {
            return invalid("runtime.workers", "must be at most 256 (0 = one per core)");
        }
        if self.runtime.detect_threads > 256 {
            return invalid(
                "runtime.detect_threads",
                "must be at most 256 (0 = one per core)",
            );
        }
        if !(1..=1 << 20).contains(&self.runtime.batch_lines) {
            return invalid("runtime.batch_lines", "must be between 1 and 1048576");
        }
        if !(1..=1024).contains(&self.runtime.channel_batches) {
            return invalid("runtime.channel_batches", "must be between 1 and 1024");
        }
        if self.serve.worker_threads > 256 {
            return invalid(
                "serve.worker_threads",
                "must be at most 256 (0 = 2 inside authwatch run, one per core for authwatch serve)",
            );
        }
        if self.detect.max_keys_per_rule == 0 {
            return invalid("detect.max_keys_per_rule", "must be positive");
        }
        if self.detect.sweep_interval.0.is_zero() {
            return invalid("detect.sweep_interval", "must be positive");
        }
        self.kafka.validate()?;
        if !(Duration::from_millis(50)..=Duration::from_secs(300))
            .contains(&self.checkpoint.interval.0)
        {
            // One producer transaction spans an interval; brokers cap transactions at 15 min.
            return invalid("checkpoint.interval", "must be between 50ms and 5m");
        }
        if self.output.late_events.is_some()
            && self.event_time.late_events != LatePolicy::SideOutput
        {
            return invalid(
                "output.late_events",
                "is set but event_time.late_events is not \"side_output\"",
            );
        }
        self.respond.validate()?;
        self.telemetry.validate()?;
        Ok(())
    }

    /// Worker threads after resolving 0 to the core count.
    pub fn workers(&self) -> usize {
        per_core(self.runtime.workers)
    }

    /// Detect threads of a partitioned source after resolving 0 to the core count.
    pub fn detect_threads(&self) -> usize {
        per_core(self.runtime.detect_threads)
    }
}

/// A thread count, 0 meaning one per core.
fn per_core(n: usize) -> usize {
    match n {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    }
}

fn apply_override(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = var["AUTHWATCH__".len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::Env {
            var: var.to_owned(),
            message: "expected AUTHWATCH__SECTION__KEY".to_owned(),
        });
    }
    // A value is TOML when it parses as one (`42`, `true`, `"x"`, `[1, 2]`), else a string.
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let (last, parents) = path.split_last().ok_or_else(|| ConfigError::Env {
        var: var.to_owned(),
        message: "expected AUTHWATCH__SECTION__KEY".to_owned(),
    })?;
    let mut node = table;
    for p in parents {
        let entry = node
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry.as_table_mut().ok_or_else(|| ConfigError::Env {
            var: var.to_owned(),
            message: format!("{p} is not a section"),
        })?;
    }
    node.insert(last.clone(), parsed);
    Ok(())
}

/// One input topic of `[kafka]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTopic {
    /// The topic.
    pub name: String,
    /// Its records' format; default `auto` (detected record by record).
    #[serde(default)]
    pub format: Format,
}

/// `[kafka]`: the live runtime (`authwatch run`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma-separated. Default `127.0.0.1:9092`.
    pub brokers: String,
    /// Consumer group: instances with the same group share the input partitions. Default
    /// `authwatch`.
    pub group_id: String,
    /// Provider topics to consume (`[[kafka.topics]]` with `name` and `format`). Empty by
    /// default; `authwatch run` needs at least one.
    pub topics: Vec<KafkaTopic>,
    /// Alerts (key = entity, JSON value, headers `category`, `severity`, `rule_id`, `alert_id`).
    /// Default `authwatch.alerts`.
    pub alert_topic: String,
    /// Rejected records (JSON with position and reason; header `reason`). Default
    /// `authwatch.dead-letters`.
    pub dead_letter_topic: String,
    /// Runtime audit trail: start, partition assignment and restore, stop. Default
    /// `authwatch.audit`.
    pub audit_topic: String,
    /// Normalized, enriched events as JSON (key = user id). Unset: not written.
    pub enriched_topic: Option<String>,
    /// Transactional id of this instance: unique per instance and stable across its restarts
    /// (a restarted instance fences its predecessor's open transaction). Unset:
    /// `authwatch-<group_id>-<hostname>`.
    pub transactional_id: Option<String>,
    /// Longest wait for more records before a partial batch goes down the pipeline. Default
    /// `20ms`.
    pub poll_wait: DurationText,
    /// Extra librdkafka client properties (e.g. `"security.protocol" = "ssl"`); never secrets.
    pub properties: std::collections::BTreeMap<String, String>,
    /// A file of `key=value` librdkafka properties read at start, for secrets such as
    /// `sasl.password` (mount it from a secret). Unset by default.
    pub properties_file: Option<PathBuf>,
    /// `[kafka.repartition]`: detection behind an internal topic keyed by tenant.
    pub repartition: RepartitionConfig,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".to_owned(),
            group_id: "authwatch".to_owned(),
            topics: Vec::new(),
            alert_topic: "authwatch.alerts".to_owned(),
            dead_letter_topic: "authwatch.dead-letters".to_owned(),
            audit_topic: "authwatch.audit".to_owned(),
            enriched_topic: None,
            transactional_id: None,
            poll_wait: DurationText(Duration::from_millis(20)),
            properties: std::collections::BTreeMap::new(),
            properties_file: None,
            repartition: RepartitionConfig::default(),
        }
    }
}

impl KafkaConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if self.brokers.trim().is_empty() {
            return invalid("kafka.brokers", "must not be empty");
        }
        if self.group_id.trim().is_empty() {
            return invalid("kafka.group_id", "must not be empty");
        }
        if self.topics.iter().any(|t| t.name.trim().is_empty()) {
            return invalid("kafka.topics", "a topic name is empty");
        }
        if self.poll_wait.0.is_zero() || self.poll_wait.0 > Duration::from_secs(10) {
            return invalid("kafka.poll_wait", "must be between 1ms and 10s");
        }
        self.repartition.validate()?;
        if let Some(key) = self.properties.keys().find(|k| secret_property(k)) {
            return invalid(
                "kafka.properties",
                &format!("{key} is a secret; put it in kafka.properties_file instead"),
            );
        }
        Ok(())
    }
}

/// Whether a librdkafka property holds a secret, which a config file (a ConfigMap, a
/// repository) must not: passwords (`sasl.password`, `ssl.key.password`,
/// `ssl.keystore.password`), client secrets (`sasl.oauthbearer.client.secret`) and the private
/// key itself (`ssl.key.pem`). Paths to secret files (`ssl.key.location`) are fine.
fn secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k.ends_with(".key") || k == "ssl.key.pem"
}

/// `[checkpoint]`: detector state, profiles and watermarks saved with the input offsets they
/// reflect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Directory of the state files, one subdirectory per consumer group and partition. Every
    /// instance of a group must see the same directory (a shared volume) so that a partition's
    /// state moves with it. Default `/var/lib/authwatch/checkpoints`. Ignored when `url` is set.
    pub dir: PathBuf,
    /// Object storage for the state files instead of `dir`: `s3://bucket/prefix`,
    /// `gs://bucket/prefix`, `az://container/prefix` (or `file:///dir`). Credentials come from
    /// the environment or the workload identity, never from this file. Unset by default.
    pub url: Option<String>,
    /// How often offsets are committed, in one Kafka transaction with the alerts of the records
    /// before them: read-committed consumers see alerts at each commit, so this bounds alert
    /// latency. Default `500ms`.
    pub interval: DurationText,
    /// How often the detector state of each changed partition is written (at the next commit);
    /// a restart replays the records since the newest snapshot with muted outputs, so this
    /// bounds the replay. Default `30s`.
    pub snapshot_interval: DurationText,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            dir: PathBuf::from("/var/lib/authwatch/checkpoints"),
            url: None,
            interval: DurationText(Duration::from_millis(500)),
            snapshot_interval: DurationText(Duration::from_secs(30)),
        }
    }
}

/// How log lines are written (standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `[telemetry]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Address of the HTTP endpoint with `/metrics` (Prometheus), `/livez`, `/readyz` and
    /// `/startupz`. Default `0.0.0.0:9464`.
    pub listen: std::net::SocketAddr,
    /// OTLP/HTTP (protobuf) metrics endpoint, e.g. `http://otel-collector:4318/v1/metrics`;
    /// unset = no push (Prometheus scrapes `/metrics`). Plain `http://` only.
    pub otlp_endpoint: Option<String>,
    /// How often metrics are pushed over OTLP. Default `30s`.
    pub export_interval: DurationText,
    /// A stage holding work without progress for longer than this makes `/livez` fail.
    /// Default `2m`.
    pub stall_timeout: DurationText,
    /// A batch that takes longer than this from read to results written (pacing excluded) is
    /// logged as a slow-batch trace with its numbers. Default `5s`.
    pub slow_batch: DurationText,
    /// `text` or `json`; the environment variable `AUTHWATCH_LOG_FORMAT` wins. Default `text`.
    pub log_format: LogFormat,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], 9464)),
            otlp_endpoint: None,
            export_interval: DurationText(Duration::from_secs(30)),
            stall_timeout: DurationText(Duration::from_secs(120)),
            slow_batch: DurationText(Duration::from_secs(5)),
            log_format: LogFormat::Text,
        }
    }
}

impl TelemetryConfig {
    /// Range checks of the `[telemetry]` section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if let Some(endpoint) = &self.otlp_endpoint
            && !endpoint.starts_with("http://")
        {
            return invalid(
                "telemetry.otlp_endpoint",
                "must be an http:// URL (TLS to the collector is not built in: send to a local \
                 OpenTelemetry Collector)",
            );
        }
        if self.export_interval.0 < Duration::from_secs(1) {
            return invalid("telemetry.export_interval", "must be at least 1s");
        }
        if self.stall_timeout.0 < Duration::from_secs(1) {
            return invalid("telemetry.stall_timeout", "must be at least 1s");
        }
        if self.slow_batch.0.is_zero() {
            return invalid("telemetry.slow_batch", "must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("test.toml"), text, Vec::new())
    }

    #[test]
    fn secret_kafka_properties_are_refused_and_named() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "SSL.KEY.PEM",
        ] {
            let e = parse(&format!("[kafka.properties]\n{key:?} = \"x\"\n")).unwrap_err();
            assert!(e.to_string().contains(key), "{key}: {e}");
        }
        for key in [
            "ssl.key.location",
            "ssl.certificate.pem",
            "ssl.ca.pem",
            "security.protocol",
        ] {
            assert!(
                parse(&format!("[kafka.properties]\n{key:?} = \"x\"\n")).is_ok(),
                "{key}"
            );
        }
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn the_development_config_loads_and_names_files_that_exist() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let path = root.join("config/dev.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let dev = Config::from_toml(&path, &text, Vec::new()).unwrap();
        for db in [
            &dev.enrich.geo.city_db,
            &dev.enrich.geo.asn_db,
            &dev.enrich.geo.anonymous_db,
        ] {
            let db = db.as_ref().expect("a geo database");
            assert!(root.join(db).is_file(), "{}", db.display());
        }
        assert_eq!(dev.kafka.brokers, "127.0.0.1:19092", "scripts/kafka's port");
    }

    #[test]
    fn example_file_documents_exactly_the_defaults() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/authwatch.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let example = Config::from_toml(&path, &text, Vec::new()).unwrap();
        assert_eq!(example, Config::default());
        // Every key of the default config appears in the example, so none is undocumented.
        let defaults = toml::to_string(&Config::default()).unwrap();
        for line in defaults.lines().filter(|l| l.contains(" = ")) {
            let key = line.split(" = ").next().unwrap();
            assert!(
                text.contains(&format!("{key} =")),
                "{key} is not documented in the example"
            );
        }
        for optional in [
            "rules",
            "alerts",
            "dead_letter",
            "late_events",
            "city_db",
            "asn_db",
            "anonymous_db",
        ] {
            assert!(
                text.contains(&format!("# {optional} =")),
                "{optional} is not documented"
            );
        }
    }

    #[test]
    fn unknown_key_is_named_with_its_position() {
        let e = parse("[input]\nmax_line_byte = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("test.toml"), "{e}");
        assert!(e.contains("line 2, column 1"), "{e}");
        assert!(e.contains("unknown field `max_line_byte`"), "{e}");
    }

    #[test]
    fn bad_value_is_named_with_its_position() {
        let e = parse("[event_time]\nallowed_lateness = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("bad duration \"soon\""), "{e}");
        let e = parse("[event_time]\nlate_events = \"keep\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `keep`"), "{e}");
    }

    #[test]
    fn range_checks_name_the_key() {
        let e = parse("[runtime]\nbatch_lines = 0\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "config key runtime.batch_lines: must be between 1 and 1048576"
        );
        let e = parse("[runtime]\ndetect_threads = 257\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "config key runtime.detect_threads: must be at most 256 (0 = one per core)"
        );
        let e = parse("[output]\nlate_events = \"late.jsonl\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("output.late_events"), "{e}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = vec![
            ("AUTHWATCH__RUNTIME__WORKERS".to_owned(), "3".to_owned()),
            ("AUTHWATCH__OUTPUT__LANGUAGE".to_owned(), "ja".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let c = Config::from_toml(Path::new("t"), "[runtime]\nworkers = 1\n", env).unwrap();
        assert_eq!(c.runtime.workers, 3);
        assert_eq!(c.output.language, Language::Ja);
        let env = vec![("AUTHWATCH__RUNTIME__WORKRS".to_owned(), "3".to_owned())];
        let e = Config::from_toml(Path::new("t"), "", env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("AUTHWATCH__RUNTIME__WORKRS"), "{e}");
        assert!(e.contains("unknown field `workrs`"), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// `[respond]`: the automated responder (behaviour in crates/respond; docs/RESPONSE.md).
// ---------------------------------------------------------------------------------------------

/// How the responder acts on an alert that its policy selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RespondMode {
    /// Decide and audit everything, change nothing at the identity provider (the default of a
    /// new install).
    #[default]
    DryRun,
    /// Put each action in the pending-approval store; a human runs
    /// `authwatch respond approve ID`.
    Approval,
    /// Act at once, within the rate limits.
    Automatic,
}

/// Which identity provider the responder acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RespondTarget {
    /// None: dry-run only (audit records say what would have been done).
    #[default]
    None,
    /// Okta (`[respond.okta]`).
    Okta,
    /// Microsoft Graph / Entra ID (`[respond.graph]`).
    Graph,
    /// Keycloak admin API (`[respond.keycloak]`).
    Keycloak,
    /// A generic HMAC-signed webhook (`[respond.webhook]`).
    Webhook,
}

/// One response action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseAction {
    /// Suspend / disable the account.
    Suspend,
    /// Revoke the account's sessions (and refresh tokens where the provider allows).
    RevokeSessions,
    /// Remove the account's enrolled MFA factors, so it must re-enroll after identity checks.
    ResetMfa,
    /// Change nothing; notify (audit record, and the webhook target or pager).
    Notify,
}

impl ResponseAction {
    /// The action's name as written in config and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseAction::Suspend => "suspend",
            ResponseAction::RevokeSessions => "revoke_sessions",
            ResponseAction::ResetMfa => "reset_mfa",
            ResponseAction::Notify => "notify",
        }
    }
}

/// `[[respond.policy]]`: one policy entry. An alert is acted on by the first entry that
/// matches it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondPolicy {
    /// Rule ids this entry applies to; empty = every rule (then `min_severity` decides).
    #[serde(default)]
    pub rules: Vec<String>,
    /// Lowest alert severity that acts.
    pub min_severity: authwatch_event::Severity,
    /// Actions, in order. One incident of one account gets them once.
    pub actions: Vec<ResponseAction>,
}

/// `[respond.allow_list]`: accounts the responder never touches.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RespondAllowList {
    /// Account names or ids (case-insensitive); `*` matches any run of characters, e.g.
    /// `"breakglass-*"` or `"*@admins.example.com"`.
    pub users: Vec<String>,
    /// Group names or ids (case-insensitive) whose members are never touched; checked at the
    /// identity provider before every action.
    pub groups: Vec<String>,
}

/// `[respond.limits]`: token buckets (governor). Each acted-on account takes one token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RespondLimits {
    /// Accounts acted on at once at most (burst), all tenants together. Default 10.
    pub global_actions: u32,
    /// The time in which the global bucket refills completely. Default `1h`.
    pub global_period: DurationText,
    /// Accounts acted on at once at most within one tenant. Default 5.
    pub tenant_actions: u32,
    /// The time in which a tenant's bucket refills completely. Default `1h`.
    pub tenant_period: DurationText,
    /// Actions waiting for a token at most; beyond it new ones are refused (audited). Default 10000.
    pub max_queue: usize,
    /// Actions waiting for a human (approval mode) at most; beyond it new ones are refused
    /// (`pending_full`, audited) and a human is paged. Default 1000.
    pub max_pending: usize,
}

impl Default for RespondLimits {
    fn default() -> Self {
        RespondLimits {
            global_actions: 10,
            global_period: DurationText(Duration::from_secs(3600)),
            tenant_actions: 5,
            tenant_period: DurationText(Duration::from_secs(3600)),
            max_queue: 10_000,
            max_pending: 1_000,
        }
    }
}

/// `[respond.http]`: every call to an identity provider, webhook or pager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RespondHttp {
    /// Timeout of one HTTP attempt (connect, send, read the answer). Default `10s`.
    pub timeout: DurationText,
    /// Attempts per call, the first included, on 429, 5xx, timeouts and connection errors.
    /// Default 4.
    pub max_attempts: u32,
    /// First backoff; doubled per attempt, with full jitter. Default `500ms`.
    pub backoff_base: DurationText,
    /// Longest backoff between two attempts. Default `30s`.
    pub backoff_max: DurationText,
    /// Longest `Retry-After` honoured within a call; a longer one fails the call at once
    /// (counting towards the breaker), and the action goes back to the queue until the time the
    /// server asked for (see `requeue_delay`). Default `2m`.
    pub max_retry_after: DurationText,
    /// How long an action whose call failed because the provider was unavailable (429, 5xx,
    /// timeouts, connection errors, a `Retry-After` beyond `max_retry_after`) waits in the queue
    /// before it is tried again — longer when the provider's `Retry-After` asks for longer, up
    /// to 1 h. In automatic mode only. Default `1m`.
    pub requeue_delay: DurationText,
    /// How many times such an action goes back to the queue; after that it stays failed (and
    /// the account's next alert tries again). 0: never. Default 5.
    pub max_requeues: u32,
}

impl Default for RespondHttp {
    fn default() -> Self {
        RespondHttp {
            timeout: DurationText(Duration::from_secs(10)),
            max_attempts: 4,
            backoff_base: DurationText(Duration::from_millis(500)),
            backoff_max: DurationText(Duration::from_secs(30)),
            max_retry_after: DurationText(Duration::from_secs(120)),
            requeue_delay: DurationText(Duration::from_secs(60)),
            max_requeues: 5,
        }
    }
}

/// `[respond.breaker]`: stop calling an identity provider that keeps failing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RespondBreaker {
    /// Consecutive failed actions (after their retries) that open the circuit. Default 5.
    pub failures: u32,
    /// How long it stays open before one trial action (half-open). Default `5m`.
    pub cooldown: DurationText,
}

impl Default for RespondBreaker {
    fn default() -> Self {
        RespondBreaker {
            failures: 5,
            cooldown: DurationText(Duration::from_secs(300)),
        }
    }
}

/// A secret's location: a file (preferred; e.g. a mounted Kubernetes secret) or an
/// environment variable. Never the secret itself.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretRef {
    /// A file holding the secret (trailing newline ignored).
    pub file: Option<PathBuf>,
    /// An environment variable holding the secret.
    pub env: Option<String>,
}

impl SecretRef {
    /// Whether a source is named.
    pub fn is_set(&self) -> bool {
        self.file.is_some() || self.env.is_some()
    }
}

/// `[respond.pager]`: a webhook that pages a human when actions queue or the circuit opens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RespondPager {
    /// URL to POST the page to (JSON, HMAC-SHA256 signed when `secret` is set). Unset (and no
    /// `url_from`): no paging (a warning at start-up when actions can queue).
    pub url: Option<String>,
    /// The URL read from a file or an environment variable instead, for a URL that carries its
    /// credential (a chat or paging service's incoming-webhook URL): never in the config file.
    /// At most one of `url` and `url_from`.
    pub url_from: SecretRef,
    /// The signing key.
    pub secret: SecretRef,
    /// At most one page per this interval while the condition lasts. Default `15m`.
    pub interval: DurationText,
}

impl Default for RespondPager {
    fn default() -> Self {
        RespondPager {
            url: None,
            url_from: SecretRef::default(),
            secret: SecretRef::default(),
            interval: DurationText(Duration::from_secs(900)),
        }
    }
}

/// `[respond.okta]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RespondOkta {
    /// The org URL, e.g. `https://example.okta.com`.
    pub base_url: Option<String>,
    /// An API token (sent as `Authorization: SSWS …`).
    pub token: SecretRef,
    /// The tenants this org serves: alerts whose `tenant` is not listed are refused
    /// (`tenant_mismatch`) before anything is called, since the same login in another tenant is
    /// another person. authwatch's Okta normalizer sets `tenant` to the org name of the
    /// EventBridge source (`aws.partner/okta.com/<org>/…`), and to nothing for System Log
    /// records read without one: `""` stands for alerts without a tenant. Compared ignoring
    /// case. No default (Okta logs do not name the org reliably): empty refuses every alert,
    /// and only mode `dry_run` may start so.
    pub tenants: Vec<String>,
}

/// `[respond.graph]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RespondGraph {
    /// The Entra tenant (directory) id.
    pub tenant_id: Option<String>,
    /// The application (client) id with User.ReadWrite.All and GroupMember.Read.All.
    pub client_id: Option<String>,
    /// The client secret.
    pub client_secret: SecretRef,
    /// The token authority. Default `https://login.microsoftonline.com`.
    pub authority: String,
    /// The Graph API root. Default `https://graph.microsoft.com/v1.0`.
    pub api_url: String,
    /// The tenants this directory serves: alerts whose `tenant` is not listed are refused
    /// (`tenant_mismatch`) before anything is called. authwatch's Entra normalizer sets
    /// `tenant` to the sign-in's directory id (`tenantId`). Compared ignoring case. Default:
    /// `[tenant_id]` (set the list when `tenant_id` is a domain name rather than the id).
    pub tenants: Vec<String>,
}

impl Default for RespondGraph {
    fn default() -> Self {
        RespondGraph {
            tenant_id: None,
            client_id: None,
            client_secret: SecretRef::default(),
            authority: "https://login.microsoftonline.com".to_owned(),
            api_url: "https://graph.microsoft.com/v1.0".to_owned(),
            tenants: Vec::new(),
        }
    }
}

/// How the responder gets a Keycloak admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeycloakGrant {
    /// A confidential client with a service account (`client_id` + `client_secret`).
    #[default]
    ClientCredentials,
    /// A user (`username` + `password`) through `client_id` (usually `admin-cli`).
    Password,
}

/// `[respond.keycloak]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RespondKeycloak {
    /// The server URL, e.g. `https://sso.example.com`.
    pub base_url: Option<String>,
    /// The realm whose users are acted on.
    pub realm: Option<String>,
    /// The realm the responder's client or user lives in. Default `master`.
    pub auth_realm: String,
    /// `client_credentials` (default) or `password`.
    pub grant: KeycloakGrant,
    /// The client id. Default `admin-cli`.
    pub client_id: String,
    /// The client secret (client-credentials grant).
    pub client_secret: SecretRef,
    /// The user name (password grant).
    pub username: Option<String>,
    /// The user's password (password grant).
    pub password: SecretRef,
    /// The tenants this realm serves: alerts whose `tenant` is not listed are refused
    /// (`tenant_mismatch`) before anything is called. authwatch's Keycloak normalizer sets
    /// `tenant` to the event's `realmId`, which is the realm's name unless the realm was given
    /// another id (a UUID): then list that id. Compared exactly (realm names are
    /// case-sensitive). Default: `[realm]`.
    pub tenants: Vec<String>,
}

impl Default for RespondKeycloak {
    fn default() -> Self {
        RespondKeycloak {
            base_url: None,
            realm: None,
            auth_realm: "master".to_owned(),
            grant: KeycloakGrant::ClientCredentials,
            client_id: "admin-cli".to_owned(),
            client_secret: SecretRef::default(),
            username: None,
            password: SecretRef::default(),
            tenants: Vec::new(),
        }
    }
}

/// `[respond.webhook]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RespondWebhook {
    /// URL each action is POSTed to as JSON.
    pub url: Option<String>,
    /// The URL read from a file or an environment variable instead, for a URL that carries its
    /// credential: never in the config file. At most one of `url` and `url_from`.
    pub url_from: SecretRef,
    /// The HMAC-SHA256 signing key (required).
    pub secret: SecretRef,
}

/// `[respond]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RespondConfig {
    /// Run the responder on the pipeline's alerts. Default false.
    pub enabled: bool,
    /// `dry_run` (default), `approval` or `automatic`.
    pub mode: RespondMode,
    /// The identity provider acted on: `none` (default), `okta`, `graph`, `keycloak`, `webhook`.
    pub target: RespondTarget,
    /// Directory of the pending-approval store (and of the state file of `replay`). Default
    /// `/var/lib/authwatch/respond`.
    pub state_dir: PathBuf,
    /// The audit file (OCSF Account Change records as JSON lines). Default
    /// `<state_dir>/audit.jsonl`.
    pub audit_file: Option<PathBuf>,
    /// How long an account's incident lasts: further alerts for the account within it are
    /// duplicates and get no second action. Default `24h`.
    pub incident_ttl: DurationText,
    /// Accounts remembered at most (the oldest finished incidents are forgotten first).
    /// Default 100000.
    pub max_incidents: usize,
    /// Which alerts act, and how; the first matching entry wins.
    pub policy: Vec<RespondPolicy>,
    /// Accounts and groups never touched.
    pub allow_list: RespondAllowList,
    /// Rate limits.
    pub limits: RespondLimits,
    /// Timeouts and retries.
    pub http: RespondHttp,
    /// Circuit breaker.
    pub breaker: RespondBreaker,
    /// Paging a human.
    pub pager: RespondPager,
    /// Okta adapter.
    pub okta: RespondOkta,
    /// Microsoft Graph adapter.
    pub graph: RespondGraph,
    /// Keycloak adapter.
    pub keycloak: RespondKeycloak,
    /// Generic webhook adapter.
    pub webhook: RespondWebhook,
}

impl Default for RespondConfig {
    fn default() -> Self {
        RespondConfig {
            enabled: false,
            mode: RespondMode::DryRun,
            target: RespondTarget::None,
            state_dir: PathBuf::from("/var/lib/authwatch/respond"),
            audit_file: None,
            incident_ttl: DurationText(Duration::from_secs(86_400)),
            max_incidents: 100_000,
            policy: vec![RespondPolicy {
                rules: vec![
                    "mfa_fatigue_success".to_owned(),
                    "credential_compromise".to_owned(),
                ],
                min_severity: authwatch_event::Severity::Critical,
                actions: vec![ResponseAction::Suspend, ResponseAction::RevokeSessions],
            }],
            allow_list: RespondAllowList::default(),
            limits: RespondLimits::default(),
            http: RespondHttp::default(),
            breaker: RespondBreaker::default(),
            pager: RespondPager::default(),
            okta: RespondOkta::default(),
            graph: RespondGraph::default(),
            keycloak: RespondKeycloak::default(),
            webhook: RespondWebhook::default(),
        }
    }
}

impl RespondConfig {
    /// Range and consistency checks of `[respond]` (called by [`Config::validate`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if self.limits.global_actions == 0 || self.limits.tenant_actions == 0 {
            return invalid(
                "respond.limits",
                "global_actions and tenant_actions must be positive",
            );
        }
        if self.limits.global_period.0.is_zero() || self.limits.tenant_period.0.is_zero() {
            return invalid(
                "respond.limits",
                "global_period and tenant_period must be positive",
            );
        }
        if !(1..=20).contains(&self.http.max_attempts) {
            return invalid("respond.http.max_attempts", "must be between 1 and 20");
        }
        if self.http.timeout.0.is_zero() {
            return invalid("respond.http.timeout", "must be positive");
        }
        if self.breaker.failures == 0 {
            return invalid("respond.breaker.failures", "must be positive");
        }
        if self.max_incidents == 0 {
            return invalid("respond.max_incidents", "must be positive");
        }
        if self.policy.iter().any(|p| p.actions.is_empty()) {
            return invalid("respond.policy", "every entry needs at least one action");
        }
        if self.mode != RespondMode::DryRun && self.target == RespondTarget::None {
            return invalid(
                "respond.target",
                "is \"none\": only mode = \"dry_run\" can run without a target",
            );
        }
        if self.limits.max_pending == 0 {
            return invalid("respond.limits.max_pending", "must be positive");
        }
        if self.mode != RespondMode::DryRun
            && let Some((key, tenants)) = self.target_tenants()
            && tenants.is_empty()
        {
            // Said at start, not at the first alert: such a responder would refuse every one.
            return Err(ConfigError::Invalid {
                key,
                message: "is empty: every alert would be refused (tenant_mismatch). List the \
                          tenants the target serves, as authwatch's normalizer writes them in \
                          the alerts' `tenant` (\"\" for alerts without one); see \
                          docs/RESPONSE.md, \"Tenants\""
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// The tenants the target serves, with the key that configures them, after defaults:
    /// `None` when the target serves any tenant (`webhook` passes the tenant to its receiver;
    /// `none` acts on nothing).
    pub fn target_tenants(&self) -> Option<(&'static str, Vec<String>)> {
        let or_default = |list: &[String], default: Option<&String>| {
            if list.is_empty() {
                default.cloned().into_iter().collect()
            } else {
                list.to_vec()
            }
        };
        match self.target {
            RespondTarget::None | RespondTarget::Webhook => None,
            RespondTarget::Okta => Some(("respond.okta.tenants", self.okta.tenants.clone())),
            RespondTarget::Graph => Some((
                "respond.graph.tenants",
                or_default(&self.graph.tenants, self.graph.tenant_id.as_ref()),
            )),
            RespondTarget::Keycloak => Some((
                "respond.keycloak.tenants",
                or_default(&self.keycloak.tenants, self.keycloak.realm.as_ref()),
            )),
        }
    }

    /// The audit file after applying its default.
    pub fn audit_path(&self) -> PathBuf {
        self.audit_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("audit.jsonl"))
    }
}

#[cfg(test)]
mod respond_tests {
    use super::*;

    #[test]
    fn respond_section_is_checked() {
        let parse = |t: &str| Config::from_toml(Path::new("t.toml"), t, Vec::new());
        let e = parse("[respond]\nmode = \"automatic\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("respond.target"), "{e}");
        let e = parse("[respond.limits]\nglobal_actions = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("respond.limits"), "{e}");
        let c = parse(
            "[respond]\nenabled = true\nmode = \"approval\"\ntarget = \"okta\"\n\
             [respond.okta]\nbase_url = \"https://x.okta.com\"\ntoken = { env = \"OKTA_TOKEN\" }\n\
             tenants = [\"x\"]\n\
             [[respond.policy]]\nrules = []\nmin_severity = \"high\"\nactions = [\"notify\"]\n",
        )
        .unwrap();
        assert_eq!(c.respond.mode, RespondMode::Approval);
        assert_eq!(c.respond.policy.len(), 1);
        assert_eq!(c.respond.policy[0].actions, vec![ResponseAction::Notify]);
        assert_eq!(c.respond.okta.token.env.as_deref(), Some("OKTA_TOKEN"));
        // A secret in clear is not a key at all.
        let e = parse("[respond.okta]\ntoken = \"00abc\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    /// A provider target that would refuse every alert (no tenant to serve) is said so at
    /// start, outside dry-run; keycloak and graph default to their realm and directory.
    #[test]
    fn the_tenants_a_target_serves_are_checked_at_start() {
        let parse = |t: &str| Config::from_toml(Path::new("t.toml"), t, Vec::new());
        let okta = "[respond.okta]\nbase_url = \"https://x.okta.com\"\n";
        let e = parse(&format!(
            "[respond]\nmode = \"automatic\"\ntarget = \"okta\"\n{okta}"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("respond.okta.tenants") && e.contains("tenant_mismatch"),
            "{e}"
        );
        let dry = parse(&format!(
            "[respond]\nmode = \"dry_run\"\ntarget = \"okta\"\n{okta}"
        ))
        .unwrap();
        assert_eq!(
            dry.respond.target_tenants(),
            Some(("respond.okta.tenants", vec![]))
        );
        let c = parse(&format!(
            "[respond]\nmode = \"automatic\"\ntarget = \"okta\"\n{okta}tenants = [\"example\", \"\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.respond.target_tenants().map(|(_, t)| t),
            Some(vec!["example".to_owned(), String::new()])
        );
        let c = parse(
            "[respond]\nmode = \"automatic\"\ntarget = \"keycloak\"\n\
             [respond.keycloak]\nrealm = \"corp\"\n",
        )
        .unwrap();
        assert_eq!(
            c.respond.target_tenants(),
            Some(("respond.keycloak.tenants", vec!["corp".to_owned()]))
        );
        let c = parse(
            "[respond]\nmode = \"approval\"\ntarget = \"graph\"\n\
             [respond.graph]\ntenant_id = \"dir-1\"\ntenants = [\"dir-1\", \"dir-2\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.respond.target_tenants().map(|(_, t)| t),
            Some(vec!["dir-1".to_owned(), "dir-2".to_owned()])
        );
        let c = parse("[respond]\nmode = \"automatic\"\ntarget = \"webhook\"\n").unwrap();
        assert_eq!(c.respond.target_tenants(), None);
        let e = parse("[respond.limits]\nmax_pending = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_pending"), "{e}");
    }

    #[test]
    fn optional_respond_keys_are_documented() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/authwatch.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        for key in [
            "audit_file",
            "url",
            "base_url",
            "tenant_id",
            "client_id",
            "realm",
            "username",
            "secret",
            "token",
            "client_secret",
            "password",
        ] {
            assert!(
                text.contains(&format!("# {key} =")),
                "{key} is not documented"
            );
        }
    }
}

/// What the internal repartition topic is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepartitionKey {
    /// The event's tenant: detection per tenant, spread over the topic's partitions.
    #[default]
    Tenant,
    /// One key for every event: a single detect task sees the whole stream (exactly what
    /// `replay` computes, including IP/ASN/device keys shared by several tenants), at the
    /// price of detection on one instance.
    Global,
}

/// `[kafka.repartition]`: provider records are normalized and enriched by the group that
/// consumes the provider topics, then re-keyed through an internal topic that a second group
/// detects on, so the producers' keying does not matter (docs/KAFKA.md, "Scale-out").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepartitionConfig {
    /// Go through the internal topic. Default `false` (detect per provider partition).
    pub enabled: bool,
    /// The internal topic; unset = `<group_id>.events.by-tenant`.
    pub topic: Option<String>,
    /// Partitions of the internal topic when authwatch creates it: the ceiling of detect
    /// parallelism. Default 12. An existing topic keeps its own count.
    pub partitions: i32,
    /// `tenant` or `global`. Default `tenant`.
    pub key: RepartitionKey,
    /// A provider partition with no new record for this long is idle: detection stops waiting
    /// for it (its later events are merged at their arrival). Default `30s`.
    pub idle_after: DurationText,
}

impl Default for RepartitionConfig {
    fn default() -> Self {
        RepartitionConfig {
            enabled: false,
            topic: None,
            partitions: 12,
            key: RepartitionKey::Tenant,
            idle_after: DurationText(Duration::from_secs(30)),
        }
    }
}

impl RepartitionConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: &str| {
            Err(ConfigError::Invalid {
                key: "kafka.repartition",
                message: message.to_owned(),
            })
        };
        if !(1..=10_000).contains(&self.partitions) {
            return invalid("partitions must be between 1 and 10000");
        }
        if self.topic.as_ref().is_some_and(|t| t.trim().is_empty()) {
            return invalid("topic must not be empty");
        }
        if self.idle_after.0 < Duration::from_millis(100) {
            return invalid("idle_after must be at least 100ms");
        }
        Ok(())
    }

    /// The internal topic's name for consumer group `group_id`.
    pub fn topic_for(&self, group_id: &str) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| format!("{group_id}.events.by-tenant"))
    }
}

/// `[sql]`: windowed SQL detections (`.sql` files, run by DataFusion in the detect stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlConfig {
    /// Run the detections of `dir` after the compiled rules. Default false.
    pub enabled: bool,
    /// Directory of `.sql` detections. Default `sql`.
    pub dir: PathBuf,
    /// Most rows one detection buffers for its open windows (after its filter); beyond, the
    /// oldest are dropped and counted. Default 1000000.
    pub max_buffered_rows: usize,
    /// Memory pool of each detection in MiB: what one execution of its query may hold in
    /// sorts, joins, aggregations and window functions. An execution that needs more fails
    /// (logged, counted in `authwatch_sql_detection_failures_total`) and the run goes on.
    /// Default 256.
    pub max_memory_mib: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            enabled: false,
            dir: PathBuf::from("sql"),
            max_buffered_rows: 1_000_000,
            max_memory_mib: 256,
        }
    }
}

/// `[archive]`: enriched events and alerts as Parquet, partitioned by date and hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Write the archive. Default false.
    pub enabled: bool,
    /// A directory, or `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`
    /// (credentials from the provider's standard environment variables). Default `archive`.
    pub location: String,
    /// Rows per Parquet file. Default 1000000.
    pub file_rows: usize,
    /// Rows buffered over all partitions at most. Default 2000000.
    pub max_buffered_rows: usize,
    /// Rows per row group. Default 131072.
    pub row_group_rows: usize,
    /// Longest (wall) time rows wait in a buffer before they are written. Default `5m`.
    pub max_buffer_age: DurationText,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            enabled: false,
            location: "archive".to_owned(),
            file_rows: 1_000_000,
            max_buffered_rows: 2_000_000,
            row_group_rows: 131_072,
            max_buffer_age: DurationText(Duration::from_secs(300)),
        }
    }
}

/// `[serve]`: the read-only Postgres-wire endpoint (`authwatch serve`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Serve the endpoint from `authwatch run` too (`authwatch serve` always serves). Default
    /// false.
    pub enabled: bool,
    /// Address and port. Default `0.0.0.0:5433`.
    pub listen: String,
    /// The user name clients log in with. Default `authwatch`.
    pub user: String,
    /// A file holding the password (first line). Unset by default.
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password, when no file is set. Unset by default.
    pub password_env: Option<String>,
    /// TLS certificate chain (PEM); TLS is on when this and `tls_key` are set.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Most rows one query returns. Default 1000000.
    pub max_rows: usize,
    /// Event time of the live window (`live_events`) kept in memory. Default `1h`.
    pub live_window: DurationText,
    /// Most events in the live window. Default 1000000.
    pub live_max_rows: usize,
    /// Longest one statement may plan and run before it is stopped with SQLSTATE 57014 (as
    /// PostgreSQL's `statement_timeout`); `0s`: no limit. Default `1m`.
    pub statement_timeout: DurationText,
    /// Worker threads of the endpoint, on which its queries run. 0 (the default): 2 inside
    /// `authwatch run`, where the endpoint shares the cores with the pipeline; one per core for
    /// `authwatch serve`, a process of its own.
    pub worker_threads: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            enabled: false,
            listen: "0.0.0.0:5433".to_owned(),
            user: "authwatch".to_owned(),
            password_file: None,
            password_env: None,
            tls_cert: None,
            tls_key: None,
            max_rows: 1_000_000,
            live_window: DurationText(Duration::from_secs(3600)),
            live_max_rows: 1_000_000,
            statement_timeout: DurationText(Duration::from_secs(60)),
            worker_threads: 0,
        }
    }
}
