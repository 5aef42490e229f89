//! The transactional sink: alerts, dead letters, late events and enriched events go to their
//! topics inside a Kafka transaction; at each checkpoint the task states are written to the
//! checkpoint store, the input offsets are added to the transaction and the transaction is
//! committed. A read-committed consumer of the alert topic therefore sees exactly the alerts of
//! the committed input: after a crash, the aborted transaction's alerts are invisible and the
//! input after the last commit is processed again from the state saved with it.

use crate::client::Inputs;
use crate::metrics::KafkaMetrics;
use crate::store::CheckpointStore;
use authwatch_event::{Alert, AuthEvent};
use authwatch_pipeline::{Checkpoint, DeadLetter, LateEvent, Sink, SinkError};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Output topics.
#[derive(Debug, Clone)]
pub(crate) struct Topics {
    pub alerts: String,
    pub dead_letters: String,
    pub enriched: Option<String>,
}

/// Writes results to Kafka in transactions committed at checkpoints.
pub struct KafkaSink {
    producer: ThreadedProducer<DefaultProducerContext>,
    topics: Topics,
    inputs: Arc<Inputs>,
    store: CheckpointStore,
    metrics: Arc<KafkaMetrics>,
    timeout: Duration,
    buf: Vec<u8>,
}

fn fail(output: &str, message: impl std::fmt::Display) -> SinkError {
    SinkError {
        output: output.to_owned(),
        source: std::io::Error::other(message.to_string()),
    }
}

impl KafkaSink {
    pub(crate) fn new(
        producer: ThreadedProducer<DefaultProducerContext>,
        topics: Topics,
        inputs: Arc<Inputs>,
        store: CheckpointStore,
        metrics: Arc<KafkaMetrics>,
        timeout: Duration,
    ) -> Self {
        KafkaSink {
            producer,
            topics,
            inputs,
            store,
            metrics,
            timeout,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Queues one record; waits while librdkafka's queue is full (backpressure).
    fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), SinkError> {
        let mut record = BaseRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        let started = Instant::now();
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((rdkafka::error::KafkaError::MessageProduction(code), r))
                    if code == rdkafka::types::RDKafkaErrorCode::QueueFull
                        && started.elapsed() < self.timeout =>
                {
                    record = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(fail(topic, e)),
            }
        }
    }

    fn json<T: serde::Serialize>(&mut self, topic: &str, value: &T) -> Result<(), SinkError> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, value).map_err(|e| fail(topic, e))?;
        Ok(())
    }

    fn commit(&mut self, checkpoint: &Checkpoint) -> Result<(), String> {
        let positions: BTreeMap<u32, i64> = checkpoint.barrier.positions.iter().copied().collect();
        // 1. The state files, each named by the offset it reflects, before the offsets are
        //    committed: a commit never points at state that is not on disk.
        for (input, state) in &checkpoint.tasks {
            let (Some((topic, partition)), Some(offset)) =
                (self.inputs.get(*input), positions.get(input))
            else {
                continue;
            };
            self.store
                .write(topic, partition, *offset, state)
                .map_err(|e| e.to_string())?;
        }
        // 2. The offsets join the transaction of the alerts they produced; one commit makes
        //    both visible.
        let mut tpl = TopicPartitionList::new();
        for (input, offset) in &positions {
            if let Some((topic, partition)) = self.inputs.get(*input) {
                tpl.add_partition_offset(topic, partition, Offset::Offset(*offset))
                    .map_err(|e| e.to_string())?;
            }
        }
        if tpl.count() > 0 {
            let group = checkpoint
                .barrier
                .token
                .as_ref()
                .and_then(|t| t.downcast_ref::<ConsumerGroupMetadata>())
                .ok_or("the consumer is not in a group (no group metadata)")?;
            self.producer
                .send_offsets_to_transaction(&tpl, group, self.timeout)
                .map_err(|e| format!("adding offsets to the transaction: {e}"))?;
        }
        self.producer
            .commit_transaction(self.timeout)
            .map_err(|e| format!("committing the transaction: {e}"))?;
        self.producer
            .begin_transaction()
            .map_err(|e| format!("beginning a transaction: {e}"))?;
        // 3. Older states can no longer be resumed from.
        for (input, offset) in &positions {
            if let Some((topic, partition)) = self.inputs.get(*input)
                && let Err(e) = self.store.prune(topic, partition, *offset)
            {
                tracing::warn!(error = %e, "old checkpoint files not removed");
            }
        }
        Ok(())
    }
}

fn header(headers: OwnedHeaders, key: &str, value: &str) -> OwnedHeaders {
    headers.insert(Header {
        key,
        value: Some(value),
    })
}

impl Sink for KafkaSink {
    fn alert(&mut self, alert: &Alert) -> Result<(), SinkError> {
        let topic = self.topics.alerts.clone();
        self.json(&topic, alert)?;
        let key = alert.entity.to_string();
        let mut h = OwnedHeaders::new_with_capacity(5);
        h = header(h, "alert_id", &alert.alert_id);
        h = header(h, "rule_id", &alert.rule_id);
        h = header(h, "category", &alert.category);
        h = header(h, "severity", alert.severity.as_str());
        h = header(h, "cause_class", alert.cause_class.as_str());
        self.send(&topic, key.as_bytes(), &self.buf, h)?;
        self.metrics.add_alert();
        Ok(())
    }

    fn dead_letter(&mut self, record: &DeadLetter) -> Result<(), SinkError> {
        let topic = self.topics.dead_letters.clone();
        self.json(&topic, record)?;
        let h = header(OwnedHeaders::new(), "reason", record.reason.as_str());
        let h = header(h, "source", &record.file);
        self.send(&topic, record.file.as_bytes(), &self.buf, h)?;
        self.metrics.add_dead_letter();
        Ok(())
    }

    fn late_event(&mut self, record: &LateEvent) -> Result<(), SinkError> {
        let topic = self.topics.dead_letters.clone();
        self.json(&topic, record)?;
        let h = header(OwnedHeaders::new(), "reason", "late_event");
        let h = header(h, "source", &record.file);
        self.send(&topic, record.file.as_bytes(), &self.buf, h)?;
        self.metrics.add_dead_letter();
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        // Records become visible at the transaction commit of the next checkpoint.
        Ok(())
    }

    fn wants_events(&self) -> bool {
        self.topics.enriched.is_some()
    }

    fn event(&mut self, event: &AuthEvent) -> Result<(), SinkError> {
        let Some(topic) = self.topics.enriched.clone() else {
            return Ok(());
        };
        self.json(&topic, event)?;
        let key = event.user.id.as_str().to_owned();
        self.send(&topic, key.as_bytes(), &self.buf, OwnedHeaders::new())?;
        self.metrics.add_enriched();
        Ok(())
    }

    fn checkpoint(&mut self, checkpoint: Checkpoint) -> Result<(), SinkError> {
        let started = Instant::now();
        match self.commit(&checkpoint) {
            Ok(()) => {
                self.metrics.checkpoint_done(started.elapsed());
                tracing::debug!(
                    id = checkpoint.barrier.id,
                    tasks = checkpoint.tasks.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "checkpoint committed"
                );
                checkpoint.acknowledge(Ok(()));
                Ok(())
            }
            Err(message) => {
                self.metrics.checkpoint_failed();
                checkpoint.acknowledge(Err(message.clone()));
                Err(fail("kafka transaction", message))
            }
        }
    }
}
