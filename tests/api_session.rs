//! The public endpoint through the real route table (`public_app`), in
//! process: token source and precedence, every class of invalid token, the
//! exact cookie for each configuration, the header echo, HEAD, and the
//! errorModel bodies of 404 and 405.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::test::{self, TestRequest};
use actix_web::web::{self, Bytes};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use chrono::{Duration, Utc};
use clap::Parser;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use sessiond::app::public_app;
use sessiond::config::Cli;
use sessiond::keys::jwk::algorithm_name;
use sessiond::keys::live::LiveRing;
use sessiond::keys::{Key, store};
use sessiond::state::{AppState, Clock};
use sessiond::token::verify_token;

const PATH: &str = "/ccstore/v1/metering/session";
const COOKIE: &str = "session_token-store";
const TOKEN_HEADER: &str = "x-cc-session-token";

/// A keys folder, the state a server would build from it, and its keys.
struct Fixture {
    state: web::Data<AppState>,
    /// HS256, signs now.
    signer: Key,
    /// HS256, verify only: the key that signed before `signer`.
    previous: Key,
    /// HS256, signs from tomorrow; verifies already.
    scheduled: Key,
    /// HS256, `verify_until` an hour ago.
    retired: Key,
    /// HS384, verify only.
    hs384: Key,
    /// HS512, verify only.
    hs512: Key,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A fixture configured with `args`, the server's command-line flags.
    fn with_args(args: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = Utc::now();
        let hour = Duration::hours(1);
        let key = |kid: &str, alg, sign_from, verify_until| {
            let key = store::generate_key(Some(kid.into()), alg, now - hour * 2, sign_from, None)
                .expect("generates")
                .with_lifecycle(sign_from, verify_until);
            store::write_new_key(dir.path(), &key).expect("writes");
            key
        };
        let signer = key("k1", Algorithm::HS256, Some(now - hour), None);
        let previous = key("k0", Algorithm::HS256, None, None);
        let scheduled = key("k2", Algorithm::HS256, Some(now + hour * 24), None);
        let retired = key("gone", Algorithm::HS256, None, Some(now - hour));
        let hs384 = key("k384", Algorithm::HS384, None, None);
        let hs512 = key("k512", Algorithm::HS512, None, None);

        let mut argv = vec!["sessiond", "--keys-dir"];
        let dir_arg = dir.path().to_str().expect("UTF-8 temp path").to_owned();
        argv.push(&dir_arg);
        argv.extend_from_slice(args);
        let config = Cli::try_parse_from(argv)
            .expect("valid flags")
            .serve
            .into_config()
            .expect("valid settings");
        let (ring, digest) = store::load_ring(dir.path(), now).expect("keys load");
        let keys = Arc::new(LiveRing::new(ring, digest, dir.path()));
        let state = web::Data::new(AppState::new(
            keys,
            config.policy,
            config.cookie,
            Clock::default(),
        ));

        Fixture {
            state,
            signer,
            previous,
            scheduled,
            retired,
            hs384,
            hs512,
            _dir: dir,
        }
    }

    fn new() -> Fixture {
        Fixture::with_args(&[])
    }

    /// Sends `request` through a fresh instance of the public app.
    async fn send(&self, request: TestRequest) -> Reply {
        let app = test::init_service(public_app(self.state.clone())).await;
        let response = test::call_service(&app, request.to_request()).await;
        let status = response.status();
        let headers = response.headers().clone();
        let body = test::read_body(response).await;
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Sends a GET of the endpoint with the given header fields, in order.
    async fn get(&self, fields: &[(&str, &str)]) -> Reply {
        let mut request = TestRequest::get().uri(PATH);
        for &(name, value) in fields {
            request = request.append_header((name, value));
        }
        self.send(request).await
    }

    /// True when `token` verifies with the fixture's ring now.
    fn verifies(&self, token: &str) -> bool {
        let ring = self.state.keys.load();
        verify_token(token, &ring, &self.state.policy, Utc::now()).is_ok()
    }
}

/// What a response came back with.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all("set-cookie")
            .map(|v| v.to_str().expect("ASCII Set-Cookie"))
            .collect()
    }

    /// Returns the token in our `Set-Cookie`, if there is one.
    fn cookie_token(&self) -> Option<&str> {
        let value = self.set_cookies().into_iter().next()?;
        let pair = value.split(';').next()?;
        pair.strip_prefix("session_token-store=")
    }

    fn echo(&self) -> Option<&str> {
        self.header(TOKEN_HEADER)
    }

    fn body_text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

fn now() -> i64 {
    Utc::now().timestamp()
}

fn b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

/// Signs the raw JSON texts `header` and `claims` with `secret` and `alg`.
fn sign_raw(secret: &[u8], alg: Algorithm, header: &str, claims: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, alg).expect("signs");
    format!("{input}.{signature}")
}

fn header_for(key: &Key) -> Value {
    json!({"alg": algorithm_name(key.alg), "typ": "JWT", "kid": &*key.kid})
}

fn claims() -> Value {
    let now = now();
    json!({"iss": "sessiond", "jti": "api-session", "iat": now - 60, "exp": now + 600})
}

/// Signs `header` and `claims` with `key` and the key's algorithm.
fn sign(key: &Key, header: &Value, claims: &Value) -> String {
    sign_raw(
        key.secret(),
        key.alg,
        &header.to_string(),
        &claims.to_string(),
    )
}

/// Signs a token that the default policy accepts with `key`.
fn valid(key: &Key) -> String {
    sign(key, &header_for(key), &claims())
}

