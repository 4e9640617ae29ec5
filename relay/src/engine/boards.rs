//! Boards (protocol-spec.md §17): sealed listings of talks under board ids, sealed seat
//! requests on them, and the owners' sealed answers. The relay reads none of them.
//!
//! Storage: in the listed mailbox's own namespace, so a close, an expiry or a last
//! leave effaces them with the mailbox key (`destroy` also drops them from memory).
//!
//! | key                 | value |
//! |---------------------|-------|
//! | `L` ‖ listing id    | `ListingRecord` (board id, sealed body, until, keep_open) |
//! | `Q` ‖ request id    | `RequestRecord` (listing id, sealed body, asked_at, sealed answer) |
//!
//! Memory mirrors them: [`Boards`], behind one lock taken only after a mailbox lock (or
//! with none held), never the other way round.

use std::collections::{BTreeSet, HashMap};

use bincode::{Decode, Encode};
use nook_proto::codec::{decode_body, encode_value};
use nook_proto::limits::{
    MAX_ANSWER, MAX_BROWSE_LISTINGS, MAX_LISTING, MAX_LISTINGS_PER_MAILBOX, MAX_REQUESTS_ANSWERED,
    MAX_SEAT_REQUEST, PADDING_BUCKETS,
};
use nook_proto::{
    Ask, BoardId, ErrorCode, ErrorFrame, ListingId, ListingView, MailboxId, MemberKey,
    PendingRequest, Post, Push, RequestId, Response,
};
use nook_vault::Namespace;

use super::mailbox::Mailbox;
use super::{Engine, MailboxRef, err, lock, storage_err};
use crate::outbox::{Outbox, pushes_of};

const K_LISTING: u8 = b'L';
const K_REQUEST: u8 = b'Q';

#[derive(Encode, Decode)]
struct ListingRecord {
    board: BoardId,
    body: Vec<u8>,
    until: u64,
    keep_open: bool,
}

#[derive(Encode, Decode)]
struct RequestRecord {
    listing: ListingId,
    body: Vec<u8>,
    asked_at: u64,
    answer: Option<Vec<u8>>,
}

struct Listing {
    mailbox: MailboxId,
    record: ListingRecord,
    requests: BTreeSet<RequestId>,
}

struct Request {
    mailbox: MailboxId,
    record: RequestRecord,
}

/// One mailbox's board records as start-up finds them in its namespace.
pub(super) struct StoredBoards {
    mailbox: MailboxId,
    listings: Vec<Record>,
    requests: Vec<Record>,
}

/// A stored key and its value.
type Record = (Vec<u8>, Vec<u8>);

/// Reads `mailbox`'s listing and request records (`None`: it has none, the usual case).
pub(super) fn read_stored(
    mailbox: MailboxId,
    ns: &Namespace,
) -> Result<Option<StoredBoards>, super::EngineError> {
    let read = |prefix: u8| -> Result<Vec<Record>, super::EngineError> {
        let mut out = Vec::new();
        for entry in ns.scan_prefix(&[prefix]) {
            let (key, value) = entry?;
            out.push((key, value));
        }
        Ok(out)
    };
    let listings = read(K_LISTING)?;
    let requests = read(K_REQUEST)?;
    if listings.is_empty() && requests.is_empty() {
        return Ok(None);
    }
    Ok(Some(StoredBoards {
        mailbox,
        listings,
        requests,
    }))
}

/// Every listing and request the relay holds, in memory.
#[derive(Default)]
pub(super) struct Boards {
    by_board: HashMap<BoardId, BTreeSet<ListingId>>,
    listings: HashMap<ListingId, Listing>,
    requests: HashMap<RequestId, Request>,
}

