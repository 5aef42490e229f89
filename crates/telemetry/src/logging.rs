//! Log setup: human-readable or JSON lines on standard error, filtered by `AUTHWATCH_LOG`
//! (`tracing` env-filter syntax, e.g. `info` or `warn,authwatch_telemetry=debug`).
//!
//! The format is chosen before the configuration is read (from `AUTHWATCH_LOG_FORMAT`), so that
//! errors in the configuration itself are logged; [`apply_log_format`] switches to the
//! configured `[telemetry] log_format` afterwards, unless the environment variable set one. The
//! error that ends the process (a configuration error among them) is written by
//! [`log_fatal_error`] in the format in use.

use authwatch_pipeline::config::LogFormat;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::layer::{Layered, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// The environment variable that picks the log format (`text` or `json`) and wins over the
/// configuration.
pub const LOG_FORMAT_ENV: &str = "AUTHWATCH_LOG_FORMAT";

/// The environment variable with the log filter.
pub const LOG_FILTER_ENV: &str = "AUTHWATCH_LOG";

type Inner = Layered<EnvFilter, Registry>;
type FormatLayer = Box<dyn Layer<Inner> + Send + Sync>;

struct Installed {
    handle: reload::Handle<FormatLayer, Inner>,
    /// Set by the environment: the configuration does not change it.
    pinned: bool,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Whether the installed subscriber writes JSON lines (kept by [`init_logging`] and
/// [`apply_log_format`]).
static JSON: AtomicBool = AtomicBool::new(false);

/// The target of [`log_fatal_error`]'s line: the binary's.
const FATAL_TARGET: &str = "authwatch";

fn format_layer(format: LogFormat) -> FormatLayer {
    use std::io::IsTerminal as _;
    // Colour codes only for a person at a terminal, never for a collector reading a pipe.
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => Box::new(layer),
        // One object per line; the fields of the current span (e.g. a slow batch's numbers)
        // ride along, so a collector can index them.
        LogFormat::Json => Box::new(
            layer
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false),
        ),
    }
}

/// Parses a log format name.
pub fn parse_log_format(text: &str) -> Option<LogFormat> {
    match text.trim().to_ascii_lowercase().as_str() {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        _ => None,
    }
}

/// Installs the global subscriber: filter from `AUTHWATCH_LOG` (else `default_filter`), format
/// from `AUTHWATCH_LOG_FORMAT` (else text). Returns the format in use. A second call, or a
/// subscriber installed by someone else, leaves the existing one in place.
pub fn init_logging(default_filter: &str) -> LogFormat {
    let from_env = std::env::var(LOG_FORMAT_ENV).ok();
    let parsed = from_env.as_deref().and_then(parse_log_format);
    let format = parsed.unwrap_or_default();
    let filter =
        EnvFilter::try_from_env(LOG_FILTER_ENV).unwrap_or_else(|_| EnvFilter::new(default_filter));
    let (layer, handle) = reload::Layer::new(format_layer(format));
    if tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init()
        .is_ok()
    {
        let _ = INSTALLED.set(Installed {
            handle,
            pinned: parsed.is_some(),
        });
        JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    }
    if let (Some(text), None) = (&from_env, parsed) {
        tracing::warn!(
            value = %text,
            "{LOG_FORMAT_ENV} must be \"text\" or \"json\"; logging as text"
        );
    }
    format
}

/// Switches to the configured format, unless `AUTHWATCH_LOG_FORMAT` chose one. Returns the
/// format in use (None when [`init_logging`] did not install the subscriber).
pub fn apply_log_format(format: LogFormat) -> Option<LogFormat> {
    let installed = INSTALLED.get()?;
    if installed.pinned {
        return std::env::var(LOG_FORMAT_ENV)
            .ok()
            .as_deref()
            .and_then(parse_log_format);
    }
    match installed.handle.reload(format_layer(format)) {
        Ok(()) => {
            JSON.store(format == LogFormat::Json, Ordering::Relaxed);
            Some(format)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot switch the log format");
            None
        }
    }
}

/// Writes `message`, the error that ends the process, as one JSON log line when the logs are
/// JSON (`AUTHWATCH_LOG_FORMAT=json`, or `[telemetry] log_format = "json"` once the
/// configuration was read), so that a log collector parses it like every other line; returns
/// false, writing nothing, when the logs are text: the caller prints it as text then.
///
/// The line goes through the installed subscriber, at ERROR with target `authwatch`, unless
/// `AUTHWATCH_LOG` filters that out (or [`init_logging`] installed no subscriber): a fatal error
/// is never dropped, so it is then written directly, with the JSON logger's fields
/// (`timestamp`, `level`, `message`, `target`).
pub fn log_fatal_error(message: &str) -> bool {
    let json = match INSTALLED.get() {
        Some(_) => JSON.load(Ordering::Relaxed),
        None => {
            std::env::var(LOG_FORMAT_ENV)
                .ok()
                .as_deref()
                .and_then(parse_log_format)
                == Some(LogFormat::Json)
        }
    };
    if !json {
        return false;
    }
    if INSTALLED.get().is_some() && tracing::enabled!(target: FATAL_TARGET, tracing::Level::ERROR) {
        tracing::error!(target: FATAL_TARGET, "{message}");
    } else {
        use tracing_subscriber::fmt::format::Writer;
        use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
        let mut now = String::new();
        // The JSON logger's clock: RFC 3339 in UTC, microseconds.
        let _ = SystemTime.format_time(&mut Writer::new(&mut now));
        eprintln!("{}", fatal_line(&now, message));
    }
    true
}

/// One JSON object in the JSON logger's layout: `timestamp`, `level`, `message`, `target`.
fn fatal_line(timestamp: &str, message: &str) -> String {
    let mut line = String::from("{\"timestamp\":");
    json_string(&mut line, timestamp);
    line.push_str(",\"level\":\"ERROR\",\"message\":");
    json_string(&mut line, message);
    line.push_str(",\"target\":");
    json_string(&mut line, FATAL_TARGET);
    line.push('}');
    line
}

/// `text` as a JSON string.
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fatal_line_is_one_json_object_with_the_loggers_fields() {
        let line = fatal_line(
            "2026-11-25T17:01:24.425449Z",
            "bad.toml: TOML parse error at line 3\n  | bogus = \"x\\y\"\t\u{1}",
        );
        assert_eq!(
            line,
            r#"{"timestamp":"2026-11-25T17:01:24.425449Z","level":"ERROR","message":"bad.toml: TOML parse error at line 3\n  | bogus = \"x\\y\"\t\u0001","target":"authwatch"}"#
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn format_names_parse() {
        assert_eq!(parse_log_format("json"), Some(LogFormat::Json));
        assert_eq!(parse_log_format(" JSON\n"), Some(LogFormat::Json));
        assert_eq!(parse_log_format("text"), Some(LogFormat::Text));
        assert_eq!(parse_log_format("yaml"), None);
    }
}
