//! Cards (protocol-spec §19): this home's card and card key, what each talk knows of
//! cards (kept in that talk's namespace, so it ends with the talk), and the contacts:
//! cards their owners let us keep, copied out of a talk when it ends.
//!
//! Where each piece lives (all sealed in the home's vault):
//!
//! | what | where | erased |
//! |---|---|---|
//! | our card and card key ([`HomeCard`]) | namespace `card` | `nook card clear` |
//! | cards shown to us, ours shown to whom, open exchanges ([`TalkCards`]) | the talk's namespace, key `k` | with the talk (leave, close, expiry) |
//! | kept cards ([`Contact`]) | namespace `contacts` | `nook contacts forget` |

use bincode::{Decode, Encode};
use nook_crypto::card::{Card, CardKey, CardReveal, field_name};
use nook_crypto::message::DirectBody;
use nook_proto::{EnvelopeKind, TalkPhase};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::api::Client;
use crate::error::ClientError;
use crate::member::{CardNews, Event, Handled, TalkState};
use crate::session::now_ms;
use crate::store::{Store, StoreError};

/// Most open exchanges a talk keeps each way; past it the oldest is dropped.
pub const MAX_EXCHANGES: usize = 16;

/// Most contacts a home keeps.
pub const MAX_CONTACTS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("this home has no card")]
    NoCard,
    #[error("no current member of the talk is called {alias}")]
    UnknownMember { alias: String },
    #[error("the card has none of the fields asked for")]
    NoFields,
    #[error("{alias} has not offered an exchange that waits for an answer")]
    NoOffer { alias: String },
    #[error("card field {field} is not allowed: {reason}")]
    BadField { field: String, reason: &'static str },
    #[error("no contact matches {id}")]
    UnknownContact { id: String },
}

/// This home's card and the seed of its card key. Secret.
#[derive(Encode, Decode, Zeroize, ZeroizeOnDrop)]
pub struct HomeCard {
    pub seed: [u8; 32],
    pub card: Card,
}

impl std::fmt::Debug for HomeCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HomeCard(<secret>)")
    }
}

/// A card another member showed us in one talk.
#[derive(Clone, Debug, Encode, Decode, PartialEq, Eq)]
pub struct Known {
    pub seat: u8,
    pub card_key: [u8; 32],
    pub card: Card,
    pub keepable: bool,
    /// Its card key is one this home kept as a contact: the same person.
    pub contact: bool,
}

/// Fields of our card that one member of the talk has seen.
#[derive(Clone, Debug, Encode, Decode, PartialEq, Eq)]
pub struct Shown {
    pub seat: u8,
    pub fields: Vec<u8>,
    pub keepable: bool,
}

/// An exchange we offered, with our reveal signed for it and sent only once the
/// other accepted (spec §19.4).
#[derive(Clone, Debug, Encode, Decode)]
pub struct OfferOut {
    pub exchange: [u8; 16],
    pub seat: u8,
    pub fields: Vec<u8>,
    pub reveal: CardReveal,
}

/// An exchange offered to us.
#[derive(Clone, Debug, Encode, Decode, PartialEq, Eq)]
pub struct OfferIn {
    pub exchange: [u8; 16],
    pub seat: u8,
    pub fields: Vec<u8>,
    pub keepable: bool,
    /// We accepted: the other's card is on its way.
    pub accepted: bool,
}

/// What one talk knows of cards; stored beside its state, erased with it.
#[derive(Clone, Debug, Default, Encode, Decode)]
pub struct TalkCards {
    pub known: Vec<Known>,
    pub shown: Vec<Shown>,
    pub out: Vec<OfferOut>,
    pub inbound: Vec<OfferIn>,
}

/// A card kept after its talk ended, because its owner revealed it as keepable.
#[derive(Clone, Debug, Encode, Decode, PartialEq, Eq)]
pub struct Contact {
    pub card_key: [u8; 32],
    pub card: Card,
    /// When it was kept (unix ms).
    pub kept_at_ms: u64,
}

