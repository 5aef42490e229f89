//! `authwatch respond list | approve ID | reject ID`, and the responder beside `replay`.

use anyhow::{Context, Result, bail};
use authwatch_event::Timestamp;
use authwatch_pipeline::Config;
use authwatch_pipeline::config::{KafkaConfig, RespondConfig, RespondMode, RespondTarget};
use authwatch_respond::{
    AuditSink, JsonLinesAudit, PendingStatus, PendingStore, Responder, ResponderThread,
    ResponseClock, RunReport,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The environment variable naming the configuration file when `--config` is not given (the
/// Helm chart sets it in the pod, so that `kubectl exec … authwatch respond approve ID` decides
/// with the pipeline's own configuration).
const CONFIG_ENV: &str = "AUTHWATCH_CONFIG";

/// `authwatch respond`
#[derive(Debug, clap::Args)]
pub struct RespondArgs {
    /// Configuration file (TOML; the `[respond]` section): the pipeline's own, so that
    /// decisions use its target, mode, allow-lists and state directory. Default: the file
    /// named by $AUTHWATCH_CONFIG. Required (`list` also accepts `--state-dir` alone).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// The state directory (overrides respond.state_dir).
    #[arg(long, value_name = "DIR", global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: RespondCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RespondCommand {
    /// Actions waiting for approval or for a rate-limit token.
    List {
        /// Also decided and finished actions.
        #[arg(long)]
        all: bool,
    },
    /// Carry out a pending or queued action now (allow-lists are checked again).
    Approve {
        /// The action id (from `respond list`).
        id: String,
        /// Who approves (recorded in the audit record); default $USER.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
    /// Cancel a pending or queued action.
    Reject {
        /// The action id (from `respond list`).
        id: String,
        /// Who rejects (recorded in the audit record); default $USER.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
}

/// The pipeline's configuration, from `--config` or `$AUTHWATCH_CONFIG`. Without one the
/// built-in defaults (dry-run, no target, the default state directory) would decide: an
/// approval would then carry nothing out yet close the action, so a decision needs the file.
/// `list` only reads the store, which `--state-dir` alone can name. With `[kafka]`, whose audit
/// topic a decision's records go to (see [`decision_sinks`]).
fn load(args: &RespondArgs) -> Result<(RespondConfig, KafkaConfig)> {
    let path = args.config.clone().or_else(|| {
        std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let config = match path {
        Some(path) => Config::load(&path)
            // The error names the file already.
            .context("cannot load the configuration")?,
        None if args.state_dir.is_some() && matches!(args.command, RespondCommand::List { .. }) => {
            Config::from_env()?
        }
        None => bail!(
            "no configuration: pass --config FILE or set {CONFIG_ENV} to the pipeline's \
             configuration file (in the Helm chart's pods it is set); `respond` decides with \
             the pipeline's target, mode, allow-lists and state directory, never with defaults"
        ),
    };
    let mut respond = config.respond;
    if let Some(dir) = &args.state_dir {
        respond.state_dir = dir.clone();
    }
    Ok((respond, config.kafka))
}

fn who(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Opens the audit file named by the config.
fn audit_sinks(config: &RespondConfig) -> Result<Vec<Box<dyn AuditSink>>> {
    let path = config.audit_path();
    let audit = JsonLinesAudit::open(&path)
        .with_context(|| format!("cannot open the audit file {}", path.display()))?;
    Ok(vec![Box::new(audit)])
}

/// The sinks of a human's decision: the audit file and, when the configuration is an
/// `authwatch run` pipeline's (`[[kafka.topics]]`), the Kafka audit topic, where that
/// pipeline's responder writes its own decisions: every action and refusal is on the topic,
/// the humans' too. The topic's producer waits for the broker's acknowledgement of each
/// record, so an unreachable broker or a refused record fails the command (after the record
/// is in the file) instead of leaving the topic without it.
fn decision_sinks(config: &RespondConfig, kafka: &KafkaConfig) -> Result<Vec<Box<dyn AuditSink>>> {
    let mut sinks = audit_sinks(config)?;
    if !kafka.topics.is_empty() {
        let client = authwatch_kafka::client_config(kafka)
            .context("cannot configure the Kafka client for the audit topic")?;
        let topic = authwatch_kafka::ResponseAuditTopic::new(client, &kafka.audit_topic)
            .with_context(|| format!("cannot write to the audit topic {}", kafka.audit_topic))?;
        sinks.push(Box::new(topic));
    }
    Ok(sinks)
}

pub fn run(args: RespondArgs) -> Result<ExitCode> {
    let (config, kafka) = load(&args)?;
    match args.command {
        RespondCommand::List { all } => list(&config, all),
        RespondCommand::Approve { id, by } => decide(&config, &kafka, &id, true, who(by)),
        RespondCommand::Reject { id, by } => decide(&config, &kafka, &id, false, who(by)),
    }
}

/// The store of `state_dir`, without creating anything: `None` when no action was ever
/// stored there. Listing and deciding only read it, and a typo in `--state-dir` (or a
/// configuration meant for another host) must say so rather than leave an empty directory
/// behind, which [`PendingStore::open`] would create.
fn existing_store(state_dir: &Path) -> Result<Option<PendingStore>> {
    if !state_dir.is_dir() {
        bail!(
            "{}: no such state directory (respond.state_dir, or --state-dir); the responder \
             creates it when it first stores an action",
            state_dir.display()
        );
    }
    if !state_dir.join("pending").is_dir() {
        return Ok(None);
    }
    Ok(Some(PendingStore::open(state_dir)?))
}

fn list(config: &RespondConfig, all: bool) -> Result<ExitCode> {
    let actions: Vec<_> = match existing_store(&config.state_dir)? {
        Some(store) => store
            .list()?
            .into_iter()
            .filter(|a| all || a.status.is_open())
            .collect(),
        None => Vec::new(),
    };
    let mut out = crate::stdout();
    if actions.is_empty() {
        writeln!(
            out,
            "No {}actions in {}.",
            if all { "" } else { "pending " },
            config.state_dir.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<16}  {:<17}  {:<24}  {:<32}  {:<10}  {:<22}  ACTIONS",
        "ID", "STATUS", "CREATED (UTC)", "ACCOUNT", "TENANT", "RULE"
    )?;
    for a in actions {
        let created = Timestamp(a.created_ms).to_string();
        let actions: Vec<&str> = a.actions.iter().map(|x| x.as_str()).collect();
        writeln!(
            out,
            "{:<16}  {:<17}  {:<24}  {:<32}  {:<10}  {:<22}  {}",
            a.id,
            format!("{:?}", a.status),
            created,
            a.alert.account,
            a.alert.tenant.as_deref().unwrap_or("-"),
            a.alert.rule_id,
            actions.join(",")
        )?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// What can be known of a decision before anything is opened: the id's form, that the action
/// exists and is still open, and that an approval could carry something out. Checked before
/// the audit file and the Kafka producer exist, so that a mistyped id fails at once, with no
/// broker contacted and no file (audit, lock, state directory) created. The responder checks
/// all of this again under its claim on the action.
fn check_decision(config: &RespondConfig, id: &str, approve: bool) -> Result<()> {
    // The store's own rule: the id names a file, it must not escape the directory.
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{id:?} is not an action id (16 hex digits; see `authwatch respond list`)");
    }
    let Some(store) = existing_store(&config.state_dir)? else {
        bail!(
            "no pending action {id:?} in {} (see `authwatch respond list`)",
            config.state_dir.display()
        );
    };
    let action = store.get(id)?;
    if !action.status.is_open() {
        bail!("action {id} is already {:?}", action.status);
    }
    if approve && (config.mode == RespondMode::DryRun || config.target == RespondTarget::None) {
        bail!(
            "the configuration has respond.mode = {} and respond.target = {}: approving \
             would carry nothing out. Run it with the pipeline's configuration (--config or \
             {CONFIG_ENV}), in mode \"approval\" or \"automatic\" with a target; action {id} \
             still waits",
            setting_text(config.mode),
            setting_text(config.target)
        );
    }
    Ok(())
}

/// A setting's value as the configuration file spells it (`"dry_run"`).
fn setting_text(value: impl serde::Serialize) -> String {
    serde_json::to_string(&value).unwrap_or_default()
}

fn decide(
    config: &RespondConfig,
    kafka: &KafkaConfig,
    id: &str,
    approve: bool,
    who: String,
) -> Result<ExitCode> {
    check_decision(config, id, approve)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sinks = decision_sinks(config, kafka)?;
    let mut responder = Responder::new(config, ResponseClock::wall(), sinks)?;
    let (action, records) = runtime.block_on(responder.decide(id, approve, &who))?;
    for r in &records {
        eprintln!(
            "{} {}: {}",
            r.unmapped.action.as_str(),
            r.unmapped.decision.as_str(),
            r.status_detail
        );
    }
    writeln!(crate::stdout(), "{id}: {:?}", action.status)?;
    Ok(match action.status {
        PendingStatus::Executed | PendingStatus::Rejected => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

/// Refuses to start a responder whose configuration could not work as written, before
/// anything runs (`run`, `replay`, `demo`): what [`Responder::new`] refuses (`incident_ttl` of
/// 0, `notify` on a provider target without a pager), and a policy naming a rule id that
/// neither `pack` nor the run's windowed SQL detections have — alerts carry only those ids, so
/// automatic mode would silently never act on that entry.
pub fn check_responder(config: &Config, pack: &authwatch_detect::RulePack) -> Result<()> {
    if !config.respond.enabled {
        return Ok(());
    }
    authwatch_respond::responder::check_config(&config.respond)
        .context("cannot start the responder")?;
    let sql = if config.sql.enabled {
        let dir = &config.sql.dir;
        authwatch_query::load_dir(dir).map_err(|e| crate::replay::sql_dir_error(dir, e))?
    } else {
        Vec::new()
    };
    let known: Vec<&str> = pack
        .rules()
        .iter()
        .map(|r| r.id.as_str())
        .chain(sql.iter().map(|r| r.id.as_str()))
        .collect();
    authwatch_respond::policy::check_rule_ids(&config.respond, &known)
        .context("cannot start the responder")?;
    Ok(())
}

/// The responder beside `replay`, when `[respond] enabled`.
///
/// Time is event time: the limits, incident expiry and the breaker run on the alerts' own
/// times, so that a replay shows what the responder would have done live, at any replay
/// speed, and two replays of one file decide alike. The state is kept in
/// `<state_dir>/replay-state.json` between runs, so replaying a file again repeats no action.
///
/// Mode `automatic` runs as `dry_run` unless the operator passed `--respond-live`: limits in
/// event time let a replay of last month act on a month's worth of accounts within seconds
/// of real time, which no one should get by replaying with the live configuration.
pub struct ReplayResponder {
    thread: Option<ResponderThread>,
    config: RespondConfig,
    /// The configured mode, when the replay runs the responder in dry-run instead.
    downgraded_from: Option<RespondMode>,
}

impl ReplayResponder {
    pub fn start(config: &Config, live: bool) -> Result<ReplayResponder> {
        let mut respond = config.respond.clone();
        if !respond.enabled {
            return Ok(ReplayResponder {
                thread: None,
                config: respond,
                downgraded_from: None,
            });
        }
        let downgraded_from = (respond.mode == RespondMode::Automatic && !live).then(|| {
            eprintln!(
                "respond: mode \"automatic\" runs as \"dry_run\" in this replay (decided and \
                 audited, nothing changed at the identity provider): a replay paces actions by \
                 the alerts' own times, so replaying a month would act on a month's worth of \
                 accounts in seconds. Pass --respond-live to act for real."
            );
            std::mem::replace(&mut respond.mode, RespondMode::DryRun)
        });
        let responder = Responder::new(
            &respond,
            ResponseClock::event_time(0),
            audit_sinks(&respond)?,
        )
        .context("cannot start the responder")?;
        let state = respond.state_dir.join("replay-state.json");
        let thread = ResponderThread::spawn(responder, Some(state))?;
        Ok(ReplayResponder {
            thread: Some(thread),
            config: respond,
            downgraded_from,
        })
    }

    /// The responder's running totals by action and decision (every pair, zeros included),
    /// for the metrics endpoint; `None` when the responder is off.
    pub fn counts(&self) -> Option<authwatch_respond::SharedCounts> {
        self.thread.as_ref().map(|t| t.counts())
    }

    pub fn tee<S: authwatch_pipeline::Sink>(&self, sink: S) -> authwatch_respond::TeeSink<S> {
        match &self.thread {
            Some(t) => t.tee(sink),
            None => authwatch_respond::TeeSink::without_responder(sink),
        }
    }

    /// Waits for the responder and prints what it did.
    pub fn finish(self) -> Result<()> {
        let Some(thread) = self.thread else {
            return Ok(());
        };
        let report: RunReport = thread.finish()?;
        let mut parts: Vec<String> = report
            .counts
            .iter()
            .map(|((action, decision), n)| format!("{n} {} {}", action.as_str(), decision.as_str()))
            .collect();
        if parts.is_empty() {
            parts.push("no alert selected by the policy".to_owned());
        }
        let mode = match self.downgraded_from {
            Some(configured) => format!(
                "{:?}, not the configured {configured:?}: replay acts only with --respond-live",
                self.config.mode
            ),
            None => format!("{:?}", self.config.mode),
        };
        eprintln!(
            "respond ({mode}): {}; {} queued; audit records in {}; pending actions: authwatch respond list --config FILE (this run's configuration)",
            parts.join(", "),
            report.queued,
            self.config.audit_path().display()
        );
        Ok(())
    }
}
