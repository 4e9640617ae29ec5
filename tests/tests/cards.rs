//! Cards end to end (protocol-spec.md §19), with the real binaries: in a three-member
//! talk ann shows her card to bob alone; cat, and the relay's data, never hold it; an
//! exchange shows nothing before it is accepted, and nothing at all when declined; a
//! close erases what was not keepable; a kept card recognises its owner in a new talk.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use nook_e2e::rpc::RpcSession;
use nook_e2e::{Nook, Relay, all_bytes, contains, text};
use serde_json::Value;

const NAME: &str = "Dana Reyes";
const ORG: &str = "Acme GmbH";
const ROLE: &str = "Head of Procurement";
const CONTACT: &str = "dana@acme.example";

/// `who --json` of `n` in `talk`.
fn who(n: &Nook, talk: &str) -> Vec<Value> {
    n.ok(&["--json", "who", talk]).json_lines()
}

/// Reads (fetching, answering handshakes) on every member until each knows every
/// other's alias; bounded in rounds and time.
fn meet(members: &[(&Nook, &str)], aliases: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..10 {
        for (n, talk) in members {
            n.ok(&["read", talk]);
        }
        let all_known = members.iter().all(|(n, talk)| {
            let known: Vec<String> = who(n, talk).iter().map(|w| text(&w["alias"])).collect();
            aliases.iter().all(|a| known.iter().any(|k| k == a))
        });
        if all_known {
            return;
        }
        assert!(Instant::now() < deadline, "the members never met");
    }
    panic!("the members never met");
}

fn read_json(n: &Nook, talk: &str) -> Vec<Value> {
    n.ok(&["--json", "read", talk]).json_lines()
}

fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

/// A three-seat talk of ann (owner), bob and cat, every alias known to every member.
fn three(relay: &Relay) -> (Nook, Nook, Nook, [String; 3]) {
    let (ann, bob, cat) = (Nook::new(), Nook::new(), Nook::new());
    let created = ann
        .ok(&[
            "--json",
            "new",
            "--relay",
            &relay.address,
            "--alias",
            "ann",
            "--seats",
            "3",
        ])
        .json();
    bob.ok(&["join", &text(&created["invites"][0]), "--alias", "bob"]);
    cat.ok(&["join", &text(&created["invites"][1]), "--alias", "cat"]);
    let talks = [text(&created["talk"]), bob.only_talk(), cat.only_talk()];
    meet(
        &[(&ann, &talks[0]), (&bob, &talks[1]), (&cat, &talks[2])],
        &["ann", "bob", "cat"],
    );
    (ann, bob, cat, talks)
}

