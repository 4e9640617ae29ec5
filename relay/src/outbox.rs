//! The way back to one connection: a bounded queue of encoded frames, a switch that
//! drops the connection, and the count of its requests still waiting for a durable
//! answer.
//!
//! It is its own module because three others use it and none should reach into
//! another to reply: `conn` makes one per connection and drains its queue, the
//! engine pushes to subscribers' outboxes, and the commit thread answers a request
//! once its write is durable (engine → commit → outbox). A full queue never blocks
//! or grows: that connection is too slow and is dropped.
//!
//! Queues are bounded in bytes, not only in frames: 8,192 `Envelopes` answers of
//! 768 KiB would be 6 GB. Every queued frame carries a [`Charge`] on its
//! connection's account and on the relay's [`QueueBudget`], given back when the
//! writer has handed the frame to quinn (whose own buffer is bounded by the send
//! window) or when the frame is dropped with its connection's queue. A frame that
//! would take a connection past `Limits::max_queued_bytes_per_connection` drops
//! that connection; one that would take the relay past `Limits::max_queued_bytes`
//! drops the connections holding the most until the rest fits.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use bytes::Bytes;
use nook_proto::codec::encode_frame;
use nook_proto::limits::MAX_FRAME;
use nook_proto::{Outcome, Push, ServerFrame};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc};

/// One server frame as it goes on the wire (header and body). Frames are encoded
/// where they are made, so a push to several connections is encoded once and shared,
/// and an outbox slot is one `Bytes` rather than a whole `ServerFrame`.
pub type Wire = Bytes;

/// The largest frame on the wire: its 4-byte header and [`MAX_FRAME`]. A queue's
/// bound is never below it, so an empty queue always takes one frame.
const LARGEST_WIRE: usize = MAX_FRAME + 4;

/// `frame` encoded for the wire, in a buffer of exactly its size. `None` only for a
/// frame past the codec's size limit, which the engine never builds.
pub fn wire(frame: &ServerFrame) -> Option<Wire> {
    match encode_frame(frame) {
        Ok(bytes) => Some(Bytes::from(bytes)),
        Err(e) => {
            tracing::error!("could not encode a frame for a client: {e}");
            None
        }
    }
}

/// A test's view of every frame the relay sends, installed with
/// [`QueueBudget::set_tap`]: it sees each frame before it is queued for a connection
/// and may replace it, drop it, or send others with it (frames it held back).
/// End-to-end tests use it to play a malicious relay (one that withholds or reorders
/// envelopes, or keeps a copy of every one) with the real engine; the relay binary
/// never installs one.
#[doc(hidden)]
pub trait Tap: std::fmt::Debug + Send + Sync {
    /// What goes to connection `conn` instead of `frame`, in order (empty: nothing).
    fn outgoing(&self, conn: u64, frame: Wire) -> Vec<Wire>;
}

/// The bytes queued for clients across the relay, and the bounds on them. One per
/// engine, shared by every connection's [`Outbox`].
#[derive(Debug)]
pub struct QueueBudget {
    per_connection: usize,
    total: usize,
    queued: AtomicUsize,
    /// The most any one connection held queued at once (for tests and logs).
    peak_connection: AtomicUsize,
    /// Connections dropped because their queue was full or too large.
    dropped: AtomicU64,
    /// Every connection's account, to find the largest queues when the relay's
    /// total is past its bound. Dead entries are pruned before the list grows.
    accounts: Mutex<Vec<Weak<Account>>>,
    /// A test's [`Tap`]; never set outside tests.
    tap: OnceLock<Arc<dyn Tap>>,
}

impl QueueBudget {
    /// Bounds of `per_connection` bytes for each connection and `total` for the
    /// relay; neither is taken below one largest frame.
    pub fn new(per_connection: usize, total: usize) -> QueueBudget {
        QueueBudget {
            per_connection: per_connection.max(LARGEST_WIRE),
            total: total.max(LARGEST_WIRE),
            queued: AtomicUsize::new(0),
            peak_connection: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            accounts: Mutex::new(Vec::new()),
            tap: OnceLock::new(),
        }
    }

    /// Installs `tap` on every frame sent from now on (tests only); false if one
    /// was installed already.
    #[doc(hidden)]
    pub fn set_tap(&self, tap: Arc<dyn Tap>) -> bool {
        self.tap.set(tap).is_ok()
    }

    /// Bytes queued for all connections now (a push to n connections counts n
    /// times, as each connection holds it until it has taken it).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// The most bytes one connection held queued at once since the start.
    pub fn peak_connection(&self) -> usize {
        self.peak_connection.load(Ordering::SeqCst)
    }

    /// Connections dropped as too slow: their queue was full, or past a byte bound.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }

    fn register(&self, account: &Arc<Account>) {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        // Before the list would grow, drop the entries of connections that ended.
        if accounts.len() == accounts.capacity() {
            accounts.retain(|a| a.strong_count() > 0);
        }
        accounts.push(Arc::downgrade(account));
    }

