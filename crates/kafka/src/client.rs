//! Client configuration shared by the consumer and the producers.

use crate::error::KafkaError;
use authwatch_pipeline::config::KafkaConfig;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaResult;
use rdkafka::producer::{Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The configured brokers, extra properties and the secret properties file, applied to a new
/// client configuration.
pub(crate) fn base_config_impl(kafka: &KafkaConfig) -> Result<ClientConfig, KafkaError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers);
    // librdkafka logs through our context into tracing.
    c.set("log.connection.close", "false");
    for (k, v) in &kafka.properties {
        c.set(k, v);
    }
    if let Some(path) = &kafka.properties_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            KafkaError::Config(format!("kafka.properties_file {}: {e}", path.display()))
        })?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or_else(|| {
                KafkaError::Config(format!(
                    "kafka.properties_file {} line {}: expected key=value",
                    path.display(),
                    i + 1
                ))
            })?;
            c.set(k.trim(), v.trim());
        }
    }
    Ok(c)
}

/// The client configuration of a run: the brokers and the operator's properties
/// (`kafka.properties`, then `kafka.properties_file`), with the keys authwatch must set itself
/// refused (see [`RESERVED`]).
pub(crate) fn base_config(kafka: &KafkaConfig) -> Result<ClientConfig, KafkaError> {
    let config = base_config_impl(kafka)?;
    check_reserved(&config)?;
    Ok(config)
}

/// A client configuration for the brokers of `[kafka]` (with its extra and secret properties),
/// for tools that talk to the same cluster.
pub fn client_config(kafka: &KafkaConfig) -> Result<ClientConfig, KafkaError> {
    base_config_impl(kafka)
}

/// Properties the runtime relies on, with the one value it runs with: an operator's
/// `kafka.properties` or `kafka.properties_file` may repeat that value but not set another.
/// `None`: set from another key of the config, never from the properties.
///
/// - `group.id`: `kafka.group_id` (a repartitioned run's detect stage adds `.detect`; one
///   `group.id` would put both stages into one group);
/// - `transactional.id`: `kafka.transactional_id` (each stage gets its own; one id shared by
///   two producers fences one of them at every commit);
/// - `transaction.timeout.ms`: derived from `checkpoint.interval`, and every broker call is
///   bounded by it (docs/KAFKA.md, "Timeouts");
/// - `enable.idempotence`: transactions need it;
/// - `enable.auto.commit`: offsets are committed in the producer's transactions, with the
///   alerts and state of the records before them; an auto-commit would commit positions whose
///   results are not committed (lost alerts after a crash);
/// - `isolation.level`: an aborted transaction of a provider, or of a repartitioned run's ingest
///   stage, would otherwise be read, and its records processed twice once re-sent;
///   `--until-end` and the lag read the last stable offset.
pub(crate) const RESERVED: &[(&str, Option<&str>)] = &[
    ("group.id", None),
    ("transactional.id", None),
    ("transaction.timeout.ms", None),
    ("enable.idempotence", Some("true")),
    ("enable.auto.commit", Some("false")),
    ("isolation.level", Some("read_committed")),
];

/// Refuses an operator's property that would change what the runtime relies on ([`RESERVED`]),
/// and the incremental rebalance protocols (the source needs the eager one).
fn check_reserved(config: &ClientConfig) -> Result<(), KafkaError> {
    for (key, value) in config.config_map() {
        let refused = |why: &str| {
            Err(KafkaError::Config(format!(
                "kafka.properties (or kafka.properties_file) {key} = {value:?}: {why}"
            )))
        };
        if let Some((_, kept)) = RESERVED.iter().find(|(k, _)| *k == key) {
            match kept {
                Some(kept) if value.trim().eq_ignore_ascii_case(kept) => {}
                Some(kept) => {
                    return refused(&format!(
                        "authwatch runs with {key} = {kept:?} and relies on it (docs/KAFKA.md, \
                         \"Client properties\")"
                    ));
                }
                None => {
                    let instead = match key {
                        "group.id" => "set kafka.group_id instead",
                        "transactional.id" => "set kafka.transactional_id instead",
                        _ => "it is derived from checkpoint.interval",
                    };
                    return refused(&format!("authwatch sets {key} itself; {instead}"));
                }
            }
        }
        // The source relies on the eager protocol: a revocation takes back every partition
        // behind one checkpoint, and an assignment may be replaced with explicit start offsets
        // (`assign`), which the incremental protocols refuse.
        let incremental = match key {
            "partition.assignment.strategy" => value.to_ascii_lowercase().contains("cooperative"),
            "group.protocol" => value.eq_ignore_ascii_case("consumer"),
            _ => false,
        };
        if incremental {
            return refused(
                "authwatch needs the eager rebalance protocol (the classic group protocol with a \
                 non-cooperative assignor)",
            );
        }
    }
    Ok(())
}

