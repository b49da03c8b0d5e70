//! The key file format: one JSON Web Key (RFC 7517, `kty` "oct") per file,
//! with RFC 3339 lifecycle members that state when the key may sign and until
//! when it verifies.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::Key;

/// Minimum HMAC secret length in bytes for `alg`: the hash output size, as
/// RFC 7518 section 3.2 requires (32 for HS256, 48 for HS384, 64 for HS512).
pub fn min_secret_bytes(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

/// Maximum `kid` length in characters.
pub const MAX_KID_CHARS: usize = 64;

/// A key file as stored on disk. `k` is base64url; its `Debug` is redacted.
/// Unknown members are rejected, although RFC 7517 lets readers ignore
/// them: a misspelled `verify_until` would otherwise leave a key valid forever.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub kty: String,
    pub kid: String,
    pub alg: String,
    pub k: Zeroizing<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "use")]
    pub key_use: Option<String>,
    /// RFC 7517 `key_ops`; accepted and not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_from: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_until: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile")
            .field("kty", &self.kty)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("k", &"[redacted]")
            .field("created_at", &self.created_at)
            .field("sign_from", &self.sign_from)
            .field("verify_until", &self.verify_until)
            .finish()
    }
}

/// A fault that makes a key file invalid. The text never contains the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyFileFault {
    #[error("not a valid key file: {0}")]
    Syntax(String),
    #[error("kty must be \"oct\", found {0:?}")]
    KeyType(String),
    #[error("kid {0:?} is invalid: use 1 to 64 of A-Z a-z 0-9 . _ - and no leading dot")]
    KeyId(String),
    #[error("alg must be HS256, HS384 or HS512, found {0:?}")]
    Algorithm(String),
    #[error("k is not canonical base64url without padding")]
    SecretEncoding,
    #[error("k holds {0} bytes; {1} requires at least {2} random bytes")]
    SecretTooShort(usize, &'static str, usize),
    #[error("use must be \"sig\" when present")]
    KeyUse,
    #[error("verify_until is before sign_from")]
    Lifecycle,
}

/// Checks that `kid` is safe as a file name and a log field.
pub fn is_valid_kid(kid: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    !kid.is_empty()
        && kid.chars().count() <= MAX_KID_CHARS
        && !kid.starts_with('.')
        && kid.chars().all(allowed)
}

/// Parses the algorithm names sessiond accepts for HMAC keys.
pub fn parse_algorithm(alg: &str) -> Option<Algorithm> {
    match alg {
        "HS256" => Some(Algorithm::HS256),
        "HS384" => Some(Algorithm::HS384),
        "HS512" => Some(Algorithm::HS512),
        _ => None,
    }
}

/// Returns the JOSE name of an HMAC algorithm.
pub fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        _ => "HS256",
    }
}

impl KeyFile {
    /// Parses and validates the JSON text of a key file.
    pub fn parse(text: &[u8]) -> Result<Key, KeyFileFault> {
        let file: KeyFile = serde_json::from_slice(text).map_err(|e| {
            // serde_json quotes a value only when it has the wrong type, and
            // `k` is a string member, so a string secret is never quoted.
            KeyFileFault::Syntax(e.to_string())
        })?;
        file.into_key()
    }

    /// Validates the members and builds the in-memory key.
    pub fn into_key(self) -> Result<Key, KeyFileFault> {
        if self.kty != "oct" {
            return Err(KeyFileFault::KeyType(self.kty));
        }
        if !is_valid_kid(&self.kid) {
            return Err(KeyFileFault::KeyId(self.kid));
        }
        let Some(alg) = parse_algorithm(&self.alg) else {
            return Err(KeyFileFault::Algorithm(self.alg));
        };
        if self.key_use.as_deref().is_some_and(|u| u != "sig") {
            return Err(KeyFileFault::KeyUse);
        }
        let secret = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(self.k.as_bytes())
                .map_err(|_| KeyFileFault::SecretEncoding)?,
        );
        let min = min_secret_bytes(alg);
        if secret.len() < min {
            return Err(KeyFileFault::SecretTooShort(
                secret.len(),
                algorithm_name(alg),
                min,
            ));
        }
        if let (Some(from), Some(until)) = (self.sign_from, self.verify_until)
            && until < from
        {
            return Err(KeyFileFault::Lifecycle);
        }

        Ok(Key::new(
            self.kid,
            alg,
            secret,
            self.created_at,
            self.sign_from,
            self.verify_until,
        ))
    }

    /// Builds the file for `key`, ready to serialize.
    pub fn from_key(key: &Key) -> Self {
        KeyFile {
            kty: "oct".to_owned(),
            kid: key.kid.to_string(),
            alg: algorithm_name(key.alg).to_owned(),
            k: Zeroizing::new(URL_SAFE_NO_PAD.encode(key.secret())),
            key_use: None,
            key_ops: None,
            created_at: key.created_at,
            sign_from: key.sign_from,
            verify_until: key.verify_until,
        }
    }

    /// Serializes with RFC 3339 times, pretty-printed.
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let mut value = serde_json::json!({
            "kty": self.kty,
            "kid": self.kid,
            "alg": self.alg,
            "k": self.k.as_str(),
            "created_at": rfc3339(self.created_at),
        });
        if let Some(from) = self.sign_from {
            value["sign_from"] = rfc3339(from).into();
        }
        if let Some(until) = self.verify_until {
            value["verify_until"] = rfc3339(until).into();
        }
        let mut text = serde_json::to_vec_pretty(&value).unwrap_or_default();
        text.push(b'\n');
        // The Value held a copy of the secret; overwrite it before it is freed.
        if let Some(serde_json::Value::String(k)) = value.get_mut("k") {
            zeroize::Zeroize::zeroize(k);
        }
        Zeroizing::new(text)
    }
}

