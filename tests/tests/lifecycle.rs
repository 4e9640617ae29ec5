//! The whole talk lifecycle with the real binaries: three seats, quorum three.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nook_e2e::{Nook, Relay, Stream, all_bytes, contains, text as s, two_seat_talk};

fn texts(lines: &[serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["type"] == "message" && l["own"] == false)
        .map(|l| format!("{}: {}", s(&l["alias"]), s(&l["text"])))
        .collect()
}

#[test]
fn three_seat_talk_from_creation_to_provable_deletion() {
    let mut relay = Relay::start();
    let (a, b, c) = (Nook::new(), Nook::new(), Nook::new());

    let new = a
        .ok(&[
            "--json",
            "new",
            "--relay",
            &relay.address,
            "--seats",
            "3",
            "--alias",
            "alice-aa",
        ])
        .json();
    assert_eq!(new["state"], "pending");
    assert_eq!(
        (new["members"].as_u64(), new["quorum"].as_u64()),
        (Some(1), Some(3))
    );
    let invites: Vec<String> = new["invites"].as_array().unwrap().iter().map(s).collect();
    assert_eq!(invites.len(), 2);
    let ta = s(&new["talk"]);

    let joined = b
        .ok(&["--json", "join", &invites[0], "--alias", "bob-bb"])
        .json();
    assert_eq!(joined["state"], "pending");
    assert_eq!(joined["members"].as_u64(), Some(2));
    let tb = b.only_talk();

    // Pending: sending is refused with the seat count.
    let early = a.run(&["send", &ta, "too early"]);
    assert_eq!(early.code, 5, "{early:?}");
    assert!(early.stderr.contains("2/3 seats"), "{}", early.stderr);

    // B waits for the talk to open while the third member arrives.
    let waiting = b.spawn(&["--json", "read", &tb, "--wait-open"]);

    // A used invite is dead.
    let stranger = Nook::new();
    let reused = stranger.run(&["join", &invites[0]]);
    assert_eq!(reused.code, 5, "{reused:?}");
    assert!(reused.stderr.contains("already used"), "{}", reused.stderr);

    c.ok(&["join", &invites[1], "--alias", "carol-cc"]);
    let tc = c.only_talk();
    let w = waiting.finish(Duration::from_secs(30));
    assert_eq!(w.code, 0, "{w:?}");
    assert!(
        w.json_lines().iter().any(|l| l["type"] == "opened"),
        "{}",
        w.stdout
    );

    // Messages in every direction; C stays offline meanwhile.
    a.ok(&["send", &ta, "alpha from alice"]);
    b.ok(&["send", &tb, "bravo from bob"]);
    assert_eq!(
        texts(&a.ok(&["--json", "read", &ta, "--new"]).json_lines()),
        ["bob-bb: bravo from bob"]
    );
    let b_read = b.ok(&["--json", "read", &tb]).json_lines();
    assert_eq!(texts(&b_read), ["alice-aa: alpha from alice"]);
    // Own messages are in one's own history, marked as such.
    assert!(
        b_read
            .iter()
            .any(|l| l["own"] == true && l["text"] == "bravo from bob"),
        "{b_read:?}"
    );

    // C catches up on everything it missed, then answers.
    let c_read = texts(&c.ok(&["--json", "read", &tc]).json_lines());
    assert_eq!(
        c_read,
        ["alice-aa: alpha from alice", "bob-bb: bravo from bob"]
    );
    let piped = c.run_with_stdin(&["send", &tc, "-"], "charlie from carol\n");
    assert_eq!(piped.code, 0, "{piped:?}");
    assert_eq!(
        texts(&a.ok(&["--json", "read", &ta, "--new"]).json_lines()),
        ["carol-cc: charlie from carol"]
    );
    assert_eq!(
        texts(&b.ok(&["--json", "read", &tb, "--new"]).json_lines()),
        ["carol-cc: charlie from carol"]
    );
    // `--new` shows nothing twice.
    assert!(texts(&b.ok(&["--json", "read", &tb, "--new"]).json_lines()).is_empty());

    // C leaves; A and B keep talking.
    c.ok(&["leave", &tc]);
    assert!(
        c.ok(&["--json", "list"]).json_lines().is_empty(),
        "C's copy is gone"
    );
    a.ok(&["send", &ta, "after carol left"]);
    let b_new = b.ok(&["--json", "read", &tb, "--new"]).json_lines();
    assert!(
        b_new
            .iter()
            .any(|l| l["type"] == "left" && l["alias"] == "carol-cc"),
        "{b_new:?}"
    );
    assert_eq!(texts(&b_new), ["alice-aa: after carol left"]);

    // Owner-only close: B may not close.
    let refused = b.run(&["close", &tb]);
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(
        refused.stderr.contains("only the owner"),
        "{}",
        refused.stderr
    );

    // B follows; the owner closes; B's follow ends with "closed". The close must come
    // after the follow is connected: a member who connects after the close learns only
    // that the talk is gone (exit 6), since the relay keeps nothing of it.
    let mut follow = b.spawn(&["--json", "read", &tb, "--follow"]);
    follow.wait_for(Stream::Stderr, Duration::from_secs(30), |l| {
        l.contains("following")
    });
    let closed = a.ok(&["--json", "close", &ta]).json();
    assert_eq!(closed["closed"], true);
    assert_eq!(closed["receipt"]["verified"], true);
    let f = follow.finish(Duration::from_secs(30));
    assert_eq!(f.code, 6, "a follower whose talk ended says so: {f:?}");
    let last = f.json_lines().pop().expect("follow printed something");
    assert_eq!(last["type"], "closed", "{}", f.stdout);
    assert!(a.ok(&["--json", "list"]).json_lines().is_empty());
    assert!(b.ok(&["--json", "list"]).json_lines().is_empty());

    // Nothing readable of the talk remains on any disk.
    relay.stop();
    // The operator's log holds counts and errors, not ids or client addresses.
    let log = relay.log();
    assert!(log.contains("relay listening"), "{log}");
    let inv0: nook_crypto::Invite = invites[0].parse().unwrap();
    for secret in [
        inv0.mailbox.to_hex(),
        invites[0].split('/').nth(3).unwrap_or("x").to_string(),
    ] {
        assert!(
            !log.contains(&secret),
            "the relay logged a mailbox id: {log}"
        );
    }
    assert!(
        !log.contains("127.0.0.1"),
        "the relay logged an address: {log}"
    );
    let mailbox = {
        let inv: nook_crypto::Invite = invites[0].parse().unwrap();
        inv.mailbox.0
    };
    let mut needles: Vec<Vec<u8>> = [
        "alpha from alice",
        "bravo from bob",
        "charlie from carol",
        "after carol left",
        "alice-aa",
        "bob-bb",
        "carol-cc",
    ]
    .iter()
    .map(|t| t.as_bytes().to_vec())
    .collect();
    needles.push(mailbox.to_vec());
    for inv in &invites {
        let inv: nook_crypto::Invite = inv.parse().unwrap();
        needles.push(inv.seat_secret.expose().to_vec());
        needles.push(inv.seat_secret.join_token().to_vec());
        needles.push(inv.seat_secret.welcome_key().to_vec());
        needles.push(inv.to_text().into_bytes());
    }
    for (who, dir) in [
        ("a", a.home_dir()),
        ("b", b.home_dir()),
        ("c", c.home_dir()),
        ("relay", relay.data_dir()),
    ] {
        let bytes = all_bytes(&dir);
        assert!(
            !bytes.is_empty() || who != "relay",
            "{who}: scanned nothing"
        );
        for n in &needles {
            assert!(
                !contains(&bytes, n),
                "{who}'s folder still holds {:?}",
                String::from_utf8_lossy(n)
            );
        }
    }
}

