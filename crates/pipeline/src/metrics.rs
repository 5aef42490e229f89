//! Pipeline counters, shared between the stages and whoever reports progress.
//!
//! Plain atomics: every stage bumps its own counters once per batch, so contention is nil; the
//! OpenTelemetry exporter (Kafka runtime) reads the same struct.

use authwatch_normalize::RejectKind;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one pipeline run.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Lines read by the source.
    pub lines_read: AtomicU64,
    /// Bytes read by the source (decompressed).
    pub bytes_read: AtomicU64,
    /// Lines that became events.
    pub events: AtomicU64,
    /// Rejected lines, by [`RejectKind`] index.
    pub dead_letters: [AtomicU64; 10],
    /// Events older than the watermark.
    pub late_events: AtomicU64,
    /// Alerts produced.
    pub alerts: AtomicU64,
    /// The current watermark (ms; `i64::MIN` before the first event).
    pub watermark: std::sync::atomic::AtomicI64,
}

const _: () = assert!(RejectKind::ALL.len() == 10, "resize Metrics::dead_letters");

impl Metrics {
    /// Fresh counters.
    pub fn new() -> Self {
        let m = Metrics::default();
        m.watermark.store(i64::MIN, Ordering::Relaxed);
        m
    }

    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Total rejected lines.
    pub fn dead_letter_total(&self) -> u64 {
        self.dead_letters.iter().map(Metrics::get).sum()
    }

    /// Rejected lines per reason, non-zero only.
    pub fn dead_letters_by_reason(&self) -> Vec<(RejectKind, u64)> {
        RejectKind::ALL
            .iter()
            .map(|k| (*k, Metrics::get(&self.dead_letters[k.index()])))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}
