//! The recent in-memory window of a running pipeline, as the `live_events` table.

use crate::convert::{event_schema, events_to_batch};
use authwatch_event::{Alert, AuthEvent};
use authwatch_pipeline::{DetectorStateError, StreamDetector};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

/// Events staged before they become one Arrow batch of the window.
const STAGE_EVENTS: usize = 1024;

#[derive(Default)]
struct Inner {
    /// (newest event time of the batch, batch), oldest first.
    batches: VecDeque<(i64, RecordBatch)>,
    rows: usize,
}

/// The last `retention` of event time of the pipeline's events, bounded to `max_rows`, shared
/// between the detect stage (which appends, as a [`StreamDetector`] that never alerts) and the
/// SQL endpoint (which reads a consistent list of batches per query).
///
/// The Kafka runtime registers the same object: `Catalog::with_live_window` makes it the
/// `live_events` table.
#[derive(Clone)]
pub struct LiveWindow {
    inner: Arc<RwLock<Inner>>,
    schema: SchemaRef,
    retention_ms: i64,
    max_rows: usize,
}

/// The writing end of a [`LiveWindow`], registered on the pipeline.
pub struct LiveWindowFeed {
    window: LiveWindow,
    staged: Vec<AuthEvent>,
    newest: i64,
}

impl LiveWindow {
    /// A window keeping `retention_ms` of event time and at most `max_rows` events.
    pub fn new(retention_ms: i64, max_rows: usize) -> Result<LiveWindow, crate::QueryError> {
        Ok(LiveWindow {
            inner: Arc::new(RwLock::new(Inner::default())),
            schema: event_schema()?,
            retention_ms,
            max_rows: max_rows.max(1),
        })
    }

    /// The feed to register on the pipeline with `Pipeline::with_stream_detector`.
    pub fn feed(&self) -> LiveWindowFeed {
        LiveWindowFeed {
            window: self.clone(),
            staged: Vec::new(),
            newest: i64::MIN,
        }
    }

    /// The event schema of the window.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The batches now in the window (cheap: batches are shared, not copied).
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.inner
            .read()
            .map(|i| i.batches.iter().map(|(_, b)| b.clone()).collect())
            .unwrap_or_default()
    }

    /// Events now in the window.
    pub fn rows(&self) -> usize {
        self.inner.read().map(|i| i.rows).unwrap_or(0)
    }

    fn push(&self, batch: RecordBatch, newest: i64) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        inner.rows += batch.num_rows();
        inner.batches.push_back((newest, batch));
        let horizon = newest.saturating_sub(self.retention_ms);
        // The newest batch always stays; older ones leave by age, then by count.
        while inner.batches.len() > 1 {
            let Some((t, n)) = inner.batches.front().map(|(t, b)| (*t, b.num_rows())) else {
                break;
            };
            if t >= horizon && inner.rows <= self.max_rows {
                break;
            }
            inner.rows -= n;
            inner.batches.pop_front();
        }
    }
}

impl LiveWindowFeed {
    fn publish(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        match events_to_batch(&self.staged) {
            Ok(b) => self.window.push(b, self.newest),
            Err(e) => tracing::error!(error = %e, "live window: events could not be converted"),
        }
        self.staged.clear();
    }
}

impl StreamDetector for LiveWindowFeed {
    fn name(&self) -> &str {
        "live_window"
    }
    fn on_event(&mut self, event: &AuthEvent, _out: &mut Vec<Alert>) {
        self.newest = self.newest.max(event.time);
        self.staged.push(event.clone());
        if self.staged.len() >= STAGE_EVENTS {
            self.publish();
        }
    }
    fn on_watermark(&mut self, _watermark: i64, _out: &mut Vec<Alert>) {}
    fn flush(&mut self, _out: &mut Vec<Alert>) {
        self.publish();
    }
    fn snapshot(&self) -> Result<Vec<u8>, DetectorStateError> {
        // The live window is a view for analysts, rebuilt from the stream after a restart.
        Ok(Vec::new())
    }
    fn restore(&mut self, _state: &[u8]) -> Result<(), DetectorStateError> {
        Ok(())
    }
}
