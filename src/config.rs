//! Settings: flags or `SESSIOND_*` environment variables (a `.env` file in
//! the working directory is read first), parsed once and validated at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::admin::credential::AdminCredential;
use crate::keys::cli::KeysCommand;
use crate::session::cookie::{CookieSettings, SameSite};
use crate::token::TokenPolicy;

/// Command line: no subcommand serves; `keys` manages a keys folder.
#[derive(Debug, Parser)]
#[command(
    name = "sessiond",
    version,
    about = "Session-token service (maintainSession)"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the key files of a keys folder; no server needs to run.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

/// Settings of the server, as given. Values stay text here so that an
/// invalid one is reported with the name of its variable.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the public listener (IP:PORT).
    #[arg(long, env = "SESSIOND_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Folder of key files; created with a development key when empty or missing.
    #[arg(long, env = "SESSIOND_KEYS_DIR", default_value = "keys")]
    pub keys_dir: PathBuf,
    /// `iss` of minted tokens and the only one accepted.
    #[arg(long, env = "SESSIOND_ISSUER", default_value = "sessiond")]
    pub issuer: String,
    /// Lifetime of a minted token, in seconds.
    #[arg(long, env = "SESSIOND_TOKEN_TTL", default_value = "3600")]
    pub token_ttl: String,
    /// Largest `exp - iat` accepted, in seconds; at least the token TTL.
    #[arg(long, env = "SESSIOND_MAX_TOKEN_LIFETIME", default_value = "86400")]
    pub max_token_lifetime: String,
    /// Clock skew tolerated on exp, iat and nbf, in seconds (0 to 300).
    #[arg(long, env = "SESSIOND_LEEWAY", default_value = "30")]
    pub leeway: String,
    /// Maximum token length accepted, in bytes (256 to 16384).
    #[arg(long, env = "SESSIOND_MAX_TOKEN_BYTES", default_value = "4096")]
    pub max_token_bytes: String,
    /// Send the cookie with `Secure` (true or false).
    #[arg(long, env = "SESSIOND_COOKIE_SECURE", default_value = "true")]
    pub cookie_secure: String,
    /// `SameSite` of the cookie: Lax, Strict or None (None requires Secure).
    #[arg(long, env = "SESSIOND_COOKIE_SAMESITE", default_value = "Lax")]
    pub cookie_samesite: String,
    /// `Domain` of the cookie; unset means host-only.
    #[arg(long, env = "SESSIOND_COOKIE_DOMAIN")]
    pub cookie_domain: Option<String>,
    /// Worker threads of the public listener; unset means one per CPU. The
    /// admin listener always has one.
    #[arg(long, env = "SESSIOND_WORKERS")]
    pub workers: Option<String>,
    /// Address of the admin listener (IP:PORT).
    #[arg(long, env = "SESSIOND_ADMIN_BIND", default_value = "127.0.0.1:8081")]
    pub admin_bind: String,
    /// File holding the admin bearer credential; key operations are off without one.
    #[arg(long, env = "SESSIOND_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Hex SHA-256 of the admin bearer credential, instead of the file.
    #[arg(long, env = "SESSIOND_ADMIN_TOKEN_SHA256", hide_env_values = true)]
    pub admin_token_sha256: Option<String>,
    /// Seconds between polls of the keys folder (1 to 3600).
    #[arg(long, env = "SESSIOND_RELOAD_INTERVAL", default_value = "5")]
    pub reload_interval: String,
    /// Seconds requests in flight may take to finish after SIGTERM (0 to 300).
    #[arg(long, env = "SESSIOND_DRAIN_TIMEOUT", default_value = "10")]
    pub drain_timeout: String,
    /// Seconds to keep serving after SIGTERM while /readyz returns 503, so that
    /// load balancers stop sending traffic before the listeners close (0 to 300).
    #[arg(long, env = "SESSIOND_SHUTDOWN_DELAY", default_value = "0")]
    pub shutdown_delay: String,
    /// Seconds added to the system clock. For tests of clock skew only.
    #[arg(long, env = "SESSIOND_CLOCK_OFFSET", default_value = "0", hide = true)]
    pub clock_offset: String,
}

/// Validated settings of the server.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub keys_dir: PathBuf,
    pub policy: TokenPolicy,
    pub cookie: CookieSettings,
    pub workers: usize,
    pub admin_bind: SocketAddr,
    pub admin_credential: Option<AdminCredential>,
    pub reload_interval: Duration,
    pub drain_timeout: Duration,
    pub shutdown_delay: Duration,
    pub clock_offset_secs: i64,
}