    /// The relay's total is `total`, past its bound: drops the connections holding
    /// the most until what remains (not counting queues already dropped, which are
    /// on their way out) fits. Returns false if `me` had to go.
    fn make_room(&self, me: &Arc<Account>, total: usize) -> bool {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        accounts.retain(|a| a.strong_count() > 0);
        let live: Vec<Arc<Account>> = accounts.iter().filter_map(Weak::upgrade).collect();
        drop(accounts);
        let freeing: usize = live
            .iter()
            .filter(|a| a.is_killed())
            .map(|a| a.queued.load(Ordering::SeqCst))
            .sum();
        let mut remaining = total.saturating_sub(freeing);
        let mut by_size: Vec<(usize, &Arc<Account>)> = live
            .iter()
            .filter(|a| !a.is_killed())
            .map(|a| (a.queued.load(Ordering::SeqCst), a))
            .collect();
        by_size.sort_unstable_by_key(|(size, _)| std::cmp::Reverse(*size));
        let mut kept = true;
        for (size, account) in by_size {
            if remaining <= self.total {
                break;
            }
            account.kill();
            tracing::debug!(
                limit = "relay-wide queued bytes",
                "limit hit: dropping the connection holding the most"
            );
            remaining = remaining.saturating_sub(size);
            kept &= !Arc::ptr_eq(account, me);
        }
        kept
    }
}

/// One connection's share of the [`QueueBudget`], and its switch.
#[derive(Debug)]
struct Account {
    queued: AtomicUsize,
    killed: AtomicBool,
    killed_notify: Notify,
    budget: Arc<QueueBudget>,
}

impl Account {
    /// Counts `len` more bytes queued, or `None` if they do not fit (the caller
    /// drops the frame; this connection may have been dropped to make room).
    fn charge(self: &Arc<Self>, len: usize) -> Option<Charge> {
        let budget = &self.budget;
        let mine = self.queued.fetch_add(len, Ordering::SeqCst) + len;
        let total = budget.queued.fetch_add(len, Ordering::SeqCst) + len;
        // Made first, so that a refusal below gives the bytes back as it drops.
        let charge = Charge {
            len,
            account: self.clone(),
        };
        if mine > budget.per_connection {
            return None;
        }
        if total > budget.total && !budget.make_room(self, total) {
            return None;
        }
        budget.peak_connection.fetch_max(mine, Ordering::SeqCst);
        Some(charge)
    }

    fn kill(&self) {
        if !self.killed.swap(true, Ordering::SeqCst) {
            self.budget.dropped.fetch_add(1, Ordering::SeqCst);
        }
        self.killed_notify.notify_one();
    }

    fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}

/// Bytes of one queued frame, counted on its connection and on the relay until
/// dropped.
#[derive(Debug)]
pub struct Charge {
    len: usize,
    account: Arc<Account>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.account.queued.fetch_sub(self.len, Ordering::SeqCst);
        self.account
            .budget
            .queued
            .fetch_sub(self.len, Ordering::SeqCst);
    }
}

/// A frame in a connection's queue, with the bytes it counts for.
#[derive(Debug)]
pub struct Queued {
    pub wire: Wire,
    pub charge: Charge,
}

/// The way back to one connection: its queue of frames and a switch to drop it.
#[derive(Clone, Debug)]
pub struct Outbox {
    pub id: u64,
    queue: mpsc::Sender<Queued>,
    account: Arc<Account>,
    in_flight: Arc<(AtomicU64, Notify)>,
}

impl Outbox {
    /// The outbox of connection `id`, whose frames go into `queue` and count
    /// against `budget`.
    pub fn new(id: u64, queue: mpsc::Sender<Queued>, budget: Arc<QueueBudget>) -> Outbox {
        let account = Arc::new(Account {
            queued: AtomicUsize::new(0),
            killed: AtomicBool::new(false),
            killed_notify: Notify::new(),
            budget: budget.clone(),
        });
        budget.register(&account);
        Outbox {
            id,
            queue,
            account,
            in_flight: Arc::new((AtomicU64::new(0), Notify::new())),
        }
    }

    /// Queues a frame; a connection whose queue is full is too slow and is dropped
    /// rather than allowed to grow the relay's memory.
    pub fn send(&self, frame: &ServerFrame) {
        if let Some(frame) = wire(frame) {
            self.send_wire(frame);
        }
    }

    /// [`Outbox::send`] of a frame already encoded.
    pub fn send_wire(&self, frame: Wire) {
        match self.account.budget.tap.get() {
            Some(tap) => {
                for frame in tap.outgoing(self.id, frame) {
                    self.queue_wire(frame);
                }
            }
            None => self.queue_wire(frame),
        }
    }

