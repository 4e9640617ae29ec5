//! Boards (protocol-spec.md §17): post a talk on a board, browse a board, ask for a
//! seat, answer requests, and take the seat an admit hands over.
//!
//! What this device keeps: the owner's listings (id, board id, owner secret) and the
//! seats it gave to which request, in the talk's namespace (key `b`), so they go with
//! the talk; a seeker's pending asks (request id, reply secret, alias, where) sealed in
//! the home's `asks` namespace until the answer is taken. Never a phrase, a title or a
//! note.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bincode::{Decode, Encode};
use nook_crypto::RelayAddr;
use nook_crypto::board::{
    Answer, Board, BoxKey, FieldError, Listing, PhraseError, SeatRequest, open_answer,
    open_request, seal_answer, seal_request,
};
use nook_proto::codec::{decode_body, encode_value};
use nook_proto::{Ask, ErrorCode, ListingId, Post, Request, RequestId, Response};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::api::Client;
use crate::error::ClientError;
use crate::member::{Event, valid_alias};
use crate::session::now_ms;

/// The text form of a listing handle starts with this.
pub const LISTING_PREFIX: &str = "nook-listing:";
/// Pages of a board read at most by one browse (256 listings each).
const MAX_BROWSE_PAGES: usize = 64;

/// Why a board command could not be done (besides the relay's refusals).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BoardError {
    #[error("only the talk's creator can post it on a board and answer its requests")]
    NotOwner,
    #[error(transparent)]
    Phrase(#[from] PhraseError),
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error(
        "this is not a listing handle (it starts with {LISTING_PREFIX}; copy it from `nook browse`)"
    )]
    BadListing,
    #[error("no waiting request matches \"{0}\"; see `nook requests TALK`")]
    UnknownRequest(String),
    #[error("\"{0}\" matches several requests; give more characters")]
    AmbiguousRequest(String),
    #[error("no unused invite is left: every seat is given; decline the request instead")]
    NoFreeSeat,
    #[error("the talk has no listing to withdraw")]
    NotPosted,
    /// `read LISTING`: this device holds no pending ask on that listing.
    #[error(
        "this device has no pending ask on that listing: `nook ask LISTING` asks (an ask admitted earlier took its seat: `nook list` shows the talk)"
    )]
    NoAsk,
    /// `read LISTING`: the owner declined the ask (reported once; the ask is forgotten).
    #[error("the owner declined your ask for a seat")]
    Declined,
    /// `read LISTING`: the listing or its talk ended before the ask was answered.
    #[error("the listing or its talk is gone; the ask was not answered")]
    ListingGone,
}

/// What a listing says as a seeker sees it (`nook browse`).
#[derive(Debug, Clone)]
pub struct FoundListing {
    /// What `nook ask` takes.
    pub handle: String,
    pub title: String,
    pub about: String,
    pub tags: Vec<String>,
    pub members: u8,
    pub seats: u8,
    pub quorum: u8,
    pub open: bool,
    pub closes_at: u64,
}

/// What a listing says and how long it stays (`nook post`).
#[derive(Debug, Clone, Default)]
pub struct PostOptions {
    pub title: String,
    pub about: String,
    pub tags: Vec<String>,
    /// Seconds from now until the relay drops the listing (`None`: when the talk ends).
    pub until: Option<u64>,
    /// Keep the listing after the talk opens, until it is full.
    pub keep_open: bool,
}

/// What `nook post` returns.
#[derive(Debug, Clone)]
pub struct Posted {
    pub talk: String,
    /// The listing ids, one per board (hex).
    pub listings: Vec<String>,
    pub closes_at: Option<u64>,
}

/// Where a seeker's ask stands (`nook ask`, `nook asks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AskPhase {
    /// Sent; no answer yet.
    Waiting,
    /// Admitted: this device took the seat.
    Joined {
        talk: String,
    },
    Declined,
    /// The listing or the talk is gone (withdrawn, full, closed, expired).
    Gone,
}

/// One ask of this device.
#[derive(Debug, Clone)]
pub struct AskStatus {
    /// The request id (hex).
    pub request: String,
    pub alias: String,
    pub phase: AskPhase,
}

