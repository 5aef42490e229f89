//! The SQL versions of compiled rules give the same alerts on the same streams; the archive
//! round-trips; the catalog answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::{ArchiveOptions, ArchiveWriter, Catalog, SqlDetections, SqlLimits, SqlRule, load_dir};
use authwatch_detect::{EngineLimits, RulePack};
use authwatch_event::{Alert, AuthEvent};
use authwatch_pipeline::{Checkpointed, StreamDetector};
use std::path::{Path, PathBuf};

const T0: i64 = 1_767_603_600_000; // 2026-01-05T09:00:00Z
const MIN: i64 = 60_000;
/// The pipeline's default allowed lateness.
const LATENESS: i64 = 5 * MIN;

fn sql_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql")
}

fn sql_rule(id: &str) -> SqlRule {
    load_dir(&sql_dir())
        .unwrap()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no sql/{id}.sql"))
}

#[allow(clippy::too_many_arguments)]
fn ev(
    t: i64,
    id: &str,
    tenant: &str,
    user: &str,
    ip: &str,
    activity: &str,
    outcome: &str,
    reason: Option<&str>,
) -> AuthEvent {
    let reason = reason.map_or(String::new(), |r| format!(r#","reason":"{r}""#));
    let line = format!(
        r#"{{"time":{t},"provider":"okta","tenant":"{tenant}","event_id":"{id}","user":{{"name":"{user}"}},"activity":"{activity}","outcome":"{outcome}"{reason},"src":{{"ip":"{ip}","asn":64500,"geo":{{"country":"JP","lat":35.6,"lon":139.7}}}},"app":"portal"}}"#
    );
    serde_json::from_str(&line).unwrap()
}

/// Runs the compiled pack and one SQL detection over the same ordered stream, driving both
/// with the pipeline's watermark (newest time − lateness); returns the alerts of `rule_id`.
fn both(stream: &[AuthEvent], rule_id: &str) -> (Vec<Alert>, Vec<Alert>) {
    let pack = RulePack::builtin().unwrap();
    let mut engine = pack.engine(EngineLimits::default());
    let mut sql = SqlDetections::new(vec![sql_rule(rule_id)], 1_000_000)
        .unwrap()
        .detector();
    let (mut compiled, mut from_sql) = (Vec::new(), Vec::new());
    let mut newest = i64::MIN;
    for e in stream {
        engine.on_event(e, &mut compiled);
        sql.on_event(e, &mut from_sql);
        if e.time > newest {
            newest = e.time;
            engine.on_watermark(newest - LATENESS, &mut compiled);
            sql.on_watermark(newest - LATENESS, &mut from_sql);
        }
    }
    engine.flush(&mut compiled);
    sql.flush(&mut from_sql);
    compiled.retain(|a| a.rule_id == rule_id);
    let key = |a: &Alert| (a.window.start, a.alert_id.clone());
    compiled.sort_by_key(key);
    from_sql.sort_by_key(key);
    (compiled, from_sql)
}

/// Benign traffic around the attacks: successes and the odd typo.
fn background(out: &mut Vec<AuthEvent>, from: i64, to: i64) {
    let mut t = from;
    let mut i = 0;
    while t < to {
        let user = format!("staff{}@acme.example", i % 40);
        let ip = format!("198.51.100.{}", 10 + i % 30);
        if i % 17 == 0 {
            // A mistyped name: a failure none of the compared rules' windows gathers enough of.
            out.push(ev(
                t,
                &format!("bg{i}"),
                "acme",
                &user,
                &ip,
                "logon",
                "failure",
                Some("unknown_user"),
            ));
        } else {
            out.push(ev(
                t,
                &format!("bg{i}"),
                "acme",
                &user,
                &ip,
                "logon",
                "success",
                None,
            ));
        }
        t += 37_000;
        i += 1;
    }
}

fn sorted(mut v: Vec<AuthEvent>) -> Vec<AuthEvent> {
    v.sort_by_key(|e| e.time);
    v
}

#[test]
fn credential_stuffing_sql_equals_compiled() {
    let mut s = Vec::new();
    background(&mut s, T0, T0 + 8 * 60 * MIN);
    // A leaked list from one address: 40 tries over 32 names, every 4th unknown, 10 s apart.
    let stuff = |s: &mut Vec<AuthEvent>, ip: &str, start: i64, tag: &str| {
        for i in 0..40 {
            let user = format!("victim{}@acme.example", i % 32);
            let reason = if i % 4 == 0 {
                "unknown_user"
            } else {
                "invalid_credentials"
            };
            s.push(ev(
                start + i * 10_000,
                &format!("{tag}{i}"),
                "acme",
                &user,
                ip,
                "logon",
                "failure",
                Some(reason),
            ));
        }
    };
    stuff(&mut s, "203.0.113.7", T0 + 30 * MIN, "a");
    // The same address again 30 minutes later: the incident is still open (suppress 1h).
    stuff(&mut s, "203.0.113.7", T0 + 67 * MIN, "b");
    // Another address three hours later: a new incident.
    stuff(&mut s, "203.0.113.99", T0 + 4 * 60 * MIN, "c");
    // Too slow to be stuffing: 40 tries an hour apart... spread over 20 minutes per 10.
    for i in 0..20 {
        let user = format!("slow{i}@acme.example");
        s.push(ev(
            T0 + 5 * 60 * MIN + i * 100_000,
            &format!("d{i}"),
            "acme",
            &user,
            "192.0.2.50",
            "logon",
            "failure",
            Some("unknown_user"),
        ));
    }
    let (compiled, sql) = both(&sorted(s), "credential_stuffing");
    assert_eq!(compiled.len(), 2, "{compiled:#?}");
    assert_eq!(sql, compiled);
}

#[test]
fn credential_stuffing_sql_counts_accounts_within_their_tenant_as_compiled() {
    let mut s = Vec::new();
    background(&mut s, T0, T0 + 3 * 60 * MIN);
    // 26 failures from one address, 20 s apart, two per name for 13 names (the first three
    // unknown), each name's two tries given by `account(k)` as (tenant, login).
    let tries = |s: &mut Vec<AuthEvent>,
                 ip: &str,
                 start: i64,
                 tag: &str,
                 account: &dyn Fn(i64) -> (&'static str, String)| {
        for k in 0..26i64 {
            let reason = if k / 2 < 3 {
                "unknown_user"
            } else {
                "invalid_credentials"
            };
            let (tenant, user) = account(k);
            s.push(ev(
                start + k * 20_000,
                &format!("{tag}{k}"),
                tenant,
                &user,
                ip,
                "logon",
                "failure",
                Some(reason),
            ));
        }
    };
    // The same names in two tenants: 26 accounts (a name in two tenants is two accounts), and
    // the compiled rule fires at the 25th failure. Counting names alone gave 13 users, under
    // the threshold of 15, and the SQL version reported nothing.
    tries(&mut s, "203.0.113.50", T0 + 30 * MIN, "x", &|k| {
        (
            ["acme", "globex"][(k % 2) as usize],
            format!("u{}@example.jp", k / 2),
        )
    });
    // The same names in one tenant, typed in two letter cases: 13 accounts tried twice each
    // (a login compares without ASCII case), stuffing in neither version.
    tries(&mut s, "203.0.113.51", T0 + 90 * MIN, "y", &|k| {
        let user = format!("u{}@example.jp", k / 2);
        (
            "acme",
            if k % 2 == 0 {
                user
            } else {
                user.to_ascii_uppercase()
            },
        )
    });
    let (compiled, sql) = both(&sorted(s), "credential_stuffing");
    assert_eq!(compiled.len(), 1, "{compiled:#?}");
    assert_eq!(
        compiled[0].entity.ip.map(|ip| ip.to_string()).as_deref(),
        Some("203.0.113.50")
    );
    assert_eq!(
        compiled[0].metrics["users"],
        authwatch_event::MetricValue::Count(25)
    );
    assert_eq!(sql, compiled);
}

#[test]
fn multi_source_password_spray_sql_equals_compiled() {
    let mut s = Vec::new();
    background(&mut s, T0, T0 + 6 * 60 * MIN);
    // 25 wrong passwords over 8 accounts from 5 addresses in 8 minutes, twice (the second
    // wave 2 hours later is a new incident), plus a wave in another tenant.
    let spray = |s: &mut Vec<AuthEvent>, tenant: &str, start: i64, tag: &str| {
        for i in 0..25 {
            let user = format!("user{}@{tenant}.example", i % 8);
            let ip = format!("203.0.113.{}", 20 + i % 5);
            s.push(ev(
                start + i * 20_000,
                &format!("{tag}{i}"),
                tenant,
                &user,
                &ip,
                "logon",
                "failure",
                Some("invalid_credentials"),
            ));
        }
    };
    spray(&mut s, "acme", T0 + 60 * MIN, "p");
    spray(&mut s, "acme", T0 + 3 * 60 * MIN, "q");
    spray(&mut s, "globex", T0 + 90 * MIN, "r");
    let (compiled, sql) = both(&sorted(s), "password_spray_multi_source");
    assert_eq!(compiled.len(), 3, "{compiled:#?}");
    assert_eq!(sql, compiled);
}

#[test]
fn lockout_wave_sql_equals_compiled() {
    let mut s = Vec::new();
    background(&mut s, T0, T0 + 6 * 60 * MIN);
    // 30 accounts locked 40 s apart, three of them twice; then a wave that stays below 25.
    for i in 0..30 {
        let user = format!("locked{i}@acme.example");
        s.push(ev(
            T0 + 45 * MIN + i * 40_000,
            &format!("l{i}"),
            "acme",
            &user,
            "198.51.100.9",
            "account_lock",
            "success",
            Some("locked_out"),
        ));
        if i % 10 == 3 {
            s.push(ev(
                T0 + 45 * MIN + i * 40_000 + 5_000,
                &format!("l{i}x"),
                "acme",
                &user,
                "198.51.100.9",
                "account_lock",
                "success",
                Some("locked_out"),
            ));
        }
    }
    for i in 0..20 {
        let user = format!("few{i}@acme.example");
        s.push(ev(
            T0 + 4 * 60 * MIN + i * 60_000,
            &format!("m{i}"),
            "acme",
            &user,
            "198.51.100.9",
            "account_lock",
            "success",
            Some("locked_out"),
        ));
    }
    let (compiled, sql) = both(&sorted(s), "account_lockout_wave");
    assert_eq!(compiled.len(), 1, "{compiled:#?}");
    assert_eq!(sql, compiled);
}

/// Entra and Keycloak log the login as typed; the compiled rules count `Ken@` and `ken@` as
/// one account, and so must their SQL versions.
#[test]
fn sql_twins_count_logins_without_ascii_case() {
    let mut s = Vec::new();
    background(&mut s, T0, T0 + 3 * 60 * MIN);
    // 25 wrong passwords from five addresses over 8 accounts, each typed in two letter cases:
    // 8 users, not 16.
    for i in 0..25i64 {
        let user = format!("user{}@acme.example", i % 8);
        let user = if (i / 8) % 2 == 0 {
            user
        } else {
            user.to_ascii_uppercase()
        };
        s.push(ev(
            T0 + 30 * MIN + i * 20_000,
            &format!("p{i}"),
            "acme",
            &user,
            &format!("203.0.113.{}", 20 + i % 5),
            "logon",
            "failure",
            Some("invalid_credentials"),
        ));
    }
    let (compiled, sql) = both(&sorted(s.clone()), "password_spray_multi_source");
    assert_eq!(compiled.len(), 1, "{compiled:#?}");
    assert_eq!(
        compiled[0].metrics["users"],
        authwatch_event::MetricValue::Count(8)
    );
    assert_eq!(sql, compiled);
    // 30 accounts locked 40 s apart, each locked again a minute later under its upper-case
    // login: the wave counts 25 accounts at the 25th account's first lock, not at the 13th.
    for i in 0..30i64 {
        let user = format!("locked{i}@acme.example");
        for (j, user) in [user.clone(), user.to_ascii_uppercase()].iter().enumerate() {
            s.push(ev(
                T0 + 2 * 60 * MIN + i * 40_000 + j as i64 * 60_000,
                &format!("l{i}-{j}"),
                "acme",
                user,
                "198.51.100.9",
                "account_lock",
                "success",
                Some("locked_out"),
            ));
        }
    }
    let (compiled, sql) = both(&sorted(s), "account_lockout_wave");
    assert_eq!(compiled.len(), 1, "{compiled:#?}");
    assert_eq!(sql, compiled);
}

#[test]
fn multi_source_spray_differs_where_the_compiled_veto_applies() {
    // One of the five addresses is also a single-source sprayer that password_spray reported
    // first: the compiled rule leaves its tries out (unless … scope: events), the SQL version
    // has no veto and still reports the wave. Documented in docs/SQL.md.
    let mut s = Vec::new();
    for i in 0..12 {
        // password_spray from 203.0.113.20: 6 accounts × 2 tries over 11 minutes.
        let user = format!("user{}@acme.example", i % 6);
        s.push(ev(
            T0 + i * 60_000,
            &format!("s{i}"),
            "acme",
            &user,
            "203.0.113.20",
            "logon",
            "failure",
            Some("invalid_credentials"),
        ));
    }
    for i in 0..25 {
        let user = format!("user{}@acme.example", i % 8);
        let ip = format!("203.0.113.{}", 20 + i % 5);
        s.push(ev(
            T0 + 12 * MIN + i * 10_000,
            &format!("p{i}"),
            "acme",
            &user,
            &ip,
            "logon",
            "failure",
            Some("invalid_credentials"),
        ));
    }
    let (compiled, sql) = both(&sorted(s), "password_spray_multi_source");
    assert!(compiled.is_empty(), "{compiled:#?}");
    assert_eq!(sql.len(), 1);
    assert_eq!(sql[0].entity.tenant.as_deref(), Some("acme"));
}

#[test]
fn tumbling_detection_alerts_once_per_window_and_key() {
    let rule = SqlRule::parse(
        Path::new("t.sql"),
        r#"/*---
id: fails_per_user
severity: low
cause_class: user
window: { kind: tumbling, size: 10m }
key: [user]
# Shorter than the gap between the two windows' failures: each window is its own incident.
suppress: 1m
summary: { en: "{user}: {n} failures within {window}, {first_seen} to {last_seen}", ja: "{user}: {window} 以内に {n} 件（{first_seen}〜{last_seen}）" }
steps: { en: [], ja: [] }
---*/
SELECT coalesce("user".name, "user".id) AS "user", min(time) AS first_seen, max(time) AS last_seen,
       count(*) AS n, window_start, window_end
FROM events WHERE outcome = 'failure'
GROUP BY 1, window_start, window_end HAVING count(*) >= 3"#,
    )
    .unwrap();
    let detections = SqlDetections::new(vec![rule], 1000).unwrap();
    let mut sql = detections.detector();
    let mut out = Vec::new();
    for i in 0..5 {
        // Failures at minutes 0..4 (window [0, 10m)), then at 10..14 (window [10m, 20m)).
        for base in [0, 10] {
            let e = ev(
                T0 + (base + i) * MIN,
                &format!("e{base}-{i}"),
                "acme",
                "kenji@acme.example",
                "192.0.2.1",
                "logon",
                "failure",
                Some("invalid_credentials"),
            );
            sql.on_event(&e, &mut out);
        }
    }
    sql.on_watermark(T0 + 10 * MIN, &mut out);
    assert_eq!(out.len(), 1, "the first window closed: {out:#?}");
    assert_eq!(out[0].metrics["n"], authwatch_event::MetricValue::Count(5));
    // Durations and times read as words in each language; the alert's own fields stay exact.
    assert_eq!(
        out[0].summary.en,
        "kenji@acme.example: 5 failures within 10m, 2026-01-05 09:00:00 UTC to 2026-01-05 09:04:00 UTC"
    );
    assert_eq!(
        out[0].summary.ja,
        "kenji@acme.example: 10 分 以内に 5 件（2026-01-05 09:00:00（UTC）〜2026-01-05 09:04:00（UTC））"
    );
    assert_eq!(out[0].first_seen.millis(), T0);
    assert_eq!(out[0].last_seen.millis(), T0 + 4 * MIN);
    assert_eq!(
        out[0].alert_id,
        Alert::make_id("fails_per_user", 1, "user=18:kenji@acme.example", T0)
    );
    // A snapshot taken now and restored elsewhere decides the second window the same way.
    let snap = sql.snapshot().unwrap();
    // Same state, same bytes.
    assert_eq!(sql.snapshot().unwrap(), snap);
    let mut again = detections.detector();
    again.restore(&snap).unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    sql.flush(&mut a);
    again.flush(&mut b);
    assert_eq!(a.len(), 1);
    assert_eq!(a, b);
}

#[test]
fn bad_detections_name_the_file_and_position() {
    let e = SqlRule::parse(Path::new("x.sql"), "SELECT 1")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("x.sql: missing header"), "{e}");
    let head = "/*---\nid: x\nseverity: low\ncause_class: user\nwindow: { kind: hopping, size: 10m, slide: 3m }\nkey: [user]\nsummary: {en: a, ja: b}\nsteps: {en: [], ja: []}\n---*/\nSELECT 1";
    let e = SqlRule::parse(Path::new("x.sql"), head)
        .unwrap_err()
        .to_string();
    assert!(e.contains("slide must divide"), "{e}");
    // max_span is for sessions: decided in parts once they span more than it (default gap).
    let e = SqlRule::parse(
        Path::new("x.sql"),
        &head.replace(
            "kind: hopping, size: 10m, slide: 3m",
            "kind: tumbling, size: 10m, max_span: 1h",
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("max_span is for session windows only"), "{e}");
    let spans = |window: &str| {
        let text = head.replace("kind: hopping, size: 10m, slide: 3m", window);
        SqlRule::parse(Path::new("x.sql"), &text).unwrap().window
    };
    assert_eq!(
        spans("kind: session, gap: 15m"),
        crate::WindowSpec::Session {
            gap_ms: 15 * MIN,
            max_span_ms: 15 * MIN
        }
    );
    assert_eq!(
        spans("kind: session, gap: 15m, max_span: 2h"),
        crate::WindowSpec::Session {
            gap_ms: 15 * MIN,
            max_span_ms: 120 * MIN
        }
    );
    let rule = SqlRule::parse(
        Path::new("y.sql"),
        "/*---\nid: y\nseverity: low\ncause_class: user\nwindow: { kind: session, gap: 10m }\nkey: [user]\nsummary: {en: a, ja: b}\nsteps: {en: [], ja: []}\n---*/\nSELECT nosuch FROM events",
    )
    .unwrap();
    let e = SqlDetections::new(vec![rule], 10)
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("y.sql: query:"), "{e}");
    assert!(e.contains("nosuch"), "{e}");
}

#[test]
fn shipped_detections_all_plan() {
    let rules = load_dir(&sql_dir()).unwrap();
    assert!(rules.len() >= 3);
    let detections = SqlDetections::new(rules, 1000).unwrap();
    for id in [
        "credential_stuffing",
        "password_spray_multi_source",
        "account_lockout_wave",
    ] {
        assert!(detections.rule_ids().contains(&id), "{id}");
    }
}

#[test]
fn archive_round_trips_through_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("arch").display().to_string();
    let mut events = Vec::new();
    background(&mut events, T0, T0 + 3 * 60 * MIN);
    let mut w = ArchiveWriter::open(ArchiveOptions {
        file_rows: 100,
        max_buffered_rows: 150,
        row_group_rows: 50,
        ..ArchiveOptions::new(&location)
    })
    .unwrap();
    for e in &events {
        w.add_event(e).unwrap();
    }
    let stats = w.finish().unwrap();
    assert_eq!(stats.events, events.len() as u64);
    assert!(stats.files >= 3, "{stats:?}");
    // Hive layout, complete files only (no staging leftovers).
    let hour = dir.path().join("arch/events/dt=2026-01-05/hour=10");
    let names: Vec<String> = std::fs::read_dir(&hour)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n.ends_with(".parquet")),
        "{names:?}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = Catalog::new().unwrap();
        c.add_archive(&location).await.unwrap();
        let r = c
            .query("SELECT count(*) AS n, count(DISTINCT dt) AS days FROM events WHERE hour = '10'")
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&r.batches).unwrap().to_string();
        let in_hour = events.iter().filter(|e| (e.time - T0) / (60 * MIN) == 1).count();
        assert!(text.contains(&format!("| {in_hour} ")), "{text}");
        let e = c.query("SELECT nosuch FROM events").await.unwrap_err().to_string();
        assert!(e.contains("nosuch"), "{e}");
        let e = c.query("DROP TABLE events").await.unwrap_err().to_string();
        assert!(e.contains("read-only"), "{e}");
        let r = c
            .query("SELECT round(haversine_km(35.68, 139.69, 34.69, 135.50)) AS km, time_bucket('15m', 1767604500123) AS b")
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&r.batches).unwrap().to_string();
        assert!(text.contains("| 396.0 ") && text.contains("1767604500000"), "{text}");
    });
}

