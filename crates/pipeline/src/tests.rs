//! Runtime tests: bad input, late events, ordering and determinism across thread counts.

use super::*;
use authwatch_detect::RulePack;
use authwatch_normalize::RejectKind;
use std::io::Cursor;

const T0: i64 = 1_767_603_600_000;

fn push_line(user: &str, t: i64, activity: &str, outcome: &str, id: &str) -> String {
    format!(
        r#"{{"time":{t},"provider":"okta","tenant":"acme","event_id":"{id}","user":{{"name":"{user}"}},"activity":"{activity}","factor":"push","outcome":"{outcome}","src":{{"ip":"89.160.20.115"}}}}"#
    )
}

/// A push-bombing campaign against `user` (8 denied pushes a minute apart, then an approval).
fn bombing(user: &str, start: i64) -> Vec<String> {
    let mut lines = Vec::new();
    for i in 0..8 {
        let t = start + i * 60_000;
        lines.push(push_line(
            user,
            t,
            "mfa_challenge",
            "challenge",
            &format!("{user}-c{i}"),
        ));
        lines.push(push_line(
            user,
            t + 15_000,
            "mfa_verify",
            "denied",
            &format!("{user}-d{i}"),
        ));
    }
    lines.push(push_line(
        user,
        start + 9 * 60_000,
        "mfa_verify",
        "success",
        &format!("{user}-ok"),
    ));
    lines
}

struct Collect(JsonLinesSink, Vec<DeadLetter>, Vec<LateEvent>);