/// One waiting request on the owner's listings (`nook requests`).
#[derive(Debug, Clone)]
pub struct SeatRequestView {
    /// The request id (hex): what `admit` and `decline` take (a prefix will do).
    pub request: String,
    pub listing: String,
    pub alias: String,
    pub note: String,
    pub asked_at: u64,
}

/// What `nook requests` returns: the requests, and how many were dropped as forged
/// (they did not open) or replayed (a reply key seen before).
#[derive(Debug, Clone)]
pub struct Requests {
    pub talk: String,
    pub items: Vec<SeatRequestView>,
    pub forged: usize,
    pub replayed: usize,
}

/// The owner's answer, as `admit`/`decline` return it.
#[derive(Debug, Clone)]
pub struct Answered {
    pub talk: String,
    pub request: String,
    pub admitted: bool,
}

/// The listing a seeker asks on, in its text form.
#[derive(Encode, Decode)]
struct ListingRef {
    relay: String,
    listing: [u8; 16],
    owner_key: [u8; 32],
}

impl ListingRef {
    fn to_text(&self) -> String {
        let bytes = encode_value(self).unwrap_or_default();
        format!("{LISTING_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    fn parse(text: &str) -> Result<(ListingRef, RelayAddr), BoardError> {
        let b64 = text
            .trim()
            .strip_prefix(LISTING_PREFIX)
            .ok_or(BoardError::BadListing)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| BoardError::BadListing)?;
        let r: ListingRef = decode_body(&bytes).map_err(|_| BoardError::BadListing)?;
        let addr = r.relay.parse().map_err(|_| BoardError::BadListing)?;
        Ok((r, addr))
    }
}

/// The owner's side of a talk's listings (in the talk's namespace).
#[derive(Default, Encode, Decode, Zeroize, ZeroizeOnDrop)]
pub(crate) struct OwnerBoards {
    /// (listing id, board id, owner secret).
    listings: Vec<([u8; 16], [u8; 32], [u8; 32])>,
    /// (seat of the invite given, request id), and requests declined.
    given: Vec<(u8, [u8; 16])>,
    declined: Vec<[u8; 16]>,
    /// Reply keys seen, so a replayed request (same key, new id) is dropped.
    replies: Vec<([u8; 32], [u8; 16])>,
}

