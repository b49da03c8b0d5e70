//! Figures for `GET /metrics`. Each worker thread counts into a shard of
//! its own, made before a request arrives. Labels, key states and sums are
//! computed when Prometheus scrapes.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse};

use crate::error::{ApiError, ErrorCode};
use crate::session::{SessionWorker, maintain_session};

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

/// Counters of one `kid` in one shard.
#[derive(Debug, Default)]
pub struct KidCounters {
    /// Tokens this key verified as valid.
    pub verified: AtomicU64,
    /// Tokens this key minted for new sessions.
    pub minted: AtomicU64,
}

/// The service's request figures. Each thread that serves the session
/// endpoint writes a shard of its own through a [`MetricsWriter`], and the
/// read methods add the shards up.
#[derive(Debug, Default)]
pub struct Metrics {
    shards: Mutex<Vec<Arc<Shard>>>,
}

/// The counters of one writer thread.
#[derive(Debug, Default)]
struct Shard {
    outcomes: [AtomicU64; OUTCOMES.len()],
    latency: LatencyHistogram,
    /// Counters by `kid`. Only keys of the ring reach it (a verified
    /// token's key or the signing key), so its size is bounded by the keys
    /// ever loaded. The writer takes the lock only for a `kid` other than
    /// the one it counted last.
    per_kid: Mutex<Vec<(Arc<str>, Arc<KidCounters>)>>,
}

impl Metrics {
    /// Returns the writing end of a new shard for the calling thread.
    pub fn writer(&self) -> MetricsWriter {
        let shard = Arc::new(Shard::default());
        lock(&self.shards).push(Arc::clone(&shard));
        MetricsWriter {
            shard,
            last_kid: RefCell::new(None),
            one_thread: PhantomData,
        }
    }

    /// Returns the requests per entry of [`OUTCOMES`], in that order.
    pub fn outcome_counts(&self) -> [u64; OUTCOMES.len()] {
        let shards = lock(&self.shards);
        std::array::from_fn(|i| {
            shards
                .iter()
                .map(|shard| shard.outcomes[i].load(Ordering::Relaxed))
                .sum()
        })
    }

    /// Returns the number of new sessions started, the metering figure.
    pub fn sessions_started(&self) -> u64 {
        self.outcome_counts()[NEW_SESSION_FIRST..=NEW_SESSION_OTHER]
            .iter()
            .sum()
    }

    /// Returns `(kid, verified, minted)` for every `kid` counted, sorted by `kid`.
    pub fn kid_counts(&self) -> Vec<(Arc<str>, u64, u64)> {
        let mut counts: BTreeMap<Arc<str>, (u64, u64)> = BTreeMap::new();
        for shard in lock(&self.shards).iter() {
            for (kid, counters) in lock(&shard.per_kid).iter() {
                let entry = counts.entry(Arc::clone(kid)).or_default();
                entry.0 += counters.verified.load(Ordering::Relaxed);
                entry.1 += counters.minted.load(Ordering::Relaxed);
            }
        }
        counts
            .into_iter()
            .map(|(kid, (verified, minted))| (kid, verified, minted))
            .collect()
    }

    /// Returns the latency histogram of all shards: `(upper bound in seconds,
    /// observations in that bucket alone)` with the last bound infinity,
    /// the sum in seconds, and the count.
    pub fn latency_snapshot(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let total = LatencyHistogram::default();
        for shard in lock(&self.shards).iter() {
            for (sum, part) in total.buckets.iter().zip(&shard.latency.buckets) {
                add(sum, part.load(Ordering::Relaxed));
            }
            add(
                &total.sum_nanos,
                shard.latency.sum_nanos.load(Ordering::Relaxed),
            );
        }
        total.snapshot()
    }
}

/// The writing end of one shard of [`Metrics`]. It is neither `Send` nor
/// `Sync`, so only the thread that made it writes the shard, and a count
/// is a load and a store rather than a locked read-modify-write.
pub struct MetricsWriter {
    shard: Arc<Shard>,
    /// The `kid` this writer counted last, with its counters, so a run of
    /// requests signed by one key skips the search. Holding an `Arc` of the
    /// `kid` keeps its address from being reused for another one.
    last_kid: RefCell<Option<(Arc<str>, Arc<KidCounters>)>>,
    one_thread: PhantomData<*const ()>,
}

impl std::fmt::Debug for MetricsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsWriter").finish_non_exhaustive()
    }
}

impl MetricsWriter {
    /// Counts a request whose token `kid` verified; the session is kept.
    pub fn count_valid(&self, kid: &Arc<str>) {
        add(&self.shard.outcomes[VALID], 1);
        self.with_kid(kid, |counters| add(&counters.verified, 1));
    }