impl Contact {
    /// How `nook contacts forget` names it: the card key's first 8 bytes in hex.
    pub fn id(&self) -> String {
        hex_of(&self.card_key[..8])
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Our card as `nook card show` tells it.
#[derive(Clone, Debug)]
pub struct OwnCard {
    pub card: Card,
    /// The card key's first 8 bytes in hex: what a contact of ours is listed under.
    pub key_id: String,
}

/// What a card command sent.
#[derive(Clone, Debug)]
pub struct CardSent {
    pub talk: String,
    pub seat: u8,
    pub alias: String,
    /// Field names shown (reveal, accept) or offered (offer).
    pub fields: Vec<String>,
    pub keepable: bool,
}

/// One member of a talk as this viewer knows it (`nook who`).
#[derive(Clone, Debug)]
pub struct Who {
    pub seat: u8,
    pub alias: String,
    pub own: bool,
    pub left: bool,
    /// The card this member showed this viewer, if any.
    pub card: Option<Known>,
    /// Fields of our card this member has seen.
    pub saw: Vec<String>,
    /// `owner`, `member` or (a market's) `offerer` (protocol-spec §20.2).
    pub role: &'static str,
}

/// `nook exposure`: what is known about this member in one talk.
#[derive(Clone, Debug)]
pub struct Exposure {
    pub talk: String,
    pub alias: String,
    pub seat: u8,
    /// Which members saw which fields of our card.
    pub shown: Vec<(u8, String, Vec<String>, bool)>,
    /// Exchanges we offered that have no answer yet: (seat, alias, fields).
    pub offered: Vec<(u8, String, Vec<String>)>,
    /// What the relay learns of this talk (spec §14), with this talk's values.
    pub relay: RelayView,
    /// What this home stores for the talk.
    pub home: HomeView,
}

#[derive(Clone, Debug)]
pub struct RelayView {
    pub seats: u8,
    pub quorum: u8,
    pub ttl_secs: u32,
    pub close: String,
    pub expires_at: u64,
    pub members: Option<u8>,
    pub seats_left: u32,
    /// Envelopes this device put that the history records (messages, files, card
    /// messages): the relay saw each as a chat envelope of this member, padded.
    pub chat_envelopes_sent: u64,
    pub card_envelopes_sent: u64,
}

#[derive(Clone, Debug)]
pub struct HomeView {
    pub history_entries: u64,
    pub cards_known: usize,
    pub has_card: bool,
    pub contacts: usize,
}

/// Field names of `kinds`, in order.
pub fn names(kinds: &[u8]) -> Vec<String> {
    kinds
        .iter()
        .filter_map(|k| field_name(*k))
        .map(str::to_owned)
        .collect()
}

/// Checks a card a person typed: values within limits and without control
/// characters (a receiver escapes them anyway, but we never send them).
pub fn check_card(card: &Card) -> Result<(), CardError> {
    for (kind, value) in &card.fields {
        let field = field_name(*kind).unwrap_or("?").to_owned();
        if value.is_empty() {
            return Err(CardError::BadField {
                field,
                reason: "it is empty",
            });
        }
        if value.len() > nook_crypto::card::MAX_FIELD {
            return Err(CardError::BadField {
                field,
                reason: "it is longer than 256 bytes",
            });
        }
        if value.chars().any(char::is_control) {
            return Err(CardError::BadField {
                field,
                reason: "it holds control characters (line breaks, escapes)",
            });
        }
    }
    if card.fields.is_empty() || !card.is_valid() {
        return Err(CardError::NoFields);
    }
    Ok(())
}

/// Turns arrived card messages into history events, kept knowledge, and our half of
/// exchanges the other side accepted (sent in the same commit, after the save).
pub(crate) fn apply(
    store: &Store,
    state: &TalkState,
    change: &mut Handled,
) -> Result<(), ClientError> {
    if change.cards.is_empty() {
        return Ok(());
    }
    let mut cards = store.talk_cards(&state.talk_id)?;
    let contacts = store.contacts()?;
    for news in std::mem::take(&mut change.cards) {
        match news {
            CardNews::Revealed { seat, reveal } => {
                cards.inbound.retain(|o| !(o.seat == seat && o.accepted));
                know(
                    &mut cards,
                    &contacts,
                    state,
                    seat,
                    reveal,
                    &mut change.events,
                );
            }
            CardNews::Accepted {
                seat,
                exchange,
                reveal,
            } => {
                let Some(i) = cards
                    .out
                    .iter()
                    .position(|o| o.exchange == exchange && o.seat == seat)
                else {
                    change.events.push(Event::Warning(format!(
                        "{} accepted an exchange this device did not offer; nothing was shown",
                        state.alias_of(seat)
                    )));
                    continue;
                };
                let offer = cards.out.remove(i);
                know(
                    &mut cards,
                    &contacts,
                    state,
                    seat,
                    reveal,
                    &mut change.events,
                );
                let body = DirectBody::CardReveal {
                    reveal: offer.reveal.clone(),
                };
                match state.seal_card(seat, &body) {
                    Ok(sealed) => {
                        change.outgoing.push((EnvelopeKind::Chat, sealed));
                        change
                            .events
                            .push(shown(&mut cards, state, seat, &offer.reveal));
                    }
                    Err(e) => change.events.push(Event::Warning(format!(
                        "could not complete the exchange with {}: {e}",
                        state.alias_of(seat)
                    ))),
                }
            }
            CardNews::Offered {
                seat,
                exchange,
                fields,
                keepable,
            } => {
                cards.inbound.retain(|o| o.exchange != exchange);
                cards.inbound.push(OfferIn {
                    exchange,
                    seat,
                    fields: fields.clone(),
                    keepable,
                    accepted: false,
                });
                if cards.inbound.len() > MAX_EXCHANGES {
                    cards.inbound.remove(0);
                }
                change.events.push(Event::CardOffered {
                    seat,
                    alias: state.alias_of(seat),
                    fields,
                    keepable,
                    own: false,
                });
            }
            CardNews::Declined { seat, exchange } => {
                let before = cards.out.len();
                cards
                    .out
                    .retain(|o| !(o.exchange == exchange && o.seat == seat));
                if cards.out.len() < before {
                    change.events.push(Event::CardDeclined {
                        seat,
                        alias: state.alias_of(seat),
                        own: false,
                    });
                }
            }
        }
    }
    store.set_talk_cards(&state.talk_id, &cards)?;
    Ok(())
}

fn know(
    cards: &mut TalkCards,
    contacts: &[Contact],
    state: &TalkState,
    seat: u8,
    reveal: CardReveal,
    events: &mut Vec<Event>,
) {
    let contact = contacts.iter().any(|c| c.card_key == reveal.card_key);
    cards.known.retain(|k| k.seat != seat);
    events.push(Event::CardRevealed {
        seat,
        alias: state.alias_of(seat),
        fields: reveal.card.fields.clone(),
        keepable: reveal.keepable,
        contact,
    });
    cards.known.push(Known {
        seat,
        card_key: reveal.card_key,
        card: reveal.card.clone(),
        keepable: reveal.keepable,
        contact,
    });
}

/// Records that the member of `seat` saw `reveal`'s fields; the event for it.
fn shown(cards: &mut TalkCards, state: &TalkState, seat: u8, reveal: &CardReveal) -> Event {
    let fields = reveal.card.kinds();
    match cards.shown.iter_mut().find(|s| s.seat == seat) {
        Some(s) => {
            // Once seen, a field stays seen: a later, smaller reveal takes none back.
            let mut all = s.fields.clone();
            all.extend(&fields);
            all.sort_unstable();
            all.dedup();
            s.fields = all;
            s.keepable |= reveal.keepable;
        }
        None => cards.shown.push(Shown {
            seat,
            fields: fields.clone(),
            keepable: reveal.keepable,
        }),
    }
    Event::CardShown {
        seat,
        alias: state.alias_of(seat),
        fields,
        keepable: reveal.keepable,
    }
}

/// Which of our card's fields to show: `asked` (all of the card's if `None`) that the
/// card has.
fn chosen(card: &Card, asked: Option<&[u8]>) -> Result<Card, CardError> {
    let part = match asked {
        Some(kinds) => card.only(kinds),
        None => card.clone(),
    };
    if part.fields.is_empty() {
        return Err(CardError::NoFields);
    }
    Ok(part)
}

impl Client {
    /// This home's card.
    pub async fn card(&self) -> Result<Option<OwnCard>, ClientError> {
        let store = self.leases().take().await?;
        Ok(store.home_card()?.map(|h| OwnCard {
            key_id: hex_of(&CardKey::from_seed(&h.seed).public()[..8]),
            card: h.card.clone(),
        }))
    }

    /// Sets this home's card (its card key is made the first time and kept).
    pub async fn set_card(&self, card: Card) -> Result<OwnCard, ClientError> {
        check_card(&card)?;
        let store = self.leases().take().await?;
        let seed = match store.home_card()? {
            Some(h) => h.seed,
            None => *CardKey::generate(&mut rand::rng()).seed(),
        };
        let home = HomeCard { seed, card };
        store.set_home_card(&home)?;
        store.flush()?;
        Ok(OwnCard {
            key_id: hex_of(&CardKey::from_seed(&home.seed).public()[..8]),
            card: home.card.clone(),
        })
    }

    /// Erases this home's card and card key. Returns whether there was one.
    pub async fn clear_card(&self) -> Result<bool, ClientError> {
        let store = self.leases().take().await?;
        let had = store.clear_home_card()?;
        store.flush()?;
        Ok(had)
    }

    /// Shows chosen fields of our card to the member `alias` of `talk`, to it alone.
    pub async fn reveal(
        &self,
        talk: &str,
        alias: &str,
        fields: Option<&[u8]>,
        keepable: bool,
    ) -> Result<CardSent, ClientError> {
        self.card_message(talk, alias, Step::Reveal { fields, keepable })
            .await
    }

    /// Offers `alias` an exchange of cards (field names only; no card goes out yet).
    pub async fn offer_exchange(
        &self,
        talk: &str,
        alias: &str,
        fields: Option<&[u8]>,
        keepable: bool,
    ) -> Result<CardSent, ClientError> {
        self.card_message(talk, alias, Step::Offer { fields, keepable })
            .await
    }

    /// Accepts `alias`'s offer: our card (the offered fields we have) goes to it, and
    /// its card follows when its device next runs.
    pub async fn accept_exchange(
        &self,
        talk: &str,
        alias: &str,
        keepable: bool,
    ) -> Result<CardSent, ClientError> {
        self.card_message(talk, alias, Step::Accept { keepable })
            .await
    }

    /// Declines `alias`'s offer: no card is shown either way.
    pub async fn decline_exchange(&self, talk: &str, alias: &str) -> Result<CardSent, ClientError> {
        self.card_message(talk, alias, Step::Decline).await
    }

    async fn card_message(
        &self,
        talk: &str,
        alias: &str,
        step: Step<'_>,
    ) -> Result<CardSent, ClientError> {
        let (mut session, authed) = self.connected(talk).await?;
        // Introductions, and the other side's card messages, first.
        session.sync(&authed.conn).await?;
        if authed.status.state == TalkPhase::Pending {
            return Err(ClientError::Pending {
                members: authed.status.members,
                quorum: authed.status.quorum,
            });
        }
        let state = session.state();
        let peer = state
            .member_by_alias(alias)
            .ok_or_else(|| CardError::UnknownMember {
                alias: alias.to_owned(),
            })?;
        let (seat, to) = (peer.seat, peer.pseudonym);
        let store = session.store();
        let mut cards = store.talk_cards(&state.talk_id)?;
        let sign = |part: Card, keepable: bool| -> Result<CardReveal, ClientError> {
            let home = store.home_card()?.ok_or(CardError::NoCard)?;
            let key = CardKey::from_seed(&home.seed);
            CardReveal::new(
                &key,
                &state.mailbox,
                &state.own_pseudonym(),
                &to,
                part,
                keepable,
            )
            .map_err(|e| ClientError::Member(e.into()))
        };
        let home_card = || -> Result<Card, ClientError> {
            Ok(store.home_card()?.ok_or(CardError::NoCard)?.card.clone())
        };
        let mut events = Vec::new();
        let (body, fields, keepable) = match step {
            Step::Reveal { fields, keepable } => {
                let reveal = sign(chosen(&home_card()?, fields)?, keepable)?;
                events.push(shown(&mut cards, state, seat, &reveal));
                let kinds = reveal.card.kinds();
                (DirectBody::CardReveal { reveal }, kinds, keepable)
            }
            Step::Offer { fields, keepable } => {
                let reveal = sign(chosen(&home_card()?, fields)?, keepable)?;
                let kinds = reveal.card.kinds();
                let mut exchange = [0u8; 16];
                rand::Rng::fill_bytes(&mut rand::rng(), &mut exchange);
                cards.out.push(OfferOut {
                    exchange,
                    seat,
                    fields: kinds.clone(),
                    reveal,
                });
                if cards.out.len() > MAX_EXCHANGES {
                    cards.out.remove(0);
                }
                events.push(Event::CardOffered {
                    seat,
                    alias: alias.to_owned(),
                    fields: kinds.clone(),
                    keepable,
                    own: true,
                });
                (
                    DirectBody::CardOffer {
                        exchange,
                        fields: kinds.clone(),
                        keepable,
                    },
                    kinds,
                    keepable,
                )
            }
            Step::Accept { keepable } => {
                let offer = cards
                    .inbound
                    .iter_mut()
                    .rev()
                    .find(|o| o.seat == seat && !o.accepted)
                    .ok_or_else(|| CardError::NoOffer {
                        alias: alias.to_owned(),
                    })?;
                let part = chosen(&home_card()?, Some(&offer.fields))?;
                offer.accepted = true;
                let exchange = offer.exchange;
                let reveal = sign(part, keepable)?;
                events.push(shown(&mut cards, state, seat, &reveal));
                let kinds = reveal.card.kinds();
                (DirectBody::CardAccept { exchange, reveal }, kinds, keepable)
            }
            Step::Decline => {
                let i = cards
                    .inbound
                    .iter()
                    .rposition(|o| o.seat == seat && !o.accepted)
                    .ok_or_else(|| CardError::NoOffer {
                        alias: alias.to_owned(),
                    })?;
                let offer = cards.inbound.remove(i);
                events.push(Event::CardDeclined {
                    seat,
                    alias: alias.to_owned(),
                    own: true,
                });
                (
                    DirectBody::CardDecline {
                        exchange: offer.exchange,
                    },
                    Vec::new(),
                    false,
                )
            }
        };
        let sealed = state.seal_card(seat, &body)?;
        // What was shown is on disk before it is sent (the exposure errs on the side
        // of telling).
        store.set_talk_cards(&state.talk_id, &cards)?;
        let talk = state.name();
        let change = Handled {
            events,
            outgoing: vec![(EnvelopeKind::Chat, sealed)],
            ..Handled::default()
        };
        session.commit(&authed.conn, change, false).await?;
        drop(session);
        authed.conn.close().await;
        Ok(CardSent {
            talk,
            seat,
            alias: alias.to_owned(),
            fields: names(&fields),
            keepable,
        })
    }

    /// The members of `talk` as this viewer knows them: with the cards shown to it.
    pub async fn who(&self, talk: &str) -> Result<(String, Vec<Who>), ClientError> {
        let session = self.session(talk).await?;
        let state = session.state();
        let cards = session.store().talk_cards(&state.talk_id)?;
        let mut out = vec![Who {
            seat: state.seat,
            alias: state.alias.clone(),
            own: true,
            left: false,
            card: None,
            saw: Vec::new(),
            role: state.role().as_str(),
        }];
        for p in &state.roster {
            out.push(Who {
                seat: p.seat,
                alias: p.alias.clone(),
                own: false,
                left: p.left,
                role: state.role_of(p.seat).as_str(),
                card: cards.known.iter().find(|k| k.seat == p.seat).cloned(),
                saw: cards
                    .shown
                    .iter()
                    .find(|s| s.seat == p.seat)
                    .map(|s| names(&s.fields))
                    .unwrap_or_default(),
            });
        }
        out.sort_by_key(|w| w.seat);
        Ok((state.name(), out))
    }

    /// The cards shown to this viewer in `talk`, by seat.
    pub async fn known_cards(&self, talk: &str) -> Result<Vec<Known>, ClientError> {
        let session = self.session(talk).await?;
        Ok(session.store().talk_cards(&session.talk_id())?.known)
    }

    /// What is known about this member in `talk` (spec §14, §19).
    pub async fn exposure(&self, talk: &str) -> Result<Exposure, ClientError> {
        let session = self.session(talk).await?;
        let state = session.state();
        let store = session.store();
        let cards = store.talk_cards(&state.talk_id)?;
        let history = store.history(&state.talk_id, 0)?;
        let mut chat = 0u64;
        let mut card_msgs = 0u64;
        for e in &history {
            match &e.event {
                Event::Message { own: true, .. } | Event::FileOffered { own: true, .. } => {
                    chat += 1
                }
                Event::CardOffered { own: true, .. } | Event::CardDeclined { own: true, .. } => {
                    card_msgs += 1
                }
                Event::CardShown { .. } => card_msgs += 1,
                _ => {}
            }
        }
        let status = state.status;
        Ok(Exposure {
            talk: state.name(),
            alias: state.alias.clone(),
            seat: state.seat,
            shown: cards
                .shown
                .iter()
                .map(|s| (s.seat, state.alias_of(s.seat), names(&s.fields), s.keepable))
                .collect(),
            offered: cards
                .out
                .iter()
                .map(|o| (o.seat, state.alias_of(o.seat), names(&o.fields)))
                .collect(),
            relay: RelayView {
                seats: state.params.seats,
                quorum: state.params.quorum,
                ttl_secs: state.params.ttl_secs,
                close: match state.params.close {
                    nook_proto::ClosePolicy::Owner => "owner".into(),
                    nook_proto::ClosePolicy::Any => "any".into(),
                },
                expires_at: state.expires_at,
                members: status.map(|s| s.members),
                seats_left: status.map_or(0, |s| s.left.count_ones()),
                chat_envelopes_sent: chat + card_msgs,
                card_envelopes_sent: card_msgs,
            },
            home: HomeView {
                history_entries: u64::try_from(history.len()).unwrap_or(u64::MAX),
                cards_known: cards.known.len(),
                has_card: store.home_card()?.is_some(),
                contacts: store.contacts()?.len(),
            },
        })
    }

    /// The cards this home kept after their talks ended.
    pub async fn contacts(&self) -> Result<Vec<Contact>, ClientError> {
        let store = self.leases().take().await?;
        Ok(store.contacts()?)
    }

    /// Forgets the contacts whose id starts with `id` (at least 4 hex digits);
    /// returns them.
    pub async fn forget_contact(&self, id: &str) -> Result<Vec<Contact>, ClientError> {
        let id = id.trim().to_ascii_lowercase();
        let store = self.leases().take().await?;
        let all = store.contacts()?;
        let (gone, kept): (Vec<Contact>, Vec<Contact>) = all
            .into_iter()
            .partition(|c| id.len() >= 4 && c.id().starts_with(&id));
        if gone.is_empty() {
            return Err(CardError::UnknownContact { id }.into());
        }
        store.set_contacts(&kept)?;
        store.flush()?;
        Ok(gone)
    }
}

enum Step<'a> {
    Reveal {
        fields: Option<&'a [u8]>,
        keepable: bool,
    },
    Offer {
        fields: Option<&'a [u8]>,
        keepable: bool,
    },
    Accept {
        keepable: bool,
    },
    Decline,
}

/// The keepable cards of a talk that ends, added to the contacts (a card key already
/// kept gets the newer card).
pub(crate) fn keep_contacts(store: &Store, cards: &TalkCards) -> Result<(), StoreError> {
    let keep: Vec<&Known> = cards.known.iter().filter(|k| k.keepable).collect();
    if keep.is_empty() {
        return Ok(());
    }
    let mut contacts = store.contacts()?;
    for k in keep {
        contacts.retain(|c| c.card_key != k.card_key);
        contacts.push(Contact {
            card_key: k.card_key,
            card: k.card.clone(),
            kept_at_ms: now_ms(),
        });
    }
    while contacts.len() > MAX_CONTACTS {
        contacts.remove(0);
    }
    store.set_contacts(&contacts)
}
