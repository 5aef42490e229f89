//! Instruments against their contract: names, labels and values on `/metrics`, the OTLP push
//! to a real HTTP collector, throughput sampling, slow batches, start-up errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use authwatch_detect::RulePack;
use authwatch_pipeline::{BatchReport, Metrics, Stage};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// `name{labels}` → value, from the Prometheus text format.
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse::<f64>().unwrap())
        })
        .collect()
}

fn metrics_with_rules() -> Arc<Metrics> {
    Arc::new(Metrics::for_rules(RulePack::builtin().unwrap().rules()))
}

fn set(counter: &std::sync::atomic::AtomicU64, n: u64) {
    counter.store(n, Ordering::Relaxed);
}

#[test]
fn every_metric_has_its_contract_name_labels_and_value() {
    let t = Telemetry::build(&TelemetryConfig::default()).unwrap();
    let m = metrics_with_rules();
    for (i, stage) in Stage::ALL.iter().enumerate() {
        set(&m.stage(*stage).events_in, 100 + i as u64);
        set(&m.stage(*stage).events_out, 90 + i as u64);
    }
    set(
        &m.dead_letters[authwatch_normalize::RejectKind::MalformedJson.index()],
        4,
    );
    set(&m.late_events, 3);
    set(&m.duplicate_events, 2);
    // Two rules of one category and severity add up in one series.
    let triage_info: Vec<_> = m
        .rules
        .iter()
        .filter(|r| r.category == "mfa_triage" && r.severity.as_str() == "info")
        .collect();
    assert!(triage_info.len() >= 2, "the built-in pack has several");
    for r in &triage_info {
        set(&r.alerts, 5);
    }
    let fatigue = m.rules.iter().find(|r| r.id == "mfa_fatigue").unwrap();
    set(&fatigue.alerts, 2);
    set(&fatigue.keys, 17);
    set(&fatigue.evictions, 6);
    t.attach_pipeline(m.clone());
    t.register_consumer_lag(|| {
        vec![
            PartitionLag {
                topic: "okta".into(),
                partition: 0,
                lag: 12,
            },
            PartitionLag {
                topic: "okta".into(),
                partition: 1,
                lag: 0,
            },
            PartitionLag {
                topic: "okta".into(),
                partition: 9,
                lag: -1,
            },
        ]
    });
    t.register_consumer_lag(|| {
        vec![PartitionLag {
            topic: "entra".into(),
            partition: 2,
            lag: 40,
        }]
    });
    let actions = t.response_actions();
    actions.record("revoke_sessions", "ok");
    actions.record("revoke_sessions", "ok");
    actions.record("suspend_user", "dry_run");
    t.register_response_actions(|| {
        vec![ActionCount {
            action: "revoke_sessions".into(),
            result: "ok".into(),
            count: 10,
        }]
    });
    t.record_checkpoint(Duration::from_millis(40));
    t.record_snapshot_store(Duration::from_millis(30), false);
    t.record_snapshot_store(Duration::from_millis(700), true);
    t.register_snapshot_store_failures(|| 2);
    t.register_snapshot_store_failures(|| 1);
    t.register_audit_record_failures(|| 4);
    t.register_sql_detection_failures(|| vec![("a".into(), 0), ("b".into(), 3)]);
    t.register_sql_detection_stats(|| {
        vec![
            SqlDetectionCounts {
                detection: "a".into(),
                ..SqlDetectionCounts::default()
            },
            SqlDetectionCounts {
                detection: "b".into(),
                alerts: 2,
                suppressed: 5,
                evicted_rows: 70,
            },
        ]
    });
    t.register_merge_held(|| 40);
    t.register_merge_held(|| 2);
    t.record_batch(&BatchReport {
        total: Duration::from_millis(8),
        ..BatchReport::default()
    });
    t.record_batch(&BatchReport {
        total: Duration::from_secs(9),
        ..BatchReport::default()
    });
    // Slow in wall time, but only because --speed paced it: not a slow batch.
    t.record_batch(&BatchReport {
        total: Duration::from_secs(30),
        paced: Duration::from_secs(29),
        ..BatchReport::default()
    });

    let text = t.render_prometheus().unwrap();
    for name in names::ALL {
        assert!(
            text.contains(&format!("# TYPE {} ", name.prometheus)),
            "{} missing:\n{text}",
            name.prometheus
        );
    }
    let v = parse(&text);
    let get = |series: &str| -> f64 {
        *v.get(series)
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
    };
    assert_eq!(get(r#"authwatch_events_in_total{stage="source"}"#), 100.0);
    assert_eq!(get(r#"authwatch_events_in_total{stage="sink"}"#), 103.0);
    assert_eq!(
        get(r#"authwatch_events_out_total{stage="normalize"}"#),
        91.0
    );
    assert_eq!(
        get(r#"authwatch_dead_letters_total{reason="malformed_json"}"#),
        4.0
    );
    assert_eq!(
        get(r#"authwatch_dead_letters_total{reason="empty_line"}"#),
        0.0
    );
    assert_eq!(get("authwatch_late_events_total"), 3.0);
    assert_eq!(get("authwatch_duplicate_events_total"), 2.0);
    assert_eq!(
        get(r#"authwatch_alerts_total{category="mfa_triage",severity="info"}"#),
        5.0 * triage_info.len() as f64
    );
    assert_eq!(
        get(r#"authwatch_alerts_total{category="mfa_fatigue",severity="high"}"#),
        2.0
    );
    assert_eq!(
        get(r#"authwatch_rule_state_keys{rule="mfa_fatigue"}"#),
        17.0
    );
    assert_eq!(
        get(r#"authwatch_rule_evictions_total{rule="mfa_fatigue"}"#),
        6.0
    );
    assert_eq!(
        get(r#"authwatch_consumer_lag{partition="0",topic="okta"}"#),
        12.0
    );
    assert_eq!(
        get(r#"authwatch_consumer_lag{partition="2",topic="entra"}"#),
        40.0
    );
    assert!(
        !text.contains(r#"partition="9""#),
        "unknown lag is left out"
    );
    assert_eq!(
        get(r#"authwatch_response_actions_total{action="revoke_sessions",result="ok"}"#),
        12.0
    );
    assert_eq!(
        get(r#"authwatch_response_actions_total{action="suspend_user",result="dry_run"}"#),
        1.0
    );
    assert_eq!(get("authwatch_checkpoint_duration_seconds_count"), 1.0);
    assert_eq!(
        get(r#"authwatch_snapshot_store_duration_seconds_count{when="before_commit"}"#),
        1.0
    );
    assert_eq!(
        get(r#"authwatch_snapshot_store_duration_seconds_bucket{when="after_commit",le="0.5"}"#),
        0.0
    );
    assert_eq!(
        get(r#"authwatch_snapshot_store_duration_seconds_bucket{when="after_commit",le="1"}"#),
        1.0
    );
    assert_eq!(get("authwatch_snapshot_store_failures_total"), 3.0);
    assert_eq!(get("authwatch_audit_record_failures_total"), 4.0);
    assert_eq!(get("authwatch_merge_held"), 42.0);
    // Listed before their first failure, so that the first one is an increase.
    assert_eq!(
        get(r#"authwatch_sql_detection_failures_total{detection="a"}"#),
        0.0
    );
    assert_eq!(
        get(r#"authwatch_sql_detection_failures_total{detection="b"}"#),
        3.0
    );
    // Every detection's counters, zeros included (its first alert is then an increase).
    for (series, a, b) in [
        ("authwatch_sql_detection_alerts_total", 0.0, 2.0),
        ("authwatch_sql_detection_suppressed_total", 0.0, 5.0),
        ("authwatch_sql_detection_evicted_rows_total", 0.0, 70.0),
    ] {
        assert_eq!(get(&format!(r#"{series}{{detection="a"}}"#)), a);
        assert_eq!(get(&format!(r#"{series}{{detection="b"}}"#)), b);
    }
    assert!((get("authwatch_checkpoint_duration_seconds_sum") - 0.04).abs() < 1e-9);
    assert!(get("authwatch_checkpoint_age_seconds") < 60.0);
    assert_eq!(get("authwatch_batch_duration_seconds_count"), 3.0);
    assert_eq!(
        get(r#"authwatch_batch_duration_seconds_bucket{le="0.01"}"#),
        1.0
    );
    assert_eq!(
        get(r#"authwatch_batch_duration_seconds_bucket{le="1"}"#),
        2.0,
        "the paced batch counts its busy second only"
    );
    assert_eq!(get("authwatch_batch_slow_total"), 1.0);
    assert_eq!(get("authwatch_throughput_events_per_second"), 0.0);
    // No scope labels on the series: the labels are exactly the documented ones.
    assert!(!text.contains("otel_scope"), "{text}");
}

#[test]
fn checkpoint_age_counts_from_the_restored_checkpoint_or_a_registered_source() {
    let t = Telemetry::build(&TelemetryConfig::default()).unwrap();
    assert!(
        !parse(&t.render_prometheus().unwrap()).contains_key("authwatch_checkpoint_age_seconds"),
        "no checkpoint, no age"
    );
    t.set_last_checkpoint(std::time::SystemTime::now() - Duration::from_secs(300));
    let age = parse(&t.render_prometheus().unwrap())["authwatch_checkpoint_age_seconds"];
    assert!((300.0..400.0).contains(&age), "{age}");
    t.register_checkpoint_age(|| Some(Duration::from_secs(7)));
    let age = parse(&t.render_prometheus().unwrap())["authwatch_checkpoint_age_seconds"];
    assert_eq!(age, 7.0);
}

#[test]
fn the_slow_batch_counter_is_exported_at_zero_from_the_start() {
    let t = Telemetry::build(&TelemetryConfig::default()).unwrap();
    let metrics = parse(&t.render_prometheus().unwrap());
    assert_eq!(metrics.get("authwatch_batch_slow_total"), Some(&0.0));
}

/// A response-action series exists at 0 before its first event, so that the first failed or
/// queued action is an increase Prometheus' `rate()` sees: declared through the handle, or
/// reported at 0 by a source (the responder reports every pair from its start).
#[test]
fn response_action_series_exist_at_zero_before_their_first_event() {
    let t = Telemetry::build(&TelemetryConfig::default()).unwrap();
    let failed = r#"authwatch_response_actions_total{action="suspend",result="failed"}"#;
    let queued = r#"authwatch_response_actions_total{action="notify",result="queued"}"#;
    let scrape = |t: &Telemetry| parse(&t.render_prometheus().unwrap());
    assert_eq!(scrape(&t).get(failed), None, "no responder, no series");

    let actions = t.response_actions();
    actions.declare("suspend", "failed");
    assert_eq!(scrape(&t).get(failed), Some(&0.0));
    actions.record("suspend", "failed");
    assert_eq!(scrape(&t).get(failed), Some(&1.0));
    // Declaring again keeps the count.
    actions.declare("suspend", "failed");
    assert_eq!(scrape(&t).get(failed), Some(&1.0));

    let reported = Arc::new(std::sync::Mutex::new(0u64));
    let r = Arc::clone(&reported);
    t.register_response_actions(move || {
        vec![ActionCount {
            action: "notify".into(),
            result: "queued".into(),
            count: *r.lock().unwrap(),
        }]
    });
    assert_eq!(scrape(&t).get(queued), Some(&0.0));
    *reported.lock().unwrap() = 1;
    assert_eq!(scrape(&t).get(queued), Some(&1.0));
}

// A repartitioned process running both stages: the detect stage's pipeline is the exported
// one, the ingest stage's adds its dead letters (most of them: provider records it could not
// read) and its liveness.
#[test]
fn an_additional_pipeline_adds_its_dead_letters_and_is_watched_for_liveness() {
    use authwatch_normalize::RejectKind;
    let config = TelemetryConfig::default();
    let t = Telemetry::build(&config).unwrap();
    let dead = |t: &Telemetry, reason: &str| {
        parse(&t.render_prometheus().unwrap())
            .get(&format!(
                "authwatch_dead_letters_total{{reason=\"{reason}\"}}"
            ))
            .copied()
    };
    // The ingest stage may build its pipeline first: its dead letters are exported at once.
    let ingest = Arc::new(Metrics::new());
    set(&ingest.dead_letters[RejectKind::MalformedJson.index()], 7);
    set(&ingest.dead_letters[RejectKind::MissingField.index()], 2);
    set(&ingest.stage(Stage::Source).events_in, 1000);
    t.attach_additional_pipeline("ingest", ingest.clone());
    assert_eq!(dead(&t, "malformed_json"), Some(7.0));
    let main = Arc::new(Metrics::new());
    set(&main.dead_letters[RejectKind::MalformedJson.index()], 1);
    set(&main.dead_letters[RejectKind::OutputTooLarge.index()], 3);
    set(&main.stage(Stage::Source).events_in, 900);
    t.attach_pipeline(main.clone());

    let v = parse(&t.render_prometheus().unwrap());
    assert_eq!(
        v[r#"authwatch_dead_letters_total{reason="malformed_json"}"#],
        8.0
    );
    assert_eq!(
        v[r#"authwatch_dead_letters_total{reason="missing_field"}"#],
        2.0
    );
    assert_eq!(
        v[r#"authwatch_dead_letters_total{reason="output_too_large"}"#],
        3.0
    );
    assert_eq!(
        v[r#"authwatch_dead_letters_total{reason="empty_line"}"#],
        0.0
    );
    // The other counters are the main pipeline's only.
    assert_eq!(v[r#"authwatch_events_in_total{stage="source"}"#], 900.0);

    // A restart of either stage keeps what the replaced pipeline counted: the sum never goes
    // down, so Prometheus sees no reset that would count the other stage's total again.
    let ingest2 = Arc::new(Metrics::new());
    t.attach_additional_pipeline("ingest", ingest2.clone());
    assert_eq!(dead(&t, "malformed_json"), Some(8.0));
    set(&ingest2.dead_letters[RejectKind::MalformedJson.index()], 5);
    assert_eq!(dead(&t, "malformed_json"), Some(13.0));
    let main2 = Arc::new(Metrics::new());
    t.attach_pipeline(main2.clone());
    assert_eq!(dead(&t, "malformed_json"), Some(13.0));
    assert_eq!(dead(&t, "output_too_large"), Some(3.0));
    assert_eq!(dead(&t, "missing_field"), Some(2.0));
    // The main pipeline's own counters start again, as they always did.
    let v = parse(&t.render_prometheus().unwrap());
    assert_eq!(v[r#"authwatch_events_in_total{stage="source"}"#], 0.0);
    // Attaching the same counters again retires nothing.
    t.attach_additional_pipeline("ingest", ingest2.clone());
    assert_eq!(dead(&t, "malformed_json"), Some(13.0));

    // Liveness watches the ingest stage too, under its own names; its restart replaced the
    // watches of the pipeline before it (a stall there is no longer seen).
    let t0 = Instant::now();
    ingest.stage(Stage::Normalize).begin(10);
    ingest2.stage(Stage::Sink).begin(10);
    assert!(t.health().liveness(t0).ok);
    let r = t
        .health()
        .liveness(t0 + config.stall_timeout.0 + Duration::from_secs(2));
    assert!(!r.ok);
    assert!(r.detail.contains("stage ingest.sink"), "{}", r.detail);
    assert!(!r.detail.contains("ingest.normalize"), "{}", r.detail);
    assert!(!r.detail.contains("stage sink"), "{}", r.detail);
    ingest2.stage(Stage::Sink).end(10);
    assert!(
        t.health()
            .liveness(t0 + config.stall_timeout.0 + Duration::from_secs(3))
            .ok
    );
}

// Without an additional pipeline, a new pipeline's dead letters start from zero, like its other
// counters (a counter reset), as before additional pipelines existed.
#[test]
fn a_lone_pipelines_dead_letters_reset_with_it() {
    let t = Telemetry::build(&TelemetryConfig::default()).unwrap();
    let m = Arc::new(Metrics::new());
    set(
        &m.dead_letters[authwatch_normalize::RejectKind::MalformedJson.index()],
        4,
    );
    t.attach_pipeline(m);
    t.attach_pipeline(Arc::new(Metrics::new()));
    let v = parse(&t.render_prometheus().unwrap());
    assert_eq!(
        v[r#"authwatch_dead_letters_total{reason="malformed_json"}"#],
        0.0
    );
}

#[test]
fn throughput_is_a_rate_over_the_last_ten_seconds() {
    let t = Telemetry::build(&TelemetryConfig::default()).unwrap();
    let m = Arc::new(Metrics::new());
    t.attach_pipeline(m.clone());
    let read = &m.stage(Stage::Source).events_in;
    let rate = |t: &Telemetry| parse(&t.render_prometheus().unwrap())["authwatch_throughput_events_per_second"];
    let t0 = Instant::now();
    t.sources.sample_throughput(t0);
    set(read, 1000);
    t.sources.sample_throughput(t0 + Duration::from_secs(2));
    assert_eq!(rate(&t), 500.0);
    // Samples older than the window drop out: the rate follows the recent pace.
    for s in 3..=20u64 {
        set(read, 1000 + (s - 2) * 100);
        t.sources.sample_throughput(t0 + Duration::from_secs(s));
    }
    assert!((rate(&t) - 100.0).abs() < 1e-9, "{}", rate(&t));
    // A new pipeline starts from zero: the window starts again rather than going negative.
    let next = Arc::new(Metrics::new());
    t.attach_pipeline(next.clone());
    t.sources.sample_throughput(t0 + Duration::from_secs(21));
    assert_eq!(rate(&t), 0.0);
}

#[test]
fn bad_settings_are_named() {
    let mut config = TelemetryConfig {
        otlp_endpoint: Some("https://collector:4318/v1/metrics".into()),
        ..TelemetryConfig::default()
    };
    let e = Telemetry::build(&config).unwrap_err().to_string();
    assert!(e.contains("telemetry.otlp_endpoint"), "{e}");
    config.otlp_endpoint = Some("http://bad host:4318/v1/metrics".into());
    let e = Telemetry::build(&config).unwrap_err().to_string();
    assert!(e.contains("telemetry.otlp_endpoint http://bad host"), "{e}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = TelemetryConfig {
        listen: taken.local_addr().unwrap(),
        ..TelemetryConfig::default()
    };
    let e = Telemetry::start(&config).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "telemetry.listen {}: cannot listen",
            taken.local_addr().unwrap()
        )),
        "{e}"
    );
}

#[test]
fn the_example_config_documents_the_optional_otlp_endpoint() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config/authwatch.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains("\n# otlp_endpoint = \"http://"), "{text}");
}

mod resource {
    use crate::telemetry::{named, resource, with_instance_id};
    use opentelemetry::{Key, KeyValue, Value};
    use opentelemetry_sdk::Resource;

    fn get(r: &Resource, key: &'static str) -> Option<Value> {
        r.get(&Key::from_static_str(key))
    }

    #[test]
    fn the_resource_names_the_service_and_its_instance() {
        let r = resource(Some("aw-authwatch-3".to_owned()));
        assert_eq!(get(&r, "service.name"), Some(Value::from("authwatch")));
        // The host name, unless the environment (OTEL_RESOURCE_ATTRIBUTES) named the instance.
        let from_env = std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|v| v.contains("service.instance.id"));
        if !from_env {
            assert_eq!(
                get(&r, "service.instance.id"),
                Some(Value::from("aw-authwatch-3"))
            );
        }
    }

    #[test]
    fn the_host_name_becomes_the_instance_id_and_other_attributes_stay() {
        let detected = Resource::builder_empty()
            .with_service_name("authwatch")
            .with_attributes([
                KeyValue::new("k8s.pod.name", "aw-authwatch-0"),
                KeyValue::new("k8s.namespace.name", "security"),
            ])
            .build();
        let r = with_instance_id(detected, Some("aw-authwatch-0".to_owned()));
        assert_eq!(
            get(&r, "service.instance.id"),
            Some(Value::from("aw-authwatch-0"))
        );
        assert_eq!(get(&r, "service.name"), Some(Value::from("authwatch")));
        assert_eq!(get(&r, "k8s.pod.name"), Some(Value::from("aw-authwatch-0")));
        assert_eq!(get(&r, "k8s.namespace.name"), Some(Value::from("security")));
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn the_operators_service_name_wins_and_the_sdk_default_becomes_authwatch() {
        let by_operator = Resource::builder_empty()
            .with_service_name("authwatch-eu")
            .with_attribute(KeyValue::new("deployment.environment", "prod"))
            .build();
        assert_eq!(named(by_operator.clone()), by_operator);
        let sdk_default = Resource::builder_empty()
            .with_service_name("unknown_service:authwatch")
            .with_attribute(KeyValue::new("deployment.environment", "prod"))
            .build();
        let r = named(sdk_default);
        assert_eq!(get(&r, "service.name"), Some(Value::from("authwatch")));
        assert_eq!(get(&r, "deployment.environment"), Some(Value::from("prod")));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn an_instance_id_from_the_environment_wins() {
        let detected = Resource::builder_empty()
            .with_service_name("authwatch")
            .with_attribute(KeyValue::new("service.instance.id", "from-env"))
            .build();
        let r = with_instance_id(detected.clone(), Some("host".to_owned()));
        assert_eq!(r, detected);
    }

    #[test]
    fn without_a_host_name_the_instance_id_is_still_unique_to_the_process() {
        let r = with_instance_id(Resource::builder_empty().build(), None);
        let id = get(&r, "service.instance.id")
            .expect("an instance id")
            .to_string();
        assert!(
            id.starts_with(&format!("authwatch-{}-", std::process::id())),
            "{id}"
        );
    }
}

mod otlp {
    use super::*;
    use axum::body::Bytes;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    use prost::Message as _;
    use std::sync::mpsc;

    /// A real OTLP/HTTP collector: accepts POST /v1/metrics and hands over each body.
    fn collector() -> (std::net::SocketAddr, mpsc::Receiver<(String, Vec<u8>)>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().route(
                    "/v1/metrics",
                    axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
                        let content_type = headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let _ = tx.send((content_type, body.to_vec()));
                        async { "" }
                    }),
                );
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        (addr, rx)
    }

    #[test]
    fn metrics_are_pushed_as_otlp_protobuf_to_the_collector() {
        let (addr, bodies) = collector();
        let config = TelemetryConfig {
            otlp_endpoint: Some(format!("http://{addr}/v1/metrics")),
            export_interval: authwatch_pipeline::config::DurationText(Duration::from_secs(1)),
            ..TelemetryConfig::default()
        };
        let t = Telemetry::build(&config).unwrap();
        let m = metrics_with_rules();
        set(&m.stage(Stage::Detect).events_in, 4242);
        set(&m.late_events, 7);
        t.attach_pipeline(m);
        t.register_consumer_lag(|| {
            vec![PartitionLag {
                topic: "okta".into(),
                partition: 5,
                lag: 99,
            }]
        });
        // Shutting down pushes a final export.
        t.shutdown().unwrap();
        let (content_type, body) = bodies.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(content_type, "application/x-protobuf");
        let request = ExportMetricsServiceRequest::decode(body.as_slice()).unwrap();
        let resource = request.resource_metrics[0].resource.as_ref().unwrap();
        assert!(
            resource
                .attributes
                .iter()
                .any(|kv| kv.key == "service.name"
                    && format!("{:?}", kv.value).contains("authwatch")),
            "{resource:?}"
        );
        // Each pod pushes its own cumulative counters: the backend tells them apart by this.
        assert!(
            resource
                .attributes
                .iter()
                .any(|kv| kv.key == "service.instance.id"),
            "{resource:?}"
        );
        let metrics: Vec<_> = request
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .collect();
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        for name in [
            names::EVENTS_IN,
            names::EVENTS_OUT,
            names::DEAD_LETTERS,
            names::LATE_EVENTS,
            names::RULE_STATE_KEYS,
            names::RULE_EVICTIONS,
            names::ALERTS,
            names::CONSUMER_LAG,
        ] {
            assert!(names.contains(&name.otel), "{} not in {names:?}", name.otel);
        }
        let points = |name: &str| match metrics
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.data.clone())
        {
            Some(Data::Sum(s)) => s.data_points,
            Some(Data::Gauge(g)) => g.data_points,
            other => panic!("{name}: {other:?}"),
        };
        let value_of = |name: &str, label: Option<(&str, &str)>| -> i64 {
            points(name)
                .into_iter()
                .find(|p| {
                    label.is_none_or(|(k, v)| {
                        p.attributes
                            .iter()
                            .any(|kv| kv.key == k && format!("{:?}", kv.value).contains(v))
                    })
                })
                .and_then(|p| p.value)
                .map(|v| match v {
                    Value::AsInt(i) => i,
                    Value::AsDouble(d) => d as i64,
                })
                .unwrap()
        };
        assert_eq!(
            value_of(names::EVENTS_IN.otel, Some(("stage", "detect"))),
            4242
        );
        assert_eq!(value_of(names::LATE_EVENTS.otel, None), 7);
        assert_eq!(
            value_of(names::CONSUMER_LAG.otel, Some(("topic", "okta"))),
            99
        );
    }
}
