//! Bearer authentication of the admin API (RFC 6750). The scheme name is
//! matched case-insensitively, as RFC 9110 section 11.1 requires, and every
//! failure gets the same 401 response.

use std::fmt;
use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header::{Header, HeaderValue, InvalidHeaderValue, TryIntoHeaderValue};
use actix_web::{FromRequest, HttpRequest, web};
use actix_web_httpauth::headers::authorization::{Authorization, ParseError, Scheme};
use zeroize::Zeroizing;

use crate::error::{ApiError, ErrorCode};
use crate::log_limit::LogLimiter;
use crate::state::AppState;

/// The `Bearer` credential of an `Authorization` header. Neither `Debug` nor
/// `Display` prints the credential.
#[derive(Clone)]
pub struct AdminBearer {
    credential: Zeroizing<String>,
}

impl fmt::Debug for AdminBearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminBearer([redacted])")
    }
}

impl fmt::Display for AdminBearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer [redacted]")
    }
}

impl TryIntoHeaderValue for AdminBearer {
    type Error = InvalidHeaderValue;

    fn try_into_value(self) -> Result<HeaderValue, Self::Error> {
        HeaderValue::from_str(&format!("Bearer {}", self.credential.as_str()))
    }
}

impl Scheme for AdminBearer {
    fn parse(value: &HeaderValue) -> Result<Self, ParseError> {
        let text = value.to_str()?;
        let (scheme, credential) = text.split_once(' ').ok_or(ParseError::Invalid)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ParseError::MissingScheme);
        }
        let credential = credential.trim_matches(' ');
        if credential.is_empty() {
            return Err(ParseError::Invalid);
        }
        Ok(AdminBearer {
            credential: Zeroizing::new(credential.to_owned()),
        })
    }
}

/// Proof that the request carried the admin credential. Handlers of key
/// operations take it as an argument, so none can run without it.
#[derive(Debug)]
pub struct AdminAuth {
    /// The peer address, for audit lines.
    pub peer: String,
}

impl FromRequest for AdminAuth {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<AdminAuth, ApiError> {
    let peer = req
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
    let state = req.app_data::<web::Data<AppState>>().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Internal,
            "The server failed to handle the request.",
        )
    })?;
    let Some(expected) = &state.admin_credential else {
        // Without a configured credential the key operations do not exist.
        return Err(ApiError::for_status(
            actix_web::http::StatusCode::NOT_FOUND,
            req.path(),
        ));
    };

    let presented = Authorization::<AdminBearer>::parse(req).map(Authorization::into_scheme);
    match presented {
        Ok(bearer) if expected.matches(&bearer.credential) => Ok(AdminAuth { peer }),
        _ => {
            static FAILURES: LogLimiter = LogLimiter::new();
            if let Some(held_back) = FAILURES.allow(chrono::Utc::now().timestamp()) {
                log::warn!(
                    "admin authentication failed peer={peer} path={} held_back={held_back}",
                    req.path()
                );
            }
            Err(unauthorized())
        }
    }
}

/// Builds the one response to a missing, malformed or wrong credential.
pub fn unauthorized() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        "A valid admin bearer credential is required.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<AdminBearer, ParseError> {
        AdminBearer::parse(&HeaderValue::from_str(value).expect("valid header"))
    }

    #[test]
    fn scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR abc"] {
            let bearer = parse(value).expect(value);

            assert_eq!(bearer.credential.as_str(), "abc", "{value}");
        }
    }

    #[test]
    fn other_schemes_rejected() {
        for value in [
            "Basic abc",
            "Bearerabc",
            "Bearer",
            "Bearer    ",
            "Token abc",
        ] {
            assert!(parse(value).is_err(), "{value}");
        }
    }

    #[test]
    fn formatting_redacts_credential() {
        let bearer = parse("Bearer s3cret-value").expect("parses");

        assert!(!format!("{bearer:?}").contains("s3cret"));
        assert!(!format!("{bearer}").contains("s3cret"));
    }
}