async fn count_events(c: &Catalog) -> usize {
    let r = c.query("SELECT count(*) AS n FROM events").await.unwrap();
    let n = r.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    usize::try_from(n).unwrap()
}

async fn events_by_outcome(c: &Catalog) -> std::collections::BTreeMap<String, u64> {
    let r = c
        .query("SELECT CAST(outcome AS VARCHAR) AS o, count(*) AS n FROM events GROUP BY outcome")
        .await
        .unwrap();
    let mut m = std::collections::BTreeMap::new();
    for b in &r.batches {
        let o = datafusion::arrow::compute::cast(
            b.column(0),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let o = o
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .unwrap();
        let n = b
            .column(1)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .unwrap();
        for i in 0..b.num_rows() {
            m.insert(o.value(i).to_owned(), u64::try_from(n.value(i)).unwrap());
        }
    }
    m
}

/// A long-lived catalog (the endpoint of `authwatch run`) sees archive files written after its
/// first query once the listing expires, with statistics (`count(*)` is answered from them) and
/// grouping by a dictionary column (the archive's enumerations) agreeing with the new rows.
#[test]
fn catalog_sees_files_the_archive_writer_adds() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("arch").display().to_string();
    let write = |from: i64, to: i64| {
        let mut events = Vec::new();
        background(&mut events, from, to);
        let mut w = ArchiveWriter::open(ArchiveOptions::new(&location)).unwrap();
        for e in &events {
            w.add_event(e).unwrap();
        }
        w.finish().unwrap();
        events
    };
    let outcomes = |events: &[AuthEvent]| {
        let mut m = std::collections::BTreeMap::new();
        for e in events {
            *m.entry(e.outcome.as_str().to_owned()).or_insert(0u64) += 1;
        }
        m
    };
    let first = write(T0, T0 + 60 * MIN);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut c = Catalog::with_listing_ttl(std::time::Duration::from_millis(100)).unwrap();
    rt.block_on(async {
        c.add_archive(&location).await.unwrap();
        assert_eq!(count_events(&c).await, first.len());
        assert_eq!(events_by_outcome(&c).await, outcomes(&first));
        let plan = c
            .query("EXPLAIN SELECT outcome, count(*) FROM events GROUP BY outcome")
            .await
            .unwrap();
        let plan = datafusion::arrow::util::pretty::pretty_format_batches(&plan.batches)
            .unwrap()
            .to_string();
        assert!(plan.contains("InternedAggregateExec"), "{plan}");
    });
    // The writer runs its own runtime, as it does next to the pipeline.
    let second = write(T0 + 120 * MIN, T0 + 180 * MIN);
    std::thread::sleep(std::time::Duration::from_millis(250));
    let all: Vec<AuthEvent> = first.iter().chain(&second).cloned().collect();
    rt.block_on(async {
        assert_eq!(count_events(&c).await, all.len());
        assert_eq!(events_by_outcome(&c).await, outcomes(&all));
    });
}

