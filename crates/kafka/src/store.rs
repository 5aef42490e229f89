//! Checkpoint files: one per partition and snapshot, named by the offset the snapshot reflects,
//! holding the named state parts; in a local directory or in object storage.
//!
//! Layout: `<root>/<group>/<topic>/<partition>/<offset>.ckpt`, where the root is a directory
//! (`checkpoint.dir`) or a bucket prefix (`checkpoint.url`, `s3://bucket/prefix`). A local file is
//! written to a temporary name, synced and renamed; an object is one atomic PUT; either way a
//! crash leaves the old set or the new file whole. The state of a partition at an offset is a
//! function of the partition's records before it (each partition is its own task), so two
//! instances writing the same file write the same bytes.
//!
//! Snapshots are rarer than commits (`checkpoint.snapshot_interval`): a partition resumes from
//! its newest snapshot at or before the committed offset and replays the records in between
//! with muted outputs.
//!
//! State that is global to an instance rather than per partition (the responder's incidents,
//! queue and breaker) is one file per instance, `<root>/<group>/@instance/<instance>.ckpt`
//! (`@` is not valid in a topic name), in the same format, replaced at each checkpoint.
//!
//! Format: `AWCKPT1\n`, then per part: name length (u32 LE), name, data length (u64 LE), data;
//! then an xxh3-64 of everything before it (u64 LE), so a torn or corrupted file is detected.

use crate::bucket::Bucket;
use crate::error::KafkaError;
use authwatch_pipeline::StateParts;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"AWCKPT1\n";

/// Listings `load_latest` tries when the file it picked is gone by the time it reads it.
const LOAD_ATTEMPTS: usize = 3;

/// Where the files go.
#[derive(Debug, Clone)]
enum Backend {
    /// `<dir>/<group>`.
    Local(PathBuf),
    /// `<prefix>/<group>` in a bucket (no leading or trailing `/`).
    Object(Bucket, String),
}

/// The checkpoint files of one consumer group.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    backend: Backend,
    /// Where releases before unambiguous names kept this group's files, when that differs
    /// (a group id with characters a file name cannot hold): `prepare` points an operator at it.
    legacy: Option<Backend>,
}

impl CheckpointStore {
    /// The store under the local directory `dir` for `group` (created on first write).
    pub fn new(dir: &Path, group: &str) -> Self {
        let legacy = (file_name(group) != sanitize(group))
            .then(|| Backend::Local(dir.join(sanitize(group))));
        CheckpointStore {
            backend: Backend::Local(dir.join(file_name(group))),
            legacy,
        }
    }

    /// The store for `group` at `url`: `s3://bucket/prefix`, `gs://…`, `az://container/prefix`,
    /// or `file:///dir` (the same as a local directory). Credentials come from the environment
    /// or the workload identity.
    pub fn open(url: &str, group: &str) -> Result<Self, KafkaError> {
        if let Some(dir) = url.strip_prefix("file://") {
            if !dir.starts_with('/') {
                return Err(KafkaError::Config(format!(
                    "checkpoint.url {url:?}: a file:// URL needs an absolute path (file:///dir)"
                )));
            }
            return Ok(Self::new(Path::new(dir), group));
        }
        let (bucket, prefix) =
            Bucket::open(url).map_err(|e| KafkaError::Config(format!("checkpoint.url: {e}")))?;
        Ok(Self::in_bucket(bucket, &prefix, group))
    }

