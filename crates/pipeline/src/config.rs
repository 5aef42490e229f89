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
    /// impossible timestamp. Default `1day`. Set to `0s` to disable (e.g. for synthetic data).
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
            max_future_skew: DurationText(Duration::from_secs(86_400)),
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
}

impl Default for EventTimeConfig {
    fn default() -> Self {
        EventTimeConfig {
            allowed_lateness: DurationText(Duration::from_secs(300)),
            late_events: LatePolicy::Drop,
        }
    }
}

/// `[runtime]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Normalize/enrich worker threads; 0 = one per core. Default 0.
    pub workers: usize,
    /// Lines per batch handed between stages. Default 2048.
    pub batch_lines: usize,
    /// Batches each bounded channel holds before its producer waits (backpressure). Default 4.
    pub channel_batches: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            workers: 0,
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
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            rules: None,
            max_keys_per_rule: 1_000_000,
            sweep_interval: DurationText(Duration::from_secs(60)),
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
        if !(1..=1 << 20).contains(&self.runtime.batch_lines) {
            return invalid("runtime.batch_lines", "must be between 1 and 1048576");
        }
        if !(1..=1024).contains(&self.runtime.channel_batches) {
            return invalid("runtime.channel_batches", "must be between 1 and 1024");
        }
        if self.detect.max_keys_per_rule == 0 {
            return invalid("detect.max_keys_per_rule", "must be positive");
        }
        if self.detect.sweep_interval.0.is_zero() {
            return invalid("detect.sweep_interval", "must be positive");
        }
        if self.output.late_events.is_some()
            && self.event_time.late_events != LatePolicy::SideOutput
        {
            return invalid(
                "output.late_events",
                "is set but event_time.late_events is not \"side_output\"",
            );
        }
        Ok(())
    }

    /// Worker threads after resolving 0 to the core count.
    pub fn workers(&self) -> usize {
        match self.runtime.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("test.toml"), text, Vec::new())
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
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
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            enabled: false,
            dir: PathBuf::from("sql"),
            max_buffered_rows: 1_000_000,
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
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "0.0.0.0:5433".to_owned(),
            user: "authwatch".to_owned(),
            password_file: None,
            password_env: None,
            tls_cert: None,
            tls_key: None,
            max_rows: 1_000_000,
            live_window: DurationText(Duration::from_secs(3600)),
            live_max_rows: 1_000_000,
        }
    }
}
