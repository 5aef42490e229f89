//! The command line as a contract: exit statuses, summaries, option conflicts, and what
//! read-only or refused commands leave behind.
use crate::common::{RECORDING_GEN, authwatch_in as authwatch, recording, repo, text};
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn run(dir: &Path, args: &[&str]) -> Output {
    authwatch(dir).args(args).output().unwrap()
}

fn stderr_of(out: &Output) -> String {
    text(&out.stderr)
}

/// Finding 5: a replay that could read no line at all fails as `normalize` and `explain` do.
#[test]
fn replay_of_input_with_no_readable_line_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    recording(d);
    std::fs::write(
        d.join("binary.bin"),
        [0x7fu8, b'E', b'L', b'F', 0, 1, 2, b'\n', 0xff, 0xfe],
    )
    .unwrap();
    // A gzip stream cut in its first line: no complete line at all.
    let gz = gzip(&std::fs::read(d.join("events.jsonl")).unwrap());
    std::fs::write(d.join("cut.jsonl.gz"), &gz[..40]).unwrap();
    for args in [
        vec!["replay", "-q", "binary.bin"],
        vec!["replay", "-q", "cut.jsonl.gz"],
        vec!["replay", "-q", "--format", "entra", "events.jsonl"],
    ] {
        let out = run(d, &args);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no event could be read from"),
            "{args:?}: {stderr}"
        );
    }
    // An empty input is not a failure: there was nothing to read.
    std::fs::write(d.join("empty.jsonl"), "").unwrap();
    let out = run(d, &["replay", "-q", "empty.jsonl"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
}

/// Findings 4 and 6: `sql --input` says how many events it left out as late and how many lines
/// it could not read, and the query may follow `--input FILE`.
#[test]
fn sql_input_reports_late_events_and_unreadable_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    recording(d);
    let events = std::fs::read_to_string(d.join("events.jsonl")).unwrap();
    let mut reversed: Vec<&str> = events.lines().collect();
    reversed.reverse();
    let mut text_rev = reversed.join("\n");
    text_rev.push_str("\nnot json\n{\"broken\": 1}\n");
    std::fs::write(d.join("rev.jsonl"), text_rev).unwrap();
    let out = run(
        d,
        &[
            "sql",
            "--input",
            "rev.jsonl",
            "SELECT count(*) AS n FROM events",
            "--format",
            "csv",
        ],
    );
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        text(&out.stdout).starts_with("n\n"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        stderr.contains("left out of the tables as late"),
        "{stderr}"
    );
    assert!(stderr.contains("sorted newest first"), "{stderr}");
    assert!(stderr.contains("2 unreadable lines skipped"), "{stderr}");
    // A file given to --input is never taken for the query.
    let out = run(d, &["sql", "--input", "events.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("no QUERY given"),
        "{}",
        stderr_of(&out)
    );
}

/// A configuration in approval mode with a webhook target and a Kafka audit topic on a broker
/// that is not there.
fn respond_config(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("secret"), "s3cret\n").unwrap();
    let path = dir.join("respond.toml");
    std::fs::write(
        &path,
        format!(
            "[respond]\nenabled = true\nmode = \"approval\"\ntarget = \"webhook\"\n\
             state_dir = \"{state}\"\n[respond.webhook]\nurl = \"http://127.0.0.1:9/hook\"\n\
             secret = {{ file = \"{secret}\" }}\n\
             [kafka]\nbrokers = \"127.0.0.1:9\"\naudit_topic = \"t.audit\"\n\
             [[kafka.topics]]\nname = \"okta.system-log\"\nformat = \"okta\"\n",
            state = dir.join("state").display(),
            secret = dir.join("secret").display(),
        ),
    )
    .unwrap();
    path
}

