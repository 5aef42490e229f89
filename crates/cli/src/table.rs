//! Human-readable output: the alert table and the run summary.

use authwatch_event::{Alert, Timestamp};
use authwatch_pipeline::{Language, RunSummary};
use std::fmt::Write;

fn short_window(start: Timestamp, end: Timestamp) -> String {
    let s = start.to_string();
    let e = end.to_string();
    // 2026-01-05T09:00:00.000Z → "2026-01-05 09:00:00"; the end drops its date when it is the
    // same day.
    let s = s.get(..19).unwrap_or(&s).replace('T', " ");
    let e = e.get(..19).unwrap_or(&e).replace('T', " ");
    match (s.get(..10), e.get(..10)) {
        (Some(a), Some(b)) if a == b => format!("{s} → {}", &e[11..]),
        _ => format!("{s} → {e}"),
    }
}

/// The alert table: one row per alert, with its summary indented below.
pub fn alerts(alerts: &[Alert], seen: u64, lang: Language) -> String {
    let mut out = String::new();
    if alerts.is_empty() {
        return "No alerts.".to_owned();
    }
    let entity_width = alerts
        .iter()
        .map(|a| a.entity.to_string().chars().count())
        .max()
        .unwrap_or(6)
        .clamp(6, 48);
    let _ = writeln!(
        out,
        "{:<9} {:<22} {:<entity_width$} WINDOW (UTC)",
        "SEVERITY", "CATEGORY", "ENTITY"
    );
    for a in alerts {
        let entity = a.entity.to_string();
        let _ = writeln!(
            out,
            "{:<9} {:<22} {:<entity_width$} {}",
            a.severity.as_str(),
            a.category,
            entity,
            short_window(a.window.start, a.window.end)
        );
        let _ = writeln!(out, "          ↳ {}", a.summary.get(lang.code()));
    }
    if seen > alerts.len() as u64 {
        let _ = writeln!(
            out,
            "… and {} more alerts (see the JSON lines output).",
            seen - alerts.len() as u64
        );
    }
    out
}

/// The end-of-run summary; `sql_alerts` are the windowed SQL detections' alerts by detection
/// (`s` counts them in its total, not by rule).
pub fn summary(s: &RunSummary, sql_alerts: &[(String, u64)]) -> String {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    // Repeats are rare: named only when there were some.
    let repeated = match s.duplicate_events {
        0 => String::new(),
        n => format!(", {n} repeated events"),
    };
    let mut out = format!(
        "{} lines, {} events, {} alerts, {} dead letters, {} late events{repeated} in {:.2} s ({:.0} events/s)",
        s.lines,
        s.events,
        s.alerts,
        s.dead_letters.iter().map(|(_, n)| n).sum::<u64>(),
        s.late_events,
        secs,
        s.events as f64 / secs
    );
    if !s.dead_letters.is_empty() {
        let parts: Vec<String> = s
            .dead_letters
            .iter()
            .map(|(k, n)| format!("{} {n}", k.as_str()))
            .collect();
        let _ = write!(out, "\ndead letters by reason: {}", parts.join(", "));
    }
    let mut by_category: Vec<(String, u64)> = Vec::new();
    for (id, stats) in &s.rules {
        if stats.alerts > 0 {
            by_category.push((id.clone(), stats.alerts));
        }
    }
    // A SQL twin has its compiled rule's id: marked, so that the two counts read apart.
    for (id, alerts) in sql_alerts {
        if *alerts > 0 {
            by_category.push((format!("{id} (sql)"), *alerts));
        }
    }
    if !by_category.is_empty() {
        let parts: Vec<String> = by_category
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        let _ = write!(out, "\nalerts by rule: {}", parts.join(", "));
    }
    let evicted: u64 = s.rules.iter().map(|(_, r)| r.evicted).sum();
    if evicted > 0 {
        let _ = write!(
            out,
            "\nwarning: {evicted} detector keys evicted early (raise detect.max_keys_per_rule)"
        );
    }
    out
}

/// The rule `normalize` and `explain` follow, for `replay`, `demo` and `sql --input`: a run that
/// read no event at all while it rejected lines (a binary file, the wrong `--format`, a corrupt
/// gzip) fails (exit 2), naming its inputs, instead of succeeding with nothing analysed. An
/// empty input is not a failure: there was nothing to read. Called at the very end, after the
/// summary, whose counts by reason say what went wrong.
pub fn require_events<D: std::fmt::Display>(
    s: &RunSummary,
    inputs: impl IntoIterator<Item = D>,
) -> anyhow::Result<()> {
    let names: Vec<String> = inputs.into_iter().map(|d| d.to_string()).collect();
    match nothing_read(s.events, &s.dead_letters, &names) {
        Some(message) => Err(anyhow::anyhow!(message)),
        None => Ok(()),
    }
}

fn nothing_read(
    events: u64,
    dead_letters: &[(authwatch_normalize::RejectKind, u64)],
    names: &[String],
) -> Option<String> {
    let rejected: u64 = dead_letters.iter().map(|(_, n)| n).sum();
    (events == 0 && rejected > 0).then(|| {
        format!(
            "no event could be read from {}: {rejected} lines rejected, none read (see the \
             counts by reason); check that the input is authentication logs, and --format or \
             input.format",
            names.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use authwatch_normalize::RejectKind;

    #[test]
    fn nothing_readable_fails_and_nothing_at_all_does_not() {
        let names = vec!["a.bin".to_owned(), "b.gz".to_owned()];
        assert_eq!(nothing_read(0, &[], &names), None);
        let rejected = [
            (RejectKind::MalformedJson, 3),
            (RejectKind::UnreadableInput, 1),
        ];
        let message = nothing_read(0, &rejected, &names).unwrap_or_default();
        assert!(
            message.contains("a.bin, b.gz: 4 lines rejected"),
            "{message}"
        );
        assert_eq!(nothing_read(1, &rejected, &names), None);
    }
}