impl Sink for Collect {
    fn alert(&mut self, a: &authwatch_event::Alert) -> Result<(), SinkError> {
        self.0.alert(a)
    }
    fn dead_letter(&mut self, d: &DeadLetter) -> Result<(), SinkError> {
        self.1.push(d.clone());
        Ok(())
    }
    fn late_event(&mut self, l: &LateEvent) -> Result<(), SinkError> {
        self.2.push(l.clone());
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

fn run(config: Config, data: Vec<u8>) -> (RunSummary, Collect) {
    let pipeline = Pipeline::new(config.clone(), RulePack::builtin().unwrap()).unwrap();
    let mut source = LineSource::from_readers(
        vec![("input.jsonl".into(), Box::new(Cursor::new(data)))],
        config.input.max_line_bytes,
        config.input.dead_letter_raw_bytes,
    );
    let sink = Collect(
        JsonLinesSink::create(None, None, None)
            .unwrap()
            .keep_alerts(1000),
        Vec::new(),
        Vec::new(),
    );
    pipeline.run(&mut source, sink, Speed::Max).unwrap()
}

fn join(lines: &[String]) -> Vec<u8> {
    let mut s = lines.join("\n");
    s.push('\n');
    s.into_bytes()
}

#[test]
fn bombing_is_detected_end_to_end() {
    let (summary, sink) = run(Config::default(), join(&bombing("aiko@acme.jp", T0)));
    assert_eq!(summary.events, 17);
    assert_eq!(summary.alerts, 2);
    let (alerts, _) = sink.0.kept_alerts();
    assert_eq!(alerts[0].category, "mfa_fatigue");
    assert_eq!(alerts[1].category, "mfa_fatigue_success");
    assert!(sink.1.is_empty());
}

#[test]
fn every_kind_of_bad_input_goes_to_dead_letter_and_the_stream_goes_on() {
    let mut config = Config::default();
    config.input.max_line_bytes = 2048;
    config.input.dead_letter_raw_bytes = 100;
    let good = bombing("aiko@acme.jp", T0);
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let bad: Vec<(Vec<u8>, RejectKind)> = vec![
        (b"{\"time\": 1767603600000, \"provider\": ".to_vec(), RejectKind::MalformedJson),
        (br#"{"time":1767603600000,"provider":"okta","activity":"logon","outcome":"success"}"#.to_vec(), RejectKind::MissingField),
        (br#"{"time":"9am","provider":"okta","event_id":"x","activity":"logon","outcome":"success"}"#.to_vec(), RejectKind::WrongType),
        (vec![b'{'; 5000], RejectKind::LineTooLong),
        ([&br#"{"time":1767603600000,"provider":"ok"#[..], &[0xff, 0xfe], br#"ta"}"#].concat(), RejectKind::InvalidUtf8),
        (br#"{"time":1767603600,"provider":"okta","event_id":"x","activity":"logon","outcome":"success"}"#.to_vec(), RejectKind::ImpossibleTimestamp),
        (br#"{"time":1767603600000,"provider":"okta","event_id":"x","activity":"teleport","outcome":"success"}"#.to_vec(), RejectKind::InvalidValue),
        (b"   ".to_vec(), RejectKind::EmptyLine),
    ];
    // Interleave: a bad line after every good one, so the attack spans the bad input.
    for (i, g) in good.iter().enumerate() {
        lines.push(g.as_bytes().to_vec());
        if let Some((b, _)) = bad.get(i) {
            lines.push(b.clone());
        }
    }
    let data = lines.join(&b"\n"[..]);
    let (summary, sink) = run(config, data);
    assert_eq!(summary.alerts, 2, "detection still works around bad lines");
    assert_eq!(summary.events, good.len() as u64);
    assert_eq!(summary.lines, (good.len() + bad.len()) as u64);
    let dead = &sink.1;
    assert_eq!(dead.len(), bad.len());
    for (i, ((_, kind), d)) in bad.iter().zip(dead).enumerate() {
        assert_eq!(d.reason, *kind, "{d:?}");
        assert_eq!(d.file, "input.jsonl");
        assert_eq!(
            d.line,
            (2 * i + 2) as u64,
            "line numbers are 1-based positions in the file"
        );
        assert!(!d.detail.is_empty());
        assert!(d.raw.len() <= 100 + 6, "raw is truncated: {}", d.raw.len());
    }
    let too_long = &dead[3];
    assert_eq!(too_long.raw_len, 5000);
    assert!(
        too_long.detail.contains("5000 bytes"),
        "{}",
        too_long.detail
    );
    // Offsets point at the line's first byte.
    let data = lines.join(&b"\n"[..]);
    for d in dead {
        let at = d.offset as usize;
        assert!(
            at == 0 || data[at - 1] == b'\n',
            "offset {at} is not a line start"
        );
    }
    let counted: u64 = summary.dead_letters.iter().map(|(_, n)| n).sum();
    assert_eq!(counted, bad.len() as u64);
}

#[test]
fn late_events_are_counted_and_side_output_when_configured() {
    let mut lines = bombing("aiko@acme.jp", T0);
    // Ten minutes after the newest event: far behind a 5 minute watermark.
    lines.push(push_line(
        "ken@acme.jp",
        T0 - 20 * 60_000,
        "mfa_verify",
        "denied",
        "late-1",
    ));
    lines.push(push_line(
        "ken@acme.jp",
        T0 + 9 * 60_000 - 60_000,
        "mfa_verify",
        "denied",
        "on-time",
    ));
    let (summary, sink) = run(Config::default(), join(&lines));
    assert_eq!(summary.late_events, 1);
    assert!(sink.2.is_empty(), "drop policy writes nothing");

    let mut config = Config::default();
    config.event_time.late_events = LatePolicy::SideOutput;
    let (summary, sink) = run(config, join(&lines));
    assert_eq!(summary.late_events, 1);
    assert_eq!(sink.2.len(), 1);
    assert_eq!(sink.2[0].event.event_id, "late-1");
    assert_eq!(sink.2[0].line, 18);
    assert_eq!(sink.2[0].watermark, T0 + 9 * 60_000 - 5 * 60_000);
}

// Overlapping exports and re-sending collectors deliver records twice: five wrong answers
// must stay five (not a push-bombing "attack" of ten), and every repeat is counted.
#[test]
fn repeated_deliveries_are_counted_once_and_detected_once() {
    // Three denied pushes: below mfa_fatigue's five, however often each is delivered.
    let lines: Vec<String> = bombing("aiko@acme.jp", T0)[..6].to_vec();
    let (summary, _) = run(Config::default(), join(&lines));
    assert_eq!((summary.alerts, summary.duplicate_events), (0, 0));
    // Each delivered twice in a row, and the first three again a few lines later.
    let mut twice: Vec<String> = lines.iter().flat_map(|l| [l.clone(), l.clone()]).collect();
    twice.extend(lines[..3].iter().cloned());
    let (summary, sink) = run(Config::default(), join(&twice));
    assert_eq!(summary.events, 15);
    assert_eq!(summary.duplicate_events, 9);
    assert_eq!(summary.alerts, 0, "{:?}", sink.0.kept_alerts().0);
    // The same record of another tenant is another record.
    let other: Vec<String> = lines
        .iter()
        .map(|l| l.replace(r#""tenant":"acme""#, r#""tenant":"beta""#))
        .collect();
    let mut both = lines.clone();
    both.extend(other);
    let (summary, _) = run(Config::default(), join(&both));
    assert_eq!(summary.duplicate_events, 0);
    // Off, the repeats count: ten pushes sent make an alert.
    let mut config = Config::default();
    config.detect.dedup_capacity = 0;
    let (summary, _) = run(config, join(&twice));
    assert_eq!(summary.duplicate_events, 0);
    assert!(summary.alerts > 0);
}

#[test]
fn results_do_not_depend_on_threads_or_batch_sizes() {
    let mut lines = Vec::new();
    for u in 0..40 {
        lines.extend(bombing(&format!("user{u}@acme.jp"), T0 + u * 7_000));
    }
    lines.sort_by_key(|l| l[8..21].to_owned());
    let data = join(&lines);
    let baseline = {
        let mut c = Config::default();
        c.runtime.workers = 1;
        c.runtime.batch_lines = 4096;
        let (_, sink) = run(c, data.clone());
        sink.0.kept_alerts().0.to_vec()
    };
    assert_eq!(baseline.len(), 80);
    for (workers, batch, cap) in [(2, 1, 1), (4, 7, 2), (3, 64, 1)] {
        let mut c = Config::default();
        c.runtime.workers = workers;
        c.runtime.batch_lines = batch;
        c.runtime.channel_batches = cap;
        let (_, sink) = run(c, data.clone());
        assert_eq!(
            sink.0.kept_alerts().0,
            baseline.as_slice(),
            "workers={workers} batch={batch}"
        );
    }
}

#[test]
fn a_failing_sink_stops_the_run_with_its_error() {
    struct Broken;
    impl Sink for Broken {
        fn alert(&mut self, _: &authwatch_event::Alert) -> Result<(), SinkError> {
            Err(SinkError {
                output: "alerts.jsonl".into(),
                source: std::io::Error::other("disk full"),
            })
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
    let pipeline = Pipeline::new(Config::default(), RulePack::builtin().unwrap()).unwrap();
    let mut lines = Vec::new();
    for u in 0..200 {
        lines.extend(bombing(&format!("u{u}@acme.jp"), T0 + u * 1000));
    }
    let mut source = LineSource::from_readers(
        vec![("x".into(), Box::new(Cursor::new(join(&lines))))],
        1 << 20,
        100,
    );
    let err = pipeline.run(&mut source, Broken, Speed::Max).err().unwrap();
    assert_eq!(err.to_string(), "alerts.jsonl: write failed: disk full");
    // Stopped, not stuck: the health check must not report the sink as hanging.
    let busy = &pipeline.metrics().stages[Stage::Sink.index()].busy;
    assert_eq!(busy.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn speed_parses() {
    assert_eq!("max".parse::<Speed>().unwrap(), Speed::Max);
    assert_eq!("60x".parse::<Speed>().unwrap(), Speed::Factor(60.0));
    assert_eq!("0.5".parse::<Speed>().unwrap(), Speed::Factor(0.5));
    assert!("fast".parse::<Speed>().is_err());
    assert!("0x".parse::<Speed>().is_err());
    // Factors no replay means (a typo, or one that overflows the wait) are refused up front.
    for bad in ["1e-300x", "1e-7x", "1e13x", "-1x", "NaNx", "infx"] {
        assert!(bad.parse::<Speed>().is_err(), "{bad}");
    }
    assert_eq!("1e-6x".parse::<Speed>().unwrap(), Speed::Factor(1e-6));
}

#[test]
fn paced_replay_takes_event_time_over_factor() {
    let lines = bombing("aiko@acme.jp", T0); // spans 9 minutes of event time
    let pipeline = Pipeline::new(Config::default(), RulePack::builtin().unwrap()).unwrap();
    let mut source = LineSource::from_readers(
        vec![("x".into(), Box::new(Cursor::new(join(&lines))))],
        1 << 20,
        100,
    );
    let sink = JsonLinesSink::create(None, None, None).unwrap();
    let started = std::time::Instant::now();
    let (summary, _) = pipeline
        .run(&mut source, sink, Speed::Factor(2700.0))
        .unwrap();
    // 540 s of event time at 2700x is 200 ms of wall time.
    assert!(started.elapsed() >= std::time::Duration::from_millis(190));
    assert_eq!(summary.alerts, 2);
}

#[test]
fn sinks_that_ask_for_events_get_them_enriched_in_stream_order() {
    struct Events(Vec<authwatch_event::AuthEvent>);
    impl Sink for Events {
        fn alert(&mut self, _: &authwatch_event::Alert) -> Result<(), SinkError> {
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
        fn wants_events(&self) -> bool {
            true
        }
        fn event(&mut self, e: &authwatch_event::AuthEvent) -> Result<(), SinkError> {
            self.0.push(e.clone());
            Ok(())
        }
    }
    let lines = bombing("aiko@acme.jp", T0);
    let mut config = Config::default();
    config.runtime.batch_lines = 3;
    let pipeline = Pipeline::new(config, RulePack::builtin().unwrap()).unwrap();
    let mut source = LineSource::from_readers(
        vec![("x".into(), Box::new(Cursor::new(join(&lines))))],
        1 << 20,
        100,
    );
    let (summary, sink) = pipeline
        .run(&mut source, Events(Vec::new()), Speed::Max)
        .unwrap();
    assert_eq!(sink.0.len() as u64, summary.events);
    assert!(sink.0.windows(2).all(|w| w[0].time <= w[1].time));
    // The approval is a success, so the profile existed only afterwards; the first event is new.
    assert!(!sink.0[0].context.known_user);
    assert!(sink.0.iter().all(|e| e.src.ip.is_some()));
}

/// A partitioned source over scripted steps: lines of one input, or a control message.
#[derive(Clone)]
enum Step {
    Lines(u32, Vec<String>),
    /// One batch of lines of several inputs, interleaved.
    Mixed(Vec<(u32, String)>),
    Assign(u32, Option<StateParts>),
    /// Restored state, the offset it reflects (the next line's) and the offset below which
    /// lines replay committed input.
    Resume(u32, Option<StateParts>, i64, i64),
    /// A snapshot barrier releasing these inputs.
    Barrier(Vec<u32>),
    /// A barrier that commits positions without a snapshot.
    Commit,
}

struct Scripted {
    names: Vec<String>,
    steps: std::collections::VecDeque<Step>,
    controls: Option<ControlSender>,
    positions: std::collections::BTreeMap<u32, i64>,
}

impl Source for Scripted {
    fn names(&self) -> &[String] {
        &self.names
    }
    fn bytes_read(&self) -> u64 {
        0
    }
    fn partitioned(&self) -> bool {
        true
    }
    fn attach(&mut self, controls: ControlSender) {
        self.controls = Some(controls);
    }
    fn fill(&mut self, batch: &mut RawBatch, _max: usize) -> Result<bool, SourceError> {
        batch.data.clear();
        batch.lines.clear();
        while let Some(step) = self.steps.pop_front() {
            let controls = self.controls.as_ref().unwrap();
            match step {
                Step::Assign(input, state) => {
                    controls.send(Control::Assign {
                        input,
                        state,
                        mute_before: None,
                    });
                }
                Step::Resume(input, state, from, mute_before) => {
                    self.positions.insert(input, from);
                    controls.send(Control::Assign {
                        input,
                        state,
                        mute_before: Some(mute_before),
                    });
                }
                Step::Barrier(_) | Step::Commit => {
                    let (release, snapshot) = match step {
                        Step::Barrier(release) => (release, true),
                        _ => (Vec::new(), false),
                    };
                    let positions = self.positions.iter().map(|(i, p)| (*i, *p)).collect();
                    controls.send(Control::Barrier(Barrier {
                        id: 0,
                        positions,
                        release,
                        snapshot,
                        token: None,
                        source_parts: Vec::new(),
                        ack: None,
                    }));
                }
                Step::Lines(..) | Step::Mixed(..) => {
                    let lines = match step {
                        Step::Lines(input, lines) => {
                            lines.into_iter().map(|l| (input, l)).collect()
                        }
                        Step::Mixed(lines) => lines,
                        _ => Vec::new(),
                    };
                    for (input, l) in lines {
                        let pos = self.positions.entry(input).or_insert(0);
                        let start = batch.data.len();
                        batch.data.extend_from_slice(l.as_bytes());
                        batch.lines.push(RawLine {
                            start,
                            end: batch.data.len(),
                            origin: Origin {
                                input,
                                line: 1,
                                offset: *pos as u64,
                            },
                            len: l.len() as u64,
                        });
                        *pos += 1;
                    }
                    return Ok(true);
                }
            }
        }
        self.controls = None;
        Ok(false)
    }
}

/// A checkpoint as the sink saw it: alerts before it, positions, task snapshots.
type Seen = (usize, Vec<(u32, i64)>, Vec<(u32, StateParts)>);

/// Alerts and checkpoints in the order the sink saw them.
#[derive(Default)]
struct Recorder {
    alerts: Vec<String>,
    checkpoints: Vec<Seen>,
}

impl Sink for Recorder {
    fn alert(&mut self, a: &authwatch_event::Alert) -> Result<(), SinkError> {
        self.alerts.push(a.alert_id.clone());
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
    fn checkpoint(&mut self, c: Checkpoint) -> Result<(), SinkError> {
        self.checkpoints.push((
            self.alerts.len(),
            c.barrier.positions.clone(),
            c.tasks.clone(),
        ));
        c.acknowledge(Ok(()));
        Ok(())
    }
}

fn run_scripted(steps: Vec<Step>) -> Recorder {
    run_scripted_on(steps, Config::default())
}

fn run_scripted_on(steps: Vec<Step>, config: Config) -> Recorder {
    let pipeline = Pipeline::new(config, RulePack::builtin().unwrap()).unwrap();
    let mut source = Scripted {
        names: vec!["t/0".into(), "t/1".into(), "t/2".into()],
        steps: steps.into(),
        controls: None,
        positions: Default::default(),
    };
    let options = RunOptions {
        flush_at_end: false,
        ..RunOptions::default()
    };
    pipeline
        .run_with(&mut source, Recorder::default(), &options)
        .unwrap()
        .1
}

// After a restore from an older snapshot, the replay up to the committed offset writes no
// dead letter, so it must not count one either: the counter (exported as
// `authwatch_dead_letters_total`) and the summary counted every malformed record of the
// replay a second time.
#[test]
fn a_muted_replay_counts_no_dead_letters() {
    let event = |id: &str| {
        format!(
            r#"{{"time":1767603600000,"provider":"okta","tenant":"acme","event_id":"{id}","user":{{"name":"ann@acme.example"}},"activity":"logon","outcome":"success","src":{{"ip":"198.51.100.7"}}}}"#
        )
    };
    // Offsets 0–2 replay committed input (two rejections among them), 3–5 are new (two).
    let lines: Vec<String> = vec![
        "{broken".into(),
        "{not json".into(),
        event("a"),
        "{broken again".into(),
        event("b"),
        "{oops".into(),
    ];
    for route_only in [false, true] {
        let pipeline =
            Pipeline::new(Config::default(), RulePack::from_rules(Vec::new()).unwrap()).unwrap();
        let mut source = Scripted {
            names: vec!["t/0".into()],
            steps: vec![Step::Resume(0, None, 0, 3), Step::Lines(0, lines.clone())].into(),
            controls: None,
            positions: Default::default(),
        };
        let options = RunOptions {
            flush_at_end: false,
            route_only,
            ..RunOptions::default()
        };
        let sink = Collect(
            JsonLinesSink::create(None, None, None).unwrap(),
            Vec::new(),
            Vec::new(),
        );
        let (summary, sink) = pipeline.run_with(&mut source, sink, &options).unwrap();
        assert_eq!(
            sink.1.len(),
            2,
            "route_only {route_only}: dead letters written"
        );
        assert_eq!(
            pipeline.metrics().dead_letter_total(),
            2,
            "route_only {route_only}: dead letters counted"
        );
        assert_eq!(
            summary.dead_letters,
            [(RejectKind::MalformedJson, 2)],
            "route_only {route_only}"
        );
    }
}

#[test]
fn a_task_restored_from_a_barrier_continues_with_the_same_alerts() {
    // Two partitions, each one user's bombing; a barrier in the middle of both.
    let alice = bombing("alice@acme.example", T0);
    let bob = bombing("bob@acme.example", T0 + 30_000);
    let (a1, a2) = alice.split_at(7);
    let (b1, b2) = bob.split_at(9);
    let tail = |user: &str| vec![push_line(user, T0 + 86_400_000, "logoff", "success", "z")];
    let whole = run_scripted(vec![
        Step::Assign(0, None),
        Step::Assign(1, None),
        Step::Lines(0, a1.to_vec()),
        Step::Lines(1, b1.to_vec()),
        Step::Barrier(vec![]),
        Step::Lines(1, b2.to_vec()),
        Step::Lines(0, a2.to_vec()),
        Step::Lines(0, tail("alice@acme.example")),
        Step::Lines(1, tail("bob@acme.example")),
    ]);
    // mfa_fatigue and mfa_fatigue_success for each user.
    assert!(whole.alerts.len() >= 4, "{:?}", whole.alerts);
    let (before, positions, tasks) = whole.checkpoints[0].clone();
    assert_eq!(positions, vec![(0, 7), (1, 9)]);
    let names: Vec<&String> = tasks[0].1.parts.keys().collect();
    assert_eq!(names, ["engine", "profiles", "seen", "watermark"]);
    // Restart from the barrier: restored tasks, the rest of each partition.
    let state = |input: u32| tasks.iter().find(|t| t.0 == input).map(|t| t.1.clone());
    let resumed = run_scripted(vec![
        Step::Assign(1, state(1)),
        Step::Assign(0, state(0)),
        Step::Lines(0, a2.to_vec()),
        Step::Lines(1, b2.to_vec()),
        Step::Lines(1, tail("bob@acme.example")),
        Step::Lines(0, tail("alice@acme.example")),
    ]);
    let mut expected: Vec<String> = whole.alerts[before..].to_vec();
    let mut got = resumed.alerts.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    // Restarting from scratch instead would miss what the state carried.
    let fresh = run_scripted(vec![
        Step::Lines(0, a2.to_vec()),
        Step::Lines(1, b2.to_vec()),
    ]);
    assert_ne!(fresh.alerts.len(), expected.len());
}

// Partitions are detected on several threads (`runtime.detect_threads`). The thread count must
// change nothing the sink sees but the order of alerts within one batch: the same alerts, the
// same checkpoints after the same number of alerts, the same snapshots, and a snapshot taken
// with one count restores under another.
#[test]
fn detect_threads_change_neither_alerts_nor_checkpoints() {
    let users = [
        "alice@acme.example",
        "bob@acme.example",
        "carol@acme.example",
    ];
    let streams: Vec<Vec<String>> = users
        .iter()
        .enumerate()
        .map(|(i, u)| bombing(u, T0 + i as i64 * 20_000))
        .collect();
    // One batch interleaves lines of all three partitions; each partition stays in order.
    let mixed = |from: usize, to: usize| {
        let mut lines = Vec::new();
        for k in from..to {
            for (p, s) in streams.iter().enumerate() {
                if let Some(l) = s.get(k) {
                    lines.push((p as u32, l.clone()));
                }
            }
        }
        Step::Mixed(lines)
    };
    let tail: Vec<(u32, String)> = users
        .iter()
        .enumerate()
        .map(|(p, u)| {
            (
                p as u32,
                push_line(u, T0 + 86_400_000, "logoff", "success", "z"),
            )
        })
        .collect();
    let script = vec![
        Step::Assign(0, None),
        Step::Assign(1, None),
        Step::Assign(2, None),
        mixed(0, 5),
        Step::Barrier(vec![]),
        mixed(5, 9),
        Step::Commit,
        mixed(9, 40),
        Step::Mixed(tail.clone()),
        Step::Barrier(vec![]),
    ];
    let on = |threads: usize, steps: Vec<Step>| {
        let mut config = Config::default();
        config.runtime.detect_threads = threads;
        run_scripted_on(steps, config)
    };
    let sorted = |r: &Recorder| {
        let mut a = r.alerts.clone();
        a.sort();
        a
    };
    let one = on(1, script.clone());
    // mfa_fatigue and mfa_fatigue_success for each user.
    assert!(one.alerts.len() >= 6, "{:?}", one.alerts);
    assert_eq!(one.checkpoints.len(), 3);
    for threads in [2, 3, 4] {
        let many = on(threads, script.clone());
        assert_eq!(sorted(&many), sorted(&one), "{threads} threads");
        assert_eq!(many.checkpoints, one.checkpoints, "{threads} threads");
    }
    // Resumed from the first barrier's snapshots with another thread count.
    let (before, _, tasks) = on(3, script.clone()).checkpoints[0].clone();
    let state = |input: u32| tasks.iter().find(|t| t.0 == input).map(|t| t.1.clone());
    let mut resumed_script = vec![
        Step::Assign(2, state(2)),
        Step::Assign(0, state(0)),
        Step::Assign(1, state(1)),
    ];
    resumed_script.extend(script[5..].iter().cloned());
    let mut rest = one.alerts.clone();
    rest.drain(..before);
    rest.sort();
    for threads in [1, 2] {
        let steps = resumed_script.clone();
        assert_eq!(
            sorted(&on(threads, steps)),
            rest,
            "resumed on {threads} threads"
        );
    }
}

// A repeat delivered after a restart is still a repeat: what was seen is part of the task's
// snapshot, or the restarted run would count what the uninterrupted one did not.
#[test]
fn a_repeat_after_a_restore_is_still_a_repeat() {
    let user = "carol@acme.example";
    // Four denied pushes; the fifth "denial" is the fourth delivered again.
    let pushes: Vec<String> = bombing(user, T0)[..8].to_vec();
    let again = vec![pushes[7].clone()];
    let whole = run_scripted(vec![
        Step::Assign(0, None),
        Step::Lines(0, pushes.clone()),
        Step::Barrier(vec![]),
        Step::Lines(0, again.clone()),
    ]);
    assert!(whole.alerts.is_empty(), "{:?}", whole.alerts);
    let (_, _, tasks) = whole.checkpoints[0].clone();
    let resumed = run_scripted(vec![
        Step::Assign(0, tasks.first().map(|t| t.1.clone())),
        Step::Lines(0, again.clone()),
    ]);
    assert!(resumed.alerts.is_empty(), "{:?}", resumed.alerts);
    // Without the remembered events the repeat counts as a fifth denial.
    let mut forgetful = tasks[0].1.clone();
    forgetful.parts.remove("seen");
    let resumed = run_scripted(vec![
        Step::Assign(0, Some(forgetful)),
        Step::Lines(0, again),
    ]);
    assert_eq!(resumed.alerts.len(), 1);
}

#[test]
fn a_task_restored_from_an_older_snapshot_replays_muted_up_to_the_commit() {
    let alice = bombing("alice@acme.example", T0);
    let bob = bombing("bob@acme.example", T0 + 30_000);
    let tail = |user: &str| vec![push_line(user, T0 + 86_400_000, "logoff", "success", "z")];
    // Snapshot after 3 lines of each partition, commits (no snapshot) after 8 and 10: the first
    // barrier snapshots the new tasks, the later ones only commit positions.
    let whole = run_scripted(vec![
        Step::Assign(0, None),
        Step::Assign(1, None),
        Step::Lines(0, alice[..3].to_vec()),
        Step::Lines(1, bob[..3].to_vec()),
        Step::Commit,
        Step::Lines(0, alice[3..8].to_vec()),
        Step::Lines(1, bob[3..10].to_vec()),
        Step::Commit,
        Step::Lines(0, alice[8..].to_vec()),
        Step::Lines(1, bob[10..].to_vec()),
        Step::Lines(0, tail("alice@acme.example")),
        Step::Lines(1, tail("bob@acme.example")),
    ]);
    let (_, first, snaps) = whole.checkpoints[0].clone();
    assert_eq!(first, vec![(0, 3), (1, 3)]);
    assert_eq!(
        snaps.len(),
        2,
        "new tasks are snapshotted at their first barrier"
    );
    let (committed_alerts, second, later) = whole.checkpoints[1].clone();
    assert_eq!(second, vec![(0, 8), (1, 10)]);
    assert!(
        later.is_empty(),
        "a commit without snapshot carries no state"
    );
    assert!(whole.alerts.len() >= 4, "{:?}", whole.alerts);
    assert!(committed_alerts > 0, "some alerts before the commit");
    // Resume from the snapshot at 3 with the commit at 8 / 10: lines 3.. are fed again, and
    // only the alerts after the commit come out — each once.
    let state = |input: u32| snaps.iter().find(|t| t.0 == input).map(|t| t.1.clone());
    let resumed = run_scripted(vec![
        Step::Resume(0, state(0), 3, 8),
        Step::Resume(1, state(1), 3, 10),
        Step::Lines(0, alice[3..].to_vec()),
        Step::Lines(1, bob[3..].to_vec()),
        Step::Lines(0, tail("alice@acme.example")),
        Step::Lines(1, tail("bob@acme.example")),
    ]);
    let mut expected: Vec<String> = whole.alerts[committed_alerts..].to_vec();
    let mut got = resumed.alerts.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    // Without muting, the replay would repeat the committed alerts.
    let unmuted = run_scripted(vec![
        Step::Assign(0, state(0)),
        Step::Assign(1, state(1)),
        Step::Lines(0, alice[3..].to_vec()),
        Step::Lines(1, bob[3..].to_vec()),
        Step::Lines(0, tail("alice@acme.example")),
        Step::Lines(1, tail("bob@acme.example")),
    ]);
    assert!(unmuted.alerts.len() > got.len());
}

#[test]
fn lines_of_a_released_partition_are_dropped_and_it_is_not_snapshotted_again() {
    let alice = bombing("alice@acme.example", T0);
    let rec = run_scripted(vec![
        Step::Assign(0, None),
        Step::Lines(0, alice[..4].to_vec()),
        Step::Barrier(vec![0]),
        Step::Lines(0, alice[4..].to_vec()),
        Step::Barrier(vec![]),
    ]);
    assert!(rec.alerts.is_empty(), "{:?}", rec.alerts);
    assert_eq!(rec.checkpoints.len(), 2);
    assert_eq!(rec.checkpoints[0].2.len(), 1);
    assert!(rec.checkpoints[1].2.is_empty());
}

/// Keeps every batch report.
#[derive(Default)]
struct Reports(std::sync::Mutex<Vec<BatchReport>>);

impl BatchObserver for Reports {
    fn batch_done(&self, report: &BatchReport) {
        self.0.lock().unwrap().push(report.clone());
    }
}

#[test]
fn stage_rule_and_batch_counters_add_up_to_the_summary() {
    let mut lines = bombing("aiko@acme.jp", T0);
    lines.extend(bombing("ken@acme.jp", T0 + 30_000));
    lines.sort_by_key(|l| l[8..21].to_owned());
    lines.insert(5, "not json".to_owned());
    lines.push(push_line(
        "late@acme.jp",
        T0 - 20 * 60_000,
        "mfa_verify",
        "denied",
        "late",
    ));
    let mut config = Config::default();
    config.runtime.batch_lines = 4;
    config.runtime.workers = 2;
    config.event_time.late_events = LatePolicy::SideOutput;
    let reports = std::sync::Arc::new(Reports::default());
    let pipeline = Pipeline::new(config.clone(), RulePack::builtin().unwrap())
        .unwrap()
        .with_observer(reports.clone());
    let metrics = pipeline.metrics();
    let mut source = LineSource::from_readers(
        vec![("input.jsonl".into(), Box::new(Cursor::new(join(&lines))))],
        config.input.max_line_bytes,
        config.input.dead_letter_raw_bytes,
    );
    let sink = JsonLinesSink::create(None, None, None).unwrap();
    let (summary, _) = pipeline.run(&mut source, sink, Speed::Max).unwrap();
    assert_eq!(summary.lines, 36);
    assert_eq!(summary.events, 35);
    assert_eq!(summary.late_events, 1);
    assert_eq!(summary.alerts, 4);

    let get = |s: Stage| {
        let m = metrics.stage(s);
        (Metrics::get(&m.events_in), Metrics::get(&m.events_out))
    };
    assert_eq!(get(Stage::Source), (36, 36));
    assert_eq!(get(Stage::Normalize), (36, 35));
    assert_eq!(get(Stage::Detect), (35, 34));
    // Written records: 4 alerts, 1 dead letter, 1 late event.
    assert_eq!(get(Stage::Sink), (6, 6));
    for s in Stage::ALL {
        assert_eq!(
            Metrics::get(&metrics.stage(s).busy),
            0,
            "{s:?} is idle at the end"
        );
    }
    assert!(Metrics::get(&metrics.stage(Stage::Detect).progress) >= 9);

    let by_rule: Vec<(&str, u64)> = metrics
        .rules
        .iter()
        .filter(|r| Metrics::get(&r.alerts) > 0)
        .map(|r| (r.id.as_str(), Metrics::get(&r.alerts)))
        .collect();
    assert_eq!(
        by_rule,
        vec![("mfa_fatigue", 2), ("mfa_fatigue_success", 2)]
    );
    let fatigue = metrics
        .rules
        .iter()
        .find(|r| r.id == "mfa_fatigue")
        .unwrap();
    assert_eq!(fatigue.category, "mfa_fatigue");
    assert_eq!(
        Metrics::get(&fatigue.keys),
        summary
            .rules
            .iter()
            .find(|(id, _)| id == "mfa_fatigue")
            .unwrap()
            .1
            .keys
    );

    let reports = reports.0.lock().unwrap();
    assert_eq!(reports.len(), 9, "one report per source batch of 4 lines");
    let seqs: Vec<u64> = reports.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (0..9).collect::<Vec<_>>(), "reported in stream order");
    let sum = |f: fn(&BatchReport) -> u64| reports.iter().map(f).sum::<u64>();
    assert_eq!(sum(|r| r.lines), 36);
    assert_eq!(sum(|r| r.events), 35);
    assert_eq!(sum(|r| r.dead_letters), 1);
    assert_eq!(sum(|r| r.late_events), 1);
    // The flush at the end of input may decide alerts outside any batch.
    assert!(sum(|r| r.alerts) <= 4);
    for r in reports.iter() {
        assert!(r.total >= r.read + r.normalize + r.detect + r.sink, "{r:?}");
        assert_eq!(r.paced, std::time::Duration::ZERO);
    }
}

/// A tenant whose events arrive on two partitions is counted (and named in a warning): each
/// partition's task sees only part of it, so address- and tenant-keyed detections miss (an
/// unkeyed provider topic with several partitions). One tenant per partition is not.
#[test]
fn a_tenant_split_over_partitions_is_counted() {
    let split = |second_tenant: &str| {
        let pipeline = Pipeline::new(Config::default(), RulePack::builtin().unwrap()).unwrap();
        let metrics = pipeline.metrics();
        let other = push_line("bob@acme.example", T0 + 1, "logon", "failure", "b1").replace(
            r#""tenant":"acme""#,
            &format!(r#""tenant":"{second_tenant}""#),
        );
        let mut source = Scripted {
            names: vec!["t/0".into(), "t/1".into()],
            steps: vec![
                Step::Assign(0, None),
                Step::Assign(1, None),
                Step::Lines(
                    0,
                    vec![push_line("a@acme.example", T0, "logon", "failure", "a1")],
                ),
                Step::Lines(1, vec![other.clone(), other.replace("b1", "b2")]),
                Step::Lines(
                    0,
                    vec![push_line(
                        "a@acme.example",
                        T0 + 2,
                        "logon",
                        "failure",
                        "a2",
                    )],
                ),
            ]
            .into(),
            controls: None,
            positions: Default::default(),
        };
        pipeline
            .run_with(&mut source, Recorder::default(), &RunOptions::default())
            .unwrap();
        Metrics::get(&metrics.split_tenants)
    };
    assert_eq!(split("acme"), 1);
    assert_eq!(split("globex"), 0);
}

// A shard whose partitions were all released may get no batch again for a long time: its
// keys must leave the rule-state gauges when the partitions leave, not when it next works.
#[test]
fn released_partitions_leave_the_rule_state_gauges_of_their_shard() {
    let mut config = Config::default();
    config.runtime.detect_threads = 2;
    let pipeline = Pipeline::new(config, RulePack::builtin().unwrap()).unwrap();
    let fatigue_keys = |p: &Pipeline| {
        let m = p.metrics();
        let r = m.rules.iter().find(|r| r.id == "mfa_fatigue").unwrap();
        Metrics::get(&r.keys)
    };
    let steps = |release: Vec<u32>| -> std::collections::VecDeque<Step> {
        vec![
            Step::Assign(0, None),
            Step::Assign(1, None),
            Step::Lines(0, bombing("alice@acme.example", T0)[..4].to_vec()),
            Step::Lines(1, bombing("bob@acme.example", T0)[..4].to_vec()),
            Step::Barrier(release),
            // Only partition 0 (shard 0) goes on.
            Step::Lines(
                0,
                vec![push_line(
                    "alice@acme.example",
                    T0 + 60_000,
                    "logoff",
                    "success",
                    "z",
                )],
            ),
        ]
        .into()
    };
    let options = RunOptions {
        flush_at_end: false,
        ..RunOptions::default()
    };
    let mut kept = Vec::new();
    for release in [vec![], vec![1]] {
        let mut source = Scripted {
            names: vec!["t/0".into(), "t/1".into()],
            steps: steps(release),
            controls: None,
            positions: Default::default(),
        };
        pipeline
            .run_with(&mut source, Recorder::default(), &options)
            .unwrap();
        kept.push(fatigue_keys(&pipeline));
    }
    // One key per user while both partitions are held; alice's alone once bob's is released.
    assert_eq!(kept, [2, 1]);
}

#[test]
fn rule_state_is_summed_over_the_engines_of_every_task() {
    let pack = RulePack::builtin().unwrap();
    let metrics = Metrics::for_rules(pack.rules());
    let limits = authwatch_detect::EngineLimits {
        max_keys_per_rule: 10,
        sweep_interval_ms: 60_000,
    };
    let normalizer = authwatch_normalize::Format::Auto.normalizer();
    let feed = |engine: &mut authwatch_detect::Engine, users: u32| {
        for u in 0..users {
            let line = push_line(
                &format!("u{u}@acme.jp"),
                T0 + i64::from(u),
                "mfa_verify",
                "denied",
                &format!("e{u}"),
            );
            let event = normalizer
                .normalize(line.as_bytes(), T0, &authwatch_normalize::Limits::default())
                .unwrap();
            engine.on_event(&event, &mut Vec::new());
        }
    };
    let mut a = pack.engine(limits);
    let mut b = pack.engine(limits);
    feed(&mut a, 25);
    feed(&mut b, 4);
    metrics.publish_rule_state([&a, &b]);
    let fatigue = |engine: &authwatch_detect::Engine| {
        engine
            .stats()
            .into_iter()
            .find(|(id, _)| *id == "mfa_fatigue")
            .unwrap()
            .1
    };
    let (sa, sb) = (fatigue(&a), fatigue(&b));
    assert!(sa.evicted > 0, "{sa:?}");
    let m = metrics
        .rules
        .iter()
        .find(|r| r.id == "mfa_fatigue")
        .unwrap();
    assert_eq!(Metrics::get(&m.keys), sa.keys + sb.keys);
    assert_eq!(Metrics::get(&m.evictions), sa.evicted + sb.evicted);
}

// The first stage of a repartitioned run: no detection, every event (late ones too) reaches
// `Sink::route` in order with its origin and the running maximum of its input's event times.
#[test]
fn route_only_runs_forward_every_event_with_its_progress() {
    #[derive(Default)]
    struct Routed(Vec<(i64, u64, i64)>, u64);
    impl Sink for Routed {
        fn alert(&mut self, _: &authwatch_event::Alert) -> Result<(), SinkError> {
            self.1 += 1;
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
        fn route(
            &mut self,
            event: &authwatch_event::AuthEvent,
            origin: crate::Origin,
            progress: i64,
        ) -> Result<(), SinkError> {
            self.0.push((event.time, origin.line, progress));
            Ok(())
        }
    }
    let mut lines = bombing("aiko@acme.jp", T0);
    // An hour older than everything before it: late for a detector, forwarded here.
    lines.push(push_line(
        "ken@acme.jp",
        T0 - 3_600_000,
        "mfa_verify",
        "denied",
        "old",
    ));
    let mut config = Config::default();
    config.runtime.batch_lines = 3;
    let pipeline = Pipeline::new(config.clone(), RulePack::builtin().unwrap()).unwrap();
    let mut source = LineSource::from_readers(
        vec![("input.jsonl".into(), Box::new(Cursor::new(join(&lines))))],
        config.input.max_line_bytes,
        config.input.dead_letter_raw_bytes,
    );
    let options = RunOptions {
        route_only: true,
        ..RunOptions::default()
    };
    let (summary, sink) = pipeline
        .run_with(&mut source, Routed::default(), &options)
        .unwrap();
    assert_eq!(sink.1, 0, "route-only runs detect nothing");
    assert_eq!(summary.late_events, 0);
    assert_eq!(sink.0.len(), lines.len());
    let mut max = i64::MIN;
    for (i, (time, line, progress)) in sink.0.iter().enumerate() {
        assert_eq!(*line, i as u64 + 1, "stream order");
        max = max.max(*time);
        assert_eq!(*progress, max);
    }
}

/// Review finding 1: one event dated 20 hours ahead (a wrong clock, a crafted line) moved the
/// watermark, and everything after it was late: the push bombing that followed went
/// undetected. It is still processed, but does not move the watermark alone.
#[test]
fn one_event_far_ahead_does_not_make_the_rest_of_the_stream_late() {
    let outlier = push_line(
        "ken@acme.jp",
        T0 + 20 * 3_600_000,
        "mfa_verify",
        "denied",
        "future-1",
    );
    // First line of the stream, and in the middle of it.
    let mut first = vec![outlier.clone()];
    first.extend(bombing("aiko@acme.jp", T0));
    let mut middle = bombing("aiko@acme.jp", T0);
    middle.insert(3, outlier.clone());
    for lines in [first, middle] {
        let (summary, sink) = run(Config::default(), join(&lines));
        assert_eq!(summary.events, 18);
        assert_eq!(summary.late_events, 0);
        let categories: Vec<&str> = sink
            .0
            .kept_alerts()
            .0
            .iter()
            .map(|a| a.category.as_str())
            .collect();
        assert_eq!(categories, ["mfa_fatigue", "mfa_fatigue_success"]);
    }

    // A hundred ordinary events, the outlier, a hundred more: none of them late.
    let ordinary = |from: i64| -> Vec<String> {
        (from..from + 100)
            .map(|i| {
                push_line(
                    &format!("u{i}@acme.jp"),
                    T0 + i * 1_000,
                    "mfa_verify",
                    "success",
                    &format!("ok-{i}"),
                )
            })
            .collect()
    };
    let mut lines = ordinary(0);
    lines.push(outlier);
    lines.extend(ordinary(100));
    let (summary, _) = run(Config::default(), join(&lines));
    assert_eq!((summary.events, summary.late_events), (201, 0));
    // What it was before: with the check off, the outlier moves the watermark.
    let mut config = Config::default();
    config.event_time.max_jump = crate::config::DurationText(std::time::Duration::ZERO);
    let (summary, _) = run(config, join(&lines));
    assert_eq!(summary.late_events, 100);
}

/// A genuine jump (traffic resuming after a quiet night) moves the watermark at its second
/// event, whatever the batch boundaries and thread counts, and the replay can name where the
/// stream jumped.
#[test]
fn a_jump_confirmed_by_a_second_event_moves_the_watermark() {
    let night = 9 * 3_600_000;
    let mut lines = bombing("aiko@acme.jp", T0);
    // The morning: two events after the gap, then one dated the evening before (late now).
    lines.push(push_line(
        "ken@acme.jp",
        T0 + night,
        "mfa_verify",
        "success",
        "m1",
    ));
    lines.push(push_line(
        "ken@acme.jp",
        T0 + night + 60_000,
        "mfa_verify",
        "success",
        "m2",
    ));
    lines.push(push_line(
        "ken@acme.jp",
        T0 + 10 * 60_000,
        "mfa_verify",
        "denied",
        "evening",
    ));
    lines.extend(bombing("ken@acme.jp", T0 + night + 2 * 60_000));
    for (workers, batch) in [(1, 4096), (2, 1), (3, 2), (4, 7)] {
        let mut config = Config::default();
        config.runtime.workers = workers;
        config.runtime.batch_lines = batch;
        let pipeline = Pipeline::new(config.clone(), RulePack::builtin().unwrap()).unwrap();
        let mut source = LineSource::from_readers(
            vec![("input.jsonl".into(), Box::new(Cursor::new(join(&lines))))],
            config.input.max_line_bytes,
            config.input.dead_letter_raw_bytes,
        );
        let sink = JsonLinesSink::create(None, None, None)
            .unwrap()
            .keep_alerts(100);
        let (summary, sink) = pipeline.run(&mut source, sink, Speed::Max).unwrap();
        assert_eq!(summary.late_events, 1, "workers={workers} batch={batch}");
        assert_eq!(
            sink.kept_alerts().0.len(),
            4,
            "workers={workers} batch={batch}"
        );
        assert_eq!(
            pipeline.largest_jump(),
            Some(WatermarkJump {
                file: "input.jsonl".into(),
                line: 19,
                from: T0 + 9 * 60_000,
                to: T0 + night + 60_000,
                late_events: 1,
            }),
            "workers={workers} batch={batch}"
        );
    }
}

#[test]
fn the_watermark_holds_one_jump_and_moves_on_the_second() {
    use crate::checkpoint::{Step, Watermark};
    let (late, jump) = (300_000, 3_600_000);
    let moved = |from, to_held, holds_current| Step::Moved {
        from,
        to_held,
        holds_current,
    };
    let mut wm = Watermark::default();
    // The first event waits for the second. An outlier first line (a day ahead) and the real
    // stream: it starts at the earlier, the outlier held (not taught to the profiles).
    assert_eq!(wm.observe(T0 + 86_400_000, late, jump), Step::Held);
    assert_eq!(wm.max_time, i64::MIN);
    assert_eq!(wm.observe(T0, late, jump), moved(i64::MIN, false, false));
    assert_eq!(
        (wm.max_time, wm.watermark, wm.held),
        (T0, T0 - late, Some(T0 + 86_400_000))
    );
    // An in-reach step forward drops the lone outlier: a later jump needs two events again.
    assert_eq!(wm.observe(T0 + 60_000, late, jump), moved(T0, false, false));
    assert_eq!(wm.held, None);
    // Beyond reach: held; a second one beyond moves it, to the earlier when they are far
    // apart (the later held in turn, here the current one).
    assert_eq!(wm.observe(T0 + 2 * jump, late, jump), Step::Held);
    assert_eq!(wm.max_time, T0 + 60_000);
    assert_eq!(
        wm.observe(T0 + 20 * jump, late, jump),
        moved(T0 + 60_000, true, true)
    );
    assert_eq!(
        (wm.max_time, wm.held),
        (T0 + 2 * jump, Some(T0 + 20 * jump))
    );
    // Held across a snapshot.
    let mut restored = Watermark::default();
    restored.restore(&wm.snapshot().unwrap()).unwrap();
    assert_eq!(restored, wm);
    restored.restore(b"5 4").unwrap();
    assert_eq!(restored.held, None, "a state written before `held` existed");
    // Traffic going on within reach: the outlier is forgotten.
    assert_eq!(
        wm.observe(T0 + 2 * jump + 60_000, late, jump),
        moved(T0 + 2 * jump, false, false)
    );
    assert_eq!(wm.held, None);
    // A quiet night: the first event after it is held, the second moves the stream to the
    // later of the two (they are within reach of each other).
    let morning = T0 + 10 * jump;
    assert_eq!(wm.observe(morning, late, jump), Step::Held);
    assert_eq!(
        wm.observe(morning + 30_000, late, jump),
        moved(T0 + 2 * jump + 60_000, false, false)
    );
    assert_eq!((wm.max_time, wm.held), (morning + 30_000, None));
    // Two unrelated outliers far apart confirm nothing between them while traffic goes on.
    assert_eq!(wm.observe(morning + 50 * jump, late, jump), Step::Held);
    wm.observe(morning + 60_000, late, jump);
    assert_eq!(wm.observe(morning + 90 * jump, late, jump), Step::Held);
    assert_eq!(wm.max_time, morning + 60_000);
}

/// Review finding 7: a paced replay whose sink failed left the detect stage counted busy (it
/// left the batch it was working on without saying so), which `/livez` reads as stuck.
#[test]
fn a_paced_run_that_loses_its_sink_leaves_no_stage_busy() {
    struct Broken;
    impl Sink for Broken {
        fn alert(&mut self, _: &authwatch_event::Alert) -> Result<(), SinkError> {
            Ok(())
        }
        fn dead_letter(&mut self, _: &DeadLetter) -> Result<(), SinkError> {
            Err(SinkError {
                output: "dead.jsonl".into(),
                source: std::io::Error::other("disk full"),
            })
        }
        fn late_event(&mut self, _: &LateEvent) -> Result<(), SinkError> {
            Ok(())
        }
        fn flush(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
    }
    let mut config = Config::default();
    // A rejected line and an event per batch: the detect stage hands the dead letter over
    // before it waits for the event's time, and that hand-over finds the sink gone.
    config.runtime.batch_lines = 2;
    config.runtime.workers = 1;
    let mut lines = Vec::new();
    for i in 0..40 {
        lines.push("not json".to_owned());
        lines.push(push_line(
            "aiko@acme.jp",
            T0 + i * 10_000,
            "mfa_verify",
            "success",
            &format!("e{i}"),
        ));
    }
    let pipeline = Pipeline::new(config, RulePack::builtin().unwrap()).unwrap();
    let mut source = LineSource::from_readers(
        vec![("x".into(), Box::new(Cursor::new(join(&lines))))],
        1 << 20,
        100,
    );
    let err = pipeline
        .run(&mut source, Broken, Speed::Factor(1000.0))
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "dead.jsonl: write failed: disk full");
    for stage in [Stage::Detect, Stage::Sink] {
        let busy = &pipeline.metrics().stages[stage.index()].busy;
        assert_eq!(
            busy.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "{stage:?}"
        );
    }
}
