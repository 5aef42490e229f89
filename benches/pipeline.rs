//! Criterion benchmarks of the hot path, on generated traffic:
//! `cargo bench -p authwatch-cli --bench pipeline`.
//!
//! - `parse/serde_json_value`: the naive baseline, a `serde_json::Value` tree per line;
//! - `parse/native`: authwatch's native normalizer (typed parse + validation);
//! - `rules/builtin`: the rule engine alone over already-parsed events;
//! - `pipeline/replay`: the whole pipeline (threads, ordering, watermark, rules) over a buffer.

// A benchmark over generated data has no input to fail on: a failure is a bug to see at once.
#![allow(clippy::expect_used)]

use authwatch_detect::{EngineLimits, RulePack};
use authwatch_event::AuthEvent;
use authwatch_gen::{GenConfig, generate};
use authwatch_normalize::{Format, Limits};
use authwatch_pipeline::{Config, JsonLinesSink, LineSource, Pipeline, Speed};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn events(n: u64) -> (Vec<AuthEvent>, Vec<String>) {
    let cfg = GenConfig {
        users: 500,
        days: 7,
        max_events: Some(n),
        ..GenConfig::default()
    };
    let mut events = Vec::new();
    generate(&cfg, &mut |e| {
        events.push(e.clone());
        Ok::<(), std::convert::Infallible>(())
    })
    .expect("generation");
    let lines = events
        .iter()
        .map(|e| serde_json::to_string(e).expect("serialize"))
        .collect();
    (events, lines)
}

fn bench(c: &mut Criterion) {
    let (events, lines) = events(20_000);
    let n = lines.len() as u64;

    let mut parse = c.benchmark_group("parse");
    parse.throughput(Throughput::Elements(n));
    parse.bench_function("serde_json_value", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(serde_json::from_str::<serde_json::Value>(l).expect("json"));
            }
        })
    });
    let native = Format::Native.normalizer();
    let limits = Limits::default();
    parse.bench_function("native", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(native.normalize(l.as_bytes(), 0, &limits).expect("valid"));
            }
        })
    });
    parse.finish();

    let pack = RulePack::builtin().expect("built-in rules");
    let mut rules = c.benchmark_group("rules");
    rules.throughput(Throughput::Elements(n));
    rules.bench_function("builtin", |b| {
        b.iter_batched(
            || pack.engine(EngineLimits::default()),
            |mut engine| {
                let mut out = Vec::new();
                for e in &events {
                    engine.on_event(e, &mut out);
                    engine.on_watermark(e.time - 300_000, &mut out);
                }
                out
            },
            BatchSize::LargeInput,
        )
    });
    rules.finish();

    let data: Vec<u8> = lines.join("\n").into_bytes();
    let mut pipeline = c.benchmark_group("pipeline");
    pipeline.throughput(Throughput::Elements(n));
    pipeline.sample_size(20);
    pipeline.bench_function("replay", |b| {
        b.iter(|| {
            let config = Config::default();
            let p = Pipeline::new(config, pack.clone()).expect("pipeline");
            let mut source = LineSource::from_readers(
                vec![("bench".into(), Box::new(std::io::Cursor::new(data.clone())))],
                1 << 20,
                4096,
            );
            let sink = JsonLinesSink::create(None, None, None).expect("sink");
            p.run(&mut source, sink, Speed::Max).expect("run").0
        })
    });
    pipeline.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
