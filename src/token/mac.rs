//! HMAC-SHA-2 (RFC 2104) keyed once per key. Keying hashes the padded
//! secret, two compression-function calls that every token would otherwise
//! repeat, so a key keeps the keyed state and each token works on a copy.
//!
//! The primitives are the `hmac` and `sha2` crates that jsonwebtoken's
//! `rust_crypto` backend uses; the tests check both agree byte for byte.

use hmac::{Hmac, Mac};
use jsonwebtoken::Algorithm;
use sha2::{Sha256, Sha384, Sha512};

/// Length of the longest tag, HS512's, in bytes.
pub const MAX_TAG_BYTES: usize = 64;

/// An HMAC state keyed with one secret, for one JWS algorithm. `Debug`
/// prints only the algorithm: the state is as good as the secret for
/// forging tokens.
// NOTE: the hmac crate does not zeroize its state on drop, so a copy of
// the keyed state stays in freed memory until it is overwritten.
#[derive(Clone)]
pub struct KeyedMac(State);

#[derive(Clone)]
enum State {
    Hs256(Hmac<Sha256>),
    Hs384(Hmac<Sha384>),
    Hs512(Hmac<Sha512>),
}

impl KeyedMac {
    /// Keys the HMAC of `alg` with `secret`. Any algorithm other than HS384
    /// and HS512 gets HS256, as `jwk::algorithm_name` reads it.
    pub fn new(alg: Algorithm, secret: &[u8]) -> Self {
        const ANY_LENGTH: &str = "HMAC accepts keys of any length";
        let state = match alg {
            Algorithm::HS384 => State::Hs384(Hmac::new_from_slice(secret).expect(ANY_LENGTH)),
            Algorithm::HS512 => State::Hs512(Hmac::new_from_slice(secret).expect(ANY_LENGTH)),
            _ => State::Hs256(Hmac::new_from_slice(secret).expect(ANY_LENGTH)),
        };
        KeyedMac(state)
    }

    /// Length of the tag in bytes: 32, 48 or 64.
    pub fn tag_len(&self) -> usize {
        match self.0 {
            State::Hs256(_) => 32,
            State::Hs384(_) => 48,
            State::Hs512(_) => 64,
        }
    }

    /// Computes the tag of `message` into `out`; returns the written part.
    pub fn sign<'o>(&self, message: &[u8], out: &'o mut [u8; MAX_TAG_BYTES]) -> &'o [u8] {
        fn tag<M: Mac + Clone>(keyed: &M, message: &[u8], out: &mut [u8]) -> usize {
            let mut mac = keyed.clone();
            mac.update(message);
            let bytes = mac.finalize().into_bytes();
            out[..bytes.len()].copy_from_slice(&bytes);
            bytes.len()
        }
        let len = match &self.0 {
            State::Hs256(keyed) => tag(keyed, message, out),
            State::Hs384(keyed) => tag(keyed, message, out),
            State::Hs512(keyed) => tag(keyed, message, out),
        };
        &out[..len]
    }

    /// Checks `tag` against the tag of `message` in constant time. A tag of
    /// the wrong length never matches.
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        fn check<M: Mac + Clone>(keyed: &M, message: &[u8], tag: &[u8]) -> bool {
            let mut mac = keyed.clone();
            mac.update(message);
            mac.verify_slice(tag).is_ok()
        }
        match &self.0 {
            State::Hs256(keyed) => check(keyed, message, tag),
            State::Hs384(keyed) => check(keyed, message, tag),
            State::Hs512(keyed) => check(keyed, message, tag),
        }
    }
}

impl std::fmt::Debug for KeyedMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let alg = match self.0 {
            State::Hs256(_) => "HS256",
            State::Hs384(_) => "HS384",
            State::Hs512(_) => "HS512",
        };
        f.debug_tuple("KeyedMac").field(&alg).finish()
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{DecodingKey, EncodingKey};

    use super::*;

    const ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

    #[test]
    fn tags_match_jsonwebtoken() {
        let secret = [5u8; 64];
        for alg in ALGORITHMS {
            for message in [&b""[..], b"a.b", &[0x61; 300]] {
                let mut out = [0; MAX_TAG_BYTES];

                let ours = KeyedMac::new(alg, &secret).sign(message, &mut out);

                let theirs =
                    jsonwebtoken::crypto::sign(message, &EncodingKey::from_secret(&secret), alg)
                        .expect("signs");
                assert_eq!(URL_SAFE_NO_PAD.encode(ours), theirs, "{alg:?}");
            }
        }
    }

    #[test]
    fn verify_accepts_library_tags() {
        let secret = [9u8; 48];
        for alg in ALGORITHMS {
            let theirs =
                jsonwebtoken::crypto::sign(b"x.y", &EncodingKey::from_secret(&secret), alg)
                    .expect("signs");
            let tag = URL_SAFE_NO_PAD.decode(&theirs).expect("base64url");

            assert!(KeyedMac::new(alg, &secret).verify(b"x.y", &tag), "{alg:?}");
            let library = DecodingKey::from_secret(&secret);
            assert!(
                jsonwebtoken::crypto::verify(&theirs, b"x.y", &library, alg).expect("decodes"),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn verify_rejects_altered_tags() {
        let keyed = KeyedMac::new(Algorithm::HS256, &[1; 32]);
        let mut out = [0; MAX_TAG_BYTES];
        let tag = keyed.sign(b"m", &mut out).to_vec();
        let mut flipped = tag.clone();
        flipped[31] ^= 1;

        assert!(keyed.verify(b"m", &tag), "own tag");
        assert!(!keyed.verify(b"n", &tag), "other message");
        assert!(!keyed.verify(b"m", &flipped), "flipped bit");
        assert!(!keyed.verify(b"m", &tag[..31]), "truncated tag");
        assert!(!keyed.verify(b"m", &[]), "empty tag");
    }

    #[test]
    fn debug_shows_only_algorithm() {
        let debug = format!("{:?}", KeyedMac::new(Algorithm::HS384, &[7; 48]));

        assert_eq!(debug, r#"KeyedMac("HS384")"#);
    }
}