    /// The store for `group` under `prefix` in `bucket`.
    fn in_bucket(bucket: Bucket, prefix: &str, group: &str) -> Self {
        let under = |name: String| {
            if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            }
        };
        let legacy = (file_name(group) != sanitize(group))
            .then(|| Backend::Object(bucket.clone(), under(sanitize(group))));
        CheckpointStore {
            backend: Backend::Object(bucket, under(file_name(group))),
            legacy,
        }
    }

    /// The group's directory or URL, for messages.
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Local(root) => root.display().to_string(),
            Backend::Object(bucket, root) => bucket.url(root),
        }
    }

    /// Makes sure the store is usable before the run starts: creates the local directory, or
    /// lists the bucket prefix (a wrong bucket, endpoint or credentials fail here, with the URL,
    /// rather than at the first snapshot).
    pub fn prepare(&self) -> Result<(), KafkaError> {
        // Whether the store holds anything, not whether its directory exists: `prepare`
        // creates it, and the warning must not end with the first start.
        let empty = match &self.backend {
            Backend::Local(root) => {
                std::fs::create_dir_all(root).map_err(|e| Self::err(&root.display(), e))?;
                !Self::local_has_entries(root).map_err(|e| Self::err(&root.display(), e))?
            }
            Backend::Object(bucket, root) => !bucket
                .has_entries(root)
                .map_err(|e| Self::err(&e.url, e.message))?,
        };
        if empty && let Some(old) = self.legacy_location() {
            tracing::warn!(
                legacy = %old,
                store = %self.location(),
                "this group's checkpoints are now stored under a name of their own; an earlier \
                 release stored them under the legacy name, which other group ids may share: \
                 move its files to the store if they are this group's"
            );
        }
        Ok(())
    }

    fn local_has_entries(dir: &Path) -> std::io::Result<bool> {
        Ok(std::fs::read_dir(dir)?.next().is_some())
    }

    /// Earlier releases mapped every character outside `[A-Za-z0-9._-]` of a group id to `_`,
    /// so `soc/prod` and `soc_prod` shared one directory. Such a group now has a directory of
    /// its own; files it left under the old name are not taken over, since another group may
    /// have written them too — the operator decides, and the log (or the missing-state
    /// error) says where they are: this, when that legacy directory or prefix holds anything.
    pub(crate) fn legacy_location(&self) -> Option<String> {
        match self.legacy.as_ref()? {
            Backend::Local(old) => Self::local_has_entries(old)
                .unwrap_or(false)
                .then(|| old.display().to_string()),
            // A group's prefix holds only "folders" (`<topic>/<p>/…`, `@instance/…`), so
            // sub-prefixes count as entries.
            Backend::Object(bucket, old) => bucket
                .has_entries(old)
                .unwrap_or(false)
                .then(|| bucket.url(old)),
        }
    }

    /// For errors about missing state: where an earlier release may have left it.
    pub(crate) fn legacy_hint(&self) -> String {
        self.legacy_location().map_or_else(String::new, |old| {
            format!(
                " (an earlier release stored this group's checkpoints under {old}, which other \
                 group ids may share: move its files to {} if they are this group's)",
                self.location()
            )
        })
    }

    /// An I/O or object-store call failed: retryable (the run restarts and asks again).
    fn err(location: &dyn std::fmt::Display, message: impl std::fmt::Display) -> KafkaError {
        KafkaError::Store {
            path: location.to_string(),
            message: message.to_string(),
            retryable: true,
        }
    }

    /// What was read is not a valid checkpoint: reading it again would not help.
    fn corrupt(location: &dyn std::fmt::Display, message: impl std::fmt::Display) -> KafkaError {
        KafkaError::Store {
            path: location.to_string(),
            message: format!("corrupt checkpoint file: {message}"),
            retryable: false,
        }
    }

    /// The relative directory of a partition's files.
    fn partition_dir(topic: &str, partition: i32) -> String {
        format!("{}/{partition}", file_name(topic))
    }

    /// Replaces the instance-wide state of `instance` (the responder's).
    pub fn write_instance(&self, instance: &str, state: &StateParts) -> Result<(), KafkaError> {
        self.write_file("@instance", &format!("{}.ckpt", file_name(instance)), state)
    }

    /// The instance-wide state of `instance`, if it was ever written.
    ///
    /// An error when it is missing but an earlier release's file is there (under the id's
    /// readable form, in this group's directory or the group's legacy one): that file may be
    /// another instance's (ids that read the same shared it), and starting empty would lose
    /// pending approvals without a word, so the operator decides.
    pub fn load_instance(&self, instance: &str) -> Result<Option<StateParts>, KafkaError> {
        let name = format!("{}.ckpt", file_name(instance));
        if let Some(state) = self.read_file("@instance", &name)? {
            return Ok(Some(state));
        }
        let old = format!("{}.ckpt", sanitize(instance));
        let candidates = [(old != name).then_some(&self.backend), self.legacy.as_ref()];
        for backend in candidates.into_iter().flatten() {
            if let Some(legacy) = Self::existing(backend, "@instance", &old)? {
                return Err(KafkaError::LegacyInstanceState {
                    instance: instance.to_owned(),
                    path: Self::file_location(&self.backend, "@instance", &name),
                    legacy,
                });
            }
        }
        Ok(None)
    }

    /// Where `dir/name` is (or would be) in `backend`, for messages.
    fn file_location(backend: &Backend, dir: &str, name: &str) -> String {
        match backend {
            Backend::Local(root) => root.join(dir).join(name).display().to_string(),
            Backend::Object(bucket, root) => bucket.url(&format!("{root}/{dir}/{name}")),
        }
    }

    /// The location of `dir/name` in `backend` when that file exists.
    fn existing(backend: &Backend, dir: &str, name: &str) -> Result<Option<String>, KafkaError> {
        let here = Self::file_location(backend, dir, name);
        let found = match backend {
            Backend::Local(root) => root.join(dir).join(name).is_file(),
            Backend::Object(bucket, root) => bucket
                .get(&format!("{root}/{dir}/{name}"))
                .map_err(|e| Self::err(&e.url, e.message))?
                .is_some(),
        };
        Ok(found.then_some(here))
    }

    /// Writes the state of `topic/partition` that reflects every record before `offset`.
    pub fn write(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        state: &StateParts,
    ) -> Result<(), KafkaError> {
        self.write_file(
            &Self::partition_dir(topic, partition),
            &format!("{offset}.ckpt"),
            state,
        )
    }

    fn write_file(&self, dir: &str, name: &str, state: &StateParts) -> Result<(), KafkaError> {
        let bytes = encode(state);
        match &self.backend {
            Backend::Local(root) => {
                let dir = root.join(dir);
                let path = dir.join(name);
                let tmp = dir.join(format!(".{name}.tmp"));
                let write = || -> std::io::Result<()> {
                    std::fs::create_dir_all(&dir)?;
                    let mut file = std::fs::File::create(&tmp)?;
                    file.write_all(&bytes)?;
                    file.sync_all()?;
                    std::fs::rename(&tmp, &path)?;
                    // The rename is durable only once the directory entry is.
                    std::fs::File::open(&dir)?.sync_all()
                };
                write().map_err(|e| Self::err(&path.display(), e))
            }
            Backend::Object(bucket, root) => bucket
                .put(&format!("{root}/{dir}/{name}"), bytes)
                .map_err(|e| Self::err(&e.url, e.message)),
        }
    }

    fn read_file(&self, dir: &str, name: &str) -> Result<Option<StateParts>, KafkaError> {
        let (bytes, location) = match &self.backend {
            Backend::Local(root) => {
                let path = root.join(dir).join(name);
                match std::fs::read(&path) {
                    Ok(b) => (b, path.display().to_string()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(Self::err(&path.display(), e)),
                }
            }
            Backend::Object(bucket, root) => {
                let key = format!("{root}/{dir}/{name}");
                match bucket.get(&key) {
                    Ok(Some(b)) => (b, bucket.url(&key)),
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(Self::err(&e.url, e.message)),
                }
            }
        };
        decode(&bytes)
            .map(Some)
            .map_err(|m| Self::corrupt(&location, m))
    }

    /// The state of `topic/partition` at exactly `offset`, if a file holds it.
    pub fn load(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Option<StateParts>, KafkaError> {
        self.read_file(
            &Self::partition_dir(topic, partition),
            &format!("{offset}.ckpt"),
        )
    }

    /// The newest snapshot of `topic/partition` at or before `offset`, with the offset it
    /// reflects. Files after `offset` belong to transactions that never committed and are
    /// ignored.
    pub fn load_latest(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Option<(i64, StateParts)>, KafkaError> {
        // The previous owner's snapshot thread may still store a newer file and delete the one
        // picked between the listing and the read: list again, a few times, before reporting
        // that there is none.
        for _ in 0..LOAD_ATTEMPTS {
            let Some(at) = self
                .offsets(topic, partition)?
                .into_iter()
                .rev()
                .find(|o| *o <= offset)
            else {
                return Ok(None);
            };
            if let Some(state) = self.load(topic, partition, at)? {
                return Ok(Some((at, state)));
            }
        }
        Ok(None)
    }

    /// Offsets with a state file for `topic/partition`, ascending.
    pub fn offsets(&self, topic: &str, partition: i32) -> Result<Vec<i64>, KafkaError> {
        let dir = Self::partition_dir(topic, partition);
        let names: Vec<String> = match &self.backend {
            Backend::Local(root) => {
                let dir = root.join(dir);
                match std::fs::read_dir(&dir) {
                    Ok(entries) => entries
                        .filter_map(|e| e.ok())
                        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                        .collect(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(Self::err(&dir.display(), e)),
                }
            }
            Backend::Object(bucket, root) => bucket
                .list(&format!("{root}/{dir}"))
                .map_err(|e| Self::err(&e.url, e.message))?,
        };
        let mut offsets: Vec<i64> = names
            .iter()
            .filter_map(|n| n.strip_suffix(".ckpt").and_then(|n| n.parse().ok()))
            .collect();
        offsets.sort_unstable();
        Ok(offsets)
    }

    /// Deletes the files of `topic/partition` other than the one at `committed`: for the
    /// starting state of a partition new to the group, stored at its assignment, when every
    /// other file is from a run whose offsets were never committed or were since deleted. After
    /// a commit use
    /// [`CheckpointStore::prune_before`]: the partition may have moved to an owner whose newer
    /// files must stay.
    pub fn prune(&self, topic: &str, partition: i32, committed: i64) -> Result<(), KafkaError> {
        self.remove(topic, partition, |offset| offset != committed)
    }

    /// Deletes the files of `topic/partition` before `stored`, which is stored and committed
    /// (the snapshot thread's pruning, and the sink's after a commit). It leaves newer files
    /// alone: by the time it runs, the partition may have moved to an owner that wrote them.
    pub fn prune_before(&self, topic: &str, partition: i32, stored: i64) -> Result<(), KafkaError> {
        self.remove(topic, partition, |offset| offset < stored)
    }

    fn remove(
        &self,
        topic: &str,
        partition: i32,
        doomed: impl Fn(i64) -> bool,
    ) -> Result<(), KafkaError> {
        let dir = Self::partition_dir(topic, partition);
        for offset in self.offsets(topic, partition)? {
            if !doomed(offset) {
                continue;
            }
            let name = format!("{offset}.ckpt");
            match &self.backend {
                Backend::Local(root) => {
                    let path = root.join(&dir).join(name);
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Self::err(&path.display(), e)),
                    }
                }
                Backend::Object(bucket, root) => bucket
                    .delete(&format!("{root}/{dir}/{name}"))
                    .map_err(|e| Self::err(&e.url, e.message))?,
            }
        }
        Ok(())
    }
}

fn encode(state: &StateParts) -> Vec<u8> {
    let mut bytes =
        Vec::with_capacity(MAGIC.len() + state.parts.values().map(|v| v.len() + 64).sum::<usize>());
    bytes.extend_from_slice(MAGIC);
    for (name, data) in &state.parts {
        bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
        bytes.extend_from_slice(data);
    }
    let sum = xxhash_rust::xxh3::xxh3_64(&bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    bytes
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

/// The file (or directory, or object key segment) name of a group, topic or instance id: the id
/// itself when it is made of `[A-Za-z0-9._-]` only (what every release so far used, so upgrades
/// find their files), else its readable form (see [`sanitize`]) with `=` and an xxh3 of the exact
/// id. `=` never occurs in a name kept as it is, and object_store leaves it unencoded in keys
/// (`~` would become `%7E`, a key no message shows); the hash tells apart ids that read the same
/// (`soc/prod`, `soc_prod`, `soc:prod`), which would otherwise share — and prune — one
/// directory. `.`, `..` and the empty id would name the parent or the store itself.
fn file_name(name: &str) -> String {
    let readable = sanitize(name);
    if readable == name && !matches!(name, "" | "." | "..") {
        return readable;
    }
    format!(
        "{readable}={:016x}",
        xxhash_rust::xxh3::xxh3_64(name.as_bytes())
    )
}

/// Topic and group names may hold characters a file name should not (`/` in no valid topic, but
/// groups are free-form): each becomes `_`. Not unique on its own: see [`file_name`].
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
    use std::collections::BTreeSet;

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
        assert!(store.location().contains("grp_1="), "{}", store.location());
        assert_eq!(store.load_latest("t", 0, 19).unwrap(), None);
        assert_eq!(store.load_latest("t", 0, 25).unwrap(), Some((20, state())));
    }

    // `soc/prod` and `soc_prod` used to share the directory `soc_prod`, and one group's prune
    // deleted the other's snapshots.
    #[test]
    fn groups_that_read_the_same_keep_their_files_apart() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["soc_prod", "soc/prod", "soc:prod", "soc prod"];
        let stores: Vec<CheckpointStore> = names
            .iter()
            .map(|g| CheckpointStore::new(dir.path(), g))
            .collect();
        for (i, store) in stores.iter().enumerate() {
            store.write("t", 0, 10 + i as i64, &state()).unwrap();
        }
        for (i, store) in stores.iter().enumerate() {
            store.prune("t", 0, 10 + i as i64).unwrap();
        }
        for (i, store) in stores.iter().enumerate() {
            assert_eq!(
                store.offsets("t", 0).unwrap(),
                [10 + i as i64],
                "{}",
                names[i]
            );
        }
        let locations: BTreeSet<String> = stores.iter().map(CheckpointStore::location).collect();
        assert_eq!(locations.len(), names.len(), "{locations:?}");
        // A safe id keeps the directory every release used, so an upgrade finds its state.
        assert!(dir.path().join("soc_prod/t/0/10.ckpt").is_file());
        assert_eq!(file_name("authwatch.group-1_a"), "authwatch.group-1_a");
        // Ids that name no directory of their own get one; a readable part stays.
        for odd in ["", ".", ".."] {
            assert!(file_name(odd).contains('='), "{odd:?} → {}", file_name(odd));
        }
        assert!(file_name("soc/prod").starts_with("soc_prod="));
        // Instance files follow the same rule (a default transactional id holds the group).
        stores[1]
            .write_instance("authwatch-soc/prod-host", &state())
            .unwrap();
        assert_eq!(
            stores[1].load_instance("authwatch-soc_prod-host").unwrap(),
            None
        );
    }

    // object_store percent-encodes some characters of a key segment (`~` → `%7E`): a group's
    // directory name must be the key authwatch really uses, or messages and docs point
    // operators at keys it never reads.
    #[test]
    fn directory_names_are_object_keys_as_they_are() {
        for id in ["soc/prod", "soc:prod", "a b", "", ".", "..", "x~y", "plain"] {
            let name = file_name(id);
            let key = object_store::path::Path::from(format!("pre/{name}/t/0"));
            assert_eq!(key.as_ref(), format!("pre/{name}/t/0"), "{id:?}");
        }
        let store = CheckpointStore::in_bucket(Bucket::memory(), "pre", "soc/prod");
        store.write("t", 0, 5, &state()).unwrap();
        let expected = format!("memory://test/pre/{}", file_name("soc/prod"));
        assert_eq!(store.location(), expected);
        assert!(store.location().contains("soc_prod="));
    }

    // A group's prefix holds only sub-prefixes (`<topic>/<p>/…`), which a listing of the
    // objects directly under it does not return.
    #[test]
    fn the_legacy_prefix_is_found_in_a_bucket() {
        let bucket = Bucket::memory();
        let old = CheckpointStore::in_bucket(bucket.clone(), "pre", "soc_prod");
        old.write("t", 0, 5, &state()).unwrap();
        let new = CheckpointStore::in_bucket(bucket.clone(), "pre", "soc/prod");
        assert_eq!(
            new.legacy_location().as_deref(),
            Some("memory://test/pre/soc_prod")
        );
        assert!(new.legacy_hint().contains("memory://test/pre/soc_prod"));
        new.prepare().unwrap();
        // A group with a safe id has no legacy name.
        assert_eq!(old.legacy_location(), None);
        assert_eq!(old.legacy_hint(), "");
    }

    // `prepare` creates the store's directory, so "it does not exist" held only on the first
    // start; the test is whether it holds anything.
    #[test]
    fn the_legacy_directory_is_named_after_a_restart_too() {
        let dir = tempfile::tempdir().unwrap();
        let old = CheckpointStore::new(dir.path(), "soc_prod");
        old.write("t", 0, 5, &state()).unwrap();
        let new = CheckpointStore::new(dir.path(), "soc/prod");
        new.prepare().unwrap();
        new.prepare().unwrap();
        let legacy = dir.path().join("soc_prod").display().to_string();
        assert_eq!(new.legacy_location(), Some(legacy.clone()));
        let err = KafkaError::MissingState {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            dir: new.location(),
            legacy: new.legacy_hint(),
        }
        .to_string();
        assert!(err.contains(&legacy), "{err}");
        assert!(err.contains(&new.location()), "{err}");
    }

    // An earlier release named the responder's file by the id's readable form; finding only
    // that file, starting empty would drop pending approvals without a word.
    #[test]
    fn a_legacy_instance_file_stops_the_start_naming_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let instance = "authwatch-soc/prod-host";
        // Same group directory (a safe group id), legacy instance file name.
        let store = CheckpointStore::new(dir.path(), "soc_prod");
        let old = dir
            .path()
            .join("soc_prod/@instance/authwatch-soc_prod-host.ckpt");
        store
            .write_instance("authwatch-soc_prod-host", &state())
            .unwrap();
        let err = store.load_instance(instance).unwrap_err();
        assert!(
            matches!(err, KafkaError::LegacyInstanceState { .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains(&old.display().to_string()), "{text}");
        let new = dir
            .path()
            .join("soc_prod/@instance")
            .join(format!("{}.ckpt", file_name(instance)));
        assert!(text.contains(&new.display().to_string()), "{text}");
        assert!(!err.is_retryable());
        // Moved by the operator: restored.
        std::fs::rename(&old, &new).unwrap();
        assert_eq!(store.load_instance(instance).unwrap(), Some(state()));
        // The group's legacy directory counts too.
        let odd = CheckpointStore::new(dir.path(), "g/1");
        CheckpointStore::new(dir.path(), "g_1")
            .write_instance("i_1", &state())
            .unwrap();
        let err = odd.load_instance("i/1").unwrap_err().to_string();
        assert!(err.contains("g_1/@instance/i_1.ckpt"), "{err}");
        assert_eq!(odd.load_instance("other").unwrap(), None);
    }

    #[test]
    fn prune_before_leaves_newer_files_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), "g");
        for offset in [10, 20, 30] {
            store.write("t", 0, offset, &state()).unwrap();
        }
        store.prune_before("t", 0, 20).unwrap();
        assert_eq!(store.offsets("t", 0).unwrap(), vec![20, 30]);
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
        assert!(dir.path().join("g/@instance/g-a.ckpt").is_file());
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), "g");
        store.write("t", 3, 7, &state()).unwrap();
        let path = dir.path().join("g/t/3/7.ckpt");
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

    // A store that cannot be read at an assignment (a network error, an object store's 5xx, a
    // volume gone for a moment) must restart the run, not end the process; a file that is
    // read but wrong must end it (reading it again would give the same).
    #[test]
    fn a_store_that_cannot_be_read_is_retryable_and_a_corrupt_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), "g");
        // The partition's directory is a file: listing it fails with an I/O error other than
        // "not found" (root reads every directory, so permissions cannot make one fail).
        std::fs::create_dir_all(dir.path().join("g/t")).unwrap();
        std::fs::write(dir.path().join("g/t/0"), b"not a directory").unwrap();
        let unreadable = store.load_latest("t", 0, 10).unwrap_err();
        assert!(unreadable.is_retryable(), "{unreadable}");
        assert!(unreadable.to_string().contains("g/t/0"), "{unreadable}");
        // Writing there fails the same way.
        let unwritable = store.write("t", 0, 10, &state()).unwrap_err();
        assert!(unwritable.is_retryable(), "{unwritable}");
        // The same error from the start's check of the store ends the run: a wrong bucket,
        // endpoint or credentials are the operator's to fix.
        assert!(!unreadable.fatal().is_retryable());

        store.write("t", 1, 7, &state()).unwrap();
        let path = dir.path().join("g/t/1/7.ckpt");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let corrupt = store.load_latest("t", 1, 10).unwrap_err();
        assert!(
            corrupt.to_string().contains("checksum mismatch"),
            "{corrupt}"
        );
        assert!(!corrupt.is_retryable(), "{corrupt}");
    }

    #[test]
    fn a_bucket_that_cannot_be_reached_is_retryable() {
        let store = CheckpointStore::in_bucket(Bucket::unreachable(), "p", "g");
        let e = store.load_latest("t", 0, 10).unwrap_err();
        assert!(e.to_string().contains("s3://unreachable/p/g/t/0"), "{e}");
        assert!(e.is_retryable(), "{e}");
        let e = store.write("t", 0, 10, &state()).unwrap_err();
        assert!(e.is_retryable(), "{e}");
    }
}
