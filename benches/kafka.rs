//! The Kafka runtime benchmark, in one run against the local broker (`scripts/kafka`):
//!
//! Both runs use authwatch's default `checkpoint.snapshot_interval` (30 s): offsets and alerts
//! commit every interval, detector state is snapshotted far less often (docs/KAFKA.md). Then
//! (c) repeats (b) with a snapshot at every commit (`snapshot_interval` = `interval`, the design
//! before), side by side; `BENCH_SNAPSHOT_EVERY_COMMIT=0` skips it. And (a'1), (b1) repeat (a')
//! and (b) on one core (`taskset -c 0`, util-linux): how each speeds up with a second core
//! (`BENCH_ONE_CORE=0` skips them).
//!
//! 1. **Throughput.** `authwatch gen` writes N events (default 5,000,000); kcat loads them into
//!    a fresh 2-partition topic. Then, side by side on that topic, (a) `kcat -C` reads it raw from
//!    the beginning to the end, its output counted through a pipe (fetch + decompress + handing
//!    each record on), (a') the same with the output thrown away (`> /dev/null`: the floor), and
//!    (b) `authwatch run
//!    --until-end` consumes it in a fresh group through the full pipeline (normalize, enrich,
//!    detect, alerts and checkpoints in transactions) and stops at the end. Reported: records/s of
//!    each and the ratios (b)/(a) and (b)/(a').
//! 2. **Latency.** A second topic is fed at a steady rate (default 50,000 events/s for 20 s) while
//!    `authwatch run` (default config, checkpoint interval 500 ms) consumes it; a read-committed
//!    consumer of the alert topic notes when each alert becomes visible. Latency = that instant
//!    minus the instant the alert's deciding event (`observed.event_id`) was handed to the
//!    producer. Reported: p50, p99 and max over all alerts, and the five slowest with their
//!    rules. The feed starts in steady state: once `authwatch run` answers `/readyz`, the reader
//!    holds its partitions and the feeding producer has its producer id; the time `authwatch
//!    run` took to become ready is printed separately.
//!
//! `BENCH_LATENCY_CHECKPOINT` adds `[checkpoint]` keys to the live run's config (for example
//! `snapshot_interval = "1s"`, so that the 20 s feed includes snapshots, or `url = "s3://…"`).
//! `BENCH_LIVE_LOG` sets the live run's `AUTHWATCH_LOG` (for example
//! `info,authwatch_kafka::sink=debug` logs every checkpoint with its duration), and
//! `BENCH_KEEP_LOG=FILE` keeps that run's log.
//!
//! ```text
//! cargo bench -p authwatch-cli --bench kafka
//! BENCH_EVENTS=1000000 BENCH_RATE=50000 BENCH_SECONDS=20 cargo bench -p authwatch-cli --bench kafka
//! AUTHWATCH_BIN=/path/to/other/authwatch cargo bench -p authwatch-cli --bench kafka
//! ```
//!
//! Installs kcat with apt-get when it is missing. Not part of the test suite.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use authwatch_kafka::ClientConfig;
use authwatch_kafka::admin;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The binary under test: this build's, or `AUTHWATCH_BIN` (to compare two builds side by side
/// on the same broker).
fn authwatch_bin() -> std::ffi::OsString {
    std::env::var_os("AUTHWATCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_authwatch").into())
}

fn authwatch() -> Command {
    Command::new(authwatch_bin())
}