/// A seeker's pending ask (in the home's `asks` namespace).
#[derive(Encode, Decode, Zeroize, ZeroizeOnDrop)]
pub(crate) struct PendingAsk {
    pub(crate) relay: String,
    pub(crate) listing: [u8; 16],
    pub(crate) request: [u8; 16],
    pub(crate) reply_secret: [u8; 32],
    pub(crate) alias: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn corrupt(what: &str) -> ClientError {
    crate::store::StoreError::Corrupt(what.into()).into()
}

/// Argon2id of each phrase, off the async threads (64 MiB and a fraction of a second
/// each).
async fn derive_boards(
    phrases: Vec<String>,
    fingerprint: nook_crypto::Fingerprint,
) -> Result<Vec<Board>, ClientError> {
    tokio::task::spawn_blocking(move || {
        phrases
            .iter()
            .map(|p| Board::derive(p, &fingerprint))
            .collect::<Result<Vec<Board>, PhraseError>>()
    })
    .await
    .map_err(|_| ClientError::Protocol)?
    .map_err(|e| BoardError::Phrase(e).into())
}

impl Client {
    /// Posts the talk `talk` on each board named by `phrases` (owner only).
    pub async fn post(
        &self,
        talk: &str,
        phrases: &[String],
        opts: &PostOptions,
    ) -> Result<Posted, ClientError> {
        let PostOptions {
            title,
            about,
            tags,
            until,
            keep_open,
        } = opts;
        let (until, keep_open) = (*until, *keep_open);
        for p in phrases {
            nook_crypto::board::normalize_phrase(p).map_err(BoardError::from)?;
        }
        let (target, name, fingerprint) = {
            let session = self.session(talk).await?;
            if session.state().seat != 0 {
                return Err(BoardError::NotOwner.into());
            }
            let target = session.target()?;
            // The key the relay holds now: after a rotation this device followed, the
            // new address's board (spec §16), so re-posting reaches seekers given it.
            let fingerprint = match session.state().relay_key {
                Some(key) => nook_crypto::Fingerprint::of_key(&key),
                None => target.addr().fingerprint,
            };
            (target, session.state().name(), fingerprint)
        };
        let boards = derive_boards(phrases.to_vec(), fingerprint).await?;
        let (session, authed) = self.connected(talk).await?;
        drop(session);
        // The thread's rng is not Send: its scope ends before the next await.
        let made = {
            let mut made = Vec::new();
            let mut rng = rand::rng();
            for board in &boards {
                let key = BoxKey::generate(&mut rng);
                let mut id = [0u8; 16];
                rand::Rng::fill_bytes(&mut rng, &mut id);
                let listing = Listing {
                    title: title.clone(),
                    about: about.clone(),
                    tags: tags.clone(),
                    owner_key: key.public(),
                };
                listing.check().map_err(BoardError::from)?;
                let body = board
                    .seal_listing(&mut rng, &ListingId(id), &listing)
                    .map_err(|e| ClientError::Member(e.into()))?;
                made.push((id, board.id, key, body));
            }
            made
        };
        // Kept before the relay has them: a listing the relay holds always has its key.
        {
            let store = self.leases().take().await?;
            let state = store.find(&name)?;
            let mut own = owner_boards(&store, &state.talk_id)?;
            for (id, board, key, _) in &made {
                own.listings.push((*id, board.0, *key.to_bytes()));
            }
            save_owner_boards(&store, &state.talk_id, &own)?;
            store.flush()?;
        }
        let until_at = until.map(|secs| now_ms() / 1000 + secs);
        let mut listings = Vec::new();
        for (id, board, _, body) in made {
            let r = authed
                .conn
                .request(Request::Post(Post {
                    mailbox: target.mailbox(),
                    board,
                    listing: ListingId(id),
                    body,
                    until: until_at,
                    keep_open,
                }))
                .await?;
            if r != Response::Posted {
                return Err(ClientError::Protocol);
            }
            listings.push(hex(&id));
        }
        authed.conn.close().await;
        Ok(Posted {
            talk: name,
            listings,
            closes_at: until_at,
        })
    }

    /// Withdraws every listing of `talk`.
    pub async fn unpost(&self, talk: &str) -> Result<usize, ClientError> {
        let (session, authed) = self.connected(talk).await?;
        if session.state().seat != 0 {
            return Err(BoardError::NotOwner.into());
        }
        let talk_id = session.talk_id();
        let mailbox = session.target()?.mailbox();
        let own = owner_boards(session.store(), &talk_id)?;
        drop(session);
        if own.listings.is_empty() {
            return Err(BoardError::NotPosted.into());
        }
        let mut n = 0;
        for (id, _, _) in &own.listings {
            match authed
                .conn
                .request(Request::Unpost {
                    mailbox,
                    listing: ListingId(*id),
                })
                .await
            {
                Ok(_) => n += 1,
                // Gone already (expired, or withdrawn by an earlier run).
                Err(e) if e.code() == Some(ErrorCode::UnknownListing) => {}
                Err(e) => return Err(e.into()),
            }
        }
        authed.conn.close().await;
        let store = self.leases().take().await?;
        let mut own = owner_boards(&store, &talk_id)?;
        own.listings.clear();
        save_owner_boards(&store, &talk_id, &own)?;
        store.flush()?;
        Ok(n)
    }

