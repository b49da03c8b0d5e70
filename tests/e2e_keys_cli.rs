//! `sessiond keys …` against the real binary: the key lifecycle from the
//! command line, with no secret in any output, and a server that mints
//! with the key the command made.

mod common;

use std::path::Path;
use std::process::Output;

use common::{TestServer, client, sessiond_command, set_cookie_token};
use serde_json::Value;

/// Runs `sessiond keys <args> --dir <dir>` in `dir`'s parent.
fn keys(dir: &Path, args: &[&str]) -> Output {
    let parent = dir.parent().expect("a parent folder");
    sessiond_command(parent)
        .arg("keys")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("sessiond runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 stdout")
}

/// Returns the `k` member of every key file in `dir`.
fn secrets(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("lists")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let file: Value =
                serde_json::from_slice(&std::fs::read(&path).expect("reads")).expect("JSON");
            file["k"].as_str().expect("k member").to_owned()
        })
        .collect()
}

/// Asserts that `output` contains none of `secrets` on stdout or stderr.
fn assert_no_secret(output: &Output, secrets: &[String], case: &str) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{case}: a secret was printed"
        );
    }
}

#[test]
fn generate_then_list_hides_secret() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("keys");

    let generated = keys(&dir, &["generate", "--kid", "k1"]);
    let listed = keys(&dir, &["list"]);
    let listed_json = keys(&dir, &["list", "--json"]);

    assert!(generated.status.success(), "generate failed: {generated:?}");
    assert!(listed.status.success(), "list failed: {listed:?}");
    assert!(
        listed_json.status.success(),
        "list --json failed: {listed_json:?}"
    );
    let secrets = secrets(&dir);
    assert_eq!(secrets.len(), 1, "one key file");
    assert_no_secret(&generated, &secrets, "generate");
    assert_no_secret(&listed, &secrets, "list");
    assert_no_secret(&listed_json, &secrets, "list --json");
    let table = stdout(&listed);
    let row = table
        .lines()
        .find(|line| line.starts_with("k1 "))
        .unwrap_or_else(|| panic!("no row for k1:\n{table}"));
    assert!(row.contains("HS256"), "alg in {row}");
    assert!(row.contains("signing"), "state in {row}");
    let json: Value = serde_json::from_str(&stdout(&listed_json)).expect("JSON list");
    let members: Vec<&String> = json[0].as_object().expect("object").keys().collect();
    assert!(!members.iter().any(|m| *m == "k"), "k listed: {members:?}");
    assert_eq!(json[0]["kid"], "k1", "kid in the JSON list");
}

#[test]
fn lifecycle_commands() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("keys");
    let steps: [(&str, &[&str], bool, &str); 9] = [
        (
            "first key signs",
            &["generate", "--kid", "k1"],
            true,
            "created k1",
        ),
        (
            "verify-only spare",
            &["generate", "--kid", "spare", "--alg", "HS512"],
            true,
            "never (verify only)",
        ),
        (
            "rotate to k2",
            &["rotate", "--kid", "k2"],
            true,
            "created k2",
        ),
        (
            "retire with live tokens",
            &["retire", "k1"],
            false,
            "may be valid until",
        ),
        (
            "retire forced",
            &["retire", "k1", "--force"],
            true,
            "retired k1",
        ),
        (
            "activate a retired key",
            &["activate", "k1"],
            false,
            "is retired",
        ),
        (
            "activate unknown kid",
            &["activate", "k9"],
            false,
            "no key with kid \"k9\"",
        ),
        ("prune", &["prune"], true, "deleted k1"),
        (
            "generate an existing kid",
            &["generate", "--kid", "k2"],
            false,
            "already exists",
        ),
    ];
    let mut all_secrets = Vec::new();

    for (case, args, succeeds, expected) in steps {
        let output = keys(&dir, args);

        all_secrets.extend(secrets(&dir));
        let text = format!(
            "{}{}",
            stdout(&output),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            output.status.success(),
            succeeds,
            "{case}: exit status\n{text}"
        );
        assert!(
            text.contains(expected),
            "{case}: {expected:?} missing in\n{text}"
        );
        assert_no_secret(&output, &all_secrets, case);
        if !succeeds {
            assert_eq!(output.status.code(), Some(1), "{case}: exit code");
        }
    }

    let listed = stdout(&keys(&dir, &["list"]));
    let kids: Vec<&str> = listed
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(kids, ["k2", "spare"], "keys left:\n{listed}");
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("k2 ") && l.contains("signing")),
        "k2 signs:\n{listed}"
    );
}

#[test]
fn server_mints_with_generated_key() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("keys");
    let generated = keys(&dir, &["generate", "--kid", "shop-2026", "--alg", "HS384"]);
    assert!(generated.status.success(), "generate failed: {generated:?}");

    let server = TestServer::builder().keys_dir(&dir).start();
    let response = client()
        .get(server.url("/ccstore/v1/metering/session"))
        .send()
        .expect("request");

    let token = set_cookie_token(&response).expect("a session cookie");
    assert_eq!(common::tokens::kid_of(&token), "shop-2026", "minting kid");
    let logs = server.logs();
    assert!(
        !logs.contains("generated development key"),
        "a development key was made:\n{logs}"
    );
    for secret in secrets(&dir) {
        assert!(!logs.contains(&secret), "the key reached the logs");
    }
}
