//! The talk API the CLI, the chat screen and the tests use.
//!
//! Each operation connects to the talk's relay (pinning its key), authenticates with
//! the talk's relay-auth key, and keeps the local store and the relay in step:
//! envelopes are stored locally (durably) before they are acknowledged to the relay,
//! and a talk the relay reports closed or expired is deleted locally at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nook_crypto::auth::{AuthOp, params_digest, sign_relay_auth, verify_receipt};
use nook_crypto::kdf::sha256;
use nook_crypto::{Invite, RelayAddr, TalkIdentity};
use nook_proto::{
    Auth, Close, Create, EnvelopeKind, ErrorCode, Join, MailboxId, Push, Put, Receipt, Request,
    Response, Seq, TalkPhase, TalkStatus,
};

use crate::member::{Event, MemberError, TalkOptions, TalkState, valid_alias};
use crate::store::{HistoryEntry, Home, Store, StoreError, talk_id_text};
use crate::transport::{ConnectError, RelayConnection, RequestError};

/// Why an operation failed. Each message says what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("invalid invite: {0}")]
    Invite(String),
    #[error("invalid relay address: {0}")]
    Address(String),
    #[error("the invite is unknown or was already used; ask for a new one")]
    InviteUsed,
    #[error(
        "the talk is not open yet ({members}/{quorum} seats taken); `nook read TALK --wait-open` waits for it"
    )]
    Pending { members: u8, quorum: u8 },
    #[error(
        "the talk has ended (closed or expired); everything this device held for it has been deleted"
    )]
    TalkGone,
    #[error("only the owner may close this talk")]
    NotAllowed,
    #[error("the relay refused: {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("the connection to the relay was lost ({0}); run the command again")]
    Lost(String),
    #[error("the relay's deletion receipt does not verify against its pinned key")]
    BadReceipt,
    #[error("the relay sent an unexpected answer")]
    Protocol,
    #[error(transparent)]
    Member(#[from] MemberError),
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// The process exit code the CLI uses for this error (documented in the README).
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Store(StoreError::NotFound(_) | StoreError::Ambiguous(_)) => 3,
            ClientError::Connect(ConnectError::WrongFingerprint { .. })
            | ClientError::BadReceipt => 7,
            ClientError::Connect(_) | ClientError::Lost(_) => 4,
            ClientError::Invite(_)
            | ClientError::Address(_)
            | ClientError::InviteUsed
            | ClientError::Pending { .. }
            | ClientError::NotAllowed
            | ClientError::Refused { .. }
            | ClientError::Usage(_)
            | ClientError::Member(_) => 5,
            ClientError::TalkGone => 6,
            ClientError::Store(_) | ClientError::Protocol => 1,
        }
    }
}

impl From<RequestError> for ClientError {
    fn from(e: RequestError) -> ClientError {
        match e {
            RequestError::Refused { code, message } => match code {
                ErrorCode::MailboxClosed | ErrorCode::UnknownMailbox => ClientError::TalkGone,
                ErrorCode::InviteInvalid => ClientError::InviteUsed,
                _ => ClientError::Refused { code, message },
            },
            RequestError::Lost(m) => ClientError::Lost(m),
            RequestError::Unexpected => ClientError::Protocol,
        }
    }
}

/// What `create` returns.
#[derive(Debug, Clone)]
pub struct CreatedTalk {
    pub talk: String,
    pub invites: Vec<String>,
    pub status: TalkStatus,
    pub alias: String,
    pub relay: String,
}

/// What `join` returns.
#[derive(Debug, Clone)]
pub struct JoinedTalk {
    pub talk: String,
    pub seat: u8,
    pub alias: String,
    pub status: TalkStatus,
}

/// One line of `nook list`.
#[derive(Debug, Clone)]
pub struct TalkSummary {
    pub talk: String,
    pub relay: String,
    pub alias: String,
    pub seat: u8,
    pub owner: bool,
    pub status: Option<TalkStatus>,
    pub open: bool,
    pub unread: u64,
    pub expires_at: u64,
    pub members: Vec<(u8, String)>,
    pub invites: Vec<String>,
}

