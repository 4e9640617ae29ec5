//! Talk patterns end to end (protocol-spec.md §20.2), with the real binaries: in a
//! market talk the owner asks and two offerers answer; neither offerer's home nor the
//! memory of its running `read --follow` ever holds the other's alias or messages, or
//! the owner's answers to the other; the offer limit holds until the owner writes; a
//! removed offerer is read no more.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nook_e2e::{Nook, Relay, Stream, all_bytes, contains, process_memory, text};
use serde_json::Value;

const BOB: &str = "offerer-bob-7f3a";
const CAT: &str = "offerer-cat-91c2";
const ASK: &str = "looking for 500 widgets, delivery in May";
const BOB_OFFER: &str = "BOB-OFFER-4242 widgets at 3.10";
const CAT_OFFER: &str = "CAT-OFFER-9393 widgets at 2.95";
const TO_BOB: &str = "ANSWER-BOB-5151 send a sample";
const TO_CAT: &str = "ANSWER-CAT-6262 what about May";

fn read_json(n: &Nook, talk: &str) -> Vec<Value> {
    n.ok(&["--json", "read", talk]).json_lines()
}

fn texts(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| format!("{}: {}", text(&e["alias"]), text(&e["text"])))
        .collect()
}

fn holds_none(what: &str, bytes: &[u8], needles: &[&str]) {
    assert!(!bytes.is_empty(), "{what}: scanned nothing");
    for needle in needles {
        assert!(
            !contains(bytes, needle.as_bytes()),
            "{what} holds {needle:?}"
        );
    }
}

