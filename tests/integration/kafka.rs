//! `authwatch run` against a real Apache Kafka broker (`scripts/kafka start`; `scripts/test`
//! starts it). The broker is found at `AUTHWATCH_TEST_KAFKA` (default `127.0.0.1:19092`).
//!
//! Each test uses its own topics and group. They run one at a time: (c) stops the broker.

use crate::common::*;
use authwatch_kafka::ClientConfig;
use authwatch_kafka::admin::{self, KeyBy, Record};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static BROKER: Mutex<()> = Mutex::new(());

fn bootstrap() -> String {
    std::env::var("AUTHWATCH_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".to_owned())
}

fn client() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap());
    c
}

/// Serializes the Kafka tests and checks the broker is up, with a hint when it is not.
fn broker() -> std::sync::MutexGuard<'static, ()> {
    let guard = BROKER.lock().unwrap_or_else(|p| p.into_inner());
    let addr = bootstrap();
    assert!(
        std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
            .is_ok(),
        "no Kafka broker at {addr}: run `scripts/kafka start` (scripts/test does)"
    );
    guard
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("it-{name}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// Topics and config of one scenario.
struct Scenario {
    dir: tempfile::TempDir,
    input: String,
    alerts: String,
    dead: String,
    audit: String,
    group: String,
    /// More `[checkpoint]` keys (`snapshot_interval`, `url`).
    checkpoint: String,
    /// More environment of the instances (object-store credentials).
    env: Vec<(String, String)>,
    /// `input.max_line_bytes`.
    max_line_bytes: usize,
}

impl Scenario {
    fn new(name: &str, partitions: i32) -> Scenario {
        let id = unique(name);
        let s = Scenario {
            dir: tempfile::tempdir().unwrap(),
            input: format!("{id}.in"),
            alerts: format!("{id}.alerts"),
            dead: format!("{id}.dead"),
            audit: format!("{id}.audit"),
            group: format!("{id}.group"),
            checkpoint: String::new(),
            env: Vec::new(),
            max_line_bytes: 65536,
        };
        admin::ensure_topics(&client(), &[(&s.input, partitions)]).unwrap();
        s
    }

    /// A config for one instance; `interval` is the checkpoint interval. Lines over
    /// `max_line_bytes` (64 KiB unless a test says otherwise) are rejected (the broker's own
    /// record limit is 1 MB).
    fn config(&self, instance: &str, interval: &str) -> PathBuf {
        self.config_as(instance, instance, interval)
    }

    /// A config whose transactional id is `identity`'s: a restart of the same instance.
    fn config_as(&self, instance: &str, identity: &str, interval: &str) -> PathBuf {
        let geo = repo().join("data/geo");
        let path = self.dir.path().join(format!("{instance}.toml"));
        std::fs::write(
            &path,
            format!(
                "[input]\nmax_line_bytes = {}\n\n[enrich.geo]\ncity_db = {:?}\nasn_db = {:?}\nanonymous_db = {:?}\n\n\
                 [kafka]\nbrokers = {:?}\ngroup_id = {:?}\nalert_topic = {:?}\n\
                 dead_letter_topic = {:?}\naudit_topic = {:?}\nenriched_topic = \"{}.events\"\n\
                 transactional_id = {:?}\n\
                 [[kafka.topics]]\nname = {:?}\nformat = \"auto\"\n\n\
                 [telemetry]\nlisten = \"127.0.0.1:0\"\n\n[checkpoint]\ndir = {:?}\ninterval = {:?}\n{}",
                self.max_line_bytes,
                geo.join("GeoIP2-City-Test.mmdb"),
                geo.join("GeoLite2-ASN-Test.mmdb"),
                geo.join("GeoIP2-Anonymous-IP-Test.mmdb"),
                bootstrap(),
                self.group,
                self.alerts,
                self.dead,
                self.audit,
                self.input,
                format!("{}-{identity}", self.group),
                self.input,
                self.dir.path().join("checkpoints"),
                interval,
                self.checkpoint,
            ),
        )
        .unwrap();
        path
    }

    fn start(&self, instance: &str, interval: &str) -> Child {
        self.start_as(instance, instance, interval)
    }

    /// Starts `instance` (its own log) with `identity`'s transactional id.
    fn start_as(&self, instance: &str, identity: &str, interval: &str) -> Child {
        let config = self.config_as(instance, identity, interval);
        self.spawn(instance, &config, &[])
    }

    /// Runs `authwatch run --config <config> <args>` as `instance`, logging to its own log.
    fn spawn(&self, instance: &str, config: &Path, args: &[&str]) -> Child {
        let log = std::fs::File::create(self.dir.path().join(format!("{instance}.log"))).unwrap();
        authwatch()
            .args(["run", "--config"])
            .arg(config)
            .args(args)
            .env("AUTHWATCH_LOG", "info,librdkafka=warn")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn log(&self, instance: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{instance}.log"))).unwrap_or_default()
    }

    fn produce(&self, lines: &[String], key: KeyBy) {
        let text = lines.join("\n");
        admin::produce_lines(&client(), &self.input, text.as_bytes(), key).unwrap();
    }

    fn read(&self, topic: &str, committed: bool) -> Vec<Record> {
        admin::read_topic(&client(), topic, committed, Duration::from_millis(700)).unwrap()
    }
}

fn alert_ids(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            v["alert_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Polls the committed alerts until `done` holds or `timeout` passes; returns the last read.
fn wait_alerts(
    s: &Scenario,
    timeout: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let started = Instant::now();
    loop {
        let ids = alert_ids(&s.read(&s.alerts, true));
        if done(&ids) || started.elapsed() > timeout {
            return ids;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// SIGTERM and wait: the graceful stop must succeed.
fn terminate(child: &mut Child, s: &Scenario, instance: &str) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(
                st.success(),
                "{instance} exited with {st}:\n{}",
                s.log(instance)
            );
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{instance} did not stop on SIGTERM:\n{}",
            s.log(instance)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The telemetry address an instance logged at start (it listens on port 0).
fn telemetry_addr(s: &Scenario, instance: &str) -> std::net::SocketAddr {
    let started = Instant::now();
    loop {
        let log = s.log(instance);
        if let Some(addr) = log
            .lines()
            .filter(|l| l.contains("telemetry: /metrics"))
            .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
        {
            return addr.parse().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{instance} logged no telemetry address:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kill9(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A generated stream for `tenant`, plus one closing event two days after its end, so that the
/// watermark passes every window and each settling alert is decided (a live run never reaches
/// "end of input").
fn stream(dir: &Path, tenant: &str, users: u32, days: u32, seed: u64) -> Vec<String> {
    let out = dir.join(format!("{tenant}-{seed}.jsonl"));
    run_ok(
        authwatch()
            .args([
                "gen",
                "--users",
                &users.to_string(),
                "--days",
                &days.to_string(),
            ])
            .args(["--seed", &seed.to_string(), "--tenant", tenant, "--out"])
            .arg(&out),
    );
    let mut lines: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let last = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["time"]
                .as_i64()
                .unwrap()
        })
        .max()
        .unwrap();
    lines.push(closing_event(tenant, last + 2 * 86_400_000));
    lines
}

fn closing_event(tenant: &str, time: i64) -> String {
    serde_json::json!({
        "time": time, "provider": "okta", "tenant": tenant,
        "event_id": format!("close-{tenant}"), "provider_event_type": "user.session.end",
        "user": {"id": "closer", "name": "closer@example.invalid"},
        "activity": "logoff", "outcome": "success", "src": {"ip": "10.0.0.1"}
    })
    .to_string()
}

/// The alerts `authwatch replay` finds in `lines` (same enrichment as the runs), with `extra`
/// arguments (e.g. `--sql DIR`).
fn replay_alerts(
    s: &Scenario,
    lines: &[String],
    extra: &[&std::ffi::OsStr],
) -> Vec<serde_json::Value> {
    let input = s.dir.path().join("replay-input.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = s.dir.path().join("replay-alerts.jsonl");
    let config = s.config("replay", "1s");
    run_ok(
        authwatch()
            .args(["replay", "--quiet", "--config"])
            .arg(&config)
            .args(extra)
            .arg("--alerts")
            .arg(&out)
            .arg(&input),
    );
    json_lines(&out)
}

/// The alert ids `authwatch replay` finds in `lines`.
/// The kill and restart scenarios' input: a generated stream of tenant `example` (120 users,
/// 3 days, `seed`) without its closing event, the closing event, and the alert ids a replay of
/// the whole gives.
fn closed_stream(s: &Scenario, seed: u64) -> (Vec<String>, String, BTreeSet<String>) {
    let mut lines = stream(s.dir.path(), "example", 120, 3, seed);
    let closing = lines.pop().unwrap();
    let mut all = lines.clone();
    all.push(closing.clone());
    let expected = replay_ids(s, &all);
    (lines, closing, expected)
}

fn replay_ids(s: &Scenario, lines: &[String]) -> BTreeSet<String> {
    replay_alerts(s, lines, &[])
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_exactly_once(ids: &[String], expected: &BTreeSet<String>, context: &str) {
    let mut seen = BTreeSet::new();
    let dups: Vec<&String> = ids
        .iter()
        .filter(|id| !seen.insert((*id).clone()))
        .collect();
    assert!(dups.is_empty(), "{context}: duplicate alert ids {dups:?}");
    let missing: Vec<_> = expected.difference(&seen).collect();
    let extra: Vec<_> = seen.difference(expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{context}: {} missing {missing:?}, {} unexpected {extra:?}",
        missing.len(),
        extra.len()
    );
}

#[test]
fn a_topic_run_gives_the_same_alerts_as_replay() {
    let _broker = broker();
    let s = Scenario::new("same-as-replay", 1);
    let lines = stream(s.dir.path(), "example", 120, 3, 21);
    let expected = replay_ids(&s, &lines);
    assert!(
        expected.len() >= 20,
        "too few alerts to compare: {}",
        expected.len()
    );
    s.produce(&lines, KeyBy::Field("tenant"));
    let mut run = s.start("a", "300ms");
    let ids = wait_alerts(&s, Duration::from_secs(90), |ids| {
        ids.len() >= expected.len()
    });
    // The telemetry endpoint of the running instance: ready (assigned and restored), and the
    // runtime's own numbers next to the pipeline's.
    let addr = telemetry_addr(&s, "a");
    crate::telemetry::wait_for(addr, "/readyz", 200);
    crate::telemetry::wait_for(addr, "/startupz", 200);
    crate::telemetry::wait_for(addr, "/livez", 200);
    // Consumer lag comes from librdkafka's statistics, emitted every 5 s.
    let wanted = [
        "authwatch_checkpoint_age_seconds",
        "authwatch_checkpoint_duration_seconds_count",
        // The new partition's empty state, stored at the assignment.
        "authwatch_snapshot_store_duration_seconds_count{when=\"before_commit\"}",
        "authwatch_snapshot_store_failures_total",
        "authwatch_consumer_lag{",
        "authwatch_events_in_total{",
        "authwatch_alerts_total{",
    ];
    let scraping = Instant::now();
    let metrics = loop {
        let metrics = crate::telemetry::scrape(addr);
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|w| !metrics.keys().any(|k| k.starts_with(w)))
            .collect();
        if missing.is_empty() {
            break metrics;
        }
        assert!(
            scraping.elapsed() < Duration::from_secs(60),
            "no {missing:?} in {metrics:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(metrics["authwatch_snapshot_store_failures_total"], 0.0);
    let source_in = metrics
        .iter()
        .find(|(k, _)| {
            k.starts_with("authwatch_events_in_total{") && k.contains("stage=\"source\"")
        })
        .map_or(0.0, |(_, v)| *v);
    assert!(
        source_in >= lines.len() as f64,
        "source events in: {source_in}"
    );
    terminate(&mut run, &s, "a");
    assert_exactly_once(&ids, &expected, &s.log("a"));
    // Alert records: key = entity, headers for routing without parsing the value.
    let records = s.read(&s.alerts, true);
    let r = &records[0];
    let headers: BTreeMap<_, _> = r.headers.iter().cloned().collect();
    let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
    assert_eq!(headers["alert_id"], v["alert_id"].as_str().unwrap());
    assert_eq!(headers["category"], v["category"].as_str().unwrap());
    assert_eq!(headers["severity"], v["severity"].as_str().unwrap());
    assert!(r.key.as_deref().is_some_and(|k| !k.is_empty()));
    // The audit trail names the start, the assignment and the graceful stop.
    let audit: Vec<String> = s
        .read(&s.audit, false)
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            v["action"].as_str().unwrap().to_owned()
        })
        .collect();
    for action in ["started", "assigned", "revoked", "stopped"] {
        assert!(
            audit.iter().any(|a| a == action),
            "{action} not in {audit:?}"
        );
    }
}

#[test]
fn b_kill_9_mid_stream_then_restart_loses_and_duplicates_nothing() {
    let _broker = broker();
    let s = Scenario::new("kill9", 2);
    let (lines, closing, expected) = closed_stream(&s, 22);
    let half = lines.len() / 2;
    // First half, checkpointed and committed by a graceful stop.
    s.produce(&lines[..half], KeyBy::Field("tenant"));
    let mut run = s.start_as("b1", "b", "300ms");
    let mut settled = (0, Instant::now());
    let first = wait_alerts(&s, Duration::from_secs(60), |ids| {
        if ids.len() != settled.0 {
            settled = (ids.len(), Instant::now());
        }
        !ids.is_empty() && settled.1.elapsed() > Duration::from_secs(2)
    });
    assert!(
        !first.is_empty(),
        "no committed alert:
{}",
        s.log("b1")
    );
    terminate(&mut run, &s, "b1");
    // Second half: an instance that never reaches its next checkpoint produces alerts in an
    // open transaction and is killed -9 there.
    s.produce(&lines[half..], KeyBy::Field("tenant"));
    let mut run = s.start_as("b2", "b", "4m");
    let started = Instant::now();
    loop {
        let uncommitted = alert_ids(&s.read(&s.alerts, false)).len();
        if uncommitted > first.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "b2 produced nothing:
{}",
            s.log("b2")
        );
    }
    kill9(&mut run);
    assert_eq!(
        alert_ids(&s.read(&s.alerts, true)).len(),
        first.len(),
        "b2 committed before it was killed"
    );
    s.produce(std::slice::from_ref(&closing), KeyBy::Field("tenant"));
    // The restart keeps the instance's transactional id: it fences and aborts b2's open
    // transaction at once.
    let mut run = s.start_as("b3", "b", "300ms");
    let ids = wait_alerts(&s, Duration::from_secs(90), |ids| {
        ids.len() >= expected.len()
    });
    terminate(&mut run, &s, "b3");
    assert_exactly_once(&ids, &expected, &s.log("b3"));
    // Both restarts resumed from the checkpoint, not from the beginning.
    for instance in ["b2", "b3"] {
        let log = s.log(instance);
        assert!(
            log.contains("restored=true"),
            "{instance} restored nothing:
{log}"
        );
    }
    // The killed instance's alerts are in the log, aborted: a read-uncommitted consumer sees
    // them twice and deduplicates by alert_id to the same set.
    let all = alert_ids(&s.read(&s.alerts, false));
    assert!(all.len() > ids.len());
    let dedup: BTreeSet<String> = all.into_iter().collect();
    assert_eq!(dedup, expected);
}

#[test]
fn c_broker_restart_mid_stream_recovers_by_itself() {
    let _broker = broker();
    let s = Scenario::new("broker-restart", 1);
    let mut lines = stream(s.dir.path(), "example", 100, 2, 23);
    let closing = lines.pop().unwrap();
    let expected = {
        let mut all = lines.clone();
        all.push(closing.clone());
        replay_ids(&s, &all)
    };
    let half = lines.len() / 2;
    s.produce(&lines[..half], KeyBy::Field("tenant"));
    let mut run = s.start("c", "300ms");
    let first = wait_alerts(&s, Duration::from_secs(60), |ids| !ids.is_empty());
    assert!(!first.is_empty(), "no committed alert:\n{}", s.log("c"));
    // The broker restarted is the one under test: scripts/kafka gets its port, and the rest of
    // the instance (AUTHWATCH_KAFKA_DATA: scripts/test's own broker) from the environment.
    let kafka = repo().join("scripts/kafka");
    run_script(&kafka, "stop");
    // Away longer than the consumer's session timeout (10 s): the group evicts the instance, so
    // the checkpoints queued under the old membership cannot commit (UNKNOWN_MEMBER_ID) and the
    // run has to abort and restart from its last checkpoint by itself.
    std::thread::sleep(Duration::from_secs(12));
    run_script(&kafka, "start");
    let mut rest = lines[half..].to_vec();
    rest.push(closing);
    s.produce(&rest, KeyBy::Field("tenant"));
    // On a loaded machine the catch-up after the restart is slow: the wait ends when the exact
    // set is there, or after 120 s without a single new committed alert.
    let mut progress = (0, Instant::now());
    let ids = wait_alerts(&s, Duration::from_secs(600), |ids| {
        if ids.len() != progress.0 {
            progress = (ids.len(), Instant::now());
        }
        ids.len() >= expected.len() || progress.1.elapsed() > Duration::from_secs(120)
    });
    assert!(
        run.try_wait().unwrap().is_none(),
        "authwatch run exited while the broker was away:\n{}",
        s.log("c")
    );
    terminate(&mut run, &s, "c");
    assert_exactly_once(&ids, &expected, &s.log("c"));
    // A failed commit is noticed when it happens, not by the watchdog for a wedged pipeline.
    let log = s.log("c");
    assert!(
        !log.contains("no checkpoint completed for"),
        "the run waited for a checkpoint that could not commit:\n{log}"
    );
}

fn run_script(script: &Path, arg: &str) {
    let addr = bootstrap();
    let (_, port) = addr
        .rsplit_once(':')
        .expect("AUTHWATCH_TEST_KAFKA is HOST:PORT");
    let out = Command::new(script)
        .arg(arg)
        .env("AUTHWATCH_KAFKA_PORT", port)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/kafka {arg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn d_two_instances_in_one_group_give_the_same_alerts_as_one() {
    let _broker = broker();
    let s = Scenario::new("scale-out", 4);
    // Six tenants, keyed by tenant: every detection key lives in one partition.
    let mut first = Vec::new();
    let mut second = Vec::new();
    for (i, tenant) in ["acme", "globex", "initech", "umbrella", "hooli", "stark"]
        .iter()
        .enumerate()
    {
        let lines = stream(s.dir.path(), tenant, 40, 2, 30 + i as u64);
        let half = lines.len() / 2;
        first.extend_from_slice(&lines[..half]);
        second.extend_from_slice(&lines[half..]);
    }
    s.produce(&first, KeyBy::Field("tenant"));
    s.produce(&second, KeyBy::Field("tenant"));
    // One instance alone, in its own group, reading the same topic.
    let one = Scenario {
        dir: tempfile::tempdir().unwrap(),
        input: s.input.clone(),
        alerts: format!("{}-one", s.alerts),
        dead: format!("{}-one", s.dead),
        audit: format!("{}-one", s.audit),
        group: format!("{}-one", s.group),
        checkpoint: String::new(),
        env: Vec::new(),
        max_line_bytes: s.max_line_bytes,
    };
    let solo = {
        let mut run = one.start("solo", "300ms");
        let mut settled = (0, Instant::now());
        let ids = wait_alerts(&one, Duration::from_secs(90), |ids| {
            if ids.len() != settled.0 {
                settled = (ids.len(), Instant::now());
            }
            !ids.is_empty() && settled.1.elapsed() > Duration::from_secs(3)
        });
        terminate(&mut run, &one, "solo");
        ids
    };
    let expected: BTreeSet<String> = solo.iter().cloned().collect();
    assert_eq!(expected.len(), solo.len(), "duplicates in the single run");
    assert!(expected.len() >= 20, "too few alerts: {}", expected.len());
    // Two instances in a second group over a second copy of the input: the first works alone
    // on the first half, the second joins mid-stream (a rebalance hands partitions over with
    // their state), then the second half arrives.
    let two = Scenario::new("scale-out-two", 4);
    two.produce(&first, KeyBy::Field("tenant"));
    let mut a = two.start("d1", "300ms");
    let early = wait_alerts(&two, Duration::from_secs(60), |ids| !ids.is_empty());
    assert!(!early.is_empty(), "{}", two.log("d1"));
    let mut b = two.start("d2", "300ms");
    let started = Instant::now();
    while !two.log("d2").contains("partition assigned") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "d2 got no partition:\n{}\n----\n{}",
            two.log("d1"),
            two.log("d2")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    two.produce(&second, KeyBy::Field("tenant"));
    let ids = wait_alerts(&two, Duration::from_secs(120), |ids| {
        ids.len() >= expected.len()
    });
    terminate(&mut a, &two, "d1");
    terminate(&mut b, &two, "d2");
    let logs = format!("{}\n----\n{}", two.log("d1"), two.log("d2"));
    assert_exactly_once(&ids, &expected, &logs);
    // The partitions d1 handed over were restored from its checkpoints.
    assert!(two.log("d2").contains("restored=true"), "{logs}");
}

#[test]
fn e_poison_messages_land_in_the_dead_letter_topic_with_their_reason() {
    let _broker = broker();
    let s = Scenario::new("poison", 1);
    let mut lines = stream(s.dir.path(), "example", 30, 1, 24);
    let poison = [
        "this is not json".to_owned(),
        "{\"truncated\": ".to_owned(),
        "{\"time\": 1767561720000}".to_owned(),
        format!("{{\"big\": \"{}\"}}", "x".repeat(100_000)),
    ];
    for (i, p) in poison.iter().enumerate() {
        lines.insert(10 + i * 7, p.clone());
    }
    s.produce(&lines, KeyBy::None);
    let mut run = s.start("e", "300ms");
    let started = Instant::now();
    let dead = loop {
        let dead = s.read(&s.dead, true);
        if dead.len() >= poison.len() || started.elapsed() > Duration::from_secs(60) {
            break dead;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    terminate(&mut run, &s, "e");
    assert_eq!(dead.len(), poison.len(), "{}", s.log("e"));
    let mut reasons = BTreeSet::new();
    for r in &dead {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        let header = r
            .headers
            .iter()
            .find(|(k, _)| k == "reason")
            .unwrap()
            .1
            .clone();
        assert_eq!(v["reason"].as_str().unwrap(), header);
        assert_eq!(v["file"].as_str().unwrap(), format!("{}/0", s.input));
        assert!(!v["detail"].as_str().unwrap().is_empty());
        reasons.insert(header);
    }
    assert!(reasons.contains("line_too_long"), "{reasons:?}");
    assert!(reasons.len() >= 3, "{reasons:?}");
    // The good records around the poison were processed: alerts were produced, and every good
    // record is on the enriched-events topic, keyed by user.
    assert!(!s.read(&s.alerts, true).is_empty(), "{}", s.log("e"));
    let enriched = s.read(&format!("{}.events", s.input), true);
    assert_eq!(enriched.len(), lines.len() - poison.len());
    let v: serde_json::Value = serde_json::from_slice(&enriched[0].payload).unwrap();
    assert_eq!(enriched[0].key.as_deref(), v["user"]["id"].as_str());
    let _ = std::io::stderr().flush();
}

/// The responder inside `authwatch run`: automatic mode, webhook target on a local receiver.
/// An instance that never reaches a checkpoint acts, is killed -9, and its restart processes
/// the same input again from the start: the responder state it saved after each decision
/// (its instance file in the checkpoint directory) makes those alerts duplicates, so no
/// account gets a second action; the audit records are on the audit topic and in the file.
#[test]
fn f_responder_acts_once_per_account_across_a_kill_9() {
    let _broker = broker();
    let s = Scenario::new("respond", 1);
    let lines = stream(s.dir.path(), "example", 300, 3, 7);

    let Expected {
        all_ids,
        selected,
        accounts,
    } = expected_responses(&s, &lines);

    let (url, seen) = crate::respond::receiver();
    let state = s.dir.path().join("respond");
    let start = |instance: &str, interval: &str| -> Child {
        start_responding(&s, instance, "r", interval, &url, "")
    };
    let calls = || webhook_calls(&seen);

    // r1 never reaches a checkpoint (4 minutes): it acts, then dies with nothing committed.
    s.produce(&lines, KeyBy::Field("tenant"));
    let mut run = start("r1", "4m");
    let mut settled = (0, Instant::now());
    let started = Instant::now();
    loop {
        let n = calls().len();
        if n != settled.0 {
            settled = (n, Instant::now());
        }
        if n > 0 && settled.1.elapsed() > Duration::from_secs(3) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "r1 called the webhook {n} times:\n{}",
            s.log("r1")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    kill9(&mut run);
    let before = calls().len();
    assert!(
        s.read(&s.alerts, true).is_empty(),
        "r1 committed before it was killed"
    );

    // r2 restarts with r1's identity and state: the same input again from the start.
    let mut run = start("r2", "300ms");
    let ids = wait_alerts(&s, Duration::from_secs(120), |ids| {
        ids.len() >= all_ids.len()
    });
    assert_exactly_once(&ids, &all_ids, &s.log("r2"));
    let audit_records = |s: &Scenario| -> Vec<(Option<String>, serde_json::Value)> {
        s.read(&s.audit, false)
            .into_iter()
            .filter_map(|r| {
                let v: serde_json::Value = serde_json::from_slice(&r.payload).ok()?;
                (v["class_uid"] == 3001).then_some((r.key, v))
            })
            .collect()
    };
    // Every selected alert reaches a decision on the audit topic.
    let started = Instant::now();
    loop {
        let decided: BTreeSet<String> = audit_records(&s)
            .iter()
            .map(|(_, v)| v["unmapped"]["alert_id"].as_str().unwrap().to_owned())
            .collect();
        if selected.keys().all(|id| decided.contains(id)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "undecided alerts; audit topic has {} records:\n{}",
            decided.len(),
            s.log("r2")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The restarted instance exports its responder's decisions (duplicates at least: the
    // accounts were acted on before the kill).
    let metrics = crate::telemetry::scrape(telemetry_addr(&s, "r2"));
    assert!(
        metrics
            .iter()
            .any(|(k, v)| k.starts_with("authwatch_response_actions_total{")
                && k.contains("result=\"duplicate\"")
                && *v >= 1.0),
        "no duplicate decisions in {metrics:#?}"
    );
    terminate(&mut run, &s, "r2");
    let log = s.log("r2");
    assert!(log.contains("responder state restored"), "{log}");

    // One action per account and action kind, across the kill: none repeated by r2.
    let calls = calls();
    assert_each_account_acted_on_once(&calls, &accounts);
    assert!(before > 0 && before <= calls.len());

    // Audit records: OCSF 3001 keyed by account, each linking an alert of the stream; every
    // action carried out is recorded; the file holds the same records as the topic.
    let records = audit_records(&s);
    for (key, v) in &records {
        assert_eq!(key.as_deref(), v["user"]["name"].as_str(), "{v}");
        let alert_id = v["unmapped"]["alert_id"].as_str().unwrap();
        assert!(selected.contains_key(alert_id), "{v}");
    }
    let executed = records
        .iter()
        .filter(|(_, v)| v["unmapped"]["decision"] == "executed")
        .count();
    assert_eq!(executed, calls.len(), "executed records vs webhook calls");
    assert!(
        records
            .iter()
            .any(|(_, v)| v["unmapped"]["decision"] == "duplicate"),
        "r2 saw r1's alerts again and recorded them as duplicates"
    );
    let file = json_lines(&state.join("audit.jsonl"));
    assert_eq!(file.len(), records.len(), "audit file vs audit topic");
}

/// What a responder scenario's stream must lead to under the default policy.
struct Expected {
    /// Every alert of the stream (its replay's).
    all_ids: BTreeSet<String>,
    /// The alerts the policy selects, by id → account: the critical alerts of the two
    /// suspension-worthy rules.
    selected: BTreeMap<String, String>,
    /// Their accounts.
    accounts: BTreeSet<String>,
}

/// [`Expected`] of `lines`, from their replay; the stream must have suspension-worthy alerts.
fn expected_responses(s: &Scenario, lines: &[String]) -> Expected {
    let alerts = replay_alerts(s, lines, &[]);
    let all_ids = alerts
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_owned())
        .collect();
    let selected: BTreeMap<String, String> = alerts
        .iter()
        .filter(|a| {
            a["severity"] == "critical"
                && ["mfa_fatigue_success", "credential_compromise"]
                    .contains(&a["rule_id"].as_str().unwrap())
        })
        .map(|a| {
            (
                a["alert_id"].as_str().unwrap().to_owned(),
                a["entity"]["user"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let accounts: BTreeSet<String> = selected
        .values()
        .filter(|a| !a.is_empty())
        .cloned()
        .collect();
    assert!(
        !accounts.is_empty(),
        "the stream has no suspension-worthy alert"
    );
    Expected {
        all_ids,
        selected,
        accounts,
    }
}

/// Each (account, action) webhook call happened once, and the calls acted on `accounts`.
fn assert_each_account_acted_on_once(calls: &[(String, String)], accounts: &BTreeSet<String>) {
    let mut once = BTreeSet::new();
    for call in calls {
        assert!(
            once.insert(call.clone()),
            "{call:?} called twice: {calls:?}"
        );
    }
    let acted: BTreeSet<String> = calls.iter().map(|(account, _)| account.clone()).collect();
    assert_eq!(&acted, accounts, "accounts acted on");
}

/// Starts `instance` of `s` (with `identity`'s transactional id, which names its responder
/// state) with the responder on: automatic mode, a webhook target at `url`, generous limits,
/// state in `<dir>/respond`, and `http`: more `[respond.http]` keys.
fn start_responding(
    s: &Scenario,
    instance: &str,
    identity: &str,
    interval: &str,
    url: &str,
    http: &str,
) -> Child {
    let secret = s.dir.path().join("hook-secret");
    std::fs::write(&secret, "integration-secret\n").unwrap();
    let config = s.config_as(instance, identity, interval);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[respond]\nenabled = true\nmode = \"automatic\"\ntarget = \"webhook\"\n\
         state_dir = {state:?}\n\
         [respond.limits]\nglobal_actions = 1000\ntenant_actions = 1000\n\
         [respond.http]\n{http}\n\
         [respond.webhook]\nurl = {url:?}\nsecret = {{ file = {secret:?} }}\n",
        state = s.dir.path().join("respond"),
    ));
    std::fs::write(&config, text).unwrap();
    s.spawn(instance, &config, &[])
}

/// (account, action) of every webhook call `seen`.
fn webhook_calls(seen: &crate::respond::Received) -> Vec<(String, String)> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(_, body)| {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            (
                v["account"].as_str().unwrap().to_owned(),
                v["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// An identity provider that accepts the responder's calls and never answers holds neither the
/// commits nor the stop: every alert becomes visible while the first call hangs (60 s
/// timeout, one attempt), SIGTERM stops the instance after the responder's 5 s grace, and the
/// alerts its responder had not finished wait in its saved state. The next start, with the
/// provider answering, acts on each selected account once. Before, every checkpoint waited
/// for the responder, so the hanging call held the transaction past its timeout.
#[test]
fn f_a_hanging_provider_holds_no_commit_and_the_next_start_acts() {
    let _broker = broker();
    let s = Scenario::new("respond-hang", 1);
    let lines = stream(s.dir.path(), "example", 300, 3, 7);
    let Expected {
        all_ids,
        selected: _,
        accounts,
    } = expected_responses(&s, &lines);

    let (silent, calls_in_hand) = crate::respond::silent_receiver();
    s.produce(&lines, KeyBy::Field("tenant"));
    let mut run = start_responding(
        &s,
        "h1",
        "h",
        "300ms",
        &silent,
        "timeout = \"60s\"\nmax_attempts = 1",
    );
    let ids = wait_alerts(&s, Duration::from_secs(60), |ids| {
        ids.len() >= all_ids.len()
    });
    assert_exactly_once(&ids, &all_ids, &s.log("h1"));
    assert!(
        calls_in_hand.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the responder never called the provider:\n{}",
        s.log("h1")
    );
    let stopping = Instant::now();
    terminate(&mut run, &s, "h1");
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "the stop took {:?}:\n{}",
        stopping.elapsed(),
        s.log("h1")
    );

    let (url, seen) = crate::respond::receiver();
    let mut run = start_responding(&s, "h2", "h", "300ms", &url, "");
    let started = Instant::now();
    loop {
        let acted: BTreeSet<String> = webhook_calls(&seen).into_iter().map(|(a, _)| a).collect();
        if accounts.is_subset(&acted) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "acted on {acted:?} of {accounts:?}:\n{}",
            s.log("h2")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    terminate(&mut run, &s, "h2");
    let log = s.log("h2");
    assert!(log.contains("responder state restored"), "{log}");
    let calls = webhook_calls(&seen);
    assert_each_account_acted_on_once(&calls, &accounts);
    // The restart read no input again: every alert was committed before the stop.
    assert_exactly_once(&alert_ids(&s.read(&s.alerts, true)), &all_ids, &log);
}

/// Starts `instance` of `s` with `[kafka.repartition]` on (an internal topic of `partitions`
/// partitions; provider partitions idle after `idle_after`).
fn start_repartitioned(s: &Scenario, instance: &str, idle_after: &str) -> Child {
    start_repartitioned_as(s, instance, instance, idle_after)
}

/// [`start_repartitioned`] with `identity`'s transactional ids: a restart of the same instance.
fn start_repartitioned_as(s: &Scenario, instance: &str, identity: &str, idle_after: &str) -> Child {
    let config = s.config_as(instance, identity, "300ms");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[kafka.repartition]\nenabled = true\npartitions = 6\nidle_after = {idle_after:?}\n"
    ));
    std::fs::write(&config, text).unwrap();
    s.spawn(instance, &config, &[])
}

/// Waits until the detect stage has processed `n` events (its enriched-events topic, written
/// after detection, has them): the last ones are held back until every provider partition is
/// idle. Returns how many there are.
fn wait_processed(s: &Scenario, n: usize) -> usize {
    let topic = format!("{}.events", s.input);
    let started = Instant::now();
    loop {
        let processed = s.read(&topic, true).len();
        if processed >= n || started.elapsed() > Duration::from_secs(120) {
            return processed;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn event_time(line: &str) -> i64 {
    serde_json::from_str::<serde_json::Value>(line).unwrap()["time"]
        .as_i64()
        .unwrap()
}

/// Issue 8 point 4: provider topics keyed by user (not by tenant), detection behind the
/// internal topic keyed by tenant. One instance, and two instances in one group with the second
/// joining mid-stream, give the same alerts, exactly once — and those of `authwatch replay`
/// over each detect task's tenants (a task holds the tenants its internal partition holds, and
/// keys such as an IP are shared within it, as in one replay of their events).
#[test]
fn g_repartitioned_detection_is_the_same_with_one_instance_or_two() {
    let _broker = broker();
    let s = Scenario::new("repart", 4);
    let tenants = ["acme", "globex", "initech", "umbrella"];
    // Every tenant's stream, merged in event time (the order a live feed has).
    let mut all: Vec<(i64, usize, usize, String)> = Vec::new();
    for (t, tenant) in tenants.iter().enumerate() {
        for (i, line) in stream(s.dir.path(), tenant, 40, 2, 50 + t as u64)
            .into_iter()
            .enumerate()
        {
            all.push((event_time(&line), t, i, line));
        }
    }
    all.sort();
    let lines: Vec<(usize, String)> = all.into_iter().map(|(_, t, _, l)| (t, l)).collect();
    let half = lines.len() / 2;
    let text = |range: &[(usize, String)]| -> Vec<String> {
        range.iter().map(|(_, l)| l.clone()).collect()
    };

    // One instance alone, over the whole stream, in its own group; a poison record first,
    // which the ingest stage rejects (it never reaches the internal topic or detection).
    s.produce(&["this is not json".to_owned()], KeyBy::None);
    s.produce(&text(&lines), KeyBy::Field("user.name"));
    let mut solo = start_repartitioned(&s, "solo", "20s");
    // Every event reaches detection, the last ones once every provider partition is idle.
    let processed = wait_processed(&s, lines.len());
    assert_eq!(processed, lines.len(), "{}", s.log("solo"));
    // Everything released: the merge holds nothing back any more.
    let metrics = crate::telemetry::scrape(telemetry_addr(&s, "solo"));
    assert_eq!(
        metrics.get("authwatch_merge_held"),
        Some(&0.0),
        "{metrics:#?}"
    );
    // The ingest stage's dead letter is exported under its reason, added to the detect
    // stage's (none here).
    let dead = s.read(&s.dead, true);
    assert_eq!(dead.len(), 1, "{}", s.log("solo"));
    let reason = header(&dead[0], "reason").unwrap();
    let series = format!("authwatch_dead_letters_total{{reason=\"{reason}\"}}");
    let total = |m: &BTreeMap<String, f64>| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with("authwatch_dead_letters_total{"))
            .map(|(_, v)| v)
            .sum()
    };
    let started = Instant::now();
    let metrics = loop {
        let metrics = crate::telemetry::scrape(telemetry_addr(&s, "solo"));
        if total(&metrics) >= 1.0 || started.elapsed() > Duration::from_secs(30) {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(metrics.get(&series), Some(&1.0), "{metrics:#?}");
    assert_eq!(total(&metrics), 1.0, "{metrics:#?}");
    let solo_ids = alert_ids(&s.read(&s.alerts, true));
    terminate(&mut solo, &s, "solo");

    // Where each tenant went: the internal topic's records are keyed by tenant.
    let internal = format!("{}.events.by-tenant", s.group);
    let routed = s.read(&internal, true);
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    let mut markers = 0;
    for r in &routed {
        match r.key.as_deref() {
            Some(tenant) if !tenant.is_empty() => {
                let p = *partition_of.entry(tenant.to_owned()).or_insert(r.partition);
                assert_eq!(p, r.partition, "tenant {tenant} in two partitions");
            }
            _ => markers += 1,
        }
    }
    assert_eq!(partition_of.len(), tenants.len(), "{partition_of:?}");
    assert!(markers > 0, "no progress markers on {internal}");
    assert_eq!(routed.len() - markers, lines.len(), "events on {internal}");

    // The reference: one replay per detect task, over its tenants' events in time order.
    let mut expected = BTreeSet::new();
    let tasks: BTreeSet<i32> = partition_of.values().copied().collect();
    for task in tasks {
        let mine: Vec<String> = lines
            .iter()
            .filter(|(t, _)| partition_of[tenants[*t]] == task)
            .map(|(_, l)| l.clone())
            .collect();
        expected.extend(replay_ids(&s, &mine));
    }
    assert!(expected.len() >= 20, "too few alerts: {}", expected.len());
    assert_exactly_once(&solo_ids, &expected, &s.log("solo"));

    // Two instances in a second group over a second copy of the input: the first starts on
    // the first half, the second half arrives, the second instance joins while the first works.
    let two = Scenario::new("repart-two", 4);
    two.produce(&text(&lines[..half]), KeyBy::Field("user.name"));
    let mut a = start_repartitioned(&two, "r1", "20s");
    let early = wait_alerts(&two, Duration::from_secs(90), |ids| !ids.is_empty());
    assert!(!early.is_empty(), "{}", two.log("r1"));
    two.produce(&text(&lines[half..]), KeyBy::Field("user.name"));
    let mut b = start_repartitioned(&two, "r2", "20s");
    let started = Instant::now();
    while !two.log("r2").contains("partition assigned") {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "r2 got no partition:\n{}\n----\n{}",
            two.log("r1"),
            two.log("r2")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let processed = wait_processed(&two, lines.len());
    let ids = wait_alerts(&two, Duration::from_secs(60), |ids| {
        ids.len() >= expected.len()
    });
    terminate(&mut a, &two, "r1");
    terminate(&mut b, &two, "r2");
    let logs = format!("{}\n----\n{}", two.log("r1"), two.log("r2"));
    assert_exactly_once(&ids, &expected, &logs);
    // Exactly once across the hop too: each event detected once, none lost.
    assert_eq!(processed, lines.len(), "{logs}");
    assert_eq!(
        two.read(&format!("{}.events", two.input), true).len(),
        lines.len(),
        "{logs}"
    );
    // The second instance took over work of both stages, with the state the first committed.
    let r2 = two.log("r2");
    assert!(r2.contains("restored=true"), "{logs}");

    // A crash: killed -9 while it works through the first half (both stages with open
    // transactions, the detect tasks holding events back), restarted under the same identity
    // (which fences and aborts those transactions) when the second half is there. It resumes
    // both stages from their checkpoints — the held events and every source's progress are in
    // the detect tasks' — and ends with the same alerts, each event detected once.
    let three = Scenario::new("repart-crash", 4);
    three.produce(&text(&lines[..half]), KeyBy::Field("user.name"));
    let mut k1 = start_repartitioned_as(&three, "k1", "k", "20s");
    let started = Instant::now();
    while three.read(&format!("{}.events", three.input), true).len() < half / 4 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "k1 detected nothing:\n{}",
            three.log("k1")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    kill9(&mut k1);
    three.produce(&text(&lines[half..]), KeyBy::Field("user.name"));
    let mut k2 = start_repartitioned_as(&three, "k2", "k", "20s");
    let processed = wait_processed(&three, lines.len());
    let ids = wait_alerts(&three, Duration::from_secs(60), |ids| {
        ids.len() >= expected.len()
    });
    terminate(&mut k2, &three, "k2");
    let logs = format!("{}\n----\n{}", three.log("k1"), three.log("k2"));
    assert_exactly_once(&ids, &expected, &logs);
    assert_eq!(processed, lines.len(), "{logs}");
    assert!(three.log("k2").contains("restored=true"), "{logs}");
}

/// Waits until the committed alerts stop changing for `quiet` (everything produced so far is
/// processed and committed).
fn settle(s: &Scenario, instance: &str, quiet: Duration) -> Vec<String> {
    let mut settled = (0, Instant::now());
    let ids = wait_alerts(s, Duration::from_secs(90), |ids| {
        if ids.len() != settled.0 {
            settled = (ids.len(), Instant::now());
        }
        !ids.is_empty() && settled.1.elapsed() > quiet
    });
    assert!(!ids.is_empty(), "no committed alert:\n{}", s.log(instance));
    ids
}

/// `(committed offset, snapshot offset)` of each `partition assigned` line of a log that
/// resumed from a snapshot.
fn resumed_from(log: &str) -> Vec<(i64, i64)> {
    let field = |line: &str, key: &str| -> Option<i64> {
        let rest = line.split(key).nth(1)?;
        let inner = rest.strip_prefix("Some(")?;
        inner.split(')').next()?.parse().ok()
    };
    log.lines()
        .filter(|l| l.contains("partition assigned"))
        .filter_map(|l| Some((field(l, " offset=")?, field(l, " snapshot=")?)))
        .collect()
}

/// Every state file under `dir` (a group's checkpoint directory), by path, with its bytes; none
/// when the directory does not exist yet.
fn checkpoint_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for path in entries.filter_map(Result::ok).map(|e| e.path()) {
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "ckpt")
                && let Ok(bytes) = std::fs::read(&path)
            {
                found.push((path, bytes));
            }
        }
    }
    found.sort();
    found
}

/// A snapshot other than the empty state a new partition gets at offset 0 of a new topic.
fn has_snapshot_after_start(dir: &Path) -> bool {
    checkpoint_files(dir).iter().any(|(p, _)| {
        p.file_stem()
            .and_then(|s| s.to_str()?.parse::<i64>().ok())
            .is_some_and(|o| o > 0)
    })
}

/// Snapshots are rarer than commits: after a kill -9 the group's committed offset lies after
/// the newest snapshot, so the restart loads the snapshot, replays the records up to the
/// committed offset with muted outputs, and goes on — the same alerts, each once.
#[test]
fn h_restart_from_a_snapshot_older_than_the_committed_offset_replays_muted() {
    let _broker = broker();
    let mut s = Scenario::new("old-snapshot", 2);
    s.checkpoint = "snapshot_interval = \"1h\"\n".to_owned();
    let (lines, closing, expected) = closed_stream(&s, 24);
    // A first slice, read by g0 and stopped gracefully: the stop stores the snapshots the next
    // owner resumes from …
    let slice = lines.len() / 6;
    s.produce(&lines[..slice], KeyBy::Field("tenant"));
    let mut run = s.start_as("g0", "g", "300ms");
    let at_stop = settle(&s, "g0", Duration::from_secs(3)).len();
    terminate(&mut run, &s, "g0");
    let snapshots = s.dir.path().join("checkpoints").join(&s.group);
    assert!(
        has_snapshot_after_start(&snapshots),
        "no snapshot stored at the stop:\n{}",
        s.log("g0")
    );
    // … then g1 reads up to the middle, committed every 300 ms but never snapshotted (the
    // interval is an hour).
    let mut run = s.start_as("g1", "g", "300ms");
    wait_assigned(&s, "g1");
    let half = lines.len() / 2;
    s.produce(&lines[slice..half], KeyBy::Field("tenant"));
    // g1 has committed past g0's snapshot once alerts of its own are visible.
    wait_alerts(&s, Duration::from_secs(90), |ids| ids.len() > at_stop);
    let first = settle(&s, "g1", Duration::from_secs(3));
    assert!(
        first.len() > at_stop,
        "g1 committed no alert:\n{}",
        s.log("g1")
    );
    kill9(&mut run);
    let (ids, log) = finish_after_restart(&s, &lines[half..], &closing, "g2", "g", &expected);
    assert!(ids.len() > first.len(), "the restart added nothing");
    let resumed = resumed_from(&log);
    assert!(
        resumed
            .iter()
            .any(|(committed, snapshot)| snapshot < committed),
        "g2 did not resume from an older snapshot: {resumed:?}\n{log}"
    );
}

/// The S3-compatible server of `scripts/s3` (`scripts/test` starts it).
fn s3() -> (String, String) {
    let endpoint = std::env::var("AUTHWATCH_TEST_S3").unwrap_or_else(|_| {
        panic!(
            "AUTHWATCH_TEST_S3 is not set: run `scripts/s3 start` and \
             `eval \"$(scripts/s3 env)\"`, or scripts/test"
        )
    });
    let bucket =
        std::env::var("AUTHWATCH_TEST_S3_BUCKET").unwrap_or_else(|_| "authwatch-test".to_owned());
    (endpoint, bucket)
}

/// Checkpoints in an S3 bucket (a real S3 HTTP server on loopback): an instance killed -9
/// mid-stream, then two other instances (other transactional ids, other local disks, nothing
/// shared but the bucket and the group) take over: the alert set is replay's, each alert once.
#[test]
fn i_checkpoints_in_an_s3_bucket_survive_kill_9_and_move_between_instances() {
    let _broker = broker();
    let (endpoint, bucket) = s3();
    let mut s = Scenario::new("s3", 2);
    s.checkpoint = format!(
        "url = \"s3://{bucket}/it/{}\"\nsnapshot_interval = \"1s\"\n",
        s.group
    );
    s.env = vec![
        ("AWS_ENDPOINT".into(), endpoint),
        ("AWS_ALLOW_HTTP".into(), "true".into()),
        ("AWS_ACCESS_KEY_ID".into(), "authwatch-test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "authwatch-test".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
    ];
    let mut lines = stream(s.dir.path(), "example", 80, 3, 25);
    let closing = lines.pop().unwrap();
    let expected = {
        let mut all = lines.clone();
        all.push(closing.clone());
        replay_ids(&s, &all)
    };
    let half = lines.len() / 2;
    s.produce(&lines[..half], KeyBy::Field("tenant"));
    let mut run = s.start_as("h1", "h1", "300ms");
    let first = settle(&s, "h1", Duration::from_secs(3));
    kill9(&mut run);
    assert!(
        !s.dir.path().join("checkpoints").exists(),
        "state went to the local directory, not the bucket"
    );
    s.produce(&lines[half..], KeyBy::Field("tenant"));
    s.produce(std::slice::from_ref(&closing), KeyBy::Field("tenant"));
    let mut a = s.start_as("h2", "h2", "300ms");
    let mut b = s.start_as("h3", "h3", "300ms");
    let ids = wait_alerts(&s, Duration::from_secs(120), |ids| {
        ids.len() >= expected.len()
    });
    terminate(&mut a, &s, "h2");
    terminate(&mut b, &s, "h3");
    let logs = format!("{}\n----\n{}", s.log("h2"), s.log("h3"));
    assert_exactly_once(&ids, &expected, &logs);
    assert!(ids.len() > first.len(), "the second half added nothing");
    assert!(logs.contains("restored=true"), "{logs}");
}

#[test]
fn j_run_with_sql_detections_archive_and_the_postgres_endpoint() {
    let _broker = broker();
    let mut s = Scenario::new("sql", 2);
    let lines = stream(s.dir.path(), "example", 120, 3, 31);
    // What replay with the SQL detections finds: the compiled rules' alerts, and the SQL
    // versions' again with the same alert ids.
    let sql = repo().join("sql");
    let mut expected: Vec<String> = replay_alerts(&s, &lines, &["--sql".as_ref(), sql.as_os_str()])
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_owned())
        .collect();
    expected.sort();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let archive = s.dir.path().join("archive");
    let config = s.config("g", "1s");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[sql]\nenabled = true\ndir = {:?}\n\n[archive]\nenabled = true\nlocation = {:?}\n\n\
         [serve]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\npassword_env = \"AW_TEST_SQL_PASSWORD\"\n\
         live_window = \"30d\"\n",
        repo().join("sql"),
        archive.display().to_string(),
    ));
    std::fs::write(&config, text).unwrap();
    s.produce(&lines, KeyBy::Field("tenant"));
    s.env
        .push(("AW_TEST_SQL_PASSWORD".to_owned(), "s3cret-pass".to_owned()));
    let mut run = s.spawn("g", &config, &[]);
    let mut ids = wait_alerts(&s, Duration::from_secs(120), |ids| {
        ids.len() >= expected.len()
    });
    ids.sort();
    assert_eq!(ids, expected, "{}", s.log("g"));

    // The endpoint of the running instance: the live window holds every event, and the
    // archive (written at each checkpoint) too.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(port)
            .user("authwatch")
            .password("s3cret-pass")
            .dbname("authwatch")
            .connect_timeout(Duration::from_secs(10));
        let (client, connection) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        for query in [
            "SELECT count(*) FROM live_events",
            "SELECT count(*) FROM events",
        ] {
            let started = Instant::now();
            loop {
                let n: i64 = client.query_one(query, &[]).await.unwrap().get(0);
                if n == lines.len() as i64 {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{query}: {n} of {} events",
                    lines.len()
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        let e = client
            .simple_query("DROP TABLE live_events")
            .await
            .expect_err("read-only");
        assert_eq!(e.as_db_error().unwrap().code().code(), "25006");
    });
    terminate(&mut run, &s, "g");
    // After the graceful stop: every alert is archived too.
    let out = run_ok(
        authwatch()
            .args([
                "sql",
                "SELECT count(*) AS n FROM alerts",
                "--format",
                "csv",
                "--archive",
            ])
            .arg(&archive),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("n\n{}\n", expected.len())
    );
}

#[test]
fn k_output_topics_are_looked_up_and_only_missing_ones_created() {
    use rdkafka::consumer::BaseConsumer;
    let _broker = broker();
    let present = unique("k-present");
    let absent = unique("k-absent");
    admin::ensure_topics(&client(), &[(&present, 3)]).unwrap();
    // The start's metadata client, as `authwatch run` builds it.
    let probe: BaseConsumer = client()
        .set("allow.auto.create.topics", "false")
        .create()
        .unwrap();
    let topics = [(present.as_str(), -1), (absent.as_str(), -1)];
    let timeout = Duration::from_secs(30);
    assert_eq!(
        admin::missing_topics(&probe, &topics, timeout).unwrap(),
        [(absent.as_str(), -1)]
    );
    // Asking did not create it (the probe asks with auto-creation off; scripts/kafka's broker
    // has it off as well).
    assert_eq!(
        admin::missing_topics(&probe, &topics, timeout).unwrap(),
        [(absent.as_str(), -1)]
    );
    // Creating only what is missing leaves the existing topic's partitions alone.
    admin::ensure_topics(
        &client(),
        &admin::missing_topics(&probe, &topics, timeout).unwrap(),
    )
    .unwrap();
    let settled = Instant::now();
    while !admin::missing_topics(&probe, &topics, timeout)
        .unwrap()
        .is_empty()
    {
        assert!(settled.elapsed() < timeout, "{absent} never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    let md = rdkafka::consumer::Consumer::fetch_metadata(&probe, Some(&present), timeout).unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 3);
    admin::delete_topics(&client(), &[&present, &absent]).unwrap();
}

/// Periodic snapshots are stored in the background, after the commit that references them
/// (`crates/kafka/src/snapshots.rs`). With a snapshot due at every commit, instances killed -9
/// while they work — between a commit and its snapshot's store, or in the middle of a write —
/// leave a store the next instance resumes from: the same alerts, each once. (What such a kill
/// leaves, a committed offset after the newest stored snapshot, is the state test h restores
/// from deterministically.)
#[test]
fn l_background_snapshots_survive_kill_9_mid_stream() {
    let _broker = broker();
    let mut s = Scenario::new("bg-snapshots", 2);
    s.checkpoint = "snapshot_interval = \"200ms\"\n".to_owned();
    let (lines, closing, expected) = closed_stream(&s, 25);
    let half = lines.len() / 2;
    let mut background = 0;
    for (round, part) in [&lines[..half], &lines[half..]].into_iter().enumerate() {
        let instance = format!("l{round}");
        let mut run = s.start_as(&instance, "l", "200ms");
        wait_assigned(&s, &instance);
        // Fed in slices over several snapshot intervals (a snapshot covers only the tasks that
        // changed), and killed while the last slice is processed.
        for slice in part.chunks(part.len().div_ceil(4)) {
            s.produce(slice, KeyBy::Field("tenant"));
            std::thread::sleep(Duration::from_millis(400));
        }
        kill9(&mut run);
        background += s
            .log(&instance)
            .lines()
            .filter(|l| l.contains("snapshot stored") && l.contains("background=true"))
            .count();
    }
    assert!(background > 0, "no snapshot was stored in the background");
    // l0 stored the empty state of each new partition at assignment, l1 resumed from l0's
    // snapshot: either covers a crash until the next snapshot is stored, so neither stored one
    // before a commit (only a stop or revocation does).
    for instance in ["l0", "l1"] {
        let log = s.log(instance);
        assert!(
            !log.contains("background=false"),
            "{instance} stored a snapshot before a commit:\n{log}"
        );
    }
    s.produce(std::slice::from_ref(&closing), KeyBy::Field("tenant"));
    let mut run = s.start_as("l2", "l", "200ms");
    wait_assigned(&s, "l2");
    // Time to replay what l1 committed after its last stored snapshot and to read the closing
    // event; a duplicate committed meanwhile would show below.
    std::thread::sleep(Duration::from_secs(3));
    let ids = wait_alerts(&s, Duration::from_secs(90), |ids| {
        ids.len() >= expected.len()
    });
    terminate(&mut run, &s, "l2");
    let log = s.log("l2");
    assert_exactly_once(&ids, &expected, &log);
    for instance in ["l1", "l2"] {
        let log = s.log(instance);
        assert!(
            log.contains("restored=true"),
            "{instance} restored nothing:\n{log}"
        );
    }
}

/// A partition new to the group gets the empty state stored at the offset it starts from, and
/// that is its first snapshot: commits rest on it until the snapshot interval asks for the next.
/// A crash before then resumes from the empty state and replays everything before the
/// committed offset, muted: the same alerts, each once.
#[test]
fn m_restart_from_the_empty_starting_state_replays_from_the_start() {
    let _broker = broker();
    let mut s = Scenario::new("empty-state", 2);
    s.checkpoint = "snapshot_interval = \"1h\"\n".to_owned();
    let (lines, closing, expected) = closed_stream(&s, 26);
    let mut run = s.start_as("m1", "m", "300ms");
    let started = Instant::now();
    while s.log("m1").matches("starting state stored").count() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "m1 stored no starting states:\n{}",
            s.log("m1")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The empty starting states, as stored at the assignment (before any record was read).
    let snapshots = s.dir.path().join("checkpoints").join(&s.group);
    let starting = checkpoint_files(&snapshots);
    assert_eq!(starting.len(), 2, "a starting state per partition");
    let half = lines.len() / 2;
    s.produce(&lines[..half], KeyBy::Field("tenant"));
    let first = settle(&s, "m1", Duration::from_secs(3));
    kill9(&mut run);
    // With the next snapshot an hour away, the starting states are all m1 stored.
    let stored = checkpoint_files(&snapshots);
    assert!(stored == starting, "m1 stored snapshots of its own");
    let (ids, log) = finish_after_restart(&s, &lines[half..], &closing, "m2", "m", &expected);
    assert!(ids.len() > first.len(), "the restart added nothing");
    let resumed = resumed_from(&log);
    assert!(
        resumed
            .iter()
            .any(|(committed, snapshot)| *snapshot == 0 && *committed > 0),
        "m2 did not resume from the empty starting state: {resumed:?}\n{log}"
    );
}

/// Produces the rest of a [`closed_stream`] and its closing event, starts `instance` with
/// `identity`'s transactional id, waits for every expected alert and stops it gracefully; checks
/// that each alert is committed exactly once. Returns the committed alert ids and the log.
fn finish_after_restart(
    s: &Scenario,
    rest: &[String],
    closing: &str,
    instance: &str,
    identity: &str,
    expected: &BTreeSet<String>,
) -> (Vec<String>, String) {
    s.produce(rest, KeyBy::Field("tenant"));
    s.produce(&[closing.to_owned()], KeyBy::Field("tenant"));
    let mut run = s.start_as(instance, identity, "300ms");
    wait_assigned(s, instance);
    let ids = wait_alerts(s, Duration::from_secs(90), |ids| {
        ids.len() >= expected.len()
    });
    terminate(&mut run, s, instance);
    let log = s.log(instance);
    assert_exactly_once(&ids, expected, &log);
    (ids, log)
}

/// Runs `authwatch run --until-end` as `instance` and waits (90 s at most) for it to stop at
/// the end of every partition; returns its log.
fn run_until_end(s: &Scenario, instance: &str, config: &Path) -> String {
    let status = until_end_status(s, instance, config);
    let log = s.log(instance);
    assert!(status.success(), "{instance} exited with {status}:\n{log}");
    assert!(
        log.contains("every partition reached its end offset"),
        "{instance}:\n{log}"
    );
    log
}

/// Runs `authwatch run --until-end` as `instance`; its exit status, within 90 s.
fn until_end_status(s: &Scenario, instance: &str, config: &Path) -> std::process::ExitStatus {
    let mut child = s.spawn(instance, config, &["--until-end"]);
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > Duration::from_secs(90) {
            kill9(&mut child);
            panic!("{instance} did not stop within 90 s:\n{}", s.log(instance));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `instance` holds partitions. After a kill -9 the group first waits out the dead
/// member's session.
fn wait_assigned(s: &Scenario, instance: &str) {
    let started = Instant::now();
    while !s.log(instance).contains("partition assigned") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{instance} got no partitions:\n{}",
            s.log(instance)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `--until-end` (backfills): a run stops by itself once every partition it holds is read to the
/// end it had at the assignment, with the stream's alerts committed exactly once. A new group
/// that starts at the end (`auto.offset.reset = latest`) has read everything there is at once and
/// stops without a record; so does the partition that never received one.
#[test]
fn n_until_end_stops_at_the_end_each_partition_had() {
    let _broker = broker();
    let mut s = Scenario::new("until-end", 2);
    let lines = stream(s.dir.path(), "example", 120, 3, 27);
    let expected = replay_ids(&s, &lines);
    // One tenant, one key: the second partition stays empty.
    s.produce(&lines, KeyBy::Field("tenant"));
    let backfill = |s: &Scenario, instance: &str| -> String {
        let config = s.config(instance, "300ms");
        run_until_end(s, instance, &config)
    };
    let log = backfill(&s, "n1");
    let ids = alert_ids(&s.read(&s.alerts, true));
    assert_exactly_once(&ids, &expected, &log);

    s.group = format!("{}-latest", s.group);
    s.checkpoint
        .push_str("\n[kafka.properties]\n\"auto.offset.reset\" = \"latest\"\n");
    let log = backfill(&s, "n2");
    let after = alert_ids(&s.read(&s.alerts, true));
    assert_eq!(after.len(), ids.len(), "n2 read records:\n{log}");
    // Its checkpoint holds the ends it started at, so a later run of the group goes on from
    // there: the loaded partition's end, and 0 for the empty one.
    let mut committed: Vec<i64> = committed_offsets(&s, 2, &log);
    committed.sort_unstable();
    assert_eq!(committed, [0, lines.len() as i64], "{log}");
}

/// The group's committed offset of each of the input's first `partitions` partitions.
fn committed_offsets(s: &Scenario, partitions: i32, log: &str) -> Vec<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let group: BaseConsumer = client().set("group.id", &s.group).create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(&s.input, p);
    }
    group
        .committed_offsets(tpl, Duration::from_secs(30))
        .unwrap()
        .elements()
        .iter()
        .map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => o,
            other => panic!(
                "{}/{}: committed {other:?}\n{log}",
                e.topic(),
                e.partition()
            ),
        })
        .collect()
}

/// The state of one partition is lost (its files deleted) while the other's is there: the
/// assignment looks both up at once, and the one failure stops the run with an error naming
/// that partition and its committed offset. Nothing is read or committed: the offsets and the
/// other partition's files are as they were.
#[test]
fn p_a_lost_state_of_one_partition_stops_the_run_naming_it() {
    let _broker = broker();
    let s = Scenario::new("lost-state", 2);
    let lines = stream(s.dir.path(), "example", 60, 2, 28);
    s.produce(&lines, KeyBy::Field("user.name"));
    let config = s.config("p1", "300ms");
    let log = run_until_end(&s, "p1", &config);
    let before = committed_offsets(&s, 2, &log);
    assert!(before.iter().all(|o| *o > 0), "{before:?}\n{log}");
    let root = s.dir.path().join("checkpoints").join(&s.group);
    let topic_dir = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("1").is_dir())
        .unwrap_or_else(|| panic!("no partition directories under {}", root.display()));
    std::fs::remove_dir_all(topic_dir.join("1")).unwrap();
    let kept = checkpoint_files(&topic_dir.join("0"));
    assert!(!kept.is_empty());

    let config = s.config("p2", "300ms");
    let status = until_end_status(&s, "p2", &config);
    let log = s.log("p2");
    assert!(!status.success(), "p2 exited with {status}:\n{log}");
    let named = format!("/1: the group committed offset {}", before[1]);
    assert!(log.contains(&named), "no {named:?} in:\n{log}");
    assert_eq!(committed_offsets(&s, 2, &log), before, "{log}");
    assert_eq!(checkpoint_files(&topic_dir.join("0")), kept, "{log}");
}

/// A real OTLP/HTTP collector on loopback: accepts `POST /v1/metrics` (HTTP/1.1, keep-alive)
/// and hands over each decoded export.
fn otlp_collector() -> (
    String,
    std::sync::mpsc::Receiver<ExportMetricsServiceRequest>,
) {
    use prost::Message as _;
    use std::io::{BufRead, BufReader, Read};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/v1/metrics", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reply = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                loop {
                    let mut length = None;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse::<usize>().ok();
                        }
                    }
                    let mut body = vec![0; length.expect("OTLP export without content-length")];
                    reader.read_exact(&mut body).unwrap();
                    let request = ExportMetricsServiceRequest::decode(body.as_slice()).unwrap();
                    let _ = tx.send(request);
                    reply
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .unwrap();
                }
            });
        }
    });
    (endpoint, rx)
}

/// Issue 6 with issue 8: the graceful stop's own checkpoint and snapshot store are in the final
/// OTLP export. They finish after the stop flag is set, while the run drains; with the
/// checkpoint interval (5 min) and the export interval (1 h) longer than the run, the stop's
/// checkpoint is the run's only one and the final export the only export.
#[test]
fn o_the_final_otlp_export_holds_the_graceful_stops_checkpoint() {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    let _broker = broker();
    let mut s = Scenario::new("otlp", 1);
    // The operator's service name is kept (it was overridden with `authwatch`).
    s.env
        .push(("OTEL_SERVICE_NAME".to_owned(), "authwatch-eu".to_owned()));
    let lines = stream(s.dir.path(), "example", 40, 2, 31);
    s.produce(&lines, KeyBy::Field("tenant"));
    let (endpoint, exports) = otlp_collector();
    let config = s.config("o1", "5m");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[telemetry]\n",
        &format!("[telemetry]\notlp_endpoint = {endpoint:?}\nexport_interval = \"1h\"\n"),
    );
    std::fs::write(&config, text).unwrap();
    let log = run_until_end(&s, "o1", &config);
    assert!(!log.contains("telemetry still shared"), "{log}");
    let export = exports
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("no OTLP export ({e}):\n{log}"));
    assert!(
        exports.try_recv().is_err(),
        "more than the final export:\n{log}"
    );
    let service: Vec<String> = export
        .resource_metrics
        .iter()
        .filter_map(|r| r.resource.as_ref())
        .flat_map(|r| &r.attributes)
        .filter(|kv| kv.key == "service.name")
        .map(|kv| format!("{:?}", kv.value))
        .collect();
    assert!(
        service.len() == 1 && service[0].contains("authwatch-eu"),
        "{service:?}"
    );
    // Histogram data point counts by metric name and `when` label.
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for metric in export
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
    {
        if let Some(Data::Histogram(h)) = &metric.data {
            for point in &h.data_points {
                let when = point
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "when")
                    .map(|kv| format!("{:?}", kv.value))
                    .unwrap_or_default();
                let name = match when {
                    w if w.contains("before_commit") => format!("{}/before_commit", metric.name),
                    w if w.contains("after_commit") => format!("{}/after_commit", metric.name),
                    _ => metric.name.clone(),
                };
                *counts.entry(name).or_default() += point.count;
            }
        }
    }
    assert_eq!(
        counts.get("authwatch.checkpoint.duration").copied(),
        Some(1),
        "{counts:?}\n{log}"
    );
    // The empty starting state at the assignment, and the stop's snapshot, both before their
    // commits.
    let stored =
        log.matches("starting state stored").count() + log.matches("snapshot stored").count();
    assert_eq!(stored, 2, "{log}");
    assert_eq!(
        counts
            .get("authwatch.snapshot.store.duration/before_commit")
            .copied(),
        Some(stored as u64),
        "{counts:?}\n{log}"
    );
}

fn header<'a>(record: &'a Record, key: &str) -> Option<&'a str> {
    record
        .headers
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// One input record whose outputs are too large for the producer (`message.max.bytes`, 1 MB):
/// a deciding event with a user agent of a megabyte, accepted as input (`max_line_bytes` 1 MiB,
/// the default). Its enriched event becomes an `output_too_large` dead letter and the alerts it
/// decided are written cut down; nothing stalls, nothing restarts, every other record is
/// processed, and every alert is committed exactly once.
#[test]
fn q_outputs_too_large_for_the_producer_do_not_stall_the_stream() {
    let _broker = broker();
    let mut s = Scenario::new("oversize", 1);
    s.max_line_bytes = 1 << 20;
    let mut lines = stream(s.dir.path(), "example", 120, 3, 29);
    // The deciding event of an alert whose rule does not look at devices, so that its alert
    // stays (with the huge user agent in `observed`).
    let before = replay_alerts(&s, &lines, &[]);
    let decider = before
        .iter()
        .find(|a| !a["rule_id"].as_str().unwrap().contains("device"))
        .map(|a| a["observed"]["event_id"].as_str().unwrap().to_owned())
        .expect("an alert to make huge");
    let at = lines
        .iter()
        .position(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event_id"] == decider)
        .unwrap();
    let mut event: serde_json::Value = serde_json::from_str(&lines[at]).unwrap();
    event["device"]["user_agent"] =
        format!("Mozilla/5.0 (X11; Linux x86_64) {}", "x".repeat(1_010_000)).into();
    lines[at] = event.to_string();
    assert!(lines[at].len() < s.max_line_bytes, "{}", lines[at].len());
    let expected = replay_alerts(&s, &lines, &[]);
    let huge: BTreeSet<String> = expected
        .iter()
        .filter(|a| {
            a["observed"]["device"]["user_agent"]
                .as_str()
                .is_some_and(|ua| ua.len() > 1_000_000)
        })
        .map(|a| a["alert_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!huge.is_empty(), "no alert carries the huge user agent");
    let expected: BTreeSet<String> = expected
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_owned())
        .collect();
    // The provider's producer takes records of a megabyte.
    let mut feeder = client();
    feeder.set("message.max.bytes", "2000000");
    admin::produce_lines(&feeder, &s.input, lines.join("\n").as_bytes(), KeyBy::None).unwrap();

    let config = s.config("q", "300ms");
    let log = run_until_end(&s, "q", &config);
    assert!(!log.contains("restarting"), "{log}");
    let alerts = s.read(&s.alerts, true);
    assert_exactly_once(&alert_ids(&alerts), &expected, &log);
    for record in alerts.iter().filter(|r| {
        let id = header(r, "alert_id").unwrap_or_default();
        huge.contains(id)
    }) {
        assert!(
            record.payload.len() <= 1_000_000,
            "{}",
            record.payload.len()
        );
        let full: usize = header(record, "truncated").unwrap().parse().unwrap();
        assert!(full > 1_000_000, "{full}");
        let alert: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
        let ua = alert["observed"]["device"]["user_agent"].as_str().unwrap();
        assert!(
            ua.starts_with("Mozilla/5.0 (X11; Linux x86_64) xxx"),
            "{ua:.60}"
        );
        assert!(ua.ends_with(" bytes cut]"), "{}", &ua[ua.len() - 40..]);
    }
    assert!(
        alerts.iter().all(|r| {
            let id = header(r, "alert_id").unwrap_or_default();
            huge.contains(id) == header(r, "truncated").is_some()
        }),
        "only the huge alerts are cut"
    );
    // The enriched copy of the huge event is a dead letter that says why, with the head of the
    // record and its size; every other event is on the enriched topic.
    let events = format!("{}.events", s.input);
    let dead: Vec<Record> = s
        .read(&s.dead, true)
        .into_iter()
        .filter(|r| header(r, "reason") == Some("output_too_large"))
        .collect();
    assert_eq!(dead.len(), 1, "{log}");
    let letter: serde_json::Value = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!(letter["reason"], "output_too_large");
    let detail = letter["detail"].as_str().unwrap();
    assert!(
        detail.contains(&events) && detail.contains(&decider),
        "{detail}"
    );
    assert!(detail.contains("message.max.bytes (1000000)"), "{detail}");
    assert!(letter["raw_len"].as_u64().unwrap() > 1_000_000, "{letter}");
    assert_eq!(letter["raw"].as_str().unwrap().len(), 4096);
    assert_eq!(s.read(&events, true).len(), lines.len() - 1, "{log}");
}

/// A provider's producer that writes in transactions, as the test's own client.
fn transactional_producer(id: &str) -> rdkafka::producer::BaseProducer {
    use rdkafka::producer::Producer;
    let producer: rdkafka::producer::BaseProducer =
        client().set("transactional.id", id).create().unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer
}

/// Begins a transaction of `producer` holding `lines` of `topic`, delivered to the broker but
/// neither committed nor aborted.
fn open_transaction(producer: &rdkafka::producer::BaseProducer, topic: &str, lines: &[String]) {
    use rdkafka::producer::{BaseRecord, Producer};
    producer.begin_transaction().unwrap();
    for line in lines {
        producer
            .send(BaseRecord::<(), str>::to(topic).payload(line.as_str()))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// A transactional input ends with a transaction marker (a control record, which a consumer
/// never sees): 12 records in a committed transaction, then 3 in an aborted one, so the end
/// offset is 17. `--until-end` stops there and commits 17 — not 12, the offset after the last
/// record read, which it waited forever to pass and which would leave a lag of 1 for good.
#[test]
fn r_until_end_stops_on_a_transactional_input_and_commits_past_its_markers() {
    use rdkafka::producer::Producer;
    let _broker = broker();
    let s = Scenario::new("txn-input", 1);
    let lines = stream(s.dir.path(), "example", 20, 1, 30);
    let producer = transactional_producer(&format!("{}-provider", s.group));
    open_transaction(&producer, &s.input, &lines[..12]);
    producer
        .commit_transaction(Duration::from_secs(30))
        .unwrap();
    open_transaction(&producer, &s.input, &lines[12..15]);
    producer.abort_transaction(Duration::from_secs(30)).unwrap();

    let config = s.config("r", "300ms");
    let log = run_until_end(&s, "r", &config);
    assert_eq!(committed_offsets(&s, 1, &log), [17], "{log}");
    assert_eq!(s.read(&format!("{}.events", s.input), true).len(), 12);
}

/// Starts `--until-end` as `instance` with the store write of its last checkpoint (the
/// snapshot at `end`) bound to fail: a directory where that file's temporary copy goes. Returns
/// the run once it has logged the restart after that failure; a run that stops instead fails
/// the test.
fn until_end_failing_at_the_end(s: &Scenario, instance: &str, end: i64) -> (Child, PathBuf) {
    let blocker = s
        .dir
        .path()
        .join("checkpoints")
        .join(&s.group)
        .join(&s.input)
        .join("0")
        .join(format!(".{end}.ckpt.tmp"));
    std::fs::create_dir_all(&blocker).unwrap();
    let config = s.config(instance, "300ms");
    let mut run = s.spawn(instance, &config, &["--until-end"]);
    let started = Instant::now();
    while !s
        .log(instance)
        .contains("restarting from the last checkpoint")
    {
        if let Some(status) = run.try_wait().unwrap() {
            panic!(
                "{instance} exited with {status} instead of retrying its last checkpoint:\n{}",
                s.log(instance)
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{instance} did not fail at its end:\n{}",
            s.log(instance)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        s.log(instance)
            .contains("every partition reached its end offset"),
        "{}",
        s.log(instance)
    );
    (run, blocker)
}

/// Waits (60 s at most) for `run` to exit; its status.
fn exit_status(s: &Scenario, instance: &str, run: &mut Child) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = run.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            kill9(run);
            panic!("{instance} did not stop within 60 s:\n{}", s.log(instance));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `--until-end` (a backfill Job) exits 0 only with its end committed. When the last
/// checkpoint, at the end, fails, the run restarts from the checkpoint before it and reads to
/// the end again — once the store works again it commits the end and exits 0, each event
/// processed once. A stop by signal before its end is committed exits with an error.
#[test]
fn s_until_end_exits_0_only_with_its_end_committed() {
    let _broker = broker();
    let mut s = Scenario::new("end-commit", 1);
    let lines = stream(s.dir.path(), "example", 20, 1, 31);
    s.produce(&lines[..20], KeyBy::None);

    let (mut run, blocker) = until_end_failing_at_the_end(&s, "s1", 20);
    std::fs::remove_dir(&blocker).unwrap();
    let status = exit_status(&s, "s1", &mut run);
    let log = s.log("s1");
    assert!(status.success(), "s1 exited with {status}:\n{log}");
    assert_eq!(committed_offsets(&s, 1, &log), [20], "{log}");
    assert_eq!(s.read(&format!("{}.events", s.input), true).len(), 20);

    // Another group over the same records, stopped by SIGTERM while it retries its end.
    s.group = format!("{}-signal", s.group);
    let (mut run, _blocker) = until_end_failing_at_the_end(&s, "s2", 20);
    let kill = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = exit_status(&s, "s2", &mut run);
    let log = s.log("s2");
    assert!(!status.success(), "s2 exited with {status}:\n{log}");
    assert!(log.contains("stopped before every partition"), "{log}");
}

/// An output topic whose `max.message.bytes` is below the producer's: the broker would refuse
/// a large record only at the commit, failing the transaction at every retry (the run restarting
/// forever, nothing committed). Held to the topic's limit, the producer refuses it when it is
/// handed over and the sink writes an `output_too_large` dead letter; the rest goes on.
#[test]
fn t_an_output_topic_with_a_small_record_limit_gets_dead_letters_not_restarts() {
    let _broker = broker();
    let mut s = Scenario::new("smalltopic", 1);
    s.max_line_bytes = 1_000_000;
    let enriched = format!("{}.events", s.input);
    admin::create_topic_with(&client(), &enriched, 1, &[("max.message.bytes", "100000")]).unwrap();
    let reported = admin::max_message_bytes(&client(), &[&enriched, &s.input]).unwrap();
    assert_eq!(reported[0], (enriched.clone(), 100_000));
    let mut lines = stream(s.dir.path(), "example", 10, 1, 31);
    let big = serde_json::json!({
        "time": event_time(&lines[5]), "provider": "okta", "tenant": "example",
        "event_id": "big-1", "provider_event_type": "user.session.start",
        "user": {"id": "big", "name": "x".repeat(300_000)},
        "activity": "logon", "outcome": "success", "src": {"ip": "10.0.0.1"}
    })
    .to_string();
    lines.insert(5, big);
    s.produce(&lines, KeyBy::None);
    let mut run = s.start("t", "300ms");
    let started = Instant::now();
    let (dead, events) = loop {
        let dead = s.read(&s.dead, true);
        let events = s.read(&enriched, true);
        if (!dead.is_empty() && events.len() + 1 >= lines.len())
            || started.elapsed() > Duration::from_secs(60)
        {
            break (dead, events);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    terminate(&mut run, &s, "t");
    assert_eq!(dead.len(), 1, "{}", s.log("t"));
    let v: serde_json::Value = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!(v["reason"], "output_too_large", "{v}");
    assert!(v["raw_len"].as_u64().unwrap() > 300_000, "{v}");
    assert_eq!(events.len(), lines.len() - 1, "{}", s.log("t"));
    assert!(!s.log("t").contains("RecordTooLarge"), "{}", s.log("t"));
}

/// A `--role ingest` process runs only the ingest stage: its pipeline is the one `/metrics`
/// exports (provider records read, dead letters), not an empty detect stage's.
#[test]
fn u_a_role_ingest_process_exports_the_ingest_stages_pipeline() {
    let _broker = broker();
    let s = Scenario::new("ingest-role", 2);
    let mut lines = stream(s.dir.path(), "example", 5, 1, 41);
    lines.insert(3, "this is not json".to_owned());
    s.produce(&lines, KeyBy::None);
    let config = s.config("i", "300ms");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[kafka.repartition]\nenabled = true\npartitions = 2\n");
    std::fs::write(&config, text).unwrap();
    let mut run = s.spawn("i", &config, &["--role", "ingest"]);
    let addr = telemetry_addr(&s, "i");
    let read = r#"authwatch_events_in_total{stage="source"}"#;
    let started = Instant::now();
    let metrics = loop {
        let metrics = crate::telemetry::scrape(addr);
        if metrics.get(read) >= Some(&(lines.len() as f64))
            || started.elapsed() > Duration::from_secs(60)
        {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (status, live) = crate::telemetry::get(addr, "/livez");
    terminate(&mut run, &s, "i");
    assert_eq!(
        metrics.get(read),
        Some(&(lines.len() as f64)),
        "{metrics:#?}"
    );
    let dead: f64 = metrics
        .iter()
        .filter(|(k, _)| k.starts_with("authwatch_dead_letters_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(dead, 1.0, "{metrics:#?}");
    assert_eq!(status, 200, "{live}");
}
