//! Event schemas (API.md, Event schemas): one JSON Schema (draft 2020-12)
//! per event type, checked on every append by the writer, inside its
//! transaction, so that a schema committed through any instance holds for
//! every append committed after it.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jsonschema::Validator;
use serde_json::value::RawValue;

use super::backend::{SqlBackend, connection, fetch_as, now_micros};
use super::error::StoreError;
use super::rows::SchemaRow;
use super::sql::{Runner, Sql};

/// A JSON Schema that compiles under draft 2020-12, with the text it was
/// written as. Only a valid schema can be stored, so the writer's compiling
/// it again cannot fail.
pub struct SchemaDocument {
    text: Box<RawValue>,
}

impl SchemaDocument {
    /// Checks a schema: it must be JSON Schema (an object or a boolean that
    /// the draft 2020-12 meta-schema accepts) and compile, its references
    /// resolving within itself (nothing is ever fetched from elsewhere).
    pub fn parse(text: Box<RawValue>) -> Result<Self, String> {
        compile(text.get())?;
        Ok(SchemaDocument { text })
    }

    /// The schema as written.
    pub fn text(&self) -> &RawValue {
        &self.text
    }
}

/// Compiles a schema's text into a validator.
fn compile(text: &str) -> Result<Validator, String> {
    let schema: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("the schema is not JSON: {e}"))?;
    if !schema.is_object() && !schema.is_boolean() {
        return Err("a JSON Schema is an object or a boolean".into());
    }
    if let Err(error) = jsonschema::draft202012::meta::validate(&schema) {
        let at = error.instance_path().as_str().to_owned();
        return Err(format!(
            "the schema is not valid JSON Schema (draft 2020-12) at {:?}: {}",
            if at.is_empty() { "/" } else { &at },
            error.masked()
        ));
    }
    jsonschema::draft202012::new(&schema).map_err(|e| format!("the schema does not compile: {e}"))
}

/// A registered schema.
#[derive(Debug, Clone)]
pub struct EventSchema {
    /// The event type it applies to.
    pub event_type: String,
    /// The schema as written.
    pub schema: Box<RawValue>,
    /// Counts every change of the type's schema, deletions included.
    pub version: i64,
    /// When it was stored.
    pub time: DateTime<Utc>,
}

/// One way an event's `data` fails its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaFailure {
    /// Where in `data`, as a JSON pointer (`""`: `data` itself).
    pub pointer: String,
    /// What is wrong there.
    pub reason: String,
}

/// Most failures reported for one event: a huge document failing everywhere
/// must not make a huge answer.
const MAX_FAILURES: usize = 100;

/// How `data` fails a validator (empty: it validates).
pub fn failures(validator: &Validator, data: &RawValue) -> Vec<SchemaFailure> {
    // Data was checked as JSON on the way in, within the depth cap.
    let Ok(instance) = serde_json::from_str::<serde_json::Value>(data.get()) else {
        return vec![SchemaFailure {
            pointer: String::new(),
            reason: "not JSON".into(),
        }];
    };
    validator
        .iter_errors(&instance)
        .take(MAX_FAILURES)
        .map(|error| SchemaFailure {
            pointer: error.instance_path().as_str().to_owned(),
            reason: error.masked().to_string(),
        })
        .collect()
}

/// The writer's compiled validators, by event type, each with the version it
/// was compiled from: a schema is compiled once per version, not per append.
#[derive(Default)]
pub struct Validators {
    compiled: HashMap<String, (i64, Arc<Validator>)>,
}

impl Validators {
    /// The validator of a type's schema at `version`, compiled from what
    /// `load` returns when it is not cached yet.
    pub async fn get<F>(
        &mut self,
        event_type: &str,
        version: i64,
        load: F,
    ) -> Result<Arc<Validator>, StoreError>
    where
        F: Future<Output = Result<Option<String>, StoreError>>,
    {
        if let Some((cached, validator)) = self.compiled.get(event_type)
            && *cached == version
        {
            return Ok(validator.clone());
        }
        let text = load.await?.ok_or_else(|| {
            StoreError::Internal(format!("schema {event_type} v{version} vanished"))
        })?;
        let validator = Arc::new(compile(&text).map_err(|e| {
            StoreError::Internal(format!("stored schema of {event_type} v{version}: {e}"))
        })?);
        self.compiled
            .insert(event_type.to_owned(), (version, validator.clone()));
        Ok(validator)
    }
}

/// Registering and reading event schemas. Changes take the store-wide
/// write lock, so that no batch of appends is judged half before and half
/// after one.
#[async_trait]
pub trait Schemas: Send + Sync {
    /// Stores a type's schema; `true` when the type had none.
    async fn put_schema(
        &self,
        event_type: &str,
        schema: &SchemaDocument,
    ) -> Result<(EventSchema, bool), StoreError>;
    /// A type's schema.
    async fn schema(&self, event_type: &str) -> Result<Option<EventSchema>, StoreError>;
    /// Every schema, by type.
    async fn schemas(&self) -> Result<Vec<EventSchema>, StoreError>;
    /// Deletes a type's schema; `false` when it had none.
    async fn delete_schema(&self, event_type: &str) -> Result<bool, StoreError>;
}

