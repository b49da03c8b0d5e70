//! The key ring of a running server. Requests read an immutable snapshot
//! with no lock. A reload builds a whole new ring from the folder and swaps
//! it in only if every file is valid and the folder is not empty.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Cache, Guard};
use chrono::{DateTime, Utc};

use super::KeyRing;
use super::store::{self, StoreError};

/// The result of a successful reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The folder's content differs and the new ring is in force.
    Changed,
    /// The folder's content is what is already loaded.
    Unchanged,
}

/// A failed reload. `repeated` is true when the previous reload failed with
/// the same message, so callers log a persistent fault once, not every poll.
#[derive(Debug)]
pub struct ReloadFailure {
    pub error: StoreError,
    pub repeated: bool,
}

#[derive(Debug)]
struct ReloadState {
    /// Digest of the folder content behind the ring in force.
    digest: String,
    /// Message of the last failed reload, cleared by a successful one.
    last_failure: Option<String>,
}

/// A worker thread's handle on the ring in force. A load compares one
/// pointer and takes no reference count unless the ring has changed, so it
/// makes no atomic write. It keeps the ring it saw last alive until its
/// next load.
pub type RingCache = Cache<Arc<ArcSwap<KeyRing>>, Arc<KeyRing>>;

/// The live ring and what reloads need.
#[derive(Debug)]
pub struct LiveRing {
    current: Arc<ArcSwap<KeyRing>>,
    dir: PathBuf,
    /// State kept between reloads. Only reloads take this lock; requests never do.
    reload_state: Mutex<ReloadState>,
    /// Serialises reloads caused by unknown `kid`s, so concurrent requests
    /// wait for one reload instead of each starting their own.
    unknown_kid_gate: tokio::sync::Mutex<()>,
    /// Second (Unix time) of the last reload caused by an unknown `kid`.
    last_unknown_kid_reload: AtomicI64,
    reloads: AtomicU64,
    failed_reloads: AtomicU64,
}

impl LiveRing {
    pub fn new(ring: KeyRing, digest: String, dir: impl Into<PathBuf>) -> Self {
        LiveRing {
            current: Arc::new(ArcSwap::from_pointee(ring)),
            dir: dir.into(),
            reload_state: Mutex::new(ReloadState {
                digest,
                last_failure: None,
            }),
            unknown_kid_gate: tokio::sync::Mutex::new(()),
            last_unknown_kid_reload: AtomicI64::new(i64::MIN),
            reloads: AtomicU64::new(0),
            failed_reloads: AtomicU64::new(0),
        }
    }

    /// Returns the ring in force; a request keeps this one snapshot throughout.
    pub fn load(&self) -> Guard<Arc<KeyRing>> {
        self.current.load()
    }

    /// Returns a handle that loads the ring in force for one thread.
    pub fn cache(&self) -> RingCache {
        Cache::new(Arc::clone(&self.current))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the counts of completed (changed or not) and failed reloads since start.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.failed_reloads.load(Ordering::Relaxed),
        )
    }

    /// Reads the folder and swaps in its ring if its content changed. On any
    /// fault the ring in force stays and the error is returned.
    pub fn reload(&self, now: DateTime<Utc>) -> Result<ReloadOutcome, ReloadFailure> {
        let mut state = self
            .reload_state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match self.read_if_changed(&state.digest, now) {
            Ok(changed) => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                state.last_failure = None;
                let Some((ring, digest)) = changed else {
                    return Ok(ReloadOutcome::Unchanged);
                };
                self.current.store(Arc::new(ring));
                state.digest = digest;
                Ok(ReloadOutcome::Changed)
            }
            Err(error) => {
                self.failed_reloads.fetch_add(1, Ordering::Relaxed);
                let message = error.to_string();
                let repeated = state.last_failure.as_deref() == Some(message.as_str());
                state.last_failure = Some(message);
                Err(ReloadFailure { error, repeated })
            }
        }
    }

    fn read_if_changed(
        &self,
        digest: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(KeyRing, String)>, StoreError> {
        let snapshot = store::read_dir(&self.dir)?;
        let new_digest = snapshot.digest();
        if new_digest == digest {
            return Ok(None);
        }
        let ring = snapshot.parse()?;
        if ring.is_empty() {
            return Err(StoreError::NoKeys {
                path: self.dir.clone(),
            });
        }
        if ring.signing_key(now).is_none() {
            // Valid files that leave no signer are an admin's decision (a
            // forced retirement), so they apply: new sessions get 503.
            log::error!(
                "keys folder {} has no key that can sign now; new sessions fail with 503 until a key is activated",
                self.dir.display()
            );
        }
        Ok(Some((ring, new_digest)))
    }

    /// Reloads because a well-formed token named a `kid` not in the ring, at
    /// most once per second. Returns true when the ring changed, so the
    /// caller verifies again. The folder is read on the blocking pool.
    pub async fn reload_for_unknown_kid(self: &Arc<Self>, now: DateTime<Utc>) -> bool {
        let loaded_before = Arc::as_ptr(&self.load());
        let _gate = self.unknown_kid_gate.lock().await;
        if Arc::as_ptr(&self.load()) != loaded_before {
            // Another request reloaded while this one waited.
            return true;
        }
        let second = now.timestamp();
        if self.last_unknown_kid_reload.load(Ordering::Relaxed) >= second {
            return false;
        }
        self.last_unknown_kid_reload
            .store(second, Ordering::Relaxed);

        let live = Arc::clone(self);
        let result = actix_web::web::block(move || live.reload(now)).await;
        match result {
            Ok(Ok(ReloadOutcome::Changed)) => {
                log::info!("keys reloaded trigger=unknown_kid {}", self.summary(now));
                true
            }
            Ok(Ok(ReloadOutcome::Unchanged)) => {
                log::debug!("keys unchanged trigger=unknown_kid");
                false
            }
            Ok(Err(failure)) => {
                log_failure("unknown_kid", &failure);
                false
            }
            Err(_) => false,
        }
    }

    /// Formats `kids=… signing=… fingerprint=…` for log lines.
    pub fn summary(&self, now: DateTime<Utc>) -> String {
        let ring = self.load();
        let kids: Vec<&str> = ring.keys().iter().map(|k| &*k.kid).collect();
        let signing = ring.signing_key(now).map_or("none", |k| &*k.kid);
        format!(
            "kids={} signing={signing} fingerprint={}",
            kids.join(","),
            ring.fingerprint()
        )
    }
}

