//! Integration and end-to-end tests of the `authwatch` binary. One test binary, one module per
//! area.

// Test helpers outside `#[test]` functions: a failed spawn or read is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod cli;
mod common;
mod explain;
mod kafka;
mod pipes;
mod replay;
mod replay_respond;
mod respond;
mod runtime;
mod sql;
mod telemetry;
mod tooling;

// The deployment (Helm chart, dashboard, Dockerfile); apart, so that modules added in order above
// merge without touching it.
mod helm;
