//! Behaviour of every construction, including each way it must refuse.

use nook_crypto::auth::{
    AuthOp, PortableReceipt, ReceiptError, ReceiptTextError, RelayIdentity, params_digest,
    parse_rfc3339_utc, rfc3339_utc, sign_relay_auth, verify_receipt, verify_relay_auth,
};
use nook_crypto::chain::{ChainState, Delivery, MAX_SKIP, MAX_SKIPPED_KEYS};
use nook_crypto::message::{
    Announce, Content, Farewell, GroupMessage, Seen, open_group, seal_group,
};
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
        seen: Vec::new(),
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
    // A well-formed fragment of 48 characters (its check belongs to no invite here).
    let frag = "BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE";
    let cases = [
        (format!("http://{fp}@h:1/{mb}#{frag}"), AddressError::Scheme),
        (
            format!("nook://abc@h:1/{mb}#{frag}"),
            AddressError::Fingerprint,
        ),
        (format!("nook://h:1/{mb}#{frag}"), AddressError::Fingerprint),
        (format!("nook://{fp}@h_x:1/{mb}#{frag}"), AddressError::Host),
        (format!("nook://{fp}@:1/{mb}#{frag}"), AddressError::Host),
        (
            format!("nook://{fp}@[zz]:1/{mb}#{frag}"),
            AddressError::Host,
        ),
        (format!("nook://{fp}@h/{mb}#{frag}"), AddressError::Port),
        (format!("nook://{fp}@h:0/{mb}#{frag}"), AddressError::Port),
        (
            format!("nook://{fp}@h:70000/{mb}#{frag}"),
            AddressError::Port,
        ),
        (format!("nook://{fp}@h:1#{frag}"), AddressError::Mailbox),
        (
            format!("nook://{fp}@h:1/short#{frag}"),
            AddressError::Mailbox,
        ),
        (format!("nook://{fp}@h:1/{mb}"), AddressError::SeatSecret),
        (
            format!("nook://{fp}@h:1/{mb}#tooshort"),
            AddressError::SeatSecret,
        ),
        (
            format!("nook://{fp}@h:1/{mb}#{frag}x"),
            AddressError::SeatSecret,
        ),
        // An invite of the format without a check: 43 characters after '#'.
        (
            format!("nook://{fp}@h:1/{mb}#{}", Fingerprint([4; 32]).to_text()),
            AddressError::SeatSecret,
        ),
        (
            format!("nook://{fp}@h:1/{mb}#{frag}"),
            AddressError::Checksum,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(input.parse::<Invite>().err(), Some(want.clone()), "{input}");
        assert!(!want.to_string().is_empty());
    }
}

fn sample_invite(host: &str) -> Invite {
    Invite {
        relay: RelayAddr {
            fingerprint: Fingerprint([0xa7; 32]),
            host: host.into(),
            port: 4433,
        },
        mailbox: MailboxId([0x3c; 16]),
        seat_secret: SeatSecret::from_bytes([0x5e; 32]),
    }
}

#[test]
fn a_typo_anywhere_in_an_invite_is_refused() {
    // Every single-character substitution, at every position, with characters a
    // person could type: the invite is refused, or it is the same invite (a host is
    // case-insensitive, and a port may get a leading zero only by insertion).
    let replacements: Vec<char> = ('A'..='Z')
        .chain('a'..='z')
        .chain('0'..='9')
        .chain(['-', '_', '.', ':', '/', '@', '#'])
        .collect();
    for host in ["relay.example", "[2001:db8::1]", "10.0.0.7"] {
        let invite = sample_invite(host);
        let text = invite.to_text();
        let mut refused_by_check = 0;
        for (pos, original) in text.char_indices() {
            for &r in replacements.iter().filter(|&&r| r != original) {
                let mut typo = text.clone();
                typo.replace_range(pos..pos + original.len_utf8(), r.encode_utf8(&mut [0; 4]));
                match typo.parse::<Invite>() {
                    Ok(back) => assert!(back == invite, "{typo} parsed as another invite"),
                    Err(AddressError::Checksum) => refused_by_check += 1,
                    Err(_) => {}
                }
            }
        }
        assert!(refused_by_check > 1000, "{host}: {refused_by_check}");
        // A dropped or doubled character is refused too.
        for pos in 0..text.len() {
            let mut dropped = text.clone();
            dropped.remove(pos);
            assert!(dropped.parse::<Invite>().is_err(), "{dropped}");
        }
    }
}

