//! The recent in-memory window of a running pipeline, as the `live_events` table.

use crate::convert::{event_schema, events_to_batch, string_views, with_string_views};
use authwatch_event::{Alert, AuthEvent};
use authwatch_pipeline::{CheckpointError, Checkpointed, DetectorFactory, StreamDetector};
use datafusion::arrow::array::Int64Array;
use datafusion::arrow::compute::kernels::cmp::gt_eq;
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Events staged before they become one Arrow batch of the window.
const STAGE_EVENTS: usize = 1024;

/// One batch of the window with the span of its own events' times: which batches are wholly
/// out of the window, wholly in it or across its start is known without reading them.
#[derive(Clone)]
struct Stored {
    oldest: i64,
    newest: i64,
    batch: RecordBatch,
}

#[derive(Default)]
struct Inner {
    /// Batches in the order their events arrived (tasks feed the window in parallel, so
    /// arrival order is not time order).
    batches: VecDeque<Stored>,
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
///
/// What a reader sees is exact: the rows whose time is within `retention` of the newest event
/// time seen, at most `max_rows` of them (the latest to arrive). What is held is a little more:
/// whole batches leave once all their rows are older than that, and up to [`STAGE_EVENTS`]
/// events wait to become a batch.
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

    /// The rows now in the window: those within `retention` of the newest event time, at most
    /// `max_rows` of them (cheap: batches are shared, not copied; only the few staged events
    /// are converted, and only batches across the window's start are filtered).
    pub fn batches(&self) -> Result<Vec<RecordBatch>, crate::QueryError> {
        // Taken under the lock (batches are shared, not copied); filtered after it, so that the
        // pipeline's tasks are not kept waiting by a reader.
        let (stored, horizon) = {
            let Ok(inner) = self.inner.lock() else {
                return Ok(Vec::new());
            };
            let horizon = inner.newest.saturating_sub(self.retention_ms);
            let mut stored: Vec<Stored> = inner.batches.iter().cloned().collect();
            let staged: Vec<AuthEvent> = inner
                .staged
                .iter()
                .filter(|e| e.time >= horizon)
                .cloned()
                .collect();
            if !staged.is_empty() {
                stored.push(Stored {
                    // Already filtered: every staged event left is at or after the horizon.
                    oldest: horizon,
                    newest: inner.newest,
                    batch: to_batch(&staged)?,
                });
            }
            (stored, horizon)
        };
        let mut out = Vec::with_capacity(stored.len());
        for s in stored {
            if s.newest < horizon {
                continue;
            }
            let batch = if s.oldest >= horizon {
                s.batch
            } else {
                since(&s.batch, horizon)?
            };
            if batch.num_rows() > 0 {
                out.push(batch);
            }
        }
        Ok(latest_rows(out, self.max_rows))
    }

    /// Events now held (at most `max_rows`; some may be older than the window until their
    /// batch leaves it).
    pub fn rows(&self) -> usize {
        self.inner
            .lock()
            .map(|i| (i.rows + i.staged.len()).min(self.max_rows))
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
        // The batch's own span: tagging it with the newest time of the whole window would keep
        // its old rows as long as anything new arrives.
        let oldest = staged.iter().map(|e| e.time).min().unwrap_or(i64::MIN);
        let newest = staged.iter().map(|e| e.time).max().unwrap_or(i64::MIN);
        match to_batch(&staged) {
            Ok(batch) => {
                inner.rows += batch.num_rows();
                inner.batches.push_back(Stored {
                    oldest,
                    newest,
                    batch,
                });
            }
            Err(e) => tracing::error!(error = %e, "live window: events could not be converted"),
        }
        // Batches leave by age: any whose rows are all out of the window (not only the oldest
        // to arrive: tasks feed the window in parallel, each at its own pace).
        let horizon = inner.newest.saturating_sub(self.retention_ms);
        if inner.batches.iter().any(|s| s.newest < horizon) {
            inner.batches.retain(|s| s.newest >= horizon);
            inner.rows = inner.batches.iter().map(|s| s.batch.num_rows()).sum();
        }
        // Then by count, the earliest to arrive first, row by row: a cap below a batch's size
        // must not empty the window.
        while inner.rows > self.max_rows {
            let excess = inner.rows - self.max_rows;
            let Some(front) = inner.batches.front_mut() else {
                break;
            };
            let n = front.batch.num_rows();
            if n <= excess {
                inner.rows -= n;
                inner.batches.pop_front();
            } else {
                front.batch = front.batch.slice(excess, n - excess);
                inner.rows -= excess;
            }
        }
    }
}

