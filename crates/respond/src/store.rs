//! The pending-action store: one JSON file per action waiting for a human (approval mode) or
//! for a rate-limit token (queued), in `<state_dir>/pending/`. `authwatch respond list |
//! approve ID | reject ID` works on it, from another process than the pipeline's.

use crate::state::AlertFacts;
use authwatch_pipeline::config::{RespondMode, ResponseAction};
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where a pending action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingStatus {
    /// Waiting for `approve` or `reject`.
    AwaitingApproval,
    /// Waiting for a rate-limit token, a closed circuit, or the time an unavailable provider
    /// asked to wait; a human may approve (act now) or reject (cancel) it.
    Queued,
    /// Carried out.
    Executed,
    /// Rejected by a human.
    Rejected,
    /// Tried and failed.
    Failed,
    /// Not carried out: the account turned out to be protected, not the alert's, of a tenant
    /// the target does not serve, or the action was decided in another mode.
    Refused,
}

impl PendingStatus {
    /// Whether the action still waits.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            PendingStatus::AwaitingApproval | PendingStatus::Queued
        )
    }
}

/// One pending action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingAction {
    /// Its id (16 hex digits, derived from the alert and the account: the same incident always
    /// gets the same id).
    pub id: String,
    /// Where it stands.
    pub status: PendingStatus,
    /// The alert.
    pub alert: AlertFacts,
    /// The actions.
    pub actions: Vec<ResponseAction>,
    /// Why it waits (`approval`, `rate_limited`, `circuit_open`, `retry_later`).
    pub reason: String,
    /// When it was created (ms).
    pub created_ms: i64,
    /// Who decided, when a human did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// When it was decided or carried out (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_ms: Option<i64>,
    /// What happened, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The mode the action was decided in: a responder in another mode never carries it out
    /// (a human may approve an `approval` or `automatic` one under either of those modes).
    /// `None`: written before the mode was recorded, matches no mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RespondMode>,
    /// Not tried again before this time (ms), for an action waiting after its provider was
    /// unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<i64>,
}

impl PendingAction {
    /// The id for `alert` on `account`.
    pub fn make_id(alert_id: &str, tenant: Option<&str>, account: &str) -> String {
        const NAMESPACE: uuid::Uuid = uuid::Uuid::from_bytes([
            0x51, 0x0f, 0x2b, 0x8c, 0x3e, 0x44, 0x5a, 0x19, 0x9d, 0x70, 0x0b, 0xe6, 0x21, 0x5f,
            0xa3, 0x48,
        ]);
        let name = format!(
            "{alert_id}\u{1f}{}\u{1f}{}",
            tenant.unwrap_or_default(),
            account.to_lowercase()
        );
        uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes())
            .simple()
            .to_string()[..16]
            .to_owned()
    }
}

/// A store operation failed. Whose fault: the environment's (disk, permissions) or the
/// operator's (unknown id, already decided).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File system error.
    #[error("{path}: {message}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        message: String,
    },
    /// No pending action has this id.
    #[error("no pending action {0:?} (see `authwatch respond list`)")]
    Unknown(String),
    /// The action was already decided.
    #[error("action {id} is already {status:?}")]
    Decided {
        /// The id.
        id: String,
        /// Its status.
        status: PendingStatus,
    },
    /// Another process is deciding it right now.
    #[error("action {0} is being decided by another process")]
    Busy(String),
    /// An id that is not 16 hex digits (it names a file: never let it escape the directory).
    #[error("{0:?} is not an action id (16 hex digits)")]
    BadId(String),
}

/// The store.
#[derive(Debug, Clone)]
pub struct PendingStore {
    dir: PathBuf,
}

/// A claim on one action: other processes cannot decide it until this is dropped.
///
/// It is an advisory lock (`flock`) on the action's lock file, which the kernel releases when
/// the file is closed, including when the process dies in the middle of a decision (kill -9
/// during a provider call): a claim is never left behind, so there is no staleness to judge and
/// no lock file to remove (removing one another process may hold would let two in).
#[derive(Debug)]
pub struct Claim {
    _lock: std::fs::File,
}

