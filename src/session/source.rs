//! Where a request carries its session token: the `X-CC-Session-Token`
//! header when present with a non-blank value, otherwise the
//! `session_token-store` cookie. A present header is never backed up by the
//! cookie.

use actix_web::http::header::{self, HeaderMap, HeaderName};

use super::cookie::COOKIE_NAME;

/// Request header that carries the token for clients without cookies.
pub static TOKEN_HEADER: HeaderName = HeaderName::from_static("x-cc-session-token");

/// Most cookies of our name tried per request; a request with more is not
/// a browser's and gets no more work.
pub const MAX_COOKIE_CANDIDATES: usize = 8;

/// The token candidates of one request. `Debug` shows no token.
#[derive(PartialEq, Eq)]
pub enum TokenSource<'a> {
    /// One `X-CC-Session-Token` field with a non-blank value, trimmed, as
    /// sent. A value that is not visible ASCII fails verification and is
    /// counted as an ambiguous header, like [`Self::AmbiguousHeader`].
    Header(&'a [u8]),
    /// Several `X-CC-Session-Token` fields: never guessed at, so the session
    /// is renewed.
    AmbiguousHeader,
    /// Values of `session_token-store` cookies as sent, in request order
    /// (at most [`MAX_COOKIE_CANDIDATES`]). Verification checks their bytes.
    Cookies(CookieCandidates<'a>),
    /// No token at all.
    Absent,
}

/// Up to [`MAX_COOKIE_CANDIDATES`] cookie values, kept on the stack.
#[derive(PartialEq, Eq)]
pub struct CookieCandidates<'a> {
    values: [&'a [u8]; MAX_COOKIE_CANDIDATES],
    len: usize,
}

impl<'a> CookieCandidates<'a> {
    /// Takes the first [`MAX_COOKIE_CANDIDATES`] values of `values`.
    fn collect(values: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut candidates = CookieCandidates {
            values: [b""; MAX_COOKIE_CANDIDATES],
            len: 0,
        };
        for (slot, value) in candidates.values.iter_mut().zip(values) {
            *slot = value;
            candidates.len += 1;
        }
        candidates
    }

    pub fn as_slice(&self) -> &[&'a [u8]] {
        &self.values[..self.len]
    }
}

impl std::fmt::Debug for CookieCandidates<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CookieCandidates({} redacted)", self.len)
    }
}

impl std::fmt::Debug for TokenSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Header(_) => f.write_str("Header([redacted])"),
            Self::AmbiguousHeader => f.write_str("AmbiguousHeader"),
            Self::Cookies(candidates) => write!(f, "Cookies({candidates:?})"),
            Self::Absent => f.write_str("Absent"),
        }
    }
}

impl TokenSource<'_> {
    /// Returns the source as written in logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Header(_) | Self::AmbiguousHeader => "header",
            Self::Cookies(_) => "cookie",
            Self::Absent => "none",
        }
    }
}

/// The token candidates of a request, and whether it has an
/// `X-CC-Session-Token` field at all, even an empty one: such a client reads
/// its token from the response header.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestToken<'a> {
    pub source: TokenSource<'a>,
    pub echo: bool,
}

/// Finds the token candidates of a request.
pub fn token_source(headers: &HeaderMap) -> TokenSource<'_> {
    read_token(headers).source
}

/// Finds the token candidates of a request and whether it has the token
/// header, looking the header up once.
pub fn read_token(headers: &HeaderMap) -> RequestToken<'_> {
    let mut fields = headers.get_all(&TOKEN_HEADER);
    let Some(first) = fields.next() else {
        return RequestToken {
            source: cookie_source(headers),
            echo: false,
        };
    };
    let value = first.as_bytes().trim_ascii();
    let source = if fields.next().is_some() {
        TokenSource::AmbiguousHeader
    } else if value.is_empty() {
        cookie_source(headers)
    } else {
        TokenSource::Header(value)
    };
    RequestToken { source, echo: true }
}

fn cookie_source(headers: &HeaderMap) -> TokenSource<'_> {
    let candidates = CookieCandidates::collect(cookie_values(headers));
    if candidates.len == 0 {
        TokenSource::Absent
    } else {
        TokenSource::Cookies(candidates)
    }
}

