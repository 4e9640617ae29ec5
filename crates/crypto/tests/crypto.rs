//! Behaviour of every construction, including each way it must refuse.

use nook_crypto::auth::{
    AuthOp, RelayIdentity, params_digest, sign_relay_auth, verify_receipt, verify_relay_auth,
};
use nook_crypto::chain::{ChainState, Delivery, MAX_SKIP, MAX_SKIPPED_KEYS};
use nook_crypto::message::{Announce, Content, Farewell, GroupMessage, open_group, seal_group};
use nook_crypto::padding::{bucket_for, pad, unpad};
use nook_crypto::seal::{
    ENVELOPE_OVERHEAD, open_pairwise, open_welcome, seal_pairwise, seal_welcome,
};
use nook_crypto::*;
use nook_proto::{ClosePolicy, MailboxId, TalkParams};

const MB: MailboxId = MailboxId([7; 16]);

fn rng() -> rand::rngs::ThreadRng {
    rand::rng()
}

fn text(t: &str) -> Content {
    Content::Text {
        sent_at_ms: 1,
        text: t.into(),
    }
}

#[test]
fn invite_round_trips_and_derivations_are_distinct() {
    let secret = SeatSecret::random(&mut rng());
    let invite = Invite {
        relay: RelayAddr {
            fingerprint: Fingerprint([1; 32]),
            host: "relay.example".into(),
            port: 4433,
        },
        mailbox: MailboxId([2; 16]),
        seat_secret: secret.clone(),
    };
    let text = invite.to_text();
    assert!(text.starts_with("nook://"));
    let back: Invite = text.parse().unwrap();
    assert!(back == invite);
    let derived = [
        *secret.join_token(),
        secret.token_hash().0,
        *secret.welcome_key(),
        secret.seat_public(),
        *secret.seat_seed(),
        secret.commitment(),
    ];
    for i in 0..derived.len() {
        for j in 0..i {
            assert_ne!(derived[i], derived[j], "derivations {i} and {j} collide");
        }
    }
}

#[test]
fn relay_address_accepts_ipv6_and_rejects_trailing_path() {
    let fp = Fingerprint([3; 32]).to_text();
    let a: RelayAddr = format!("nook://{fp}@[::1]:4433").parse().unwrap();
    assert_eq!(a.host, "[::1]");
    assert_eq!(a.host_name(), "::1");
    assert_eq!(a.to_string(), format!("nook://{fp}@[::1]:4433"));
    assert_eq!(
        format!("nook://{fp}@[::1]:4433/abc").parse::<RelayAddr>(),
        Err(AddressError::Trailing)
    );
}

