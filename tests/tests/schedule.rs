//! Scheduled talks with the real binaries (protocol-spec.md §20.1, issue 17): a talk at
//! quorum stays pending until its time, then opens; a late joiner inside the window gets
//! in; the window's end closes the talk with the relay's receipt, which both members
//! verify, and their local data goes; a join after the window is refused.
//!
//! The times are seconds (`--opens-at +10s --window 15s`); every wait polls a command
//! or a follower with a bounded deadline.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nook_e2e::rpc::RpcSession;
use nook_e2e::{Nook, Relay, Stream, text};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(60);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The one talk of `nook --json list`.
fn listed(nook: &Nook) -> serde_json::Value {
    let mut all = nook.ok(&["--json", "list"]).json_lines();
    assert_eq!(all.len(), 1, "{all:?}");
    all.pop().unwrap()
}

#[test]
fn a_scheduled_talk_opens_at_its_time_and_closes_itself_when_its_window_ends() {
    let relay = Relay::start();
    let (ann, bob, dave, carl) = (Nook::new(), Nook::new(), Nook::new(), Nook::new());
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
            "--opens-at",
            "+10s",
            "--window",
            "15s",
        ])
        .json();
    let opens_at = created["opens_at"].as_u64().unwrap();
    let ends_at = created["window_ends_at"].as_u64().unwrap();
    assert_eq!(ends_at, opens_at + 15, "{created}");
    let talk = text(&created["talk"]);
    let invite = |i: usize| text(&created["invites"][i]);

    // Seats are taken before the time; at quorum the talk still waits for it.
    let joined = bob.ok(&["--json", "join", &invite(0)]).json();
    assert_eq!(joined["state"], "pending", "{joined}");
    assert_eq!(joined["opens_at"], opens_at, "{joined}");
    let bob_talk = bob.only_talk();
    let before = now();
    let ann_list = listed(&ann);
    let early = bob.run(&["--json", "send", &bob_talk, "too early"]);
    let checked_by = now();
    assert!(
        checked_by < opens_at,
        "the checks before the opening ran past it ({checked_by} ≥ {opens_at}): too slow a machine"
    );
    assert_eq!(ann_list["state"], "pending", "{ann_list}");
    assert_eq!(ann_list["members"], 2, "{ann_list}");
    let opens_in = ann_list["opens_in_secs"].as_u64().unwrap();
    assert!(opens_in <= opens_at - before, "{ann_list}");
    assert_eq!(ann_list["window_ends_at"], ends_at, "{ann_list}");
    let text_list = ann.ok(&["list"]).stdout;
    assert!(text_list.contains("opens in "), "{text_list}");
    assert!(text_list.contains("is scheduled: opens at "), "{text_list}");
    // Sending waits for the time, and says so.
    assert_eq!(early.code, 5, "{early:?}");
    let err: serde_json::Value = serde_json::from_str(early.stderr.trim()).unwrap();
    assert_eq!(err["kind"], "talk_not_open", "{err}");
    assert!(text(&err["error"]).contains("scheduled"), "{err}");

    // `wait --for open` returns at the time, not before.
    let waited = bob.run(&["wait", &bob_talk, "--for", "open", "--timeout", "60s"]);
    assert_eq!(waited.code, 0, "{waited:?}");
    assert!(now() >= opens_at, "opened before its time");
    let ann_list = listed(&ann);
    assert_eq!(ann_list["state"], "open", "{ann_list}");
    assert!(ann_list["opens_in_secs"].is_null(), "{ann_list}");

    // Open: messages flow, and a late joiner inside the window gets in.
    bob.ok(&["send", &bob_talk, "hello at the event"]);
    let read = ann.ok(&["read", &talk]);
    assert!(
        read.stdout.contains("hello at the event"),
        "{}",
        read.stdout
    );
    dave.ok(&["join", &invite(1)]);
    assert_eq!(listed(&dave)["state"], "open");

    // The window's end: Bob, following, gets the relay's close with a receipt.
    let mut follow = bob.spawn(&["--json", "read", &bob_talk, "--follow"]);
    follow.wait_for(Stream::Stderr, LIMIT, |l| l.contains("following"));
    let bob_out = follow.finish(LIMIT);
    assert!(now() >= ends_at, "closed before the window ended");
    assert_eq!(bob_out.code, 6, "{bob_out:?}");
    let last = bob_out.json_lines().pop().unwrap();
    assert_eq!(last["type"], "closed", "{}", bob_out.stdout);
    assert_eq!(last["receipt"]["verified"], true, "{last}");
    assert_eq!(last["local_data_deleted"], true, "{last}");

    // Ann, away meanwhile, gets the same receipt when she comes back, checked too.
    let deadline = Instant::now() + LIMIT;
    let back = loop {
        let r = ann.run(&["--json", "read", &talk]);
        if r.code != 0 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(back.code, 6, "{back:?}");
    let ann_last = back.json_lines().pop().unwrap();
    assert_eq!(ann_last["type"], "closed", "{}", back.stdout);
    assert_eq!(ann_last["receipt"]["verified"], true, "{ann_last}");
    assert_eq!(
        ann_last["receipt"]["signature"], last["receipt"]["signature"],
        "one receipt"
    );

    // Their local data is gone: the talk is in no list, and its name resolves no more.
    for (who, name) in [(&ann, &talk), (&bob, &bob_talk)] {
        let list = who.ok(&["--json", "list"]).json_lines();
        assert!(list.is_empty(), "{list:?}");
        assert_eq!(who.run(&["read", name]).code, 3);
    }

    // After the window, an invite is refused with a clear error.
    let late = carl.run(&["--json", "join", &invite(2)]);
    assert_eq!(late.code, 5, "{late:?}");
    let err: serde_json::Value = serde_json::from_str(late.stderr.trim()).unwrap();
    assert_eq!(err["kind"], "window_ended", "{err}");
    assert!(text(&err["error"]).contains("window"), "{err}");
    let human = Nook::new().run(&["join", &invite(2)]);
    assert!(
        human.stderr.contains("window has ended"),
        "{}",
        human.stderr
    );
}