/// Returns whether each byte is visible ASCII or tab, the test of
/// `HeaderValue::to_str`. With no early exit, the compiler can test many
/// bytes per instruction, where `to_str` branches on each.
pub fn is_visible_ascii(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |visible, &b| {
        visible & ((b' '..=b'~').contains(&b) | (b == b'\t'))
    })
}

/// Values of every `session_token-store` cookie in every `Cookie` field.
/// A pair that cannot be read is skipped, so one broken cookie beside ours
/// does not end the session. One pair of double quotes is removed (RFC 6265
/// allows quoted values); percent-encoding is left as it is. The bytes are
/// not checked for UTF-8 here, because verification rejects any byte a
/// token cannot contain.
fn cookie_values(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::COOKIE)
        .flat_map(|field| cookie_pairs(field.as_bytes()))
        .filter_map(our_cookie_value)
}

/// Returns the value of one `name=value` pair when the name, trimmed, is
/// ours, unquoted and trimmed, or `None` for another name or an empty
/// value. The name is compared as a prefix, so the pair is not searched
/// for its `=` first.
fn our_cookie_value(pair: &[u8]) -> Option<&[u8]> {
    let after_name = pair
        .trim_ascii_start()
        .strip_prefix(COOKIE_NAME.as_bytes())?;
    let value = after_name
        .trim_ascii_start()
        .strip_prefix(b"=")?
        .trim_ascii();
    let value = match value {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    };
    (!value.is_empty()).then_some(value)
}

