//! `sessiond keys …` on a folder with no server: the same operations and
//! checks as the admin API, for cron jobs and deployment pipelines.

mod common;

use std::path::Path;
use std::process::Output;

use common::sessiond_command;
use serde_json::Value;

fn keys(dir: &Path, args: &[&str]) -> Output {
    sessiond_command(dir)
        .arg("keys")
        .args(args)
        .arg("--dir")
        .arg(dir.join("keys"))
        .output()
        .expect("sessiond runs")
}

fn list(dir: &Path) -> Vec<Value> {
    let output = keys(dir, &["list", "--json"]);
    assert!(
        output.status.success(),
        "list failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<Value>(&output.stdout)
        .expect("json")
        .as_array()
        .expect("array")
        .clone()
}

fn state_of(dir: &Path, kid: &str) -> String {
    let keys = list(dir);
    let key = keys.iter().find(|k| k["kid"] == kid).expect("kid listed");
    key["state"].as_str().expect("state").to_owned()
}

#[test]
fn cli_rotation_lifecycle() {
    let dir = tempfile::tempdir().expect("temp dir");

    let generated = keys(dir.path(), &["generate", "--kid", "one"]);
    let rotated = keys(dir.path(), &["rotate", "--kid", "two"]);
    let refused = keys(dir.path(), &["retire", "one"]);
    let forced = keys(dir.path(), &["retire", "one", "--force"]);
    let pruned = keys(dir.path(), &["prune"]);

    assert!(generated.status.success(), "generate");
    assert!(rotated.status.success(), "rotate");
    assert!(
        !refused.status.success(),
        "retire of a key whose tokens may be valid succeeded"
    );
    let refusal = String::from_utf8_lossy(&refused.stderr);
    assert!(refusal.contains("may be valid until"), "{refusal}");
    assert!(forced.status.success(), "forced retire");
    assert!(String::from_utf8_lossy(&pruned.stdout).contains("deleted one"));
    let remaining: Vec<String> = list(dir.path())
        .iter()
        .map(|k| k["kid"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(remaining, vec!["two".to_owned()]);
}

#[test]
fn cli_generate_in_signing_folder_is_verify_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    keys(dir.path(), &["generate", "--kid", "first"]);

    let second = keys(dir.path(), &["generate", "--kid", "second"]);
    let scheduled = keys(
        dir.path(),
        &["generate", "--kid", "third", "--sign-from", "+1h"],
    );

    assert!(second.status.success());
    assert_eq!(state_of(dir.path(), "first"), "signing");
    assert_eq!(state_of(dir.path(), "second"), "verifying");
    assert!(scheduled.status.success());
    assert_eq!(state_of(dir.path(), "third"), "scheduled");
}

#[test]
fn cli_activate_switches_signer() {
    let dir = tempfile::tempdir().expect("temp dir");
    keys(dir.path(), &["generate", "--kid", "first"]);
    keys(dir.path(), &["generate", "--kid", "second"]);

    let activated = keys(dir.path(), &["activate", "second"]);

    assert!(activated.status.success());
    assert_eq!(state_of(dir.path(), "second"), "signing");
    assert_eq!(state_of(dir.path(), "first"), "verifying");
}

#[test]
fn cli_refuses_only_signing_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    keys(dir.path(), &["generate", "--kid", "only"]);

    let refused = keys(dir.path(), &["retire", "only", "--at", "+400d"]);

    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only key that can sign"));
}

#[test]
fn cli_output_has_no_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    let generated = keys(dir.path(), &["generate", "--kid", "k"]);
    let file: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("keys/k.json")).expect("reads"))
            .expect("json");
    let secret = file["k"].as_str().expect("k");

    let listed = keys(dir.path(), &["list"]);
    let listed_json = keys(dir.path(), &["list", "--json"]);

    for output in [&generated, &listed, &listed_json] {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!text.contains(secret), "secret printed: {text}");
    }
}

#[test]
fn cli_reports_unknown_kid() {
    let dir = tempfile::tempdir().expect("temp dir");
    keys(dir.path(), &["generate", "--kid", "k"]);

    let output = keys(dir.path(), &["activate", "nope"]);

    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no key with kid \"nope\""));
}
