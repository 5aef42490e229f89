//! Topic administration and bulk record I/O: creating the output topics at start, and the
//! tools the tests and the benchmark use to load a recorded stream into a topic and read a topic
//! back (real clients against the real broker).

use crate::error::KafkaError;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use std::io::BufRead;
use std::time::{Duration, Instant};

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, KafkaError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| KafkaError::Config(format!("cannot start an async runtime: {e}")))?;
    Ok(rt.block_on(f))
}

/// Creates the topics that do not exist yet (`partitions`, replication = broker default);
/// existing ones are left as they are.
pub fn ensure_topics(config: &ClientConfig, topics: &[(&str, i32)]) -> Result<(), KafkaError> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(|e| KafkaError::client("creating the admin client", e))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(-1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = block_on(admin.create_topics(&new, &opts))?
        .map_err(|e| KafkaError::client("creating topics", e))?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::client(
                    format!("creating topic {name}"),
                    rdkafka::error::KafkaError::AdminOp(code),
                ));
            }
        }
    }
    Ok(())
}

/// Creates `topic` with topic-level settings (`max.message.bytes`, …); tests use it to stand up
/// topics the broker's defaults do not describe.
pub fn create_topic_with(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
    settings: &[(&str, &str)],
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(|e| KafkaError::client("creating the admin client", e))?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    for (k, v) in settings {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in block_on(admin.create_topics([&new], &opts))?
        .map_err(|e| KafkaError::client("creating topics", e))?
    {
        if let Err((name, code)) = r {
            return Err(KafkaError::client(
                format!("creating topic {name}"),
                rdkafka::error::KafkaError::AdminOp(code),
            ));
        }
    }
    Ok(())
}

/// Each topic's `max.message.bytes` as the broker reports it (the topic's own setting or the
/// broker's default), in the order given.
pub fn max_message_bytes(
    config: &ClientConfig,
    topics: &[&str],
) -> Result<Vec<(String, usize)>, KafkaError> {
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(|e| KafkaError::client("creating the admin client", e))?;
    let specs: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let results = block_on(admin.describe_configs(&specs, &opts))?
        .map_err(|e| KafkaError::client("reading the output topics' configs", e))?;
    let mut out = Vec::with_capacity(topics.len());
    for (topic, r) in topics.iter().zip(results) {
        let context = || format!("reading max.message.bytes of topic {topic}");
        let resource = r.map_err(|code| {
            KafkaError::client(context(), rdkafka::error::KafkaError::AdminOp(code))
        })?;
        let value = resource
            .get("max.message.bytes")
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| KafkaError::Config(format!("{}: not reported", context())))?;
        out.push(((*topic).to_owned(), value));
    }
    Ok(out)
}