/// The archive's Parquet files carry string views in their Arrow schema, so the reader builds
/// views without copying; archives written before that (plain strings) answer the same queries
/// with the same rows and types.
#[test]
fn archives_store_strings_as_views_and_older_ones_read_the_same() {
    use datafusion::arrow::datatypes::{DataType, Fields};
    let dir = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    background(&mut events, T0, T0 + 60 * MIN);
    let new = dir.path().join("new").display().to_string();
    let mut w = ArchiveWriter::open(ArchiveOptions::new(&new)).unwrap();
    for e in &events {
        w.add_event(e).unwrap();
    }
    w.finish().unwrap();
    // The older layout: the same events, one file, the event schema's plain strings.
    let old = dir.path().join("old");
    let part = old.join("events/dt=2026-01-05/hour=09");
    std::fs::create_dir_all(&part).unwrap();
    let batch = crate::events_to_batch(&events).unwrap();
    let file = std::fs::File::create(part.join("part-old-000001.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let written = std::fs::read_dir(dir.path().join("new/events/dt=2026-01-05/hour=09"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(written).unwrap(),
    )
    .unwrap();
    let file_schema = reader.schema();
    let user = file_schema.field_with_name("user").unwrap();
    let DataType::Struct(fields) = user.data_type() else {
        panic!("{user:?}");
    };
    let name = Fields::find(fields, "name").unwrap().1;
    assert_eq!(name.data_type(), &DataType::Utf8View);

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let answers = |location: String| {
        rt.block_on(async {
            let mut c = Catalog::new().unwrap();
            c.add_archive(&location).await.unwrap();
            let mut out = Vec::new();
            for sql in [
                "SELECT arrow_typeof(\"user\".name) AS t, arrow_typeof(event_id) AS e \
                 FROM events LIMIT 1",
                "SELECT src.geo.country AS c, \"user\".name AS u, count(*) AS n FROM events \
                 GROUP BY 1, 2 ORDER BY 1, 2",
                "SELECT src.geo.country AS c, count(DISTINCT \"user\".name) AS users, \
                 count(DISTINCT src.ip) AS ips FROM events GROUP BY 1 ORDER BY 1",
            ] {
                let r = c.query(sql).await.unwrap();
                out.push(
                    datafusion::arrow::util::pretty::pretty_format_batches(&r.batches)
                        .unwrap()
                        .to_string(),
                );
            }
            out
        })
    };
    let (new, old) = (answers(new), answers(old.display().to_string()));
    assert!(new[0].contains("| Utf8View | Utf8View |"), "{}", new[0]);
    assert!(new[1].lines().count() > 10, "{}", new[1]);
    assert_eq!(new, old);
}

/// A detections directory with no `.sql` file is an error naming it; extensions match in any
/// case.
#[test]
fn a_detections_directory_without_detections_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("readme.md"), "no detection").unwrap();
    let e = load_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("no detections"), "{e}");
    let one = std::fs::read_dir(sql_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "sql"))
        .unwrap();
    std::fs::copy(&one, dir.path().join("ONE.SQL")).unwrap();
    assert_eq!(load_dir(dir.path()).unwrap().len(), 1);
}

