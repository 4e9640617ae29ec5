//! The way back to one connection: a bounded queue of encoded frames, a switch that
//! drops the connection, and the count of its requests still waiting for a durable
//! answer.
//!
//! It is its own module because three others use it and none should reach into
//! another to reply: `conn` makes one per connection and drains its queue, the
//! engine pushes to subscribers' outboxes, and the commit thread answers a request
//! once its write is durable (engine → commit → outbox). A full queue never blocks
//! or grows: that connection is too slow and is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use nook_proto::codec::encode_frame;
use nook_proto::{Outcome, Push, ServerFrame};
use tokio::sync::{Notify, mpsc};

/// One server frame as it goes on the wire (header and body). Frames are encoded
/// where they are made, so a push to several connections is encoded once and shared,
/// and an outbox slot is one `Bytes` rather than a whole `ServerFrame`.
pub type Wire = Bytes;

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

/// The way back to one connection: its queue of frames and a switch to drop it.
#[derive(Clone, Debug)]
pub struct Outbox {
    pub id: u64,
    queue: mpsc::Sender<Wire>,
    killed: Arc<(AtomicBool, Notify)>,
    in_flight: Arc<(AtomicU64, Notify)>,
}

impl Outbox {
    pub fn new(id: u64, queue: mpsc::Sender<Wire>) -> Outbox {
        Outbox {
            id,
            queue,
            killed: Arc::new((AtomicBool::new(false), Notify::new())),
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
        if self.queue.try_send(frame).is_err() {
            self.kill();
        }
    }

    pub fn kill(&self) {
        self.killed.0.store(true, Ordering::SeqCst);
        self.killed.1.notify_one();
    }

    pub fn is_killed(&self) -> bool {
        self.killed.0.load(Ordering::SeqCst)
    }

    /// Resolves when [`Outbox::kill`] was called.
    pub async fn killed(&self) {
        if self.is_killed() {
            return;
        }
        self.killed.1.notified().await;
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
