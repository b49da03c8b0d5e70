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
