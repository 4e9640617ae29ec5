//! A relay that misbehaves on purpose, for tests: the real engine (`nook_relay`) run
//! in this process, with a [`Wiretap`] on every frame it sends. The tap can withhold
//! chosen envelopes from every member they would go to (the sender still gets
//! `Stored`, and the relay keeps them), and it keeps a copy of every envelope and
//! farewell the relay hands out, as a relay that hoards its store would. It can also
//! hand out each fetch answer's envelopes in reverse order.
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
    fn outgoing(&self, _conn: u64, frame: Wire) -> Option<Wire> {
        let Some(Ok(decoded)) = frame.get(HEADER..).map(decode_body::<ServerFrame>) else {
            return Some(frame);
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
                    return Some(frame);
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
                encode_frame(&answer).ok().map(Wire::from)
            }
            ServerFrame::Push(Push::Envelope { envelope, .. }) => {
                let seq = envelope.seq.0;
                seen.envelopes.insert(seq, envelope);
                if seen.withhold.contains(&seq) {
                    seen.held_back += 1;
                    return None;
                }
                Some(frame)
            }
            ServerFrame::Response {
                result: Outcome::Ok(Response::Stored { seq }),
                ..
            } => {
                seen.stored.insert(seq.0);
                Some(frame)
            }
            ServerFrame::Push(Push::Closed { farewell, .. }) => {
                seen.farewells.push(farewell);
                Some(frame)
            }
            _ => Some(frame),
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
