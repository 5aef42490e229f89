//! The Helm chart (`helm/authwatch`), its example values, the Grafana dashboard and the
//! Dockerfile: `helm lint` and `helm template` with real helm, assertions on the rendered
//! manifests, values the schema or the templates must reject, and the image layout the chart
//! relies on.
//!
//! helm and hadolint are located through `AUTHWATCH_HELM` / `AUTHWATCH_HADOLINT`, which
//! `scripts/test` sets from `scripts/helm` and `scripts/hadolint`. Without them these tests fail:
//! a chart that is never rendered is not tested.

use crate::common::repo;
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The metric names every authwatch exports (COMMON conventions; docs/OPERATIONS.md).
const METRICS: &[&str] = &[
    "authwatch_events_in_total",
    "authwatch_events_out_total",
    "authwatch_dead_letters_total",
    "authwatch_late_events_total",
    "authwatch_duplicate_events_total",
    "authwatch_split_tenants",
    "authwatch_rule_state_keys",
    "authwatch_rule_evictions_total",
    "authwatch_alerts_total",
    "authwatch_response_actions_total",
    "authwatch_consumer_lag",
    "authwatch_merge_held",
    "authwatch_checkpoint_duration_seconds",
    "authwatch_checkpoint_age_seconds",
    "authwatch_snapshot_store_duration_seconds",
    "authwatch_snapshot_store_failures_total",
    "authwatch_audit_record_failures_total",
    "authwatch_sql_detection_failures_total",
    "authwatch_sql_detection_alerts_total",
    "authwatch_sql_detection_suppressed_total",
    "authwatch_sql_detection_evicted_rows_total",
    "authwatch_batch_duration_seconds",
    "authwatch_throughput_events_per_second",
];

/// Config sections that other parts of authwatch add (the Kafka runtime, telemetry, the responder,
/// SQL). A build that does not know one yet cannot check the keys the chart renders into it; a
/// build that knows it checks them like every other section.
const SECTIONS_OF_OTHER_PARTS: &[&str] = &[
    "kafka",
    "checkpoint",
    "telemetry",
    "respond",
    "sql",
    "archive",
    "serve",
];

const SECRETS_DIR: &str = "/var/run/secrets/authwatch";

fn tool(var: &str, script: &str) -> PathBuf {
    let path = std::env::var_os(var).unwrap_or_else(|| {
        panic!(
            "{var} is not set: run the tests through scripts/test, or export {var}=\"$({script})\""
        )
    });
    let path = PathBuf::from(path);
    assert!(path.is_file(), "{var}={} does not exist", path.display());
    path
}

fn helm() -> Command {
    let mut cmd = Command::new(tool("AUTHWATCH_HELM", "scripts/helm"));
    // helm keeps caches and plugins under these; keep the tests away from the user's.
    let home = std::env::temp_dir().join("authwatch-helm-test-home");
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

fn chart() -> PathBuf {
    repo().join("helm/authwatch")
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn example(name: &str) -> PathBuf {
    let path = chart().join("examples").join(name);
    assert!(path.is_file(), "{}", path.display());
    path
}

/// `helm template` arguments: values files and `--set` pairs.
#[derive(Default, Clone)]
struct Values<'a> {
    files: Vec<PathBuf>,
    set: Vec<&'a str>,
    set_json: Vec<&'a str>,
}

impl<'a> Values<'a> {
    fn file(path: PathBuf) -> Self {
        Values {
            files: vec![path],
            ..Values::default()
        }
    }
    fn set(mut self, pair: &'a str) -> Self {
        self.set.push(pair);
        self
    }
    fn set_json(mut self, pair: &'a str) -> Self {
        self.set_json.push(pair);
        self
    }
    fn args(&self, cmd: &mut Command) {
        for f in &self.files {
            cmd.arg("--values").arg(f);
        }
        for s in &self.set {
            cmd.arg("--set").arg(s);
        }
        for s in &self.set_json {
            cmd.arg("--set-json").arg(s);
        }
    }
}

fn template_cmd(values: &Values) -> Command {
    let mut cmd = helm();
    cmd.args(["template", "aw", "--namespace", "security"])
        .arg(chart());
    values.args(&mut cmd);
    cmd
}

/// Renders the chart and parses every manifest.
fn render(values: &Values) -> Manifests {
    let out = template_cmd(values).output().unwrap();
    assert!(
        out.status.success(),
        "helm template failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{e}\n{text}")))
        .filter(|v| !v.is_null())
        .collect();
    Manifests(docs)
}

