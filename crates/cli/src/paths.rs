//! Output paths checked before anything is created.
//!
//! Outputs are created (truncated) before the first input line is read, so an output that names
//! an input file empties that file before it is read: the run then reports success over nothing
//! and the recording is gone. Two outputs that name one file overwrite each other's lines.

use anyhow::{Result, bail};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The file a path names, for comparison.
#[derive(Debug, PartialEq, Eq)]
enum Identity {
    /// An existing regular file, by device and inode: the same file under any spelling, a
    /// symbolic link or another hard link.
    File { dev: u64, ino: u64 },
    /// A file yet to be created: its canonical directory joined with its name.
    New(PathBuf),
}

/// The file `path` names; `None` for what is not a regular file (`/dev/null`, a pipe, a
/// terminal) and for `-`, which any number of outputs may share (they write through one
/// standard-output writer, each record whole: `JsonLinesSink`, `normalize`).
fn identity(path: &Path) -> Option<Identity> {
    if path.as_os_str() == "-" {
        return None;
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Some(Identity::File {
            dev: m.dev(),
            ino: m.ino(),
        }),
        Ok(_) => None,
        Err(_) => {
            let name = path.file_name()?;
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            parent
                .canonicalize()
                .ok()
                .map(|dir| Identity::New(dir.join(name)))
        }
    }
}

/// The file an input names: for `-`, the file standard input reads when that is a regular
/// file (`replay - < events.jsonl`).
fn input_identity(path: &Path) -> Option<Identity> {
    if path.as_os_str() == "-" {
        identity(Path::new("/dev/stdin"))
    } else {
        identity(path)
    }
}

/// Refuses an output that is one of the inputs, or the same file as another output.
/// `outputs` are `(option name, path)`.
pub fn refuse_overwrites(inputs: &[PathBuf], outputs: &[(&str, &Path)]) -> Result<()> {
    let inputs: Vec<(Identity, &Path)> = inputs
        .iter()
        .filter_map(|p| Some((input_identity(p)?, p.as_path())))
        .collect();
    let mut seen: Vec<(Identity, &str)> = Vec::new();
    for &(option, path) in outputs {
        let Some(id) = identity(path) else {
            continue;
        };
        if let Some((_, input)) = inputs.iter().find(|(i, _)| *i == id) {
            let input = if input.as_os_str() == "-" {
                "read from standard input".to_owned()
            } else {
                input.display().to_string()
            };
            bail!(
                "{option} {}: is the input {input}; writing it would erase the input before it \
                 is read",
                path.display(),
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
        // The input under other names: a hard link and a symbolic link.
        let hard = dir.path().join("hard.jsonl");
        std::fs::hard_link(&input, &hard).unwrap();
        let soft = dir.path().join("soft.jsonl");
        std::os::unix::fs::symlink(&input, &soft).unwrap();
        for other_name in [&hard, &soft] {
            let e = refuse_overwrites(&inputs, &[("--alerts", other_name)]).unwrap_err();
            assert!(e.to_string().contains("is the input"), "{e}");
        }
        let e =
            refuse_overwrites(&[], &[("--alerts", &hard), ("--dead-letter", &soft)]).unwrap_err();
        assert!(e.to_string().contains("also the --alerts output"), "{e}");
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
