use std::sync::Arc;
use std::thread;

use super::*;

const POLICY: RetirePolicy = RetirePolicy {
    max_token_lifetime_secs: 3600,
    leeway_secs: 30,
};

fn at(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).expect("valid timestamp")
}

fn folder() -> (tempfile::TempDir, KeyOps) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ops = KeyOps::new(dir.path());
    (dir, ops)
}

fn new_key(kid: &str, sign_from: Option<DateTime<Utc>>) -> NewKey {
    NewKey {
        kid: Some(kid.to_owned()),
        alg: None,
        sign_from,
    }
}

#[test]
fn list_never_shows_secret() {
    let (dir, ops) = folder();
    ops.create(new_key("a", Some(at(0))), at(0))
        .expect("creates");
    let text = std::fs::read_to_string(dir.path().join("a.json")).expect("reads");
    let file: serde_json::Value = serde_json::from_str(&text).expect("json");
    let secret = file["k"].as_str().expect("k");

    let listed = serde_json::to_string(&ops.list(at(0)).expect("lists")).expect("json");

    assert!(!listed.contains(secret), "{listed}");
    assert!(listed.contains("\"state\":\"signing\""), "{listed}");
}

#[test]
fn create_refuses_existing_kid() {
    let (_dir, ops) = folder();
    ops.create(new_key("a", None), at(0)).expect("creates");

    let result = ops.create(new_key("a", None), at(0));

    assert!(matches!(result, Err(OpsError::Exists(kid)) if kid == "a"));
}

#[test]
fn rotate_switches_signer() {
    let (_dir, ops) = folder();
    ops.create(new_key("old", Some(at(0))), at(0))
        .expect("creates");

    let info = ops
        .rotate(new_key("new", None), at(10), at(10))
        .expect("rotates");

    assert_eq!(info.state, KeyState::Signing);
    let old = ops
        .list(at(10))
        .expect("lists")
        .into_iter()
        .find(|k| k.kid == "old")
        .expect("old");
    assert_eq!(old.state, KeyState::Verifying);
}

#[test]
fn activate_schedules_signing() {
    let (_dir, ops) = folder();
    ops.create(new_key("a", Some(at(0))), at(0))
        .expect("creates");
    ops.create(new_key("b", None), at(0)).expect("creates");

    let info = ops.activate("b", at(60), at(0)).expect("activates");

    assert_eq!(info.state, KeyState::Scheduled);
    let later = ops.list(at(60)).expect("lists");
    assert_eq!(
        later.iter().find(|k| k.kid == "b").expect("b").state,
        KeyState::Signing
    );
}

#[test]
fn activate_unknown_kid_not_found() {
    let (_dir, ops) = folder();

    let result = ops.activate("nope", at(0), at(0));

    assert!(matches!(result, Err(OpsError::NotFound(_))));
}

#[test]
fn retire_refuses_only_signing_key() {
    let (_dir, ops) = folder();
    ops.create(new_key("a", Some(at(0))), at(0))
        .expect("creates");

    let result = ops.retire("a", at(100_000), false, POLICY, at(0));

    assert!(
        matches!(result, Err(OpsError::OnlySigningKey(_))),
        "{result:?}"
    );
}

#[test]
fn retire_refuses_while_tokens_live() {
    let (_dir, ops) = folder();
    ops.create(new_key("old", Some(at(0))), at(0))
        .expect("creates");
    ops.rotate(new_key("new", None), at(100), at(100))
        .expect("rotates");

    let early = ops.retire("old", at(200), false, POLICY, at(200));
    let late = ops.retire("old", at(100 + 3600 + 30), false, POLICY, at(200));

    assert!(
        matches!(early, Err(OpsError::TokensMayBeValid { .. })),
        "{early:?}"
    );
    assert!(late.is_ok(), "{late:?}");
}

#[test]
fn retire_verify_only_key_at_once() {
    let (_dir, ops) = folder();
    ops.create(new_key("a", Some(at(0))), at(0))
        .expect("creates");
    ops.create(new_key("spare", None), at(0)).expect("creates");

    let info = ops
        .retire("spare", at(10), false, POLICY, at(10))
        .expect("retires");

    assert_eq!(info.state, KeyState::Retired);
}

