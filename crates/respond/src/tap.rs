//! Running the responder beside the pipeline: a sink that passes every alert on to the
//! pipeline's own sink and to a responder thread, so that slow identity-provider calls never
//! hold up alert output more than the bounded hand-off allows.

use crate::audit::Decision;
use crate::responder::{RespondError, Responder};
use authwatch_event::{Alert, AuthEvent};
use authwatch_pipeline::config::ResponseAction;
use authwatch_pipeline::{
    Checkpoint, CheckpointError, Checkpointed, DeadLetter, LateEvent, Sink, SinkError, StateParts,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// The responder's part of a checkpoint.
pub const STATE_PART: &str = "respond";

impl Checkpointed for Responder {
    fn name(&self) -> &str {
        STATE_PART
    }

    fn snapshot(&self) -> Result<Vec<u8>, CheckpointError> {
        Responder::snapshot(self).map_err(|e| CheckpointError::Snapshot {
            part: STATE_PART.to_owned(),
            message: e.to_string(),
        })
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), CheckpointError> {
        Responder::restore(self, bytes).map_err(|e| CheckpointError::Restore {
            part: STATE_PART.to_owned(),
            message: e.to_string(),
        })
    }
}

/// Where a live responder keeps its state (the Kafka runtime's checkpoint store). The state is
/// global to the process, not per input partition.
pub trait StateSaver: Send {
    /// Replaces the saved state with `state`, durably (a crash leaves the old or the new whole).
    fn save(&mut self, state: &StateParts) -> Result<(), String>;
}

/// How the responder thread keeps its state.
enum Persist {
    /// Restored before; written after every alert that led to an audit record and at the end
    /// (replay). Written as each decision is made, not only at the end, so that a replay
    /// interrupted (Ctrl-C, a crash) and run again repeats no action it already took.
    File(Option<PathBuf>),
    /// Written after every alert or tick that led to an audit record, at every checkpoint and
    /// at the end, each time unless it is unchanged since last written: the saved state is
    /// never older than the actions taken, so a restart that processes input again after the
    /// last checkpoint finds those accounts' incidents and repeats no action.
    Saver(Box<dyn StateSaver>),
}

/// What the responder thread is handed, in stream order.
enum Msg {
    Alert(Box<Alert>),
    /// A checkpoint barrier: save the state reflecting every alert before it, then answer.
    Checkpoint(SyncSender<Result<(), String>>),
}

/// Running totals of decisions by action, shared with a metrics exporter: every (action,
/// decision) pair of [`ACTIONS`] × [`DECISIONS`] from the start, zeros included.
pub type SharedCounts =
    std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<(ResponseAction, Decision), u64>>>;

/// Every response action. The published counts hold each of them from the start, so that an
/// exporter's series exist at 0 before their first event: a Prometheus `rate()` or
/// `increase()` ignores a series' first sample, and would miss the first failed or queued
/// action if its series appeared only with it.
pub const ACTIONS: [ResponseAction; 4] = [
    ResponseAction::Suspend,
    ResponseAction::RevokeSessions,
    ResponseAction::ResetMfa,
    ResponseAction::Notify,
];

/// Every decision (the `result` label of `authwatch_response_actions_total`); see [`ACTIONS`].
pub const DECISIONS: [Decision; 9] = [
    Decision::Executed,
    Decision::DryRun,
    Decision::AlreadyDone,
    Decision::Refused,
    Decision::Duplicate,
    Decision::Queued,
    Decision::PendingApproval,
    Decision::Rejected,
    Decision::Failed,
];

/// Where each action stands in [`ACTIONS`]. The match names every variant, so a new action does
/// not compile until it gets a slot here: give it the next one and list it in [`ACTIONS`] (the
/// check below rejects a list out of step with the slots).
const fn action_slot(action: ResponseAction) -> usize {
    match action {
        ResponseAction::Suspend => 0,
        ResponseAction::RevokeSessions => 1,
        ResponseAction::ResetMfa => 2,
        ResponseAction::Notify => 3,
    }
}

/// Where each decision stands in [`DECISIONS`]; as [`action_slot`].
const fn decision_slot(decision: Decision) -> usize {
    match decision {
        Decision::Executed => 0,
        Decision::DryRun => 1,
        Decision::AlreadyDone => 2,
        Decision::Refused => 3,
        Decision::Duplicate => 4,
        Decision::Queued => 5,
        Decision::PendingApproval => 6,
        Decision::Rejected => 7,
        Decision::Failed => 8,
    }
}

// Each list holds every variant once, in slot order.
const _: () = {
    let mut i = 0;
    while i < ACTIONS.len() {
        assert!(
            action_slot(ACTIONS[i]) == i,
            "ACTIONS is out of step with action_slot"
        );
        i += 1;
    }
    let mut i = 0;
    while i < DECISIONS.len() {
        assert!(
            decision_slot(DECISIONS[i]) == i,
            "DECISIONS is out of step with decision_slot"
        );
        i += 1;
    }
};

/// `counts` with every other (action, decision) pair at 0.
fn every_pair(
    counts: &BTreeMap<(ResponseAction, Decision), u64>,
) -> BTreeMap<(ResponseAction, Decision), u64> {
    let mut all: BTreeMap<_, _> = ACTIONS
        .iter()
        .flat_map(|&a| DECISIONS.iter().map(move |&d| ((a, d), 0)))
        .collect();
    all.extend(counts.iter().map(|(&pair, &n)| (pair, n)));
    all
}

/// The responder on its own thread (with a single-threaded Tokio runtime for its HTTP calls).
pub struct ResponderThread {
    tx: Option<SyncSender<Msg>>,
    join: JoinHandle<Result<RunReport, RespondError>>,
    counts: SharedCounts,
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
        // The state is saved after every action, not after a whole drain of the queue.
        responder.act_one_at_a_time();
        Self::start(responder, Persist::File(state_file), None)
    }

    /// Starts `responder` (already restored by the caller) beside a live pipeline: `tick` is
    /// called every `tick_every` so queued actions go out as tokens come back, and the state
    /// goes to `saver` at every checkpoint the [`TeeSink`] passes on and after every decision.
    pub fn spawn_live(
        mut responder: Responder,
        saver: Box<dyn StateSaver>,
        tick_every: Duration,
    ) -> Result<ResponderThread, RespondError> {
        // The state is saved after every action, not after a whole drain of the queue.
        responder.act_one_at_a_time();
        Self::start(responder, Persist::Saver(saver), Some(tick_every))
    }

    fn start(
        responder: Responder,
        persist: Persist,
        tick_every: Option<Duration>,
    ) -> Result<ResponderThread, RespondError> {
        let (tx, rx) = sync_channel::<Msg>(HAND_OFF);
        let counts = SharedCounts::new(std::sync::Mutex::new(every_pair(responder.counts())));
        let published = SharedCounts::clone(&counts);
        let join = std::thread::Builder::new()
            .name("respond".to_owned())
            .spawn(move || run(responder, rx, persist, tick_every, &published))
            .map_err(|e| state_io(Path::new("<respond thread>"), e))?;
        Ok(ResponderThread {
            tx: Some(tx),
            join,
            counts,
        })
    }

    /// The decisions so far by action and outcome, updated after each decision (for metrics).
    /// Every pair of [`ACTIONS`] × [`DECISIONS`] is there from the start, zeros included.
    pub fn counts(&self) -> SharedCounts {
        SharedCounts::clone(&self.counts)
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

/// Saves the responder's state unless it is the state saved last (`last`, updated). A save is
/// a file write with its `fsync`s, or an object PUT, and the checkpoint's commit, with the
/// alerts in it, waits for it: most checkpoints carry no alert that changes the state.
fn save(
    responder: &Responder,
    saver: &mut dyn StateSaver,
    last: &mut Option<StateParts>,
) -> Result<(), RespondError> {
    let mut parts = StateParts::default();
    parts.add(responder).map_err(|e| RespondError::Config {
        key: "checkpoint",
        message: e.to_string(),
    })?;
    if last.as_ref() == Some(&parts) {
        return Ok(());
    }
    saver.save(&parts).map_err(|message| RespondError::Config {
        key: "checkpoint.dir",
        message: format!("saving the responder state: {message}"),
    })?;
    *last = Some(parts);
    Ok(())
}

/// What the responder thread saves its state with, and the counts it publishes.
struct Keeper<'a> {
    persist: Persist,
    last_saved: Option<StateParts>,
    published: &'a SharedCounts,
}

impl Keeper<'_> {
    /// Saves the state where it is kept (unless unchanged since saved last).
    fn save(&mut self, responder: &Responder) -> Result<(), RespondError> {
        match &mut self.persist {
            Persist::Saver(saver) => save(responder, saver.as_mut(), &mut self.last_saved),
            Persist::File(Some(path)) => save_file(responder, path),
            Persist::File(None) => Ok(()),
        }
    }

    /// After a call that decided something: the counts are published and the state saved.
    fn decided(&mut self, responder: &Responder) -> Result<(), RespondError> {
        if let Ok(mut counts) = self.published.lock() {
            *counts = every_pair(responder.counts());
        }
        self.save(responder)
    }

    /// Lets queued actions out while tokens allow, one per `tick`, saving after each: a crash
    /// repeats at most the action in flight.
    async fn drain(&mut self, responder: &mut Responder) -> Result<(), RespondError> {
        while !responder.tick().await?.is_empty() {
            self.decided(responder)?;
        }
        Ok(())
    }
}