fn with_claim(key: &Key, name: &str, value: Value) -> String {
    let mut claims = claims();
    claims[name] = value;
    sign(key, &header_for(key), &claims)
}

fn without_claim(key: &Key, name: &str) -> String {
    let mut claims = claims();
    claims.as_object_mut().expect("object").remove(name);
    sign(key, &header_for(key), &claims)
}

fn with_header(key: &Key, name: &str, value: Value) -> String {
    let mut header = header_for(key);
    header[name] = value;
    sign(key, &header, &claims())
}

fn segment_json(token: &str, index: usize) -> Value {
    let segment = token.split('.').nth(index).expect("segment");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).expect("base64url")).expect("JSON")
}

/// Asserts that `reply` starts a new session signed by the fixture's signer.
fn assert_new_session(fixture: &Fixture, reply: &Reply, presented: &str, case: &str) {
    assert_eq!(reply.status, StatusCode::OK, "{case}: status");
    assert_eq!(reply.body_text(), r#"{"valid":false}"#, "{case}: body");
    let minted = reply
        .cookie_token()
        .unwrap_or_else(|| panic!("{case}: no session cookie"));
    assert_ne!(minted, presented, "{case}: the rejected token was kept");
    assert!(
        fixture.verifies(minted),
        "{case}: minted token does not verify"
    );
    assert_eq!(
        segment_json(minted, 0)["kid"],
        "k1",
        "{case}: minted by a key other than the signer"
    );
}

/// Asserts that `reply` keeps `token` as the session.
fn assert_kept(reply: &Reply, token: &str, case: &str) {
    assert_eq!(reply.status, StatusCode::OK, "{case}: status");
    assert_eq!(reply.body_text(), r#"{"valid":true}"#, "{case}: body");
    assert_eq!(reply.cookie_token(), Some(token), "{case}: cookie token");
}

fn cookie(token: &str) -> String {
    format!("{COOKIE}={token}")
}

#[actix_web::test]
async fn no_token_starts_session() {
    let fixture = Fixture::new();

    let reply = fixture.get(&[]).await;

    assert_new_session(&fixture, &reply, "", "no token");
    assert_eq!(reply.set_cookies().len(), 1, "one Set-Cookie field");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.echo(), None, "echo without a request header field");
}

#[actix_web::test]
async fn valid_cookie_kept() {
    let fixture = Fixture::new();
    let token = valid(&fixture.signer);

    let reply = fixture.get(&[("cookie", &cookie(&token))]).await;

    assert_kept(&reply, &token, "valid cookie");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.echo(), None, "echo without a request header field");
}

#[actix_web::test]
async fn valid_header_kept_and_echoed() {
    let fixture = Fixture::new();
    let token = valid(&fixture.signer);

    let reply = fixture.get(&[(TOKEN_HEADER, &token)]).await;

    assert_kept(&reply, &token, "valid header");
    assert_eq!(reply.echo(), Some(token.as_str()), "echoed token");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

#[actix_web::test]
async fn minted_token_members() {
    let fixture = Fixture::new();
    let before = now();

    let reply = fixture.get(&[]).await;

    let token = reply.cookie_token().expect("session cookie");
    let header = segment_json(token, 0);
    let claims = segment_json(token, 1);
    assert_eq!(header, json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}));
    assert_eq!(claims["iss"], "sessiond", "iss");
    let iat = claims["iat"].as_i64().expect("integer iat");
    assert!((before..=now()).contains(&iat), "iat {iat} is not now");
    assert_eq!(claims["exp"].as_i64(), Some(iat + 3600), "exp is iat + TTL");
    let jti = claims["jti"].as_str().expect("string jti");
    let jti_bytes = URL_SAFE_NO_PAD.decode(jti).expect("base64url jti");
    assert_eq!(jti_bytes.len(), 16, "jti carries 128 bits");
    let members: Vec<&String> = claims.as_object().expect("object").keys().collect();
    assert_eq!(
        members.len(),
        4,
        "claims are iss, iat, exp, jti: {members:?}"
    );
}

#[actix_web::test]
async fn minted_sessions_differ() {
    let fixture = Fixture::new();

    let first = fixture.get(&[]).await;
    let second = fixture.get(&[]).await;

    let jti = |reply: &Reply| segment_json(reply.cookie_token().expect("cookie"), 1)["jti"].clone();
    assert_ne!(jti(&first), jti(&second), "two new sessions share a jti");
}

/// Where the token in effect comes from, for the precedence table.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// The token at this index of the table's tokens is kept as it is.
    Kept(usize),
    /// A new token is minted.
    Minted,
}

/// A description, the request's header fields, the outcome, and whether the
/// response echoes the token in `X-CC-Session-Token`.
type SourceCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, Outcome, bool);

