//! Health: what `/startupz`, `/readyz` and `/livez` answer.
//!
//! - started: the runtime restored its state (checkpoint, detector, profiles) and began;
//! - ready: started, and the consumer holds partitions (an instance without partitions, or one
//!   in a rebalance, has nothing to do and is not ready);
//! - live: no watched stage is stuck. A stage is stuck when it holds work (`busy > 0`) and its
//!   progress counter has not moved for longer than the stall timeout. A stage waiting for input,
//!   or for room downstream, holds no work: backpressure from a slow stage is not a failure of
//!   the stages behind it, and an idle pipeline is live.
//!
//! Stalls are found by sampling each stage's counters (the telemetry thread samples once a
//! second, and every probe samples too), so a stall is reported between one stall timeout and
//! one timeout plus a sampling interval after it began.

use authwatch_pipeline::{Metrics, Stage};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A stage's work in hand and progress, as read by a [`Health`] watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StageState {
    /// Units of work the stage holds now (batches being processed, requests in flight).
    pub busy: u64,
    /// A counter that moves whenever the stage makes progress.
    pub progress: u64,
}

type Probe = Box<dyn Fn() -> StageState + Send + Sync>;
type Flag = Box<dyn Fn() -> bool + Send + Sync>;

struct Watch {
    name: String,
    probe: Probe,
    last_progress: u64,
    /// While the stage holds work: when it was last seen making progress (or taking the work).
    stalled_since: Option<Instant>,
}

struct Inner {
    /// Restore has finished once: start-up is over for good.
    started: AtomicBool,
    /// The state of what is assigned is restored now (false while a new assignment restores).
    restored: AtomicBool,
    assigned: AtomicBool,
    /// Read instead of `restored` and `assigned` when set (see [`Health::follow`]).
    followed: Mutex<Option<(Flag, Flag)>>,
    stall_timeout: Duration,
    watches: Mutex<Vec<Watch>>,
}

/// The health state the runtime updates and the probes read. Cheap to clone (shared).
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("started", &self.is_started())
            .field("restored", &self.is_restored())
            .field("assigned", &self.is_assigned())
            .field("stall_timeout", &self.inner.stall_timeout)
            .finish_non_exhaustive()
    }
}

/// One probe's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// Whether the probe passes (HTTP 200) or fails (HTTP 503).
    pub ok: bool,
    /// Why, for the response body and logs.
    pub detail: String,
}

impl ProbeResult {
    fn new(ok: bool, detail: impl Into<String>) -> Self {
        ProbeResult {
            ok,
            detail: detail.into(),
        }
    }
}

impl Health {
    /// Not started, not assigned, nothing watched; `stall_timeout` is how long a stage may hold
    /// work without progress before the pipeline counts as stuck.
    pub fn new(stall_timeout: Duration) -> Self {
        Health {
            inner: Arc::new(Inner {
                started: AtomicBool::new(false),
                restored: AtomicBool::new(false),
                assigned: AtomicBool::new(false),
                followed: Mutex::new(None),
                stall_timeout,
                watches: Mutex::new(Vec::new()),
            }),
        }
    }

    /// State restore finished and processing began: `/startupz` passes from now on.
    pub fn set_started(&self) {
        self.set_restored(true);
    }

    /// Whether the state of what is assigned is restored now (false while newly assigned
    /// partitions restore theirs). The first `true` also ends start-up.
    pub fn set_restored(&self, restored: bool) {
        self.inner.restored.store(restored, Ordering::Relaxed);
        if restored {
            self.inner.started.store(true, Ordering::Relaxed);
        }
    }

    /// Whether start-up is over: state was restored at least once.
    pub fn is_started(&self) -> bool {
        // A followed flag is polled: its first `true` ends start-up too.
        self.inner.started.load(Ordering::Relaxed) || self.is_restored()
    }

    /// Whether the state of what is assigned is restored now.
    pub fn is_restored(&self) -> bool {
        let restored = match self.followed().as_ref() {
            Some((restored, _)) => restored(),
            None => self.inner.restored.load(Ordering::Relaxed),
        };
        if restored {
            self.inner.started.store(true, Ordering::Relaxed);
        }
        restored
    }

    /// The consumer holds partitions (true) or none, e.g. after a revocation (false).
    pub fn set_assigned(&self, assigned: bool) {
        self.inner.assigned.store(assigned, Ordering::Relaxed);
    }

