//! Stores periodic snapshots in the background, after the commit that references them.
//!
//! A committed offset needs a stored snapshot *at or before* it, not *at* it: a partition
//! resumes from its newest snapshot at or before the committed offset and replays the records in
//! between with muted outputs (`store.rs`). So once a partition has a stored snapshot, the next
//! one need not be stored before the transaction commits. Storing it there put the file write,
//! its `fsync` and the directory's (or an object PUT) in front of every commit that carried a
//! snapshot, and with it the alerts of that commit: in the Kafka benchmark a partition's first
//! snapshot took 2–158 ms to store, and once 757 ms on a disk busy with write-back
//! (docs/KAFKA.md, "The latency tail"); an object PUT is a network round trip or more. A
//! partition new to the group gets its empty state stored at assignment
//! (`source.rs`, `store_fresh_state`), so it too has a snapshot before its first commit. The
//! snapshots of a barrier that hands partitions on, and of a partition without any stored one,
//! are still stored before the commit (`sink.rs`).
//!
//! [`SnapshotWriter`] takes such snapshots after their commit and stores them on its own
//! thread, then removes the partition's older files. Until then the older snapshot stays, so a
//! crash in between resumes from it and replays a little more. One batch is in flight at a
//! time: a new one first waits for the one before (backpressure instead of a growing queue).
//! A failed write is logged and fails the first checkpoint that learns of it (the next one to
//! find the batch done, or the next to hand over a batch); the run then restarts from what is
//! stored.

use crate::error::KafkaError;
use crate::metrics::{KafkaMetrics, SnapshotStore};
use crate::store::CheckpointStore;
use authwatch_pipeline::StateParts;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// One partition's snapshot, committed and waiting to be stored.
pub(crate) struct SnapshotFile {
    pub topic: String,
    pub partition: i32,
    /// The committed offset the state reflects (the file's name).
    pub offset: i64,
    pub state: StateParts,
}

/// Why snapshots handed to the writer were not stored. Their checkpoint had committed; the
/// partition's older snapshot is still stored, and a restart resumes from it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotError {
    /// Storing a file failed.
    #[error("the snapshot of an earlier checkpoint was not stored: {0}")]
    Store(#[source] KafkaError),
    /// The writer thread is gone (it panicked).
    #[error("the snapshot writer thread has stopped")]
    Stopped,
}

/// The background writer of committed snapshots (see the module docs).
pub(crate) struct SnapshotWriter {
    jobs: Option<Sender<Vec<SnapshotFile>>>,
    done: Receiver<Result<(), KafkaError>>,
    in_flight: bool,
    thread: Option<JoinHandle<()>>,
}

