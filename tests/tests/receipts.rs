//! Deletion receipts a person keeps: printed by `nook close` and to members who follow
//! the talk, checked later and offline by `nook receipt verify`. With the real binaries
//! on loopback.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use nook_e2e::{Nook, Relay, Stream, text as s};

/// A talk of `joiners.len() + 1` seats that anyone may close, created by `owner`, each
/// joiner seated; the talk's id in each home, the owner's first.
fn talk(relay: &Relay, owner: &Nook, joiners: &[&Nook]) -> Vec<String> {
    let seats = (joiners.len() + 1).to_string();
    let new = owner
        .ok(&[
            "--json",
            "new",
            "--relay",
            &relay.address,
            "--seats",
            &seats,
            "--close",
            "any",
        ])
        .json();
    let mut ids = vec![s(&new["talk"])];
    for (j, invite) in joiners.iter().zip(new["invites"].as_array().unwrap()) {
        ids.push(s(&j.ok(&["--json", "join", &s(invite)]).json()["talk"]));
    }
    ids
}

/// `text` saved in a file of `dir`.
fn saved(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The receipt block in `output`: its header line and the six lines after it.
fn block(output: &str) -> Vec<String> {
    let lines: Vec<&str> = output.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == "nook deletion receipt v1")
        .unwrap_or_else(|| panic!("no receipt in {output}"));
    // `read` indents it under the close event; `close` prints it as it is.
    lines[start..start + 7]
        .iter()
        .map(|l| l.trim().to_string())
        .collect()
}

fn field<'a>(block: &'a [String], key: &str) -> &'a str {
    block
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in {block:?}"))
}

#[test]
fn a_closed_talks_receipt_is_printed_kept_and_checked_offline() {
    let mut relay = Relay::start();
    let (ann, bob) = (Nook::new(), Nook::new());
    let ids = talk(&relay, &ann, &[&bob]);
    bob.ok(&["send", &ids[1], "one envelope left on the relay"]);
    let closed = ann.ok(&["close", &ids[0]]);
    let receipt = block(&closed.stdout);
    assert!(
        closed.stdout.contains("keep it") && closed.stdout.contains("nook receipt verify"),
        "{}",
        closed.stdout
    );
    assert_eq!(field(&receipt, "relay"), relay.address);
    // Bob's message, and what no one acknowledged yet of the handshakes.
    let deleted: u64 = field(&receipt, "envelopes-deleted").parse().unwrap();
    assert!(deleted >= 1, "{deleted}");
    let at = field(&receipt, "closed-at");
    assert!(
        at.len() == 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "{at}"
    );
    assert_eq!(field(&receipt, "signature").len(), 128);
    assert_eq!(field(&receipt, "relay-key").len(), 64);

    // Later, elsewhere, with the relay gone: the whole saved output checks, by anyone.
    relay.stop();
    let dir = tempfile::tempdir().unwrap();
    let file = saved(&dir, "receipt.txt", &closed.stdout);
    let anyone = Nook::new();
    let ok = anyone.ok(&["receipt", "verify", file.to_str().unwrap()]);
    assert!(ok.stdout.starts_with("valid"), "{}", ok.stdout);
    assert!(ok.stdout.contains(&relay.address), "{}", ok.stdout);
    let piped = anyone.run_with_stdin(&["--json", "receipt", "verify", "-"], &closed.stdout);
    assert_eq!(piped.code, 0, "{piped:?}");
    assert_eq!(piped.json()["valid"], true);
    assert_eq!(piped.json()["receipt"]["closed_at"], at);

    // One byte changed in any signed or pinning part: exit 7, "not valid".
    let text = receipt.join("\n") + "\n";
    let change = |key: &str, at: usize| {
        let line = receipt.iter().find(|l| l.starts_with(key)).unwrap();
        let i = key.len() + 2 + at;
        let old = line.as_bytes()[i];
        let new = match old {
            b'0' => '1',
            b'1'..=b'9' => '0',
            b'a' => 'b',
            _ => 'a',
        };
        let mut changed = line.clone();
        changed.replace_range(i..=i, &new.to_string());
        text.replacen(line.as_str(), &changed, 1)
    };
    let changes = [
        ("signature", change("signature", 17)),
        ("envelopes-deleted", change("envelopes-deleted", 0)),
        ("closed-at seconds", change("closed-at", 18)),
        ("mailbox", change("mailbox", 5)),
        ("relay key", change("relay-key", 40)),
        ("relay fingerprint", change("relay", "nook://".len() + 3)),
    ];
    for (what, changed) in &changes {
        assert_ne!(changed, &text, "{what}");
        let path = saved(&dir, "changed.txt", changed);
        let r = anyone.run(&["receipt", "verify", path.to_str().unwrap()]);
        assert_eq!(r.code, 7, "{what} changed: {r:?}");
        assert!(r.stderr.contains("NOT valid"), "{what}: {}", r.stderr);
    }
    // Not a receipt at all, or none in the file: exit 5 (the input is unusable).
    for (what, junk) in [
        ("another version", text.replace("v1", "v2")),
        ("a field lost", text.replace("mailbox:", "mailbx:")),
        ("no receipt", "talk closed\n".to_string()),
    ] {
        let path = saved(&dir, "junk.txt", &junk);
        let r = anyone.run(&["receipt", "verify", path.to_str().unwrap()]);
        assert_eq!(r.code, 5, "{what}: {r:?}");
    }
    let r = anyone.run(&["receipt", "verify", "/nonexistent/receipt.txt"]);
    assert_eq!(r.code, 5, "{r:?}");
}

