//! `openapi/openapi.json` against the running binary: every response below
//! must have a documented status, carry the documented required headers
//! with values matching their schemas, and have a body that validates
//! against the documented schema. Every documented operation is exercised.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{Duration as Span, Utc};
use common::{TestServer, client, set_cookie_token};
use jsonwebtoken::Algorithm;
use reqwest::blocking::{RequestBuilder, Response};
use serde_json::{Value, json};
use sessiond::keys::store;

const SESSION: &str = "/ccstore/v1/metering/session";
const ADMIN_CREDENTIAL: &str = "openapi-test-admin-credential-0123456789abcdef";

/// The document and the operations checked so far.
struct Spec {
    document: Value,
    checked: BTreeSet<(String, String)>,
}

impl Spec {
    fn new(document: Value) -> Spec {
        Spec {
            document,
            checked: BTreeSet::new(),
        }
    }

    /// Sends `request` and checks its response against the operation
    /// `method` `path` (the path as written in the document). Returns the
    /// JSON body, or `Null` when there is none.
    fn check(&mut self, path: &str, method: &str, request: RequestBuilder) -> (u16, Value) {
        let response = request.send().expect("request");
        let status = response.status().as_u16();
        let operation = &self.document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        let documented = self.resolve(&operation["responses"][status.to_string()]);
        assert!(
            documented.is_object(),
            "{method} {path}: status {status} is not documented"
        );
        let context = format!("{method} {path} {status}");

        self.check_headers(&context, &documented, &response);
        let body = self.check_body(&context, method, &documented, response);
        self.checked.insert((path.to_owned(), method.to_owned()));
        (status, body)
    }

    fn check_headers(&self, context: &str, documented: &Value, response: &Response) {
        let Some(headers) = documented["headers"].as_object() else {
            return;
        };
        for (name, header) in headers {
            let header = self.resolve(header);
            let value = response.headers().get(name.as_str());
            if header["required"] == true {
                assert!(value.is_some(), "{context}: header {name} missing");
            }
            if let Some(value) = value {
                let text = value.to_str().expect("ASCII header");
                self.validate(context, &header["schema"], &json!(text));
            }
        }
    }

