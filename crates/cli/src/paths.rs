//! Output paths checked before anything is created.
//!
//! Outputs are created (truncated) before the first input line is read, so an output that names
//! an input file empties that file before it is read: the run then reports success over nothing
//! and the recording is gone. Two outputs that name one file overwrite each other's lines.

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// The file a path names, for comparison: the canonical path of an existing regular file, or of
/// a file yet to be created in an existing directory. `None` for standard input/output (`-`)
/// and for what is not a regular file (`/dev/null`, a pipe), which any number of outputs may
/// share.
fn identity(path: &Path) -> Option<PathBuf> {
    if path.as_os_str() == "-" {
        return None;
    }
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => None,
        Ok(_) => path.canonicalize().ok(),
        Err(_) => {
            let name = path.file_name()?;
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            parent.canonicalize().ok().map(|dir| dir.join(name))
        }
    }
}

/// Refuses an output that is one of the inputs, or the same file as another output.
/// `outputs` are `(option name, path)`.
pub fn refuse_overwrites(inputs: &[PathBuf], outputs: &[(&str, &Path)]) -> Result<()> {
    let inputs: Vec<(PathBuf, &Path)> = inputs
        .iter()
        .filter_map(|p| Some((identity(p)?, p.as_path())))
        .collect();
    let mut seen: Vec<(PathBuf, &str)> = Vec::new();
    for &(option, path) in outputs {
        let Some(id) = identity(path) else {
            continue;
        };
        if let Some((_, input)) = inputs.iter().find(|(i, _)| *i == id) {
            bail!(
                "{option} {}: is the input {}; writing it would erase the input before it is \
                 read",
                path.display(),
                input.display()
            );
        }
        if let Some((_, other)) = seen.iter().find(|(o, _)| *o == id) {
            bail!(
                "{option} {}: is also the {other} output; each output needs a file of its own",
                path.display()
            );
        }
        seen.push((id, option));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_may_not_be_an_input_or_another_output() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("events.jsonl");
        std::fs::write(&input, "{}\n").unwrap();
        let inputs = [input.clone()];
        // The input under another spelling.
        let other_spelling = dir.path().join(".").join("events.jsonl");
        let e = refuse_overwrites(&inputs, &[("--alerts", &other_spelling)]).unwrap_err();
        assert!(e.to_string().contains("is the input"), "{e}");
        // Two outputs, one file not yet there.
        let out = dir.path().join("out.jsonl");
        let e =
            refuse_overwrites(&inputs, &[("--alerts", &out), ("--dead-letter", &out)]).unwrap_err();
        assert!(e.to_string().contains("also the --alerts output"), "{e}");
        // Distinct files, standard output and /dev/null (any number of times) are fine.
        let dead = dir.path().join("dead.jsonl");
        let null = Path::new("/dev/null");
        let stdout = Path::new("-");
        refuse_overwrites(
            &inputs,
            &[
                ("--alerts", &out),
                ("--dead-letter", &dead),
                ("--late-events", null),
                ("a", null),
                ("b", stdout),
                ("c", stdout),
            ],
        )
        .unwrap();
    }
}
