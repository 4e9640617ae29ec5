//! End to end, with the real binaries: a newcomer's alias and chain travel pairwise
//! (protocol-spec §13.2), so a member learns them only from the newcomer's `Reply` —
//! at once for the creator, after the newcomer's next command for the others — and
//! what the newcomer said meanwhile is held, not lost.

use nook_e2e::{Nook, Relay, text as s};

/// The `message` events of a `read --json`, as `alias: text`.
fn said(read: &nook_e2e::Run) -> Vec<String> {
    read.json_lines()
        .iter()
        .filter(|v| v["type"] == "message")
        .map(|v| format!("{}: {}", s(&v["alias"]), s(&v["text"])))
        .collect()
}

#[test]
fn a_newcomers_first_words_reach_every_member_once_it_has_met_them() {
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
            "--quorum",
            "2",
            "--alias",
            "ann",
        ])
        .json();
    let invites = new["invites"].as_array().unwrap();
    let talk = s(&new["talk"]);
    bob.ok(&["join", &s(&invites[0]), "--alias", "bob"]);
    // bob meets ann (her Intro, his Reply went with his join).
    ann.ok(&["read", &talk]);
    bob.ok(&["read", &talk]);
    // cat joins and speaks at once: nobody has introduced itself to her yet.
    cat.ok(&["join", &s(&invites[1]), "--alias", "cat"]);
    cat.ok(&["send", &talk, "hello from cat"]);
    // ann, the creator, got cat's Reply with the join: she reads it now.
    assert_eq!(
        said(&ann.ok(&["--json", "read", &talk])),
        ["cat: hello from cat"]
    );
    // bob introduces himself to cat and holds her message: he has no key for it yet.
    let early = bob.ok(&["--json", "read", &talk]);
    assert!(said(&early).is_empty(), "{}", early.stdout);
    assert!(!early.stdout.contains("\"warning\""), "{}", early.stdout);
    // cat's next command answers bob's Intro; bob then reads what she said.
    cat.ok(&["read", &talk]);
    let later = bob.ok(&["--json", "read", &talk]);
    assert_eq!(said(&later), ["cat: hello from cat"], "{}", later.stdout);
    assert!(
        later
            .json_lines()
            .iter()
            .any(|v| v["type"] == "joined" && v["alias"] == "cat"),
        "{}",
        later.stdout
    );
}
