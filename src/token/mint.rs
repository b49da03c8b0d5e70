//! Minting a new session token with the signing key.
//!
//! A token is written straight into the caller's buffer (the `Set-Cookie`
//! value, on the request path) with the key's prepared HMAC, so minting
//! allocates nothing of its own. Every session id is bytes of the operating
//! system's CSPRNG (`getrandom`), read 4 KiB at a time per thread, because
//! one system call per id cost about as much as the rest of minting.

use std::cell::RefCell;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use zeroize::{Zeroize, Zeroizing};

use super::{MAX_TAG_BYTES, TokenPolicy};
use crate::keys::Key;

/// Bytes of randomness in a session id (`jti`): 128 bits.
pub const SESSION_ID_BYTES: usize = 16;

/// Claims JSON up to this many bytes is built on the stack; only an issuer
/// of more than about 150 characters needs the heap.
const STACK_CLAIMS_BYTES: usize = 256;

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

/// The reason no token could be minted. Both are server faults.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("cannot read random bytes from the operating system: {0}")]
    Random(getrandom::Error),
    #[error("cannot encode the session id")]
    Encode,
}

/// Mints a token signed by `key`: header `alg`, `typ`, `kid`; claims `iss`,
/// `jti` (128 random bits, base64url), `iat` and `exp`.
pub fn mint_token(
    key: &Key,
    policy: &TokenPolicy,
    now: DateTime<Utc>,
) -> Result<Minted, MintError> {
    let mut token = String::new();
    let exp = append_token(key, policy, now, &mut token)?;
    Ok(Minted { token, exp })
}

/// Mints a token as [`mint_token`] does and appends it to `out`; returns
/// its `exp` in seconds since the epoch. On error `out` is unchanged.
pub fn append_token(
    key: &Key,
    policy: &TokenPolicy,
    now: DateTime<Utc>,
    out: &mut String,
) -> Result<i64, MintError> {
    let mut session_id = [0u8; SESSION_ID_BYTES];
    fill_session_id(&mut session_id)?;
    let mut session_id_b64 = [0u8; (SESSION_ID_BYTES * 4).div_ceil(3)];
    let session_id_len = URL_SAFE_NO_PAD
        .encode_slice(session_id, &mut session_id_b64)
        .map_err(|_| MintError::Encode)?;

    let iat = now.timestamp();
    let exp = iat + policy.ttl_secs;
    let mut iat_text = itoa::Buffer::new();
    let mut exp_text = itoa::Buffer::new();
    let parts: [&[u8]; 9] = [
        b"{",
        policy.issuer_member().as_bytes(),
        b",\"jti\":\"",
        &session_id_b64[..session_id_len],
        b"\",\"iat\":",
        iat_text.format(iat).as_bytes(),
        b",\"exp\":",
        exp_text.format(exp).as_bytes(),
        b"}",
    ];
    let mut stack = [0u8; STACK_CLAIMS_BYTES];
    let mut heap = Vec::new();
    let claims = concat(&parts, &mut stack, &mut heap);

    let header = key.header_segment();
    out.reserve(header.len() + 1 + base64_len(claims.len()) + 1 + base64_len(key.mac().tag_len()));
    let start = out.len();
    out.push_str(header);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, out);
    let mut tag = [0u8; MAX_TAG_BYTES];
    let tag = key.mac().sign(&out.as_bytes()[start..], &mut tag);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(tag, out);

    Ok(exp)
}

/// The length of the token that [`append_token`] writes for `key`, `policy`
/// and `now`, so a caller can allocate its buffer exactly once.
pub fn minted_token_len(key: &Key, policy: &TokenPolicy, now: DateTime<Utc>) -> usize {
    let iat = now.timestamp();
    let claims = r#"{,"jti":"","iat":,"exp":}"#.len()
        + policy.issuer_member().len()
        + base64_len(SESSION_ID_BYTES)
        + itoa::Buffer::new().format(iat).len()
        + itoa::Buffer::new().format(iat + policy.ttl_secs).len();
    let tag = key.mac().tag_len();
    key.header_segment().len() + 1 + base64_len(claims) + 1 + base64_len(tag)
}

/// Length of unpadded base64 of `bytes` bytes.
fn base64_len(bytes: usize) -> usize {
    (bytes * 4).div_ceil(3)
}

