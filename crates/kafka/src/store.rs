//! Checkpoint files: one per partition and committed offset, holding the named state parts.
//!
//! Layout: `<dir>/<group>/<topic>/<partition>/<offset>.ckpt`. A file is written to a temporary
//! name, synced and renamed, so a crash leaves either the old set or the new file whole. The
//! state of a partition at an offset is a function of the partition's records before it (each
//! partition is its own task), so two instances writing the same file write the same bytes.
//!
//! State that is global to an instance rather than per partition (the responder's incidents,
//! queue and breaker) is one file per instance, `<dir>/<group>/@instance/<instance>.ckpt`
//! (`@` is not valid in a topic name), in the same format, replaced at each checkpoint.
//!
//! Format: `AWCKPT1\n`, then per part: name length (u32 LE), name, data length (u64 LE), data;
//! then an xxh3-64 of everything before it (u64 LE), so a torn or corrupted file is detected.

use crate::error::KafkaError;
use authwatch_pipeline::StateParts;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"AWCKPT1\n";

/// The checkpoint directory of one consumer group.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    root: PathBuf,
}

impl CheckpointStore {
    /// The store under `dir` for `group` (created on first write).
    pub fn new(dir: &Path, group: &str) -> Self {
        CheckpointStore {
            root: dir.join(sanitize(group)),
        }
    }

    /// The group's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.root.join(sanitize(topic)).join(partition.to_string())
    }

    fn err(path: &Path, message: impl std::fmt::Display) -> KafkaError {
        KafkaError::Store {
            path: path.to_owned(),
            message: message.to_string(),
        }
    }

    fn instance_path(&self, instance: &str) -> (PathBuf, String) {
        (
            self.root.join("@instance"),
            format!("{}.ckpt", sanitize(instance)),
        )
    }

    /// Replaces the instance-wide state of `instance` (the responder's).
    pub fn write_instance(&self, instance: &str, state: &StateParts) -> Result<(), KafkaError> {
        let (dir, name) = self.instance_path(instance);
        Self::write_file(&dir, &name, state)
    }

    /// The instance-wide state of `instance`, if it was ever written.
    pub fn load_instance(&self, instance: &str) -> Result<Option<StateParts>, KafkaError> {
        let (dir, name) = self.instance_path(instance);
        Self::read_file(&dir.join(name))
    }

    /// Writes the state of `topic/partition` that reflects every record before `offset`.
    pub fn write(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        state: &StateParts,
    ) -> Result<(), KafkaError> {
        Self::write_file(
            &self.partition_dir(topic, partition),
            &format!("{offset}.ckpt"),
            state,
        )
    }

    fn write_file(dir: &Path, name: &str, state: &StateParts) -> Result<(), KafkaError> {
        std::fs::create_dir_all(dir).map_err(|e| Self::err(dir, e))?;
        let mut bytes = Vec::with_capacity(
            MAGIC.len() + state.parts.values().map(|v| v.len() + 64).sum::<usize>(),
        );
        bytes.extend_from_slice(MAGIC);
        for (name, data) in &state.parts {
            bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
            bytes.extend_from_slice(data);
        }
        let sum = xxhash_rust::xxh3::xxh3_64(&bytes);
        bytes.extend_from_slice(&sum.to_le_bytes());
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // The rename is durable only once the directory entry is.
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| Self::err(&path, e))
    }

    fn read_file(path: &Path) -> Result<Option<StateParts>, KafkaError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::err(path, e)),
        };
        decode(&bytes)
            .map(Some)
            .map_err(|m| Self::err(path, format!("corrupt checkpoint file: {m}")))
    }

    /// The state of `topic/partition` at exactly `offset`, if a file holds it.
    pub fn load(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Option<StateParts>, KafkaError> {
        Self::read_file(
            &self
                .partition_dir(topic, partition)
                .join(format!("{offset}.ckpt")),
        )
    }

    /// Offsets with a state file for `topic/partition`, ascending.
    pub fn offsets(&self, topic: &str, partition: i32) -> Result<Vec<i64>, KafkaError> {
        let dir = self.partition_dir(topic, partition);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::err(&dir, e)),
        };
        let mut offsets: Vec<i64> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".ckpt"))
                    .and_then(|n| n.parse().ok())
            })
            .collect();
        offsets.sort_unstable();
        Ok(offsets)
    }

    /// Deletes the files of `topic/partition` other than `committed`'s: once an offset is
    /// committed, older states can never be resumed from, and newer ones belong to transactions
    /// that did not commit (they would be recomputed identically).
    pub fn prune(&self, topic: &str, partition: i32, committed: i64) -> Result<(), KafkaError> {
        let dir = self.partition_dir(topic, partition);
        for offset in self.offsets(topic, partition)? {
            if offset != committed {
                let path = dir.join(format!("{offset}.ckpt"));
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Self::err(&path, e)),
                }
            }
        }
        Ok(())
    }
}

