//! The end-to-end openers a member runs on what another member (or the relay) sent:
//! the welcome, the envelope (and the `Inner` inside), the announcement, the
//! pairwise `Direct`, the group message and the farewell.
//!
//! Keys are the spec's fixed inputs (`protocol-spec.md` §1.5), so the seeds made from
//! its vectors open. The first byte picks a mode: open `rest` as sent (ciphertext
//! modes), or seal `rest` as a plaintext under the right key first, so that the
//! fuzzer reaches the unpadding and decoding behind the AEAD (plaintext modes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nook_crypto::chain::{ChainState, ReceivingChain};
use nook_crypto::message::{Content, DirectBody, Inner, Welcome, open_group};
use nook_crypto::seal::{open_pairwise, open_welcome, seal_welcome};
use nook_crypto::{EnvelopeKey, Purpose, SeatSecret, TalkIdentity};
use nook_proto::MailboxId;

const MAILBOX: MailboxId = MailboxId([0x6d; 16]);

fn seat() -> SeatSecret {
    SeatSecret::from_bytes(std::array::from_fn(|i| i as u8))
}

fn identity(first: u8) -> TalkIdentity {
    TalkIdentity::from_bytes(&std::array::from_fn(|i| first.wrapping_add(i as u8)))
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    let purpose = match mode >> 4 & 3 {
        0 => Purpose::Handshake,
        1 => Purpose::Chat,
        _ => Purpose::Farewell,
    };
    let key = EnvelopeKey::from_talk_key(&[0x54; 32]);
    match mode & 7 {
        0 => {
            if let Ok(plain) = open_welcome(&seat(), rest) {
                welcome(&plain);
            }
        }
        1 => {
            if let Ok(sealed) = seal_welcome(&seat(), rest) {
                let plain = open_welcome(&seat(), &sealed).expect("what was sealed opens");
                welcome(&plain);
            }
        }
        2 => {
            if let Ok(plain) = key.open(&MAILBOX, purpose, rest) {
                inner(&plain);
            }
        }
        3 => {
            if let Ok(sealed) = key.seal_with(&[0x4e; 24], &MAILBOX, purpose, rest) {
                let plain = key
                    .open(&MAILBOX, purpose, &sealed)
                    .expect("what was sealed opens");
                assert_eq!(plain.as_slice(), rest, "unpadding changed the plaintext");
                inner(&plain);
            }
        }
        4 => {
            // Pairwise, as alice opening what bob sealed to her.
            let bob = identity(0x80).public().agreement;
            if let Ok(plain) = open_pairwise(&identity(0x20), &bob, &MAILBOX, rest) {
                let _ = DirectBody::decode(&plain);
            }
        }
        5 => welcome(rest),
        _ => inner(rest),
    }
});

/// What a joiner does with an opened welcome: decode it, check the creator's
/// announcement.
fn welcome(plain: &[u8]) {
    if let Ok(w) = Welcome::decode(plain) {
        let _ = w.creator.verify(&MailboxId([0; 16]), &w.commitments);
    }
}

/// What a member does with an opened envelope body.
fn inner(plain: &[u8]) {
    let Ok(inner) = Inner::decode(plain) else {
        return;
    };
    match inner {
        Inner::Announce(a) => {
            let commitments = [seat().commitment()];
            let _ = a.verify(&MAILBOX, &commitments);
        }
        Inner::Direct(d) => {
            let alice = identity(0x20);
            if d.to == alice.public().agreement
                && let Ok(plain) = open_pairwise(&alice, &d.from, &MAILBOX, &d.sealed)
            {
                let _ = DirectBody::decode(&plain);
            }
        }
        Inner::Group(g) => {
            let mut chain = ReceivingChain::new(ChainState {
                epoch: 0,
                index: 0,
                chain_key: [0x43; 32],
                // The spec's `input.sender_envelope_key`.
                envelope_key: [0x53; 32],
            });
            let sender = g.header.sender;
            if let Ok((content, _)) = open_group(&sender, &mut chain, &MAILBOX, &g) {
                let _ = Content::encode(&content);
            }
        }
        Inner::Farewell(f) => {
            let _ = f.verify(&MAILBOX);
        }
    }
}
