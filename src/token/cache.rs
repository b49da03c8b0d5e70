//! A per-thread cache of tokens that passed verification. A shopper's
//! browser presents the same token on every page, so a token seen again is
//! checked by one comparison of its bytes instead of base64, HMAC and JSON.
//!
//! A hit returns the result full verification would. The table belongs to
//! one key ring and one policy (another of either starts it over), and
//! every check that depends on the time (`exp`, `iat`, `nbf`, the key's
//! `verify_until`) runs again on each hit. Only tokens that verified are stored, so input that fails never
//! reaches the cache and a hit needs the exact bytes of a valid token.

use std::cell::RefCell;

use chrono::{DateTime, Utc};

use super::TokenPolicy;
use super::verify::{Rejection, Validity, Verified, verify_with_validity};
use crate::keys::KeyRing;

/// Entries per thread. The table is direct-mapped, so a new token replaces
/// the one in its slot.
const SLOTS: usize = 1024;

/// Longest token stored, so a full table takes at most about 1 MiB.
const MAX_CACHED_TOKEN_BYTES: usize = 1024;

/// Verifies `token` as [`super::verify_token`] does, through this thread's
/// cache. The token is taken as bytes, as a request carries it: a token
/// found in the cache needs no further test, and any other is rejected as
/// malformed unless it is UTF-8.
#[allow(unsafe_code)]
pub fn verify_cached<'t>(
    token: &'t [u8],
    ring: &KeyRing,
    policy: &TokenPolicy,
    now: DateTime<Utc>,
) -> Result<ValidToken<'t>, Rejection> {
    thread_local! {
        static CACHE: RefCell<VerifyCache> = RefCell::new(VerifyCache::new());
    }
    let verified = CACHE.with_borrow_mut(|cache| cache.verify(token, ring, policy, now))?;
    // SAFETY: the bytes passed verification, or equal those of a token
    // that did. Verification admits only base64url bytes and dots, which
    // are ASCII, and ASCII is valid UTF-8.
    let text = unsafe { std::str::from_utf8_unchecked(token) };
    Ok(ValidToken { text, verified })
}

/// A token that passed verification, with what verification found. Only
/// [`verify_cached`] creates one.
///
/// Verification rejects any byte other than the base64url alphabet and the
/// dot, and a cache hit needs the exact bytes of a token that passed. So
/// the text is visible ASCII. The `unsafe` call that wraps the session
/// cookie as a header value relies on this without scanning it again.
pub struct ValidToken<'t> {
    text: &'t str,
    pub verified: Verified,
}

impl<'t> ValidToken<'t> {
    /// Returns the token as presented.
    pub fn text(&self) -> &'t str {
        self.text
    }
}

impl std::fmt::Debug for ValidToken<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidToken")
            .field("text", &"[redacted]")
            .field("verified", &self.verified)
            .finish()
    }
}

/// One token that verified with the ring of `generation`.
struct Entry {
    token: Box<[u8]>,
    generation: u64,
    verified: Verified,
    validity: Validity,
}

/// The table of one thread.
pub(super) struct VerifyCache {
    slots: Box<[Option<Entry>]>,
    /// The policy every entry passed; a call with another empties the table.
    policy: Option<TokenPolicy>,
    /// Random bits mixed into the slot index, so which tokens share a
    /// slot differs from process to process.
    seed: u64,
}

impl VerifyCache {
    pub(super) fn new() -> Self {
        let mut seed = [0; 8];
        // Without OS randomness the index is still correct, only guessable.
        let _ = getrandom::fill(&mut seed);
        VerifyCache {
            slots: (0..SLOTS).map(|_| None).collect(),
            policy: None,
            seed: u64::from_le_bytes(seed),
        }
    }

