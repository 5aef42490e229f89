//! Log setup: human-readable or JSON lines on standard error, filtered by `AUTHWATCH_LOG`
//! (`tracing` env-filter syntax, e.g. `info` or `warn,authwatch_telemetry=debug`).
//!
//! The format is chosen before the configuration is read (from `AUTHWATCH_LOG_FORMAT`), so that
//! errors in the configuration itself are logged; [`apply_log_format`] switches to the
//! configured `[telemetry] log_format` afterwards, unless the environment variable set one.

use authwatch_pipeline::config::LogFormat;
use std::sync::OnceLock;
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
        Ok(()) => Some(format),
        Err(e) => {
            tracing::warn!(error = %e, "cannot switch the log format");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_parse() {
        assert_eq!(parse_log_format("json"), Some(LogFormat::Json));
        assert_eq!(parse_log_format(" JSON\n"), Some(LogFormat::Json));
        assert_eq!(parse_log_format("text"), Some(LogFormat::Text));
        assert_eq!(parse_log_format("yaml"), None);
    }
}
