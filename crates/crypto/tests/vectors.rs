//! The test vectors of `protocol-spec.md`, computed from fixed inputs and checked against
//! the spec both ways: every vector computed here must appear in the spec with the same
//! value, and every vector in the spec must be computed here. Drift in either the code or
//! the spec fails this test.
//!
//! The spec holds the vectors in fenced blocks tagged `vectors`. Each line is
//! `name = value` (lowercase hex, or text for the few text vectors); a long hex value is
//! written as `name =` followed by indented continuation lines; `#` starts a comment line.
//!
//! To regenerate the blocks after a deliberate change:
//! `NOOK_PRINT_VECTORS=1 cargo test -p nook-crypto --test vectors -- --nocapture`
//!
//! Besides the crates' own API, some values are recomputed here from the primitives as
//! the spec describes them (HKDF, X25519, ChaCha20-Poly1305, Ed25519), so the spec's
//! prose is checked too, not only the code against itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, XChaCha20Poly1305, XNonce};
use nook_crypto::auth::{
    AuthOp, PortableReceipt, RelayIdentity, params_digest, receipt_transcript,
    relay_auth_transcript, sign_relay_auth, verify_receipt, verify_relay_auth,
};
use nook_crypto::board::{
    Answer, Board, BoxKey, Listing, SeatRequest, argon2id, board_salt, normalize_phrase,
    open_answer, open_request, seal_answer_with, seal_request_with,
};
use nook_crypto::chain::{ChainState, ReceivingChain, SendingChain, step};
use nook_crypto::identity::verify;
use nook_crypto::kdf::{hkdf32, sha256};
use nook_crypto::message::{
    Announce, Content, Direct, DirectBody, FILE_CHUNK_LEN, Farewell, Inner, MAX_FILE_CHUNKS,
    MAX_SEEN, Pattern, Seen, Welcome, WelcomeParams, open_group, seal_group,
};
use nook_crypto::padding::pad;
use nook_crypto::rotation::{follow, rotation_transcript};
use nook_crypto::seal::{
    ENVELOPE_OVERHEAD, open_pairwise, open_welcome, seal_pairwise_with, seal_welcome,
};
use nook_crypto::{EnvelopeKey, Fingerprint, Invite, Purpose, RelayAddr, SeatSecret, TalkIdentity};
use nook_proto::codec::{HEADER_LEN, decode_body, encode_frame, encode_value};
use nook_proto::{Ask, ListingId, ListingView, PendingRequest, Post, RequestId};
use nook_proto::{
    Auth, ClientFrame, Close, ClosePolicy, Create, CreateToken, Envelope, EnvelopeKind, ErrorCode,
    ErrorDetail, ErrorFrame, HelloOk, Join, MailboxId, Outcome, Push, Put, Receipt, Request,
    Response, RotationStatement, SeatOffer, Seq, ServerFrame, TalkParams, TalkPhase, TalkStatus,
};
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../protocol-spec.md");

/// Hex characters per line when a value is wrapped (32 bytes).
const WRAP: usize = 64;

// ---- fixed inputs -------------------------------------------------------------------

/// `start, start + 1, …` (wrapping), `N` bytes.
fn counting<const N: usize>(start: u8) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        // N ≤ 128 here, so the index fits a byte.
        *b = start.wrapping_add(u8::try_from(i).expect("vector inputs are short"));
    }
    out
}

const MAILBOX: MailboxId = MailboxId([0x6d; 16]);
const TALK_KEY: [u8; 32] = [0x54; 32];
/// The randomness of the X-Wing encapsulation of the pairwise vector (ML-KEM's 32
/// bytes, then X25519's 32).
const KEM_RANDOMNESS: [u8; 64] = [0x45; 64];
/// Bob's sending envelope keys: with his first chain, and after the rotation.
const SENDER_ENVELOPE_KEY: [u8; 32] = [0x53; 32];
const ROTATED_ENVELOPE_KEY: [u8; 32] = [0x73; 32];
const ENVELOPE_NONCE: [u8; 24] = [0x4e; 24];
const CHAIN_KEY: [u8; 32] = [0x43; 32];
const ROTATED_CHAIN_KEY: [u8; 32] = [0x4b; 32];
const RELAY_SEED: [u8; 32] = [0x52; 32];
/// The seed of the key the relay rotates to (§11.12).
const ROTATED_RELAY_SEED: [u8; 32] = [0x72; 32];
const CHALLENGE: [u8; 32] = [0x63; 32];
const HOST: &str = "relay.example";
const PORT: u16 = 4433;
/// The 4-byte stand-in for sealed blobs inside frame vectors.
const PLACEHOLDER: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];
const NOW: u64 = 1_700_000_000;
const EXPIRES_AT: u64 = NOW + 3600;
const SENT_AT_MS: u64 = 1_700_000_000_123;
const PING_NONCE: u64 = 0x0123_4567_89ab_cdef;
/// When the relay of the vectors rotates its key, and when it retires.
const ROTATED_AT: u64 = NOW + 1000;
const RETIRING_AT: u64 = NOW + 86_400;

fn seat_secret_bytes() -> [u8; 32] {
    counting(0x00)
}
fn alice_bytes() -> [u8; 128] {
    counting(0x20)
}
fn bob_bytes() -> [u8; 128] {
    counting(0x80)
}

// ---- the vector set -----------------------------------------------------------------

enum Value {
    Hex(Vec<u8>),
    Text(String),
}

struct Group {
    title: &'static str,
    items: Vec<(String, Value)>,
}

#[derive(Default)]
struct Vectors {
    groups: Vec<Group>,
}

impl Vectors {
    fn group(&mut self, title: &'static str) {
        self.groups.push(Group {
            title,
            items: Vec::new(),
        });
    }
    fn hex(&mut self, name: &str, bytes: impl AsRef<[u8]>) {
        self.push(name, Value::Hex(bytes.as_ref().to_vec()));
    }
    fn text(&mut self, name: &str, text: impl Into<String>) {
        self.push(name, Value::Text(text.into()));
    }
    fn push(&mut self, name: &str, value: Value) {
        let group = self.groups.last_mut().expect("a group is opened first");
        group.items.push((name.to_owned(), value));
    }

    /// `name → value` as the spec writes them (wrapped hex joined).
    fn flat(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (name, value) in self.groups.iter().flat_map(|g| &g.items) {
            let rendered = match value {
                Value::Hex(b) => hex::encode(b),
                Value::Text(t) => t.clone(),
            };
            let previous = out.insert(name.clone(), rendered);
            assert!(previous.is_none(), "vector {name} is computed twice");
        }
        out
    }

    /// The fenced blocks to paste into the spec, one per group.
    fn render(&self) -> String {
        let mut out = String::new();
        for g in &self.groups {
            let _ = writeln!(out, "```vectors\n# {}", g.title);
            for (name, value) in &g.items {
                match value {
                    Value::Text(t) => {
                        let _ = writeln!(out, "{name} = {t}");
                    }
                    Value::Hex(b) => {
                        let h = hex::encode(b);
                        if h.len() <= WRAP {
                            let _ = writeln!(out, "{name} = {h}");
                        } else {
                            let _ = writeln!(out, "{name} =");
                            for chunk in h.as_bytes().chunks(WRAP) {
                                let line = std::str::from_utf8(chunk).expect("hex is ASCII");
                                let _ = writeln!(out, "    {line}");
                            }
                        }
                    }
                }
            }
            out.push_str("```\n\n");
        }
        out
    }
}

/// Reads every `vectors` block of the spec.
fn parse_spec(spec: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut in_block = false;
    let mut last: Option<String> = None;
    for (n, line) in spec.lines().enumerate() {
        let n = n + 1;
        if !in_block {
            if line.trim_end() == "```vectors" {
                in_block = true;
                last = None;
            }
            continue;
        }
        if line.trim_end() == "```" {
            in_block = false;
            continue;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let name = last
                .as_ref()
                .ok_or(format!("line {n}: continuation line without a vector"))?;
            let value = out.get_mut(name).ok_or(format!("line {n}: lost vector"))?;
            value.push_str(trimmed);
            continue;
        }
        let (name, value) = trimmed
            .split_once('=')
            .ok_or(format!("line {n}: expected `name = value`"))?;
        let name = name.trim().to_owned();
        if name.is_empty() {
            return Err(format!("line {n}: empty vector name"));
        }
        if out.insert(name.clone(), value.trim().to_owned()).is_some() {
            return Err(format!("line {n}: vector {name} appears twice"));
        }
        last = Some(name);
    }
    if in_block {
        return Err("a vectors block is not closed".to_owned());
    }
    Ok(out)
}

