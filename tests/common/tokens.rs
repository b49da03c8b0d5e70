//! Crafting tokens and key files for tests, through the library's own key
//! code so that tests sign exactly as a server would verify.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use sessiond::keys::store;
use sessiond::keys::{Key, KeyRing};

/// Writes a new HS256 key `kid` into `dir`; `sign_from` `None` means verify only.
pub fn write_key(dir: &Path, kid: &str, sign_from: Option<DateTime<Utc>>) -> Key {
    std::fs::create_dir_all(dir).expect("keys folder");
    let key = store::generate_key(
        Some(kid.to_owned()),
        Algorithm::HS256,
        Utc::now(),
        sign_from,
        None,
    )
    .expect("generates");
    store::write_new_key(dir, &key).expect("writes");
    key
}

/// Reads the ring of `dir` as a server would load it.
pub fn read_ring(dir: &Path) -> KeyRing {
    store::read_dir(dir)
        .expect("reads")
        .parse()
        .expect("parses")
}

/// Signs `header` and `claims` (any JSON) with `secret` and `alg`.
pub fn craft(secret: &[u8], alg: Algorithm, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, alg).expect("signs");
    format!("{input}.{signature}")
}

/// Claims a default server accepts at `now`.
pub fn claims_at(now: i64) -> Value {
    json!({"iss": "sessiond", "jti": "test-session", "iat": now, "exp": now + 600})
}

/// Crafts a token a default server accepts, signed by `key`.
pub fn valid_token(key: &Key) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": &*key.kid});
    craft(
        key.secret(),
        Algorithm::HS256,
        &header,
        &claims_at(Utc::now().timestamp()),
    )
}

/// Returns the `kid` in the header of `token`.
pub fn kid_of(token: &str) -> String {
    let header = token.split('.').next().expect("segment");
    let json: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url")).expect("json");
    json["kid"].as_str().expect("kid").to_owned()
}
