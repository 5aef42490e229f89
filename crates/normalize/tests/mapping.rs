//! Declarative mappings: the worked example (examples/mappings/jumpcloud.yaml) and the errors a
//! mapping author sees.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use authwatch_normalize::{Limits, Mapping, MappingError, Normalizer, RejectKind};
use std::path::{Path, PathBuf};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/mappings")
        .join(name)
}

#[test]
fn jumpcloud_example_maps_every_sample() {
    let mapping = Mapping::load(&example("jumpcloud.yaml")).unwrap();
    assert_eq!(mapping.provider(), "jumpcloud");
    let text = std::fs::read_to_string(example("jumpcloud.jsonl")).unwrap();
    let got: Vec<String> = text
        .lines()
        .map(|l| {
            let e = mapping
                .normalize(l.as_bytes(), 9, &Limits::default())
                .unwrap();
            format!(
                "{}/{}/{}/{} {} {} {}",
                e.activity, e.factor, e.outcome, e.reason, e.user.name, e.app, e.reason_raw
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            "logon/password/success/none sakura@example.co.jp JumpCloud User Portal ",
            "logon/password/failure/invalid_credentials sakura@example.co.jp JumpCloud User Portal invalid credentials",
            "logon/totp/failure/invalid_otp sakura@example.co.jp JumpCloud User Portal invalid totp",
            "logon/push/success/none ren@example.co.jp Slack ",
            "account_lock/password/success/locked_out ren@example.co.jp JumpCloud User Portal user locked out",
            "logon/password/failure/other ghost@example.co.jp JumpCloud User Portal authentication service degraded",
        ]
    );
    let first = mapping
        .normalize(
            text.lines().next().unwrap().as_bytes(),
            9,
            &Limits::default(),
        )
        .unwrap();
    assert_eq!(first.time, 1_767_571_201_111);
    assert_eq!(first.ingest_time, 9);
    assert_eq!(first.tenant, "5e9a0b1c2d3e4f5a6b7c8d9e");
    assert_eq!(first.user.domain, "example.co.jp");
    assert_eq!(first.src.ip.unwrap().to_string(), "203.0.113.90");
    assert_eq!(first.device.os, "Windows 10");
    assert_eq!(first.provider_event_type, "user_login_attempt");
}

fn parse(yaml: &str) -> Result<Mapping, MappingError> {
    Mapping::parse(yaml, Path::new("m.yaml"))
}

const MINIMAL: &str = "provider: p
fields:
  event_id: /id
  time: { path: /t, format: epoch_s }
  activity: { const: logon }
  outcome: { path: /ok, map: { \"true\": success }, other: failure }
";

#[test]
fn time_formats_and_constants() {
    let m = parse(MINIMAL).unwrap();
    let e = m
        .normalize(
            br#"{"id":7,"t":1767571201.5,"ok":true}"#,
            0,
            &Limits::default(),
        )
        .unwrap();
    assert_eq!((e.time, e.event_id.as_str()), (1_767_571_201_500, "7"));
    assert_eq!(e.outcome, authwatch_event::Outcome::Success);
    let m = parse(&MINIMAL.replace("epoch_s", "\"%Y-%m-%d %H:%M:%S%.3f\"")).unwrap();
    let e = m
        .normalize(
            br#"{"id":"a","t":"2026-01-05 00:00:01.250","ok":"no"}"#,
            0,
            &Limits::default(),
        )
        .unwrap();
    assert_eq!(e.time, 1_767_571_201_250);
    assert_eq!(e.outcome, authwatch_event::Outcome::Failure);
    // A date-only pattern reads as midnight UTC.
    let m = parse(&MINIMAL.replace("epoch_s", "\"%Y-%m-%d\"")).unwrap();
    let e = m
        .normalize(
            br#"{"id":"a","t":"2026-01-05","ok":true}"#,
            0,
            &Limits::default(),
        )
        .unwrap();
    assert_eq!(e.time, 1_767_571_200_000);
    // Part of a time of day is not a date only: the time must be whole, never midnight.
    let m = parse(&MINIMAL.replace("epoch_s", "\"%Y-%m-%d %H\"")).unwrap();
    let r = m
        .normalize(
            br#"{"id":"a","t":"2026-01-05 09","ok":true}"#,
            0,
            &Limits::default(),
        )
        .unwrap_err();
    assert_eq!(r.kind, RejectKind::InvalidValue);
    let m = parse(&MINIMAL.replace("epoch_s", "epoch_ms")).unwrap();
    let r = m
        .normalize(br#"{"id":"a","t":"soon","ok":true}"#, 0, &Limits::default())
        .unwrap_err();
    assert_eq!(r.kind, RejectKind::InvalidValue);
    let r = m
        .normalize(br#"{"t":1767571201000}"#, 0, &Limits::default())
        .unwrap_err();
    assert_eq!(r.kind, RejectKind::MissingField);
}

#[test]
fn errors_name_file_line_and_column() {
    let e = parse(&MINIMAL.replace("const: logon", "const: login")).unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("m.yaml:5:"), "{text}");
    assert!(text.contains("login"), "{text}");
    let e = parse(&MINIMAL.replace("event_id: /id", "event_id: id")).unwrap_err();
    assert!(e.to_string().starts_with("m.yaml:3:"), "{e}");
    assert!(e.to_string().contains("JSON pointer"), "{e}");
    let e = parse(&MINIMAL.replace("format: epoch_s", "format: unix")).unwrap_err();
    assert!(e.to_string().contains("unknown time format"), "{e}");
    let e = parse(&format!("{MINIMAL}  colour: /c\n")).unwrap_err();
    assert!(e.to_string().contains("unknown field `colour`"), "{e}");
    // What would make every line fail is refused when the file is read, at its position.
    let e = parse(&MINIMAL.replace("event_id: /id", "event_id: \"\"")).unwrap_err();
    assert!(e.to_string().starts_with("m.yaml:3:"), "{e}");
    let e = parse(&MINIMAL.replace("event_id: /id", "event_id: /id~2x")).unwrap_err();
    assert!(e.to_string().contains("`~` must be followed"), "{e}");
    let e = parse(&MINIMAL.replace("format: epoch_s", "format: \"%Q\"")).unwrap_err();
    assert!(e.to_string().starts_with("m.yaml:4:"), "{e}");
    assert!(
        e.to_string().contains("not a valid strftime pattern"),
        "{e}"
    );
    let e = parse(&MINIMAL.replace("activity: { const: logon }", "activity: {}")).unwrap_err();
    assert!(e.to_string().starts_with("m.yaml:5:"), "{e}");
    assert!(e.to_string().contains("fields.activity: give"), "{e}");
    let e = parse(&MINIMAL.replace("provider: p", "provider: \"\"")).unwrap_err();
    assert!(e.to_string().starts_with("m.yaml:1:"), "{e}");
    let e = Mapping::load(Path::new("/nonexistent/m.yaml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/m.yaml: cannot read"),
        "{e}"
    );
}
