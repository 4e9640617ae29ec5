//! What a member sees is true, whichever of its processes changed it: a follower ends
//! when another process leaves, shows what another process sent, keeps its `--new`
//! mark when stopped, and a follower retrying a dead relay never holds up another
//! command on the same home.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nook_e2e::{Nook, Relay, Stream, text as s, two_seat_talk};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn a_follower_ends_with_exit_6_when_another_process_of_the_member_leaves() {
    let relay = Relay::start();
    let (_a, b, _ta, tb) = two_seat_talk(&relay, &[], &["--alias", "bob"]);
    let mut follow = b.spawn(&["--json", "read", &tb, "--follow"]);
    follow.wait_for(Stream::Stderr, LIMIT, |l| l.contains("following"));
    b.ok(&["leave", &tb]);
    let f = follow.finish(LIMIT);
    assert_eq!(f.code, 6, "{f:?}");
    assert!(f.stderr.contains("left"), "{}", f.stderr);
    // Like every follower, it ends with a final event: its own seat left.
    let last = f.json_lines().pop().expect("a final event");
    assert_eq!(last["type"], "left", "{}\n{}", f.stdout, f.stderr);
    assert_eq!(last["alias"], "bob", "{last}");
}

#[test]
fn a_follower_shows_what_another_process_of_the_member_sent() {
    let relay = Relay::start();
    let (a, b, ta, tb) = two_seat_talk(&relay, &[], &["--alias", "bob"]);
    let mut follow = b.spawn(&["--json", "read", &tb, "--follow"]);
    follow.wait_for(Stream::Stderr, LIMIT, |l| l.contains("following"));
    b.ok(&["send", &tb, "from my other terminal"]);
    let line = follow.wait_for(Stream::Stdout, LIMIT, |l| {
        l.contains("from my other terminal")
    });
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["own"], true, "{line}");
    // Ann still gets it, once, from bob.
    let ann = a.ok(&["--json", "read", &ta]).json_lines();
    let got: Vec<_> = ann
        .iter()
        .filter(|l| l["type"] == "message")
        .map(|l| (s(&l["alias"]), s(&l["text"])))
        .collect();
    assert_eq!(
        got,
        [("bob".to_string(), "from my other terminal".to_string())]
    );
    // The echo is not a message of its own: bob's history holds it once.
    let mine = b.ok(&["--json", "read", &tb]).json_lines();
    let count = mine
        .iter()
        .filter(|l| l["type"] == "message" && l["text"] == "from my other terminal")
        .count();
    assert_eq!(count, 1, "{mine:?}");
    assert!(
        !mine.iter().any(|l| l["type"] == "warning"),
        "no warning about our own echo: {mine:?}"
    );
}

#[test]
fn sigterm_to_a_follower_keeps_the_new_mark() {
    let relay = Relay::start();
    let (a, b, ta, tb) = two_seat_talk(&relay, &[], &["--alias", "bob"]);
    a.ok(&["send", &ta, "seen once"]);
    let mut follow = b.spawn(&["--json", "read", &tb, "--follow", "--new"]);
    follow.wait_for(Stream::Stdout, LIMIT, |l| l.contains("seen once"));
    a.ok(&["send", &ta, "seen live"]);
    follow.wait_for(Stream::Stdout, LIMIT, |l| l.contains("seen live"));
    follow.terminate();
    let f = follow.finish(LIMIT);
    assert_eq!(f.code, 0, "a stop asked for is not an error: {f:?}");
    let again = b.ok(&["--json", "read", &tb, "--new"]).json_lines();
    assert!(
        !again.iter().any(|l| l["type"] == "message"),
        "--new shows nothing the follower showed: {again:?}"
    );
}

