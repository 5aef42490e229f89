//! The pipeline runtime seen from the binary (tests named after what was wrong): outputs on
//! standard output, `normalize` and repeats, outputs kept on a start-up error, event-time
//! outliers and the replay's explanation of late events.

use crate::common::{authwatch, generate, run_fail, run_ok};
use std::path::Path;

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Finding 3: `--alerts - --dead-letter -` gave each output its own buffer on standard output;
/// one flushing when full cut an alert into the middle of a dead letter.
#[test]
fn alerts_and_dead_letters_on_standard_output_are_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = generate(dir.path(), 150, 2, 11);
    let garbage = format!("not json {}", "#".repeat(300));
    let mixed = dir.path().join("mixed.jsonl");
    let text: String = lines_of(&events)
        .iter()
        .enumerate()
        .flat_map(|(i, l)| {
            let mut v = vec![l.clone()];
            if i % 3 == 2 {
                v.push(garbage.clone());
            }
            v
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(&mixed, text).unwrap();
    let out = run_ok(
        authwatch()
            .args(["replay", "-q", "--alerts", "-", "--dead-letter", "-"])
            .arg(&mixed),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (mut alerts, mut dead) = (0, 0);
    for line in stdout.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:.300}"));
        if v.get("alert_id").is_some() {
            alerts += 1;
        } else {
            assert_eq!(v["raw"], garbage, "{line:.300}");
            dead += 1;
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(alerts > 0, "{stderr}");
    assert!(stderr.contains(&format!("{alerts} alerts")), "{stderr}");
    assert!(stderr.contains(&format!("{dead} dead letters")), "{stderr}");
}

/// Finding 5: `normalize` dropped every repeated record silently ("0 lines rejected"): a
/// converter writes a line for every record it reads.
#[test]
fn normalize_writes_repeated_records_too() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = generate(dir.path(), 30, 1, 12);
    let lines = lines_of(&events);
    let twice = dir.path().join("twice.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n{l}\n")).collect();
    std::fs::write(&twice, text).unwrap();
    let out = dir.path().join("out.jsonl");
    let run = run_ok(authwatch().arg("normalize").arg(&twice).arg("-o").arg(&out));
    assert_eq!(lines_of(&out).len(), 2 * lines.len());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(&format!("{} events written", 2 * lines.len())),
        "{stderr}"
    );
    // Dead letters and events on standard output together: whole lines, every one.
    let bad = dir.path().join("bad.jsonl");
    let text: String = lines
        .iter()
        .map(|l| format!("{l}\n{{\"broken\": {}\n", "9".repeat(400)))
        .collect();
    std::fs::write(&bad, text).unwrap();
    let run = run_ok(
        authwatch()
            .args(["normalize", "--dead-letter", "-"])
            .arg(&bad),
    );
    let stdout = String::from_utf8(run.stdout).unwrap();
    let parsed = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).map_err(|e| format!("{e}: {l:.200}")))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(parsed.len(), 2 * lines.len());
}

/// Finding 6: a start-up error (here a bad --mapping) came after the outputs were created, and
/// emptied the previous run's alerts.
#[test]
fn a_start_up_error_leaves_the_previous_outputs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(
        &input,
        "{\"time\":1767603600000,\"provider\":\"okta\",\"event_id\":\"a\",\"activity\":\"logon\",\"outcome\":\"success\"}\n",
    )
    .unwrap();
    let mapping = dir.path().join("bad-mapping.yaml");
    std::fs::write(&mapping, "not: [valid\n").unwrap();
    let kept = "{\"previous\":\"run\"}\n";
    let (alerts, dead, normalized) = (
        dir.path().join("alerts.jsonl"),
        dir.path().join("dead.jsonl"),
        dir.path().join("normalized.jsonl"),
    );
    for f in [&alerts, &dead, &normalized] {
        std::fs::write(f, kept).unwrap();
    }
    run_fail(
        authwatch()
            .args(["replay", "-q", "--alerts"])
            .arg(&alerts)
            .arg("--dead-letter")
            .arg(&dead)
            .arg("--mapping")
            .arg(&mapping)
            .arg(&input),
    );
    run_fail(
        authwatch()
            .arg("normalize")
            .arg("--mapping")
            .arg(&mapping)
            .arg("-o")
            .arg(&normalized)
            .arg("--dead-letter")
            .arg(&dead)
            .arg(&input),
    );
    for f in [&alerts, &dead, &normalized] {
        assert_eq!(std::fs::read_to_string(f).unwrap(), kept, "{}", f.display());
    }
}