/// Splits one `Cookie` field into its `;`-separated pairs. `memchr` finds
/// each `;` many bytes at a time, which matters when a token fills most of
/// the field.
fn cookie_pairs(field: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(field);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr(b';', current) {
            Some(at) => {
                rest = Some(&current[at + 1..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    /// Returns the cookie values found as text; panics on any other source.
    fn cookies<'a>(source: &TokenSource<'a>) -> Vec<&'a str> {
        match source {
            TokenSource::Cookies(candidates) => candidates
                .as_slice()
                .iter()
                .map(|value| std::str::from_utf8(value).expect("UTF-8 cookie value"))
                .collect(),
            other => panic!("cookies expected, found {other:?}"),
        }
    }

    fn headers(fields: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("valid name"),
                HeaderValue::from_bytes(value).expect("valid value"),
            );
        }
        map
    }

    #[test]
    fn pairs_match_slice_split() {
        for field in [
            &b""[..],
            b";",
            b"a=1",
            b"a=1;b=2",
            b";a=1;;b=2;",
            b"a=1; b=2 ;",
        ] {
            let ours: Vec<&[u8]> = cookie_pairs(field).collect();
            let std: Vec<&[u8]> = field.split(|&b| b == b';').collect();

            assert_eq!(ours, std, "{:?}", String::from_utf8_lossy(field));
        }
    }

    /// Splits a pair at its first `=` and compares the trimmed name.
    fn split_pair_value(pair: &[u8]) -> Option<&[u8]> {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (name, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
        if name != COOKIE_NAME.as_bytes() {
            return None;
        }
        let value = match value {
            [b'"', inner @ .., b'"'] => inner,
            other => other,
        };
        (!value.is_empty()).then_some(value)
    }

    #[test]
    fn prefix_match_equals_split() {
        let names = [
            "session_token-store",
            " session_token-store ",
            "\tsession_token-store\t",
            "session_token-store2",
            "session_token-stor",
            "xsession_token-store",
            "session_token-store x",
            "Session_token-store",
            "",
        ];
        let values = ["t", " t ", "\"t\"", "\"", "", " ", "a=b", "\"\"", "=x"];
        for name in names {
            for value in values {
                for pair in [format!("{name}={value}"), name.to_owned()] {
                    assert_eq!(
                        our_cookie_value(pair.as_bytes()),
                        split_pair_value(pair.as_bytes()),
                        "{pair:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn header_takes_precedence() {
        let map = headers(&[
            ("x-cc-session-token", b" h.t.v "),
            ("cookie", b"session_token-store=c.t.v"),
        ]);

        assert_eq!(token_source(&map), TokenSource::Header(b"h.t.v"));
    }

    #[test]
    fn header_trimmed_of_spaces_and_tabs() {
        let map = headers(&[("x-cc-session-token", b"\t h.t.v \t")]);

        assert_eq!(token_source(&map), TokenSource::Header(b"h.t.v"));
    }

    #[test]
    fn blank_header_falls_back_to_cookie() {
        let map = headers(&[
            ("x-cc-session-token", b"  "),
            ("cookie", b"session_token-store=c"),
        ]);

        assert_eq!(cookies(&token_source(&map)), ["c"]);
        assert!(read_token(&map).echo);
    }

    #[test]
    fn echo_follows_header_presence() {
        let cookie_only = headers(&[("cookie", b"session_token-store=c")]);
        let repeated = headers(&[("x-cc-session-token", b"a"), ("x-cc-session-token", b"b")]);
        let header = headers(&[("x-cc-session-token", b"h.t.v")]);

        assert!(!read_token(&cookie_only).echo);
        assert!(read_token(&repeated).echo);
        assert!(read_token(&header).echo);
    }

    #[test]
    fn repeated_header_is_ambiguous() {
        let map = headers(&[("x-cc-session-token", b"a"), ("x-cc-session-token", b"a")]);

        assert_eq!(token_source(&map), TokenSource::AmbiguousHeader);
    }

    #[test]
    fn visible_ascii_matches_to_str() {
        for byte in 0..=u8::MAX {
            let bytes = [b'a', byte, b'z'];
            let Ok(value) = HeaderValue::from_bytes(&bytes) else {
                continue;
            };

            assert_eq!(
                is_visible_ascii(&bytes),
                value.to_str().is_ok(),
                "byte {byte:#04x}"
            );
        }
    }

    #[test]
    fn non_ascii_header_kept_as_bytes() {
        let map = headers(&[("x-cc-session-token", b" \xff\xfe ")]);

        assert_eq!(token_source(&map), TokenSource::Header(b"\xff\xfe"));
    }

    #[test]
    fn cookies_in_order_across_fields() {
        let map = headers(&[
            ("cookie", b"a=1; session_token-store=first; b=2"),
            ("cookie", b"session_token-store=\"second\""),
        ]);

        assert_eq!(cookies(&token_source(&map)), ["first", "second"]);
    }

    #[test]
    fn broken_cookie_beside_ours_ignored() {
        let map = headers(&[(
            "cookie",
            b"garbage; =x; \xff=\xfe; session_token-store=t; ;",
        )]);

        assert_eq!(cookies(&token_source(&map)), ["t"]);
    }

    #[test]
    fn cookie_name_is_exact() {
        let map = headers(&[(
            "cookie",
            b"Session_token-store=a; session_token-storex=b; xsession_token-store=c",
        )]);

        assert_eq!(token_source(&map), TokenSource::Absent);
    }

    #[test]
    fn only_one_quote_pair_removed() {
        let map = headers(&[(
            "cookie",
            b"session_token-store=\"\"t\"\"; session_token-store=\"u",
        )]);

        assert_eq!(cookies(&token_source(&map)), ["\"t\"", "\"u"]);
    }

    #[test]
    fn percent_encoding_kept() {
        let map = headers(&[("cookie", b"session_token-store=a%2Eb")]);

        assert_eq!(cookies(&token_source(&map)), ["a%2Eb"]);
    }

    #[test]
    fn candidates_capped() {
        let many = "session_token-store=x; ".repeat(20);
        let map = headers(&[("cookie", many.as_bytes())]);

        assert_eq!(cookies(&token_source(&map)).len(), MAX_COOKIE_CANDIDATES);
    }

    #[test]
    fn non_utf8_cookie_kept_as_bytes() {
        let map = headers(&[(
            "cookie",
            b"session_token-store=\xff\xfe; session_token-store=t",
        )]);
        let source = token_source(&map);

        let TokenSource::Cookies(candidates) = &source else {
            panic!("cookies expected, found {source:?}");
        };
        assert_eq!(candidates.as_slice(), [&b"\xff\xfe"[..], b"t"]);
    }

    #[test]
    fn debug_shows_no_token() {
        let map = headers(&[("cookie", b"session_token-store=secret-token")]);
        let header = headers(&[("x-cc-session-token", b"secret-token")]);

        let cookie_debug = format!("{:?}", token_source(&map));
        let header_debug = format!("{:?}", token_source(&header));

        assert_eq!(cookie_debug, "Cookies(CookieCandidates(1 redacted))");
        assert_eq!(header_debug, "Header([redacted])");
    }

    #[test]
    fn nothing_is_absent() {
        assert_eq!(token_source(&HeaderMap::new()), TokenSource::Absent);
    }
}
