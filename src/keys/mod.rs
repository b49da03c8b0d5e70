//! Signing keys: the in-memory key, its lifecycle at a given instant, and the
//! key ring a request verifies and mints with.

pub mod cli;
pub mod jwk;
pub mod live;
pub mod ops;
pub mod ring;
pub mod store;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use jwk::{KeyFile, KeyFileFault};
pub use ring::{KeyRing, Lookup};

use crate::token::KeyedMac;

/// One HMAC key with its lifecycle. `Debug` never prints the secret.
pub struct Key {
    pub kid: Arc<str>,
    pub alg: Algorithm,
    secret: Zeroizing<Vec<u8>>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The HMAC keyed with `secret`, prepared once; tokens sign and verify
    /// with copies of it.
    mac: KeyedMac,
    /// base64url of the JOSE header this key mints with, prepared once:
    /// `{"alg":…,"typ":"JWT","kid":…}`.
    header_segment: String,
    /// Hex digest that identifies the key without revealing the secret.
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
    /// From this instant the key may sign; `None` means verify only.
    pub sign_from: Option<DateTime<Utc>>,
    /// From this instant the key no longer verifies; `None` means no end.
    pub verify_until: Option<DateTime<Utc>>,
}

/// A key's lifecycle state at one instant, derived from its times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// `sign_from` is in the future: verifies now, signs later.
    Scheduled,
    /// The key that mints new sessions now.
    Signing,
    /// Verifies but does not sign (verify only, or superseded).
    Verifying,
    /// `verify_until` has passed: rejected.
    Retired,
}

impl KeyState {
    /// Returns the state as written in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Signing => "signing",
            Self::Verifying => "verifying",
            Self::Retired => "retired",
        }
    }
}

impl Key {
    pub fn new(
        kid: String,
        alg: Algorithm,
        secret: Zeroizing<Vec<u8>>,
        created_at: DateTime<Utc>,
        sign_from: Option<DateTime<Utc>>,
        verify_until: Option<DateTime<Utc>>,
    ) -> Self {
        // Members in the order RFC 7515's examples and most libraries use,
        // so tokens of other minters with this key often have the same
        // header bytes and take the ring's header lookup too.
        let header = format!(
            r#"{{"alg":"{}","typ":"JWT","kid":{}}}"#,
            jwk::algorithm_name(alg),
            serde_json::Value::from(kid.as_str())
        );
        let header_segment = URL_SAFE_NO_PAD.encode(header);
        let fingerprint = fingerprint(alg, &kid, &secret);
        Key {
            kid: Arc::from(kid),
            alg,
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            mac: KeyedMac::new(alg, &secret),
            secret,
            header_segment,
            fingerprint,
            created_at,
            sign_from,
            verify_until,
        }
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    pub fn mac(&self) -> &KeyedMac {
        &self.mac
    }

    pub fn header_segment(&self) -> &str {
        &self.header_segment
    }

    /// True while `verify_until` has not been reached.
    pub fn verifies_at(&self, now: DateTime<Utc>) -> bool {
        self.verify_until.is_none_or(|until| now < until)
    }

    /// True when `sign_from` has been reached and the key still verifies.
    pub fn may_sign_at(&self, now: DateTime<Utc>) -> bool {
        self.sign_from.is_some_and(|from| from <= now) && self.verifies_at(now)
    }

    /// Returns a copy with other lifecycle times and the same secret.
    pub fn with_lifecycle(
        &self,
        sign_from: Option<DateTime<Utc>>,
        verify_until: Option<DateTime<Utc>>,
    ) -> Key {
        Key::new(
            self.kid.to_string(),
            self.alg,
            self.secret.clone(),
            self.created_at,
            sign_from,
            verify_until,
        )
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("secret", &"[redacted]")
            .field("fingerprint", &self.fingerprint)
            .field("created_at", &self.created_at)
            .field("sign_from", &self.sign_from)
            .field("verify_until", &self.verify_until)
            .finish()
    }
}

/// Computes a domain-separated SHA-256 of the key, hex, first 16 bytes. A 256-bit
/// random secret cannot be recovered from it; it only distinguishes keys.
fn fingerprint(alg: Algorithm, kid: &str, secret: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"sessiond key fingerprint v1\0");
    hasher.update(jwk::algorithm_name(alg).as_bytes());
    hasher.update([0]);
    hasher.update(kid.as_bytes());
    hasher.update([0]);
    hasher.update(secret);
    hex(&hasher.finalize()[..16])
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sign_from: Option<i64>, verify_until: Option<i64>) -> Key {
        let at = |s: i64| DateTime::from_timestamp(s, 0).expect("valid timestamp");
        Key::new(
            "k1".to_owned(),
            Algorithm::HS256,
            Zeroizing::new(vec![7; 32]),
            at(0),
            sign_from.map(at),
            verify_until.map(at),
        )
    }

    #[test]
    fn debug_redacts_secret() {
        let debug = format!("{:?}", key(None, None));

        assert!(debug.contains("[redacted]"));
        assert!(!debug.contains("7, 7"), "{debug}");
    }

    #[test]
    fn lifecycle_bounds_are_half_open() {
        let k = key(Some(100), Some(200));
        let at = |s: i64| DateTime::from_timestamp(s, 0).expect("valid timestamp");

        assert!(!k.may_sign_at(at(99)), "before sign_from");
        assert!(k.may_sign_at(at(100)), "at sign_from");
        assert!(k.verifies_at(at(199)), "before verify_until");
        assert!(!k.verifies_at(at(200)), "at verify_until");
        assert!(!k.may_sign_at(at(200)), "retired key signs");
    }

    #[test]
    fn fingerprint_differs_by_secret() {
        let a = key(None, None);
        let b = Key::new(
            "k1".to_owned(),
            Algorithm::HS256,
            Zeroizing::new(vec![8; 32]),
            a.created_at,
            None,
            None,
        );

        assert_ne!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 32);
    }
}