/// A client configuration with authwatch's `defaults` under the operator's properties (in
/// `base`): what `kafka.properties` or `kafka.properties_file` sets wins. The keys the runtime
/// must set itself ([`RESERVED`], `message.max.bytes`) are set on the result afterwards.
pub(crate) fn with_defaults(base: &ClientConfig, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    for (key, value) in base.config_map() {
        config.set(key, value);
    }
    config
}

/// This instance's transactional id (also its static group membership id).
pub(crate) fn instance_id(kafka: &KafkaConfig) -> String {
    if let Some(id) = &kafka.transactional_id {
        return id.clone();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "local".to_owned());
    format!("authwatch-{}-{host}", kafka.group_id)
}

/// librdkafka's default `message.max.bytes`, which authwatch's producers keep unless
/// `kafka.properties` sets it: under the broker's default `max.message.bytes` (1,048,588) by more
/// than a record batch's framing, so a record librdkafka accepts is one the broker accepts.
pub(crate) const DEFAULT_MAX_RECORD: usize = 1_000_000;

/// The broker's (and a topic's) default `max.message.bytes`, less the framing of a record
/// batch around one record and lz4's worst-case growth of it.
const BROKER_DEFAULT_MAX_RECORD: usize = 1_048_588 - BATCH_FRAMING;

/// A record batch's framing around one record, and lz4's worst-case growth of it.
const BATCH_FRAMING: usize = 8 * 1024;

/// The smallest `message.max.bytes` accepted. What the sink writes in place of a record too
/// large (a dead letter with up to 4 KiB of detail, JSON-escaped; an alert cut down to fit with
/// 4 KiB of headroom and a key of up to 1 KiB) must itself fit, or the too-large path fails and
/// the run restarts over and over.
pub(crate) const MIN_MAX_RECORD: usize = 64 * 1024;

/// The largest record the transactional producer takes (`message.max.bytes`): set in
/// `kafka.properties` (or the properties file), or librdkafka's default.
pub(crate) fn producer_max_bytes(config: &ClientConfig) -> Result<usize, KafkaError> {
    let Some(value) = config.get("message.max.bytes") else {
        return Ok(DEFAULT_MAX_RECORD);
    };
    let bytes = value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (MIN_MAX_RECORD..=1_000_000_000).contains(n))
        .ok_or_else(|| {
            KafkaError::Config(format!(
                "kafka.properties message.max.bytes = {value:?}: expected a number of bytes \
                 from {MIN_MAX_RECORD} (room for the dead letters and cut-down alerts that \
                 replace a record too large) to 1000000000"
            ))
        })?;
    if bytes > BROKER_DEFAULT_MAX_RECORD {
        tracing::warn!(
            message_max_bytes = bytes,
            "message.max.bytes is above the broker's default max.message.bytes: raise it on the \
             output topics too, or the broker refuses a large record at the commit and the run \
             restarts over and over"
        );
    }
    Ok(bytes)
}

/// The largest record the sink may hand the producer: `producer` (its `message.max.bytes`), or
/// less when an output topic's `max.message.bytes` (`topics`) leaves less room after a record
/// batch's framing. The broker checks the topic's limit only at the commit, where a refusal
/// fails the whole transaction every time it is retried; held to the smallest limit, the
/// producer refuses the record when it is handed over, and the sink writes a dead letter or
/// cuts the alert down instead. A topic too small for even those is a configuration error.
pub(crate) fn fit_to_topics(
    producer: usize,
    topics: &[(String, usize)],
) -> Result<usize, KafkaError> {
    let mut limit = producer;
    for (topic, max) in topics {
        let room = max.saturating_sub(BATCH_FRAMING);
        if room < MIN_MAX_RECORD {
            return Err(KafkaError::Config(format!(
                "topic {topic} has max.message.bytes = {max}: authwatch needs at least {} \
                 (room for the dead letters and cut-down alerts that replace a record too large)",
                MIN_MAX_RECORD + BATCH_FRAMING
            )));
        }
        limit = limit.min(room);
    }
    Ok(limit)
}

/// The input partitions of one run: index (the pipeline's input number) ↔ topic/partition.
#[derive(Debug, Default)]
pub struct Inputs {
    list: Vec<(String, i32)>,
    /// Topic → input number by partition (looked up per record without allocating).
    index: HashMap<String, Vec<Option<u32>>>,
}

impl Inputs {
    /// Numbers every partition of the given topics, in topic then partition order.
    pub fn new(partitions: Vec<(String, i32)>) -> Arc<Self> {
        let mut index: HashMap<String, Vec<Option<u32>>> = HashMap::new();
        for (i, (topic, partition)) in partitions.iter().enumerate() {
            let Ok(p) = usize::try_from(*partition) else {
                continue;
            };
            let slots = index.entry(topic.clone()).or_default();
            if slots.len() <= p {
                slots.resize(p + 1, None);
            }
            slots[p] = Some(i as u32);
        }
        Arc::new(Inputs {
            list: partitions,
            index,
        })
    }

