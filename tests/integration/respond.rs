//! The responder beside `replay`, and `authwatch respond list | approve | reject` on the
//! pending store, against a local webhook receiver.

use crate::common::{authwatch, json_lines, repo, run_fail, run_ok};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// A receiver on 127.0.0.1:0 that accepts connections, reads nothing and never answers (an
/// identity provider that hangs); counts the connections.
pub(crate) fn silent_receiver() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    (url, count)
}

/// Requests received: (request line and headers, body).
pub(crate) type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A minimal HTTP/1.1 receiver on 127.0.0.1:0 that records each request's head and body and
/// answers 200.
pub(crate) fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            record
                .lock()
                .unwrap()
                .push((head, String::from_utf8_lossy(&body).into_owned()));
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, seen)
}

#[test]
fn replay_with_approval_then_approve_reject_and_replay_again() {
    let dir = tempfile::tempdir().unwrap();
    let (url, seen) = receiver();
    std::fs::write(dir.path().join("hook-secret"), "integration-secret\n").unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[input]\nmax_future_skew = \"0s\"\n\
             [respond]\nenabled = true\nmode = \"approval\"\ntarget = \"webhook\"\n\
             state_dir = \"{state}\"\n\
             [respond.webhook]\nurl = \"{url}\"\nsecret = {{ file = \"{secret}\" }}\n",
            state = dir.path().join("state").display(),
            secret = dir.path().join("hook-secret").display(),
        ),
    )
    .unwrap();
    let stream = repo().join("data/demo/authwatch-demo.jsonl.gz");
    let replay = |alerts: &str| {
        run_ok(
            authwatch()
                .arg("replay")
                .arg(&stream)
                .arg("--config")
                .arg(&config)
                .arg("--alerts")
                .arg(dir.path().join(alerts))
                .arg("--quiet"),
        )
    };
    let out = replay("alerts-1.jsonl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("respond (Approval)"), "{stderr}");

    // Every critical alert of the selected rules waits for approval; nothing was sent.
    let alerts = json_lines(&dir.path().join("alerts-1.jsonl"));
    let selected: Vec<&serde_json::Value> = alerts
        .iter()
        .filter(|a| {
            a["severity"] == "critical"
                && ["mfa_fatigue_success", "credential_compromise"]
                    .contains(&a["rule_id"].as_str().unwrap())
        })
        .collect();
    assert!(
        !selected.is_empty(),
        "the demo stream has no critical alert"
    );
    let audit_path = dir.path().join("state/audit.jsonl");
    let audit = json_lines(&audit_path);
    let pending: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|r| r["unmapped"]["decision"] == "pending_approval")
        .collect();
    assert!(!pending.is_empty());
    for r in &audit {
        assert_eq!(r["class_uid"], 3001);
        let alert_id = r["unmapped"]["alert_id"].as_str().unwrap();
        assert!(selected.iter().any(|a| a["alert_id"] == alert_id), "{r}");
    }
    assert!(seen.lock().unwrap().is_empty());

    let list = run_ok(
        authwatch()
            .args(["respond", "list", "--config"])
            .arg(&config),
    );
    let listing = String::from_utf8_lossy(&list.stdout).into_owned();
    let ids: Vec<String> = pending
        .iter()
        .map(|r| r["unmapped"]["pending_id"].as_str().unwrap().to_owned())
        .collect();
    for id in &ids {
        assert!(listing.contains(id.as_str()), "{listing}");
    }

    // Approve the first: the webhook gets the signed action; reject the second if any.
    run_ok(
        authwatch()
            .args(["respond", "approve", &ids[0], "--by", "tester", "--config"])
            .arg(&config),
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "suspend and revoke_sessions");
        let (head, body) = &seen[0];
        assert!(head.starts_with("POST /hook HTTP/1.1"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("x-authwatch-signature: sha256=")
        );
        assert!(body.contains("\"action\":\"suspend\""), "{body}");
        assert!(!head.contains("integration-secret") && !body.contains("integration-secret"));
    }
    let again = run_fail(
        authwatch()
            .args(["respond", "approve", &ids[0], "--config"])
            .arg(&config),
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already"));
    if let Some(second) = ids.get(1) {
        run_ok(
            authwatch()
                .args(["respond", "reject", second, "--by", "tester", "--config"])
                .arg(&config),
        );
    }
    let audit = json_lines(&audit_path);
    let executed = audit
        .iter()
        .filter(|r| r["unmapped"]["decision"] == "executed")
        .count();
    assert_eq!(executed, 2);
    assert!(
        audit
            .iter()
            .filter(|r| r["unmapped"]["decision"] == "executed")
            .all(|r| r["actor"]["user"] == "tester")
    );

    // Replaying the same file again: every alert is a duplicate of its incident.
    let before = audit.len();
    replay("alerts-2.jsonl");
    let audit = json_lines(&audit_path);
    assert!(
        audit[before..]
            .iter()
            .all(|r| r["unmapped"]["decision"] == "duplicate")
    );
    assert_eq!(seen.lock().unwrap().len(), 2, "a second replay acted again");
    assert!(
        !std::fs::read_to_string(&audit_path)
            .unwrap()
            .contains("integration-secret")
    );
}

