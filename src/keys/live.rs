//! The key ring of a running server. Requests read an immutable snapshot
//! with no lock; a reload builds a whole new ring from the folder and swaps
//! it in only if every file is valid and some key can sign.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use chrono::{DateTime, Utc};

use super::KeyRing;
use super::store::{self, StoreError};

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The folder's content differs and the new ring is in force.
    Changed,
    /// The folder's content is what is already loaded.
    Unchanged,
}

/// The live ring and what reloads need.
#[derive(Debug)]
pub struct LiveRing {
    current: ArcSwap<KeyRing>,
    dir: PathBuf,
    /// Digest of the folder content behind `current`. Only reloads take this
    /// lock; requests never do.
    digest: Mutex<String>,
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
            current: ArcSwap::from_pointee(ring),
            dir: dir.into(),
            digest: Mutex::new(digest),
            unknown_kid_gate: tokio::sync::Mutex::new(()),
            last_unknown_kid_reload: AtomicI64::new(i64::MIN),
            reloads: AtomicU64::new(0),
            failed_reloads: AtomicU64::new(0),
        }
    }

    /// The ring in force; a request keeps this one snapshot throughout.
    pub fn load(&self) -> Guard<Arc<KeyRing>> {
        self.current.load()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reloads completed (changed or not) and failed, since start.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.failed_reloads.load(Ordering::Relaxed),
        )
    }

    /// Reads the folder and swaps in its ring if its content changed. On any
    /// fault the ring in force stays and the error is returned.
    pub fn reload(&self, now: DateTime<Utc>) -> Result<ReloadOutcome, StoreError> {
        let mut digest = self
            .digest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = self.read_if_changed(&digest, now);
        match result {
            Ok(Some((ring, new_digest))) => {
                self.current.store(Arc::new(ring));
                *digest = new_digest;
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(ReloadOutcome::Changed)
            }
            Ok(None) => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(ReloadOutcome::Unchanged)
            }
            Err(e) => {
                self.failed_reloads.fetch_add(1, Ordering::Relaxed);
                Err(e)
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
        if ring.signing_key(now).is_none() {
            return Err(StoreError::NoSigningKey {
                path: self.dir.clone(),
            });
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
            Ok(Err(e)) => {
                log::warn!(
                    "keys reload failed trigger=unknown_kid error={e}; keeping the loaded keys"
                );
                false
            }
            Err(_) => false,
        }
    }

    /// `kids=… signing=… fingerprint=…` for log lines.
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