    fn check_body(
        &self,
        context: &str,
        method: &str,
        documented: &Value,
        response: Response,
    ) -> Value {
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().expect("ASCII").to_owned());
        let text = response.text().expect("body");
        if method == "head" {
            assert!(text.is_empty(), "{context}: HEAD response has a body");
            return Value::Null;
        }
        let Some(content) = documented["content"].as_object() else {
            assert!(text.is_empty(), "{context}: undocumented body {text}");
            return Value::Null;
        };
        let content_type = content_type.unwrap_or_else(|| panic!("{context}: no Content-Type"));
        let media = content
            .get(&content_type)
            .unwrap_or_else(|| panic!("{context}: Content-Type {content_type} not documented"));
        if !content_type.starts_with("application/json") {
            return Value::String(text);
        }
        let body: Value = serde_json::from_str(&text).expect("JSON body");
        self.validate(context, &media["schema"], &body);
        body
    }

    /// Validates `instance` against `schema`, an OpenAPI 3.1 schema object
    /// (JSON Schema 2020-12) whose `$ref`s point into this document.
    fn validate(&self, context: &str, schema: &Value, instance: &Value) {
        let mut root = schema.as_object().cloned().unwrap_or_default();
        root.insert(
            "$schema".to_owned(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        root.insert("components".to_owned(), self.document["components"].clone());
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&Value::Object(root))
            .unwrap_or_else(|e| panic!("{context}: invalid schema {schema}: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{context}: {instance} does not match {schema}: {errors:?}"
        );
    }

    /// Follows a `$ref` within the document.
    fn resolve(&self, value: &Value) -> Value {
        match value["$ref"].as_str() {
            Some(pointer) => {
                let target = self
                    .document
                    .pointer(pointer.trim_start_matches('#'))
                    .unwrap_or_else(|| panic!("unresolved $ref {pointer}"));
                self.resolve(target)
            }
            None => value.clone(),
        }
    }

    /// Returns the documented operations that no request checked.
    fn unchecked(&self) -> Vec<String> {
        let methods = ["get", "head", "post", "put", "patch", "delete"];
        let paths = self.document["paths"].as_object().expect("paths");
        let mut missing = Vec::new();
        for (path, item) in paths {
            for method in methods {
                let documented = item.get(method).is_some();
                if documented && !self.checked.contains(&(path.clone(), method.to_owned())) {
                    missing.push(format!("{method} {path}"));
                }
            }
        }
        missing
    }
}

fn start_server(keys_dir: Option<&std::path::Path>) -> (TestServer, tempfile::TempDir) {
    let workdir = tempfile::tempdir().expect("temp dir");
    let credential_file = workdir.path().join("admin-token");
    std::fs::write(&credential_file, format!("{ADMIN_CREDENTIAL}\n")).expect("writes");
    let mut builder = TestServer::builder().env(
        "SESSIOND_ADMIN_TOKEN_FILE",
        credential_file.to_str().expect("UTF-8 path"),
    );
    if let Some(dir) = keys_dir {
        builder = builder.keys_dir(dir);
    }
    (builder.start(), workdir)
}

fn fetch_document(url: &str) -> Value {
    client()
        .get(url)
        .send()
        .expect("GET /openapi.json")
        .json()
        .expect("JSON document")
}

#[test]
fn responses_match_document() {
    let (server, _workdir) = start_server(None);
    let http = client();
    let document = fetch_document(&server.url("/openapi.json"));
    let mut spec = Spec::new(document.clone());

    assert_eq!(document, fetch_document(&server.admin_url("/openapi.json")));
    check_public(&mut spec, &server, &http);
    check_admin(&mut spec, &server, &http);

    let unchecked = spec.unchecked();
    assert!(
        unchecked.is_empty(),
        "operations not checked: {unchecked:?}"
    );
}

fn check_public(spec: &mut Spec, server: &TestServer, http: &reqwest::blocking::Client) {
    let session = server.url(SESSION);
    let (_, first) = spec.check(SESSION, "get", http.get(&session));
    assert_eq!(first, json!({"valid": false}));
    let token = set_cookie_token(&http.get(&session).send().expect("session")).expect("cookie");
    let cookie = format!("session_token-store={token}");
    let (_, kept) = spec.check(SESSION, "get", http.get(&session).header("cookie", &cookie));
    assert_eq!(kept, json!({"valid": true}));
    let echoed = http
        .get(&session)
        .header("x-cc-session-token", &token)
        .send()
        .expect("header mode");
    assert_eq!(echoed.headers()["x-cc-session-token"], token.as_str());
    spec.check(
        SESSION,
        "get",
        http.get(&session).header("x-cc-session-token", &token),
    );
    spec.check(SESSION, "head", http.head(&session));
    let (status, _) = spec.check(SESSION, "get", http.post(&session));
    assert_eq!(status, 405, "POST is rejected as documented under get");

    for path in ["/healthz", "/readyz", "/openapi.json"] {
        let (status, _) = spec.check(path, "get", http.get(server.url(path)));
        assert_eq!(status, 200, "GET {path}");
        spec.check(path, "head", http.head(server.url(path)));
        let (status, _) = spec.check(path, "get", http.delete(server.url(path)));
        assert_eq!(status, 405, "DELETE {path}");
    }
    let (status, metrics) = spec.check("/metrics", "get", http.get(server.admin_url("/metrics")));
    assert_eq!(status, 200);
    assert!(
        metrics
            .as_str()
            .is_some_and(|text| text.contains("sessiond_sessions_started_total"))
    );
    spec.check("/metrics", "head", http.head(server.admin_url("/metrics")));
    let (status, _) = spec.check("/metrics", "get", http.put(server.admin_url("/metrics")));
    assert_eq!(status, 405);

    let missing = http.get(server.url("/no/such/path")).send().expect("404");
    assert_eq!(missing.status().as_u16(), 404);
    let body: Value = missing.json().expect("JSON");
    spec.validate(
        "GET /no/such/path",
        &json!({"$ref": "#/components/schemas/ErrorModel"}),
        &body,
    );
}

/// Checks every admin operation, its errors included.
fn check_admin(spec: &mut Spec, server: &TestServer, http: &reqwest::blocking::Client) {
    let url = |path: &str| server.admin_url(path);
    let admin = |request: RequestBuilder| request.bearer_auth(ADMIN_CREDENTIAL);

    let (status, _) = spec.check("/admin/v1/keys", "get", http.get(url("/admin/v1/keys")));
    assert_eq!(status, 401, "no credential");
    let (status, list) = spec.check(
        "/admin/v1/keys",
        "get",
        admin(http.get(url("/admin/v1/keys"))),
    );
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));

    let create = || admin(http.post(url("/admin/v1/keys"))).json(&json!({"kid": "doc-b"}));
    let (status, created) = spec.check("/admin/v1/keys", "post", create());
    assert_eq!(status, 201);
    assert_eq!(created["kid"], "doc-b");
    let (status, _) = spec.check("/admin/v1/keys", "post", create());
    assert_eq!(status, 409, "duplicate kid");
    let bad_alg = admin(http.post(url("/admin/v1/keys"))).json(&json!({"alg": "none"}));
    let (status, _) = spec.check("/admin/v1/keys", "post", bad_alg);
    assert_eq!(status, 400, "invalid alg");
    let as_text = admin(http.post(url("/admin/v1/keys")))
        .header("content-type", "text/plain")
        .body(r#"{"kid": "doc-t"}"#);
    let (status, _) = spec.check("/admin/v1/keys", "post", as_text);
    assert_eq!(status, 415, "body that is not application/json");

    let one = "/admin/v1/keys/{kid}";
    let (status, fetched) = spec.check(one, "get", admin(http.get(url("/admin/v1/keys/doc-b"))));
    assert_eq!(status, 200);
    assert_eq!(fetched["kid"], "doc-b");
    let (status, _) = spec.check(one, "get", admin(http.get(url("/admin/v1/keys/missing"))));
    assert_eq!(status, 404, "unknown kid");
    let (status, _) = spec.check(one, "get", http.get(url("/admin/v1/keys/doc-b")));
    assert_eq!(status, 401, "no credential");
    let (status, _) = spec.check(one, "get", admin(http.delete(url("/admin/v1/keys/doc-b"))));
    assert_eq!(status, 405, "DELETE");

    let activate = "/admin/v1/keys/{kid}/activate";
    let later = json!({"at": "+1h"});
    let request = admin(http.post(url("/admin/v1/keys/doc-b/activate"))).json(&later);
    let (status, activated) = spec.check(activate, "post", request);
    assert_eq!(status, 200);
    assert_eq!(activated["state"], "scheduled");
    let request = admin(http.post(url("/admin/v1/keys/missing/activate"))).json(&later);
    let (status, _) = spec.check(activate, "post", request);
    assert_eq!(status, 404, "unknown kid");

    let request = admin(http.post(url("/admin/v1/rotate"))).json(&json!({"kid": "doc-c"}));
    let (status, rotated) = spec.check("/admin/v1/rotate", "post", request);
    assert_eq!(status, 201);
    assert_eq!(rotated["state"], "signing");

    let retire = "/admin/v1/keys/{kid}/retire";
    let request = admin(http.post(url("/admin/v1/keys/doc-c/retire"))).json(&json!({}));
    let (status, _) = spec.check(retire, "post", request);
    assert_eq!(status, 409, "the signing key's tokens may be valid");
    let now = json!({"at": "now", "force": true});
    let request = admin(http.post(url("/admin/v1/keys/doc-b/retire"))).json(&now);
    let (status, retired) = spec.check(retire, "post", request);
    assert_eq!(status, 200);
    assert_eq!(retired["state"], "retired");

    let (status, pruned) = spec.check(
        "/admin/v1/prune",
        "post",
        admin(http.post(url("/admin/v1/prune"))),
    );
    assert_eq!(status, 200);
    assert_eq!(pruned, json!({"pruned": ["doc-b"]}));
}

