//! Session tokens: compact JWS (RFC 7515) with JWT claims (RFC 7519), signed
//! with HMAC. Minting and verification take `now` as an argument and know
//! nothing of HTTP.

mod cache;
mod claims;
mod flat;
mod mac;
mod mint;
mod verify;

pub use cache::{ValidToken, verify_cached};
pub use mac::{KeyedMac, MAX_TAG_BYTES};
pub use mint::{MintError, Minted, append_token, mint_token, minted_token_len};
pub use verify::{Rejection, Verified, verify_token};

/// Largest NumericDate accepted: 9999-12-31T23:59:59Z.
pub const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;

/// The rules tokens are minted and verified by, fixed at start.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenPolicy {
    /// `iss` of minted tokens, and the only `iss` accepted.
    pub issuer: String,
    /// Lifetime of a minted token in seconds.
    pub ttl_secs: i64,
    /// Largest `exp - iat` accepted, in seconds.
    pub max_lifetime_secs: i64,
    /// Clock skew tolerated on `exp`, `iat` and `nbf`, in seconds.
    pub leeway_secs: i64,
    /// Maximum token length accepted, in bytes, checked before any decoding.
    pub max_token_bytes: usize,
    /// `"iss":<issuer as JSON>`, prepared once for minting.
    issuer_member: String,
}

impl TokenPolicy {
    pub fn new(
        issuer: String,
        ttl_secs: i64,
        max_lifetime_secs: i64,
        leeway_secs: i64,
        max_token_bytes: usize,
    ) -> Self {
        let issuer_member = format!("\"iss\":{}", serde_json::Value::from(issuer.as_str()));
        TokenPolicy {
            issuer,
            ttl_secs,
            max_lifetime_secs,
            leeway_secs,
            max_token_bytes,
            issuer_member,
        }
    }

    fn issuer_member(&self) -> &str {
        &self.issuer_member
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use chrono::{DateTime, Utc};
    use jsonwebtoken::Algorithm;
    use zeroize::Zeroizing;

    use super::TokenPolicy;
    use crate::keys::{Key, KeyRing};

    pub const NOW: i64 = 1_800_000_000;

    pub fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).expect("valid timestamp")
    }

    pub fn policy() -> TokenPolicy {
        TokenPolicy::new("sessiond".into(), 3600, 86_400, 30, 4096)
    }

    pub fn key(kid: &str, alg: Algorithm, byte: u8) -> Key {
        Key::new(
            kid.to_owned(),
            alg,
            Zeroizing::new(vec![byte; crate::keys::jwk::min_secret_bytes(alg)]),
            at(0),
            Some(at(0)),
            None,
        )
    }

    pub fn ring() -> KeyRing {
        KeyRing::new(vec![
            key("k1", Algorithm::HS256, 1),
            key("k384", Algorithm::HS384, 2),
        ])
        .expect("unique kids")
    }
}