#[test]
fn a_schedule_the_ttl_cannot_hold_is_a_usage_error() {
    let relay = Relay::start();
    let r = Nook::new().run(&[
        "new",
        "--relay",
        &relay.address,
        "--opens-at",
        "+2h",
        "--window",
        "3h",
        "--ttl",
        "1h",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("--ttl must cover the schedule"),
        "{}",
        r.stderr
    );
    let r = Nook::new().run(&["new", "--relay", &relay.address, "--opens-at", "soon"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("RFC 3339"), "{}", r.stderr);
}

#[test]
fn the_times_survive_relay_restarts_and_rpc_schedules_too() {
    let mut relay = Relay::start();
    let (ann, bob) = (Nook::new(), Nook::new());
    let mut rpc = RpcSession::start(&ann);
    let created = rpc.ok(
        "new",
        json!({"relay": relay.address, "opens_at": "+8s", "window": 8}),
    );
    let (code, _) = rpc.finish();
    assert_eq!(code, 0);
    let opens_at = created["opens_at"].as_u64().unwrap();
    let ends_at = created["window_ends_at"].as_u64().unwrap();
    assert_eq!(ends_at, opens_at + 8, "{created}");
    bob.ok(&["join", &text(&created["invites"][0])]);
    let bob_talk = bob.only_talk();

    // Restarted before the opening: it still opens at its time.
    relay.restart();
    let waited = bob.run(&["wait", &bob_talk, "--for", "open", "--timeout", "60s"]);
    assert_eq!(waited.code, 0, "{waited:?}");
    assert!(now() >= opens_at, "opened before its time");

    // Restarted inside the window: it still closes at its end, with a receipt.
    relay.restart();
    let mut follow = bob.spawn(&["--json", "read", &bob_talk, "--follow"]);
    follow.wait_for(Stream::Stderr, LIMIT, |l| l.contains("following"));
    let out = follow.finish(LIMIT);
    assert!(now() >= ends_at, "closed before the window ended");
    assert_eq!(out.code, 6, "{out:?}");
    let last = out.json_lines().pop().unwrap();
    assert_eq!(last["type"], "closed", "{}", out.stdout);
    assert_eq!(last["receipt"]["verified"], true, "{last}");
}