#[test]
fn each_part_of_an_invite_is_covered_by_its_check() {
    let invite = sample_invite("relay.example");
    let text = invite.to_text();
    let (head, fragment) = text.split_once('#').unwrap();
    let fp = invite.relay.fingerprint.to_text();
    let mb = text.split('/').nth(3).unwrap().split('#').next().unwrap();
    // One character of each part, still well-formed, so only the check can tell.
    let typos = [
        text.replacen(&fp, &format!("B{}", &fp[1..]), 1),
        text.replacen("relay.example", "relay.exbmple", 1),
        text.replacen(":4433/", ":4434/", 1),
        text.replacen(mb, &format!("A{}", &mb[1..]), 1),
        format!("{head}#A{}", &fragment[1..]),
        format!("{head}#{}A", &fragment[..fragment.len() - 1]),
    ];
    for typo in typos {
        assert_ne!(typo, text);
        assert_eq!(
            typo.parse::<Invite>().err(),
            Some(AddressError::Checksum),
            "{typo}"
        );
    }
    assert!(AddressError::Checksum.to_string().contains("mistyped"));
}

#[test]
fn invites_pasted_from_mail_or_chat_parse() {
    let invite = sample_invite("relay.example");
    let text = invite.to_text();
    let (a, b) = text.split_at(40);
    let (b, c) = b.split_at(50);
    let pasted = [
        format!("  {text}\n"),
        format!("<{text}>"),
        format!("\"{text}\""),
        format!("'{text}'"),
        format!("\u{201c}{text}\u{201d}"),
        format!("\u{2018}{text}\u{2019}"),
        format!("`{text}`"),
        format!(" < {a}\n{b}\r\n  {c} >\n"),
        format!("\"<{a}\u{200b}{b}\u{ad}{c}>\""),
        format!("{a}\t{b} {c}"),
    ];
    for p in pasted {
        let back: Invite = p.parse().unwrap_or_else(|e| panic!("{p:?}: {e}"));
        assert!(back == invite, "{p:?}");
    }
    // Unbalanced or foreign wrappers are not guessed at.
    for p in [
        format!("<{text}"),
        format!("\"{text}'"),
        format!("({text})"),
    ] {
        assert!(p.parse::<Invite>().is_err(), "{p:?}");
    }
    // A relay address forgives the same.
    let addr: RelayAddr = format!("<{}>", invite.relay).parse().unwrap();
    assert_eq!(addr, invite.relay);
}

