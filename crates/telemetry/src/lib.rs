//! authwatch's telemetry and health layer.
//!
//! - **Metrics**: OpenTelemetry instruments ([`names`]) read from the pipeline's own counters
//!   ([`authwatch_pipeline::Metrics`]) at collection time, plus registration functions for the
//!   numbers other parts keep (consumer lag, response actions, checkpoints, batches). They are
//!   exported on `/metrics` in the Prometheus text format and, when `[telemetry] otlp_endpoint`
//!   is set, pushed over OTLP/HTTP (protobuf) every `export_interval`.
//! - **Health**: `/startupz` (state restored), `/readyz` (restored and partitions assigned),
//!   `/livez` (no stage holds work without progress for longer than `stall_timeout`); see
//!   [`Health`].
//! - **Traces**: a batch slower than `slow_batch` is logged as a `slow_batch` span and event with
//!   its numbers and where its time went.
//! - **Logs**: [`init_logging`] installs text or JSON lines (`AUTHWATCH_LOG_FORMAT=json`);
//!   [`log_fatal_error`] writes the error that ends the process in the format in use.
//!
//! Everything is served on one port, `[telemetry] listen` (default `0.0.0.0:9464`), by
//! [`Telemetry::start`]. docs/TELEMETRY.md lists every metric.
#![deny(missing_docs)]

mod batch;
mod health;
mod logging;
pub mod names;
mod otlp_client;
mod server;
mod telemetry;

pub use authwatch_pipeline::config::{LogFormat, TelemetryConfig};
pub use health::{Health, Heartbeat, ProbeResult, StageState};
pub use logging::{
    LOG_FILTER_ENV, LOG_FORMAT_ENV, apply_log_format, init_logging, log_fatal_error,
    parse_log_format,
};
pub use telemetry::{ActionCount, PartitionLag, ResponseActions, SqlDetectionCounts, Telemetry};

/// Telemetry that cannot start or export. Whose fault: the operator's for `Bind`, `Config` and
/// `Otlp` (a taken port, a bad endpoint); the environment's for `Thread`.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The `[telemetry]` section is invalid.
    #[error("{0}")]
    Config(String),
    /// The endpoint's address cannot be bound.
    #[error("telemetry.listen {addr}: cannot listen: {source}")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The OTLP exporter cannot be built for this endpoint.
    #[error("telemetry.otlp_endpoint {endpoint}: {message}")]
    Otlp {
        /// The configured endpoint.
        endpoint: String,
        /// The exporter's message.
        message: String,
    },
    /// The metrics exporter failed.
    #[error("metrics exporter: {0}")]
    Exporter(String),
    /// Metrics could not be encoded.
    #[error("metrics encoding: {0}")]
    Encode(String),
    /// The telemetry thread or its runtime could not start.
    #[error("telemetry thread: {0}")]
    Thread(#[source] std::io::Error),
}

#[cfg(test)]
mod tests;
