//! Start-up of the real binary: the development key, every key-folder fault
//! and invalid setting that stops it, and `.env` handling.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use chrono::{Duration, Utc};
use common::tokens::write_key;
use common::{TestServer, client, set_cookie_token};
use jsonwebtoken::Algorithm;
use sessiond::keys::store;

const PATH: &str = "/ccstore/v1/metering/session";

/// Starts a server that must fail; returns its exit code and output.
fn start_failure(builder: common::ServerBuilder, case: &str) -> (Option<i32>, String) {
    match builder.spawn() {
        Ok(_) => panic!("{case}: the server started"),
        Err(failure) => failure,
    }
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn missing_folder_gets_development_key() {
    let parent = tempfile::tempdir().expect("temp dir");
    let keys = parent.path().join("keys");

    let server = TestServer::builder().keys_dir(&keys).start();

    let files: Vec<_> = std::fs::read_dir(&keys)
        .expect("the folder was created")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "one key file: {files:?}");
    assert_eq!(mode_of(&files[0]), 0o600, "key file mode");
    assert_eq!(mode_of(&keys), 0o700, "keys folder mode");
    let logs = server.logs();
    let warning = logs
        .lines()
        .find(|line| line.contains("generated development key"))
        .unwrap_or_else(|| panic!("no development key warning:\n{logs}"));
    assert!(warning.contains("WARN"), "warning level: {warning}");
}

#[test]
fn empty_folder_gets_development_key() {
    let keys = tempfile::tempdir().expect("temp dir");
    std::fs::write(keys.path().join("README.md"), "not a key").expect("writes");

    let server = TestServer::builder().keys_dir(keys.path()).start();
    let response = client().get(server.url(PATH)).send().expect("request");

    let key_files: Vec<_> = std::fs::read_dir(keys.path())
        .expect("lists")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(key_files.len(), 1, "one key file: {key_files:?}");
    assert_eq!(mode_of(&key_files[0]), 0o600, "key file mode");
    let secret_file = std::fs::read_to_string(&key_files[0]).expect("reads");
    let token = set_cookie_token(&response).expect("a session cookie");
    assert!(
        !server.logs().contains(&token),
        "the token reached the logs"
    );
    let key_file: serde_json::Value = serde_json::from_str(&secret_file).expect("JSON key file");
    let secret = key_file["k"].as_str().expect("k member");
    assert!(!server.logs().contains(secret), "the key reached the logs");
}

/// One way to break a keys folder, and what the error must name.
struct FolderCase {
    description: &'static str,
    setup: fn(&Path),
    expected: &'static [&'static str],
}

fn key_json(kid: &str, alg: &str, k: &str, extra: &str) -> String {
    format!(
        r#"{{"kty":"oct","kid":"{kid}","alg":"{alg}","k":"{k}","created_at":"2026-01-01T00:00:00Z","sign_from":"2026-01-01T00:00:00Z"{extra}}}"#
    )
}

/// 32 bytes, base64url: long enough for HS256.
const K32: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