#[test]
fn a_follower_retrying_a_dead_relay_does_not_hold_up_other_commands() {
    let mut relay = Relay::start();
    let (_a, b, _ta, tb) = two_seat_talk(&relay, &[], &["--alias", "bob"]);
    let mut follow = b.spawn(&["read", &tb, "--follow"]);
    follow.wait_for(Stream::Stderr, LIMIT, |l| l.contains("following"));
    relay.stop();
    follow.wait_for(Stream::Stderr, LIMIT, |l| l.contains("attempt 1"));
    // The follower is now dialling the dead relay again (4 s per attempt). `list`
    // must not wait for that: it finishes before the next attempt is reported.
    let list = b.run(&["list"]);
    assert_eq!(list.code, 0, "{list:?}");
    let reported = follow.lines_so_far(Stream::Stderr);
    assert!(
        !reported.iter().any(|l| l.contains("attempt 2")),
        "list waited for the follower's connection attempt: {reported:?}"
    );
    assert!(
        !reported.iter().any(|l| l.contains("run the command again")),
        "a follower that reconnects by itself must not say to run it again: {reported:?}"
    );
    // A one-shot command gives up with the address and what to check.
    let send = b.run(&["send", &tb, "anyone?"]);
    assert_eq!(send.code, 4, "{send:?}");
    assert!(
        send.stderr.contains("127.0.0.1") && send.stderr.contains("check that nook-relay"),
        "{}",
        send.stderr
    );
}

#[test]
fn list_and_invites_ask_the_relay_so_a_full_talk_is_not_shown_pending() {
    let relay = Relay::start();
    // Ann made the talk and did nothing since; bob joined from another home.
    let (a, _b, ta, _tb) = two_seat_talk(&relay, &[], &["--alias", "bob"]);
    let list = a.ok(&["--json", "list"]).json_lines();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["state"], "open", "{list:?}");
    assert_eq!(list[0]["members"], 2, "{list:?}");
    assert_eq!(list[0]["cached"], false, "{list:?}");
    // Bob's seat is taken: its invite is no longer handed out.
    let invites = a.ok(&["--json", "invites", &ta]).json();
    assert_eq!(invites["invites"], serde_json::json!([]), "{invites}");
    assert_eq!(invites["used"], 1, "{invites}");
    let human = a.ok(&["invites", &ta]);
    assert!(
        human.stdout.starts_with("1 of 1 invite(s) used"),
        "{}",
        human.stdout
    );
    // With the relay gone, list still answers, says so, and marks what is cached.
    let mut relay = relay;
    relay.stop();
    let cached = a.run(&["--json", "list"]);
    assert_eq!(cached.code, 0, "{cached:?}");
    assert_eq!(cached.json_lines()[0]["cached"], true, "{}", cached.stdout);
    let human = a.run(&["list"]);
    assert!(human.stdout.contains("in 23h"), "{}", human.stdout);
    assert!(
        human.stderr.contains("could not be reached"),
        "{}",
        human.stderr
    );
}

#[test]
fn every_member_sees_one_talk_name_and_can_use_the_one_they_were_told() {
    let relay = Relay::start();
    let (ann, bob, cat) = (Nook::new(), Nook::new(), Nook::new());
    let new = ann
        .ok(&["--json", "new", "--relay", &relay.address, "--seats", "3"])
        .json();
    let name = s(&new["talk"]);
    assert!(
        name.len() == 9
            && name.as_bytes()[4] == b'-'
            && name
                .bytes()
                .all(|b| b == b'-' || b"0123456789abcdefghjkmnpqrstvwxyz".contains(&b)),
        "a talk name reads like 7kqm-2x9d: {name}"
    );
    for (who, invite) in [(&bob, &new["invites"][0]), (&cat, &new["invites"][1])] {
        let joined = who.ok(&["--json", "join", &s(invite)]).json();
        assert_eq!(s(&joined["talk"]), name, "{joined}");
        assert_eq!(who.only_talk(), name);
    }
    // Bob uses the name ann said aloud, typed his way.
    let typed = name.to_uppercase().replace('-', " ");
    bob.ok(&["send", &typed, "hello by name"]);
    let read = cat.ok(&["--json", "read", &name]).json_lines();
    assert!(
        read.iter().any(|l| l["text"] == "hello by name"),
        "{read:?}"
    );
    // Another talk gets another name.
    let other = ann.ok(&["--json", "new", "--relay", &relay.address]).json();
    assert_ne!(s(&other["talk"]), name);
}

