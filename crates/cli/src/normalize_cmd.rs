//! `authwatch normalize`: provider logs in, normalized and enriched events out (native JSON, OCSF
//! 3002, ECS or a provider format), through the same pipeline as `replay` — with every rejected
//! line in the dead-letter output and counted.

use crate::gen_cmd::{Output, create_output};
use anyhow::{Context, Result, bail};
use authwatch_detect::RulePack;
use authwatch_event::{Alert, AuthEvent};
use authwatch_normalize::{Format, encode};
use authwatch_pipeline::{
    Config, DeadLetter, JsonLinesSink, LateEvent, LineSource, Pipeline, Sink, SinkError, Speed,
};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// `authwatch normalize`
#[derive(Debug, clap::Args)]
pub struct NormalizeArgs {
    /// Input files (JSON lines, optionally gzip-compressed); `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Input format; `auto` detects it line by line.
    #[arg(long, default_value = "auto", value_name = "FORMAT")]
    from: Format,
    /// A declarative mapping (YAML) for a provider that is not built in; replaces `--from`.
    #[arg(long, value_name = "FILE")]
    mapping: Option<PathBuf>,
    /// Output format: `native`, `ocsf` or `ecs` (any provider format is accepted too).
    #[arg(long, default_value = "native", value_name = "FORMAT")]
    to: Format,
    /// Where to write events; `-` is standard output, `.gz` compresses. Every record read is
    /// written, repeated and out-of-order ones too; a rejected one goes to the dead letters.
    #[arg(long, short, default_value = "-", value_name = "FILE|-")]
    out: PathBuf,
    /// Rejected lines as JSON lines (file, line, offset, reason, detail, raw head).
    #[arg(long, value_name = "FILE")]
    dead_letter: Option<PathBuf>,
    /// Configuration file (enrichment databases, limits); see config/authwatch.example.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Writes every processed event in the output format.
struct EncodeSink {
    to: Format,
    out: Output,
    name: String,
    line: Vec<u8>,
    written: u64,
    /// The reader went away (`| head`): stop writing, quietly, as Unix tools do.
    reader_gone: bool,
    dead: JsonLinesSink,
    /// Dead letters go to `out` too (both are standard output): one writer, each record
    /// whole, so that neither cuts into the other's lines.
    dead_to_out: bool,
}

impl EncodeSink {
    fn fail(&self, source: std::io::Error) -> SinkError {
        SinkError {
            output: self.name.clone(),
            source,
        }
    }

    /// Writes the record in `line` to `out`, whole.
    fn write_line(&mut self) -> Result<(), SinkError> {
        if self.reader_gone {
            return Ok(());
        }
        match self.out.write_all(&self.line) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.reader_gone = true;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}

impl Sink for EncodeSink {
    fn alert(&mut self, _: &Alert) -> Result<(), SinkError> {
        Ok(())
    }
    fn dead_letter(&mut self, record: &DeadLetter) -> Result<(), SinkError> {
        if !self.dead_to_out {
            return self.dead.dead_letter(record);
        }
        self.line.clear();
        serde_json::to_writer(&mut self.line, record)
            .map_err(|e| self.fail(std::io::Error::other(e.to_string())))?;
        self.line.push(b'\n');
        self.write_line()
    }
    fn late_event(&mut self, _: &LateEvent) -> Result<(), SinkError> {
        Ok(())
    }
    fn wants_events(&self) -> bool {
        true
    }
    fn event(&mut self, event: &AuthEvent) -> Result<(), SinkError> {
        if self.reader_gone {
            return Ok(());
        }
        self.line.clear();
        encode(self.to, event, &mut self.line)
            .map_err(|e| self.fail(std::io::Error::other(e.to_string())))?;
        self.line.push(b'\n');
        self.write_line()?;
        if !self.reader_gone {
            self.written += 1;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        self.dead.flush()?;
        match self.out.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.reader_gone = true;
                Ok(())
            }
            other => other.map_err(|e| self.fail(e)),
        }
    }
}

pub fn run(args: NormalizeArgs) -> Result<ExitCode> {
    if args.to == Format::Auto {
        bail!("--to auto: choose an output format (native, ocsf, ecs, or a provider format)");
    }
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::from_env()?,
    };
    config.input.format = args.from;
    config.input.mapping = args.mapping.clone().or(config.input.mapping);
    // Every event is wanted, however late it arrives and however often it is repeated: a
    // converter writes a line for every record it reads (the input's repeats are the reader's
    // to judge, as `replay` judges them); normalizing is not detecting.
    config.event_time.allowed_lateness = authwatch_event::DurationText(std::time::Duration::MAX);
    config.detect.dedup_capacity = 0;
    // No watermark to protect, and every event teaches the user profiles as it always did.
    config.event_time.max_jump = authwatch_event::DurationText(std::time::Duration::ZERO);
    config.validate()?;
    let mut outputs = vec![("--out", args.out.as_path())];
    if let Some(dead) = &args.dead_letter {
        outputs.push(("--dead-letter", dead.as_path()));
    }
    crate::paths::refuse_overwrites(&args.files, &outputs)?;
    let mut source = LineSource::open_files(
        &args.files,
        config.input.max_line_bytes,
        config.input.dead_letter_raw_bytes,
    )?;
    // No rules: the pipeline normalizes, enriches and builds user context, and detects nothing.
    let pipeline = Pipeline::new(config, RulePack::from_rules(Vec::new())?)?;
    // Outputs are created (truncated) last, after everything that can fail at start-up.
    let stdout = std::path::Path::new("-");
    let dead_to_out = args.out == stdout && args.dead_letter.as_deref() == Some(stdout);
    let dead_file = args.dead_letter.as_ref().filter(|_| !dead_to_out);
    let sink = EncodeSink {
        to: args.to,
        out: create_output(&args.out)?,
        name: args.out.display().to_string(),
        line: Vec::with_capacity(2048),
        written: 0,
        reader_gone: false,
        dead: JsonLinesSink::create(None, dead_file, None)?,
        dead_to_out,
    };
    let (summary, sink) = pipeline
        .run(&mut source, sink, Speed::Max)
        .context("normalize failed")?;
    if sink.reader_gone {
        return Ok(ExitCode::SUCCESS);
    }
    let (written, name) = (sink.written, sink.name);
    match sink.out.finish() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        other => other.with_context(|| format!("--out {name}"))?,
    }
    let dead: u64 = summary.dead_letters.iter().map(|(_, n)| n).sum();
    let mut line = format!(
        "authwatch normalize: {} events written as {}, {dead} lines rejected",
        written,
        args.to.as_str()
    );
    if dead > 0 {
        let parts: Vec<String> = summary
            .dead_letters
            .iter()
            .map(|(k, n)| format!("{} {n}", k.as_str()))
            .collect();
        line.push_str(&format!(" ({})", parts.join(", ")));
        if args.dead_letter.is_none() {
            line.push_str("; see them with --dead-letter FILE");
        }
    }
    eprintln!("{line}");
    // Nothing usable at all is a failure a script should notice.
    Ok(if summary.events == 0 && dead > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