#[test]
fn two_talks_of_one_person_share_no_key_id_or_alias() {
    let relay = Relay::start();
    let a = Nook::new();
    let one = a.ok(&["--json", "new", "--relay", &relay.address]).json();
    let two = a.ok(&["--json", "new", "--relay", &relay.address]).json();
    assert_ne!(one["talk"], two["talk"]);
    assert_ne!(
        one["alias"], two["alias"],
        "random aliases must differ between talks"
    );
    let home = nook_client::store::Home::new(&a.home_dir()).unwrap();
    let store = home.open().unwrap();
    let talks = store.talks().unwrap();
    assert_eq!(talks.len(), 2);
    let (p, q) = (talks[0].identity().public(), talks[1].identity().public());
    for (x, y) in [
        (p.pseudonym, q.pseudonym),
        (p.agreement, q.agreement),
        (p.relay_auth, q.relay_auth),
    ] {
        assert_ne!(x, y);
    }
    assert_ne!(talks[0].mailbox, talks[1].mailbox);
}

#[test]
fn a_wrong_relay_fingerprint_is_refused() {
    let relay = Relay::start();
    let host = relay.address.split('@').nth(1).unwrap();
    let wrong = format!("nook://{}@{host}", nook_crypto::Fingerprint([0; 32]));
    let a = Nook::new();
    let r = a.run(&["new", "--relay", &wrong]);
    assert_eq!(r.code, 7, "{r:?}");
    assert!(r.stderr.contains("fingerprint"), "{}", r.stderr);
    assert!(a.ok(&["--json", "list"]).json_lines().is_empty());
}