fn compute() -> Vectors {
    let mut v = Vectors::default();

    let seat = SeatSecret::from_bytes(seat_secret_bytes());
    let alice = TalkIdentity::from_bytes(&alice_bytes());
    let bob = TalkIdentity::from_bytes(&bob_bytes());
    let relay = RelayIdentity::from_seed(&RELAY_SEED);
    let (alice_pub, bob_pub) = (alice.public(), bob.public());

    v.group("fixed inputs");
    v.hex("input.seat_secret", seat_secret_bytes());
    v.hex("input.alice", alice_bytes());
    v.hex("input.bob", bob_bytes());
    v.hex("input.talk_key", TALK_KEY);
    v.hex("input.kem_randomness", KEM_RANDOMNESS);
    v.hex("input.sender_envelope_key", SENDER_ENVELOPE_KEY);
    v.hex("input.rotated_envelope_key", ROTATED_ENVELOPE_KEY);
    v.hex("input.envelope_nonce", ENVELOPE_NONCE);
    v.hex("input.chain_key", CHAIN_KEY);
    v.hex("input.rotated_chain_key", ROTATED_CHAIN_KEY);
    v.hex("input.relay_seed", RELAY_SEED);
    v.hex("input.challenge", CHALLENGE);
    v.hex("input.mailbox", MAILBOX.0);

    v.group("identities");
    v.hex("alice.pseudonym", alice_pub.pseudonym);
    v.hex("alice.agreement", alice_pub.agreement);
    v.hex("alice.relay_auth", alice_pub.relay_auth);
    v.hex("bob.pseudonym", bob_pub.pseudonym);
    v.hex("bob.agreement", bob_pub.agreement);
    v.hex("bob.relay_auth", bob_pub.relay_auth);
    // X-Wing (draft-connolly-cfrg-xwing-kem-06) from the last 32 bytes of the identity.
    v.hex("alice.kem", alice.kem_public());
    v.hex("bob.kem", bob.kem_public());
    v.hex("relay.public_key", relay.public().0);
    let fingerprint = Fingerprint::of_key(&relay.public().0);
    assert_eq!(fingerprint.0, sha256(&[&relay.public().0]));
    v.hex("relay.fingerprint", fingerprint.0);
    v.text("relay.fingerprint_text", fingerprint.to_text());

    v.group("invite");
    let invite = Invite {
        relay: RelayAddr {
            fingerprint,
            host: HOST.to_owned(),
            port: PORT,
        },
        mailbox: MAILBOX,
        seat_secret: seat.clone(),
    };
    let text = invite.to_text();
    let parsed: Invite = text.parse().expect("the invite parses");
    assert!(parsed == invite, "the invite round-trips");
    // The check, recomputed as the spec describes it.
    let check_input = [
        b"nook/1 invite-check".as_slice(),
        &fingerprint.0,
        &[u8::try_from(HOST.len()).expect("a short host")],
        HOST.as_bytes(),
        &PORT.to_be_bytes(),
        &MAILBOX.0,
        seat.expose(),
    ]
    .concat();
    let check = &sha256(&[&check_input])[..4];
    assert_eq!(invite.check(), check);
    let fragment = text.split_once('#').expect("a fragment").1;
    assert_eq!(
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, fragment)
            .expect("base64url"),
        [seat.expose().as_slice(), check].concat(),
        "the fragment is the seat secret, then the check"
    );
    v.text("invite", &text);
    v.hex("invite.check_input", &check_input);
    v.hex("invite.check", check);
    v.hex("invite.fingerprint", parsed.relay.fingerprint.0);
    v.text("invite.host", &parsed.relay.host);
    v.text("invite.port", parsed.relay.port.to_string());
    v.hex("invite.mailbox", parsed.mailbox.0);
    v.hex("invite.seat_secret", parsed.seat_secret.expose());
    v.text("relay_address", parsed.relay.to_string());

    v.group("seat secret derivations");
    let join_token = *seat.join_token();
    assert_eq!(join_token, *hkdf32(None, seat.expose(), b"nook/1 join"));
    v.hex("seat.join_token", join_token);
    v.hex("seat.token_hash", seat.token_hash().0);
    v.hex("seat.welcome_key", *seat.welcome_key());
    v.hex("seat.seat_seed", *seat.seat_seed());
    v.hex("seat.seat_public", seat.seat_public());
    v.hex("seat.commitment", seat.commitment());

    v.group("welcome");
    // Alice's welcome for seat 1: her announce is signed over the all-zero mailbox,
    // since the relay names the mailbox only after the welcomes are sealed.
    let creator =
        Announce::new(&alice, &MailboxId([0; 16]), 0, None, "owner-owl", None).expect("signs");
    let welcome = Welcome {
        talk_key: TALK_KEY,
        seat: 1,
        params: WelcomeParams {
            seats: 2,
            quorum: 2,
            ttl_secs: 3600,
            close: ClosePolicy::Owner,
            created_at: NOW,
        },
        creator,
        commitments: vec![seat.commitment()],
        pattern: Pattern::Plain,
    };
    let welcome_plain = welcome.encode().expect("encodes");
    let sealed_welcome = seal_welcome(&seat, &welcome_plain).expect("welcome seals");
    let by_hand = ChaCha20Poly1305::new(&Key::from(*seat.welcome_key()))
        .decrypt(
            &Nonce::default(),
            Payload {
                msg: &sealed_welcome,
                aad: b"nook/1 aad-welcome",
            },
        )
        .expect("the welcome opens as the spec describes");
    assert_eq!(by_hand, pad(&welcome_plain, 16).expect("pads"));
    let opened = open_welcome(&seat, &sealed_welcome).expect("opens");
    let back = Welcome::decode(&opened).expect("decodes");
    back.creator
        .verify(&MailboxId([0; 16]), &back.commitments)
        .expect("the creator's announce verifies over the zero mailbox");
    assert!(back == welcome);
    v.hex("welcome.creator_signature", welcome.creator.signature);
    v.hex("welcome.plaintext", welcome_plain.as_slice());
    v.hex("welcome.sealed", &sealed_welcome);
    // Patterns (spec §20.2) are appended: a welcome sealed before them, which ends
    // at the commitments, still decodes, as a plain talk.
    assert_eq!(welcome_plain.last(), Some(&0), "Plain is variant 0");
    let before = Welcome::decode(&welcome_plain[..welcome_plain.len() - 1]).expect("decodes");
    assert!(before == welcome);
    let market = Pattern::Market { offer_limit: 1 };
    let market_bytes = encode_value(&market).expect("encodes");
    v.hex("welcome.pattern_market", &market_bytes);

    v.group("pairwise sealing (bob to alice, after a rotation)");
    let sender_key = DirectBody::SenderKey {
        chain: ChainState {
            epoch: 1,
            index: 0,
            chain_key: ROTATED_CHAIN_KEY,
            envelope_key: ROTATED_ENVELOPE_KEY,
        },
    };
    let pairwise_plain = sender_key.encode().expect("encodes");
    let alice_kem = alice.kem_public();
    let sealed = seal_pairwise_with(
        &KEM_RANDOMNESS,
        &bob,
        &alice_pub.agreement,
        &alice_kem,
        &MAILBOX,
        &pairwise_plain,
    )
    .expect("pairwise seals");
    // The X-Wing encapsulation as the draft defines it, by the x-wing crate alone.
    let ek = x_wing::EncapsulationKey::try_from(alice_kem.as_slice()).expect("a key");
    let (kem_ct, kem_ss) =
        ek.encapsulate_deterministic(&x_wing::kem::common::array::Array::from(KEM_RANDOMNESS));
    let alice_kem_seed: [u8; 32] = alice_bytes()[96..].try_into().expect("32 bytes");
    let decapsulated = x_wing::kem::Decapsulate::decapsulate(
        &x_wing::DecapsulationKey::from(alice_kem_seed),
        &kem_ct,
    );
    assert_eq!(decapsulated, kem_ss);
    let alice_x = XPublic::from(alice_pub.agreement);
    let bob_agreement: [u8; 32] = bob_bytes()[32..64].try_into().expect("32 bytes");
    let bob_x = StaticSecret::from(bob_agreement);
    let dh = bob_x.diffie_hellman(&alice_x);
    let ikm = [kem_ss.as_slice(), dh.as_bytes()].concat();
    let info = [
        sha256(&[kem_ct.as_slice()]),
        bob_pub.agreement,
        alice_pub.agreement,
    ]
    .concat();
    let pairwise_key = hkdf32(Some(b"nook/1 pairwise"), &ikm, &info);
    let by_hand = ChaCha20Poly1305::new(&Key::from(*pairwise_key))
        .decrypt(
            &Nonce::default(),
            Payload {
                msg: &sealed[1120..],
                aad: &MAILBOX.0,
            },
        )
        .expect("the pairwise blob opens as the spec describes");
    assert_eq!(by_hand, pairwise_plain.as_slice());
    assert_eq!(&sealed[..1120], kem_ct.as_slice());
    let opened = open_pairwise(&alice, &bob_pub.agreement, &MAILBOX, &sealed).expect("opens");
    assert_eq!(opened.as_slice(), pairwise_plain.as_slice());
    v.hex("pairwise.sender_agreement", bob_pub.agreement);
    v.hex("pairwise.recipient_agreement", alice_pub.agreement);
    v.hex("pairwise.kem_ciphertext", kem_ct.as_slice());
    v.hex("pairwise.kem_shared", kem_ss.as_slice());
    v.hex("pairwise.dh", dh.as_bytes());
    v.hex("pairwise.key", *pairwise_key);
    v.hex("pairwise.plaintext", pairwise_plain.as_slice());
    v.hex("pairwise.sealed", &sealed);
    let direct = Inner::Direct(Direct {
        from: bob_pub.agreement,
        to: alice_pub.agreement,
        sealed,
    });
    v.hex("direct.inner", direct.encode().expect("encodes"));

    v.group("chain step");
    let (mk0, ck1) = step(&CHAIN_KEY);
    assert_eq!(mk0, *hkdf32(None, &CHAIN_KEY, b"nook/1 msg"));
    assert_eq!(ck1, *hkdf32(None, &CHAIN_KEY, b"nook/1 chain"));
    v.hex("chain.mk0", mk0);
    v.hex("chain.ck1", ck1);

    v.group("group message (bob, epoch 0, index 0)");
    // Bob had received alice's chain 0 up to message 3 (so expects index 3 next).
    let content = Content::Text {
        sent_at_ms: SENT_AT_MS,
        text: "hello, nook".to_owned(),
        seen: vec![Seen {
            seat: 0,
            epoch: 0,
            next: 3,
        }],
    };
    let state = ChainState {
        epoch: 0,
        index: 0,
        chain_key: CHAIN_KEY,
        envelope_key: SENDER_ENVELOPE_KEY,
    };
    let mut sending = SendingChain::from_state(state.clone());
    let message = seal_group(&bob, &mut sending, &MAILBOX, &content).expect("seals");
    let header = encode_value(&message.header).expect("encodes");
    let aad = [b"nook/1 group-aad".as_slice(), &MAILBOX.0, &header].concat();
    let by_hand = ChaCha20Poly1305::new(&Key::from(mk0))
        .decrypt(
            &Nonce::default(),
            Payload {
                msg: &message.ciphertext,
                aad: &aad,
            },
        )
        .expect("the group message opens as the spec describes");
    let content_bytes = content.encode().expect("encodes");
    assert_eq!(by_hand, content_bytes.as_slice());
    let sig_transcript = [
        b"nook/1 group-sig".as_slice(),
        &MAILBOX.0,
        &header,
        &message.ciphertext,
    ]
    .concat();
    verify(&bob_pub.pseudonym, &sig_transcript, &message.signature)
        .expect("the signature covers what the spec says");
    let mut receiving = ReceivingChain::new(state);
    let (back, _) =
        open_group(&bob_pub.pseudonym, &mut receiving, &MAILBOX, &message).expect("opens");
    assert_eq!(back, content);
    v.hex("group.content", content_bytes.as_slice());
    v.hex("group.header", &header);
    v.hex("group.aad", &aad);
    v.hex("group.ciphertext", &message.ciphertext);
    v.hex("group.signature", message.signature);
    // The id every member computes for it: SHA-256 over the label, the sender's
    // pseudonym, epoch and index (u32 LE each), first 8 bytes.
    let id_by_hand = sha256(&[
        b"nook/1 message-id",
        &bob_pub.pseudonym,
        &0u32.to_le_bytes(),
        &0u32.to_le_bytes(),
    ]);
    assert_eq!(message.header.message_id(), id_by_hand[..8]);
    v.hex("group.message_id", message.header.message_id());
    let group_inner = Inner::Group(message).encode().expect("encodes");
    v.hex("group.inner", &group_inner);

    files(&mut v, &bob, &mk0);

    v.group("envelope (bob's chat, carrying group.inner)");
    let base_key = hkdf32(None, &TALK_KEY, b"nook/1 envelope");
    let base = EnvelopeKey::from_talk_key(&TALK_KEY);
    assert_eq!(
        base.id(),
        sha256(&[b"nook/1 envelope-id", base_key.as_slice()])[..8]
    );
    let key = EnvelopeKey::from_bytes(&SENDER_ENVELOPE_KEY);
    let key_id = sha256(&[b"nook/1 envelope-id", &SENDER_ENVELOPE_KEY]);
    assert_eq!(key.id(), key_id[..8]);
    let body = key
        .seal_with(&ENVELOPE_NONCE, &MAILBOX, Purpose::Chat, &group_inner)
        .expect("seals");
    let mut envelope_aad = b"nook/1 envelope".to_vec();
    envelope_aad.extend_from_slice(&MAILBOX.0);
    envelope_aad.push(1);
    let by_hand = XChaCha20Poly1305::new(&Key::from(SENDER_ENVELOPE_KEY))
        .decrypt(
            &XNonce::from(ENVELOPE_NONCE),
            Payload {
                msg: &body[32..],
                aad: &envelope_aad,
            },
        )
        .expect("the envelope opens as the spec describes");
    assert_eq!(by_hand, pad(&group_inner, ENVELOPE_OVERHEAD).expect("pads"));
    assert_eq!(&body[..8], &key_id[..8]);
    assert_eq!(&body[8..32], &ENVELOPE_NONCE);
    assert_eq!(body.len(), 512);
    assert_eq!(
        key.open(&MAILBOX, Purpose::Chat, &body)
            .expect("opens")
            .as_slice(),
        group_inner.as_slice()
    );
    assert!(base.open(&MAILBOX, Purpose::Chat, &body).is_err());
    v.hex("envelope.base_key", *base_key);
    v.hex("envelope.base_key_id", base.id());
    v.hex("envelope.key_id", key.id());
    v.hex("envelope.aad", &envelope_aad);
    v.hex("envelope.body", &body);

    v.group("announce (bob takes seat 1)");
    // Bob's public announcement: keys and seat, no alias, no chain.
    let announce =
        Announce::new(&bob, &MAILBOX, 1, Some(&seat.seat_seed()), "", None).expect("signs");
    announce
        .verify(&MAILBOX, &[seat.commitment()])
        .expect("the announce verifies");
    let announce_body = encode_value(&announce.body).expect("encodes");
    let announce_transcript = [b"nook/1 announce".as_slice(), &MAILBOX.0, &announce_body].concat();
    verify(
        &bob_pub.pseudonym,
        &announce_transcript,
        &announce.signature,
    )
    .expect("the signature covers what the spec says");
    verify(
        &seat.seat_public(),
        &announce_transcript,
        &announce.seat_signature,
    )
    .expect("the seat key co-signs the same bytes");
    v.hex("announce.body", &announce_body);
    v.hex("announce.signature", announce.signature);
    v.hex("announce.seat_signature", announce.seat_signature);
    v.hex(
        "announce.inner",
        Inner::Announce(Box::new(announce))
            .encode()
            .expect("encodes"),
    );
    // His Reply to alice's Intro, sealed pairwise: alias and first chain.
    let bob_chain = ChainState {
        epoch: 0,
        index: 0,
        chain_key: CHAIN_KEY,
        envelope_key: SENDER_ENVELOPE_KEY,
    };
    let reply = Announce::new(
        &bob,
        &MAILBOX,
        1,
        Some(&seat.seat_seed()),
        "quiet-otter",
        Some(&bob_chain),
    )
    .expect("signs");
    reply
        .verify(&MAILBOX, &[seat.commitment()])
        .expect("the reply's announce verifies");
    v.hex("reply.signature", reply.signature);
    v.hex(
        "reply.plaintext",
        DirectBody::Reply {
            announce: Box::new(reply),
        }
        .encode()
        .expect("encodes")
        .as_slice(),
    );

    v.group("farewell (alice closes)");
    // Alice's summary: bob's chain 0 received up to 1, her own chain 0 at 4.
    let seen = vec![
        Seen {
            seat: 1,
            epoch: 0,
            next: 1,
        },
        Seen {
            seat: 0,
            epoch: 0,
            next: 4,
        },
    ];
    let seen_bytes = encode_value(&seen).expect("encodes");
    let farewell = Farewell::new(&alice, &MAILBOX, seen).expect("signs");
    verify(
        &alice_pub.pseudonym,
        &[b"nook/1 farewell".as_slice(), &MAILBOX.0, &seen_bytes].concat(),
        &farewell.signature,
    )
    .expect("the signature covers what the spec says");
    v.hex("farewell.seen", &seen_bytes);
    v.hex("farewell.signature", farewell.signature);
    v.hex(
        "farewell.inner",
        Inner::Farewell(farewell).encode().expect("encodes"),
    );

    v.group("talk name");
    // By hand, as §11.10 says: the first 40 bits of HKDF(-, T, "nook/1 talk-name"), eight
    // 5-bit symbols from the top, in Crockford's lowercase base32, a dash after four.
    let digest = hkdf32(None, &TALK_KEY, b"nook/1 talk-name");
    let bits = digest[..5]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let alphabet = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut by_hand: String = (0..8)
        .map(|i| {
            char::from(alphabet[usize::try_from((bits >> (35 - 5 * i)) & 31).expect("five bits")])
        })
        .collect();
    by_hand.insert(4, '-');
    let name = nook_crypto::name::talk_name(&TALK_KEY);
    assert_eq!(name, by_hand);
    v.hex("talk_name.bits", &digest[..5]);
    v.text("talk_name", name);

    v.group("padding");
    let padded = pad(b"nook", ENVELOPE_OVERHEAD).expect("pads");
    assert_eq!(padded.len(), 512 - ENVELOPE_OVERHEAD);
    v.hex("padding.input", b"nook");
    v.hex("padding.output", &padded);

    v.group("relay authentication");
    let bob_member = bob.member_key();
    let join_transcript =
        relay_auth_transcript(AuthOp::Join, &CHALLENGE, &MAILBOX, &bob_member, &join_token);
    let by_hand = [
        b"nook/1 relay-auth".as_slice(),
        &[1],
        &CHALLENGE,
        &MAILBOX.0,
        &bob_member.0,
        &join_token,
    ]
    .concat();
    assert_eq!(join_transcript, by_hand);
    let join_sig = sign_relay_auth(&bob, AuthOp::Join, &CHALLENGE, &MAILBOX, &join_token);
    verify(&bob_member.0, &join_transcript, &join_sig.0).expect("verifies");
    v.hex("relay_auth.join.transcript", &join_transcript);
    v.hex("relay_auth.join.signature", join_sig.0);

    let params = TalkParams {
        seats: 2,
        quorum: 2,
        ttl_secs: 3600,
        close: ClosePolicy::Owner,
        offers: vec![SeatOffer {
            token_hash: seat.token_hash(),
            welcome: PLACEHOLDER.to_vec(),
        }],
        schedule: None,
    };
    let digest = params_digest(&params).expect("digests");
    assert_eq!(digest, sha256(&[&encode_value(&params).expect("encodes")]));
    let zero = MailboxId([0; 16]);
    let create_sig = sign_relay_auth(&alice, AuthOp::Create, &CHALLENGE, &zero, &digest);
    let auth_sig = sign_relay_auth(&bob, AuthOp::Auth, &CHALLENGE, &MAILBOX, b"");
    let leave_sig = sign_relay_auth(&bob, AuthOp::Leave, &CHALLENGE, &MAILBOX, b"");
    let farewell_digest = sha256(&[&PLACEHOLDER]);
    let close_sig = sign_relay_auth(
        &alice,
        AuthOp::Close,
        &CHALLENGE,
        &MAILBOX,
        &farewell_digest,
    );
    for (member, op, mailbox, extra, sig) in [
        (
            alice.member_key(),
            AuthOp::Create,
            zero,
            &digest[..],
            create_sig,
        ),
        (bob_member, AuthOp::Auth, MAILBOX, &[][..], auth_sig),
        (bob_member, AuthOp::Leave, MAILBOX, &[][..], leave_sig),
        (
            alice.member_key(),
            AuthOp::Close,
            MAILBOX,
            &farewell_digest[..],
            close_sig,
        ),
    ] {
        verify_relay_auth(&member, op, &CHALLENGE, &mailbox, extra, &sig).expect("verifies");
    }
    v.hex(
        "relay_auth.create.params",
        encode_value(&params).expect("encodes"),
    );
    v.hex("relay_auth.create.params_digest", digest);
    v.hex("relay_auth.create.signature", create_sig.0);
    v.hex("relay_auth.auth.signature", auth_sig.0);
    v.hex("relay_auth.leave.signature", leave_sig.0);
    v.hex("relay_auth.close.farewell_digest", farewell_digest);
    v.hex("relay_auth.close.signature", close_sig.0);

    v.group("deletion receipt");
    let receipt = relay.sign_receipt(MAILBOX, EXPIRES_AT - 600, 3);
    verify_receipt(&relay.public(), &receipt).expect("verifies");
    let transcript = receipt_transcript(&MAILBOX, receipt.closed_at, receipt.envelopes_deleted);
    let by_hand = [
        b"nook/1 receipt".as_slice(),
        &MAILBOX.0,
        &receipt.closed_at.to_le_bytes(),
        &3u64.to_le_bytes(),
    ]
    .concat();
    assert_eq!(transcript, by_hand);
    verify(&relay.public().0, &transcript, &receipt.signature.0).expect("verifies");
    v.hex("receipt.transcript", &transcript);
    v.hex("receipt.signature", receipt.signature.0);
    // The portable text form, one vector per line.
    let portable = PortableReceipt::new(invite.relay.clone(), relay.public(), &receipt);
    portable.verify().expect("the portable receipt verifies");
    let receipt_text = portable.to_text();
    let back: PortableReceipt = receipt_text.parse().expect("the text form parses");
    assert_eq!(back, portable);
    assert!(receipt_text.ends_with('\n'));
    for (i, line) in receipt_text.lines().enumerate() {
        v.text(&format!("receipt.text.{}", i + 1), line);
    }

    v.group("relay key rotation");
    let successor = RelayIdentity::from_seed(&ROTATED_RELAY_SEED);
    let rotation = relay.sign_rotation(&successor.public(), ROTATED_AT);
    let transcript = rotation_transcript(&relay.public(), &successor.public(), ROTATED_AT);
    let by_hand = [
        b"nook/1 relay-rotation".as_slice(),
        &relay.public().0,
        &successor.public().0,
        &ROTATED_AT.to_le_bytes(),
    ]
    .concat();
    assert_eq!(transcript, by_hand);
    verify(&relay.public().0, &transcript, &rotation.signature.0).expect("verifies");
    let pinned = Fingerprint::of_key(&relay.public().0);
    assert_eq!(
        follow(&pinned, &[rotation], &successor.public()),
        Ok(&[rotation][..])
    );
    v.hex("rotation.new_key", successor.public().0);
    v.hex("rotation.transcript", &transcript);
    v.hex("rotation.signature", rotation.signature.0);
    // A receipt the rotated relay signs, portable for the address of the old key.
    let after = successor.sign_receipt(MAILBOX, EXPIRES_AT - 600, 3);
    let portable = PortableReceipt::new(invite.relay.clone(), successor.public(), &after)
        .with_rotations(vec![rotation]);
    portable.verify().expect("the rotated receipt verifies");
    let rotated_text = portable.to_text();
    let back: PortableReceipt = rotated_text.parse().expect("the text form parses");
    assert_eq!(back, portable);
    for (i, line) in rotated_text.lines().enumerate() {
        v.text(&format!("rotated_receipt.text.{}", i + 1), line);
    }

    let frames = FrameInputs {
        alice: &alice,
        bob: &bob,
        relay: &relay,
        join_token,
        params,
        create_sig,
        join_sig,
        auth_sig,
        leave_sig,
        close_sig,
        receipt,
        rotation,
    };
    frames.add(&mut v);
    boards(&mut v, &fingerprint);
    cards(&mut v, &alice, &bob);
    routing(&mut v);
    market_vectors(&mut v);

    v
}