#[test]
fn market_offerers_never_see_each_other_and_the_offer_limit_holds() {
    let relay = Relay::start();
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
            "--quorum",
            "2",
            "--pattern",
            "market",
        ])
        .json();
    let ta = text(&created["talk"]);
    bob.ok(&["join", &text(&created["invites"][0]), "--alias", BOB]);
    cat.ok(&["join", &text(&created["invites"][1]), "--alias", CAT]);
    let (tb, tc) = (bob.only_talk(), cat.only_talk());

    // cat follows the talk the whole time: everything the relay pushes passes
    // through this process.
    let mut follow = cat.spawn(&["read", &tc, "--follow"]);

    // ann learns both offerers (their announcements and replies, under their own
    // seats' keys) and introduces herself to each.
    ann.ok(&["read", &ta]);
    let who: Vec<Value> = ann.ok(&["--json", "who", &ta]).json_lines();
    let roles: Vec<(String, String)> = who
        .iter()
        .map(|w| (text(&w["alias"]), text(&w["role"])))
        .collect();
    assert_eq!(
        roles,
        [
            ("ann".to_string(), "owner".to_string()),
            (BOB.to_string(), "offerer".to_string()),
            (CAT.to_string(), "offerer".to_string()),
        ]
    );

    // The ask goes to every offerer, each on its own.
    ann.ok(&["send", &ta, ASK]);
    assert_eq!(texts(&read_json(&bob, &tb)), [format!("ann: {ASK}")]);
    follow.wait_for(Stream::Stdout, Duration::from_secs(30), |l| l.contains(ASK));

    // bob offers once; a second offer is refused until ann writes to him.
    bob.ok(&["send", &tb, BOB_OFFER]);
    let refused = bob.run(&["--json", "send", &tb, "a second offer"]);
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    let err: Value = serde_json::from_str(refused.stderr.lines().last().unwrap()).unwrap();
    assert_eq!(err["kind"], "offer_limit", "{err}");
    cat.ok(&["send", &tc, CAT_OFFER]);

    let owner_sees = texts(&read_json(&ann, &ta));
    assert!(
        owner_sees.contains(&format!("{BOB}: {BOB_OFFER}")),
        "{owner_sees:?}"
    );
    assert!(
        owner_sees.contains(&format!("{CAT}: {CAT_OFFER}")),
        "{owner_sees:?}"
    );
    assert!(!owner_sees.iter().any(|t| t.contains("a second offer")));

    // ann answers each alone; bob may offer again.
    ann.ok(&["send", &ta, "--to", BOB, TO_BOB]);
    ann.ok(&["send", &ta, "--to", CAT, TO_CAT]);
    let bob_sees = texts(&read_json(&bob, &tb));
    assert_eq!(
        bob_sees.last(),
        Some(&format!("ann: {TO_BOB}")),
        "{bob_sees:?}"
    );
    bob.ok(&["send", &tb, "BOB-SECOND-7777 and a discount"]);
    // cat's follower has processed everything up to ann's answer to it (in seq
    // order), bob's offers and ann's answer to bob among it.
    follow.wait_for(Stream::Stdout, Duration::from_secs(30), |l| {
        l.contains(TO_CAT)
    });

    // What cat's running follower holds, and what cat's and bob's homes hold.
    let others_of_cat = [BOB, BOB_OFFER, TO_BOB];
    holds_none(
        "cat's follower",
        &process_memory(follow.pid()),
        &others_of_cat,
    );
    holds_none("cat's home", &all_bytes(&cat.home_dir()), &others_of_cat);
    holds_none(
        "bob's home",
        &all_bytes(&bob.home_dir()),
        &[CAT, CAT_OFFER, TO_CAT],
    );
    let cat_read = cat.ok(&["read", &tc]).stdout;
    assert!(
        cat_read.contains(TO_CAT) && !cat_read.contains(BOB),
        "{cat_read}"
    );
    // An offerer knows the owner alone.
    let cat_who: Vec<String> = cat
        .ok(&["--json", "who", &tc])
        .json_lines()
        .iter()
        .map(|w| text(&w["alias"]))
        .collect();
    assert_eq!(cat_who, ["ann", CAT]);
    let listed = cat.ok(&["--json", "list"]).json();
    assert_eq!(listed["role"], "offerer");
    assert_eq!(listed["pattern"], "market");
    assert_eq!(listed["offer_limit"], 1);
    follow.terminate();

    // ann removes cat: what cat sends from now on is not read.
    let removed = ann.ok(&["--json", "remove", &ta, CAT]).json();
    assert_eq!(removed["removed"], true);
    cat.ok(&["send", &tc, "CAT-AFTER-REMOVAL-1212"]);
    let after = texts(&read_json(&ann, &ta));
    assert!(
        after.contains(&format!("{BOB}: BOB-SECOND-7777 and a discount")),
        "{after:?}"
    );
    assert!(
        !after.iter().any(|t| t.contains("CAT-AFTER-REMOVAL")),
        "{after:?}"
    );
    let again = ann.run(&["--json", "send", &ta, "--to", CAT, "hello?"]);
    assert_eq!(again.code, 5, "{}", again.stderr);
    let err: Value = serde_json::from_str(again.stderr.lines().last().unwrap()).unwrap();
    assert_eq!(err["kind"], "member_unknown", "{err}");

    // ann's history records her answers to one offerer alone, and the removal.
    let history = read_json(&ann, &ta);
    let to_bob = history
        .iter()
        .find(|e| e["type"] == "message_to" && e["text"] == TO_BOB)
        .unwrap_or_else(|| panic!("{history:?}"));
    assert_eq!(
        (to_bob["seat"].as_u64(), text(&to_bob["alias"])),
        (Some(1), BOB.into())
    );
    let bob_history = read_json(&bob, &tb);
    let answer = bob_history.iter().find(|e| e["text"] == TO_BOB).unwrap();
    assert_eq!(answer["id"], to_bob["id"], "one id on both devices");
    assert!(
        history
            .iter()
            .any(|e| e["type"] == "offerer_removed" && e["alias"] == CAT)
    );

    // ann promotes bob: he gets the group's key and writes without a limit.
    let promoted = ann.ok(&["--json", "promote", &ta, BOB]).json();
    assert_eq!(
        (promoted["seat"].as_u64(), &promoted["promoted"]),
        (Some(1), &Value::Bool(true))
    );
    let bob_events = read_json(&bob, &tb);
    assert!(
        bob_events
            .iter()
            .any(|e| e["type"] == "promoted" && e["alias"] == BOB),
        "{bob_events:?}"
    );
    ann.ok(&["read", &ta]);
    ann.ok(&["send", &ta, "GROUP-WELCOME-3131"]);
    let bob_sees = texts(&read_json(&bob, &tb));
    assert!(
        bob_sees.contains(&"ann: GROUP-WELCOME-3131".to_string()),
        "{bob_sees:?}"
    );
    for t in ["BOB-GROUP-1", "BOB-GROUP-2"] {
        bob.ok(&["send", &tb, t]);
    }
    let owner_sees = texts(&read_json(&ann, &ta));
    for t in ["BOB-GROUP-1", "BOB-GROUP-2"] {
        assert!(
            owner_sees.contains(&format!("{BOB}: {t}")),
            "{owner_sees:?}"
        );
    }
    let roles: Vec<String> = bob
        .ok(&["--json", "who", &tb])
        .json_lines()
        .iter()
        .map(|w| text(&w["role"]))
        .collect();
    assert_eq!(roles, ["owner", "member"]);
    // The promotion showed bob nothing of cat.
    holds_none(
        "bob's home",
        &all_bytes(&bob.home_dir()),
        &[CAT, CAT_OFFER, TO_CAT],
    );
}

const LEA: &str = "listener-lea-4d2e";
const LEO: &str = "listener-leo-8b1f";

