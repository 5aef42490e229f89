//! The authwatch pipeline runtime.
//!
//! ```text
//! source ──► normalize + enrich (N workers) ──► order ──► detect (M shards, event time) ──► sink
//!        bounded                          bounded     bounded                         bounded
//! ```
//!
//! A [`Source`] yields batches of raw lines with their positions; workers turn them into
//! [`authwatch_event::AuthEvent`]s or [`DeadLetter`]s; the order stage restores stream order and
//! hands each detect shard its partitions' part (one shard for a recorded stream; a partitioned
//! source's tasks spread over `runtime.detect_threads`); each shard advances its tasks'
//! event-time watermark (`event_time.allowed_lateness` behind the newest event),
//! counts late events and drops or side-outputs them, and runs the compiled rules; a [`Sink`]
//! writes alerts, dead letters and late events. Recorded files use [`LineSource`]; the Kafka
//! runtime implements [`Source`] and [`Sink`] over topics and runs the same stages.
//!
//! ```no_run
//! use authwatch_pipeline::{Config, JsonLinesSink, LineSource, Pipeline, Speed};
//! use authwatch_detect::RulePack;
//! use std::path::PathBuf;
//!
//! let config = Config::default();
//! let pipeline = Pipeline::new(config.clone(), RulePack::builtin()?)?;
//! let mut source = LineSource::open_files(&[PathBuf::from("events.jsonl")],
//!     config.input.max_line_bytes, config.input.dead_letter_raw_bytes)?;
//! let sink = JsonLinesSink::create(Some(&PathBuf::from("alerts.jsonl")), None, None)?;
//! let (summary, _sink) = pipeline.run(&mut source, sink, Speed::Max)?;
//! println!("{} events, {} alerts", summary.events, summary.alerts);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod checkpoint;
pub mod config;
mod deadletter;
mod dedup;
mod detector;
mod enrich;
mod metrics;
mod runtime;
mod sink;
mod source;

pub use checkpoint::{
    Barrier, BarrierAck, Checkpoint, CheckpointError, Checkpointed, Control, ControlSender,
    StateParts,
};
pub use config::{Config, ConfigError, Language, LatePolicy};
pub use deadletter::DeadLetter;
pub use detector::{DetectorFactory, StreamDetector};
pub use enrich::Enricher;
pub use metrics::{BatchObserver, BatchReport, Metrics, RuleMetrics, Stage, StageMetrics};
pub use runtime::{
    BuildError, Pipeline, PipelineError, RunOptions, RunSummary, Speed, WatermarkJump,
};
pub use sink::{JsonLinesSink, LateEvent, Sink, SinkError};
pub use source::{LineSource, Origin, RawBatch, RawLine, Source, SourceError, Unreadable};

#[cfg(test)]
mod tests;