fn io(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

impl PendingStore {
    /// The store under `state_dir` (created if missing).
    pub fn open(state_dir: &Path) -> Result<PendingStore, StoreError> {
        let dir = state_dir.join("pending");
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        Ok(PendingStore { dir })
    }

    fn path(&self, id: &str) -> Result<PathBuf, StoreError> {
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::BadId(id.to_owned()));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }

    /// Adds `action` unless its id exists already (a restart re-deciding the same incident).
    pub fn create(&self, action: &PendingAction) -> Result<(), StoreError> {
        let path = self.path(&action.id)?;
        if path.exists() {
            return Ok(());
        }
        self.write(&path, action)
    }

    /// Replaces the stored action, durably (see [`write_durably`]).
    pub fn update(&self, action: &PendingAction) -> Result<(), StoreError> {
        let path = self.path(&action.id)?;
        self.write(&path, action)
    }

    fn write(&self, path: &Path, action: &PendingAction) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(action).map_err(|e| io(path, e))?;
        // New entries too: a renamed but unsynced file can be empty after a power loss, and one
        // unreadable entry makes `respond list` (and the drain's claims) fail for all.
        write_durably(path, &bytes).map_err(|e| io(path, e))
    }

    /// One action.
    pub fn get(&self, id: &str) -> Result<PendingAction, StoreError> {
        let path = self.path(id)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Unknown(id.to_owned()));
            }
            Err(e) => return Err(io(&path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| io(&path, e))
    }

    /// Every action, oldest first.
    pub fn list(&self) -> Result<Vec<PendingAction>, StoreError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))? {
            let path = entry.map_err(|e| io(&self.dir, e))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
                out.push(serde_json::from_slice(&bytes).map_err(|e| io(&path, e))?);
            }
        }
        out.sort_by(|a: &PendingAction, b| a.created_ms.cmp(&b.created_ms).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Claims an open action for a decision: fails if it is unknown, already decided, or
    /// being decided by another process.
    pub fn claim(&self, id: &str) -> Result<(PendingAction, Claim), StoreError> {
        let lock = self.dir.join(format!("{id}.lock"));
        self.path(id)?;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(|e| io(&lock, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Busy(id.to_owned()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock, e)),
        }
        let claim = Claim { _lock: file };
        let action = self.get(id)?;
        if !action.status.is_open() {
            return Err(StoreError::Decided {
                id: id.to_owned(),
                status: action.status,
            });
        }
        Ok((action, claim))
    }
}

/// Replaces `path` with `bytes` so that a crash or power loss leaves the old content or the new,
/// whole: written to a temporary file beside it and synced, renamed over it, then the directory
/// synced (a rename is durable only once its directory entry is), as the checkpoint store does.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{}.tmp", name.unwrap_or_default()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn action(id: &str, status: PendingStatus) -> PendingAction {
        PendingAction {
            id: id.to_owned(),
            status,
            alert: AlertFacts {
                alert_id: "a".into(),
                rule_id: "r".into(),
                severity: authwatch_event::Severity::Critical,
                tenant: None,
                account: "u".into(),
            },
            actions: vec![ResponseAction::Suspend],
            reason: "approval".into(),
            created_ms: 1,
            decided_by: None,
            decided_ms: None,
            detail: None,
            mode: Some(RespondMode::Approval),
            not_before_ms: None,
        }
    }

    #[test]
    fn create_claim_update() {
        let dir = tempfile::tempdir().unwrap();
        let store = PendingStore::open(dir.path()).unwrap();
        let id = PendingAction::make_id("alert", Some("t"), "User");
        assert_eq!(id, PendingAction::make_id("alert", Some("t"), "user"));
        store
            .create(&action(&id, PendingStatus::AwaitingApproval))
            .unwrap();
        let (mut a, claim) = store.claim(&id).unwrap();
        assert!(matches!(store.claim(&id), Err(StoreError::Busy(_))));
        a.status = PendingStatus::Rejected;
        store.update(&a).unwrap();
        drop(claim);
        assert!(matches!(store.claim(&id), Err(StoreError::Decided { .. })));
        // create never overwrites a decision.
        store
            .create(&action(&id, PendingStatus::AwaitingApproval))
            .unwrap();
        assert_eq!(store.get(&id).unwrap().status, PendingStatus::Rejected);
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(matches!(
            store.get("../../etc/passwd"),
            Err(StoreError::BadId(_))
        ));
        assert!(matches!(
            store.get("0123456789abcdef"),
            Err(StoreError::Unknown(_))
        ));
    }

    #[test]
    fn durable_writes_replace_whole_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_durably(&path, b"one").unwrap();
        write_durably(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }
}
