//! The JOSE header and JWT claims as sessiond reads them: each known member
//! must have its JSON type, `null` included, and a repeated member is an error.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};

/// The JOSE header members verification reads; others are ignored, as
/// RFC 7515 allows, except `crit`, whose presence alone rejects the token.
#[derive(Deserialize)]
pub(super) struct JoseHeader<'a> {
    #[serde(borrow, deserialize_with = "string")]
    pub alg: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "string")]
    pub kid: Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "optional_string")]
    pub typ: Option<Cow<'a, str>>,
    #[serde(default)]
    pub crit: Option<IgnoredAny>,
}

/// The registered claims verification reads. Unknown claims are ignored, as
/// RFC 7519 section 4 requires.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub(super) struct Claims<'a> {
    #[serde(borrow, default, deserialize_with = "optional_string")]
    pub iss: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "optional_string")]
    pub jti: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "optional_number")]
    pub exp: Option<f64>,
    #[serde(default, deserialize_with = "optional_number")]
    pub iat: Option<f64>,
    #[serde(default, deserialize_with = "optional_number")]
    pub nbf: Option<f64>,
    #[serde(default)]
    pub aud: Option<IgnoredAny>,
}

/// Parses `json` as `T` only when it is a JSON object: serde's derived
/// structs would also take an array of member values.
pub(super) fn from_object<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Option<T> {
    let first = json.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(json).ok()
}

struct StringVisitor;

impl<'de> Visitor<'de> for StringVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Cow<'de, str>, D::Error> {
    d.deserialize_str(StringVisitor)
}

/// Reads a member that is absent (`default`) or a string; `null` is rejected.
fn optional_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    string(d).map(Some)
}

/// Reads a member that is absent (`default`) or a JSON number; `null`, strings
/// and booleans are rejected.
fn optional_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    f64::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_reject_wrong_types() {
        let cases = [
            (r#"{"exp":"1800000000"}"#, "string exp"),
            (r#"{"exp":null}"#, "null exp"),
            (r#"{"nbf":null}"#, "null nbf"),
            (r#"{"iat":true}"#, "boolean iat"),
            (r#"{"iss":["a"]}"#, "array iss"),
            (r#"{"jti":5}"#, "numeric jti"),
            (r#"{"exp":1,"exp":2}"#, "repeated exp"),
            (r#"[]"#, "array instead of object"),
            (r#" [null, "x"]"#, "array after whitespace"),
            (r#"{"exp":1} x"#, "trailing bytes"),
        ];
        for (json, description) in cases {
            let parsed = from_object::<Claims>(json.as_bytes());

            assert!(parsed.is_none(), "{description} was accepted");
        }
    }

    #[test]
    fn claims_accept_fractional_dates() {
        let claims: Claims =
            serde_json::from_str(r#"{"exp":1800000000.5,"x":{"y":[1]}}"#).expect("valid claims");

        assert_eq!(claims.exp, Some(1_800_000_000.5));
        assert!(claims.nbf.is_none());
    }

    #[test]
    fn claims_accept_escaped_strings() {
        let claims: Claims = serde_json::from_str(r#"{"iss":"\u0073essiond"}"#).expect("valid");

        assert_eq!(claims.iss.as_deref(), Some("sessiond"));
    }

    #[test]
    fn header_requires_string_kid() {
        for json in [
            r#"{"alg":"HS256"}"#,
            r#"{"alg":"HS256","kid":1}"#,
            r#"{"alg":"HS256","kid":null}"#,
        ] {
            assert!(serde_json::from_str::<JoseHeader>(json).is_err(), "{json}");
        }
    }
}