#[actix_web::test]
async fn source_precedence_table() {
    let fixture = Fixture::new();
    let a = valid(&fixture.signer);
    let b = valid(&fixture.previous);
    let forged = sign_raw(
        fixture.previous.secret(),
        Algorithm::HS256,
        &header_for(&fixture.signer).to_string(),
        &claims().to_string(),
    );
    let tokens = [a.as_str(), b.as_str()];
    let quoted = format!("{COOKIE}=\"{a}\"");
    let twice_quoted = format!("{COOKIE}=\"\"{a}\"\"");
    let percent = format!("{COOKIE}={}", a.replace('.', "%2E"));
    let broken = format!("garbage; =x; {COOKIE}={a}; other=\"open; ; last=");
    let padded_header = format!("  {a}  ");
    let joined = format!("{a}, {a}");
    let cookie_a = cookie(&a);
    let cookie_b = cookie(&b);
    let both = format!("{cookie_a}; {cookie_b}");
    let first_bad = format!("{COOKIE}=not-a-token; {cookie_b}");
    let wrong_case = format!("Session_token-store={a}");
    let ours_empty = format!("{COOKIE}=; {cookie_b}");

    let cases: Vec<SourceCase> = vec![
        (
            "valid header alone",
            vec![(TOKEN_HEADER, &a)],
            Outcome::Kept(0),
            true,
        ),
        (
            "valid header beats valid cookie",
            vec![(TOKEN_HEADER, &a), ("cookie", &cookie_b)],
            Outcome::Kept(0),
            true,
        ),
        (
            "invalid header, valid cookie: no fallback",
            vec![(TOKEN_HEADER, &forged), ("cookie", &cookie_b)],
            Outcome::Minted,
            true,
        ),
        (
            "empty header uses the cookie",
            vec![(TOKEN_HEADER, ""), ("cookie", &cookie_b)],
            Outcome::Kept(1),
            true,
        ),
        (
            "blank header uses the cookie",
            vec![(TOKEN_HEADER, "   "), ("cookie", &cookie_b)],
            Outcome::Kept(1),
            true,
        ),
        (
            "empty header, no cookie",
            vec![(TOKEN_HEADER, "")],
            Outcome::Minted,
            true,
        ),
        (
            "header value with surrounding spaces",
            vec![(TOKEN_HEADER, &padded_header)],
            Outcome::Kept(0),
            true,
        ),
        (
            "two header fields with the same valid token",
            vec![(TOKEN_HEADER, &a), (TOKEN_HEADER, &a)],
            Outcome::Minted,
            true,
        ),
        (
            "two header fields, one empty",
            vec![
                (TOKEN_HEADER, ""),
                (TOKEN_HEADER, &a),
                ("cookie", &cookie_b),
            ],
            Outcome::Minted,
            true,
        ),
        (
            "two tokens joined in one header field",
            vec![(TOKEN_HEADER, &joined)],
            Outcome::Minted,
            true,
        ),
        (
            "cookie alone",
            vec![("cookie", &cookie_a)],
            Outcome::Kept(0),
            false,
        ),
        (
            "two valid cookies: the first wins",
            vec![("cookie", &both)],
            Outcome::Kept(0),
            false,
        ),
        (
            "invalid cookie before a valid one",
            vec![("cookie", &first_bad)],
            Outcome::Kept(1),
            false,
        ),
        (
            "empty cookie of our name before a valid one",
            vec![("cookie", &ours_empty)],
            Outcome::Kept(1),
            false,
        ),
        (
            "cookies across two Cookie fields",
            vec![("cookie", "theme=dark"), ("cookie", &cookie_b)],
            Outcome::Kept(1),
            false,
        ),
        (
            "quoted cookie value",
            vec![("cookie", &quoted)],
            Outcome::Kept(0),
            false,
        ),
        (
            "doubly quoted cookie value",
            vec![("cookie", &twice_quoted)],
            Outcome::Minted,
            false,
        ),
        (
            "percent-encoded cookie value",
            vec![("cookie", &percent)],
            Outcome::Minted,
            false,
        ),
        (
            "broken cookies beside ours",
            vec![("cookie", &broken)],
            Outcome::Kept(0),
            false,
        ),
        (
            "cookie name in another case",
            vec![("cookie", &wrong_case)],
            Outcome::Minted,
            false,
        ),
    ];

    for (case, fields, expected, echo) in cases {
        let reply = fixture.get(&fields).await;

        match expected {
            Outcome::Kept(index) => assert_kept(&reply, tokens[index], case),
            Outcome::Minted => assert_new_session(&fixture, &reply, &a, case),
        }
        if echo {
            assert_eq!(
                reply.echo(),
                reply.cookie_token(),
                "{case}: echo differs from the token in effect"
            );
        } else {
            assert_eq!(reply.echo(), None, "{case}: echo without a header field");
        }
        assert_eq!(
            reply.header("cache-control"),
            Some("no-store"),
            "{case}: Cache-Control"
        );
    }
}