impl Boards {
    /// Rebuilds the boards from the records start-up read out of every live mailbox
    /// (idle mailboxes are not loaded, so their records come from the scan).
    pub(super) fn load(stored: Vec<StoredBoards>) -> Result<Boards, super::EngineError> {
        let mut boards = Boards::default();
        let corrupt = |what: &str| super::EngineError::Corrupt(format!("board {what} record"));
        let id_of = |key: &[u8]| key.get(1..).and_then(|k| <[u8; 16]>::try_from(k).ok());
        for mailbox in &stored {
            for (key, value) in &mailbox.listings {
                let id = id_of(key).ok_or_else(|| corrupt("listing"))?;
                let record: ListingRecord = decode_body(value).map_err(|_| corrupt("listing"))?;
                boards.insert_listing(mailbox.mailbox, ListingId(id), record);
            }
        }
        // Requests after every listing: a request names its listing, kept in
        // another mailbox's records only if the scan met that one first.
        for mailbox in &stored {
            for (key, value) in &mailbox.requests {
                let id = id_of(key).ok_or_else(|| corrupt("request"))?;
                let record: RequestRecord = decode_body(value).map_err(|_| corrupt("request"))?;
                if let Some(l) = boards.listings.get_mut(&record.listing) {
                    l.requests.insert(RequestId(id));
                    boards.requests.insert(
                        RequestId(id),
                        Request {
                            mailbox: mailbox.mailbox,
                            record,
                        },
                    );
                }
            }
        }
        Ok(boards)
    }

    pub(super) fn listing_count(&self) -> usize {
        self.listings.len()
    }

    fn insert_listing(&mut self, mailbox: MailboxId, id: ListingId, record: ListingRecord) {
        self.by_board.entry(record.board).or_default().insert(id);
        let requests = self
            .listings
            .remove(&id)
            .map(|l| l.requests)
            .unwrap_or_default();
        self.listings.insert(
            id,
            Listing {
                mailbox,
                record,
                requests,
            },
        );
    }

    /// Drops a listing and its requests from memory; returns the store keys to remove.
    fn remove_listing(&mut self, id: &ListingId) -> Vec<Vec<u8>> {
        let Some(listing) = self.listings.remove(id) else {
            return Vec::new();
        };
        if let Some(set) = self.by_board.get_mut(&listing.record.board) {
            set.remove(id);
            if set.is_empty() {
                self.by_board.remove(&listing.record.board);
            }
        }
        let mut keys = vec![listing_key(id)];
        for r in &listing.requests {
            self.requests.remove(r);
            keys.push(request_key(r));
        }
        keys
    }

    /// Forgets everything of `mailbox` (its namespace is destroyed by the caller).
    pub(super) fn forget_mailbox(&mut self, mailbox: &MailboxId) {
        let ids: Vec<ListingId> = self
            .listings
            .iter()
            .filter(|(_, l)| l.mailbox == *mailbox)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.remove_listing(&id);
        }
    }
}

fn listing_key(id: &ListingId) -> Vec<u8> {
    [&[K_LISTING][..], &id.0].concat()
}

fn request_key(id: &RequestId) -> Vec<u8> {
    [&[K_REQUEST][..], &id.0].concat()
}

fn is_bucket(len: usize, max: usize) -> bool {
    len <= max && PADDING_BUCKETS.contains(&len)
}

/// Whether a listing of a talk in this state may be browsed and asked on.
fn live(mb: &Mailbox, until: u64, keep_open: bool, now: u64) -> bool {
    let status = mb.status();
    mb.talk.is_live()
        && now < until
        && now < mb.talk.ends_at()
        && status.members < status.seats
        && (keep_open || status.state == nook_proto::TalkPhase::Pending)
}

/// A connection's allowance of `Ask`s: a token bucket of `per_minute`, refilled per
/// minute, so one connection cannot flood an owner with requests.
#[derive(Debug)]
pub struct AskBudget {
    tokens: f64,
    per_minute: f64,
    last: std::time::Instant,
}

impl AskBudget {
    pub fn new(per_minute: u32) -> AskBudget {
        let per_minute = f64::from(per_minute.max(1));
        AskBudget {
            tokens: per_minute,
            per_minute,
            last: std::time::Instant::now(),
        }
    }

