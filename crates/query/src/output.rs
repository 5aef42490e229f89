//! Query results as a table, CSV or JSON lines.

use crate::{QueryError, QueryResult};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty::pretty_format_batches;
use std::io::Write;

/// How `authwatch sql` prints results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// A bordered text table.
    Table,
    /// CSV with a header row (nested values as their text form).
    Csv,
    /// One JSON object per row.
    Json,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(OutputFormat::Table),
            "csv" => Ok(OutputFormat::Csv),
            "json" => Ok(OutputFormat::Json),
            other => Err(format!(
                "unknown format {other:?}: expected table, csv or json"
            )),
        }
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Writes a result in `format`.
pub fn write_result(
    result: &QueryResult,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), QueryError> {
    let io = |e: std::io::Error| QueryError::Io {
        path: "<stdout>".into(),
        source: e,
    };
    let arrow = |e: datafusion::arrow::error::ArrowError| QueryError::Convert(e.to_string());
    match format {
        OutputFormat::Table => {
            let text = if result.batches.is_empty() {
                let empty =
                    datafusion::arrow::record_batch::RecordBatch::new_empty(result.schema.clone());
                pretty_format_batches(&[empty]).map_err(arrow)?
            } else {
                pretty_format_batches(&result.batches).map_err(arrow)?
            };
            writeln!(out, "{text}").map_err(io)?;
        }
        OutputFormat::Csv => {
            let header: Vec<String> = result
                .schema
                .fields()
                .iter()
                .map(|f| csv_field(f.name()))
                .collect();
            writeln!(out, "{}", header.join(",")).map_err(io)?;
            let options = FormatOptions::default().with_null("");
            for b in &result.batches {
                let formatters: Vec<ArrayFormatter<'_>> = b
                    .columns()
                    .iter()
                    .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                    .collect::<Result<_, _>>()
                    .map_err(arrow)?;
                for row in 0..b.num_rows() {
                    let cells: Vec<String> = formatters
                        .iter()
                        .map(|f| csv_field(&f.value(row).to_string()))
                        .collect();
                    writeln!(out, "{}", cells.join(",")).map_err(io)?;
                }
            }
        }
        OutputFormat::Json => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
            let refs: Vec<&datafusion::arrow::record_batch::RecordBatch> =
                result.batches.iter().collect();
            writer.write_batches(&refs).map_err(arrow)?;
            writer.finish().map_err(arrow)?;
        }
    }
    Ok(())
}
