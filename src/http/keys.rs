//! `/keys`: API keys, created, listed and revoked by admins. A key's secret
//! is shown once, in the answer that creates it.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::AppState;
use super::auth::{Admin, Caller};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{AcceptsJson, JsonBody, Path};
use crate::auth::{IssueError, KeyRequest, Scope};
use crate::store::StoredKey;

/// The key routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
}

/// A key to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyCreate {
    /// A name for people.
    #[schema(example = "billing-service")]
    name: String,
    /// What the key may do: `admin` implies `read` and `write`.
    scopes: Vec<Scope>,
    /// The stream prefixes the key reaches; absent or null: every stream.
    #[serde(default)]
    #[schema(example = json!(["account", "order-"]))]
    streams: Option<Vec<String>>,
    /// When the key stops working; absent or null: never.
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

/// A key as listed: never its secret.
#[derive(Serialize, ToSchema)]
struct KeyView {
    /// Its id, to revoke it by.
    id: Uuid,
    /// Its name.
    name: String,
    /// What it may do.
    scopes: Vec<Scope>,
    /// The stream prefixes it reaches; null: every stream.
    streams: Option<Vec<String>>,
    /// When it stops working; null: never.
    expires_at: Option<DateTime<Utc>>,
    /// When it was created.
    created: DateTime<Utc>,
}

impl From<StoredKey> for KeyView {
    fn from(stored: StoredKey) -> Self {
        KeyView {
            id: stored.key.id,
            name: stored.key.name,
            scopes: stored.key.scopes,
            streams: stored.key.streams,
            expires_at: stored.key.expires_at,
            created: stored.created,
        }
    }
}

/// A key just created, with its secret: shown this once.
#[derive(Serialize, ToSchema)]
struct CreatedKey {
    #[serde(flatten)]
    view: KeyView,
    /// The secret, to send as `Authorization: Bearer <key>`. Only its
    /// digest is stored: it cannot be shown again.
    #[schema(example = "cairn_q3Zt…")]
    key: String,
}

/// The keys in force.
#[derive(Serialize, ToSchema)]
struct KeyList {
    /// Keys not revoked, oldest first (expired ones included).
    keys: Vec<KeyView>,
}

/// Creates an API key.
#[utoipa::path(
    post,
    path = "/keys",
    tag = "keys",
    request_body(content = KeyCreate, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `key` is shown this once", body = CreatedKey),
    )
)]
async fn create_key(
    _: Caller<Admin>,
    State(state): State<AppState>,
    _: AcceptsJson,
    JsonBody(body): JsonBody<KeyCreate>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let request = KeyRequest {
        name: body.name,
        scopes: body.scopes,
        streams: body.streams,
        expires_at: body.expires_at,
    };
    let (stored, secret) = crate::auth::issue(&state.store, request)
        .await
        .map_err(|error| match error {
            IssueError::Invalid(detail) => ApiError::BadRequest(detail),
            IssueError::Store(error) => error.into(),
        })?;
    // This instance accepts the key at once; the others on their next read.
    state.authenticator.refresh_keys().await;
    let created = CreatedKey {
        view: stored.into(),
        key: secret.expose().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// Lists the keys in force, without their secrets.
#[utoipa::path(
    get,
    path = "/keys",
    tag = "keys",
    responses(
        (status = 200, description = "The keys", body = KeyList),
    )
)]
async fn list_keys(
    _: Caller<Admin>,
    State(state): State<AppState>,
    _: AcceptsJson,
) -> ApiResult<Json<KeyList>> {
    let keys = state.store.keys().await?;
    let keys = keys
        .into_iter()
        .filter(|k| k.revoked.is_none())
        .map(Into::into)
        .collect();
    Ok(Json(KeyList { keys }))
}

/// Revokes a key: every instance refuses it within a second.
#[utoipa::path(
    delete,
    path = "/keys/{id}",
    tag = "keys",
    params(("id" = Uuid, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key in force", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn revoke_key(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    if !state.store.revoke_key(id).await? {
        return Err(ApiError::NotFound(format!("no key {id} is in force")));
    }
    state.authenticator.refresh_keys().await;
    Ok(StatusCode::NO_CONTENT)
}