/// Finding 12: `late_events = "side_output"` without a late-events output acted as `drop`
/// without a word.
#[test]
fn side_output_without_an_output_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("so.toml");
    std::fs::write(&config, "[event_time]\nlate_events = \"side_output\"\n").unwrap();
    let input = dir.path().join("late.jsonl");
    let line = |t: i64, id: &str| {
        format!(
            "{{\"time\":{t},\"provider\":\"okta\",\"event_id\":\"{id}\",\"activity\":\"logon\",\"outcome\":\"success\"}}\n"
        )
    };
    let t0 = 1_767_603_600_000;
    std::fs::write(
        &input,
        line(t0, "a") + &line(t0 + 1_000, "b") + &line(t0 - 3_600_000, "c"),
    )
    .unwrap();
    let out = run_ok(
        authwatch()
            .args(["replay", "-q", "--config"])
            .arg(&config)
            .arg(&input),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 late events"), "{stderr}");
    assert!(stderr.contains("no late-events output"), "{stderr}");
}

/// Finding 1: one event dated far ahead (a wrong clock) moved the watermark and the rest of
/// the replay was late (2 alerts of 147 in the review); now it does not move it alone, nor the
/// profiles' clock (which would forget every user), and the alerts are those of the stream
/// without it. Two such events do move it, and the note at the end then names where the stream
/// jumped instead of blaming the order of the whole input.
#[test]
fn an_event_far_ahead_blinds_nothing_and_two_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = generate(dir.path(), 100, 2, 13);
    let lines = lines_of(&events);
    let clean = dir.path().join("alerts.jsonl");
    run_ok(
        authwatch()
            .args(["replay", "-q", "--alerts"])
            .arg(&clean)
            .arg(&events),
    );
    let future = |l: &str, id: &str| -> String {
        let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["time"] = 1_780_000_000_000i64.into();
        v["event_id"] = id.into();
        v.to_string()
    };
    let mut skewed = lines.clone();
    skewed.insert(100, future(&lines[100], "outlier-1"));
    let one = dir.path().join("one.jsonl");
    std::fs::write(&one, skewed.join("\n") + "\n").unwrap();
    let got = dir.path().join("one-alerts.jsonl");
    let out = run_ok(
        authwatch()
            .args(["replay", "-q", "--alerts"])
            .arg(&got)
            .arg(&one),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(" 0 late events"), "{stderr}");
    assert!(!stderr.contains("Note:"), "{stderr}");
    assert_eq!(lines_of(&got), lines_of(&clean));

    // A second outlier further on, with traffic between: the two confirm nothing.
    let mut apart = skewed.clone();
    apart.insert(200, future(&lines[200], "outlier-2"));
    let apart_file = dir.path().join("apart.jsonl");
    std::fs::write(&apart_file, apart.join("\n") + "\n").unwrap();
    let out = run_ok(authwatch().args(["replay", "-q"]).arg(&apart_file));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(" 0 late events"), "{stderr}");

    // Two in a row confirm the jump: the rest is late, and the note names where it jumped.
    skewed.insert(101, future(&lines[101], "outlier-2"));
    let two = dir.path().join("two.jsonl");
    std::fs::write(&two, skewed.join("\n") + "\n").unwrap();
    let out = run_ok(authwatch().args(["replay", "-q"]).arg(&two));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("jumped at {} line 101", two.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("shuffled"), "{stderr}");
}
