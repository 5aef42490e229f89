//! Telemetry over real HTTP: the endpoint's metrics equal the pipeline's own counts after a
//! replay, the probes follow restore, assignment and a stuck stage, and `authwatch replay
//! --metrics-listen` serves the same while it runs, with JSON logs and slow-batch traces.

use crate::common::*;
use authwatch_detect::RulePack;
use authwatch_pipeline::{
    Config, DeadLetter, JsonLinesSink, LateEvent, LineSource, Pipeline, Sink, SinkError, Speed,
};
use authwatch_telemetry::{Telemetry, TelemetryConfig};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

/// One HTTP/1.1 GET over a fresh connection: (status, body).
pub(crate) fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// `name{labels}` → value, from the Prometheus text format.
pub(crate) fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse::<f64>().unwrap())
        })
        .collect()
}

fn value(metrics: &BTreeMap<String, f64>, series: &str) -> u64 {
    let v = metrics
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {metrics:#?}"));
    *v as u64
}

/// Polls `path` until it answers `status`.
pub(crate) fn wait_for(addr: SocketAddr, path: &str, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (got, body) = get(addr, path);
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {got} ({body}), expected {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A generated stream with bad lines and a late event appended.
fn stream_with_bad_input(dir: &Path) -> (Vec<u8>, u64) {
    let (events, _) = generate(dir, 40, 2, 31);
    let mut data = std::fs::read(&events).unwrap();
    let first = data.split(|b| *b == b'\n').next().unwrap().to_vec();
    data.extend_from_slice(b"this is not json\n");
    data.extend_from_slice(b"{\"time\": 1767603600000, \"provider\": \"okta\"}\n");
    data.extend_from_slice(b"\n");
    // The stream's first event again, two days behind the watermark: late.
    data.extend_from_slice(&first);
    data.push(b'\n');
    let lines = data.iter().filter(|b| **b == b'\n').count() as u64;
    (data, lines)
}

fn telemetry_config(stall_timeout: Duration) -> TelemetryConfig {
    TelemetryConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        stall_timeout: authwatch_pipeline::config::DurationText(stall_timeout),
        ..TelemetryConfig::default()
    }
}

fn source(data: Vec<u8>, config: &Config) -> LineSource {
    LineSource::from_readers(
        vec![("stream.jsonl".into(), Box::new(std::io::Cursor::new(data)))],
        config.input.max_line_bytes,
        config.input.dead_letter_raw_bytes,
    )
}

#[test]
fn metrics_over_http_equal_the_pipeline_counts_and_probes_follow_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let (data, lines) = stream_with_bad_input(dir.path());
    let mut config = Config::default();
    config.runtime.batch_lines = 500;
    let telemetry = Telemetry::start(&telemetry_config(Duration::from_secs(30))).unwrap();
    let addr = telemetry.local_addr().unwrap();

    // Nothing restored yet: alive, not started, not ready.
    assert_eq!(get(addr, "/livez").0, 200);
    assert_eq!(get(addr, "/startupz").0, 503);
    assert_eq!(get(addr, "/readyz").0, 503);

    let pipeline = Pipeline::new(config.clone(), RulePack::builtin().unwrap())
        .unwrap()
        .with_observer(telemetry.batch_observer());
    telemetry.attach_pipeline(pipeline.metrics());
    telemetry.health().set_started();
    assert_eq!(get(addr, "/startupz").0, 200);
    let (status, body) = get(addr, "/readyz");
    assert_eq!(status, 503, "restored but no partitions: {body}");
    telemetry.health().set_assigned(true);
    assert_eq!(get(addr, "/readyz").0, 200);

    let sink = JsonLinesSink::create(None, None, None)
        .unwrap()
        .keep_alerts(1_000_000);
    let (summary, sink) = pipeline
        .run(&mut source(data, &config), sink, Speed::Max)
        .unwrap();
    assert_eq!(summary.lines, lines);
    assert!(summary.alerts > 0, "the generated attacks raise alerts");
    assert_eq!(summary.late_events, 1);
    let dead: u64 = summary.dead_letters.iter().map(|(_, n)| n).sum();
    assert_eq!(dead, 3);

    let m = scrape(addr);
    let stage = |name: &str, stage: &str| value(&m, &format!("{name}{{stage=\"{stage}\"}}"));
    let (inn, out) = ("authwatch_events_in_total", "authwatch_events_out_total");
    assert_eq!(stage(inn, "source"), summary.lines);
    assert_eq!(stage(out, "source"), summary.lines);
    assert_eq!(stage(inn, "normalize"), summary.lines);
    assert_eq!(stage(out, "normalize"), summary.events);
    assert_eq!(stage(inn, "detect"), summary.events);
    assert_eq!(stage(out, "detect"), summary.events - summary.late_events);
    // The sink wrote every alert and (counted, not written to a file) every dead letter.
    assert_eq!(stage(inn, "sink"), summary.alerts + dead);
    assert_eq!(stage(out, "sink"), summary.alerts + dead);
    for (reason, n) in &summary.dead_letters {
        assert_eq!(
            value(
                &m,
                &format!(
                    "authwatch_dead_letters_total{{reason=\"{}\"}}",
                    reason.as_str()
                )
            ),
            *n
        );
    }
    assert_eq!(value(&m, "authwatch_late_events_total"), 1);

    let (alerts, seen) = sink.kept_alerts();
    assert_eq!(seen, summary.alerts);
    let mut by_class: BTreeMap<(String, String), u64> = BTreeMap::new();
    for a in alerts {
        *by_class
            .entry((a.category.clone(), a.severity.as_str().to_owned()))
            .or_default() += 1;
    }
    let mut exported_total = 0;
    for (series, v) in m.range("authwatch_alerts_total{".to_owned()..) {
        if !series.starts_with("authwatch_alerts_total{") {
            break;
        }
        exported_total += *v as u64;
    }
    assert_eq!(exported_total, summary.alerts);
    for ((category, severity), n) in &by_class {
        assert_eq!(
            value(
                &m,
                &format!(
                    "authwatch_alerts_total{{category=\"{category}\",severity=\"{severity}\"}}"
                )
            ),
            *n,
            "{category}/{severity}"
        );
    }
    for (rule, stats) in &summary.rules {
        assert_eq!(
            value(&m, &format!("authwatch_rule_state_keys{{rule=\"{rule}\"}}")),
            stats.keys,
            "{rule}"
        );
        assert_eq!(
            value(
                &m,
                &format!("authwatch_rule_evictions_total{{rule=\"{rule}\"}}")
            ),
            stats.evicted,
            "{rule}"
        );
    }
    assert_eq!(
        value(&m, "authwatch_batch_duration_seconds_count"),
        lines.div_ceil(500),
        "one observation per source batch"
    );
    assert_eq!(get(addr, "/livez").0, 200, "an idle pipeline is live");
    telemetry.shutdown().unwrap();
    assert!(
        TcpStream::connect(addr).is_err(),
        "the endpoint stops with the telemetry"
    );
}

/// A sink that blocks on its first alert until released: a stuck output.
struct Blocking {
    release: Mutex<mpsc::Receiver<()>>,
    blocked: mpsc::Sender<()>,
    waited: bool,
    alerts: u64,
}

impl Sink for Blocking {
    fn alert(&mut self, _: &authwatch_event::Alert) -> Result<(), SinkError> {
        if !self.waited {
            self.waited = true;
            let _ = self.blocked.send(());
            let _ = self.release.lock().unwrap().recv();
        }
        self.alerts += 1;
        Ok(())
    }
    fn dead_letter(&mut self, _: &DeadLetter) -> Result<(), SinkError> {
        Ok(())
    }
    fn late_event(&mut self, _: &LateEvent) -> Result<(), SinkError> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[test]
fn a_stuck_stage_fails_livez_and_recovers_when_it_moves_again() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = stream_with_bad_input(dir.path());
    let mut config = Config::default();
    config.runtime.batch_lines = 200;
    config.runtime.channel_batches = 1;
    let telemetry = Telemetry::start(&telemetry_config(Duration::from_secs(1))).unwrap();
    let addr = telemetry.local_addr().unwrap();
    let pipeline = Pipeline::new(config.clone(), RulePack::builtin().unwrap()).unwrap();
    telemetry.attach_pipeline(pipeline.metrics());
    telemetry.health().set_started();
    telemetry.health().set_assigned(true);

    let (release, released) = mpsc::channel();
    let (blocked, is_blocked) = mpsc::channel();
    let sink = Blocking {
        release: Mutex::new(released),
        blocked,
        waited: false,
        alerts: 0,
    };
    let mut input = source(data, &config);
    std::thread::scope(|scope| {
        let run = scope.spawn(|| pipeline.run(&mut input, sink, Speed::Max));
        is_blocked.recv_timeout(Duration::from_secs(60)).unwrap();
        // The sink holds a batch and makes no progress: after the stall timeout, not live.
        let body = wait_for(addr, "/livez", 503);
        assert!(body.contains("stage sink"), "{body}");
        // The stages behind it only wait for room: backpressure is not their failure.
        assert!(!body.contains("stage detect"), "{body}");
        assert!(!body.contains("stage normalize"), "{body}");
        assert_eq!(get(addr, "/readyz").0, 200, "stuck is a liveness matter");
        release.send(()).unwrap();
        let (summary, sink) = run.join().unwrap().unwrap();
        assert_eq!(sink.alerts, summary.alerts);
        wait_for(addr, "/livez", 200);
    });
}

#[test]
fn replay_serves_metrics_and_logs_json_with_slow_batch_traces() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = generate(dir.path(), 40, 2, 32);
    let lines = std::fs::read_to_string(&events).unwrap().lines().count() as u64;
    let alerts_file = dir.path().join("alerts.jsonl");
    let mut child = authwatch()
        .args(["replay", "--quiet", "--metrics-listen", "127.0.0.1:0"])
        .args(["--metrics-linger", "120s", "--alerts"])
        .arg(&alerts_file)
        .arg(&events)
        .env("AUTHWATCH_LOG_FORMAT", "json")
        .env("AUTHWATCH_LOG", "info")
        // The responder in dry run: its decisions are exported as `run` exports them.
        .env("AUTHWATCH__RESPOND__ENABLED", "true")
        .env("AUTHWATCH__RESPOND__STATE_DIR", dir.path().join("respond"))
        // Every batch is slower than a nanosecond: each one leaves a trace.
        .env("AUTHWATCH__TELEMETRY__SLOW_BATCH", "1ns")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut log = Vec::new();
    let mut addr = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(120)) {
        if let Some(rest) = line.strip_prefix("authwatch: telemetry on http://") {
            addr = Some(
                rest.split('/')
                    .next()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap(),
            );
        }
        let finished = line.contains("run finished; telemetry stays up");
        log.push(line);
        if finished {
            break;
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("no address in {log:#?}"));
    assert!(
        log.iter().any(|l| l.contains("run finished")),
        "the replay did not finish: {log:#?}"
    );

    let m = scrape(addr);
    assert_eq!(
        value(&m, "authwatch_events_in_total{stage=\"source\"}"),
        lines
    );
    let written = json_lines(&alerts_file).len() as u64;
    assert!(written > 0);
    let exported: u64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("authwatch_alerts_total{"))
        .map(|(_, v)| *v as u64)
        .sum();
    assert_eq!(exported, written);
    // Every (action, result) pair of the responder exists, at 0 before its first decision.
    let responses: Vec<&String> = m
        .keys()
        .filter(|k| k.starts_with("authwatch_response_actions_total{"))
        .collect();
    assert_eq!(responses.len(), 36, "{responses:#?}");
    assert_eq!(
        value(
            &m,
            "authwatch_response_actions_total{action=\"suspend\",result=\"failed\"}"
        ),
        0
    );
    let batches = lines.div_ceil(2048);
    assert_eq!(value(&m, "authwatch_batch_slow_total"), batches);
    assert_eq!(get(addr, "/startupz").0, 200);
    assert_eq!(get(addr, "/readyz").0, 503, "the input is used up");
    assert_eq!(get(addr, "/livez").0, 200);
    child.kill().unwrap();
    child.wait().unwrap();

    // Structured logs: one JSON object per line, the slow-batch trace with its numbers.
    let json: Vec<serde_json::Value> = log
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let listening = json
        .iter()
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("telemetry endpoint listening"))
        })
        .unwrap_or_else(|| panic!("no JSON listening line in {log:#?}"));
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["addr"], addr.to_string());
    let slow: Vec<&serde_json::Value> = json
        .iter()
        .filter(|v| v["target"] == "authwatch::slow_batch")
        .collect();
    assert_eq!(slow.len() as u64, batches, "{log:#?}");
    let first = slow[0];
    assert_eq!(first["level"], "WARN");
    assert_eq!(first["span"]["name"], "slow_batch");
    assert_eq!(first["span"]["seq"], 0);
    assert_eq!(first["span"]["lines"], 2048.min(lines));
    assert!(first["total_ms"].as_f64().unwrap() > 0.0, "{first}");
    assert!(first["read_ms"].is_number() && first["queued_ms"].is_number());
    let counted: u64 = slow
        .iter()
        .map(|v| v["span"]["lines"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, lines);
}

