//! Key rotation on running servers: the admin API, hot reload (poll, SIGHUP,
//! unknown kid), two replicas sharing one folder, and load during rotations.

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::tokens::{kid_of, read_ring, valid_token, write_key};
use common::{ADMIN_TOKEN, TestServer, client, set_cookie_token};
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

const SESSION: &str = "/ccstore/v1/metering/session";

/// Sends `token` in the cookie; returns (valid, token in Set-Cookie).
fn check(http: &Client, server: &TestServer, token: Option<&str>) -> (bool, String) {
    let mut request = http.get(server.url(SESSION));
    if let Some(token) = token {
        request = request.header("cookie", format!("session_token-store={token}"));
    }
    let response = request.send().expect("session request");
    assert_eq!(response.status(), 200);
    let returned = set_cookie_token(&response).expect("Set-Cookie");
    let body: Value = response.json().expect("json body");
    (body["valid"] == json!(true), returned)
}

fn admin(http: &Client, server: &TestServer, method: &str, path: &str, body: Value) -> Response {
    let url = server.admin_url(path);
    let request = match method {
        "GET" => http.get(url),
        _ => http.post(url).json(&body),
    };
    request
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("admin request")
}

/// Polls `condition` every 50 ms until it is true or `timeout` passes.
fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn rotation_keeps_old_sessions() {
    let server = TestServer::builder().admin().start();
    let http = client();
    let (_, old_token) = check(&http, &server, None);
    let old_kid = kid_of(&old_token);

    let rotated = admin(
        &http,
        &server,
        "POST",
        "/admin/v1/rotate",
        json!({"kid": "next"}),
    );
    let (old_valid, old_returned) = check(&http, &server, Some(&old_token));
    let (_, new_token) = check(&http, &server, None);

    assert_eq!(rotated.status(), 201);
    assert!(old_valid, "old token lost its session after rotation");
    assert_eq!(
        old_returned, old_token,
        "old token was not kept byte for byte"
    );
    assert_eq!(
        kid_of(&new_token),
        "next",
        "new sessions are not signed by the new key"
    );

    let refused = admin(
        &http,
        &server,
        "POST",
        &format!("/admin/v1/keys/{old_kid}/retire"),
        json!({}),
    );
    let refused_body: Value = refused.json().expect("errorModel");
    assert_eq!(
        refused_body["status"], "409",
        "retire while tokens live: {refused_body}"
    );
    assert_eq!(refused_body["errorCode"], "20004");

    let retired = admin(
        &http,
        &server,
        "POST",
        &format!("/admin/v1/keys/{old_kid}/retire"),
        json!({"force": true}),
    );
    let (old_valid_after, replaced) = check(&http, &server, Some(&old_token));
    assert_eq!(retired.status(), 200);
    assert!(!old_valid_after, "token of a retired key is still valid");
    assert_eq!(kid_of(&replaced), "next");

    let pruned: Value = admin(&http, &server, "POST", "/admin/v1/prune", json!({}))
        .json()
        .expect("json");
    assert_eq!(pruned["pruned"], json!([old_kid]));
    assert!(
        !server.keys_dir.join(format!("{old_kid}.json")).exists(),
        "pruned file remains"
    );
    let listed: Value = admin(&http, &server, "GET", "/admin/v1/keys", json!({}))
        .json()
        .expect("json");
    assert_eq!(listed["items"].as_array().expect("items").len(), 1);
    assert!(
        server.logs().contains("admin op=rotate kid=next"),
        "no audit line"
    );
}