/// Feeds `stream` to `detector` as the pipeline does (each event, then the watermark when the
/// newest time grows) and flushes; returns every alert.
fn drive(detector: &mut crate::SqlDetector, stream: &[AuthEvent]) -> Vec<Alert> {
    let mut out = Vec::new();
    let mut newest = i64::MIN;
    for e in stream {
        detector.on_event(e, &mut out);
        if e.time > newest {
            newest = e.time;
            detector.on_watermark(newest - LATENESS, &mut out);
        }
    }
    detector.flush(&mut out);
    out
}

/// A failed sign-in of `user` with both a provider id and a login name.
fn failure_with_id(t: i64, id: &str, user_id: &str, name: &str) -> AuthEvent {
    let line = format!(
        r#"{{"time":{t},"provider":"okta","tenant":"t1","event_id":"{id}","user":{{"id":"{user_id}","name":"{name}"}},"activity":"logon","factor":"password","outcome":"failure","reason":"invalid_credentials","src":{{"ip":"198.51.100.7"}}}}"#
    );
    serde_json::from_str(&line).unwrap()
}

/// `n` failed sign-ins from 203.0.113.66, `every` ms apart from `start`, over 20 accounts of
/// which 8 are unknown: a credential-stuffing burst once 25 have come.
fn stuffing_burst(s: &mut Vec<AuthEvent>, start: i64, n: i64, every: i64, tag: &str) {
    for i in 0..n {
        let reason = if i % 20 < 8 {
            "unknown_user"
        } else {
            "invalid_credentials"
        };
        s.push(ev(
            start + i * every,
            &format!("{tag}{i}"),
            "acme",
            &format!("{tag}{}@acme.example", i % 20),
            "203.0.113.66",
            "logon",
            "failure",
            Some(reason),
        ));
    }
}

/// Regression (review repro E): an incident was forgotten once `suppress` had passed since
/// its last activity, even while a session of its key that started within `suppress` was
/// still open; that session then alerted a second time where the compiled rule absorbs it.
#[test]
fn credential_stuffing_keeps_its_incident_for_a_session_it_absorbs() {
    for later in [55, 60, 64] {
        let mut s = Vec::new();
        background(&mut s, T0, T0 + 3 * 60 * MIN);
        let mut burst = |start, n, every, tag| stuffing_burst(&mut s, start, n, every, tag);
        // The first burst's incident ends at 4m50s; the second burst starts `later` minutes
        // in, within the hour of suppression, and lasts past it.
        burst(T0, 30, 10_000, "u");
        burst(T0 + later * MIN, 40, 20_000, "v");
        let (compiled, sql) = both(&sorted(s), "credential_stuffing");
        // The second burst decides 8 minutes after it starts: within the hour after the first
        // incident's condition last held (4m50s) only when it starts 55 minutes in.
        let expected = if later == 55 { 1 } else { 2 };
        assert_eq!(compiled.len(), expected, "{later}: {compiled:#?}");
        assert_eq!(sql, compiled, "second burst {later} min in");
    }
}

/// A few failures from the address between two bursts, below every threshold, do not stretch
/// the first burst's incident over the second: in both engines the incident ends `suppress`
/// (1 h) after the condition last held, and the burst 80 minutes in is a second alert.
#[test]
fn stray_failures_below_the_thresholds_do_not_prolong_an_incident() {
    let mut s = Vec::new();
    background(&mut s, T0, T0 + 3 * 60 * MIN);
    let mut burst = |start, n, every, tag| stuffing_burst(&mut s, start, n, every, tag);
    burst(T0, 30, 10_000, "u");
    burst(T0 + 50 * MIN, 5, 20_000, "w");
    burst(T0 + 80 * MIN, 30, 10_000, "v");
    let (compiled, sql) = both(&sorted(s), "credential_stuffing");
    assert_eq!(compiled.len(), 2, "{compiled:#?}");
    assert_eq!(sql, compiled);
}