#[test]
fn errors_say_what_to_do_and_use_documented_exit_codes() {
    let relay = Relay::start();
    let a = Nook::new();
    let r = a.run(&["send", "ffff", "x"]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("nook list"), "{}", r.stderr);
    let r = a.run(&["join", "nook://not-an-invite"]);
    assert_eq!(r.code, 5);
    assert!(r.stderr.contains("invalid invite"), "{}", r.stderr);
    let r = a.run(&["new", "--relay", &relay.address, "--ttl", "5w"]);
    assert_eq!(r.code, 2, "clap usage errors exit 2");
    let r = a.run(&["--json", "send", "ffff", "x"]);
    let err: serde_json::Value = serde_json::from_str(r.stderr.trim()).unwrap();
    assert_eq!(err["exit_code"], 3);
    // Chat needs a terminal; in a pipe it points to the scriptable commands.
    a.ok(&["new", "--relay", &relay.address]);
    let t = a.only_talk();
    let r = a.run(&["chat", &t]);
    assert_eq!(r.code, 5);
    assert!(r.stderr.contains("read TALK --follow"), "{}", r.stderr);
}

#[test]
fn every_file_nook_and_the_relay_write_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut relay = Relay::start();
    let a = Nook::new();
    let new = a.ok(&["--json", "new", "--relay", &relay.address]).json();
    let b = Nook::new();
    b.ok(&["join", &s(&new["invites"][0])]);
    relay.stop();
    for root in [a.home_dir(), b.home_dir(), relay.data_dir()] {
        let mut stack = vec![root.clone()];
        let mut files = 0;
        while let Some(d) = stack.pop() {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{} is not 0700", d.display());
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files += 1;
                    let mode = e.metadata().unwrap().permissions().mode() & 0o777;
                    assert_eq!(
                        mode & 0o077,
                        0,
                        "{} is readable by others ({mode:o})",
                        p.display()
                    );
                }
            }
        }
        assert!(files > 0, "{} holds no files", root.display());
    }
}