    /// Counts a new session minted by `kid` because of `reason` (a
    /// `Rejection::reason()`, `absent` or `ambiguous_header`).
    pub fn count_new_session(&self, reason: &str, kid: &Arc<str>) {
        add(&self.shard.outcomes[new_session_slot(reason)], 1);
        self.with_kid(kid, |counters| add(&counters.minted, 1));
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
            add(&self.shard.outcomes[slot], 1);
        }
        self.shard.latency.observe(elapsed);
    }

    /// Applies `count` to this shard's counters of `kid`, adding them on
    /// the first count. Entries are never removed, so the remembered entry
    /// stays the one the shard holds.
    fn with_kid(&self, kid: &Arc<str>, count: impl Fn(&KidCounters)) {
        let mut last = self.last_kid.borrow_mut();
        if let Some((last_kid, counters)) = last.as_ref()
            && Arc::ptr_eq(last_kid, kid)
        {
            count(counters);
            return;
        }
        let counters = self.find_or_add_kid(kid);
        count(&counters);
        *last = Some((Arc::clone(kid), counters));
    }

    #[cold]
    fn find_or_add_kid(&self, kid: &Arc<str>) -> Arc<KidCounters> {
        let mut per_kid = lock(&self.shard.per_kid);
        if let Some((_, counters)) = per_kid.iter().find(|(known, _)| **known == **kid) {
            return Arc::clone(counters);
        }
        let counters = Arc::new(KidCounters::default());
        per_kid.push((Arc::clone(kid), Arc::clone(&counters)));
        counters
    }
}

/// Adds `amount` to a counter that one thread writes. Readers on other
/// threads see the old or the new value, never a torn one.
fn add(counter: &AtomicU64, amount: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(amount),
        Ordering::Relaxed,
    );
}

/// Locks `mutex`, going on with the data of a thread that panicked while
/// holding it: the counters stay readable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
struct LatencyHistogram {
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
    /// Records one observation. Only the writer thread of the histogram's
    /// shard calls it.
    fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        add(&self.buckets[bucket], 1);
        add(&self.sum_nanos, nanos);
    }

    /// `(upper bound in seconds, observations in that bucket alone)`, the
    /// last bound being infinity; the sum in seconds; the count.
    fn snapshot(&self) -> (Vec<(f64, u64)>, f64, u64) {
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
    worker: &SessionWorker,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let result = maintain_session(req, worker, started).await;
    worker.metrics.observe_request(&result, started.elapsed());
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
        let writer = metrics.writer();
        let old: Arc<str> = Arc::from("k1");
        let new: Arc<str> = Arc::from("k2");

        writer.count_valid(&old);
        writer.count_valid(&old);
        writer.count_new_session("expired", &new);
        writer.count_new_session("something_new", &new);

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

        first.writer().count_valid(&kid);
        let second_writer = second.writer();
        second_writer.count_valid(&kid);
        second_writer.count_valid(&kid);

        assert_eq!(first.kid_counts(), vec![(kid.clone(), 1, 0)]);
        assert_eq!(second.kid_counts(), vec![(kid.clone(), 2, 0)]);
    }

    #[test]
    fn reloaded_kid_counts_in_same_entry() {
        let metrics = Metrics::default();
        let writer = metrics.writer();
        let before: Arc<str> = Arc::from("k1");
        let after: Arc<str> = Arc::from("k1");

        writer.count_valid(&before);
        writer.count_valid(&after);
        writer.count_valid(&before);

        assert_eq!(metrics.kid_counts(), vec![(before.clone(), 3, 0)]);
    }

    #[test]
    fn failures_counted_by_code() {
        let metrics = Metrics::default();
        let unavailable = Err(ApiError::new(ErrorCode::ServiceUnavailable, "x"));
        let internal = Err(ApiError::new(ErrorCode::Internal, "x"));

        let writer = metrics.writer();
        writer.observe_request(&unavailable, Duration::from_micros(10));
        writer.observe_request(&internal, Duration::from_micros(10));
        writer.observe_request(&Ok(HttpResponse::Ok().finish()), Duration::from_micros(10));

        let counts = metrics.outcome_counts();
        assert_eq!(counts[UNAVAILABLE], 1);
        assert_eq!(counts[INTERNAL_ERROR], 1);
        assert_eq!(metrics.sessions_started(), 0);
        assert_eq!(metrics.latency_snapshot().2, 3);
    }

    #[test]
    fn shards_add_up() {
        let metrics = Metrics::default();
        let kid: Arc<str> = Arc::from("k1");
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let writer = metrics.writer();
                writer.count_valid(&kid);
                writer.observe_request(&Ok(HttpResponse::Ok().finish()), Duration::from_micros(70));
            });
        });
        let writer = metrics.writer();

        writer.count_valid(&kid);
        writer.count_new_session("expired", &kid);
        writer.observe_request(&Ok(HttpResponse::Ok().finish()), Duration::from_micros(10));

        let (buckets, sum, count) = metrics.latency_snapshot();
        assert_eq!(metrics.outcome_counts()[VALID], 2);
        assert_eq!(metrics.kid_counts(), vec![(kid.clone(), 2, 1)]);
        assert_eq!(buckets[0], (0.00005, 1));
        assert_eq!(buckets[1], (0.0001, 1));
        assert_eq!(count, 2);
        assert!((sum - 0.00008).abs() < 1e-12, "sum {sum}");
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
