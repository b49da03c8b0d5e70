//! Minting a new session token with the signing key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use super::TokenPolicy;
use crate::keys::Key;

/// Bytes of randomness in a session id (`jti`): 128 bits.
pub const SESSION_ID_BYTES: usize = 16;

/// A freshly minted token.
pub struct Minted {
    pub token: String,
    /// `exp` in seconds since the epoch.
    pub exp: i64,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("token", &"[redacted]")
            .field("exp", &self.exp)
            .finish()
    }
}

/// Why no token could be minted. Both are server faults.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("cannot read random bytes from the operating system: {0}")]
    Random(getrandom::Error),
    #[error("cannot sign the token")]
    Sign,
}

/// Mints a token signed by `key`: header `alg`, `typ`, `kid`; claims `iss`,
/// `jti` (128 random bits from the OS CSPRNG, base64url), `iat` and `exp`.
pub fn mint_token(
    key: &Key,
    policy: &TokenPolicy,
    now: DateTime<Utc>,
) -> Result<Minted, MintError> {
    let mut session_id = [0u8; SESSION_ID_BYTES];
    getrandom::fill(&mut session_id).map_err(MintError::Random)?;

    let iat = now.timestamp();
    let exp = iat + policy.ttl_secs;
    let claims = format!(
        "{{{},\"jti\":\"{}\",\"iat\":{iat},\"exp\":{exp}}}",
        policy.issuer_member(),
        URL_SAFE_NO_PAD.encode(session_id),
    );

    let header = key.header_segment();
    let mut token = String::with_capacity(header.len() + claims.len() * 4 / 3 + 100);
    token.push_str(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims.as_bytes(), &mut token);
    let signature = jsonwebtoken::crypto::sign(token.as_bytes(), key.encoding_key(), key.alg)
        .map_err(|_| MintError::Sign)?;
    token.push('.');
    token.push_str(&signature);

    Ok(Minted { token, exp })
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

    use super::*;
    use crate::token::test_support::{NOW, at, key, policy, ring};
    use crate::token::verify_token;

    #[test]
    fn minted_token_verifies() {
        let ring = ring();
        let signer = ring.signing_key(at(NOW)).expect("a key signs");

        let minted = mint_token(signer, &policy(), at(NOW)).expect("mints");

        let verified = verify_token(&minted.token, &ring, &policy(), at(NOW)).expect("valid");
        assert_eq!(verified.kid, signer.kid);
        assert_eq!(minted.exp, NOW + 3600);
    }

    #[test]
    fn minted_token_has_contract_members() {
        let k = key("k1", Algorithm::HS256, 1);

        let minted = mint_token(&k, &policy(), at(NOW)).expect("mints");

        let header = decode_header(&minted.token).expect("header");
        assert_eq!(header.alg, Algorithm::HS256);
        assert_eq!(header.kid.as_deref(), Some("k1"));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.set_issuer(&["sessiond"]);
        let claims = decode::<serde_json::Value>(
            &minted.token,
            &DecodingKey::from_secret(k.secret()),
            &validation,
        )
        .expect("jsonwebtoken accepts it")
        .claims;
        assert_eq!(claims["iss"], "sessiond");
        assert_eq!(claims["iat"], NOW);
        assert_eq!(claims["exp"], NOW + 3600);
        let jti = claims["jti"].as_str().expect("jti is a string");
        assert_eq!(
            URL_SAFE_NO_PAD.decode(jti).expect("base64url").len(),
            SESSION_ID_BYTES
        );
    }

    #[test]
    fn session_ids_differ() {
        let k = key("k1", Algorithm::HS256, 1);

        let a = mint_token(&k, &policy(), at(NOW)).expect("mints");
        let b = mint_token(&k, &policy(), at(NOW)).expect("mints");

        assert_ne!(a.token, b.token);
    }

    #[test]
    fn debug_redacts_token() {
        let k = key("k1", Algorithm::HS256, 1);
        let minted = mint_token(&k, &policy(), at(NOW)).expect("mints");

        let debug = format!("{minted:?}");

        assert!(!debug.contains(&minted.token[..20]), "{debug}");
    }
}