// ---- cards (§19) -----------------------------------------------------------------------

/// Alice's long-term card key seed.
const CARD_SEED: [u8; 32] = [0x64; 32];

/// Alice reveals her name and organisation to bob; then the three exchange messages.
/// The reveal's signature is recomputed from the transcript as §19.2 writes it, and its
/// envelope's size is checked to be a padding bucket like any chat envelope's.
fn cards(v: &mut Vectors, alice: &TalkIdentity, bob: &TalkIdentity) {
    use nook_crypto::card::{Card, CardKey, CardReveal, reveal_transcript};
    v.group("cards");
    v.hex("card.input.seed", CARD_SEED);
    let key = CardKey::from_seed(&CARD_SEED);
    v.hex("card.key", key.public());
    let card = Card {
        fields: vec![(0, "Dana Reyes".to_owned()), (1, "Acme GmbH".to_owned())],
    };
    let encoded = encode_value(&card).expect("encodes");
    v.hex("card.card", &encoded);
    let (a, b) = (alice.public().pseudonym, bob.public().pseudonym);
    let transcript = reveal_transcript(&MAILBOX, &a, &b, false, &card).expect("a transcript");
    assert_eq!(
        transcript.as_slice(),
        [
            b"nook/1 card-reveal".as_slice(),
            &MAILBOX.0,
            &a,
            &b,
            &[0],
            &encoded
        ]
        .concat()
    );
    v.hex("card.transcript", transcript.as_slice());
    let reveal = CardReveal::new(&key, &MAILBOX, &a, &b, card, false).expect("signs");
    let signing = ed25519_dalek::SigningKey::from_bytes(&CARD_SEED);
    assert_eq!(
        ed25519_dalek::Signer::sign(&signing, &transcript).to_bytes(),
        reveal.signature
    );
    verify(&reveal.card_key, &transcript, &reveal.signature).expect("verifies");
    reveal.verify(&MAILBOX, &a, &b).expect("verifies");
    v.hex("card.signature", reveal.signature);
    let body = DirectBody::CardReveal {
        reveal: reveal.clone(),
    };
    let plain = body.encode().expect("encodes");
    assert_eq!(DirectBody::decode(&plain).expect("decodes"), body);
    v.hex("card.reveal_plaintext", plain.as_slice());
    // The reveal as the relay sees it: a Direct inside alice's chat envelope.
    let sealed = seal_pairwise_with(
        &KEM_RANDOMNESS,
        alice,
        &bob.public().agreement,
        &bob.kem_public(),
        &MAILBOX,
        &plain,
    )
    .expect("pairwise seals");
    let inner = Inner::Direct(Direct {
        from: alice.public().agreement,
        to: bob.public().agreement,
        sealed,
    })
    .encode()
    .expect("encodes");
    let envelope = EnvelopeKey::from_bytes(&SENDER_ENVELOPE_KEY)
        .seal_with(&ENVELOPE_NONCE, &MAILBOX, Purpose::Chat, &inner)
        .expect("seals");
    assert!(nook_proto::limits::PADDING_BUCKETS.contains(&envelope.len()));
    v.text("card.reveal_envelope_len", envelope.len().to_string());
    let exchange: [u8; 16] = counting(0x30);
    let offer = DirectBody::CardOffer {
        exchange,
        fields: vec![0, 1],
        keepable: true,
    };
    let offer_plain = offer.encode().expect("encodes");
    assert_eq!(DirectBody::decode(&offer_plain).expect("decodes"), offer);
    v.hex("card.offer_plaintext", offer_plain.as_slice());
    let accept = DirectBody::CardAccept { exchange, reveal };
    let accept_plain = accept.encode().expect("encodes");
    assert_eq!(DirectBody::decode(&accept_plain).expect("decodes"), accept);
    v.hex("card.accept_plaintext", accept_plain.as_slice());
    let decline = DirectBody::CardDecline { exchange };
    v.hex(
        "card.decline_plaintext",
        decline.encode().expect("encodes").as_slice(),
    );
    // Out of limits: fields out of order, or an offer of an unknown field.
    let bad = DirectBody::CardOffer {
        exchange,
        fields: vec![1, 0],
        keepable: false,
    };
    assert!(DirectBody::decode(&bad.encode().expect("encodes")).is_err());
}

