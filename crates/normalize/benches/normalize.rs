//! Normalize throughput per format against the `serde_json::Value` baseline over the same lines
//! (DESIGN §8: parse only what is needed, into borrowed structs).
//!
//! `cargo bench -p authwatch-normalize --bench normalize`

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use authwatch_normalize::{Format, Limits};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::PathBuf;

fn lines(name: &str) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/providers")
        .join(format!("{name}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines().map(str::to_owned).collect()
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    for format in [
        Format::Okta,
        Format::Entra,
        Format::Duo,
        Format::Auth0,
        Format::Keycloak,
        Format::Google,
        Format::Ocsf,
        Format::Ecs,
    ] {
        let input = lines(format.as_str());
        if input.is_empty() {
            continue;
        }
        let bytes: usize = input.iter().map(String::len).sum();
        let mut group = c.benchmark_group(format.as_str());
        group.throughput(Throughput::Elements(input.len() as u64));
        group.sample_size(20);
        group.measurement_time(std::time::Duration::from_secs(2));
        group.warm_up_time(std::time::Duration::from_millis(500));
        let norm = format.normalizer();
        group.bench_function(format!("normalize ({} B/line)", bytes / input.len()), |b| {
            b.iter(|| {
                for l in &input {
                    let _ = black_box(norm.normalize(black_box(l.as_bytes()), 0, &limits));
                }
            })
        });
        let auto = Format::Auto.normalizer();
        group.bench_function("auto", |b| {
            b.iter(|| {
                for l in &input {
                    let _ = black_box(auto.normalize(black_box(l.as_bytes()), 0, &limits));
                }
            })
        });
        group.bench_function("serde_json::Value baseline", |b| {
            b.iter(|| {
                for l in &input {
                    let _ = black_box(serde_json::from_str::<serde_json::Value>(black_box(l)));
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
