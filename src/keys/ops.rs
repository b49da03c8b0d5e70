//! Key operations on a keys folder: list, create, activate, rotate, retire,
//! prune. The admin API and the `keys` command run this same code, under an
//! exclusive lock on the folder so that concurrent admins lose no key.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::Algorithm;
use serde::Serialize;

use super::jwk::{algorithm_name, rfc3339};
use super::store::{self, StoreError};
use super::{Key, KeyRing, KeyState};

/// Name of the lock file inside the keys folder; dot files are not key files.
const LOCK_FILE: &str = ".sessiond.lock";

/// The token lifetimes an operation uses to decide whether a
/// key's tokens may still be valid.
#[derive(Debug, Clone, Copy)]
pub struct RetirePolicy {
    pub max_token_lifetime_secs: i64,
    pub leeway_secs: i64,
}

/// A key as listed: never the secret.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: &'static str,
    pub state: KeyState,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_until: Option<String>,
    pub fingerprint: String,
}

impl KeyInfo {
    pub fn new(key: &Key, ring: &KeyRing, now: DateTime<Utc>) -> Self {
        KeyInfo {
            kid: key.kid.to_string(),
            alg: algorithm_name(key.alg),
            state: ring.state_of(key, now),
            created_at: rfc3339(key.created_at),
            sign_from: key.sign_from.map(rfc3339),
            verify_until: key.verify_until.map(rfc3339),
            fingerprint: key.fingerprint.clone(),
        }
    }
}

/// The reason an operation was rejected or failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("no key with kid {0:?}")]
    NotFound(String),
    #[error("a key with kid {0:?} already exists")]
    Exists(String),
    #[error("key {0:?} is the only key that can sign; activate another key first, or force")]
    OnlySigningKey(String),
    #[error("tokens signed by key {kid:?} may be valid until {until}; retire it then, or force")]
    TokensMayBeValid { kid: String, until: String },
    #[error("key {0:?} is retired at that time; a retired key cannot sign")]
    Retired(String),
    #[error("key {0:?} is already retired; its verify_until cannot move later")]
    AlreadyRetired(String),
    #[error("keys folder {} is read-only here; change the keys where the folder is written", path.display())]
    ReadOnly { path: PathBuf },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot lock keys folder {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Options of a new key.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub kid: Option<String>,
    pub alg: Option<Algorithm>,
    /// `None`: verify only.
    pub sign_from: Option<DateTime<Utc>>,
}

/// Operations on one keys folder.
#[derive(Debug, Clone)]
pub struct KeyOps {
    dir: PathBuf,
}

impl KeyOps {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        KeyOps { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Lists every key with its state at `now`.
    pub fn list(&self, now: DateTime<Utc>) -> Result<Vec<KeyInfo>, OpsError> {
        let ring = store::read_dir(&self.dir)?.parse()?;
        Ok(ring
            .keys()
            .into_iter()
            .map(|k| KeyInfo::new(k, &ring, now))
            .collect())
    }

    /// Creates a key; it never replaces an existing file.
    pub fn create(&self, new: NewKey, now: DateTime<Utc>) -> Result<KeyInfo, OpsError> {
        let _lock = self.lock()?;
        let ring = self.read()?;
        let key = store::generate_key(
            new.kid,
            new.alg.unwrap_or(Algorithm::HS256),
            now,
            new.sign_from,
            None,
        )?;
        if ring.get(&key.kid).is_some() {
            return Err(OpsError::Exists(key.kid.to_string()));
        }
        store::write_new_key(&self.dir, &key).map_err(|e| match e {
            StoreError::Exists { .. } => OpsError::Exists(key.kid.to_string()),
            other => other.into(),
        })?;
        self.info_after_write(&key.kid, now)
    }

