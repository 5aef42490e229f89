//! authwatch's Kafka runtime (`authwatch run`): provider topics in a consumer group →
//! normalize → enrich → detect → alert, dead-letter, audit and enriched-events topics, with
//! exactly-once effect.
//!
//! - **Tasks per partition.** Every input partition is its own task with its own detector
//!   state, user profiles and event-time watermark, so a partition's results depend only on its
//!   own ordered records — not on how partitions interleave, nor on which instance owns them.
//!   N instances in one group give the same alerts as one when each detection's key lives in one
//!   partition: key the provider topics by tenant, or turn on `[kafka.repartition]`, which
//!   re-keys events by tenant through an internal topic and merges them deterministically
//!   before detection (see `repartition` and docs/KAFKA.md).
//! - **Checkpoints.** Every `checkpoint.interval` the source sends a barrier through the stages
//!   and the sink adds its offsets to the producer transaction holding the alerts, and commits.
//!   Every `checkpoint.snapshot_interval` the detect stage also snapshots each changed task
//!   (`engine`, `profiles`, `watermark` parts, see [`authwatch_pipeline::Checkpointed`]), and
//!   the sink stores one state file per partition named by the offset it reflects: before the
//!   commit at a revocation or stop, after it (on a thread of its own) otherwise; a partition
//!   new to the group gets the empty state stored at the offset it starts from when assigned.
//!   On assignment the newest state file at or before the committed offset is restored, and
//!   the records up to that offset are replayed with muted outputs.
//! - **Exactly-once effect.** Alerts are produced in that transaction: a read-committed consumer
//!   sees the alerts of exactly the committed input, once. After a crash the open transaction is
//!   aborted (fenced by the restarted instance's transactional id) and the input after the last
//!   commit is processed again from the state stored for it, giving the same alerts with the
//!   same deterministic `alert_id`s. A read-uncommitted consumer may see an aborted alert and its
//!   re-emission: it deduplicates by `alert_id`.
//! - **Failures** of the broker or of a transaction restart the run from the last checkpoint
//!   (with backoff), without operator action.
#![deny(missing_docs)]

pub mod admin;
mod audit;
mod bucket;
mod client;
mod error;
mod metrics;
mod repartition;
mod runner;
mod sink;
mod snapshots;
mod source;
mod store;

pub use audit::{AuditPartition, AuditRecord, ResponseAuditTopic};
pub use client::{Inputs, client_config};
pub use error::KafkaError;
pub use metrics::{KafkaMetrics, PartitionLag, SnapshotStore};
/// librdkafka client settings (re-exported for tools that use [`admin`]).
pub use rdkafka::ClientConfig;
pub use repartition::Role;
pub use runner::{PipelineStage, RunReport, Runtime, SinkLayer};
pub use store::CheckpointStore;

/// librdkafka's own log lines, at the matching tracing level.
pub(crate) fn log_librdkafka(
    client: &str,
    level: rdkafka::config::RDKafkaLogLevel,
    fac: &str,
    message: &str,
) {
    use rdkafka::config::RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!(client, fac, "librdkafka: {message}")
        }
        L::Warning => tracing::warn!(client, fac, "librdkafka: {message}"),
        L::Notice | L::Info => tracing::info!(client, fac, "librdkafka: {message}"),
        L::Debug => tracing::debug!(client, fac, "librdkafka: {message}"),
    }
}