    fn queue_wire(&self, frame: Wire) {
        // A dropped connection takes nothing more: its queue is on its way out.
        if self.is_killed() {
            return;
        }
        let Some(charge) = self.account.charge(frame.len()) else {
            self.kill();
            return;
        };
        match self.queue.try_send(Queued {
            wire: frame,
            charge,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.kill(),
            // The connection ended: nobody to tell.
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// Drops the connection as too slow.
    pub fn kill(&self) {
        self.account.kill();
    }

    pub fn is_killed(&self) -> bool {
        self.account.is_killed()
    }

    /// Resolves when [`Outbox::kill`] was called.
    pub async fn killed(&self) {
        if self.is_killed() {
            return;
        }
        self.account.killed_notify.notified().await;
    }

    /// Bytes queued for this connection and not yet handed to quinn.
    pub fn queued_bytes(&self) -> usize {
        self.account.queued.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.0.load(Ordering::SeqCst)
    }

    /// Resolves when an in-flight request completed.
    pub async fn in_flight_changed(&self) {
        self.in_flight.1.notified().await;
    }

    /// A request whose answer waits for the commit thread: counted, so that `conn`
    /// stops reading while too many wait.
    pub(crate) fn begin(&self) {
        self.in_flight.0.fetch_add(1, Ordering::SeqCst);
    }

    /// Answers a request counted by [`Outbox::begin`].
    pub(crate) fn reply(&self, id: u64, result: Outcome) {
        self.send(&ServerFrame::Response { id, result });
        self.in_flight.0.fetch_sub(1, Ordering::SeqCst);
        self.in_flight.1.notify_one();
    }
}

/// The pushes of one operation: `push` encoded once, for each of `to`.
pub(crate) fn pushes_of(to: impl Iterator<Item = Outbox>, push: Push) -> Vec<(Outbox, Wire)> {
    let mut to = to.peekable();
    // Nobody to push to: not even encoded.
    if to.peek().is_none() {
        return Vec::new();
    }
    match wire(&ServerFrame::Push(push)) {
        Some(frame) => to.map(|o| (o, frame.clone())).collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn outbox(id: u64, budget: &Arc<QueueBudget>) -> (Outbox, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(1024);
        (Outbox::new(id, tx, budget.clone()), rx)
    }

    #[test]
    fn a_connection_past_its_byte_bound_is_dropped_and_its_bytes_given_back() {
        let budget = Arc::new(QueueBudget::new(3 * LARGEST_WIRE, 100 * LARGEST_WIRE));
        let (slow, rx) = outbox(1, &budget);
        for _ in 0..3 {
            slow.send_wire(Bytes::from(vec![0; LARGEST_WIRE]));
        }
        assert!(!slow.is_killed());
        assert_eq!(budget.queued(), 3 * LARGEST_WIRE);
        slow.send_wire(Bytes::from(vec![0; 10]));
        assert!(slow.is_killed(), "the fourth frame does not fit");
        assert_eq!(slow.queued_bytes(), 3 * LARGEST_WIRE, "and is not queued");
        slow.send_wire(Bytes::from(vec![0; 10]));
        assert_eq!(budget.dropped(), 1);
        assert_eq!(budget.peak_connection(), 3 * LARGEST_WIRE);
        // The queue goes with the connection, and its bytes with it.
        drop(rx);
        assert_eq!(budget.queued(), 0);
        assert_eq!(slow.queued_bytes(), 0);
    }

    #[test]
    fn past_the_relays_bound_the_largest_queues_go_first() {
        let budget = Arc::new(QueueBudget::new(4 * LARGEST_WIRE, 5 * LARGEST_WIRE));
        let (big, _big_rx) = outbox(1, &budget);
        let (small, _small_rx) = outbox(2, &budget);
        let (new, _new_rx) = outbox(3, &budget);
        for _ in 0..4 {
            big.send_wire(Bytes::from(vec![0; LARGEST_WIRE]));
        }
        small.send_wire(Bytes::from(vec![0; LARGEST_WIRE]));
        assert_eq!(budget.queued(), 5 * LARGEST_WIRE);
        // One more byte anywhere is past the relay's bound: the largest queue goes,
        // and the frame that found it full is taken.
        new.send_wire(Bytes::from(vec![0; 100]));
        assert!(big.is_killed());
        assert!(!small.is_killed() && !new.is_killed());
        assert_eq!(new.queued_bytes(), 100);
        // While the dropped queue is on its way out, nobody else is dropped for it.
        small.send_wire(Bytes::from(vec![0; 100]));
        assert!(!small.is_killed());
        assert_eq!(budget.dropped(), 1);
    }

    #[test]
    fn frames_to_an_ended_connection_are_dropped_without_counting_it_slow() {
        let budget = Arc::new(QueueBudget::new(0, 0));
        let (gone, rx) = outbox(1, &budget);
        drop(rx);
        gone.send_wire(Bytes::from(vec![0; 10]));
        assert!(!gone.is_killed());
        assert_eq!((budget.queued(), budget.dropped()), (0, 0));
    }
}