#[actix_web::test]
async fn forged_and_algorithm_tricks_rejected() {
    let fixture = Fixture::new();
    let k1 = &fixture.signer;
    let attacker = vec![0x5a; 32];
    let token = valid(k1);
    let (input, _) = token.rsplit_once('.').expect("three segments");
    let mut longer = claims();
    longer["exp"] = json!(now() + 80_000);
    let tampered = format!(
        "{}.{}.{}",
        b64(&header_for(k1).to_string()),
        b64(&longer.to_string()),
        token.rsplit('.').next().expect("signature")
    );
    let claims_text = claims().to_string();
    let header_as =
        |alg: &str, kid: &str| json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string();
    let unsigned = |alg: &str| format!("{}.{}.", b64(&header_as(alg, "k1")), b64(&claims_text));
    let hs256 =
        |secret: &[u8], header: String| sign_raw(secret, Algorithm::HS256, &header, &claims_text);
    let mut attacker_jwk = header_for(k1);
    attacker_jwk["jwk"] = json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(&attacker)});
    let mut attacker_jku = header_for(k1);
    attacker_jku["jku"] = json!("http://127.0.0.1:9/keys.json");

    let cases = [
        (
            "signed with another secret",
            hs256(&attacker, header_as("HS256", "k1")),
        ),
        ("claims changed after signing", tampered),
        ("signature removed", format!("{input}.")),
        ("alg none, no signature", unsigned("none")),
        ("alg None, no signature", unsigned("None")),
        ("alg NONE, no signature", unsigned("NONE")),
        (
            "alg none with the valid signature",
            format!(
                "{}.{}.{}",
                b64(&header_as("none", "k1")),
                b64(&claims_text),
                token.rsplit('.').next().expect("signature")
            ),
        ),
        (
            "HS384 with the HS256 key's secret",
            sign_raw(
                k1.secret(),
                Algorithm::HS384,
                &header_as("HS384", "k1"),
                &claims_text,
            ),
        ),
        (
            "HS512 with the HS256 key's secret",
            sign_raw(
                k1.secret(),
                Algorithm::HS512,
                &header_as("HS512", "k1"),
                &claims_text,
            ),
        ),
        (
            "RS256 header, HMAC signature",
            hs256(k1.secret(), header_as("RS256", "k1")),
        ),
        (
            "ES256 header, HMAC signature",
            hs256(k1.secret(), header_as("ES256", "k1")),
        ),
        (
            "PS256 header, HMAC signature",
            hs256(k1.secret(), header_as("PS256", "k1")),
        ),
        (
            "EdDSA header, HMAC signature",
            hs256(k1.secret(), header_as("EdDSA", "k1")),
        ),
        (
            "lower-case hs256",
            hs256(k1.secret(), header_as("hs256", "k1")),
        ),
        (
            "kid of k1, signed by k0",
            hs256(fixture.previous.secret(), header_as("HS256", "k1")),
        ),
        (
            "kid of the HS384 key with HS256",
            hs256(fixture.hs384.secret(), header_as("HS256", "k384")),
        ),
        (
            "kid of the HS512 key with HS384",
            sign_raw(
                fixture.hs512.secret(),
                Algorithm::HS384,
                &header_as("HS384", "k512"),
                &claims_text,
            ),
        ),
        (
            "embedded jwk with the attacker's key",
            sign_raw(
                &attacker,
                Algorithm::HS256,
                &attacker_jwk.to_string(),
                &claims_text,
            ),
        ),
        (
            "jku to the attacker's key set",
            sign_raw(
                &attacker,
                Algorithm::HS256,
                &attacker_jku.to_string(),
                &claims_text,
            ),
        ),
    ];

    for (case, presented) in cases {
        let reply = fixture.get(&[("cookie", &cookie(&presented))]).await;

        assert_new_session(&fixture, &reply, &presented, case);
    }
}