#[test]
fn close_json_has_the_same_fields_and_checks_too() {
    let relay = Relay::start();
    let (ann, bob) = (Nook::new(), Nook::new());
    let ids = talk(&relay, &ann, &[&bob]);
    let closed = ann.ok(&["--json", "close", &ids[0]]);
    let r = &closed.json()["receipt"];
    assert_eq!(r["verified"], true);
    assert_eq!(r["format"], "nook deletion receipt v1");
    assert_eq!(r["relay"], relay.address.as_str());
    assert!(r["envelopes_deleted"].is_u64(), "{r}");
    assert!(s(&r["closed_at"]).ends_with('Z'), "{r}");
    let dir = tempfile::tempdir().unwrap();
    let file = saved(&dir, "receipt.json", &closed.stdout);
    let ok = Nook::new().ok(&["--json", "receipt", "verify", file.to_str().unwrap()]);
    assert_eq!(ok.json()["valid"], true);
    assert_eq!(ok.json()["receipt"]["signature"], r["signature"]);
    // The same receipt with another envelope count does not verify.
    let mut forged = closed.json();
    forged["receipt"]["envelopes_deleted"] = (r["envelopes_deleted"].as_u64().unwrap() + 1).into();
    let file = saved(&dir, "forged.json", &forged.to_string());
    let r = Nook::new().run(&["--json", "receipt", "verify", file.to_str().unwrap()]);
    assert_eq!(r.code, 7, "{r:?}");
    let err: serde_json::Value = serde_json::from_str(r.stderr.trim()).unwrap();
    assert_eq!(err["exit_code"], 7);
}