/// Finding 8: `respond list` creates no state directory; a decision on an id that is malformed
/// or unknown fails at once, before the Kafka producer or any file exists.
#[test]
fn respond_validates_before_creating_or_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run(d, &["respond", "list", "--state-dir", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("no such state directory"),
        "{}",
        stderr_of(&out)
    );
    assert!(!d.join("nope").exists());

    let config = respond_config(d);
    let config = config.to_str().unwrap();
    std::fs::create_dir(d.join("state")).unwrap();
    let out = run(d, &["respond", "--config", config, "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(!d.join("state/pending").exists());
    for (id, message) in [
        ("nope", "is not an action id"),
        ("0123456789abcdef", "no pending action"),
    ] {
        for decision in ["approve", "reject"] {
            let started = Instant::now();
            let out = run(d, &["respond", "--config", config, decision, id]);
            let stderr = stderr_of(&out);
            assert_eq!(out.status.code(), Some(2), "{stderr}");
            assert!(stderr.contains(message), "{stderr}");
            assert!(
                !stderr.contains("rdkafka") && !stderr.contains("librdkafka"),
                "{stderr}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
        }
    }
    let left: Vec<_> = std::fs::read_dir(d.join("state")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Finding 7: the first SIGINT says what `run` is doing; a second one ends it at once.
#[test]
fn run_stops_at_once_on_a_second_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A port nothing listens on: the consumer keeps retrying, and the stop has to wait.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        d.join("run.toml"),
        format!(
            "[kafka]\nbrokers = \"127.0.0.1:{port}\"\ngroup_id = \"t\"\nalert_topic = \"t.alerts\"\n\
             dead_letter_topic = \"t.dl\"\naudit_topic = \"t.audit\"\n\
             [[kafka.topics]]\nname = \"t.events\"\nformat = \"auto\"\n\
             [checkpoint]\ndir = \"{}\"\n[telemetry]\nlisten = \"127.0.0.1:0\"\n",
            d.join("ckpt").display()
        ),
    )
    .unwrap();
    let mut child = authwatch(d)
        .args(["run", "--config", "run.toml"])
        .env("AUTHWATCH_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let interrupt = || {
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    // Until the signal watcher is installed, SIGINT would end the process by its default action.
    std::thread::sleep(Duration::from_secs(2));
    interrupt();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("press Ctrl-C again"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("no stopping line within 10 s of SIGINT: {seen:?}");
            }
        }
    }
    interrupt();
    let second = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if second.elapsed() > Duration::from_secs(2) {
            let _ = child.kill();
            panic!("still running 2 s after the second SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
}

/// Finding 12: errors name the option or the file they are about.
#[test]
fn errors_name_their_option_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: [(&[&str], &str); 4] = [
        (&["gen", "--users", "0", "--out", "x.jsonl"], "--users"),
        (&["gen", "--days", "0", "--out", "x.jsonl"], "--days"),
        (&["gen", "--out", "/dev/full"], "--out /dev/full"),
        (&["bench", "--events", "0"], "--events"),
    ];
    for (args, expected) in cases {
        let out = run(d, args);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let out = run(d, &["respond", "--config", "nope.toml", "list"]);
    let stderr = stderr_of(&out);
    assert_eq!(stderr.matches("nope.toml").count(), 1, "{stderr}");
}

/// Finding 14: `schema arrow` is JSON, one object per column.
#[test]
fn schema_arrow_is_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["schema", "arrow"]);
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fields = schema["fields"].as_array().unwrap();
    let time = fields.iter().find(|f| f["name"] == "time").unwrap();
    assert_eq!(time["type"], "Int64");
    assert_eq!(time["nullable"], false);
    let user = fields.iter().find(|f| f["name"] == "user").unwrap();
    assert!(
        user["type"].as_str().unwrap().starts_with("Struct("),
        "{user}"
    );
}

/// Finding 15: options that replace each other, or make no sense for the command, are refused.
#[test]
fn conflicting_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("e.jsonl"), "").unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "replay",
                "--mapping",
                "m.yaml",
                "--format",
                "okta",
                "e.jsonl",
            ],
            "cannot be used with",
        ),
        (
            &[
                "normalize",
                "--mapping",
                "m.yaml",
                "--from",
                "okta",
                "e.jsonl",
            ],
            "cannot be used with",
        ),
        (&["demo", "--format", "entra"], "--format is for"),
        (
            &[
                "demo",
                "--alerts",
                "same.jsonl",
                "--late-events",
                "same.jsonl",
            ],
            "--alerts",
        ),
    ];
    for (args, expected) in cases {
        let out = run(d, args);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert!(!d.join("same.jsonl").exists());
}

/// Finding 13: the statuses the README documents.
#[test]
fn exit_statuses_are_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains("## Exit status"),
        "README.md has no exit status section"
    );
    // 2: a usage error and a runtime error.
    assert_eq!(run(d, &["replay"]).status.code(), Some(2));
    assert_eq!(
        run(d, &["replay", "-q", "missing.jsonl"]).status.code(),
        Some(2)
    );
    // 1: the check ran and failed.
    std::fs::write(d.join("bad.yaml"), "id: [unclosed\n").unwrap();
    assert_eq!(
        run(d, &["rules", "check", "bad.yaml"]).status.code(),
        Some(1)
    );
    // 0: success.
    assert_eq!(run(d, &["rules", "check"]).status.code(), Some(0));
}

