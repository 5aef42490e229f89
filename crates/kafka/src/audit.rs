//! The audit topic: what the runtime did (start, partition assignment with the offsets and
//! state it resumed from, revocation, stop). Written with an idempotent producer outside the
//! alert transactions, because these are facts about the process, visible even when a
//! transaction later aborts. The responder adds its actions to the same topic.

use crate::client::flush_threaded;
use crate::error::KafkaError;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One audit record.
#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
    /// When (ms since the epoch).
    pub time: i64,
    /// The instance (transactional id).
    pub instance: &'a str,
    /// The consumer group.
    pub group: &'a str,
    /// `started`, `assigned`, `revoked`, `stopped`, `restarting`.
    pub action: &'a str,
    /// Partitions concerned, with the offset resumed from where known.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<AuditPartition>,
    /// Free text (error that caused a restart).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A partition in an audit record.
#[derive(Debug, Serialize)]
pub struct AuditPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The committed offset resumed from (assignment); `None` = from the start, fresh state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
}

/// The audit producer.
pub struct Audit {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    instance: String,
    group: String,
}

impl Audit {
    pub(crate) fn new(
        config: ClientConfig,
        topic: &str,
        instance: &str,
        group: &str,
    ) -> Result<Self, KafkaError> {
        // The operator's properties (in `config`) over authwatch's default.
        let mut config = crate::client::with_defaults(&config, &[("linger.ms", "5")]);
        config.set("enable.idempotence", "true");
        let producer = config
            .create()
            .map_err(|e| KafkaError::client("creating the audit producer", e))?;
        Ok(Audit {
            producer,
            topic: topic.to_owned(),
            instance: instance.to_owned(),
            group: group.to_owned(),
        })
    }

    /// Queues a record; an audit record that cannot be queued is logged, never fatal.
    pub fn record(&self, action: &str, partitions: Vec<AuditPartition>, detail: Option<String>) {
        let record = AuditRecord {
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            instance: &self.instance,
            group: &self.group,
            action,
            partitions,
            detail,
        };
        tracing::info!(action, instance = %self.instance, "audit");
        let Ok(json) = serde_json::to_vec(&record) else {
            return;
        };
        let sent = self.producer.send(
            BaseRecord::to(&self.topic)
                .key(self.instance.as_bytes())
                .payload(&json),
        );
        if let Err((e, _)) = sent {
            tracing::warn!(error = %e, action, "audit record not queued");
        }
    }

    /// Waits for queued records.
    pub fn flush(&self) {
        if let Err(e) = flush_threaded(&self.producer, Duration::from_secs(10)) {
            tracing::warn!(error = %e, "audit records not flushed");
        }
    }
}

/// The responder's audit records (OCSF Account Change, 3001) on the audit topic, keyed by the
/// account acted on so that one account's records stay in order in one partition. Idempotent
/// and outside the alert transactions, like the runtime's own records: an action taken is a
/// fact even when the transaction of the alert that caused it aborts.
pub struct ResponseAuditTopic {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    timeout: Duration,
}

impl ResponseAuditTopic {
    pub(crate) fn new(mut config: ClientConfig, topic: &str) -> Result<Self, KafkaError> {
        config.set("enable.idempotence", "true");
        let producer = config
            .create()
            .map_err(|e| KafkaError::client("creating the response audit producer", e))?;
        Ok(ResponseAuditTopic {
            producer,
            topic: topic.to_owned(),
            timeout: Duration::from_secs(30),
        })
    }
}

impl authwatch_respond::AuditSink for ResponseAuditTopic {
    /// Waits until the record has left the producer's queue (acknowledged, or given up after
    /// the producer's own retries): the responder moves on only then.
    fn record(
        &mut self,
        record: &authwatch_respond::AuditRecord,
    ) -> Result<(), authwatch_respond::audit::AuditError> {
        let fail = |message: String| authwatch_respond::audit::AuditError {
            output: format!("kafka topic {}", self.topic),
            message,
        };
        let json = serde_json::to_vec(record).map_err(|e| fail(e.to_string()))?;
        self.producer
            .send(
                BaseRecord::to(&self.topic)
                    .key(record.user.name.as_bytes())
                    .payload(&json),
            )
            .map_err(|(e, _)| fail(e.to_string()))?;
        flush_threaded(&self.producer, self.timeout)
            .map_err(|e| fail(format!("not acknowledged: {e}")))
    }
}