#[test]
fn members_following_the_talk_get_the_receipt_and_it_checks() {
    let relay = Relay::start();
    let (ann, bob, cat) = (Nook::new(), Nook::new(), Nook::new());
    let ids = talk(&relay, &ann, &[&bob, &cat]);
    // Bob follows in text, Cat in JSON; Ann closes.
    let mut text_follow = bob.spawn(&["read", &ids[1], "--follow"]);
    let mut json_follow = cat.spawn(&["--json", "read", &ids[2], "--follow"]);
    for f in [&mut text_follow, &mut json_follow] {
        f.wait_for(Stream::Stderr, Duration::from_secs(30), |l| {
            l.contains("following")
        });
    }
    let closed = ann.ok(&["--json", "close", &ids[0]]).json();
    let signature = s(&closed["receipt"]["signature"]);

    let bob_out = text_follow.finish(Duration::from_secs(30));
    assert_eq!(
        bob_out.code, 6,
        "a follower whose talk closed ends with 6: {bob_out:?}"
    );
    let bob_receipt = block(&bob_out.stdout);
    assert_eq!(field(&bob_receipt, "signature"), signature);
    assert!(
        bob_out.stdout.contains("closed by ") && bob_out.stdout.contains("(verified)"),
        "{}",
        bob_out.stdout
    );
    let cat_out = json_follow.finish(Duration::from_secs(30));
    assert_eq!(cat_out.code, 6, "{cat_out:?}");
    let last = cat_out.json_lines().pop().unwrap();
    assert_eq!(last["type"], "closed", "{}", cat_out.stdout);
    assert_eq!(last["verified"], true, "{last}");
    assert_eq!(last["receipt"]["signature"], signature.as_str());
    assert_eq!(last["receipt"]["verified"], true);

    // What each follower printed, saved as it is, checks.
    let dir = tempfile::tempdir().unwrap();
    for (who, out) in [("bob", &bob_out.stdout), ("cat", &cat_out.stdout)] {
        let file = saved(&dir, who, out);
        let ok = Nook::new().run(&["receipt", "verify", file.to_str().unwrap()]);
        assert_eq!(ok.code, 0, "{who}: {ok:?}");
        assert!(ok.stdout.starts_with("valid"), "{who}: {}", ok.stdout);
    }
}

#[test]
fn a_member_away_at_the_close_gets_the_receipt_when_it_comes_back() {
    let relay = Relay::start();
    let (ann, bob, cat) = (Nook::new(), Nook::new(), Nook::new());
    let ids = talk(&relay, &ann, &[&bob, &cat]);
    // Nobody but ann is connected when she closes.
    let closed = ann.ok(&["--json", "close", &ids[0]]).json();
    let signature = s(&closed["receipt"]["signature"]);

    // Bob comes back: the talk is over (exit 6), and the relay hands him the receipt.
    let back = bob.run(&["read", &ids[1]]);
    assert_eq!(back.code, 6, "{back:?}");
    let receipt = block(&back.stdout);
    assert_eq!(field(&receipt, "signature"), signature);
    let dir = tempfile::tempdir().unwrap();
    let file = saved(&dir, "bob", &back.stdout);
    let ok = Nook::new().run(&["receipt", "verify", file.to_str().unwrap()]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(bob.ok(&["--json", "list"]).json_lines().is_empty());

    // Cat, in JSON, gets the same receipt, verified.
    let back = cat.run(&["--json", "read", &ids[2]]);
    assert_eq!(back.code, 6, "{back:?}");
    let last = back.json_lines().pop().unwrap();
    assert_eq!(last["type"], "closed", "{}", back.stdout);
    assert_eq!(last["receipt"]["signature"], signature.as_str());
    assert_eq!(last["receipt"]["verified"], true);
}

#[test]
fn checking_a_receipt_needs_no_home_and_creates_none() {
    let relay = Relay::start();
    let (ann, bob) = (Nook::new(), Nook::new());
    let ids = talk(&relay, &ann, &[&bob]);
    let closed = ann.ok(&["close", &ids[0]]);
    let dir = tempfile::tempdir().unwrap();
    let file = saved(&dir, "receipt.txt", &closed.stdout);
    // A fresh user: HOME points at an empty folder, no NOOK_HOME.
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(nook_e2e::bin("nook"))
        .args(["receipt", "verify", file.to_str().unwrap()])
        .env("HOME", home.path())
        .env_remove("NOOK_HOME")
        .env_remove("XDG_DATA_HOME")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        std::fs::read_dir(home.path()).unwrap().count(),
        0,
        "verify created something in the home folder"
    );
}