#[test]
fn replica_accepts_new_kid_at_once() {
    let folder = tempfile::tempdir().expect("temp dir");
    write_key(folder.path(), "first", Some(Utc::now()));
    let a = TestServer::builder()
        .admin()
        .keys_dir(folder.path())
        .start();
    // B never polls during the test: only the unknown kid can make it reload.
    let b = TestServer::builder()
        .keys_dir(folder.path())
        .env("SESSIOND_RELOAD_INTERVAL", "3600")
        .start();
    let http = client();

    let rotated = admin(
        &http,
        &a,
        "POST",
        "/admin/v1/rotate",
        json!({"kid": "second"}),
    );
    let (_, minted_by_a) = check(&http, &a, None);
    let (valid_on_b, returned_by_b) = check(&http, &b, Some(&minted_by_a));

    assert_eq!(rotated.status(), 201);
    assert_eq!(kid_of(&minted_by_a), "second");
    assert!(
        valid_on_b,
        "replica B minted a new session for a valid token of the new key"
    );
    assert_eq!(returned_by_b, minted_by_a);
    assert!(
        b.logs().contains("keys reloaded trigger=unknown_kid"),
        "B did not reload on the new kid"
    );
}

#[test]
fn replica_poll_sees_retirement() {
    let folder = tempfile::tempdir().expect("temp dir");
    let first = write_key(
        folder.path(),
        "first",
        Some(Utc::now() - chrono::Duration::seconds(60)),
    );
    write_key(folder.path(), "second", Some(Utc::now()));
    let a = TestServer::builder()
        .admin()
        .keys_dir(folder.path())
        .start();
    let b = TestServer::builder()
        .keys_dir(folder.path())
        .env("SESSIOND_RELOAD_INTERVAL", "1")
        .start();
    let http = client();
    let old_token = valid_token(&first);
    assert!(
        check(&http, &b, Some(&old_token)).0,
        "old token invalid before retirement"
    );

    let retired = admin(
        &http,
        &a,
        "POST",
        "/admin/v1/keys/first/retire",
        json!({"force": true}),
    );
    let b_sees_retirement = eventually(Duration::from_secs(10), || {
        !check(&http, &b, Some(&old_token)).0
    });

    assert_eq!(retired.status(), 200);
    assert!(
        b_sees_retirement,
        "replica B kept accepting a retired key after its poll interval"
    );
    assert!(
        b.logs().contains("keys reloaded trigger=poll"),
        "B's poll did not reload"
    );
}

#[test]
fn broken_file_keeps_last_ring() {
    let folder = tempfile::tempdir().expect("temp dir");
    let key = write_key(folder.path(), "good", Some(Utc::now()));
    let server = TestServer::builder()
        .keys_dir(folder.path())
        .env("SESSIOND_RELOAD_INTERVAL", "1")
        .start();
    let http = client();
    let token = valid_token(&key);

    std::fs::write(folder.path().join("broken.json"), "{\"kty\":").expect("writes");
    let warned = server.wait_for_log("broken.json", Duration::from_secs(10));
    let (valid, returned) = check(&http, &server, Some(&token));

    assert!(warned, "no warning naming the broken file");
    assert!(valid, "a broken file ended a valid session");
    assert_eq!(returned, token);
    let logs = server.logs();
    let warning = logs
        .lines()
        .find(|l| l.contains("broken.json"))
        .expect("warning line");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("keeping the loaded keys"), "{warning}");
}

#[test]
fn sighup_reloads_at_once() {
    let folder = tempfile::tempdir().expect("temp dir");
    write_key(
        folder.path(),
        "before",
        Some(Utc::now() - chrono::Duration::seconds(60)),
    );
    let server = TestServer::builder()
        .keys_dir(folder.path())
        .env("SESSIOND_RELOAD_INTERVAL", "3600")
        .start();
    let http = client();
    write_key(folder.path(), "after", Some(Utc::now()));

    server.signal("HUP");
    let reloaded = server.wait_for_log("trigger=sighup", Duration::from_secs(5));
    let (_, minted) = check(&http, &server, None);

    assert!(reloaded, "SIGHUP did not reload:\n{}", server.logs());
    assert_eq!(kid_of(&minted), "after");
}

