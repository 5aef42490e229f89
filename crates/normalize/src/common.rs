//! Helpers every provider normalizer shares: line checks, JSON parsing into borrowed structs,
//! timestamps, addresses and the final validation.

use crate::{Limits, RejectKind, Rejection, validate};
use authwatch_event::{AuthEvent, Text};
use serde::Deserialize;
use std::borrow::Cow;
use std::net::IpAddr;

/// A JSON string borrowed from the line when it has no escapes.
///
/// A newtype rather than `Cow<'a, str>` because serde borrows a `Cow` only when it is the
/// field's whole type: inside an `Option` (as almost every provider field is) it would copy
/// every string into a new allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Str<'a>(Cow<'a, str>);

impl<'a> Str<'a> {
    /// A borrowed string.
    pub(crate) fn borrowed(s: &'a str) -> Self {
        Str(Cow::Borrowed(s))
    }

    /// An owned string (one the JSON had to unescape).
    pub(crate) fn owned(s: String) -> Self {
        Str(Cow::Owned(s))
    }
}

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Str<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// UTF-8 and non-empty: checked before any parsing so the reason names the byte.
pub(crate) fn text(line: &[u8]) -> Result<&str, Rejection> {
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
    Ok(text)
}

/// The deepest nesting a line may have for sonic-rs to parse it: far deeper than any provider
/// nests its logs (4–5 levels), and far shallower than a stack overflow needs even in an
/// unoptimized build, where each level of sonic-rs's recursion takes tens of KB of stack.
const SONIC_MAX_DEPTH: usize = 32;

/// Parses a line into a typed, borrowed wire struct.
pub(crate) fn parse<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, Rejection> {
    // sonic-rs skips the many fields authwatch does not read with SIMD, which is where most of
    // the time of a provider line goes. A line it refuses is parsed again by serde_json, whose
    // error classes and line/column messages the dead-letter reasons are built on; that second
    // parse costs only on the rare rejected line.
    //
    // sonic-rs (0.5) skips an unread value by recursion, with no depth limit: a 40 KB line of
    // nested brackets in an unread field overflowed the worker's stack and aborted the process,
    // and on Kafka it would again at every restart. So a line nested deeper than
    // `SONIC_MAX_DEPTH` goes to serde_json instead: it skips unread values without recursion,
    // and stops at 128 levels with an error where it reads. Both give the same result for a
    // line either accepts.
    if shallow(text.as_bytes())
        && let Ok(v) = sonic_rs::from_str(text)
    {
        return Ok(v);
    }
    serde_json::from_str(text).map_err(|_| diagnose::<T>(text))
}

/// Why serde_json refuses a line, with the path of the field at fault (`detail.actor.id:
/// invalid type …`). The line is parsed once more to track the path: that costs only on the
/// rare rejected line.
pub(crate) fn diagnose<'a, T: Deserialize<'a>>(text: &'a str) -> Rejection {
    let mut de = serde_json::Deserializer::from_str(text);
    let err = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(_) => {
            return match de.end() {
                Err(e) => Rejection::from_json(&e),
                // Not reached: serde_json refused the line a moment ago.
                Ok(()) => Rejection::new(
                    RejectKind::MalformedJson,
                    "the line could not be parsed".to_owned(),
                ),
            };
        }
        Err(e) => e,
    };
    let path = err.path().to_string();
    let inner = err.into_inner();
    let mut rejection = Rejection::from_json(&inner);
    // serde_json reports a number or an object where a vocabulary's string belongs as a syntax
    // error ("expected value"), though the line is valid JSON: it is the field's type.
    if rejection.kind == RejectKind::MalformedJson
        && inner.classify() == serde_json::error::Category::Syntax
        && rejection.message.starts_with("expected value")
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    {
        rejection = Rejection::new(
            RejectKind::WrongType,
            format!(
                "invalid type: expected a string at line {} column {}",
                inner.line(),
                inner.column()
            ),
        );
    } else if rejection.kind == RejectKind::MalformedJson
        && inner.classify() == serde_json::error::Category::Syntax
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    {
        // Any other "syntax" error in a line whose structure is sound is a string serde_json
        // cannot turn into text: JSON's grammar allows a lone surrogate escape (`"\ud800"`),
        // Unicode does not. It is the field's value that is wrong, and the reader needs to
        // know which field.
        rejection.kind = RejectKind::InvalidValue;
    }
    if path != "." && rejection.kind != RejectKind::MalformedJson {
        rejection.message = format!("{path}: {}", rejection.message);
    }
    rejection
}

/// Whether the line nests at most `SONIC_MAX_DEPTH` levels.
fn shallow(line: &[u8]) -> bool {
    // A line cannot nest deeper than it has opening brackets: counting them is a loop the
    // compiler vectorizes (tens of ns), and settles every line a provider writes. Only a line
    // with more brackets than that (a long array of objects) is walked.
    openers(line) <= SONIC_MAX_DEPTH || max_depth(line) <= SONIC_MAX_DEPTH
}

