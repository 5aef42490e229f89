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
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Alerts waiting for the responder at most; beyond it the pipeline's sink waits
/// (backpressure, never a dropped alert).
const HAND_OFF: usize = 4096;

/// Handled alerts kept in the inbox at most before the state is taken again (see [`Inbox`]).
const FOLD_EVERY: usize = 64;

/// How long a live responder may go on at the end of a run to finish the alerts it holds; then
/// the call in hand is abandoned, and what is left waits in the saved inbox for the next start.
const STOP_GRACE: Duration = Duration::from_secs(5);

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
    /// The live runtime's checkpoint store, shared with the [`TeeSink`] (see [`Shared`]).
    Saver,
}

/// The checkpoint part holding the alerts handed to a live responder and not yet reflected in
/// its state part ([`STATE_PART`]), oldest first, as a JSON array; absent when there are none.
pub const INBOX_PART: &str = "respond.inbox";

/// The alerts a live responder had not finished when its state was saved ([`INBOX_PART`]), to
/// hand to [`ResponderThread::spawn_live`] after restoring the responder from the same parts.
pub fn saved_inbox(parts: &StateParts) -> Result<Vec<Alert>, CheckpointError> {
    match parts.parts.get(INBOX_PART) {
        None => Ok(Vec::new()),
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| CheckpointError::Restore {
            part: INBOX_PART.to_owned(),
            message: e.to_string(),
        }),
    }
}

/// The alerts between the pipeline and a live responder, with the state they apply to.
///
/// A checkpoint must save a responder state that accounts for every alert before it, and it
/// must not wait for an identity provider to get one: a provider that hangs would hold the
/// commit (and detection with it) for its timeouts and retries, longer than the transaction
/// may stay open. So the checkpoint saves `state` together with the alerts not yet folded
/// into it; a restart restores the state and handles those alerts first. The responder thread
/// takes `state` again between alerts (never in the middle of one), after each decision and
/// at least every [`FOLD_EVERY`] alerts, and drops the alerts it then reflects.
struct Inbox {
    /// The responder's snapshot, reflecting every alert handed over before `alerts`.
    state: Vec<u8>,
    /// Alerts handed over and not reflected in `state`, oldest first. The first `handled` have
    /// been handled since; handling them again after a restart decides nothing new (they led
    /// to no decision, or their decision is in the state of a later fold).
    alerts: VecDeque<Alert>,
    handled: usize,
    /// The run is ending: no more alerts come.
    closed: bool,
    /// The thread has stopped (its error, if any, is reported by [`ResponderThread::finish`]).
    stopped: bool,
}

impl Inbox {
    fn waiting(&self) -> usize {
        self.alerts.len() - self.handled
    }

    /// What a checkpoint saves: the state and the alerts still to reflect in it.
    fn parts(&self) -> Result<StateParts, String> {
        let mut parts = StateParts::default();
        parts
            .parts
            .insert(STATE_PART.to_owned(), self.state.clone());
        if !self.alerts.is_empty() {
            let bytes = serde_json::to_vec(&self.alerts)
                .map_err(|e| format!("encoding the responder's inbox: {e}"))?;
            parts.parts.insert(INBOX_PART.to_owned(), bytes);
        }
        Ok(parts)
    }
}

/// Where a live responder's state goes, and what went there last.
struct SaverSlot {
    saver: Box<dyn StateSaver>,
    last: Option<StateParts>,
}

/// What the pipeline's sink and the responder thread share.
struct Shared {
    inbox: Mutex<Inbox>,
    /// Signalled whenever the inbox changes (alerts in or out, closed, stopped).
    changed: Condvar,
    /// A live responder's saver. Locked before `inbox`, so that saves go out in the order
    /// their contents were taken: a slower save of an older inbox never overwrites a newer one.
    saver: Option<Mutex<SaverSlot>>,
    /// Abandons the call in hand (see [`STOP_GRACE`]).
    abandon: tokio::sync::Notify,
}

impl Shared {
    /// No more alerts come: the thread finishes what it holds, then ends.
    fn close(&self) {
        self.inbox().closed = true;
        self.changed.notify_all();
    }

