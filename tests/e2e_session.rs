//! The public endpoint against the real binary: the cookie-jar and header
//! walkthroughs, new sessions for forged and expired tokens, 405 on POST,
//! HEAD on the wire, and the per-request debug log lines.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::tokens::{claims_at, craft, valid_token, write_key};
use common::{TestServer, client, set_cookie_token};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

const PATH: &str = "/ccstore/v1/metering/session";
const TOKEN_HEADER: &str = "x-cc-session-token";
const LOG_WAIT: Duration = Duration::from_secs(5);

/// Asserts that no token of `tokens` appears in the server's logs.
fn assert_logs_free_of(server: &TestServer, tokens: &[&str]) {
    let logs = server.logs();
    for token in tokens {
        assert!(!token.is_empty(), "an empty token was collected");
        assert!(
            !logs.contains(token),
            "a token reached the logs: {}…",
            &token[..12]
        );
    }
}

fn body_of(response: reqwest::blocking::Response) -> Value {
    response.json().expect("JSON body")
}

#[test]
fn cookie_jar_walkthrough() {
    let server = TestServer::builder()
        .env("SESSIOND_COOKIE_SECURE", "false")
        .start();
    let jar_client = reqwest::blocking::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client builds");

    let first = jar_client
        .get(server.url(PATH))
        .send()
        .expect("first request");
    let first_token = set_cookie_token(&first).expect("first response sets the cookie");
    let first_body = body_of(first);
    let second = jar_client
        .get(server.url(PATH))
        .send()
        .expect("second request");
    let second_token = set_cookie_token(&second).expect("second response sets the cookie");
    let second_body = body_of(second);

    assert_eq!(first_body, json!({"valid": false}), "first request");
    assert_eq!(second_body, json!({"valid": true}), "second request");
    assert_eq!(second_token, first_token, "the jar's token is kept");
    assert_logs_free_of(&server, &[&first_token]);
}

#[test]
fn header_walkthrough() {
    let server = TestServer::start();
    let http = client();

    let first = http
        .get(server.url(PATH))
        .header(TOKEN_HEADER, "")
        .send()
        .expect("first request");
    let echoed = first
        .headers()
        .get(TOKEN_HEADER)
        .expect("first response echoes a token")
        .to_str()
        .expect("ASCII token")
        .to_owned();
    let first_cookie = set_cookie_token(&first);
    let first_body = body_of(first);
    let second = http
        .get(server.url(PATH))
        .header(TOKEN_HEADER, &echoed)
        .send()
        .expect("second request");
    let echoed_again = second.headers().get(TOKEN_HEADER).cloned();
    let second_body = body_of(second);

    assert_eq!(first_body, json!({"valid": false}), "first request");
    assert_eq!(
        first_cookie.as_deref(),
        Some(echoed.as_str()),
        "cookie and echo agree"
    );
    assert_eq!(second_body, json!({"valid": true}), "second request");
    assert_eq!(
        echoed_again.as_ref().map(|v| v.to_str().expect("ASCII")),
        Some(echoed.as_str()),
        "the header token is kept"
    );
    assert_logs_free_of(&server, &[&echoed]);
}

