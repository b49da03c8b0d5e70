//! The key ring: an immutable set of keys, looked up by `kid` to verify and
//! by time to sign. A reload builds a new ring and swaps it in whole.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{Key, KeyState, hex};

/// An immutable set of keys. Lookups cost the same whatever its size: a hash
/// map by `kid` (or by the exact header segment) to verify, a binary search
/// over `sign_from` to sign.
#[derive(Debug)]
pub struct KeyRing {
    by_kid: HashMap<Arc<str>, Arc<Key>>,
    /// Each key by the base64url JOSE header it mints with.
    by_header_segment: HashMap<Box<str>, Arc<Key>>,
    /// Keys that have a `sign_from`, sorted by (`sign_from`, `kid`).
    schedule: Vec<Arc<Key>>,
    fingerprint: String,
    /// Number unique to this ring within the process.
    generation: u64,
}

/// The result of looking up a token's `kid`.
#[derive(Debug)]
pub enum Lookup<'a> {
    Found(&'a Arc<Key>),
    Unknown,
    Retired,
}

/// Two key files with one `kid`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("duplicate kid {0:?}")]
pub struct DuplicateKid(pub String);

impl KeyRing {
    /// Builds a ring; every `kid` must be unique.
    pub fn new(keys: Vec<Key>) -> Result<Self, DuplicateKid> {
        let mut by_kid = HashMap::with_capacity(keys.len());
        for key in keys {
            let key = Arc::new(key);
            if by_kid.insert(key.kid.clone(), key.clone()).is_some() {
                return Err(DuplicateKid(key.kid.to_string()));
            }
        }

        let mut schedule: Vec<Arc<Key>> = by_kid
            .values()
            .filter(|k| k.sign_from.is_some())
            .cloned()
            .collect();
        schedule.sort_by(|a, b| (a.sign_from, &a.kid).cmp(&(b.sign_from, &b.kid)));

        let by_header_segment = by_kid
            .values()
            .map(|key| (Box::from(key.header_segment()), key.clone()))
            .collect();
        let fingerprint = set_fingerprint(&by_kid);
        static GENERATIONS: AtomicU64 = AtomicU64::new(0);
        Ok(KeyRing {
            by_kid,
            by_header_segment,
            schedule,
            fingerprint,
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Returns a number no other ring built by this process has, so a
    /// result computed with one ring can be distinguished from another's.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Finds the key that verifies tokens naming `kid` at `now`.
    pub fn verifying_key(&self, kid: &str, now: DateTime<Utc>) -> Lookup<'_> {
        match self.by_kid.get(kid) {
            Some(key) if key.verifies_at(now) => Lookup::Found(key),
            Some(_) => Lookup::Retired,
            None => Lookup::Unknown,
        }
    }

    /// Finds the key that verifies tokens whose header segment is exactly
    /// `header_b64`, the one that key mints with; `None` for any other
    /// spelling. Such a header needs no parsing: its `alg` is the key's,
    /// its `typ` is "JWT" and it has no `crit`.
    pub fn verifying_key_by_header(
        &self,
        header_b64: &str,
        now: DateTime<Utc>,
    ) -> Option<Lookup<'_>> {
        // Unless a successor waits for its `sign_from`, tokens come from the
        // newest scheduled key, so one comparison usually finds the key.
        let key = match self.schedule.last() {
            Some(newest) if newest.header_segment() == header_b64 => newest,
            _ => self.by_header_segment.get(header_b64)?,
        };
        Some(if key.verifies_at(now) {
            Lookup::Found(key)
        } else {
            Lookup::Retired
        })
    }

    /// Returns the key that mints at `now`: of the keys that may sign, the one with
    /// the latest `sign_from`, ties broken by the greater `kid`, so every
    /// replica with the same files picks the same key at the same instant.
    pub fn signing_key(&self, now: DateTime<Utc>) -> Option<&Arc<Key>> {
        let started = self
            .schedule
            .partition_point(|k| k.sign_from.is_some_and(|f| f <= now));
        self.schedule[..started]
            .iter()
            .rev()
            .find(|k| k.verifies_at(now))
    }

    /// Returns the lifecycle state of `key` at `now` within this ring.
    pub fn state_of(&self, key: &Key, now: DateTime<Utc>) -> KeyState {
        if !key.verifies_at(now) {
            KeyState::Retired
        } else if self.signing_key(now).is_some_and(|s| s.kid == key.kid) {
            KeyState::Signing
        } else if key.sign_from.is_some_and(|from| from > now) {
            KeyState::Scheduled
        } else {
            KeyState::Verifying
        }
    }

    pub fn get(&self, kid: &str) -> Option<&Arc<Key>> {
        self.by_kid.get(kid)
    }

    /// Returns all keys, sorted by `kid`.
    pub fn keys(&self) -> Vec<&Arc<Key>> {
        let mut keys: Vec<_> = self.by_kid.values().collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        keys
    }

    pub fn len(&self) -> usize {
        self.by_kid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }

    /// Returns a digest of every key's identity and lifecycle: replicas that loaded
    /// the same files report the same value. It reveals nothing about secrets.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

fn set_fingerprint(by_kid: &HashMap<Arc<str>, Arc<Key>>) -> String {
    let mut keys: Vec<_> = by_kid.values().collect();
    keys.sort_by(|a, b| a.kid.cmp(&b.kid));
    let mut hasher = Sha256::new();
    for key in keys {
        let line = format!(
            "{}\0{}\0{:?}\0{:?}\n",
            key.kid,
            key.fingerprint,
            key.sign_from.map(|t| t.timestamp()),
            key.verify_until.map(|t| t.timestamp())
        );
        hasher.update(line.as_bytes());
    }
    hex(&hasher.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::Algorithm;
    use zeroize::Zeroizing;

    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).expect("valid timestamp")
    }

    fn key(kid: &str, sign_from: Option<i64>, verify_until: Option<i64>) -> Key {
        Key::new(
            kid.to_owned(),
            Algorithm::HS256,
            Zeroizing::new(vec![1; 32]),
            at(0),
            sign_from.map(at),
            verify_until.map(at),
        )
    }

    #[test]
    fn signing_key_follows_schedule() {
        let ring = KeyRing::new(vec![
            key("old", Some(100), None),
            key("new", Some(200), None),
            key("spare", None, None),
        ])
        .expect("unique kids");

        assert!(ring.signing_key(at(99)).is_none(), "before any sign_from");
        assert_eq!(&*ring.signing_key(at(150)).expect("old signs").kid, "old");
        assert_eq!(&*ring.signing_key(at(200)).expect("new signs").kid, "new");
    }

    #[test]
    fn retired_signer_falls_back() {
        let ring = KeyRing::new(vec![
            key("old", Some(100), None),
            key("new", Some(200), Some(300)),
        ])
        .expect("unique kids");

        let signer = ring.signing_key(at(300)).expect("old still signs");

        assert_eq!(&*signer.kid, "old");
    }

    #[test]
    fn equal_sign_from_picks_greater_kid() {
        let ring = KeyRing::new(vec![key("b", Some(100), None), key("a", Some(100), None)])
            .expect("unique kids");

        assert_eq!(&*ring.signing_key(at(100)).expect("a key signs").kid, "b");
    }

    #[test]
    fn duplicate_kid_rejected() {
        let result = KeyRing::new(vec![key("a", None, None), key("a", None, None)]);

        assert_eq!(result.unwrap_err(), DuplicateKid("a".to_owned()));
    }

    #[test]
    fn lookup_reports_retired_and_unknown() {
        let ring = KeyRing::new(vec![key("a", Some(0), Some(100))]).expect("unique kids");

        assert!(matches!(ring.verifying_key("a", at(99)), Lookup::Found(_)));
        assert!(matches!(ring.verifying_key("a", at(100)), Lookup::Retired));
        assert!(matches!(ring.verifying_key("b", at(99)), Lookup::Unknown));
    }

    #[test]
    fn states_follow_times() {
        let ring = KeyRing::new(vec![
            key("signing", Some(0), None),
            key("scheduled", None, None).with_lifecycle(Some(at(500)), None),
            key("spare", None, None),
            key("gone", Some(0), Some(10)),
        ])
        .expect("unique kids");
        let state = |kid: &str| ring.state_of(ring.get(kid).expect("present"), at(100));

        assert_eq!(state("signing"), KeyState::Signing);
        assert_eq!(state("scheduled"), KeyState::Scheduled);
        assert_eq!(state("spare"), KeyState::Verifying);
        assert_eq!(state("gone"), KeyState::Retired);
    }

    #[test]
    fn header_lookup_matches_kid_lookup() {
        let ring = KeyRing::new(vec![key("a", Some(0), Some(100)), key("b", None, None)])
            .expect("unique kids");
        let header_a = ring.get("a").expect("present").header_segment().to_owned();

        assert!(matches!(
            ring.verifying_key_by_header(&header_a, at(99)),
            Some(Lookup::Found(k)) if &*k.kid == "a"
        ));
        assert!(matches!(
            ring.verifying_key_by_header(&header_a, at(100)),
            Some(Lookup::Retired)
        ));
        assert!(ring.verifying_key_by_header("eyJ9", at(0)).is_none());
    }

    #[test]
    fn fingerprint_tracks_lifecycle() {
        let a = KeyRing::new(vec![key("a", Some(0), None)]).expect("unique kids");
        let b = KeyRing::new(vec![key("a", Some(0), Some(99))]).expect("unique kids");
        let c = KeyRing::new(vec![key("a", Some(0), None)]).expect("unique kids");

        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), c.fingerprint());
    }
}
