//! `authwatch eval`: recall and precision of alerts against labels.

use anyhow::{Context, Result, bail};
use authwatch_event::Alert;
use authwatch_gen::{EvalOptions, Label, evaluate};
use serde::de::DeserializeOwned;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `authwatch eval`
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Labels file written by `authwatch gen --labels`.
    #[arg(long, value_name = "FILE")]
    labels: PathBuf,
    /// Alert files (JSON lines).
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

/// Reads JSON lines; a bad line is an error naming the file and line. A UTF-8 byte-order mark
/// (Windows tools write one) is not part of the first line, as for every other input.
pub fn read_json_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: cannot read", path.display(), i + 1))?;
        let line = match line.strip_prefix('\u{feff}') {
            Some(rest) if i == 0 => rest,
            _ => line.as_str(),
        };
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a valid record", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    let labels: Vec<Label> = read_json_lines(&args.labels)?;
    let mut alerts: Vec<Alert> = Vec::new();
    for path in &args.alerts {
        alerts.extend(read_json_lines::<Alert>(path)?);
    }
    let slack_ms = authwatch_detect::parse_duration_ms(&args.slack).map_err(anyhow::Error::msg)?;
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
}
