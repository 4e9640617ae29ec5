//! A relay that misbehaves on purpose, for tests: the real engine (`nook_relay`) run
//! in this process, with a [`Wiretap`] on every frame it sends. The tap can withhold
//! chosen envelopes from every member they would go to (the sender still gets
//! `Stored`, and the relay keeps them), and it keeps a copy of every envelope and
//! farewell the relay hands out, as a relay that hoards its store would. It can also
//! hand out each fetch answer's envelopes in reverse order, or push two envelopes to a
//! follower swapped, the first one late (with the next push).
//!
//! Envelopes are named by their seq, which `nook --json send` prints; a seq is per
//! talk, so one relay serves one talk in these tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nook_proto::codec::{decode_body, encode_frame};
use nook_proto::{Envelope, Outcome, Push, Response, ServerFrame};
use nook_relay::outbox::{Tap, Wire};
use nook_relay::{Config, Shutdown};

/// The 4-byte length in front of every frame on the wire.
const HEADER: usize = 4;

/// What the tap saw and what it withholds.
#[derive(Debug, Default)]
struct Seen {
    withhold: BTreeSet<u64>,
    /// Withheld from pushes only: a fetch still hands them out.
    withhold_pushes: BTreeSet<u64>,
    /// Whether every `Envelopes` answer goes out in reverse order.
    reverse: bool,
    /// Fetch answers handed out reversed.
    reversed: usize,
    /// Deliveries of withheld envelopes that were dropped (a push or a fetch answer
    /// each time one would have gone out).
    held_back: usize,
    /// Every seq the relay answered `Stored` for.
    stored: BTreeSet<u64>,
    /// Every envelope the relay sent to anyone (or withheld), by seq.
    envelopes: BTreeMap<u64, Envelope>,
    /// Every farewell the relay pushed with a close.
    farewells: Vec<Vec<u8>>,
    /// Pushes being swapped (see [`Wiretap::swap_next_pushes`]).
    swap: Swap,
}

/// Where a swap of two pushes to one connection is.
#[derive(Debug, Default)]
enum Swap {
    #[default]
    Off,
    Armed,
    /// The first push to `conn`, held back.
    Holding {
        conn: u64,
        first: Envelope,
    },
    /// The second went out under the first's seq; the first goes out under `seq`
    /// with the next push to `conn`.
    Late {
        conn: u64,
        first: Envelope,
        seq: nook_proto::Seq,
    },
    Done,
}

fn push_of(mailbox: nook_proto::MailboxId, envelope: Envelope) -> Option<Wire> {
    let frame = ServerFrame::Push(Push::Envelope { mailbox, envelope });
    encode_frame(&frame).ok().map(Wire::from)
}

/// The relay's view of its own traffic, and the switch that withholds envelopes.
#[derive(Debug, Default)]
pub struct Wiretap(Mutex<Seen>);

impl Wiretap {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on, the envelopes with these seqs are never delivered to anyone.
    pub fn withhold(&self, seqs: impl IntoIterator<Item = u64>) {
        self.seen().withhold.extend(seqs);
    }

    /// From now on, every fetch answer carries its envelopes newest first: the seqs
    /// still ascend, the envelopes they number are in reverse order (a relay that
    /// numbers what it stored out of order).
    pub fn reverse_answers(&self) {
        self.seen().reverse = true;
    }

    /// From now on, the envelopes with these seqs are never pushed to a follower; a
    /// fetch (a one-shot command) still gets them.
    pub fn withhold_pushes(&self, seqs: impl IntoIterator<Item = u64>) {
        self.seen().withhold_pushes.extend(seqs);
    }

    /// The next two envelope pushes to one connection go out swapped, as a relay that
    /// reorders a conversation for one member: the second at once under the first's
    /// seq, the first only with the push after them, under the second's seq (seqs
    /// still ascend, as a client expects). So the member gets them in two batches.
    pub fn swap_next_pushes(&self) {
        self.seen().swap = Swap::Armed;
    }

    /// Whether a swap armed with [`Wiretap::swap_next_pushes`] has been carried out.
    pub fn swapped(&self) -> bool {
        matches!(self.seen().swap, Swap::Done)
    }

    /// How many fetch answers went out reversed so far.
    pub fn reversed(&self) -> usize {
        self.seen().reversed
    }

    /// How many deliveries of withheld envelopes were dropped so far.
    pub fn held_back(&self) -> usize {
        self.seen().held_back
    }

    /// Every seq the relay answered `Stored` for so far.
    pub fn stored(&self) -> BTreeSet<u64> {
        self.seen().stored.clone()
    }

    /// Every envelope the relay handed out (or withheld) so far, by seq.
    pub fn envelopes(&self) -> BTreeMap<u64, Envelope> {
        self.seen().envelopes.clone()
    }

