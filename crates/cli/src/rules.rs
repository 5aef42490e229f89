//! `authwatch rules`: list and check rule packs.

use anyhow::Result;
use authwatch_detect::{RuleError, RulePack};
use authwatch_event::{Lang, duration_text};
use std::io::Write;
use std::path::{Path, PathBuf};
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
        "{:<24} {:>3} {:<9} {:<8} {:<10} {:<6} {:<8} DESCRIPTION\n",
        "RULE", "VER", "SEVERITY", "CAUSE", "ATT&CK", "WINDOW", "HISTORY"
    );
    for r in pack.rules() {
        out.push_str(&format!(
            "{:<24} {:>3} {:<9} {:<8} {:<10} {:<6} {:<8} {}\n",
            r.id,
            r.version,
            r.severity.as_str(),
            r.cause_class.as_str(),
            r.attack_technique.join(","),
            r.window_text,
            duration_text(r.history_ms(), Lang::En),
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
            let mut out = crate::stdout();
            write!(out, "{}", describe(&pack))?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::Test(args) => crate::rules_test::run(args),
        RulesCommand::ImportSigma(args) => crate::sigma_cmd::run(args),
        RulesCommand::Check { paths } => {
            if paths.is_empty() {
                let pack = RulePack::builtin()?;
                writeln!(
                    crate::stdout(),
                    "built-in pack: {} rules OK",
                    pack.rules().len()
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut failed = false;
            for p in &paths {
                match check(p) {
                    Ok(n) => writeln!(crate::stdout(), "{}: {n} rules OK", p.display())?,
                    Err(errors) => {
                        for e in errors {
                            eprintln!("{e}");
                        }
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

/// The rule files of a directory as [`RulePack::load`] reads them (`*.yaml` and `*.yml`, not
/// in subdirectories, by name), or the one file.
fn rule_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let file = entry?.path();
        if file
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("yaml") || x.eq_ignore_ascii_case("yml"))
        {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

/// Checks a rules directory or file: the number of rules, or every error found. Loading stops
/// at the first bad file, so each file is also loaded on its own, and every file that does not
/// load (YAML syntax, unknown keys or values, each with its line) is reported. What only the
/// pack as a whole can tell (duplicate ids, rules that follow unknown ones, cycles) is checked
/// once every file loads: a file on its own may follow rules of the others.
fn check(path: &Path) -> Result<usize, Vec<RuleError>> {
    let whole = match RulePack::load(path) {
        Ok(pack) => return Ok(pack.rules().len()),
        Err(e) => e,
    };
    let files = match rule_files(path) {
        Ok(files) => files,
        Err(_) => return Err(vec![whole]),
    };
    let errors: Vec<RuleError> = files
        .iter()
        .filter_map(|file| RulePack::load(file).err())
        .filter(|e| !matches!(e, RuleError::Pack(_)))
        .collect();
    Err(if errors.is_empty() {
        vec![whole]
    } else {
        errors
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule with the id given, following `after` when it is not empty.
    fn rule(id: &str, after: &str) -> String {
        let after = if after.is_empty() {
            String::new()
        } else {
            format!("after:\n  rules: [{after}]\n  within: 1h\n")
        };
        format!(
            "id: {id}\nversion: 1\ndescription: A user reported an MFA request as fraudulent\n\
             category: mfa_fraud_report\nseverity: high\ncause_class: attack\nkey: [user]\n\
             filter:\n  reason: user_reported_fraud\n{after}window: 1h\ncounters:\n  reports: {{}}\n\
             fire_when:\n  any: [\"reports >= 1\"]\nsuppress: 1h\n\
             summary:\n  en: \"{{user}} reported fraud.\"\n  ja: \"{{user}} が不正を報告しました。\"\n\
             steps:\n  en: [\"Reset the password.\"]\n  ja: [\"パスワードをリセットしてください。\"]\n"
        )
    }

    /// Every bad file is reported, each with its own file and line; a rule following one of
    /// another file is not an error of its file.
    #[test]
    fn check_reports_every_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("a_good.yaml", &rule("good_one", ""));
        write(
            "b_bad.yaml",
            &rule("bad_one", "").replacen("severity: high", "severity: urgent", 1),
        );
        write(
            "c_bad.yml",
            &format!("{}not_a_key: 1\n", rule("bad_two", "")),
        );
        write("d_follows.yaml", &rule("follows", "good_one"));
        write("e_syntax.yaml", "id: [broken\n");
        write("notes.txt", "not a rule");
        let errors = check(dir.path()).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{text:#?}");
        for (e, file) in text
            .iter()
            .zip(["b_bad.yaml", "c_bad.yml", "e_syntax.yaml"])
        {
            let at = format!("{}:", dir.path().join(file).display());
            assert!(e.starts_with(&at), "{e}");
            // With a line number.
            assert!(
                e[at.len()..].starts_with(|c: char| c.is_ascii_digit()),
                "{e}"
            );
        }
        // Fixed, the pack's own checks run: a duplicate id spans two files.
        write("b_bad.yaml", &rule("good_one", ""));
        write("c_bad.yml", &rule("bad_two", ""));
        write("e_syntax.yaml", &rule("three", ""));
        let errors = check(dir.path()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("good_one is defined twice"),
            "{}",
            errors[0]
        );
        write("b_bad.yaml", &rule("one", ""));
        assert_eq!(check(dir.path()).unwrap(), 5);
        assert_eq!(check(&dir.path().join("a_good.yaml")).unwrap(), 1);
    }
}