    /// Whether the consumer holds partitions.
    pub fn is_assigned(&self) -> bool {
        match self.followed().as_ref() {
            Some((_, assigned)) => assigned(),
            None => self.inner.assigned.load(Ordering::Relaxed),
        }
    }

    /// Reads "restored" and "assigned" from flags a runtime keeps itself (e.g. its own metrics
    /// struct) at every probe, instead of [`Health::set_restored`] and [`Health::set_assigned`].
    pub fn follow(
        &self,
        restored: impl Fn() -> bool + Send + Sync + 'static,
        assigned: impl Fn() -> bool + Send + Sync + 'static,
    ) {
        *self.followed() = Some((Box::new(restored), Box::new(assigned)));
    }

    fn followed(&self) -> MutexGuard<'_, Option<(Flag, Flag)>> {
        self.inner
            .followed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The stall timeout.
    pub fn stall_timeout(&self) -> Duration {
        self.inner.stall_timeout
    }

    /// Watches a stage through `probe` (called from the telemetry thread and the probes; keep it
    /// to a few atomic loads). A watch with the same name is replaced.
    pub fn watch(&self, name: &str, probe: impl Fn() -> StageState + Send + Sync + 'static) {
        let mut watches = self.watches();
        watches.retain(|w| w.name != name);
        watches.push(Watch {
            name: name.to_owned(),
            probe: Box::new(probe),
            last_progress: 0,
            stalled_since: None,
        });
    }

    /// A heartbeat for a stage that is not part of the pipeline (a consumer poll loop, a
    /// checkpoint writer, a responder queue), watched under `name`.
    pub fn heartbeat(&self, name: &str) -> Heartbeat {
        let beat = Heartbeat::default();
        let watched = beat.clone();
        self.watch(name, move || watched.state());
        beat
    }

    /// Watches the four pipeline stages (`source`, `normalize`, `detect`, `sink`) through their
    /// counters in `metrics`, replacing the watches of a previous pipeline.
    pub fn watch_pipeline(&self, metrics: &Arc<Metrics>) {
        self.watch_stages(None, metrics);
    }

    /// Watches the four stages of a pipeline named `name` (e.g. a repartitioned run's `ingest`
    /// stage, beside the pipeline of [`Health::watch_pipeline`]) as `<name>.source`,
    /// `<name>.normalize`, `<name>.detect` and `<name>.sink`, replacing the watches of a
    /// previous pipeline of that name (a restart), not those of another.
    pub fn watch_named_pipeline(&self, name: &str, metrics: &Arc<Metrics>) {
        self.watch_stages(Some(name), metrics);
    }

    fn watch_stages(&self, name: Option<&str>, metrics: &Arc<Metrics>) {
        for stage in Stage::ALL {
            let metrics = Arc::clone(metrics);
            // The watch name is the replacement key: a re-attach of the same pipeline (a
            // restart) replaces its watches instead of adding to them.
            let watch = match name {
                Some(name) => format!("{name}.{}", stage.as_str()),
                None => stage.as_str().to_owned(),
            };
            self.watch(&watch, move || {
                let s = metrics.stage(stage);
                StageState {
                    busy: s.busy.load(Ordering::Relaxed),
                    progress: s.progress.load(Ordering::Relaxed),
                }
            });
        }
    }

    /// Reads every watched stage and notes when a stall began.
    pub fn sample(&self, now: Instant) {
        for w in self.watches().iter_mut() {
            let state = (w.probe)();
            if state.busy == 0 {
                w.stalled_since = None;
            } else if state.progress != w.last_progress || w.stalled_since.is_none() {
                // Busy, and progress was last seen now: the clock starts here.
                w.stalled_since = Some(now);
            }
            w.last_progress = state.progress;
        }
    }

    /// `/livez`: fails while some stage is stuck (samples first).
    pub fn liveness(&self, now: Instant) -> ProbeResult {
        self.sample(now);
        let timeout = self.inner.stall_timeout;
        let mut stuck = String::new();
        for w in self.watches().iter() {
            if let Some(since) = w.stalled_since {
                let stalled = now.saturating_duration_since(since);
                if stalled > timeout {
                    let _ = writeln!(
                        stuck,
                        "stage {} holds work and made no progress for {}s (stall timeout {}s)",
                        w.name,
                        stalled.as_secs(),
                        timeout.as_secs()
                    );
                }
            }
        }
        if stuck.is_empty() {
            ProbeResult::new(true, "ok: no stage is stuck\n")
        } else {
            ProbeResult::new(false, stuck)
        }
    }

