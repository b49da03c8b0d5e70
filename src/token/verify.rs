//! Verification of a presented token against the key ring at `now`.
//!
//! The checks run cheapest first and the token is never trusted beyond what
//! has been checked: the length cap before decoding, the header only to find
//! the key, the signature before any claim is read. The algorithm comes from
//! the key, never from the token; `kid` is only a lookup hint.
//!
//! The HMAC is computed with the key's prepared [`KeyedMac`](super::KeyedMac)
//! instead of `jsonwebtoken::crypto::verify`, because that keys a new HMAC
//! and allocates for every call. Both use the same `hmac` and `sha2` crates,
//! and the tests cross-check accepted tokens with `jsonwebtoken::decode`.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::{DecodeSliceError, Engine};
use chrono::{DateTime, Utc};

use super::claims::{Claims, JoseHeader, from_object};
use super::flat::read_flat_claims;
use super::{MAX_NUMERIC_DATE, MAX_TAG_BYTES, TokenPolicy};
use crate::keys::jwk::algorithm_name;
use crate::keys::{Key, KeyRing, Lookup};

/// The reason a token was not accepted. Each maps to a stable reason string for
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
    /// Returns the reason as written in logs.
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

/// The facts a valid token gives the caller.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The `kid` of the key that verified it.
    pub kid: Arc<str>,
    /// `exp` in seconds since the epoch, fraction kept.
    pub exp: f64,
}

/// Time bounds of a verified token: between them, the same token and ring
/// verify again.
#[derive(Debug, Clone)]
pub(super) struct Validity {
    /// The later of `iat` and `nbf`, in seconds since the epoch.
    pub not_before: f64,
    /// `exp`, in seconds since the epoch.
    pub expires: f64,
    /// `verify_until` of the key that verified the token.
    pub key_verify_until: Option<DateTime<Utc>>,
}

impl Validity {
    /// Returns true when a token that verified with these facts would
    /// still pass every check that depends on `now`.
    pub fn holds_at(&self, policy: &TokenPolicy, now: DateTime<Utc>) -> bool {
        let seconds = epoch_seconds(now);
        let leeway = policy.leeway_secs as f64;
        seconds < self.expires + leeway
            && self.not_before <= seconds + leeway
            && self.key_verify_until.is_none_or(|until| now < until)
    }
}

/// Verifies `token` with the keys of `ring` at `now`.
pub fn verify_token(
    token: &str,
    ring: &KeyRing,
    policy: &TokenPolicy,
    now: DateTime<Utc>,
) -> Result<Verified, Rejection> {
    verify_with_validity(token, ring, policy, now).map(|(verified, _)| verified)
}

/// Verifies `token` as [`verify_token`] does and also returns the facts
/// that keep it valid.
pub(super) fn verify_with_validity(
    token: &str,
    ring: &KeyRing,
    policy: &TokenPolicy,
    now: DateTime<Utc>,
) -> Result<(Verified, Validity), Rejection> {
    if token.len() > policy.max_token_bytes {
        return Err(Rejection::Oversize);
    }

    let [header_b64, claims_b64, signature_b64] = split_segments(token)?;
    let mut buffer = SegmentBuffer::new();

    // A header spelled exactly as a key of the ring mints it is known
    // without decoding; any other spelling is parsed and checked in full.
    let key = match ring.verifying_key_by_header(header_b64, now) {
        Some(lookup) => found_key(lookup)?,
        None => find_key(buffer.decode(header_b64)?, ring, now)?,
    };

    let mut tag = [0u8; MAX_TAG_BYTES];
    let tag = match URL_SAFE_NO_PAD.decode_slice(signature_b64, &mut tag) {
        Ok(len) => &tag[..len],
        // Longer than any HMAC tag, so it cannot match.
        Err(DecodeSliceError::OutputSliceTooSmall) => return Err(Rejection::BadSignature),
        Err(DecodeSliceError::DecodeError(_)) => return Err(Rejection::Malformed),
    };
    let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
    if !key.mac().verify(signing_input.as_bytes(), tag) {
        return Err(Rejection::BadSignature);
    }

    let claims_json = buffer.decode(claims_b64)?;
    let claims: Claims = read_flat_claims(claims_json)
        .or_else(|| from_object(claims_json))
        .ok_or(Rejection::InvalidClaims)?;
    let (exp, not_before) = check_claims(&claims, policy, now)?;
    let validity = Validity {
        not_before,
        expires: exp,
        key_verify_until: key.verify_until,
    };

    Ok((
        Verified {
            kid: key.kid.clone(),
            exp,
        },
        validity,
    ))
}

