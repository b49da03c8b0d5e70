//! `GET /metrics`: the Prometheus text format (version 0.0.4), encoded by
//! `prometheus-client` from a collector that reads the counters and the key
//! ring at scrape time.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::metrics::OUTCOMES;
use super::probes::readiness;
use crate::error::{ApiError, ErrorCode};
use crate::keys::KeyState;
use crate::state::AppState;

/// Key states in the order they are exported.
const KEY_STATES: [(KeyState, &str); 4] = [
    (KeyState::Scheduled, "scheduled"),
    (KeyState::Signing, "signing"),
    (KeyState::Verifying, "verifying"),
    (KeyState::Retired, "retired"),
];

/// Serves the figures. No admin credential is needed because they contain
/// `kid`s and the ring fingerprint, never a token or key material.
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let text = encode(state.into_inner()).map_err(|_| {
        log::error!("outcome=error reason=metrics_encoding_failed");
        ApiError::new(ErrorCode::Internal, "The metrics could not be encoded.")
    })?;
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
        ))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .body(text))
}

/// Encodes every figure of `state` in the Prometheus text format.
pub fn encode(state: std::sync::Arc<AppState>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ServiceCollector { state }));
    let mut text = String::new();
    prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

/// Reads the figures of one `AppState` when the registry is encoded.
#[derive(Debug)]
struct ServiceCollector {
    state: std::sync::Arc<AppState>,
}

impl Collector for ServiceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_requests(&mut encoder)?;
        self.encode_kids(&mut encoder)?;
        self.encode_keys(&mut encoder)?;
        self.encode_latency(&mut encoder)
    }
}

impl ServiceCollector {
    fn encode_requests(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metrics = &self.state.metrics;
        let mut family = encoder.encode_descriptor(
            "sessiond_session_requests",
            "Session requests by outcome (valid, new_session, unavailable, error) and reason",
            None,
            MetricType::Counter,
        )?;
        for ((outcome, reason), count) in OUTCOMES.iter().zip(metrics.outcome_counts()) {
            let labels = [("outcome", *outcome), ("reason", *reason)];
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }

        counter(
            encoder,
            "sessiond_sessions_started",
            "New sessions started, each with a freshly minted token (the metering figure)",
            metrics.sessions_started(),
        )
    }

    fn encode_kids(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.state.metrics.kid_counts();
        let mut verified = encoder.encode_descriptor(
            "sessiond_token_verifications",
            "Tokens verified as valid, by the kid of the verifying key",
            None,
            MetricType::Counter,
        )?;
        for (kid, count, _) in &counts {
            let labels = [("kid", &**kid)];
            ConstCounter::new(*count).encode(verified.encode_family(&labels)?)?;
        }

        let mut minted = encoder.encode_descriptor(
            "sessiond_tokens_minted",
            "Tokens minted for new sessions, by the kid of the signing key",
            None,
            MetricType::Counter,
        )?;
        for (kid, _, count) in &counts {
            let labels = [("kid", &**kid)];
            ConstCounter::new(*count).encode(minted.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn encode_keys(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = &self.state;
        let now = state.clock.now();
        let ring = state.keys.load();
        let (reloads, failed) = state.keys.reload_counts();

        counter(
            encoder,
            "sessiond_key_reloads",
            "Reloads of the keys folder that completed, changed or not",
            reloads,
        )?;
        counter(
            encoder,
            "sessiond_key_reload_failures",
            "Reloads of the keys folder that failed; the keys in force stayed",
            failed,
        )?;

        let mut by_state = encoder.encode_descriptor(
            "sessiond_keys",
            "Keys in the loaded ring, by lifecycle state now",
            None,
            MetricType::Gauge,
        )?;
        for (key_state, label) in KEY_STATES {
            let count = ring
                .keys()
                .into_iter()
                .filter(|key| ring.state_of(key, now) == key_state)
                .count();
            let labels = [("state", label)];
            ConstGauge::new(count as i64).encode(by_state.encode_family(&labels)?)?;
        }

        let signing_kid = ring.signing_key(now).map_or("", |key| &*key.kid);
        let labels = [
            ("fingerprint", ring.fingerprint()),
            ("signing_kid", signing_kid),
        ];
        encoder
            .encode_descriptor(
                "sessiond_key_ring",
                "The loaded ring: its fingerprint (equal on replicas that loaded the same key \
                 files) and the kid that signs now",
                None,
                MetricType::Info,
            )?
            .encode_info(&labels)?;

        let ready = readiness(state).is_ok();
        ConstGauge::new(i64::from(ready)).encode(encoder.encode_descriptor(
            "sessiond_ready",
            "1 when /readyz returns 200, else 0",
            None,
            MetricType::Gauge,
        )?)
    }

    fn encode_latency(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (buckets, sum, count) = self.state.metrics.latency_snapshot();
        encoder
            .encode_descriptor(
                "sessiond_session_request_duration",
                "Time to handle a session request, until its response is built",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}