#[test]
fn unknown_kid_flood_rate_limited() {
    let server = TestServer::start();
    let http = client();
    let ring = read_ring(&server.keys_dir);
    let key = ring.keys()[0].clone();
    let started = Instant::now();

    for i in 0..300 {
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": format!("unknown-{i}")});
        let claims = common::tokens::claims_at(Utc::now().timestamp());
        let token = common::tokens::craft(
            key.secret(),
            jsonwebtoken::Algorithm::HS256,
            &header,
            &claims,
        );
        let (valid, _) = check(&http, &server, Some(&token));
        assert!(!valid, "token with unknown kid {i} accepted");
    }
    let elapsed_secs = started.elapsed().as_secs_f64().ceil() as usize;

    let reloads = server.logs().matches("trigger=unknown_kid").count();
    assert!(reloads >= 1, "an unknown kid caused no reload");
    assert!(
        reloads <= elapsed_secs + 1,
        "{reloads} reloads in {elapsed_secs} s: more than one per second"
    );
}

#[test]
fn load_during_rotations_loses_nothing() {
    let server = TestServer::builder().admin().start();
    let threads = 4;
    let requests_per_thread = 150;

    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let url = server.url(SESSION);
            std::thread::spawn(move || {
                let http = client();
                let mut token: Option<String> = None;
                let (mut lost, mut server_errors) = (0, 0);
                for _ in 0..requests_per_thread {
                    let mut request = http.get(&url);
                    if let Some(token) = &token {
                        request = request.header("cookie", format!("session_token-store={token}"));
                    }
                    let response = request.send().expect("request");
                    if response.status().is_server_error() {
                        server_errors += 1;
                        continue;
                    }
                    let returned = set_cookie_token(&response).expect("Set-Cookie");
                    if token.as_ref().is_some_and(|t| *t != returned) {
                        lost += 1;
                    }
                    token = Some(returned);
                }
                (lost, server_errors)
            })
        })
        .collect();
    let http = client();
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(100));
        let response = admin(
            &http,
            &server,
            "POST",
            "/admin/v1/rotate",
            json!({"kid": format!("r{i}")}),
        );
        assert_eq!(response.status(), 201, "rotation {i}");
    }
    let results: Vec<(u32, u32)> = workers
        .into_iter()
        .map(|w| w.join().expect("worker"))
        .collect();

    let lost: u32 = results.iter().map(|r| r.0).sum();
    let server_errors: u32 = results.iter().map(|r| r.1).sum();
    println!(
        "requests={} lost_sessions={lost} 5xx={server_errors}",
        threads * requests_per_thread
    );
    assert_eq!(server_errors, 0, "5xx during rotations");
    assert_eq!(lost, 0, "valid sessions lost during rotations");
}

#[test]
fn admin_routes_require_credential() {
    let server = TestServer::builder().admin().start();
    let http = client();
    let (_, session_token) = check(&http, &server, None);
    let routes = [
        ("GET", "/admin/v1/keys"),
        ("POST", "/admin/v1/keys"),
        ("GET", "/admin/v1/keys/some-kid"),
        ("POST", "/admin/v1/keys/some-kid/activate"),
        ("POST", "/admin/v1/keys/some-kid/retire"),
        ("POST", "/admin/v1/rotate"),
        ("POST", "/admin/v1/prune"),
    ];
    let credentials = [
        None,
        Some("Bearer wrong-credential-0123456789abcdef".to_owned()),
        Some(format!("Bearer {session_token}")),
        Some(format!("Basic {ADMIN_TOKEN}")),
        Some(format!("Bearer{ADMIN_TOKEN}")),
    ];

    let mut bodies = Vec::new();
    for (method, path) in routes {
        for credential in &credentials {
            let url = server.admin_url(path);
            let mut request = if method == "GET" {
                http.get(url)
            } else {
                http.post(url)
            };
            if let Some(value) = credential {
                request = request.header("authorization", value);
            }

            let response = request.send().expect("admin request");

            let case = format!(
                "{method} {path} with {:?}",
                credential.as_ref().map(|c| &c[..6])
            );
            assert_eq!(response.status(), 401, "{case}");
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap_or(""));
            assert!(
                challenge.is_some_and(|v| v.starts_with("Bearer")),
                "{case}: {challenge:?}"
            );
            bodies.push(response.text().expect("body"));
        }
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "401 bodies differ by cause"
    );
    let body: Value = serde_json::from_str(&bodies[0]).expect("errorModel");
    assert_eq!(body["errorCode"], "20001");
    assert_eq!(body["status"], "401");
    let logs = server.logs();
    assert!(!logs.contains(ADMIN_TOKEN), "admin credential in logs");
    assert!(!logs.contains(&session_token), "session token in logs");
}