/// Regression (review repro C): a session detection's rows whose key column did not hold the
/// engine's key (`"user".id` where the engine keys by login name), or whose `last_seen` lay
/// after the session's last row (`window_end`), were dropped without a word.
#[test]
fn session_rows_find_their_session_or_count_as_failures() {
    let detection = |id: &str, select: &str| {
        SqlRule::parse(
            Path::new(&format!("{id}.sql")),
            &format!(
                r#"/*---
id: {id}
severity: medium
cause_class: attack
window: {{ kind: session, gap: 10m }}
key: [user]
summary: {{ en: "x {{user}}", ja: "x {{user}}" }}
steps: {{ en: [], ja: [] }}
---*/
SELECT {select}, count(*) AS n FROM events WHERE outcome = 'failure'
GROUP BY 1, window_start, window_end HAVING count(*) >= 3"#
            ),
        )
        .unwrap()
    };
    let rules = vec![
        // The documented key: the login name.
        detection(
            "by_name",
            r#""user".name AS "user", min(time) AS first_seen, max(time) AS last_seen"#,
        ),
        // The session's end as last_seen: after its last row.
        detection(
            "window_end_last",
            r#""user".name AS "user", min(time) AS first_seen, window_end AS last_seen"#,
        ),
        // Another key text, but the row says which session it is about.
        detection(
            "by_id_with_window",
            r#""user".id AS "user", min(time) AS first_seen, max(time) AS last_seen, window_start"#,
        ),
        detection(
            "by_id_with_event",
            r#""user".id AS "user", min(time) AS first_seen, max(time) AS last_seen,
               max(event_id) AS event_id"#,
        ),
        // Another key text and nothing else: no session can be told; a failure, not silence.
        detection(
            "by_id_alone",
            r#""user".id AS "user", min(time) AS first_seen, max(time) AS last_seen"#,
        ),
    ];
    let detections = SqlDetections::new(rules, 1000).unwrap();
    let mut stream: Vec<AuthEvent> = (0..5)
        .map(|i| {
            failure_with_id(
                T0 + i * 2 * MIN,
                &format!("e{i}"),
                "00u123",
                "alice@example.com",
            )
        })
        .collect();
    // Another user's session at the same times, so that times alone name no session.
    stream.extend((0..5).map(|i| {
        failure_with_id(
            T0 + i * 2 * MIN + 1,
            &format!("f{i}"),
            "00u456",
            "bob@example.com",
        )
    }));
    let alerts = drive(&mut detections.detector(), &sorted(stream));
    let count = |rule: &str| alerts.iter().filter(|a| a.rule_id == rule).count();
    assert_eq!(count("by_name"), 2, "{alerts:#?}");
    assert_eq!(count("window_end_last"), 2, "{alerts:#?}");
    assert_eq!(count("by_id_with_window"), 2, "{alerts:#?}");
    assert_eq!(count("by_id_with_event"), 2, "{alerts:#?}");
    assert_eq!(count("by_id_alone"), 0, "{alerts:#?}");
    // The alert keeps the key the query returned.
    assert!(alerts.iter().any(|a| {
        a.rule_id == "by_id_with_event"
            && a.entity
                .user
                .as_ref()
                .is_some_and(|u| u.as_str() == "00u123")
    }));
    let failures: std::collections::HashMap<String, u64> =
        detections.failures().into_iter().collect();
    assert_eq!(failures["by_id_alone"], 2, "one per row: {failures:?}");
    for ok in [
        "by_name",
        "window_end_last",
        "by_id_with_window",
        "by_id_with_event",
    ] {
        assert_eq!(failures[ok], 0, "{ok}: {failures:?}");
    }
}

/// Regression (review repro A): tumbling and hopping windows started at the window of the
/// first rows buffered, so on-time events that came later, out of order, for an earlier window
/// were never decided.
#[test]
fn out_of_order_rows_of_an_earlier_window_are_decided() {
    let detection = |text: &str| SqlRule::parse(Path::new("x.sql"), text).unwrap();
    let burst = detection(
        r#"/*---
id: tenant_burst
severity: medium
cause_class: attack
window: { kind: tumbling, size: 1h }
key: [tenant]
suppress: 1h
summary: { en: "burst {tenant} {n}", ja: "burst {tenant} {n}" }
steps: { en: [], ja: [] }
---*/
SELECT tenant, min(time) AS first_seen, max(time) AS last_seen, count(*) AS n
FROM events WHERE outcome = 'failure' AND tenant = 't1'
GROUP BY tenant, window_start HAVING count(*) >= 3"#,
    );
    let hopping = detection(
        r#"/*---
id: tenant_burst_hop
severity: medium
cause_class: attack
window: { kind: hopping, size: 1h, slide: 30m }
key: [tenant]
suppress: 1m
summary: { en: "burst {tenant} {n}", ja: "burst {tenant} {n}" }
steps: { en: [], ja: [] }
---*/
SELECT tenant, min(time) AS first_seen, max(time) AS last_seen, count(*) AS n
FROM events WHERE outcome = 'failure' AND tenant = 't1'
GROUP BY tenant, window_start HAVING count(*) >= 3"#,
    );
    // A session detection over everything: its windows close every few seconds, so the
    // detector takes in rows long before the tumbling window's first end.
    let session = detection(
        r#"/*---
id: quiet_session
severity: low
cause_class: user
window: { kind: session, gap: 1s }
key: [user]
summary: { en: "x", ja: "x" }
steps: { en: [], ja: [] }
---*/
SELECT "user".name AS "user", min(time) AS first_seen, max(time) AS last_seen
FROM events GROUP BY "user".name, window_start HAVING count(*) > 1000000"#,
    );
    let at = |m: i64, s: i64| T0 + m * MIN + s * 1000;
    let fail = |t: i64, id: &str| {
        ev(
            t,
            id,
            "t1",
            "alice",
            "198.51.100.7",
            "logon",
            "failure",
            Some("invalid_credentials"),
        )
    };
    let ok = |t: i64, id: &str| ev(t, id, "t2", "bob", "198.51.100.8", "logon", "success", None);
    // 10:50 a success; 11:00:30 a failure of the window [11:00, 12:00); then, on time (within
    // the 5 minutes of lateness), three failures of [10:00, 11:00).
    let mut stream = vec![
        ok(at(110, 0), "e1"),
        fail(at(120, 30), "e2"),
        fail(at(116, 0), "e3"),
        fail(at(117, 0), "e4"),
        fail(at(118, 0), "e5"),
    ];
    stream.extend((0..40).map(|i| ok(at(122 + 2 * i, 0), &format!("b{i}"))));
    let detections = SqlDetections::new(vec![burst, hopping, session], 1000).unwrap();
    let alerts = drive(&mut detections.detector(), &stream);
    let burst: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.rule_id == "tenant_burst")
        .collect();
    assert_eq!(burst.len(), 1, "{alerts:#?}");
    assert_eq!(burst[0].first_seen.millis(), at(116, 0));
    assert_eq!(
        burst[0].metrics["n"],
        authwatch_event::MetricValue::Count(3)
    );
    // Hopping: [10:00, 11:00) and [10:30, 11:30) hold the three.
    let hop: Vec<i64> = alerts
        .iter()
        .filter(|a| a.rule_id == "tenant_burst_hop")
        .map(|a| a.first_seen.millis())
        .collect();
    assert_eq!(hop, vec![at(116, 0)], "{alerts:#?}");
}