fn folder_cases() -> Vec<FolderCase> {
    vec![
        FolderCase {
            description: "not JSON",
            setup: |dir| std::fs::write(dir.join("k1.json"), "{ not json").expect("writes"),
            expected: &["k1.json", "not a valid key file"],
        },
        FolderCase {
            description: "a folder named like a key file",
            setup: |dir| std::fs::create_dir(dir.join("k1.json")).expect("creates"),
            expected: &["k1.json", "cannot read key file"],
        },
        FolderCase {
            description: "dangling symbolic link",
            setup: |dir| {
                std::os::unix::fs::symlink(dir.join("missing"), dir.join("k1.json")).expect("links")
            },
            expected: &["k1.json", "cannot read key file"],
        },
        FolderCase {
            description: "short key",
            setup: |dir| {
                let short = &K32[..40];
                let text = key_json("k1", "HS256", short, "");
                std::fs::write(dir.join("k1.json"), text).expect("writes")
            },
            expected: &["k1.json", "HS256 requires at least 32"],
        },
        FolderCase {
            description: "HS512 key of 32 bytes",
            setup: |dir| {
                let text = key_json("k1", "HS512", K32, "");
                std::fs::write(dir.join("k1.json"), text).expect("writes")
            },
            expected: &["k1.json", "HS512 requires at least 64"],
        },
        FolderCase {
            description: "alg none",
            setup: |dir| {
                let text = key_json("k1", "none", K32, "");
                std::fs::write(dir.join("k1.json"), text).expect("writes")
            },
            expected: &["k1.json", "alg must be"],
        },
        FolderCase {
            description: "kty RSA",
            setup: |dir| {
                let text = key_json("k1", "HS256", K32, "").replace("\"oct\"", "\"RSA\"");
                std::fs::write(dir.join("k1.json"), text).expect("writes")
            },
            expected: &["k1.json", "kty must be"],
        },
        FolderCase {
            description: "missing k",
            setup: |dir| {
                let text =
                    key_json("k1", "HS256", K32, "").replace(&format!(r#""k":"{K32}","#), "");
                std::fs::write(dir.join("k1.json"), text).expect("writes")
            },
            expected: &["k1.json", "missing field `k`"],
        },
        FolderCase {
            description: "file name differs from kid",
            setup: |dir| {
                let text = key_json("k1", "HS256", K32, "");
                std::fs::write(dir.join("other.json"), text).expect("writes")
            },
            expected: &["other.json", "k1.json"],
        },
        FolderCase {
            description: "duplicate kid",
            setup: |dir| {
                let text = key_json("k1", "HS256", K32, "");
                std::fs::write(dir.join("k1.json"), &text).expect("writes");
                std::fs::write(dir.join("k2.json"), &text).expect("writes")
            },
            expected: &["k2.json", "duplicate kid \"k1\""],
        },
        FolderCase {
            description: "only a verify-only key",
            setup: |dir| {
                let key = store::generate_key(
                    Some("k1".into()),
                    Algorithm::HS256,
                    Utc::now(),
                    None,
                    None,
                )
                .expect("generates");
                store::write_new_key(dir, &key).expect("writes");
            },
            expected: &["no key that can sign"],
        },
        FolderCase {
            description: "only a key that signs tomorrow",
            setup: |dir| {
                write_key(dir, "k1", Some(Utc::now() + Duration::days(1)));
            },
            expected: &["no key that can sign"],
        },
        FolderCase {
            description: "only a retired key",
            setup: |dir| {
                let text = key_json(
                    "k1",
                    "HS256",
                    K32,
                    r#","verify_until":"2026-01-02T00:00:00Z""#,
                );
                std::fs::write(dir.join("k1.json"), text).expect("writes")
            },
            expected: &["no key that can sign"],
        },
    ]
}

#[test]
fn key_folder_faults_stop_start() {
    for case in folder_cases() {
        let keys = tempfile::tempdir().expect("temp dir");
        (case.setup)(keys.path());

        let (code, output) = start_failure(
            TestServer::builder().keys_dir(keys.path()),
            case.description,
        );

        assert_eq!(code, Some(1), "{}: exit code\n{output}", case.description);
        let error = output
            .lines()
            .find(|line| line.starts_with("error: "))
            .unwrap_or_else(|| panic!("{}: no error line\n{output}", case.description));
        for needle in case.expected {
            assert!(
                error.contains(needle),
                "{}: {needle:?} missing in {error}",
                case.description
            );
        }
        if case.expected.iter().any(|needle| needle.contains("sign")) {
            let folder = keys.path().display().to_string();
            assert!(
                error.contains(&folder),
                "{}: folder missing in {error}",
                case.description
            );
        }
        assert!(
            !output.contains(K32),
            "{}: the key reached the output",
            case.description
        );
    }
}

/// A description, the variables to set, and the variable the error names.
type SettingsCase = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn invalid_settings_exit_2() {
    let cases: [SettingsCase; 14] = [
        (
            "leeway not a number",
            &[("SESSIOND_LEEWAY", "soon")],
            "SESSIOND_LEEWAY",
        ),
        (
            "leeway over 300",
            &[("SESSIOND_LEEWAY", "301")],
            "SESSIOND_LEEWAY",
        ),
        (
            "negative leeway",
            &[("SESSIOND_LEEWAY", "-1")],
            "SESSIOND_LEEWAY",
        ),
        (
            "cap under 256",
            &[("SESSIOND_MAX_TOKEN_BYTES", "100")],
            "SESSIOND_MAX_TOKEN_BYTES",
        ),
        (
            "TTL zero",
            &[("SESSIOND_TOKEN_TTL", "0")],
            "SESSIOND_TOKEN_TTL",
        ),
        (
            "lifetime under the TTL",
            &[
                ("SESSIOND_TOKEN_TTL", "7200"),
                ("SESSIOND_MAX_TOKEN_LIFETIME", "3600"),
            ],
            "SESSIOND_MAX_TOKEN_LIFETIME",
        ),
        (
            "blank issuer",
            &[("SESSIOND_ISSUER", "   ")],
            "SESSIOND_ISSUER",
        ),
        (
            "Secure not a boolean",
            &[("SESSIOND_COOKIE_SECURE", "maybe")],
            "SESSIOND_COOKIE_SECURE",
        ),
        (
            "unknown SameSite",
            &[("SESSIOND_COOKIE_SAMESITE", "Loose")],
            "SESSIOND_COOKIE_SAMESITE",
        ),
        (
            "SameSite None without Secure",
            &[
                ("SESSIOND_COOKIE_SAMESITE", "None"),
                ("SESSIOND_COOKIE_SECURE", "false"),
            ],
            "SESSIOND_COOKIE_SAMESITE",
        ),
        (
            "domain with a semicolon",
            &[("SESSIOND_COOKIE_DOMAIN", "a;b")],
            "SESSIOND_COOKIE_DOMAIN",
        ),
        (
            "bind not an address",
            &[("SESSIOND_BIND", "localhost")],
            "SESSIOND_BIND",
        ),
        (
            "zero workers",
            &[("SESSIOND_WORKERS", "0")],
            "SESSIOND_WORKERS",
        ),
        (
            "reload interval zero",
            &[("SESSIOND_RELOAD_INTERVAL", "0")],
            "SESSIOND_RELOAD_INTERVAL",
        ),
    ];

    for (case, variables, named) in cases {
        let mut builder = TestServer::builder();
        for (name, value) in variables {
            builder = builder.env(name, value);
        }

        let (code, output) = start_failure(builder, case);

        assert_eq!(code, Some(2), "{case}: exit code\n{output}");
        assert!(
            output.contains(named),
            "{case}: {named} not named in\n{output}"
        );
    }
}

#[test]
fn dotenv_read_and_environment_wins() {
    let dotenv = "SESSIOND_COOKIE_SAMESITE=Strict\nSESSIOND_TOKEN_TTL=900\n";

    let server = TestServer::builder()
        .workdir_file(".env", dotenv)
        .env("SESSIOND_TOKEN_TTL", "600")
        .start();
    let response = client().get(server.url(PATH)).send().expect("request");

    let set_cookie = response
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert!(
        set_cookie.contains("; SameSite=Strict;"),
        ".env value used: {set_cookie}"
    );
    assert!(
        set_cookie.ends_with("; Max-Age=600"),
        "environment wins: {set_cookie}"
    );
}

#[test]
fn dotenv_invalid_value_stops_start() {
    let builder = TestServer::builder().workdir_file(".env", "SESSIOND_LEEWAY=999\n");

    let (code, output) = start_failure(builder, "invalid value in .env");

    assert_eq!(code, Some(2), "exit code\n{output}");
    assert!(
        output.contains("SESSIOND_LEEWAY"),
        "variable named in\n{output}"
    );
}

#[test]
fn dotenv_syntax_error_stops_start() {
    let builder = TestServer::builder().workdir_file(".env", "SESSIOND_LEEWAY='30\n");

    let (code, output) = start_failure(builder, "unterminated quote in .env");

    assert_eq!(code, Some(2), "exit code\n{output}");
    assert!(output.contains(".env"), ".env named in\n{output}");
}

#[test]
fn busy_port_stops_start() {
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let address = occupied.local_addr().expect("address").to_string();

    let (code, output) = start_failure(
        TestServer::builder().env("SESSIOND_BIND", &address),
        "port in use",
    );

    assert_eq!(code, Some(1), "exit code\n{output}");
    assert!(output.contains(&address), "address named in\n{output}");
}
