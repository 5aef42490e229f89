//! `authwatch rules import-sigma`: Sigma detection and correlation rules → native rules (see
//! docs/SIGMA.md). Every generated rule is loaded by the native compiler before anything is
//! written, so a failed import leaves no partial output behind.

use anyhow::{Context, Result};
use serde::Deserialize as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// `authwatch rules import-sigma`
#[derive(Debug, clap::Args)]
pub struct ImportSigmaArgs {
    /// Sigma rule files (YAML, several documents per file allowed); correlations may reference
    /// rules of any of the files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// `-` prints the native rules to stdout as one multi-document YAML; a directory (created if
    /// needed) receives one `<id>.yaml` per rule.
    #[arg(long, value_name = "DIR|-", default_value = "-")]
    pub out: PathBuf,
}

pub fn run(args: ImportSigmaArgs) -> Result<ExitCode> {
    let mut sources = Vec::with_capacity(args.files.len());
    for file in &args.files {
        let mut text = std::fs::read_to_string(file)
            .with_context(|| format!("{}: cannot read Sigma file", file.display()))?;
        // A UTF-8 byte-order mark (Windows editors write one) is not part of the YAML: before
        // `---` the parser would read it as a scalar.
        if text.starts_with('\u{feff}') {
            text.drain(..'\u{feff}'.len_utf8());
        }
        // An empty or comment-only file (a wrong path, an export cut short) would import
        // nothing and succeed.
        if !holds_a_document(&text) {
            anyhow::bail!("{}: no Sigma rule found", file.display());
        }
        sources.push((file.clone(), text));
    }
    let imported = authwatch_detect::sigma::import(&sources)?;
    for note in &imported.notes {
        eprintln!("note: {note}");
    }
    if args.out.as_os_str() == "-" {
        let mut out = crate::stdout();
        write!(out, "{}", imported.to_yaml())?;
        out.flush()?;
    } else {
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("{}: cannot create directory", args.out.display()))?;
        for rule in &imported.rules {
            let path = args.out.join(format!("{}.yaml", rule.id));
            std::fs::write(&path, &rule.yaml)
                .with_context(|| format!("{}: cannot write rule", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a YAML text has a document that is not empty (`null`); a document that does not
/// parse counts, so that the import reports where it is wrong.
fn holds_a_document(text: &str) -> bool {
    serde_yaml_ng::Deserializer::from_str(text).any(|document| {
        !matches!(
            serde_yaml_ng::Value::deserialize(document),
            Ok(serde_yaml_ng::Value::Null)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str = "title: Wrong password\nname: wrong_password\nlogsource:\n  product: authwatch\ndetection:\n  selection:\n    reason: invalid_credentials\n  condition: selection\nlevel: low\n";

    fn import(dir: &std::path::Path, name: &str, text: &str) -> Result<ExitCode> {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        run(ImportSigmaArgs {
            files: vec![file],
            out: dir.join("out"),
        })
    }

    #[test]
    fn a_file_without_a_rule_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("empty.yml", ""),
            ("comments.yml", "# a Sigma rule will go here\n\n"),
            ("separators.yml", "\u{feff}---\n# nothing yet\n---\n...\n"),
        ] {
            let e = import(dir.path(), name, text).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{}: no Sigma rule found", dir.path().join(name).display())
            );
        }
        assert!(!dir.path().join("out").exists(), "nothing written");
        assert!(import(dir.path(), "rule.yml", &format!("# one rule\n---\n{RULE}")).is_ok());
        assert!(dir.path().join("out/wrong_password.yaml").exists());
        std::fs::remove_file(dir.path().join("out/wrong_password.yaml")).unwrap();
        assert!(import(dir.path(), "bom.yml", &format!("\u{feff}---\n{RULE}")).is_ok());
        assert!(dir.path().join("out/wrong_password.yaml").exists());
        // A syntax error is the import's to report, with its line.
        let e = import(dir.path(), "bad.yml", "title: [x\n").unwrap_err();
        assert!(e.to_string().contains("bad.yml:"), "{e}");
    }
}