    /// Waits for the inbox to change, until `deadline` (none: for ever); `true` with the guard
    /// once the deadline has passed.
    fn wait<'a>(
        &self,
        inbox: MutexGuard<'a, Inbox>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, Inbox>, bool) {
        let Some(deadline) = deadline else {
            let inbox = self
                .changed
                .wait(inbox)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            return (inbox, false);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (inbox, true);
        }
        let inbox = self
            .changed
            .wait_timeout(inbox, left)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
        (inbox, false)
    }

    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        // A panic while holding the lock leaves plain data behind, still consistent: every
        // change under it is a single push, drain or assignment.
        self.inbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Saves the state and the inbox unless they are what was saved last. A save is a file
    /// write with its `fsync`s, or an object PUT; most checkpoints carry no alert that changes
    /// the state, and their commit then waits for no write.
    fn save(&self) -> Result<(), String> {
        let Some(slot) = &self.saver else {
            return Ok(());
        };
        let mut slot = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let parts = self.inbox().parts()?;
        if slot.last.as_ref() == Some(&parts) {
            return Ok(());
        }
        slot.saver
            .save(&parts)
            .map_err(|message| format!("saving the responder state: {message}"))?;
        slot.last = Some(parts);
        Ok(())
    }
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
    shared: Arc<Shared>,
    /// Taken by [`ResponderThread::finish`].
    join: Option<JoinHandle<Result<RunReport, RespondError>>>,
    counts: SharedCounts,
    /// Live (`spawn_live`): [`ResponderThread::finish`] gives the thread [`STOP_GRACE`], not
    /// for ever.
    live: bool,
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
        Self::start(responder, Vec::new(), Persist::File(state_file), None, None)
    }

    /// Starts `responder` (already restored by the caller, with the alerts of its saved inbox,
    /// [`saved_inbox`], handled first) beside a live pipeline: `tick` is called every
    /// `tick_every` so queued actions go out as tokens come back, and the state goes to
    /// `saver` at every checkpoint the [`TeeSink`] passes on and after every decision. A
    /// checkpoint never waits for the responder (see [`INBOX_PART`]).
    pub fn spawn_live(
        mut responder: Responder,
        inbox: Vec<Alert>,
        saver: Box<dyn StateSaver>,
        tick_every: Duration,
    ) -> Result<ResponderThread, RespondError> {
        // The state is saved after every action, not after a whole drain of the queue.
        responder.act_one_at_a_time();
        let saver = SaverSlot { saver, last: None };
        Self::start(
            responder,
            inbox,
            Persist::Saver,
            Some(saver),
            Some(tick_every),
        )
    }

    fn start(
        responder: Responder,
        inbox: Vec<Alert>,
        persist: Persist,
        saver: Option<SaverSlot>,
        tick_every: Option<Duration>,
    ) -> Result<ResponderThread, RespondError> {
        let live = saver.is_some();
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox {
                state: responder.snapshot()?,
                alerts: inbox.into(),
                handled: 0,
                closed: false,
                stopped: false,
            }),
            changed: Condvar::new(),
            saver: saver.map(Mutex::new),
            abandon: tokio::sync::Notify::new(),
        });
        let counts = SharedCounts::new(std::sync::Mutex::new(every_pair(responder.counts())));
        let published = SharedCounts::clone(&counts);
        let theirs = Arc::clone(&shared);
        let join = std::thread::Builder::new()
            .name("respond".to_owned())
            .spawn(move || {
                let _stopped = MarkStopped(Arc::clone(&theirs));
                run(responder, &theirs, persist, tick_every, &published)
            })
            .map_err(|e| state_io(Path::new("<respond thread>"), e))?;
        Ok(ResponderThread {
            shared,
            join: Some(join),
            counts,
            live,
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
            tap: Some(Arc::clone(&self.shared)),
        }
    }

    /// Ends the responder (the [`TeeSink`] must have been dropped or unwrapped) and saves its
    /// state. A replay's responder finishes every alert handed to it. A live one gets
    /// [`STOP_GRACE`] to finish the alerts it holds; then the call in hand is abandoned, and
    /// the alerts not finished stay in the saved inbox for the next start (the call may have
    /// reached the provider: the next start makes it again, as after a crash).
    pub fn finish(mut self) -> Result<RunReport, RespondError> {
        self.shared.close();
        if self.live {
            let deadline = Some(Instant::now() + STOP_GRACE);
            let mut inbox = self.shared.inbox();
            while !inbox.stopped {
                let (now, passed) = self.shared.wait(inbox, deadline);
                inbox = now;
                if passed {
                    break;
                }
            }
            if !inbox.stopped {
                tracing::warn!(
                    waiting = inbox.waiting(),
                    "the responder did not finish within {STOP_GRACE:?}: its call in hand is \
                     abandoned, and the alerts it holds wait in its saved state"
                );
            }
            drop(inbox);
            // A permit is kept if no call is in hand yet: the next one ends at once.
            self.shared.abandon.notify_one();
        }
        match self.join.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            None | Some(Err(_)) => Err(RespondError::Config {
                key: "respond",
                message: "the responder thread panicked".to_owned(),
            }),
        }
    }
}