#[test]
fn a_panel_s_listeners_read_the_speakers_and_never_see_each_other() {
    let relay = Relay::start();
    let (ann, sam, lea, leo) = (Nook::new(), Nook::new(), Nook::new(), Nook::new());
    let created = ann
        .ok(&[
            "--json",
            "new",
            "--relay",
            &relay.address,
            "--alias",
            "ann",
            "--seats",
            "4",
            "--quorum",
            "2",
            "--pattern",
            "panel",
            "--speakers",
            "1",
        ])
        .json();
    let ta = text(&created["talk"]);
    sam.ok(&["join", &text(&created["invites"][0]), "--alias", "sam"]);
    lea.ok(&["join", &text(&created["invites"][1]), "--alias", LEA]);
    leo.ok(&["join", &text(&created["invites"][2]), "--alias", LEO]);
    let (ts, tl, to) = (sam.only_talk(), lea.only_talk(), leo.only_talk());
    let mut follow = lea.spawn(&["read", &tl, "--follow"]);
    // The owner meets everyone and tells each listener of the speaker.
    ann.ok(&["read", &ta]);
    sam.ok(&["read", &ts]);

    sam.ok(&["send", &ts, "SAM-TALK-1"]);
    ann.ok(&["send", &ta, "ANN-TALK-2"]);
    follow.wait_for(Stream::Stdout, Duration::from_secs(30), |l| {
        l.contains("ANN-TALK-2")
    });
    let leo_sees = texts(&read_json(&leo, &to));
    assert_eq!(leo_sees, ["sam: SAM-TALK-1", "ann: ANN-TALK-2"]);
    let refused = leo.run(&["--json", "send", &to, "may I?"]);
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    let err: Value = serde_json::from_str(refused.stderr.lines().last().unwrap()).unwrap();
    assert_eq!(err["kind"], "not_allowed", "{err}");

    let roles: Vec<(String, String)> = lea
        .ok(&["--json", "who", &tl])
        .json_lines()
        .iter()
        .map(|w| (text(&w["alias"]), text(&w["role"])))
        .collect();
    assert_eq!(
        roles,
        [
            ("ann".to_string(), "owner".to_string()),
            ("sam".to_string(), "speaker".to_string()),
            (LEA.to_string(), "listener".to_string()),
        ]
    );
    let listed = lea.ok(&["--json", "list"]).json();
    assert_eq!(
        (&listed["pattern"], &listed["speakers"]),
        (&Value::from("panel"), &Value::from(1))
    );

    // No listener's home or running follower holds the other's alias; the speaker's
    // home holds neither.
    holds_none("lea's follower", &process_memory(follow.pid()), &[LEO]);
    holds_none("lea's home", &all_bytes(&lea.home_dir()), &[LEO]);
    holds_none("leo's home", &all_bytes(&leo.home_dir()), &[LEA]);
    holds_none("sam's home", &all_bytes(&sam.home_dir()), &[LEA, LEO]);
    follow.terminate();
}

/// A script runs a market over `nook rpc`: it writes to one offerer alone, promotes
/// one and removes the other, as the commands do.
#[test]
fn rpc_writes_to_one_offerer_promotes_one_and_removes_the_other() {
    use nook_e2e::rpc::RpcSession;
    use serde_json::json;
    let relay = Relay::start();
    let (ann, bob, cat) = (Nook::new(), Nook::new(), Nook::new());
    let mut a = RpcSession::start(&ann);
    let created = a.ok(
        "new",
        json!({"relay": relay.address, "seats": 3, "quorum": 2, "pattern": "market",
               "alias": "ann"}),
    );
    let ta = text(&created["talk"]);
    bob.ok(&["join", &text(&created["invites"][0]), "--alias", BOB]);
    cat.ok(&["join", &text(&created["invites"][1]), "--alias", CAT]);
    let (tb, tc) = (bob.only_talk(), cat.only_talk());
    a.ok("read", json!({"talk": ta}));

    let sent = a.ok("send", json!({"talk": ta, "to": BOB, "text": TO_BOB}));
    assert_eq!(sent["stored"], true, "{sent}");
    assert_eq!(texts(&read_json(&bob, &tb)), [format!("ann: {TO_BOB}")]);
    assert!(
        !texts(&read_json(&cat, &tc))
            .iter()
            .any(|t| t.contains(TO_BOB)),
        "cat read what ann wrote to bob alone"
    );
    let unknown = a.call("send", json!({"talk": ta, "to": "nobody", "text": "x"}));
    assert_eq!(
        unknown["error"]["data"]["kind"], "member_unknown",
        "{unknown}"
    );

    let promoted = a.ok("promote", json!({"talk": ta, "alias": BOB}));
    assert_eq!(promoted["promoted"], true, "{promoted}");
    let removed = a.ok("remove", json!({"talk": ta, "alias": CAT}));
    assert_eq!(removed["removed"], true, "{removed}");
    let gone = a.call("send", json!({"talk": ta, "to": CAT, "text": "hello?"}));
    assert_eq!(gone["error"]["data"]["kind"], "member_unknown", "{gone}");
    let (code, _) = a.finish();
    assert_eq!(code, 0);
}