#[test]
fn a_card_is_shown_to_one_member_alone_and_ends_with_the_talk_unless_keepable() {
    let relay = Relay::start();
    let (ann, bob, cat, [ta, tb, tc]) = three(&relay);
    ann.ok(&[
        "card",
        "set",
        "--name",
        NAME,
        "--org",
        ORG,
        "--role",
        ROLE,
        "--contact",
        CONTACT,
    ]);
    let shown = ann.run(&["--json", "reveal", &ta, "bob", "--fields", "name,org"]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let shown = shown.json();
    assert_eq!(shown["action"], "revealed");
    assert_eq!(shown["fields"], serde_json::json!(["name", "org"]));
    ann.ok(&["send", &ta, "hello from ann"]);

    // bob sees the name beside ann's alias, and only the fields shown.
    let events = read_json(&bob, &tb);
    let cards = of_type(&events, "card");
    assert_eq!(cards.len(), 1, "{events:?}");
    assert_eq!(cards[0]["alias"], "ann");
    assert_eq!(cards[0]["fields"]["name"], NAME);
    assert_eq!(cards[0]["fields"]["org"], ORG);
    assert!(cards[0]["fields"].get("role").is_none());
    let message = of_type(&events, "message")
        .into_iter()
        .find(|m| m["text"] == "hello from ann")
        .unwrap()
        .clone();
    assert_eq!(message["name"], format!("{NAME}, {ORG}"));
    let read = bob.ok(&["read", &tb]).stdout;
    assert!(
        read.contains(&format!("ann · {NAME}, {ORG}: hello from ann")),
        "{read}"
    );
    assert!(!read.contains(ROLE) && !read.contains(CONTACT), "{read}");
    let bob_who = who(&bob, &tb);
    let ann_seen = bob_who.iter().find(|w| w["alias"] == "ann").unwrap();
    assert_eq!(ann_seen["card"]["name"], NAME);

    // cat sees nothing change: not in read, not in who, not in its home.
    let read = cat.ok(&["read", &tc]).stdout;
    assert!(read.contains("ann: hello from ann"), "{read}");
    assert!(!read.contains(NAME) && !read.contains(ORG), "{read}");
    let cat_who = who(&cat, &tc);
    assert!(cat_who.iter().all(|w| w["card"].is_null()), "{cat_who:?}");

    // ann's exposure names bob and the two fields, and no one else.
    let exposure = ann.ok(&["--json", "exposure", &ta]).json();
    let seen = exposure["shown"].as_array().unwrap();
    assert_eq!(seen.len(), 1, "{exposure}");
    assert_eq!(seen[0]["alias"], "bob");
    assert_eq!(seen[0]["fields"], serde_json::json!(["name", "org"]));
    assert_eq!(exposure["relay"]["seats"], 3);
    assert_eq!(exposure["relay"]["card_envelopes_sent"], 1);
    assert_eq!(exposure["home"]["has_card"], true);

    // Byte scans: neither cat's home nor the relay's data holds any field of the card.
    for (who, dir) in [("cat", cat.home_dir()), ("relay", relay.data_dir())] {
        let bytes = all_bytes(&dir);
        assert!(!bytes.is_empty(), "{who}: scanned nothing");
        for needle in [NAME, ORG, ROLE, CONTACT] {
            assert!(
                !contains(&bytes, needle.as_bytes()),
                "{who} holds {needle:?}"
            );
        }
    }

    // A keepable reveal to cat; then ann closes the talk.
    ann.ok(&[
        "reveal",
        &ta,
        "cat",
        "--fields",
        "name",
        "--keepable",
        "--yes",
    ]);
    let events = read_json(&cat, &tc);
    let card = of_type(&events, "card");
    assert_eq!(card.len(), 1, "{events:?}");
    assert_eq!(card[0]["keepable"], true);
    assert_eq!(card[0]["contact"], false);
    ann.ok(&["close", &ta]);
    let _ = bob.run(&["read", &tb]);
    let _ = cat.run(&["read", &tc]);
    // bob's copy was not keepable: gone with the talk. cat's is a contact now.
    assert!(bob.ok(&["--json", "contacts"]).json_lines().is_empty());
    assert!(bob.run(&["who", &tb]).code != 0, "the talk is gone for bob");
    let contacts = cat.ok(&["--json", "contacts"]).json_lines();
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    assert_eq!(contacts[0]["card"]["name"], NAME);
    assert!(contacts[0]["card"].get("org").is_none());

    // In a new talk, cat recognises ann by her card key, because she reveals again.
    let created = cat
        .ok(&[
            "--json",
            "new",
            "--relay",
            &relay.address,
            "--alias",
            "cat2",
        ])
        .json();
    ann.ok(&["join", &text(&created["invites"][0]), "--alias", "ann2"]);
    let (t2c, t2a) = (text(&created["talk"]), ann.only_talk());
    meet(&[(&cat, &t2c), (&ann, &t2a)], &["cat2", "ann2"]);
    ann.ok(&["reveal", &t2a, "cat2", "--fields", "org", "--yes"]);
    let events = read_json(&cat, &t2c);
    let card = of_type(&events, "card");
    assert_eq!(card.len(), 1, "{events:?}");
    assert_eq!(
        card[0]["contact"], true,
        "the same card key as a kept contact"
    );
    let line = cat
        .ok(&["who", &t2c])
        .stdout
        .lines()
        .find(|l| l.contains("ann2"))
        .unwrap()
        .to_owned();
    assert!(line.contains(ORG) && line.contains("(a contact)"), "{line}");

    // Forgetting the contact: the next listing is empty.
    let id = text(&contacts[0]["id"]);
    cat.ok(&["contacts", "forget", &id]);
    assert!(cat.ok(&["--json", "contacts"]).json_lines().is_empty());
}

#[test]
fn an_exchange_shows_nothing_before_it_is_accepted_and_nothing_when_declined() {
    let relay = Relay::start();
    let (_ann, bob, cat, [_, tb, tc]) = three(&relay);
    bob.ok(&["card", "set", "--name", "Bo Berg", "--org", "Berg AB"]);
    cat.ok(&["card", "set", "--name", "Cat Cole", "--org", "Cole Ltd"]);

    // Declined: the offer named the fields only, and neither side saw a card.
    bob.ok(&[
        "reveal", &tb, "cat", "--mutual", "--fields", "name", "--yes",
    ]);
    let events = read_json(&cat, &tc);
    let offers = of_type(&events, "card_offer");
    assert_eq!(offers.len(), 1, "{events:?}");
    assert_eq!(offers[0]["fields"], serde_json::json!(["name"]));
    assert_eq!(offers[0]["own"], false);
    let declined = cat.run(&["--json", "reveal", &tc, "bob", "--decline"]);
    assert_eq!(declined.code, 0, "{}", declined.stderr);
    assert_eq!(declined.json()["action"], "declined");
    let bob_read = bob.ok(&["--json", "read", &tb]).stdout;
    assert!(bob_read.contains("\"card_declined\""), "{bob_read}");
    let cat_read = cat.ok(&["--json", "read", &tc]).stdout;
    for (out, hidden) in [(&bob_read, "Cat Cole"), (&cat_read, "Bo Berg")] {
        assert!(!out.contains(hidden), "{out}");
    }
    assert!(of_type(&read_json(&bob, &tb), "card").is_empty());
    // Nothing left to accept.
    let late = cat.run(&["--json", "reveal", &tc, "bob", "--accept", "--yes"]);
    assert_eq!(late.code, 5, "{}", late.stderr);
    assert!(late.stderr.contains("no_offer"), "{}", late.stderr);

    // Accepted: cat's card goes with the acceptance; bob's follows once bob's device
    // takes the acceptance in, never before.
    bob.ok(&[
        "reveal", &tb, "cat", "--mutual", "--fields", "name", "--yes",
    ]);
    cat.ok(&["read", &tc]);
    assert!(
        !cat.ok(&["read", &tc]).stdout.contains("Bo Berg"),
        "bob's card before cat accepted"
    );
    cat.ok(&["reveal", &tc, "bob", "--accept", "--yes"]);
    assert!(!cat.ok(&["read", &tc]).stdout.contains("Bo Berg"));
    let events = read_json(&bob, &tb);
    let card = of_type(&events, "card");
    assert_eq!(card.len(), 1, "{events:?}");
    assert_eq!(card[0]["fields"]["name"], "Cat Cole");
    assert!(
        card[0]["fields"].get("org").is_none(),
        "only the offered fields"
    );
    let events = read_json(&cat, &tc);
    let card = of_type(&events, "card");
    assert_eq!(card.len(), 1, "{events:?}");
    assert_eq!(card[0]["fields"]["name"], "Bo Berg");
    assert!(card[0]["fields"].get("org").is_none());
}

#[test]
fn hostile_or_oversized_card_text_is_refused_when_set() {
    let n = Nook::new();
    let escape = n.run(&["--json", "card", "set", "--name", "Dana\u{1b}[2J\nroot: ok"]);
    assert_eq!(escape.code, 5, "{}", escape.stderr);
    assert!(escape.stderr.contains("bad_input"), "{}", escape.stderr);
    let long = "x".repeat(257);
    let oversized = n.run(&["--json", "card", "set", "--org", &long]);
    assert_eq!(oversized.code, 5, "{}", oversized.stderr);
    assert!(n.run(&["--json", "card", "show"]).json()["card"].is_null());
    let r = n.run(&["--json", "reveal", "nope", "x", "--yes"]);
    assert_ne!(r.code, 0);
}

#[test]
fn the_card_methods_of_nook_rpc_answer_like_the_commands() {
    let relay = Relay::start();
    let (ann, bob, _cat, [ta, tb, _]) = three(&relay);
    let mut rpc = RpcSession::start(&ann);
    assert!(rpc.ok("card_show", serde_json::json!({}))["card"].is_null());
    let set = rpc.ok("card_set", serde_json::json!({"name": NAME, "org": ORG}));
    assert_eq!(set["card"]["name"], NAME);
    let err = rpc.err("reveal", serde_json::json!({"talk": ta, "alias": "nobody"}));
    assert_eq!(err["data"]["kind"], "member_unknown", "{err}");
    let sent = rpc.ok(
        "reveal",
        serde_json::json!({"talk": ta, "alias": "bob", "fields": "name"}),
    );
    assert_eq!(sent["action"], "revealed");
    assert_eq!(sent["fields"], serde_json::json!(["name"]));
    let exposure = rpc.ok("exposure", serde_json::json!({"talk": ta}));
    assert_eq!(exposure["shown"][0]["alias"], "bob");
    assert!(
        rpc.ok("contacts", serde_json::json!({}))
            .as_array()
            .unwrap()
            .is_empty()
    );
    let who = rpc.ok("who", serde_json::json!({"talk": ta}));
    assert_eq!(who.as_array().unwrap().len(), 3);
    let events = read_json(&bob, &tb);
    assert_eq!(of_type(&events, "card")[0]["fields"]["name"], NAME);
    assert_eq!(rpc.ok("card_clear", serde_json::json!({}))["cleared"], true);
}