/// The rows of `batch` whose event time is `horizon` or later.
fn since(batch: &RecordBatch, horizon: i64) -> Result<RecordBatch, crate::QueryError> {
    let conv = |e: datafusion::arrow::error::ArrowError| crate::QueryError::Convert(e.to_string());
    let time = batch
        .column_by_name("time")
        .ok_or_else(|| crate::QueryError::Convert("live window: no time column".into()))?;
    let time = cast(time, &DataType::Int64).map_err(conv)?;
    let keep = gt_eq(&time, &Int64Array::new_scalar(horizon)).map_err(conv)?;
    filter_record_batch(batch, &keep).map_err(conv)
}

/// The last `max_rows` rows of `batches` (in order), the earlier ones cut.
fn latest_rows(batches: Vec<RecordBatch>, max_rows: usize) -> Vec<RecordBatch> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut skip = total.saturating_sub(max_rows);
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let n = b.num_rows();
        if skip >= n {
            skip -= n;
            continue;
        }
        out.push(if skip > 0 { b.slice(skip, n - skip) } else { b });
        skip = 0;
    }
    out
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;

    const T0: i64 = 1_767_603_600_000; // 2026-01-05T09:00:00Z
    const HOUR: i64 = 3_600_000;

    fn event(t: i64, i: usize) -> AuthEvent {
        serde_json::from_str(&format!(
            r#"{{"time":{t},"provider":"okta","tenant":"acme","event_id":"e{i}","user":{{"name":"u{i}"}},"activity":"logon","outcome":"success"}}"#
        ))
        .unwrap()
    }

    /// (time, event id) of every row a reader sees, in order.
    fn rows(w: &LiveWindow) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        for b in w.batches().unwrap() {
            let time = cast(b.column_by_name("time").unwrap(), &DataType::Int64).unwrap();
            let time = time.as_primitive::<Int64Type>();
            let id = cast(b.column_by_name("event_id").unwrap(), &DataType::Utf8).unwrap();
            let id = id.as_string::<i32>();
            for i in 0..b.num_rows() {
                out.push((time.value(i), id.value(i).to_owned()));
            }
        }
        out
    }

    /// Regression (review): a batch was tagged with the window's newest time when it closed,
    /// not its own events' times, and staged events were never filtered: a batch of 1,024
    /// events spread over 3 hours stayed whole in a 1 hour window.
    #[test]
    fn only_rows_within_the_retention_of_the_newest_are_seen() {
        let w = LiveWindow::new(HOUR, 1_000_000).unwrap();
        let mut feed = w.feed();
        let mut out = Vec::new();
        let mut times = Vec::new();
        for i in 0..1024 {
            let t = T0 + (i as i64) * 3 * HOUR / 1024;
            times.push(t);
            feed.on_event(&event(t, i), &mut out);
        }
        for i in 0..10 {
            let t = T0 + 3 * HOUR + i as i64;
            times.push(t);
            feed.on_event(&event(t, 1024 + i), &mut out);
        }
        let newest = T0 + 3 * HOUR + 9;
        let seen = rows(&w);
        let expected = times.iter().filter(|&&t| t >= newest - HOUR).count();
        assert!(
            seen.iter().all(|(t, _)| *t >= newest - HOUR),
            "rows older than an hour before the newest: {:?}",
            seen.iter().filter(|(t, _)| *t < newest - HOUR).count()
        );
        assert_eq!(seen.len(), expected);
        // The staged events too, once the batch has left: a new batch of much later events.
        let mut later = Vec::new();
        for i in 0..1024 {
            let t = T0 + 10 * HOUR + i as i64;
            later.push(t);
            feed.on_event(&event(t, 2000 + i), &mut out);
        }
        let seen = rows(&w);
        assert!(seen.iter().all(|(t, _)| *t >= T0 + 9 * HOUR), "{seen:?}");
        assert_eq!(seen.len(), 1024);
    }

    /// Regression (review): the row cap dropped whole batches of 1,024 events, so a cap of 500
    /// left none of them (only the events not yet in a batch).
    #[test]
    fn the_row_cap_keeps_the_latest_rows() {
        let w = LiveWindow::new(HOUR, 500).unwrap();
        let mut feed = w.feed();
        let mut out = Vec::new();
        for i in 0..2000 {
            feed.on_event(&event(T0 + i as i64, i), &mut out);
        }
        let seen = rows(&w);
        assert_eq!(seen.len(), 500);
        let ids: Vec<String> = (1500..2000).map(|i| format!("e{i}")).collect();
        let seen_ids: Vec<String> = seen.into_iter().map(|(_, id)| id).collect();
        assert_eq!(seen_ids, ids);
        assert_eq!(w.rows(), 500);
        // And with every event in batches.
        for i in 2000..2048 {
            feed.on_event(&event(T0 + i as i64, i), &mut out);
        }
        let seen = rows(&w);
        assert_eq!(seen.len(), 500);
        assert_eq!(seen[0].1, "e1548");
    }
}