/// A detection's load errors name the position in the `.sql` file, counted from its top (the
/// parser and the planner count from the query's first line, below the YAML header).
#[test]
fn load_errors_name_the_line_and_column_in_the_file() {
    let header = "/*---\nid: pos\nseverity: low\ncause_class: user\nwindow: { kind: tumbling, size: 1h }\nkey: [country]\nsummary: {en: a, ja: b}\nsteps: {en: [], ja: []}\n---*/\n";
    // The query starts on line 10 of the file.
    let plan = |query: &str| {
        let text = format!("{header}{query}");
        let rule = SqlRule::parse(Path::new("pos.sql"), &text).unwrap();
        SqlDetections::new(vec![rule], 10)
            .err()
            .expect("a load error")
            .to_string()
    };
    // A syntax error on the query's second line (the file's 11th): the parser's own position.
    let e = plan(
        "SELECT src.geo.country AS country, min(time) AS first_seen, max(time) AS last_seen\nFROM events WHER x\nGROUP BY 1",
    );
    assert!(e.starts_with("pos.sql: query:"), "{e}");
    assert!(e.contains("found: x at line 11, column 18"), "{e}");
    assert!(!e.contains("Line:"), "{e}");
    // A column that does not exist, on the file's 12th line: the planner's span.
    let e = plan(
        "SELECT src.geo.country AS country, min(time) AS first_seen,\n       max(time) AS last_seen\nFROM events WHERE countryy IS NOT NULL\nGROUP BY 1",
    );
    assert!(e.contains("countryy"), "{e}");
    assert!(e.ends_with("(at line 12, column 19)"), "{e}");
    // On the query's first line, which is the file's 10th.
    let e = plan(
        "SELECT nosuch AS country, min(time) AS first_seen, max(time) AS last_seen FROM events GROUP BY 1",
    );
    assert!(e.ends_with("(at line 10, column 8)"), "{e}");
    // A struct field that does not exist: DataFusion checks it while optimizing, without a
    // span, so the field's first use is named.
    let e = plan(
        "SELECT src.geo.country AS country, min(time) AS first_seen,\n       max(time) AS last_seen\nFROM events WHERE src.geo.contry IS NOT NULL\nGROUP BY 1",
    );
    assert!(
        e.contains("Field contry not found in struct (.contry: first at line 12, column 27)"),
        "{e}"
    );
    assert!(!e.contains("Optimizer rule"), "{e}");
    // A query that starts on the header's last line counts its columns from there.
    let text = format!(
        "{}---*/ SELECT nosuch AS country, min(time) AS first_seen, max(time) AS last_seen FROM events GROUP BY 1",
        header.trim_end_matches("---*/\n")
    );
    let rule = SqlRule::parse(Path::new("pos.sql"), &text).unwrap();
    let e = SqlDetections::new(vec![rule], 10)
        .err()
        .unwrap()
        .to_string();
    assert!(e.ends_with("(at line 9, column 14)"), "{e}");
}

/// As [`both`], with the detections' limits; the SQL side is not flushed when `flush` is false
/// (`authwatch run` never flushes: only the watermark decides), and with `restore_at` the SQL
/// detector is snapshot after that many events and the run goes on in a detector restored from
/// it. Returns the detections too, for their counters.
fn both_with(
    stream: &[AuthEvent],
    rule_id: &str,
    limits: SqlLimits,
    flush: bool,
    restore_at: Option<usize>,
) -> (Vec<Alert>, Vec<Alert>, SqlDetections) {
    let pack = RulePack::builtin().unwrap();
    let mut engine = pack.engine(EngineLimits::default());
    let detections = SqlDetections::with_limits(vec![sql_rule(rule_id)], limits).unwrap();
    let mut sql = detections.detector();
    let (mut compiled, mut from_sql) = (Vec::new(), Vec::new());
    let mut newest = i64::MIN;
    for (n, e) in stream.iter().enumerate() {
        if restore_at == Some(n) {
            let snap = sql.snapshot().unwrap();
            sql = detections.detector();
            sql.restore(&snap).unwrap();
        }
        engine.on_event(e, &mut compiled);
        sql.on_event(e, &mut from_sql);
        if e.time > newest {
            newest = e.time;
            engine.on_watermark(newest - LATENESS, &mut compiled);
            sql.on_watermark(newest - LATENESS, &mut from_sql);
        }
    }
    engine.flush(&mut compiled);
    if flush {
        sql.flush(&mut from_sql);
    }
    compiled.retain(|a| a.rule_id == rule_id);
    let key = |a: &Alert| (a.window.start, a.alert_id.clone());
    compiled.sort_by_key(key);
    from_sql.sort_by_key(key);
    (compiled, from_sql, detections)
}

/// A failed sign-in from `ip` of `user` of tenant acme.
fn failure(t: i64, id: &str, user: &str, ip: &str, reason: &str) -> AuthEvent {
    ev(t, id, "acme", user, ip, "logon", "failure", Some(reason))
}

/// Regression (review, mk_burst.py): the SQL twins joined every row of a session with every
/// other and built an evidence list per row, so 5,000 failures from one address in 5 minutes
/// took 583 s and 5.5 GB. Now window functions slide over the rows in time order and evidence
/// is gathered for the deciding row alone: 3,000 failures fit in a 16 MiB pool (the self-join
/// needed hundreds of MiB for them) and give the compiled rule's alert.
#[test]
fn a_burst_from_one_address_is_decided_in_linear_memory() {
    let mut s = Vec::new();
    background(&mut s, T0, T0 + 2 * 60 * MIN);
    for i in 0..3000 {
        let reason = if i % 3 == 0 {
            "unknown_user"
        } else {
            "invalid_credentials"
        };
        s.push(failure(
            T0 + 60 * MIN + i * 100,
            &format!("s{i:06}"),
            &format!("victim{i}@acme.example"),
            "203.0.113.66",
            reason,
        ));
    }
    let limits = SqlLimits {
        max_buffered_rows: 1_000_000,
        max_memory: 16 << 20,
    };
    let (compiled, sql, detections) =
        both_with(&sorted(s), "credential_stuffing", limits, true, None);
    assert_eq!(compiled.len(), 1, "{compiled:#?}");
    assert_eq!(sql, compiled);
    assert_eq!(
        detections.failures(),
        vec![("credential_stuffing".into(), 0)]
    );
}

/// HEAD's credential_stuffing.sql before the window functions: every failure joined with every
/// other of its session, an evidence list per failure. Quadratic: a test of the memory pool.
const SELF_JOIN_STUFFING: &str = r#"/*---
id: stuffing_self_join
severity: high
cause_class: attack
window: { kind: session, gap: 15m }
key: [ip]
suppress: 1h
summary: { en: "{ip} {failures}", ja: "{ip} {failures}" }
steps: { en: [], ja: [] }
---*/
WITH f AS (
  SELECT src.ip AS ip, "user".name AS account, CAST(reason AS VARCHAR) AS reason,
         time, event_id, window_start
  FROM events
  WHERE activity = 'logon' AND outcome = 'failure' AND src.ip IS NOT NULL
),
d AS (
  SELECT e.ip, e.time, e.event_id, count(*) AS failures,
         count(DISTINCT w.account) AS users,
         sum(CASE WHEN w.reason = 'unknown_user' THEN 1 ELSE 0 END) AS unknown,
         min(w.time) AS first_seen,
         array_agg(w.event_id ORDER BY w.time, w.event_id) AS evidence
  FROM f e
  JOIN f w ON w.ip = e.ip AND w.window_start = e.window_start
          AND w.time BETWEEN e.time - duration_ms('15m') AND e.time
  GROUP BY e.ip, e.window_start, e.time, e.event_id
)
SELECT ip, first_seen, time AS last_seen, event_id, failures, users, evidence
FROM d
WHERE failures >= 25 AND users >= 15 AND unknown >= 5"#;

