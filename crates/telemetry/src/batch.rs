//! Batch durations and slow-batch traces.

use crate::names;
use authwatch_pipeline::{BatchObserver, BatchReport};
use opentelemetry::metrics::{Counter, Histogram, Meter};
use std::time::Duration;

/// Records each batch's duration; logs a batch slower than the threshold as a `slow_batch`
/// span with its numbers and where its time went.
#[derive(Clone)]
pub(crate) struct BatchRecorder {
    duration: Histogram<f64>,
    slow: Counter<u64>,
    threshold: Duration,
}

impl BatchRecorder {
    pub(crate) fn new(meter: &Meter, threshold: Duration, buckets: &[f64]) -> Self {
        let recorder = BatchRecorder {
            duration: meter
                .f64_histogram(names::BATCH_DURATION.otel)
                .with_unit("s")
                .with_description(
                    "A batch's wall time from the start of its read to its results written \
                     (queues included, pacing excluded).",
                )
                .with_boundaries(buckets.to_vec())
                .build(),
            slow: meter
                .u64_counter(names::SLOW_BATCHES.otel)
                .with_unit("{batch}")
                .with_description("Batches slower than telemetry.slow_batch (each one is logged).")
                .build(),
            threshold,
        };
        // Exported at 0 from the start, so `increase()` in an alert rule has a series to read
        // before the first slow batch (a counter appears only once something is added to it).
        recorder.slow.add(0, &[]);
        recorder
    }
}

fn ms(d: Duration) -> f64 {
    // Whole microseconds are plenty for a log line.
    (d.as_micros() as f64) / 1000.0
}

impl BatchObserver for BatchRecorder {
    fn batch_done(&self, r: &BatchReport) {
        let busy = r.busy_time();
        self.duration.record(busy.as_secs_f64(), &[]);
        if busy <= self.threshold {
            return;
        }
        self.slow.add(1, &[]);
        // What is not accounted for by a stage was spent waiting in a queue (backpressure or
        // reordering behind a slower batch).
        let queued = busy.saturating_sub(r.read + r.normalize + r.detect + r.sink);
        let span = tracing::warn_span!(
            "slow_batch",
            seq = r.seq,
            lines = r.lines,
            events = r.events,
            dead_letters = r.dead_letters,
            late_events = r.late_events,
            alerts = r.alerts,
        );
        let _entered = span.enter();
        tracing::warn!(
            target: "authwatch::slow_batch",
            total_ms = ms(busy),
            threshold_ms = ms(self.threshold),
            read_ms = ms(r.read),
            normalize_ms = ms(r.normalize),
            detect_ms = ms(r.detect),
            sink_ms = ms(r.sink),
            queued_ms = ms(queued),
            paced_ms = ms(r.paced),
            "slow batch: {} lines took {:.1} ms from read to results written",
            r.lines,
            ms(busy),
        );
    }
}