impl SnapshotWriter {
    /// Starts the writer thread for `store`; it reports each store to `metrics`.
    pub(crate) fn start(
        store: CheckpointStore,
        metrics: Arc<KafkaMetrics>,
    ) -> std::io::Result<Self> {
        // One batch queued and one answer unread at most: `submit` takes the answer to the
        // batch before it first, so neither side ever blocks the other for long.
        let (jobs, rx) = crossbeam_channel::bounded::<Vec<SnapshotFile>>(1);
        let (tx, done) = crossbeam_channel::bounded::<Result<(), KafkaError>>(1);
        let thread = std::thread::Builder::new()
            .name("aw-snapshots".to_owned())
            .spawn(move || {
                for files in rx {
                    if tx.send(store_batch(&store, &metrics, files)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(SnapshotWriter {
            jobs: Some(jobs),
            done,
            in_flight: false,
            thread: Some(thread),
        })
    }

    /// Hands `files` (committed snapshots) to the writer thread once the batch before them is
    /// stored; fails if that batch was not.
    pub(crate) fn submit(&mut self, files: Vec<SnapshotFile>) -> Result<(), SnapshotError> {
        self.wait()?;
        let jobs = self.jobs.as_ref().ok_or(SnapshotError::Stopped)?;
        jobs.send(files).map_err(|_| SnapshotError::Stopped)?;
        self.in_flight = true;
        Ok(())
    }

    /// Waits until the batch in flight, if any, is stored; fails if it was not.
    pub(crate) fn wait(&mut self) -> Result<(), SnapshotError> {
        if !std::mem::take(&mut self.in_flight) {
            return Ok(());
        }
        match self.done.recv() {
            Ok(stored) => stored.map_err(SnapshotError::Store),
            Err(_) => Err(SnapshotError::Stopped),
        }
    }

    /// Like [`SnapshotWriter::wait`], without blocking: a batch still being written is left
    /// alone.
    pub(crate) fn poll(&mut self) -> Result<(), SnapshotError> {
        if !self.in_flight {
            return Ok(());
        }
        match self.done.try_recv() {
            Ok(stored) => {
                self.in_flight = false;
                stored.map_err(SnapshotError::Store)
            }
            Err(TryRecvError::Empty) => Ok(()),
            Err(TryRecvError::Disconnected) => {
                self.in_flight = false;
                Err(SnapshotError::Stopped)
            }
        }
    }
}

impl Drop for SnapshotWriter {
    /// Lets the batch in flight finish: a restarted run in this process reads and prunes the
    /// same files, and must not race the old writer. (With object storage that can take as long
    /// as the store's retries.)
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the snapshot writer thread panicked");
        }
        // A failure nobody asked about any more (the sink is ending for another reason) is
        // already logged by the writer; the older snapshots it left cover the committed offsets.
    }
}

/// Stores each file, then removes its partition's older files (they are no longer needed once
/// the newer one is stored), leaving newer ones: the partition may have moved on by now.
fn store_batch(
    store: &CheckpointStore,
    metrics: &KafkaMetrics,
    files: Vec<SnapshotFile>,
) -> Result<(), KafkaError> {
    let started = Instant::now();
    let bytes: usize = files.iter().map(|f| f.state.size()).sum();
    for f in &files {
        if let Err(e) = store.write(&f.topic, f.partition, f.offset, &f.state) {
            tracing::error!(
                error = %e,
                topic = f.topic,
                partition = f.partition,
                offset = f.offset,
                "snapshot not stored; the partition's older snapshot stays"
            );
            metrics.snapshot_store_failed();
            return Err(e);
        }
        if let Err(e) = store.prune_before(&f.topic, f.partition, f.offset) {
            tracing::warn!(error = %e, "old checkpoint files not removed");
        }
    }
    stored(metrics, files.len(), bytes, started, true);
    Ok(())
}

/// Logs and counts every store of snapshots, before a commit (`after_commit = false`) or after.
pub(crate) fn stored(
    metrics: &KafkaMetrics,
    partitions: usize,
    bytes: usize,
    started: Instant,
    after_commit: bool,
) {
    let duration = started.elapsed();
    metrics.snapshot_stored(SnapshotStore {
        duration,
        after_commit,
    });
    tracing::info!(
        partitions,
        bytes,
        ms = duration.as_millis() as u64,
        background = after_commit,
        "snapshot stored"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(tag: &str) -> StateParts {
        let mut s = StateParts::default();
        s.parts
            .insert("detector".to_owned(), tag.as_bytes().to_vec());
        s
    }

    fn file(partition: i32, offset: i64, tag: &str) -> SnapshotFile {
        SnapshotFile {
            topic: "auth".to_owned(),
            partition,
            offset,
            state: state(tag),
        }
    }

    #[test]
    fn stores_the_batch_then_removes_older_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), "g");
        store.write("auth", 0, 10, &state("old")).unwrap();
        // A newer file of another owner (the partition moved on meanwhile) stays.
        store.write("auth", 0, 30, &state("next owner")).unwrap();
        let metrics = Arc::new(KafkaMetrics::new());
        let mut writer = SnapshotWriter::start(store.clone(), Arc::clone(&metrics)).unwrap();
        writer.submit(vec![file(0, 20, "new")]).unwrap();
        writer.wait().unwrap();
        assert_eq!(store.offsets("auth", 0).unwrap(), vec![20, 30]);
        let stores = metrics.take_snapshot_stores();
        assert_eq!(stores.len(), 1, "{stores:?}");
        assert!(stores[0].after_commit);
        assert_eq!(metrics.snapshot_store_failures(), 0);
        let (at, loaded) = store.load_latest("auth", 0, 25).unwrap().unwrap();
        assert_eq!(at, 20);
        assert_eq!(loaded.parts["detector"], b"new");
        // Nothing in flight: nothing to wait for.
        writer.wait().unwrap();
        writer.poll().unwrap();
    }

    #[test]
    fn a_failed_write_is_reported_once_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        // The group's directory is a file: every write under it fails.
        std::fs::write(dir.path().join("g"), b"not a directory").unwrap();
        let store = CheckpointStore::new(dir.path(), "g");
        let metrics = Arc::new(KafkaMetrics::new());
        let mut writer = SnapshotWriter::start(store, Arc::clone(&metrics)).unwrap();
        writer.submit(vec![file(1, 5, "x")]).unwrap();
        let started = Instant::now();
        let reported = loop {
            if let Err(e) = writer.poll() {
                break e;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "the failed write was not reported"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let message = reported.to_string();
        assert!(message.contains("not stored"), "{message}");
        assert!(message.contains("5.ckpt"), "{message}");
        // Reported once; the thread still takes batches (and reports their failure too).
        writer.poll().unwrap();
        writer.submit(vec![file(1, 6, "y")]).unwrap();
        let again = writer.wait().unwrap_err().to_string();
        assert!(again.contains("6.ckpt"), "{again}");
        assert_eq!(metrics.snapshot_store_failures(), 2);
        assert!(metrics.take_snapshot_stores().is_empty());
    }

    #[test]
    fn submit_reports_the_batch_before_and_drop_finishes_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), "g");
        let mut writer = SnapshotWriter::start(store.clone(), Arc::default()).unwrap();
        writer.submit(vec![file(0, 1, "a")]).unwrap();
        writer
            .submit(vec![file(0, 2, "b"), file(1, 2, "c")])
            .unwrap();
        drop(writer);
        assert_eq!(store.offsets("auth", 0).unwrap(), vec![2]);
        assert_eq!(store.offsets("auth", 1).unwrap(), vec![2]);
    }
}