/// When `follow` stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Until the talk closes or expires.
    Closed,
    /// Until the talk is open.
    Open,
}

/// Connection state for the chat screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connected,
    Reconnecting { attempt: u32, reason: String },
}

/// What a `follow` sink is told.
#[derive(Debug, Clone)]
pub enum Update {
    Entry(HistoryEntry),
    Status(TalkStatus),
    Link(Link),
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

/// A nook member's client, rooted at one home folder.
///
/// Clones share one gate: inside a process, store sessions queue on it without
/// blocking a thread (the chat screen's follow and send tasks take turns); across
/// processes, the home's file lock does the same. Opening the store costs ~10 ms
/// (sled), so an open store is kept for [`STORE_IDLE`] after its last use and handed
/// to the next operation; after that it is closed so other `nook` processes can
/// take the home.
#[derive(Debug, Clone)]
pub struct Client {
    home: Home,
    gate: Arc<tokio::sync::Mutex<()>>,
    cache: Arc<Mutex<StoreCache>>,
}

/// How long an idle open store is kept.
pub const STORE_IDLE: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
struct StoreCache {
    store: Option<Store>,
    /// Bumped at each return, so a closer only closes the store it was made for.
    generation: u64,
    /// The timer that closes the idle store; aborted when a newer one replaces it.
    closer: Option<tokio::task::JoinHandle<()>>,
}

/// An open store, held by this operation until dropped.
struct Session0 {
    /// Always `Some` until `drop` hands it back to the cache.
    store: Option<Store>,
    cache: Arc<Mutex<StoreCache>>,
    _gate: tokio::sync::OwnedMutexGuard<()>,
}

impl std::ops::Deref for Session0 {
    type Target = Store;
    fn deref(&self) -> &Store {
        match &self.store {
            Some(s) => s,
            None => unreachable!("the store is taken only when the session drops"),
        }
    }
}

impl Drop for Session0 {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let mut cache = match self.cache.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        cache.generation += 1;
        let generation = cache.generation;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                cache.store = Some(store);
                let shared = self.cache.clone();
                let closer = runtime.spawn(async move {
                    tokio::time::sleep(STORE_IDLE).await;
                    let idle = {
                        let mut c = match shared.lock() {
                            Ok(c) => c,
                            Err(p) => p.into_inner(),
                        };
                        if c.generation == generation {
                            c.store.take()
                        } else {
                            None
                        }
                    };
                    drop(idle);
                });
                if let Some(old) = cache.closer.replace(closer) {
                    old.abort();
                }
            }
            // No runtime to close it later: close it now.
            Err(_) => drop(store),
        }
    }
}

/// An authenticated connection for one talk.
struct Session {
    conn: RelayConnection,
    status: TalkStatus,
}