#[actix_web::test]
async fn kid_tricks_rejected() {
    let fixture = Fixture::new();
    let k1 = &fixture.signer;
    let claims_text = claims().to_string();
    let with_kid = |kid: Value| {
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid}).to_string();
        sign_raw(k1.secret(), Algorithm::HS256, &header, &claims_text)
    };
    let raw_header = |header: &str| sign_raw(k1.secret(), Algorithm::HS256, header, &claims_text);

    let cases = [
        ("unknown kid", with_kid(json!("k9"))),
        ("path traversal", with_kid(json!("../k1"))),
        ("absolute path", with_kid(json!("/etc/passwd"))),
        ("file name as kid", with_kid(json!("k1.json"))),
        ("kid in upper case", with_kid(json!("K1"))),
        ("kid with NUL", with_kid(json!("k1\u{0}"))),
        ("kid with trailing space", with_kid(json!("k1 "))),
        ("empty kid", with_kid(json!(""))),
        ("numeric kid", with_kid(json!(1))),
        ("array kid", with_kid(json!(["k1"]))),
        ("null kid", with_kid(Value::Null)),
        ("missing kid", raw_header(r#"{"alg":"HS256","typ":"JWT"}"#)),
        (
            "kid repeated, second names k1",
            raw_header(r#"{"alg":"HS256","kid":"k9","kid":"k1"}"#),
        ),
        (
            "alg repeated",
            raw_header(r#"{"alg":"none","alg":"HS256","kid":"k1"}"#),
        ),
        ("retired key", valid(&fixture.retired)),
    ];

    for (case, presented) in cases {
        let reply = fixture.get(&[("cookie", &cookie(&presented))]).await;

        assert_new_session(&fixture, &reply, &presented, case);
    }
}

#[actix_web::test]
async fn encoding_tricks_rejected() {
    let fixture = Fixture::new();
    let k1 = &fixture.signer;
    let token = valid(k1);
    let parts: Vec<&str> = token.split('.').collect();
    let header_text = header_for(k1).to_string();
    let claims_text = claims().to_string();
    let padded = format!(
        "{}.{}.{}",
        URL_SAFE.encode(&header_text),
        URL_SAFE.encode(&claims_text),
        parts[2]
    );
    let standard = format!(
        "{}.{}.{}",
        STANDARD.encode(&header_text),
        STANDARD.encode(&claims_text),
        parts[2]
    );
    // The last of 43 signature characters carries 2 unused bits; flipping
    // the lowest bit keeps the decoded bytes but breaks canonical form.
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = parts[2].chars().last().expect("signature");
    let sibling = alphabet.as_bytes()[alphabet.find(last).expect("base64url") ^ 1] as char;
    let non_canonical = format!(
        "{}.{}.{}{sibling}",
        parts[0],
        parts[1],
        &parts[2][..parts[2].len() - 1]
    );
    let not_object = sign_raw(
        k1.secret(),
        Algorithm::HS256,
        r#"["HS256","k1"]"#,
        &claims_text,
    );
    let not_json = sign_raw(k1.secret(), Algorithm::HS256, "HS256 k1", &claims_text);
    let claims_not_json = sign_raw(k1.secret(), Algorithm::HS256, &header_text, "exp=1");

    let cases = [
        ("padded segments", padded),
        ("standard alphabet", standard),
        ("non-canonical trailing bits", non_canonical),
        ("fourth segment", format!("{token}.")),
        ("JWE shape", format!("{token}.{}.{}", parts[1], parts[2])),
        ("two segments", format!("{}.{}", parts[0], parts[1])),
        (
            "empty claims segment",
            format!("{}..{}", parts[0], parts[2]),
        ),
        (
            "space inside",
            format!("{}. {}.{}", parts[0], parts[1], parts[2]),
        ),
        (
            "non-ASCII inside",
            format!("{}é.{}.{}", parts[0], parts[1], parts[2]),
        ),
        (
            "short signature",
            format!("{}.{}.{}", parts[0], parts[1], &parts[2][..40]),
        ),
        ("header not an object", not_object),
        ("header not JSON", not_json),
        ("claims not JSON", claims_not_json),
        ("garbage", "a.b.c".to_owned()),
    ];

    for (case, presented) in cases {
        let reply = fixture.get(&[("cookie", &cookie(&presented))]).await;

        assert_new_session(&fixture, &reply, &presented, case);
    }
}

#[actix_web::test]
async fn header_members_checked() {
    let fixture = Fixture::new();
    let k1 = &fixture.signer;

    let cases = [
        (
            "crit present",
            with_header(k1, "crit", json!(["exp"])),
            false,
        ),
        ("empty crit", with_header(k1, "crit", json!([])), false),
        (
            "typ other than JWT",
            with_header(k1, "typ", json!("at+jwt")),
            false,
        ),
        ("numeric typ", with_header(k1, "typ", json!(1)), false),
        (
            "typ in lower case",
            with_header(k1, "typ", json!("jwt")),
            true,
        ),
        (
            "unknown header member",
            with_header(k1, "x5t", json!("abc")),
            true,
        ),
    ];

    for (case, presented, accepted) in cases {
        let reply = fixture.get(&[("cookie", &cookie(&presented))]).await;

        if accepted {
            assert_kept(&reply, &presented, case);
        } else {
            assert_new_session(&fixture, &reply, &presented, case);
        }
    }
}

#[actix_web::test]
async fn claim_faults_rejected() {
    let fixture = Fixture::new();
    let k1 = &fixture.signer;
    let now = now();
    let lifetime = |iat: i64, exp: i64| {
        let mut claims = claims();
        claims["iat"] = json!(iat);
        claims["exp"] = json!(exp);
        sign(k1, &header_for(k1), &claims)
    };
    let raw_claims = |text: String| {
        sign_raw(
            k1.secret(),
            Algorithm::HS256,
            &header_for(k1).to_string(),
            &text,
        )
    };

    let cases = [
        (
            "string exp",
            with_claim(k1, "exp", json!((now + 600).to_string())),
        ),
        ("null exp", with_claim(k1, "exp", Value::Null)),
        ("boolean iat", with_claim(k1, "iat", json!(true))),
        ("string nbf", with_claim(k1, "nbf", json!("0"))),
        ("null nbf", with_claim(k1, "nbf", Value::Null)),
        ("array iss", with_claim(k1, "iss", json!(["sessiond"]))),
        ("numeric iss", with_claim(k1, "iss", json!(1))),
        ("numeric jti", with_claim(k1, "jti", json!(7))),
        ("empty jti", with_claim(k1, "jti", json!(""))),
        ("object jti", with_claim(k1, "jti", json!({"id": "x"}))),
        ("missing iss", without_claim(k1, "iss")),
        ("missing jti", without_claim(k1, "jti")),
        ("missing iat", without_claim(k1, "iat")),
        ("missing exp", without_claim(k1, "exp")),
        ("audience present", with_claim(k1, "aud", json!("shop"))),
        ("other issuer", with_claim(k1, "iss", json!("other"))),
        (
            "issuer in another case",
            with_claim(k1, "iss", json!("Sessiond")),
        ),
        (
            "issuer with trailing space",
            with_claim(k1, "iss", json!("sessiond ")),
        ),
        (
            "expired beyond leeway",
            with_claim(k1, "exp", json!(now - 31)),
        ),
        ("expired long ago", lifetime(now - 7200, now - 3600)),
        ("iat beyond leeway ahead", lifetime(now + 40, now + 600)),
        (
            "nbf beyond leeway ahead",
            with_claim(k1, "nbf", json!(now + 40)),
        ),
        (
            "lifetime over the maximum",
            lifetime(now - 10, now - 10 + 86_401),
        ),
        ("exp equal to iat", lifetime(now + 5, now + 5)),
        ("exp before iat", lifetime(now + 20, now + 10)),
        ("negative iat", with_claim(k1, "iat", json!(-1))),
        (
            "exp past year 9999",
            with_claim(k1, "exp", json!(253_402_300_800_i64)),
        ),
        ("exp far out of range", with_claim(k1, "exp", json!(1e300))),
        (
            "claims an array",
            raw_claims(json!([now, now + 600]).to_string()),
        ),
        ("claims a string", raw_claims(json!("sessiond").to_string())),
        (
            "exp repeated",
            raw_claims(format!(
                r#"{{"iss":"sessiond","jti":"a","iat":{now},"exp":{},"exp":{}}}"#,
                now - 3600,
                now + 600
            )),
        ),
        (
            "bytes after the claims object",
            raw_claims(format!("{} x", claims())),
        ),
    ];

    for (case, presented) in cases {
        let reply = fixture.get(&[("cookie", &cookie(&presented))]).await;

        assert_new_session(&fixture, &reply, &presented, case);
    }
}

#[actix_web::test]
async fn claim_edges_accepted() {
    let fixture = Fixture::new();
    let k1 = &fixture.signer;
    let now = now();
    let lifetime = |iat: i64, exp: i64| {
        let mut claims = claims();
        claims["iat"] = json!(iat);
        claims["exp"] = json!(exp);
        sign(k1, &header_for(k1), &claims)
    };
    let escaped_issuer = sign_raw(
        k1.secret(),
        Algorithm::HS256,
        &header_for(k1).to_string(),
        &format!(
            r#"{{"iss":"\u0073essiond","jti":"a","iat":{now},"exp":{}}}"#,
            now + 60
        ),
    );

    let cases = [
        (
            "expired within leeway",
            with_claim(k1, "exp", json!(now - 10)),
        ),
        ("iat within leeway ahead", lifetime(now + 20, now + 600)),
        (
            "nbf within leeway ahead",
            with_claim(k1, "nbf", json!(now + 20)),
        ),
        ("nbf in the past", with_claim(k1, "nbf", json!(now - 20))),
        (
            "fractional exp",
            with_claim(k1, "exp", json!(now as f64 + 600.5)),
        ),
        (
            "exponent notation exp",
            with_claim(k1, "exp", json!((now + 600) as f64)),
        ),
        (
            "lifetime at the maximum",
            lifetime(now - 10, now - 10 + 86_400),
        ),
        (
            "unknown claim",
            with_claim(k1, "cart", json!({"items": [1, 2]})),
        ),
        ("escaped issuer", escaped_issuer),
        ("previous key still in the ring", valid(&fixture.previous)),
        ("scheduled key", valid(&fixture.scheduled)),
        ("HS384 key", valid(&fixture.hs384)),
        ("HS512 key", valid(&fixture.hs512)),
    ];

    for (case, presented) in cases {
        let reply = fixture.get(&[("cookie", &cookie(&presented))]).await;

        assert_kept(&reply, &presented, case);
    }
}

/// Pads a token by `k1` until it is `target` bytes long. Header and claims
/// are both padded because one base64url segment never has a length of
/// 1 modulo 4.
fn token_of_length(fixture: &Fixture, target: usize) -> String {
    let k1 = &fixture.signer;
    for header_pad in 0..3 {
        let header = json!({"alg": "HS256", "kid": "k1", "x": "h".repeat(header_pad)});
        for claims_pad in 0..target {
            let mut claims = claims();
            claims["pad"] = json!("p".repeat(claims_pad));
            let token = sign(k1, &header, &claims);
            if token.len() == target {
                return token;
            }
            if token.len() > target {
                break;
            }
        }
    }
    panic!("no padding gives a token of {target} bytes")
}

#[actix_web::test]
async fn length_cap_enforced() {
    let fixture = Fixture::new();
    let small = Fixture::with_args(&["--max-token-bytes", "256"]);
    let at_cap = token_of_length(&fixture, 4096);
    let over_cap = token_of_length(&fixture, 4097);
    let over_small_cap = token_of_length(&small, 257);
    let at_small_cap = token_of_length(&small, 256);

    let at_cap_reply = fixture.get(&[("cookie", &cookie(&at_cap))]).await;
    let over_cap_reply = fixture.get(&[("cookie", &cookie(&over_cap))]).await;
    let header_over_reply = fixture.get(&[(TOKEN_HEADER, &over_cap)]).await;
    let small_at_reply = small.get(&[("cookie", &cookie(&at_small_cap))]).await;
    let small_over_reply = small.get(&[("cookie", &cookie(&over_small_cap))]).await;

    assert_kept(&at_cap_reply, &at_cap, "4096 bytes, default cap");
    assert_new_session(
        &fixture,
        &over_cap_reply,
        &over_cap,
        "4097 bytes, default cap",
    );
    assert_new_session(
        &fixture,
        &header_over_reply,
        &over_cap,
        "4097 bytes in the header",
    );
    assert_kept(&small_at_reply, &at_small_cap, "256 bytes, cap 256");
    assert_new_session(
        &small,
        &small_over_reply,
        &over_small_cap,
        "257 bytes, cap 256",
    );
}

#[actix_web::test]
async fn settings_change_verification() {
    let strict = Fixture::with_args(&[
        "--leeway",
        "0",
        "--issuer",
        "shop-sessions",
        "--max-token-lifetime",
        "3600",
    ]);
    let k1 = &strict.signer;
    let now = now();
    let ours = |claims: Value| sign(k1, &header_for(k1), &claims);
    let base = json!({"iss": "shop-sessions", "jti": "a", "iat": now - 10, "exp": now + 600});
    let mut just_expired = base.clone();
    just_expired["exp"] = json!(now - 1);
    let mut default_issuer = base.clone();
    default_issuer["iss"] = json!("sessiond");
    let mut long = base.clone();
    long["exp"] = json!(now - 10 + 3601);
    let mut slightly_ahead = base.clone();
    slightly_ahead["nbf"] = json!(now + 5);

    let cases = [
        ("configured issuer", ours(base.clone()), true),
        (
            "expired one second ago, leeway 0",
            ours(just_expired),
            false,
        ),
        ("default issuer", ours(default_issuer), false),
        ("lifetime over 3600", ours(long), false),
        ("nbf ahead, leeway 0", ours(slightly_ahead), false),
    ];

    for (case, presented, accepted) in cases {
        let reply = strict.get(&[("cookie", &cookie(&presented))]).await;

        if accepted {
            assert_kept(&reply, &presented, case);
        } else {
            assert_new_session(&strict, &reply, &presented, case);
        }
    }
    let minted = strict.get(&[]).await;
    let claims = segment_json(minted.cookie_token().expect("cookie"), 1);
    assert_eq!(
        claims["iss"], "shop-sessions",
        "minted iss follows the setting"
    );
}

#[actix_web::test]
async fn cookie_attributes_per_setting() {
    let cases: [(&str, &[&str], &str); 7] = [
        (
            "defaults",
            &[],
            "; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=3600",
        ),
        (
            "Secure off",
            &["--cookie-secure", "false"],
            "; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600",
        ),
        (
            "SameSite Strict",
            &["--cookie-samesite", "Strict"],
            "; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=3600",
        ),
        (
            "SameSite strict in lower case",
            &["--cookie-samesite", "strict", "--cookie-secure", "false"],
            "; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600",
        ),
        (
            "SameSite None",
            &["--cookie-samesite", "None"],
            "; Path=/; HttpOnly; Secure; SameSite=None; Max-Age=3600",
        ),
        (
            "Domain",
            &["--cookie-domain", "shop.example"],
            "; Path=/; Domain=shop.example; HttpOnly; Secure; SameSite=Lax; Max-Age=3600",
        ),
        (
            "TTL 600",
            &["--token-ttl", "600"],
            "; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=600",
        ),
    ];

    for (case, args, attributes) in cases {
        let fixture = Fixture::with_args(args);

        let reply = fixture.get(&[]).await;

        let token = reply.cookie_token().expect("session cookie").to_owned();
        assert_eq!(
            reply.set_cookies(),
            vec![format!("{COOKIE}={token}{attributes}")],
            "{case}: Set-Cookie"
        );
    }
}

#[actix_web::test]
async fn max_age_is_remaining_lifetime() {
    let fixture = Fixture::new();
    let k1 = &fixture.signer;
    let now = now();
    let cases = [
        ("exp in 600 s", with_claim(k1, "exp", json!(now + 600)), 600),
        (
            "exp in 90.9 s",
            with_claim(k1, "exp", json!(now as f64 + 90.9)),
            90,
        ),
        (
            "expired within leeway",
            with_claim(k1, "exp", json!(now - 10)),
            1,
        ),
    ];

    for (case, token, expected) in cases {
        let reply = fixture.get(&[("cookie", &cookie(&token))]).await;

        let set_cookie = reply.set_cookies().join("\n");
        let max_age: i64 = set_cookie
            .rsplit("Max-Age=")
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{case}: no Max-Age in {set_cookie}"));
        // One second of slack: the clock may tick between signing and checking.
        assert!(
            (expected - 1..=expected).contains(&max_age),
            "{case}: Max-Age {max_age}, expected {expected}"
        );
    }
}

#[actix_web::test]
async fn unknown_kid_reloads_folder() {
    let fixture = Fixture::new();
    let dir = fixture.state.keys.dir().to_path_buf();
    let added = store::generate_key(Some("k3".into()), Algorithm::HS256, Utc::now(), None, None)
        .expect("generates");
    store::write_new_key(&dir, &added).expect("writes");
    let token = valid(&added);

    let reply = fixture.get(&[("cookie", &cookie(&token))]).await;

    assert_kept(&reply, &token, "key added to the folder after start");
}

#[actix_web::test]
async fn head_matches_get_headers() {
    let fixture = Fixture::new();
    let token = valid(&fixture.signer);
    let fields = [("cookie", cookie(&token)), (TOKEN_HEADER, token.clone())];

    let get = fixture
        .get(&[(fields[0].0, &fields[0].1), (fields[1].0, &fields[1].1)])
        .await;
    let mut head = TestRequest::default()
        .method(actix_web::http::Method::HEAD)
        .uri(PATH);
    for (name, value) in &fields {
        head = head.append_header((*name, value.as_str()));
    }
    let head = fixture.send(head).await;

    assert_eq!(head.status, StatusCode::OK, "HEAD status");
    // The HTTP/1 codec drops a HEAD body on the wire; the end-to-end tests
    // check that, so only the header fields are compared here. Max-Age is
    // left out because the clock may tick between the two requests.
    let fields_of = |reply: &Reply| {
        let mut fields: Vec<(String, String)> = reply
            .headers
            .iter()
            .map(|(name, value)| {
                let value = value.to_str().expect("ASCII header");
                let value = value.split("; Max-Age=").next().unwrap_or(value);
                (name.to_string(), value.to_owned())
            })
            .collect();
        fields.sort();
        fields
    };
    assert_eq!(fields_of(&head), fields_of(&get), "HEAD header fields");
    assert!(
        head.cookie_token() == Some(token.as_str()),
        "HEAD keeps the valid token"
    );
}

/// Asserts the errorModel members of an error reply, exactly.
fn assert_error_model(reply: &Reply, status: u16, code: &str, section: &str, case: &str) {
    assert_eq!(reply.status.as_u16(), status, "{case}: status");
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{case}: Content-Type"
    );
    assert!(
        reply.set_cookies().is_empty(),
        "{case}: error sets a cookie"
    );
    let body = reply.json();
    let object = body.as_object().expect("errorModel is an object");
    let allowed = [
        "message",
        "errorCode",
        "status",
        "type",
        "devMessage",
        "o:errorPath",
        "errors",
    ];
    for name in object.keys() {
        assert!(
            allowed.contains(&name.as_str()),
            "{case}: unexpected member {name}"
        );
    }

    assert_eq!(body["errorCode"], code, "{case}: errorCode");
    assert_eq!(body["status"], status.to_string(), "{case}: status member");
    assert_eq!(
        body["type"],
        format!("https://www.rfc-editor.org/rfc/rfc9110#section-{section}"),
        "{case}: type"
    );
    let message = body["message"].as_str().expect("string message");
    assert!(!message.is_empty(), "{case}: empty message");
}

#[actix_web::test]
async fn unknown_paths_return_404_model() {
    let fixture = Fixture::new();
    let paths = [
        "/",
        "/ccstore/v1/metering",
        "/ccstore/v1/metering/session/",
        "/ccstore/v1/metering/sessions",
        "/CCSTORE/v1/metering/session",
        "/ccstore/v1/metering/session/extra",
        "*",
    ];

    for path in paths {
        for method in [actix_web::http::Method::GET, actix_web::http::Method::POST] {
            let case = format!("{method} {path}");

            let reply = fixture
                .send(TestRequest::default().method(method).uri(path))
                .await;

            assert_error_model(&reply, 404, "10001", "15.5.5", &case);
            assert_eq!(reply.json()["o:errorPath"], path, "{case}: o:errorPath");
            assert_eq!(
                reply.json()["message"],
                format!("No resource at {path}."),
                "{case}: message"
            );
        }
    }
}

#[actix_web::test]
async fn other_methods_return_405_model() {
    let fixture = Fixture::new();
    let token = valid(&fixture.signer);
    let methods = [
        "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PURGE",
    ];

    for name in methods {
        let method = actix_web::http::Method::from_bytes(name.as_bytes()).expect("method");
        let request = TestRequest::default()
            .method(method)
            .uri(PATH)
            .insert_header(("cookie", cookie(&token)))
            .set_payload(token.clone());

        let reply = fixture.send(request).await;

        assert_error_model(&reply, 405, "10002", "15.5.6", name);
        assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{name}: Allow");
        assert!(
            !reply.body_text().contains(&token),
            "{name}: the body contains the token"
        );
    }
}

#[actix_web::test]
async fn bodies_carry_no_secrets() {
    let fixture = Fixture::new();
    let token = valid(&fixture.signer);
    let secret = URL_SAFE_NO_PAD.encode(fixture.signer.secret());
    let forged = with_claim(&fixture.previous, "exp", json!("soon"));
    let requests = [
        (
            "valid cookie",
            TestRequest::get()
                .uri(PATH)
                .insert_header(("cookie", cookie(&token))),
        ),
        (
            "forged header",
            TestRequest::get()
                .uri(PATH)
                .insert_header((TOKEN_HEADER, forged.clone())),
        ),
        (
            "404",
            TestRequest::get()
                .uri("/nowhere")
                .insert_header(("cookie", cookie(&token))),
        ),
        (
            "405",
            TestRequest::post()
                .uri(PATH)
                .insert_header((TOKEN_HEADER, token.clone())),
        ),
    ];
    let library_words = [
        "jsonwebtoken",
        "serde",
        "Error(",
        "invalid type",
        "base64",
        "at line",
    ];

    for (case, request) in requests {
        let reply = fixture.send(request).await;

        let body = reply.body_text();
        assert!(!body.contains(&token), "{case}: body contains the token");
        assert!(
            !body.contains(&forged),
            "{case}: body contains the forged token"
        );
        assert!(!body.contains(&secret), "{case}: body contains the key");
        if let Some(minted) = reply.cookie_token() {
            assert!(
                !body.contains(minted),
                "{case}: body contains the minted token"
            );
        }
        for word in library_words {
            assert!(!body.contains(word), "{case}: body contains {word:?}");
        }
    }
}

#[actix_web::test]
async fn no_signing_key_returns_503_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    let now = Utc::now();
    let key = store::generate_key(Some("k1".into()), Algorithm::HS256, now, None, None)
        .expect("generates")
        .with_lifecycle(
            Some(now - Duration::hours(1)),
            Some(now + Duration::hours(1)),
        );
    store::write_new_key(dir.path(), &key).expect("writes");
    let (ring, digest) = store::load_ring(dir.path(), now).expect("keys load");
    let fixture = Fixture::new();
    let token = valid(&key);
    // Two hours on, the only key is retired, so nothing can sign.
    let state = web::Data::new(AppState::new(
        Arc::new(LiveRing::new(ring, digest, dir.path())),
        fixture.state.policy.clone(),
        fixture.state.cookie.clone(),
        Clock::with_offset_secs(7200),
    ));
    let app = test::init_service(public_app(state)).await;

    let request = TestRequest::get()
        .uri(PATH)
        .insert_header(("cookie", cookie(&token)))
        .insert_header((TOKEN_HEADER, token.clone()))
        .to_request();
    let response = test::call_service(&app, request).await;
    let reply = Reply {
        status: response.status(),
        headers: response.headers().clone(),
        body: test::read_body(response).await,
    };

    assert_error_model(&reply, 503, "10006", "15.6.4", "no signing key");
    assert_eq!(reply.echo(), None, "503 echoes a token");
    assert!(
        !reply.body_text().contains(&token),
        "503 body contains the token"
    );
}
