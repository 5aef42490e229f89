//! The recent in-memory window of a running pipeline, as the `live_events` table.

use crate::convert::{event_schema, events_to_batch, string_views, with_string_views};
use authwatch_event::{Alert, AuthEvent};
use authwatch_pipeline::{CheckpointError, Checkpointed, DetectorFactory, StreamDetector};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Events staged before they become one Arrow batch of the window.
const STAGE_EVENTS: usize = 1024;

#[derive(Default)]
struct Inner {
    /// (newest event time of the batch, batch), oldest first.
    batches: VecDeque<(i64, RecordBatch)>,
    /// Rows in `batches`.
    rows: usize,
    /// Events not yet in a batch; readers convert them at query time, so the newest events are
    /// visible at once even on a quiet stream.
    staged: Vec<AuthEvent>,
    newest: i64,
}

/// The last `retention` of event time of the pipeline's events, bounded to `max_rows`, shared
/// between the detect stage (which appends: each task has a [`LiveWindowFeed`], a
/// [`StreamDetector`] that never alerts) and the SQL endpoint (which reads a consistent list of
/// batches per query). `Catalog::with_live_window` makes it the `live_events` table.
#[derive(Clone)]
pub struct LiveWindow {
    inner: Arc<Mutex<Inner>>,
    schema: SchemaRef,
    retention_ms: i64,
    max_rows: usize,
}

/// The writing end of a [`LiveWindow`] in one task of the pipeline.
pub struct LiveWindowFeed {
    window: LiveWindow,
}

impl LiveWindow {
    /// A window keeping `retention_ms` of event time and at most `max_rows` events.
    pub fn new(retention_ms: i64, max_rows: usize) -> Result<LiveWindow, crate::QueryError> {
        Ok(LiveWindow {
            inner: Arc::new(Mutex::new(Inner {
                newest: i64::MIN,
                ..Inner::default()
            })),
            schema: with_string_views(event_schema()?.as_ref()),
            retention_ms,
            max_rows: max_rows.max(1),
        })
    }

    /// A feed for one task (the pipeline makes them through [`DetectorFactory`]).
    pub fn feed(&self) -> LiveWindowFeed {
        LiveWindowFeed {
            window: self.clone(),
        }
    }

    /// The event schema of the window, with string views as every table of the catalog has
    /// them (batches are converted once, when they enter the window).
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The rows now in the window (cheap: batches are shared, not copied; only the few staged
    /// events are converted).
    pub fn batches(&self) -> Result<Vec<RecordBatch>, crate::QueryError> {
        let Ok(inner) = self.inner.lock() else {
            return Ok(Vec::new());
        };
        let mut out: Vec<RecordBatch> = inner.batches.iter().map(|(_, b)| b.clone()).collect();
        if !inner.staged.is_empty() {
            out.push(to_batch(&inner.staged)?);
        }
        Ok(out)
    }

    /// Events now in the window.
    pub fn rows(&self) -> usize {
        self.inner
            .lock()
            .map(|i| i.rows + i.staged.len())
            .unwrap_or(0)
    }

    fn add(&self, event: &AuthEvent) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.newest = inner.newest.max(event.time);
        inner.staged.push(event.clone());
        if inner.staged.len() < STAGE_EVENTS {
            return;
        }
        let staged = std::mem::take(&mut inner.staged);
        match to_batch(&staged) {
            Ok(batch) => {
                let newest = inner.newest;
                inner.rows += batch.num_rows();
                inner.batches.push_back((newest, batch));
            }
            Err(e) => tracing::error!(error = %e, "live window: events could not be converted"),
        }
        let horizon = inner.newest.saturating_sub(self.retention_ms);
        // Older batches leave by age, then by count.
        while let Some((t, n)) = inner.batches.front().map(|(t, b)| (*t, b.num_rows())) {
            if t >= horizon && inner.rows <= self.max_rows {
                break;
            }
            inner.rows -= n;
            inner.batches.pop_front();
        }
    }
}

/// Events as one batch of the window's schema.
fn to_batch(events: &[AuthEvent]) -> Result<RecordBatch, crate::QueryError> {
    string_views(&events_to_batch(events)?)
}

impl DetectorFactory for LiveWindow {
    fn create(&self) -> Vec<Box<dyn StreamDetector>> {
        vec![Box::new(self.feed())]
    }
}

impl StreamDetector for LiveWindowFeed {
    fn on_event(&mut self, event: &AuthEvent, _out: &mut Vec<Alert>) {
        self.window.add(event);
    }
    fn on_watermark(&mut self, _watermark: i64, _out: &mut Vec<Alert>) {}
    fn flush(&mut self, _out: &mut Vec<Alert>) {}
}

impl Checkpointed for LiveWindowFeed {
    fn name(&self) -> &str {
        "live_window"
    }
    fn snapshot(&self) -> Result<Vec<u8>, CheckpointError> {
        // The live window is a view for analysts, refilled from the stream after a restart.
        Ok(Vec::new())
    }
    fn restore(&mut self, _state: &[u8]) -> Result<(), CheckpointError> {
        Ok(())
    }
}
