//! `GET /ccstore/v1/metering/session` (maintainSession): keeps a valid token
//! as it is, or starts a new session with a freshly minted token.

pub mod cookie;
pub mod source;

use std::cell::RefCell;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};

use crate::error::{ApiError, ErrorCode};
use crate::keys::KeyRing;
use crate::keys::live::RingCache;
use crate::log_limit::LogLimiter;
use crate::ops::metrics::MetricsWriter;
use crate::state::{AnchoredClock, AppState};
use crate::token::{
    Rejection, TokenPolicy, ValidToken, append_token, minted_token_len, verify_cached,
};
use cookie::SessionCookie;
use source::{RequestToken, TOKEN_HEADER, TokenSource, is_visible_ascii, read_token};

/// Path of the endpoint.
pub const SESSION_PATH: &str = "/ccstore/v1/metering/session";

const VALID_BODY: &str = r#"{"valid":true}"#;
const INVALID_BODY: &str = r#"{"valid":false}"#;

/// The outcome of checking the request's token.
enum Check<'a> {
    Valid(ValidToken<'a>),
    Invalid { reason: &'static str },
}

impl Check<'_> {
    fn is_unknown_kid(&self) -> bool {
        matches!(self, Check::Invalid { reason } if *reason == Rejection::UnknownKid.reason())
    }
}

/// The session endpoint's part of one worker thread: the shared state, the
/// worker's cache of the key ring and its metrics shard. A request borrows
/// it, so taking it changes no reference count.
#[derive(Debug)]
pub struct SessionWorker {
    pub(crate) state: web::Data<AppState>,
    rings: RefCell<RingCache>,
    pub(crate) metrics: MetricsWriter,
    clock: AnchoredClock,
}

impl SessionWorker {
    /// Builds the part of the calling thread, which alone may use it.
    pub fn new(state: &web::Data<AppState>) -> Self {
        SessionWorker {
            rings: RefCell::new(state.keys.cache()),
            metrics: state.metrics.writer(),
            clock: AnchoredClock::new(state.clock),
            state: state.clone(),
        }
    }
}

/// The handler, for GET and HEAD alike. Only a token whose `kid` the ring
/// lacks waits, for a reload of the keys folder. That wait is a future of
/// its own, boxed, so the future of every other request stays small, and
/// the ring cache is never borrowed across it. `started` is the monotonic
/// time the request began, which gives the wall time for the token checks.
pub async fn maintain_session(
    req: &HttpRequest,
    worker: &SessionWorker,
    started: Instant,
) -> Result<HttpResponse, ApiError> {
    let answer = {
        let mut rings = worker.rings.borrow_mut();
        let now = worker.clock.now_at(started);
        maintain_without_reload(req, worker, rings.load(), now)
    };
    match answer {
        Some(result) => result,
        None => Box::pin(maintain_after_reload(req, worker)).await,
    }
}

/// Builds the response from `ring`, or returns `None` when the token names
/// a `kid` the ring lacks, which a reload may find.
fn maintain_without_reload(
    req: &HttpRequest,
    worker: &SessionWorker,
    ring: &KeyRing,
    now: DateTime<Utc>,
) -> Option<Result<HttpResponse, ApiError>> {
    let state = &worker.state;
    let RequestToken { source, echo } = read_token(req.headers());
    let check = check_source(&source, ring, &state.policy, now);
    if check.is_unknown_kid() {
        return None;
    }
    Some(respond(check, &source, echo, ring, worker, now))
}

/// Reloads the keys folder (at most once a second, shared by concurrent
/// requests) and builds the response from the ring in force after it.
async fn maintain_after_reload(
    req: &HttpRequest,
    worker: &SessionWorker,
) -> Result<HttpResponse, ApiError> {
    let state = &worker.state;
    state.keys.reload_for_unknown_kid(state.clock.now()).await;
    let now = state.clock.now();
    let RequestToken { source, echo } = read_token(req.headers());
    let ring = state.keys.load();
    let check = check_source(&source, &ring, &state.policy, now);
    respond(check, &source, echo, &ring, worker, now)
}

