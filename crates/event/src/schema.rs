//! Schemas derived from the Rust types: JSON Schema for the wire forms, Arrow for SQL and Parquet.
//!
//! The checked-in files under `schemas/` are the published contract; a test in this crate fails
//! when they drift from the types (`AUTHWATCH_UPDATE_SCHEMAS=1 cargo test -p authwatch-event`
//! rewrites them, to be reviewed as data).

use crate::{Alert, AuthEvent};
use arrow_schema::{DataType, Field, FieldRef, Schema};
use std::sync::Arc;

/// An Arrow schema could not be derived: a type change the JSON-to-Arrow mapping does not cover.
#[derive(Debug, thiserror::Error)]
#[error("cannot derive the Arrow type of {path}: {problem}")]
pub struct SchemaError {
    path: String,
    problem: String,
}

impl SchemaError {
    fn new(path: &str, problem: &str) -> Self {
        SchemaError {
            path: path.to_owned(),
            problem: problem.to_owned(),
        }
    }
}

fn json_schema_of<T: schemars::JsonSchema>(id: &str) -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("$id".into(), serde_json::Value::String(id.into()));
    }
    schema
}

/// A checked-in schema file that differs from the schema the types produce.
#[derive(Debug, thiserror::Error)]
pub enum SchemaDrift {
    /// The file's content is not what the types produce.
    #[error(
        "{0} has drifted from the Rust types; run the tests with AUTHWATCH_UPDATE_SCHEMAS=1 and review the diff"
    )]
    Differs(String),
    /// The file could not be written (when regenerating).
    #[error("{path}: cannot write: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Keeps a checked-in schema file (`schemas/…`) equal to what the types produce: with the
/// environment variable `AUTHWATCH_UPDATE_SCHEMAS` set it rewrites the file (to be reviewed as
/// data), otherwise it reports any difference. Every crate's drift test calls this one check.
pub fn sync_checked_in(
    path: &std::path::Path,
    value: &serde_json::Value,
) -> Result<(), SchemaDrift> {
    let want = format!("{value:#}\n");
    if std::env::var_os("AUTHWATCH_UPDATE_SCHEMAS").is_some() {
        return std::fs::write(path, &want).map_err(|source| SchemaDrift::Io {
            path: path.display().to_string(),
            source,
        });
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    if have == want {
        Ok(())
    } else {
        Err(SchemaDrift::Differs(path.display().to_string()))
    }
}

/// JSON Schema (draft 2020-12) of [`AuthEvent`], the native event format.
pub fn event_json_schema() -> serde_json::Value {
    json_schema_of::<AuthEvent>("https://authwatch.dev/schemas/auth_event.schema.json")
}

/// JSON Schema (draft 2020-12) of [`Alert`], the alert topic's value format.
pub fn alert_json_schema() -> serde_json::Value {
    json_schema_of::<Alert>("https://authwatch.dev/schemas/alert.schema.json")
}

/// Arrow fields of [`AuthEvent`], derived from its JSON Schema (itself derived from the type).
///
/// Objects become structs, closed vocabularies dictionary-encoded strings, and every property
/// that the JSON Schema does not require becomes nullable, so a provider that omits a field
/// yields a null rather than a made-up value.
pub fn event_arrow_fields() -> Result<Vec<FieldRef>, SchemaError> {
    let root = event_json_schema();
    arrow_fields_of(&root, &root, "AuthEvent")
}

fn arrow_fields_of(
    root: &serde_json::Value,
    object: &serde_json::Value,
    path: &str,
) -> Result<Vec<FieldRef>, SchemaError> {
    let object = resolve(root, object, path)?;
    let required: Vec<&str> = object
        .get("required")
        .and_then(|r| r.as_array())
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let Some(properties) = object.get("properties").and_then(|p| p.as_object()) else {
        return Err(SchemaError::new(
            path,
            "an object schema without properties",
        ));
    };
    properties
        .iter()
        .map(|(name, prop)| {
            let at = format!("{path}.{name}");
            let (data_type, nullable_type) = arrow_type_of(root, prop, &at)?;
            let nullable = nullable_type || !required.contains(&name.as_str());
            Ok(Arc::new(Field::new(name, data_type, nullable)))
        })
        .collect()
}

/// Closed vocabularies have a few dozen values at most: a byte-keyed dictionary.
fn vocabulary_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::UInt8), Box::new(DataType::Utf8))
}

/// Follows a local `$ref` (`#/$defs/Name`).
fn resolve<'a>(
    root: &'a serde_json::Value,
    schema: &'a serde_json::Value,
    path: &str,
) -> Result<&'a serde_json::Value, SchemaError> {
    match schema.get("$ref").and_then(|r| r.as_str()) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            root.pointer(pointer)
                .ok_or_else(|| SchemaError::new(path, &format!("unresolved $ref {reference}")))
        }
        None => Ok(schema),
    }
}

