//! Typed errors of the SQL side.

use std::path::PathBuf;

/// Something on the SQL side failed. Each variant says whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A `.sql` detection file cannot be used (the author's fault): the message names the file
    /// and, for SQL errors, the position in it (line and column from the top of the file) where
    /// DataFusion gives one.
    #[error("{path}: {message}")]
    Rule {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A query failed: DataFusion's message (with the line and column of the query, when the
    /// parser or planner knows it).
    #[error("{0}")]
    Sql(String),
    /// The statement is not a read-only query (the endpoint and `authwatch sql` only read).
    #[error(
        "read-only: {0} statements are refused; only queries (SELECT, WITH, VALUES), EXPLAIN, DESCRIBE and SHOW of tables, columns, functions, settings or a table's definition are allowed"
    )]
    ReadOnly(String),
    /// A query needed more memory than the session may use (the query's size; retry with a
    /// narrower query).
    #[error("{0}")]
    ResourcesExhausted(String),
    /// Events or alerts could not be converted to Arrow (a bug or a schema change).
    #[error("arrow conversion: {0}")]
    Convert(String),
    /// The archive location or its storage failed (the environment's fault; often retryable).
    #[error("archive {location}: {message}")]
    Archive {
        /// The URL or directory.
        location: String,
        /// What failed.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A setting of the endpoint is unusable (the operator's fault).
    #[error("{0}")]
    Config(String),
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        QueryError::Sql(describe_datafusion_error(&e))
    }
}

/// DataFusion's message without its internal wrapping ("Error during planning: …" is kept, the
/// nested "External error: Arrow error:" prefixes are not).
pub(crate) fn describe_datafusion_error(e: &datafusion::error::DataFusionError) -> String {
    let mut text = e.to_string();
    for prefix in ["External error: ", "Arrow error: "] {
        while let Some(rest) = text.strip_prefix(prefix) {
            text = rest.to_owned();
        }
    }
    text
}
