//! `/healthz`, `/readyz`, `/metrics` and the graceful stop, against the real
//! binary.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use chrono::{Duration as Span, Utc};
use common::tokens::write_key;
use common::{TestServer, client, set_cookie_token};
use jsonwebtoken::Algorithm;
use serde_json::Value;
use sessiond::keys::store;

const SESSION: &str = "/ccstore/v1/metering/session";
const ADMIN_CREDENTIAL: &str = "ops-probe-test-credential-0123456789abcdef";

fn get_json(url: &str) -> (u16, Value) {
    let response = client().get(url).send().expect("request");
    let status = response.status().as_u16();
    (status, response.json().expect("JSON body"))
}

/// Polls `url` until it returns `status`; false after `timeout`.
fn wait_for_status(url: &str, status: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if client()
            .get(url)
            .send()
            .is_ok_and(|r| r.status().as_u16() == status)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Finds the value of the sample `name` (with its labels, as written) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn readyz_reports_ring() {
    let keys = tempfile::tempdir().expect("temp dir");
    let key = write_key(keys.path(), "ready-a", Some(Utc::now() - Span::minutes(1)));
    let first = TestServer::builder().keys_dir(keys.path()).start();
    let second = TestServer::builder().keys_dir(keys.path()).start();

    let (health_status, health) = get_json(&first.url("/healthz"));
    let (status, ready) = get_json(&first.url("/readyz"));
    let (_, other) = get_json(&second.url("/readyz"));

    assert_eq!(health_status, 200);
    assert_eq!(health, serde_json::json!({"status": "ok"}));
    assert_eq!(status, 200);
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["signing_kid"], &*key.kid);
    assert_eq!(ready["keys"], 1);
    let fingerprint = ready["fingerprint"].as_str().expect("fingerprint");
    assert_eq!(fingerprint.len(), 16, "{fingerprint}");
    assert_eq!(other["fingerprint"], fingerprint, "same files, same value");
    assert!(!ready.to_string().contains(&key.fingerprint));

    write_key(keys.path(), "ready-b", None);
    first.signal("HUP");
    assert!(first.wait_for_log("keys reloaded trigger=sighup", Duration::from_secs(5)));
    let (_, reloaded) = get_json(&first.url("/readyz"));

    assert_eq!(reloaded["keys"], 2);
    assert_eq!(
        reloaded["signing_kid"], &*key.kid,
        "a verify-only key does not sign"
    );
    assert_ne!(reloaded["fingerprint"], fingerprint, "the ring changed");
}

#[test]
fn readyz_503_without_signing_key() {
    let keys = tempfile::tempdir().expect("temp dir");
    let now = Utc::now();
    let key = store::generate_key(
        Some("short-lived".to_owned()),
        Algorithm::HS256,
        now,
        Some(now - Span::minutes(1)),
        Some(now + Span::seconds(2)),
    )
    .expect("generates");
    store::write_new_key(keys.path(), &key).expect("writes");
    let server = TestServer::builder().keys_dir(keys.path()).start();

    let turned = wait_for_status(&server.url("/readyz"), 503, Duration::from_secs(10));
    let (_, error) = get_json(&server.url("/readyz"));
    let (health_status, _) = get_json(&server.url("/healthz"));
    let metrics = client()
        .get(server.admin_url("/metrics"))
        .send()
        .expect("metrics")
        .text()
        .expect("text");

    assert!(turned, "/readyz stayed 200 after the only key retired");
    assert_eq!(error["errorCode"], "10006");
    assert_eq!(error["status"], "503");
    assert_eq!(error["devMessage"], "no_signing_key");
    assert_eq!(health_status, 200, "the process is still up");
    assert_eq!(sample(&metrics, "sessiond_ready"), Some(0.0));
    assert_eq!(
        sample(&metrics, "sessiond_keys{state=\"retired\"}"),
        Some(1.0)
    );
}

