//! `authwatch rules test`: runs the rules' test cases (events in, expected alerts out) and
//! reports one line per case. The case format is described in `docs/RULE_TESTS.md`.

use anyhow::{Context, Result};
use authwatch_detect::RulePack;
use authwatch_detect::ruletest::{self, CaseFile};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `authwatch rules test`
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// A rules directory or file (default: the built-in pack).
    #[arg(long, value_name = "DIR|FILE")]
    rules: Option<PathBuf>,
    /// Case files or directories (default: `tests/` beside the rules given with --rules, else
    /// `rules/tests` in the current directory, else the built-in cases).
    #[arg(value_name = "CASES")]
    cases: Vec<PathBuf>,
    /// Also fail when a rule of the pack lacks a positive or a negative case.
    #[arg(long)]
    require_coverage: bool,
}

/// Where the cases come from when none are named.
fn default_cases(rules: Option<&Path>) -> Result<(String, Vec<CaseFile>)> {
    let dir = match rules {
        Some(p) if p.is_dir() => p.join("tests"),
        Some(p) => p.parent().unwrap_or_else(|| Path::new(".")).join("tests"),
        None => PathBuf::from("rules/tests"),
    };
    if dir.is_dir() {
        let files = ruletest::load_cases(&dir)?;
        return Ok((dir.display().to_string(), files));
    }
    Ok(("built-in cases".to_owned(), ruletest::builtin_cases()?))
}

pub fn run(args: TestArgs) -> Result<ExitCode> {
    let pack = match &args.rules {
        Some(p) => RulePack::load(p)?,
        None => RulePack::builtin()?,
    };
    let (source, files) = if args.cases.is_empty() {
        default_cases(args.rules.as_deref())?
    } else {
        let mut files = Vec::new();
        for p in &args.cases {
            if !p.exists() {
                anyhow::bail!("{}: no such case file or directory", p.display());
            }
            files.extend(
                ruletest::load_cases(p)
                    .with_context(|| format!("loading test cases from {}", p.display()))?,
            );
        }
        let names: Vec<String> = args.cases.iter().map(|p| p.display().to_string()).collect();
        (names.join(", "), files)
    };
    if files.is_empty() {
        anyhow::bail!("no test cases found in {source}");
    }
    let report = ruletest::run_cases(&pack, &files);
    let mut out = crate::stdout();
    write!(out, "{report}")?;
    out.flush()?;
    drop(out);

    // Coverage is judged only when the whole pack's cases are run.
    let mut gaps = Vec::new();
    if args.cases.is_empty() || args.require_coverage {
        for c in ruletest::coverage(&pack, &files) {
            let mut missing = Vec::new();
            if c.positive == 0 {
                missing.push("positive");
            }
            if c.negative == 0 {
                missing.push("negative");
            }
            if !missing.is_empty() {
                gaps.push(format!("{} (no {} case)", c.rule, missing.join(" or ")));
            }
        }
        for gap in &gaps {
            eprintln!("warning: rule {gap}");
        }
    }
    let failed = report.failed() > 0 || (args.require_coverage && !gaps.is_empty());
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