/// Keeps a valid token or mints a new one, and builds the response.
fn respond(
    check: Check<'_>,
    source: &TokenSource<'_>,
    echo: bool,
    ring: &KeyRing,
    worker: &SessionWorker,
    now: DateTime<Utc>,
) -> Result<HttpResponse, ApiError> {
    let state = &worker.state;
    match check {
        Check::Valid(token) => {
            let verified = &token.verified;
            log::debug!(
                "outcome=valid source={} kid={}",
                source.label(),
                verified.kid
            );
            worker.metrics.count_valid(&verified.kid);
            let max_age = ((verified.exp - now.timestamp() as f64).floor() as i64).max(1);
            let cookie = state.cookie.valid_cookie(max_age, &token);
            session_response(cookie, true, echo)
        }
        Check::Invalid { reason } => {
            let Some(key) = ring.signing_key(now) else {
                static UNAVAILABLE: LogLimiter = LogLimiter::new();
                if let Some(held_back) = UNAVAILABLE.allow(now.timestamp()) {
                    log::error!(
                        "outcome=unavailable reason=no_signing_key source={} held_back={held_back}",
                        source.label()
                    );
                }
                return Err(ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    "No key can sign a new session now.",
                ));
            };
            let policy = &state.policy;
            let cookie = state.cookie.session_cookie(
                policy.ttl_secs,
                minted_token_len(key, policy, now),
                |value| {
                    append_token(key, policy, now, value)
                        .map(drop)
                        .map_err(|e| {
                            log::error!(
                                "outcome=error reason=mint_failed kid={} error={e}",
                                key.kid
                            );
                            ApiError::new(ErrorCode::Internal, "The session could not be started.")
                        })
                },
            )?;
            log::debug!(
                "outcome=new_session reason={reason} source={} kid={}",
                source.label(),
                key.kid
            );
            worker.metrics.count_new_session(reason, &key.kid);
            session_response(cookie, false, echo)
        }
    }
}

/// Verifies the candidates of `source`; of several cookies the first valid
/// one wins, else the first one's reason is reported.
fn check_source<'a>(
    source: &TokenSource<'a>,
    ring: &KeyRing,
    policy: &TokenPolicy,
    now: DateTime<Utc>,
) -> Check<'a> {
    let header: [&'a [u8]; 1];
    let candidates: &[&'a [u8]] = match source {
        TokenSource::Header(token) => {
            header = [token];
            &header
        }
        TokenSource::Cookies(tokens) => tokens.as_slice(),
        TokenSource::AmbiguousHeader => {
            return Check::Invalid {
                reason: "ambiguous_header",
            };
        }
        TokenSource::Absent => return Check::Invalid { reason: "absent" },
    };
    let mut first_rejection = None;
    for &token in candidates {
        match verify_cached(token, ring, policy, now) {
            Ok(valid) => return Check::Valid(valid),
            Err(rejection) => {
                first_rejection.get_or_insert(rejection);
            }
        }
    }
    let reason = match source {
        // Checked only after a failure, so a valid token is read once.
        TokenSource::Header(token) if !is_visible_ascii(token) => "ambiguous_header",
        _ => first_rejection.map_or("absent", Rejection::reason),
    };
    Check::Invalid { reason }
}

fn session_response(
    cookie: SessionCookie,
    valid: bool,
    echo: bool,
) -> Result<HttpResponse, ApiError> {
    let not_header_safe = || {
        log::error!("outcome=error reason=token_not_header_safe");
        ApiError::new(ErrorCode::Internal, "The session could not be returned.")
    };
    let token = if echo {
        Some(cookie.token().ok_or_else(not_header_safe)?)
    } else {
        None
    };
    let set_cookie = cookie.into_set_cookie().ok_or_else(not_header_safe)?;

    let body = if valid { VALID_BODY } else { INVALID_BODY };
    // Header values are inserted directly, skipping the builder's
    // conversions.
    let mut response = HttpResponse::with_body(StatusCode::OK, body).map_into_boxed_body();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::SET_COOKIE, set_cookie);
    if let Some(token) = token {
        headers.insert(TOKEN_HEADER.clone(), token);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::test_support::{NOW, at, policy, ring};

    fn reason(check: Check<'_>) -> &'static str {
        match check {
            Check::Invalid { reason } => reason,
            Check::Valid(_) => panic!("rejection expected, found a valid token"),
        }
    }

    #[test]
    fn non_ascii_header_reported_ambiguous() {
        let ring = ring();
        for value in [&b"\xff\xfe"[..], "\u{e9}.\u{e9}.\u{e9}".as_bytes()] {
            let check = check_source(&TokenSource::Header(value), &ring, &policy(), at(NOW));

            assert_eq!(reason(check), "ambiguous_header", "{value:?}");
        }
    }

    #[test]
    fn ascii_header_keeps_its_reason() {
        let ring = ring();

        let check = check_source(&TokenSource::Header(b"a.b.c"), &ring, &policy(), at(NOW));

        assert_eq!(reason(check), "malformed");
    }
}
