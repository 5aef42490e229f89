//! The Parquet archive: enriched events and alerts, partitioned by date and hour.
//!
//! ```text
//! <location>/events/dt=2026-01-05/hour=09/part-<run>-<seq>.parquet (run: start ms, pid, random)
//! <location>/alerts/dt=2026-01-05/hour=09/part-<run>-<seq>.parquet
//! ```
//!
//! Events are partitioned by event time, alerts by window start (UTC). Rows are buffered per
//! partition (bounded: `max_buffered_rows` in all) and written one file at a time: sorted by
//! time, with page- and row-group statistics so that time-range queries skip what they do not
//! need. Each file is written whole in memory and stored with one `put`, which every object
//! store makes atomic (the local file system writes a staging file and renames it): after a
//! crash a file is complete or absent, never torn. Under `authwatch run` every checkpoint first
//! writes what is buffered, so committed input positions never run ahead of the archive (at
//! least once: rows after the last checkpoint are reprocessed after a crash).

use crate::QueryError;
use crate::convert::{alerts_to_batch, events_to_batch, string_views};
use authwatch_event::{Alert, AuthEvent};
use authwatch_pipeline::{Checkpoint, DeadLetter, LateEvent, Sink, SinkError};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the archive writes.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveOptions {
    /// A local directory, or an object store URL: `s3://bucket/prefix` (S3 and compatible:
    /// credentials and endpoint from the standard `AWS_*` environment variables),
    /// `gs://bucket/prefix` (`GOOGLE_*`), `az://container/prefix` (`AZURE_*`).
    pub location: String,
    /// Rows per file (a partition's buffer is written when it reaches this).
    pub file_rows: usize,
    /// Rows buffered over all partitions at most; beyond, the largest partition is written.
    pub max_buffered_rows: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// A partition's rows wait at most this long (wall time) before they are written.
    pub max_buffer_age: Duration,
}

impl ArchiveOptions {
    /// Defaults for a location.
    pub fn new(location: impl Into<String>) -> Self {
        ArchiveOptions {
            location: location.into(),
            file_rows: 1_000_000,
            max_buffered_rows: 2_000_000,
            row_group_rows: 131_072,
            max_buffer_age: Duration::from_secs(300),
        }
    }
}

/// What the archive wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiveStats {
    /// Event rows written.
    pub events: u64,
    /// Alert rows written.
    pub alerts: u64,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
}

fn archive_err(location: &str, message: impl std::fmt::Display) -> QueryError {
    QueryError::Archive {
        location: location.to_owned(),
        message: message.to_string(),
    }
}

/// The local directory a location names (a plain path or a `file://` URL), or `None` for an
/// object store URL.
pub fn local_dir(location: &str) -> Option<&str> {
    match location.split_once("://") {
        None => Some(location),
        Some(("file", _)) => location.strip_prefix("file://"),
        Some(_) => None,
    }
}

/// Opens the store of a location: `(store, path prefix inside it, URL the catalog registers it
/// under)`. A plain path is a local directory (created if missing).
pub fn open_store(
    location: &str,
) -> Result<(Arc<dyn ObjectStore>, ObjectPath, url::Url), QueryError> {
    let bad = |m: String| archive_err(location, m);
    let Some(dir) = local_dir(location) else {
        let url = url::Url::parse(location).map_err(|e| bad(format!("bad URL: {e}")))?;
        let scheme = url.scheme();
        let bucket = url
            .host_str()
            .ok_or_else(|| bad("the URL names no bucket".into()))?
            .to_owned();
        let store: Arc<dyn ObjectStore> = match scheme {
            "s3" | "s3a" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&bucket)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            "az" | "azure" | "abfs" | "abfss" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(&bucket)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            other => {
                return Err(bad(format!(
                    "unsupported scheme {other}://; use a directory, s3://, gs:// or az://"
                )));
            }
        };
        let prefix = ObjectPath::from(url.path().trim_matches('/'));
        let mut root = url.clone();
        root.set_path("/");
        return Ok((store, prefix, root));
    };
    std::fs::create_dir_all(dir).map_err(|e| bad(format!("cannot create the directory: {e}")))?;
    let dir = std::fs::canonicalize(dir).map_err(|e| bad(e.to_string()))?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| bad(e.to_string()))?;
    let url = url::Url::from_directory_path(&dir)
        .map_err(|()| bad("not an absolute directory".into()))?;
    Ok((Arc::new(store), ObjectPath::from(""), url))
}

/// A partition: date text and hour.
type Part = (String, u32);

fn partition_of(ms: i64) -> Part {
    let secs = ms.div_euclid(1000);
    match chrono::DateTime::from_timestamp(secs, 0) {
        Some(t) => (t.format("%Y-%m-%d").to_string(), chrono::Timelike::hour(&t)),
        None => ("1970-01-01".to_owned(), 0),
    }
}

struct Buffer<T> {
    rows: Vec<T>,
    since: Instant,
}

