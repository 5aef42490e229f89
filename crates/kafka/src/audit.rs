//! The audit topic: what the runtime did (start, partition assignment with the offsets and
//! state it resumed from, revocation, stop). Written with an idempotent producer outside the
//! alert transactions, because these are facts about the process, visible even when a
//! transaction later aborts. The responder adds its actions to the same topic.
//!
//! Both producers read librdkafka's delivery report of every record ([`Deliveries`]): a queue
//! that flushed empty says only that every record has its answer, not that the answer was
//! yes. A broker that refuses a record (over the topic's `max.message.bytes`, no permission to
//! write) or a record given up after the producer's retries is a failed audit write: the
//! runtime's own records are logged and counted
//! ([`KafkaMetrics::audit_records_failed`]), a responder's record fails its
//! [`AuditSink::record`](authwatch_respond::AuditSink::record), which stops the responder.

use crate::client::flush_threaded;
use crate::error::KafkaError;
use crate::metrics::KafkaMetrics;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use serde::Serialize;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The delivery reports of an audit producer (its context: librdkafka calls
/// [`ProducerContext::delivery`] once per record, on the producer's own thread).
///
/// A record is sent with a number as its delivery opaque: 0 for a record nobody waits for (the
/// runtime's own), else the number [`Deliveries::expect`] handed out, whose report
/// [`Deliveries::wait`] returns. One record is awaited at a time (the responder writes one
/// record and waits for it before the next).
pub(crate) struct Deliveries {
    /// The topic, for the log.
    topic: String,
    /// Where the runtime counts its failed audit records (`None`: the responder's producer,
    /// whose failures are its caller's errors).
    metrics: Option<Arc<KafkaMetrics>>,
    awaited: Mutex<Awaited>,
    reported: Condvar,
}

/// The record awaited and, once it came, its report.
#[derive(Default)]
struct Awaited {
    /// The last number handed out (0: none yet).
    id: usize,
    report: Option<Result<(), String>>,
}

impl Deliveries {
    fn new(topic: &str, metrics: Option<Arc<KafkaMetrics>>) -> Self {
        Deliveries {
            topic: topic.to_owned(),
            metrics,
            awaited: Mutex::new(Awaited::default()),
            reported: Condvar::new(),
        }
    }

    /// The number to send the next awaited record with; a report of an earlier one that is
    /// still to come (its waiter gave up) is ignored from now on.
    fn expect(&self) -> usize {
        let mut awaited = self.awaited.lock().unwrap_or_else(|p| p.into_inner());
        awaited.id += 1;
        awaited.report = None;
        awaited.id
    }

    /// The report of record `id`, waiting for it up to `timeout`; `None` if none came.
    fn wait(&self, id: usize, timeout: Duration) -> Option<Result<(), String>> {
        let deadline = Instant::now() + timeout;
        let mut awaited = self.awaited.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if awaited.id == id
                && let Some(report) = awaited.report.take()
            {
                return Some(report);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            awaited = self
                .reported
                .wait_timeout(awaited, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// A record could not be queued (its send failed before librdkafka took it).
    fn not_queued(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.audit_record_failed();
        }
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let report = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => {
                tracing::warn!(error = %e, topic = %self.topic, "audit record not delivered");
                if let Some(metrics) = &self.metrics {
                    metrics.audit_record_failed();
                }
                Err(e.to_string())
            }
        };
        if id == 0 {
            return;
        }
        let mut awaited = self.awaited.lock().unwrap_or_else(|p| p.into_inner());
        if awaited.id == id {
            awaited.report = Some(report);
            self.reported.notify_all();
        }
    }
}

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
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    instance: String,
    group: String,
}

impl Audit {
    /// An audit producer for `topic`; records it could not write are counted in `metrics`.
    pub(crate) fn new(
        config: ClientConfig,
        topic: &str,
        instance: &str,
        group: &str,
        metrics: Arc<KafkaMetrics>,
    ) -> Result<Self, KafkaError> {
        // The operator's properties (in `config`) over authwatch's default.
        let mut config = crate::client::with_defaults(&config, &[("linger.ms", "5")]);
        config.set("enable.idempotence", "true");
        let producer = config
            .create_with_context(Deliveries::new(topic, Some(metrics)))
            .map_err(|e| KafkaError::client("creating the audit producer", e))?;
        Ok(Audit {
            producer,
            topic: topic.to_owned(),
            instance: instance.to_owned(),
            group: group.to_owned(),
        })
    }

    /// Queues a record; an audit record that cannot be queued, or that the broker does not
    /// take, is logged and counted, never fatal.
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
        // Opaque 0: nobody waits for its report (a failure is logged and counted there).
        let sent = self.producer.send(
            BaseRecord::with_opaque_to(&self.topic, 0)
                .key(self.instance.as_bytes())
                .payload(&json),
        );
        if let Err((e, _)) = sent {
            tracing::warn!(error = %e, action, "audit record not queued");
            self.producer.context().not_queued();
        }
    }

    /// Waits for queued records (each one's delivery report is served by then).
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
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    timeout: Duration,
}

