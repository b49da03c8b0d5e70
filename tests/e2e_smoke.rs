//! The newcomer's walkthrough against the real binary: a first request
//! starts a session, the second keeps it.

mod common;

use common::{TestServer, client, set_cookie_token};

#[test]
fn cookie_session_survives_second_request() {
    let server = TestServer::start();
    let http = client();

    let first = http
        .get(server.url("/ccstore/v1/metering/session"))
        .send()
        .expect("first request");
    let token = set_cookie_token(&first).expect("first response sets the cookie");
    let first_body: serde_json::Value = first.json().expect("json body");
    let second = http
        .get(server.url("/ccstore/v1/metering/session"))
        .header("cookie", format!("session_token-store={token}"))
        .send()
        .expect("second request");

    assert_eq!(first_body, serde_json::json!({"valid": false}));
    assert_eq!(set_cookie_token(&second).as_deref(), Some(token.as_str()));
    assert_eq!(
        second.json::<serde_json::Value>().expect("json"),
        serde_json::json!({"valid": true})
    );
    assert!(!server.logs().contains(&token), "a token reached the logs");
}

#[test]
fn post_gets_405_error_model() {
    let server = TestServer::start();

    let response = client()
        .post(server.url("/ccstore/v1/metering/session"))
        .send()
        .expect("request");

    assert_eq!(response.status(), 405);
    assert_eq!(
        response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap_or("")),
        Some("GET, HEAD")
    );
    let body: serde_json::Value = response.json().expect("errorModel");
    assert_eq!(body["status"], "405");
    assert_eq!(body["errorCode"], "10002");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("GET, HEAD")),
        "{body}"
    );
}
