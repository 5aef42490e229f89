//! End-to-end: gen → replay → eval, determinism, bad input, bad config, demo.

use crate::common::*;
use std::io::Write;

/// A config that enriches with the MaxMind test databases the generator draws addresses from,
/// and lists the generated tenant's corporate VPN egress as a deployment lists its own
/// (`located = false`): the labels assume it, and without it travellers working through the
/// VPN back home look like impossible travel.
fn geo_config(dir: &std::path::Path) -> std::path::PathBuf {
    let geo = repo().join("data/geo");
    let vpn = dir.join("vpn-egress.txt");
    let list: String = authwatch_gen::vpn_egress()
        .iter()
        .map(|ip| format!("{ip}\n"))
        .collect();
    std::fs::write(&vpn, list).unwrap();
    let path = dir.join("geo.toml");
    std::fs::write(
        &path,
        format!(
            "[[enrich.cidr_lists]]\npath = {vpn:?}\ntag = \"corporate_vpn\"\nlocated = false\n\n\
             [enrich.geo]\ncity_db = {:?}\nasn_db = {:?}\nanonymous_db = {:?}\n",
            geo.join("GeoIP2-City-Test.mmdb"),
            geo.join("GeoLite2-ASN-Test.mmdb"),
            geo.join("GeoIP2-Anonymous-IP-Test.mmdb"),
        ),
    )
    .unwrap();
    path
}

/// config/dev.toml lists data/gen-vpn-egress.txt for the README's replay of generated traffic:
/// it must be the generator's list, or that replay shows the VPN as impossible travel.
#[test]
fn the_dev_configs_vpn_list_is_the_generators() {
    let text = std::fs::read_to_string(repo().join("data/gen-vpn-egress.txt")).unwrap();
    let listed: Vec<std::net::IpAddr> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(listed, authwatch_gen::vpn_egress());
    let dev = std::fs::read_to_string(repo().join("config/dev.toml")).unwrap();
    assert!(dev.contains("path = \"data/gen-vpn-egress.txt\""), "{dev}");
}

/// One row of `authwatch eval`'s table.
struct Row {
    labels: u64,
    fp: u64,
    missed: u64,
    precision: f64,
}

fn eval_rows(report: &str) -> std::collections::BTreeMap<String, Row> {
    report
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 9 && f[0] != "TOTAL").then(|| {
                let n = |i: usize| f[i].parse::<u64>().unwrap();
                (
                    f[0].to_owned(),
                    Row {
                        labels: n(1),
                        fp: n(5),
                        missed: n(6),
                        precision: f[8].parse().unwrap(),
                    },
                )
            })
        })
        .collect()
}

#[test]
fn gen_replay_eval_finds_every_injected_attack() {
    let dir = tempfile::tempdir().unwrap();
    let config = geo_config(dir.path());
    for seed in [11, 12] {
        let (events, labels) = generate(dir.path(), 250, 4, seed);
        let alerts = dir.path().join(format!("alerts-{seed}.jsonl"));
        run_ok(
            authwatch()
                .args(["replay", "--quiet", "--config"])
                .arg(&config)
                .arg("--alerts")
                .arg(&alerts)
                .arg(&events),
        );
        let out = run_ok(
            authwatch()
                .args(["eval", "--labels"])
                .arg(&labels)
                .arg(&alerts),
        );
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        let rows = eval_rows(&report);
        // Every category the generator labels (the attacks and the MFA triage) is injected, so
        // a perfect score is not vacuous.
        for category in [
            "mfa_fatigue",
            "mfa_fatigue_success",
            "mfa_fraud_report",
            "credential_stuffing",
            "password_spray",
            "brute_force",
            "credential_compromise",
            "account_lockout",
            "impossible_travel",
            "new_device_geo",
            "risk_policy_block",
            "anonymizer_login",
            "mfa_triage",
        ] {
            let row = rows
                .get(category)
                .unwrap_or_else(|| panic!("no {category} in\n{report}"));
            assert!(
                row.labels > 0,
                "seed {seed}: no {category} injected\n{report}"
            );
            assert_eq!(row.missed, 0, "seed {seed}: {category} missed\n{report}");
            if category == "mfa_triage" {
                // Help-desk triage is information, not an alarm; a stray finding is tolerated.
                assert!(row.precision >= 0.9, "seed {seed}: {category}\n{report}");
            } else {
                assert_eq!(
                    row.fp, 0,
                    "seed {seed}: {category} false positives\n{report}"
                );
            }
        }
    }
}