/// The topics of `topics` that are not usable yet (unknown to the broker, or reported with an
/// error or without partitions), asked through a client the caller already has. Creating one
/// that exists after all is harmless: [`ensure_topics`] accepts "already exists".
///
/// Starting an admin client only to be told that every output topic exists took about 100 ms
/// of every start (its connection and its shutdown); with this check, the start of
/// `authwatch run` up to its first poll went from 160–220 ms to 110–125 ms on loopback.
pub fn missing_topics<'a, C: rdkafka::consumer::ConsumerContext>(
    probe: &BaseConsumer<C>,
    topics: &[(&'a str, i32)],
    timeout: Duration,
) -> Result<Vec<(&'a str, i32)>, KafkaError> {
    let mut missing = Vec::new();
    for &(name, partitions) in topics {
        if !matches!(partitions_of(probe, name, timeout)?, Ok(n) if n > 0) {
            missing.push((name, partitions));
        }
    }
    Ok(missing)
}

/// How many partitions the broker reports for `topic`, or why it reports none (unknown, or an
/// error for the topic). Err only when the metadata request itself fails.
pub(crate) fn partitions_of<C: rdkafka::consumer::ConsumerContext>(
    probe: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Result<usize, String>, KafkaError> {
    let md = probe
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| KafkaError::client(format!("reading metadata of {topic}"), e))?;
    Ok(match md.topics().iter().find(|m| m.name() == topic) {
        None => Err(format!("topic {topic} not found")),
        Some(t) => match t.error() {
            Some(e) => {
                let e = rdkafka::error::KafkaError::MetadataFetch(e.into());
                Err(format!("topic {topic}: {e}"))
            }
            None => Ok(t.partitions().len()),
        },
    })
}

/// Deletes topics (missing ones are ignored).
pub fn delete_topics(config: &ClientConfig, topics: &[&str]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(|e| KafkaError::client("creating the admin client", e))?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    block_on(admin.delete_topics(topics, &opts))?
        .map_err(|e| KafkaError::client("deleting topics", e))?;
    Ok(())
}

/// How records are keyed when a recorded stream is loaded into a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBy {
    /// No key: the producer spreads records over partitions.
    None,
    /// The value of a top-level or dotted JSON field (e.g. `tenant`, `user.name`); records
    /// without it get no key.
    Field(&'static str),
}

/// Produces every line of `reader` as one record of `topic`, idempotently, with the produce
/// time as the record timestamp. Returns the number of records.
pub fn produce_lines(
    config: &ClientConfig,
    topic: &str,
    reader: impl BufRead,
    key: KeyBy,
) -> Result<u64, KafkaError> {
    let mut pc = config.clone();
    pc.set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.kbytes", "262144");
    let producer: ThreadedProducer<DefaultProducerContext> = pc
        .create()
        .map_err(|e| KafkaError::client("creating the producer", e))?;
    let mut n = 0u64;
    for line in reader.lines() {
        let line = line.map_err(|e| KafkaError::Config(format!("reading input: {e}")))?;
        if line.is_empty() {
            continue;
        }
        let k = match key {
            KeyBy::None => None,
            KeyBy::Field(path) => json_field(&line, path),
        };
        send_retrying(&producer, topic, k.as_deref(), line.as_bytes())?;
        n += 1;
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| KafkaError::client("flushing", e))?;
    Ok(n)
}

/// Queues one record, waiting while the local queue is full.
pub fn send_retrying(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: Option<&str>,
    payload: &[u8],
) -> Result<(), KafkaError> {
    let mut record = BaseRecord::to(topic).payload(payload);
    if let Some(k) = key {
        record = record.key(k);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(KafkaError::client(format!("producing to {topic}"), e)),
        }
    }
}

/// A top-level or dotted field of a JSON line, as text.
fn json_field(line: &str, path: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let mut v = &value;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key as text.
    pub key: Option<String>,
    /// Headers as text.
    pub headers: Vec<(String, String)>,
    /// Value.
    pub payload: Vec<u8>,
    /// Record timestamp (ms), when set.
    pub timestamp: Option<i64>,
}

/// Reads `topic` from the beginning with a throw-away consumer until no record arrived for
/// `idle`. `read_committed` hides records of aborted and open transactions.
pub fn read_topic(
    config: &ClientConfig,
    topic: &str,
    read_committed: bool,
    idle: Duration,
) -> Result<Vec<Record>, KafkaError> {
    let mut cc = config.clone();
    cc.set(
        "group.id",
        format!(
            "authwatch-reader-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ),
    )
    .set("enable.auto.commit", "false")
    .set("auto.offset.reset", "earliest")
    .set(
        "isolation.level",
        if read_committed {
            "read_committed"
        } else {
            "read_uncommitted"
        },
    );
    let consumer: BaseConsumer = cc
        .create()
        .map_err(|e| KafkaError::client("creating the reader", e))?;
    // Assigned, not subscribed: no group round trips for a one-off read.
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .map_err(|e| KafkaError::client(format!("reading metadata of {topic}"), e))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                .map_err(|e| KafkaError::client("assigning", e))?;
        }
    }
    consumer
        .assign(&tpl)
        .map_err(|e| KafkaError::client(format!("assigning {topic}"), e))?;
    let mut out = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < idle {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = Instant::now();
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    headers,
                    payload: m.payload().unwrap_or_default().to_vec(),
                    timestamp: m.timestamp().to_millis(),
                });
            }
            Some(Err(e)) => tracing::warn!(error = %e, "reading {topic}"),
            None => {}
        }
    }
    Ok(out)
}
