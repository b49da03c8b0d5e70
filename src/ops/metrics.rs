//! Figures for `GET /metrics`. A request only increments atomic counters that
//! exist before it arrives; labels, key states and sums are computed when
//! Prometheus scrapes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse};
use arc_swap::ArcSwap;

use crate::error::{ApiError, ErrorCode};
use crate::keys::live::RingCache;
use crate::session::maintain_session;
use crate::state::AppState;

/// Outcome and reason label pairs of `sessiond_session_requests_total`.
/// `new_session` reasons are the token's rejection reasons, plus `absent`
/// and `ambiguous_header`; `other` counts a reason not listed here.
pub const OUTCOMES: [(&str, &str); 18] = [
    ("valid", "valid"),
    ("new_session", "absent"),
    ("new_session", "ambiguous_header"),
    ("new_session", "oversize"),
    ("new_session", "malformed"),
    ("new_session", "unsupported_crit"),
    ("new_session", "unknown_kid"),
    ("new_session", "retired_kid"),
    ("new_session", "wrong_alg"),
    ("new_session", "bad_signature"),
    ("new_session", "invalid_claims"),
    ("new_session", "wrong_issuer"),
    ("new_session", "expired"),
    ("new_session", "not_yet_valid"),
    ("new_session", "lifetime_too_long"),
    ("new_session", "other"),
    ("unavailable", "no_signing_key"),
    ("error", "internal"),
];

const VALID: usize = 0;
const NEW_SESSION_FIRST: usize = 1;
const NEW_SESSION_OTHER: usize = 15;
const UNAVAILABLE: usize = 16;
const INTERNAL_ERROR: usize = 17;

/// Upper bounds of the latency buckets, in nanoseconds: 50 µs to 1 s.
const LATENCY_BOUNDS_NANOS: [u64; 13] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// Counters of one `kid`.
#[derive(Debug, Default)]
pub struct KidCounters {
    /// Tokens this key verified as valid.
    pub verified: AtomicU64,
    /// Tokens this key minted for new sessions.
    pub minted: AtomicU64,
}

/// The service's request figures. Every method a request calls is lock-free
/// except the first count for a `kid` not seen before, which copies the
/// small per-`kid` map once under a mutex.
#[derive(Debug)]
pub struct Metrics {
    /// Number of this instance, which the per-thread memory of
    /// [`Self::with_kid`] compares.
    id: u64,
    outcomes: [AtomicU64; OUTCOMES.len()],
    /// Keyed by `kid`. Only keys of the ring reach it (a verified token's key
    /// or the signing key), so its size is bounded by the keys ever loaded.
    per_kid: ArcSwap<HashMap<Arc<str>, Arc<KidCounters>>>,
    per_kid_insert: Mutex<()>,
    latency: LatencyHistogram,
}

impl Default for Metrics {
    fn default() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Metrics {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            outcomes: std::array::from_fn(|_| AtomicU64::new(0)),
            per_kid: ArcSwap::from_pointee(HashMap::new()),
            per_kid_insert: Mutex::new(()),
            latency: LatencyHistogram::default(),
        }
    }
}

impl Metrics {
    /// Counts a request whose token `kid` verified; the session is kept.
    pub fn count_valid(&self, kid: &Arc<str>) {
        self.outcomes[VALID].fetch_add(1, Ordering::Relaxed);
        self.with_kid(kid, |c| c.verified.fetch_add(1, Ordering::Relaxed));
    }

    /// Counts a new session minted by `kid` because of `reason` (a
    /// `Rejection::reason()`, `absent` or `ambiguous_header`).
    pub fn count_new_session(&self, reason: &str, kid: &Arc<str>) {
        self.outcomes[new_session_slot(reason)].fetch_add(1, Ordering::Relaxed);
        self.with_kid(kid, |c| c.minted.fetch_add(1, Ordering::Relaxed));
    }

    /// Records the latency of one session request and counts it when it
    /// failed; successful outcomes are counted by the handler.
    pub fn observe_request(&self, result: &Result<HttpResponse, ApiError>, elapsed: Duration) {
        if let Err(error) = result {
            let slot = if error.code == ErrorCode::ServiceUnavailable {
                UNAVAILABLE
            } else {
                INTERNAL_ERROR
            };
            self.outcomes[slot].fetch_add(1, Ordering::Relaxed);
        }
        self.latency.observe(elapsed);
    }