    /// The live listings on the board `phrase` names on `relay`. A wrong phrase finds
    /// an empty board, exactly like a board nobody posted on.
    pub async fn browse(
        &self,
        relay: &str,
        phrase: &str,
        tag: Option<&str>,
    ) -> Result<Vec<FoundListing>, ClientError> {
        let addr: RelayAddr = relay.parse().map_err(ClientError::Address)?;
        let board = derive_boards(vec![phrase.to_string()], addr.fingerprint)
            .await?
            .pop()
            .ok_or(ClientError::Protocol)?;
        let conn = self.dialer().connect(&addr).await?;
        let mut out = Vec::new();
        let mut after = None;
        for _ in 0..MAX_BROWSE_PAGES {
            let r = conn
                .request(Request::Browse {
                    board: board.id,
                    after,
                })
                .await?;
            let Response::Listings { items, more } = r else {
                return Err(ClientError::Protocol);
            };
            after = items.last().map(|i| i.listing);
            for item in items {
                // A body that does not open was not sealed under this phrase: the
                // relay (or someone) made it up; it is not shown.
                let Ok(l) = board.open_listing(&item.listing, &item.body) else {
                    continue;
                };
                if tag.is_some_and(|t| !l.tags.iter().any(|x| x.eq_ignore_ascii_case(t))) {
                    continue;
                }
                let handle = ListingRef {
                    relay: addr.to_string(),
                    listing: item.listing.0,
                    owner_key: l.owner_key,
                }
                .to_text();
                out.push(FoundListing {
                    handle,
                    title: l.title.clone(),
                    about: l.about.clone(),
                    tags: l.tags.clone(),
                    members: item.members,
                    seats: item.seats,
                    quorum: item.quorum,
                    open: item.open,
                    closes_at: item.closes_at,
                });
            }
            if !more || after.is_none() {
                break;
            }
        }
        conn.close().await;
        Ok(out)
    }

    /// Asks for a seat on a listing (its handle from `browse`) under a fresh pseudonym.
    /// Asking again on the same listing is the same ask.
    pub async fn ask(
        &self,
        listing: &str,
        note: &str,
        alias: Option<&str>,
    ) -> Result<AskStatus, ClientError> {
        let (r, addr) = ListingRef::parse(listing)?;
        if let Some(a) = alias
            && !valid_alias(a)
        {
            return Err(crate::member::MemberError::BadAlias.into());
        }
        let (pending, fresh) = {
            let store = self.leases().take().await?;
            let existing = store
                .asks()?
                .into_iter()
                .filter_map(|b| decode_body::<PendingAsk>(&b).ok())
                .find(|p| p.listing == r.listing && p.relay == r.relay);
            match existing {
                Some(p) => (p, false),
                None => {
                    let alias = match alias {
                        Some(a) => a.to_string(),
                        None => crate::api::fresh_alias_in(&store)?,
                    };
                    let mut rng = rand::rng();
                    let mut request = [0u8; 16];
                    rand::Rng::fill_bytes(&mut rng, &mut request);
                    let p = PendingAsk {
                        relay: r.relay.clone(),
                        listing: r.listing,
                        request,
                        reply_secret: *BoxKey::generate(&mut rng).to_bytes(),
                        alias,
                    };
                    let bytes = Zeroizing::new(encode_value(&p).map_err(|_| corrupt("ask"))?);
                    store.save_ask(&request, &bytes)?;
                    store.flush()?;
                    (p, true)
                }
            }
        };
        let status = |phase| AskStatus {
            request: hex(&pending.request),
            alias: pending.alias.clone(),
            phase,
        };
        let request = SeatRequest {
            reply_key: BoxKey::from_bytes(pending.reply_secret).public(),
            alias: pending.alias.clone(),
            note: note.to_string(),
        };
        request.check().map_err(BoardError::from)?;
        let body = seal_request(
            &mut rand::rng(),
            &r.owner_key,
            &ListingId(r.listing),
            &RequestId(pending.request),
            &request,
        )
        .map_err(|e| ClientError::Member(e.into()))?;
        let conn = self.dialer().connect(&addr).await?;
        let answer = conn
            .request(Request::Ask(Ask {
                listing: ListingId(r.listing),
                request: RequestId(pending.request),
                body,
            }))
            .await;
        conn.close().await;
        match answer {
            Ok(Response::Asked) => Ok(status(AskPhase::Waiting)),
            Ok(_) => Err(ClientError::Protocol),
            // Ours, stored by an earlier run whose answer was lost, or asked before.
            Err(e) if e.code() == Some(ErrorCode::RequestExists) => Ok(status(AskPhase::Waiting)),
            Err(e) => {
                if fresh && !ClientError::from(e.clone()).is_transient() {
                    let store = self.leases().take().await?;
                    store.remove_ask(&pending.request)?;
                    store.flush()?;
                }
                Err(e.into())
            }
        }
    }

