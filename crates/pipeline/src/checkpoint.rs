//! Checkpoints: barriers that flow through the stages in stream order, so that the state they
//! capture reflects exactly the input before them.
//!
//! A partitioned source (Kafka) runs one *task* per input partition: each task has its own
//! detector state, user profiles and watermark, so its results depend only on its own partition's
//! ordered stream — not on how partitions interleave or which instance owns them. The source
//! sends [`Control`] messages through the same ordered channel as its batches:
//!
//! - [`Control::Assign`] before the first line of a partition: the task starts from the restored
//!   state (or fresh);
//! - [`Control::Barrier`] after the lines its positions cover: the detect stage hands a
//!   [`Checkpoint`] to the sink after all results of the lines before it; the sink commits the
//!   positions with those results, then acknowledges. A *snapshot* barrier (every few commits,
//!   not every one: a snapshot costs far more than a commit) also carries the state of every
//!   task that changed (each a set of named [`Checkpointed`] parts), which the sink persists
//!   before the commit that references it.
//!
//! A task restored from a snapshot older than its committed position replays the lines between
//! the two with its outputs *muted* ([`Control::Assign`]'s `mute_before`): their results were
//! committed before, and the task's results depend only on its lines, so the replay rebuilds the
//! committed state without repeating an output.
//!
//! State that lives elsewhere (a responder's incident table, SQL windows) joins the same
//! checkpoint by implementing [`Checkpointed`] and adding its part in [`crate::Sink::checkpoint`].

use crossbeam_channel::Sender;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::source::RawBatch;

/// A state snapshot could not be taken or restored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A part could not be serialized.
    #[error("checkpoint part {part}: snapshot failed: {message}")]
    Snapshot {
        /// The part's name.
        part: String,
        /// Why.
        message: String,
    },
    /// A part could not be restored (corrupt, or written with other rules).
    #[error("checkpoint part {part}: restore failed: {message}")]
    Restore {
        /// The part's name.
        part: String,
        /// Why.
        message: String,
    },
}

/// A piece of state that is saved in every checkpoint and restored on start or reassignment.
pub trait Checkpointed {
    /// The part's name, unique within a checkpoint (`engine`, `profiles`, `watermark`, …).
    fn name(&self) -> &str;
    /// The state as bytes. The same state must give the same bytes.
    fn snapshot(&self) -> Result<Vec<u8>, CheckpointError>;
    /// Replaces the state with a snapshot taken by [`Checkpointed::snapshot`].
    fn restore(&mut self, bytes: &[u8]) -> Result<(), CheckpointError>;
}

/// The named parts of one task's (or one component's) state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateParts {
    /// Part name → bytes.
    pub parts: BTreeMap<String, Vec<u8>>,
}

impl StateParts {
    /// Adds a part's snapshot.
    pub fn add(&mut self, part: &dyn Checkpointed) -> Result<(), CheckpointError> {
        self.parts.insert(part.name().to_owned(), part.snapshot()?);
        Ok(())
    }

    /// The bytes of all parts (what a stored snapshot holds, before framing).
    pub fn size(&self) -> usize {
        self.parts.values().map(Vec::len).sum()
    }

    /// Restores a part from its snapshot; a part that is absent is left as it is (a component
    /// added since the checkpoint starts fresh).
    pub fn restore(&self, part: &mut dyn Checkpointed) -> Result<(), CheckpointError> {
        match self.parts.get(part.name()) {
            Some(bytes) => part.restore(bytes),
            None => Ok(()),
        }
    }
}

/// What the sink answers to a barrier: `Ok` once the checkpoint is durable.
pub type BarrierAck = Result<(), String>;