    /// Requests per entry of [`OUTCOMES`], in that order.
    pub fn outcome_counts(&self) -> [u64; OUTCOMES.len()] {
        std::array::from_fn(|i| self.outcomes[i].load(Ordering::Relaxed))
    }

    /// New sessions started: the metering figure.
    pub fn sessions_started(&self) -> u64 {
        self.outcome_counts()[NEW_SESSION_FIRST..=NEW_SESSION_OTHER]
            .iter()
            .sum()
    }

    /// `(kid, verified, minted)` for every `kid` counted, sorted by `kid`.
    pub fn kid_counts(&self) -> Vec<(Arc<str>, u64, u64)> {
        let map = self.per_kid.load();
        let mut counts: Vec<_> = map
            .iter()
            .map(|(kid, c)| {
                (
                    kid.clone(),
                    c.verified.load(Ordering::Relaxed),
                    c.minted.load(Ordering::Relaxed),
                )
            })
            .collect();
        counts.sort_by(|a, b| a.0.cmp(&b.0));
        counts
    }

    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    /// Applies `count` to the counters of `kid`. Each thread remembers the
    /// counters it used last, so a run of requests signed by one key skips
    /// the map. Entries are never removed from the map, so a remembered
    /// entry stays the one the map holds.
    fn with_kid(&self, kid: &Arc<str>, count: impl Fn(&KidCounters) -> u64) {
        thread_local! {
            static LAST: RefCell<Option<LastKid>> = const { RefCell::new(None) };
        }
        LAST.with_borrow_mut(|last| {
            if let Some(last) = last
                && last.metrics == self.id
                && Arc::ptr_eq(&last.kid, kid)
            {
                count(&last.counters);
                return;
            }
            let counters = match self.per_kid.load().get(kid) {
                Some(counters) => counters.clone(),
                None => self.insert_kid(kid),
            };
            count(&counters);
            *last = Some(LastKid {
                metrics: self.id,
                kid: kid.clone(),
                counters,
            });
        });
    }

    #[cold]
    fn insert_kid(&self, kid: &Arc<str>) -> Arc<KidCounters> {
        let _insert = self
            .per_kid_insert
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.per_kid.load_full();
        if let Some(counters) = current.get(kid) {
            return counters.clone();
        }
        let counters = Arc::new(KidCounters::default());
        let mut next = HashMap::clone(&current);
        next.insert(kid.clone(), counters.clone());
        self.per_kid.store(Arc::new(next));
        counters
    }
}

/// The `kid` a thread counted last, with its counters. Holding an `Arc` of
/// the `kid` keeps its address from being reused for another one.
struct LastKid {
    metrics: u64,
    kid: Arc<str>,
    counters: Arc<KidCounters>,
}

/// Finds the slot of a `new_session` reason in [`OUTCOMES`].
fn new_session_slot(reason: &str) -> usize {
    match reason {
        "absent" => 1,
        "ambiguous_header" => 2,
        "oversize" => 3,
        "malformed" => 4,
        "unsupported_crit" => 5,
        "unknown_kid" => 6,
        "retired_kid" => 7,
        "wrong_alg" => 8,
        "bad_signature" => 9,
        "invalid_claims" => 10,
        "wrong_issuer" => 11,
        "expired" => 12,
        "not_yet_valid" => 13,
        "lifetime_too_long" => 14,
        _ => NEW_SESSION_OTHER,
    }
}

/// A latency histogram of atomic buckets. The histogram of
/// `prometheus-client` 0.26 takes a mutex on every observation, which the
/// request path must not.
#[derive(Debug)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BOUNDS_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// `(upper bound in seconds, observations in that bucket alone)`, the
    /// last bound being infinity; the sum in seconds; the count.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut buckets = Vec::with_capacity(self.buckets.len());
        let mut count = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            let bound = LATENCY_BOUNDS_NANOS
                .get(i)
                .map_or(f64::INFINITY, |&nanos| nanos as f64 / 1e9);
            let observed = bucket.load(Ordering::Relaxed);
            count += observed;
            buckets.push((bound, observed));
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (buckets, sum, count)
    }
}