/// `program`, on the first core only when `one_core` (`taskset -c 0`).
fn pinned(program: impl AsRef<std::ffi::OsStr>, one_core: bool) -> Command {
    if one_core {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn check(status: std::process::ExitStatus, what: &str) {
    assert!(status.success(), "{what} failed: {status}");
}

fn ensure_kcat() {
    if Command::new("kcat").arg("-V").output().is_ok() {
        return;
    }
    eprintln!("kcat missing: apt-get install -y kcat");
    let _ = Command::new("apt-get").arg("update").status();
    check(
        Command::new("apt-get")
            .args(["install", "-y", "kcat"])
            .status()
            .expect("apt-get"),
        "apt-get install kcat",
    );
}

/// A config for run `name` (its own group, transactional id and checkpoints); `extra` adds
/// `[checkpoint]` keys.
fn config(
    dir: &Path,
    name: &str,
    brokers: &str,
    topic: &str,
    interval: &str,
    extra: &str,
) -> PathBuf {
    let geo = repo().join("data/geo");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[enrich.geo]\ncity_db = {:?}\nasn_db = {:?}\nanonymous_db = {:?}\n\n\
             [kafka]\nbrokers = {brokers:?}\ngroup_id = \"{topic}.{name}.group\"\n\
             alert_topic = \"{topic}.alerts\"\ndead_letter_topic = \"{topic}.dead\"\n\
             audit_topic = \"{topic}.audit\"\ntransactional_id = \"{topic}.{name}.tx\"\n\
             [[kafka.topics]]\nname = {topic:?}\nformat = \"native\"\n\n\
             [telemetry]\nlisten = \"127.0.0.1:0\"\n\n[checkpoint]\ndir = {:?}\ninterval = {interval:?}\n{extra}",
            geo.join("GeoIP2-City-Test.mmdb"),
            geo.join("GeoLite2-ASN-Test.mmdb"),
            geo.join("GeoIP2-Anonymous-IP-Test.mmdb"),
            dir.join(format!("{name}-checkpoints")),
        ),
    )
    .unwrap();
    path
}