/// A checkpoint request from the source.
pub struct Barrier {
    /// Increasing id.
    pub id: u64,
    /// For each input (partition index), the position of the next line not yet covered: the
    /// state snapshot reflects every line before it.
    pub positions: Vec<(u32, i64)>,
    /// Tasks to drop after this barrier (partitions revoked or the run ending).
    pub release: Vec<u32>,
    /// Snapshot the changed tasks whose positions this barrier carries. Tasks never snapshotted
    /// are snapshotted at every barrier until they are, so a committed position always has a
    /// snapshot at or before it.
    pub snapshot: bool,
    /// Source-specific data the sink needs to commit (the consumer group metadata).
    pub token: Option<Box<dyn std::any::Any + Send>>,
    /// State the source keeps for a task (a merging source's buffer and per-origin progress),
    /// at exactly the lines before this barrier: added to the task's snapshot, and the task is
    /// snapshotted even when none of its lines arrived since its last checkpoint.
    pub source_parts: Vec<(u32, StateParts)>,
    /// Told when the checkpoint is durable (or failed), for sources that must wait.
    pub ack: Option<Sender<BarrierAck>>,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("id", &self.id)
            .field("positions", &self.positions)
            .field("release", &self.release)
            .field("snapshot", &self.snapshot)
            .finish_non_exhaustive()
    }
}

/// A control message of a partitioned source, ordered with its batches.
#[derive(Debug)]
pub enum Control {
    /// A partition starts: its task begins from `state` (or fresh when `None`).
    Assign {
        /// The input (partition) index.
        input: u32,
        /// Restored state.
        state: Option<StateParts>,
        /// Lines of this partition at offsets below this were processed and their outputs
        /// committed before: process them to rebuild the state, but emit nothing for them.
        mute_before: Option<i64>,
    },
    /// Commit the positions (and, if asked, snapshot the tasks) now.
    Barrier(Barrier),
}

/// What reaches the sink for a barrier: the barrier and, at a snapshot barrier, the snapshots of
/// the tasks that changed since their last snapshot (every task at its first barrier).
#[derive(Debug)]
pub struct Checkpoint {
    /// The barrier.
    pub barrier: Barrier,
    /// Input (partition) index → state parts.
    pub tasks: Vec<(u32, StateParts)>,
}

impl Checkpoint {
    /// Tells the source the outcome, if it waits.
    pub fn acknowledge(&self, result: BarrierAck) {
        if let Some(ack) = &self.barrier.ack {
            // The source may have given up waiting (it is stopping): nothing to tell.
            let _ = ack.send(result);
        }
    }
}

/// Sends control messages into the pipeline in order with the source's batches. Handed to a
/// partitioned source by [`crate::Source::attach`]; it may be used from the source's callbacks
/// on the source thread.
#[derive(Clone)]
pub struct ControlSender {
    pub(crate) tx: Sender<RawBatch>,
    pub(crate) seq: Arc<AtomicU64>,
}

impl ControlSender {
    /// Sends `control` after everything sent before. Returns `false` when the pipeline stopped.
    pub fn send(&self, control: Control) -> bool {
        let batch = RawBatch {
            seq: self.seq.fetch_add(1, Ordering::SeqCst),
            control: Some(control),
            ..RawBatch::default()
        };
        self.tx.send(batch).is_ok()
    }
}

/// The event-time position of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Watermark {
    pub max_time: i64,
    pub watermark: i64,
    /// The time of an event that came more than `event_time.max_jump` ahead of `max_time` and
    /// did not move it: one event alone is not trusted to (a wrong clock would make every later
    /// event late), a second one beyond the same bound confirms the jump.
    pub held: Option<i64>,
}

impl Default for Watermark {
    fn default() -> Self {
        Watermark {
            max_time: i64::MIN,
            watermark: i64::MIN,
            held: None,
        }
    }
}

/// What one on-time event did to a task's [`Watermark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing: the event is not newer than `max_time`.
    Stay,
    /// The event is too far ahead to move `max_time` alone (or is the stream's first): it is
    /// held.
    Held,
    /// `max_time` moved forward from `from`. `to_held`: it moved to the time held before this
    /// event (that event, not this one, is where the stream jumped). `holds_current`: this event
    /// is held now, beyond the new reach (the stream moved to the earlier of two far-apart
    /// events).
    Moved {
        from: i64,
        to_held: bool,
        holds_current: bool,
    },
}

impl Step {
    /// Whether the event that took this step is held ahead of the stream: it is detected on,
    /// but teaches nothing whose clock would follow its time (the user profiles).
    pub(crate) fn holds_current(self) -> bool {
        matches!(
            self,
            Step::Held
                | Step::Moved {
                    holds_current: true,
                    ..
                }
        )
    }
}