    /// Returns the stored result for `token` while it is still valid, or
    /// else verifies the token in full and stores it when it is valid.
    pub(super) fn verify(
        &mut self,
        token: &[u8],
        ring: &KeyRing,
        policy: &TokenPolicy,
        now: DateTime<Utc>,
    ) -> Result<Verified, Rejection> {
        let Some(slot) = self.slot_of(token) else {
            return super::verify_token(token_text(token, policy)?, ring, policy, now);
        };
        if self.policy.as_ref() != Some(policy) {
            self.slots.iter_mut().for_each(|entry| *entry = None);
            self.policy = Some(policy.clone());
        }

        if let Some(entry) = &self.slots[slot]
            && entry.generation == ring.generation()
            && same_bytes(&entry.token, token)
            && entry.validity.holds_at(policy, now)
        {
            return Ok(entry.verified.clone());
        }

        let (verified, validity) =
            verify_with_validity(token_text(token, policy)?, ring, policy, now)?;
        // A buffer of the same length is reused rather than allocated again.
        let stored = match self.slots[slot].take() {
            Some(Entry { token: mut old, .. }) if old.len() == token.len() => {
                old.copy_from_slice(token);
                old
            }
            _ => Box::from(token),
        };
        self.slots[slot] = Some(Entry {
            token: stored,
            generation: ring.generation(),
            verified: verified.clone(),
            validity,
        });
        Ok(verified)
    }

    /// Returns the slot of `token`, or `None` for a token too short or too
    /// long to store. The last 8 bytes are part of the signature, so they
    /// differ between tokens.
    fn slot_of(&self, token: &[u8]) -> Option<usize> {
        if token.len() > MAX_CACHED_TOKEN_BYTES {
            return None;
        }
        let tail: [u8; 8] = token.last_chunk::<8>().copied()?;
        let mixed = (u64::from_le_bytes(tail) ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Some((mixed >> (64 - SLOTS.trailing_zeros())) as usize)
    }
}

/// Returns `token` as text for full verification. A token longer than the
/// policy allows is rejected as oversize before its bytes are read, as
/// verification does, and one that is not UTF-8 as malformed.
fn token_text<'t>(token: &'t [u8], policy: &TokenPolicy) -> Result<&'t str, Rejection> {
    if token.len() > policy.max_token_bytes {
        return Err(Rejection::Oversize);
    }
    std::str::from_utf8(token).map_err(|_| Rejection::Malformed)
}