#[test]
fn a_follower_reconnects_after_a_relay_restart_and_misses_nothing() {
    let mut relay = Relay::start();
    let (a, b, ta, tb) = two_seat_talk(&relay, &[], &[]);
    a.ok(&["send", &ta, "before the restart"]);
    let mut follow = b.spawn(&["--json", "read", &tb, "--follow"]);
    let limit = Duration::from_secs(30);
    follow.wait_for(Stream::Stderr, limit, |l| l.contains("following"));
    relay.restart();
    a.ok(&["send", &ta, "after the restart"]);
    follow.wait_for(Stream::Stdout, limit, |l| l.contains("after the restart"));
    a.ok(&["close", &ta]);
    let f = follow.finish(Duration::from_secs(60));
    assert_eq!(f.code, 6, "{f:?}");
    let lines = f.json_lines();
    assert_eq!(
        texts(&lines),
        ["ann: before the restart", "ann: after the restart"],
        "{}",
        f.stdout
    );
    assert_eq!(lines.last().unwrap()["type"], "closed");
    assert!(f.stderr.contains("reconnecting"), "{}", f.stderr);
}

#[test]
fn a_join_whose_answer_was_lost_completes_when_run_again() {
    let relay = Relay::start();
    let (a, b) = (Nook::new(), Nook::new());
    let new = a
        .ok(&["--json", "new", "--relay", &relay.address, "--alias", "ann"])
        .json();
    let ta = s(&new["talk"]);
    let invite_text = s(&new["invites"][0]);
    let invite: nook_crypto::Invite = invite_text.parse().unwrap();
    // B's client stored its identity for this invite, sent Join, and the relay took
    // the seat — but the answer never arrived.
    let identity = nook_crypto::TalkIdentity::generate(&mut rand::rng());
    {
        let home = nook_client::store::Home::new(&b.home_dir()).unwrap();
        let store = home.open().unwrap();
        store
            .save_pending_join(
                &invite.seat_secret.token_hash().0,
                &nook_client::store::PendingJoin {
                    identity: *identity.to_bytes(),
                    alias: "bea".into(),
                },
            )
            .unwrap();
        store.flush().unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = nook_client::RelayConnection::connect(&invite.relay)
            .await
            .unwrap();
        let token = *invite.seat_secret.join_token();
        let signature = nook_crypto::auth::sign_relay_auth(
            &identity,
            nook_crypto::auth::AuthOp::Join,
            &conn.hello().challenge,
            &invite.mailbox,
            &token,
        );
        let r = conn
            .request(nook_proto::Request::Join(nook_proto::Join {
                mailbox: invite.mailbox,
                token,
                member: identity.member_key(),
                signature,
            }))
            .await
            .unwrap();
        assert!(matches!(r, nook_proto::Response::Joined { seat: 1, .. }));
        // Dropped without reading anything further: the "lost" answer.
    });
    // Running the join again recovers the seat with the stored identity.
    let joined = b.ok(&["--json", "join", &invite_text]).json();
    assert_eq!(joined["seat"].as_u64(), Some(1));
    assert_eq!(joined["alias"], "bea");
    let tb = b.only_talk();
    a.ok(&["send", &ta, "you made it"]);
    assert_eq!(
        texts(&b.ok(&["--json", "read", &tb]).json_lines()),
        ["ann: you made it"]
    );
}

#[test]
fn an_operator_limit_set_on_the_command_line_is_enforced_and_lifted_by_reading() {
    const LIMIT: &str = "4";
    let relay = Relay::start_with(&["--max-envelopes-per-mailbox", LIMIT]);
    let (a, b, ta, tb) = two_seat_talk(&relay, &[], &[]);
    // B reads nothing, so envelopes pile up (the key announcements count too) until the
    // relay's limit of 4 refuses a put.
    let mut sent = 0;
    let refused = loop {
        let r = a.run(&["send", &ta, &format!("message {sent}")]);
        if r.code != 0 {
            break r;
        }
        sent += 1;
        assert!(
            sent <= 4,
            "a relay limited to {LIMIT} envelopes took {sent} messages"
        );
    };
    assert!(sent >= 1, "no message fitted: {refused:?}");
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(
        refused.stderr.contains("mailbox is full"),
        "{}",
        refused.stderr
    );
    // Reading acknowledges, which frees the mailbox: the refused message goes through now.
    let read = b.ok(&["--json", "read", &tb]);
    assert_eq!(texts(&read.json_lines()).len(), sent, "{}", read.stdout);
    a.ok(&["send", &ta, "after the read"]);
}