fn decode(bytes: &[u8]) -> Result<StateParts, String> {
    let body_len = bytes
        .len()
        .checked_sub(8)
        .filter(|n| *n >= MAGIC.len())
        .ok_or("too short")?;
    let (body, sum) = bytes.split_at(body_len);
    let sum = u64::from_le_bytes(sum.try_into().map_err(|_| "bad checksum field")?);
    if xxhash_rust::xxh3::xxh3_64(body) != sum {
        return Err("checksum mismatch".to_owned());
    }
    let mut rest = body.strip_prefix(MAGIC).ok_or("not a checkpoint file")?;
    let mut state = StateParts::default();
    let take = |rest: &mut &[u8], n: usize| -> Result<Vec<u8>, String> {
        if rest.len() < n {
            return Err("truncated part".to_owned());
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head.to_vec())
    };
    while !rest.is_empty() {
        let n = u32::from_le_bytes(
            take(&mut rest, 4)?
                .try_into()
                .map_err(|_| "bad name length")?,
        );
        let name = String::from_utf8(take(&mut rest, n as usize)?).map_err(|e| e.to_string())?;
        let len = u64::from_le_bytes(
            take(&mut rest, 8)?
                .try_into()
                .map_err(|_| "bad data length")?,
        );
        let len = usize::try_from(len).map_err(|e| e.to_string())?;
        let data = take(&mut rest, len)?;
        state.parts.insert(name, data);
    }
    Ok(state)
}

/// Topic and group names may hold characters a file name should not (`/` in no valid topic, but
/// groups are free-form).
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn state() -> StateParts {
        let mut s = StateParts::default();
        s.parts.insert("engine".into(), b"{\"a\":1}".to_vec());
        s.parts.insert("watermark".into(), b"5 3".to_vec());
        s.parts.insert("empty".into(), Vec::new());
        s
    }

    #[test]
    fn write_load_prune_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), "grp/1");
        store.write("t", 0, 10, &state()).unwrap();
        store.write("t", 0, 20, &state()).unwrap();
        assert_eq!(store.load("t", 0, 10).unwrap(), Some(state()));
        assert_eq!(store.load("t", 0, 11).unwrap(), None);
        assert_eq!(store.offsets("t", 0).unwrap(), vec![10, 20]);
        store.prune("t", 0, 20).unwrap();
        assert_eq!(store.offsets("t", 0).unwrap(), vec![20]);
        assert!(store.root().ends_with("grp_1"));
    }

    #[test]
    fn instance_state_is_replaced_and_apart_from_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), "g");
        assert_eq!(store.load_instance("g-a").unwrap(), None);
        store.write_instance("g-a", &state()).unwrap();
        let mut other = StateParts::default();
        other.parts.insert("respond".into(), b"{}".to_vec());
        store.write_instance("g-a", &other).unwrap();
        assert_eq!(store.load_instance("g-a").unwrap(), Some(other));
        assert_eq!(store.load_instance("g-b").unwrap(), None);
        assert!(store.root().join("@instance/g-a.ckpt").is_file());
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), "g");
        store.write("t", 3, 7, &state()).unwrap();
        let path = store.root().join("t/3/7.ckpt");
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let e = store.load("t", 3, 7).unwrap_err().to_string();
        assert!(e.contains("7.ckpt"), "{e}");
        assert!(e.contains("checksum mismatch"), "{e}");
        std::fs::write(&path, b"AW").unwrap();
        let e = store.load("t", 3, 7).unwrap_err().to_string();
        assert!(e.contains("too short"), "{e}");
    }
}
