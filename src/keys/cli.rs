//! `sessiond keys …`: the key operations on a folder from the command line,
//! for cron jobs and deployment pipelines. Output never contains a secret.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use chrono::{DateTime, Duration, Utc};
use clap::{Args, Subcommand};

use super::jwk::parse_algorithm;
use super::ops::{KeyInfo, KeyOps, NewKey, OpsError, RetirePolicy};
use super::store;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List keys with their state and fingerprint (never the secret).
    List {
        #[command(flatten)]
        folder: Folder,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a key: verify only, unless --sign-from is given or the folder
    /// has no key that can sign, in which case it signs from now.
    Generate {
        #[command(flatten)]
        folder: Folder,
        #[command(flatten)]
        new: NewKeyArgs,
        /// When the key starts signing: now, +DURATION (30s, 10m, 2h, 1d) or RFC 3339.
        #[arg(long)]
        sign_from: Option<String>,
    },
    /// Make a key sign from now or from --at.
    Activate {
        #[command(flatten)]
        folder: Folder,
        /// Key id of the key to activate.
        kid: String,
        /// When the key starts signing: now, +DURATION or RFC 3339.
        #[arg(long, default_value = "now")]
        at: String,
    },
    /// Create a key that signs from now or from --at, in one step.
    Rotate {
        #[command(flatten)]
        folder: Folder,
        #[command(flatten)]
        new: NewKeyArgs,
        /// now, +DURATION or RFC 3339.
        #[arg(long, default_value = "now")]
        at: String,
    },
    /// Set a key's verify_until; refused while its tokens may be valid or
    /// when it is the only key that can sign, unless --force.
    Retire {
        #[command(flatten)]
        folder: Folder,
        /// Key id of the key to retire.
        kid: String,
        /// When the key stops verifying: now, +DURATION or RFC 3339.
        #[arg(long, default_value = "now")]
        at: String,
        /// Retire even when it is the only signing key or its tokens may be valid.
        #[arg(long)]
        force: bool,
        /// Largest token lifetime in seconds, as the servers are configured.
        #[arg(long, env = "SESSIOND_MAX_TOKEN_LIFETIME", default_value = "86400")]
        max_token_lifetime: i64,
        /// Leeway in seconds, as the servers are configured.
        #[arg(long, env = "SESSIOND_LEEWAY", default_value = "30")]
        leeway: i64,
    },
    /// Delete keys whose verify_until has passed.
    Prune {
        #[command(flatten)]
        folder: Folder,
    },
}

#[derive(Debug, Args)]
pub struct Folder {
    /// Keys folder.
    #[arg(long, env = "SESSIOND_KEYS_DIR", default_value = "keys")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct NewKeyArgs {
    /// Key id; default: the date and 32 random bits.
    #[arg(long)]
    pub kid: Option<String>,
    /// HS256, HS384 or HS512.
    #[arg(long, default_value = "HS256")]
    pub alg: String,
}

impl NewKeyArgs {
    fn to_new_key(&self, sign_from: Option<DateTime<Utc>>) -> Result<NewKey, String> {
        let alg = parse_algorithm(&self.alg)
            .ok_or_else(|| format!("invalid --alg {:?}: use HS256, HS384 or HS512", self.alg))?;
        Ok(NewKey {
            kid: self.kid.clone(),
            alg: Some(alg),
            sign_from,
        })
    }
}

/// Parses `now`, `+DURATION` (s, m, h or d) or an RFC 3339 instant.
pub fn parse_instant(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    if let Some(relative) = text.strip_prefix('+') {
        let split = relative.len().saturating_sub(1);
        let (digits, unit) = relative.split_at(split);
        let scale = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => 0,
        };
        return match digits.parse::<i64>() {
            Ok(n) if scale > 0 && (0..=3650 * 86_400).contains(&(n * scale)) => {
                Ok(now + Duration::seconds(n * scale))
            }
            _ => Err(format!(
                "invalid time {text:?}: use +N followed by s, m, h or d"
            )),
        };
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("invalid time {text:?}: use now, +DURATION or RFC 3339"))
}

/// Runs one `keys` command; returns the process exit code.
pub fn run(command: KeysCommand, now: DateTime<Utc>) -> i32 {
    match execute(command, now) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("error: {message}");
            1
        }
    }
}

