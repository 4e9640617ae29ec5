//! Property tests: sealing round-trips, every flipped bit is rejected, and no chain
//! index opens twice.

use nook_crypto::message::{Content, open_group, seal_group};
use nook_crypto::seal::{open_pairwise, seal_pairwise};
use nook_crypto::*;
use nook_proto::MailboxId;
use proptest::collection::vec;
use proptest::prelude::*;

const MB: MailboxId = MailboxId([7; 16]);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn envelope_round_trip(key in any::<[u8; 32]>(), inner in vec(any::<u8>(), 0..3000)) {
        let k = EnvelopeKey::from_talk_key(&key);
        let body = k.seal(&mut rand::rng(), &MB, Purpose::Handshake, &inner).unwrap();
        prop_assert!(nook_proto::limits::PADDING_BUCKETS.contains(&body.len()));
        let opened = k.open(&MB, Purpose::Handshake, &body).unwrap();
        prop_assert_eq!(opened.as_slice(), &inner[..]);
    }

    #[test]
    fn envelope_flipped_bit_is_rejected(inner in vec(any::<u8>(), 0..600), pos in any::<usize>(), bit in 0u8..8) {
        let k = EnvelopeKey::from_talk_key(&[1; 32]);
        let mut body = k.seal(&mut rand::rng(), &MB, Purpose::Chat, &inner).unwrap();
        let i = pos % body.len();
        body[i] ^= 1 << bit;
        prop_assert!(k.open(&MB, Purpose::Chat, &body).is_err());
    }

    #[test]
    fn pairwise_round_trip_and_flip(msg in vec(any::<u8>(), 0..500), pos in any::<usize>(), bit in 0u8..8) {
        let mut r = rand::rng();
        let a = TalkIdentity::generate(&mut r);
        let b = TalkIdentity::generate(&mut r);
        let mut sealed = seal_pairwise(&mut r, &a, &b.public().agreement, &b.kem_public(), &MB, &msg).unwrap();
        let opened = open_pairwise(&b, &a.public().agreement, &MB, &sealed).unwrap();
        prop_assert_eq!(opened.as_slice(), &msg[..]);
        let i = pos % sealed.len();
        sealed[i] ^= 1 << bit;
        prop_assert!(open_pairwise(&b, &a.public().agreement, &MB, &sealed).is_err());
    }

    #[test]
    fn group_message_flipped_bit_is_rejected(text in ".{0,100}", pos in any::<usize>(), bit in 0u8..8) {
        let mut r = rand::rng();
        let id = TalkIdentity::generate(&mut r);
        let mut send = SendingChain::new(&mut r, 0);
        let mut recv = ReceivingChain::new(send.state().clone());
        let m = seal_group(&id, &mut send, &MB, &Content::Text { sent_at_ms: 5, text, seen: Vec::new() }).unwrap();
        let inner = message::Inner::Group(m).encode().unwrap();
        let mut bytes = inner.clone();
        let i = pos % bytes.len();
        bytes[i] ^= 1 << bit;
        // Either the flipped frame no longer decodes, or it decodes and fails to open.
        if let Ok(message::Inner::Group(g)) = message::Inner::decode(&bytes) {
            prop_assert!(open_group(&id.public().pseudonym, &mut recv, &MB, &g).is_err());
        }
        prop_assert_eq!(recv.next_index(), 0);
    }

    #[test]
    fn no_index_opens_twice(order in Just((0u32..12).collect::<Vec<_>>()).prop_shuffle(), replay in 0usize..12) {
        let mut r = rand::rng();
        let id = TalkIdentity::generate(&mut r);
        let pk = id.public().pseudonym;
        let mut send = SendingChain::new(&mut r, 0);
        let mut recv = ReceivingChain::new(send.state().clone());
        let msgs: Vec<_> = (0..12).map(|i| seal_group(&id, &mut send, &MB, &Content::Leaving { sent_at_ms: i, seen: Vec::new() }).unwrap()).collect();
        for i in &order {
            let (c, d) = open_group(&pk, &mut recv, &MB, &msgs[*i as usize]).unwrap();
            prop_assert_eq!(c, Content::Leaving { sent_at_ms: u64::from(*i), seen: Vec::new() });
            prop_assert_eq!(d.index, *i);
        }
        prop_assert!(open_group(&pk, &mut recv, &MB, &msgs[replay]).is_err());
    }
}