#[test]
fn force_overrides_retire_checks() {
    let (_dir, ops) = folder();
    ops.create(new_key("a", Some(at(0))), at(0))
        .expect("creates");
    ops.create(new_key("b", Some(at(5))), at(5))
        .expect("creates");

    let info = ops
        .retire("a", at(10), true, POLICY, at(10))
        .expect("forced");

    assert_eq!(info.state, KeyState::Retired);
}

#[test]
fn prune_deletes_only_retired() {
    let (dir, ops) = folder();
    ops.create(new_key("a", Some(at(0))), at(0))
        .expect("creates");
    ops.create(new_key("b", None), at(0)).expect("creates");
    ops.retire("b", at(10), false, POLICY, at(0))
        .expect("retires");

    let pruned = ops.prune(at(10)).expect("prunes");

    assert_eq!(pruned, vec!["b".to_owned()]);
    assert!(dir.path().join("a.json").exists());
    assert!(!dir.path().join("b.json").exists());
}

#[test]
fn concurrent_creates_lose_no_key() {
    let (_dir, ops) = folder();
    let ops = Arc::new(ops);

    let handles: Vec<_> = (0..8)
        .map(|i| {
            let ops = ops.clone();
            thread::spawn(move || {
                for j in 0..5 {
                    let kid = format!("k{i}-{j}");
                    ops.create(new_key(&kid, None), at(0)).expect("creates");
                    ops.activate(&kid, at(i), at(0)).expect("activates");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread finished");
    }

    assert_eq!(ops.list(at(0)).expect("lists").len(), 40);
}

#[test]
fn activate_within_same_second_switches_signer() {
    let (_dir, ops) = folder();
    ops.create(new_key("b", Some(at(0))), at(0))
        .expect("creates");
    ops.create(new_key("a", None), at(0)).expect("creates");
    let later = at(0) + chrono::Duration::milliseconds(250);

    let info = ops.activate("a", later, later).expect("activates");

    assert_eq!(
        info.state,
        KeyState::Signing,
        "a key activated 250 ms later does not sign"
    );
}

#[test]
fn retire_scheduled_key_drops_schedule() {
    let (_dir, ops) = folder();
    ops.create(new_key("a", Some(at(0))), at(0))
        .expect("creates");
    ops.create(new_key("b", None), at(0)).expect("creates");
    ops.activate("b", at(3600), at(0)).expect("schedules");

    let info = ops
        .retire("b", at(10), true, POLICY, at(10))
        .expect("retires");

    assert_eq!(info.state, KeyState::Retired);
    assert_eq!(info.sign_from, None, "schedule kept after verify_until");
    assert!(ops.list(at(10)).is_ok(), "the folder no longer loads");
}

#[test]
fn retired_key_stays_retired() {
    let (_dir, ops) = folder();
    ops.create(new_key("a", Some(at(0))), at(0))
        .expect("creates");
    ops.create(new_key("b", None), at(0)).expect("creates");
    ops.retire("b", at(10), false, POLICY, at(10))
        .expect("retires");

    let later = ops.retire("b", at(100_000), true, POLICY, at(20));
    let earlier = ops.retire("b", at(5), true, POLICY, at(20));

    assert!(
        matches!(later, Err(OpsError::AlreadyRetired(_))),
        "{later:?}"
    );
    assert!(earlier.is_ok(), "moving verify_until earlier: {earlier:?}");
}

#[test]
fn missing_folder_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ops = KeyOps::new(dir.path().join("absent"));

    let error = ops.activate("a", at(0), at(0)).unwrap_err().to_string();

    assert!(
        error.contains("absent") && error.contains("cannot read keys folder"),
        "{error}"
    );
}

#[test]
fn prune_with_nothing_to_delete_needs_no_lock() {
    let (dir, ops) = folder();
    ops.create(new_key("a", Some(at(0))), at(0))
        .expect("creates");
    std::fs::remove_file(dir.path().join(LOCK_FILE)).expect("removes lock file");

    let pruned = ops.prune(at(0)).expect("prunes");

    assert!(pruned.is_empty());
    assert!(
        !dir.path().join(LOCK_FILE).exists(),
        "prune took the lock with nothing to delete"
    );
}
