//! The `Set-Cookie` value of the session cookie. Its attributes are fixed at
//! start, so a response only appends the token and `Max-Age`.

use std::convert::Infallible;
use std::ops::Range;

use actix_web::http::header::HeaderValue;
use actix_web::web::Bytes;

use crate::token::ValidToken;

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "session_token-store";

/// Offset of the token in a `Set-Cookie` value, after the name and `=`.
const TOKEN_START: usize = COOKIE_NAME.len() + 1;

/// The `SameSite` attribute (RFC 6265bis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

/// Cookie attributes, prepared once.
#[derive(Debug, Clone)]
pub struct CookieSettings {
    pub secure: bool,
    pub same_site: SameSite,
    pub domain: Option<String>,
    /// `; Path=/[; Domain=…]; HttpOnly[; Secure]; SameSite=…; Max-Age=`
    attributes: String,
    /// True when `attributes` is a valid header value.
    attributes_header_safe: bool,
}

impl CookieSettings {
    pub fn new(secure: bool, same_site: SameSite, domain: Option<String>) -> Self {
        let mut attributes = String::from("; Path=/");
        if let Some(domain) = &domain {
            attributes.push_str("; Domain=");
            attributes.push_str(domain);
        }
        attributes.push_str("; HttpOnly");
        if secure {
            attributes.push_str("; Secure");
        }
        attributes.push_str(match same_site {
            SameSite::Lax => "; SameSite=Lax",
            SameSite::Strict => "; SameSite=Strict",
            SameSite::None => "; SameSite=None",
        });
        attributes.push_str("; Max-Age=");
        CookieSettings {
            secure,
            same_site,
            domain,
            attributes_header_safe: header_safe(attributes.as_bytes()),
            attributes,
        }
    }

    /// Builds the `Set-Cookie` value for `token`, kept for `max_age_secs`. `None`
    /// when the token has bytes a header cannot carry, which a verified or
    /// minted token never has.
    pub fn set_cookie(&self, token: &str, max_age_secs: i64) -> Option<HeaderValue> {
        let cookie = self.session_cookie(max_age_secs, token.len(), |value| {
            value.push_str(token);
            Ok::<(), ()>(())
        });
        cookie.ok()?.into_set_cookie()
    }

    /// Builds the cookie around the token that `write_token` appends to the
    /// value it is given (`token_len` bytes, for the allocation), kept for
    /// `max_age_secs`. The whole value is one allocation.
    pub fn session_cookie<E>(
        &self,
        max_age_secs: i64,
        token_len: usize,
        write_token: impl FnOnce(&mut String) -> Result<(), E>,
    ) -> Result<SessionCookie, E> {
        let (value, token) = self.assemble(max_age_secs, token_len, write_token)?;
        // The name is checked with the token, because `write_token` could
        // change what precedes the token as well.
        let written = &value.as_bytes()[..token.end];
        let header_safe =
            self.attributes_header_safe && token.start == TOKEN_START && header_safe(written);
        Ok(SessionCookie {
            value: Bytes::from(value),
            token,
            header_safe,
        })
    }

    /// Builds the cookie for a verified token, with `Max-Age` set to
    /// `max_age_secs`. A [`ValidToken`] has only base64url bytes and dots,
    /// so the token is copied without a scan.
    pub fn valid_cookie(&self, max_age_secs: i64, token: &ValidToken<'_>) -> SessionCookie {
        let text = token.text();
        let assembled = self.assemble(max_age_secs, text.len(), |value| {
            value.push_str(text);
            Ok::<(), Infallible>(())
        });
        let (value, token) = match assembled {
            Ok(parts) => parts,
            Err(never) => match never {},
        };
        debug_assert!(header_safe(&value.as_bytes()[..token.end]));
        SessionCookie {
            value: Bytes::from(value),
            token,
            header_safe: self.attributes_header_safe,
        }
    }

    /// Writes the cookie name, what `write_token` appends, the attributes
    /// and `Max-Age` into one allocation. Returns the value and the range
    /// that `write_token` wrote.
    fn assemble<E>(
        &self,
        max_age_secs: i64,
        token_len: usize,
        write_token: impl FnOnce(&mut String) -> Result<(), E>,
    ) -> Result<(String, Range<usize>), E> {
        let mut max_age = itoa::Buffer::new();
        let max_age = max_age.format(max_age_secs);
        let mut value =
            String::with_capacity(TOKEN_START + token_len + self.attributes.len() + max_age.len());
        value.push_str(COOKIE_NAME);
        value.push('=');
        write_token(&mut value)?;
        let token = TOKEN_START.min(value.len())..value.len();
        value.push_str(&self.attributes);
        value.push_str(max_age);
        Ok((value, token))
    }
}

/// A `Set-Cookie` value and the token inside it. Both header values share
/// its one buffer, so echoing the token in a header copies nothing.
#[derive(Clone)]
pub struct SessionCookie {
    value: Bytes,
    token: Range<usize>,
    /// True when `value` is a valid header value. The cookie name and the
    /// digits of `Max-Age` always are, so this covers the token and the
    /// attributes.
    header_safe: bool,
}

impl SessionCookie {
    /// Returns the token alone as a header value, or `None` when it has bytes a
    /// header cannot carry.
    pub fn token(&self) -> Option<HeaderValue> {
        if !self.header_safe {
            return None;
        }
        checked_header_value(self.header_safe, self.value.slice(self.token.clone()))
    }

