//! Helpers: run the built binary, read JSON lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `authwatch` binary under test: this build's, or `AUTHWATCH_TEST_BIN` (to check that a
/// regression test fails on another build, such as the previous commit's).
pub fn authwatch() -> Command {
    let bin = std::env::var_os("AUTHWATCH_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_authwatch")));
    let mut cmd = Command::new(bin);
    // Tests must not depend on the caller's environment overrides.
    for (k, _) in std::env::vars() {
        if k.starts_with("AUTHWATCH__") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs and returns the output, asserting the exit status.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn authwatch");
    assert!(
        out.status.success(),
        "authwatch failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs and returns the output, asserting failure.
pub fn run_fail(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn authwatch");
    assert!(
        !out.status.success(),
        "authwatch unexpectedly succeeded:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Reads a JSON-lines file into values.
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Generates a stream with `seed` into `dir`; returns (events, labels).
pub fn generate(dir: &Path, users: u32, days: u32, seed: u64) -> (PathBuf, PathBuf) {
    let events = dir.join(format!("gen-{seed}.jsonl"));
    let labels = dir.join(format!("labels-{seed}.jsonl"));
    run_ok(
        authwatch()
            .args([
                "gen",
                "--users",
                &users.to_string(),
                "--days",
                &days.to_string(),
                "--seed",
                &seed.to_string(),
                "--out",
            ])
            .arg(&events)
            .arg("--labels")
            .arg(&labels),
    );
    (events, labels)
}

/// `authwatch` run in `dir`, without the caller's `AUTHWATCH*` or `RUST_LOG` settings (so its
/// messages are the default level's).
pub fn authwatch_in(dir: &Path) -> Command {
    let mut cmd = authwatch();
    for (k, _) in std::env::vars() {
        if k.starts_with("AUTHWATCH") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_BACKTRACE", "1").current_dir(dir);
    cmd
}

/// The `gen` command line of [`recording`]'s stream, without its outputs: the same stream again
/// is this with other `--out`/`--labels`.
pub const RECORDING_GEN: [&str; 5] = ["gen", "--users", "20", "--days", "1"];

/// A small recording in `dir`: `events.jsonl` (20 users, one day), its `labels.jsonl`, and the
/// `alerts.jsonl` a replay of it raises.
pub fn recording(dir: &Path) {
    run_ok(authwatch_in(dir).args(RECORDING_GEN).args([
        "--out",
        "events.jsonl",
        "--labels",
        "labels.jsonl",
    ]));
    run_ok(authwatch_in(dir).args(["replay", "-q", "events.jsonl", "--alerts", "alerts.jsonl"]));
}

/// Bytes as text, invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
