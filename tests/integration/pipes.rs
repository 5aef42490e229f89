//! A reader of standard output that goes away (`authwatch … | head`) stops every command
//! quietly, with status 0, as `cat` or `grep` stop: no panic and backtrace (exit 101), no
//! "Broken pipe" error (exit 2). Review finding 2.
use crate::common::{authwatch_in as authwatch, recording, repo, text};
use std::io::BufRead;
use std::process::Stdio;

/// Runs `args` in `dir` with a standard output whose reader is gone before the command starts,
/// so that its first write fails; `None` if it stopped quietly, or what went wrong.
fn with_closed_stdout(dir: &std::path::Path, args: &[&str]) -> Option<String> {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = authwatch(dir)
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    let noisy = stderr.contains("panicked")
        || stderr.contains("error")
        || stderr.to_lowercase().contains("broken pipe");
    (out.status.code() != Some(0) || noisy).then(|| format!("{args:?}: {}: {stderr}", out.status))
}

#[test]
fn every_command_stops_quietly_when_stdout_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    recording(d);
    std::fs::create_dir_all(d.join("state/pending")).unwrap();
    let sigma = repo().join("tests/fixtures/sigma/brute_force.yml");
    let sigma = sigma.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["schema", "event"],
        vec!["schema", "alert"],
        vec!["schema", "arrow"],
        vec!["rules", "list"],
        vec!["rules", "check"],
        // No rules/tests here: the built-in cases.
        vec!["rules", "test"],
        vec!["rules", "import-sigma", sigma],
        vec!["gen", "--users", "20", "--days", "1", "--out", "-"],
        vec!["replay", "-q", "events.jsonl", "--alerts", "-"],
        vec!["normalize", "events.jsonl"],
        vec!["explain", "--user", "nobody@example.com", "events.jsonl"],
        vec!["eval", "--labels", "labels.jsonl", "alerts.jsonl"],
        vec!["demo", "-q", "--alerts", "demo-alerts.jsonl"],
        vec!["sql", "SELECT * FROM events", "--input", "events.jsonl"],
        vec![
            "sql",
            "SELECT * FROM events",
            "--input",
            "events.jsonl",
            "--format",
            "csv",
        ],
        vec![
            "sql",
            "SELECT * FROM events",
            "--input",
            "events.jsonl",
            "--format",
            "json",
        ],
        vec!["respond", "list", "--state-dir", "state"],
    ];
    let failed: Vec<String> = commands
        .iter()
        .filter_map(|args| with_closed_stdout(d, args))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// `authwatch gen --out - | head -1`: the reader takes one line, then leaves mid-stream.
#[test]
fn gen_stops_quietly_when_the_reader_leaves_after_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = authwatch(dir.path())
        .args(["gen", "--users", "300", "--days", "3", "--out", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here, as `head -1` exits.
    assert!(first.starts_with('{'), "{first}");
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}

/// `tail -f log | authwatch replay --alerts - -`: an attack's alert comes out while the writer is
/// still there. A batch went down the pipeline only with 2048 lines or at the end of the input,
/// so on a quiet live stream the alert waited for thousands more lines.
#[test]
fn replay_from_a_live_pipe_alerts_before_the_input_ends() {
    let dir = tempfile::tempdir().unwrap();
    // Push bombing: six denied pushes, then one approved. mfa_fatigue fires at its threshold,
    // without waiting for the watermark.
    let attack =
        std::fs::read(repo().join("tests/fixtures/providers/okta_oie_push_bombing.jsonl")).unwrap();
    let mut child = authwatch(dir.path())
        .args(["replay", "-q", "--alerts", "-", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Dropped at the end or on a failed assertion: the end of input lets the replay stop.
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, alerts) = std::sync::mpsc::channel();
    let reading = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::io::Write::write_all(&mut stdin, &attack).unwrap();
    std::io::Write::flush(&mut stdin).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = Vec::new();
    let fatigue = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = alerts.recv_timeout(left) else {
            panic!("no mfa_fatigue alert within 20 s with the input still open; alerts: {seen:?}");
        };
        let alert: serde_json::Value = serde_json::from_str(&line).unwrap();
        if alert["rule_id"] == "mfa_fatigue" {
            break alert;
        }
        seen.push(line);
    };
    assert_eq!(fatigue["entity"]["user"], "ken.suzuki@example.co.jp");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the replay stopped before its input ended"
    );
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    reading.join().unwrap();
    assert!(
        stderr.contains("15 lines, 15 events"),
        "every line was read: {stderr}"
    );
}