// ---- private routing (§18) ---------------------------------------------------------------

/// The route stream's header and answers (§18.2): a `Forward` to `relay.example:4433`,
/// `Deliver`, `Ready`, and each refusal with the reference relay's message.
/// A market's promotion (spec §20.2): the `DirectBody` the owner seals pairwise to the
/// offerer it takes into the group.
fn market_vectors(v: &mut Vectors) {
    v.group("market (§20.2)");
    let promote = DirectBody::Promote {
        talk_key: nook_crypto::secret::Secret32::from_bytes(TALK_KEY),
        chain: ChainState {
            epoch: 0,
            index: 3,
            chain_key: CHAIN_KEY,
            envelope_key: SENDER_ENVELOPE_KEY,
        },
    };
    let bytes = promote.encode().expect("encodes");
    assert_eq!(&bytes[..2], &[7, 0x54], "variant 7, then the talk key");
    assert_eq!(DirectBody::decode(&bytes).expect("decodes"), promote);
    v.hex("market.promote", bytes.as_slice());
    v.group("panel (§20.3)");
    let speaker = DirectBody::Speaker {
        seat: 1,
        pseudonym: [0x50; 32],
        alias: "quiet-otter".into(),
        chain: ChainState {
            epoch: 0,
            index: 3,
            chain_key: CHAIN_KEY,
            envelope_key: SENDER_ENVELOPE_KEY,
        },
    };
    let bytes = speaker.encode().expect("encodes");
    assert_eq!(
        &bytes[..3],
        &[8, 1, 0x50],
        "variant 8, seat 1, the pseudonym"
    );
    assert_eq!(DirectBody::decode(&bytes).expect("decodes"), speaker);
    v.hex("panel.speaker", bytes.as_slice());
    let panel = encode_value(&Pattern::Panel { speakers: 2 }).expect("encodes");
    assert_eq!(panel, [2, 2]);
    v.hex("panel.pattern", panel);
}