#[test]
fn receipt_times_are_rfc3339_utc() {
    for (secs, text) in [
        (0, "1970-01-01T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (1_700_003_000, "2023-11-14T23:03:20Z"),
        (4_107_542_399, "2100-02-28T23:59:59Z"),
        (253_402_300_799, "9999-12-31T23:59:59Z"),
        (253_402_300_800, "10000-01-01T00:00:00Z"),
    ] {
        assert_eq!(rfc3339_utc(secs), text);
        assert_eq!(parse_rfc3339_utc(text), Some(secs), "{text}");
    }
    // Every day of four years, and the last second of each.
    for day in 0..(4 * 366) {
        let secs = 1_600_000_000 + day * 86_400 + 86_399;
        assert_eq!(parse_rfc3339_utc(&rfc3339_utc(secs)), Some(secs));
    }
    assert!(parse_rfc3339_utc(&rfc3339_utc(u64::MAX)).is_some());
    for bad in [
        "",
        "2023-11-14T23:03:20",
        "2023-11-14 23:03:20Z",
        "2023-11-14t23:03:20z",
        "2023-11-14T23:03:20.5Z",
        "2023-11-14T23:03:20+00:00",
        "2023-02-29T00:00:00Z",
        "2023-13-01T00:00:00Z",
        "2023-00-01T00:00:00Z",
        "2023-11-00T00:00:00Z",
        "2023-11-14T24:00:00Z",
        "2023-11-14T23:60:00Z",
        "2023-11-14T23:03:60Z",
        "1969-12-31T23:59:59Z",
        "02023-11-14T23:03:20Z",
        "+2023-11-14T23:03:20Z",
        "2023-1-14T23:03:20Z",
        "99999999999999999999-01-01T00:00:00Z",
    ] {
        assert_eq!(parse_rfc3339_utc(bad), None, "{bad}");
    }
}

fn portable_receipt() -> (RelayIdentity, PortableReceipt) {
    let relay = RelayIdentity::generate(&mut rng());
    let addr = RelayAddr {
        fingerprint: Fingerprint::of_key(&relay.public().0),
        host: "relay.example".into(),
        port: 4433,
    };
    let r = relay.sign_receipt(MB, 1_700_003_000, 3);
    let p = PortableReceipt::new(addr, relay.public(), &r);
    (relay, p)
}

#[test]
fn a_portable_receipt_reads_back_from_its_text_and_verifies() {
    let (_, p) = portable_receipt();
    p.verify().unwrap();
    let text = p.to_text();
    assert!(text.starts_with("nook deletion receipt v1\nrelay: nook://"));
    assert!(text.contains("\nclosed-at: 2023-11-14T23:03:20Z\n"));
    assert!(text.contains("\nenvelopes-deleted: 3\n"));
    assert_eq!(text.parse::<PortableReceipt>().unwrap(), p);
    // As saved from `nook close`: text around it, CRLF line ends, indentation,
    // upper-case hex, fields in another order.
    let around = format!(
        "talk 1234 closed\r\nthe receipt:\r\n\r\n  {}\r\n\r\nall local data was deleted\r\n",
        text.trim_end().replace('\n', "\r\n  ")
    );
    assert_eq!(around.parse::<PortableReceipt>().unwrap(), p);
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1..].reverse();
    let shuffled = lines.join("\n").to_uppercase().replacen(
        "NOOK DELETION RECEIPT V1",
        "nook deletion receipt v1",
        1,
    );
    let shuffled = shuffled
        .replace("RELAY-KEY", "relay-key")
        .replace("MAILBOX", "mailbox");
    let shuffled = shuffled
        .replace("SIGNATURE", "signature")
        .replace("ENVELOPES-DELETED", "envelopes-deleted");
    // Case matters in the address and the time; keep those lines as written.
    let shuffled: Vec<String> = shuffled
        .lines()
        .map(|l| {
            if l.starts_with("RELAY:") || l.starts_with("CLOSED-AT:") {
                text.lines()
                    .find(|t| t.to_uppercase() == l)
                    .unwrap()
                    .to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(shuffled.join("\n").parse::<PortableReceipt>().unwrap(), p);
}

#[test]
fn a_portable_receipt_names_what_is_wrong() {
    let (_, p) = portable_receipt();
    let text = p.to_text();
    let without = |field: &str| {
        text.lines()
            .filter(|l| !l.starts_with(&format!("{field}:")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let line = |field: &str| text.lines().find(|l| l.starts_with(field)).unwrap();
    let cases = [
        (String::new(), ReceiptTextError::NoHeader),
        (
            text.replace("v1", "v2"),
            ReceiptTextError::Version("nook deletion receipt v2".into()),
        ),
        (format!("{text}\n{text}"), ReceiptTextError::MoreThanOne),
        (format!("{text}x"), ReceiptTextError::Line("x".into())),
        (
            format!("{text}note: kept"),
            ReceiptTextError::UnknownField("note".into()),
        ),
        (
            format!("{text}{}", line("mailbox")),
            ReceiptTextError::Repeated("mailbox"),
        ),
        (without("signature"), ReceiptTextError::Missing("signature")),
        (
            text.replace("relay: nook://", "relay: http://"),
            ReceiptTextError::Field("relay"),
        ),
        (
            text.replace(line("mailbox"), "mailbox: 00"),
            ReceiptTextError::Field("mailbox"),
        ),
        (
            text.replace("2023-11-14T23:03:20Z", "2023-11-14 23:03:20"),
            ReceiptTextError::Field("closed-at"),
        ),
        (
            text.replace("envelopes-deleted: 3", "envelopes-deleted: 03"),
            ReceiptTextError::Field("envelopes-deleted"),
        ),
        (
            text.replace("envelopes-deleted: 3", "envelopes-deleted: -3"),
            ReceiptTextError::Field("envelopes-deleted"),
        ),
        (
            format!("{}g", text.trim_end()),
            ReceiptTextError::Field("signature"),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(
            input.parse::<PortableReceipt>().err(),
            Some(want.clone()),
            "{input}"
        );
        assert!(!want.to_string().is_empty());
    }
    // After the block (an empty line ends it) anything but another receipt is ignored.
    assert_eq!(
        format!("{text}\nnote: kept")
            .parse::<PortableReceipt>()
            .unwrap(),
        p
    );
}

#[test]
fn a_portable_receipt_is_valid_only_as_signed_by_the_pinned_key() {
    let (relay, p) = portable_receipt();
    p.verify().unwrap();
    let other = RelayIdentity::generate(&mut rng());
    let mut q = p.clone();
    q.envelopes_deleted = 2;
    assert_eq!(q.verify(), Err(ReceiptError::BadSignature));
    let mut q = p.clone();
    q.closed_at += 1;
    assert_eq!(q.verify(), Err(ReceiptError::BadSignature));
    let mut q = p.clone();
    q.mailbox.0[0] ^= 1;
    assert_eq!(q.verify(), Err(ReceiptError::BadSignature));
    let mut q = p.clone();
    q.signature.0[63] ^= 0x10;
    assert!(q.verify().is_err());
    // Another relay's key, however well it signs, is not the pinned one...
    let mut q = p.clone();
    q.relay_key = other.public();
    q.signature = other
        .sign_receipt(MB, p.closed_at, p.envelopes_deleted)
        .signature;
    assert_eq!(q.verify(), Err(ReceiptError::WrongKey));
    // ...unless the address is changed too: then it is that relay's receipt.
    q.relay.fingerprint = Fingerprint::of_key(&other.public().0);
    q.verify().unwrap();
    // Host and port are where the relay was; nothing signs them.
    let mut q = p.clone();
    q.relay.port = 1;
    q.verify().unwrap();
    assert_eq!(
        p.receipt(),
        relay.sign_receipt(MB, p.closed_at, p.envelopes_deleted)
    );
    // Every one-character change of the text either does not parse or does not
    // verify, unless it only changes the unsigned host or port. (One replacement per
    // position: a verification costs milliseconds in a debug build.)
    let text = p.to_text();
    for (pos, original) in text.char_indices() {
        let r = if original == '1' { '2' } else { '1' };
        let mut changed = text.clone();
        changed.replace_range(pos..pos + 1, r.encode_utf8(&mut [0; 4]));
        if let Ok(q) = changed.parse::<PortableReceipt>()
            && q.verify().is_ok()
        {
            assert_eq!(q.relay.fingerprint, p.relay.fingerprint, "{changed}");
            let same = PortableReceipt {
                relay: p.relay.clone(),
                ..q
            };
            assert_eq!(same, p, "{changed}");
        }
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
    let sealed = seal_pairwise(
        &mut r,
        &alice,
        &bob.public().agreement,
        &bob.kem_public(),
        &MB,
        b"chain",
    )
    .unwrap();
    assert_eq!(
        sealed.len(),
        1120 + 5 + 16,
        "X-Wing ciphertext, then the AEAD"
    );
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
    // A small-order key is refused rather than yielding a predictable key: as the
    // agreement key, or as the X25519 half of the X-Wing key.
    assert_eq!(
        seal_pairwise(&mut r, &alice, &[0u8; 32], &bob.kem_public(), &MB, b"x").err(),
        Some(CryptoError::BadKey)
    );
    let mut weak = bob.kem_public();
    weak[1184..].fill(0);
    assert_eq!(
        seal_pairwise(&mut r, &alice, &bob.public().agreement, &weak, &MB, b"x").err(),
        Some(CryptoError::BadKey)
    );
    // Sealed to eve's X-Wing key under bob's agreement key: bob cannot open it (the
    // key needs both halves), nor can eve (the static DH is bob's).
    let crossed = seal_pairwise(
        &mut r,
        &alice,
        &bob.public().agreement,
        &eve.kem_public(),
        &MB,
        b"x",
    )
    .unwrap();
    assert!(open_pairwise(&bob, &alice.public().agreement, &MB, &crossed).is_err());
    assert!(open_pairwise(&eve, &alice.public().agreement, &MB, &crossed).is_err());
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
        envelope_key: [0; 32],
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
        schedule: None,
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
    let seen = vec![Seen {
        seat: 1,
        epoch: 0,
        next: 7,
    }];
    let f = Farewell::new(&id, &MB, seen).unwrap();
    assert_eq!(f.sender, id.public().pseudonym);
    assert!(f.verify(&MB).is_ok());
    assert!(f.verify(&MailboxId([0; 16])).is_err());
    // The summary is signed: a relay cannot change what the closer saw.
    let mut altered = f.clone();
    altered.seen[0].next = 5;
    assert!(altered.verify(&MB).is_err());
    // And bounded.
    let long = vec![f.seen[0]; 65];
    assert!(Farewell::new(&id, &MB, long).is_err());
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
