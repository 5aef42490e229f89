//! `authwatch rules`: list and check rule packs.

use anyhow::Result;
use authwatch_detect::RulePack;
use std::path::PathBuf;
use std::process::ExitCode;

/// `authwatch rules …`
#[derive(Debug, clap::Subcommand)]
pub enum RulesCommand {
    /// List the rules of a pack.
    List {
        #[command(flatten)]
        rules: crate::RulesArg,
    },
    /// Load and check rule files; errors name file, line and column.
    Check {
        /// Rule directories or files (default: the built-in pack).
        paths: Vec<PathBuf>,
    },
    /// Run the rules' test cases: events in, expected alerts out.
    Test(crate::rules_test::TestArgs),
    /// Turn Sigma detection and correlation rules into native rules.
    ImportSigma(crate::sigma_cmd::ImportSigmaArgs),
}

fn describe(pack: &RulePack) -> String {
    let mut out = format!(
        "{:<24} {:>3} {:<9} {:<8} {:<10} {:<6} DESCRIPTION\n",
        "RULE", "VER", "SEVERITY", "CAUSE", "ATT&CK", "WINDOW"
    );
    for r in pack.rules() {
        out.push_str(&format!(
            "{:<24} {:>3} {:<9} {:<8} {:<10} {:<6} {}\n",
            r.id,
            r.version,
            r.severity.as_str(),
            r.cause_class.as_str(),
            r.attack_technique.join(","),
            r.window_text,
            r.description
        ));
    }
    out
}

pub fn run(cmd: RulesCommand) -> Result<ExitCode> {
    match cmd {
        RulesCommand::List { rules } => {
            let pack = match rules.rules {
                Some(p) => RulePack::load(&p)?,
                None => RulePack::builtin()?,
            };
            print!("{}", describe(&pack));
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::Test(args) => crate::rules_test::run(args),
        RulesCommand::ImportSigma(args) => crate::sigma_cmd::run(args),
        RulesCommand::Check { paths } => {
            if paths.is_empty() {
                let pack = RulePack::builtin()?;
                println!("built-in pack: {} rules OK", pack.rules().len());
                return Ok(ExitCode::SUCCESS);
            }
            let mut failed = false;
            for p in &paths {
                match RulePack::load(p) {
                    Ok(pack) => println!("{}: {} rules OK", p.display(), pack.rules().len()),
                    Err(e) => {
                        eprintln!("{e}");
                        failed = true;
                    }
                }
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