fn routing(v: &mut Vectors) {
    use nook_proto::route::{RouteReply, RouteRequest, encode_route};
    use nook_proto::{ErrorCode, ErrorFrame};
    v.group("routing");
    let forward = RouteRequest::Forward {
        host: "relay.example".into(),
        port: 4433,
    };
    v.hex(
        "route.request.forward",
        encode_route(&forward).expect("encodes"),
    );
    v.hex(
        "route.request.deliver",
        encode_route(&RouteRequest::Deliver).expect("encodes"),
    );
    v.hex(
        "route.reply.ready",
        encode_route(&RouteReply::Ready).expect("encodes"),
    );
    let refused = |code, message: &str| {
        encode_route(&RouteReply::Refused(ErrorFrame::new(code, message))).expect("encodes")
    };
    v.hex(
        "route.reply.forward_refused",
        refused(ErrorCode::ForwardRefused, "no forwarding"),
    );
    v.hex(
        "route.reply.forward_limit",
        refused(ErrorCode::ForwardLimit, "at limit"),
    );
    v.hex(
        "route.reply.destination_unreachable",
        refused(ErrorCode::DestinationUnreachable, "no answer"),
    );
}

// ---- boards (§17) ----------------------------------------------------------------------

const PHRASE: &str = "  Procurement   BERLIN ";
const LISTING_ID: ListingId = ListingId([0x4c; 16]);
const REQUEST_ID: RequestId = RequestId([0x51; 16]);
const LISTING_SECRET: [u8; 32] = [0x6c; 32];
const REPLY_SECRET: [u8; 32] = [0x72; 32];
const ANSWER_EPHEMERAL: [u8; 32] = [0x61; 32];
/// The ephemeral secret of the seat request vector.
const REQUEST_EPHEMERAL: [u8; 32] = [0x45; 32];