/// An invalid setting; the message names the variable and the flag.
#[derive(Debug, thiserror::Error)]
#[error("invalid {variable} (--{flag}): {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub flag: &'static str,
    pub message: String,
}

fn fault(variable: &'static str, flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        flag,
        message: message.into(),
    }
}

/// Parses a whole number within `range`, naming the setting on failure.
fn number<T>(
    raw: &str,
    variable: &'static str,
    flag: &'static str,
    range: (T, T),
    unit: &str,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Copy + std::fmt::Display,
{
    let (min, max) = range;
    match raw.trim().parse::<T>() {
        Ok(value) if value >= min && value <= max => Ok(value),
        _ => Err(fault(
            variable,
            flag,
            format!("{raw:?} is not a whole number of {unit} from {min} to {max}"),
        )),
    }
}

fn address(
    raw: &str,
    variable: &'static str,
    flag: &'static str,
) -> Result<SocketAddr, ConfigError> {
    raw.trim()
        .parse()
        .map_err(|_| fault(variable, flag, format!("{raw:?} is not an IP:PORT address")))
}

fn boolean(raw: &str, variable: &'static str, flag: &'static str) -> Result<bool, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(fault(
            variable,
            flag,
            format!("{raw:?} is not true or false"),
        )),
    }
}

impl ServeArgs {
    /// Validates every setting. The first invalid one is returned.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let policy = self.token_policy()?;
        let cookie = self.cookie_settings()?;
        let workers = match &self.workers {
            Some(raw) => number(
                raw,
                "SESSIOND_WORKERS",
                "workers",
                (1usize, 1024),
                "threads",
            )?,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let admin_credential = AdminCredential::from_settings(
            self.admin_token_file.as_deref(),
            self.admin_token_sha256.as_deref(),
        )?;
        let bind = address(&self.bind, "SESSIOND_BIND", "bind")?;
        let admin_bind = address(&self.admin_bind, "SESSIOND_ADMIN_BIND", "admin-bind")?;
        if bind == admin_bind && bind.port() != 0 {
            return Err(fault(
                "SESSIOND_ADMIN_BIND",
                "admin-bind",
                format!(
                    "{admin_bind} is also SESSIOND_BIND; the two listeners need different addresses"
                ),
            ));
        }
        Ok(Config {
            bind,
            keys_dir: self.keys_dir,
            policy,
            cookie,
            workers,
            admin_bind,
            admin_credential,
            reload_interval: Duration::from_secs(number(
                &self.reload_interval,
                "SESSIOND_RELOAD_INTERVAL",
                "reload-interval",
                (1u64, 3600),
                "seconds",
            )?),
            drain_timeout: Duration::from_secs(number(
                &self.drain_timeout,
                "SESSIOND_DRAIN_TIMEOUT",
                "drain-timeout",
                (0u64, 300),
                "seconds",
            )?),
            shutdown_delay: Duration::from_secs(number(
                &self.shutdown_delay,
                "SESSIOND_SHUTDOWN_DELAY",
                "shutdown-delay",
                (0u64, 300),
                "seconds",
            )?),
            clock_offset_secs: number(
                &self.clock_offset,
                "SESSIOND_CLOCK_OFFSET",
                "clock-offset",
                (-86_400i64, 86_400),
                "seconds",
            )?,
        })
    }

    fn token_policy(&self) -> Result<TokenPolicy, ConfigError> {
        let issuer = self.issuer.trim();
        let printable = issuer.chars().all(|c| c.is_ascii_graphic() || c == ' ');
        if issuer.is_empty() || issuer.len() > 256 || !printable {
            return Err(fault(
                "SESSIOND_ISSUER",
                "issuer",
                "must be 1 to 256 printable ASCII characters",
            ));
        }
        let ttl = number(
            &self.token_ttl,
            "SESSIOND_TOKEN_TTL",
            "token-ttl",
            (60i64, 31_536_000),
            "seconds",
        )?;
        let max_lifetime = number(
            &self.max_token_lifetime,
            "SESSIOND_MAX_TOKEN_LIFETIME",
            "max-token-lifetime",
            (60i64, 31_536_000),
            "seconds",
        )?;
        if max_lifetime < ttl {
            return Err(fault(
                "SESSIOND_MAX_TOKEN_LIFETIME",
                "max-token-lifetime",
                format!(
                    "{max_lifetime} is below SESSIOND_TOKEN_TTL ({ttl}); minted tokens would be rejected"
                ),
            ));
        }
        let leeway = number(
            &self.leeway,
            "SESSIOND_LEEWAY",
            "leeway",
            (0i64, 300),
            "seconds",
        )?;
        let max_bytes = number(
            &self.max_token_bytes,
            "SESSIOND_MAX_TOKEN_BYTES",
            "max-token-bytes",
            (256usize, 16_384),
            "bytes",
        )?;
        Ok(TokenPolicy::new(
            issuer.to_owned(),
            ttl,
            max_lifetime,
            leeway,
            max_bytes,
        ))
    }

