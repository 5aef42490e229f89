//! Running the responder beside the pipeline: a sink that passes every alert on to the
//! pipeline's own sink and to a responder thread, so that slow identity-provider calls never
//! hold up alert output more than the bounded hand-off allows.

use crate::audit::Decision;
use crate::responder::{RespondError, Responder};
use authwatch_event::{Alert, AuthEvent};
use authwatch_pipeline::config::ResponseAction;
use authwatch_pipeline::{DeadLetter, LateEvent, Sink, SinkError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Alerts waiting for the responder at most; beyond it the pipeline's sink waits
/// (backpressure, never a dropped alert).
const HAND_OFF: usize = 4096;

/// What the responder did during a run.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Audit records by action and decision.
    pub counts: BTreeMap<(ResponseAction, Decision), u64>,
    /// Actions still queued at the end.
    pub queued: usize,
}

/// The responder on its own thread (with a single-threaded Tokio runtime for its HTTP calls).
pub struct ResponderThread {
    tx: Option<SyncSender<Alert>>,
    join: JoinHandle<Result<RunReport, RespondError>>,
}

impl ResponderThread {
    /// Starts `responder`. With `state_file`, the state is restored from it first (if it
    /// exists) and saved to it at the end, so that a second run repeats no action.
    pub fn spawn(
        mut responder: Responder,
        state_file: Option<PathBuf>,
    ) -> Result<ResponderThread, RespondError> {
        if let Some(path) = &state_file {
            match std::fs::read(path) {
                Ok(bytes) => responder.restore(&bytes)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(state_io(path, e)),
            }
        }
        let (tx, rx) = sync_channel::<Alert>(HAND_OFF);
        let join = std::thread::Builder::new()
            .name("respond".to_owned())
            .spawn(move || run(responder, rx, state_file))
            .map_err(|e| state_io(Path::new("<respond thread>"), e))?;
        Ok(ResponderThread { tx: Some(tx), join })
    }

    /// Wraps `inner` so that its alerts also go to the responder.
    pub fn tee<S: Sink>(&self, inner: S) -> TeeSink<S> {
        TeeSink {
            inner,
            tap: self.tx.clone(),
        }
    }

    /// Waits for the responder to finish the alerts handed to it (the [`TeeSink`] must have
    /// been dropped or unwrapped) and saves its state.
    pub fn finish(mut self) -> Result<RunReport, RespondError> {
        self.tx = None;
        match self.join.join() {
            Ok(result) => result,
            Err(_) => Err(RespondError::Config {
                key: "respond",
                message: "the responder thread panicked".to_owned(),
            }),
        }
    }
}

fn state_io(path: &Path, e: std::io::Error) -> RespondError {
    RespondError::Store(crate::store::StoreError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn run(
    mut responder: Responder,
    rx: Receiver<Alert>,
    state_file: Option<PathBuf>,
) -> Result<RunReport, RespondError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| state_io(Path::new("<tokio runtime>"), e))?;
    let result = runtime.block_on(async {
        while let Ok(alert) = rx.recv() {
            responder.handle(&alert).await?;
        }
        responder.tick().await?;
        Ok::<(), RespondError>(())
    });
    // Save even after an error: what was done must not be done again.
    if let Some(path) = &state_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, responder.snapshot()?).map_err(|e| state_io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| state_io(path, e))?;
    }
    result?;
    Ok(RunReport {
        counts: responder.counts().clone(),
        queued: responder.queued(),
    })
}

/// A sink that also hands every alert to the responder.
pub struct TeeSink<S> {
    inner: S,
    tap: Option<SyncSender<Alert>>,
}

impl<S> TeeSink<S> {
    /// A sink that only passes alerts on (the responder is disabled).
    pub fn without_responder(inner: S) -> TeeSink<S> {
        TeeSink { inner, tap: None }
    }

    /// The wrapped sink; the responder gets no more alerts.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Sink> Sink for TeeSink<S> {
    fn alert(&mut self, alert: &Alert) -> Result<(), SinkError> {
        self.inner.alert(alert)?;
        if let Some(tap) = &self.tap
            && tap.send(alert.clone()).is_err()
        {
            // The responder stopped on an error (it reports it at the end): stop the run
            // rather than let alerts pass unanswered.
            return Err(SinkError {
                output: "responder".to_owned(),
                source: std::io::Error::other("the responder stopped; see its error"),
            });
        }
        Ok(())
    }

    fn dead_letter(&mut self, record: &DeadLetter) -> Result<(), SinkError> {
        self.inner.dead_letter(record)
    }

    fn late_event(&mut self, record: &LateEvent) -> Result<(), SinkError> {
        self.inner.late_event(record)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.inner.flush()
    }

    fn wants_events(&self) -> bool {
        self.inner.wants_events()
    }

    fn event(&mut self, event: &AuthEvent) -> Result<(), SinkError> {
        self.inner.event(event)
    }
}