/// Gzip-compressed bytes of `data`.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// `eval` reads the gzip labels `gen --labels x.jsonl.gz` writes, and gzip alerts, as it reads
/// them uncompressed; a bad line in a compressed file is named by file and line.
#[test]
fn eval_reads_gzip_labels_and_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    recording(d);
    // The same stream again (same seed and size), its labels written compressed by gen itself.
    let out = authwatch(d)
        .args(RECORDING_GEN)
        .args(["--out", "again.jsonl", "--labels", "labels.jsonl.gz"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let alerts = std::fs::read(d.join("alerts.jsonl")).unwrap();
    std::fs::write(d.join("alerts.jsonl.gz"), gzip(&alerts)).unwrap();
    let plain = run(d, &["eval", "--labels", "labels.jsonl", "alerts.jsonl"]);
    assert_eq!(plain.status.code(), Some(0), "{}", stderr_of(&plain));
    let compressed = run(
        d,
        &["eval", "--labels", "labels.jsonl.gz", "alerts.jsonl.gz"],
    );
    assert_eq!(
        compressed.status.code(),
        Some(0),
        "{}",
        stderr_of(&compressed)
    );
    assert!(
        text(&plain.stdout).contains("TOTAL"),
        "{}",
        text(&plain.stdout)
    );
    assert_eq!(text(&compressed.stdout), text(&plain.stdout));
    let mut labels = std::fs::read(d.join("labels.jsonl")).unwrap();
    labels.extend_from_slice(b"{\"not\": \"a label\"}\n");
    let bad_line = labels.iter().filter(|&&b| b == b'\n').count();
    std::fs::write(d.join("bad.jsonl.gz"), gzip(&labels)).unwrap();
    let out = run(d, &["eval", "--labels", "bad.jsonl.gz", "alerts.jsonl"]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("bad.jsonl.gz:{bad_line}: not a valid record")),
        "{stderr}"
    );
}

/// What the user gave is named in the error about it: `eval --slack`, `replay --sql` given a
/// file, a detection with a bad query.
#[test]
fn eval_and_replay_errors_name_the_option_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    recording(d);
    // A slack so long that the matching's arithmetic on times overflowed (a panic).
    for slack in ["5", "9223372036854775s"] {
        let out = run(
            d,
            &[
                "eval",
                "--labels",
                "labels.jsonl",
                "alerts.jsonl",
                "--slack",
                slack,
            ],
        );
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{slack}: {stderr}");
        assert!(stderr.contains("--slack"), "{slack}: {stderr}");
    }
    let detection = repo().join("sql/credential_stuffing.sql");
    std::fs::copy(&detection, d.join("stuffing.sql")).unwrap();
    let out = run(
        d,
        &["replay", "-q", "events.jsonl", "--sql", "stuffing.sql"],
    );
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--sql stuffing.sql: is a file"), "{stderr}");
    std::fs::create_dir(d.join("bad")).unwrap();
    let broken = std::fs::read_to_string(&detection)
        .unwrap()
        .replace("GROUP BY", "GROUPY BY");
    std::fs::write(d.join("bad/stuffing.sql"), broken).unwrap();
    let out = run(d, &["replay", "-q", "events.jsonl", "--sql", "bad"]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad/stuffing.sql: query: "), "{stderr}");
    // The parser's message, not its Rust debug form (`ParserError("…")`).
    assert!(
        stderr.contains("sql parser error: Expected: end of statement, found: GROUPY"),
        "{stderr}"
    );
    assert!(!stderr.contains("ParserError("), "{stderr}");
}

/// `sql` prints DataFusion's errors as text, not Rust debug output, and a corrupt Parquet file of
/// the archive is named.
#[test]
fn sql_errors_are_text_and_name_a_corrupt_parquet_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    recording(d);
    let out = run(
        d,
        &[
            "sql",
            "--input",
            "events.jsonl",
            "SELECT count(*) FROM events WHERE",
        ],
    );
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("SQL error: sql parser error: Expected: an expression, found: EOF"),
        "{stderr}"
    );
    assert!(!stderr.contains("ParserError("), "{stderr}");

    let out = run(d, &["replay", "-q", "events.jsonl", "--archive", "archive"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let mut parts = Vec::new();
    let mut dirs = vec![d.join("archive/events")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                parts.push(path);
            }
        }
    }
    parts.sort();
    // Cut short, as an interrupted copy leaves it.
    let corrupt = &parts[parts.len() / 2];
    let bytes = std::fs::read(corrupt).unwrap();
    std::fs::write(corrupt, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(
        d,
        &["sql", "--archive", "archive", "SELECT count(*) FROM events"],
    );
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let name = corrupt.strip_prefix(d).unwrap().display().to_string();
    assert!(
        stderr.contains(&format!("--archive archive: {name}: Parquet error: ")),
        "{stderr}"
    );
    assert!(!stderr.contains("Parquet error: Parquet error"), "{stderr}");
}

/// A gzip output that cannot be written (a full disk) fails the command with status 2, naming
/// the file, up to its end (the trailer is written by `Output::finish`, which reports errors).
#[cfg(unix)]
#[test]
fn a_gzip_output_that_cannot_be_ended_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    recording(d);
    std::os::unix::fs::symlink("/dev/full", d.join("full.jsonl.gz")).unwrap();
    for args in [
        vec!["gen", "--users", "300", "--days", "3", "--max-events", "50"],
        vec!["normalize", "events.jsonl"],
    ] {
        let out = authwatch(d)
            .args(&args)
            .args(["--out", "full.jsonl.gz"])
            .output()
            .unwrap();
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("full.jsonl.gz") && stderr.contains("No space left"),
            "{args:?}: {stderr}"
        );
    }
}