fn execute(command: KeysCommand, now: DateTime<Utc>) -> Result<(), String> {
    let error = |e: OpsError| e.to_string();
    match command {
        KeysCommand::List { folder, json } => {
            let keys = KeyOps::new(folder.dir).list(now).map_err(error)?;
            print_list(&keys, json);
        }
        KeysCommand::Generate {
            folder,
            new,
            sign_from,
        } => {
            let sign_from = match sign_from {
                Some(text) => Some(parse_instant(&text, now)?),
                None if !has_signing_key(&folder.dir, now) => Some(now),
                None => None,
            };
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&folder.dir)
                .map_err(|e| format!("cannot create keys folder {}: {e}", folder.dir.display()))?;
            let info = KeyOps::new(folder.dir)
                .create(new.to_new_key(sign_from)?, now)
                .map_err(error)?;
            print_change("created", &info);
        }
        KeysCommand::Activate { folder, kid, at } => {
            let at = parse_instant(&at, now)?;
            let info = KeyOps::new(folder.dir)
                .activate(&kid, at, now)
                .map_err(error)?;
            print_change("activated", &info);
        }
        KeysCommand::Rotate { folder, new, at } => {
            let at = parse_instant(&at, now)?;
            let info = KeyOps::new(folder.dir)
                .rotate(new.to_new_key(None)?, at, now)
                .map_err(error)?;
            print_change("created", &info);
        }
        KeysCommand::Retire {
            folder,
            kid,
            at,
            force,
            max_token_lifetime,
            leeway,
        } => {
            let at = parse_instant(&at, now)?;
            let policy = RetirePolicy {
                max_token_lifetime_secs: max_token_lifetime,
                leeway_secs: leeway,
            };
            let info = KeyOps::new(folder.dir)
                .retire(&kid, at, force, policy, now)
                .map_err(error)?;
            print_change("retired", &info);
        }
        KeysCommand::Prune { folder } => {
            let pruned = KeyOps::new(folder.dir).prune(now).map_err(error)?;
            for kid in &pruned {
                println!("deleted {kid}");
            }
            println!("{} key(s) pruned", pruned.len());
        }
    }
    Ok(())
}

fn has_signing_key(dir: &std::path::Path, now: DateTime<Utc>) -> bool {
    store::read_dir(dir)
        .and_then(|snapshot| snapshot.parse())
        .is_ok_and(|ring| ring.signing_key(now).is_some())
}

fn print_change(verb: &str, info: &KeyInfo) {
    let sign_from = info.sign_from.as_deref().unwrap_or("never (verify only)");
    println!(
        "{verb} {} ({}, state {}, signs from {sign_from}, fingerprint {})",
        info.kid,
        info.alg,
        info.state.as_str(),
        info.fingerprint
    );
}

fn print_list(keys: &[KeyInfo], json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(keys).unwrap_or_default());
        return;
    }
    println!(
        "{:<24} {:<6} {:<10} {:<21} {:<21} FINGERPRINT",
        "KID", "ALG", "STATE", "SIGN_FROM", "VERIFY_UNTIL"
    );
    for key in keys {
        println!(
            "{:<24} {:<6} {:<10} {:<21} {:<21} {}",
            key.kid,
            key.alg,
            key.state.as_str(),
            key.sign_from.as_deref().unwrap_or("-"),
            key.verify_until.as_deref().unwrap_or("-"),
            key.fingerprint
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid timestamp")
    }

    #[test]
    fn instants_parse() {
        assert_eq!(parse_instant("now", now()), Ok(now()));
        assert_eq!(
            parse_instant("+90s", now()),
            Ok(now() + Duration::seconds(90))
        );
        assert_eq!(parse_instant("+2h", now()), Ok(now() + Duration::hours(2)));
        assert_eq!(
            parse_instant("2027-01-15T08:00:00+01:00", now()).map(|t| t.timestamp()),
            Ok(1_799_996_400)
        );
    }

    #[test]
    fn invalid_instants_rejected() {
        for text in ["soon", "+5", "+5w", "+-5s", "2027-01-15"] {
            assert!(parse_instant(text, now()).is_err(), "{text}");
        }
    }
}