/// Runs the session endpoint and records its latency and failures.
pub async fn timed_maintain_session(
    req: &HttpRequest,
    state: &AppState,
    rings: &RefCell<RingCache>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let result = maintain_session(req, state, rings).await;
    state.metrics.observe_request(&result, started.elapsed());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_reason_has_slot() {
        use crate::token::Rejection::*;
        let rejections = [
            Oversize,
            Malformed,
            UnsupportedCritical,
            UnknownKid,
            RetiredKid,
            WrongAlgorithm,
            BadSignature,
            InvalidClaims,
            WrongIssuer,
            Expired,
            NotYetValid,
            LifetimeTooLong,
        ];
        for rejection in rejections {
            let reason = rejection.reason();

            let slot = new_session_slot(reason);

            assert_ne!(slot, NEW_SESSION_OTHER, "{reason} has no slot");
            assert_eq!(OUTCOMES[slot], ("new_session", reason));
        }
        for reason in ["absent", "ambiguous_header"] {
            assert_eq!(OUTCOMES[new_session_slot(reason)], ("new_session", reason));
        }
    }

    #[test]
    fn counts_outcomes_and_kids() {
        let metrics = Metrics::default();
        let old: Arc<str> = Arc::from("k1");
        let new: Arc<str> = Arc::from("k2");

        metrics.count_valid(&old);
        metrics.count_valid(&old);
        metrics.count_new_session("expired", &new);
        metrics.count_new_session("something_new", &new);

        let counts = metrics.outcome_counts();
        assert_eq!(counts[VALID], 2);
        assert_eq!(counts[new_session_slot("expired")], 1);
        assert_eq!(counts[NEW_SESSION_OTHER], 1);
        assert_eq!(metrics.sessions_started(), 2);
        assert_eq!(
            metrics.kid_counts(),
            vec![(old.clone(), 2, 0), (new.clone(), 0, 2)]
        );
    }

    #[test]
    fn each_instance_counts_its_own() {
        let first = Metrics::default();
        let second = Metrics::default();
        let kid: Arc<str> = Arc::from("k1");

        first.count_valid(&kid);
        second.count_valid(&kid);
        second.count_valid(&kid);

        assert_eq!(first.kid_counts(), vec![(kid.clone(), 1, 0)]);
        assert_eq!(second.kid_counts(), vec![(kid.clone(), 2, 0)]);
    }

    #[test]
    fn reloaded_kid_counts_in_same_entry() {
        let metrics = Metrics::default();
        let before: Arc<str> = Arc::from("k1");
        let after: Arc<str> = Arc::from("k1");

        metrics.count_valid(&before);
        metrics.count_valid(&after);
        metrics.count_valid(&before);

        assert_eq!(metrics.kid_counts(), vec![(before.clone(), 3, 0)]);
    }

    #[test]
    fn failures_counted_by_code() {
        let metrics = Metrics::default();
        let unavailable = Err(ApiError::new(ErrorCode::ServiceUnavailable, "x"));
        let internal = Err(ApiError::new(ErrorCode::Internal, "x"));

        metrics.observe_request(&unavailable, Duration::from_micros(10));
        metrics.observe_request(&internal, Duration::from_micros(10));
        metrics.observe_request(&Ok(HttpResponse::Ok().finish()), Duration::from_micros(10));

        let counts = metrics.outcome_counts();
        assert_eq!(counts[UNAVAILABLE], 1);
        assert_eq!(counts[INTERNAL_ERROR], 1);
        assert_eq!(metrics.sessions_started(), 0);
        assert_eq!(metrics.latency().snapshot().2, 3);
    }

    #[test]
    fn latency_buckets_use_upper_bounds() {
        let histogram = LatencyHistogram::default();

        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_micros(51));
        histogram.observe(Duration::from_secs(2));

        let (buckets, sum, count) = histogram.snapshot();
        assert_eq!(buckets[0], (0.00005, 1), "50 µs is in the 50 µs bucket");
        assert_eq!(buckets[1], (0.0001, 1), "51 µs is in the 100 µs bucket");
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(count, 3);
        assert!((sum - 2.000101).abs() < 1e-9, "sum {sum}");
    }
}
