//! Events and alerts as Arrow record batches: the `events` and `alerts` tables.

use crate::QueryError;
use authwatch_event::{Alert, AuthEvent, MetricValue};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use serde::Serialize;
use std::sync::{Arc, OnceLock};

fn event_fields() -> Result<&'static [FieldRef], QueryError> {
    static FIELDS: OnceLock<Result<Vec<FieldRef>, String>> = OnceLock::new();
    FIELDS
        .get_or_init(|| authwatch_event::schema::event_arrow_fields().map_err(|e| e.to_string()))
        .as_ref()
        .map(|f| f.as_slice())
        .map_err(|e| QueryError::Convert(e.clone()))
}

/// The Arrow schema of the `events` table: derived from the event type (`authwatch schema
/// arrow`). `time` and `ingest_time` are milliseconds since the epoch (UTC).
pub fn event_schema() -> Result<SchemaRef, QueryError> {
    Ok(Arc::new(Schema::new(event_fields()?.to_vec())))
}

/// `schema` with every string (at any depth: struct fields, list items) as a string view.
///
/// The archive stores its strings with this type in the Arrow schema that Parquet files carry,
/// and the catalog presents every table with it. The Parquet data is the same either way, but
/// the reader then builds views into the decoded dictionary page or data page instead of
/// copying each row's bytes into a new array, and DataFusion groups and compares views through
/// their inline prefix. DataFusion does this itself for top-level strings only
/// (`schema_force_view_types`), and the event's strings sit in structs. Measured with
/// DataFusion 55 on the 10M-event archive of `benches/sql_vs_duckdb.sh`: filtering on `outcome`
/// and reading `"user".name` and `src.geo.country` 286–332 → 197–207 ms.
pub(crate) fn with_string_views(schema: &Schema) -> SchemaRef {
    fn view(data_type: &DataType) -> DataType {
        let field = |f: &FieldRef| Arc::new(f.as_ref().clone().with_data_type(view(f.data_type())));
        match data_type {
            DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8View,
            DataType::Struct(fields) => DataType::Struct(fields.iter().map(field).collect()),
            DataType::List(item) => DataType::List(field(item)),
            DataType::LargeList(item) => DataType::LargeList(field(item)),
            other => other.clone(),
        }
    }
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| Arc::new(f.as_ref().clone().with_data_type(view(f.data_type()))))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` in [`with_string_views`]' types. The cast keeps the string bytes where they are and
/// adds a 16-byte view per value.
pub(crate) fn string_views(batch: &RecordBatch) -> Result<RecordBatch, QueryError> {
    let schema = with_string_views(&batch.schema());
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| cast(column, field.data_type()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| QueryError::Convert(e.to_string()))?;
    RecordBatch::try_new(schema, columns).map_err(|e| QueryError::Convert(e.to_string()))
}

/// Events as one record batch of [`event_schema`].
pub fn events_to_batch(events: &[AuthEvent]) -> Result<RecordBatch, QueryError> {
    serde_arrow::to_record_batch(event_fields()?, &events)
        .map_err(|e| QueryError::Convert(e.to_string()))
}

/// Events back from a batch of [`event_schema`] (the deciding event of a SQL alert, snapshots).
///
/// Through JSON values: fields the event omits when empty (a default `context`, say) are null
/// structs in Arrow, which the event's own deserializer takes as absent once nulls are dropped.
pub(crate) fn batch_to_events(batch: &RecordBatch) -> Result<Vec<AuthEvent>, QueryError> {
    let rows: Vec<serde_json::Value> =
        serde_arrow::from_record_batch(batch).map_err(|e| QueryError::Convert(e.to_string()))?;
    rows.into_iter()
        .map(|mut v| {
            drop_nulls(&mut v);
            serde_json::from_value(v).map_err(|e| QueryError::Convert(e.to_string()))
        })
        .collect()
}

fn drop_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|_, x| !x.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// One alert as a flat row of the `alerts` table: entity and window fields as columns,
/// metrics as a JSON object text (their names differ per rule).
#[derive(Serialize)]
struct AlertRow<'a> {
    alert_id: &'a str,
    rule_id: &'a str,
    rule_version: u32,
    category: &'a str,
    cause_class: &'static str,
    severity: &'static str,
    attack_technique: &'a [String],
    entity_tenant: Option<&'a str>,
    entity_user: Option<&'a str>,
    entity_ip: Option<String>,
    entity_asn: Option<u32>,
    entity_device: Option<&'a str>,
    entity_country: Option<&'a str>,
    entity_app: Option<&'a str>,
    window_start: i64,
    window_end: i64,
    first_seen: i64,
    last_seen: i64,
    metrics: String,
    evidence: &'a [String],
    observed_event_id: &'a str,
    observed_src_ip: Option<String>,
    observed_country: Option<&'a str>,
    summary_en: &'a str,
    summary_ja: &'a str,
    related: &'a [String],
}

fn alert_fields() -> Vec<FieldRef> {
    let text = |name: &str, nullable: bool| Arc::new(Field::new(name, DataType::Utf8, nullable));
    let int = |name: &str| Arc::new(Field::new(name, DataType::Int64, false));
    let list = |name: &str| {
        Arc::new(Field::new(
            name,
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, false))),
            false,
        ))
    };
    vec![
        text("alert_id", false),
        text("rule_id", false),
        Arc::new(Field::new("rule_version", DataType::UInt32, false)),
        text("category", false),
        text("cause_class", false),
        text("severity", false),
        list("attack_technique"),
        text("entity_tenant", true),
        text("entity_user", true),
        text("entity_ip", true),
        Arc::new(Field::new("entity_asn", DataType::UInt32, true)),
        text("entity_device", true),
        // Added after the first archives: their files lack these two columns, which then
        // read as null (the catalog maps file columns to the table's by name).
        text("entity_country", true),
        text("entity_app", true),
        int("window_start"),
        int("window_end"),
        int("first_seen"),
        int("last_seen"),
        text("metrics", false),
        list("evidence"),
        text("observed_event_id", false),
        text("observed_src_ip", true),
        text("observed_country", true),
        text("summary_en", false),
        text("summary_ja", false),
        list("related"),
    ]
}

/// The Arrow schema of the `alerts` table (one flat row per alert; times in ms since the epoch).
pub fn alert_schema() -> SchemaRef {
    Arc::new(Schema::new(alert_fields()))
}

fn metrics_json(alert: &Alert) -> String {
    let map: serde_json::Map<String, serde_json::Value> = alert
        .metrics
        .iter()
        .map(|(k, v)| {
            let v = match v {
                MetricValue::Count(n) => serde_json::Value::from(*n),
                MetricValue::Real(x) => serde_json::Value::from(*x),
                MetricValue::Text(t) => serde_json::Value::from(t.as_str()),
            };
            (k.clone(), v)
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// Alerts as one record batch of [`alert_schema`].
pub fn alerts_to_batch(alerts: &[Alert]) -> Result<RecordBatch, QueryError> {
    let rows: Vec<AlertRow<'_>> = alerts
        .iter()
        .map(|a| AlertRow {
            alert_id: &a.alert_id,
            rule_id: &a.rule_id,
            rule_version: a.rule_version,
            category: &a.category,
            cause_class: a.cause_class.as_str(),
            severity: a.severity.as_str(),
            attack_technique: &a.attack_technique,
            entity_tenant: a.entity.tenant.as_deref(),
            entity_user: a.entity.user.as_deref(),
            entity_ip: a.entity.ip.map(|ip| ip.to_string()),
            entity_asn: a.entity.asn,
            entity_device: a.entity.device_fingerprint.as_deref(),
            entity_country: a.entity.country.as_deref(),
            entity_app: a.entity.app.as_deref(),
            window_start: a.window.start.millis(),
            window_end: a.window.end.millis(),
            first_seen: a.first_seen.millis(),
            last_seen: a.last_seen.millis(),
            metrics: metrics_json(a),
            evidence: &a.evidence,
            observed_event_id: &a.observed.event_id,
            observed_src_ip: a.observed.src.ip.map(|ip| ip.to_string()),
            observed_country: a
                .observed
                .src
                .geo
                .as_ref()
                .map(|g| g.country.as_str())
                .filter(|c| !c.is_empty()),
            summary_en: &a.summary.en,
            summary_ja: &a.summary.ja,
            related: &a.related,
        })
        .collect();
    serde_arrow::to_record_batch(&alert_fields(), &rows)
        .map_err(|e| QueryError::Convert(e.to_string()))
}