/// The Arrow type of one JSON Schema node, and whether it admits null.
fn arrow_type_of(
    root: &serde_json::Value,
    schema: &serde_json::Value,
    path: &str,
) -> Result<(DataType, bool), SchemaError> {
    let schema = resolve(root, schema, path)?;
    if let Some(any_of) = schema.get("anyOf").and_then(|a| a.as_array()) {
        let mut nullable = false;
        let mut found = None;
        for alt in any_of {
            if alt.get("type").and_then(|t| t.as_str()) == Some("null") {
                nullable = true;
            } else if found.is_none() {
                found = Some(arrow_type_of(root, alt, path)?.0);
            } else {
                return Err(SchemaError::new(path, "a union of several non-null types"));
            }
        }
        let data_type = found.ok_or_else(|| SchemaError::new(path, "anyOf with only null"))?;
        return Ok((data_type, nullable));
    }
    // A documented closed vocabulary: `oneOf` string constants.
    if let Some(one_of) = schema.get("oneOf").and_then(|a| a.as_array())
        && one_of
            .iter()
            .all(|alt| alt.get("const").is_some_and(|c| c.is_string()))
    {
        return Ok((vocabulary_type(), false));
    }
    let (type_name, nullable) = match schema.get("type") {
        Some(serde_json::Value::String(t)) => (t.as_str(), false),
        Some(serde_json::Value::Array(types)) => {
            let names: Vec<&str> = types.iter().filter_map(|t| t.as_str()).collect();
            let non_null: Vec<&str> = names.iter().copied().filter(|t| *t != "null").collect();
            match non_null.as_slice() {
                [one] => (*one, names.contains(&"null")),
                _ => return Err(SchemaError::new(path, "a union of several non-null types")),
            }
        }
        _ if schema.get("enum").is_some() => ("string", false),
        _ => return Err(SchemaError::new(path, "a schema without a type")),
    };
    let data_type = match type_name {
        "string" if schema.get("enum").is_some() => vocabulary_type(),
        "string" => DataType::Utf8,
        "boolean" => DataType::Boolean,
        "number" => DataType::Float64,
        "integer" => match schema.get("format").and_then(|f| f.as_str()) {
            Some("uint32") => DataType::UInt32,
            Some("uint64" | "uint") => DataType::UInt64,
            _ => DataType::Int64,
        },
        "array" => {
            let items = schema
                .get("items")
                .ok_or_else(|| SchemaError::new(path, "an array without items"))?;
            let (item_type, _) = arrow_type_of(root, items, path)?;
            DataType::List(Arc::new(Field::new("item", item_type, false)))
        }
        "object" => DataType::Struct(arrow_fields_of(root, schema, path)?.into()),
        other => return Err(SchemaError::new(path, &format!("unsupported type {other}"))),
    };
    Ok((data_type, nullable))
}

/// Arrow schema of [`AuthEvent`], the `events` table of SQL and the Parquet archive.
pub fn event_arrow_schema() -> Result<Arc<Schema>, SchemaError> {
    Ok(Arc::new(Schema::new(event_arrow_fields()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::DataType;
    use std::path::PathBuf;

    fn check_file(name: &str, value: &serde_json::Value) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../schemas")
            .join(name);
        if let Err(e) = sync_checked_in(&path, value) {
            panic!("{e}");
        }
    }

    #[test]
    fn event_json_schema_matches_checked_in_file() {
        check_file("auth_event.schema.json", &event_json_schema());
    }

    #[test]
    fn alert_json_schema_matches_checked_in_file() {
        check_file("alert.schema.json", &alert_json_schema());
    }

    #[test]
    fn event_json_schema_lists_the_closed_vocabularies() {
        let s = serde_json::to_string(&event_json_schema()).unwrap();
        for word in ["mfa_challenge", "push_timeout", "hardware_token", "blocked"] {
            assert!(s.contains(word), "{word} missing from the event schema");
        }
    }

    #[test]
    fn arrow_schema_has_every_top_level_field() {
        let schema = event_arrow_schema().unwrap();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        for want in [
            "time",
            "ingest_time",
            "provider",
            "tenant",
            "event_id",
            "provider_event_type",
            "user",
            "activity",
            "factor",
            "outcome",
            "reason",
            "reason_raw",
            "src",
            "device",
            "session_id",
            "app",
            "provider_risk",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert_eq!(
            schema.field_with_name("time").unwrap().data_type(),
            &DataType::Int64
        );
        assert!(!schema.field_with_name("time").unwrap().is_nullable());
        assert!(schema.field_with_name("tenant").unwrap().is_nullable());
        assert!(matches!(
            schema.field_with_name("activity").unwrap().data_type(),
            DataType::Dictionary(_, _)
        ));
        assert!(matches!(
            schema.field_with_name("src").unwrap().data_type(),
            DataType::Struct(_)
        ));
    }

    #[test]
    fn events_convert_to_a_record_batch_with_that_schema() {
        let ev: AuthEvent = serde_json::from_str(
            r#"{"time":5,"provider":"okta","event_id":"x","activity":"logon","outcome":"success","src":{"ip":"192.0.2.1"}}"#,
        )
        .unwrap();
        let fields = event_arrow_fields().unwrap();
        let batch = serde_arrow::to_record_batch(&fields, &vec![ev.clone(), ev]).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema().fields().len(), fields.len());
    }
}