/// Writes events and alerts to the archive.
pub struct ArchiveWriter {
    runtime: tokio::runtime::Runtime,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    options: ArchiveOptions,
    events: BTreeMap<Part, Buffer<AuthEvent>>,
    alerts: BTreeMap<Part, Buffer<Alert>>,
    buffered: usize,
    run: String,
    seq: u64,
    stats: ArchiveStats,
}

impl ArchiveWriter {
    /// Opens the archive (creating a local directory if needed).
    pub fn open(options: ArchiveOptions) -> Result<ArchiveWriter, QueryError> {
        let (store, prefix, _) = open_store(&options.location)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| archive_err(&options.location, e))?;
        // File names carry the run (`run_name`) so that two runs, or two instances, never
        // write the same name.
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Ok(ArchiveWriter {
            runtime,
            store,
            prefix,
            options,
            events: BTreeMap::new(),
            alerts: BTreeMap::new(),
            buffered: 0,
            run: run_name(started),
            seq: 0,
            stats: ArchiveStats::default(),
        })
    }

    /// What was written so far.
    pub fn stats(&self) -> &ArchiveStats {
        &self.stats
    }

    /// Buffers one event; writes files when a buffer is full.
    pub fn add_event(&mut self, event: &AuthEvent) -> Result<(), QueryError> {
        let part = partition_of(event.time);
        let buf = self.events.entry(part.clone()).or_insert_with(|| Buffer {
            rows: Vec::new(),
            since: Instant::now(),
        });
        buf.rows.push(event.clone());
        self.buffered += 1;
        if buf.rows.len() >= self.options.file_rows {
            self.write_events(&part)?;
        }
        self.bound()
    }

    /// Buffers one alert.
    pub fn add_alert(&mut self, alert: &Alert) -> Result<(), QueryError> {
        let part = partition_of(alert.window.start.millis());
        let buf = self.alerts.entry(part.clone()).or_insert_with(|| Buffer {
            rows: Vec::new(),
            since: Instant::now(),
        });
        buf.rows.push(alert.clone());
        self.buffered += 1;
        if buf.rows.len() >= self.options.file_rows {
            self.write_alerts(&part)?;
        }
        self.bound()
    }

    /// Writes the largest partitions until the buffers are within bounds.
    fn bound(&mut self) -> Result<(), QueryError> {
        while self.buffered > self.options.max_buffered_rows {
            let largest_events = self
                .events
                .iter()
                .max_by_key(|(_, b)| b.rows.len())
                .map(|(p, b)| (p.clone(), b.rows.len()));
            let largest_alerts = self
                .alerts
                .iter()
                .max_by_key(|(_, b)| b.rows.len())
                .map(|(p, b)| (p.clone(), b.rows.len()));
            match (largest_events, largest_alerts) {
                (Some((p, n)), Some((_, m))) if n >= m => self.write_events(&p)?,
                (_, Some((p, _))) => self.write_alerts(&p)?,
                (Some((p, _)), None) => self.write_events(&p)?,
                (None, None) => break,
            }
        }
        Ok(())
    }

    /// Writes partitions whose rows waited longer than `max_buffer_age`.
    pub fn write_aged(&mut self) -> Result<(), QueryError> {
        let age = self.options.max_buffer_age;
        let old: Vec<Part> = self
            .events
            .iter()
            .filter(|(_, b)| b.since.elapsed() >= age)
            .map(|(p, _)| p.clone())
            .collect();
        for p in old {
            self.write_events(&p)?;
        }
        let old: Vec<Part> = self
            .alerts
            .iter()
            .filter(|(_, b)| b.since.elapsed() >= age)
            .map(|(p, _)| p.clone())
            .collect();
        for p in old {
            self.write_alerts(&p)?;
        }
        Ok(())
    }

    /// Writes everything buffered. Call at the end of a run.
    pub fn finish(&mut self) -> Result<ArchiveStats, QueryError> {
        let parts: Vec<Part> = self.events.keys().cloned().collect();
        for p in parts {
            self.write_events(&p)?;
        }
        let parts: Vec<Part> = self.alerts.keys().cloned().collect();
        for p in parts {
            self.write_alerts(&p)?;
        }
        Ok(self.stats.clone())
    }

    fn write_events(&mut self, part: &Part) -> Result<(), QueryError> {
        let Some(mut buf) = self.events.remove(part) else {
            return Ok(());
        };
        self.buffered -= buf.rows.len();
        // Sorted by time: tight min/max statistics per row group and page.
        buf.rows.sort_by_key(|e| e.time);
        let batch = string_views(&events_to_batch(&buf.rows)?)?;
        self.put("events", part, &batch)?;
        self.stats.events += buf.rows.len() as u64;
        Ok(())
    }

    fn write_alerts(&mut self, part: &Part) -> Result<(), QueryError> {
        let Some(mut buf) = self.alerts.remove(part) else {
            return Ok(());
        };
        self.buffered -= buf.rows.len();
        buf.rows.sort_by_key(|a| a.window.start.millis());
        let batch = string_views(&alerts_to_batch(&buf.rows)?)?;
        self.put("alerts", part, &batch)?;
        self.stats.alerts += buf.rows.len() as u64;
        Ok(())
    }

    fn put(
        &mut self,
        table: &str,
        (dt, hour): &Part,
        batch: &datafusion::arrow::record_batch::RecordBatch,
    ) -> Result<(), QueryError> {
        let location = self.options.location.clone();
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(self.options.row_group_rows.max(1)))
            .build();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))
            .map_err(|e| archive_err(&location, e))?;
        writer.write(batch).map_err(|e| archive_err(&location, e))?;
        writer.close().map_err(|e| archive_err(&location, e))?;
        self.seq += 1;
        let name = format!(
            "{table}/dt={dt}/hour={hour:02}/part-{}-{:06}.parquet",
            self.run, self.seq
        );
        let path = if self.prefix.as_ref().is_empty() {
            ObjectPath::from(name.as_str())
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        };
        let size = bytes.len() as u64;
        let store = Arc::clone(&self.store);
        // One atomic put: the file is complete or absent. `Create` never replaces a file.
        self.runtime
            .block_on(store.put_opts(
                &path,
                PutPayload::from(bytes),
                PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                },
            ))
            .map_err(|e| archive_err(&location, format!("{path}: {e}")))?;
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(())
    }
}