#[test]
fn an_expired_talk_leaves_every_list_and_its_follower_ends() {
    // The shortest TTL the relay takes; the test waits for the relay's sweeper, which
    // deletes the talk within a second of its end.
    let relay = Relay::start();
    let (a, b) = (Nook::new(), Nook::new());
    let new = a
        .ok(&["--json", "new", "--relay", &relay.address, "--ttl", "60s"])
        .json();
    b.ok(&["join", &s(&new["invites"][0])]);
    let tb = b.only_talk();
    let mut follow = b.spawn(&["--json", "read", &tb, "--follow"]);
    follow.wait_for(Stream::Stderr, LIMIT, |l| l.contains("following"));
    // The expiry push ends the follower with the documented code and final event.
    let f = follow.finish(Duration::from_secs(120));
    assert_eq!(f.code, 6, "{f:?}");
    let last = f.json_lines().pop().expect("a final event");
    assert_eq!(last["type"], "expired", "{}", f.stdout);
    // The owner, who was not connected, no longer lists it as pending: it is gone.
    let list = a.ok(&["--json", "list"]).json_lines();
    assert!(list.is_empty(), "{list:?}");
}

#[test]
fn follow_new_with_nothing_new_does_not_replay_the_history() {
    let relay = Relay::start();
    let (a, b, ta, tb) = two_seat_talk(&relay, &[], &["--alias", "bob"]);
    a.ok(&["send", &ta, "already read"]);
    b.ok(&["read", &tb]);
    let mut follow = b.spawn(&["--json", "read", &tb, "--follow", "--new"]);
    follow.wait_for(Stream::Stderr, LIMIT, |l| l.contains("following"));
    a.ok(&["send", &ta, "fresh"]);
    follow.wait_for(Stream::Stdout, LIMIT, |l| l.contains("fresh"));
    follow.terminate();
    let f = follow.finish(LIMIT);
    assert!(
        !f.stdout.contains("already read"),
        "the follower replayed what was read before: {}",
        f.stdout
    );
}

#[test]
fn the_home_that_closes_the_talk_sees_its_followers_end_like_everyone_elses() {
    let relay = Relay::start();
    let (a, _b, ta, _tb) = two_seat_talk(&relay, &[], &["--alias", "bob"]);
    let mut follow = a.spawn(&["--json", "read", &ta, "--follow"]);
    follow.wait_for(Stream::Stderr, LIMIT, |l| l.contains("following"));
    a.ok(&["close", &ta]);
    let f = follow.finish(LIMIT);
    assert_eq!(f.code, 6, "{f:?}");
    let last = f.json_lines().pop().expect("a final event");
    assert_eq!(last["type"], "closed", "{}", f.stdout);
    assert_eq!(last["receipt"]["verified"], true, "{last}");
}

#[test]
fn sigint_stops_a_follower_started_as_a_background_job() {
    let relay = Relay::start();
    let (a, b, ta, tb) = two_seat_talk(&relay, &[], &["--alias", "bob"]);
    let mut follow = b.spawn_as_background_job(&["--json", "read", &tb, "--follow"]);
    follow.wait_for(Stream::Stderr, LIMIT, |l| l.contains("following"));
    a.ok(&["send", &ta, "seen"]);
    follow.wait_for(Stream::Stdout, LIMIT, |l| l.contains("seen"));
    // A script's `kill -INT` reaches it although the shell told it to ignore SIGINT.
    follow.interrupt();
    let f = follow.finish(LIMIT);
    assert_eq!(f.code, 0, "{f:?}");
    let again = b.ok(&["--json", "read", &tb, "--new"]).json_lines();
    assert!(!again.iter().any(|l| l["type"] == "message"), "{again:?}");
}

#[test]
fn new_and_join_say_when_the_talk_closes() {
    let relay = Relay::start();
    let (a, b) = (Nook::new(), Nook::new());
    let created = a.ok(&["new", "--relay", &relay.address, "--ttl", "3h"]);
    // 3 hours from the relay's clock: "in 3h", or "in 2h" once a second has passed.
    let says = |out: &str| out.contains("closes in 3h") || out.contains("closes in 2h");
    assert!(says(&created.stdout), "{}", created.stdout);
    let invite = created
        .stdout
        .lines()
        .find(|l| l.starts_with("nook://"))
        .expect("an invite line")
        .to_string();
    let joined = b.ok(&["join", &invite]);
    assert!(says(&joined.stdout), "{}", joined.stdout);
}
