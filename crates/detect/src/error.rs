//! Rule loading errors: always with the file and, where the YAML allows, line and column.

use std::path::PathBuf;

/// A rule that cannot be loaded. Whose fault: the rule author's; not retryable.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The file could not be read.
    #[error("{path}: cannot read rule file: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid rule (YAML syntax, unknown key, wrong type, unknown value).
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Two rules share an id, or rules reference each other in a cycle.
    #[error("{0}")]
    Pack(String),
}

/// Where `needle` first appears in `text` after `from_line` (1-based), as (line, column);
/// used to point at a semantic error (unknown counter, bad value) that YAML parsing accepted.
pub(crate) fn locate(text: &str, needle: &str) -> (usize, usize) {
    for (i, line) in text.lines().enumerate() {
        if let Some(col) = line.find(needle) {
            return (i + 1, col + 1);
        }
    }
    (0, 0)
}