#[async_trait]
impl<B: SqlBackend> Schemas for B {
    #[tracing::instrument(level = "debug", skip(self, schema))]
    async fn put_schema(
        &self,
        event_type: &str,
        schema: &SchemaDocument,
    ) -> Result<(EventSchema, bool), StoreError> {
        let mut tx = self.begin_log_write().await?;
        let created = B::Db::fetch_int(&mut tx, live_version(event_type))
            .await?
            .is_none();
        let mut sql = Sql::new("INSERT INTO event_schemas (type, schema, version, time) VALUES (");
        sql.bind(event_type)
            .push(", ")
            .bind(schema.text().get())
            .push(", 1, ")
            .bind(now_micros().timestamp_micros())
            .push(
                ") ON CONFLICT (type) DO UPDATE SET schema = excluded.schema, \
                 version = event_schemas.version + 1, time = excluded.time",
            );
        B::Db::execute(&mut tx, sql).await?;
        let stored = fetch_as::<B, SchemaRow, EventSchema>(&mut tx, schemas(Some(event_type)))
            .await?
            .pop()
            .ok_or_else(|| StoreError::Internal("a stored schema vanished".into()))?;
        tx.commit().await?;
        Ok((stored, created))
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn schema(&self, event_type: &str) -> Result<Option<EventSchema>, StoreError> {
        let mut conn = connection(self).await?;
        Ok(
            fetch_as::<B, SchemaRow, EventSchema>(&mut conn, schemas(Some(event_type)))
                .await?
                .pop(),
        )
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn schemas(&self) -> Result<Vec<EventSchema>, StoreError> {
        let mut conn = connection(self).await?;
        fetch_as::<B, SchemaRow, EventSchema>(&mut conn, schemas(None)).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn delete_schema(&self, event_type: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_log_write().await?;
        // The row stays, its version counting on, so that no writer's cached
        // validator of an older version is ever taken for a newer one.
        let mut sql = Sql::new(
            "UPDATE event_schemas SET schema = NULL, version = version + 1 \
             WHERE schema IS NOT NULL AND type = ",
        );
        sql.bind(event_type);
        let deleted = B::Db::execute(&mut tx, sql).await? > 0;
        tx.commit().await?;
        Ok(deleted)
    }
}

/// The version of a type's schema, if it has one.
pub(super) fn live_version(event_type: &str) -> Sql {
    let mut sql =
        Sql::new("SELECT version FROM event_schemas WHERE schema IS NOT NULL AND type = ");
    sql.bind(event_type);
    sql
}

/// The text of a type's schema at a version (for the writer's cache).
pub(super) fn schema_text(event_type: &str, version: i64) -> Sql {
    let mut sql = Sql::new("SELECT schema FROM event_schemas WHERE type = ");
    sql.bind(event_type).push(" AND version = ").bind(version);
    sql
}

/// One type's schema, or every one.
fn schemas(event_type: Option<&str>) -> Sql {
    let mut sql = Sql::new(
        "SELECT type, schema, version, time AS time_micros FROM event_schemas \
         WHERE schema IS NOT NULL",
    );
    if let Some(event_type) = event_type {
        sql.push(" AND type = ").bind(event_type);
    }
    sql.push(" ORDER BY type");
    sql
}

/// The read statements of this module, named, with typical arguments.
pub(super) fn statements() -> Vec<(&'static str, Sql)> {
    vec![
        ("schema", schemas(Some("Deposited"))),
        ("schema version", live_version("Deposited")),
        ("schema text", schema_text("Deposited", 1)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.into()).unwrap()
    }

    #[test]
    fn only_json_schema_is_accepted() {
        assert!(SchemaDocument::parse(raw(r#"{"type": "object"}"#)).is_ok());
        assert!(SchemaDocument::parse(raw("true")).is_ok());
        for bad in [
            r#"{"type": "objekt"}"#,
            r#"{"minimum": "5"}"#,
            "[]",
            "5",
            r#"{"$ref": "https://example.com/schema.json"}"#,
        ] {
            assert!(SchemaDocument::parse(raw(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_failure_is_reported_with_its_pointer() {
        let validator = compile(
            r#"{"type": "object", "required": ["amount"], "properties": {
                "amount": {"type": "integer"},
                "lines": {"type": "array", "items": {"properties": {"sku": {"type": "string"}}}}}}"#,
        )
        .unwrap();
        let failures = failures(&validator, &raw(r#"{"lines": [{"sku": 1}]}"#));
        let pointers: Vec<&str> = failures.iter().map(|f| f.pointer.as_str()).collect();
        assert_eq!(pointers, ["", "/lines/0/sku"], "{failures:?}");
        assert!(failures[0].reason.contains("amount"), "{failures:?}");
        assert!(super::failures(&validator, &raw(r#"{"amount": 5}"#)).is_empty());
    }
}