/// Each detection's session has a bounded memory pool (`sql.max_memory_mib`): a window far
/// larger than usual fails its own execution, counted as a failure of the detection, where it
/// took the whole process before; the detection goes on deciding the next windows.
#[test]
fn an_execution_beyond_the_memory_pool_fails_alone_and_is_counted() {
    let rule = SqlRule::parse(Path::new("self_join.sql"), SELF_JOIN_STUFFING).unwrap();
    let detections = SqlDetections::with_limits(
        vec![rule],
        SqlLimits {
            max_buffered_rows: 1_000_000,
            max_memory: 4 << 20,
        },
    )
    .unwrap();
    let mut s = Vec::new();
    // 1,000 failures from one address within 2 minutes: half a million pairs, and an evidence
    // list of up to 1,000 ids for each failure.
    for i in 0..1000 {
        let reason = if i % 3 == 0 {
            "unknown_user"
        } else {
            "invalid_credentials"
        };
        s.push(failure(
            T0 + i * 120,
            &format!("b{i:05}"),
            &format!("victim{i}@acme.example"),
            "203.0.113.66",
            reason,
        ));
    }
    // An hour later, ordinary stuffing from another address: 40 tries 10 s apart.
    for i in 0..40 {
        let reason = if i % 4 == 0 {
            "unknown_user"
        } else {
            "invalid_credentials"
        };
        s.push(failure(
            T0 + 60 * MIN + i * 10_000,
            &format!("c{i:02}"),
            &format!("victim{}@acme.example", i % 32),
            "203.0.113.7",
            reason,
        ));
    }
    let alerts = drive(&mut detections.detector(), &sorted(s));
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(
        alerts[0].entity.ip.map(|ip| ip.to_string()).as_deref(),
        Some("203.0.113.7")
    );
    assert_eq!(
        detections.failures(),
        vec![("stuffing_self_join".into(), 1)],
        "the burst's execution failed, and only it"
    );
    let stats = &detections.stats()[0].1;
    assert_eq!((stats.executions, stats.alerts, stats.errors), (2, 1, 1));
}

/// Steady traffic of `key`'s kind around an attack: every `every` ms from `from` to `to`, a
/// failure (or lock) that no window gathers enough of, so that the key's session never has
/// `gap` of quiet.
fn steady(
    out: &mut Vec<AuthEvent>,
    from: i64,
    to: i64,
    every: i64,
    make: &dyn Fn(i64, i64) -> AuthEvent,
) {
    let mut t = from;
    let mut i = 0;
    while t < to {
        out.push(make(t, i));
        t += every;
        i += 1;
    }
}

/// Regression (review, mk_busy.py / mk_steady.py): a session closed only after `gap` of quiet,
/// so under `authwatch run` (never flushed) a key with steady traffic — a busy tenant, a
/// corporate egress address — never had its session decided, its SQL alert never fired, and
/// once `sql.max_buffered_rows` was reached the oldest rows (the attack) were dropped. Now a
/// session is decided in parts once its part not decided yet spans more than `max_span`
/// (default: `gap`), each part reading the `gap` before it as context: the alerts are the
/// compiled rules' — same alert_id, window, metrics and evidence — wherever the attack falls
/// relative to the parts, without a flush, with a buffer of 200 rows, and across a snapshot.
#[test]
fn steady_keys_are_decided_in_parts_as_the_compiled_rules_slide() {
    let limits = SqlLimits {
        max_buffered_rows: 200,
        ..SqlLimits::default()
    };
    for offset in [
        0,
        4 * MIN + 10_000,
        7 * MIN + 30_000,
        11 * MIN + 50_000,
        14 * MIN,
    ] {
        let attack = T0 + 3 * 60 * MIN + offset;
        let end = T0 + 8 * 60 * MIN;
        // A wrong password every 2 minutes from tenant acme's egress address, by one of two
        // staff accounts, for 8 hours.
        let egress = |s: &mut Vec<AuthEvent>| {
            steady(s, T0, end, 2 * MIN, &|t, i| {
                failure(
                    t,
                    &format!("bg{i}"),
                    &format!("staff{}@acme.example", i % 2),
                    "198.51.100.1",
                    "invalid_credentials",
                )
            })
        };
        // Credential stuffing through that egress address: 40 tries over 32 names.
        let mut stuffing = Vec::new();
        egress(&mut stuffing);
        for i in 0..40 {
            let reason = if i % 4 == 0 {
                "unknown_user"
            } else {
                "invalid_credentials"
            };
            stuffing.push(failure(
                attack + i * 10_000 + 1,
                &format!("cs{i}"),
                &format!("victim{}@acme.example", i % 32),
                "198.51.100.1",
                reason,
            ));
        }
        // A distributed spray against the tenant: 24 tries over 6 accounts from 4 addresses.
        let mut spray = Vec::new();
        egress(&mut spray);
        for i in 0..24 {
            spray.push(failure(
                attack + i * 20_000 + 2,
                &format!("ps{i}"),
                &format!("user{}@acme.example", i % 6),
                &format!("203.0.113.{}", 20 + i % 4),
                "invalid_credentials",
            ));
        }
        // An account of the tenant locked every 7 minutes (one of three), and a wave of 30
        // accounts locked 40 s apart.
        let mut wave = Vec::new();
        steady(&mut wave, T0, end, 7 * MIN, &|t, i| {
            ev(
                t,
                &format!("bg{i}"),
                "acme",
                &format!("staff{}@acme.example", i % 3),
                "198.51.100.1",
                "account_lock",
                "success",
                Some("locked_out"),
            )
        });
        for i in 0..30 {
            wave.push(ev(
                attack + i * 40_000 + 3,
                &format!("lw{i}"),
                "acme",
                &format!("locked{i}@acme.example"),
                "198.51.100.9",
                "account_lock",
                "success",
                Some("locked_out"),
            ));
        }
        for (rule, stream) in [
            ("credential_stuffing", stuffing),
            ("password_spray_multi_source", spray),
            ("account_lockout_wave", wave),
        ] {
            let stream = sorted(stream);
            let half = Some(stream.len() / 2);
            let (compiled, sql, detections) = both_with(&stream, rule, limits, false, half);
            assert_eq!(compiled.len(), 1, "{rule} at +{offset} ms: {compiled:#?}");
            assert_eq!(sql, compiled, "{rule}, attack at +{offset} ms");
            let stats = &detections.stats()[0].1;
            assert_eq!(stats.evicted, 0, "{rule}: {stats:?}");
            assert_eq!(stats.errors, 0, "{rule}: {stats:?}");
        }
    }
}

/// An event that arrives out of order, within the allowed lateness, is counted by the SQL
/// twin at its own time, where the compiled rule counted the window as it stood when each
/// event arrived: the SQL twin can then decide at an earlier event, with another first_seen
/// and so another alert_id (review repro ooo.jsonl; docs/SQL.md, "Where the two differ").
#[test]
fn an_out_of_order_event_can_make_the_sql_twin_decide_earlier() {
    let lock = |t: i64, n: u32| {
        ev(
            t,
            &format!("lk{n:02}"),
            "acme",
            &format!("u{n}@acme.example"),
            "198.51.100.7",
            "account_lock",
            "success",
            Some("locked_out"),
        )
    };
    let at = |m: i64, s: i64| T0 + 60 * MIN + m * MIN + s * 1000;
    // 10:00 one lock, 10:05 to 10:28 a lock a minute; then 10:30:30 and 10:31, and only then
    // the lock of 10:29, on time (the watermark is at 10:26).
    let mut s = vec![lock(at(0, 0), 1)];
    s.extend((2..=24).map(|n| lock(at(i64::from(n) + 3, 0), n)));
    s.push(lock(at(30, 30), 25));
    s.push(lock(at(31, 0), 26));
    s.push(lock(at(29, 0), 27));
    let (compiled, sql) = both(&s, "account_lockout_wave");
    assert_eq!(
        (compiled.len(), sql.len()),
        (1, 1),
        "{compiled:#?} {sql:#?}"
    );
    // The compiled rule: 25 accounts at 10:31 (the lock of 10:00 had left its window).
    assert_eq!(compiled[0].observed.event_id.as_str(), "lk26");
    assert_eq!(compiled[0].first_seen.millis(), at(5, 0));
    // SQL: 25 accounts already at 10:29 (the late lock), counting the lock of 10:00.
    assert_eq!(sql[0].observed.event_id.as_str(), "lk27");
    assert_eq!(sql[0].first_seen.millis(), at(0, 0));
    assert_ne!(sql[0].alert_id, compiled[0].alert_id);
}