#[test]
fn replaying_the_same_file_twice_gives_byte_identical_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = generate(dir.path(), 150, 2, 21);
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    run_ok(
        authwatch()
            .args(["replay", "--quiet", "--alerts"])
            .arg(&a)
            .arg(&events),
    );
    // Different threading and batching must not change a byte.
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[runtime]\nworkers = 1\nbatch_lines = 3\nchannel_batches = 1\n",
    )
    .unwrap();
    run_ok(
        authwatch()
            .args(["replay", "--quiet", "--config"])
            .arg(&config)
            .arg("--alerts")
            .arg(&b)
            .arg(&events),
    );
    let a = std::fs::read(&a).unwrap();
    assert!(!a.is_empty());
    assert_eq!(a, std::fs::read(&b).unwrap());
}

#[test]
fn every_alert_carries_the_fields_the_soc_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = generate(dir.path(), 150, 2, 31);
    let alerts = dir.path().join("alerts.jsonl");
    run_ok(
        authwatch()
            .args(["replay", "--quiet", "--alerts"])
            .arg(&alerts)
            .arg(&events),
    );
    let alerts = json_lines(&alerts);
    assert!(!alerts.is_empty());
    for a in &alerts {
        for field in [
            "alert_id",
            "rule_id",
            "rule_version",
            "category",
            "cause_class",
            "severity",
            "attack_technique",
            "entity",
            "window",
            "metrics",
            "evidence",
            "first_seen",
            "last_seen",
            "summary",
            "steps",
        ] {
            assert!(a.get(field).is_some(), "{field} missing in {a}");
        }
        assert!(a["summary"]["en"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(a["summary"]["ja"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(!a["steps"]["ja"].as_array().unwrap().is_empty());
        assert!(a["evidence"].as_array().unwrap().len() <= 32);
        // Attacks name their ATT&CK technique; help-desk triage findings have none to name.
        if a["cause_class"] == "attack" {
            assert!(
                a["attack_technique"][0].as_str().unwrap().starts_with('T'),
                "{a}"
            );
        }
    }
    // The alert file validates against the published schema's required fields.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("schemas/alert.schema.json")).unwrap(),
    )
    .unwrap();
    for required in schema["required"].as_array().unwrap() {
        let key = required.as_str().unwrap();
        assert!(alerts.iter().all(|a| a.get(key).is_some()), "{key}");
    }
}

#[test]
fn bad_lines_go_to_dead_letter_and_the_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.jsonl");
    let mut f = std::fs::File::create(&input).unwrap();
    writeln!(f, r#"{{"time":1767603600000,"provider":"okta","event_id":"a","activity":"logon","outcome":"success"}}"#).unwrap();
    writeln!(f, r#"{{"time":1767603600000,"provider":"okta""#).unwrap();
    f.write_all(&[0xc3, 0x28, b'\n']).unwrap();
    writeln!(f, r#"{{"time":1767603601000,"provider":"okta","event_id":"b","activity":"logon","outcome":"success"}}"#).unwrap();
    drop(f);
    let dead = dir.path().join("dead.jsonl");
    let out = run_ok(
        authwatch()
            .args(["replay", "--quiet", "--alerts", "-", "--dead-letter"])
            .arg(&dead)
            .arg(&input),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 events"), "{stderr}");
    assert!(stderr.contains("2 dead letters"), "{stderr}");
    assert!(stderr.contains("malformed_json 1"), "{stderr}");
    let dead = json_lines(&dead);
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["line"], 2);
    assert_eq!(dead[0]["reason"], "malformed_json");
    assert_eq!(dead[0]["file"], input.display().to_string());
    assert_eq!(dead[1]["reason"], "invalid_utf8");
    assert_eq!(dead[1]["line"], 3);
}

#[test]
fn bad_config_and_unreadable_files_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "").unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[event_time]\nallowed_lateness = 5\n").unwrap();
    let out = run_fail(
        authwatch()
            .args(["replay", "--config"])
            .arg(&config)
            .arg(&input),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("allowed_lateness"), "{err}");

    let out = run_fail(authwatch().args(["replay", "/nonexistent/events.jsonl"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/events.jsonl: cannot open"),
        "{err}"
    );

    let out = run_fail(authwatch().args(["replay", "--speed", "fast"]).arg(&input));
    assert!(String::from_utf8_lossy(&out.stderr).contains("speed"));
}

/// `replay` of `inputs`, alerts discarded, dead letters to `dead`; it must succeed.
fn replay_keeping_dead_letters(
    dead: &std::path::Path,
    inputs: &[&std::path::Path],
) -> std::process::Output {
    run_ok(
        authwatch()
            .args([
                "replay",
                "--quiet",
                "--alerts",
                "/dev/null",
                "--dead-letter",
            ])
            .arg(dead)
            .args(inputs),
    )
}

/// A gzip recording cut short (an upload interrupted): its lines up to the cut are replayed,
/// the cut is a dead letter naming the file and line, and the next file is replayed as usual.
#[test]
fn a_truncated_gzip_file_keeps_its_lines_and_the_run_goes_on() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let line = |id: usize| {
        format!(
            r#"{{"time":{},"provider":"okta","event_id":"e{id}","activity":"logon","outcome":"success"}}"#,
            1_767_603_600_000u64 + id as u64 * 1000
        )
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for id in 0..3000 {
        writeln!(gz, "{}", line(id)).unwrap();
    }
    let mut bytes = gz.finish().unwrap();
    bytes.truncate(bytes.len() - 30);
    let cut = dir.path().join("cut.jsonl.gz");
    std::fs::write(&cut, bytes).unwrap();
    let next = dir.path().join("next.jsonl");
    std::fs::write(&next, format!("{}\n", line(9999))).unwrap();
    let dead = dir.path().join("dead.jsonl");
    let out = replay_keeping_dead_letters(&dead, &[&cut, &next]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unreadable_input 1"), "{stderr}");
    let dead = json_lines(&dead);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["reason"], "unreadable_input");
    assert_eq!(dead[0]["file"], cut.display().to_string());
    let at = dead[0]["line"].as_u64().unwrap();
    assert!(at > 2000 && at <= 3000, "{at}");
    // Every line before the cut, and the next file's.
    assert!(stderr.contains(&format!("{} events", at)), "{stderr}");

    // Alone, a file unreadable from its first line is still a dead letter, not "0 events", and
    // the run fails (exit 2): it read nothing at all.
    let bad = dir.path().join("bad.jsonl.gz");
    std::fs::write(&bad, [0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    let dead = dir.path().join("dead-bad.jsonl");
    let out = run_fail(
        authwatch()
            .args([
                "replay",
                "--quiet",
                "--alerts",
                "/dev/null",
                "--dead-letter",
            ])
            .arg(&dead)
            .arg(&bad),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unreadable_input 1"), "{stderr}");
    let dead = json_lines(&dead);
    assert_eq!(
        (dead.len(), dead[0]["line"].as_u64()),
        (1, Some(1)),
        "{dead:?}"
    );
}

/// An output naming an input would empty it before it is read: refused, the input untouched.
/// So is one file for two outputs.
#[test]
fn an_output_that_is_an_input_is_refused_and_the_input_kept() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let line = r#"{"time":1767603600000,"provider":"okta","event_id":"a","activity":"logon","outcome":"success"}"#;
    std::fs::write(&input, format!("{line}\n")).unwrap();
    for flag in ["--alerts", "--dead-letter"] {
        let out = run_fail(
            authwatch()
                .args(["replay", "--quiet", flag])
                .arg(&input)
                .arg(&input),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is the input"), "{flag}: {err}");
    }
    let out = run_fail(
        authwatch()
            .args(["normalize", "--from", "native", "-o"])
            .arg(&input)
            .arg(&input),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the input"));
    // The same file under another name (a hard link), and standard input redirected from it.
    let link = dir.path().join("link.jsonl");
    std::fs::hard_link(&input, &link).unwrap();
    let out = run_fail(
        authwatch()
            .args(["replay", "--quiet", "--alerts"])
            .arg(&link)
            .arg(&input),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the input"));
    let out = run_fail(
        authwatch()
            .args(["replay", "--quiet", "--alerts"])
            .arg(&input)
            .arg("-")
            .stdin(std::fs::File::open(&input).unwrap()),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is the input read from standard input"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&input).unwrap(),
        format!("{line}\n")
    );
    let both = dir.path().join("both.jsonl");
    let out = run_fail(
        authwatch()
            .args(["replay", "--quiet", "--alerts"])
            .arg(&both)
            .arg("--dead-letter")
            .arg(&both)
            .arg(&input),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("also the alerts output"), "{err}");
}

#[test]
fn demo_replays_the_bundled_stream_and_names_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(
        authwatch()
            .current_dir(dir.path())
            .args(["demo", "--quiet"]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SEVERITY"), "{stdout}");
    assert!(stdout.contains("mfa_fatigue_success"), "{stdout}");
    assert!(stdout.contains("authwatch-demo-alerts.jsonl"), "{stdout}");
    let alerts = json_lines(&dir.path().join("authwatch-demo-alerts.jsonl"));
    assert!(alerts.iter().any(|a| a["category"] == "mfa_fatigue"));
    assert!(alerts.iter().any(|a| a["severity"] == "critical"));
    // Japanese summaries on request.
    let out = run_ok(
        authwatch()
            .current_dir(dir.path())
            .args(["demo", "--quiet", "--lang", "ja"]),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("プッシュ"));
}

#[test]
fn one_seed_gives_the_same_alerts_in_every_provider_format() {
    let dir = tempfile::tempdir().unwrap();
    let config = geo_config(dir.path());
    let alerts_of = |format: &str| {
        let events = dir.path().join(format!("gen-{format}.jsonl"));
        run_ok(
            authwatch()
                .args([
                    "gen", "--users", "150", "--days", "3", "--seed", "41", "--format", format,
                    "--out",
                ])
                .arg(&events),
        );
        let alerts = dir.path().join(format!("alerts-{format}.jsonl"));
        run_ok(
            authwatch()
                .args(["replay", "--quiet", "--config"])
                .arg(&config)
                .arg("--alerts")
                .arg(&alerts)
                .arg(&events),
        );
        // What an alert is about; `observed` legitimately differs where a provider's log cannot
        // carry a device detail. Duo, Keycloak and Google logs carry no risk verdict, so
        // risk_policy_block decides there at the third block instead of the first high-risk
        // one: the same alert (same id and window start), with a later window end.
        let mut seen: Vec<String> = json_lines(&alerts)
            .iter()
            .map(|a| {
                let window = if a["rule_id"] == "risk_policy_block" {
                    a["window"]["start"].to_string()
                } else {
                    a["window"].to_string()
                };
                format!(
                    "{} {} {} {window}",
                    a["alert_id"], a["rule_id"], a["entity"]
                )
            })
            .collect();
        seen.sort();
        seen
    };
    let native = alerts_of("native");
    assert!(native.len() > 50, "{} alerts", native.len());
    for format in [
        "okta", "entra", "duo", "auth0", "keycloak", "google", "ocsf", "ecs",
    ] {
        let other = alerts_of(format);
        // Google Workspace's login audit carries no user agent (docs/PROVIDERS.md): detections
        // that need the device fingerprint cannot fire on it.
        let needs_device = |a: &&String| {
            format == "google"
                && ["new_device_geo", "credential_stuffing_device"]
                    .iter()
                    .any(|r| a.contains(r))
        };
        let missing: Vec<_> = native
            .iter()
            .filter(|a| !other.contains(a) && !needs_device(a))
            .collect();
        let extra: Vec<_> = other.iter().filter(|a| !native.contains(a)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{format}: missing {missing:#?}\nextra {extra:#?}"
        );
    }
}

/// A stream sorted newest first (as the Entra portal downloads it) leaves every event but the
/// first minutes behind the watermark: replay still reads it as given (it streams), and its
/// summary says that the input looks newest first and how to sort it; a shuffled one is told
/// apart, and an ordered one gets no such note.
#[test]
fn a_newest_first_input_gets_a_hint_to_sort_it() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = generate(dir.path(), 60, 2, 5);
    let text = std::fs::read_to_string(&events).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let newest_first = dir.path().join("newest-first.jsonl");
    let reversed: String = lines.iter().rev().map(|l| format!("{l}\n")).collect();
    std::fs::write(&newest_first, reversed).unwrap();
    // Chunks of a hundred lines in time order, the newest chunk first: far out of order, but
    // mostly going forward.
    let shuffled = dir.path().join("shuffled.jsonl");
    let text: String = lines
        .chunks(100)
        .rev()
        .flatten()
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&shuffled, text).unwrap();
    let replay = |file: &std::path::Path, lang: &str| {
        let out = run_ok(
            authwatch()
                .args(["replay", "--quiet", "--lang", lang])
                .arg(file),
        );
        String::from_utf8(out.stderr).unwrap()
    };
    let err = replay(&newest_first, "en");
    assert!(err.contains("the input looks sorted newest first"), "{err}");
    assert!(err.contains("tac FILE"), "{err}");
    let err = replay(&newest_first, "ja");
    assert!(
        err.contains("入力は新しい順（降順）に並んでいるようです"),
        "{err}"
    );
    let err = replay(&shuffled, "en");
    assert!(err.contains("far out of time order"), "{err}");
    assert!(!err.contains("newest first"), "{err}");
    let err = replay(&events, "en");
    assert!(!err.contains("Note:"), "{err}");
}

/// Labels and alerts saved by Windows tools start with a UTF-8 byte-order mark, as event files
/// may: eval reads them as every other input does.
#[test]
fn eval_accepts_a_byte_order_mark() {
    let dir = tempfile::tempdir().unwrap();
    let (events, labels) = generate(dir.path(), 60, 2, 5);
    let alerts = dir.path().join("alerts.jsonl");
    run_ok(
        authwatch()
            .args(["replay", "--quiet", "--alerts"])
            .arg(&alerts)
            .arg(&events),
    );
    let with_bom = |path: &std::path::Path| {
        let out = dir.path().join(format!(
            "bom-{}",
            path.file_name().unwrap().to_str().unwrap()
        ));
        let mut bytes = b"\xef\xbb\xbf".to_vec();
        bytes.extend(std::fs::read(path).unwrap());
        std::fs::write(&out, bytes).unwrap();
        out
    };
    let plain = run_ok(
        authwatch()
            .args(["eval", "--labels"])
            .arg(&labels)
            .arg(&alerts),
    );
    let bom = run_ok(
        authwatch()
            .args(["eval", "--labels"])
            .arg(with_bom(&labels))
            .arg(with_bom(&alerts)),
    );
    assert_eq!(
        String::from_utf8_lossy(&bom.stdout),
        String::from_utf8_lossy(&plain.stdout)
    );
}