/// The file contents (spec §12.7): an offer and a chunk as bincode, and the worst
/// case of a full chunk, which must still fit the largest padding bucket.
fn files(v: &mut Vectors, bob: &TalkIdentity, _mk0: &[u8; 32]) {
    v.group("files");
    let file_id: [u8; 16] = counting(0x40);
    let offer = Content::FileOffer {
        sent_at_ms: SENT_AT_MS,
        file_id,
        name: "notes.txt".to_owned(),
        size: 5,
        chunks: 1,
        sha256: sha256(&[b"hello"]),
        seen: vec![Seen {
            seat: 0,
            epoch: 0,
            next: 3,
        }],
    };
    let offer_bytes = offer.encode().expect("encodes");
    assert_eq!(Content::decode(&offer_bytes).expect("decodes"), offer);
    let chunk = Content::FileChunk {
        file_id,
        index: 0,
        bytes: b"hello".to_vec(),
        seen: Vec::new(),
    };
    let chunk_bytes = chunk.encode().expect("encodes");
    assert_eq!(Content::decode(&chunk_bytes).expect("decodes"), chunk);
    v.hex("file.offer", offer_bytes.as_slice());
    v.hex("file.chunk", chunk_bytes.as_slice());

    // The worst case: a full chunk with the largest index, a full seen list of the
    // largest counters, under a chain whose epoch and index take the most bytes.
    let worst = Content::FileChunk {
        file_id,
        index: MAX_FILE_CHUNKS - 1,
        bytes: vec![0xa5; FILE_CHUNK_LEN],
        seen: (0..MAX_SEEN)
            .map(|seat| Seen {
                seat: seat as u8,
                epoch: u32::MAX,
                next: u32::MAX,
            })
            .collect(),
    };
    let mut sending = SendingChain::from_state(ChainState {
        epoch: u32::MAX,
        index: u32::MAX - 1,
        chain_key: CHAIN_KEY,
        envelope_key: SENDER_ENVELOPE_KEY,
    });
    let message = seal_group(bob, &mut sending, &MAILBOX, &worst).expect("seals");
    let inner = Inner::Group(message).encode().expect("encodes");
    let largest = nook_proto::limits::PADDING_BUCKETS[8];
    let body = EnvelopeKey::from_bytes(&SENDER_ENVELOPE_KEY)
        .seal_with(&ENVELOPE_NONCE, &MAILBOX, Purpose::Chat, &inner)
        .expect("the worst-case chunk fits the largest bucket");
    assert_eq!(body.len(), largest);
    assert_eq!(
        inner.len(),
        largest - ENVELOPE_OVERHEAD - 1,
        "FILE_CHUNK_LEN is exactly what the worst case leaves"
    );
    // What the largest bucket leaves for the inner message (ENVELOPE_OVERHEAD and the
    // padding marker), and what the worst case of a full chunk takes of it.
    v.text("file.chunk_len", FILE_CHUNK_LEN.to_string());
    v.text(
        "file.max_inner_len",
        (largest - ENVELOPE_OVERHEAD - 1).to_string(),
    );
    v.text("file.worst_chunk_inner_len", inner.len().to_string());
}

fn boards(v: &mut Vectors, fingerprint: &Fingerprint) {
    v.group("boards");
    v.text("board.input.phrase", format!("{PHRASE:?}"));
    let normalized = normalize_phrase(PHRASE).expect("a phrase");
    v.text("board.phrase", normalized.as_str());
    let salt = board_salt(fingerprint);
    assert_eq!(salt, sha256(&[b"nook/1 board-salt", &fingerprint.0]));
    v.hex("board.salt", salt);
    // The real parameters: 64 MiB, 3 passes, 1 lane, Argon2id v1.3, 32 bytes out.
    let seed = argon2id(normalized.as_bytes(), &salt);
    v.hex("board.seed", *seed);
    let board = Board::derive(PHRASE, fingerprint).expect("a phrase");
    assert_eq!(board.id.0, *hkdf32(None, &*seed, b"nook/1 board-id"));
    v.hex("board.id", board.id.0);
    let board_key = hkdf32(None, &*seed, b"nook/1 board-key");
    v.hex("board.key", *board_key);

    let listing_key = BoxKey::from_bytes(LISTING_SECRET);
    let listing = Listing {
        title: "Tender review".into(),
        about: "Two seats for people who read tenders.".into(),
        tags: vec!["berlin".into(), "procurement".into()],
        owner_key: listing_key.public(),
    };
    v.hex("board.input.listing_id", LISTING_ID.0);
    v.hex("board.input.listing_secret", LISTING_SECRET);
    v.hex("board.listing.owner_key", listing.owner_key);
    v.hex(
        "board.listing.plain",
        encode_value(&listing).expect("encodes"),
    );
    let sealed = board
        .seal_listing_with(&ENVELOPE_NONCE, &LISTING_ID, &listing)
        .expect("seals");
    // The prose: XChaCha20-Poly1305 under the board key, AAD label ‖ board ‖ listing.
    let aad = [
        b"nook/1 board-listing".as_slice(),
        &board.id.0,
        &LISTING_ID.0,
    ]
    .concat();
    let padded = pad(&encode_value(&listing).expect("encodes"), 24 + 16).expect("pads");
    let reference = XChaCha20Poly1305::new(&Key::from(*board_key))
        .encrypt(
            &XNonce::from(ENVELOPE_NONCE),
            Payload {
                msg: &padded,
                aad: &aad,
            },
        )
        .expect("seals");
    assert_eq!(&sealed[24..], &reference[..]);
    v.hex("board.listing.sealed", &sealed);
    assert_eq!(
        board.open_listing(&LISTING_ID, &sealed).expect("opens"),
        listing
    );

    let reply = BoxKey::from_bytes(REPLY_SECRET);
    let request = SeatRequest {
        reply_key: reply.public(),
        alias: "kim".into(),
        note: "I review tenders weekly".into(),
    };
    v.hex("board.input.request_id", REQUEST_ID.0);
    v.hex("board.input.reply_secret", REPLY_SECRET);
    v.hex("board.request.reply_key", reply.public());
    let sealed_req = seal_request_with(
        &REQUEST_EPHEMERAL,
        &listing.owner_key,
        &LISTING_ID,
        &REQUEST_ID,
        &request,
    )
    .expect("seals");
    // The prose: HKDF(salt label, DH(e, L), E ‖ L ‖ listing id), ChaCha20-Poly1305,
    // zero nonce, AAD label ‖ listing id ‖ request id.
    let e = StaticSecret::from(REQUEST_EPHEMERAL);
    let e_pub = XPublic::from(&e).to_bytes();
    let dh = e.diffie_hellman(&XPublic::from(listing.owner_key));
    let info = [e_pub.as_slice(), &listing.owner_key, &LISTING_ID.0].concat();
    let key = hkdf32(Some(b"nook/1 board-request"), dh.as_bytes(), &info);
    v.hex("board.request.key", *key);
    let aad = [
        b"nook/1 board-request".as_slice(),
        &LISTING_ID.0,
        &REQUEST_ID.0,
    ]
    .concat();
    let padded = pad(&encode_value(&request).expect("encodes"), 32 + 16).expect("pads");
    let reference = ChaCha20Poly1305::new(&Key::from(*key))
        .encrypt(
            &Nonce::default(),
            Payload {
                msg: &padded,
                aad: &aad,
            },
        )
        .expect("seals");
    assert_eq!(&sealed_req[..32], &e_pub);
    assert_eq!(&sealed_req[32..], &reference[..]);
    v.hex("board.request.sealed", &sealed_req);
    assert_eq!(
        open_request(&listing_key, &LISTING_ID, &REQUEST_ID, &sealed_req).expect("opens"),
        request
    );

    let answer = Answer::Admit {
        invite: "nook://relay.example:4433/example-invite".into(),
    };
    v.hex("board.input.answer_ephemeral", ANSWER_EPHEMERAL);
    let sealed_answer =
        seal_answer_with(&ANSWER_EPHEMERAL, &reply.public(), &REQUEST_ID, &answer).expect("seals");
    let e = StaticSecret::from(ANSWER_EPHEMERAL);
    let e_pub = XPublic::from(&e).to_bytes();
    let dh = e.diffie_hellman(&XPublic::from(reply.public()));
    let info = [e_pub.as_slice(), &reply.public(), &REQUEST_ID.0].concat();
    let key = hkdf32(Some(b"nook/1 board-answer"), dh.as_bytes(), &info);
    v.hex("board.answer.key", *key);
    v.hex("board.answer.sealed", &sealed_answer);
    assert_eq!(
        open_answer(&reply, &REQUEST_ID, &sealed_answer).expect("opens"),
        answer
    );
    let decline = seal_answer_with(
        &ANSWER_EPHEMERAL,
        &reply.public(),
        &REQUEST_ID,
        &Answer::Decline,
    )
    .expect("seals");
    assert_eq!(decline.len(), sealed_answer.len());
    v.hex("board.decline.sealed", &decline);

    v.group("frames: boards");
    let requests = [
        (
            "post",
            Request::Post(Post {
                mailbox: MAILBOX,
                board: board.id,
                listing: LISTING_ID,
                body: PLACEHOLDER.to_vec(),
                until: Some(EXPIRES_AT),
                keep_open: false,
            }),
        ),
        (
            "unpost",
            Request::Unpost {
                mailbox: MAILBOX,
                listing: LISTING_ID,
            },
        ),
        (
            "browse",
            Request::Browse {
                board: board.id,
                after: Some(LISTING_ID),
            },
        ),
        (
            "ask",
            Request::Ask(Ask {
                listing: LISTING_ID,
                request: REQUEST_ID,
                body: PLACEHOLDER.to_vec(),
            }),
        ),
        ("requests", Request::Requests { mailbox: MAILBOX }),
        (
            "answer",
            Request::Answer {
                mailbox: MAILBOX,
                request: REQUEST_ID,
                body: PLACEHOLDER.to_vec(),
            },
        ),
        (
            "ask_state",
            Request::AskState {
                request: REQUEST_ID,
            },
        ),
        (
            "withdraw",
            Request::Withdraw {
                request: REQUEST_ID,
            },
        ),
    ];
    for (name, request) in requests {
        v.hex(
            &format!("frame.request.{name}"),
            client_frame(&ClientFrame { id: 7, request }),
        );
    }
    let responses = [
        ("posted", Response::Posted),
        ("unposted", Response::Unposted),
        (
            "listings",
            Response::Listings {
                items: vec![ListingView {
                    listing: LISTING_ID,
                    body: PLACEHOLDER.to_vec(),
                    members: 1,
                    seats: 3,
                    quorum: 2,
                    open: false,
                    closes_at: EXPIRES_AT,
                }],
                more: false,
            },
        ),
        ("asked", Response::Asked),
        (
            "requests",
            Response::Requests {
                items: vec![PendingRequest {
                    listing: LISTING_ID,
                    request: REQUEST_ID,
                    body: PLACEHOLDER.to_vec(),
                    asked_at: NOW,
                }],
            },
        ),
        ("answered", Response::Answered),
        (
            "ask_state",
            Response::AskState {
                answer: Some(PLACEHOLDER.to_vec()),
            },
        ),
        ("withdrawn", Response::Withdrawn),
    ];
    for (name, response) in responses {
        v.hex(
            &format!("frame.response.{name}"),
            server_frame(&ServerFrame::Response {
                id: 7,
                result: Outcome::Ok(response),
            }),
        );
    }
    v.hex(
        "frame.push.seat_requested",
        server_frame(&ServerFrame::Push(Push::SeatRequested { mailbox: MAILBOX })),
    );
    v.hex(
        "frame.error.board_full",
        server_frame(&ServerFrame::Response {
            id: 7,
            result: Outcome::Err(ErrorFrame::new(ErrorCode::BoardFull, "")),
        }),
    );
}

