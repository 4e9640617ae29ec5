//! Talks without a relay, for the crate's unit tests: three members made with the real
//! create/join transitions, and a stand-in relay that hands every envelope to every
//! member but its sender.

use nook_crypto::{Invite, RelayAddr, TalkIdentity};
use nook_proto::{ClosePolicy, Envelope, EnvelopeKind, MailboxId, Seq, TalkPhase, TalkStatus};

use crate::member::{Event, NewTalk, TalkOptions, TalkState};

pub(crate) fn relay() -> RelayAddr {
    format!(
        "nook://{}@127.0.0.1:4433",
        nook_crypto::Fingerprint([1; 32])
    )
    .parse()
    .unwrap()
}

pub(crate) fn status(members: u8, open: bool) -> TalkStatus {
    TalkStatus {
        state: if open {
            TalkPhase::Open
        } else {
            TalkPhase::Pending
        },
        members,
        seats: 3,
        quorum: 3,
        close: ClosePolicy::Owner,
        expires_at: 10_000,
        left: 0,
        schedule: None,
    }
}

/// A fake relay: every envelope goes to every member but its sender.
pub(crate) struct Net {
    pub(crate) seq: u64,
    pub(crate) log: Vec<(u8, Envelope)>,
}

impl Net {
    pub(crate) fn put(&mut self, from: u8, kind: EnvelopeKind, body: Vec<u8>) {
        self.seq += 1;
        self.log.push((
            from,
            Envelope {
                seq: Seq(self.seq),
                kind,
                stored_at: 0,
                body,
            },
        ));
    }
    /// Delivers everything pending to `m`, and puts what it answers.
    pub(crate) fn deliver(&mut self, m: &mut TalkState) -> Vec<Event> {
        let mut events = Vec::new();
        let pending: Vec<Envelope> = self
            .log
            .iter()
            .filter(|(from, e)| *from != m.seat && e.seq.0 > m.cursor)
            .map(|(_, e)| e.clone())
            .collect();
        for e in pending {
            let h = m.handle_envelope(&e);
            events.extend(h.events);
            for (k, b) in h.outgoing {
                self.put(m.seat, k, b);
            }
        }
        events.extend(m.end_of_batch(crate::now_ms(), 0).events);
        events
    }
}

pub(crate) fn opts() -> TalkOptions {
    TalkOptions {
        seats: 3,
        quorum: 3,
        ttl_secs: 3600,
        close: ClosePolicy::Owner,
        alias: "owner-owl".into(),
        schedule: None,
        pattern: crate::roles::Pattern::Plain,
    }
}

/// A free seat: its invite and its sealed welcome.
pub(crate) type FreeSeat = (Invite, Vec<u8>);

/// A talk of `seats` seats where the creator and the members of seats
/// `1..=joiners` have met; with the invites of the seats still free.
pub(crate) fn talk(seats: u8, joiners: u8) -> (Net, Vec<TalkState>, Vec<FreeSeat>) {
    let r = relay();
    let NewTalk {
        mut state,
        params,
        seats: secrets,
    } = TalkState::create(
        &r,
        &TalkOptions {
            seats,
            quorum: 2,
            ..opts()
        },
        0,
    )
    .unwrap();
    let invites = state.created(&r, MailboxId([5; 16]), status(1, false), &secrets);
    let mut net = Net {
        seq: 0,
        log: vec![],
    };
    let mut members = vec![state];
    let mut free = Vec::new();
    for (i, (inv, offer)) in invites.iter().zip(&params.offers).enumerate() {
        let inv: Invite = inv.parse().unwrap();
        let seat = (i + 1) as u8;
        if seat > joiners {
            free.push((inv, offer.welcome.clone()));
            continue;
        }
        let m = join(
            &mut net,
            &inv,
            seat,
            &offer.welcome,
            &format!("member-{seat}"),
        );
        members.push(m);
        // Announcement, introductions, replies.
        for _ in 0..3 {
            for m in members.iter_mut() {
                net.deliver(m);
            }
        }
    }
    (net, members, free)
}

