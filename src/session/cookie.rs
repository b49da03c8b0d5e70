//! The `Set-Cookie` value of the session cookie. Its attributes are fixed at
//! start, so a response only appends the token and `Max-Age`.

use actix_web::http::header::HeaderValue;

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "session_token-store";

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
            attributes,
        }
    }

    /// The `Set-Cookie` value for `token`, kept for `max_age_secs`. `None`
    /// when the token has bytes a header cannot carry, which a verified or
    /// minted token never has.
    pub fn set_cookie(&self, token: &str, max_age_secs: i64) -> Option<HeaderValue> {
        let mut value =
            String::with_capacity(COOKIE_NAME.len() + 1 + token.len() + self.attributes.len() + 20);
        value.push_str(COOKIE_NAME);
        value.push('=');
        value.push_str(token);
        value.push_str(&self.attributes);
        value.push_str(itoa::Buffer::new().format(max_age_secs));
        HeaderValue::try_from(value).ok()
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
    fn control_bytes_rejected() {
        let settings = CookieSettings::new(true, SameSite::Lax, None);

        assert!(settings.set_cookie("a\r\nb", 1).is_none());
    }
}