/// Logs a failed reload: a warning the first time, debug while it repeats.
pub fn log_failure(trigger: &str, failure: &ReloadFailure) {
    let error = &failure.error;
    if failure.repeated {
        log::debug!("keys reload still failing trigger={trigger} error={error}");
    } else {
        log::warn!("keys reload failed trigger={trigger} error={error}; keeping the loaded keys");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::store::{generate_key, write_new_key};

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    fn live_ring(dir: &Path) -> LiveRing {
        let key = generate_key(
            Some("k1".into()),
            jsonwebtoken::Algorithm::HS256,
            now(),
            Some(now()),
            None,
        )
        .expect("generates");
        write_new_key(dir, &key).expect("writes");
        let (ring, digest) = store::load_ring(dir, now()).expect("loads");
        LiveRing::new(ring, digest, dir)
    }

    #[test]
    fn broken_file_keeps_ring_and_reports_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let live = live_ring(dir.path());
        std::fs::write(dir.path().join("bad.json"), "{").expect("writes");

        let first = live.reload(now()).unwrap_err();
        let second = live.reload(now()).unwrap_err();

        assert!(!first.repeated, "first failure marked as repeated");
        assert!(second.repeated, "same failure not marked as repeated");
        assert!(
            first.error.to_string().contains("bad.json"),
            "{}",
            first.error
        );
        assert_eq!(live.load().len(), 1, "ring changed after a failed reload");
        assert_eq!(live.reload_counts(), (0, 2));
    }

    #[test]
    fn empty_folder_keeps_ring() {
        let dir = tempfile::tempdir().expect("temp dir");
        let live = live_ring(dir.path());
        std::fs::remove_file(dir.path().join("k1.json")).expect("removes");

        let result = live.reload(now());

        assert!(matches!(
            result,
            Err(ReloadFailure {
                error: StoreError::NoKeys { .. },
                ..
            })
        ));
        assert!(
            live.load().get("k1").is_some(),
            "the last good ring was dropped"
        );
    }

    #[test]
    fn reload_without_signer_applies() {
        let dir = tempfile::tempdir().expect("temp dir");
        let live = live_ring(dir.path());
        std::fs::remove_file(dir.path().join("k1.json")).expect("removes");
        let spare = generate_key(
            Some("spare".into()),
            jsonwebtoken::Algorithm::HS256,
            now(),
            None,
            None,
        )
        .expect("generates");
        write_new_key(dir.path(), &spare).expect("writes");

        let result = live.reload(now());

        assert!(matches!(result, Ok(ReloadOutcome::Changed)), "{result:?}");
        assert!(
            live.load().signing_key(now()).is_none(),
            "a removed key still signs"
        );
    }

    #[test]
    fn unchanged_folder_is_not_swapped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let live = live_ring(dir.path());
        let before = Arc::as_ptr(&live.load());

        let outcome = live.reload(now()).expect("reloads");

        assert_eq!(outcome, ReloadOutcome::Unchanged);
        assert_eq!(Arc::as_ptr(&live.load()), before);
    }
}
