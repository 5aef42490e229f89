//! The HTTP endpoint: `/metrics`, `/livez`, `/readyz`, `/startupz`, served by axum on a
//! single-threaded tokio runtime in a thread of its own, so that the synchronous pipeline
//! threads never share an executor with it. The same thread samples liveness and throughput
//! once a second.

use crate::TelemetryError;
use crate::health::{Health, ProbeResult};
use crate::telemetry::Sources;
use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::Encoder as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the handlers read.
pub(crate) struct State {
    pub(crate) registry: prometheus::Registry,
    pub(crate) health: Health,
    pub(crate) sources: Arc<Sources>,
}

/// A running endpoint; stops when dropped.
pub(crate) struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `listen` now (so that a taken port fails the caller), then serves on a new thread.
    pub(crate) fn start(listen: SocketAddr, state: State) -> Result<Server, TelemetryError> {
        let bind = |source| TelemetryError::Bind {
            addr: listen,
            source,
        };
        let listener = std::net::TcpListener::bind(listen).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(TelemetryError::Thread)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("aw-telemetry".into())
            .spawn(move || runtime.block_on(serve(listener, state, stopped)))
            .map_err(TelemetryError::Thread)?;
        tracing::info!(%addr, "telemetry endpoint listening (/metrics /livez /readyz /startupz)");
        Ok(Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the thread.
    pub(crate) fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the telemetry thread panicked");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut();
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: State,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "telemetry endpoint cannot use its socket");
            return;
        }
    };
    let state = Arc::new(state);
    let sampler = Arc::clone(&state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = Instant::now();
            sampler.health.sample(now);
            sampler.sources.sample_throughput(now);
        }
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/startupz", get(startupz))
        .with_state(state);
    let shutdown = async {
        let _ = stopped.await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "telemetry endpoint stopped");
    }
}

/// The registry's metrics in the Prometheus text format.
pub(crate) fn render(registry: &prometheus::Registry) -> Result<String, TelemetryError> {
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .map_err(|e| TelemetryError::Encode(e.to_string()))?;
    String::from_utf8(out).map_err(|e| TelemetryError::Encode(e.to_string()))
}

async fn metrics(Extract(state): Extract<Arc<State>>) -> Response {
    match render(&state.registry) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

fn probe(result: ProbeResult) -> Response {
    let status = if result.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, result.detail).into_response()
}

async fn livez(Extract(state): Extract<Arc<State>>) -> Response {
    probe(state.health.liveness(Instant::now()))
}

async fn readyz(Extract(state): Extract<Arc<State>>) -> Response {
    probe(state.health.readiness())
}

async fn startupz(Extract(state): Extract<Arc<State>>) -> Response {
    probe(state.health.startup())
}
