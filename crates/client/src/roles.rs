//! Roles in a patterned talk (protocol-spec §20.2): what the owner of a market keeps
//! for each offerer, and what an offerer counts against its offer limit.
//!
//! Shielding rests on keys, not on the relay: the welcome of an offerer's seat carries,
//! as its talk key, a key made for that seat alone, which only the owner shares. The
//! offerer's announcement, its `Reply` and the owner's `Intro` travel under it; its
//! messages under its own chain, which only the owner holds; the owner writes to it on
//! a chain made for it alone. So an offerer never holds a key that opens another
//! offerer's traffic or the group's.

use bincode::de::{Decoder, read::Reader};
use bincode::error::DecodeError;
use bincode::{Decode, Encode};
use nook_crypto::SendingChain;
use nook_crypto::seal::KEY_ID_LEN;
use zeroize::Zeroize;

pub use nook_crypto::message::Pattern;

/// The epoch of the owner's chains towards single offerers: far above any group
/// chain's, so a promoted offerer, which holds both, tells them apart.
pub const OFFERER_EPOCH: u32 = 1 << 31;

/// The most speakers a panel has besides its owner.
pub const MAX_SPEAKERS: u8 = 63;

/// The longest offer limit (messages an offerer may send until the owner writes).
pub const MAX_OFFER_LIMIT: u8 = 100;

/// A member's role, as this device knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Seat 0: asks, answers, promotes and removes.
    Owner,
    /// A member of a plain talk (everyone reads and writes to all).
    Member,
    /// A market's seat other than the owner's: writes to the owner alone.
    Offerer,
    /// A panel's seat that writes to all (the owner is one too).
    Speaker,
    /// A panel's seat that reads the speakers, invisible to all but the owner.
    Listener,
}

impl Role {
    /// The word the CLI and its JSON use.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
            Role::Offerer => "offerer",
            Role::Speaker => "speaker",
            Role::Listener => "listener",
        }
    }
}

/// What a member keeps of its talk's pattern. Stored last in the talk's state: a
/// state stored before patterns ends before it and decodes as a plain talk's.
#[derive(Debug, Default, Encode)]
pub struct Roles {
    pub pattern: Pattern,
    /// The owner of a market: one entry per offerer seat.
    pub(crate) offerers: Vec<Offerer>,
    /// An offerer: its messages since the owner last wrote to it.
    pub(crate) unanswered: u8,
    /// An offerer the owner took into the group: a member now.
    pub(crate) promoted: bool,
    /// A promoted offerer's talk name from before its promotion, which it keeps: the
    /// name derives from the talk key, which the promotion changed, and the person
    /// names the talk by it.
    pub(crate) name: Option<String>,
}

impl<C> Decode<C> for Roles {
    fn decode<D: Decoder<Context = C>>(decoder: &mut D) -> Result<Self, DecodeError> {
        if decoder.reader().peek_read(1).is_none() {
            return Ok(Roles::default());
        }
        Ok(Roles {
            pattern: Decode::decode(decoder)?,
            offerers: Decode::decode(decoder)?,
            unanswered: Decode::decode(decoder)?,
            promoted: Decode::decode(decoder)?,
            name: Decode::decode(decoder)?,
        })
    }
}
bincode::impl_borrow_decode!(Roles);

/// The owner's side of one offerer seat.
#[derive(Encode, Decode)]
pub(crate) struct Offerer {
    pub(crate) seat: u8,
    /// The seat's own talk key, the `talk_key` of its welcome; zero once removed.
    /// Secret.
    pub(crate) key: [u8; 32],
    /// The owner's chain towards this offerer alone.
    pub(crate) chain: SendingChain,
    /// Messages of the offerer since the owner last wrote to it.
    pub(crate) unanswered: u8,
    /// Removed by the owner: its keys are gone; envelopes under the key ids in
    /// `dropped` are skipped unread.
    pub(crate) removed: bool,
    pub(crate) dropped: Vec<[u8; KEY_ID_LEN]>,
    /// Taken into the group: shielded no more.
    pub(crate) promoted: bool,
}

impl Drop for Offerer {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl std::fmt::Debug for Offerer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offerer")
            .field("seat", &self.seat)
            .field("removed", &self.removed)
            .field("promoted", &self.promoted)
            .finish_non_exhaustive()
    }
}

