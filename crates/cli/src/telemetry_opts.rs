//! `--metrics-listen` for `replay` and `demo`: the telemetry endpoint of `authwatch run`
//! (`/metrics`, `/livez`, `/readyz`, `/startupz`), served while a recorded stream replays, so
//! dashboards and probes can be tried without Kafka.

use anyhow::{Context, Result};
use authwatch_pipeline::{Config, Pipeline};
use authwatch_telemetry::Telemetry;
use std::net::SocketAddr;
use std::time::Duration;

/// Telemetry options of the replaying commands.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryOptions {
    /// Serve /metrics, /livez, /readyz and /startupz on ADDR while the run lasts (port 0 picks a
    /// free port; the address is printed). Other [telemetry] settings come from the config.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// With --metrics-listen: keep serving this long after the run (for a last scrape).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "0s",
        value_parser = humantime::parse_duration,
        requires = "metrics_listen"
    )]
    metrics_linger: Duration,
}

/// The endpoint of one replay.
pub struct ReplayTelemetry {
    telemetry: Telemetry,
    linger: Duration,
}

impl TelemetryOptions {
    /// Starts the endpoint when asked for.
    pub fn start(&self, config: &Config) -> Result<Option<ReplayTelemetry>> {
        let Some(listen) = self.metrics_listen else {
            return Ok(None);
        };
        let mut settings = config.telemetry.clone();
        settings.listen = listen;
        let telemetry = Telemetry::start(&settings).context("--metrics-listen")?;
        if let Some(addr) = telemetry.local_addr() {
            eprintln!("authwatch: telemetry on http://{addr}/metrics (/livez /readyz /startupz)");
        }
        Ok(Some(ReplayTelemetry {
            telemetry,
            linger: self.metrics_linger,
        }))
    }
}

impl ReplayTelemetry {
    /// Observes the pipeline. A replay has no state to restore and its input is open, so it is
    /// started and ready at once.
    pub fn connect(&self, pipeline: Pipeline, sql: &crate::replay::SqlFailures) -> Pipeline {
        sql.export(&self.telemetry);
        let pipeline = pipeline.with_observer(self.telemetry.batch_observer());
        self.telemetry.attach_pipeline(pipeline.metrics());
        let health = self.telemetry.health();
        health.set_started();
        health.set_assigned(true);
        pipeline
    }

    /// Exports the responder's decisions (`authwatch_response_actions_total`), as `run` does.
    pub fn register_responder(&self, counts: authwatch_respond::SharedCounts) {
        self.telemetry.register_response_actions(move || {
            let Ok(counts) = counts.lock() else {
                return Vec::new();
            };
            counts
                .iter()
                .map(|((action, decision), n)| authwatch_telemetry::ActionCount {
                    action: action.as_str().to_owned(),
                    result: decision.as_str().to_owned(),
                    count: *n,
                })
                .collect()
        });
    }

    /// After the run: the input is used up (not ready any more); serve for the linger time,
    /// then stop and push the last OTLP export.
    pub fn finish(self) -> Result<()> {
        self.telemetry.health().set_assigned(false);
        if !self.linger.is_zero() {
            eprintln!(
                "authwatch: run finished; telemetry stays up for {}",
                humantime::format_duration(self.linger)
            );
            std::thread::sleep(self.linger);
        }
        self.telemetry.shutdown().context("telemetry shutdown")
    }
}
