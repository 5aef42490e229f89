//! Dead-letter records: every line that did not become an event, with where and why.

use crate::source::Origin;
use authwatch_normalize::{RejectKind, Rejection};
use serde::Serialize;

/// One rejected line, as written to the dead-letter output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// The input (file path, `-`, or later `topic/partition`).
    pub file: String,
    /// 1-based line number in the input.
    pub line: u64,
    /// Byte offset of the line's start in the (decompressed) input.
    pub offset: u64,
    /// The class of problem.
    pub reason: RejectKind,
    /// What exactly is wrong, with the JSON position where there is one.
    pub detail: String,
    /// The line's head (lossy UTF-8), at most `input.dead_letter_raw_bytes` bytes.
    pub raw: String,
    /// The line's full length in bytes.
    pub raw_len: u64,
}

impl DeadLetter {
    /// A record for a line at `origin` of input `file`.
    pub fn new(
        file: &str,
        origin: Origin,
        rejection: Rejection,
        raw: &[u8],
        raw_len: u64,
        keep: usize,
    ) -> Self {
        let head = &raw[..raw.len().min(keep)];
        DeadLetter {
            file: file.to_owned(),
            line: origin.line,
            offset: origin.offset,
            reason: rejection.kind,
            detail: rejection.message,
            raw: String::from_utf8_lossy(head).into_owned(),
            raw_len,
        }
    }
}