    fn cookie_settings(&self) -> Result<CookieSettings, ConfigError> {
        let secure = boolean(
            &self.cookie_secure,
            "SESSIOND_COOKIE_SECURE",
            "cookie-secure",
        )?;
        let same_site = match self.cookie_samesite.trim().to_ascii_lowercase().as_str() {
            "lax" => SameSite::Lax,
            "strict" => SameSite::Strict,
            "none" => SameSite::None,
            _ => {
                return Err(fault(
                    "SESSIOND_COOKIE_SAMESITE",
                    "cookie-samesite",
                    format!("{:?} is not Lax, Strict or None", self.cookie_samesite),
                ));
            }
        };
        if same_site == SameSite::None && !secure {
            return Err(fault(
                "SESSIOND_COOKIE_SAMESITE",
                "cookie-samesite",
                "None requires SESSIOND_COOKIE_SECURE=true; browsers drop such cookies otherwise",
            ));
        }
        let domain = match self.cookie_domain.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(domain) if is_valid_domain(domain) => Some(domain.to_owned()),
            Some(domain) => {
                return Err(fault(
                    "SESSIOND_COOKIE_DOMAIN",
                    "cookie-domain",
                    format!("{domain:?} is not a domain name"),
                ));
            }
        };
        Ok(CookieSettings::new(secure, same_site, domain))
    }
}

/// Checks that `domain` is a host name of letters, digits, hyphens and dots
/// (one leading dot allowed).
fn is_valid_domain(domain: &str) -> bool {
    let name = domain.strip_prefix('.').unwrap_or(domain);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["sessiond"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .expect("valid syntax")
            .serve
            .into_config()
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse(&[]).expect("defaults");

        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(config.policy.leeway_secs, 30);
        assert_eq!(config.policy.max_token_bytes, 4096);
        assert!(config.admin_credential.is_none());
    }

    #[test]
    fn invalid_value_names_variable() {
        let cases = [
            (vec!["--bind", "localhost"], "SESSIOND_BIND"),
            (vec!["--leeway=-1"], "SESSIOND_LEEWAY"),
            (vec!["--leeway", "301"], "SESSIOND_LEEWAY"),
            (vec!["--token-ttl", "ten"], "SESSIOND_TOKEN_TTL"),
            (vec!["--cookie-secure", "maybe"], "SESSIOND_COOKIE_SECURE"),
            (
                vec!["--cookie-samesite", "loose"],
                "SESSIOND_COOKIE_SAMESITE",
            ),
            (vec!["--cookie-domain", "a;b"], "SESSIOND_COOKIE_DOMAIN"),
            (vec!["--issuer", ""], "SESSIOND_ISSUER"),
            (vec!["--workers", "0"], "SESSIOND_WORKERS"),
            (
                vec!["--bind", "127.0.0.1:9000", "--admin-bind", "127.0.0.1:9000"],
                "SESSIOND_ADMIN_BIND",
            ),
            (vec!["--shutdown-delay", "301"], "SESSIOND_SHUTDOWN_DELAY"),
        ];
        for (args, variable) in cases {
            let error = parse(&args).unwrap_err();

            assert_eq!(error.variable, variable, "{args:?}");
            assert!(error.to_string().contains(variable), "{error}");
        }
    }

    #[test]
    fn env_example_lists_every_setting() {
        let example = include_str!("../.env.example");
        let command = <Cli as clap::CommandFactory>::command();

        for argument in command.get_arguments() {
            let Some(variable) = argument.get_env().and_then(|v| v.to_str()) else {
                continue;
            };

            assert!(
                example.contains(&format!("{variable}=")),
                "{variable} missing from .env.example"
            );
        }
    }

    #[test]
    fn samesite_none_requires_secure() {
        let error = parse(&["--cookie-samesite", "None", "--cookie-secure", "false"]).unwrap_err();

        assert_eq!(error.variable, "SESSIOND_COOKIE_SAMESITE");
    }

    #[test]
    fn max_lifetime_covers_ttl() {
        let error = parse(&["--token-ttl", "7200", "--max-token-lifetime", "3600"]).unwrap_err();

        assert_eq!(error.variable, "SESSIOND_MAX_TOKEN_LIFETIME");
    }
}
