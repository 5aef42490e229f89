//! Why a line did not become an event.

/// The class of a rejection: a stable, bounded label for counters and dead-letter records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectKind {
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The line is not well-formed JSON (syntax error or truncated).
    MalformedJson,
    /// A required field is absent or empty.
    MissingField,
    /// A field has the wrong JSON type.
    WrongType,
    /// A field holds a value outside its vocabulary or range.
    InvalidValue,
    /// A field the format does not know (the native format is strict so typos are caught).
    UnknownField,
    /// The event time is impossible (before 2000, after 2100, far in the future).
    ImpossibleTimestamp,
    /// The line is longer than the configured limit.
    LineTooLong,
    /// The line is empty or only whitespace.
    EmptyLine,
    /// No format accepts the line.
    UnknownFormat,
    /// The rest of an input could not be read (a truncated or corrupt gzip stream, an I/O
    /// error): the lines before it were read; the input ends here.
    UnreadableInput,
    /// The event was read, but a record made from it (its enriched form, an alert) is too large
    /// for the Kafka producer to write: the dead letter keeps its head instead.
    OutputTooLarge,
}

impl RejectKind {
    /// Every kind, for counters.
    pub const ALL: &'static [RejectKind] = &[
        RejectKind::InvalidUtf8,
        RejectKind::MalformedJson,
        RejectKind::MissingField,
        RejectKind::WrongType,
        RejectKind::InvalidValue,
        RejectKind::UnknownField,
        RejectKind::ImpossibleTimestamp,
        RejectKind::LineTooLong,
        RejectKind::EmptyLine,
        RejectKind::UnknownFormat,
        RejectKind::UnreadableInput,
        RejectKind::OutputTooLarge,
    ];

    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectKind::InvalidUtf8 => "invalid_utf8",
            RejectKind::MalformedJson => "malformed_json",
            RejectKind::MissingField => "missing_field",
            RejectKind::WrongType => "wrong_type",
            RejectKind::InvalidValue => "invalid_value",
            RejectKind::UnknownField => "unknown_field",
            RejectKind::ImpossibleTimestamp => "impossible_timestamp",
            RejectKind::LineTooLong => "line_too_long",
            RejectKind::EmptyLine => "empty_line",
            RejectKind::UnknownFormat => "unknown_format",
            RejectKind::UnreadableInput => "unreadable_input",
            RejectKind::OutputTooLarge => "output_too_large",
        }
    }

    /// Position in [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A rejected line: its class and a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct Rejection {
    /// The class.
    pub kind: RejectKind,
    /// What is wrong, with the JSON position when there is one.
    pub message: String,
}

impl Rejection {
    /// A rejection of `kind` saying `message`.
    pub fn new(kind: RejectKind, message: String) -> Self {
        Rejection { kind, message }
    }

    /// Classifies a serde_json error. serde_json reports data errors as text only, so the class
    /// comes from its stable message prefixes; the message keeps serde's line and column.
    pub fn from_json(err: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let message = err.to_string();
        let kind = match err.classify() {
            Category::Syntax | Category::Eof | Category::Io => RejectKind::MalformedJson,
            Category::Data => {
                if message.starts_with("missing field") {
                    RejectKind::MissingField
                } else if message.starts_with("invalid type") {
                    RejectKind::WrongType
                } else if message.starts_with("unknown field") {
                    RejectKind::UnknownField
                } else {
                    RejectKind::InvalidValue
                }
            }
        };
        Rejection { kind, message }
    }
}
