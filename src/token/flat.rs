//! A fast reader for the common shape of claims: one flat JSON object with
//! no whitespace whose values are plain strings or small integers, as
//! sessiond and most JWT libraries write them. It gives up (returns `None`)
//! on anything else, and the caller then parses with serde_json, so the two
//! paths accept and reject exactly the same claims.

use std::borrow::Cow;

use serde::de::IgnoredAny;

use super::claims::Claims;

/// Integers of more digits than this go to serde_json: up to 15 digits are
/// exact as `f64`, which is what serde_json returns for them too.
const MAX_INTEGER_DIGITS: usize = 15;

/// One value of a flat object.
enum Value<'a> {
    String(&'a str),
    Integer(f64),
}

/// Reads `json` when it has the flat shape; `None` means "use serde_json".
pub(super) fn read_flat_claims(json: &[u8]) -> Option<Claims<'_>> {
    let mut claims = Claims::default();
    let mut rest = json.strip_prefix(b"{")?;
    if let Some(after) = rest.strip_prefix(b"}") {
        return after.is_empty().then_some(claims);
    }
    loop {
        let (name, after_name) = read_string(rest)?;
        let after_colon = after_name.strip_prefix(b":")?;
        let (value, after_value) = read_value(after_colon)?;
        if !assign(&mut claims, name, value) {
            return None;
        }
        match after_value.split_first()? {
            (b',', next) => rest = next,
            (b'}', next) => return next.is_empty().then_some(claims),
            _ => return None,
        }
    }
}

/// Stores a known member; false for a repeated or wrongly typed one, which
/// serde_json rejects, so the caller's fallback reports it.
fn assign<'a>(claims: &mut Claims<'a>, name: &str, value: Value<'a>) -> bool {
    fn set<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
        match (slot.is_some(), value) {
            (false, Some(value)) => {
                *slot = Some(value);
                true
            }
            _ => false,
        }
    }
    let text = |v: &Value<'a>| match v {
        Value::String(s) => Some(Cow::Borrowed(*s)),
        Value::Integer(_) => None,
    };
    let number = |v: &Value<'a>| match v {
        Value::Integer(n) => Some(*n),
        Value::String(_) => None,
    };
    match name {
        "iss" => set(&mut claims.iss, text(&value)),
        "jti" => set(&mut claims.jti, text(&value)),
        "exp" => set(&mut claims.exp, number(&value)),
        "iat" => set(&mut claims.iat, number(&value)),
        "nbf" => set(&mut claims.nbf, number(&value)),
        "aud" => set(&mut claims.aud, Some(IgnoredAny)),
        _ => true,
    }
}

/// Reads a string with no escape and no control character.
fn read_string(json: &[u8]) -> Option<(&str, &[u8])> {
    let body = json.strip_prefix(b"\"")?;
    let end = body
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    if body[end] != b'"' {
        return None;
    }
    let text = std::str::from_utf8(&body[..end]).ok()?;
    Some((text, &body[end + 1..]))
}

/// Reads a plain string or a non-negative integer without leading zeros.
fn read_value(json: &[u8]) -> Option<(Value<'_>, &[u8])> {
    if json.first() == Some(&b'"') {
        let (text, rest) = read_string(json)?;
        return Some((Value::String(text), rest));
    }
    let digits = json.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > MAX_INTEGER_DIGITS || (digits > 1 && json[0] == b'0') {
        return None;
    }
    let rest = &json[digits..];
    // A fraction or exponent goes to serde_json.
    if matches!(rest.first(), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    let value = json[..digits]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some((Value::Integer(value as f64), rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::claims::from_object;

    /// Claims that the fast reader takes must parse the same with serde_json,
    /// and those it leaves must be left to serde_json.
    #[test]
    fn agrees_with_serde() {
        let cases: &[&str] = &[
            r#"{"iss":"ccstore","jti":"abc","iat":1800000000,"exp":1800003600}"#,
            r#"{"jti":"abc","iat":1800000000,"exp":1800003600,"iss":"ccstore"}"#,
            r#"{"iss":"a","jti":"b","iat":0,"exp":1,"nbf":5,"x":"y","z":7}"#,
            r#"{"iss":"a","aud":"shop","exp":1}"#,
            r#"{}"#,
            r#"{"exp":1,"exp":2}"#,
            r#"{"x":1,"x":2}"#,
            r#"{"iss":1}"#,
            r#"{"exp":"1"}"#,
            r#"{"exp":01}"#,
            r#"{"exp":-1}"#,
            r#"{"exp":1.5}"#,
            r#"{"exp":1e3}"#,
            r#"{"exp":1234567890123456789}"#,
            r#"{"exp":null}"#,
            r#"{"exp":true}"#,
            r#"{"iss":"a\"b"}"#,
            r#"{"iss":"\u0061"}"#,
            r#"{"iss":"tab	in"}"#,
            r#"{"x":{"y":1}}"#,
            r#"{"x":[1]}"#,
            r#"{ "exp":1}"#,
            r#"{"exp":1} "#,
            r#"{"exp":1}x"#,
            r#"{"exp":1,}"#,
            r#"{"exp"1}"#,
            r#"{"exp":}"#,
            r#"{"#,
            r#"[]"#,
            r#""#,
            "{\"iss\":\"caf\u{e9}\"}",
        ];
        for json in cases {
            let fast = read_flat_claims(json.as_bytes());
            let slow: Option<Claims> = from_object(json.as_bytes());

            if let Some(fast) = fast {
                assert_eq!(
                    Some(fast),
                    slow,
                    "fast reader disagrees with serde_json on {json}"
                );
            }
        }
    }

    #[test]
    fn takes_minted_shape() {
        let json = r#"{"iss":"ccstore","jti":"abc","iat":1800000000,"exp":1800003600}"#;

        let claims = read_flat_claims(json.as_bytes()).expect("flat shape");

        assert_eq!(claims.iss.as_deref(), Some("ccstore"));
        assert_eq!(claims.exp, Some(1_800_003_600.0));
    }

    #[test]
    fn leaves_invalid_utf8_to_serde() {
        let json = b"{\"iss\":\"\xff\"}";

        assert!(read_flat_claims(json).is_none());
    }
}