impl Roles {
    /// The offer limit of a market, if this is one.
    pub fn offer_limit(&self) -> Option<u8> {
        match self.pattern {
            Pattern::Market { offer_limit } => Some(offer_limit),
            Pattern::Plain | Pattern::Panel { .. } => None,
        }
    }

    /// A panel's speakers besides its owner, if this is one.
    pub fn speakers(&self) -> Option<u8> {
        match self.pattern {
            Pattern::Panel { speakers } => Some(speakers),
            Pattern::Plain | Pattern::Market { .. } => None,
        }
    }

    /// The pattern's name, as the CLI and its JSON give it.
    pub fn pattern_name(&self) -> &'static str {
        match self.pattern {
            Pattern::Plain => "plain",
            Pattern::Market { .. } => "market",
            Pattern::Panel { .. } => "panel",
        }
    }

    pub(crate) fn is_market(&self) -> bool {
        matches!(self.pattern, Pattern::Market { .. })
    }

    pub(crate) fn is_panel(&self) -> bool {
        matches!(self.pattern, Pattern::Panel { .. })
    }

    /// Whether the pattern shields some seats behind keys of their own (market,
    /// panel): its members skip, unread, the envelopes under keys they will never hold.
    pub(crate) fn shields(&self) -> bool {
        !matches!(self.pattern, Pattern::Plain)
    }

    /// Whether `seat`'s welcome carries a key of its own rather than the talk's: every
    /// offerer's, and a panel's listeners'.
    pub(crate) fn shielded_seat(&self, seat: u8) -> bool {
        match self.pattern {
            Pattern::Plain => false,
            Pattern::Market { .. } => seat != 0,
            Pattern::Panel { speakers } => seat > speakers,
        }
    }

    /// The owner's entry for `seat`, if it is an offerer's.
    pub(crate) fn offerer(&self, seat: u8) -> Option<&Offerer> {
        self.offerers.iter().find(|o| o.seat == seat)
    }

    pub(crate) fn offerer_mut(&mut self, seat: u8) -> Option<&mut Offerer> {
        self.offerers.iter_mut().find(|o| o.seat == seat)
    }

    /// Whether envelopes under key id `id` are from a removed offerer (skipped unread).
    pub(crate) fn dropped(&self, id: &[u8; KEY_ID_LEN]) -> bool {
        self.offerers.iter().any(|o| o.dropped.contains(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::{Event, MemberError, NewTalk, TalkOptions, TalkState};
    use crate::testkit::{Net, join, opts, relay, status};
    use nook_crypto::Invite;
    use nook_proto::{EnvelopeKind, MailboxId};

    /// A market of three seats: the owner and two offerers, met.
    fn market(limit: u8) -> (Net, TalkState, TalkState, TalkState) {
        let r = relay();
        let NewTalk {
            mut state,
            params,
            seats,
        } = TalkState::create(
            &r,
            &TalkOptions {
                pattern: Pattern::Market { offer_limit: limit },
                ..opts()
            },
            0,
        )
        .unwrap();
        let invites = state.created(&r, MailboxId([5; 16]), status(1, false), &seats);
        let mut net = Net {
            seq: 0,
            log: vec![],
        };
        let mut offerers = Vec::new();
        for (i, (inv, offer)) in invites.iter().zip(&params.offers).enumerate() {
            let inv: Invite = inv.parse().unwrap();
            let seat = (i + 1) as u8;
            let alias = format!("offerer-{seat}");
            offerers.push(join(&mut net, &inv, seat, &offer.welcome, &alias));
        }
        let mut c = offerers.pop().unwrap();
        let mut b = offerers.pop().unwrap();
        for _ in 0..3 {
            net.deliver(&mut state);
            net.deliver(&mut b);
            net.deliver(&mut c);
        }
        (net, state, b, c)
    }

    fn texts(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Message { alias, text, .. } => Some(format!("{alias}: {text}")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn offerers_know_the_owner_alone_and_the_owner_knows_each() {
        let (_net, a, b, c) = market(1);
        let aliases: Vec<&str> = a.roster.iter().map(|p| p.alias.as_str()).collect();
        assert_eq!(aliases, ["offerer-1", "offerer-2"]);
        for offerer in [&b, &c] {
            assert_eq!(offerer.role(), Role::Offerer);
            let known: Vec<u8> = offerer.roster.iter().map(|p| p.seat).collect();
            assert_eq!(known, [0], "seat {} knows only the owner", offerer.seat);
        }
        assert_eq!(a.role(), Role::Owner);
        // Each offerer's talk key is its seat's, not the group's nor the other's.
        assert_ne!(b.name(), a.name());
        assert_ne!(b.name(), c.name());
    }

    #[test]
    fn an_offer_reaches_the_owner_only_and_the_answer_its_offerer_only() {
        let (mut net, mut a, mut b, mut c) = market(1);
        let (body, _) = b.seal_text("ten crates at 4 each", 1).unwrap();
        net.put(1, EnvelopeKind::Chat, body);
        assert_eq!(
            texts(&net.deliver(&mut a)),
            ["offerer-1: ten crates at 4 each"]
        );
        let seen_by_c = net.deliver(&mut c);
        assert!(
            texts(&seen_by_c).is_empty() && seen_by_c.is_empty(),
            "{seen_by_c:?}"
        );
        let (body, event) = a.seal_text_to(1, "deal", 2).unwrap();
        assert!(matches!(event, Event::MessageTo { seat: 1, .. }));
        net.put(0, EnvelopeKind::Chat, body);
        assert_eq!(texts(&net.deliver(&mut b)), ["owner-owl: deal"]);
        assert!(net.deliver(&mut c).is_empty());
        // The owner's message to all reaches each offerer on its own chain.
        let out = a.seal_to_offerers("who else?", 3).unwrap();
        assert_eq!(out.len(), 2);
        for (k, body) in out {
            net.put(0, k, body);
        }
        assert_eq!(texts(&net.deliver(&mut b)), ["owner-owl: who else?"]);
        assert_eq!(texts(&net.deliver(&mut c)), ["owner-owl: who else?"]);
    }

    #[test]
    fn the_offer_limit_holds_until_the_owner_writes() {
        let (mut net, mut a, mut b, _c) = market(1);
        let (body, _) = b.seal_text("first", 1).unwrap();
        net.put(1, EnvelopeKind::Chat, body);
        assert!(matches!(
            b.seal_text("second", 2),
            Err(MemberError::OfferLimit { limit: 1 })
        ));
        net.deliver(&mut a);
        let (body, _) = a.seal_text_to(1, "tell me more", 3).unwrap();
        net.put(0, EnvelopeKind::Chat, body);
        net.deliver(&mut b);
        let (body, _) = b.seal_text("more", 4).unwrap();
        net.put(1, EnvelopeKind::Chat, body);
        assert_eq!(texts(&net.deliver(&mut a)), ["offerer-1: more"]);
    }

    #[test]
    fn the_owner_drops_what_a_modified_client_sends_past_the_limit() {
        let (mut net, mut a, mut b, _c) = market(1);
        for text in ["one", "two"] {
            // A modified client: its counter forgotten before each send.
            b.roles.unanswered = 0;
            let (body, _) = b.seal_text(text, 1).unwrap();
            net.put(1, EnvelopeKind::Chat, body);
        }
        let events = net.deliver(&mut a);
        assert_eq!(texts(&events), ["offerer-1: one"]);
        assert!(events.contains(&Event::OverLimit {
            seat: 1,
            alias: "offerer-1".into()
        }));
    }

    #[test]
    fn a_removed_offerer_is_read_no_more_and_its_keys_are_gone() {
        let (mut net, mut a, mut b, _c) = market(2);
        let event = a.remove_offerer("offerer-1").unwrap();
        assert!(matches!(event, Event::OffererRemoved { seat: 1, .. }));
        assert!(a.roles.offerer(1).is_some_and(|o| o.key == [0; 32]));
        let (body, _) = b.seal_text("still here", 1).unwrap();
        net.put(1, EnvelopeKind::Chat, body);
        let events = net.deliver(&mut a);
        assert!(events.is_empty(), "{events:?}");
        assert!(matches!(
            a.seal_text_to(1, "x", 2),
            Err(MemberError::NoOfferer)
        ));
        assert!(matches!(
            a.remove_offerer("offerer-1"),
            Err(MemberError::NoOfferer)
        ));
    }

    #[test]
    fn an_offerer_leaving_rotates_nothing_and_the_group_summary_names_no_offerer() {
        let (mut net, mut a, _b, _c) = market(1);
        let mut st = status(3, true);
        st.left = 1 << 1;
        let h = a.on_status(st);
        assert!(h.outgoing.is_empty(), "no sender key goes out");
        let (body, _) = a.seal_text("to the group", 1).unwrap();
        net.put(0, EnvelopeKind::Chat, body);
        assert!(a.seen_for_test().is_empty());
    }

    #[test]
    fn a_promoted_offerer_joins_the_group_and_the_others_learn_nothing() {
        let (mut net, mut a, mut b, mut c) = market(1);
        let h = a.promote_offerer("offerer-1").unwrap();
        assert!(matches!(h.events[..], [Event::Promoted { seat: 1, .. }]));
        for (k, body) in h.outgoing {
            net.put(0, k, body);
        }
        let events = net.deliver(&mut b);
        assert!(events.contains(&Event::Promoted {
            seat: 1,
            alias: "offerer-1".into()
        }));
        assert_eq!(b.role(), Role::Member);
        let before = b.roles.name.clone().unwrap();
        assert_eq!(b.name(), before, "the talk keeps its name on b's device");
        assert_ne!(before, a.name());
        assert_eq!(
            b.base_key_id(),
            a.base_key_id(),
            "b holds the group's key now"
        );
        assert!(
            net.deliver(&mut a).is_empty(),
            "its announcement is expected"
        );
        assert!(net.deliver(&mut c).is_empty(), "c sees nothing of it");
        assert_eq!(a.role_of(1), Role::Member);
        assert_eq!(a.role_of(2), Role::Offerer);
        // The owner's group messages reach b, and b writes without a limit.
        let (body, _) = a.seal_text("welcome to the group", 1).unwrap();
        net.put(0, EnvelopeKind::Chat, body);
        let out = a.seal_to_offerers("welcome to the group", 1).unwrap();
        assert_eq!(out.len(), 1, "c alone is still an offerer");
        for (k, body) in out {
            net.put(0, k, body);
        }
        assert_eq!(
            texts(&net.deliver(&mut b)),
            ["owner-owl: welcome to the group"]
        );
        assert_eq!(
            texts(&net.deliver(&mut c)),
            ["owner-owl: welcome to the group"]
        );
        for text in ["one", "two"] {
            let (body, _) = b.seal_text(text, 2).unwrap();
            net.put(1, EnvelopeKind::Chat, body);
        }
        assert_eq!(
            texts(&net.deliver(&mut a)),
            ["offerer-1: one", "offerer-1: two"]
        );
        assert!(net.deliver(&mut c).is_empty());
        // Promoting c too: b and c meet as members.
        let h = a.promote_offerer("offerer-2").unwrap();
        for (k, body) in h.outgoing {
            net.put(0, k, body);
        }
        for _ in 0..3 {
            net.deliver(&mut c);
            net.deliver(&mut b);
            net.deliver(&mut a);
        }
        let known: Vec<&str> = b.roster.iter().map(|p| p.alias.as_str()).collect();
        assert_eq!(known, ["owner-owl", "offerer-2"]);
        let (body, _) = c.seal_text("hello b", 3).unwrap();
        net.put(2, EnvelopeKind::Chat, body);
        assert_eq!(texts(&net.deliver(&mut b)), ["offerer-2: hello b"]);
        assert_eq!(texts(&net.deliver(&mut a)), ["offerer-2: hello b"]);
    }

    #[test]
    fn only_the_owner_promotes_and_only_an_offerer() {
        let (_net, mut a, _b, _c) = market(1);
        assert!(matches!(
            a.promote_offerer("nobody"),
            Err(MemberError::NoOfferer)
        ));
        a.promote_offerer("offerer-1").unwrap();
        assert!(matches!(
            a.promote_offerer("offerer-1"),
            Err(MemberError::NoOfferer)
        ));
    }

    /// A panel of four seats: the owner, one speaker (seat 1), two listeners, met.
    fn panel() -> (Net, Vec<TalkState>) {
        let r = relay();
        let NewTalk {
            mut state,
            params,
            seats,
        } = TalkState::create(
            &r,
            &TalkOptions {
                seats: 4,
                pattern: Pattern::Panel { speakers: 1 },
                ..opts()
            },
            0,
        )
        .unwrap();
        let invites = state.created(&r, MailboxId([5; 16]), status(1, false), &seats);
        let mut net = Net {
            seq: 0,
            log: vec![],
        };
        let mut members = vec![state];
        for (i, (inv, offer)) in invites.iter().zip(&params.offers).enumerate() {
            let inv: Invite = inv.parse().unwrap();
            let seat = (i + 1) as u8;
            let alias = if seat == 1 {
                "speaker-1".to_string()
            } else {
                format!("listener-{seat}")
            };
            members.push(join(&mut net, &inv, seat, &offer.welcome, &alias));
            for _ in 0..3 {
                for m in members.iter_mut() {
                    net.deliver(m);
                }
            }
        }
        (net, members)
    }

    #[test]
    fn a_panel_s_listeners_read_the_speakers_and_never_learn_of_each_other() {
        let (mut net, mut m) = panel();
        let aliases =
            |t: &TalkState| -> Vec<String> { t.roster.iter().map(|p| p.alias.clone()).collect() };
        assert_eq!(aliases(&m[0]), ["speaker-1", "listener-2", "listener-3"]);
        assert_eq!(
            aliases(&m[1]),
            ["owner-owl"],
            "a speaker never hears of listeners"
        );
        assert_eq!(aliases(&m[2]), ["owner-owl", "speaker-1"]);
        assert_eq!(aliases(&m[3]), ["owner-owl", "speaker-1"]);
        assert_eq!(
            [m[0].role(), m[1].role(), m[2].role(), m[3].role()],
            [Role::Owner, Role::Speaker, Role::Listener, Role::Listener]
        );
        let (body, _) = m[1].seal_text("from the speaker", 1).unwrap();
        net.put(1, EnvelopeKind::Chat, body);
        let (body, _) = m[0].seal_text("from the owner", 2).unwrap();
        net.put(0, EnvelopeKind::Chat, body);
        for i in [2, 3] {
            assert_eq!(
                texts(&net.deliver(&mut m[i])),
                ["speaker-1: from the speaker", "owner-owl: from the owner"]
            );
        }
        assert_eq!(
            texts(&net.deliver(&mut m[0])),
            ["speaker-1: from the speaker"]
        );
        assert!(matches!(
            m[2].seal_text("may I?", 3),
            Err(MemberError::ListenerOnly)
        ));
        assert!(m[0].seal_to_offerers("x", 4).unwrap().is_empty());
    }

    #[test]
    fn a_listener_who_leaves_reads_nothing_the_speakers_say_after() {
        let (mut net, mut m) = panel();
        let mut st = status(4, true);
        st.left = 1 << 3;
        st.seats = 4;
        for i in [0, 1, 2] {
            let h = m[i].on_status(st);
            for (k, body) in h.outgoing {
                net.put(m[i].seat, k, body);
            }
        }
        for _ in 0..2 {
            for i in [0, 1, 2] {
                net.deliver(&mut m[i]);
            }
        }
        let (body, _) = m[1].seal_text("after the leave", 5).unwrap();
        net.put(1, EnvelopeKind::Chat, body);
        let (body, _) = m[0].seal_text("the owner too", 6).unwrap();
        net.put(0, EnvelopeKind::Chat, body);
        assert_eq!(
            texts(&net.deliver(&mut m[2])),
            ["speaker-1: after the leave", "owner-owl: the owner too"]
        );
        assert!(
            texts(&net.deliver(&mut m[3])).is_empty(),
            "the one who left reads nothing"
        );
    }

    #[test]
    fn a_state_stored_before_patterns_reads_as_plain() {
        let (_net, a, _b, _c) = market(1);
        let bytes = nook_proto::codec::encode_value(&a).unwrap();
        let roles = nook_proto::codec::encode_value(&a.roles).unwrap();
        let before = &bytes[..bytes.len() - roles.len()];
        let old: TalkState = nook_proto::codec::decode_body(before).unwrap();
        assert_eq!(old.roles.pattern, Pattern::Plain);
        let back: TalkState = nook_proto::codec::decode_body(&bytes).unwrap();
        assert_eq!(back.roles.offerers.len(), 2);
    }
}
