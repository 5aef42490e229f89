//! Audit records: every action, refusal, queueing and failure as an OCSF Account Change
//! (class 3001) record linking the alert, written as JSON lines — and, through [`AuditSink`],
//! to any other destination (the Kafka runtime sends the same records to its audit topic).

use authwatch_pipeline::config::{RespondMode, ResponseAction};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the responder decided or what happened, for one alert (and one action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The action was carried out at the identity provider.
    Executed,
    /// Dry-run: the action would have been carried out.
    DryRun,
    /// The account was already in the target state (e.g. already suspended).
    AlreadyDone,
    /// Refused: no account in the alert, a tenant the target does not serve, allow-listed
    /// account or group, a name the provider resolves to another account, queue or pending
    /// store full, decided in another mode.
    Refused,
    /// The account already had an action for this incident.
    Duplicate,
    /// Over the rate limit, the circuit is open, or the provider was unavailable: waiting for a
    /// token (or for the time the provider asked to wait).
    Queued,
    /// Waiting for a human (`authwatch respond approve ID`).
    PendingApproval,
    /// A human rejected the action.
    Rejected,
    /// The identity provider call failed after its retries.
    Failed,
}

impl Decision {
    /// The name written in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Executed => "executed",
            Decision::DryRun => "dry_run",
            Decision::AlreadyDone => "already_done",
            Decision::Refused => "refused",
            Decision::Duplicate => "duplicate",
            Decision::Queued => "queued",
            Decision::PendingApproval => "pending_approval",
            Decision::Rejected => "rejected",
            Decision::Failed => "failed",
        }
    }
}

/// An OCSF Account Change (class 3001, category 3 Identity & Access Management) record.
///
/// The OCSF fields say what happened to which account; `unmapped` carries authwatch's own:
/// the linked `alert_id` (also in `metadata.correlation_uid`), the decision and its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Always 3001.
    pub class_uid: u32,
    /// "Account Change".
    pub class_name: String,
    /// Always 3.
    pub category_uid: u32,
    /// "Identity & Access Management".
    pub category_name: String,
    /// 5 Disable (suspend), 11 MFA Factor Disable (reset MFA), 99 Other (revoke sessions,
    /// notify).
    pub activity_id: u32,
    /// The activity's name.
    pub activity_name: String,
    /// `class_uid * 100 + activity_id`.
    pub type_uid: u32,
    /// When the decision was taken (ms since the epoch, responder clock).
    pub time: i64,
    /// 1 Success (executed, already done, dry-run), 2 Failure, 99 Other (refused, duplicate,
    /// queued, pending, rejected).
    pub status_id: u32,
    /// The status name (`Success`, `Failure`, `Other`).
    pub status: String,
    /// One sentence: what happened and why.
    pub status_detail: String,
    /// OCSF severity of the linked alert (1 Informational … 5 Critical).
    pub severity_id: u32,
    /// The account.
    pub user: AuditUser,
    /// Who acted.
    pub actor: AuditActor,
    /// Product and correlation.
    pub metadata: AuditMetadata,
    /// authwatch's own fields.
    pub unmapped: AuditDetails,
}

/// The account acted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditUser {
    /// The account name as in the alert.
    pub name: String,
    /// The identity provider's id of the account, once looked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
}

/// Who took the action: authwatch, on a human's approval when there was one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditActor {
    /// Always `authwatch`.
    pub app_name: String,
    /// The approving or rejecting human, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// OCSF metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditMetadata {
    /// OCSF schema version.
    pub version: String,
    /// The product.
    pub product: AuditProduct,
    /// This record's id (UUID v5 of alert, action, decision and time: a retried write of the
    /// same record has the same id).
    pub uid: String,
    /// The alert this record answers.
    pub correlation_uid: String,
    /// `authwatch-respond`.
    pub log_name: String,
}

/// OCSF product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditProduct {
    /// `authwatch`.
    pub name: String,
    /// `authwatch`.
    pub vendor_name: String,
    /// authwatch's version.
    pub version: String,
}

