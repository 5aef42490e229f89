//! The Kafka runtime in this process against a real broker: what its numbers, its records and
//! its client configuration are. The broker is found at `AUTHWATCH_TEST_KAFKA` (`scripts/test`
//! starts a broker of its own and sets it); without it these tests fail. They run one at a time,
//! on topics and groups of their own. (`tests/integration/kafka.rs` runs the `authwatch run`
//! binary instead.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use authwatch_detect::RulePack;
use authwatch_kafka::admin::{self, KeyBy};
use authwatch_kafka::{ClientConfig, KafkaMetrics, Role, RunReport, Runtime};
use authwatch_pipeline::config::{KafkaTopic, LatePolicy, RepartitionConfig};
use authwatch_pipeline::{Config, Metrics};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

static BROKER: Mutex<()> = Mutex::new(());

/// The broker's address and the lock that runs these tests one at a time. Without
/// `AUTHWATCH_TEST_KAFKA` the test fails: a suite that skipped them would pass without testing.
fn broker() -> (MutexGuard<'static, ()>, String) {
    let addr = std::env::var("AUTHWATCH_TEST_KAFKA").unwrap_or_else(|_| {
        panic!(
            "AUTHWATCH_TEST_KAFKA is not set: run scripts/test, or `scripts/kafka start` and \
             AUTHWATCH_TEST_KAFKA=127.0.0.1:19092"
        )
    });
    let guard = BROKER.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
            .is_ok(),
        "no Kafka broker at {addr}: run `scripts/kafka start`"
    );
    (guard, addr)
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bt-{name}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

fn client(addr: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr);
    c
}

/// 2026-01-01T00:00:00Z, in ms.
const T0: i64 = 1_767_225_600_000;

/// A native event line of tenant `t1` at `time` with `id`, its user agent padded by `pad`
/// bytes.
fn event(time: i64, id: &str, pad: usize) -> String {
    serde_json::json!({
        "time": time,
        "provider": "okta",
        "tenant": "t1",
        "event_id": id,
        "user": {"id": "u1", "name": "ann@t1.example", "domain": "t1.example"},
        "activity": "logon",
        "factor": "password",
        "outcome": "success",
        "src": {"ip": "203.0.113.7"},
        "device": {"user_agent": format!("Mozilla/5.0 {}", "x".repeat(pad))},
    })
    .to_string()
}

/// Topics, group and checkpoint directory of one test.
struct Scenario {
    addr: String,
    dir: tempfile::TempDir,
    input: String,
    group: String,
}

impl Scenario {
    fn new(addr: &str, name: &str, partitions: i32) -> Scenario {
        let id = unique(name);
        let s = Scenario {
            addr: addr.to_owned(),
            dir: tempfile::tempdir().unwrap(),
            input: format!("{id}.in"),
            group: format!("{id}.group"),
        };
        admin::ensure_topics(&client(addr), &[(s.input.as_str(), partitions)]).unwrap();
        s
    }

    fn topic(&self, what: &str) -> String {
        format!("{}.{what}", self.group)
    }

    /// A configuration of instance `instance` (its own transactional id, and `client.id`: the
    /// range assignor gives the partitions to the members in the order of their ids, which
    /// start with it).
    fn config(&self, instance: &str) -> Config {
        let mut c = Config::default();
        c.kafka.brokers = self.addr.clone();
        c.kafka.group_id = self.group.clone();
        c.kafka.topics = vec![KafkaTopic {
            name: self.input.clone(),
            format: authwatch_normalize::Format::Native,
        }];
        c.kafka.alert_topic = self.topic("alerts");
        c.kafka.dead_letter_topic = self.topic("dead");
        c.kafka.audit_topic = self.topic("audit");
        c.kafka.enriched_topic = Some(self.topic("events"));
        c.kafka.transactional_id = Some(format!("{}-{instance}", self.group));
        c.kafka
            .properties
            .insert("client.id".to_owned(), instance.to_owned());
        c.checkpoint.dir = self.dir.path().join("checkpoints");
        c.checkpoint.interval.0 = Duration::from_millis(300);
        c
    }

    fn produce(&self, lines: &[String]) {
        admin::produce_lines(
            &client(&self.addr),
            &self.input,
            lines.join("\n").as_bytes(),
            KeyBy::None,
        )
        .unwrap();
    }

