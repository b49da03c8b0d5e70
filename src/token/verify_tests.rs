use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde_json::{Value, json};

use super::*;
use crate::token::test_support::{NOW, at, key, policy, ring};

/// Signs `header` and `claims` (any JSON) with the secret of test key `byte`.
fn craft(header: &Value, claims: &Value, alg: Algorithm, byte: u8) -> String {
    let k = key("any", alg, byte);
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature =
        jsonwebtoken::crypto::sign(input.as_bytes(), k.encoding_key(), alg).expect("signs");
    format!("{input}.{signature}")
}

fn header() -> Value {
    json!({"alg": "HS256", "typ": "JWT", "kid": "k1"})
}

fn claims() -> Value {
    json!({"iss": "sessiond", "jti": "abc", "iat": NOW, "exp": NOW + 3600})
}

fn good() -> String {
    craft(&header(), &claims(), Algorithm::HS256, 1)
}

fn verify(token: &str) -> Result<Verified, Rejection> {
    verify_token(token, &ring(), &policy(), at(NOW))
}

fn with_claim(name: &str, value: Value) -> String {
    let mut c = claims();
    c[name] = value;
    craft(&header(), &c, Algorithm::HS256, 1)
}

fn with_header(name: &str, value: Value) -> String {
    let mut h = header();
    h[name] = value;
    craft(&h, &claims(), Algorithm::HS256, 1)
}

#[test]
fn valid_token_accepted() {
    let verified = verify(&good()).expect("valid");

    assert_eq!(&*verified.kid, "k1");
    assert_eq!(verified.exp, (NOW + 3600) as f64);
}

#[test]
fn forged_signature_rejected() {
    let forged = craft(&header(), &claims(), Algorithm::HS256, 9);

    assert_eq!(verify(&forged).unwrap_err(), Rejection::BadSignature);
}

#[test]
fn tampered_claims_rejected() {
    let token = good();
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims();
    c["exp"] = json!(NOW + 999_999);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(c.to_string()),
        parts[2]
    );

    assert_eq!(verify(&tampered).unwrap_err(), Rejection::BadSignature);
}

#[test]
fn algorithm_is_pinned_by_key() {
    let cases = [
        ("none", "alg none"),
        ("HS384", "HS384 against an HS256 key"),
        ("RS256", "RS256 key confusion"),
        ("ES256", "ES256"),
        ("hs256", "lower-case spelling"),
    ];
    for (alg, description) in cases {
        let token = with_header("alg", json!(alg));

        assert_eq!(
            verify(&token).unwrap_err(),
            Rejection::WrongAlgorithm,
            "{description}"
        );
    }
}

#[test]
fn unsigned_none_token_rejected() {
    let h = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": "k1"}).to_string());
    let c = URL_SAFE_NO_PAD.encode(claims().to_string());

    assert_eq!(
        verify(&format!("{h}.{c}.")).unwrap_err(),
        Rejection::Malformed,
        "empty signature"
    );
    assert_eq!(
        verify(&format!("{h}.{c}")).unwrap_err(),
        Rejection::Malformed,
        "two segments"
    );
}

#[test]
fn hs384_key_verifies_its_own_alg() {
    let mut h = header();
    h["alg"] = json!("HS384");
    h["kid"] = json!("k384");

    let token = craft(&h, &claims(), Algorithm::HS384, 2);

    assert!(verify(&token).is_ok());
}

#[test]
fn kid_tricks_rejected() {
    let cases = [
        (json!("../k1"), Rejection::UnknownKid, "path traversal"),
        (json!("k1\u{0}"), Rejection::UnknownKid, "NUL suffix"),
        (json!("K1"), Rejection::UnknownKid, "case change"),
        (json!(""), Rejection::UnknownKid, "empty kid"),
        (json!(1), Rejection::Malformed, "numeric kid"),
        (json!(["k1"]), Rejection::Malformed, "array kid"),
        (Value::Null, Rejection::Malformed, "null kid"),
    ];
    for (kid, expected, description) in cases {
        let token = with_header("kid", kid);

        assert_eq!(verify(&token).unwrap_err(), expected, "{description}");
    }
}

#[test]
fn missing_kid_rejected() {
    let token = craft(&json!({"alg": "HS256"}), &claims(), Algorithm::HS256, 1);

    assert_eq!(verify(&token).unwrap_err(), Rejection::Malformed);
}

#[test]
fn crit_and_typ_checked() {
    assert_eq!(
        verify(&with_header("crit", json!(["exp"]))).unwrap_err(),
        Rejection::UnsupportedCritical
    );
    assert_eq!(
        verify(&with_header("typ", json!("JOSE+JSON"))).unwrap_err(),
        Rejection::Malformed
    );
    assert!(
        verify(&with_header("typ", json!("jwt"))).is_ok(),
        "typ is case-insensitive"
    );
}