/// The deepest nesting of brackets outside strings. Brackets inside strings do not count either
/// way, so text cannot hide nesting from it.
fn max_depth(line: &[u8]) -> usize {
    let mut deepest = 0;
    bracket_depth(line, |depth| deepest = deepest.max(depth));
    deepest
}

/// The nesting of brackets (objects and arrays) outside strings at the end of `line`, calling
/// `opened` with the depth after each opening bracket. One scanner for every question about a
/// line's nesting (how deep it goes, how deep a key sits), so they agree on strings and escapes.
pub(crate) fn bracket_depth(line: &[u8], mut opened: impl FnMut(usize)) -> usize {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in line {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                opened(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    depth
}

/// The `{` and `[` bytes of a line, inside strings or not (an upper bound on its nesting).
fn openers(line: &[u8]) -> usize {
    // Counted in runs of 255 bytes into a `u8`, which the compiler vectorizes (a plain `filter`
    // and `count` into a `usize` is not, and cost five times as much). `[` and `{` differ only
    // in bit 5, so one comparison finds both.
    line.chunks(255)
        .map(|run| {
            run.iter()
                .fold(0u8, |n, &b| n + u8::from((b | 0x20) == b'{')) as usize
        })
        .sum()
}

/// A required string field: absent or empty is a `MissingField` rejection naming the field.
pub(crate) fn required<'a>(field: &str, v: Option<&'a Str<'_>>) -> Result<&'a str, Rejection> {
    match v {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(missing(field)),
    }
}

/// A `MissingField` rejection for `field`.
pub(crate) fn missing(field: &str) -> Rejection {
    Rejection::new(RejectKind::MissingField, format!("missing field `{field}`"))
}

/// An RFC 3339 timestamp field in epoch milliseconds.
pub(crate) fn rfc3339(field: &str, s: &str) -> Result<i64, Rejection> {
    if let Some(ms) = fast_rfc3339_ms(s) {
        return Ok(ms);
    }
    authwatch_event::parse_rfc3339_ms(s).map_err(|_| {
        Rejection::new(
            RejectKind::InvalidValue,
            format!("`{field}` is not an RFC 3339 timestamp: {s:?}"),
        )
    })
}

/// An IP address field; empty or absent is no address, anything else must parse.
pub(crate) fn ip(field: &str, s: Option<&Str<'_>>) -> Result<Option<IpAddr>, Rejection> {
    match s {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        // An IPv4 client seen through a dual-stack socket is written `::ffff:a.b.c.d` by some
        // servers and `a.b.c.d` by others: one address, which must be one key for the
        // per-address rules and one lookup for geo-IP.
        Some(s) => s
            .parse()
            .map(|a: IpAddr| Some(a.to_canonical()))
            .map_err(|_| {
                Rejection::new(
                    RejectKind::InvalidValue,
                    format!("`{field}` is not an IP address: {s:?}"),
                )
            }),
    }
}

/// The domain part of a login name (`ken@contoso.jp` → `contoso.jp`), empty when there is none.
pub(crate) fn domain_of(name: &str) -> Text {
    match name.rsplit_once('@') {
        Some((_, d)) if !d.is_empty() => Text::new(d),
        _ => Text::default(),
    }
}

/// An optional borrowed string as [`Text`], empty when absent.
pub(crate) fn t(s: Option<&Str<'_>>) -> Text {
    s.map(|s| Text::new(s.as_ref())).unwrap_or_default()
}

/// Stamps the ingest time and applies the checks every format shares.
pub(crate) fn finish(
    mut event: AuthEvent,
    ingest_time: i64,
    limits: &Limits,
) -> Result<AuthEvent, Rejection> {
    event.ingest_time = ingest_time;
    validate(&event, limits)?;
    Ok(event)
}

/// ASCII case-insensitive substring test (provider codes and messages vary in case).
pub(crate) fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Why an event could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The event time cannot be written as a calendar date.
    #[error("event time {0} ms is out of range")]
    TimeOutOfRange(i64),
    /// The target format cannot be written (e.g. `auto`).
    #[error("format {0} has no encoder")]
    NoEncoder(&'static str),
}

/// RFC 3339 UTC with millisecond precision.
pub(crate) fn rfc3339_ms(ms: i64) -> Result<String, EncodeError> {
    authwatch_event::format_rfc3339_ms(ms).map_err(|_| EncodeError::TimeOutOfRange(ms))
}

/// Writes a JSON value as one line (no trailing newline).
pub(crate) fn write_json(out: &mut Vec<u8>, v: &serde_json::Value) {
    // Serializing a `Value` into a `Vec` cannot fail: map keys are always strings and the
    // writer never returns an error.
    let _ = serde_json::to_writer(out, v);
}

/// Non-empty text as a JSON string, empty text as `null` (how providers write absent values).
pub(crate) fn or_null(s: &str) -> serde_json::Value {
    if s.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::Value::String(s.to_owned())
    }
}

/// An optional address as a JSON string or `null`.
pub(crate) fn ip_or_null(ip: Option<IpAddr>) -> serde_json::Value {
    match ip {
        Some(ip) => serde_json::Value::String(ip.to_string()),
        None => serde_json::Value::Null,
    }
}

/// The common shapes of RFC 3339 (`2026-01-05T09:00:00.1234567Z`, `…+09:00`) without chrono's
/// general parser, which costs as much as the rest of a short line; anything unusual (leap
/// seconds, lower-case `t`, out-of-range fields) returns `None` and goes to chrono.
pub(crate) fn fast_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b.get(r)?.iter().try_fold(0i64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..3 {
            millis *= 10;
        }
    }
    let offset_min = match b.get(i..)? {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let d = |c: &u8| c.is_ascii_digit().then(|| i64::from(c - b'0'));
            let (h, m) = (d(h1)? * 10 + d(h2)?, d(m1)? * 10 + d(m2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 60 + m;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1_000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_depth_ignores_strings() {
        assert_eq!(max_depth(br#"{"a":1}"#), 1);
        assert_eq!(max_depth(br#"{"a":[{"b":[]}],"c":{}}"#), 4);
        // Brackets in strings, escaped quotes included, neither add nor hide nesting.
        assert_eq!(max_depth(br#"{"a":"[[[{{{","b":"\"]]]]"}"#), 1);
        assert_eq!(max_depth(br#"{"a":[["]]]]]]]]", [[1]]]]}"#), 5);
        assert_eq!(max_depth(br#"{"a":"x\\","b":[1]}"#), 2);
        // Many brackets, shallow: walked, and still for sonic-rs.
        let wide = format!("{{\"a\":[{}1]}}", "[],".repeat(100));
        assert!(openers(wide.as_bytes()) > SONIC_MAX_DEPTH);
        assert!(shallow(wide.as_bytes()));
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(33), "]".repeat(33));
        assert!(!shallow(deep.as_bytes()));
    }

    #[test]
    fn a_string_that_is_no_text_is_an_invalid_value_of_its_field() {
        use crate::Normalizer;
        // A lone surrogate escape: grammatical JSON, but no Unicode text.
        let line = r#"{"uuid":"o1","published":"2026-01-05T00:00:00.000Z","eventType":"user.session.start","outcome":{"result":"FAILURE","reason":"INVALID_CREDENTIALS"},"actor":{"id":"00u1","type":"User","alternateId":"ken\ud800@example.jp"}}"#;
        let r = crate::Okta
            .normalize(line.as_bytes(), 0, &Limits::default())
            .unwrap_err();
        assert_eq!(r.kind, RejectKind::InvalidValue, "{}", r.message);
        assert!(
            r.message.starts_with("actor.alternateId: "),
            "{}",
            r.message
        );
        // An escape JSON does not have is still broken JSON.
        let broken = line.replace(r"\ud800", r"\x");
        let r = crate::Okta
            .normalize(broken.as_bytes(), 0, &Limits::default())
            .unwrap_err();
        assert_eq!(r.kind, RejectKind::MalformedJson, "{}", r.message);
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_ipv4_address() {
        let mapped = Str::borrowed("::ffff:198.51.100.7");
        assert_eq!(
            ip("ipAddress", Some(&mapped)).unwrap(),
            "198.51.100.7".parse().ok()
        );
        // Other IPv6 addresses stay as they are.
        let v6 = Str::borrowed("2001:db8::7");
        assert_eq!(
            ip("ipAddress", Some(&v6)).unwrap(),
            "2001:db8::7".parse().ok()
        );
    }

    #[test]
    fn fast_rfc3339_agrees_with_chrono() {
        for s in [
            "2026-01-05T09:00:00Z",
            "2026-01-05T09:00:00.1Z",
            "2026-01-05T09:00:00.123Z",
            "2026-01-05T09:00:00.1234567Z",
            "2026-01-05T18:00:00.123+09:00",
            "2026-01-05T00:00:00.999-05:30",
            "2024-02-29T23:59:59.999Z",
            "2000-03-01T00:00:00Z",
            "1969-12-31T23:59:59.5Z",
            "2100-12-31T23:59:59Z",
        ] {
            assert_eq!(
                fast_rfc3339_ms(s),
                Some(authwatch_event::parse_rfc3339_ms(s).unwrap()),
                "{s}"
            );
        }
        for s in [
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-05T24:00:00Z",
            "2026-01-05T09:00:00",
            "2026-01-05T09:00:00.Z",
            "2026-01-05T09:00:00+0900",
            "2026-01-05 09:00:00Z",
            "x",
        ] {
            assert_eq!(fast_rfc3339_ms(s), None, "{s}");
        }
        // What the fast path refuses, chrono still reads.
        assert_eq!(
            rfc3339("t", "2026-01-05t09:00:00z").ok(),
            authwatch_event::parse_rfc3339_ms("2026-01-05t09:00:00z").ok()
        );
    }
}
