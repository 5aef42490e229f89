//! Sinks: where alerts, dead letters and late events go.

use crate::checkpoint::Checkpoint;
use crate::deadletter::DeadLetter;
use authwatch_event::{Alert, AuthEvent};
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A late event, as written to the side output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LateEvent {
    /// The input.
    pub file: String,
    /// 1-based line number.
    pub line: u64,
    /// Byte offset of the line.
    pub offset: u64,
    /// The watermark the event was behind (ms).
    pub watermark: i64,
    /// The event.
    pub event: AuthEvent,
}

/// A sink failed to write. Whose fault: the environment's (disk full, closed pipe).
#[derive(Debug, thiserror::Error)]
#[error("{output}: write failed: {source}")]
pub struct SinkError {
    /// Which output.
    pub output: String,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// Receives the pipeline's results, in stream order.
pub trait Sink: Send {
    /// One alert.
    fn alert(&mut self, alert: &Alert) -> Result<(), SinkError>;
    /// One rejected line.
    fn dead_letter(&mut self, record: &DeadLetter) -> Result<(), SinkError>;
    /// One late event (side-output policy only).
    fn late_event(&mut self, record: &LateEvent) -> Result<(), SinkError>;
    /// Called at the end of the run and whenever results should become visible.
    fn flush(&mut self) -> Result<(), SinkError>;

    /// Whether this sink wants every processed event (normalized, enriched, with the user's
    /// context), e.g. for an enriched-events topic or a help-desk view. Asked once per run;
    /// when false, events are not copied to the sink at all.
    fn wants_events(&self) -> bool {
        false
    }

    /// One processed event, in stream order, after detection saw it. Late events that were
    /// dropped or side-output do not come here.
    fn event(&mut self, _event: &AuthEvent) -> Result<(), SinkError> {
        Ok(())
    }

    /// One event of a route-only run ([`crate::RunOptions::route_only`]), in stream order:
    /// where it came from and its partition's progress (the newest event time of the
    /// partition so far). Sinks of other runs never receive it.
    fn route(
        &mut self,
        event: &AuthEvent,
        _origin: crate::source::Origin,
        _progress: i64,
    ) -> Result<(), SinkError> {
        self.event(event)
    }

    /// A checkpoint barrier of a partitioned source, after every result of the lines it covers:
    /// persist the task states with their positions (adding parts of the sink's own state, if
    /// any), then [`Checkpoint::acknowledge`]. Sinks without durable state only acknowledge.
    fn checkpoint(&mut self, checkpoint: Checkpoint) -> Result<(), SinkError> {
        checkpoint.acknowledge(Ok(()));
        Ok(())
    }
}

/// A boxed sink is a sink: layers chosen at run time (an archive in front of the Kafka sink)
/// wrap `Box<dyn Sink>`.
impl<S: Sink + ?Sized> Sink for Box<S> {
    fn alert(&mut self, alert: &Alert) -> Result<(), SinkError> {
        (**self).alert(alert)
    }
    fn dead_letter(&mut self, record: &DeadLetter) -> Result<(), SinkError> {
        (**self).dead_letter(record)
    }
    fn late_event(&mut self, record: &LateEvent) -> Result<(), SinkError> {
        (**self).late_event(record)
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        (**self).flush()
    }
    fn wants_events(&self) -> bool {
        (**self).wants_events()
    }
    fn event(&mut self, event: &AuthEvent) -> Result<(), SinkError> {
        (**self).event(event)
    }
    // Every method is forwarded: a default here would turn the inner sink's own behaviour
    // into the trait's default (a routed event into a plain one).
    fn route(
        &mut self,
        event: &AuthEvent,
        origin: crate::source::Origin,
        progress: i64,
    ) -> Result<(), SinkError> {
        (**self).route(event, origin, progress)
    }
    fn checkpoint(&mut self, checkpoint: Checkpoint) -> Result<(), SinkError> {
        (**self).checkpoint(checkpoint)
    }
}

struct Output {
    name: String,
    writer: Box<dyn Write + Send>,
}

impl Output {
    fn open(path: &Path) -> Result<Output, SinkError> {
        let name = path.display().to_string();
        let writer: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(BufWriter::new(std::io::stdout()))
        } else {
            let file = File::create(path).map_err(|source| SinkError {
                output: name.clone(),
                source,
            })?;
            Box::new(BufWriter::with_capacity(256 * 1024, file))
        };
        Ok(Output { name, writer })
    }

    fn write<T: Serialize>(&mut self, value: &T) -> Result<(), SinkError> {
        let fail = |source| SinkError {
            output: self.name.clone(),
            source,
        };
        serde_json::to_writer(&mut self.writer, value).map_err(|e| fail(e.into()))?;
        self.writer.write_all(b"\n").map_err(fail)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.writer.flush().map_err(|source| SinkError {
            output: self.name.clone(),
            source,
        })
    }
}

/// JSON-lines files (or standard output) for each kind of result; unset outputs are skipped.
/// Optionally keeps the alerts in memory for a summary table.
pub struct JsonLinesSink {
    alerts: Option<Output>,
    dead_letters: Option<Output>,
    late_events: Option<Output>,
    kept: Vec<Alert>,
    keep: usize,
    seen: u64,
}

impl JsonLinesSink {
    /// Opens (creates or truncates) the given outputs now, so that an unwritable path fails
    /// before the run.
    pub fn create(
        alerts: Option<&PathBuf>,
        dead_letters: Option<&PathBuf>,
        late_events: Option<&PathBuf>,
    ) -> Result<Self, SinkError> {
        Ok(JsonLinesSink {
            alerts: alerts.map(|p| Output::open(p)).transpose()?,
            dead_letters: dead_letters.map(|p| Output::open(p)).transpose()?,
            late_events: late_events.map(|p| Output::open(p)).transpose()?,
            kept: Vec::new(),
            keep: 0,
            seen: 0,
        })
    }

    /// Also keep the first `n` alerts in memory ([`JsonLinesSink::kept_alerts`]).
    pub fn keep_alerts(mut self, n: usize) -> Self {
        self.keep = n;
        self
    }

    /// The alerts kept in memory, and how many alerts were seen in all.
    pub fn kept_alerts(&self) -> (&[Alert], u64) {
        (&self.kept, self.seen)
    }
}

impl Sink for JsonLinesSink {
    fn alert(&mut self, alert: &Alert) -> Result<(), SinkError> {
        self.seen += 1;
        if self.kept.len() < self.keep {
            self.kept.push(alert.clone());
        }
        match &mut self.alerts {
            Some(o) => o.write(alert),
            None => Ok(()),
        }
    }

    fn dead_letter(&mut self, record: &DeadLetter) -> Result<(), SinkError> {
        match &mut self.dead_letters {
            Some(o) => o.write(record),
            None => Ok(()),
        }
    }

    fn late_event(&mut self, record: &LateEvent) -> Result<(), SinkError> {
        match &mut self.late_events {
            Some(o) => o.write(record),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        for o in [
            &mut self.alerts,
            &mut self.dead_letters,
            &mut self.late_events,
        ]
        .into_iter()
        .flatten()
        {
            o.flush()?;
        }
        Ok(())
    }
}