    /// Makes `kid` sign from `at`.
    pub fn activate(
        &self,
        kid: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<KeyInfo, OpsError> {
        let _lock = self.lock()?;
        let ring = self.read()?;
        let key = find(&ring, kid)?;
        if !key.verifies_at(at.max(now)) {
            return Err(OpsError::Retired(kid.to_owned()));
        }
        store::replace_key(&self.dir, &key.with_lifecycle(Some(at), key.verify_until))?;
        self.info_after_write(kid, now)
    }

    /// Creates a key that signs from `at`, in one step.
    pub fn rotate(
        &self,
        mut new: NewKey,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<KeyInfo, OpsError> {
        new.sign_from = Some(at);
        self.create(new, now)
    }

    /// Sets `verify_until` of `kid` to `at`. Without `force`, refuses when no
    /// other key could sign at `at`, or when tokens it signed may still be
    /// valid then (its last signing time + maximum lifetime + leeway).
    pub fn retire(
        &self,
        kid: &str,
        at: DateTime<Utc>,
        force: bool,
        policy: RetirePolicy,
        now: DateTime<Utc>,
    ) -> Result<KeyInfo, OpsError> {
        let _lock = self.lock()?;
        let ring = self.read()?;
        let key = find(&ring, kid)?;
        // A key retired before its scheduled `sign_from` never signs, so the
        // schedule is dropped rather than left after `verify_until`.
        if key
            .verify_until
            .is_some_and(|until| until <= now && until < at)
        {
            return Err(OpsError::AlreadyRetired(kid.to_owned()));
        }
        let sign_from = key.sign_from.filter(|from| *from <= at);
        let retired = key.with_lifecycle(sign_from, Some(at));

        if !force {
            check_retire(&ring, &retired, at, policy, now)?;
        }

        store::replace_key(&self.dir, &retired)?;
        self.info_after_write(kid, now)
    }

    /// Deletes every key whose `verify_until` has passed at `now`.
    pub fn prune(&self, now: DateTime<Utc>) -> Result<Vec<String>, OpsError> {
        // Nothing to delete needs no write access, so a read-only folder
        // (a mounted Secret) returns an empty list.
        if self.read()?.keys().iter().all(|key| key.verifies_at(now)) {
            return Ok(Vec::new());
        }
        let _lock = self.lock()?;
        let ring = self.read()?;
        let mut pruned = Vec::new();
        for key in ring.keys() {
            if !key.verifies_at(now) {
                store::delete_key(&self.dir, &key.kid)?;
                pruned.push(key.kid.to_string());
            }
        }
        Ok(pruned)
    }

    fn read(&self) -> Result<KeyRing, OpsError> {
        Ok(store::read_dir(&self.dir)?.parse()?)
    }

    fn info_after_write(&self, kid: &str, now: DateTime<Utc>) -> Result<KeyInfo, OpsError> {
        let ring = self.read()?;
        let key = find(&ring, kid)?;
        Ok(KeyInfo::new(key, &ring, now))
    }

    /// Takes the folder's exclusive lock until the returned file is dropped.
    fn lock(&self) -> Result<File, OpsError> {
        if !self.dir.is_dir() {
            return Err(OpsError::Store(StoreError::ReadDir {
                path: self.dir.clone(),
                source: std::io::ErrorKind::NotFound.into(),
            }));
        }
        let path = self.dir.join(LOCK_FILE);
        let lock_error = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => {
                OpsError::ReadOnly {
                    path: self.dir.clone(),
                }
            }
            _ => OpsError::Lock {
                path: path.clone(),
                source,
            },
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(lock_error)?;
        file.lock().map_err(lock_error)?;
        Ok(file)
    }
}

/// Returns the key `kid` of `ring`, or `NotFound`.
fn find<'r>(ring: &'r KeyRing, kid: &str) -> Result<&'r std::sync::Arc<Key>, OpsError> {
    ring.get(kid)
        .ok_or_else(|| OpsError::NotFound(kid.to_owned()))
}

/// Runs the retirement checks on the ring as it is before the change.
fn check_retire(
    ring: &KeyRing,
    retired: &Key,
    at: DateTime<Utc>,
    policy: RetirePolicy,
    now: DateTime<Utc>,
) -> Result<(), OpsError> {
    let others: Vec<Key> = ring
        .keys()
        .into_iter()
        .filter(|k| k.kid != retired.kid)
        .map(|k| k.with_lifecycle(k.sign_from, k.verify_until))
        .chain(std::iter::once(
            retired.with_lifecycle(retired.sign_from, retired.verify_until),
        ))
        .collect();
    let after = KeyRing::new(others).map_err(|dup| OpsError::Exists(dup.0))?;
    if after.signing_key(at.max(now)).is_none() {
        return Err(OpsError::OnlySigningKey(retired.kid.to_string()));
    }

    if let Some(last_signed) = last_signing_time(ring, retired, now) {
        let until = last_signed
            + Duration::seconds(policy.max_token_lifetime_secs)
            + Duration::seconds(policy.leeway_secs);
        if at < until {
            return Err(OpsError::TokensMayBeValid {
                kid: retired.kid.to_string(),
                until: rfc3339(until),
            });
        }
    }
    Ok(())
}

/// Returns the last instant `key` signed, or `None` if it never has. A key that
/// signs now counts as signing until `now`; a superseded key until the
/// `sign_from` of the first key that took over.
fn last_signing_time(ring: &KeyRing, key: &Key, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let from = key.sign_from.filter(|from| *from <= now)?;
    if ring.signing_key(now).is_some_and(|s| s.kid == key.kid) {
        return Some(now);
    }
    let superseded_at = ring
        .keys()
        .into_iter()
        .filter_map(|k| k.sign_from)
        .filter(|t| *t > from && *t <= now)
        .min();
    Some(superseded_at.unwrap_or(now))
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;
