//! The live responder beside a pipeline (`authwatch run`): its state joins each checkpoint, and
//! is written only when it changed since it was last written.

use crate::support::{alert, config};
use authwatch_pipeline::config::RespondTarget;
use authwatch_pipeline::{Barrier, Checkpoint, JsonLinesSink, Sink, StateParts};
use authwatch_respond::{Responder, ResponderThread, ResponseClock, StateSaver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Keeps every state it is asked to save.
#[derive(Clone, Default)]
struct Saves(Arc<Mutex<Vec<StateParts>>>);

impl StateSaver for Saves {
    fn save(&mut self, state: &StateParts) -> Result<(), String> {
        self.0.lock().unwrap().push(state.clone());
        Ok(())
    }
}

impl Saves {
    fn all(&self) -> Vec<StateParts> {
        self.0.lock().unwrap().clone()
    }
}

fn checkpoint(id: u64) -> Checkpoint {
    Checkpoint {
        barrier: Barrier {
            id,
            positions: vec![(0, id as i64 * 10)],
            release: Vec::new(),
            snapshot: false,
            token: None,
            source_parts: Vec::new(),
            ack: None,
        },
        tasks: Vec::new(),
    }
}

#[test]
fn the_state_is_written_at_a_checkpoint_only_when_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    // Dry run: decisions are recorded in the state, nothing is called.
    let c = config(dir.path(), RespondTarget::None);
    const T0: i64 = 1_767_225_600_000;
    let responder = Responder::new(&c, ResponseClock::event_time(T0), Vec::new()).unwrap();
    let saves = Saves::default();
    let thread = ResponderThread::spawn_live(
        responder,
        Box::new(saves.clone()),
        Duration::from_secs(3600),
    )
    .unwrap();
    let mut tee = thread.tee(JsonLinesSink::create(None, None, None).unwrap());

    tee.checkpoint(checkpoint(1)).unwrap();
    tee.checkpoint(checkpoint(2)).unwrap();
    assert_eq!(saves.all().len(), 1, "an unchanged state was written again");

    tee.alert(&alert(
        "mfa_fatigue",
        "kenji@example.co.jp",
        Some("example"),
        T0 + 60_000,
    ))
    .unwrap();
    tee.checkpoint(checkpoint(3)).unwrap();
    // Written once: after the decision, or at the checkpoint (not both: the same state).
    let after_alert = saves.all();
    assert_eq!(
        after_alert.len(),
        2,
        "the alert's state was not written once"
    );
    assert_ne!(after_alert[0], after_alert[after_alert.len() - 1]);

    tee.checkpoint(checkpoint(4)).unwrap();
    drop(tee);
    thread.finish().unwrap();
    assert_eq!(
        saves.all().len(),
        after_alert.len(),
        "a checkpoint or the end wrote an unchanged state"
    );
}

/// `replay`'s state file holds each decision as soon as it is made, not only at the end: a
/// replay interrupted and run again repeats no action.
#[test]
fn the_replay_state_file_holds_a_decision_before_the_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::None);
    c.mode = authwatch_pipeline::config::RespondMode::DryRun;
    const T0: i64 = 1_767_225_600_000;
    let state = dir.path().join("replay-state.json");
    let responder = Responder::new(&c, ResponseClock::event_time(T0), Vec::new()).unwrap();
    let thread = ResponderThread::spawn(responder, Some(state.clone())).unwrap();
    let mut tee = thread.tee(JsonLinesSink::create(None, None, None).unwrap());
    let a = alert(
        "mfa_fatigue_success",
        "kenji@example.co.jp",
        Some("example"),
        T0 + 60_000,
    );
    tee.alert(&a).unwrap();
    // The thread decides on its own time: wait for the file, with the run still going.
    let started = std::time::Instant::now();
    while !state.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no state file while the run goes on"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // What an interrupted replay leaves is enough for the next one to know the incident.
    let mut next = Responder::new(&c, ResponseClock::event_time(T0), Vec::new()).unwrap();
    next.restore(&std::fs::read(&state).unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let again = rt.block_on(next.handle(&a)).unwrap();
    assert!(
        again
            .iter()
            .all(|r| r.unmapped.decision == authwatch_respond::Decision::Duplicate),
        "{again:#?}"
    );
    drop(tee);
    thread.finish().unwrap();
}
