//! Invites as people handle them: mistyped, pasted from mail or chat, piped, or used by
//! their own owner. With the real binaries on loopback.

#![allow(clippy::unwrap_used)]

use nook_e2e::{Nook, Relay, text as s};

/// A talk of `seats` created by `owner` on `relay`: its id and invites.
fn talk(owner: &Nook, relay: &Relay, seats: u8) -> (String, Vec<String>) {
    let new = owner
        .ok(&[
            "--json",
            "new",
            "--relay",
            &relay.address,
            "--seats",
            &seats.to_string(),
        ])
        .json();
    let invites = new["invites"].as_array().unwrap().iter().map(s).collect();
    (s(&new["talk"]), invites)
}

/// Another base64url character in place of the one at `at`.
fn retype(text: &str, at: usize) -> String {
    let old = &text[at..=at];
    let new = if old == "A" { "B" } else { "A" };
    format!("{}{new}{}", &text[..at], &text[at + 1..])
}

#[test]
fn a_mistyped_invite_is_refused_without_asking_the_relay_and_burns_nothing() {
    let mut relay = Relay::start();
    let owner = Nook::new();
    let (_, invites) = talk(&owner, &relay, 2);
    let invite = &invites[0];
    // nook://<fingerprint>@<host>:<port>/<mailbox>#<seat secret and check>
    let slash = "nook://".len() + invite["nook://".len()..].find('/').unwrap();
    let hash = invite.find('#').unwrap();
    let flipped_port = {
        let d = invite.as_bytes()[slash - 1] - b'0';
        let mut t = invite.clone();
        t.replace_range(slash - 1..slash, &(d ^ 1).to_string());
        t
    };
    assert!(invite.contains("@127.0.0.1:"), "{invite}");
    let typos = [
        ("fingerprint", retype(invite, "nook://".len() + 5)),
        ("host", invite.replacen("@127.0.0.1:", "@127.0.0.2:", 1)),
        ("port", flipped_port),
        ("mailbox", retype(invite, slash + 3)),
        ("seat secret", retype(invite, hash + 10)),
        ("check", retype(invite, invite.len() - 1)),
    ];
    // The relay is down: whatever asked it would fail with "unreachable" (exit 4).
    relay.stop();
    let joiner = Nook::new();
    for (part, typo) in &typos {
        assert_ne!(typo, invite, "{part}");
        let r = joiner.run(&["join", typo]);
        assert_eq!(r.code, 5, "a typo in the {part}: {r:?}");
        assert!(
            r.stderr.contains("mistyped or incomplete")
                && r.stderr.contains("character by character"),
            "a typo in the {part}: {}",
            r.stderr
        );
        let r = joiner.run(&["--json", "join", typo]);
        let err: serde_json::Value = serde_json::from_str(r.stderr.trim()).unwrap();
        assert_eq!(err["exit_code"], 5, "{part}");
    }
    // Nothing was stored, and the seat is still free for the right invite.
    assert!(joiner.ok(&["--json", "list"]).json_lines().is_empty());
    relay.restart();
    let joined = joiner.ok(&["--json", "join", invite]).json();
    assert_eq!(joined["members"], 2, "{joined}");
}

#[test]
fn invites_pasted_from_mail_or_chat_or_piped_in_take_their_seat() {
    let relay = Relay::start();
    let owner = Nook::new();
    let (talk_id, invites) = talk(&owner, &relay, 5);
    let broken = |inv: &str, sep: &str| {
        let (a, b) = inv.split_at(30);
        let (b, c) = b.split_at(40);
        format!("{a}{sep}{b}{sep}{c}")
    };
    let pasted = [
        // A mail client's link, wrapped at 72 columns and indented.
        format!("<{}>", broken(&invites[0], "\n    ")),
        // Chat quotes, curly ones, with the spaces around them.
        format!("  \u{201c}{}\u{201d}  ", invites[1]),
        format!("'{}'\r\n", broken(&invites[2], "\r\n")),
    ];
    for p in &pasted {
        let joiner = Nook::new();
        let r = joiner.run(&["join", p]);
        assert_eq!(r.code, 0, "{p:?}: {r:?}");
    }
    // `-`: the invite on stdin, as a file or another program gives it.
    let piped = Nook::new();
    let r = piped.run_with_stdin(
        &["--json", "join", "-"],
        &format!("\"{}\"\n", broken(&invites[3], "\n")),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["members"], 5);
    assert_eq!(r.json()["state"], "open");
    // Once the owner has seen the announcements, no invite is left unused.
    owner.ok(&["read", &talk_id]);
    let info = owner.ok(&["--json", "invites", &talk_id]).json();
    assert!(
        info["invites"].as_array().unwrap().is_empty(),
        "every seat is taken: {info}"
    );
    // An empty stdin is no invite.
    let r = Nook::new().run_with_stdin(&["join", "-"], "");
    assert_eq!(r.code, 5, "{r:?}");
}

#[test]
fn the_owner_joining_her_own_invite_is_refused_and_the_seat_stays_free() {
    let mut relay = Relay::start();
    let owner = Nook::new();
    let (talk_id, invites) = talk(&owner, &relay, 3);
    // Refused before any packet: the relay may as well be down.
    relay.stop();
    for invite in [invites[1].clone(), format!("<{}>", invites[1])] {
        let r = owner.run(&["join", &invite]);
        assert_eq!(r.code, 5, "{r:?}");
        assert!(
            r.stderr.contains("your own talk") && r.stderr.contains("someone else"),
            "{}",
            r.stderr
        );
    }
    let r = owner.run_with_stdin(&["join", "-"], &invites[0]);
    assert_eq!(r.code, 5, "{r:?}");
    relay.restart();
    // Still one talk, both invites still offered, and both still take their seats.
    assert_eq!(owner.ok(&["--json", "list"]).json_lines().len(), 1);
    let offered = owner.ok(&["--json", "invites", &talk_id]).json();
    assert_eq!(offered["invites"].as_array().unwrap().len(), 2, "{offered}");
    for invite in &invites {
        Nook::new().ok(&["join", invite]);
    }
    let list = owner.ok(&["--json", "read", &talk_id]).json_lines();
    assert!(list.iter().any(|l| l["type"] == "opened"), "{list:?}");
}