/// This writer's part of every file name: start time, process id and a random number. The
/// process id alone does not tell writers apart: in containers every process is pid 1, and two
/// pods started in the same millisecond would name the same files (a `Create` put then fails).
fn run_name(started_ms: impl std::fmt::Display) -> String {
    use std::hash::BuildHasher;
    // std's hasher keys are drawn at random per `RandomState`: a random number without a
    // dependency for it.
    let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    format!("{started_ms}-{}-{:08x}", std::process::id(), random as u32)
}

/// A sink that archives every event and alert, then hands them to the inner sink.
pub struct ArchiveSink<S> {
    inner: S,
    archive: ArchiveWriter,
    inner_wants_events: bool,
}

impl<S: Sink> ArchiveSink<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, archive: ArchiveWriter) -> Self {
        let inner_wants_events = inner.wants_events();
        ArchiveSink {
            inner,
            archive,
            inner_wants_events,
        }
    }

    /// Writes what is still buffered and returns the inner sink and the archive's counts.
    pub fn finish(mut self) -> Result<(S, ArchiveStats), QueryError> {
        let stats = self.archive.finish()?;
        Ok((self.inner, stats))
    }

    fn sink_err(&self, e: QueryError) -> SinkError {
        SinkError {
            output: format!("archive {}", self.archive.options.location),
            source: std::io::Error::other(e.to_string()),
        }
    }
}

impl<S: Sink> Sink for ArchiveSink<S> {
    fn alert(&mut self, alert: &Alert) -> Result<(), SinkError> {
        self.archive
            .add_alert(alert)
            .map_err(|e| self.sink_err(e))?;
        self.inner.alert(alert)
    }
    fn dead_letter(&mut self, record: &DeadLetter) -> Result<(), SinkError> {
        self.inner.dead_letter(record)
    }
    fn late_event(&mut self, record: &LateEvent) -> Result<(), SinkError> {
        self.inner.late_event(record)
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        self.archive.write_aged().map_err(|e| self.sink_err(e))?;
        self.inner.flush()
    }
    fn wants_events(&self) -> bool {
        true
    }
    fn checkpoint(&mut self, checkpoint: Checkpoint) -> Result<(), SinkError> {
        // Every row before the barrier is in the archive before the positions that cover it are
        // committed: a crash loses nothing (rows after the last checkpoint are reprocessed, and
        // may be archived twice). Files are therefore cut at least once per checkpoint.
        self.archive.finish().map_err(|e| self.sink_err(e))?;
        self.inner.checkpoint(checkpoint)
    }
    fn route(
        &mut self,
        event: &AuthEvent,
        origin: authwatch_pipeline::Origin,
        progress: i64,
    ) -> Result<(), SinkError> {
        // A route-only (ingest) run forwards events for detection elsewhere; the detect stage
        // archives them once they are detected on.
        self.inner.route(event, origin, progress)
    }
    fn event(&mut self, event: &AuthEvent) -> Result<(), SinkError> {
        self.archive
            .add_event(event)
            .map_err(|e| self.sink_err(e))?;
        if self.inner_wants_events {
            self.inner.event(event)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod run_name_tests {
    #[test]
    fn two_writers_of_one_process_and_millisecond_get_different_names() {
        let (a, b) = (
            super::run_name(1_767_603_600_000u128),
            super::run_name(1_767_603_600_000u128),
        );
        assert_ne!(a, b);
        assert!(
            a.starts_with(&format!("1767603600000-{}-", std::process::id())),
            "{a}"
        );
    }
}