    /// The input number of a partition.
    pub fn index(&self, topic: &str, partition: i32) -> Option<u32> {
        let slots = self.index.get(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| slots.get(p).copied().flatten())
    }

    /// The partition of an input number.
    pub fn get(&self, input: u32) -> Option<(&str, i32)> {
        self.list.get(input as usize).map(|(t, p)| (t.as_str(), *p))
    }

    /// `topic/partition` names, by input number (dead-letter `file` field).
    pub fn names(&self) -> Vec<String> {
        self.list.iter().map(|(t, p)| format!("{t}/{p}")).collect()
    }

    /// All partitions.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// No partitions.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Returns once `producer` is connected to a broker of the cluster itself, not only to a
/// bootstrap address; `topic` is any existing topic, to keep the metadata asked for small.
///
/// For a transactional producer, call it before `init_transactions`. The first metadata reply
/// makes librdkafka replace its bootstrap connection with one to the broker named in the
/// reply. An `init_transactions` in that gap finds no usable broker for its coordinator query
/// and retries only on its next 500 ms timer: 12 of 34 starts measured took 500 ms longer
/// (docs/KAFKA.md). The second request waits for the new connection; with it, none of 46
/// starts did.
pub(crate) fn connect<C: ProducerContext + 'static>(
    producer: &ThreadedProducer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<(), KafkaError> {
    for _ in 0..2 {
        producer
            .client()
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| KafkaError::client("connecting the producer", e))?;
    }
    Ok(())
}

/// Waits until every record queued on `producer` is acknowledged (or given up after the
/// producer's own retries), for at most `timeout`.
///
/// Not `Producer::flush`: while anything is outstanding, rdkafka's flush calls
/// `BaseProducer::poll` with 100 ms, and that poll runs to its deadline even after it has served
/// the delivery report, so flushing one record took 100 ms: every stop, every responder action,
/// and every checkpoint (rdkafka's `commit_transaction` flushes that way first). The
/// `ThreadedProducer`'s own thread serves the delivery reports; this only reads librdkafka's
/// count of records not yet reported (`flush` with a zero timeout), backing off from 1 to
/// 10 ms between reads.
pub(crate) fn flush_threaded<C: ProducerContext + 'static>(
    producer: &ThreadedProducer<C>,
    timeout: Duration,
) -> KafkaResult<()> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match producer.flush(Duration::ZERO) {
            Ok(()) => return Ok(()),
            Err(rdkafka::error::KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                if Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn producer_max_bytes_is_librdkafkas_default_or_the_configured_one() {
        let mut c = ClientConfig::new();
        assert_eq!(producer_max_bytes(&c).unwrap(), DEFAULT_MAX_RECORD);
        c.set("message.max.bytes", "500000");
        assert_eq!(producer_max_bytes(&c).unwrap(), 500_000);
        c.set("message.max.bytes", "65536");
        assert_eq!(producer_max_bytes(&c).unwrap(), MIN_MAX_RECORD);
        // Below 64 KiB the dead letter or cut-down alert that replaces a record too large
        // could itself be too large (up to 4 KiB of detail, 4 KiB of headroom).
        for bad in ["lots", "999", "1000", "5000", "65535", "2000000000", "-1"] {
            c.set("message.max.bytes", bad);
            let e = producer_max_bytes(&c).unwrap_err().to_string();
            assert!(
                e.contains("message.max.bytes") && e.contains("65536"),
                "{e}"
            );
        }
    }

    // An output topic with a smaller max.message.bytes than the producer's would refuse a
    // large record only at the commit, failing the transaction at every retry.
    #[test]
    fn the_record_limit_is_held_to_the_smallest_output_topic() {
        let topics = vec![
            ("alerts".to_owned(), 1_048_588),
            ("dead".to_owned(), 200_000),
        ];
        assert_eq!(
            fit_to_topics(1_000_000, &topics).unwrap(),
            200_000 - 8 * 1024
        );
        assert_eq!(fit_to_topics(100_000, &topics).unwrap(), 100_000);
        assert_eq!(fit_to_topics(1_000_000, &[]).unwrap(), 1_000_000);
        let e = fit_to_topics(1_000_000, &[("tiny".to_owned(), 20_000)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tiny") && e.contains("max.message.bytes"), "{e}");
    }

    #[test]
    fn inputs_number_partitions_in_order() {
        let inputs = Inputs::new(vec![("a".into(), 0), ("a".into(), 1), ("b".into(), 0)]);
        assert_eq!(inputs.index("a", 1), Some(1));
        assert_eq!(inputs.index("b", 0), Some(2));
        assert_eq!(inputs.index("b", 1), None);
        assert_eq!(inputs.index("c", 0), None);
        assert_eq!(inputs.index("a", -1), None);
        assert_eq!(inputs.get(2), Some(("b", 0)));
        assert_eq!(inputs.names(), ["a/0", "a/1", "b/0"]);
    }
}
