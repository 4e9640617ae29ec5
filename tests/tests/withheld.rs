//! End to end, with the real `nook` binary against the real relay engine run in this
//! process with a [`Wiretap`](nook_e2e::wiretap::Wiretap) that withholds chosen
//! envelopes (protocol-spec §16: every message says its sender's chain position, and
//! `Leaving` and the close carry a signed summary): a member learns how many of a
//! sender's messages never arrived, from the sender's next message in `read` (JSON
//! and text) and from the closer's summary when the talk ends; and messages handed
//! out of order in one answer are read in causal order (each says what its sender
//! had seen, §13.3).

use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

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

/// An open three-seat talk on `relay` between ann (who made it), bob and cat, who
/// have all met; the talk's name (the same for all three).
fn three_met(relay: &TappedRelay) -> (Nook, Nook, Nook, String) {
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
    (ann, bob, cat, talk)
}

#[test]
fn an_answer_the_relay_hands_out_of_order_is_read_in_causal_order() {
    let relay = TappedRelay::start();
    let (ann, bob, cat, talk) = three_met(&relay);
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

/// The `message` texts and `missing` counts a follower printed so far, in order.
fn followed(follow: &mut nook_e2e::Background) -> Vec<String> {
    follow
        .lines_so_far(Stream::Stdout)
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| match v["type"].as_str() {
            Some("message") => Some(s(&v["text"])),
            Some("missing") => Some(format!("missing {}×{}", s(&v["alias"]), v["count"])),
            _ => None,
        })
        .collect()
}

/// cat follows; the relay pushes bob's answer to it first, alone, and ann's question
/// only with the next message. cat shows the question first, with nothing reported
/// lost: the answer waited (its summary says bob had seen the question).
#[test]
fn an_answer_pushed_before_its_question_in_another_batch_is_shown_after_it() {
    let relay = TappedRelay::start();
    let (ann, bob, cat, talk) = three_met(&relay);
    // A patience far above what these few commands take, so the test does not depend
    // on the machine's speed (the patience running out is the next test).
    let mut follow = cat.spawn(&[
        "--causal-wait",
        "10m",
        "--json",
        "read",
        &talk,
        "--follow",
        "--new",
    ]);
    follow.wait_for(Stream::Stderr, LIMIT, |l| l.contains("connected"));
    relay.tap.swap_next_pushes();
    ann.ok(&["send", &talk, "the question"]);
    bob.ok(&["read", &talk]);
    bob.ok(&["send", &talk, "the answer"]);
    ann.ok(&["send", &talk, "and then"]);
    follow.wait_for(Stream::Stdout, LIMIT, |l| l.contains("and then"));
    assert!(relay.tap.swapped(), "the relay swapped the two pushes");
    assert_eq!(
        followed(&mut follow),
        ["the question", "the answer", "and then"]
    );
    follow.terminate();
}

/// The question never comes: once the answer has waited its patience it is shown,
/// with the question reported lost, though nothing else arrives.
#[test]
fn an_answer_whose_question_never_comes_is_shown_when_its_patience_ends() {
    let relay = TappedRelay::start();
    let (ann, bob, cat, talk) = three_met(&relay);
    let mut follow = cat.spawn(&[
        "--causal-wait",
        "1s",
        "--json",
        "read",
        &talk,
        "--follow",
        "--new",
    ]);
    follow.wait_for(Stream::Stderr, LIMIT, |l| l.contains("connected"));
    // The next seq is the question's: withheld from cat's follower (bob's fetch gets
    // it) before it is sent, so no push of it can slip out first.
    let next = relay.tap.stored().last().copied().unwrap_or(0) + 1;
    relay.tap.withhold_pushes([next]);
    assert_eq!(send(&ann, &talk, "the question"), next);
    bob.ok(&["read", &talk]);
    bob.ok(&["send", &talk, "the answer"]);
    follow.wait_for(Stream::Stdout, LIMIT, |l| l.contains("the answer"));
    assert_eq!(followed(&mut follow), ["missing ann×1", "the answer"]);
    follow.terminate();
}