/// Takes `seat` with `invite` and puts the announcement.
pub(crate) fn join(
    net: &mut Net,
    invite: &Invite,
    seat: u8,
    welcome: &[u8],
    alias: &str,
) -> TalkState {
    let mut st = status(seat + 1, true);
    st.seats = 4;
    let (m, outgoing) = TalkState::joined(
        invite,
        TalkIdentity::generate(&mut rand::rng()),
        alias,
        seat,
        welcome,
        st,
    )
    .unwrap();
    let mut m = m;
    // The relay gives a newcomer nothing stored before it joined (protocol-spec §8.1).
    m.cursor = net.seq;
    for (kind, body) in outgoing {
        net.put(m.seat, kind, body);
    }
    m
}

pub(crate) fn three() -> (Net, TalkState, TalkState, TalkState) {
    let r = relay();
    let NewTalk {
        mut state,
        params,
        seats,
    } = TalkState::create(&r, &opts(), 0).unwrap();
    let mailbox = MailboxId([5; 16]);
    let invites = state.created(&r, mailbox, status(1, false), &seats);
    let mut net = Net {
        seq: 0,
        log: vec![],
    };
    let mut joiners = Vec::new();
    for (i, (inv, offer)) in invites.iter().zip(&params.offers).enumerate() {
        let inv: Invite = inv.parse().unwrap();
        let (m, outgoing) = TalkState::joined(
            &inv,
            TalkIdentity::generate(&mut rand::rng()),
            &format!("member-{}", i + 1),
            (i + 1) as u8,
            &offer.welcome,
            status(2 + i as u8, i == 1),
        )
        .unwrap();
        for (kind, body) in outgoing {
            net.put(m.seat, kind, body);
        }
        joiners.push(m);
    }
    let mut c = joiners.pop().unwrap();
    let mut b = joiners.pop().unwrap();
    // Everyone syncs three times: announcements, introductions, replies.
    for _ in 0..3 {
        net.deliver(&mut state);
        net.deliver(&mut b);
        net.deliver(&mut c);
    }
    (net, state, b, c)
}

/// A relay stand-in for sessions: stores puts under increasing seqs (or loses them),
/// acknowledges acks, and remembers every request in order.
pub(crate) struct FakeRelay {
    pub(crate) requests: std::sync::Mutex<Vec<nook_proto::Request>>,
    /// Puts fail as if the connection dropped before the answer.
    pub(crate) lose_puts: bool,
}

impl FakeRelay {
    pub(crate) fn new(lose_puts: bool) -> FakeRelay {
        FakeRelay {
            requests: std::sync::Mutex::new(Vec::new()),
            lose_puts,
        }
    }

    pub(crate) fn requests(&self) -> Vec<nook_proto::Request> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl crate::session::Relay for FakeRelay {
    fn request(
        &self,
        request: nook_proto::Request,
    ) -> impl std::future::Future<
        Output = Result<nook_proto::Response, crate::transport::RequestError>,
    > + Send {
        use nook_proto::{Request, Response};
        let mut requests = self.requests.lock().expect("no test panicked holding it");
        let answer = match &request {
            Request::Put(_) if self.lose_puts => Err(crate::transport::RequestError::Lost(
                "connection reset".into(),
            )),
            Request::Put(_) => Ok(Response::Stored {
                seq: Seq(1000 + requests.len() as u64),
            }),
            Request::Ack { .. } => Ok(Response::Acked),
            Request::Fetch { .. } => Ok(Response::Envelopes {
                items: Vec::new(),
                more: false,
            }),
            _ => Err(crate::transport::RequestError::Unexpected),
        };
        requests.push(request);
        std::future::ready(answer)
    }
}

/// A home in a temporary folder, and its turn-taking.
pub(crate) fn home() -> (tempfile::TempDir, crate::lease::Leases) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let home = crate::store::Home::new(dir.path()).expect("a home");
    (dir, crate::lease::Leases::new(home))
}
