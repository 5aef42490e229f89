//! Normalize throughput against the `serde_json::Value` baseline, robust to a busy machine:
//! both run interleaved, many rounds, and the best round of each counts.
//!
//! `cargo test --release -p authwatch-normalize --test throughput -- --ignored --nocapture`

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use authwatch_normalize::{Format, Limits};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn lines(name: &str) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/providers")
        .join(format!("{name}.jsonl"));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn best(rounds: usize, mut f: impl FnMut()) -> Duration {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

#[test]
#[ignore = "measurement; run in release"]
fn normalize_vs_value_baseline() {
    let limits = Limits::default();
    const REPEAT: usize = 200;
    println!("format     B/line  normalize/s    auto/s   Value/s  ratio");
    // `THROUGHPUT_ONLY=entra` measures one format (for profiling).
    let only = std::env::var("THROUGHPUT_ONLY").ok();
    for format in &Format::CONCRETE[1..] {
        if only.as_deref().is_some_and(|o| o != format.as_str()) {
            continue;
        }
        let input = lines(format.as_str());
        let n = (input.len() * REPEAT) as f64;
        let bytes = input.iter().map(String::len).sum::<usize>() / input.len();
        let norm = format.normalizer();
        let auto = Format::Auto.normalizer();
        let (mut tn, mut ta, mut tv) = (Duration::MAX, Duration::MAX, Duration::MAX);
        for _ in 0..15 {
            tn = tn.min(best(1, || {
                for _ in 0..REPEAT {
                    for l in &input {
                        let _ = black_box(norm.normalize(black_box(l.as_bytes()), 0, &limits));
                    }
                }
            }));
            ta = ta.min(best(1, || {
                for _ in 0..REPEAT {
                    for l in &input {
                        let _ = black_box(auto.normalize(black_box(l.as_bytes()), 0, &limits));
                    }
                }
            }));
            tv = tv.min(best(1, || {
                for _ in 0..REPEAT {
                    for l in &input {
                        let _ = black_box(serde_json::from_str::<serde_json::Value>(black_box(l)));
                    }
                }
            }));
        }
        let rate = |d: Duration| n / d.as_secs_f64() / 1000.0;
        println!(
            "{:<9} {:>6} {:>10.0}k {:>8.0}k {:>8.0}k {:>6.2}x",
            format.as_str(),
            bytes,
            rate(tn),
            rate(ta),
            rate(tv),
            tv.as_secs_f64() / tn.as_secs_f64()
        );
    }
}
