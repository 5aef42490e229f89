//! `authwatch eval`: recall and precision of alerts against labels.

use anyhow::{Context, Result, bail};
use authwatch_event::Alert;
use authwatch_gen::{EvalOptions, Label, evaluate};
use authwatch_pipeline::{LineSource, RawBatch, Source};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `authwatch eval`
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Labels file written by `authwatch gen --labels` (gzip-compressed or not; `-` reads
    /// standard input).
    #[arg(long, value_name = "FILE")]
    labels: PathBuf,
    /// Alert files (JSON lines, gzip-compressed or not; `-` reads standard input).
    #[arg(required = true, value_name = "ALERTS")]
    alerts: Vec<PathBuf>,
    /// Only these categories (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Time slack when matching an alert's window to a label's, e.g. `1h`.
    #[arg(long, default_value = "1h")]
    slack: String,
    /// Exit 1 unless every evaluated category has recall 1.0 and no false positive.
    #[arg(long)]
    strict: bool,
}

/// Longest line read: far beyond any label or alert, and the most the pipeline's own inputs
/// may be given (`input.max_line_bytes`); a longer line is an error rather than a truncated
/// record.
const MAX_LINE_BYTES: usize = 256 << 20;

/// Lines parsed per batch read.
const BATCH_LINES: usize = 4096;

/// Reads JSON lines, gzip-compressed or not (`gen --labels x.jsonl.gz` writes gzip): read by
/// the pipeline's own [`LineSource`], so that eval takes every file a replay takes (gzip told
/// by its magic bytes, not the name; `-` is standard input; a UTF-8 byte-order mark and CRLF
/// line ends as other inputs). A bad or unreadable line is an error naming the file and line.
pub fn read_json_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let mut source =
        LineSource::open_files(std::slice::from_ref(&path.to_path_buf()), MAX_LINE_BYTES, 0)?;
    let name = path.display();
    let mut batch = RawBatch::default();
    let mut out = Vec::new();
    while source.fill(&mut batch, BATCH_LINES)? {
        for line in &batch.lines {
            let n = line.origin.line;
            if line.len > MAX_LINE_BYTES as u64 {
                bail!("{name}:{n}: line longer than {MAX_LINE_BYTES} bytes");
            }
            let bytes = batch.bytes(line);
            if bytes.trim_ascii().is_empty() {
                continue;
            }
            out.push(
                serde_json::from_slice(bytes)
                    .with_context(|| format!("{name}:{n}: not a valid record"))?,
            );
        }
        // After the lines read before it: a record there is reported where it is, first.
        if let Some(u) = batch.unreadable.first() {
            bail!("{name}:{}: {}", u.origin.line, u.message);
        }
    }
    Ok(out)
}

/// The most `--slack` may be: the matching adds and subtracts it from event times in
/// milliseconds, which a slack near `i64::MAX` ms (`--slack 9223372036854775s`) overflows,
/// and a century (36,525 days) is already more than any recording spans.
const MAX_SLACK_MS: i64 = 36_525 * 86_400_000;

/// `--slack`, in milliseconds.
fn parse_slack(text: &str) -> Result<i64> {
    let ms =
        authwatch_detect::parse_duration_ms(text).map_err(|e| anyhow::anyhow!("--slack: {e}"))?;
    if ms > MAX_SLACK_MS {
        bail!("--slack {text}: more than 100 years");
    }
    Ok(ms)
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    // Before the files are read: a mistyped option should not wait for a large file.
    let slack_ms = parse_slack(&args.slack)?;
    let stdin_reads = std::iter::once(&args.labels)
        .chain(&args.alerts)
        .filter(|p| p.as_os_str() == "-")
        .count();
    if stdin_reads > 1 {
        // The second reading of standard input would find it at its end: no records, silently.
        bail!("standard input (-) can be given only once among --labels and the alert files");
    }
    let labels: Vec<Label> = read_json_lines(&args.labels)?;
    let mut alerts: Vec<Alert> = Vec::new();
    for path in &args.alerts {
        alerts.extend(read_json_lines::<Alert>(path)?);
    }
    let opts = EvalOptions {
        slack_ms,
        only: args.only.clone(),
    };
    let report = evaluate(&labels, &alerts, &opts);
    if report.rows.is_empty() {
        bail!("nothing to evaluate: no labels or alerts in the selected categories");
    }
    println!("{report}");
    let perfect = report
        .rows
        .iter()
        .all(|r| r.missed == 0 && r.false_positives == 0);
    Ok(if args.strict && !perfect {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.jsonl");
        std::fs::write(&path, "\u{feff}{\"a\":1}\r\n\n{\"a\":2}\n").unwrap();
        let values: Vec<serde_json::Value> = read_json_lines(&path).unwrap();
        assert_eq!(
            values,
            [serde_json::json!({"a": 1}), serde_json::json!({"a": 2})]
        );
        // Only at the start of the file: elsewhere it is a bad line, named.
        std::fs::write(&path, "{\"a\":1}\n\u{feff}{\"a\":2}\n").unwrap();
        let e = read_json_lines::<serde_json::Value>(&path).unwrap_err();
        assert!(format!("{e:#}").contains("labels.jsonl:2:"), "{e:#}");
    }

    fn gzip(text: &str) -> Vec<u8> {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        gz.finish().unwrap()
    }

    /// `gen --labels x.jsonl.gz` writes gzip; eval reads it, told by the magic bytes, not the
    /// name, and still names the file and line of a bad record in it.
    #[test]
    fn gzip_files_are_read_and_their_bad_lines_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.jsonl.gz");
        std::fs::write(&path, gzip("{\"a\":1}\r\n\n{\"a\":2}\n")).unwrap();
        let values: Vec<serde_json::Value> = read_json_lines(&path).unwrap();
        assert_eq!(
            values,
            [serde_json::json!({"a": 1}), serde_json::json!({"a": 2})]
        );
        let unnamed = dir.path().join("labels");
        std::fs::write(&unnamed, gzip("{\"a\":1}\n")).unwrap();
        let values: Vec<serde_json::Value> = read_json_lines(&unnamed).unwrap();
        assert_eq!(values, [serde_json::json!({"a": 1})]);
        std::fs::write(&path, gzip("{\"a\":1}\nnot json\n")).unwrap();
        let e = read_json_lines::<serde_json::Value>(&path).unwrap_err();
        assert!(format!("{e:#}").contains("labels.jsonl.gz:2: "), "{e:#}");
        // A stream cut short: the line where it stops, not a silent end of the records.
        let text: String = (0..5000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        let whole = gzip(&text);
        std::fs::write(&path, &whole[..whole.len() - 40]).unwrap();
        let e = read_json_lines::<serde_json::Value>(&path).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.starts_with(&format!("{}:", path.display())), "{e}");
        assert!(e.contains("could not be read"), "{e}");
    }

    /// `--slack` names itself when it is not a duration, and refuses one so long that the
    /// matching's arithmetic on event times would overflow.
    #[test]
    fn a_bad_slack_names_the_option() {
        assert_eq!(parse_slack("90m").unwrap(), 5_400_000);
        for bad in ["5", "1x", "9223372036854775s", "101y"] {
            let e = parse_slack(bad).unwrap_err().to_string();
            assert!(e.starts_with("--slack"), "{bad}: {e}");
        }
    }
}
