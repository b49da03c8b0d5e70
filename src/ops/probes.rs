//! `GET /healthz` (the process serves requests) and `GET /readyz` (it can
//! start sessions now and is not stopping), for load balancers and
//! Kubernetes probes.

use std::sync::atomic::Ordering;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError, web};
use serde::Serialize;

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// The body of a 200 from `/readyz`.
#[derive(Debug, Serialize)]
pub struct Ready {
    pub status: &'static str,
    /// `kid` of the key that mints new sessions now.
    pub signing_kid: String,
    /// Keys in the loaded ring, whatever their state.
    pub keys: usize,
    /// `KeyRing::fingerprint`: equal on replicas that loaded the same key
    /// files. It is a digest of kids, key fingerprints and lifecycle times
    /// and reveals nothing about the secrets.
    pub fingerprint: String,
}

/// The cause of a 503 from `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// A graceful stop has begun.
    Stopping,
    /// No key in the loaded ring may sign now.
    NoSigningKey,
}

/// Checks readiness at the service's current time.
pub fn readiness(state: &AppState) -> Result<Ready, NotReady> {
    if state.stopping.load(Ordering::Relaxed) {
        return Err(NotReady::Stopping);
    }
    let ring = state.keys.load();
    let signing = ring
        .signing_key(state.clock.now())
        .ok_or(NotReady::NoSigningKey)?;
    Ok(Ready {
        status: "ready",
        signing_kid: signing.kid.to_string(),
        keys: ring.len(),
        fingerprint: ring.fingerprint().to_owned(),
    })
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .json(serde_json::json!({"status": "ok"}))
}

/// 200 with [`Ready`], or 503 errorModel whose `devMessage` names the cause.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let mut response = match readiness(&state) {
        Ok(ready) => HttpResponse::Ok().json(ready),
        Err(NotReady::Stopping) => ApiError::new(
            ErrorCode::ServiceUnavailable,
            "The service is stopping and takes no new traffic.",
        )
        .with_dev_message("stopping")
        .error_response(),
        Err(NotReady::NoSigningKey) => ApiError::new(
            ErrorCode::ServiceUnavailable,
            "No key can sign a new session now.",
        )
        .with_dev_message("no_signing_key")
        .error_response(),
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