impl ResponseAuditTopic {
    /// The responder's audit records on `topic`, through a producer of `config` (the brokers
    /// and the operator's properties).
    pub fn new(mut config: ClientConfig, topic: &str) -> Result<Self, KafkaError> {
        config.set("enable.idempotence", "true");
        let producer = config
            .create_with_context(Deliveries::new(topic, None))
            .map_err(|e| KafkaError::client("creating the response audit producer", e))?;
        Ok(ResponseAuditTopic {
            producer,
            topic: topic.to_owned(),
            timeout: Duration::from_secs(30),
        })
    }
}

impl authwatch_respond::AuditSink for ResponseAuditTopic {
    /// Waits for the record's own delivery report, for at most 30 s: the responder moves on
    /// only once the broker has acknowledged it. A refusal (a record over the topic's
    /// `max.message.bytes`, no permission to write), a record given up after the producer's
    /// retries, or no report in time is an error, which stops the responder.
    fn record(
        &mut self,
        record: &authwatch_respond::AuditRecord,
    ) -> Result<(), authwatch_respond::audit::AuditError> {
        let fail = |message: String| authwatch_respond::audit::AuditError {
            output: format!("kafka topic {}", self.topic),
            message,
        };
        let json = serde_json::to_vec(record).map_err(|e| fail(e.to_string()))?;
        let deliveries = self.producer.context();
        let id = deliveries.expect();
        self.producer
            .send(
                BaseRecord::with_opaque_to(&self.topic, id)
                    .key(record.user.name.as_bytes())
                    .payload(&json),
            )
            .map_err(|(e, _)| fail(e.to_string()))?;
        match deliveries.wait(id, self.timeout) {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(fail(format!("not delivered: {e}"))),
            None => Err(fail(format!(
                "not acknowledged within {} s",
                self.timeout.as_secs()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use authwatch_pipeline::config::{RespondMode, ResponseAction};
    use authwatch_respond::AuditSink;
    use authwatch_respond::audit::{AuditFacts, Decision};

    /// A client of a broker that is not there, which gives a record up after 300 ms.
    fn nowhere() -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", "127.0.0.1:9")
            .set("message.timeout.ms", "300");
        c
    }

    /// A responder's audit record of a dry run.
    fn response_record() -> authwatch_respond::AuditRecord {
        let facts = AuditFacts {
            time: 1_767_225_600_000,
            alert_id: "7f1c2a9e-0000-5000-8000-000000000001",
            rule_id: "mfa_fatigue",
            severity: authwatch_event::Severity::High,
            account: "ann@t1.example",
            account_uid: None,
            tenant: Some("t1"),
            mode: RespondMode::DryRun,
            target: "webhook",
            actions: &[ResponseAction::Suspend],
        };
        authwatch_respond::AuditRecord::new(
            &facts,
            ResponseAction::Suspend,
            Decision::DryRun,
            None,
            "would suspend".to_owned(),
        )
    }

    // A record librdkafka gives up on leaves the queue as empty as a delivered one: the
    // responder took that for an acknowledgement and went on without its audit record.
    #[test]
    fn a_responder_record_that_is_not_delivered_is_an_error() {
        let mut topic = ResponseAuditTopic::new(nowhere(), "audit").unwrap();
        let started = Instant::now();
        let e = topic.record(&response_record()).unwrap_err();
        assert!(e.to_string().contains("not delivered"), "{e}");
        assert!(e.to_string().contains("kafka topic audit"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "waited for the 30 s bound"
        );
    }

    // The runtime's own records are not worth stopping for, but each one lost is logged and
    // counted (`audit_records_failed`) instead of vanishing.
    #[test]
    fn a_runtime_record_that_is_not_delivered_is_counted() {
        let metrics = Arc::new(KafkaMetrics::new());
        let audit = Audit::new(nowhere(), "audit", "i-1", "g", Arc::clone(&metrics)).unwrap();
        audit.record("started", Vec::new(), None);
        audit.record("stopped", Vec::new(), None);
        audit.flush();
        assert_eq!(metrics.audit_records_failed(), 2);
    }
}