/// Reads the JOSE header and finds the key it names; the algorithm must be
/// the key's own.
fn find_key<'r>(
    header_json: &[u8],
    ring: &'r KeyRing,
    now: DateTime<Utc>,
) -> Result<&'r Arc<Key>, Rejection> {
    let header: JoseHeader = from_object(header_json).ok_or(Rejection::Malformed)?;
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

    let key = found_key(ring.verifying_key(&header.kid, now))?;
    if header.alg != algorithm_name(key.alg) {
        return Err(Rejection::WrongAlgorithm);
    }
    Ok(key)
}

fn found_key(lookup: Lookup<'_>) -> Result<&Arc<Key>, Rejection> {
    match lookup {
        Lookup::Found(key) => Ok(key),
        Lookup::Unknown => Err(Rejection::UnknownKid),
        Lookup::Retired => Err(Rejection::RetiredKid),
    }
}

/// Splits a compact JWS into exactly three non-empty segments of the
/// base64url alphabet. Padding, whitespace and a fourth segment are rejected.
///
/// Each byte is tested by a table lookup without a branch. A token's bytes
/// are random letters and digits, so a chain of range tests per byte
/// mispredicts, and in a profile under load it cost more than SHA-256.
fn split_segments(token: &str) -> Result<[&str; 3], Rejection> {
    let bytes = token.as_bytes();
    let mut foreign = 0u8;
    let mut dots = 0usize;
    for &byte in bytes {
        foreign |= FOREIGN_BYTE[usize::from(byte)];
        dots += usize::from(byte == b'.');
    }
    if foreign != 0 || dots != 2 {
        return Err(Rejection::Malformed);
    }
    let first = dot_after(bytes, 0);
    let second = dot_after(bytes, first + 1);
    if first == 0 || second == first + 1 || second + 1 == bytes.len() {
        return Err(Rejection::Malformed);
    }
    Ok([
        &token[..first],
        &token[first + 1..second],
        &token[second + 1..],
    ])
}

/// Returns the index of the first dot at or after `from`. The caller has
/// counted the dots, so there is one.
fn dot_after(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&byte| byte == b'.')
        .map_or(bytes.len(), |at| from + at)
}

/// Table of the bytes a compact JWS may not contain (1): all but the
/// base64url alphabet and `.` (0).
static FOREIGN_BYTE: [u8; 256] = {
    let mut foreign = [1; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
            foreign[byte] = 0;
        }
        byte += 1;
    }
    foreign
};

/// Decoded segments up to this many bytes stay on the stack. Tokens that
/// sessiond mints need about 100 plus the issuer's length; larger ones go
/// to the heap.
const STACK_SEGMENT_BYTES: usize = 256;

/// Room for one decoded segment at a time, so a request allocates nothing
/// for the header and claims of a token of ordinary size.
struct SegmentBuffer {
    stack: [u8; STACK_SEGMENT_BYTES],
    heap: Vec<u8>,
}

impl SegmentBuffer {
    fn new() -> Self {
        SegmentBuffer {
            stack: [0; STACK_SEGMENT_BYTES],
            heap: Vec::new(),
        }
    }

    /// Decodes one segment; non-canonical encodings (non-zero trailing bits,
    /// impossible lengths) are rejected, so every token has one spelling.
    fn decode(&mut self, segment: &str) -> Result<&[u8], Rejection> {
        match URL_SAFE_NO_PAD.decode_slice(segment, &mut self.stack) {
            Ok(len) => Ok(&self.stack[..len]),
            Err(DecodeSliceError::OutputSliceTooSmall) => {
                self.heap = URL_SAFE_NO_PAD
                    .decode(segment)
                    .map_err(|_| Rejection::Malformed)?;
                Ok(&self.heap)
            }
            Err(DecodeSliceError::DecodeError(_)) => Err(Rejection::Malformed),
        }
    }
}