#[test]
fn forged_and_expired_get_new_session() {
    let keys = tempfile::tempdir().expect("temp dir");
    let key = write_key(keys.path(), "k1", Some(Utc::now()));
    let server = TestServer::builder().keys_dir(keys.path()).start();
    let http = client();
    let now = Utc::now().timestamp();
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": "k1"});
    let forged = craft(&[0x42; 32], Algorithm::HS256, &header, &claims_at(now));
    let mut expired_claims = claims_at(now - 7200);
    expired_claims["exp"] = json!(now - 3600);
    let expired = craft(key.secret(), Algorithm::HS256, &header, &expired_claims);
    let cases = [
        ("forged signature", forged.as_str(), "reason=bad_signature"),
        ("expired token", expired.as_str(), "reason=expired"),
    ];
    let mut seen = vec![forged.as_str(), expired.as_str()];
    let mut minted_tokens = Vec::new();

    for (case, token, reason) in cases {
        let response = http
            .get(server.url(PATH))
            .header("cookie", format!("session_token-store={token}"))
            .send()
            .expect("request");

        let minted = set_cookie_token(&response).unwrap_or_else(|| panic!("{case}: no cookie"));
        assert_eq!(body_of(response), json!({"valid": false}), "{case}: body");
        assert_ne!(minted, token, "{case}: the rejected token was kept");
        assert!(
            server.wait_for_log(reason, LOG_WAIT),
            "{case}: no log line with {reason}"
        );
        minted_tokens.push(minted);
    }

    seen.extend(minted_tokens.iter().map(String::as_str));
    assert_logs_free_of(&server, &seen);
    let secret = base64_secret(&key);
    assert!(!server.logs().contains(&secret), "the key reached the logs");
}

fn base64_secret(key: &sessiond::keys::Key) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.secret())
}

/// A description, one optional header field, and the log line it causes.
type LogCase = (&'static str, Option<(&'static str, String)>, &'static str);

#[test]
fn request_log_lines_name_outcome() {
    let keys = tempfile::tempdir().expect("temp dir");
    let key = write_key(keys.path(), "k1", Some(Utc::now()));
    let server = TestServer::builder().keys_dir(keys.path()).start();
    let http = client();
    let good = valid_token(&key);
    let wrong_issuer = craft(
        key.secret(),
        Algorithm::HS256,
        &json!({"alg": "HS256", "kid": "k1"}),
        &json!({"iss": "other", "jti": "x", "iat": Utc::now().timestamp(), "exp": Utc::now().timestamp() + 60}),
    );
    let requests: [LogCase; 5] = [
        (
            "no token",
            None,
            "outcome=new_session reason=absent source=none",
        ),
        (
            "valid cookie",
            Some(("cookie", format!("session_token-store={good}"))),
            "outcome=valid source=cookie kid=k1",
        ),
        (
            "valid header",
            Some((TOKEN_HEADER, good.clone())),
            "outcome=valid source=header kid=k1",
        ),
        (
            "wrong issuer",
            Some((TOKEN_HEADER, wrong_issuer.clone())),
            "outcome=new_session reason=wrong_issuer source=header",
        ),
        (
            "garbage cookie",
            Some(("cookie", "session_token-store=abc".to_owned())),
            "outcome=new_session reason=malformed source=cookie",
        ),
    ];
    let mut tokens = vec![good.clone(), wrong_issuer.clone()];

    for (case, field, line) in &requests {
        let mut request = http.get(server.url(PATH));
        if let Some((name, value)) = field {
            request = request.header(*name, value);
        }
        let response = request.send().expect("request");

        tokens.extend(set_cookie_token(&response));
        assert!(
            server.wait_for_log(line, LOG_WAIT),
            "{case}: no log line {line:?}"
        );
    }

    let logs = server.logs();
    let request_lines = logs.lines().filter(|l| l.contains(" outcome=")).count();
    assert_eq!(
        request_lines,
        requests.len(),
        "one log line per request:\n{logs}"
    );
    let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    assert_logs_free_of(&server, &token_refs);
}

#[test]
fn post_returns_405_model() {
    let server = TestServer::start();

    let token = "eyJhbGciOiJIUzI1NiJ9.eyJqdGkiOiJwb3N0In0.c2lnbmF0dXJlLW9mLXRoZS1wb3N0";

    let response = client()
        .post(server.url(PATH))
        .header("cookie", format!("session_token-store={token}"))
        .header(TOKEN_HEADER, token)
        .body(token)
        .send()
        .expect("request");

    assert_eq!(response.status().as_u16(), 405, "status");
    assert_eq!(
        response
            .headers()
            .get("allow")
            .map(|v| v.to_str().expect("ASCII")),
        Some("GET, HEAD"),
        "Allow"
    );
    assert!(
        response.headers().get("set-cookie").is_none(),
        "405 sets a cookie"
    );
    let body = body_of(response);
    assert_eq!(body["errorCode"], "10002", "errorCode");
    assert_eq!(body["status"], "405", "status member");
    assert_eq!(
        body["type"], "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.6",
        "type"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message"
    );
    let line = "outcome=error status=405 reason=method_not_allowed method=POST";
    assert!(server.wait_for_log(line, LOG_WAIT), "no log line {line:?}");
    assert_logs_free_of(&server, &[token]);
}

