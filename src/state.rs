//! State shared by the handlers of both listeners.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use chrono::{DateTime, Duration, Utc};

use crate::admin::credential::AdminCredential;
use crate::keys::live::LiveRing;
use crate::ops::metrics::Metrics;
use crate::session::cookie::CookieSettings;
use crate::token::TokenPolicy;

/// The service's clock: the system clock plus a fixed offset, which is zero
/// outside tests of clock skew between replicas.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    offset: Duration,
}

impl Clock {
    pub fn with_offset_secs(secs: i64) -> Self {
        Clock {
            offset: Duration::seconds(secs),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        if self.offset.is_zero() {
            // Adding a zero offset would still convert the date and back.
            Utc::now()
        } else {
            Utc::now() + self.offset
        }
    }
}

/// Everything a request needs; built once at start.
#[derive(Debug)]
pub struct AppState {
    pub keys: Arc<LiveRing>,
    pub policy: TokenPolicy,
    pub cookie: CookieSettings,
    pub clock: Clock,
    /// Admin bearer credential; `None` disables the key operations.
    pub admin_credential: Option<AdminCredential>,
    /// Request counters and latency, exported by `GET /metrics`.
    pub metrics: Metrics,
    /// Set when a graceful stop begins; `/readyz` returns 503 from then on.
    pub stopping: AtomicBool,
}

impl AppState {
    /// Builds the state with key operations disabled.
    pub fn new(
        keys: Arc<LiveRing>,
        policy: TokenPolicy,
        cookie: CookieSettings,
        clock: Clock,
    ) -> Self {
        AppState {
            keys,
            policy,
            cookie,
            clock,
            admin_credential: None,
            metrics: Metrics::default(),
            stopping: AtomicBool::new(false),
        }
    }

    /// Enables the key operations with `credential`.
    pub fn with_admin_credential(mut self, credential: Option<AdminCredential>) -> Self {
        self.admin_credential = credential;
        self
    }
}