/// The error that ends the process is logged in the log format in use: with JSON logs
/// (`AUTHWATCH_LOG_FORMAT=json`, as the chart sets it, or `[telemetry] log_format` once the
/// configuration was read) it is one JSON line with the JSON logger's fields, also when
/// `AUTHWATCH_LOG` filters errors out; with text logs the plain line. Exit status 2 either way.
#[test]
fn a_fatal_error_is_one_json_log_line_when_logs_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[telemetry]\nlisten = \"127.0.0.1:0\"\nbogus = 1\n").unwrap();
    let missing = dir.path().join("missing.jsonl");
    let fatal = |cmd: &mut std::process::Command| -> Vec<String> {
        let out = run_fail(cmd);
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8(out.stderr)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let only_json_error = |lines: &[String], needle: &str| {
        let objects: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
            .collect();
        let errors: Vec<&serde_json::Value> =
            objects.iter().filter(|v| v["level"] == "ERROR").collect();
        assert_eq!(errors.len(), 1, "{lines:#?}");
        let e = errors[0];
        assert_eq!(e["target"], "authwatch", "{e}");
        let message = e["message"].as_str().unwrap();
        assert!(message.contains(needle), "{e}");
        assert!(!message.starts_with("authwatch: error"), "{e}");
        let ts = e["timestamp"].as_str().unwrap();
        assert!(
            ts.len() > 20 && ts.ends_with('Z') && ts.contains('T'),
            "{e}"
        );
    };

    // A configuration error, before the configuration could choose anything: the environment's
    // format, through the logger, and directly when AUTHWATCH_LOG lets no error through.
    for filter in ["warn", "off", "authwatch_kafka=debug"] {
        let lines = fatal(
            authwatch()
                .args(["replay", "--quiet", "--config"])
                .arg(&bad)
                .arg(&missing)
                .env("AUTHWATCH_LOG_FORMAT", "json")
                .env("AUTHWATCH_LOG", filter),
        );
        only_json_error(&lines, "unknown field `bogus`");
    }

    // An error after the configuration chose JSON lines itself.
    let json_config = dir.path().join("json.toml");
    std::fs::write(&json_config, "[telemetry]\nlog_format = \"json\"\n").unwrap();
    let lines = fatal(
        authwatch()
            .args(["replay", "--quiet", "--config"])
            .arg(&json_config)
            .arg(&missing)
            .env_remove("AUTHWATCH_LOG_FORMAT")
            .env_remove("AUTHWATCH_LOG"),
    );
    only_json_error(&lines, "missing.jsonl");

    // Text logs: the plain line, as before.
    let lines = fatal(
        authwatch()
            .args(["replay", "--quiet", "--config"])
            .arg(&bad)
            .arg(&missing)
            .env_remove("AUTHWATCH_LOG_FORMAT")
            .env_remove("AUTHWATCH_LOG"),
    );
    assert!(
        lines[0].starts_with("authwatch: error: ") && lines[0].contains(&bad.display().to_string()),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.contains("unknown field `bogus`")));
    assert!(serde_json::from_str::<serde_json::Value>(&lines[0]).is_err());
}