#[test]
fn embedded_key_ignored() {
    let token = with_header("jwk", json!({"kty": "oct", "k": "AAAA"}));

    assert!(
        verify(&token).is_ok(),
        "jwk header must not change which key verifies"
    );
}

#[test]
fn encoding_tricks_rejected() {
    let token = good();
    let parts: Vec<&str> = token.split('.').collect();
    let padded_header = URL_SAFE.encode(header().to_string());
    let cases = [
        (format!("{token}."), "fourth segment"),
        (format!(" {token}"), "leading space"),
        (format!("{token}="), "padding on signature"),
        (
            format!("{padded_header}.{}.{}", parts[1], parts[2]),
            "padded header",
        ),
        (
            token.replace('-', "+").replace('_', "/"),
            "standard alphabet",
        ),
        (
            format!("{}.{}.{}", parts[0], parts[1], &parts[2][..42]),
            "short signature",
        ),
        (format!("{}..{}", parts[0], parts[2]), "empty claims"),
        ("a.b.c".to_owned(), "garbage"),
        (String::new(), "empty"),
        (token.replacen('.', "%2E", 1), "percent-encoded dot"),
    ];
    for (candidate, description) in cases {
        if candidate == token {
            continue;
        }
        let result = verify(&candidate);

        assert!(
            matches!(result, Err(Rejection::Malformed | Rejection::BadSignature)),
            "{description}: {result:?}"
        );
    }
}

#[test]
fn non_canonical_signature_rejected() {
    let token = good();
    let (input, signature) = token.rsplit_once('.').expect("three segments");
    let last = signature.chars().last().expect("non-empty");
    // The last character of a 43-character segment carries 2 unused bits.
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.find(last).expect("base64url");
    let sibling = alphabet.as_bytes()[index ^ 1] as char;
    let altered = format!("{input}.{}{sibling}", &signature[..signature.len() - 1]);

    assert_eq!(verify(&altered).unwrap_err(), Rejection::Malformed);
}

#[test]
fn oversize_rejected_before_decoding() {
    let long = "a".repeat(4097);

    assert_eq!(verify(&long).unwrap_err(), Rejection::Oversize);
}

#[test]
fn claim_types_checked() {
    let cases = [
        (
            "exp",
            json!("1800003600"),
            Rejection::InvalidClaims,
            "string exp",
        ),
        ("exp", json!(null), Rejection::InvalidClaims, "null exp"),
        ("exp", json!(-1), Rejection::InvalidClaims, "negative exp"),
        (
            "exp",
            json!(1e300),
            Rejection::InvalidClaims,
            "exp past year 9999",
        ),
        ("iat", json!(true), Rejection::InvalidClaims, "boolean iat"),
        ("nbf", json!("0"), Rejection::InvalidClaims, "string nbf"),
        (
            "iss",
            json!(["sessiond"]),
            Rejection::InvalidClaims,
            "array iss",
        ),
        (
            "iss",
            json!("other"),
            Rejection::WrongIssuer,
            "other issuer",
        ),
        ("jti", json!(""), Rejection::InvalidClaims, "empty jti"),
        ("jti", json!(7), Rejection::InvalidClaims, "numeric jti"),
        (
            "aud",
            json!("shop"),
            Rejection::InvalidClaims,
            "audience present",
        ),
    ];
    for (name, value, expected, description) in cases {
        let token = with_claim(name, value);

        assert_eq!(verify(&token).unwrap_err(), expected, "{description}");
    }
}

#[test]
fn required_claims_checked() {
    for name in ["iss", "jti", "iat", "exp"] {
        let mut c = claims();
        c.as_object_mut().expect("object").remove(name);

        let result = verify(&craft(&header(), &c, Algorithm::HS256, 1));

        assert!(result.is_err(), "token without {name} accepted");
    }
}

#[test]
fn time_edges_follow_leeway() {
    let leeway = 30;
    let cases = [
        ("exp", json!(NOW - leeway + 1), true, "exp within leeway"),
        ("exp", json!(NOW - leeway), false, "exp at leeway"),
        ("iat", json!(NOW + leeway), true, "iat at leeway ahead"),
        ("iat", json!(NOW + leeway + 1), false, "iat beyond leeway"),
        (
            "iat",
            json!(NOW as f64 + 30.5),
            false,
            "fractional iat beyond leeway",
        ),
        ("nbf", json!(NOW + leeway), true, "nbf at leeway ahead"),
        ("nbf", json!(NOW + leeway + 1), false, "nbf beyond leeway"),
        ("exp", json!(NOW as f64 + 0.5), true, "fractional exp"),
    ];
    for (name, value, accepted, description) in cases {
        let mut c = claims();
        c["iat"] = json!(NOW - 60);
        c[name] = value;

        let result = verify(&craft(&header(), &c, Algorithm::HS256, 1));

        assert_eq!(result.is_ok(), accepted, "{description}: {result:?}");
    }
}

