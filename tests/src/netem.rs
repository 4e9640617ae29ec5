//! A userspace UDP link with netem's impairments (loss, delay, reorder, down/up) and
//! a NAT's rebinding, between members on 127.0.0.1 and a relay. The kernels this
//! project's machines and CI run on have no `sch_netem` and cannot load modules, so
//! the tests that need a bad network (`tests/tests/netem.rs`, the chat's recovery in
//! `client-cli/tests/chat.rs`) route through this proxy instead.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the link treats datagrams now.
#[derive(Debug, Clone, Copy)]
pub struct Conditions {
    /// Probability of dropping a datagram, each way.
    pub loss: f64,
    /// One-way delay.
    pub delay: Duration,
    /// Probability that a datagram is held up to `delay` longer (so later ones pass it).
    pub reorder: f64,
    /// Nothing passes.
    pub down: bool,
}

pub const CLEAN: Conditions = Conditions {
    loss: 0.0,
    delay: Duration::ZERO,
    reorder: 0.0,
    down: false,
};

pub const LOSSY: Conditions = Conditions {
    loss: 0.05,
    delay: Duration::from_millis(100),
    reorder: 0.25,
    down: false,
};

/// A datagram waiting for its time.
struct Due {
    at: Instant,
    n: u64,
    via: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Due) -> bool {
        (self.at, self.n) == (other.at, other.n)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    // Earliest first out of the max-heap.
    fn cmp(&self, other: &Due) -> std::cmp::Ordering {
        (other.at, other.n).cmp(&(self.at, self.n))
    }
}

struct Shared {
    conditions: Mutex<Conditions>,
    queue: Mutex<(BinaryHeap<Due>, u64)>,
    wake: Condvar,
    stop: AtomicBool,
    rng: Mutex<u64>,
    /// Client address → the socket its datagrams leave from towards the relay.
    nat: Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>,
    readers: Mutex<Vec<JoinHandle<()>>>,
    /// Clients whose datagrams are all dropped, each way, whatever the conditions.
    cut: Mutex<HashSet<SocketAddr>>,
    /// Datagrams dropped on purpose (loss or link down), for the report.
    dropped: Mutex<u64>,
    passed: Mutex<u64>,
}