    pub fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.per_minute / 60.0).min(self.per_minute);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Engine {
    fn owner_mailbox(
        &self,
        mailbox: &MailboxId,
        member: &MemberKey,
    ) -> Result<MailboxRef<'_>, ErrorFrame> {
        let arc = self.mailbox(mailbox)?;
        let is_owner = lock(&arc)
            .talk
            .members()
            .iter()
            .any(|m| m.seat == 0 && m.key == *member);
        if !is_owner {
            return Err(err(
                ErrorCode::NotAllowed,
                "only the talk's creator (seat 0) may post it and answer its requests",
            ));
        }
        Ok(arc)
    }

    /// `Post`: stores (or replaces) a listing of an owner's talk.
    pub fn post(
        &self,
        outbox: &Outbox,
        id: u64,
        member: &MemberKey,
        req: Post,
    ) -> Result<(), ErrorFrame> {
        if !is_bucket(req.body.len(), MAX_LISTING) {
            return Err(err(
                ErrorCode::TooLarge,
                "a listing must be one padding bucket of at most 2048 bytes",
            ));
        }
        let now = self.now();
        let arc = self.owner_mailbox(&req.mailbox, member)?;
        let mb = lock(&arc);
        let until = req.until.unwrap_or(u64::MAX).min(mb.talk.ends_at());
        if until <= now {
            return Err(err(
                ErrorCode::BadRequest,
                "the listing's end is already past",
            ));
        }
        if !live(&mb, until, req.keep_open, now) {
            return Err(err(
                ErrorCode::NotAllowed,
                "the talk is full, open or ended: there is no seat to offer",
            ));
        }
        let record = ListingRecord {
            board: req.board,
            body: req.body,
            until,
            keep_open: req.keep_open,
        };
        let bytes = encode_value(&record)
            .map_err(|_| err(ErrorCode::Internal, "cannot encode the listing"))?;
        {
            let mut boards = lock(&self.boards);
            match boards.listings.get(&req.listing) {
                Some(l) if l.mailbox != req.mailbox => {
                    return Err(err(ErrorCode::NotAllowed, "that listing id is taken"));
                }
                Some(_) => {}
                None => {
                    let own = boards
                        .listings
                        .values()
                        .filter(|l| l.mailbox == req.mailbox)
                        .count();
                    let on_board = boards.by_board.get(&req.board).map_or(0, BTreeSet::len);
                    if own >= MAX_LISTINGS_PER_MAILBOX
                        || on_board >= self.limits.max_listings_per_board
                        || boards.listings.len() >= self.limits.max_listings
                    {
                        return Err(err(
                            ErrorCode::BoardFull,
                            "the board (or this relay, or this talk) holds as many listings as allowed",
                        ));
                    }
                }
            }
            mb.ns
                .put(&listing_key(&req.listing), &bytes)
                .map_err(storage_err)?;
            boards.insert_listing(req.mailbox, req.listing, record);
        }
        self.later(outbox, id, Response::Posted, vec![]);
        Ok(())
    }

    /// `Unpost`: withdraws a listing and its requests.
    pub fn unpost(
        &self,
        outbox: &Outbox,
        id: u64,
        member: &MemberKey,
        mailbox: &MailboxId,
        listing: &ListingId,
    ) -> Result<(), ErrorFrame> {
        let arc = self.owner_mailbox(mailbox, member)?;
        let mb = lock(&arc);
        let mut boards = lock(&self.boards);
        if boards
            .listings
            .get(listing)
            .is_none_or(|l| l.mailbox != *mailbox)
        {
            return Err(err(
                ErrorCode::UnknownListing,
                "no such listing of this talk",
            ));
        }
        for key in boards.remove_listing(listing) {
            mb.ns.remove(&key).map_err(storage_err)?;
        }
        drop(boards);
        self.later(outbox, id, Response::Unposted, vec![]);
        Ok(())
    }

    /// `Browse`: the live listings of a board after `after`.
    pub fn browse(&self, board: &BoardId, after: Option<ListingId>) -> Response {
        let now = self.now();
        let candidates: Vec<(ListingId, MailboxId, u64, bool)> = {
            let boards = lock(&self.boards);
            let Some(set) = boards.by_board.get(board) else {
                return Response::Listings {
                    items: Vec::new(),
                    more: false,
                };
            };
            let from = match after {
                Some(a) => std::ops::Bound::Excluded(a),
                None => std::ops::Bound::Unbounded,
            };
            set.range((from, std::ops::Bound::Unbounded))
                .filter_map(|id| {
                    let l = boards.listings.get(id)?;
                    Some((*id, l.mailbox, l.record.until, l.record.keep_open))
                })
                .collect()
        };
        let mut items = Vec::new();
        let mut more = false;
        for (listing, mailbox, until, keep_open) in candidates {
            // Loaded from the store if idle (and let go again when done).
            let Ok(arc) = self.mailbox(&mailbox) else {
                continue;
            };
            let (status, is_live) = {
                let mb = lock(&arc);
                (mb.status(), live(&mb, until, keep_open, now))
            };
            if !is_live {
                continue;
            }
            if items.len() == MAX_BROWSE_LISTINGS {
                more = true;
                break;
            }
            let Some(body) = lock(&self.boards)
                .listings
                .get(&listing)
                .map(|l| l.record.body.clone())
            else {
                continue;
            };
            items.push(ListingView {
                listing,
                body,
                members: status.members,
                seats: status.seats,
                quorum: status.quorum,
                open: status.state == nook_proto::TalkPhase::Open,
                closes_at: until,
            });
        }
        Response::Listings { items, more }
    }

    /// `Ask`: stores a seat request on a live listing and tells the owner.
    pub fn ask(&self, outbox: &Outbox, id: u64, req: Ask) -> Result<(), ErrorFrame> {
        if !is_bucket(req.body.len(), MAX_SEAT_REQUEST) {
            return Err(err(
                ErrorCode::TooLarge,
                "a seat request must be one padding bucket of at most 1024 bytes",
            ));
        }
        let unknown = || {
            err(
                ErrorCode::UnknownListing,
                "no such listing, or it has no seat to offer",
            )
        };
        let mailbox = lock(&self.boards)
            .listings
            .get(&req.listing)
            .map(|l| l.mailbox)
            .ok_or_else(unknown)?;
        let arc = self.mailbox(&mailbox).map_err(|_| unknown())?;
        let mb = lock(&arc);
        let now = self.now();
        let mut boards = lock(&self.boards);
        if boards.requests.contains_key(&req.request) {
            return Err(err(
                ErrorCode::RequestExists,
                "a request with this id was already made",
            ));
        }
        let Some(listing) = boards.listings.get(&req.listing) else {
            return Err(unknown());
        };
        if !live(&mb, listing.record.until, listing.record.keep_open, now) {
            return Err(unknown());
        }
        if listing.requests.len() >= self.limits.max_requests_per_listing {
            return Err(err(
                ErrorCode::TooManyRequests,
                "this listing holds as many requests as the relay allows; try later",
            ));
        }
        let record = RequestRecord {
            listing: req.listing,
            body: req.body,
            asked_at: now,
            answer: None,
        };
        let bytes = encode_value(&record)
            .map_err(|_| err(ErrorCode::Internal, "cannot encode the request"))?;
        mb.ns
            .put(&request_key(&req.request), &bytes)
            .map_err(storage_err)?;
        if let Some(l) = boards.listings.get_mut(&req.listing) {
            l.requests.insert(req.request);
        }
        boards
            .requests
            .insert(req.request, Request { mailbox, record });
        drop(boards);
        let owners = mb
            .subscribers
            .iter()
            .filter(|s| s.seat == 0)
            .map(|s| s.outbox.clone());
        let pushes = pushes_of(owners, Push::SeatRequested { mailbox });
        self.later(outbox, id, Response::Asked, pushes);
        Ok(())
    }

    /// `Requests`: the unanswered requests of an owner's listings.
    pub fn requests(
        &self,
        member: &MemberKey,
        mailbox: &MailboxId,
    ) -> Result<Response, ErrorFrame> {
        let arc = self.owner_mailbox(mailbox, member)?;
        let _mb = lock(&arc);
        let boards = lock(&self.boards);
        let mut items: Vec<PendingRequest> = boards
            .requests
            .iter()
            .filter(|(_, r)| r.mailbox == *mailbox && r.record.answer.is_none())
            .map(|(id, r)| PendingRequest {
                listing: r.record.listing,
                request: *id,
                body: r.record.body.clone(),
                asked_at: r.record.asked_at,
            })
            .collect();
        items.sort_by_key(|r| (r.asked_at, r.request));
        items.truncate(MAX_REQUESTS_ANSWERED);
        Ok(Response::Requests { items })
    }

    /// `Answer`: stores the owner's sealed answer to a request.
    pub fn answer(
        &self,
        outbox: &Outbox,
        id: u64,
        member: &MemberKey,
        mailbox: &MailboxId,
        request: &RequestId,
        body: Vec<u8>,
    ) -> Result<(), ErrorFrame> {
        if !is_bucket(body.len(), MAX_ANSWER) {
            return Err(err(
                ErrorCode::TooLarge,
                "an answer must be one padding bucket of at most 1024 bytes",
            ));
        }
        let arc = self.owner_mailbox(mailbox, member)?;
        let mb = lock(&arc);
        let mut boards = lock(&self.boards);
        let Some(r) = boards
            .requests
            .get_mut(request)
            .filter(|r| r.mailbox == *mailbox)
        else {
            return Err(err(
                ErrorCode::UnknownRequest,
                "no such request on this talk's listings",
            ));
        };
        match &r.record.answer {
            Some(a) if *a == body => {}
            Some(_) => {
                return Err(err(
                    ErrorCode::NotAllowed,
                    "this request was already answered",
                ));
            }
            None => {
                r.record.answer = Some(body);
                let bytes = encode_value(&r.record)
                    .map_err(|_| err(ErrorCode::Internal, "cannot encode the request"))?;
                mb.ns
                    .put(&request_key(request), &bytes)
                    .map_err(storage_err)?;
            }
        }
        drop(boards);
        self.later(outbox, id, Response::Answered, vec![]);
        Ok(())
    }

    /// `AskState`: the sealed answer of a request, if any.
    pub fn ask_state(&self, request: &RequestId) -> Result<Response, ErrorFrame> {
        lock(&self.boards)
            .requests
            .get(request)
            .map(|r| Response::AskState {
                answer: r.record.answer.clone(),
            })
            .ok_or_else(unknown_request)
    }

    /// `Withdraw`: the seeker drops its request.
    pub fn withdraw(
        &self,
        outbox: &Outbox,
        id: u64,
        request: &RequestId,
    ) -> Result<(), ErrorFrame> {
        let mailbox = lock(&self.boards)
            .requests
            .get(request)
            .map(|r| r.mailbox)
            .ok_or_else(unknown_request)?;
        let arc = self.mailbox(&mailbox).map_err(|_| unknown_request())?;
        let mb = lock(&arc);
        let mut boards = lock(&self.boards);
        let Some(r) = boards.requests.remove(request) else {
            return Err(unknown_request());
        };
        if let Some(l) = boards.listings.get_mut(&r.record.listing) {
            l.requests.remove(request);
        }
        mb.ns.remove(&request_key(request)).map_err(storage_err)?;
        drop(boards);
        self.later(outbox, id, Response::Withdrawn, vec![]);
        Ok(())
    }

    /// Erases listings whose `until` passed (with their requests). Returns how many.
    pub(super) fn sweep_boards(&self, now: u64) -> usize {
        let due: Vec<(ListingId, MailboxId)> = lock(&self.boards)
            .listings
            .iter()
            .filter(|(_, l)| l.record.until <= now)
            .map(|(id, l)| (*id, l.mailbox))
            .collect();
        let n = due.len();
        for (listing, mailbox) in due {
            let Ok(arc) = self.mailbox(&mailbox) else {
                lock(&self.boards).remove_listing(&listing);
                continue;
            };
            let mb = lock(&arc);
            let keys = lock(&self.boards).remove_listing(&listing);
            for key in keys {
                if let Err(e) = mb.ns.remove(&key) {
                    tracing::error!("storage error erasing an expired listing: {e}");
                }
            }
        }
        n
    }

    /// Listings held (live or not), for tests and the status line.
    pub fn listings_held(&self) -> usize {
        lock(&self.boards).listing_count()
    }

    /// Requests held, for tests.
    pub fn requests_held(&self) -> usize {
        lock(&self.boards).requests.len()
    }
}

fn unknown_request() -> ErrorFrame {
    err(
        ErrorCode::UnknownRequest,
        "no such request: it was withdrawn, or its listing or talk ended",
    )
}