    /// Every pending ask of this device, after asking each relay for its answer: an
    /// admit is taken (the seat joined), a decline or a vanished request is reported
    /// once and forgotten.
    pub async fn asks(&self) -> Result<Vec<AskStatus>, ClientError> {
        let pending = self.pending_asks().await?;
        let mut out = Vec::new();
        for p in pending {
            out.push(self.settle_ask(&p).await?);
        }
        Ok(out)
    }

    /// The pending asks that have an answer now, taken as [`Client::asks`] takes them;
    /// the ones still waiting are left out. Without a pending ask it is one read of the
    /// local store and no connection, so every command a seeker runs next may call it.
    pub async fn settle_asks(&self) -> Result<Vec<AskStatus>, ClientError> {
        let pending = self.pending_asks().await?;
        let mut out = Vec::new();
        for p in pending {
            let s = self.settle_ask(&p).await?;
            if s.phase != AskPhase::Waiting {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Where this device's ask on `listing` (a handle from `browse`) stands, its answer
    /// taken if there is one. `None`: no ask on that listing is pending (never asked,
    /// or answered and forgotten).
    pub async fn ask_state(&self, listing: &str) -> Result<Option<AskStatus>, ClientError> {
        let (r, _) = ListingRef::parse(listing)?;
        let found = self
            .pending_asks()
            .await?
            .into_iter()
            .find(|p| p.listing == r.listing && p.relay == r.relay);
        match found {
            Some(p) => Ok(Some(self.settle_ask(&p).await?)),
            None => Ok(None),
        }
    }

    async fn pending_asks(&self) -> Result<Vec<PendingAsk>, ClientError> {
        let store = self.leases().take().await?;
        store
            .asks()?
            .into_iter()
            .map(|b| decode_body::<PendingAsk>(&b).map_err(|_| corrupt("ask")))
            .collect()
    }

    async fn settle_ask(&self, p: &PendingAsk) -> Result<AskStatus, ClientError> {
        let status = |phase| AskStatus {
            request: hex(&p.request),
            alias: p.alias.clone(),
            phase,
        };
        let addr: RelayAddr = p.relay.parse().map_err(|_| corrupt("ask's relay"))?;
        let request = RequestId(p.request);
        let conn = self.dialer().connect(&addr).await?;
        let answer = match conn.request(Request::AskState { request }).await {
            Ok(Response::AskState { answer }) => answer,
            Ok(_) => return Err(ClientError::Protocol),
            Err(e) if e.code() == Some(ErrorCode::UnknownRequest) => {
                conn.close().await;
                self.forget_ask(&p.request).await?;
                return Ok(status(AskPhase::Gone));
            }
            Err(e) => return Err(e.into()),
        };
        let Some(body) = answer else {
            conn.close().await;
            return Ok(status(AskPhase::Waiting));
        };
        let reply = BoxKey::from_bytes(p.reply_secret);
        let opened = open_answer(&reply, &request, &body);
        let phase = match opened.as_ref() {
            Ok(Answer::Admit { invite }) => {
                let joined = self.join(invite, Some(&p.alias)).await?;
                AskPhase::Joined { talk: joined.talk }
            }
            Ok(Answer::Decline) => AskPhase::Declined,
            // Not from the owner (the relay made it up): keep waiting for the real one.
            Err(_) => {
                conn.close().await;
                return Ok(status(AskPhase::Waiting));
            }
        };
        // The answer is taken: the relay may forget the request.
        match conn.request(Request::Withdraw { request }).await {
            Ok(_) => {}
            Err(e) if e.code() == Some(ErrorCode::UnknownRequest) => {}
            Err(e) => return Err(e.into()),
        }
        conn.close().await;
        self.forget_ask(&p.request).await?;
        Ok(status(phase))
    }

    async fn forget_ask(&self, request: &[u8; 16]) -> Result<(), ClientError> {
        let store = self.leases().take().await?;
        store.remove_ask(request)?;
        store.flush()?;
        Ok(())
    }

    /// The waiting requests on `talk`'s listings, opened (owner only).
    pub async fn requests(&self, talk: &str) -> Result<Requests, ClientError> {
        let (name, _, items, forged, replayed, authed) = self.open_requests(talk).await?;
        authed.conn.close().await;
        Ok(Requests {
            talk: name,
            items: items.into_iter().map(|(v, _)| v).collect(),
            forged,
            replayed,
        })
    }

    #[allow(clippy::type_complexity)]
    async fn open_requests(
        &self,
        talk: &str,
    ) -> Result<
        (
            String,
            [u8; 8],
            Vec<(SeatRequestView, [u8; 32])>,
            usize,
            usize,
            crate::session::Authed,
        ),
        ClientError,
    > {
        let (session, authed) = self.connected(talk).await?;
        if session.state().seat != 0 {
            return Err(BoardError::NotOwner.into());
        }
        let name = session.state().name();
        let talk_id = session.talk_id();
        let mailbox = session.target()?.mailbox();
        drop(session);
        let r = authed.conn.request(Request::Requests { mailbox }).await?;
        let Response::Requests { items } = r else {
            return Err(ClientError::Protocol);
        };
        let store = self.leases().take().await?;
        let (out, forged, replayed) = take_requests(&store, &talk_id, items)?;
        Ok((name, talk_id, out, forged, replayed, authed))
    }

    /// Notes in the talk's history the seat requests this device has not seen yet
    /// (`nook read` on the owner's device, while the talk has listings); nothing for a
    /// member or a talk never posted.
    pub async fn note_seat_requests(&self, talk: &str) -> Result<(), ClientError> {
        {
            let session = self.session(talk).await?;
            let own = owner_boards(session.store(), &session.talk_id())?;
            if session.state().seat != 0 || own.listings.is_empty() {
                return Ok(());
            }
        }
        self.open_requests(talk).await?.5.conn.close().await;
        Ok(())
    }
}

/// The seat requests the relay answered, opened with the talk's listing keys: (each
/// request and its reply key, how many were forged, how many replayed). Requests seen
/// for the first time are noted in the talk's history, in the same durable write.
#[allow(clippy::type_complexity)]
pub(crate) fn take_requests(
    store: &crate::store::Store,
    talk_id: &[u8; 8],
    items: Vec<nook_proto::PendingRequest>,
) -> Result<(Vec<(SeatRequestView, [u8; 32])>, usize, usize), ClientError> {
    let mut own = owner_boards(store, talk_id)?;
    let (mut forged, mut replayed, mut out, mut new) = (0, 0, Vec::new(), Vec::new());
    {
        for item in items {
            let Some((_, _, secret)) = own.listings.iter().find(|l| l.0 == item.listing.0) else {
                forged += 1;
                continue;
            };
            let key = BoxKey::from_bytes(*secret);
            let Ok(req) = open_request(&key, &item.listing, &item.request, &item.body) else {
                forged += 1;
                continue;
            };
            match own.replies.iter().find(|(k, _)| *k == req.reply_key) {
                Some((_, id)) if *id != item.request.0 => {
                    replayed += 1;
                    continue;
                }
                Some(_) => {}
                None => {
                    own.replies.push((req.reply_key, item.request.0));
                    new.push(Event::SeatRequested {
                        request: hex(&item.request.0),
                        alias: req.alias.clone(),
                        note: req.note.clone(),
                    });
                }
            }
            out.push((
                SeatRequestView {
                    request: hex(&item.request.0),
                    listing: hex(&item.listing.0),
                    alias: req.alias.clone(),
                    note: req.note.clone(),
                    asked_at: item.asked_at,
                },
                req.reply_key,
            ));
        }
    }
    save_owner_boards(store, talk_id, &own)?;
    store.append(talk_id, new, now_ms())?;
    store.flush()?;
    Ok((out, forged, replayed))
}

impl Client {
    /// Admits (hands one of the talk's unused invites to) or declines a request.
    pub async fn answer(
        &self,
        talk: &str,
        request: &str,
        admit: bool,
    ) -> Result<Answered, ClientError> {
        let (name, talk_id, items, _, _, authed) = self.open_requests(talk).await?;
        let wanted = request.trim().to_ascii_lowercase();
        let mut matching = items.iter().filter(|(v, _)| v.request.starts_with(&wanted));
        let Some((view, reply_key)) = matching.next() else {
            return Err(BoardError::UnknownRequest(request.to_string()).into());
        };
        if wanted.is_empty() || matching.next().is_some() {
            return Err(BoardError::AmbiguousRequest(request.to_string()).into());
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(view.request.get(2 * i..2 * i + 2).unwrap_or("00"), 16)
                .unwrap_or(0);
        }
        let (answer, seat) = {
            let store = self.leases().take().await?;
            let state = store.load(&talk_id)?.ok_or(ClientError::TalkGone)?;
            let own = owner_boards(&store, &talk_id)?;
            if admit {
                // An invite given to this request before (a retry) is given again.
                let given = own.given.iter().find(|(_, r)| *r == id).map(|(s, _)| *s);
                let pick = state
                    .invites
                    .iter()
                    .find(|(seat, _)| {
                        given.map_or_else(
                            || !own.given.iter().any(|(s, _)| s == seat),
                            |g| g == *seat,
                        )
                    })
                    .ok_or(BoardError::NoFreeSeat)?;
                (
                    Answer::Admit {
                        invite: pick.1.clone(),
                    },
                    Some(pick.0),
                )
            } else {
                (Answer::Decline, None)
            }
        };
        let body = seal_answer(&mut rand::rng(), reply_key, &RequestId(id), &answer)
            .map_err(|e| ClientError::Member(e.into()))?;
        // Noted before it is sent: a seat handed out is never handed to another.
        {
            let store = self.leases().take().await?;
            let mut own = owner_boards(&store, &talk_id)?;
            match seat {
                Some(s) if !own.given.iter().any(|(_, r)| *r == id) => own.given.push((s, id)),
                Some(_) => {}
                None => own.declined.push(id),
            }
            save_owner_boards(&store, &talk_id, &own)?;
            store.flush()?;
        }
        let mailbox = {
            let store = self.leases().take().await?;
            store.load(&talk_id)?.ok_or(ClientError::TalkGone)?.mailbox
        };
        let r = authed
            .conn
            .request(Request::Answer {
                mailbox,
                request: RequestId(id),
                body,
            })
            .await?;
        authed.conn.close().await;
        if r != Response::Answered {
            return Err(ClientError::Protocol);
        }
        Ok(Answered {
            talk: name,
            request: view.request.clone(),
            admitted: admit,
        })
    }
}

fn owner_boards(
    store: &crate::store::Store,
    talk_id: &[u8; 8],
) -> Result<OwnerBoards, ClientError> {
    match store.board(talk_id)? {
        Some(bytes) => decode_body(&bytes).map_err(|_| corrupt("board listings")),
        None => Ok(OwnerBoards::default()),
    }
}

/// The seats whose invites the owner gave to admitted seat requests: no longer the
/// owner's to hand out, though the relay counts them unused until the seat is taken.
pub(crate) fn given_seats(
    store: &crate::store::Store,
    talk_id: &[u8; 8],
) -> Result<Vec<u8>, ClientError> {
    Ok(owner_boards(store, talk_id)?
        .given
        .iter()
        .map(|(seat, _)| *seat)
        .collect())
}

fn save_owner_boards(
    store: &crate::store::Store,
    talk_id: &[u8; 8],
    own: &OwnerBoards,
) -> Result<(), ClientError> {
    let bytes = Zeroizing::new(encode_value(own).map_err(|_| corrupt("board listings"))?);
    store.set_board(talk_id, &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_handle_reads_back_and_garbage_is_refused() {
        let r = ListingRef {
            relay: "nook://AAAA@127.0.0.1:1".into(),
            listing: [1; 16],
            owner_key: [2; 32],
        };
        let text = r.to_text();
        assert!(text.starts_with(LISTING_PREFIX));
        assert!(matches!(
            ListingRef::parse("nook-listing:!!"),
            Err(BoardError::BadListing)
        ));
        assert!(matches!(
            ListingRef::parse("hello"),
            Err(BoardError::BadListing)
        ));
    }
}