/// Replaces the state file whole and durably, so that a crash or power loss leaves the old
/// state or the new one: an empty or stale file after the actions it records would let a
/// replay run again repeat them.
fn save_file(responder: &Responder, path: &Path) -> Result<(), RespondError> {
    crate::store::write_durably(path, &responder.snapshot()?).map_err(|e| state_io(path, e))
}

fn run(
    mut responder: Responder,
    rx: Receiver<Msg>,
    persist: Persist,
    tick_every: Option<Duration>,
    published: &SharedCounts,
) -> Result<RunReport, RespondError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| state_io(Path::new("<tokio runtime>"), e))?;
    let mut keeper = Keeper {
        persist,
        // The state saved last (none yet: the first save writes, even a state just restored).
        last_saved: None,
        published,
    };
    let result = runtime.block_on(async {
        let mut last_tick = Instant::now();
        loop {
            let msg = match tick_every {
                Some(every) => match rx.recv_timeout(every.saturating_sub(last_tick.elapsed())) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                },
            };
            match msg {
                Some(Msg::Alert(alert)) => {
                    // Queued actions go first, at the alert's time, as `handle` alone would
                    // take them; here one at a time, with the state saved after each.
                    responder.observe(&alert);
                    keeper.drain(&mut responder).await?;
                    if !responder.handle(&alert).await?.is_empty() {
                        keeper.decided(&responder)?;
                    }
                }
                Some(Msg::Checkpoint(ack)) => {
                    // Only a partitioned (Kafka) run sends checkpoints.
                    let saved = keeper.save(&responder);
                    // The sink may have stopped waiting (the run is ending): nothing to tell.
                    let _ = ack.send(saved.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                    saved?;
                }
                None => {}
            }
            if tick_every.is_some_and(|every| last_tick.elapsed() >= every) {
                last_tick = Instant::now();
                keeper.drain(&mut responder).await?;
            }
        }
        keeper.drain(&mut responder).await?;
        Ok::<(), RespondError>(())
    });
    // Save even after an error: what was done must not be done again.
    keeper.save(&responder)?;
    result?;
    Ok(RunReport {
        counts: responder.counts().clone(),
        queued: responder.queued(),
    })
}