/// authwatch's own audit fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditDetails {
    /// The alert acted on.
    pub alert_id: String,
    /// Its rule.
    pub rule_id: String,
    /// The decision.
    pub decision: Decision,
    /// The action this record is about.
    pub action: ResponseAction,
    /// All actions the policy chose for the alert.
    pub actions: Vec<ResponseAction>,
    /// The responder's mode.
    pub mode: RespondMode,
    /// The identity provider (`okta`, `graph`, `keycloak`, `webhook`, `none`).
    pub target: String,
    /// A stable reason code (`tenant_mismatch`, `allow_listed_user`, `identity_mismatch`,
    /// `mode_changed`, `rate_limited`, `circuit_open`, `retry_later`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The pending-approval or queue id, when the action waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_id: Option<String>,
    /// HTTP attempts made.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// The alert that opened the account's incident (for duplicates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_alert_id: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The facts a record is built from.
#[derive(Debug, Clone)]
pub struct AuditFacts<'a> {
    /// Decision time (ms).
    pub time: i64,
    /// The alert.
    pub alert_id: &'a str,
    /// Its rule.
    pub rule_id: &'a str,
    /// Its severity.
    pub severity: authwatch_event::Severity,
    /// The account.
    pub account: &'a str,
    /// The provider's id of the account.
    pub account_uid: Option<&'a str>,
    /// The tenant.
    pub tenant: Option<&'a str>,
    /// The mode.
    pub mode: RespondMode,
    /// The target.
    pub target: &'a str,
    /// The actions chosen.
    pub actions: &'a [ResponseAction],
}

impl AuditRecord {
    /// A record of `decision` for `action`, with a reason code and a sentence.
    pub fn new(
        facts: &AuditFacts<'_>,
        action: ResponseAction,
        decision: Decision,
        reason: Option<&str>,
        detail: String,
    ) -> AuditRecord {
        let (activity_id, activity_name) = match action {
            ResponseAction::Suspend => (5, "Disable"),
            ResponseAction::ResetMfa => (11, "MFA Factor Disable"),
            ResponseAction::RevokeSessions => (99, "Revoke Sessions"),
            ResponseAction::Notify => (99, "Notify"),
        };
        let (status_id, status) = match decision {
            Decision::Executed | Decision::DryRun | Decision::AlreadyDone => (1, "Success"),
            Decision::Failed => (2, "Failure"),
            _ => (99, "Other"),
        };
        let severity_id = match facts.severity {
            authwatch_event::Severity::Info => 1,
            authwatch_event::Severity::Low => 2,
            authwatch_event::Severity::Medium => 3,
            authwatch_event::Severity::High => 4,
            authwatch_event::Severity::Critical => 5,
        };
        const NAMESPACE: uuid::Uuid = uuid::Uuid::from_bytes([
            0x3c, 0x91, 0x0a, 0x5e, 0x77, 0x12, 0x5b, 0x40, 0x8e, 0x2d, 0x61, 0x09, 0xaf, 0x34,
            0xc2, 0x7b,
        ]);
        let uid = uuid::Uuid::new_v5(
            &NAMESPACE,
            format!(
                "{}\u{1f}{}\u{1f}{}\u{1f}{}",
                facts.alert_id,
                action.as_str(),
                decision.as_str(),
                facts.time
            )
            .as_bytes(),
        )
        .to_string();
        AuditRecord {
            class_uid: 3001,
            class_name: "Account Change".to_owned(),
            category_uid: 3,
            category_name: "Identity & Access Management".to_owned(),
            activity_id,
            activity_name: activity_name.to_owned(),
            type_uid: 3001 * 100 + activity_id,
            time: facts.time,
            status_id,
            status: status.to_owned(),
            status_detail: detail,
            severity_id,
            user: AuditUser {
                name: facts.account.to_owned(),
                uid: facts.account_uid.map(str::to_owned),
                org: facts.tenant.map(str::to_owned),
            },
            actor: AuditActor {
                app_name: "authwatch".to_owned(),
                user: None,
            },
            metadata: AuditMetadata {
                version: "1.3.0".to_owned(),
                product: AuditProduct {
                    name: "authwatch".to_owned(),
                    vendor_name: "authwatch".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                },
                uid,
                correlation_uid: facts.alert_id.to_owned(),
                log_name: "authwatch-respond".to_owned(),
            },
            unmapped: AuditDetails {
                alert_id: facts.alert_id.to_owned(),
                rule_id: facts.rule_id.to_owned(),
                decision,
                action,
                actions: facts.actions.to_vec(),
                mode: facts.mode,
                target: facts.target.to_owned(),
                reason: reason.map(str::to_owned),
                pending_id: None,
                attempts: 0,
                incident_alert_id: None,
            },
        }
    }
}

