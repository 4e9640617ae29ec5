//! A relay's key rotation and retirement, with the real binaries (protocol-spec.md
//! §11.12, §6.14): members who hold the old address follow a rotation proved by the
//! old key and keep talking, and their receipts still check against that address; a
//! relay of another key with no such proof is refused; a retirement is announced to
//! every member, refuses new talks, and closes every talk with a receipt.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nook_e2e::{Nook, Relay, Stream, relay_run, text, two_seat_talk};

fn saved(dir: &tempfile::TempDir, name: &str, content: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// The value of `key: value` in the receipt lines of `output` (indented or not).
fn field(output: &str, key: &str) -> String {
    output
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in {output}"))
        .to_string()
}

#[test]
fn members_follow_a_rotated_key_through_send_read_and_close() {
    let mut relay = Relay::start();
    let old_address = relay.address.clone();
    let (ann, bob, ann_talk, bob_talk) = two_seat_talk(&relay, &[], &[]);
    ann.ok(&["send", &ann_talk, "before the rotation"]);

    let rotated = relay.restart_after(&["rotate-key"]);
    assert_eq!(rotated.code, 0, "{rotated:?}");
    assert_ne!(relay.address, old_address, "a new key, a new address");
    assert_eq!(rotated.stdout.trim(), relay.address, "{rotated:?}");
    let data = relay.data_dir();
    let shown = relay_run(&["address", "--data", data.to_str().unwrap()]);
    assert_eq!(shown.stdout.trim(), relay.address);

    // Both still hold only the old address; everything keeps working.
    ann.ok(&["send", &ann_talk, "after the rotation"]);
    let read = bob.ok(&["--json", "read", &bob_talk]).json_lines();
    let texts: Vec<String> = read
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| text(&e["text"]))
        .collect();
    assert_eq!(texts, ["before the rotation", "after the rotation"]);
    let followed: Vec<_> = read
        .iter()
        .filter(|e| e["type"] == "relay_rotated")
        .collect();
    assert_eq!(followed.len(), 1, "told once: {read:?}");
    assert_eq!(followed[0]["rotations"], 1);
    let new_fingerprint = relay.address["nook://".len()..].split('@').next().unwrap();
    assert_eq!(followed[0]["fingerprint"], new_fingerprint);

    bob.ok(&["send", &bob_talk, "bob after the rotation"]);
    let ann_read = ann.ok(&["read", &ann_talk]);
    assert!(
        ann_read.stdout.contains("bob after the rotation")
            && ann_read.stdout.contains("the relay moved to a new key"),
        "{}",
        ann_read.stdout
    );
    // Remembered: a later read does not say it again.
    bob.ok(&["send", &bob_talk, "once more"]);
    let again = ann.ok(&["read", &ann_talk, "--new"]);
    assert!(
        !again.stdout.contains("moved to a new key"),
        "{}",
        again.stdout
    );

    // Bob follows; Ann closes. Both receipts are signed by the new key and check
    // against the address they were given.
    let mut follow = bob.spawn(&["read", &bob_talk, "--follow"]);
    follow.wait_for(Stream::Stderr, Duration::from_secs(30), |l| {
        l.contains("following")
    });
    let closed = ann.ok(&["close", &ann_talk]);
    let bob_out = follow.finish(Duration::from_secs(30));
    assert_eq!(bob_out.code, 6, "{bob_out:?}");
    relay.stop();
    let dir = tempfile::tempdir().unwrap();
    for (who, out) in [("ann", &closed.stdout), ("bob", &bob_out.stdout)] {
        assert_eq!(field(out, "relay"), old_address, "{who}");
        assert!(field(out, "rotation").len() > 200, "{who}");
        let file = saved(&dir, who, out);
        let ok = Nook::new().run(&["receipt", "verify", file.to_str().unwrap()]);
        assert_eq!(ok.code, 0, "{who}: {ok:?}");
        assert!(ok.stdout.contains(&old_address), "{who}: {}", ok.stdout);
        // Without its rotation line the receipt does not check: the old key did not
        // sign it.
        let stripped: String = out
            .lines()
            .filter(|l| !l.trim().starts_with("rotation:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let file = saved(&dir, &format!("{who}-stripped"), &stripped);
        let bad = Nook::new().run(&["receipt", "verify", file.to_str().unwrap()]);
        assert_eq!(bad.code, 7, "{who}: {bad:?}");
    }
}

#[test]
fn a_relay_of_another_key_without_a_statement_is_still_refused() {
    let mut relay = Relay::start();
    let (ann, _bob, ann_talk, _) = two_seat_talk(&relay, &[], &[]);
    // Another identity at the same place, with no statement from the pinned key: the
    // data folder is replaced by a fresh one.
    let data = relay.data_dir();
    relay.stop();
    std::fs::remove_dir_all(&data).unwrap();
    let start = relay.restart_after(&["status"]);
    assert_ne!(start.code, 0, "status of no folder fails: {start:?}");
    let refused = ann.run(&["--json", "send", &ann_talk, "hello?"]);
    assert_eq!(refused.code, 7, "{refused:?}");
    let err: serde_json::Value = serde_json::from_str(refused.stderr.trim()).unwrap();
    assert_eq!(err["kind"], "relay_key_mismatch", "{err}");
    assert!(
        text(&err["error"]).contains("not the relay you were given"),
        "{err}"
    );
}

#[test]
fn a_rotation_of_a_running_relay_is_refused_with_what_to_do() {
    let relay = Relay::start();
    let data = relay.data_dir();
    let r = relay_run(&["rotate-key", "--data", data.to_str().unwrap()]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("stop the relay first"), "{}", r.stderr);
}

#[test]
fn a_retirement_closes_every_talk_with_receipts_and_refuses_new_ones() {
    let relay = Relay::start();
    let (ann, bob, ann_talk, bob_talk) = two_seat_talk(&relay, &[], &[]);
    let mut follow = bob.spawn(&["--json", "read", &bob_talk, "--follow"]);
    follow.wait_for(Stream::Stderr, Duration::from_secs(30), |l| {
        l.contains("following")
    });

    // Announced to a running relay, a few seconds ahead.
    let data = relay.data_dir();
    let announced = relay_run(&["retire", "--at", "6s", "--data", data.to_str().unwrap()]);
    assert_eq!(announced.code, 0, "{announced:?}");
    let line = follow.wait_for(Stream::Stdout, Duration::from_secs(30), |l| {
        l.contains("\"relay_retiring\"")
    });
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    let at = text(&event["retiring_at"]);

    // New talks are refused; the members see the time before it comes.
    let carl = Nook::new();
    let new = carl.run(&["--json", "new", "--relay", &relay.address]);
    assert_eq!(new.code, 5, "{new:?}");
    let err: serde_json::Value = serde_json::from_str(new.stderr.trim()).unwrap();
    assert_eq!(err["kind"], "relay_retiring", "{err}");
    let listed = ann.ok(&["--json", "list"]).json();
    assert_eq!(listed["relay_retiring_at"], at.as_str(), "{listed}");
    let ann_list = ann.ok(&["list"]);
    assert!(
        ann_list.stdout.contains(&format!("retires at {at}")),
        "{}",
        ann_list.stdout
    );
    let ann_read = ann.ok(&["read", &ann_talk]);
    assert!(
        ann_read.stdout.contains(&format!("retires at {at}")),
        "{}",
        ann_read.stdout
    );

    // At the time: Bob (online) gets the close pushed, with a receipt that checks.
    let bob_out = follow.finish(Duration::from_secs(60));
    assert_eq!(bob_out.code, 6, "{bob_out:?}");
    let last = bob_out.json_lines().pop().unwrap();
    assert_eq!(last["type"], "closed", "{}", bob_out.stdout);
    assert_eq!(last["receipt"]["verified"], true, "{last}");
    let dir = tempfile::tempdir().unwrap();
    let file = saved(&dir, "bob", &bob_out.stdout);
    let ok = Nook::new().run(&["receipt", "verify", file.to_str().unwrap()]);
    assert_eq!(ok.code, 0, "{ok:?}");

    // Ann, away meanwhile, learns it when she comes back, with the same receipt.
    let deadline = Instant::now() + Duration::from_secs(30);
    let back = loop {
        let r = ann.run(&["read", &ann_talk]);
        if r.code != 0 || Instant::now() > deadline {
            break r;
        }
    };
    assert_eq!(back.code, 6, "{back:?}");
    assert_eq!(
        field(&back.stdout, "signature"),
        text(&last["receipt"]["signature"])
    );
    let file = saved(&dir, "ann", &back.stdout);
    let ok = Nook::new().run(&["receipt", "verify", file.to_str().unwrap()]);
    assert_eq!(ok.code, 0, "{ok:?}");
}