    /// `/readyz`: passes when the state is restored and the consumer holds partitions.
    pub fn readiness(&self) -> ProbeResult {
        match (self.is_restored(), self.is_assigned()) {
            (true, true) => ProbeResult::new(true, "ok: state restored, partitions assigned\n"),
            (false, _) => ProbeResult::new(false, "not ready: state restore not finished\n"),
            (true, false) => ProbeResult::new(false, "not ready: no input partitions assigned\n"),
        }
    }

    /// `/startupz`: passes once state restore finished.
    pub fn startup(&self) -> ProbeResult {
        if self.is_started() {
            ProbeResult::new(true, "ok: state restored\n")
        } else {
            ProbeResult::new(false, "starting: state restore not finished\n")
        }
    }

    fn watches(&self) -> MutexGuard<'_, Vec<Watch>> {
        // A probe that panicked leaves plain counters behind: keep using them.
        self.inner
            .watches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Work-in-hand and progress counters of one stage outside the pipeline; see
/// [`Health::heartbeat`]. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    busy: Arc<AtomicU64>,
    progress: Arc<AtomicU64>,
}

impl Heartbeat {
    /// Work on one unit begins (the stage now holds work).
    pub fn begin(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
    }

    /// Work on one unit ended (counts as progress).
    pub fn end(&self) {
        // Never below zero, even for an unmatched end.
        let _ = self
            .busy
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1));
        self.beat();
    }

    /// Progress without finishing a unit (a long job reporting that it moves).
    pub fn beat(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn state(&self) -> StageState {
        StageState {
            busy: self.busy.load(Ordering::Relaxed),
            progress: self.progress.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    #[test]
    fn startup_and_readiness_follow_restore_and_assignment() {
        let h = Health::new(TIMEOUT);
        assert!(!h.startup().ok);
        assert!(!h.readiness().ok);
        h.set_assigned(true);
        assert!(!h.readiness().ok, "assigned but not restored");
        assert!(h.readiness().detail.contains("restore"));
        h.set_started();
        assert!(h.startup().ok);
        assert!(h.readiness().ok);
        h.set_assigned(false);
        let r = h.readiness();
        assert!(!r.ok);
        assert!(r.detail.contains("partitions assigned"), "{}", r.detail);
        assert!(h.startup().ok, "startup stays passed");
    }

    #[test]
    fn a_new_assignment_restoring_is_not_ready_but_start_up_stays_over() {
        let h = Health::new(TIMEOUT);
        h.set_restored(true);
        h.set_assigned(true);
        assert!(h.readiness().ok);
        // A rebalance brought partitions whose state is being restored.
        h.set_restored(false);
        assert!(!h.readiness().ok);
        assert!(h.startup().ok);
        h.set_restored(true);
        assert!(h.readiness().ok);
    }

    #[test]
    fn followed_flags_are_read_at_every_probe() {
        let h = Health::new(TIMEOUT);
        let restored = Arc::new(AtomicBool::new(false));
        let assigned = Arc::new(AtomicBool::new(false));
        let (r, a) = (Arc::clone(&restored), Arc::clone(&assigned));
        h.follow(
            move || r.load(Ordering::Relaxed),
            move || a.load(Ordering::Relaxed),
        );
        assert!(!h.startup().ok);
        assigned.store(true, Ordering::Relaxed);
        assert!(!h.readiness().ok);
        restored.store(true, Ordering::Relaxed);
        assert!(h.startup().ok);
        assert!(h.readiness().ok);
        restored.store(false, Ordering::Relaxed);
        assert!(!h.readiness().ok);
        assert!(h.startup().ok, "start-up, once over, stays over");
    }

    #[test]
    fn a_stage_holding_work_without_progress_past_the_timeout_is_stuck() {
        let h = Health::new(TIMEOUT);
        let beat = h.heartbeat("consumer");
        let t0 = Instant::now();
        assert!(h.liveness(t0).ok, "idle is live");
        beat.begin();
        assert!(h.liveness(t0 + Duration::from_secs(1)).ok);
        assert!(
            h.liveness(t0 + Duration::from_secs(31)).ok,
            "30s is not over"
        );
        let r = h.liveness(t0 + Duration::from_secs(32));
        assert!(!r.ok);
        assert!(r.detail.contains("stage consumer"), "{}", r.detail);
        assert!(r.detail.contains("31s"), "{}", r.detail);
        // Progress, even while still busy, makes it live again and restarts the clock.
        beat.beat();
        assert!(h.liveness(t0 + Duration::from_secs(33)).ok);
        assert!(h.liveness(t0 + Duration::from_secs(60)).ok);
        assert!(!h.liveness(t0 + Duration::from_secs(64)).ok);
        // Finishing the work makes it idle, which is live however long it lasts.
        beat.end();
        assert!(h.liveness(t0 + Duration::from_secs(65)).ok);
        assert!(h.liveness(t0 + Duration::from_secs(6500)).ok);
    }

    #[test]
    fn an_idle_stage_is_never_stuck_and_the_clock_starts_when_work_arrives() {
        let h = Health::new(TIMEOUT);
        let beat = h.heartbeat("sink");
        let t0 = Instant::now();
        assert!(h.liveness(t0).ok);
        assert!(h.liveness(t0 + Duration::from_secs(600)).ok);
        beat.begin();
        // Work arrived after ten idle minutes: the stall is counted from here, not from t0.
        assert!(h.liveness(t0 + Duration::from_secs(601)).ok);
        assert!(h.liveness(t0 + Duration::from_secs(620)).ok);
        assert!(!h.liveness(t0 + Duration::from_secs(640)).ok);
    }

    #[test]
    fn pipeline_stages_are_watched_through_their_counters() {
        let h = Health::new(TIMEOUT);
        let metrics = Arc::new(Metrics::new());
        h.watch_pipeline(&metrics);
        let t0 = Instant::now();
        metrics.stage(Stage::Detect).begin(100);
        assert!(h.liveness(t0).ok);
        let r = h.liveness(t0 + Duration::from_secs(45));
        assert!(!r.ok);
        assert!(r.detail.contains("stage detect"), "{}", r.detail);
        assert!(!r.detail.contains("stage sink"), "{}", r.detail);
        metrics.stage(Stage::Detect).end(100);
        assert!(h.liveness(t0 + Duration::from_secs(46)).ok);
        // A new pipeline replaces the watches of the old one.
        let next = Arc::new(Metrics::new());
        h.watch_pipeline(&next);
        metrics.stage(Stage::Sink).begin(1);
        assert!(h.liveness(t0 + Duration::from_secs(47)).ok);
        assert!(
            h.liveness(t0 + Duration::from_secs(100)).ok,
            "old counters are not watched"
        );
    }

    #[test]
    fn a_named_pipeline_is_watched_beside_the_main_one_and_replaced_by_its_restart() {
        let h = Health::new(TIMEOUT);
        let main = Arc::new(Metrics::new());
        let ingest = Arc::new(Metrics::new());
        h.watch_pipeline(&main);
        h.watch_named_pipeline("ingest", &ingest);
        assert_eq!(h.watches().len(), 8);
        let t0 = Instant::now();
        ingest.stage(Stage::Normalize).begin(10);
        assert!(h.liveness(t0).ok);
        let r = h.liveness(t0 + Duration::from_secs(45));
        assert!(!r.ok);
        assert!(r.detail.contains("stage ingest.normalize"), "{}", r.detail);
        // A restart of the named pipeline replaces its watches, and only its watches.
        let next = Arc::new(Metrics::new());
        h.watch_named_pipeline("ingest", &next);
        assert_eq!(h.watches().len(), 8);
        assert!(h.liveness(t0 + Duration::from_secs(46)).ok);
        main.stage(Stage::Sink).begin(1);
        assert!(h.liveness(t0 + Duration::from_secs(47)).ok);
        let r = h.liveness(t0 + Duration::from_secs(90));
        assert!(r.detail.contains("stage sink"), "{}", r.detail);
    }

    #[test]
    fn unmatched_end_does_not_wrap() {
        let beat = Heartbeat::default();
        beat.end();
        assert_eq!(
            beat.state(),
            StageState {
                busy: 0,
                progress: 1
            }
        );
    }
}