impl Shared {
    fn random(&self) -> f64 {
        let mut s = self.rng.lock().expect("rng");
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Queues `bytes` (to or from `client`) to leave `via` towards `to`, or drops it,
    /// as the link says.
    fn send(&self, via: &Arc<UdpSocket>, to: SocketAddr, client: SocketAddr, bytes: &[u8]) {
        let c = *self.conditions.lock().expect("conditions");
        let cut = self.cut.lock().expect("cut").contains(&client);
        if c.down || cut || self.random() < c.loss {
            *self.dropped.lock().expect("dropped") += 1;
            return;
        }
        *self.passed.lock().expect("passed") += 1;
        let mut at = Instant::now() + c.delay;
        if self.random() < c.reorder {
            at += c.delay.mul_f64(self.random());
        }
        let mut q = self.queue.lock().expect("queue");
        q.1 += 1;
        let n = q.1;
        q.0.push(Due {
            at,
            n,
            via: via.clone(),
            to,
            bytes: bytes.to_vec(),
        });
        self.wake.notify_one();
    }
}

/// A UDP link between the members (who talk to `addr`) and the relay at `relay`.
pub struct Link {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Link {
    pub fn new(relay: SocketAddr, seed: u64) -> Link {
        let listen = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind link"));
        listen
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let addr = listen.local_addr().expect("link address");
        let shared = Arc::new(Shared {
            conditions: Mutex::new(CLEAN),
            queue: Mutex::new((BinaryHeap::new(), 0)),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            rng: Mutex::new(seed | 1),
            nat: Mutex::new(HashMap::new()),
            readers: Mutex::new(Vec::new()),
            cut: Mutex::new(HashSet::new()),
            dropped: Mutex::new(0),
            passed: Mutex::new(0),
        });
        let scheduler = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut q = shared.queue.lock().expect("queue");
                while !shared.stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    match q.0.peek().map(|d| d.at) {
                        Some(at) if at <= now => {
                            if let Some(d) = q.0.pop() {
                                let _ = d.via.send_to(&d.bytes, d.to);
                            }
                        }
                        Some(at) => {
                            q = shared.wake.wait_timeout(q, at - now).expect("wait").0;
                        }
                        None => {
                            q = shared
                                .wake
                                .wait_timeout(q, Duration::from_millis(50))
                                .expect("wait")
                                .0;
                        }
                    }
                }
            })
        };
        let inbound = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !shared.stop.load(Ordering::Relaxed) {
                    let Ok((n, client)) = listen.recv_from(&mut buf) else {
                        continue;
                    };
                    let up = upstream(&shared, &listen, client, relay);
                    shared.send(&up, relay, client, &buf[..n]);
                }
            })
        };
        Link {
            addr,
            shared,
            threads: vec![scheduler, inbound],
        }
    }

    pub fn set(&self, c: Conditions) {
        *self.shared.conditions.lock().expect("conditions") = c;
    }

    /// Every member's datagrams leave from a new port from now on, and what the relay
    /// sends to the old ones is lost: a NAT that rebinds, as when a phone changes
    /// networks. Returns how many mappings moved.
    pub fn rebind(&self) -> usize {
        let mut nat = self.shared.nat.lock().expect("nat");
        for sock in nat.values_mut() {
            *sock = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind"));
        }
        nat.len()
    }

    /// The link goes down for every client seen so far, and only for them: a client
    /// that starts afterwards (another member's new process) gets through. Returns how
    /// many were cut.
    pub fn cut_current_clients(&self) -> usize {
        let nat = self.shared.nat.lock().expect("nat");
        let mut cut = self.shared.cut.lock().expect("cut");
        cut.extend(nat.keys().copied());
        cut.len()
    }

    /// Undoes [`Link::cut_current_clients`].
    pub fn heal(&self) {
        self.shared.cut.lock().expect("cut").clear();
    }

    pub fn figures(&self) -> (u64, u64) {
        (
            *self.shared.passed.lock().expect("passed"),
            *self.shared.dropped.lock().expect("dropped"),
        )
    }
}

/// The socket `client`'s datagrams leave from, made (with its reader of the relay's
/// answers) on first use.
fn upstream(
    shared: &Arc<Shared>,
    listen: &Arc<UdpSocket>,
    client: SocketAddr,
    relay: SocketAddr,
) -> Arc<UdpSocket> {
    let mut nat = shared.nat.lock().expect("nat");
    if let Some(s) = nat.get(&client) {
        return s.clone();
    }
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind upstream"));
    nat.insert(client, sock.clone());
    drop(nat);
    let (shared2, listen) = (shared.clone(), listen.clone());
    let mut current = sock.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !shared2.stop.load(Ordering::Relaxed) {
            // Follow a rebinding: the old socket is closed with its last reader.
            let now = shared2.nat.lock().expect("nat").get(&client).cloned();
            if let Some(now) = now
                && !Arc::ptr_eq(&now, &current)
            {
                current = now;
            }
            let _ = current.set_read_timeout(Some(Duration::from_millis(50)));
            let Ok((n, from)) = current.recv_from(&mut buf) else {
                continue;
            };
            if from == relay {
                shared2.send(&listen, client, client, &buf[..n]);
            }
        }
    });
    shared.readers.lock().expect("readers").push(reader);
    sock
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let readers: Vec<_> = self
            .shared
            .readers
            .lock()
            .expect("readers")
            .drain(..)
            .collect();
        for t in readers {
            let _ = t.join();
        }
    }
}

/// The seed of the links' random choices: `NOOK_NETEM_SEED`, or the clock.
pub fn seed() -> u64 {
    let seed = std::env::var("NOOK_NETEM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("NOOK_NETEM_SEED={seed}");
    seed
}
