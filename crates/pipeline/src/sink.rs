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
    /// dropped or side-output do not come here, nor do repeated deliveries of an event already
    /// seen (`detect.dedup_capacity`; `authwatch normalize` turns that check off).
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

/// Where one output's records go.
enum Target {
    /// A file of its own.
    File(Box<dyn Write + Send>),
    /// Standard output, which every output named `-` shares: one writer, so that records of
    /// two outputs can never split each other (two buffers each flushing when full would cut
    /// a record of one into the middle of the other's).
    Stdout,
}

struct Output {
    name: String,
    target: Target,
}

impl Output {
    fn open(path: &Path) -> Result<Output, SinkError> {
        let name = path.display().to_string();
        let target = if path == Path::new("-") {
            Target::Stdout
        } else {
            let file = File::create(path).map_err(|source| SinkError {
                output: name.clone(),
                source,
            })?;
            Target::File(Box::new(BufWriter::with_capacity(256 * 1024, file)))
        };
        Ok(Output { name, target })
    }

    /// Writes one record as one line: serialized whole first, then handed over in one piece.
    fn write<T: Serialize>(
        &mut self,
        stdout: &mut dyn Write,
        line: &mut Vec<u8>,
        value: &T,
    ) -> Result<(), SinkError> {
        let fail = |source| SinkError {
            output: self.name.clone(),
            source,
        };
        line.clear();
        serde_json::to_writer(&mut *line, value).map_err(|e| fail(e.into()))?;
        line.push(b'\n');
        let writer: &mut dyn Write = match &mut self.target {
            Target::File(w) => w,
            Target::Stdout => stdout,
        };
        writer.write_all(line).map_err(fail)
    }

    fn flush(&mut self, stdout: &mut dyn Write) -> Result<(), SinkError> {
        let writer: &mut dyn Write = match &mut self.target {
            Target::File(w) => w,
            Target::Stdout => stdout,
        };
        writer.flush().map_err(|source| SinkError {
            output: self.name.clone(),
            source,
        })
    }
}

/// JSON-lines files (or standard output) for each kind of result; unset outputs are skipped.
/// Outputs named `-` share one standard-output writer, each record written whole.
/// Optionally keeps the alerts in memory for a summary table.
pub struct JsonLinesSink {
    alerts: Option<Output>,
    dead_letters: Option<Output>,
    late_events: Option<Output>,
    /// The one writer of every output on standard output.
    stdout: Box<dyn Write + Send>,
    /// One record, serialized before it is written.
    line: Vec<u8>,
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
        Self::create_with_stdout(
            alerts,
            dead_letters,
            late_events,
            Box::new(BufWriter::new(std::io::stdout())),
        )
    }

    /// [`JsonLinesSink::create`] with `stdout` standing for standard output (tests).
    fn create_with_stdout(
        alerts: Option<&PathBuf>,
        dead_letters: Option<&PathBuf>,
        late_events: Option<&PathBuf>,
        stdout: Box<dyn Write + Send>,
    ) -> Result<Self, SinkError> {
        Ok(JsonLinesSink {
            alerts: alerts.map(|p| Output::open(p)).transpose()?,
            dead_letters: dead_letters.map(|p| Output::open(p)).transpose()?,
            late_events: late_events.map(|p| Output::open(p)).transpose()?,
            stdout,
            line: Vec::with_capacity(4096),
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
            Some(o) => o.write(&mut self.stdout, &mut self.line, alert),
            None => Ok(()),
        }
    }

    fn dead_letter(&mut self, record: &DeadLetter) -> Result<(), SinkError> {
        match &mut self.dead_letters {
            Some(o) => o.write(&mut self.stdout, &mut self.line, record),
            None => Ok(()),
        }
    }

    fn late_event(&mut self, record: &LateEvent) -> Result<(), SinkError> {
        match &mut self.late_events {
            Some(o) => o.write(&mut self.stdout, &mut self.line, record),
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
            o.flush(&mut self.stdout)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use authwatch_normalize::{RejectKind, Rejection};
    use std::sync::{Arc, Mutex};

    /// What a test's "standard output" received, in whatever pieces it came.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Review finding 3: `--alerts - --dead-letter -` gave each its own buffer on standard
    /// output, and a buffer flushing when full cut one output's record with the other's.
    #[test]
    fn two_outputs_on_standard_output_keep_every_record_whole() {
        let out = Shared::default();
        let dash = PathBuf::from("-");
        let mut sink = JsonLinesSink::create_with_stdout(
            None,
            Some(&dash),
            Some(&dash),
            Box::new(BufWriter::with_capacity(8192, out.clone())),
        )
        .unwrap();
        let origin = crate::source::Origin {
            input: 0,
            line: 1,
            offset: 0,
        };
        let raw = vec![b'z'; 3000];
        let (mut dead, mut late) = (0, 0);
        for i in 0..200u64 {
            let rejection = Rejection::new(RejectKind::MalformedJson, format!("bad line {i}"));
            let record = DeadLetter::new("in.jsonl", origin, rejection, &raw, 3000, 3000);
            sink.dead_letter(&record).unwrap();
            dead += 1;
            if i % 3 == 0 {
                let record = LateEvent {
                    file: "in.jsonl".into(),
                    line: i,
                    offset: 0,
                    watermark: 0,
                    event: AuthEvent::sample_full(),
                };
                sink.late_event(&record).unwrap();
                late += 1;
            }
        }
        sink.flush().unwrap();
        let bytes = out.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let (mut got_dead, mut got_late) = (0, 0);
        for line in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:.200}"));
            if v.get("reason").is_some() {
                got_dead += 1;
            } else {
                got_late += 1;
            }
        }
        assert_eq!((got_dead, got_late), (dead, late));
    }
}