/// Renders the chart expecting failure; returns helm's message.
fn render_err(values: &Values) -> String {
    let out = template_cmd(values).output().unwrap();
    assert!(
        !out.status.success(),
        "helm template accepted values it should reject: --set {:?} --set-json {:?}",
        values.set,
        values.set_json
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

struct Manifests(Vec<Value>);

impl Manifests {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.0.iter().filter(|d| d["kind"] == kind).collect()
    }
    fn one(&self, kind: &str) -> &Value {
        let found = self.all(kind);
        assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
        found[0]
    }
    fn named(&self, kind: &str, name: &str) -> &Value {
        self.0
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }
    fn statefulset(&self) -> &Value {
        self.one("StatefulSet")
    }
    fn pod(&self) -> &Value {
        &self.statefulset()["spec"]["template"]["spec"]
    }
    fn container(&self) -> &Value {
        let containers = self.pod()["containers"].as_sequence().unwrap();
        containers
            .iter()
            .find(|c| c["name"] == "authwatch")
            .expect("authwatch container")
    }
    fn config_toml(&self) -> String {
        str_of(&self.named("ConfigMap", "aw-authwatch-config")["data"]["config.toml"]).to_owned()
    }
    fn config(&self) -> toml::Table {
        toml::from_str(&self.config_toml())
            .unwrap_or_else(|e| panic!("config.toml is not TOML: {e}\n{}", self.config_toml()))
    }
    fn annotation(&self, key: &str) -> String {
        str_of(&self.statefulset()["spec"]["template"]["metadata"]["annotations"][key]).to_owned()
    }
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn seq(v: &Value) -> &Vec<Value> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a sequence: {v:?}"))
}

/// The default values and every example values file.
fn every_values() -> Vec<(String, Values<'static>)> {
    let mut all = vec![("defaults".to_owned(), Values::default())];
    for f in examples() {
        all.push((
            f.file_name().unwrap().to_string_lossy().into_owned(),
            Values::file(f),
        ));
    }
    all
}

#[test]
fn helm_lint_passes_for_defaults_and_every_example() {
    assert!(examples().len() >= 4, "examples: {:?}", examples());
    for (name, values) in every_values() {
        let mut cmd = helm();
        cmd.args(["lint", "--strict", "--namespace", "security"])
            .arg(chart());
        values.args(&mut cmd);
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("0 chart(s) failed"),
            "helm lint {name}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The Kubernetes API's own types accept every rendered object: no unknown or misplaced field, no
/// wrong type, no malformed quantity (custom resources are checked by the tests below).
#[test]
fn every_manifest_decodes_strictly_into_the_kubernetes_types() {
    let validator = tool("AUTHWATCH_KUBE_VALIDATE", "scripts/kube-validate");
    for (name, values) in every_values() {
        let values = values
            .set("serviceMonitor.enabled=true")
            .set("prometheusRule.enabled=true")
            .set("grafanaDashboard.enabled=true");
        let out = template_cmd(&values).output().unwrap();
        assert!(out.status.success(), "{name}");
        let mut child = Command::new(&validator)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &out.stdout).unwrap();
        let result = child.wait_with_output().unwrap();
        let report = String::from_utf8_lossy(&result.stdout);
        assert!(
            result.status.success(),
            "{name}:\n{report}{}",
            String::from_utf8_lossy(&result.stderr)
        );
        assert!(
            report.contains("ok apps/v1/StatefulSet aw-authwatch"),
            "{report}"
        );
        assert!(report.contains("manifests decoded strictly"), "{report}");
    }
}

#[test]
fn every_pod_is_locked_down() {
    for (name, values) in every_values() {
        let m = render(&values);
        let pod = m.pod();
        let psc = &pod["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true, "{name}");
        assert_eq!(psc["runAsUser"], 10001, "{name}");
        assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        for c in seq(&pod["containers"]) {
            let sc = &c["securityContext"];
            let who = format!("{name}: container {:?}", c["name"]);
            assert_eq!(sc["runAsNonRoot"], true, "{who}");
            assert_eq!(sc["runAsUser"], 10001, "{who}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{who}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{who}");
            assert_eq!(
                sc["capabilities"]["drop"],
                Value::from(vec!["ALL"]),
                "{who}"
            );
            assert!(sc["capabilities"]["add"].is_null(), "{who}");
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{who}");
            // Memory is bounded by configuration; the limit makes that visible to the scheduler.
            assert!(c["resources"]["limits"]["memory"].is_string(), "{who}");
            assert!(c["resources"]["requests"]["cpu"].is_string(), "{who}");
        }
        // Only /var/lib/authwatch (and a checkpoint volume under it) and /tmp are writable.
        let writable: BTreeSet<&str> = seq(&m.container()["volumeMounts"])
            .iter()
            .filter(|v| v["readOnly"] != true)
            .map(|v| str_of(&v["mountPath"]))
            .collect();
        assert!(writable.contains("/var/lib/authwatch"), "{name}");
        assert!(writable.contains("/tmp"), "{name}");
        for path in &writable {
            assert!(
                *path == "/tmp" || path.starts_with("/var/lib/authwatch"),
                "{name}: {path} is writable"
            );
        }
    }
}

#[test]
fn the_container_runs_authwatch_run_with_probes_on_the_health_endpoints() {
    for (name, values) in every_values() {
        let m = render(&values);
        let c = m.container();
        assert_eq!(c["command"], Value::from(vec!["/usr/local/bin/authwatch"]));
        assert_eq!(
            c["args"],
            Value::from(vec!["run", "--config", "/etc/authwatch/config.toml"]),
            "{name}"
        );
        // `kubectl exec … authwatch respond approve ID` decides with the same configuration.
        let env = seq(&c["env"]);
        assert!(
            env.iter()
                .any(|e| e["name"] == "AUTHWATCH_CONFIG"
                    && e["value"] == "/etc/authwatch/config.toml"),
            "{name}: {env:?}"
        );
        let ports: BTreeMap<&str, &Value> = seq(&c["ports"])
            .iter()
            .map(|p| (str_of(&p["name"]), &p["containerPort"]))
            .collect();
        assert_eq!(ports["http-metrics"], &Value::from(9464), "{name}");
        for (probe, path) in [
            ("startupProbe", "/startupz"),
            ("livenessProbe", "/livez"),
            ("readinessProbe", "/readyz"),
        ] {
            let p = &c[probe];
            assert_eq!(p["httpGet"]["path"], path, "{name} {probe}");
            assert_eq!(p["httpGet"]["port"], "http-metrics", "{name} {probe}");
            assert!(p["failureThreshold"].as_u64().unwrap() >= 1, "{name}");
        }
        // State restore may take minutes: the startup probe must allow for it before liveness.
        let startup = &c["startupProbe"];
        assert!(
            startup["periodSeconds"].as_u64().unwrap()
                * startup["failureThreshold"].as_u64().unwrap()
                >= 300,
            "{name}"
        );
        let config = m.config();
        assert_eq!(config["telemetry"]["listen"].as_str(), Some("0.0.0.0:9464"));
        assert_eq!(
            config["detect"]["rules"].as_str(),
            Some("/etc/authwatch/rules")
        );
        assert_eq!(config["sql"]["dir"].as_str(), Some("/etc/authwatch/sql"));
    }
}

/// The rendered config is valid for this build of authwatch: every section it knows is parsed
/// with `deny_unknown_fields` and validated exactly as `authwatch run --config` would.
#[test]
fn the_rendered_config_is_accepted_by_authwatch() {
    for (name, values) in every_values() {
        let m = render(&values);
        let mut table = m.config();
        let mut unknown = Vec::new();
        for section in table.keys().cloned().collect::<Vec<_>>() {
            let probe = format!("[{section}]\n");
            if let Err(e) = toml::from_str::<authwatch_pipeline::Config>(&probe)
                && e.to_string().contains("unknown field")
            {
                assert!(
                    SECTIONS_OF_OTHER_PARTS.contains(&section.as_str()),
                    "{name}: the chart renders section [{section}], which authwatch does not have"
                );
                table.remove(&section);
                unknown.push(section);
            }
        }
        if !unknown.is_empty() {
            eprintln!("{name}: sections not in this build, not checked: {unknown:?}");
        }
        let text = toml::to_string(&table).unwrap();
        authwatch_pipeline::Config::from_toml(Path::new(&name), &text, Vec::new())
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", m.config_toml()));
    }
}

#[test]
fn config_renders_as_toml_from_values_and_rolls_the_pods_when_it_changes() {
    let base = render(&Values::default());
    let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    for key in ["checksum/config", "checksum/rules", "checksum/sql"] {
        assert!(
            hex(&base.annotation(key)),
            "{key}: {}",
            base.annotation(key)
        );
    }

    // Free-form config: nested tables, arrays of tables, strings needing escapes, numbers.
    let changed = render(
        &Values::default()
            .set("config.output.language=ja")
            .set_json(r#"config.enrich.cidr_lists=[{"path":"/etc/authwatch/egress.txt","tag":"corporate_egress"}]"#)
            .set_json(r#"config.detect.max_keys_per_rule=250000"#)
            .set_json(r#"config.input.mapping="/etc/authwatch/a \"quoted\" \\ name.yaml""#),
    );
    let config = changed.config();
    assert_eq!(config["output"]["language"].as_str(), Some("ja"));
    assert_eq!(
        config["detect"]["max_keys_per_rule"].as_integer(),
        Some(250_000)
    );
    assert_eq!(
        config["enrich"]["cidr_lists"][0]["tag"].as_str(),
        Some("corporate_egress")
    );
    assert_eq!(
        config["input"]["mapping"].as_str(),
        Some(r#"/etc/authwatch/a "quoted" \ name.yaml"#)
    );
    assert_ne!(
        base.annotation("checksum/config"),
        changed.annotation("checksum/config")
    );
    assert_eq!(
        base.annotation("checksum/rules"),
        changed.annotation("checksum/rules")
    );

    // Repartitioning by tenant: off unless asked for, then the section authwatch validates.
    assert!(base.config()["kafka"].get("repartition").is_none());
    let repart = render(
        &Values::default()
            .set("kafka.repartition.enabled=true")
            .set("kafka.repartition.partitions=24"),
    );
    let kafka = &repart.config()["kafka"];
    assert_eq!(kafka["repartition"]["enabled"].as_bool(), Some(true));
    assert_eq!(kafka["repartition"]["partitions"].as_integer(), Some(24));
    // Only the [kafka] section: the chart may render sections of parts not in this build.
    let mut only_kafka = toml::Table::new();
    only_kafka.insert("kafka".to_owned(), kafka.clone());
    let parsed = authwatch_pipeline::Config::from_toml(
        Path::new("rendered.toml"),
        &toml::to_string(&only_kafka).unwrap(),
        Vec::new(),
    )
    .unwrap();
    assert!(parsed.kafka.repartition.enabled);
    assert_eq!(parsed.kafka.repartition.partitions, 24);

    let more_rules =
        render(&Values::default().set_json(r#"rules.extra={"site_vpn.yaml":"id: site_vpn\n"}"#));
    assert_ne!(
        base.annotation("checksum/rules"),
        more_rules.annotation("checksum/rules")
    );
    assert_eq!(
        base.annotation("checksum/config"),
        more_rules.annotation("checksum/config")
    );
    let rules = more_rules.named("ConfigMap", "aw-authwatch-rules");
    assert_eq!(rules["data"]["site_vpn.yaml"], "id: site_vpn\n");

    // Workers and detect threads follow the pod's CPU request, not the node's cores; the config
    // can still say.
    let runtime = |values: &Values, key: &str| render(values).config()["runtime"][key].as_integer();
    for key in ["workers", "detect_threads"] {
        assert_eq!(runtime(&Values::default(), key), Some(1), "{key}");
        assert_eq!(
            runtime(&Values::default().set("resources.requests.cpu=1500m"), key),
            Some(2),
            "{key}"
        );
        let six = format!("config.runtime.{key}=6");
        assert_eq!(runtime(&Values::default().set(&six), key), Some(6), "{key}");
    }

    // Extra read-only files for the config to name.
    let lists = render(
        &Values::default()
            .set_json(r#"extraVolumes=[{"name":"lists","configMap":{"name":"cidr"}}]"#)
            .set_json(r#"extraVolumeMounts=[{"name":"lists","mountPath":"/etc/authwatch/lists","readOnly":true}]"#),
    );
    assert!(
        seq(&lists.pod()["volumes"])
            .iter()
            .any(|v| v["configMap"]["name"] == "cidr")
    );
    assert!(
        seq(&lists.container()["volumeMounts"])
            .iter()
            .any(|v| v["mountPath"] == "/etc/authwatch/lists" && v["readOnly"] == true)
    );

    // Rendering is deterministic (sorted keys): the same values never roll the pods.
    assert_eq!(
        render(&Values::default()).annotation("checksum/config"),
        base.annotation("checksum/config")
    );
}

fn repo_files(dir: &str, ext: &str) -> BTreeMap<String, String> {
    std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

fn configmap_files(m: &Manifests, name: &str) -> BTreeMap<String, String> {
    let data = &m.named("ConfigMap", name)["data"];
    if data.is_null() {
        return BTreeMap::new();
    }
    data.as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (str_of(k).to_owned(), str_of(v).to_owned()))
        .collect()
}

#[test]
fn the_chart_ships_exactly_the_repository_rules_and_sql() {
    // helm/authwatch/files/{rules,sql} are links to the repository's directories, so the chart
    // cannot drift from them; this checks that the links resolve and the bytes arrive intact.
    for link in ["rules", "sql"] {
        let path = chart().join("files").join(link);
        assert!(
            std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{}",
            path.display()
        );
    }
    let m = render(&Values::default());
    let rules = repo_files("rules", "yaml");
    assert!(rules.len() >= 20, "{}", rules.len());
    assert_eq!(configmap_files(&m, "aw-authwatch-rules"), rules);
    assert_eq!(
        configmap_files(&m, "aw-authwatch-sql"),
        repo_files("sql", "sql")
    );
    // The rule-test cases are not rules.
    assert!(!configmap_files(&m, "aw-authwatch-rules").contains_key("tests"));

    // Operators can swap in their own ConfigMap.
    let own = render(&Values::default().set("rules.existingConfigMap=site-rules"));
    assert!(
        own.all("ConfigMap")
            .iter()
            .all(|c| c["metadata"]["name"] != "aw-authwatch-rules")
    );
    let volumes = seq(&own.pod()["volumes"]);
    let rules_volume = volumes.iter().find(|v| v["name"] == "rules").unwrap();
    assert_eq!(rules_volume["configMap"]["name"], "site-rules");
}

/// Every string value of the rendered config (dotted key, value).
fn config_strings(table: &toml::Table, prefix: &str, out: &mut Vec<(String, String)>) {
    for (k, v) in table {
        let key = format!("{prefix}{k}");
        match v {
            toml::Value::String(s) => out.push((key, s.clone())),
            toml::Value::Table(t) => config_strings(t, &format!("{key}."), out),
            toml::Value::Array(a) => {
                for t in a.iter().filter_map(toml::Value::as_table) {
                    config_strings(t, &format!("{key}[]."), out);
                }
            }
            _ => {}
        }
    }
}

#[test]
fn secrets_come_only_from_existing_secrets_by_reference() {
    for (name, values) in every_values() {
        let m = render(&values);
        assert!(
            m.all("Secret").is_empty(),
            "{name}: the chart renders a Secret"
        );
        let pod = m.pod();
        let mounts: BTreeMap<&str, &str> = seq(&m.container()["volumeMounts"])
            .iter()
            .map(|v| (str_of(&v["name"]), str_of(&v["mountPath"])))
            .collect();
        // Files the secret volumes provide, at their mounted paths.
        let mut provided = BTreeSet::new();
        for v in seq(&pod["volumes"]) {
            if v["secret"].is_null() {
                continue;
            }
            let volume = str_of(&v["name"]);
            assert!(str_of(&v["secret"]["secretName"]).len() > 1, "{name}");
            let dir = mounts[volume];
            assert!(dir.starts_with(SECRETS_DIR), "{name}: {volume} at {dir}");
            for item in seq(&v["secret"]["items"]) {
                provided.insert(format!("{dir}/{}", str_of(&item["path"])));
            }
        }
        // The config names secret files, never secret values; each named file is mounted, and
        // each mounted file is named.
        let mut strings = Vec::new();
        config_strings(&m.config(), "", &mut strings);
        let named: BTreeSet<String> = strings
            .into_iter()
            .map(|(_, v)| v)
            .filter(|v| v.starts_with(SECRETS_DIR))
            .collect();
        assert_eq!(named, provided, "{name}");
        // Environment variables from Secrets only by reference too.
        for c in seq(&pod["containers"]) {
            for e in c["env"].as_sequence().into_iter().flatten() {
                let n = str_of(&e["name"]);
                let sensitive = ["PASSWORD", "TOKEN", "SECRET", "KEY"]
                    .iter()
                    .any(|s| n.contains(s));
                assert!(
                    !sensitive || e["value"].is_null(),
                    "{name}: {n} has an inline value"
                );
            }
        }
    }

    // The SASL + mutual TLS example wires every file.
    let m = render(&Values::file(example("tls.yaml")));
    let kafka = &m.config()["kafka"];
    assert_eq!(
        kafka["properties_file"].as_str(),
        Some(format!("{SECRETS_DIR}/kafka-sasl/client.properties").as_str())
    );
    let props = &kafka["properties"];
    assert_eq!(props["security.protocol"].as_str(), Some("sasl_ssl"));
    assert_eq!(props["sasl.mechanism"].as_str(), Some("SCRAM-SHA-512"));
    for (key, path) in [
        ("ssl.ca.location", "kafka-tls/ca.crt"),
        ("ssl.certificate.location", "kafka-tls/tls.crt"),
        ("ssl.key.location", "kafka-tls/tls.key"),
    ] {
        assert_eq!(
            props[key].as_str(),
            Some(format!("{SECRETS_DIR}/{path}").as_str()),
            "{key}"
        );
    }
    // No property carries a secret value: those stay in the mounted properties file.
    for key in props.as_table().unwrap().keys() {
        assert!(!key.contains("password") && !key.ends_with(".key"), "{key}");
    }
    assert_eq!(
        m.config()["respond"]["okta"]["token"]["file"].as_str(),
        Some(format!("{SECRETS_DIR}/okta-token/token").as_str())
    );
    assert_eq!(m.config()["respond"]["mode"].as_str(), Some("dry_run"));
}

fn volume<'a>(m: &'a Manifests, name: &str) -> Option<&'a Value> {
    seq(&m.pod()["volumes"]).iter().find(|v| v["name"] == name)
}

#[test]
fn a_volume_claim_per_pod_only_when_checkpoints_are_local() {
    // local: one claim per pod, from the StatefulSet.
    let local = render(&Values::file(example("tls.yaml")));
    let claims = seq(&local.statefulset()["spec"]["volumeClaimTemplates"]);
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0]["metadata"]["name"], "state");
    assert_eq!(
        claims[0]["spec"]["resources"]["requests"]["storage"],
        "20Gi"
    );
    assert_eq!(claims[0]["spec"]["storageClassName"], "fast-ssd");
    assert!(volume(&local, "state").is_none());
    assert!(local.all("PersistentVolumeClaim").is_empty());
    assert_eq!(
        local.config()["checkpoint"]["dir"].as_str(),
        Some("/var/lib/authwatch/checkpoints")
    );

    // shared: one ReadWriteMany claim that every pod mounts; created and kept, or existing.
    let shared = render(&Values::file(example("sasl-plain.yaml")));
    assert!(shared.statefulset()["spec"]["volumeClaimTemplates"].is_null());
    let pvc = shared.one("PersistentVolumeClaim");
    assert_eq!(
        pvc["spec"]["accessModes"],
        Value::from(vec!["ReadWriteMany"])
    );
    assert_eq!(
        pvc["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert_eq!(
        volume(&shared, "checkpoints").unwrap()["persistentVolumeClaim"]["claimName"],
        pvc["metadata"]["name"]
    );
    let mount = seq(&shared.container()["volumeMounts"])
        .iter()
        .find(|v| v["name"] == "checkpoints")
        .unwrap();
    assert_eq!(
        shared.config()["checkpoint"]["dir"].as_str(),
        mount["mountPath"].as_str()
    );
    assert!(volume(&shared, "state").unwrap()["emptyDir"].is_mapping());
    let existing = render(&Values::file(example("keda.yaml")));
    assert!(existing.all("PersistentVolumeClaim").is_empty());
    assert_eq!(
        volume(&existing, "checkpoints").unwrap()["persistentVolumeClaim"]["claimName"],
        "authwatch-checkpoints"
    );

    // The archive in object storage: credentials from the ServiceAccount, none mounted.
    let archive = render(&Values::file(example("object-storage.yaml")));
    assert_eq!(
        archive.config()["archive"]["location"].as_str(),
        Some("s3://acme-authwatch/archive/prod")
    );
    assert!(archive.container()["envFrom"].is_null());
    // Checkpoints in the bucket too: no claim, no checkpoint volume, the URL in the config.
    assert_eq!(
        archive.config()["checkpoint"]["url"].as_str(),
        Some("s3://acme-authwatch/checkpoints/prod")
    );
    assert!(archive.config()["checkpoint"].get("dir").is_none());
    assert_eq!(
        archive.config()["checkpoint"]["snapshot_interval"].as_str(),
        Some("30s")
    );
    assert!(archive.all("PersistentVolumeClaim").is_empty());
    assert!(archive.statefulset()["spec"]["volumeClaimTemplates"].is_null());
    assert!(volume(&archive, "checkpoints").is_none());
    assert!(
        archive.one("ServiceAccount")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
            .is_string()
    );
}

#[test]
fn keda_scales_the_statefulset_on_lag_within_the_partition_count() {
    let defaults = render(&Values::default());
    assert!(defaults.all("ScaledObject").is_empty());
    assert_eq!(defaults.statefulset()["spec"]["replicas"], 1);

    let m = render(&Values::file(example("keda.yaml")));
    let so = m.one("ScaledObject");
    assert_eq!(so["spec"]["scaleTargetRef"]["kind"], "StatefulSet");
    assert_eq!(so["spec"]["scaleTargetRef"]["name"], "aw-authwatch");
    assert_eq!(so["spec"]["maxReplicaCount"], 12);
    let trigger = &seq(&so["spec"]["triggers"])[0];
    assert_eq!(trigger["type"], "kafka");
    assert_eq!(trigger["metadata"]["consumerGroup"], "authwatch");
    assert_eq!(trigger["metadata"]["sasl"], "scram_sha256");
    // KEDA owns the replica count: a helm upgrade must not reset it.
    assert!(m.statefulset()["spec"]["replicas"].is_null());
    let auth = m.one("TriggerAuthentication");
    assert_eq!(
        trigger["authenticationRef"]["name"],
        auth["metadata"]["name"]
    );
    for r in seq(&auth["spec"]["secretTargetRef"]) {
        assert_eq!(r["name"], "authwatch-kafka");
    }

    let prom = render(&Values::file(example("keda.yaml")).set("keda.trigger=prometheus"));
    let trigger = &seq(&prom.one("ScaledObject")["spec"]["triggers"])[0];
    assert_eq!(trigger["type"], "prometheus");
    assert!(str_of(&trigger["metadata"]["query"]).contains("authwatch_consumer_lag"));
    assert!(prom.all("TriggerAuthentication").is_empty());

    // The kafka trigger reads the lag from the brokers: it may scale to zero and back. The
    // prometheus trigger needs a pod to export the lag (bad_values_are_rejected).
    let to_zero = render(&Values::file(example("keda.yaml")).set("keda.minReplicas=0"));
    assert_eq!(to_zero.one("ScaledObject")["spec"]["minReplicaCount"], 0);
    let prom_one = render(
        &Values::file(example("keda.yaml"))
            .set("keda.trigger=prometheus")
            .set("keda.minReplicas=1"),
    );
    assert_eq!(prom_one.one("ScaledObject")["spec"]["minReplicaCount"], 1);
}

/// The replica ceiling is the largest single topic's partition count: librdkafka's default
/// assignor (range, which authwatch keeps) divides each topic among the members on its own,
/// always starting from the same members, so pods beyond the largest topic's count get nothing
/// and never become ready (they would block rollouts and drains through the PDB).
#[test]
fn replicas_are_capped_by_the_largest_topic_not_by_the_sum() {
    const TWO_TOPICS: &str =
        r#"kafka.topics=[{"name":"okta","partitions":6},{"name":"entra","partitions":6}]"#;
    let shared = || {
        Values::default()
            .set("checkpoint.storage=shared")
            .set_json(TWO_TOPICS)
    };
    let m = render(&shared().set("replicaCount=6"));
    assert_eq!(m.statefulset()["spec"]["replicas"], 6);
    // The partition counts are the chart's: authwatch's [[kafka.topics]] has name and format.
    let config = m.config();
    let topics = config["kafka"]["topics"].as_array().unwrap();
    assert_eq!(topics.len(), 2);
    for t in topics {
        let table = t.as_table().unwrap();
        assert!(table.contains_key("name"), "{t:?}");
        assert!(!table.contains_key("partitions"), "{t:?}");
    }
    let err = render_err(&shared().set("replicaCount=12"));
    assert!(err.contains("replicaCount (12) exceeds 6"), "{err}");
    let err = render_err(&shared().set("keda.enabled=true").set("keda.maxReplicas=12"));
    assert!(err.contains("keda.maxReplicas (12) exceeds 6"), "{err}");
    // Uneven topics: the largest one decides.
    let uneven = Values::default().set("checkpoint.storage=shared").set_json(
        r#"kafka.topics=[{"name":"okta","partitions":3},{"name":"entra","partitions":8}]"#,
    );
    render(&uneven.clone().set("replicaCount=8"));
    let err = render_err(&uneven.set("replicaCount=9"));
    assert!(err.contains("largest input topic, entra, has 8"), "{err}");
    // The round-robin assignor spreads all topics' partitions over the members: the sum counts.
    let roundrobin = shared().set(r"kafka.properties.partition\.assignment\.strategy=roundrobin");
    render(&roundrobin.clone().set("replicaCount=12"));
    let err = render_err(&roundrobin.set("replicaCount=13"));
    assert!(err.contains("replicaCount (13) exceeds 12"), "{err}");
    // With repartitioning, a pod that holds only internal partitions (the detect stage) is ready.
    let repartitioned = shared()
        .set("kafka.repartition.enabled=true")
        .set("kafka.repartition.partitions=12");
    render(&repartitioned.clone().set("replicaCount=12"));
    let err = render_err(&repartitioned.set("replicaCount=13"));
    assert!(
        err.contains("internal topic of kafka.repartition has 12"),
        "{err}"
    );
}

/// The grace period covers the longest graceful stop docs/KAFKA.md describes ("Timeouts"): the
/// transaction timeout T = max(2 × checkpoint.interval + 10 s, 30 s) for the pending commit,
/// max(T / 4, 2 s) for the abort, 10 s for the audit producer's flush.
#[test]
fn the_grace_period_covers_a_stop_with_the_broker_away() {
    // Default interval (500ms): T = 30 s, a stop up to 30 + 7.5 + 10 = 47.5 s, within 60 s.
    render(&Values::default());
    render(&Values::default().set("terminationGracePeriodSeconds=48"));
    let err = render_err(&Values::default().set("terminationGracePeriodSeconds=47"));
    assert!(err.contains("below the 48 s"), "{err}");
    // 30s: T = 70 s, a stop up to 70 + 17.5 + 10 = 97.5 s.
    let thirty = Values::default().set("checkpoint.interval=30s");
    render(&thirty.clone().set("terminationGracePeriodSeconds=98"));
    let err = render_err(&thirty.set("terminationGracePeriodSeconds=97"));
    assert!(err.contains("below the 98 s"), "{err}");
    assert!(err.contains("= 70 s"), "{err}");
    // authwatch's duration syntax, compound and with a space.
    let err = render_err(&Values::default().set("checkpoint.interval=1m 30s"));
    assert!(err.contains("below the 248 s"), "{err}");
    render(&Values::default().set("checkpoint.interval=15s"));
}

/// Every pod's metrics pushed over OTLP carry its pod and namespace (and authwatch adds
/// `service.instance.id`): without them the pods' cumulative counters collide in the backend.
#[test]
fn otlp_resource_attributes_name_the_pod() {
    for (name, values) in every_values() {
        let m = render(&values);
        let env = seq(&m.container()["env"]);
        let at = |var: &str| env.iter().position(|e| e["name"] == var);
        let attrs = at("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_else(|| panic!("{name}: {env:?}"));
        assert_eq!(
            env[attrs]["value"], "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)",
            "{name}"
        );
        // Kubernetes expands $(VAR) only from variables defined earlier in the list.
        for (var, field) in [
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace"),
        ] {
            let i = at(var).unwrap_or_else(|| panic!("{name}: no {var}"));
            assert!(i < attrs, "{name}: {var} after OTEL_RESOURCE_ATTRIBUTES");
            assert_eq!(
                env[i]["valueFrom"]["fieldRef"]["fieldPath"], field,
                "{name}"
            );
        }
    }
}

/// `envFrom`: whole existing Secrets and ConfigMaps as environment variables, by reference (the
/// credentials of checkpoint object storage when the ServiceAccount carries no identity), after
/// the archive's Secret when that is set.
#[test]
fn env_from_passes_existing_secrets_and_config_maps_by_reference() {
    let m = render(&Values::file(example("object-storage.yaml")).set_json(
        r#"envFrom=[{"secretRef":{"name":"authwatch-checkpoint-s3"}},{"configMapRef":{"name":"authwatch-env","optional":true},"prefix":"AW_"}]"#,
    ));
    let env_from = seq(&m.container()["envFrom"]);
    assert_eq!(env_from.len(), 2, "{env_from:?}");
    assert_eq!(env_from[0]["secretRef"]["name"], "authwatch-checkpoint-s3");
    assert!(env_from[0]["secretRef"]["optional"].is_null());
    assert_eq!(env_from[1]["configMapRef"]["name"], "authwatch-env");
    assert_eq!(env_from[1]["configMapRef"]["optional"], true);
    assert_eq!(env_from[1]["prefix"], "AW_");
    // Only the authwatch container gets them (not a GeoIP updater).
    for c in seq(&m.pod()["containers"]) {
        if c["name"] != "authwatch" {
            assert!(c["envFrom"].is_null(), "{c:?}");
        }
    }
    // The chart still creates no Secret, and the config names none of these.
    assert!(m.all("Secret").is_empty());
    assert!(!m.config_toml().contains("authwatch-checkpoint-s3"));

    // With the archive's own Secret: that one first, then these.
    let both = render(
        &Values::default()
            .set("archive.url=s3://acme/archive")
            .set("archive.existingSecret=authwatch-archive")
            .set_json(r#"envFrom=[{"secretRef":{"name":"authwatch-checkpoint-s3"}}]"#),
    );
    let names: Vec<&str> = seq(&both.container()["envFrom"])
        .iter()
        .map(|e| str_of(&e["secretRef"]["name"]))
        .collect();
    assert_eq!(names, ["authwatch-archive", "authwatch-checkpoint-s3"]);
    // And none at all by default.
    assert!(render(&Values::default()).container()["envFrom"].is_null());

    // The Kubernetes API's types accept it.
    let validator = tool("AUTHWATCH_KUBE_VALIDATE", "scripts/kube-validate");
    let out = template_cmd(&Values::file(example("object-storage.yaml")).set_json(
        r#"envFrom=[{"secretRef":{"name":"s3","optional":false}},{"configMapRef":{"name":"env"},"prefix":"AW_"}]"#,
    ))
    .output()
    .unwrap();
    assert!(out.status.success());
    let mut child = Command::new(&validator)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &out.stdout).unwrap();
    let result = child.wait_with_output().unwrap();
    assert!(
        result.status.success(),
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
}

/// A responder in approval or automatic mode needs a target; with one the chart renders it and
/// authwatch accepts the config.
#[test]
fn a_responder_that_acts_renders_only_with_a_target() {
    let m = render(
        &Values::default()
            .set("respond.enabled=true")
            .set("respond.mode=approval")
            .set_json(r#"config={"respond":{"target":"webhook","webhook":{"url":"https://soar.example.com/hook","secret":{"file":"/var/run/secrets/authwatch/hook/secret"}}}}"#),
    );
    let config = m.config();
    assert_eq!(config["respond"]["mode"].as_str(), Some("approval"));
    assert_eq!(config["respond"]["target"].as_str(), Some("webhook"));
    let respond = toml::to_string(&toml::Table::from_iter([(
        "respond".to_owned(),
        config["respond"].clone(),
    )]))
    .unwrap();
    authwatch_pipeline::Config::from_toml(Path::new("respond"), &respond, Vec::new())
        .unwrap_or_else(|e| panic!("{e}\n{respond}"));
    // Several pods acting automatically, once the per-pod limits are acknowledged, with the
    // responder's state on the shared volume (bad_values_are_rejected has the refusals).
    let m = render(
        &Values::default()
            .set("respond.enabled=true")
            .set("respond.mode=automatic")
            .set("respond.perPodLimitsAcknowledged=true")
            .set("replicaCount=3")
            .set("checkpoint.storage=shared")
            .set_json(r#"config={"respond":{"target":"webhook","state_dir":"/var/lib/authwatch/checkpoints/respond","webhook":{"url":"https://soar.example.com/hook","secret":{"file":"/var/run/secrets/authwatch/hook/secret"}}}}"#),
    );
    assert_eq!(
        m.config()["respond"]["state_dir"].as_str(),
        Some("/var/lib/authwatch/checkpoints/respond")
    );
}

#[test]
fn services_disruption_budget_and_network_policy() {
    let m = render(&Values::file(example("sasl-plain.yaml")));
    let svc = m.named("Service", "aw-authwatch");
    let ports: BTreeMap<&str, &Value> = seq(&svc["spec"]["ports"])
        .iter()
        .map(|p| (str_of(&p["name"]), &p["port"]))
        .collect();
    assert_eq!(ports["http-metrics"], &Value::from(9464));
    assert_eq!(ports["tcp-sql"], &Value::from(5433));
    let headless = m.named("Service", "aw-authwatch-headless");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(
        m.statefulset()["spec"]["serviceName"],
        headless["metadata"]["name"]
    );
    assert_eq!(m.config()["serve"]["listen"].as_str(), Some("0.0.0.0:5433"));
    // `authwatch run` serves the endpoint the Service exposes.
    assert_eq!(m.config()["serve"]["enabled"].as_bool(), Some(true));

    assert_eq!(m.one("PodDisruptionBudget")["spec"]["maxUnavailable"], 1);
    let np = m.one("NetworkPolicy");
    let ingress = seq(&np["spec"]["ingress"]);
    let ports: Vec<&Value> = ingress
        .iter()
        .flat_map(|r| seq(&r["ports"]).iter().map(|p| &p["port"]))
        .collect();
    assert_eq!(
        ports,
        vec![&Value::from("http-metrics"), &Value::from("tcp-sql")]
    );
    // Ingress rules name their sources: none is open to every pod.
    assert!(ingress.iter().all(|r| r["from"].is_sequence()));

    let sm = m.one("ServiceMonitor");
    assert_eq!(seq(&sm["spec"]["endpoints"])[0]["path"], "/metrics");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        headless["metadata"]["labels"]["app.kubernetes.io/component"]
    );

    let restricted = render(&Values::file(example("tls.yaml")));
    let np = restricted.one("NetworkPolicy");
    assert_eq!(
        np["spec"]["policyTypes"],
        Value::from(vec!["Ingress", "Egress"])
    );
    // DNS first, then the operator's rules.
    assert_eq!(seq(&np["spec"]["egress"]).len(), 3);
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("authwatch_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// A histogram's series are `<name>_bucket`, `_sum` and `_count`.
fn base_metric(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && METRICS.contains(&base)
        {
            return base;
        }
    }
    name
}

#[test]
fn the_dashboard_shows_every_metric_and_only_real_ones() {
    let path = chart().join("dashboards/authwatch.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dash["uid"], "authwatch-pipeline");
    let panels = dash["panels"].as_array().unwrap();
    let mut exprs = String::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            exprs.push_str(t["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let used: BTreeSet<String> = metric_names(&exprs)
        .iter()
        .map(|n| base_metric(n).to_owned())
        .collect();
    let fixed: BTreeSet<String> = METRICS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        used, fixed,
        "dashboard metrics differ from the exported names"
    );
    // Every exported metric is on the list, but slow batches (each is logged with its trace).
    let exported: BTreeSet<String> = authwatch_telemetry::names::ALL
        .iter()
        .map(|n| n.prometheus.to_owned())
        .filter(|n| n != "authwatch_batch_slow_total")
        .collect();
    assert_eq!(
        fixed, exported,
        "the dashboard's list and the exported metrics"
    );

    // Shipped as a ConfigMap, byte for byte, when enabled.
    assert!(
        render(&Values::default())
            .all("ConfigMap")
            .iter()
            .all(|c| c["metadata"]["name"] != "aw-authwatch-dashboard")
    );
    let m = render(&Values::default().set("grafanaDashboard.enabled=true"));
    let cm = m.named("ConfigMap", "aw-authwatch-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(str_of(&cm["data"]["authwatch.json"]), text);
}

#[test]
fn the_alert_rules_use_only_exported_metrics() {
    let m = render(&Values::default().set("prometheusRule.enabled=true"));
    let rule = m.one("PrometheusRule");
    let mut names = BTreeSet::new();
    let mut count = 0;
    for group in seq(&rule["spec"]["groups"]) {
        for r in seq(&group["rules"]) {
            count += 1;
            assert!(r["alert"].is_string());
            assert!(r["annotations"]["summary"].is_string());
            let expr = str_of(&r["expr"]);
            // Scoped to this release's pods.
            assert!(expr.contains(r#"namespace="security""#), "{expr}");
            names.extend(metric_names(expr));
        }
    }
    assert!(count >= 8, "{count}");
    for n in &names {
        assert!(METRICS.contains(&base_metric(n)), "unknown metric {n}");
    }
    // The reasons a response action waits in the queue (crates/respond: the rate limit, the
    // open circuit, a provider that asked to retry later) are named alike in the alert and in
    // docs/OPERATIONS.md.
    let queued = seq(&rule["spec"]["groups"])
        .iter()
        .flat_map(|g| seq(&g["rules"]))
        .find(|r| r["alert"] == "AuthwatchResponseQueued")
        .expect("AuthwatchResponseQueued");
    let description = str_of(&queued["annotations"]["description"]);
    let operations = std::fs::read_to_string(repo().join("docs/OPERATIONS.md")).unwrap();
    let row = operations
        .lines()
        .find(|l| l.starts_with("| AuthwatchResponseQueued"))
        .expect("the alert's row in docs/OPERATIONS.md");
    for reason in ["rate_limited", "circuit_open", "retry_later"] {
        assert!(
            description.contains(reason),
            "{reason} not in {description}"
        );
        assert!(row.contains(reason), "{reason} not in {row}");
    }
}

#[test]
fn bad_values_are_rejected() {
    let cases: &[(&[&str], &[&str], &str)] = &[
        // The schema: types, ranges, enums, unknown keys.
        (&["replicaCount=-1"], &[], "replicaCount"),
        (
            &[],
            &[r#"kafka.topics=[{"name":"okta","partitions":0}]"#],
            "/kafka/topics/0/partitions",
        ),
        // The total over all topics was the wrong ceiling (the range assignor divides each topic
        // on its own); the old key says so instead of being ignored.
        (&["kafka.partitions=12"], &[], "kafka.topics[].partitions"),
        (
            &[],
            &[r#"kafka.topics=[{"name":"okta-system-log"}]"#],
            "kafka.topics[0] (okta-system-log) has no partitions",
        ),
        (&["kafka.securityProtocol=sasl"], &[], "securityProtocol"),
        (&["kafka.sasl.mechanism=GSSAPI"], &[], "mechanism"),
        (&["checkpoint.storage=s3"], &[], "storage"),
        (&["checkpoint.interval=often"], &[], "interval"),
        (&["respond.mode=yolo"], &[], "mode"),
        (&["image.digest=latest"], &[], "digest"),
        (&["telemetry.port=70000"], &[], "port"),
        (&["replicas=3"], &[], "replicas"),
        (&[], &[r#"kafka.brokers=[]"#], "brokers"),
        (&[], &[r#"kafka.brokers=["kafka"]"#], "brokers"),
        (&[], &[r#"rules.extra={"evil.sh":"x"}"#], "evil.sh"),
        // A secret inlined in values has nowhere to go.
        (&["kafka.sasl.password=hunter2"], &[], "password"),
        (&["serve.password=hunter2"], &[], "password"),
        // The security context cannot be weakened.
        (&["securityContext.runAsNonRoot=false"], &[], "runAsNonRoot"),
        (&["securityContext.runAsUser=0"], &[], "runAsUser"),
        (
            &["securityContext.readOnlyRootFilesystem=false"],
            &[],
            "readOnlyRootFilesystem",
        ),
        (
            &["securityContext.allowPrivilegeEscalation=true"],
            &[],
            "allowPrivilegeEscalation",
        ),
        (&["securityContext.privileged=true"], &[], "privileged"),
        (
            &[],
            &[r#"securityContext.capabilities={"drop":["NET_RAW"]}"#],
            "drop",
        ),
        (
            &[],
            &[r#"securityContext.capabilities.add=["NET_ADMIN"]"#],
            "add",
        ),
        (
            &["securityContext.seccompProfile.type=Unconfined"],
            &[],
            "seccompProfile",
        ),
        (
            &["podSecurityContext.runAsNonRoot=false"],
            &[],
            "runAsNonRoot",
        ),
        (
            &[],
            &[
                r#"extraVolumeMounts=[{"name":"x","mountPath":"/etc/authwatch/x","readOnly":false}]"#,
            ],
            "readOnly",
        ),
        (&["checkpoint.storage=objectStore"], &[], "storage"),
        // Cross-field checks in the templates.
        (&["replicaCount=7"], &[], "replicaCount (7) exceeds 6"),
        // Two topics of 6 partitions: 12 pods would leave 6 of them without any partition.
        (
            &["replicaCount=12", "checkpoint.storage=shared"],
            &[r#"kafka.topics=[{"name":"okta","partitions":6},{"name":"entra","partitions":6}]"#],
            "replicaCount (12) exceeds 6, the most pods that all get a partition (the largest input topic",
        ),
        // The responder's limits are per pod, and its state must outlive the pod.
        (
            &[
                "respond.enabled=true",
                "respond.mode=automatic",
                "config.respond.target=webhook",
                "replicaCount=2",
                "checkpoint.storage=shared",
                "config.respond.state_dir=/var/lib/authwatch/checkpoints/respond",
            ],
            &[],
            "its rate limits are per pod",
        ),
        (
            &[
                "respond.enabled=true",
                "respond.mode=approval",
                "config.respond.target=webhook",
                "checkpoint.storage=object",
                "checkpoint.object.url=s3://bucket/prefix",
            ],
            &[],
            "is scratch space",
        ),
        (&["replicaCount=2"], &[], "checkpoint.storage=local"),
        (
            &[],
            &[r#"kafka.properties={"sasl.password":"hunter2"}"#],
            "sasl.password",
        ),
        // config.* renders into the ConfigMap too: no secrets there either.
        (
            &[r"config.kafka.properties.sasl\.password=hunter2"],
            &[],
            r#"kafka.properties "sasl.password" (set in config.kafka.properties) looks like a secret"#,
        ),
        (
            &[r"config.kafka.properties.ssl\.key\.pem=x"],
            &[],
            "looks like a secret",
        ),
        (
            &["config.respond.okta.token=hunter2"],
            &[],
            "config.respond.okta.token: a secret in clear",
        ),
        (
            &["config.respond.graph.client_secret=hunter2"],
            &[],
            "config.respond.graph.client_secret: a secret in clear",
        ),
        (
            &["config.respond.keycloak.password=hunter2"],
            &[],
            "config.respond.keycloak.password: a secret in clear",
        ),
        (
            &["config.respond.webhook.secret=hunter2"],
            &[],
            "config.respond.webhook.secret: a secret in clear",
        ),
        (
            &["config.respond.pager.secret.value=hunter2"],
            &[],
            "takes only file or env",
        ),
        (
            &["config.serve.password=hunter2"],
            &[],
            "config.serve.password: a secret in clear",
        ),
        // A stop can take longer than the default grace period with a long checkpoint interval.
        (
            &["checkpoint.interval=30s"],
            &[],
            "terminationGracePeriodSeconds (60) is below the 98 s a stop can take",
        ),
        (
            &["config.checkpoint.interval=1m"],
            &[],
            "terminationGracePeriodSeconds (60) is below the 173 s",
        ),
        (
            &[
                "keda.enabled=true",
                "checkpoint.storage=shared",
                "kafka.securityProtocol=sasl_ssl",
                "kafka.sasl.existingSecret=k",
            ],
            &[],
            "kafka.sasl.usernameKey",
        ),
        (
            &[
                "keda.enabled=true",
                "keda.maxReplicas=8",
                "checkpoint.storage=shared",
            ],
            &[],
            "keda.maxReplicas (8) exceeds 6",
        ),
        (
            &[
                "keda.enabled=true",
                "keda.minReplicas=4",
                "keda.maxReplicas=3",
                "checkpoint.storage=shared",
            ],
            &[],
            "keda.minReplicas (4) exceeds keda.maxReplicas (3)",
        ),
        (&["keda.enabled=true"], &[], "checkpoint.storage"),
        (
            &["kafka.securityProtocol=sasl_ssl"],
            &[],
            "kafka.sasl.existingSecret",
        ),
        (
            &["kafka.tls.existingSecret=tls"],
            &[],
            "use ssl or sasl_ssl",
        ),
        (
            &[
                "kafka.securityProtocol=ssl",
                "kafka.tls.existingSecret=tls",
                "kafka.tls.certKey=tls.crt",
            ],
            &[],
            "go together",
        ),
        (&["serve.enabled=true"], &[], "serve.existingSecret"),
        (&["geoip.enabled=true"], &[], "geoip.volume"),
        // Scaled to zero, no pod exports the lag the prometheus trigger reads.
        (
            &[
                "keda.enabled=true",
                "keda.trigger=prometheus",
                "keda.minReplicas=0",
                "checkpoint.storage=shared",
            ],
            &[],
            "keda.trigger=prometheus with keda.minReplicas=0",
        ),
        // authwatch refuses a responder that acts without a target.
        (
            &["respond.enabled=true", "respond.mode=approval"],
            &[],
            "config.respond.target",
        ),
        (
            &[],
            &[r#"config={"respond":{"mode":"automatic","target":"none"}}"#],
            "mode is automatic",
        ),
        // envFrom takes references only, each to one Secret or one ConfigMap.
        (
            &[],
            &[r#"envFrom=[{"name":"AWS_SECRET_ACCESS_KEY","value":"x"}]"#],
            "envFrom",
        ),
        (
            &[],
            &[r#"envFrom=[{"secretRef":{"name":"s"},"configMapRef":{"name":"c"}}]"#],
            "envFrom",
        ),
        (&[], &[r#"envFrom=[{"prefix":"AWS_"}]"#], "envFrom"),
        (
            &[],
            &[r#"envFrom=[{"secretRef":{"name":"s","key":"password"}}]"#],
            "envFrom",
        ),
        (
            &[],
            &[r#"envFrom=[{"secretRef":{"name":"Bad_Name"}}]"#],
            "envFrom",
        ),
        (
            &[
                "respond.enabled=true",
                "serve.enabled=true",
                "serve.existingSecret=pg",
            ],
            &[
                r#"respond.credentials=[{"name":"pgwire","existingSecret":"s","key":"k","configKey":"respond.okta.token"}]"#,
            ],
            "distinct names",
        ),
    ];
    for (set, set_json, expected) in cases {
        let mut values = Values::default();
        for s in *set {
            values = values.set(s);
        }
        for s in *set_json {
            values = values.set_json(s);
        }
        let err = render_err(&values);
        assert!(
            err.contains(expected),
            "--set {set:?} --set-json {set_json:?}: expected {expected:?} in:\n{err}"
        );
    }
}

#[test]
fn the_chart_installs_on_its_oldest_supported_kubernetes() {
    for version in ["1.25.0", "1.31.0"] {
        let mut cmd = template_cmd(&Values::file(example("keda.yaml")));
        cmd.args(["--kube-version", version]);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut cmd = template_cmd(&Values::default());
    cmd.args(["--kube-version", "1.24.0"]);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kubeVersion"));
}

// ---- The Dockerfile ----

/// The instructions of the Dockerfile's last stage (continuation lines joined, comments dropped).
fn runtime_stage(dockerfile: &str) -> Vec<(String, String)> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        logical.push(std::mem::take(&mut current));
    }
    let last_from = logical
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    logical[last_from..]
        .iter()
        .map(|l| {
            let (op, args) = l.split_once(' ').unwrap_or((l, ""));
            (op.to_owned(), args.trim().to_owned())
        })
        .collect()
}

#[test]
fn the_dockerfile_lints_clean() {
    let hadolint = tool("AUTHWATCH_HADOLINT", "scripts/hadolint");
    let out = Command::new(hadolint)
        .arg(repo().join("Dockerfile"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The image provides what the chart runs and mounts over, as the user the chart runs as.
#[test]
fn the_image_layout_is_the_one_the_chart_mounts() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let stage = runtime_stage(&dockerfile);
    let ops = |op: &str| -> Vec<&str> {
        stage
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    let m = render(&Values::file(example("tls.yaml")));
    let c = m.container();
    let sc = &c["securityContext"];

    // Runs as the chart's uid, from a multi-stage build.
    assert_eq!(
        ops("USER"),
        vec![format!("{0}:{0}", sc["runAsUser"].as_u64().unwrap())]
    );
    assert!(dockerfile.matches("\nFROM ").count() >= 2, "multi-stage");
    // The chart's command is the image's entrypoint; its default arguments are the chart's.
    let entry: Vec<String> = serde_json::from_str(ops("ENTRYPOINT")[0]).unwrap();
    assert_eq!(Value::from(entry), c["command"]);
    let cmd: Vec<String> = serde_json::from_str(ops("CMD")[0]).unwrap();
    assert_eq!(Value::from(cmd), c["args"]);
    // Exposed ports are the chart's.
    let exposed: BTreeSet<u64> = ops("EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(|p| p.parse().unwrap())
        .collect();
    let rendered = render(&Values::file(example("sasl-plain.yaml")));
    let ports: BTreeSet<u64> = seq(&rendered.container()["ports"])
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert_eq!(exposed, ports);

    // The build stage installs the binary, rules, SQL and config where the chart expects them,
    // and the runtime stage copies that tree to /.
    let install_to = |path: &str| dockerfile.contains(&format!("/out{path}"));
    assert!(install_to("/usr/local/bin/authwatch"));
    assert!(ops("COPY").contains(&"--from=build /out/ /"));
    for mount in seq(&c["volumeMounts"]) {
        let path = str_of(&mount["mountPath"]);
        match path {
            // Mounted over the image's defaults: the image must have them for `docker run`.
            "/etc/authwatch/config.toml" | "/etc/authwatch/rules" | "/etc/authwatch/sql" => {
                assert!(install_to(path), "the image lacks {path}")
            }
            // Writable: the image creates it owned by the runtime user.
            p if p.starts_with("/var/lib/authwatch") => assert!(
                ops("RUN")
                    .iter()
                    .any(|r| r.contains("install -d -o 10001 -g 10001 -m 0750 /var/lib/authwatch")),
                "{path}"
            ),
            "/tmp" => {}
            // Mount points the image prepares.
            p if p == "/usr/share/GeoIP" || p.starts_with(SECRETS_DIR) => assert!(
                ops("RUN")
                    .iter()
                    .any(|r| r.contains("/usr/share/GeoIP /var/run/secrets/authwatch")),
                "{path}"
            ),
            other => panic!("the chart mounts {other}, which the image layout does not know"),
        }
    }
    // The config's GeoIP paths are under the mounted directory.
    let geo = &m.config()["enrich"]["geo"];
    assert!(
        geo["city_db"]
            .as_str()
            .unwrap()
            .starts_with("/usr/share/GeoIP/")
    );
}