/// Generates at least `events` events (capped there); returns how many lines it wrote.
fn generate(path: &Path, events: u64, seed: u64) -> u64 {
    // ~7 events per user and day (measured): enough users and days for `events`.
    let users = (events / 200).clamp(300, 50_000);
    let days = (events / (users * 5) + 2).max(3);
    check(
        authwatch()
            .args([
                "gen",
                "--users",
                &users.to_string(),
                "--days",
                &days.to_string(),
            ])
            .args(["--seed", &seed.to_string()])
            .args(["--max-events", &events.to_string(), "--out"])
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .unwrap(),
        "authwatch gen",
    );
    let lines = BufReader::new(std::fs::File::open(path).unwrap())
        .lines()
        .count() as u64;
    assert_eq!(
        lines, events,
        "authwatch gen wrote {lines} events, not {events}"
    );
    lines
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let events = env_u64("BENCH_EVENTS", 5_000_000);
    let rate = env_u64("BENCH_RATE", 50_000);
    let seconds = env_u64("BENCH_SECONDS", 20);
    let out = Command::new(repo().join("scripts/kafka"))
        .arg("start")
        .output()
        .expect("scripts/kafka");
    assert!(
        out.status.success(),
        "scripts/kafka start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let brokers = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    ensure_kcat();
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &brokers);
    let dir = tempfile::tempdir().unwrap();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    // 1. Throughput.
    let file = dir.path().join("events.jsonl");
    let events = generate(&file, events, 1);
    let bytes = std::fs::metadata(&file).unwrap().len();
    let topic = format!("bench-{stamp}");
    admin::ensure_topics(&client, &[(&topic, 2)]).unwrap();
    let started = Instant::now();
    check(
        Command::new("kcat")
            .args(["-P", "-b", &brokers, "-t", &topic, "-z", "lz4"])
            .args(["-X", "linger.ms=20", "-X", "batch.size=1000000"])
            .stdin(std::fs::File::open(&file).unwrap())
            .status()
            .unwrap(),
        "kcat -P",
    );
    let load = started.elapsed().as_secs_f64();
    eprintln!(
        "loaded {events} events ({:.0} MiB) into {topic} in {load:.1} s",
        bytes as f64 / (1 << 20) as f64
    );

    let started = Instant::now();
    let mut kcat = Command::new("kcat")
        .args([
            "-C",
            "-b",
            &brokers,
            "-t",
            &topic,
            "-o",
            "beginning",
            "-e",
            "-q",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut raw = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut stdout = kcat.stdout.take().unwrap();
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        raw += memchr_count(&buf[..n]);
    }
    check(kcat.wait().unwrap(), "kcat -C");
    let kcat_s = started.elapsed().as_secs_f64();
    assert_eq!(raw, events, "kcat read {raw} records");
    // kcat's records written to /dev/null: the read without the cost of handing them on (kcat
    // writes stdout in 4 KiB pieces, and through a pipe that costs more than the fetch). The
    // record count comes from its end-of-partition messages (the topic starts at offset 0).
    let kcat_null = |one_core: bool| -> f64 {
        let started = Instant::now();
        let null = pinned("kcat", one_core)
            .args(["-C", "-b", &brokers, "-t", &topic, "-o", "beginning", "-e"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let null_s = started.elapsed().as_secs_f64();
        check(null.status, "kcat -C > /dev/null");
        let ends: u64 = String::from_utf8_lossy(&null.stderr)
            .lines()
            .filter_map(|l| l.split(" at offset ").nth(1))
            .filter_map(|rest| rest.split(':').next()?.trim().parse::<u64>().ok())
            .sum();
        assert_eq!(
            ends, events,
            "kcat > /dev/null reached offsets summing to {ends}"
        );
        null_s
    };
    let null_s = kcat_null(false);

    let until_end_on = |name: &str, extra: &str, one_core: bool| -> (f64, String) {
        let cfg = config(dir.path(), name, &brokers, &topic, "1s", extra);
        let started = Instant::now();
        let run = pinned(authwatch_bin(), one_core)
            .args(["run", "--until-end", "--config"])
            .arg(&cfg)
            .env("AUTHWATCH_LOG", "warn")
            .output()
            .unwrap();
        let run_s = started.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "authwatch run: {stderr}");
        let summary = stderr
            .lines()
            .find(|l| l.starts_with("authwatch run: stopped"))
            .unwrap_or_default()
            .to_owned();
        assert!(
            summary.contains(&format!("after {events} records")),
            "authwatch run did not read every record: {summary}"
        );
        (run_s, summary)
    };
    let until_end = |name: &str, extra: &str| until_end_on(name, extra, false);
    let (run_s, summary) = until_end("throughput", "");
    // The same two reads on one core: how each scales with the cores it is given.
    let taskset = Command::new("taskset").arg("-V").output().is_ok();
    if !taskset {
        eprintln!("taskset (util-linux) missing: the one-core runs are skipped");
    }
    let one_core = (taskset && env_u64("BENCH_ONE_CORE", 1) == 1)
        .then(|| (kcat_null(true), until_end_on("one-core", "", true).0));
    // The same with a state snapshot at every commit (the design before snapshot_interval):
    // what the snapshots cost, side by side.
    let every_commit = (env_u64("BENCH_SNAPSHOT_EVERY_COMMIT", 1) == 1)
        .then(|| until_end("snapshot-every-commit", "snapshot_interval = \"1s\"\n").0);

    // 2. Latency at a steady rate.
    let lat_events = rate * seconds;
    let lat_file = dir.path().join("latency.jsonl");
    let lat_events = generate(&lat_file, lat_events, 2);
    let lines: Vec<(String, String)> = BufReader::new(std::fs::File::open(&lat_file).unwrap())
        .lines()
        .map(|l| {
            let l = l.unwrap();
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            (v["event_id"].as_str().unwrap().to_owned(), l)
        })
        .collect();
    let lat_topic = format!("bench-latency-{stamp}");
    admin::ensure_topics(&client, &[(&lat_topic, 2)]).unwrap();
    let cfg = config(
        dir.path(),
        "latency",
        &brokers,
        &lat_topic,
        "500ms",
        &std::env::var("BENCH_LATENCY_CHECKPOINT").unwrap_or_default(),
    );
    let log = dir.path().join("latency.log");
    let mut live = authwatch()
        .args(["run", "--config"])
        .arg(&cfg)
        .env(
            "AUTHWATCH_LOG",
            std::env::var("BENCH_LIVE_LOG").unwrap_or_else(|_| "info,librdkafka=warn".to_owned()),
        )
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The feed starts once both ends are in steady state, as for a long-running instance and a
    // SOC consumer that is already subscribed: the live run answers /readyz (partitions
    // assigned, state restored) and the reader holds its partitions. The time the live run
    // took to become ready is printed, not counted as latency.
    let spawned = Instant::now();
    let ready_at = wait_ready(&log, Duration::from_secs(60));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let reader_assigned = Arc::new(AtomicBool::new(false));
    let reader = {
        let seen = Arc::clone(&seen);
        let done = Arc::clone(&done);
        let assigned = Arc::clone(&reader_assigned);
        let alerts = format!("{lat_topic}.alerts");
        let brokers = brokers.clone();
        std::thread::spawn(move || read_alerts(&brokers, &alerts, &seen, &assigned, &done))
    };
    let waited = Instant::now();
    while !reader_assigned.load(Ordering::Relaxed) {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the alert reader got no partitions"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let reader_s = waited.elapsed().as_secs_f64();
    eprintln!(
        "live run ready {:.2} s after its start; alert reader assigned in {reader_s:.2} s",
        ready_at.duration_since(spawned).as_secs_f64()
    );
    // To line the feed up with the kept log (`BENCH_KEEP_LOG`), whose times are UTC.
    eprintln!(
        "feed starts at unix time {:.3}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    );
    let sent: HashMap<String, Instant> = produce_steady(&client, &lat_topic, &lines, rate);
    std::thread::sleep(Duration::from_secs(3));
    done.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    check(
        Command::new("kill")
            .args(["-TERM", &live.id().to_string()])
            .status()
            .unwrap(),
        "kill",
    );
    check(live.wait().unwrap(), "authwatch run (latency)");
    // Each alert: latency, how far into the feed its deciding event was sent, its rule.
    let first = sent.values().min().copied();
    let mut timed: Vec<(f64, f64, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|a| {
            let s = sent.get(&a.event_id)?;
            let into = first.map_or(0.0, |f| s.duration_since(f).as_secs_f64());
            Some((
                a.at.duration_since(*s).as_secs_f64(),
                into,
                a.rule_id.clone(),
            ))
        })
        .collect();
    timed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let lat: Vec<f64> = timed.iter().map(|t| t.0).collect();

    let kcat_rate = events as f64 / kcat_s;
    let null_rate = events as f64 / null_s;
    let run_rate = events as f64 / run_s;
    println!("\nauthwatch Kafka benchmark ({events} events, 2 partitions, broker on loopback)");
    println!(
        "  (a) kcat -C raw read, piped       {kcat_s:8.2} s  {:>10.0} records/s",
        kcat_rate
    );
    println!(
        "  (a') kcat -C raw read > /dev/null {null_s:8.2} s  {:>10.0} records/s",
        null_rate
    );
    println!(
        "  (b) authwatch run --until-end     {run_s:8.2} s  {:>10.0} records/s",
        run_rate
    );
    println!(
        "      ratio (b)/(a)                 {:.2}",
        run_rate / kcat_rate
    );
    println!(
        "      ratio (b)/(a')                {:.2}",
        run_rate / null_rate
    );
    println!("      {summary}");
    if let Some((null1_s, run1_s)) = one_core {
        println!(
            "  (a'1) as (a'), on one core         {null1_s:8.2} s  {:>10.0} records/s  ((a')/(a'1) {:.2})",
            events as f64 / null1_s,
            null1_s / null_s
        );
        println!(
            "  (b1) as (b), on one core           {run1_s:8.2} s  {:>10.0} records/s  ((b)/(b1) {:.2}, ratio (b1)/(a'1) {:.2})",
            events as f64 / run1_s,
            run1_s / run_s,
            null1_s / run1_s
        );
    }
    if let Some(old_s) = every_commit {
        println!(
            "  (c) as (b), snapshot every commit {old_s:8.2} s  {:>10.0} records/s  (ratio to (a) {:.2})",
            events as f64 / old_s,
            (events as f64 / old_s) / kcat_rate
        );
    }
    // The machine may be shared: the load says how much of it the benchmark had.
    println!(
        "  load average (1/5/15 min) at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".to_owned())
    );
    println!(
        "  latency at {rate} events/s ({lat_events} events over {seconds} s): {} alerts, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        lat.len(),
        percentile(&lat, 0.50) * 1000.0,
        percentile(&lat, 0.99) * 1000.0,
        lat.last().copied().unwrap_or(f64::NAN) * 1000.0
    );
    // The slow end: when the deciding events were sent (at the start, or a stall mid-feed),
    // which rules, and what the live run logged.
    let slow: Vec<f64> = timed.iter().filter(|t| t.0 > 1.0).map(|t| t.1).collect();
    if !slow.is_empty() {
        println!(
            "  alerts later than 1 s: {}, their deciding events sent {:.1}–{:.1} s into the feed",
            slow.len(),
            slow.iter().copied().fold(f64::INFINITY, f64::min),
            slow.iter().copied().fold(0.0, f64::max)
        );
    }
    let slowest: Vec<String> = timed
        .iter()
        .rev()
        .take(5)
        .map(|(l, into, rule)| format!("{:.0} ms ({rule}, sent {into:.2} s in)", l * 1000.0))
        .collect();
    println!("  slowest: {}", slowest.join(", "));
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    if let Ok(keep) = std::env::var("BENCH_KEEP_LOG") {
        std::fs::write(keep, &log_text).unwrap();
    }
    let warnings: Vec<&str> = log_text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    println!(
        "  the live run logged {} warnings or errors",
        warnings.len()
    );
    for w in warnings.iter().take(5) {
        println!("    {w}");
    }
    for t in [
        topic.clone(),
        format!("{topic}.alerts"),
        format!("{topic}.dead"),
        format!("{topic}.audit"),
        lat_topic.clone(),
        format!("{lat_topic}.alerts"),
        format!("{lat_topic}.dead"),
        format!("{lat_topic}.audit"),
    ] {
        let _ = admin::delete_topics(&client, &[&t]);
    }
}

fn memchr_count(buf: &[u8]) -> u64 {
    buf.iter().filter(|b| **b == b'\n').count() as u64
}

/// Sends `lines` at `rate` per second, in 1 ms slices; returns each event id's send instant.
fn produce_steady(
    client: &ClientConfig,
    topic: &str,
    lines: &[(String, String)],
    rate: u64,
) -> HashMap<String, Instant> {
    use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
    let mut pc = client.clone();
    pc.set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .set("compression.type", "lz4");
    let producer: ThreadedProducer<DefaultProducerContext> = pc.create().unwrap();
    // A fresh idempotent producer first needs its producer id and the topic's leader; records
    // handed to it before that wait in its queue. Deliver one record to a scratch topic and
    // look the feed topic up first, so that the clock starts with a producer that can deliver
    // (otherwise the first records' latency includes the producer's own start, 50–400 ms).
    let warm = format!("{topic}.warmup");
    admin::ensure_topics(client, &[(&warm, 1)]).unwrap();
    admin::send_retrying(&producer, &warm, None, b"warm-up").unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    let _ = admin::delete_topics(client, &[&warm]);
    let mut sent = HashMap::with_capacity(lines.len());
    let started = Instant::now();
    for (i, (id, line)) in lines.iter().enumerate() {
        let due = Duration::from_secs_f64(i as f64 / rate as f64);
        let now = started.elapsed();
        if due > now {
            std::thread::sleep(due - now);
        }
        admin::send_retrying(&producer, topic, Some(id), line.as_bytes()).unwrap();
        sent.insert(id.clone(), Instant::now());
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    eprintln!(
        "produced {} events in {:.1} s",
        lines.len(),
        started.elapsed().as_secs_f64()
    );
    sent
}

/// An alert as the reader saw it.
struct Seen {
    /// Its deciding event (`observed.event_id`).
    event_id: String,
    rule_id: String,
    /// When the read-committed consumer received it.
    at: Instant,
}

/// Waits until the live run whose log is `log` answers its `/readyz` with 200 (the telemetry
/// address is the one it logs); returns that instant.
fn wait_ready(log: &Path, limit: Duration) -> Instant {
    use std::io::Write;
    let started = Instant::now();
    let mut addr: Option<String> = None;
    loop {
        assert!(
            started.elapsed() < limit,
            "the live run did not become ready"
        );
        if addr.is_none() {
            addr = std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    let rest = l.split("telemetry endpoint listening").nth(1)?;
                    Some(
                        rest.split("addr=")
                            .nth(1)?
                            .split_whitespace()
                            .next()?
                            .to_owned(),
                    )
                });
        }
        if let Some(a) = &addr
            && let Ok(mut tcp) = std::net::TcpStream::connect(a)
        {
            let _ = tcp.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n");
            let mut reply = String::new();
            let _ = tcp.read_to_string(&mut reply);
            if reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200") {
                return Instant::now();
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Notes when each alert becomes visible to a read-committed consumer; sets `assigned` once the
/// consumer holds its partitions.
fn read_alerts(
    brokers: &str,
    topic: &str,
    seen: &Mutex<Vec<Seen>>,
    assigned: &AtomicBool,
    done: &AtomicBool,
) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}.reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10");
    let consumer: BaseConsumer = cc.create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    while !done.load(Ordering::Relaxed) {
        if !assigned.load(Ordering::Relaxed) && consumer.assignment().is_ok_and(|a| a.count() > 0) {
            assigned.store(true, Ordering::Relaxed);
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
            let at = Instant::now();
            let v: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            if let Some(id) = v["observed"]["event_id"].as_str() {
                seen.lock().unwrap().push(Seen {
                    event_id: id.to_owned(),
                    rule_id: v["rule_id"].as_str().unwrap_or_default().to_owned(),
                    at,
                });
            }
        }
    }
}