    /// Every farewell the relay pushed so far.
    pub fn farewells(&self) -> Vec<Vec<u8>> {
        self.seen().farewells.clone()
    }
}

impl Tap for Wiretap {
    fn outgoing(&self, conn: u64, frame: Wire) -> Vec<Wire> {
        self.one(conn, frame)
    }
}

impl Wiretap {
    fn one(&self, conn: u64, frame: Wire) -> Vec<Wire> {
        let Some(Ok(decoded)) = frame.get(HEADER..).map(decode_body::<ServerFrame>) else {
            return vec![frame];
        };
        let mut seen = self.seen();
        match decoded {
            ServerFrame::Response {
                id,
                result: Outcome::Ok(Response::Envelopes { items, more }),
            } => {
                for e in &items {
                    seen.envelopes.insert(e.seq.0, e.clone());
                }
                let before = items.len();
                let mut items: Vec<_> = items
                    .into_iter()
                    .filter(|e| !seen.withhold.contains(&e.seq.0))
                    .collect();
                if items.len() == before && !(seen.reverse && before > 1) {
                    return vec![frame];
                }
                seen.held_back += before - items.len();
                if seen.reverse {
                    // The seqs stay ascending, as a client expects (it drops a seq it
                    // has passed); what they carry is reversed.
                    let seqs: Vec<_> = items.iter().map(|e| e.seq).collect();
                    items.reverse();
                    seen.reversed += 1;
                    for (e, seq) in items.iter_mut().zip(seqs) {
                        e.seq = seq;
                    }
                }
                let answer = ServerFrame::Response {
                    id,
                    result: Outcome::Ok(Response::Envelopes { items, more }),
                };
                encode_frame(&answer)
                    .ok()
                    .map(Wire::from)
                    .into_iter()
                    .collect()
            }
            ServerFrame::Push(Push::Envelope { mailbox, envelope }) => {
                let seq = envelope.seq.0;
                seen.envelopes.insert(seq, envelope.clone());
                if seen.withhold.contains(&seq) || seen.withhold_pushes.contains(&seq) {
                    seen.held_back += 1;
                    return Vec::new();
                }
                match std::mem::take(&mut seen.swap) {
                    Swap::Armed => {
                        seen.swap = Swap::Holding {
                            conn,
                            first: envelope,
                        };
                        Vec::new()
                    }
                    Swap::Holding { conn: to, first } if to == conn => {
                        let seq = envelope.seq;
                        seen.swap = Swap::Late {
                            conn,
                            first: first.clone(),
                            seq,
                        };
                        push_of(
                            mailbox,
                            Envelope {
                                seq: first.seq,
                                ..envelope
                            },
                        )
                        .into_iter()
                        .collect()
                    }
                    Swap::Late {
                        conn: to,
                        first,
                        seq,
                    } if to == conn => {
                        seen.swap = Swap::Done;
                        let mut out: Vec<Wire> = push_of(mailbox, Envelope { seq, ..first })
                            .into_iter()
                            .collect();
                        out.push(frame);
                        out
                    }
                    other => {
                        seen.swap = other;
                        vec![frame]
                    }
                }
            }
            ServerFrame::Response {
                result: Outcome::Ok(Response::Stored { seq }),
                ..
            } => {
                seen.stored.insert(seq.0);
                vec![frame]
            }
            ServerFrame::Push(Push::Closed { farewell, .. }) => {
                seen.farewells.push(farewell);
                vec![frame]
            }
            _ => vec![frame],
        }
    }
}

/// The relay engine running in this process on 127.0.0.1, with a [`Wiretap`] on
/// everything it sends; stopped (gracefully) on drop.
#[derive(Debug)]
pub struct TappedRelay {
    pub address: String,
    pub tap: Arc<Wiretap>,
    shutdown: Option<Shutdown>,
    thread: Option<std::thread::JoinHandle<()>>,
    _data: tempfile::TempDir,
}

impl TappedRelay {
    pub fn start() -> TappedRelay {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = data.path().join("relay");
        let tap = Arc::new(Wiretap::default());
        let installed = tap.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
                let relay = nook_relay::Relay::start(Config::new(listen, dir)).expect("relay");
                assert!(relay.engine().queues().set_tap(installed), "one tap");
                let (shutdown, stop) = Shutdown::new();
                let _ = tx.send((relay.address().to_string(), shutdown));
                relay.run(stop).await;
            });
        });
        let (address, shutdown) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the in-process relay started");
        TappedRelay {
            address,
            tap,
            shutdown: Some(shutdown),
            thread: Some(thread),
            _data: data,
        }
    }
}

impl Drop for TappedRelay {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            s.trigger();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