impl Client {
    pub fn new(home: &std::path::Path) -> Result<Client, ClientError> {
        Ok(Client {
            home: Home::new(home)?,
            gate: Arc::new(tokio::sync::Mutex::new(())),
            cache: Arc::new(Mutex::new(StoreCache::default())),
        })
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    /// Closes the store now if no operation is using it, so another process (or a
    /// direct `Home::open`) can take the home at once.
    pub fn close_store(&self) {
        let idle = match self.cache.lock() {
            Ok(mut c) => {
                c.generation += 1;
                c.store.take()
            }
            Err(p) => p.into_inner().store.take(),
        };
        drop(idle);
    }

    async fn store(&self) -> Result<Session0, ClientError> {
        let gate = self.gate.clone().lock_owned().await;
        let cached = match self.cache.lock() {
            Ok(mut c) => c.store.take(),
            Err(p) => p.into_inner().store.take(),
        };
        let store = match cached {
            Some(s) => s,
            None => self.home.open()?,
        };
        Ok(Session0 {
            store: Some(store),
            cache: self.cache.clone(),
            _gate: gate,
        })
    }

    /// Creates a talk on `relay` and returns its invites.
    pub async fn create(&self, relay: &str, opts: TalkOptions) -> Result<CreatedTalk, ClientError> {
        let addr: RelayAddr = relay
            .parse()
            .map_err(|e: nook_crypto::AddressError| ClientError::Address(e.to_string()))?;
        let now = now_secs();
        let mut new = TalkState::create(&addr, &opts, now)?;
        let conn = RelayConnection::connect(&addr).await?;
        let identity = new.state.identity();
        let digest = params_digest(&new.params).map_err(|_| ClientError::Protocol)?;
        let signature = sign_relay_auth(
            &identity,
            AuthOp::Create,
            &conn.hello().challenge,
            &MailboxId([0; 16]),
            &digest,
        );
        let response = conn
            .request(Request::Create(Create {
                params: new.params.clone(),
                owner: identity.member_key(),
                signature,
            }))
            .await?;
        let Response::Created { mailbox, status } = response else {
            return Err(ClientError::Protocol);
        };
        new.state.relay_key = Some(conn.hello().relay_key.0);
        let invites = new.state.created(&addr, mailbox, status, &new.seats);
        let store = self.store().await?;
        store.save(&new.state)?;
        let mut events = vec![Event::SeatsTaken {
            members: status.members,
            seats: status.seats,
            quorum: status.quorum,
        }];
        if status.state == TalkPhase::Open {
            events.push(Event::Opened);
        }
        store.append(&new.state.talk_id, events, now_ms())?;
        store.flush()?;
        conn.close().await;
        Ok(CreatedTalk {
            talk: talk_id_text(&new.state.talk_id),
            invites,
            status,
            alias: opts.alias,
            relay: addr.to_string(),
        })
    }

    /// Takes a seat with an invite.
    pub async fn join(&self, invite: &str, alias: Option<&str>) -> Result<JoinedTalk, ClientError> {
        let invite: Invite = invite
            .parse()
            .map_err(|e: nook_crypto::AddressError| ClientError::Invite(e.to_string()))?;
        if let Some(a) = alias
            && !valid_alias(a)
        {
            return Err(MemberError::BadAlias.into());
        }
        // The identity is stored before the relay sees it: if the answer to `Join` is
        // lost, running the same join again presents the same key, which the relay
        // recognises and answers again.
        let token_hash = invite.seat_secret.token_hash().0;
        let (identity, alias) = {
            let store = self.store().await?;
            match store.pending_join(&token_hash)? {
                Some(p) => (TalkIdentity::from_bytes(&p.identity), p.alias.clone()),
                None => {
                    let alias = match alias {
                        Some(a) => a.to_string(),
                        None => self.fresh_alias_in(&store)?,
                    };
                    let identity = TalkIdentity::generate(&mut rand::rng());
                    store.save_pending_join(
                        &token_hash,
                        &crate::store::PendingJoin {
                            identity: *identity.to_bytes(),
                            alias: alias.clone(),
                        },
                    )?;
                    store.flush()?;
                    (identity, alias)
                }
            }
        };
        let conn = RelayConnection::connect(&invite.relay).await?;
        let token = invite.seat_secret.join_token();
        let signature = sign_relay_auth(
            &identity,
            AuthOp::Join,
            &conn.hello().challenge,
            &invite.mailbox,
            token.as_ref(),
        );
        let member = identity.member_key();
        let response = match conn
            .request(Request::Join(Join {
                mailbox: invite.mailbox,
                token: *token,
                member,
                signature,
            }))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let e = ClientError::from(e);
                if !matches!(e, ClientError::Lost(_)) {
                    // Refused for good: there is nothing to retry.
                    let store = self.store().await?;
                    store.remove_pending_join(&token_hash)?;
                    store.flush()?;
                }
                return Err(e);
            }
        };
        let Response::Joined {
            seat,
            welcome,
            status,
        } = response
        else {
            return Err(ClientError::Protocol);
        };
        let (mut state, announce) =
            TalkState::joined(&invite, identity, &alias, seat, &welcome, status)?;
        state.relay_key = Some(conn.hello().relay_key.0);
        {
            let store = self.store().await?;
            store.save(&state)?;
            store.remove_pending_join(&token_hash)?;
            let mut events = vec![Event::SeatsTaken {
                members: status.members,
                seats: status.seats,
                quorum: status.quorum,
            }];
            if state.opened {
                events.push(Event::Opened);
            }
            store.append(&state.talk_id, events, now_ms())?;
            store.flush()?;
        }
        put(&conn, state.mailbox, EnvelopeKind::Handshake, announce).await?;
        conn.close().await;
        Ok(JoinedTalk {
            talk: talk_id_text(&state.talk_id),
            seat,
            alias,
            status,
        })
    }

    /// A random alias this person uses in no other talk, so aliases never link talks.
    pub async fn fresh_alias(&self) -> Result<String, ClientError> {
        let store = self.store().await?;
        self.fresh_alias_in(&store)
    }

    fn fresh_alias_in(&self, store: &Store) -> Result<String, ClientError> {
        let used: Vec<String> = store.talks()?.iter().map(|t| t.alias.clone()).collect();
        let mut alias = crate::alias::random_alias();
        for _ in 0..64 {
            if !used.contains(&alias) {
                break;
            }
            alias = crate::alias::random_alias();
        }
        Ok(alias)
    }

    /// Every talk this home holds, from local knowledge (no network).
    pub async fn list(&self) -> Result<Vec<TalkSummary>, ClientError> {
        let store = self.store().await?;
        let mut out = Vec::new();
        for t in store.talks()? {
            let unread = store.unread(&t.talk_id)?;
            out.push(summary(&t, unread));
        }
        Ok(out)
    }

    /// One talk's summary (local knowledge).
    pub async fn info(&self, talk: &str) -> Result<TalkSummary, ClientError> {
        let store = self.store().await?;
        let t = store.find(talk)?;
        let unread = store.unread(&t.talk_id)?;
        Ok(summary(&t, unread))
    }

    /// Sends a text message; returns once the relay stored it durably.
    ///
    /// One store session covers the whole operation: opening the store is the
    /// costliest local step, and holding it keeps another `nook` process from
    /// interleaving with this send.
    pub async fn send(&self, talk: &str, text: &str) -> Result<(String, Seq), ClientError> {
        let store = self.store().await?;
        let talk_id = store.find(talk)?.talk_id;
        let session = self.session(&store, &talk_id).await?;
        self.sync(&store, &session.conn, &talk_id).await?;
        if session.status.state == TalkPhase::Pending {
            return Err(ClientError::Pending {
                members: session.status.members,
                quorum: session.status.quorum,
            });
        }
        let mut state = load(&store, &talk_id)?;
        let (body, event) = state.seal_text(text, now_ms())?;
        // The chain moves before the put: a crash after the relay stored the message
        // must never make the next one reuse its key.
        store.save(&state)?;
        store.flush()?;
        let seq = put(&session.conn, state.mailbox, EnvelopeKind::Chat, body).await?;
        // Our own line in our own history is not worth a second fdatasync here: the
        // next durable write (or sled's own flush on close) carries it.
        store.append(&talk_id, vec![event], now_ms())?;
        drop(store);
        session.conn.close().await;
        Ok((talk_id_text(&talk_id), seq))
    }

    /// Fetches what waits on the relay, stores it, acknowledges it, answers
    /// handshakes. Returns the new history entries.
    pub async fn fetch(&self, talk: &str) -> Result<Vec<HistoryEntry>, ClientError> {
        let store = self.store().await?;
        let talk_id = store.find(talk)?.talk_id;
        let session = self.session(&store, &talk_id).await?;
        let entries = self.sync(&store, &session.conn, &talk_id).await?;
        drop(store);
        session.conn.close().await;
        Ok(entries)
    }

    /// The talk's history from `from`, and the first index not returned.
    pub async fn history(
        &self,
        talk: &str,
        new_only: bool,
    ) -> Result<(String, Vec<HistoryEntry>), ClientError> {
        let store = self.store().await?;
        let t = store.find(talk)?;
        let from = if new_only {
            store.shown(&t.talk_id)?
        } else {
            0
        };
        let entries = store.history(&t.talk_id, from)?;
        if let Some(last) = entries.last() {
            store.set_shown(&t.talk_id, last.index + 1)?;
            store.flush()?;
        }
        Ok((talk_id_text(&t.talk_id), entries))
    }

    /// Stays connected, handing every new history entry and status to `sink`, until
    /// `until` is reached, the talk ends, or `sink` returns false. Reconnects with
    /// backoff when the connection drops. Entries from `from` on are delivered.
    ///
    /// The store is opened only while something is written or read, so other `nook`
    /// processes (a `send` beside a `read --follow`) can use the same home meanwhile.
    pub async fn follow(
        &self,
        talk: &str,
        from: u64,
        until: Until,
        mut sink: impl FnMut(Update) -> bool,
    ) -> Result<(), ClientError> {
        let talk_id = self.store().await?.find(talk)?.talk_id;
        let mut next = from;
        let mut attempt: u32 = 0;
        loop {
            let result = self
                .follow_once(&talk_id, &mut next, until, &mut sink, &mut attempt)
                .await;
            match result {
                Ok(()) => return Ok(()),
                Err(
                    e @ (ClientError::Lost(_)
                    | ClientError::Connect(ConnectError::Unreachable { .. })),
                ) => {
                    attempt += 1;
                    if !sink(Update::Link(Link::Reconnecting {
                        attempt,
                        reason: e.to_string(),
                    })) {
                        return Ok(());
                    }
                    // Exponential backoff, capped: a relay restart is usually brief.
                    let wait =
                        Duration::from_millis(200u64 << attempt.min(5)).min(Duration::from_secs(5));
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn follow_once(
        &self,
        talk_id: &[u8; 8],
        next: &mut u64,
        until: Until,
        sink: &mut impl FnMut(Update) -> bool,
        attempt: &mut u32,
    ) -> Result<(), ClientError> {
        let mut pushes;
        let conn = {
            let store = self.store().await?;
            let mut session = match self.session(&store, talk_id).await {
                Err(ClientError::TalkGone) => {
                    // Ended while we were away: the relay only says "closed".
                    sink(Update::Entry(HistoryEntry {
                        index: u64::MAX,
                        at_ms: now_ms(),
                        event: Event::Closed {
                            by: None,
                            verified: false,
                        },
                    }));
                    return Ok(());
                }
                other => other?,
            };
            pushes = session.conn.take_pushes().ok_or(ClientError::Protocol)?;
            let mailbox = load(&store, talk_id)?.mailbox;
            let status = match session.conn.request(Request::Subscribe { mailbox }).await? {
                Response::Subscribed { status } => status,
                _ => return Err(ClientError::Protocol),
            };
            *attempt = 0;
            if !sink(Update::Link(Link::Connected)) || !sink(Update::Status(status)) {
                return Ok(());
            }
            self.apply_status(&store, &session.conn, talk_id, status)
                .await?;
            self.sync(&store, &session.conn, talk_id).await?;
            if self.deliver(&store, talk_id, next, until, sink)? {
                drop(store);
                session.conn.close().await;
                return Ok(());
            }
            session.conn
        };
        loop {
            let Some(first) = pushes.recv().await else {
                return Err(ClientError::Lost(conn.close_reason()));
            };
            let mut batch = vec![first];
            while let Ok(p) = pushes.try_recv() {
                batch.push(p);
                if batch.len() >= 256 {
                    break;
                }
            }
            let store = self.store().await?;
            if self
                .apply_pushes(&store, &conn, talk_id, batch, next, until, sink)
                .await?
            {
                return Ok(());
            }
            if self.deliver(&store, talk_id, next, until, sink)? {
                drop(store);
                conn.close().await;
                return Ok(());
            }
        }
    }

    /// Hands new history to `sink`; true when `follow` should stop.
    fn deliver(
        &self,
        store: &Store,
        talk_id: &[u8; 8],
        next: &mut u64,
        until: Until,
        sink: &mut impl FnMut(Update) -> bool,
    ) -> Result<bool, ClientError> {
        let entries = store.history(talk_id, *next)?;
        let opened = load(store, talk_id)?.opened;
        for e in entries {
            *next = e.index + 1;
            let closed = matches!(e.event, Event::Closed { .. } | Event::Expired);
            if !sink(Update::Entry(e)) || closed {
                return Ok(true);
            }
        }
        Ok(until == Until::Open && opened)
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply_pushes(
        &self,
        store: &Store,
        conn: &RelayConnection,
        talk_id: &[u8; 8],
        batch: Vec<Push>,
        next: &mut u64,
        until: Until,
        sink: &mut impl FnMut(Update) -> bool,
    ) -> Result<bool, ClientError> {
        let mut envelopes = Vec::new();
        for push in batch {
            match push {
                Push::Envelope { envelope, .. } => envelopes.push(envelope),
                Push::SeatTaken { status, .. }
                | Push::Opened { status, .. }
                | Push::MemberLeft { status, .. } => {
                    if !envelopes.is_empty() {
                        self.process(store, conn, talk_id, std::mem::take(&mut envelopes))
                            .await?;
                    }
                    self.apply_status(store, conn, talk_id, status).await?;
                    sink(Update::Status(status));
                }
                Push::Closed {
                    receipt, farewell, ..
                } => {
                    if !envelopes.is_empty() {
                        self.process(store, conn, talk_id, std::mem::take(&mut envelopes))
                            .await?;
                    }
                    // What arrived before the close is shown before the store goes.
                    self.deliver(store, talk_id, next, until, sink)?;
                    let event = load(store, talk_id)?.check_close(&receipt, &farewell);
                    self.end_talk(store, talk_id, event, sink)?;
                    return Ok(true);
                }
                Push::Expired { .. } => {
                    if !envelopes.is_empty() {
                        self.process(store, conn, talk_id, std::mem::take(&mut envelopes))
                            .await?;
                    }
                    self.deliver(store, talk_id, next, until, sink)?;
                    self.end_talk(store, talk_id, Event::Expired, sink)?;
                    return Ok(true);
                }
            }
        }
        if !envelopes.is_empty() {
            self.process(store, conn, talk_id, envelopes).await?;
        }
        Ok(false)
    }

    /// Deletes a talk that ended, then shows its final entry.
    fn end_talk(
        &self,
        store: &Store,
        talk_id: &[u8; 8],
        event: Event,
        sink: &mut impl FnMut(Update) -> bool,
    ) -> Result<(), ClientError> {
        store.delete(talk_id)?;
        sink(Update::Entry(HistoryEntry {
            index: u64::MAX,
            at_ms: now_ms(),
            event,
        }));
        Ok(())
    }

    /// Records a status from the relay and sends the sender keys it calls for (when a
    /// seat was reported left).
    async fn apply_status(
        &self,
        store: &Store,
        conn: &RelayConnection,
        talk_id: &[u8; 8],
        status: TalkStatus,
    ) -> Result<(), ClientError> {
        let mut state = load(store, talk_id)?;
        if state.status == Some(status) {
            return Ok(());
        }
        let handled = state.on_status(status);
        store.save(&state)?;
        store.append(talk_id, handled.events, now_ms())?;
        store.flush()?;
        for (kind, body) in handled.outgoing {
            put(conn, state.mailbox, kind, body).await?;
        }
        Ok(())
    }

    /// Connects and authenticates for one talk. A talk the relay no longer knows is
    /// deleted locally and reported as [`ClientError::TalkGone`].
    async fn session(&self, store: &Store, talk_id: &[u8; 8]) -> Result<Session, ClientError> {
        let state = load(store, talk_id)?;
        let addr = state
            .relay_addr()
            .ok_or_else(|| ClientError::Address(state.relay.clone()))?;
        let identity = state.identity();
        let mailbox = state.mailbox;
        drop(state);
        let conn = RelayConnection::connect(&addr).await?;
        let signature = sign_relay_auth(
            &identity,
            AuthOp::Auth,
            &conn.hello().challenge,
            &mailbox,
            &[],
        );
        let r = conn
            .request(Request::Auth(Auth {
                mailbox,
                member: identity.member_key(),
                signature,
            }))
            .await;
        match r {
            Ok(Response::Authed { status, .. }) => {
                self.apply_status(store, &conn, talk_id, status).await?;
                Ok(Session { conn, status })
            }
            Ok(_) => Err(ClientError::Protocol),
            Err(e) => {
                let e = ClientError::from(e);
                if matches!(e, ClientError::TalkGone)
                    || matches!(
                        &e,
                        ClientError::Refused {
                            code: ErrorCode::NotAllowed,
                            ..
                        }
                    )
                {
                    // Closed, expired, or we are no longer a member: nothing to keep.
                    store.delete(talk_id)?;
                    return Err(ClientError::TalkGone);
                }
                Err(e)
            }
        }
    }

    /// Fetches everything after the cursor, processes it, acknowledges it.
    async fn sync(
        &self,
        store: &Store,
        conn: &RelayConnection,
        talk_id: &[u8; 8],
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let mut all = Vec::new();
        // Bounded: each round moves the cursor forward by up to 256 envelopes.
        for _ in 0..100_000 {
            let state = load(store, talk_id)?;
            let r = conn
                .request(Request::Fetch {
                    mailbox: state.mailbox,
                    after: Seq(state.cursor),
                    limit: nook_proto::limits::MAX_FETCH_ENVELOPES,
                })
                .await?;
            let Response::Envelopes { items, more } = r else {
                return Err(ClientError::Protocol);
            };
            all.extend(self.process(store, conn, talk_id, items).await?);
            if !more {
                break;
            }
        }
        Ok(all)
    }

    /// Stores what `envelopes` mean (durably), then acknowledges them and sends
    /// whatever handshake answers they called for.
    async fn process(
        &self,
        store: &Store,
        conn: &RelayConnection,
        talk_id: &[u8; 8],
        envelopes: Vec<nook_proto::Envelope>,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        if envelopes.is_empty() {
            return Ok(Vec::new());
        }
        let mut state = load(store, talk_id)?;
        let mut events = Vec::new();
        let mut outgoing = Vec::new();
        for env in &envelopes {
            let h = state.handle_envelope(env);
            events.extend(h.events);
            outgoing.extend(h.outgoing);
        }
        store.save(&state)?;
        let entries = store.append(talk_id, events, now_ms())?;
        store.flush()?;
        for (kind, body) in outgoing {
            put(conn, state.mailbox, kind, body).await?;
        }
        conn.request(Request::Ack {
            mailbox: state.mailbox,
            upto: Seq(state.cursor),
        })
        .await?;
        Ok(entries)
    }

    /// Leaves the talk: tells the others (so they rotate keys), gives up the seat,
    /// deletes everything local.
    pub async fn leave(&self, talk: &str) -> Result<String, ClientError> {
        let store = self.store().await?;
        let talk_id = store.find(talk)?.talk_id;
        let session = self.session(&store, &talk_id).await?;
        self.sync(&store, &session.conn, &talk_id).await?;
        let mut state = load(&store, &talk_id)?;
        if session.status.state == TalkPhase::Open {
            let notice = state.seal_leaving(now_ms())?;
            store.save(&state)?;
            store.flush()?;
            put(&session.conn, state.mailbox, EnvelopeKind::Chat, notice).await?;
        }
        let signature = sign_relay_auth(
            &state.identity(),
            AuthOp::Leave,
            &session.conn.hello().challenge,
            &state.mailbox,
            &[],
        );
        session
            .conn
            .request(Request::Leave {
                mailbox: state.mailbox,
                signature,
            })
            .await?;
        drop(state);
        store.delete(&talk_id)?;
        drop(store);
        session.conn.close().await;
        Ok(talk_id_text(&talk_id))
    }

    /// Closes the talk for everyone; returns the relay's verified deletion receipt
    /// after deleting everything local.
    pub async fn close(&self, talk: &str) -> Result<(String, Receipt), ClientError> {
        let store = self.store().await?;
        let talk_id = store.find(talk)?.talk_id;
        if !load(&store, &talk_id)?.may_close() {
            return Err(ClientError::NotAllowed);
        }
        let session = self.session(&store, &talk_id).await?;
        let state = load(&store, &talk_id)?;
        let farewell = state.farewell().map_err(MemberError::from)?;
        let signature = sign_relay_auth(
            &state.identity(),
            AuthOp::Close,
            &session.conn.hello().challenge,
            &state.mailbox,
            &sha256(&[&farewell]),
        );
        let mailbox = state.mailbox;
        drop(state);
        let r = session
            .conn
            .request(Request::Close(Close {
                mailbox,
                farewell,
                signature,
            }))
            .await
            .map_err(|e| match ClientError::from(e) {
                ClientError::Refused {
                    code: ErrorCode::NotAllowed,
                    ..
                } => ClientError::NotAllowed,
                e => e,
            })?;
        let Response::Closed { receipt } = r else {
            return Err(ClientError::Protocol);
        };
        if receipt.mailbox != mailbox
            || verify_receipt(&session.conn.hello().relay_key, &receipt).is_err()
        {
            return Err(ClientError::BadReceipt);
        }
        store.delete(&talk_id)?;
        drop(store);
        session.conn.close().await;
        Ok((talk_id_text(&talk_id), receipt))
    }
}

fn load(store: &Store, talk_id: &[u8; 8]) -> Result<TalkState, ClientError> {
    store.load(talk_id)?.ok_or(ClientError::TalkGone)
}

async fn put(
    conn: &RelayConnection,
    mailbox: MailboxId,
    kind: EnvelopeKind,
    body: Vec<u8>,
) -> Result<Seq, ClientError> {
    match conn
        .request(Request::Put(Put {
            mailbox,
            kind,
            body,
        }))
        .await
    {
        Ok(Response::Stored { seq }) => Ok(seq),
        Ok(_) => Err(ClientError::Protocol),
        Err(RequestError::Refused {
            code: ErrorCode::TalkNotOpen,
            message,
        }) => {
            let (members, quorum) = parse_seats(&message).unwrap_or((0, 0));
            Err(ClientError::Pending { members, quorum })
        }
        Err(e) => Err(e.into()),
    }
}

fn parse_seats(message: &str) -> Option<(u8, u8)> {
    let start = message.find('(')? + 1;
    let slash = message[start..].find('/')? + start;
    let end = message[slash..].find(' ')? + slash;
    Some((
        message[start..slash].parse().ok()?,
        message[slash + 1..end].parse().ok()?,
    ))
}

fn summary(t: &TalkState, unread: u64) -> TalkSummary {
    TalkSummary {
        talk: talk_id_text(&t.talk_id),
        relay: t.relay.clone(),
        alias: t.alias.clone(),
        seat: t.seat,
        owner: t.is_owner(),
        status: t.status,
        open: t.opened,
        unread,
        expires_at: t.expires_at,
        members: std::iter::once((t.seat, t.alias.clone()))
            .chain(t.others().map(|p| (p.seat, p.alias.clone())))
            .collect(),
        invites: t.invites.iter().map(|(_, i)| i.clone()).collect(),
    }
}
