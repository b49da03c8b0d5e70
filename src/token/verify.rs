//! Verification of a presented token against the key ring at `now`.
//!
//! The checks run cheapest first and the token is never trusted beyond what
//! has been checked: the length cap before decoding, the header only to find
//! the key, the signature before any claim is read. The algorithm comes from
//! the key, never from the token; `kid` is only a lookup hint.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use super::claims::{Claims, JoseHeader, from_object};
use super::{MAX_NUMERIC_DATE, TokenPolicy};
use crate::keys::jwk::algorithm_name;
use crate::keys::{KeyRing, Lookup};

/// Why a token was not accepted. Each maps to a stable reason string for
/// logs; none carries any part of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Longer than the configured cap.
    Oversize,
    /// Not three canonical base64url segments, or a header that is not a
    /// JSON object with string `alg` and `kid`.
    Malformed,
    /// The header has `crit`; sessiond supports no JWS extensions.
    UnsupportedCritical,
    /// No key in the ring has this `kid`.
    UnknownKid,
    /// The key exists but its `verify_until` has passed.
    RetiredKid,
    /// `alg` differs from the algorithm of the key named by `kid`.
    WrongAlgorithm,
    /// The HMAC does not match.
    BadSignature,
    /// Claims are not a JSON object of the right member types, a required
    /// claim is missing, `aud` is present, or `exp` is not after `iat`.
    InvalidClaims,
    /// `iss` differs from the configured issuer.
    WrongIssuer,
    /// `exp` plus leeway has passed.
    Expired,
    /// `iat` or `nbf` is later than now plus leeway.
    NotYetValid,
    /// `exp - iat` is above the configured maximum lifetime.
    LifetimeTooLong,
}

impl Rejection {
    /// The reason as written in logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Oversize => "oversize",
            Self::Malformed => "malformed",
            Self::UnsupportedCritical => "unsupported_crit",
            Self::UnknownKid => "unknown_kid",
            Self::RetiredKid => "retired_kid",
            Self::WrongAlgorithm => "wrong_alg",
            Self::BadSignature => "bad_signature",
            Self::InvalidClaims => "invalid_claims",
            Self::WrongIssuer => "wrong_issuer",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::LifetimeTooLong => "lifetime_too_long",
        }
    }
}

/// What a valid token tells the caller.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The `kid` of the key that verified it.
    pub kid: Arc<str>,
    /// `exp` in seconds since the epoch, fraction kept.
    pub exp: f64,
}

/// Verifies `token` with the keys of `ring` at `now`.
pub fn verify_token(
    token: &str,
    ring: &KeyRing,
    policy: &TokenPolicy,
    now: DateTime<Utc>,
) -> Result<Verified, Rejection> {
    if token.len() > policy.max_token_bytes {
        return Err(Rejection::Oversize);
    }

    let [header_b64, claims_b64, signature_b64] = split_segments(token)?;

    let header_json = decode_segment(header_b64)?;
    let header: JoseHeader = from_object(&header_json).ok_or(Rejection::Malformed)?;
    if header.crit.is_some() {
        return Err(Rejection::UnsupportedCritical);
    }
    if header
        .typ
        .as_deref()
        .is_some_and(|typ| !typ.eq_ignore_ascii_case("JWT"))
    {
        return Err(Rejection::Malformed);
    }

    let key = match ring.verifying_key(&header.kid, now) {
        Lookup::Found(key) => key,
        Lookup::Unknown => return Err(Rejection::UnknownKid),
        Lookup::Retired => return Err(Rejection::RetiredKid),
    };
    if header.alg != algorithm_name(key.alg) {
        return Err(Rejection::WrongAlgorithm);
    }

    let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
    match jsonwebtoken::crypto::verify(
        signature_b64,
        signing_input.as_bytes(),
        key.decoding_key(),
        key.alg,
    ) {
        Ok(true) => {}
        Ok(false) => return Err(Rejection::BadSignature),
        Err(_) => return Err(Rejection::Malformed),
    }

    let claims_json = decode_segment(claims_b64)?;
    let claims: Claims = from_object(&claims_json).ok_or(Rejection::InvalidClaims)?;
    let exp = check_claims(&claims, policy, now)?;

    Ok(Verified {
        kid: key.kid.clone(),
        exp,
    })
}

/// Splits a compact JWS into exactly three non-empty segments of the
/// base64url alphabet. Padding, whitespace and a fourth segment are rejected.
fn split_segments(token: &str) -> Result<[&str; 3], Rejection> {
    let bytes = token.as_bytes();
    if !bytes
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(Rejection::Malformed);
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(c), Some(s), None) if !h.is_empty() && !c.is_empty() && !s.is_empty() => {
            Ok([h, c, s])
        }
        _ => Err(Rejection::Malformed),
    }
}

/// Decodes one segment; non-canonical encodings (non-zero trailing bits,
/// impossible lengths) are rejected, so every token has one spelling.
fn decode_segment(segment: &str) -> Result<Vec<u8>, Rejection> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Rejection::Malformed)
}

/// Checks the registered claims; returns `exp`.
fn check_claims(
    claims: &Claims,
    policy: &TokenPolicy,
    now: DateTime<Utc>,
) -> Result<f64, Rejection> {
    let (Some(exp), Some(iat)) = (claims.exp, claims.iat) else {
        return Err(Rejection::InvalidClaims);
    };
    let dates = [Some(exp), Some(iat), claims.nbf];
    if dates
        .iter()
        .flatten()
        .any(|d| !(0.0..=MAX_NUMERIC_DATE).contains(d))
    {
        return Err(Rejection::InvalidClaims);
    }
    if claims.jti.as_deref().is_none_or(str::is_empty) || claims.aud.is_some() {
        return Err(Rejection::InvalidClaims);
    }

    if claims.iss.as_deref() != Some(policy.issuer.as_str()) {
        return Err(Rejection::WrongIssuer);
    }

    let now = now.timestamp() as f64 + f64::from(now.timestamp_subsec_millis()) / 1000.0;
    let leeway = policy.leeway_secs as f64;
    if now >= exp + leeway {
        return Err(Rejection::Expired);
    }

    if iat > now + leeway || claims.nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(Rejection::NotYetValid);
    }

    if exp <= iat {
        return Err(Rejection::InvalidClaims);
    }
    if exp - iat > policy.max_lifetime_secs as f64 {
        return Err(Rejection::LifetimeTooLong);
    }

    Ok(exp)
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