/// Compares two tokens in time that depends only on their lengths. Every
/// byte is read, and no branch depends on the data.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use jsonwebtoken::Algorithm;

    use super::*;
    use crate::token::mint_token;
    use crate::token::test_support::{NOW, at, key, policy, ring};

    fn minted(ring: &KeyRing) -> String {
        let signer = ring.signing_key(at(NOW)).expect("a signing key");
        mint_token(signer, &policy(), at(NOW)).expect("mints").token
    }

    #[test]
    fn hit_matches_full_verification() {
        let ring = ring();
        let token = minted(&ring);
        let mut cache = VerifyCache::new();

        let first = cache
            .verify(token.as_bytes(), &ring, &policy(), at(NOW))
            .expect("valid");
        let second = cache
            .verify(token.as_bytes(), &ring, &policy(), at(NOW))
            .expect("valid");

        assert_eq!(first.kid, second.kid);
        assert_eq!(first.exp, second.exp);
        assert_eq!(cache.slots.iter().flatten().count(), 1);
    }

    #[test]
    fn valid_token_text_and_debug() {
        let ring = ring();
        let token = minted(&ring);

        let valid = verify_cached(token.as_bytes(), &ring, &policy(), at(NOW)).expect("valid");
        let debug = format!("{valid:?}");

        assert_eq!(valid.text(), token);
        assert!(!debug.contains(&token), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
    }

    #[test]
    fn stored_token_expires() {
        let ring = ring();
        let token = minted(&ring);
        let mut cache = VerifyCache::new();
        let later = at(NOW) + Duration::seconds(policy().ttl_secs + policy().leeway_secs);

        cache
            .verify(token.as_bytes(), &ring, &policy(), at(NOW))
            .expect("valid");
        let result = cache.verify(token.as_bytes(), &ring, &policy(), later);

        assert_eq!(result.unwrap_err(), Rejection::Expired);
    }

    #[test]
    fn stored_token_clock_steps_back() {
        let ring = ring();
        let token = minted(&ring);
        let mut cache = VerifyCache::new();
        let earlier = at(NOW) - Duration::seconds(policy().leeway_secs + 1);

        cache
            .verify(token.as_bytes(), &ring, &policy(), at(NOW))
            .expect("valid");
        let result = cache.verify(token.as_bytes(), &ring, &policy(), earlier);

        assert_eq!(result.unwrap_err(), Rejection::NotYetValid);
    }

    #[test]
    fn stored_token_rejected_after_key_retires() {
        let signer = key("k1", Algorithm::HS256, 1);
        let retiring = signer.with_lifecycle(Some(at(0)), Some(at(NOW + 10)));
        let ring = KeyRing::new(vec![retiring]).expect("unique kids");
        let token = minted(&ring);
        let mut cache = VerifyCache::new();

        cache
            .verify(token.as_bytes(), &ring, &policy(), at(NOW))
            .expect("valid");
        let result = cache.verify(token.as_bytes(), &ring, &policy(), at(NOW + 10));

        assert_eq!(result.unwrap_err(), Rejection::RetiredKid);
    }

    #[test]
    fn stored_token_rechecked_with_new_ring() {
        let old_ring = KeyRing::new(vec![key("k1", Algorithm::HS256, 1)]).expect("unique kids");
        let token = minted(&old_ring);
        let other_secret = KeyRing::new(vec![key("k1", Algorithm::HS256, 7)]).expect("unique kids");
        let mut cache = VerifyCache::new();

        cache
            .verify(token.as_bytes(), &old_ring, &policy(), at(NOW))
            .expect("valid");
        let result = cache.verify(token.as_bytes(), &other_secret, &policy(), at(NOW));

        assert_eq!(result.unwrap_err(), Rejection::BadSignature);
    }

    #[test]
    fn same_slot_other_token_verified_in_full() {
        let ring = ring();
        let token = minted(&ring);
        let mut cache = VerifyCache::new();
        // Same last 8 bytes, so the same slot, but another claims segment.
        let (header, rest) = token.split_once('.').expect("three segments");
        let (_, signature) = rest.split_once('.').expect("three segments");
        let forged = format!("{header}.eyJmb3JnZWQiOnRydWV9.{signature}");

        cache
            .verify(token.as_bytes(), &ring, &policy(), at(NOW))
            .expect("valid");
        let result = cache.verify(forged.as_bytes(), &ring, &policy(), at(NOW));

        assert_eq!(
            cache.slot_of(forged.as_bytes()),
            cache.slot_of(token.as_bytes())
        );
        assert_eq!(result.unwrap_err(), Rejection::BadSignature);
    }

    #[test]
    fn stored_token_rechecked_with_new_policy() {
        let ring = ring();
        let token = minted(&ring);
        let mut cache = VerifyCache::new();
        let mut other_issuer = policy();
        other_issuer.issuer = "other".into();
        let mut short_tokens = policy();
        short_tokens.max_token_bytes = 50;
        let mut short_lifetime = policy();
        short_lifetime.max_lifetime_secs = 60;

        cache
            .verify(token.as_bytes(), &ring, &policy(), at(NOW))
            .expect("valid");
        let issuer = cache.verify(token.as_bytes(), &ring, &other_issuer, at(NOW));
        cache
            .verify(token.as_bytes(), &ring, &policy(), at(NOW))
            .expect("valid");
        let length = cache.verify(token.as_bytes(), &ring, &short_tokens, at(NOW));
        cache
            .verify(token.as_bytes(), &ring, &policy(), at(NOW))
            .expect("valid");
        let lifetime = cache.verify(token.as_bytes(), &ring, &short_lifetime, at(NOW));

        assert_eq!(issuer.unwrap_err(), Rejection::WrongIssuer);
        assert_eq!(length.unwrap_err(), Rejection::Oversize);
        assert_eq!(lifetime.unwrap_err(), Rejection::LifetimeTooLong);
    }

    #[test]
    fn invalid_token_not_stored() {
        let ring = ring();
        let mut cache = VerifyCache::new();

        let result = cache.verify(b"a.b.cdefghijk", &ring, &policy(), at(NOW));

        assert!(result.is_err());
        assert_eq!(cache.slots.iter().flatten().count(), 0);
    }

    #[test]
    fn non_utf8_token_malformed() {
        let ring = ring();
        let mut cache = VerifyCache::new();
        let oversize = vec![0xff; policy().max_token_bytes + 1];

        let short = cache.verify(
            b"\xff.\xfe.\xfd\xfc\xfb\xfa\xf9\xf8",
            &ring,
            &policy(),
            at(NOW),
        );
        let long = cache.verify(&oversize, &ring, &policy(), at(NOW));

        assert_eq!(short.unwrap_err(), Rejection::Malformed);
        assert_eq!(long.unwrap_err(), Rejection::Oversize);
        assert_eq!(cache.slots.iter().flatten().count(), 0);
    }

    #[test]
    fn same_bytes_compares_whole_slices() {
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"ab"));
        assert!(same_bytes(b"", b""));
    }
}