impl Watermark {
    /// Takes an event time into account. `lateness` is how far the watermark trails
    /// `max_time`. An event within `max_jump` of `max_time` moves it; one further ahead (or the
    /// stream's first) moves it only with a second one beyond the same reach: then to the
    /// later of the two if they are within `max_jump` of each other, else to the earlier, the
    /// later held in turn. An in-reach step forward drops what is held (a lone outlier; a
    /// later jump needs two events again). `max_jump <= 0`: any event moves it.
    pub(crate) fn observe(&mut self, time: i64, lateness: i64, max_jump: i64) -> Step {
        if time <= self.max_time {
            return Step::Stay;
        }
        let from = self.max_time;
        let in_reach = |low: i64, high: i64| high.saturating_sub(low) <= max_jump;
        if max_jump <= 0 || (from != i64::MIN && in_reach(from, time)) {
            self.held = None;
            self.move_to(time, lateness);
            return Step::Moved {
                from,
                to_held: false,
                holds_current: false,
            };
        }
        let Some(held) = self.held.take() else {
            self.held = Some(time);
            return Step::Held;
        };
        let (low, high) = (held.min(time), held.max(time));
        let to = if in_reach(low, high) {
            high
        } else {
            self.held = Some(high);
            low
        };
        self.move_to(to, lateness);
        Step::Moved {
            from,
            // At a tie the held event came first: the stream jumped there.
            to_held: to == held,
            holds_current: self.held == Some(time) && held != time,
        }
    }

    fn move_to(&mut self, time: i64, lateness: i64) {
        self.max_time = time;
        self.watermark = time.saturating_sub(lateness);
    }
}

impl Checkpointed for Watermark {
    fn name(&self) -> &str {
        "watermark"
    }

    // "max_time watermark", and " held" when an event is held: a state without one reads
    // as it did before `held` existed, and older states restore unchanged.
    fn snapshot(&self) -> Result<Vec<u8>, CheckpointError> {
        let mut text = format!("{} {}", self.max_time, self.watermark);
        if let Some(held) = self.held {
            text.push_str(&format!(" {held}"));
        }
        Ok(text.into_bytes())
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), CheckpointError> {
        let bad = |message: String| CheckpointError::Restore {
            part: "watermark".to_owned(),
            message,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
        let mut it = text.split(' ').map(str::parse::<i64>);
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(Ok(max_time)), Some(Ok(watermark)), held, None) => {
                let held = match held {
                    None => None,
                    Some(Ok(h)) => Some(h),
                    Some(Err(e)) => return Err(bad(format!("{text:?}: {e}"))),
                };
                *self = Watermark {
                    max_time,
                    watermark,
                    held,
                };
                Ok(())
            }
            _ => Err(bad(format!(
                "expected two or three integers, found {text:?}"
            ))),
        }
    }
}

impl Checkpointed for authwatch_detect::Engine {
    fn name(&self) -> &str {
        "engine"
    }

    fn snapshot(&self) -> Result<Vec<u8>, CheckpointError> {
        authwatch_detect::Engine::snapshot(self).map_err(|e| CheckpointError::Snapshot {
            part: "engine".to_owned(),
            message: e.to_string(),
        })
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), CheckpointError> {
        let started_empty = authwatch_detect::Engine::restore(self, bytes).map_err(|e| {
            CheckpointError::Restore {
                part: "engine".to_owned(),
                message: e.to_string(),
            }
        })?;
        if !started_empty.is_empty() {
            // A new, re-versioned or reshaped rule: it counts only what it sees from now on,
            // for one window length.
            tracing::warn!(
                rules = ?started_empty,
                "rules not in the checkpoint (new, or changed since) start with empty windows"
            );
        }
        Ok(())
    }
}

impl Checkpointed for authwatch_enrich::UserProfiles {
    fn name(&self) -> &str {
        "profiles"
    }

    fn snapshot(&self) -> Result<Vec<u8>, CheckpointError> {
        Ok(authwatch_enrich::UserProfiles::snapshot(self))
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), CheckpointError> {
        authwatch_enrich::UserProfiles::restore(self, bytes).map_err(|e| CheckpointError::Restore {
            part: "profiles".to_owned(),
            message: e.to_string(),
        })
    }
}
