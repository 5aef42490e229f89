//! `authwatch rules import-sigma`: Sigma detection and correlation rules → native rules (see
//! docs/SIGMA.md). Every generated rule is loaded by the native compiler before anything is
//! written, so a failed import leaves no partial output behind.

use anyhow::{Context, Result};
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
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("{}: cannot read Sigma file", file.display()))?;
        sources.push((file.clone(), text));
    }
    let imported = authwatch_detect::sigma::import(&sources)?;
    for note in &imported.notes {
        eprintln!("note: {note}");
    }
    if args.out.as_os_str() == "-" {
        print!("{}", imported.to_yaml());
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
