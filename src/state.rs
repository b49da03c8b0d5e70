//! State shared by the handlers of both listeners.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use chrono::{DateTime, Duration, Utc};

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
        Utc::now() + self.offset
    }
}

/// Everything a request needs; built once at start.
#[derive(Debug)]
pub struct AppState {
    pub keys: Arc<LiveRing>,
    pub policy: TokenPolicy,
    pub cookie: CookieSettings,
    pub clock: Clock,
    /// Request counters and latency, exported by `GET /metrics`.
    pub metrics: Metrics,
    /// Set when a graceful stop begins; `/readyz` returns 503 from then on.
    pub stopping: AtomicBool,
}
