//! Normalize throughput per format against the `serde_json::Value` baseline over the same lines
//! (parse only what is needed, into borrowed structs), and for the native format the
//! parsers that could read an `AuthEvent`, side by side.
//!
//! `cargo bench -p authwatch-normalize --bench normalize` (`-- native` for the native group)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use authwatch_event::AuthEvent;
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

/// Native lines as `authwatch gen` writes them (what the Kafka benchmark reads).
fn native_lines() -> Vec<String> {
    let cfg = authwatch_gen::GenConfig {
        users: 2_000,
        days: 3,
        seed: 1,
        max_events: Some(20_000),
        ..authwatch_gen::GenConfig::default()
    };
    let mut lines = Vec::new();
    authwatch_gen::generate(&cfg, &mut |ev: &AuthEvent| {
        lines.push(serde_json::to_string(ev).unwrap());
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap();
    lines
}

/// The native format reads a whole `AuthEvent`, so nothing is skipped and the SIMD skipping that
/// makes sonic-rs the better parser for provider lines does not pay. This group keeps the
/// measurement behind serde_json staying the native parser (docs/KAFKA.md, "Where the CPU
/// goes"): the typed parse with each crate, and sonic-rs's document alone (before any field is
/// copied out of it).
fn native(c: &mut Criterion) {
    let input = native_lines();
    let bytes: usize = input.iter().map(String::len).sum();
    let limits = Limits::default();
    let norm = Format::Native.normalizer();
    let mut group = c.benchmark_group("native");
    group.throughput(Throughput::Elements(input.len() as u64));
    group.sample_size(20);
    group.measurement_time(std::time::Duration::from_secs(3));
    group.warm_up_time(std::time::Duration::from_millis(500));
    group.bench_function(format!("normalize ({} B/line)", bytes / input.len()), |b| {
        b.iter(|| {
            for l in &input {
                let _ = black_box(norm.normalize(black_box(l.as_bytes()), 0, &limits));
            }
        })
    });
    group.bench_function("serde_json typed", |b| {
        b.iter(|| {
            for l in &input {
                let _ = black_box(serde_json::from_str::<AuthEvent>(black_box(l)));
            }
        })
    });
    group.bench_function("sonic-rs typed", |b| {
        b.iter(|| {
            for l in &input {
                let _ = black_box(sonic_rs::from_str::<AuthEvent>(black_box(l)));
            }
        })
    });
    group.bench_function("sonic-rs document only", |b| {
        b.iter(|| {
            for l in &input {
                let _ = black_box(sonic_rs::from_str::<sonic_rs::Value>(black_box(l)));
            }
        })
    });
    group.bench_function("serde_json tokens only (IgnoredAny)", |b| {
        b.iter(|| {
            for l in &input {
                let _ = black_box(serde_json::from_str::<serde::de::IgnoredAny>(black_box(l)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench, native);
criterion_main!(benches);