#[test]
fn unavailable_responses_match_document() {
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
    let (mut server, _workdir) = start_server(Some(keys.path()));
    let http = client();
    let mut spec = Spec::new(fetch_document(&server.url("/openapi.json")));
    let deadline = Instant::now() + Duration::from_secs(10);
    while http
        .get(server.url("/readyz"))
        .send()
        .expect("readyz")
        .status()
        != 503
    {
        assert!(Instant::now() < deadline, "/readyz stayed 200");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (readyz_status, readyz) = spec.check("/readyz", "get", http.get(server.url("/readyz")));
    let (session_status, session) = spec.check(SESSION, "get", http.get(server.url(SESSION)));
    server.signal("TERM");
    let exit = server.wait_exit(Duration::from_secs(15));

    assert_eq!(readyz_status, 503);
    assert_eq!(readyz["devMessage"], "no_signing_key");
    assert_eq!(session_status, 503);
    assert_eq!(session["errorCode"], "10006");
    assert_eq!(exit, Some(0));
}

#[test]
fn stopping_readyz_matches_document() {
    let mut server = TestServer::builder()
        .env("SESSIOND_SHUTDOWN_DELAY", "2")
        .start();
    let http = client();
    let mut spec = Spec::new(fetch_document(&server.url("/openapi.json")));

    server.signal("TERM");
    assert!(server.wait_for_log("/readyz returns 503", Duration::from_secs(5)));
    let (status, body) = spec.check("/readyz", "get", http.get(server.url("/readyz")));
    let exit = server.wait_exit(Duration::from_secs(15));

    assert_eq!(status, 503);
    assert_eq!(body["devMessage"], "stopping");
    assert_eq!(exit, Some(0));
}