/// Checks the registered claims and returns `exp` and the later of `iat`
/// and `nbf`.
fn check_claims(
    claims: &Claims,
    policy: &TokenPolicy,
    now: DateTime<Utc>,
) -> Result<(f64, f64), Rejection> {
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

    let now = epoch_seconds(now);
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

    Ok((exp, claims.nbf.map_or(iat, |nbf| nbf.max(iat))))
}

/// Returns `now` in seconds since the epoch, to the millisecond, as the
/// claims are compared with it.
fn epoch_seconds(now: DateTime<Utc>) -> f64 {
    now.timestamp() as f64 + f64::from(now.timestamp_subsec_millis()) / 1000.0
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;

#[cfg(test)]
mod hot_path_tests {
    use jsonwebtoken::Algorithm;

    use super::*;
    use crate::token::mint_token;
    use crate::token::test_support::{NOW, at, key, policy, ring};

    #[test]
    fn minted_header_and_parsed_header_agree() {
        let signer = key("k1", Algorithm::HS256, 1);
        let minted = mint_token(&signer, &policy(), at(NOW)).expect("mints");
        let (_, rest) = minted.token.split_once('.').expect("three segments");
        let (claims, _) = rest.split_once('.').expect("three segments");
        let reordered = URL_SAFE_NO_PAD.encode(r#"{"kid":"k1","typ":"JWT","alg":"HS256"}"#);
        let input = format!("{reordered}.{claims}");
        let mut tag = [0; MAX_TAG_BYTES];
        let tag = URL_SAFE_NO_PAD.encode(signer.mac().sign(input.as_bytes(), &mut tag));

        let fast = verify_token(&minted.token, &ring(), &policy(), at(NOW)).expect("valid");
        let parsed =
            verify_token(&format!("{input}.{tag}"), &ring(), &policy(), at(NOW)).expect("valid");

        assert_eq!(fast.kid, parsed.kid);
        assert_eq!(fast.exp, parsed.exp);
    }

    #[test]
    fn minted_header_of_retired_key_rejected() {
        let signer = key("k1", Algorithm::HS256, 1);
        let minted = mint_token(&signer, &policy(), at(NOW)).expect("mints");
        let retired = signer.with_lifecycle(Some(at(0)), Some(at(NOW)));
        let ring = KeyRing::new(vec![retired]).expect("unique kids");

        let result = verify_token(&minted.token, &ring, &policy(), at(NOW));

        assert_eq!(result.unwrap_err(), Rejection::RetiredKid);
    }

    #[test]
    fn minted_header_with_other_secret_rejected() {
        let forger = key("k1", Algorithm::HS256, 9);
        let forged = mint_token(&forger, &policy(), at(NOW)).expect("mints");

        let result = verify_token(&forged.token, &ring(), &policy(), at(NOW));

        assert_eq!(result.unwrap_err(), Rejection::BadSignature);
    }

    #[test]
    fn split_finds_three_segments() {
        assert_eq!(split_segments("a.bc.d-_"), Ok(["a", "bc", "d-_"]));
    }

    #[test]
    fn split_rejects_bad_shapes() {
        let cases = [
            ("", "empty"),
            ("abc", "one segment"),
            ("a.b", "two segments"),
            ("a.b.c.d", "four segments"),
            (".b.c", "empty header"),
            ("a..c", "empty claims"),
            ("a.b.", "empty signature"),
            ("a.b.c=", "padding"),
            ("a.b+.c", "standard alphabet"),
            ("a.b.c ", "trailing space"),
            ("a.b.\u{e9}", "non-ASCII"),
        ];
        for (token, description) in cases {
            assert_eq!(
                split_segments(token),
                Err(Rejection::Malformed),
                "{description}"
            );
        }
    }

    #[test]
    fn oversize_segment_decodes_on_heap() {
        let json = format!("{{\"x\":\"{}\"}}", "y".repeat(STACK_SEGMENT_BYTES));
        let segment = URL_SAFE_NO_PAD.encode(&json);
        let mut buffer = SegmentBuffer::new();

        let decoded = buffer.decode(&segment).expect("canonical base64url");

        assert_eq!(decoded, json.as_bytes());
    }
}