    /// Returns the `Set-Cookie` header value, or `None` as for [`Self::token`].
    /// Taking `self` hands the buffer over without a reference count.
    pub fn into_set_cookie(self) -> Option<HeaderValue> {
        checked_header_value(self.header_safe, self.value)
    }
}

/// Wraps `bytes` as a header value without testing each byte again, or
/// returns `None` unless they are known to be valid there (`header_safe`).
#[allow(unsafe_code)]
fn checked_header_value(header_safe: bool, bytes: Bytes) -> Option<HeaderValue> {
    if !header_safe {
        return None;
    }
    // SAFETY: every byte passed `header_safe`, which is the test
    // `HeaderValue` applies, or belongs to a `ValidToken`, whose bytes are
    // base64url or dots. Debug builds of `http` test the bytes again.
    Some(unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) })
}

/// Returns true when every byte is valid in a header value by the test of
/// `http`'s `HeaderValue`: tab, or any byte from space up except DEL. With
/// no early exit, the compiler can test many bytes per instruction.
fn header_safe(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |safe, &b| {
        safe & ((b >= b' ' && b != 0x7f) | (b == b'\t'))
    })
}

impl std::fmt::Debug for SessionCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCookie")
            .field("value", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_attributes() {
        let settings = CookieSettings::new(true, SameSite::Lax, None);

        let value = settings.set_cookie("a.b.c", 3600).expect("valid header");

        assert_eq!(
            value.to_str().expect("ascii"),
            "session_token-store=a.b.c; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=3600"
        );
    }

    #[test]
    fn domain_and_strict_without_secure() {
        let settings = CookieSettings::new(false, SameSite::Strict, Some("shop.example".into()));

        let value = settings.set_cookie("t", 5).expect("valid header");

        assert_eq!(
            value.to_str().expect("ascii"),
            "session_token-store=t; Path=/; Domain=shop.example; HttpOnly; SameSite=Strict; Max-Age=5"
        );
    }

    #[test]
    fn valid_cookie_matches_scanned_cookie() {
        use crate::token::test_support::{NOW, at, policy, ring};
        use crate::token::{mint_token, verify_cached};

        let ring = ring();
        let signer = ring.signing_key(at(NOW)).expect("a signing key");
        let token = mint_token(signer, &policy(), at(NOW)).expect("mints").token;
        let valid = verify_cached(token.as_bytes(), &ring, &policy(), at(NOW)).expect("valid");
        let settings = CookieSettings::new(true, SameSite::Lax, Some("shop.example".into()));

        let cookie = settings.valid_cookie(120, &valid);

        assert_eq!(cookie.token(), HeaderValue::from_str(&token).ok());
        assert_eq!(cookie.into_set_cookie(), settings.set_cookie(&token, 120));
    }

    #[test]
    fn header_safe_matches_header_value() {
        for byte in 0..=u8::MAX {
            let bytes = [b'a', byte, b'z'];

            assert_eq!(
                header_safe(&bytes),
                HeaderValue::from_bytes(&bytes).is_ok(),
                "byte {byte:#04x}"
            );
        }
    }

    #[test]
    fn control_bytes_in_domain_rejected() {
        let settings = CookieSettings::new(true, SameSite::Lax, Some("a\nb".into()));

        assert!(settings.set_cookie("t", 1).is_none());
    }

    #[test]
    fn bytes_written_before_token_checked() {
        let settings = CookieSettings::new(true, SameSite::Lax, None);

        let cookie = settings
            .session_cookie(60, 0, |value| {
                value.insert_str(0, "x\r\nInjected: 1\r\n");
                value.push('t');
                Ok::<(), ()>(())
            })
            .expect("written");

        assert!(cookie.token().is_none());
        assert!(cookie.into_set_cookie().is_none());
    }

    #[test]
    fn shortened_value_rejected() {
        let settings = CookieSettings::new(true, SameSite::Lax, None);

        let cookie = settings
            .session_cookie(60, 0, |value| {
                value.clear();
                Ok::<(), ()>(())
            })
            .expect("written");

        assert!(cookie.token().is_none());
        assert!(cookie.into_set_cookie().is_none());
    }

    #[test]
    fn control_bytes_rejected() {
        let settings = CookieSettings::new(true, SameSite::Lax, None);

        assert!(settings.set_cookie("a\r\nb", 1).is_none());
    }

    #[test]
    fn session_cookie_shares_token() {
        let settings = CookieSettings::new(true, SameSite::Lax, None);

        let cookie = settings
            .session_cookie(60, 0, |value| {
                value.push_str("x.y.z");
                Ok::<(), ()>(())
            })
            .expect("written");

        assert_eq!(cookie.token().expect("valid header"), "x.y.z");
        let set_cookie = cookie.into_set_cookie().expect("valid header");
        assert_eq!(
            set_cookie.to_str().expect("ascii"),
            "session_token-store=x.y.z; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=60"
        );
    }

    #[test]
    fn session_cookie_passes_error_on() {
        let settings = CookieSettings::new(true, SameSite::Lax, None);

        let result = settings.session_cookie(60, 0, |_| Err("mint failed"));

        assert_eq!(result.unwrap_err(), "mint failed");
    }

    #[test]
    fn session_cookie_debug_redacts_token() {
        let settings = CookieSettings::new(true, SameSite::Lax, None);
        let cookie = settings
            .session_cookie(60, 0, |value| {
                value.push_str("secret.token.value");
                Ok::<(), ()>(())
            })
            .expect("written");

        let debug = format!("{cookie:?}");

        assert!(!debug.contains("secret"), "{debug}");
    }
}
