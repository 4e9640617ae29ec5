//! End to end, with the real `nook` binary against the real relay engine run in this
//! process with a [`Wiretap`](nook_e2e::wiretap::Wiretap) that withholds chosen
//! envelopes (protocol-spec §16: every message says its sender's chain position, and
//! `Leaving` and the close carry a signed summary): a member learns how many of a
//! sender's messages never arrived, from the sender's next message in `read` (JSON
//! and text) and from the closer's summary when the talk ends; and messages handed
//! out of order in one answer are read in causal order (each says what its sender
//! had seen, §13.3).

use std::time::Duration;

use nook_e2e::wiretap::TappedRelay;
use nook_e2e::{Nook, Stream, text as s};

/// An open two-seat talk on `relay` between ann (who made it, with alias `alias`) and
/// "bob", who have met (each holds the other's chain); with ann's and bob's names for it.
fn met(relay: &TappedRelay, alias: &str) -> (Nook, Nook, String, String) {
    let (ann, bob) = (Nook::new(), Nook::new());
    let new = ann
        .ok(&["--json", "new", "--relay", &relay.address, "--alias", alias])
        .json();
    bob.ok(&["join", &s(&new["invites"][0]), "--alias", "bob"]);
    let (talk, bobs) = (s(&new["talk"]), bob.only_talk());
    ann.ok(&["read", &talk]);
    bob.ok(&["read", &bobs]);
    (ann, bob, talk, bobs)
}

/// ann sends `text`; the seq the relay stored it at.
fn send(ann: &Nook, talk: &str, text: &str) -> u64 {
    ann.ok(&["--json", "send", talk, text]).json()["seq"]
        .as_u64()
        .expect("seq")
}

/// The `message` texts and the `missing` events (as `alias×count`) of a `read --json`.
fn said(read: &nook_e2e::Run) -> (Vec<String>, Vec<String>) {
    let lines = read.json_lines();
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        lines.iter().filter(|v| v["type"] == kind).collect()
    };
    (
        of("message").iter().map(|v| s(&v["text"])).collect(),
        of("missing")
            .iter()
            .map(|v| format!("{}×{}", s(&v["alias"]), v["count"]))
            .collect(),
    )
}

#[test]
fn read_says_how_many_of_a_senders_messages_the_relay_withheld() {
    let relay = TappedRelay::start();
    let (ann, bob, talk, bobs) = met(&relay, "ann");
    for n in 1..=3 {
        send(&ann, &talk, &format!("m{n}"));
    }
    let (texts, missing) = said(&bob.ok(&["--json", "read", "--new", &bobs]));
    assert_eq!(
        (texts, missing.len()),
        (vec!["m1".into(), "m2".into(), "m3".into()], 0)
    );

    // The relay stores ann's next two (she is told `Stored`) and never delivers them.
    let withheld = [send(&ann, &talk, "m4"), send(&ann, &talk, "m5")];
    relay.tap.withhold(withheld);
    let quiet = bob.ok(&["--json", "read", "--new", &bobs]);
    assert_eq!(said(&quiet), (vec![], vec![]), "{}", quiet.stdout);
    assert_eq!(relay.tap.held_back(), 2, "bob's fetch reached the relay");
    // ann's next message says where her chain is: bob knows two never arrived.
    send(&ann, &talk, "m6");
    let read = bob.ok(&["--json", "read", "--new", &bobs]);
    assert_eq!(
        said(&read),
        (vec!["m6".into()], vec!["ann×2".into()]),
        "{}",
        read.stdout
    );

    // The same in the text of `read`.
    let withheld = [send(&ann, &talk, "m7"), send(&ann, &talk, "m8")];
    relay.tap.withhold(withheld);
    send(&ann, &talk, "m9");
    let read = bob.ok(&["read", "--new", &bobs]);
    assert!(
        read.stdout.contains("! 2 messages from ann never arrived"),
        "{}",
        read.stdout
    );
    assert!(
        read.stdout.contains("ann: m9") && !read.stdout.contains("ann: m8"),
        "{}",
        read.stdout
    );
}

#[test]
fn the_close_summary_says_how_many_messages_the_relay_withheld() {
    let relay = TappedRelay::start();
    // A bidi override in ann's alias, which the text output must show escaped.
    let (ann, bob, talk, bobs) = met(&relay, "ann\u{202e}");
    let shown = r"ann\u{202e}";
    let mut follow = bob.spawn(&["read", "--follow", &bobs]);
    let first = send(&ann, &talk, "m1");
    follow.wait_for(Stream::Stdout, Duration::from_secs(20), |l| {
        l.contains(&format!("{shown}: m1"))
    });
    // bob is subscribed: the relay withholds ann's next two pushes as they are stored
    // (seqs are the relay's order, and nobody else writes meanwhile).
    relay.tap.withhold([first + 1, first + 2]);
    assert_eq!(send(&ann, &talk, "m2"), first + 1);
    assert_eq!(send(&ann, &talk, "m3"), first + 2);
    // ann closes: her farewell's summary says she sent three.
    ann.ok(&["close", &talk]);
    let run = follow.finish(Duration::from_secs(30));
    assert!(
        run.stdout
            .contains(&format!("! 2 messages from {shown} never arrived")),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        !run.stdout.contains(&format!("{shown}: m2"))
            && !run.stdout.contains(&format!("{shown}: m3")),
        "{}",
        run.stdout
    );
    assert_eq!(relay.tap.held_back(), 2);
}

#[test]
fn an_answer_the_relay_hands_out_of_order_is_read_in_causal_order() {
    let relay = TappedRelay::start();
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
            "3",
            "--alias",
            "ann",
        ])
        .json();
    let talk = s(&new["talk"]);
    bob.ok(&["join", &s(&new["invites"][0]), "--alias", "bob"]);
    cat.ok(&["join", &s(&new["invites"][1]), "--alias", "cat"]);
    for _ in 0..3 {
        for m in [&ann, &bob, &cat] {
            m.ok(&["read", &talk]);
        }
    }
    // bob answers ann's question after reading it; cat is offline meanwhile.
    ann.ok(&["send", &talk, "the question"]);
    bob.ok(&["read", &talk]);
    bob.ok(&["send", &talk, "the answer"]);
    // The relay hands cat both in one answer, the answer first.
    relay.tap.reverse_answers();
    let read = cat.ok(&["--json", "read", "--new", &talk]);
    let (texts, missing) = said(&read);
    assert_eq!(texts, ["the question", "the answer"], "{}", read.stdout);
    assert!(missing.is_empty(), "{}", read.stdout);
    assert_eq!(
        relay.tap.reversed(),
        1,
        "cat got both in one answer, reversed"
    );
}