#[test]
fn invite_parser_names_what_is_wrong() {
    let fp = Fingerprint([3; 32]).to_text();
    let mb = "AgICAgICAgICAgICAgICAg";
    let sec = Fingerprint([4; 32]).to_text();
    let cases = [
        (format!("http://{fp}@h:1/{mb}#{sec}"), AddressError::Scheme),
        (
            format!("nook://abc@h:1/{mb}#{sec}"),
            AddressError::Fingerprint,
        ),
        (format!("nook://h:1/{mb}#{sec}"), AddressError::Fingerprint),
        (format!("nook://{fp}@h_x:1/{mb}#{sec}"), AddressError::Host),
        (format!("nook://{fp}@:1/{mb}#{sec}"), AddressError::Host),
        (format!("nook://{fp}@[zz]:1/{mb}#{sec}"), AddressError::Host),
        (format!("nook://{fp}@h/{mb}#{sec}"), AddressError::Port),
        (format!("nook://{fp}@h:0/{mb}#{sec}"), AddressError::Port),
        (
            format!("nook://{fp}@h:70000/{mb}#{sec}"),
            AddressError::Port,
        ),
        (format!("nook://{fp}@h:1#{sec}"), AddressError::Mailbox),
        (
            format!("nook://{fp}@h:1/short#{sec}"),
            AddressError::Mailbox,
        ),
        (format!("nook://{fp}@h:1/{mb}"), AddressError::SeatSecret),
        (
            format!("nook://{fp}@h:1/{mb}#tooshort"),
            AddressError::SeatSecret,
        ),
        (
            format!("nook://{fp}@h:1/{mb}#{sec}x"),
            AddressError::SeatSecret,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(input.parse::<Invite>().err(), Some(want.clone()), "{input}");
        assert!(!want.to_string().is_empty());
    }
}

#[test]
fn padding_hits_buckets_and_refuses_oversize() {
    assert_eq!(bucket_for(0, 40), Ok(512));
    assert_eq!(bucket_for(471, 40), Ok(512));
    assert_eq!(bucket_for(472, 40), Ok(1024));
    assert_eq!(bucket_for(983, 40), Ok(1024));
    assert_eq!(bucket_for(984, 40), Ok(2048));
    assert_eq!(bucket_for(65_536 - 41, 40), Ok(65_536));
    assert_eq!(bucket_for(65_536 - 40, 40), Ok(131_072));
    let p = pad(b"hello", 40).unwrap();
    assert_eq!(p.len(), 512 - 40);
    assert_eq!(unpad(&p).unwrap(), b"hello");
    assert!(matches!(
        bucket_for(128 * 1024, 0),
        Err(PaddingError::TooLarge { .. })
    ));
    assert_eq!(unpad(&[1, 2, 0]), Err(PaddingError::Malformed));
    assert_eq!(unpad(&[0, 0]), Err(PaddingError::Malformed));
}

#[test]
fn welcome_opens_only_with_its_seat_secret() {
    let seat = SeatSecret::random(&mut rng());
    let other = SeatSecret::random(&mut rng());
    let sealed = seal_welcome(&seat, b"roster").unwrap();
    assert_eq!(sealed.len(), 512);
    assert_eq!(open_welcome(&seat, &sealed).unwrap().as_slice(), b"roster");
    assert_eq!(open_welcome(&other, &sealed).err(), Some(CryptoError::Open));
    let mut bad = sealed.clone();
    bad[100] ^= 1;
    assert_eq!(open_welcome(&seat, &bad).err(), Some(CryptoError::Open));
}

#[test]
fn pairwise_authenticates_both_ends() {
    let mut r = rng();
    let (alice, bob, eve) = (
        TalkIdentity::generate(&mut r),
        TalkIdentity::generate(&mut r),
        TalkIdentity::generate(&mut r),
    );
    let sealed = seal_pairwise(&mut r, &alice, &bob.public().agreement, &MB, b"chain").unwrap();
    let opened = open_pairwise(&bob, &alice.public().agreement, &MB, &sealed).unwrap();
    assert_eq!(opened.as_slice(), b"chain");
    // Not for eve; not from eve; not for another mailbox.
    assert!(open_pairwise(&eve, &alice.public().agreement, &MB, &sealed).is_err());
    assert!(open_pairwise(&bob, &eve.public().agreement, &MB, &sealed).is_err());
    assert!(
        open_pairwise(
            &bob,
            &alice.public().agreement,
            &MailboxId([8; 16]),
            &sealed
        )
        .is_err()
    );
    assert!(open_pairwise(&bob, &alice.public().agreement, &MB, &sealed[..20]).is_err());
    // A small-order key is refused rather than yielding a predictable key.
    assert_eq!(
        seal_pairwise(&mut r, &alice, &[0u8; 32], &MB, b"x").err(),
        Some(CryptoError::BadKey)
    );
}

#[test]
fn envelopes_are_bucket_sized_and_bound_to_mailbox_and_purpose() {
    let key = EnvelopeKey::from_talk_key(&[9; 32]);
    let body = key.seal(&mut rng(), &MB, Purpose::Chat, b"inner").unwrap();
    assert_eq!(body.len(), 512);
    assert_eq!(
        key.open(&MB, Purpose::Chat, &body).unwrap().as_slice(),
        b"inner"
    );
    assert!(key.open(&MB, Purpose::Handshake, &body).is_err());
    assert!(key.open(&MailboxId([0; 16]), Purpose::Chat, &body).is_err());
    assert!(
        EnvelopeKey::from_talk_key(&[8; 32])
            .open(&MB, Purpose::Chat, &body)
            .is_err()
    );
    let big = key
        .seal(
            &mut rng(),
            &MB,
            Purpose::Chat,
            &vec![1; 512 - ENVELOPE_OVERHEAD],
        )
        .unwrap();
    assert_eq!(big.len(), 1024);
}

fn pair() -> (TalkIdentity, SendingChain, ReceivingChain) {
    let mut r = rng();
    let id = TalkIdentity::generate(&mut r);
    let send = SendingChain::new(&mut r, 0);
    let recv = ReceivingChain::new(send.state().clone());
    (id, send, recv)
}

#[test]
fn group_messages_flow_in_order() {
    let (id, mut send, mut recv) = pair();
    let pk = id.public().pseudonym;
    for i in 0..5u32 {
        let m = seal_group(&id, &mut send, &MB, &text(&format!("m{i}"))).unwrap();
        let (c, d) = open_group(&pk, &mut recv, &MB, &m).unwrap();
        assert_eq!(c, text(&format!("m{i}")));
        assert_eq!(
            d,
            Delivery {
                index: i,
                missed: 0,
                late: false
            }
        );
    }
}

#[test]
fn replayed_message_is_rejected() {
    let (id, mut send, mut recv) = pair();
    let pk = id.public().pseudonym;
    let m = seal_group(&id, &mut send, &MB, &text("once")).unwrap();
    open_group(&pk, &mut recv, &MB, &m).unwrap();
    assert_eq!(
        open_group(&pk, &mut recv, &MB, &m).err(),
        Some(CryptoError::Chain(ChainError::Replayed { index: 0 }))
    );
}

#[test]
fn drops_and_reorders_are_reported_and_late_messages_open_once() {
    let (id, mut send, mut recv) = pair();
    let pk = id.public().pseudonym;
    let ms: Vec<GroupMessage> = (0..4)
        .map(|i| seal_group(&id, &mut send, &MB, &text(&i.to_string())).unwrap())
        .collect();
    let (_, d) = open_group(&pk, &mut recv, &MB, &ms[3]).unwrap();
    assert_eq!(
        d,
        Delivery {
            index: 3,
            missed: 3,
            late: false
        }
    );
    let (c, d) = open_group(&pk, &mut recv, &MB, &ms[1]).unwrap();
    assert_eq!(c, text("1"));
    assert_eq!(
        d,
        Delivery {
            index: 1,
            missed: 0,
            late: true
        }
    );
    assert!(
        open_group(&pk, &mut recv, &MB, &ms[1]).is_err(),
        "late key used twice"
    );
    assert!(open_group(&pk, &mut recv, &MB, &ms[3]).is_err());
}

#[test]
fn skipped_key_window_is_bounded() {
    let (id, mut send, mut recv) = pair();
    let pk = id.public().pseudonym;
    let first = seal_group(&id, &mut send, &MB, &text("first")).unwrap();
    let mut last = None;
    for _ in 0..(MAX_SKIPPED_KEYS + 1) {
        last = Some(seal_group(&id, &mut send, &MB, &text("x")).unwrap());
    }
    let last = last.unwrap();
    open_group(&pk, &mut recv, &MB, &last).unwrap();
    // Index 0 fell out of the window: it can no longer be opened.
    assert!(matches!(
        open_group(&pk, &mut recv, &MB, &first),
        Err(CryptoError::Chain(ChainError::Replayed { index: 0 }))
    ));
}

#[test]
fn too_far_ahead_and_wrong_epoch_are_refused() {
    let (id, _, mut recv) = pair();
    let pk = id.public().pseudonym;
    let mut far = SendingChain::from_state(ChainState {
        epoch: 0,
        index: MAX_SKIP + 1,
        chain_key: [0; 32],
    });
    let m = seal_group(&id, &mut far, &MB, &text("far")).unwrap();
    assert!(matches!(
        open_group(&pk, &mut recv, &MB, &m),
        Err(CryptoError::Chain(ChainError::TooFarAhead { .. }))
    ));
    let mut other = SendingChain::new(&mut rng(), 1);
    let m = seal_group(&id, &mut other, &MB, &text("e1")).unwrap();
    assert!(matches!(
        open_group(&pk, &mut recv, &MB, &m),
        Err(CryptoError::Chain(ChainError::WrongEpoch {
            got: 1,
            expected: 0
        }))
    ));
}

#[test]
fn forged_or_altered_messages_leave_the_chain_untouched() {
    let (id, mut send, mut recv) = pair();
    let pk = id.public().pseudonym;
    let eve = TalkIdentity::generate(&mut rng());
    let m = seal_group(&id, &mut send, &MB, &text("real")).unwrap();
    // Eve re-signs the same ciphertext claiming to be the sender: signature fails.
    let mut forged = m.clone();
    forged.signature = eve.sign_pseudonym(b"whatever");
    assert_eq!(
        open_group(&pk, &mut recv, &MB, &forged).err(),
        Some(CryptoError::BadSignature)
    );
    // Wrong claimed sender.
    assert!(open_group(&eve.public().pseudonym, &mut recv, &MB, &m).is_err());
    // Altered ciphertext.
    let mut altered = m.clone();
    altered.ciphertext[0] ^= 1;
    assert!(open_group(&pk, &mut recv, &MB, &altered).is_err());
    // Other mailbox.
    assert!(open_group(&pk, &mut recv, &MailboxId([1; 16]), &m).is_err());
    assert_eq!(recv.next_index(), 0);
    assert!(open_group(&pk, &mut recv, &MB, &m).is_ok());
}

#[test]
fn announce_must_be_cosigned_by_the_committed_seat_key() {
    let mut r = rng();
    let id = TalkIdentity::generate(&mut r);
    let seats: Vec<SeatSecret> = (0..2).map(|_| SeatSecret::random(&mut r)).collect();
    let commitments: Vec<[u8; 32]> = seats.iter().map(|s| s.commitment()).collect();
    let seed = seats[1].seat_seed();
    let a = Announce::new(&id, &MB, 2, Some(&seed), "quiet-otter", None).unwrap();
    assert_eq!(a.verify(&MB, &commitments), Ok(()));
    // Claiming seat 1 with seat 2's key fails; so does a key nobody committed to.
    let wrong = Announce::new(&id, &MB, 1, Some(&seed), "x", None).unwrap();
    assert_eq!(wrong.verify(&MB, &commitments), Err(CryptoError::NotASeat));
    let beyond = Announce::new(&id, &MB, 9, Some(&seed), "x", None).unwrap();
    assert_eq!(beyond.verify(&MB, &commitments), Err(CryptoError::NotASeat));
    let bogus = Announce::new(&id, &MB, 2, Some(&[7; 32]), "x", None).unwrap();
    assert_eq!(bogus.verify(&MB, &commitments), Err(CryptoError::NotASeat));
    // An insider who saw the announcement replays the seat key under its own keys:
    // the seat signature covers the body, so the replay fails.
    let eve = TalkIdentity::generate(&mut r);
    let mut replay = Announce::new(&eve, &MB, 2, None, "quiet-otter", None).unwrap();
    replay.body.seat_key = a.body.seat_key;
    replay.seat_signature = a.seat_signature;
    let resigned = Announce {
        signature: eve.sign_pseudonym(
            &[
                b"nook/1 announce".as_slice(),
                &MB.0,
                &nook_proto::codec::encode_value(&replay.body).unwrap(),
            ]
            .concat(),
        ),
        ..replay
    };
    assert_eq!(
        resigned.verify(&MB, &commitments),
        Err(CryptoError::NotASeat)
    );
    let mut tampered = a.clone();
    tampered.body.alias = "someone-else".into();
    assert_eq!(
        tampered.verify(&MB, &commitments),
        Err(CryptoError::BadSignature)
    );
    assert!(a.verify(&MailboxId([0; 16]), &commitments).is_err());
    assert!(Announce::new(&id, &MB, 1, None, &"a".repeat(65), None).is_err());
}

#[test]
fn relay_auth_is_bound_to_challenge_op_mailbox_and_extra() {
    let id = TalkIdentity::generate(&mut rng());
    let member = id.member_key();
    let sig = sign_relay_auth(&id, AuthOp::Auth, &[1; 32], &MB, b"");
    assert!(verify_relay_auth(&member, AuthOp::Auth, &[1; 32], &MB, b"", &sig).is_ok());
    assert!(verify_relay_auth(&member, AuthOp::Auth, &[2; 32], &MB, b"", &sig).is_err());
    assert!(verify_relay_auth(&member, AuthOp::Leave, &[1; 32], &MB, b"", &sig).is_err());
    assert!(
        verify_relay_auth(
            &member,
            AuthOp::Auth,
            &[1; 32],
            &MailboxId([0; 16]),
            b"",
            &sig
        )
        .is_err()
    );
    assert!(verify_relay_auth(&member, AuthOp::Auth, &[1; 32], &MB, b"x", &sig).is_err());
    let params = TalkParams {
        seats: 2,
        quorum: 2,
        ttl_secs: 60,
        close: ClosePolicy::Owner,
        offers: vec![],
    };
    let mut p2 = params.clone();
    p2.quorum = 1;
    assert_ne!(params_digest(&params).unwrap(), params_digest(&p2).unwrap());
}

#[test]
fn receipts_verify_only_with_the_relay_key() {
    let relay = RelayIdentity::generate(&mut rng());
    let other = RelayIdentity::generate(&mut rng());
    let r = relay.sign_receipt(MB, 1234, 10);
    assert!(verify_receipt(&relay.public(), &r).is_ok());
    assert!(verify_receipt(&other.public(), &r).is_err());
    let mut altered = r;
    altered.envelopes_deleted = 11;
    assert!(verify_receipt(&relay.public(), &altered).is_err());
    let again = RelayIdentity::from_seed(&relay.seed());
    assert_eq!(again.public(), relay.public());
    assert_eq!(relay.pkcs8_der().len(), 48);
}

#[test]
fn farewell_is_signed_by_the_closer() {
    let id = TalkIdentity::generate(&mut rng());
    let f = Farewell::new(&id, &MB);
    assert_eq!(f.sender, id.public().pseudonym);
    assert!(f.verify(&MB).is_ok());
    assert!(f.verify(&MailboxId([0; 16])).is_err());
}

#[test]
fn identity_round_trips_and_debug_prints_no_secret() {
    let id = TalkIdentity::generate(&mut rng());
    let bytes = id.to_bytes();
    let again = TalkIdentity::from_bytes(&bytes);
    assert_eq!(again.public(), id.public());
    let dbg = format!(
        "{id:?} {:?} {:?}",
        Secret32::from_bytes([0xab; 32]),
        SeatSecret::from_bytes([0xcd; 32])
    );
    assert!(!dbg.contains("abab") && !dbg.contains("cdcd") && !dbg.contains("171, 171"));
    let hexed: String = bytes[..8].iter().map(|b| format!("{b:02x}")).collect();
    assert!(!dbg.contains(&hexed));
}