/// The creation token of the vectors (spec §6.3), as its operator wrote it.
const CREATE_TOKEN_TEXT: &str = "correct horse battery staple";

struct FrameInputs<'a> {
    alice: &'a TalkIdentity,
    bob: &'a TalkIdentity,
    relay: &'a RelayIdentity,
    join_token: [u8; 32],
    params: TalkParams,
    create_sig: nook_proto::Signature,
    join_sig: nook_proto::Signature,
    auth_sig: nook_proto::Signature,
    leave_sig: nook_proto::Signature,
    close_sig: nook_proto::Signature,
    receipt: Receipt,
    rotation: RotationStatement,
}

impl FrameInputs<'_> {
    fn add(&self, v: &mut Vectors) {
        let status = |state, members| TalkStatus {
            state,
            members,
            seats: 2,
            quorum: 2,
            close: ClosePolicy::Owner,
            expires_at: EXPIRES_AT,
            left: 0,
            schedule: None,
        };
        let pending = status(TalkPhase::Pending, 1);
        let open = status(TalkPhase::Open, 2);
        let envelope = Envelope {
            seq: Seq(301),
            kind: EnvelopeKind::Chat,
            stored_at: NOW + 100,
            body: PLACEHOLDER.to_vec(),
        };

        let requests = [
            ("hello", Request::Hello { version: 1 }),
            (
                "create",
                Request::Create(Create {
                    params: self.params.clone(),
                    owner: self.alice.member_key(),
                    signature: self.create_sig,
                }),
            ),
            (
                "join",
                Request::Join(Join {
                    mailbox: MAILBOX,
                    token: self.join_token,
                    member: self.bob.member_key(),
                    signature: self.join_sig,
                }),
            ),
            (
                "auth",
                Request::Auth(Auth {
                    mailbox: MAILBOX,
                    member: self.bob.member_key(),
                    signature: self.auth_sig,
                }),
            ),
            ("subscribe", Request::Subscribe { mailbox: MAILBOX }),
            (
                "put",
                Request::Put(Put {
                    mailbox: MAILBOX,
                    kind: EnvelopeKind::Chat,
                    body: PLACEHOLDER.to_vec(),
                }),
            ),
            (
                "fetch",
                Request::Fetch {
                    mailbox: MAILBOX,
                    after: Seq(300),
                    limit: 256,
                },
            ),
            (
                "ack",
                Request::Ack {
                    mailbox: MAILBOX,
                    upto: Seq(301),
                },
            ),
            (
                "leave",
                Request::Leave {
                    mailbox: MAILBOX,
                    signature: self.leave_sig,
                },
            ),
            (
                "close",
                Request::Close(Close {
                    mailbox: MAILBOX,
                    farewell: PLACEHOLDER.to_vec(),
                    signature: self.close_sig,
                }),
            ),
            ("ping", Request::Ping { nonce: PING_NONCE }),
            (
                "create_with_token",
                Request::CreateWithToken {
                    create: Create {
                        params: self.params.clone(),
                        owner: self.alice.member_key(),
                        signature: self.create_sig,
                    },
                    token: CreateToken(sha256(&[CREATE_TOKEN_TEXT.as_bytes()])),
                },
            ),
        ];
        // What a client presents of a relay's creation token, and what the relay keeps.
        v.group("creation token");
        let presented = sha256(&[CREATE_TOKEN_TEXT.as_bytes()]);
        v.hex("create_token.presented", presented);
        v.hex("create_token.relay_hash", sha256(&[&presented]));
        v.group("frames: requests");
        for (id, (name, request)) in (1u64..).zip(requests) {
            let frame = ClientFrame { id, request };
            v.hex(&format!("frame.request.{name}"), client_frame(&frame));
        }

        let responses = [
            (
                "hello",
                Response::Hello(HelloOk {
                    version: 1,
                    challenge: CHALLENGE,
                    relay_key: self.relay.public(),
                    now: NOW,
                    rotations: Vec::new(),
                    retiring_at: None,
                }),
            ),
            (
                "created",
                Response::Created {
                    mailbox: MAILBOX,
                    status: pending,
                },
            ),
            (
                "joined",
                Response::Joined {
                    seat: 1,
                    welcome: PLACEHOLDER.to_vec(),
                    status: open,
                },
            ),
            (
                "authed",
                Response::Authed {
                    status: open,
                    head: Seq(300),
                },
            ),
            ("subscribed", Response::Subscribed { status: open }),
            ("stored", Response::Stored { seq: Seq(301) }),
            (
                "envelopes",
                Response::Envelopes {
                    items: vec![envelope.clone()],
                    more: false,
                },
            ),
            ("acked", Response::Acked),
            ("left", Response::Left),
            (
                "closed",
                Response::Closed {
                    receipt: self.receipt,
                },
            ),
            ("pong", Response::Pong { nonce: PING_NONCE }),
        ];
        v.group("frames: responses");
        for (id, (name, response)) in (1u64..).zip(responses) {
            let frame = ServerFrame::Response {
                id,
                result: Outcome::Ok(response),
            };
            v.hex(&format!("frame.response.{name}"), server_frame(&frame));
        }
        // The greeting of the relay after its rotation, announcing its retirement.
        let rotated = ServerFrame::Response {
            id: 1,
            result: Outcome::Ok(Response::Hello(HelloOk {
                version: 1,
                challenge: CHALLENGE,
                relay_key: self.rotation.new,
                now: NOW,
                rotations: vec![self.rotation],
                retiring_at: Some(RETIRING_AT),
            })),
        };
        v.hex("frame.response.hello_rotated", server_frame(&rotated));
        let retiring = ServerFrame::Response {
            id: 2,
            result: Outcome::Err(ErrorFrame::new(
                ErrorCode::Retiring,
                "this relay is retiring and takes no new talk",
            )),
        };
        v.hex("frame.response.error_retiring", server_frame(&retiring));

        let error = ServerFrame::Response {
            id: 6,
            result: Outcome::Err(
                ErrorFrame::new(
                    ErrorCode::TalkNotOpen,
                    "talk not open yet (1/2 seats taken)",
                )
                .with_detail(ErrorDetail::Seats {
                    members: 1,
                    quorum: 2,
                }),
            ),
        };
        v.hex("frame.response.error", server_frame(&error));

        // Bob, back after the close, authenticates (id 4): the tombstone hands him the
        // receipt.
        let closed = ServerFrame::Response {
            id: 4,
            result: Outcome::Err(
                ErrorFrame::new(ErrorCode::MailboxClosed, "the talk was closed or expired")
                    .with_detail(ErrorDetail::Closed(Box::new(self.receipt))),
            ),
        };
        v.hex("frame.response.error_closed", server_frame(&closed));

        let pushes = [
            (
                "envelope",
                Push::Envelope {
                    mailbox: MAILBOX,
                    envelope,
                },
            ),
            (
                "seat_taken",
                Push::SeatTaken {
                    mailbox: MAILBOX,
                    // The status after bob's join, which reached quorum.
                    status: open,
                },
            ),
            (
                "opened",
                Push::Opened {
                    mailbox: MAILBOX,
                    status: open,
                },
            ),
            (
                "member_left",
                Push::MemberLeft {
                    mailbox: MAILBOX,
                    // The member of seat 1 left.
                    status: TalkStatus {
                        left: 1 << 1,
                        ..status(TalkPhase::Open, 1)
                    },
                },
            ),
            (
                "closed",
                Push::Closed {
                    mailbox: MAILBOX,
                    receipt: self.receipt,
                    farewell: PLACEHOLDER.to_vec(),
                },
            ),
            ("expired", Push::Expired { mailbox: MAILBOX }),
            ("retiring", Push::Retiring { at: RETIRING_AT }),
        ];
        v.group("frames: pushes");
        for (name, push) in pushes {
            v.hex(
                &format!("frame.push.{name}"),
                server_frame(&ServerFrame::Push(push)),
            );
        }
        self.add_schedule(v);
    }

    /// A scheduled talk (spec §20.1): its `Create`, the status that reports its times,
    /// and the two refusals a schedule adds.
    fn add_schedule(&self, v: &mut Vectors) {
        v.group("frames: scheduled talks (§20.1)");
        let params = TalkParams {
            schedule: Some(nook_proto::Schedule {
                opens_in_secs: 1800,
                window_secs: 1200,
            }),
            ..self.params.clone()
        };
        let digest = params_digest(&params).expect("digests");
        let signature = sign_relay_auth(
            self.alice,
            AuthOp::Create,
            &CHALLENGE,
            &MailboxId([0; 16]),
            &digest,
        );
        let create = ClientFrame {
            id: 1,
            request: Request::Create(Create {
                params,
                owner: self.alice.member_key(),
                signature,
            }),
        };
        v.hex("frame.request.create_scheduled", client_frame(&create));
        let schedule = nook_proto::TalkSchedule {
            opens_at: NOW + 1800,
            closes_at: NOW + 3000,
        };
        let created = ServerFrame::Response {
            id: 1,
            result: Outcome::Ok(Response::Created {
                mailbox: MAILBOX,
                status: TalkStatus {
                    state: TalkPhase::Pending,
                    members: 1,
                    seats: 2,
                    quorum: 2,
                    close: ClosePolicy::Owner,
                    expires_at: EXPIRES_AT,
                    left: 0,
                    schedule: Some(schedule),
                },
            }),
        };
        v.hex("frame.response.created_scheduled", server_frame(&created));
        let not_yet = ServerFrame::Response {
            id: 6,
            result: Outcome::Err(
                ErrorFrame::new(
                    ErrorCode::TalkNotOpen,
                    "the talk is scheduled: it opens at its time",
                )
                .with_detail(ErrorDetail::Opens {
                    at: schedule.opens_at,
                }),
            ),
        };
        v.hex("frame.response.error_not_yet", server_frame(&not_yet));
        let ended = ServerFrame::Response {
            id: 2,
            result: Outcome::Err(ErrorFrame::new(
                ErrorCode::WindowEnded,
                "the talk's window ended: it is closed and takes no one in",
            )),
        };
        v.hex("frame.response.error_window_ended", server_frame(&ended));
    }
}