    fn read(&self, topic: &str) -> Vec<admin::Record> {
        admin::read_topic(&client(&self.addr), topic, true, Duration::from_millis(700)).unwrap()
    }

    /// The offsets of the state files of partition `partition` of `topic` in group `group`.
    fn state_files(&self, group: &str, topic: &str, partition: i32) -> Vec<i64> {
        let dir: PathBuf = self
            .dir
            .path()
            .join("checkpoints")
            .join(group)
            .join(topic)
            .join(partition.to_string());
        let mut offsets: Vec<i64> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str()?.strip_suffix(".ckpt")?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        offsets.sort_unstable();
        offsets
    }
}

/// A runtime running on its own thread until [`Running::stop`].
struct Running {
    stop: Arc<AtomicBool>,
    stages: Vec<Arc<KafkaMetrics>>,
    /// The counters of every pipeline the runtime built (one per start or restart), in order.
    pipelines: Arc<Mutex<Vec<Arc<Metrics>>>>,
    thread: Option<JoinHandle<Result<RunReport, authwatch_kafka::KafkaError>>>,
}

impl Running {
    fn start(config: Config, role: Role) -> Running {
        Running::start_with(config, role, |runtime| runtime)
    }

    /// Starts a runtime that `setup` adds to (detectors, a sink layer).
    fn start_with(config: Config, role: Role, setup: impl FnOnce(Runtime) -> Runtime) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let pack = RulePack::from_rules(Vec::new()).unwrap();
        let pipelines = Arc::new(Mutex::new(Vec::new()));
        let built = Arc::clone(&pipelines);
        let runtime = Runtime::new(config, pack, Arc::clone(&stop))
            .unwrap()
            .role(role)
            .on_pipeline(move |_, metrics| built.lock().unwrap().push(metrics));
        let runtime = setup(runtime);
        let stages = runtime.stage_metrics();
        let thread = std::thread::spawn(move || runtime.run());
        Running {
            stop,
            stages,
            pipelines,
            thread: Some(thread),
        }
    }

    /// The only stage's (or the detect stage's) numbers.
    fn metrics(&self) -> &KafkaMetrics {
        &self.stages[0]
    }

    /// The counters of the pipeline built last.
    fn pipeline(&self) -> Option<Arc<Metrics>> {
        self.pipelines.lock().unwrap().last().cloned()
    }

    /// Stops the runtime and returns how its run ended.
    fn finish(mut self) -> Result<RunReport, authwatch_kafka::KafkaError> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }

    /// What `authwatch run` reports on `/readyz` (crates/cli/src/run.rs): every stage restored,
    /// one holding partitions.
    fn ready(&self) -> bool {
        self.stages.iter().all(|m| m.restored()) && self.stages.iter().any(|m| m.assigned())
    }

    fn stop(mut self) -> RunReport {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().unwrap();
        thread.join().unwrap().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits until `done` holds, for at most `timeout`; false if it never did.
fn wait(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

fn json(record: &admin::Record) -> serde_json::Value {
    serde_json::from_slice(&record.payload).unwrap()
}

fn header<'a>(record: &'a admin::Record, key: &str) -> Option<&'a str> {
    record
        .headers
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

// The checkpoint age of an instance that holds no partition (more instances than partitions)
// stays as fresh as a committing one's: it has nothing to commit. It grew without bound before,
// and the chart's critical AuthwatchCheckpointStale fired on a healthy scaled-out group.
#[test]
fn an_instance_without_partitions_reports_a_fresh_checkpoint_age() {
    let (_guard, addr) = broker();
    let s = Scenario::new(&addr, "age", 1);
    s.produce(
        &(0..5)
            .map(|i| event(T0 + i, &format!("e{i}"), 0))
            .collect::<Vec<_>>(),
    );
    let one = Running::start(s.config("z-one"), Role::All);
    assert!(
        wait(Duration::from_secs(60), || one.metrics().checkpoints() > 2),
        "the first instance never committed"
    );
    // The second one joins and takes the partition (its client id sorts first): the first one
    // holds nothing from then on.
    let two = Running::start(s.config("a-two"), Role::All);
    let settled = || two.metrics().assigned() && !one.metrics().assigned();
    assert!(wait(Duration::from_secs(60), settled), "no rebalance");
    std::thread::sleep(Duration::from_secs(4));
    assert!(settled(), "another rebalance");
    for (name, r) in [("one", &one), ("two", &two)] {
        let age = r.metrics().checkpoint_age_seconds();
        assert!(
            age.is_some_and(|a| a < 2.0),
            "{name} (assigned: {}) reports a checkpoint age of {age:?} s",
            r.metrics().assigned()
        );
    }
    two.stop();
    one.stop();
}

// `kafka.properties_file` is read like `kafka.properties`: its `auto.offset.reset = latest`
// reaches the consumer and the starting state of a partition new to the group, instead of
// being overridden by authwatch's default (`earliest`).
#[test]
fn the_properties_file_sets_where_a_new_partition_starts() {
    let (_guard, addr) = broker();
    let s = Scenario::new(&addr, "props", 1);
    let lines: Vec<String> = (0..5).map(|i| event(T0 + i, &format!("e{i}"), 0)).collect();
    s.produce(&lines);
    let file = s.dir.path().join("client.properties");
    std::fs::write(&file, "# the operator's\nauto.offset.reset=latest\n").unwrap();
    let mut config = s.config("one");
    config.kafka.properties_file = Some(file);
    let one = Running::start(config, Role::All);
    assert!(
        wait(Duration::from_secs(60), || one.metrics().checkpoints() > 2),
        "never committed"
    );
    assert_eq!(
        s.state_files(&s.group, &s.input, 0),
        [5],
        "the starting state is stored where the partition starts: its end"
    );
    one.stop();
    assert!(
        s.read(&s.topic("events")).is_empty(),
        "the records before the start were read"
    );
}

/// A repartitioned scenario's configuration: one internal partition, sources idle after 1 s,
/// late events to the dead-letter topic, lines up to `max_line_bytes`.
fn repartitioned(s: &Scenario, instance: &str, max_line_bytes: usize) -> Config {
    let mut c = s.config(instance);
    c.kafka.repartition = RepartitionConfig {
        enabled: true,
        partitions: 1,
        idle_after: authwatch_pipeline::config::DurationText(Duration::from_secs(1)),
        ..RepartitionConfig::default()
    };
    c.input.max_line_bytes = max_line_bytes;
    c.event_time.late_events = LatePolicy::SideOutput;
    c
}

// With repartitioning, the detect stage reads enriched events (larger than the provider records
// they came from) and must not hold them to the provider's line limit; its dead-letter records
// of late events read like every dead letter (`reason`, `detail`, `raw`, `raw_len`) and name the
// provider record, not only the internal topic's.
#[test]
fn the_detect_stage_takes_what_ingest_accepted_and_names_the_source_of_late_events() {
    let (_guard, addr) = broker();
    let s = Scenario::new(&addr, "detect", 1);
    let limit = 2048;
    // Just under the limit as a provider record; enriched (ingest time, user agent parsed,
    // profile context), it is over it.
    let mut long = event(T0 + 1_000, "long", 0);
    long = event(T0 + 1_000, "long", limit - 20 - long.len());
    assert!(
        long.len() < limit && long.len() > limit - 40,
        "{}",
        long.len()
    );
    let lines = vec![
        event(T0, "first", 0),
        long,
        // Ten minutes later: the watermark (5 minutes behind) passes the next one.
        event(T0 + 600_000, "later", 0),
        event(T0 + 2_000, "late", 0),
        event(T0 + 600_001, "last", 0),
    ];
    s.produce(&lines);
    let one = Running::start(repartitioned(&s, "one", limit), Role::All);
    let events = s.topic("events");
    let done = || {
        let ids: Vec<String> = s
            .read(&events)
            .iter()
            .map(|r| json(r)["event_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        ids.len() >= 4
    };
    let finished = wait(Duration::from_secs(90), done);
    let dead = s.read(&s.topic("dead"));
    let detected: Vec<String> = s
        .read(&events)
        .iter()
        .map(|r| json(r)["event_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    one.stop();
    let late_headers: Vec<Option<&str>> = dead
        .iter()
        .filter(|r| json(r)["event"]["event_id"] == "late")
        .map(|r| header(r, "reason"))
        .collect();
    assert_eq!(late_headers, [Some("late_event")]);
    let dead: Vec<serde_json::Value> = dead.iter().map(json).collect();
    assert!(
        !dead.iter().any(|d| d["reason"] == "line_too_long"),
        "a record ingest accepted was rejected at detect: {dead:?}"
    );
    assert!(finished, "detected {detected:?}; dead letters {dead:?}");
    assert_eq!(detected, ["first", "long", "later", "last"]);
    let late: Vec<&serde_json::Value> = dead
        .iter()
        .filter(|d| d["event"]["event_id"] == "late")
        .collect();
    assert_eq!(late.len(), 1, "{dead:?}");
    let late = late[0];
    for key in [
        "file", "line", "offset", "reason", "detail", "raw", "raw_len",
    ] {
        assert!(late.get(key).is_some(), "{key} missing: {late}");
    }
    assert_eq!(late["reason"], "late_event", "{late}");
    assert_eq!(
        late["file"],
        format!("{}.events.by-tenant/0", s.group),
        "{late}"
    );
    // The provider record: the fourth of the input's only partition.
    assert_eq!(late["source"], format!("{}/0", s.input), "{late}");
    assert_eq!(late["source_offset"], 3, "{late}");
    let raw = late["raw"].as_str().unwrap();
    assert!(raw.contains("\"late\""), "{late}");
}

// `--role all` with fewer internal partitions than instances: an instance whose detect stage
// holds nothing (never got one, or lost its one) is ready as long as its ingest stage holds a
// partition and both have handled their assignment (docs/KAFKA.md, "Metrics and readiness").
#[test]
fn an_instance_whose_detect_stage_holds_nothing_is_ready() {
    let (_guard, addr) = broker();
    let s = Scenario::new(&addr, "ready", 2);
    s.produce(
        &(0..6)
            .map(|i| event(T0 + i, &format!("e{i}"), 0))
            .collect::<Vec<_>>(),
    );
    let one = Running::start(repartitioned(&s, "a-one", 65536), Role::All);
    assert!(
        wait(Duration::from_secs(60), || one.ready()),
        "one never ready"
    );
    // The second one's client id sorts last: each ingest stage gets one provider partition,
    // and the internal topic's only partition stays with the first: the second's detect stage
    // never gets one.
    let two = Running::start(repartitioned(&s, "z-two", 65536), Role::All);
    let settled = || {
        one.stages.iter().chain(&two.stages).all(|m| m.started())
            && one.stages[1].assigned()
            && two.stages[1].assigned()
            && one.stages[0].assigned()
    };
    assert!(wait(Duration::from_secs(60), settled), "no rebalance");
    assert!(!two.stages[0].assigned());
    for (name, r) in [("one", &one), ("two", &two)] {
        assert!(
            wait(Duration::from_secs(10), || r.ready()),
            "{name} is not ready: detect assigned {} restored {}, ingest assigned {} restored {}",
            r.stages[0].assigned(),
            r.stages[0].restored(),
            r.stages[1].assigned(),
            r.stages[1].restored()
        );
    }
    two.stop();
    one.stop();
}

/// A responder's audit record of a dry run.
fn response_record() -> authwatch_respond::AuditRecord {
    use authwatch_pipeline::config::{RespondMode, ResponseAction};
    let facts = authwatch_respond::audit::AuditFacts {
        time: T0,
        alert_id: "7f1c2a9e-0000-5000-8000-000000000001",
        rule_id: "mfa_fatigue",
        severity: authwatch_event::Severity::High,
        account: "ann@t1.example",
        account_uid: None,
        tenant: Some("t1"),
        mode: RespondMode::DryRun,
        target: "webhook",
        actions: &[ResponseAction::Suspend],
    };
    authwatch_respond::AuditRecord::new(
        &facts,
        ResponseAction::Suspend,
        authwatch_respond::Decision::DryRun,
        None,
        "would suspend".to_owned(),
    )
}

// An audit topic that refuses every record (max.message.bytes = 100): the queue still flushes
// empty, and the run went on as if its records were written. Now the runtime's own records are
// counted and logged as failed (the run goes on), and a responder's record is an error, which
// stops the responder (docs/RESPONSE.md), instead of an acknowledgement.
#[test]
fn audit_records_the_broker_refuses_are_failures_not_acknowledgements() {
    use authwatch_respond::AuditSink;
    let (_guard, addr) = broker();
    let s = Scenario::new(&addr, "audit", 1);
    let tiny = s.topic("audit");
    admin::create_topic_with(&client(&addr), &tiny, 1, &[("max.message.bytes", "100")]).unwrap();
    s.produce(&[event(T0, "e0", 0)]);
    let one = Running::start(s.config("one"), Role::All);
    assert!(
        wait(Duration::from_secs(60), || one.metrics().checkpoints() > 1),
        "never committed"
    );
    let refused = one.metrics().audit_records_failed();
    one.stop();
    // `started` and `assigned` at least, and `stopped` by the end of the stop.
    assert!(refused >= 2, "{refused} audit records counted as failed");
    assert!(s.read(&tiny).is_empty());

    let mut responder = authwatch_kafka::ResponseAuditTopic::new(client(&addr), &tiny).unwrap();
    let e = responder
        .record(&response_record())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not delivered") && e.contains(&tiny), "{e}");
    // A topic that takes it: acknowledged, and there.
    let roomy = s.topic("audit-roomy");
    admin::ensure_topics(&client(&addr), &[(roomy.as_str(), 1)]).unwrap();
    let mut responder = authwatch_kafka::ResponseAuditTopic::new(client(&addr), &roomy).unwrap();
    responder.record(&response_record()).unwrap();
    let written = s.read(&roomy);
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].key.as_deref(), Some("ann@t1.example"));
}

/// The state files of the scenario's input partition 0, by offset.
fn state_file(s: &Scenario, offset: i64) -> PathBuf {
    s.dir
        .path()
        .join("checkpoints")
        .join(&s.group)
        .join(&s.input)
        .join("0")
        .join(format!("{offset}.ckpt"))
}

// A restore from a snapshot older than the committed offset replays the records up to it with
// muted outputs: their dead letters are not written again, so they are not counted again either
// (`authwatch_dead_letters_total` and the summary's `dead_letters` counted every malformed
// record of the replay once more).
#[test]
fn a_muted_replay_does_not_count_its_dead_letters_again() {
    let (_guard, addr) = broker();
    let s = Scenario::new(&addr, "replaydead", 1);
    let mut lines: Vec<String> = Vec::new();
    for i in 0..6 {
        lines.push(event(T0 + i, &format!("e{i}"), 0));
        lines.push(format!("{{malformed {i}"));
    }
    s.produce(&lines);
    let one = Running::start(s.config("one"), Role::All);
    // The starting state of the partition, new to the group, at offset 0: kept aside.
    assert!(
        wait(Duration::from_secs(60), || state_file(&s, 0).exists()),
        "no starting state"
    );
    let start = std::fs::read(state_file(&s, 0)).unwrap();
    let dead = || s.read(&s.topic("dead")).len();
    assert!(
        wait(Duration::from_secs(60), || dead() == 6),
        "{} dead letters",
        dead()
    );
    let first = one.pipeline().unwrap().dead_letter_total();
    assert_eq!(first, 6);
    one.stop();
    // Only the snapshot of the stop is left: put the starting state back in its place, so that
    // the next start resumes from offset 0 and replays the 12 committed records.
    for offset in s.state_files(&s.group, &s.input, 0) {
        std::fs::remove_file(state_file(&s, offset)).unwrap();
    }
    std::fs::write(state_file(&s, 0), start).unwrap();

    let two = Running::start(s.config("two"), Role::All);
    // Ready once the replay is handed down; the stop drains it through the pipeline.
    assert!(
        wait(Duration::from_secs(60), || two.metrics().ready()),
        "never restored"
    );
    let pipeline = two.pipeline().unwrap();
    let report = two.stop();
    let counted = pipeline.dead_letter_total();
    assert_eq!(dead(), 6, "the replay wrote dead letters");
    assert_eq!(counted, 0, "the replay counted its muted dead letters");
    let summary = report.last.unwrap();
    assert!(summary.lines >= 12, "no replay: {summary:?}");
    assert!(
        summary.dead_letters.is_empty(),
        "{:?}",
        summary.dead_letters
    );
}

/// A sink layer that fails every checkpoint while `fail` is set.
struct FailingCheckpoints {
    inner: Box<dyn authwatch_pipeline::Sink>,
    fail: Arc<AtomicBool>,
}

impl authwatch_pipeline::Sink for FailingCheckpoints {
    fn alert(&mut self, a: &authwatch_event::Alert) -> Result<(), authwatch_pipeline::SinkError> {
        self.inner.alert(a)
    }
    fn dead_letter(
        &mut self,
        d: &authwatch_pipeline::DeadLetter,
    ) -> Result<(), authwatch_pipeline::SinkError> {
        self.inner.dead_letter(d)
    }
    fn late_event(
        &mut self,
        l: &authwatch_pipeline::LateEvent,
    ) -> Result<(), authwatch_pipeline::SinkError> {
        self.inner.late_event(l)
    }
    fn flush(&mut self) -> Result<(), authwatch_pipeline::SinkError> {
        self.inner.flush()
    }
    fn wants_events(&self) -> bool {
        self.inner.wants_events()
    }
    fn event(
        &mut self,
        e: &authwatch_event::AuthEvent,
    ) -> Result<(), authwatch_pipeline::SinkError> {
        self.inner.event(e)
    }
    fn checkpoint(
        &mut self,
        c: authwatch_pipeline::Checkpoint,
    ) -> Result<(), authwatch_pipeline::SinkError> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(authwatch_pipeline::SinkError {
                output: "test".into(),
                source: std::io::Error::other("failing on purpose"),
            });
        }
        self.inner.checkpoint(c)
    }
}

// The consumer lag comes from the consumer's statistics: once a run fails (and backs off before
// it restarts) or ends, nothing reports it any more, and its last value (a healthy-looking 0)
// stayed in place while nothing was consumed.
#[test]
fn the_lag_of_a_run_that_failed_or_ended_is_not_reported() {
    let (_guard, addr) = broker();
    let s = Scenario::new(&addr, "lag", 1);
    s.produce(&[event(T0, "e0", 0)]);
    // Statistics every 5 s (authwatch's default): the consumer's close rarely serves one, and
    // only a report served after the partitions were revoked says nothing is assigned.
    let config = s.config("one");
    let fail = Arc::new(AtomicBool::new(false));
    let failing = Arc::clone(&fail);
    let one = Running::start_with(config, Role::All, move |runtime| {
        runtime.with_sink_layer(Arc::new(move |inner: Box<dyn authwatch_pipeline::Sink>| {
            Ok(Box::new(FailingCheckpoints {
                inner,
                fail: Arc::clone(&failing),
            }) as Box<dyn authwatch_pipeline::Sink>)
        }))
    });
    let lag = || one.metrics().consumer_lag();
    assert!(
        wait(Duration::from_secs(60), || lag().iter().any(|l| l.lag == 0)),
        "no lag reported: {:?}",
        lag()
    );
    fail.store(true, Ordering::Relaxed);
    assert!(
        wait(Duration::from_secs(30), || one.metrics().restarts() > 0),
        "the run did not fail"
    );
    // The restart backs off for a second before the next run's consumer exists.
    assert_eq!(lag(), [], "the failed run's lag is still reported");
    fail.store(false, Ordering::Relaxed);
    assert!(
        wait(Duration::from_secs(60), || !lag().is_empty()),
        "the next run reports no lag"
    );
    let metrics = one.stages[0].clone();
    one.stop();
    assert_eq!(
        metrics.consumer_lag(),
        [],
        "the ended run's lag is still reported"
    );
}

/// A stream detector whose snapshot fails once `fail` is set.
struct Unsnapshottable(Arc<AtomicBool>);

impl authwatch_pipeline::Checkpointed for Unsnapshottable {
    fn name(&self) -> &str {
        "unsnapshottable"
    }
    fn snapshot(&self) -> Result<Vec<u8>, authwatch_pipeline::CheckpointError> {
        if self.0.load(Ordering::Relaxed) {
            return Err(authwatch_pipeline::CheckpointError::Snapshot {
                part: "unsnapshottable".into(),
                message: "failing on purpose".into(),
            });
        }
        Ok(Vec::new())
    }
    fn restore(&mut self, _: &[u8]) -> Result<(), authwatch_pipeline::CheckpointError> {
        Ok(())
    }
}

impl authwatch_pipeline::StreamDetector for Unsnapshottable {
    fn on_event(&mut self, _: &authwatch_event::AuthEvent, _: &mut Vec<authwatch_event::Alert>) {}
    fn on_watermark(&mut self, _: i64, _: &mut Vec<authwatch_event::Alert>) {}
    fn flush(&mut self, _: &mut Vec<authwatch_event::Alert>) {}
}

struct Unsnapshottables(Arc<AtomicBool>);

impl authwatch_pipeline::DetectorFactory for Unsnapshottables {
    fn create(&self) -> Vec<Box<dyn authwatch_pipeline::StreamDetector>> {
        vec![Box::new(Unsnapshottable(Arc::clone(&self.0)))]
    }
}

// A snapshot that cannot be taken fails the detect stage for good. At the stop the source
// waits for its barrier, which the failed stage dropped: the source's "not committed" (a
// retryable error) was reported instead, and the stop ended the run with success.
#[test]
fn a_snapshot_that_fails_at_the_stop_ends_the_run_with_that_error() {
    let (_guard, addr) = broker();
    let s = Scenario::new(&addr, "snapfail", 1);
    s.produce(&[event(T0, "e0", 0), event(T0 + 1, "e1", 0)]);
    let mut config = s.config("one");
    config.checkpoint.snapshot_interval.0 = Duration::from_secs(3600);
    let fail = Arc::new(AtomicBool::new(false));
    let factory = Arc::new(Unsnapshottables(Arc::clone(&fail)));
    let one = Running::start_with(config, Role::All, move |runtime| {
        runtime.with_stream_detectors(factory)
    });
    let events = s.topic("events");
    assert!(
        wait(Duration::from_secs(60), || s.read(&events).len() == 2),
        "the events were not processed"
    );
    fail.store(true, Ordering::Relaxed);
    let e = one
        .finish()
        .expect_err("the stop succeeded without its snapshot");
    assert!(!e.is_retryable(), "{e}");
    assert!(e.to_string().contains("failing on purpose"), "{e}");
}

// A committed offset pending in a dead owner's open transaction is answered only once the
// broker aborts that transaction, after its transaction timeout. With `checkpoint.interval`
// = 30 s the run's transaction timeout, the bound of every broker call, is 70 s; the committed
// offsets were read with 30 s instead, so the new owner failed at 30 s and restarted.
#[test]
fn a_new_owner_waits_out_a_dead_owners_open_transaction() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, Producer};
    let (_guard, addr) = broker();
    let s = Scenario::new(&addr, "pending", 1);
    s.produce(&[event(T0, "e0", 0), event(T0 + 1, "e1", 0)]);
    // The dead owner: the group's offset in a transaction it never ends (a hung process).
    let dead: BaseProducer = client(&addr)
        .set("transactional.id", unique("dead"))
        .set("transaction.timeout.ms", "40000")
        .create()
        .unwrap();
    dead.init_transactions(Duration::from_secs(30)).unwrap();
    dead.begin_transaction().unwrap();
    let group: BaseConsumer = client(&addr).set("group.id", &s.group).create().unwrap();
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets
        .add_partition_offset(&s.input, 0, rdkafka::Offset::Offset(1))
        .unwrap();
    dead.send_offsets_to_transaction(
        &offsets,
        &group.group_metadata().unwrap(),
        Duration::from_secs(30),
    )
    .unwrap();
    let opened = Instant::now();
    let mut config = s.config("one");
    config.checkpoint.interval.0 = Duration::from_secs(30);
    let one = Running::start(config, Role::All);
    assert!(
        wait(Duration::from_secs(120), || one.metrics().ready()),
        "never restored"
    );
    let waited = opened.elapsed();
    let restarts = one.metrics().restarts();
    one.stop();
    assert!(
        waited > Duration::from_secs(30),
        "the offset was not pending: restored after {waited:?}"
    );
    assert_eq!(restarts, 0, "restored after {waited:?}");
    drop(dead);
}
