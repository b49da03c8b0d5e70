//! Handlers of the key operations. Each runs the shared folder operation on
//! the blocking pool, reloads this replica's ring at once, and writes one
//! audit line.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::auth::AdminAuth;
use crate::error::{ApiError, ErrorCode};
use crate::keys::cli::parse_instant;
use crate::keys::jwk::parse_algorithm;
use crate::keys::ops::{KeyInfo, KeyOps, NewKey, OpsError, RetirePolicy};
use crate::keys::store::StoreError;
use crate::state::AppState;

/// Body of `POST /admin/v1/keys` and `POST /admin/v1/rotate`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKeyBody {
    kid: Option<String>,
    alg: Option<String>,
    /// Create only: when the key starts signing; absent means verify only.
    sign_from: Option<String>,
    /// Rotate only: when the new key starts signing; absent means now.
    at: Option<String>,
}

/// Body of `activate`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateBody {
    at: Option<String>,
}

/// Body of `prune`: no members.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PruneBody {}

/// Body of `retire`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetireBody {
    at: Option<String>,
    #[serde(default)]
    force: bool,
}

pub async fn list(_auth: AdminAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let ops = KeyOps::new(state.keys.dir());
    let now = state.clock.now();
    let items = run_blocking(move || ops.list(now)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

pub async fn get(
    _auth: AdminAuth,
    state: web::Data<AppState>,
    kid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let ops = KeyOps::new(state.keys.dir());
    let now = state.clock.now();
    let items = run_blocking(move || ops.list(now)).await?;
    let kid = kid.into_inner();
    match items.into_iter().find(|item| item.kid == kid) {
        Some(item) => Ok(HttpResponse::Ok().json(item)),
        None => Err(ops_error(OpsError::NotFound(kid))),
    }
}

pub async fn create(
    auth: AdminAuth,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: NewKeyBody = parse_body(&req, &body)?;
    let now = state.clock.now();
    reject_member(body.at.is_some(), "at", "use sign_from when creating a key")?;
    let sign_from = body
        .sign_from
        .as_deref()
        .map(|t| instant(t, "sign_from", now))
        .transpose()?;
    let new = new_key(body.kid, body.alg.as_deref(), sign_from)?;

    let ops = KeyOps::new(state.keys.dir());
    let info = run_blocking(move || ops.create(new, now))
        .await
        .inspect_err(|e| audit_failure(&auth, "create", e))?;
    finish(&state, &auth, "create", &info).await;
    Ok(HttpResponse::Created().json(info))
}

pub async fn rotate(
    auth: AdminAuth,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: NewKeyBody = parse_body(&req, &body)?;
    let now = state.clock.now();
    reject_member(
        body.sign_from.is_some(),
        "sign_from",
        "use at when rotating",
    )?;
    let at = instant(body.at.as_deref().unwrap_or("now"), "at", now)?;
    let new = new_key(body.kid, body.alg.as_deref(), None)?;

    let ops = KeyOps::new(state.keys.dir());
    let info = run_blocking(move || ops.rotate(new, at, now))
        .await
        .inspect_err(|e| audit_failure(&auth, "rotate", e))?;
    finish(&state, &auth, "rotate", &info).await;
    Ok(HttpResponse::Created().json(info))
}

pub async fn activate(
    auth: AdminAuth,
    state: web::Data<AppState>,
    kid: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: ActivateBody = parse_body(&req, &body)?;
    let now = state.clock.now();
    let at = instant(body.at.as_deref().unwrap_or("now"), "at", now)?;

    let ops = KeyOps::new(state.keys.dir());
    let kid = kid.into_inner();
    let info = run_blocking(move || ops.activate(&kid, at, now))
        .await
        .inspect_err(|e| audit_failure(&auth, "activate", e))?;
    finish(&state, &auth, "activate", &info).await;
    Ok(HttpResponse::Ok().json(info))
}

pub async fn retire(
    auth: AdminAuth,
    state: web::Data<AppState>,
    kid: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: RetireBody = parse_body(&req, &body)?;
    let now = state.clock.now();
    let at = instant(body.at.as_deref().unwrap_or("now"), "at", now)?;
    let policy = RetirePolicy {
        max_token_lifetime_secs: state.policy.max_lifetime_secs,
        leeway_secs: state.policy.leeway_secs,
    };

    let ops = KeyOps::new(state.keys.dir());
    let kid = kid.into_inner();
    let force = body.force;
    let info = run_blocking(move || ops.retire(&kid, at, force, policy, now))
        .await
        .inspect_err(|e| audit_failure(&auth, "retire", e))?;
    let operation = if force { "retire_forced" } else { "retire" };
    finish(&state, &auth, operation, &info).await;
    Ok(HttpResponse::Ok().json(info))
}

pub async fn prune(
    auth: AdminAuth,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let PruneBody {} = parse_body(&req, &body)?;
    let ops = KeyOps::new(state.keys.dir());
    let now = state.clock.now();
    let pruned = run_blocking(move || ops.prune(now))
        .await
        .inspect_err(|e| audit_failure(&auth, "prune", e))?;
    crate::app::reload_now(&state, "admin").await;
    log::info!(
        "admin op=prune kids={} peer={}",
        if pruned.is_empty() {
            "-".to_owned()
        } else {
            pruned.join(",")
        },
        auth.peer
    );
    Ok(HttpResponse::Ok().json(serde_json::json!({ "pruned": pruned })))
}

/// Reloads this replica's ring and writes the audit line.
async fn finish(state: &web::Data<AppState>, auth: &AdminAuth, operation: &str, info: &KeyInfo) {
    crate::app::reload_now(state, "admin").await;
    log::info!(
        "admin op={operation} kid={} state={} peer={}",
        info.kid,
        info.state.as_str(),
        auth.peer
    );
}

/// Writes the audit line of an operation that was rejected or failed.
fn audit_failure(auth: &AdminAuth, operation: &str, error: &ApiError) {
    log::info!(
        "admin op={operation} result=rejected errorCode={} peer={} message={:?}",
        error.code.code(),
        auth.peer,
        error.message
    );
}

async fn run_blocking<T: Send + 'static>(
    operation: impl FnOnce() -> Result<T, OpsError> + Send + 'static,
) -> Result<T, ApiError> {
    match web::block(operation).await {
        Ok(result) => result.map_err(ops_error),
        Err(_) => Err(ApiError::new(
            ErrorCode::Internal,
            "The key operation could not run.",
        )),
    }
}

/// Maps an operation error to the client's errorModel. Folder faults are
/// logged here with their cause and returned as a generic 500.
fn ops_error(error: OpsError) -> ApiError {
    match &error {
        OpsError::NotFound(kid) => {
            ApiError::new(ErrorCode::KeyNotFound, format!("No key with kid {kid:?}."))
                .with_error_path("kid")
        }
        OpsError::Exists(kid) => ApiError::new(
            ErrorCode::KeyExists,
            format!("A key with kid {kid:?} already exists."),
        )
        .with_error_path("kid"),
        OpsError::OnlySigningKey(_)
        | OpsError::TokensMayBeValid { .. }
        | OpsError::Retired(_)
        | OpsError::AlreadyRetired(_) => {
            ApiError::new(ErrorCode::KeyInUse, capitalize(&error.to_string()))
        }
        OpsError::ReadOnly { .. }
        | OpsError::Store(StoreError::Invalid { .. } | StoreError::ReadFile { .. })
        | OpsError::Store(StoreError::ReadDir { .. }) => {
            log::warn!("admin key operation rejected: {error}");
            ApiError::new(
                ErrorCode::KeysFolderUnusable,
                capitalize(&error.to_string()),
            )
        }
        OpsError::Store(_) | OpsError::Lock { .. } => {
            log::error!("admin key operation failed: {error}");
            ApiError::new(
                ErrorCode::Internal,
                "The keys folder could not be read or written.",
            )
        }
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

/// Parses an optional JSON object body; an empty body is the default.
fn parse_body<T: DeserializeOwned + Default>(
    req: &HttpRequest,
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "A request body must be sent as Content-Type: application/json.",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            "The request body must be a JSON object with only the documented members.",
        )
        .with_dev_message(format!(
            "Invalid body at line {} column {}.",
            e.line(),
            e.column()
        ))
    })
}