/// Encodes a frame and checks it decodes back to the same value.
fn client_frame(frame: &ClientFrame) -> Vec<u8> {
    let wire = encode_frame(frame).expect("encodes");
    let back: ClientFrame = decode_body(&wire[HEADER_LEN..]).expect("decodes");
    assert_eq!(&back, frame);
    wire
}

fn server_frame(frame: &ServerFrame) -> Vec<u8> {
    let wire = encode_frame(frame).expect("encodes");
    let back: ServerFrame = decode_body(&wire[HEADER_LEN..]).expect("decodes");
    assert_eq!(&back, frame);
    wire
}

#[test]
fn spec_vectors_match_the_code() {
    let computed = compute();
    if std::env::var("NOOK_PRINT_VECTORS").is_ok_and(|v| v == "1") {
        println!("{}", computed.render());
    }
    let computed = computed.flat();
    let text = std::fs::read_to_string(SPEC).expect("protocol-spec.md is readable");
    let spec = match parse_spec(&text) {
        Ok(spec) => spec,
        Err(e) => panic!("protocol-spec.md: malformed vectors block: {e}"),
    };

    let mut problems = Vec::new();
    for (name, value) in &computed {
        match spec.get(name) {
            None => problems.push(format!("missing from the spec: {name} = {value}")),
            Some(written) if written != value => problems.push(format!(
                "differs: {name}\n    spec: {written}\n    code: {value}"
            )),
            Some(_) => {}
        }
    }
    for name in spec.keys().filter(|n| !computed.contains_key(*n)) {
        problems.push(format!("in the spec but not computed: {name}"));
    }
    assert!(
        problems.is_empty(),
        "protocol-spec.md and the code disagree ({} problems); if the change is deliberate, \
         regenerate with NOOK_PRINT_VECTORS=1 cargo test -p nook-crypto --test vectors -- \
         --nocapture\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_vector_parser_reads_wrapped_values_and_refuses_duplicates() {
    let spec = "text\n```vectors\n# c\na = 00\nb =\n    0102\n    03\n```\n```rust\nc = 1\n```\n";
    let got = parse_spec(spec).expect("parses");
    assert_eq!(got.get("a").map(String::as_str), Some("00"));
    assert_eq!(got.get("b").map(String::as_str), Some("010203"));
    assert_eq!(got.len(), 2);
    assert!(parse_spec("```vectors\na = 1\na = 1\n```\n").is_err());
    assert!(parse_spec("```vectors\n  01\n```\n").is_err());
    assert!(parse_spec("```vectors\na = 1\n").is_err());
}
