//! authwatch's own JSON lines.

use crate::{Limits, Normalizer, RejectKind, Rejection, validate};
use authwatch_event::AuthEvent;

/// The native format: one [`AuthEvent`] JSON object per line, strict (unknown fields rejected).
#[derive(Debug, Clone, Copy, Default)]
pub struct Native;

impl Normalizer for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn normalize(
        &self,
        line: &[u8],
        ingest_time: i64,
        limits: &Limits,
    ) -> Result<AuthEvent, Rejection> {
        // UTF-8 is checked up front so the reason names the byte, instead of serde's generic
        // "invalid unicode" deep inside a string.
        let text = std::str::from_utf8(line).map_err(|e| {
            Rejection::new(
                RejectKind::InvalidUtf8,
                format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()),
            )
        })?;
        if text.trim().is_empty() {
            return Err(Rejection::new(
                RejectKind::EmptyLine,
                "empty line".to_owned(),
            ));
        }
        let mut event: AuthEvent =
            serde_json::from_str(text).map_err(|_| crate::common::diagnose::<AuthEvent>(text))?;
        event.ingest_time = ingest_time;
        validate(&event, limits)?;
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"time":1767603600000,"provider":"okta","event_id":"e1","activity":"logon","outcome":"success"}"#;

    fn reject(line: &[u8]) -> Rejection {
        Native.normalize(line, 7, &Limits::default()).unwrap_err()
    }

    #[test]
    fn accepts_a_valid_line_and_stamps_ingest_time() {
        let ev = Native
            .normalize(OK.as_bytes(), 42, &Limits::default())
            .unwrap();
        assert_eq!(ev.ingest_time, 42);
        assert_eq!(ev.event_id, "e1");
    }

    #[test]
    fn malformed_json_names_the_position() {
        let r = reject(br#"{"time":1767603600000,"provider":"okta","#);
        assert_eq!(r.kind, RejectKind::MalformedJson);
        assert!(r.message.contains("line 1 column"), "{}", r.message);
    }

    #[test]
    fn missing_required_field() {
        let r = reject(
            br#"{"time":1767603600000,"provider":"okta","activity":"logon","outcome":"success"}"#,
        );
        assert_eq!(r.kind, RejectKind::MissingField);
        assert!(r.message.contains("event_id"), "{}", r.message);
    }

    #[test]
    fn wrong_type() {
        let r = reject(br#"{"time":"noon","provider":"okta","event_id":"e","activity":"logon","outcome":"success"}"#);
        assert_eq!(r.kind, RejectKind::WrongType);
        assert!(r.message.contains("invalid type"), "{}", r.message);
    }

    #[test]
    fn wrong_types_name_the_field() {
        // A number where a vocabulary's string belongs: serde_json calls it a syntax error.
        let r = reject(br#"{"time":1767603600000,"provider":"okta","event_id":"e","activity":0,"outcome":"success"}"#);
        assert_eq!(r.kind, RejectKind::WrongType, "{}", r.message);
        assert!(
            r.message.starts_with("activity: invalid type"),
            "{}",
            r.message
        );
        let r = reject(br#"{"time":1767603600000,"provider":"okta","event_id":"e","activity":"logon","outcome":"success","src":{"ip":7}}"#);
        assert_eq!(r.kind, RejectKind::WrongType, "{}", r.message);
        assert!(
            r.message.starts_with("src.ip: invalid type"),
            "{}",
            r.message
        );
        // A number out of range is not relabelled as a missing string.
        let r = reject(br#"{"time":1e400,"provider":"okta","event_id":"e","activity":"logon","outcome":"success"}"#);
        assert!(!r.message.contains("expected a string"), "{}", r.message);
        // Broken JSON stays malformed, with no path.
        let r = reject(br#"{"time":1767603600000,"provider":"okta","event_id":"e","activity":0,"#);
        assert_eq!(r.kind, RejectKind::MalformedJson, "{}", r.message);
    }

    #[test]
    fn value_outside_vocabulary() {
        let r = reject(br#"{"time":1767603600000,"provider":"okta","event_id":"e","activity":"dance","outcome":"success"}"#);
        assert_eq!(r.kind, RejectKind::InvalidValue);
        assert!(r.message.contains("dance"), "{}", r.message);
    }

    #[test]
    fn unknown_field() {
        let r = reject(br#"{"time":1767603600000,"provider":"okta","event_id":"e","activity":"logon","outcome":"success","usr":"x"}"#);
        assert_eq!(r.kind, RejectKind::UnknownField);
    }

    #[test]
    fn invalid_utf8_names_the_byte() {
        let mut line = OK.as_bytes().to_vec();
        line[20] = 0xff;
        let r = reject(&line);
        assert_eq!(r.kind, RejectKind::InvalidUtf8);
        assert!(r.message.contains("byte 20"), "{}", r.message);
    }

    #[test]
    fn impossible_timestamps() {
        // Seconds instead of milliseconds.
        let r = reject(br#"{"time":1767603600,"provider":"okta","event_id":"e","activity":"logon","outcome":"success"}"#);
        assert_eq!(r.kind, RejectKind::ImpossibleTimestamp);
        let r = reject(br#"{"time":-5,"provider":"okta","event_id":"e","activity":"logon","outcome":"success"}"#);
        assert_eq!(r.kind, RejectKind::ImpossibleTimestamp);
        // Far ahead of ingest time when the skew check is on.
        let limits = Limits {
            max_future_skew_ms: Some(60_000),
            ..Limits::default()
        };
        let r = Native
            .normalize(OK.as_bytes(), 1_767_603_600_000 - 3_600_000, &limits)
            .unwrap_err();
        assert_eq!(r.kind, RejectKind::ImpossibleTimestamp);
    }

    #[test]
    fn empty_ids_and_lines() {
        let r = reject(br#"{"time":1767603600000,"provider":"okta","event_id":"","activity":"logon","outcome":"success"}"#);
        assert_eq!(r.kind, RejectKind::MissingField);
        assert_eq!(reject(b"   ").kind, RejectKind::EmptyLine);
    }
}