#[test]
fn metrics_count_requests_without_credential() {
    let workdir = tempfile::tempdir().expect("temp dir");
    let credential_file = workdir.path().join("admin-token");
    std::fs::write(&credential_file, format!("{ADMIN_CREDENTIAL}\n")).expect("writes");
    let server = TestServer::builder()
        .env(
            "SESSIOND_ADMIN_TOKEN_FILE",
            credential_file.to_str().expect("UTF-8 path"),
        )
        .start();
    let http = client();
    let first = http.get(server.url(SESSION)).send().expect("first");
    let token = set_cookie_token(&first).expect("cookie");
    for _ in 0..2 {
        http.get(server.url(SESSION))
            .header("cookie", format!("session_token-store={token}"))
            .send()
            .expect("valid");
    }
    http.get(server.url(SESSION))
        .header("x-cc-session-token", "not-a-token")
        .send()
        .expect("malformed");
    let kid = common::tokens::kid_of(&token);

    let response = http
        .get(server.admin_url("/metrics"))
        .send()
        .expect("metrics");
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"].clone();
    let text = response.text().expect("text");

    assert_eq!(status, 200, "no credential needed");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let requests = |outcome: &str, reason: &str| {
        let name =
            format!("sessiond_session_requests_total{{outcome=\"{outcome}\",reason=\"{reason}\"}}");
        sample(&text, &name)
    };
    assert_eq!(requests("valid", "valid"), Some(2.0));
    assert_eq!(requests("new_session", "absent"), Some(1.0));
    assert_eq!(requests("new_session", "malformed"), Some(1.0));
    assert_eq!(requests("new_session", "expired"), Some(0.0));
    assert_eq!(sample(&text, "sessiond_sessions_started_total"), Some(2.0));
    let verified = format!("sessiond_token_verifications_total{{kid=\"{kid}\"}}");
    assert_eq!(sample(&text, &verified), Some(2.0));
    let minted = format!("sessiond_tokens_minted_total{{kid=\"{kid}\"}}");
    assert_eq!(sample(&text, &minted), Some(2.0));
    assert_eq!(sample(&text, "sessiond_keys{state=\"signing\"}"), Some(1.0));
    assert_eq!(sample(&text, "sessiond_ready"), Some(1.0));
    assert_eq!(
        sample(&text, "sessiond_session_request_duration_seconds_count"),
        Some(4.0)
    );
    assert!(text.contains("sessiond_key_reloads_total "), "{text}");
    assert!(
        text.contains("sessiond_key_reload_failures_total "),
        "{text}"
    );
    assert!(!text.contains(&token), "a token reached /metrics");
}

#[test]
fn probe_paths_allow_get_and_head() {
    let server = TestServer::start();
    let http = client();

    for url in [
        server.url("/healthz"),
        server.url("/readyz"),
        server.admin_url("/metrics"),
    ] {
        let head = http.head(&url).send().expect("HEAD");
        let post = http.post(&url).send().expect("POST");

        assert_eq!(head.status().as_u16(), 200, "HEAD {url}");
        assert_eq!(post.status().as_u16(), 405, "POST {url}");
        assert_eq!(post.headers()["allow"], "GET, HEAD", "POST {url}");
    }
    let public_metrics = http.get(server.url("/metrics")).send().expect("GET");
    assert_eq!(
        public_metrics.status().as_u16(),
        404,
        "metrics only on admin"
    );
}

#[test]
fn sigterm_turns_readyz_503_then_exits_0() {
    let mut server = TestServer::builder()
        .env("SESSIOND_SHUTDOWN_DELAY", "2")
        .env("SESSIOND_DRAIN_TIMEOUT", "5")
        .start();
    let stopped_at = Instant::now();

    server.signal("TERM");
    let turned = wait_for_status(&server.url("/readyz"), 503, Duration::from_secs(1));
    let turned_after = stopped_at.elapsed();
    let (_, error) = get_json(&server.url("/readyz"));
    let (health_status, _) = get_json(&server.url("/healthz"));
    let session = client().get(server.url(SESSION)).send().expect("session");
    let session_status = session.status().as_u16();
    let exit = server.wait_exit(Duration::from_secs(15));

    assert!(turned, "/readyz still 200 one second after SIGTERM");
    assert!(turned_after < Duration::from_secs(1), "{turned_after:?}");
    assert_eq!(error["devMessage"], "stopping");
    assert_eq!(health_status, 200, "serves during the shutdown delay");
    assert_eq!(session_status, 200, "serves during the shutdown delay");
    assert_eq!(exit, Some(0));
    assert!(stopped_at.elapsed() >= Duration::from_secs(2), "delay kept");
    assert!(server.logs().contains("sessiond stopped"));
}

#[test]
fn sigterm_closes_idle_connection_and_exits() {
    let mut server = TestServer::builder()
        .env("SESSIOND_DRAIN_TIMEOUT", "30")
        .start();
    let address = server.public.trim_start_matches("http://").to_owned();
    let mut idle = TcpStream::connect(&address).expect("connects");
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").expect("writes");
    let mut first = [0u8; 512];
    let read = idle.read(&mut first).expect("response");
    assert!(first[..read].starts_with(b"HTTP/1.1 200"));
    let stopped_at = Instant::now();

    server.signal("TERM");
    let mut rest = Vec::new();
    let closed = idle.read_to_end(&mut rest);
    let exit = server.wait_exit(Duration::from_secs(10));

    assert!(closed.is_ok(), "closed with an error: {closed:?}");
    assert!(rest.is_empty(), "no data after the response");
    assert_eq!(exit, Some(0));
    assert!(
        stopped_at.elapsed() < Duration::from_secs(5),
        "an idle keep-alive connection held the stop for {:?}",
        stopped_at.elapsed()
    );
}
