//! The extension point for detectors beyond the compiled rule engine (windowed SQL, …).

use crate::checkpoint::Checkpointed;
use authwatch_event::{Alert, AuthEvent};

/// A detector that runs in the detect stage after the compiled rule engine, on the same
/// ordered, enriched, non-late events and the same watermark. Each task (input partition) has
/// its own, made by a [`DetectorFactory`] registered with
/// [`crate::Pipeline::with_stream_detectors`], and its state is checkpointed with the task's
/// (its [`Checkpointed::name`] must be unique among the task's parts).
///
/// Errors inside a detector (a query that fails on some window) must not stop the pipeline:
/// the detector logs and counts them and goes on.
pub trait StreamDetector: Checkpointed + Send {
    /// One event, in stream order (never behind the watermark).
    fn on_event(&mut self, event: &AuthEvent, out: &mut Vec<Alert>);
    /// The watermark advanced: windows ending at or before it may be decided.
    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Alert>);
    /// End of input: decide every open window.
    fn flush(&mut self, out: &mut Vec<Alert>);
}

/// Makes a task's detectors. Whatever can fail (parsing, planning) happens once, before the
/// factory is registered, so that making a task's detectors cannot.
pub trait DetectorFactory: Send + Sync {
    /// A fresh set of detectors for one task.
    fn create(&self) -> Vec<Box<dyn StreamDetector>>;
}