fn field_error(field: &'static str, message: String) -> ApiError {
    let item = ApiError::new(ErrorCode::InvalidField, message.clone()).with_error_path(field);
    ApiError::new(ErrorCode::InvalidField, message)
        .with_error_path(field)
        .with_errors(vec![item])
}

fn reject_member(present: bool, field: &'static str, hint: &str) -> Result<(), ApiError> {
    if present {
        return Err(field_error(
            field,
            format!("Member {field} is not accepted here; {hint}."),
        ));
    }
    Ok(())
}

fn instant(text: &str, field: &'static str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    parse_instant(text, now).map_err(|message| field_error(field, capitalize(&message)))
}

fn new_key(
    kid: Option<String>,
    alg: Option<&str>,
    sign_from: Option<DateTime<Utc>>,
) -> Result<NewKey, ApiError> {
    let alg = match alg {
        None => None,
        Some(name) => Some(parse_algorithm(name).ok_or_else(|| {
            field_error(
                "alg",
                format!("Invalid alg {name:?}; use HS256, HS384 or HS512."),
            )
        })?),
    };
    if let Some(kid) = &kid
        && !crate::keys::jwk::is_valid_kid(kid)
    {
        return Err(field_error(
            "kid",
            format!("Invalid kid {kid:?}; use 1 to 64 of A-Z a-z 0-9 . _ - and no leading dot."),
        ));
    }
    Ok(NewKey {
        kid,
        alg,
        sign_from,
    })
}