#[test]
fn unknown_path_returns_404_model() {
    let server = TestServer::start();
    let http = client();
    let session = http.get(server.url(PATH)).send().expect("session request");
    let token = set_cookie_token(&session).expect("a session cookie");
    let path = format!("/ccstore/v1/other/{token}");

    let response = http.get(server.url(&path)).send().expect("request");

    assert_eq!(response.status().as_u16(), 404, "status");
    let body = body_of(response);
    assert_eq!(body["errorCode"], "10001", "errorCode");
    assert_eq!(body["status"], "404", "status member");
    assert_eq!(body["o:errorPath"], path.as_str(), "o:errorPath");
    let line = "outcome=error status=404 reason=not_found method=GET";
    assert!(server.wait_for_log(line, LOG_WAIT), "no log line {line:?}");
    assert_logs_free_of(&server, &[&token]);
}

/// Sends `request` on a new connection and returns everything the server
/// wrote until it closed the connection.
fn raw_exchange(server: &TestServer, request: &str) -> String {
    let address = server.public.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("sets a timeout");
    stream.write_all(request.as_bytes()).expect("writes");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("reads to the end");
    String::from_utf8(response).expect("UTF-8 response")
}

/// Splits a raw response into its lower-cased header section and its body.
fn split_response(raw: &str) -> (String, String) {
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header section");
    (head.to_ascii_lowercase(), body.to_owned())
}

#[test]
fn parser_rejections_logged_once_a_second() {
    let server = TestServer::start();
    let request = format!("GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: a=\x7f\r\n\r\n");

    let started = Instant::now();
    for _ in 0..40 {
        let response = raw_exchange(&server, &request);
        assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    }
    let elapsed = started.elapsed();

    assert!(server.wait_for_log("stream error", LOG_WAIT));
    // Lines of the last requests, if any were let through, arrive meanwhile.
    std::thread::sleep(Duration::from_millis(300));
    let lines = server.logs().matches("stream error").count() as u64;
    assert!(
        lines <= elapsed.as_secs() + 2,
        "{lines} lines for 40 rejected requests in {elapsed:?}"
    );
}

#[test]
fn head_sends_no_body() {
    let server = TestServer::start();
    let request = |method: &str, path: &str| {
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    };

    let (get_head, get_body) = split_response(&raw_exchange(&server, &request("GET", PATH)));
    let (head_head, head_body) = split_response(&raw_exchange(&server, &request("HEAD", PATH)));
    let (missing_head, missing_body) =
        split_response(&raw_exchange(&server, &request("HEAD", "/nowhere")));

    assert_eq!(get_body, r#"{"valid":false}"#, "GET body");
    assert!(
        head_head.starts_with("http/1.1 200"),
        "HEAD status:\n{head_head}"
    );
    assert_eq!(head_body, "", "HEAD body");
    for field in [
        "set-cookie: session_token-store=",
        "cache-control: no-store",
        "content-type: application/json",
    ] {
        assert!(get_head.contains(field), "GET lacks {field}");
        assert!(head_head.contains(field), "HEAD lacks {field}");
    }
    assert!(
        missing_head.starts_with("http/1.1 404"),
        "HEAD of an unknown path:\n{missing_head}"
    );
    assert_eq!(missing_body, "", "HEAD body of an unknown path");
}
