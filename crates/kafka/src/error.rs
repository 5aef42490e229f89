//! Errors of the Kafka runtime, by whose fault they are.

/// The Kafka runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The configuration cannot be used (operator's fault; not retryable).
    #[error("config: {0}")]
    Config(String),
    /// A client could not be created or a broker call failed (environment's fault; the run
    /// restarts from its last checkpoint).
    #[error("kafka {context}: {source}")]
    Client {
        /// What was being done.
        context: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A checkpoint file could not be written or read.
    #[error("checkpoint {path}: {message}")]
    Store {
        /// The file, directory or object URL.
        path: String,
        /// What failed.
        message: String,
        /// The store could not be reached or an I/O call failed (a network error, an object
        /// store answering 5xx, a full or unmounted volume): the run restarts from its last
        /// checkpoint and asks again. False when what was read is wrong (a checksum mismatch, a
        /// file that is not a checkpoint, a state part that does not restore), which a restart
        /// would only read again, and for a store that cannot be used when the process starts
        /// (a wrong bucket, endpoint or credentials: the operator's to fix).
        retryable: bool,
    },
    /// A checkpoint could not be committed (transaction fenced after a rebalance or a session
    /// timeout, broker away too long, state file not writable); the run restarts from the last
    /// committed checkpoint.
    #[error("checkpoint {id} failed: {message}")]
    Commit {
        /// The barrier id.
        id: u64,
        /// What failed.
        message: String,
    },
    /// The empty state of a partition new to the group could not be stored at its assignment
    /// (disk full, object store unreachable); the run restarts and assigns it again.
    #[error("storing the starting state of {topic}/{partition}: {source}")]
    FreshState {
        /// The partition's topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// What failed.
        #[source]
        source: Box<KafkaError>,
    },
    /// The input topics changed shape (a partition was added); the run restarts and numbers
    /// the partitions afresh.
    #[error("input topics changed: {0}")]
    Topology(String),
    /// A committed offset has no state file at or before it: the checkpoint store is not the
    /// one this group committed with (not shared between instances, or lost). Resuming would
    /// silently forget detector state, so the run stops.
    #[error(
        "{topic}/{partition}: the group committed offset {offset} but {dir} has no state at or \
         before it{legacy}; point checkpoint.dir (or checkpoint.url) at the group's shared store, or \
         reset the group's offsets to start over"
    )]
    MissingState {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The committed offset.
        offset: i64,
        /// The checkpoint directory or URL.
        dir: String,
        /// Where an earlier release kept this group's state, when that holds files (else
        /// empty).
        legacy: String,
    },
    /// The responder's state is missing under its instance's name but an earlier release left
    /// it under the legacy one (a `transactional_id` with characters a file name cannot hold).
    /// Starting empty would silently forget pending approvals, so the run stops.
    #[error(
        "responder state for {instance:?} is missing at {path}, but an earlier release stored it \
         at {legacy}, a name other instance ids may share: move that file to {path} if it is \
         this instance's, or delete it to start the responder empty"
    )]
    LegacyInstanceState {
        /// The instance (transactional) id.
        instance: String,
        /// Where its state is read now.
        path: String,
        /// Where an earlier release wrote it.
        legacy: String,
    },
    /// The responder could not start or stopped on an error (audit output or its state file
    /// not writable, a secret missing); the run restarts from the last checkpoint.
    #[error("responder: {0}")]
    Respond(String),
    /// The pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] authwatch_pipeline::PipelineError),
}

impl KafkaError {
    /// Whether restarting from the last checkpoint may succeed (broker or network trouble,
    /// a fenced transaction after a rebalance), as opposed to a configuration or state problem.
    pub fn is_retryable(&self) -> bool {
        use authwatch_pipeline::PipelineError as P;
        matches!(
            self,
            KafkaError::Client { .. }
                | KafkaError::Store {
                    retryable: true,
                    ..
                }
                | KafkaError::Commit { .. }
                | KafkaError::FreshState { .. }
                | KafkaError::Topology(_)
                | KafkaError::Respond(_)
                | KafkaError::Pipeline(P::Sink(_) | P::Source(_))
        )
    }

    /// This error, as one that ends the run instead of restarting it (a store that cannot be
    /// used when the process starts).
    pub(crate) fn fatal(self) -> Self {
        match self {
            KafkaError::Store { path, message, .. } => KafkaError::Store {
                path,
                message,
                retryable: false,
            },
            other => other,
        }
    }

    pub(crate) fn client(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        KafkaError::Client {
            context: context.into(),
            source,
        }
    }
}
