//! `authwatch respond approve|reject` under the configuration of an `authwatch run` pipeline
//! writes its decision records to the Kafka audit topic too, where the pipeline's own
//! responder writes every action and refusal — not only to the audit file.
//!
//! No broker is needed: the configuration names one that is not there, and a record the
//! broker never acknowledges fails the command. (Before the fix the decision went to the file
//! only, and the command succeeded.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use authwatch_event::Severity;
use authwatch_pipeline::config::{RespondMode, ResponseAction};
use authwatch_respond::state::AlertFacts;
use authwatch_respond::{JsonLinesAudit, PendingAction, PendingStatus, PendingStore};
use std::path::Path;
use std::process::Command;

/// A configuration in approval mode with a webhook target (nothing is called on a rejection);
/// `kafka` is appended.
fn write_config(dir: &Path, kafka: &str) -> std::path::PathBuf {
    let secret = dir.join("hook-secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[respond]\nenabled = true\nmode = \"approval\"\ntarget = \"webhook\"\n\
             state_dir = \"{state}\"\n\
             [respond.webhook]\nurl = \"http://127.0.0.1:9/hook\"\n\
             secret = {{ file = \"{secret}\" }}\n{kafka}",
            state = dir.join("state").display(),
            secret = secret.display(),
        ),
    )
    .unwrap();
    path
}

/// An action awaiting approval in the store of `dir`; its id.
fn pending(dir: &Path) -> String {
    let store = PendingStore::open(&dir.join("state")).unwrap();
    let alert = AlertFacts {
        alert_id: "alert-1".to_owned(),
        rule_id: "mfa_fatigue_success".to_owned(),
        severity: Severity::Critical,
        tenant: None,
        account: "bob@example.com".to_owned(),
    };
    let id = PendingAction::make_id(&alert.alert_id, None, &alert.account);
    store
        .create(&PendingAction {
            id: id.clone(),
            status: PendingStatus::AwaitingApproval,
            alert,
            actions: vec![ResponseAction::Suspend],
            reason: "approval".to_owned(),
            created_ms: 1_767_225_600_000,
            decided_by: None,
            decided_ms: None,
            detail: None,
            mode: Some(RespondMode::Approval),
            not_before_ms: None,
        })
        .unwrap();
    id
}

fn reject(config: &Path, id: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_authwatch"))
        .args(["respond", "reject", id, "--by", "alice", "--config"])
        .arg(config)
        .env_remove("AUTHWATCH_CONFIG")
        .output()
        .unwrap()
}

/// Found by review: decisions of `respond approve|reject` went to the audit file only, never
/// to the audit topic the pipeline's configuration names.
#[test]
fn a_humans_decision_goes_to_the_audit_topic_of_a_run_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[kafka]\nbrokers = \"127.0.0.1:9\"\naudit_topic = \"authwatch-test.audit\"\n\
         properties = { \"message.timeout.ms\" = \"1000\" }\n\
         [[kafka.topics]]\nname = \"okta.system-log\"\nformat = \"okta\"\n",
    );
    let id = pending(dir.path());
    let out = reject(&config, &id);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the topic was not written: {stderr}");
    assert!(
        stderr.contains("kafka topic authwatch-test.audit"),
        "{stderr}"
    );
    // The record is in the file (written first), and the action was not decided: the audit
    // write that failed stops the decision before the store changes, so it can be rejected
    // again once the broker is back.
    let records = JsonLinesAudit::read_all(&dir.path().join("state/audit.jsonl")).unwrap();
    assert_eq!(records.len(), 1, "{records:#?}");
    let store = PendingStore::open(&dir.path().join("state")).unwrap();
    assert_eq!(
        store.get(&id).unwrap().status,
        PendingStatus::AwaitingApproval
    );
}

/// A configuration that runs no Kafka pipeline (no `[[kafka.topics]]`: `replay` only) has no
/// audit topic: the decision goes to the file, and needs no broker.
#[test]
fn a_replay_configuration_decides_without_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[kafka]\nbrokers = \"127.0.0.1:9\"\n");
    let id = pending(dir.path());
    let out = reject(&config, &id);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = PendingStore::open(&dir.path().join("state")).unwrap();
    assert_eq!(store.get(&id).unwrap().status, PendingStatus::Rejected);
}
