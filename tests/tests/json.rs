//! The `--json` contract for errors: every failure a script meets is one JSON object
//! on stderr with a stable `kind`, and the exit code that groups it; nothing else goes
//! to stderr under `--json`, a follower's connection state included.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nook_e2e::{Nook, Relay, Run, Stream, free_port, text as s};

const LIMIT: Duration = Duration::from_secs(30);

/// Every stderr line parses as a JSON object; returns them.
fn stderr_json(r: &Run) -> Vec<serde_json::Value> {
    r.stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Asserts `r` failed with `code` and one JSON error of `kind`.
fn failed(r: &Run, code: i32, kind: &str) {
    assert_eq!(r.code, code, "{r:?}");
    let lines = stderr_json(r);
    assert_eq!(lines.len(), 1, "{r:?}");
    assert_eq!(lines[0]["kind"], kind, "{r:?}");
    assert_eq!(lines[0]["exit_code"], code, "{r:?}");
    assert!(lines[0]["error"].as_str().is_some_and(|e| !e.is_empty()));
}

#[test]
fn every_error_a_script_meets_has_its_own_kind() {
    let relay = Relay::start();
    let (ann, bob, cat) = (Nook::new(), Nook::new(), Nook::new());
    let new = ann
        .ok(&["--json", "new", "--relay", &relay.address, "--seats", "3"])
        .json();
    let talk = s(&new["talk"]);
    let invite = s(&new["invites"][0]);

    failed(
        &ann.run(&["--json", "send", "zzzz-zzzz", "hi"]),
        3,
        "talk_unknown",
    );
    failed(&ann.run(&["--json", "list", "--bogus"]), 2, "usage");
    failed(
        &ann.run(&["--json", "send", &talk, "too early"]),
        5,
        "talk_not_open",
    );
    failed(&ann.run(&["--json", "join", &invite]), 5, "own_invite");
    let mut typo = invite.clone();
    let last = typo.pop().unwrap();
    typo.push(if last == 'A' { 'B' } else { 'A' });
    failed(&bob.run(&["--json", "join", &typo]), 5, "invite_malformed");
    failed(
        &ann.run(&["--json", "new", "--relay", "nook://nothing"]),
        5,
        "address_malformed",
    );
    bob.ok(&["join", &invite]);
    failed(&cat.run(&["--json", "join", &invite]), 5, "invite_used");
    let tb = bob.only_talk();
    failed(&bob.run(&["--json", "invites", &tb]), 5, "not_owner");
    failed(&bob.run(&["--json", "close", &tb]), 5, "not_allowed");

    let host = relay.address.split('@').nth(1).unwrap();
    let wrong = format!("nook://{}@{host}", nook_crypto::Fingerprint([0; 32]));
    failed(
        &cat.run(&["--json", "new", "--relay", &wrong]),
        7,
        "relay_key_mismatch",
    );
    let (prefix, _) = relay.address.rsplit_once(':').unwrap();
    let dead = format!("{prefix}:{}", free_port());
    failed(
        &cat.run(&["--json", "new", "--relay", &dead]),
        4,
        "relay_unreachable",
    );

    // Closed while bob was away: his next command says so, by kind.
    ann.ok(&["close", &talk]);
    failed(
        &bob.run(&["--json", "send", &tb, "hello?"]),
        6,
        "talk_closed",
    );
}

#[test]
fn a_follower_under_json_reports_its_connection_as_json_only() {
    let mut relay = Relay::start();
    let (ann, bob) = (Nook::new(), Nook::new());
    let new = ann.ok(&["--json", "new", "--relay", &relay.address]).json();
    bob.ok(&["join", &s(&new["invites"][0])]);
    let tb = bob.only_talk();
    let mut follow = bob.spawn(&["--json", "read", &tb, "--follow"]);
    let connected = follow.wait_for(Stream::Stderr, LIMIT, |l| l.contains("\"link\""));
    let v: serde_json::Value = serde_json::from_str(&connected).unwrap();
    assert_eq!(v["state"], "connected", "{connected}");
    relay.stop();
    let again = follow.wait_for(Stream::Stderr, LIMIT, |l| l.contains("reconnecting"));
    let v: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(v["type"], "link", "{again}");
    assert_eq!(v["attempt"], 1, "{again}");
    assert!(v["delay_ms"].as_u64().is_some_and(|d| d > 0), "{again}");
    relay.restart();
    // Back: what ann sends now reaches the follower.
    let ta = s(&new["talk"]);
    ann.ok(&["send", &ta, "after the restart"]);
    follow.wait_for(Stream::Stdout, LIMIT, |l| l.contains("after the restart"));
    follow.terminate();
    let f = follow.finish(LIMIT);
    assert_eq!(f.code, 0, "{f:?}");
    let states: Vec<String> = stderr_json(&f)
        .iter()
        .map(|v| format!("{}:{}", s(&v["type"]), s(&v["state"])))
        .collect();
    assert_eq!(states.first().map(String::as_str), Some("link:connected"));
    assert_eq!(
        states.last().map(String::as_str),
        Some("link:connected"),
        "{states:?}"
    );
    assert!(
        states.iter().any(|l| l == "link:reconnecting"),
        "{states:?}"
    );
}

#[test]
fn wait_returns_when_it_happens_and_says_timeout_when_it_does_not() {
    let relay = Relay::start();
    let (ann, bob) = (Nook::new(), Nook::new());
    let new = ann.ok(&["--json", "new", "--relay", &relay.address]).json();
    let ta = s(&new["talk"]);
    // Waiting for the talk to open: bob's join ends it.
    let opening = ann.spawn(&["--json", "wait", &ta, "--for", "open", "--timeout", "30s"]);
    bob.ok(&["join", &s(&new["invites"][0])]);
    let w = opening.finish(LIMIT);
    assert_eq!(w.code, 0, "{w:?}");
    assert_eq!(
        w.json_lines().last().unwrap()["type"],
        "opened",
        "{}",
        w.stdout
    );
    // Nothing new arrives: a distinct exit code and kind.
    let r = ann.run(&["--json", "wait", &ta, "--for", "message", "--timeout", "1s"]);
    failed(&r, 8, "timeout");
    // A message does arrive.
    let tb = bob.only_talk();
    let waiting = ann.spawn(&[
        "--json",
        "wait",
        &ta,
        "--for",
        "message",
        "--timeout",
        "30s",
    ]);
    bob.ok(&["send", &tb, "ping"]);
    let w = waiting.finish(LIMIT);
    assert_eq!(w.code, 0, "{w:?}");
    let last = w.json_lines().pop().unwrap();
    assert_eq!(
        (s(&last["type"]), s(&last["text"])),
        ("message".into(), "ping".into())
    );
    // --connect-timeout (or NOOK_CONNECT_TIMEOUT) bounds every command's wait for a
    // relay; a bad value is a usage error.
    let (prefix, _) = relay.address.rsplit_once(':').unwrap();
    let dead = format!("{prefix}:{}", free_port());
    let r = bob.run(&["--json", "--connect-timeout", "1s", "new", "--relay", &dead]);
    failed(&r, 4, "relay_unreachable");
    let r = bob.run(&["--json", "--connect-timeout", "0s", "list"]);
    failed(&r, 2, "usage");
}

#[test]
fn members_lists_every_seat_with_who_is_who() {
    let relay = Relay::start();
    let (ann, bob, cat) = (Nook::new(), Nook::new(), Nook::new());
    let new = ann
        .ok(&[
            "--json",
            "new",
            "--relay",
            &relay.address,
            "--seats",
            "3",
            "--alias",
            "ann",
        ])
        .json();
    let ta = s(&new["talk"]);
    bob.ok(&["join", &s(&new["invites"][0]), "--alias", "bob"]);
    cat.ok(&["join", &s(&new["invites"][1]), "--alias", "cat"]);
    bob.ok(&["leave", &bob.only_talk()]);
    let seats = ann.ok(&["--json", "members", &ta]).json_lines();
    let rows: Vec<(u64, String, bool, bool, bool)> = seats
        .iter()
        .map(|m| {
            (
                m["seat"].as_u64().unwrap(),
                s(&m["alias"]),
                m["own"] == true,
                m["owner"] == true,
                m["left"] == true,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (0, "ann".into(), true, true, false),
            (1, "bob".into(), false, false, true),
            (2, "cat".into(), false, false, false),
        ],
        "{seats:?}"
    );
    assert!(
        seats.iter().all(|m| m["joined_at_ms"].as_u64().is_some()),
        "{seats:?}"
    );
    let cat_view = cat.ok(&["members", &cat.only_talk()]);
    assert!(
        cat_view.stdout.contains("cat") && cat_view.stdout.contains("you"),
        "{}",
        cat_view.stdout
    );
}

#[test]
fn a_message_has_one_id_on_every_device_and_every_event_a_time_in_ms() {
    let relay = Relay::start();
    let (ann, bob, cat) = (Nook::new(), Nook::new(), Nook::new());
    let new = ann
        .ok(&["--json", "new", "--relay", &relay.address, "--seats", "3"])
        .json();
    let ta = s(&new["talk"]);
    bob.ok(&["join", &s(&new["invites"][0])]);
    cat.ok(&["join", &s(&new["invites"][1])]);
    let sent = ann.ok(&["--json", "send", &ta, "one id for all"]).json();
    let id = s(&sent["id"]);
    assert_eq!(id.len(), 16, "{sent}");
    for who in [&ann, &bob, &cat] {
        let lines = who.ok(&["--json", "read", &who.only_talk()]).json_lines();
        let m = lines
            .iter()
            .find(|l| l["type"] == "message")
            .unwrap_or_else(|| panic!("no message in {lines:?}"));
        assert_eq!(s(&m["id"]), id, "{m}");
        assert!(
            lines.iter().all(|l| l["at_ms"].as_u64().is_some()),
            "every event says when, in ms: {lines:?}"
        );
    }
    // A second message gets another id.
    let again = ann.ok(&["--json", "send", &ta, "another"]).json();
    assert_ne!(s(&again["id"]), id);
}
