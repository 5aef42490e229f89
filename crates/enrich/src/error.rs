//! Typed errors. Each names the file at fault; all are the operator's to fix (bad config or
//! bad file), none is worth retrying unchanged.

use std::path::PathBuf;

pub use crate::config::ConfigError;

/// Building an enricher failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    /// A configuration value is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A geo database exists but cannot be opened (corrupt, not a MaxMind DB, unreadable).
    #[error("{}: cannot open geo database: {source}", .path.display())]
    GeoDatabase {
        /// The file.
        path: PathBuf,
        /// What the MaxMind DB reader said.
        #[source]
        source: maxminddb::MaxMindDbError,
    },
    /// A CIDR list file cannot be read.
    #[error("{}: cannot read CIDR list: {source}", .path.display())]
    CidrRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a CIDR list is neither a CIDR nor an address.
    #[error("{}:{line}: {message}", .path.display())]
    CidrLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong, with the offending text.
        message: String,
    },
}

/// A profile snapshot could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes are not a profile snapshot (corrupt or from another component).
    #[error("profile snapshot is not readable: {0}")]
    Decode(#[from] serde_json::Error),
    /// The snapshot was written by an incompatible version of this crate.
    #[error("profile snapshot has format version {found}, this build reads {supported}")]
    Version {
        /// The version in the snapshot.
        found: u32,
        /// The version this build writes and reads.
        supported: u32,
    },
}