/// Joins `parts` in `stack` when they fit, else in `heap`.
fn concat<'b>(parts: &[&[u8]], stack: &'b mut [u8], heap: &'b mut Vec<u8>) -> &'b [u8] {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    if len > stack.len() {
        *heap = parts.concat();
        return heap;
    }
    let mut at = 0;
    for part in parts {
        stack[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    &stack[..len]
}

/// Fills `out` from the operating system's CSPRNG, through this thread's
/// pool of its bytes.
fn fill_session_id(out: &mut [u8; SESSION_ID_BYTES]) -> Result<(), MintError> {
    thread_local! {
        static POOL: RefCell<RandomPool> = RefCell::new(RandomPool::new());
    }
    POOL.with_borrow_mut(|pool| pool.take(out))
}

/// Bytes read from the OS CSPRNG in one system call: 256 session ids.
const RANDOM_POOL_BYTES: usize = 4096;

/// Buffer of OS CSPRNG bytes not yet handed out. Each byte is handed out
/// once and zeroed then, so the pool keeps no session id it has issued.
struct RandomPool {
    bytes: Zeroizing<[u8; RANDOM_POOL_BYTES]>,
    /// Start of the bytes not yet handed out.
    next: usize,
}

impl RandomPool {
    /// Creates an empty pool; the first take fills it.
    fn new() -> Self {
        RandomPool {
            bytes: Zeroizing::new([0; RANDOM_POOL_BYTES]),
            next: RANDOM_POOL_BYTES,
        }
    }

    /// Copies the next `out.len()` bytes into `out`, reading a new batch
    /// from the OS first when too few are left.
    fn take(&mut self, out: &mut [u8]) -> Result<(), MintError> {
        debug_assert!(out.len() <= RANDOM_POOL_BYTES);
        if RANDOM_POOL_BYTES - self.next < out.len() {
            getrandom::fill(&mut self.bytes[..]).map_err(MintError::Random)?;
            self.next = 0;
        }
        let issued = &mut self.bytes[self.next..self.next + out.len()];
        out.copy_from_slice(issued);
        issued.zeroize();
        self.next += out.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

    use super::*;

    #[test]
    fn pool_ids_unique_across_refills() {
        let mut pool = RandomPool::new();
        let takes = 2 * RANDOM_POOL_BYTES / SESSION_ID_BYTES + 3;
        let mut ids = HashSet::new();

        for _ in 0..takes {
            let mut id = [0; SESSION_ID_BYTES];
            pool.take(&mut id).expect("OS random");
            ids.insert(id);
        }

        assert_eq!(ids.len(), takes);
    }

    #[test]
    fn pool_zeroes_bytes_it_hands_out() {
        let mut pool = RandomPool::new();
        let mut id = [0; SESSION_ID_BYTES];

        pool.take(&mut id).expect("OS random");
        pool.take(&mut id).expect("OS random");

        assert!(pool.bytes[..2 * SESSION_ID_BYTES].iter().all(|&b| b == 0));
        assert!(pool.bytes[2 * SESSION_ID_BYTES..].iter().any(|&b| b != 0));
        assert_eq!(pool.next, 2 * SESSION_ID_BYTES);
    }
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
    fn minted_length_is_predicted() {
        let long_issuer = TokenPolicy::new("i".repeat(300), 3600, 86_400, 30, 4096);
        for (alg, policy) in [
            (Algorithm::HS256, policy()),
            (Algorithm::HS384, policy()),
            (Algorithm::HS512, long_issuer),
        ] {
            let k = key("a-kid", alg, 3);
            for now in [at(0), at(9), at(NOW)] {
                let minted = mint_token(&k, &policy, now).expect("mints");

                assert_eq!(
                    minted.token.len(),
                    minted_token_len(&k, &policy, now),
                    "{alg:?} at {now}"
                );
            }
        }
    }

    #[test]
    fn append_keeps_existing_text() {
        let k = key("k1", Algorithm::HS256, 1);
        let mut out = String::from("prefix=");

        append_token(&k, &policy(), at(NOW), &mut out).expect("mints");

        let token = out.strip_prefix("prefix=").expect("prefix kept");
        let verified = verify_token(token, &ring(), &policy(), at(NOW)).expect("valid");
        assert_eq!(&*verified.kid, "k1");
    }

    #[test]
    fn long_issuer_mints_valid_token() {
        let issuer = "i".repeat(300);
        let policy = TokenPolicy::new(issuer.clone(), 3600, 86_400, 30, 4096);
        let k = key("k1", Algorithm::HS256, 1);

        let minted = mint_token(&k, &policy, at(NOW)).expect("mints");

        let verified = verify_token(&minted.token, &ring(), &policy, at(NOW));
        assert!(verified.is_ok(), "{verified:?}");
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