/// Regression (review, country.jsonl): failure_burst_by_country grouped by country alone, so two
/// tenants' failures added up to one alert naming no tenant. Keyed by tenant and country.
#[test]
fn failure_burst_by_country_is_per_tenant() {
    let detections =
        SqlDetections::new(vec![sql_rule("failure_burst_by_country")], 100_000).unwrap();
    let mut s = Vec::new();
    let burst = |s: &mut Vec<AuthEvent>, tenant: &str, n: i64, addresses: i64, tag: &str| {
        for i in 0..n {
            s.push(ev(
                T0 + i * 15_000,
                &format!("{tag}{i}"),
                tenant,
                &format!("user{}@{tenant}.example", i % 50),
                &format!("81.2.69.{}", 100 + i % addresses),
                "logon",
                "failure",
                Some("invalid_credentials"),
            ));
        }
    };
    // Two tenants at 120 failures from 15 addresses each: 240 from 30 addresses together, but
    // neither reaches 200.
    burst(&mut s, "acme", 120, 15, "a");
    burst(&mut s, "globex", 120, 15, "g");
    // A third tenant alone: 220 failures from 25 addresses.
    burst(&mut s, "initech", 220, 25, "i");
    let alerts = drive(&mut detections.detector(), &sorted(s));
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a.entity.tenant.as_deref(), Some("initech"));
    assert_eq!(a.entity.country.as_deref(), Some("JP"));
    assert_eq!(
        a.metrics["failures"],
        authwatch_event::MetricValue::Count(220)
    );
    assert!(a.summary.en.contains("tenant initech"), "{}", a.summary.en);
    assert_eq!(
        a.alert_id,
        Alert::make_id(
            "failure_burst_by_country",
            2,
            &authwatch_event::entity_key_text([("tenant", "initech"), ("country", "JP")]),
            T0
        )
    );
}

/// An alert keyed by country or app (the SQL detection `failure_burst_by_country`) names its
/// entity in the archive's alerts table too; archives written before those columns existed
/// still answer, with nulls there.
#[test]
fn archived_alerts_carry_country_and_app_entities_and_older_files_read_as_null() {
    let alert: Alert = serde_json::from_str(
        r#"{"alert_id":"a1","rule_id":"failure_burst_by_country","rule_version":2,
        "category":"brute_force","cause_class":"attack","severity":"medium",
        "attack_technique":[],"entity":{"tenant":"example","country":"KP","app":"payroll"},
        "window":{"start":"2026-01-05T09:00:00.000Z","end":"2026-01-05T09:10:00.000Z"},
        "metrics":{"failures":40},"evidence":[],
        "observed":{"event_id":"ev1","time":"2026-01-05T09:10:00.000Z"},
        "first_seen":"2026-01-05T09:00:00.000Z","last_seen":"2026-01-05T09:10:00.000Z",
        "summary":{"en":"burst","ja":"burst"},"steps":{"en":[],"ja":[]}}"#,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("new").display().to_string();
    let mut w = ArchiveWriter::open(ArchiveOptions::new(&new)).unwrap();
    w.add_alert(&alert).unwrap();
    w.finish().unwrap();
    // The older layout: the same alert without the two columns.
    let old = dir.path().join("old");
    let part = old.join("alerts/dt=2026-01-05/hour=09");
    std::fs::create_dir_all(&part).unwrap();
    let batch = crate::alerts_to_batch(std::slice::from_ref(&alert)).unwrap();
    let keep: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| {
            !["entity_country", "entity_app"].contains(&batch.schema().field(i).name().as_str())
        })
        .collect();
    let batch = batch.project(&keep).unwrap();
    let file = std::fs::File::create(part.join("part-old-000001.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let answer = |location: String| {
        rt.block_on(async {
            let mut c = Catalog::new().unwrap();
            c.add_archive(&location).await.unwrap();
            let r = c
                .query(
                    "SELECT entity_tenant, entity_country, entity_app, \
                     entity_user IS NULL AS no_user FROM alerts",
                )
                .await
                .unwrap();
            datafusion::arrow::util::pretty::pretty_format_batches(&r.batches)
                .unwrap()
                .to_string()
        })
    };
    let new = answer(new);
    assert!(
        new.contains("| example       | KP             | payroll    | true    |"),
        "{new}"
    );
    let old = answer(old.display().to_string());
    assert!(
        old.contains("| example       |                |            | true    |"),
        "{old}"
    );
}

/// A failed sign-in of tenant acme from `ip`, located by coordinates with no country (as the
/// enricher places an address its database has no country for).
fn failure_without_country(t: i64, i: i64, ip: &str) -> AuthEvent {
    let line = format!(
        r#"{{"time":{t},"provider":"okta","tenant":"acme","event_id":"nc{i}","user":{{"name":"user{}@acme.example"}},"activity":"logon","outcome":"failure","reason":"invalid_credentials","src":{{"ip":"{ip}","asn":64500,"geo":{{"lat":1.5,"lon":2.5}}}},"app":"portal"}}"#,
        i % 50
    );
    serde_json::from_str(&line).unwrap()
}

/// 220 failures from 25 addresses in an hour, located without a country.
fn burst_without_country() -> Vec<AuthEvent> {
    (0..220)
        .map(|i| failure_without_country(T0 + i * 15_000, i, &format!("81.2.69.{}", 100 + i % 25)))
        .collect()
}

/// An address the enricher locates by coordinates alone has the empty country, which the
/// events' Arrow form holds as null (empty texts are left out of the event), so
/// failure_burst_by_country's `IS NOT NULL` keeps such failures out of its counts: no alert
/// about country "".
#[test]
fn failure_burst_by_country_needs_a_country() {
    let detections =
        SqlDetections::new(vec![sql_rule("failure_burst_by_country")], 100_000).unwrap();
    let alerts = drive(&mut detections.detector(), &burst_without_country());
    assert!(alerts.is_empty(), "{alerts:#?}");
}

/// Regression (review): a tumbling or hopping detection's row with an empty key text (here a
/// key the query computes, `coalesce(…, '')`) became an alert keyed by nothing, where session
/// detections and the compiled rules treat the empty text as no key, and skip the event.
#[test]
fn a_windowed_row_with_an_empty_key_is_skipped() {
    let rule = SqlRule::parse(
        Path::new("burst_by_country_unfiltered.sql"),
        "/*---
id: burst_by_country_unfiltered
version: 1
description: failures per country, the empty text for none
category: credential_stuffing
severity: medium
cause_class: attack
window: { kind: tumbling, size: 1h }
key: [tenant, country]
summary:
  en: \"{failures} failures from {country}\"
  ja: \"{failures} failures from {country}\"
steps: { en: [], ja: [] }
---*/
SELECT tenant, coalesce(src.geo.country, '') AS country, min(time) AS first_seen,
       max(time) AS last_seen, last_value(event_id ORDER BY time) AS event_id,
       count(*) AS failures
FROM events
WHERE outcome = 'failure'
GROUP BY tenant, coalesce(src.geo.country, ''), window_start
HAVING count(*) >= 10",
    )
    .unwrap();
    let detections = SqlDetections::new(vec![rule], 100_000).unwrap();
    let alerts = drive(&mut detections.detector(), &burst_without_country());
    assert!(
        alerts
            .iter()
            .all(|a| a.entity.country.as_deref() != Some("")),
        "{alerts:#?}"
    );
    assert!(alerts.is_empty(), "{alerts:#?}");
}