impl Drop for ResponderThread {
    /// Without [`ResponderThread::finish`] (an early return), the thread still ends: it
    /// finishes what it holds and stops, unjoined.
    fn drop(&mut self) {
        self.shared.close();
    }
}

fn state_io(path: &Path, e: std::io::Error) -> RespondError {
    RespondError::Store(crate::store::StoreError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Marks the thread stopped however it ends, a panic included: the sink waiting for room in the
/// inbox, or a checkpoint, must learn that no one will take its alerts (with the channel of
/// before, a dead thread's receiver told the sender so by itself).
struct MarkStopped(Arc<Shared>);

impl Drop for MarkStopped {
    fn drop(&mut self) {
        self.0.inbox().stopped = true;
        self.0.changed.notify_all();
    }
}

/// What the thread does next.
enum Next {
    Alert(Box<Alert>),
    Tick,
    End,
}

/// The thread's side of [`Shared`]: it takes the alerts, folds its state into the inbox,
/// saves, and publishes its counts.
struct Keeper<'a> {
    shared: &'a Shared,
    persist: Persist,
    published: &'a SharedCounts,
}

impl Keeper<'_> {
    /// Waits for the next alert, up to `tick` (none: for ever).
    fn next(&self, tick: Option<Duration>) -> Next {
        let mut inbox = self.shared.inbox();
        let deadline = tick.map(|t| Instant::now() + t);
        loop {
            if inbox.waiting() > 0 {
                let alert = inbox.alerts[inbox.handled].clone();
                return Next::Alert(Box::new(alert));
            }
            if inbox.closed {
                return Next::End;
            }
            let (now, passed) = self.shared.wait(inbox, deadline);
            if passed {
                return Next::Tick;
            }
            inbox = now;
        }
    }

    /// The alert taken by [`Keeper::next`] is handled; `decided`: it led to an audit record.
    fn handled(&mut self, responder: &Responder, decided: bool) -> Result<(), RespondError> {
        let fold = {
            let mut inbox = self.shared.inbox();
            if matches!(self.persist, Persist::Saver) {
                inbox.handled += 1;
                decided || inbox.handled >= FOLD_EVERY || inbox.waiting() == 0
            } else {
                // A replay saves no inbox: the alert is done with.
                inbox.alerts.pop_front();
                false
            }
        };
        self.shared.changed.notify_all();
        if fold {
            self.fold(responder)?;
        }
        if decided {
            self.decided(responder)?;
        }
        Ok(())
    }

    /// Takes the state again and drops the alerts it now reflects.
    fn fold(&self, responder: &Responder) -> Result<(), RespondError> {
        if !matches!(self.persist, Persist::Saver) {
            return Ok(());
        }
        let state = responder.snapshot()?;
        {
            let mut inbox = self.shared.inbox();
            inbox.state = state;
            let handled = inbox.handled;
            inbox.alerts.drain(..handled);
            inbox.handled = 0;
        }
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Saves the state where it is kept (unless unchanged since saved last).
    fn save(&mut self, responder: &Responder) -> Result<(), RespondError> {
        match &self.persist {
            Persist::Saver => {
                self.fold(responder)?;
                self.shared.save().map_err(|message| RespondError::Config {
                    key: "checkpoint.dir",
                    message,
                })
            }
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

    /// One alert: queued actions go first, at the alert's time, as `handle` alone would take
    /// them; here one at a time, with the state saved after each.
    async fn alert(
        &mut self,
        responder: &mut Responder,
        alert: &Alert,
    ) -> Result<(), RespondError> {
        responder.observe(alert);
        self.drain(responder).await?;
        let decided = !responder.handle(alert).await?.is_empty();
        self.handled(responder, decided)
    }
}

/// Replaces the state file whole and durably, so that a crash or power loss leaves the old
/// state or the new one: an empty or stale file after the actions it records would let a
/// replay run again repeat them.
fn save_file(responder: &Responder, path: &Path) -> Result<(), RespondError> {
    crate::store::write_durably(path, &responder.snapshot()?).map_err(|e| state_io(path, e))
}

/// What ended a step: done, or abandoned at the end of a live run.
enum Step {
    Done,
    Abandoned,
}

fn run(
    mut responder: Responder,
    shared: &Shared,
    persist: Persist,
    tick_every: Option<Duration>,
    published: &SharedCounts,
) -> Result<RunReport, RespondError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| state_io(Path::new("<tokio runtime>"), e))?;
    let mut keeper = Keeper {
        shared,
        persist,
        published,
    };
    let result: Result<Step, RespondError> = runtime.block_on(async {
        let mut last_tick = Instant::now();
        loop {
            let next =
                keeper.next(tick_every.map(|every| every.saturating_sub(last_tick.elapsed())));
            let step = async {
                match &next {
                    Next::Alert(alert) => keeper.alert(&mut responder, alert).await?,
                    Next::Tick => {}
                    Next::End => keeper.drain(&mut responder).await?,
                }
                if tick_every.is_some_and(|every| last_tick.elapsed() >= every) {
                    last_tick = Instant::now();
                    keeper.drain(&mut responder).await?;
                }
                Ok::<(), RespondError>(())
            };
            // The end of a live run abandons the call in hand (`finish`); the state saved last
            // and the alerts after it are what the next start resumes from.
            let step = tokio::select! {
                done = step => {
                    done?;
                    Step::Done
                }
                () = shared.abandon.notified() => Step::Abandoned,
            };
            match (step, next) {
                (Step::Abandoned, _) => return Ok(Step::Abandoned),
                (Step::Done, Next::End) => return Ok(Step::Done),
                (Step::Done, _) => {}
            }
        }
    });
    match result {
        // Nothing to save: the responder may be halfway through an alert.
        Ok(Step::Abandoned) => {}
        // Save even after an error: what was done must not be done again.
        Ok(Step::Done) | Err(_) => keeper.save(&responder)?,
    }
    let _: Step = result?;
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
    tap: Option<Arc<Shared>>,
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
        if let Some(tap) = &self.tap {
            let mut inbox = tap.inbox();
            while !inbox.stopped && inbox.waiting() >= HAND_OFF {
                inbox = tap.wait(inbox, None).0;
            }
            if inbox.stopped {
                // The responder stopped on an error (it reports it at the end): stop the run
                // rather than let alerts pass unanswered.
                return Err(stopped());
            }
            inbox.alerts.push_back(alert.clone());
            drop(inbox);
            tap.changed.notify_all();
        }
        Ok(())
    }

    /// The responder's state joins the checkpoint: its state and the alerts it has not yet
    /// reflected in it are saved before the inner sink makes the checkpoint durable, so a
    /// committed input position never has a responder state older than it. The responder is
    /// not waited for (see [`INBOX_PART`]).
    fn checkpoint(&mut self, checkpoint: Checkpoint) -> Result<(), SinkError> {
        if let Some(tap) = &self.tap {
            let saved = if tap.inbox().stopped {
                Err("the responder stopped; see its error".to_owned())
            } else {
                tap.save()
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

    /// A responder thread that panics leaves no sink waiting for ever: a full inbox's sender is
    /// told the responder stopped, and the run ends with its error.
    #[test]
    fn a_thread_that_panics_is_marked_stopped_and_the_sink_is_told() {
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox {
                state: Vec::new(),
                alerts: VecDeque::new(),
                handled: 0,
                closed: false,
                stopped: false,
            }),
            changed: Condvar::new(),
            saver: None,
            abandon: tokio::sync::Notify::new(),
        });
        let waiting = alert("mfa_fatigue_success", "kenji@example.co.jp");
        shared
            .inbox()
            .alerts
            .extend(std::iter::repeat_n(waiting.clone(), HAND_OFF));
        let theirs = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let _stopped = MarkStopped(theirs);
            std::thread::sleep(Duration::from_millis(50));
            panic!("a responder bug");
        });
        let mut tee = TeeSink {
            inner: JsonLinesSink::create(None, None, None).unwrap(),
            tap: Some(Arc::clone(&shared)),
        };
        // The inbox is full: the sink waits, until the panic marks the thread stopped.
        assert!(tee.alert(&waiting).is_err());
        assert!(thread.join().is_err());
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
