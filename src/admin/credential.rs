//! The admin bearer credential, kept only as its SHA-256 and compared in
//! constant time.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::config::ConfigError;

/// Shortest admin credential accepted, in characters. A guessable credential
/// would open key operations to anyone who reaches the admin listener.
pub const MIN_CREDENTIAL_CHARS: usize = 32;

/// The SHA-256 of the admin credential. `Debug` prints no part of it.
#[derive(Clone)]
pub struct AdminCredential {
    sha256: [u8; 32],
}

impl std::fmt::Debug for AdminCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminCredential([redacted])")
    }
}

impl AdminCredential {
    /// Builds the credential from the plain credential text.
    pub fn from_plain(plain: &str) -> Self {
        AdminCredential {
            sha256: Sha256::digest(plain.as_bytes()).into(),
        }
    }

    /// Reads the settings: a file holding the credential (one line, at least
    /// 32 characters) or the hex SHA-256 of it. Neither means key operations
    /// are disabled; both at once is an error.
    pub fn from_settings(
        file: Option<&Path>,
        sha256_hex: Option<&str>,
    ) -> Result<Option<Self>, ConfigError> {
        let sha256_hex = sha256_hex.map(str::trim).filter(|s| !s.is_empty());
        match (file, sha256_hex) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(fault(
                "SESSIOND_ADMIN_TOKEN_SHA256",
                "admin-token-sha256",
                "set either SESSIOND_ADMIN_TOKEN_FILE or SESSIOND_ADMIN_TOKEN_SHA256, not both",
            )),
            (Some(path), None) => Self::from_file(path).map(Some),
            (None, Some(hex)) => Self::from_hex(hex).map(Some),
        }
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            fault(
                "SESSIOND_ADMIN_TOKEN_FILE",
                "admin-token-file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?);
        let plain = text.trim_end_matches(['\r', '\n']);
        // A bearer credential is sent in a header: anything but visible ASCII
        // (spaces, non-ASCII, a second line) could never match a request.
        let visible = plain.bytes().all(|b| b.is_ascii_graphic());
        if plain.len() < MIN_CREDENTIAL_CHARS || !visible {
            return Err(fault(
                "SESSIOND_ADMIN_TOKEN_FILE",
                "admin-token-file",
                format!(
                    "{} must hold one line of at least {MIN_CREDENTIAL_CHARS} visible ASCII characters, with no spaces",
                    path.display()
                ),
            ));
        }
        Ok(Self::from_plain(plain))
    }

    fn from_hex(hex: &str) -> Result<Self, ConfigError> {
        let invalid = || {
            fault(
                "SESSIOND_ADMIN_TOKEN_SHA256",
                "admin-token-sha256",
                "must be 64 hex digits (the SHA-256 of the credential)",
            )
        };
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(invalid());
        }
        let mut sha256 = [0u8; 32];
        for (i, byte) in sha256.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).map_err(|_| invalid())?;
        }
        Ok(AdminCredential { sha256 })
    }

    /// Checks a presented credential in constant time with respect to the
    /// stored one: both sides are hashed, then compared with `subtle`.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.sha256).into()
    }
}

fn fault(variable: &'static str, flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        flag,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const PLAIN: &str = "0123456789abcdef0123456789abcdef-admin";

    #[test]
    fn matches_only_same_credential() {
        let credential = AdminCredential::from_plain(PLAIN);

        assert!(credential.matches(PLAIN));
        assert!(!credential.matches(&PLAIN[1..]));
        assert!(!credential.matches(""));
    }

    #[test]
    fn hex_setting_equals_plain() {
        let hex = crate::keys::hex(&Sha256::digest(PLAIN.as_bytes()));

        let credential = AdminCredential::from_settings(None, Some(&hex))
            .expect("valid")
            .expect("set");

        assert!(credential.matches(PLAIN));
    }

    #[test]
    fn short_file_credential_rejected() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(file, "short").expect("writes");

        let error = AdminCredential::from_settings(Some(file.path()), None).unwrap_err();

        assert_eq!(error.variable, "SESSIOND_ADMIN_TOKEN_FILE");
    }

    #[test]
    fn unmatchable_file_credential_rejected() {
        let cases = [
            (format!(" {PLAIN}"), "leading space"),
            (format!("{PLAIN} "), "trailing space"),
            (format!("{PLAIN}\u{20ac}"), "non-ASCII character"),
            (format!("{PLAIN}\nsecond line"), "two lines"),
        ];
        for (text, description) in cases {
            let mut file = tempfile::NamedTempFile::new().expect("temp file");
            writeln!(file, "{text}").expect("writes");

            let result = AdminCredential::from_settings(Some(file.path()), None);

            assert!(result.is_err(), "{description} accepted");
        }
    }

    #[test]
    fn file_credential_trims_newline() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(file, "{PLAIN}").expect("writes");

        let credential = AdminCredential::from_settings(Some(file.path()), None)
            .expect("valid")
            .expect("set");

        assert!(credential.matches(PLAIN));
    }

    #[test]
    fn debug_redacts() {
        let debug = format!("{:?}", AdminCredential::from_plain(PLAIN));

        assert_eq!(debug, "AdminCredential([redacted])");
    }
}