#[test]
fn lowercase_scheme_accepted() {
    let server = TestServer::builder().admin().start();

    let response = client()
        .get(server.admin_url("/admin/v1/keys"))
        .header("authorization", format!("bearer {ADMIN_TOKEN}"))
        .send()
        .expect("admin request");

    assert_eq!(response.status(), 200);
}

#[test]
fn key_operations_off_without_credential() {
    let server = TestServer::start();

    for (method, path) in [
        ("GET", "/admin/v1/keys"),
        ("POST", "/admin/v1/rotate"),
        ("DELETE", "/admin/v1/keys"),
    ] {
        let url = server.admin_url(path);
        let request = match method {
            "GET" => client().get(url),
            "POST" => client().post(url),
            _ => client().delete(url),
        };

        let response = request
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .expect("admin request");

        assert_eq!(response.status(), 404, "{method} {path}");
        let body: Value = response.json().expect("errorModel");
        assert_eq!(body["status"], "404", "{method} {path}");
    }
}

#[test]
fn admin_errors_are_error_models() {
    let server = TestServer::builder().admin().start();
    let http = client();
    let cases = [
        (
            "POST",
            "/admin/v1/keys",
            json!({"alg": "RS256"}),
            400,
            "alg",
        ),
        ("POST", "/admin/v1/keys", json!({"kid": "../x"}), 400, "kid"),
        (
            "POST",
            "/admin/v1/keys",
            json!({"sign_from": "soon"}),
            400,
            "sign_from",
        ),
        (
            "POST",
            "/admin/v1/keys/missing/activate",
            json!({}),
            404,
            "kid",
        ),
        ("POST", "/admin/v1/rotate", json!({"at": "+1w"}), 400, "at"),
    ];
    for (method, path, body, status, field) in cases {
        let response = admin(&http, &server, method, path, body.clone());

        assert_eq!(response.status().as_u16(), status, "{path} {body}");
        let model: Value = response.json().expect("errorModel");
        assert_eq!(model["status"], status.to_string(), "{path} {body}");
        assert_eq!(model["o:errorPath"], field, "{path} {body}");
        assert!(
            model["errorCode"]
                .as_str()
                .is_some_and(|c| c.parse::<u32>().is_ok()),
            "{model}"
        );
    }

    let unknown_member = admin(
        &http,
        &server,
        "POST",
        "/admin/v1/keys",
        json!({"secret": "x"}),
    );
    assert_eq!(unknown_member.status(), 400);
    let prune_with_member = admin(
        &http,
        &server,
        "POST",
        "/admin/v1/prune",
        json!({"all": true}),
    );
    assert_eq!(
        prune_with_member.status(),
        400,
        "prune accepted an unknown member"
    );
    let as_text = http
        .post(server.admin_url("/admin/v1/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/plain")
        .body(r#"{"kid": "text"}"#)
        .send()
        .expect("admin request");
    assert_eq!(as_text.status(), 415, "a text/plain body was accepted");
    let duplicate = admin(
        &http,
        &server,
        "POST",
        "/admin/v1/keys",
        json!({"kid": "dup"}),
    );
    assert_eq!(duplicate.status(), 201);
    let again = admin(
        &http,
        &server,
        "POST",
        "/admin/v1/keys",
        json!({"kid": "dup"}),
    );
    assert_eq!(again.status(), 409);
}