fn stopped() -> SinkError {
    SinkError {
        output: "responder".to_owned(),
        source: std::io::Error::other("the responder stopped; see its error"),
    }
}

/// A sink that also hands every alert to the responder.
pub struct TeeSink<S> {
    inner: S,
    tap: Option<SyncSender<Msg>>,
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
            && tap.send(Msg::Alert(Box::new(alert.clone()))).is_err()
        {
            // The responder stopped on an error (it reports it at the end): stop the run
            // rather than let alerts pass unanswered.
            return Err(stopped());
        }
        Ok(())
    }

    /// The responder's state joins the checkpoint: it is saved (reflecting every alert before
    /// the barrier) before the inner sink makes the checkpoint durable, so a committed input
    /// position never has a responder state older than it.
    fn checkpoint(&mut self, checkpoint: Checkpoint) -> Result<(), SinkError> {
        if let Some(tap) = &self.tap {
            let (ack, answer) = sync_channel(1);
            let saved = if tap.send(Msg::Checkpoint(ack)).is_err() {
                Err("the responder stopped; see its error".to_owned())
            } else {
                answer
                    .recv()
                    .unwrap_or_else(|_| Err("the responder stopped; see its error".to_owned()))
            };
            if let Err(message) = saved {
                checkpoint.acknowledge(Err(message.clone()));
                return Err(SinkError {
                    output: "responder".to_owned(),
                    source: std::io::Error::other(message),
                });
            }
        }
        self.inner.checkpoint(checkpoint)
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

    fn route(
        &mut self,
        event: &AuthEvent,
        origin: authwatch_pipeline::Origin,
        progress: i64,
    ) -> Result<(), SinkError> {
        self.inner.route(event, origin, progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ResponseClock;
    use authwatch_event::{CauseClass, Entity, Severity, Timestamp, Window};
    use authwatch_pipeline::JsonLinesSink;
    use authwatch_pipeline::config::RespondConfig;

    const T0: i64 = 1_767_225_600_000;

    fn alert(rule: &str, account: &str) -> Alert {
        Alert {
            alert_id: Alert::make_id(rule, 1, account, T0),
            rule_id: rule.to_owned(),
            rule_version: 1,
            category: rule.to_owned(),
            cause_class: CauseClass::Attack,
            severity: Severity::Critical,
            attack_technique: vec!["T1621".to_owned()],
            entity: Entity {
                user: Some(account.into()),
                ..Entity::default()
            },
            window: Window {
                start: Timestamp(T0 - 600_000),
                end: Timestamp(T0),
            },
            metrics: BTreeMap::new(),
            evidence: vec![],
            observed: Default::default(),
            first_seen: Timestamp(T0 - 600_000),
            last_seen: Timestamp(T0),
            summary: Default::default(),
            steps: Default::default(),
            related: vec![],
        }
    }

    /// The published counts hold every (action, decision) pair from the start, at 0, and keep
    /// the pairs without a decision at 0 after decisions: an exporter's series then exist
    /// before their first event, which Prometheus' `rate()` would otherwise not see.
    #[test]
    fn every_action_and_decision_is_published_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        // Dry run without a target: decisions are made and counted, nothing is called.
        let config = RespondConfig {
            enabled: true,
            state_dir: dir.path().join("state"),
            ..RespondConfig::default()
        };
        let responder = Responder::new(&config, ResponseClock::event_time(T0), Vec::new()).unwrap();
        let thread = ResponderThread::spawn(responder, None).unwrap();
        let counts = thread.counts();
        let every: Vec<(ResponseAction, Decision)> = ACTIONS
            .iter()
            .flat_map(|&a| DECISIONS.iter().map(move |&d| (a, d)))
            .collect();
        assert_eq!(every.len(), 36);
        {
            let start = counts.lock().unwrap();
            assert_eq!(start.keys().copied().collect::<Vec<_>>(), every);
            assert!(start.values().all(|&n| n == 0), "{start:?}");
        }

        let mut tee = thread.tee(JsonLinesSink::create(None, None, None).unwrap());
        tee.alert(&alert("mfa_fatigue_success", "kenji@example.co.jp"))
            .unwrap();
        drop(tee);
        let report = thread.finish().unwrap();
        assert!(!report.counts.is_empty(), "no decision: {report:?}");
        let after = counts.lock().unwrap();
        assert_eq!(after.keys().copied().collect::<Vec<_>>(), every);
        for (pair, n) in after.iter() {
            assert_eq!(
                *n,
                report.counts.get(pair).copied().unwrap_or(0),
                "{pair:?}"
            );
        }
    }

    #[test]
    fn the_lists_name_each_variant_once_by_its_record_name() {
        let actions: std::collections::BTreeSet<&str> =
            ACTIONS.iter().map(|a| a.as_str()).collect();
        assert_eq!(actions.len(), ACTIONS.len());
        let decisions: std::collections::BTreeSet<&str> =
            DECISIONS.iter().map(|d| d.as_str()).collect();
        assert_eq!(decisions.len(), DECISIONS.len());
    }
}