/// `respond approve` decides with the pipeline's config or not at all: without `--config` (or
/// `AUTHWATCH_CONFIG`) the defaults (dry-run, no target) would mark the action executed while
/// nothing was called; under a dry-run config nothing may be carried out either.
#[test]
fn approve_needs_the_config_and_a_mode_that_acts() {
    let dir = tempfile::tempdir().unwrap();
    let (url, seen) = receiver();
    std::fs::write(dir.path().join("hook-secret"), "integration-secret\n").unwrap();
    let state = dir.path().join("state");
    let write_config = |name: &str, mode: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[input]\nmax_future_skew = \"0s\"\n\
                 [respond]\nenabled = true\nmode = \"{mode}\"\ntarget = \"webhook\"\n\
                 state_dir = \"{state}\"\n\
                 [respond.webhook]\nurl = \"{url}\"\nsecret = {{ file = \"{secret}\" }}\n",
                state = state.display(),
                secret = dir.path().join("hook-secret").display(),
            ),
        )
        .unwrap();
        path
    };
    let approval = write_config("approval.toml", "approval");
    let dry = write_config("dry.toml", "dry_run");
    run_ok(
        authwatch()
            .arg("replay")
            .arg(repo().join("data/demo/authwatch-demo.jsonl.gz"))
            .arg("--config")
            .arg(&approval)
            .arg("--quiet"),
    );
    let audit = json_lines(&state.join("audit.jsonl"));
    let id = audit
        .iter()
        .find(|r| r["unmapped"]["decision"] == "pending_approval")
        .and_then(|r| r["unmapped"]["pending_id"].as_str())
        .expect("a pending action")
        .to_owned();
    let pending = || {
        let out = run_ok(
            authwatch()
                .env_remove("AUTHWATCH_CONFIG")
                .args(["respond", "list", "--config"])
                .arg(&approval),
        );
        String::from_utf8_lossy(&out.stdout).contains(&id)
    };

    // No config: refused, and the action still waits.
    let out = run_fail(
        authwatch()
            .env_remove("AUTHWATCH_CONFIG")
            .args(["respond", "approve", &id, "--by", "tester", "--state-dir"])
            .arg(&state),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--config") && stderr.contains("AUTHWATCH_CONFIG"),
        "{stderr}"
    );
    assert!(pending(), "approve without a config decided the action");

    // A dry-run config carries nothing out: refused, still waiting.
    let out = run_fail(
        authwatch()
            .env_remove("AUTHWATCH_CONFIG")
            .args(["respond", "approve", &id, "--by", "tester", "--config"])
            .arg(&dry),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dry_run"), "{stderr}");
    assert!(pending(), "approve under dry-run decided the action");
    assert!(seen.lock().unwrap().is_empty());
    assert!(
        !json_lines(&state.join("audit.jsonl"))
            .iter()
            .any(|r| r["unmapped"]["decision"] == "executed")
    );

    // The config from the environment, as the Helm chart sets it in the pod.
    run_ok(
        authwatch()
            .env("AUTHWATCH_CONFIG", &approval)
            .args(["respond", "approve", &id, "--by", "tester"]),
    );
    assert_eq!(seen.lock().unwrap().len(), 2, "suspend and revoke_sessions");
    assert!(!pending());
}