/// Formats an instant as RFC 3339 in UTC; fractional seconds only when non-zero,
/// so two keys activated within one second still have distinct times.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    fn file_text(extra: &str) -> String {
        format!(
            r#"{{"kty":"oct","kid":"k1","alg":"HS256","k":"{SECRET_B64}",
            "created_at":"2026-01-01T00:00:00Z"{extra}}}"#
        )
    }

    #[test]
    fn parse_valid_file() {
        let key = KeyFile::parse(file_text(r#","sign_from":"2026-01-01T00:00:00Z""#).as_bytes())
            .expect("valid key file");

        assert_eq!(&*key.kid, "k1");
        assert_eq!(key.alg, Algorithm::HS256);
        assert!(key.sign_from.is_some());
        assert!(key.verify_until.is_none());
    }

    #[test]
    fn parse_rejects_short_secret() {
        let text = file_text("").replace(SECRET_B64, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg");

        assert_eq!(
            KeyFile::parse(text.as_bytes()).unwrap_err(),
            KeyFileFault::SecretTooShort(31, "HS256", 32)
        );
    }

    #[test]
    fn parse_requires_hash_sized_secret() {
        let text = file_text("").replace("HS256", "HS384");

        let fault = KeyFile::parse(text.as_bytes()).unwrap_err();

        assert_eq!(fault, KeyFileFault::SecretTooShort(32, "HS384", 48));
    }

    #[test]
    fn parse_rejects_padded_secret() {
        let text = file_text("").replace(SECRET_B64, &format!("{SECRET_B64}="));

        assert_eq!(
            KeyFile::parse(text.as_bytes()).unwrap_err(),
            KeyFileFault::SecretEncoding
        );
    }

    #[test]
    fn parse_rejects_other_algorithms() {
        for alg in ["none", "RS256", "hs256", "ES256"] {
            let text = file_text("").replace("HS256", alg);

            let fault = KeyFile::parse(text.as_bytes()).unwrap_err();

            assert_eq!(fault, KeyFileFault::Algorithm(alg.to_owned()), "alg {alg}");
        }
    }

    #[test]
    fn parse_rejects_unsafe_kid() {
        for kid in ["", "../x", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            let text = file_text("").replace(r#""kid":"k1""#, &format!(r#""kid":"{kid}""#));

            let fault = KeyFile::parse(text.as_bytes()).unwrap_err();

            assert_eq!(fault, KeyFileFault::KeyId(kid.to_owned()), "kid {kid:?}");
        }
    }

    #[test]
    fn parse_rejects_verify_until_before_sign_from() {
        let extra = r#","sign_from":"2026-02-01T00:00:00Z","verify_until":"2026-01-01T00:00:00Z""#;

        let fault = KeyFile::parse(file_text(extra).as_bytes()).unwrap_err();

        assert_eq!(fault, KeyFileFault::Lifecycle);
    }

    #[test]
    fn parse_rejects_misspelled_member() {
        let text = file_text(r#","verify_untill":"2026-02-01T00:00:00Z""#);

        let fault = KeyFile::parse(text.as_bytes()).unwrap_err().to_string();

        assert!(fault.contains("verify_untill"), "{fault}");
    }

    #[test]
    fn parse_accepts_registered_members() {
        let text = file_text(r#","use":"sig","key_ops":["sign","verify"]"#);

        assert!(KeyFile::parse(text.as_bytes()).is_ok());
    }

    #[test]
    fn syntax_fault_omits_secret() {
        let text = file_text("").replace(r#""alg":"HS256""#, r#""alg":7"#);

        let fault = KeyFile::parse(text.as_bytes()).unwrap_err().to_string();

        assert!(!fault.contains(SECRET_B64), "{fault}");
    }

    #[test]
    fn debug_redacts_secret() {
        let file: KeyFile = serde_json::from_str(&file_text("")).expect("valid json");

        let debug = format!("{file:?}");

        assert!(!debug.contains(SECRET_B64), "{debug}");
        assert!(debug.contains("[redacted]"));
    }

    #[test]
    fn round_trip_keeps_members() {
        let text = file_text(
            r#","sign_from":"2026-01-02T00:00:00Z","verify_until":"2027-01-01T00:00:00Z""#,
        );
        let key = KeyFile::parse(text.as_bytes()).expect("valid key file");

        let again = KeyFile::parse(&KeyFile::from_key(&key).to_json()).expect("round trip");

        assert_eq!(again.kid, key.kid);
        assert_eq!(again.secret(), key.secret());
        assert_eq!(again.sign_from, key.sign_from);
        assert_eq!(again.verify_until, key.verify_until);
    }
}