/// An audit write failed. Whose fault: the environment's (disk, broker).
#[derive(Debug, thiserror::Error)]
#[error("audit output {output}: {message}")]
pub struct AuditError {
    /// Which output.
    pub output: String,
    /// What failed.
    pub message: String,
}

/// Where audit records go. The responder writes every record to every sink before it moves on;
/// the Kafka runtime implements this for its audit topic.
pub trait AuditSink: Send {
    /// Writes one record durably enough that a crash right after loses nothing.
    fn record(&mut self, record: &AuditRecord) -> Result<(), AuditError>;
}

/// Audit records appended to a file as JSON lines, one `write` and `fdatasync` per record so
/// that a crash (of the process or of the machine) never leaves half a line or loses a record
/// the responder moved on from: the state that records the action is synced too, and an audit
/// record lost while its action's state survives would be an action nobody can account for.
/// Audit records are rare (a few per account acted on), so the sync costs little.
pub struct JsonLinesAudit {
    path: PathBuf,
    file: File,
}

impl JsonLinesAudit {
    /// Opens `path` for appending (creating it and its directory).
    pub fn open(path: &Path) -> Result<JsonLinesAudit, AuditError> {
        let fail = |e: std::io::Error| AuditError {
            output: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let existed = path.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(fail)?;
        if !existed {
            // A new file's name is durable only once its directory is synced.
            sync_dir(path).map_err(fail)?;
        }
        Ok(JsonLinesAudit {
            path: path.to_owned(),
            file,
        })
    }

    /// Reads every record of an audit file (for `respond list` and tests).
    pub fn read_all(path: &Path) -> Result<Vec<AuditRecord>, AuditError> {
        let fail = |message: String| AuditError {
            output: path.display().to_string(),
            message,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(fail(e.to_string())),
        };
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(l).map_err(|e| fail(format!("line {}: {e}", i + 1))))
            .collect()
    }
}

impl AuditSink for JsonLinesAudit {
    fn record(&mut self, record: &AuditRecord) -> Result<(), AuditError> {
        let fail = |message: String| AuditError {
            output: self.path.display().to_string(),
            message,
        };
        let mut line = serde_json::to_vec(record).map_err(|e| fail(e.to_string()))?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|e| fail(e.to_string()))?;
        // `flush` of a `File` does nothing (there is no buffer): only a sync puts the record on
        // the disk before the responder moves on.
        self.file.sync_data().map_err(|e| fail(e.to_string()))
    }
}

/// Syncs the directory of `path`, so that a file just created there survives a power loss.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Keeps records in memory, shared: for tests and for callers that forward records elsewhere.
#[derive(Clone, Default)]
pub struct MemoryAudit {
    records: std::sync::Arc<std::sync::Mutex<Vec<AuditRecord>>>,
}

impl MemoryAudit {
    /// A copy of the records so far.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.records
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

impl AuditSink for MemoryAudit {
    fn record(&mut self, record: &AuditRecord) -> Result<(), AuditError> {
        match self.records.lock() {
            Ok(mut r) => r.push(record.clone()),
            Err(p) => p.into_inner().push(record.clone()),
        }
        Ok(())
    }
}
