//! The extension point for detectors beyond the compiled rule engine (windowed SQL, …).

use authwatch_event::{Alert, AuthEvent};

/// A detector's state could not be saved or restored.
#[derive(Debug, thiserror::Error)]
#[error("{detector}: {message}")]
pub struct DetectorStateError {
    /// Which detector.
    pub detector: String,
    /// What went wrong.
    pub message: String,
}

/// A detector that runs in the detect stage after the compiled rule engine, on the same
/// ordered, enriched, non-late events and the same watermark. Registered with
/// [`crate::Pipeline::with_stream_detector`].
///
/// Errors inside a detector (a query that fails on some window) must not stop the pipeline:
/// the detector logs and counts them and goes on.
pub trait StreamDetector: Send {
    /// A short name for logs and metrics.
    fn name(&self) -> &str;
    /// One event, in stream order (never behind the watermark).
    fn on_event(&mut self, event: &AuthEvent, out: &mut Vec<Alert>);
    /// The watermark advanced: windows ending at or before it may be decided.
    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Alert>);
    /// End of input: decide every open window.
    fn flush(&mut self, out: &mut Vec<Alert>);
    /// The detector's state, for a checkpoint.
    fn snapshot(&self) -> Result<Vec<u8>, DetectorStateError>;
    /// Restores a state written by [`StreamDetector::snapshot`].
    fn restore(&mut self, state: &[u8]) -> Result<(), DetectorStateError>;
}
