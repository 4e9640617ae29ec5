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

/// Every 32 bytes of `state`'s encoding, as an envelope key both raw (a chain's key)
/// and as a talk key (the base key derived from it): a superset of every envelope key
/// the member held, found without knowing where the state keeps them.
fn every_key_in(state: &[u8]) -> Vec<nook_crypto::seal::EnvelopeKey> {
    use nook_crypto::seal::EnvelopeKey;
    state
        .windows(32)
        .filter_map(|w| <&[u8; 32]>::try_from(w).ok())
        .flat_map(|w| [EnvelopeKey::from_bytes(w), EnvelopeKey::from_talk_key(w)])
        .collect()
}

#[test]
fn a_former_member_with_every_key_it_kept_opens_nothing_the_relay_stored_after_it_left() {
    use nook_client::store::Home;
    use nook_crypto::seal::Purpose;
    use nook_e2e::Stream;
    use nook_e2e::wiretap::TappedRelay;
    use std::time::Duration;

    // The real engine in this process: its tap keeps every envelope and farewell it
    // hands out, as a relay hoarding its store would.
    let relay = TappedRelay::start();
    let (ann, bob, cat, dee) = (Nook::new(), Nook::new(), Nook::new(), Nook::new());
    let new = ann
        .ok(&[
            "--json",
            "new",
            "--relay",
            &relay.address,
            "--seats",
            "4",
            "--quorum",
            "2",
            "--alias",
            "ann",
        ])
        .json();
    let invites = new["invites"].as_array().unwrap();
    let talk = s(&new["talk"]);
    bob.ok(&["join", &s(&invites[0]), "--alias", "bob"]);
    cat.ok(&["join", &s(&invites[1]), "--alias", "cat"]);
    let everyone_reads = |members: &[&Nook]| {
        for _ in 0..3 {
            for m in members {
                m.ok(&["read", &talk]);
            }
        }
    };
    everyone_reads(&[&ann, &bob, &cat]);
    cat.ok(&["send", &talk, "cat, before leaving"]);
    everyone_reads(&[&ann, &bob, &cat]);

    // cat keeps a copy of everything it holds, then leaves (its device erases it).
    let kept = Home::new(&cat.home_dir())
        .and_then(|h| h.open())
        .and_then(|store| store.find(&talk))
        .expect("cat's state");
    let state = nook_proto::codec::encode_value(&kept).expect("encoded state");
    // The control: a message after the copy and before the leave, which cat's copy
    // must open (so the check below would see a key that still worked).
    let control = ann
        .ok(&["--json", "send", &talk, "control, from ann"])
        .json()["seq"]
        .as_u64()
        .expect("seq");
    cat.ok(&["leave", &talk]);
    let left_at = relay
        .tap
        .stored()
        .last()
        .copied()
        .expect("something stored");

    // The rest go on: a rotation, messages, a newcomer who meets them and talks.
    everyone_reads(&[&ann, &bob]);
    ann.ok(&["send", &talk, "secret after the leave, from ann"]);
    bob.ok(&["send", &talk, "secret after the leave, from bob"]);
    dee.ok(&["join", &s(&invites[2]), "--alias", "newcomer-dee"]);
    everyone_reads(&[&ann, &bob, &dee]);
    dee.ok(&["send", &talk, "secret from the newcomer"]);
    everyone_reads(&[&ann, &bob, &dee]);
    let read = ann.ok(&["--json", "read", &talk]);
    assert!(
        said(&read).contains(&"newcomer-dee: secret from the newcomer".to_string()),
        "the newcomer met the others: {}",
        read.stdout
    );
    // bob follows, so the close's farewell goes out through the tap too.
    let mut follow = bob.spawn(&["read", "--follow", &talk]);
    follow.wait_for(Stream::Stdout, Duration::from_secs(20), |l| {
        l.contains("secret from the newcomer")
    });
    ann.ok(&["close", &talk]);
    follow.finish(Duration::from_secs(30));

    // What the relay stored after the leave: every seq it answered `Stored` for, each
    // of which it handed out (so the tap holds its whole store), and the farewell.
    let envelopes = relay.tap.envelopes();
    let later: Vec<_> = relay
        .tap
        .stored()
        .into_iter()
        .filter(|seq| *seq > left_at)
        .map(|seq| envelopes.get(&seq).cloned().expect("every stored envelope"))
        .collect();
    let farewells = relay.tap.farewells();
    assert_eq!(farewells.len(), 1);
    assert!(
        later.len() >= 10,
        "{} envelopes after the leave",
        later.len()
    );

    // Every key cat kept against every later envelope and the farewell.
    let keys = every_key_in(&state);
    let opens = |purpose: Purpose, body: &[u8]| -> Vec<Vec<u8>> {
        keys.iter()
            .filter(|k| Some(k.id()) == EnvelopeKeyId::of(body))
            .filter_map(|k| k.open(&kept.mailbox, purpose, body).ok())
            .map(|plain| plain.to_vec())
            .collect()
    };
    let control = envelopes.get(&control).expect("the control was handed out");
    assert_eq!(
        opens(Purpose::Chat, &control.body).len(),
        1,
        "cat's copy holds ann's key"
    );
    let bodies = later
        .iter()
        .map(|e| (Purpose::from(e.kind), &e.body))
        .chain(farewells.iter().map(|f| (Purpose::Farewell, f)));
    let mut opened = 0;
    for (purpose, body) in bodies {
        for plain in opens(purpose, body) {
            opened += 1;
            // Chat travels only under its sender's own key, which rotated at the leave.
            assert_ne!(
                purpose,
                Purpose::Chat,
                "cat's old keys opened a later message"
            );
            for secret in [&b"secret"[..], b"newcomer-dee"] {
                assert!(
                    !plain.windows(secret.len()).any(|w| w == secret),
                    "cat's old keys opened a {purpose:?} envelope stored after it left"
                );
            }
        }
    }
    // The base key still opens the newcomer's public announcement (its keys, no
    // alias, no chain): proof that the keys were tried, and what is not secret.
    assert!(
        opened > 0,
        "cat's base key opens the newcomer's public announcement"
    );

    // And through the client itself, with cat's whole state: no message, no alias;
    // the control shows that it reads what came before the leave.
    let mut cat_kept = kept;
    let shown = format!("{:?}", cat_kept.handle_envelope(control).events);
    assert!(shown.contains("control, from ann"), "{shown}");
    for e in &later {
        let h = cat_kept.handle_envelope(e);
        for event in &h.events {
            let shown = format!("{event:?}");
            assert!(
                !shown.contains("secret") && !shown.contains("newcomer-dee"),
                "{shown}"
            );
        }
    }
}

/// The key id a body starts with.
struct EnvelopeKeyId;

impl EnvelopeKeyId {
    fn of(body: &[u8]) -> Option<[u8; nook_crypto::seal::KEY_ID_LEN]> {
        nook_crypto::seal::EnvelopeKey::id_of(body)
    }
}