#[test]
fn expired_and_future_reasons() {
    assert_eq!(
        verify(&with_claim("exp", json!(NOW - 3600))).unwrap_err(),
        Rejection::Expired
    );
    assert_eq!(
        verify(&with_claim("nbf", json!(NOW + 600))).unwrap_err(),
        Rejection::NotYetValid
    );
}

#[test]
fn lifetime_capped() {
    let mut c = claims();
    c["exp"] = json!(NOW + 86_401);
    let too_long = craft(&header(), &c, Algorithm::HS256, 1);
    c["exp"] = json!(NOW);
    c["iat"] = json!(NOW);
    let empty = craft(&header(), &c, Algorithm::HS256, 1);

    assert_eq!(verify(&too_long).unwrap_err(), Rejection::LifetimeTooLong);
    assert_eq!(
        verify(&empty).unwrap_err(),
        Rejection::InvalidClaims,
        "exp equal to iat"
    );
}

#[test]
fn retired_key_rejected() {
    let mut retired = key("k1", Algorithm::HS256, 1).with_lifecycle(Some(at(0)), Some(at(NOW)));
    retired = retired.with_lifecycle(retired.sign_from, retired.verify_until);
    let ring = KeyRing::new(vec![retired]).expect("unique kids");

    let result = verify_token(&good(), &ring, &policy(), at(NOW));

    assert_eq!(result.unwrap_err(), Rejection::RetiredKid);
}

#[test]
fn claims_not_object_rejected() {
    for claims in [json!([1]), json!("x"), json!(null)] {
        let token = craft(&header(), &claims, Algorithm::HS256, 1);

        assert_eq!(
            verify(&token).unwrap_err(),
            Rejection::InvalidClaims,
            "{claims}"
        );
    }
}

/// Every token this verifier accepts is also accepted by jsonwebtoken's own
/// `decode` with the equivalent `Validation`, so the stricter checks here
/// never loosen what the library checks.
#[test]
fn accepted_tokens_pass_library_validation() {
    let now = chrono::Utc::now().timestamp();
    let fresh = json!({"iss": "sessiond", "jti": "abc", "iat": now, "exp": now + 600});
    let mut candidates = vec![craft(&header(), &fresh, Algorithm::HS256, 1)];
    let mut with_nbf = fresh.clone();
    with_nbf["nbf"] = json!(now - 5);
    candidates.push(craft(&header(), &with_nbf, Algorithm::HS256, 1));
    let mut fractional = fresh.clone();
    fractional["exp"] = json!(now as f64 + 600.25);
    candidates.push(craft(&header(), &fractional, Algorithm::HS256, 1));

    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 30;
    validation.set_issuer(&["sessiond"]);
    validation.set_required_spec_claims(&["exp", "iss"]);
    validation.validate_nbf = true;
    let library_key = DecodingKey::from_secret(key("k1", Algorithm::HS256, 1).secret());
    for token in candidates {
        let ours = verify_token(&token, &ring(), &policy(), chrono::Utc::now());
        let theirs = decode::<Value>(&token, &library_key, &validation);

        assert!(ours.is_ok(), "{ours:?}");
        assert!(
            theirs.is_ok(),
            "jsonwebtoken rejected a token sessiond accepts: {theirs:?}"
        );
    }
}

#[test]
fn header_not_object_rejected() {
    let h = URL_SAFE_NO_PAD.encode(r#"["HS256","k1"]"#);
    let c = URL_SAFE_NO_PAD.encode(claims().to_string());
    let k = key("k1", Algorithm::HS256, 1);
    let input = format!("{h}.{c}");
    let signature =
        jsonwebtoken::crypto::sign(input.as_bytes(), k.encoding_key(), Algorithm::HS256)
            .expect("signs");

    let result = verify(&format!("{input}.{signature}"));

    assert_eq!(result.unwrap_err(), Rejection::Malformed);
}

/// The cookie of a valid token is built without scanning its bytes again
/// (`ValidToken`), which is sound only while this holds.
#[test]
fn foreign_byte_rejected_per_segment() {
    let token = good();
    let dots: Vec<usize> = token.match_indices('.').map(|(at, _)| at).collect();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    for byte in (0..=u8::MAX).filter(|b| !alphabet.contains(b)) {
        for at in [1, dots[0] + 1, dots[1] + 1] {
            let mut altered = token.clone().into_bytes();
            altered[at] = byte;
            let Ok(altered) = String::from_utf8(altered) else {
                // Not text, so no caller can present it as a token.
                continue;
            };

            assert_eq!(
                verify(&altered).unwrap_err(),
                Rejection::Malformed,
                "byte {byte:#04x} at {at}"
            );
        }
    }
}
