//! The live responder beside a pipeline (`authwatch run`): its state joins each checkpoint, and
//! is written only when it changed since it was last written.

use crate::support::{Answer, MINUTE, Server, T0, alert, config, secret_file};
use authwatch_pipeline::config::RespondTarget;
use authwatch_pipeline::{Barrier, Checkpoint, JsonLinesSink, Sink, StateParts};
use authwatch_respond::{
    Decision, INBOX_PART, MemoryAudit, Responder, ResponderThread, ResponseClock, StateSaver,
    saved_inbox,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// `responder` started live with the alerts of `inbox`, its states kept in `saves`; no tick
/// within a test.
fn live(
    responder: Responder,
    inbox: Vec<authwatch_event::Alert>,
    saves: &Saves,
) -> ResponderThread {
    ResponderThread::spawn_live(
        responder,
        inbox,
        Box::new(saves.clone()),
        Duration::from_secs(3600),
    )
    .unwrap()
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
    let responder = Responder::new(&c, ResponseClock::event_time(T0), Vec::new()).unwrap();
    let saves = Saves::default();
    let thread = live(responder, Vec::new(), &saves);
    let mut tee = thread.tee(JsonLinesSink::create(None, None, None).unwrap());

    tee.checkpoint(checkpoint(1)).unwrap();
    tee.checkpoint(checkpoint(2)).unwrap();
    assert_eq!(saves.all().len(), 1, "an unchanged state was written again");

    tee.alert(&alert(
        "mfa_fatigue_success",
        "kenji@example.co.jp",
        Some("example"),
        T0 + 60_000,
    ))
    .unwrap();
    // The decision is saved as soon as it is made; the checkpoint after it has nothing new.
    wait_for("the decision's save", || saves.all().len() >= 2);
    tee.checkpoint(checkpoint(3)).unwrap();
    let after_alert = saves.all();
    assert_eq!(
        after_alert.len(),
        2,
        "the alert's state was not written once"
    );
    assert_ne!(after_alert[0], after_alert[after_alert.len() - 1]);
    assert!(
        !after_alert[1].parts.contains_key(INBOX_PART),
        "a handled alert stayed in the inbox"
    );

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

/// Waits (at most 10 s) until `done`.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(10), "no {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An identity provider that does not answer holds neither a checkpoint nor the end of the run:
/// the checkpoint saves the alert it has not finished beside the state, and the next start
/// (with a provider that answers) carries its action out. Before, the checkpoint waited for
/// the call's timeouts and retries (up to about 43 s per alert with the defaults), longer than
/// the transaction it belongs to may stay open.
#[test]
fn a_hanging_provider_holds_no_checkpoint_and_the_next_start_finishes_its_alert() {
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let hanging = servers.block_on(Server::start(|_, _| Answer::Hang));
    let answering = servers.block_on(Server::start(|_, _| Answer::Status(200)));
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::Webhook);
    c.webhook.url = Some(format!("{}/hook", hanging.url));
    c.webhook.secret = secret_file(dir.path(), "hook", "hook-key");
    c.http.timeout = authwatch_event::DurationText(Duration::from_secs(30));
    c.http.max_attempts = 1;
    let responder = Responder::new(&c, ResponseClock::event_time(T0), Vec::new()).unwrap();
    let saves = Saves::default();
    let thread = live(responder, Vec::new(), &saves);
    let mut tee = thread.tee(JsonLinesSink::create(None, None, None).unwrap());
    let a = alert(
        "mfa_fatigue_success",
        "kenji@example.co.jp",
        None,
        T0 + MINUTE,
    );
    tee.alert(&a).unwrap();
    wait_for("call at the provider", || !hanging.seen().is_empty());

    let started = Instant::now();
    tee.checkpoint(checkpoint(1)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the checkpoint waited {:?} for the provider",
        started.elapsed()
    );
    let saved = saves.all().last().cloned().unwrap();
    assert_eq!(saved_inbox(&saved).unwrap(), vec![a.clone()]);

    // The end of the run abandons the call after the grace (5 s), not after the timeout.
    drop(tee);
    let started = Instant::now();
    thread.finish().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the end waited {:?} for the provider",
        started.elapsed()
    );
    assert_eq!(
        saves.all().last(),
        Some(&saved),
        "a state was saved after the call was abandoned"
    );

    // The next start, with the provider back, finishes the alert from the saved inbox.
    c.webhook.url = Some(format!("{}/hook", answering.url));
    let audit = MemoryAudit::default();
    let mut responder = Responder::new(
        &c,
        ResponseClock::event_time(T0),
        vec![Box::new(audit.clone())],
    )
    .unwrap();
    saved.restore(&mut responder).unwrap();
    let thread = live(responder, saved_inbox(&saved).unwrap(), &saves);
    thread.finish().unwrap();
    // The policy's two actions for the alert (suspend, revoke sessions), each once.
    let actions: Vec<String> = answering
        .seen()
        .iter()
        .map(|s| s.json()["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["suspend", "revoke_sessions"]);
    let records = audit.records();
    assert_eq!(records.len(), 2, "{records:#?}");
    assert!(
        records
            .iter()
            .all(|r| r.unmapped.alert_id == a.alert_id && r.unmapped.decision == Decision::Executed),
        "{records:#?}"
    );
    let last = saves.all().last().cloned().unwrap();
    assert!(
        !last.parts.contains_key(INBOX_PART),
        "{:?}",
        last.parts.keys()
    );
}
