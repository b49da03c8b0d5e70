//! State shared by the handlers of both listeners.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

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

/// Maximum time an [`AnchoredClock`] adds to its last reading of the wall
/// clock.
const ANCHOR_LIFETIME: std::time::Duration = std::time::Duration::from_secs(1);

/// A [`Clock`] for one thread that reads the wall clock at most once a
/// second and, in between, adds the time the monotonic clock measured.
/// A request that reads `Instant::now()` anyway then gets the wall time
/// for a subtraction and an addition, where `Utc::now()` costs a second
/// clock read and a date conversion. On Linux the monotonic clock follows
/// NTP's rate adjustments but not steps of the system clock
/// (clock_gettime(2)), so the result differs from [`Clock::now`] only
/// after a step, and for at most a second.
#[derive(Debug)]
pub struct AnchoredClock {
    clock: Clock,
    /// The last reading of `clock`, and the monotonic time it was taken at.
    anchor: Cell<Option<(Instant, DateTime<Utc>)>>,
}

impl AnchoredClock {
    pub fn new(clock: Clock) -> Self {
        AnchoredClock {
            clock,
            anchor: Cell::new(None),
        }
    }

    /// Returns the wall time at the monotonic time `instant`, which the
    /// caller has just read.
    pub fn now_at(&self, instant: Instant) -> DateTime<Utc> {
        if let Some((anchored_at, wall)) = self.anchor.get()
            && let Some(elapsed) = instant.checked_duration_since(anchored_at)
            && elapsed < ANCHOR_LIFETIME
            && let Ok(elapsed) = Duration::from_std(elapsed)
        {
            return wall + elapsed;
        }
        let wall = self.clock.now();
        self.anchor.set(Some((instant, wall)));
        wall
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns whether `a` and `b` are less than a second apart.
    fn close(a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
        (a - b).abs() < Duration::seconds(1)
    }

    #[test]
    fn anchored_clock_adds_monotonic_time() {
        let clock = AnchoredClock::new(Clock::default());
        let start = Instant::now();

        let first = clock.now_at(start);
        let later = clock.now_at(start + std::time::Duration::from_millis(300));

        assert_eq!(later - first, Duration::milliseconds(300));
        assert!(close(first, Utc::now()));
    }

    #[test]
    fn anchored_clock_rereads_after_lifetime() {
        let clock = AnchoredClock::new(Clock::default());
        let start = Instant::now();
        clock.now_at(start);

        let far = clock.now_at(start + std::time::Duration::from_secs(5));

        assert!(close(far, Utc::now()), "{far} is not the wall time");
    }

    #[test]
    fn anchored_clock_rereads_for_earlier_instant() {
        let clock = AnchoredClock::new(Clock::default());
        let start = Instant::now();
        let Some(earlier) = start.checked_sub(std::time::Duration::from_secs(5)) else {
            return;
        };
        clock.now_at(start);

        let read = clock.now_at(earlier);

        assert!(close(read, Utc::now()), "{read} is not the wall time");
    }

    #[test]
    fn anchored_clock_keeps_offset() {
        let clock = AnchoredClock::new(Clock::with_offset_secs(3600));

        let read = clock.now_at(Instant::now());

        assert!(close(read, Utc::now() + Duration::hours(1)));
    }
}
