//! What the relay counts, read in one place for the status line and for the
//! `--metrics` endpoint (Prometheus text exposition over plain HTTP/1.1).
//!
//! Counts only: never a mailbox id, a key, an alias or a client address. The endpoint
//! answers `GET /metrics` and nothing else, one request per connection, and logs no
//! peer.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};

use crate::admission::Admission;
use crate::conn::ConnStats;
use crate::engine::Engine;

/// Everything the relay counts, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Connections held now, from their first packet (handshakes included).
    pub connections: u64,
    /// Of those, the ones still in their handshake.
    pub handshaking: u64,
    /// Mailboxes (talks) held now.
    pub mailboxes: u64,
    pub mailboxes_created: u64,
    pub mailboxes_deleted: u64,
    pub envelopes_stored: u64,
    /// Acknowledged by every recipient, or deleted with their closed or expired talk.
    pub envelopes_deleted: u64,
    /// Handed to members: pushed, or in a `Fetch` answer.
    pub envelopes_delivered: u64,
    /// The store on disk: the database and the envelope log.
    pub store_bytes: u64,
    /// Bytes of frames still being received, all connections together.
    pub partial_frame_bytes: u64,
    /// Bytes of answers and pushes queued for clients.
    pub queued_bytes: u64,
    /// Group commits (fdatasyncs) of the store.
    pub flushes: u64,
    pub retries_sent: u64,
    pub refused: Refused,
    /// Private routing (protocol-spec.md §18).
    pub forward: Forwarding,
}

/// The route service's counts: sessions forwarded for members, and sessions forwarded
/// to this relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Forwarding {
    /// Sessions this relay forwards now.
    pub active: u64,
    /// Sessions forwarded since start.
    pub forwarded: u64,
    /// `Forward`s refused: forwarding off, or a forwarding limit.
    pub refused: u64,
    /// `Forward`s whose destination did not answer in time.
    pub unreachable: u64,
    /// Inner sessions served as the destination since start.
    pub delivered: u64,
}

/// Refusals and forced closes, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Refused {
    /// New connections refused at --max-connections.
    pub connection_limit: u64,
    /// Connection attempts refused at --max-handshakes.
    pub handshake_limit: u64,
    /// Handshakes abandoned after --handshake-timeout.
    pub handshake_timeout: u64,
    /// Connections closed for a frame slower than --frame-deadline.
    pub frame_deadline: u64,
    /// Connections closed at --max-partial-frame-bytes.
    pub partial_frame_budget: u64,
    /// Connections dropped for not reading their answers (--max-queued-bytes…).
    pub slow_reader: u64,
    /// Creates refused for a missing or wrong creation token.
    pub create_token: u64,
    /// Creates refused by a create rate.
    pub create_rate: u64,
}

impl Counts {
    /// Reads every counter now.
    pub fn read(
        engine: &Engine,
        conns: &ConnStats,
        admission: &Admission,
        router: &crate::forward::Router,
    ) -> Counts {
        let f = router.stats();
        let s = &engine.stats;
        let n = |v: usize| v as u64;
        Counts {
            connections: n(conns.connections()),
            handshaking: n(conns.handshaking()),
            mailboxes: n(engine.mailbox_count()),
            mailboxes_created: s.mailboxes_created.load(Ordering::Relaxed),
            mailboxes_deleted: s.mailboxes_deleted.load(Ordering::Relaxed),
            envelopes_stored: s.envelopes_stored.load(Ordering::Relaxed),
            envelopes_deleted: s.envelopes_deleted.load(Ordering::Relaxed),
            envelopes_delivered: s.envelopes_delivered.load(Ordering::Relaxed),
            store_bytes: engine.size_on_disk(),
            partial_frame_bytes: n(conns.partial_bytes()),
            queued_bytes: n(engine.queues().queued()),
            flushes: engine.flushes(),
            retries_sent: conns.retries_sent(),
            refused: Refused {
                connection_limit: conns.refused_at_limit(),
                handshake_limit: conns.handshakes_refused(),
                handshake_timeout: conns.handshakes_timed_out(),
                frame_deadline: conns.frames_timed_out(),
                partial_frame_budget: conns.partial_budget_closed(),
                slow_reader: engine.queues().dropped(),
                create_token: admission.refused_token(),
                create_rate: admission.refused_rate(),
            },
            forward: Forwarding {
                active: n(f.active.load(Ordering::Relaxed)),
                forwarded: f.forwarded.load(Ordering::Relaxed),
                refused: f.refused.load(Ordering::Relaxed),
                unreachable: f.unreachable.load(Ordering::Relaxed),
                delivered: f.delivered.load(Ordering::Relaxed),
            },
        }
    }

    /// The counts in the Prometheus text exposition format (version 0.0.4).
    pub fn exposition(&self) -> String {
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        one(
            "nook_relay_connections",
            "gauge",
            "Connections held now, handshakes included.",
            self.connections,
        );
        one(
            "nook_relay_handshakes_in_progress",
            "gauge",
            "Connections still in their handshake.",
            self.handshaking,
        );
        one(
            "nook_relay_mailboxes",
            "gauge",
            "Mailboxes (talks) held now.",
            self.mailboxes,
        );
        one(
            "nook_relay_mailboxes_created_total",
            "counter",
            "Mailboxes (talks) created since start.",
            self.mailboxes_created,
        );
        one(
            "nook_relay_mailboxes_deleted_total",
            "counter",
            "Mailboxes (talks) deleted since start: closed or expired.",
            self.mailboxes_deleted,
        );
        one(
            "nook_relay_envelopes_stored_total",
            "counter",
            "Envelopes stored durably since start.",
            self.envelopes_stored,
        );
        one(
            "nook_relay_envelopes_deleted_total",
            "counter",
            "Envelopes deleted since start: acknowledged by every recipient, or with their closed or expired talk.",
            self.envelopes_deleted,
        );
        one(
            "nook_relay_envelopes_delivered_total",
            "counter",
            "Envelopes handed to members since start: pushed to a subscribed connection or in a Fetch answer (a refetch counts again).",
            self.envelopes_delivered,
        );
        one(
            "nook_relay_store_bytes",
            "gauge",
            "Bytes of the store on disk (database and envelope log).",
            self.store_bytes,
        );
        one(
            "nook_relay_partial_frame_bytes",
            "gauge",
            "Bytes of frames still being received, all connections together.",
            self.partial_frame_bytes,
        );
        one(
            "nook_relay_queued_bytes",
            "gauge",
            "Bytes of answers and pushes queued for clients.",
            self.queued_bytes,
        );
        one(
            "nook_relay_flushes_total",
            "counter",
            "Group commits (fdatasync) of the store since start.",
            self.flushes,
        );
        one(
            "nook_relay_retries_sent_total",
            "counter",
            "QUIC Retry packets sent to validate a client's address.",
            self.retries_sent,
        );
        let f = &self.forward;
        one(
            "nook_relay_forwarded_sessions",
            "gauge",
            "Sessions this relay forwards for members now (private routing).",
            f.active,
        );
        one(
            "nook_relay_forwarded_sessions_total",
            "counter",
            "Sessions forwarded for members since start.",
            f.forwarded,
        );
        one(
            "nook_relay_forwards_refused_total",
            "counter",
            "Forward requests refused since start: forwarding off, or a forwarding limit.",
            f.refused,
        );
        one(
            "nook_relay_forward_destinations_unreachable_total",
            "counter",
            "Forward requests whose destination relay did not answer in time.",
            f.unreachable,
        );
        one(
            "nook_relay_inner_sessions_total",
            "counter",
            "Sessions forwarded to this relay (through a forwarder) since start.",
            f.delivered,
        );
        let r = &self.refused;
        let name = "nook_relay_refusals_total";
        let _ = write!(
            out,
            "# HELP {name} Connections, handshakes and creates refused or closed by a limit, by kind.\n\
             # TYPE {name} counter\n"
        );
        for (kind, value) in [
            ("connection_limit", r.connection_limit),
            ("handshake_limit", r.handshake_limit),
            ("handshake_timeout", r.handshake_timeout),
            ("frame_deadline", r.frame_deadline),
            ("partial_frame_budget", r.partial_frame_budget),
            ("slow_reader", r.slow_reader),
            ("create_token", r.create_token),
            ("create_rate", r.create_rate),
        ] {
            let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {value}");
        }
        out
    }
}

/// What the endpoint reads its counts from.
#[derive(Clone)]
pub struct Source {
    pub engine: Arc<Engine>,
    pub conns: Arc<ConnStats>,
    pub admission: Arc<Admission>,
    pub router: Arc<crate::forward::Router>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("metrics::Source")
    }
}

impl Source {
    pub fn counts(&self) -> Counts {
        Counts::read(&self.engine, &self.conns, &self.admission, &self.router)
    }
}

/// Scrapes answered at once; a further connection waits in the kernel's backlog.
const MAX_SCRAPES: usize = 4;
/// A request's head, at most: `GET /metrics HTTP/1.1` and a few headers.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a scraper may take to send its request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `listener` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: Source,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() { return; }
                continue;
            }
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() { return; }
                continue;
            }
        };
        let Ok((stream, _peer)) = accepted else {
            // Out of file descriptors, most likely: the relay's QUIC side matters more.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let source = source.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REQUEST_DEADLINE, answer(stream, &source)).await;
        });
    }
}

/// Reads one request head and answers it; the connection closes after.
async fn answer(mut stream: tokio::net::TcpStream, source: &Source) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => {
            let body = source.counts().exposition();
            respond(&mut stream, "200 OK", &body).await
        }
        (Some(b"GET"), _) => {
            respond(
                &mut stream,
                "404 Not Found",
                "the metrics are at /metrics\n",
            )
            .await
        }
        _ => respond(&mut stream, "405 Method Not Allowed", "").await,
    }
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = Counts::default().exposition();
        let mut declared = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                declared = rest.split(' ').next().map(str::to_string);
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert_eq!(rest.split(' ').next(), declared.as_deref(), "{line}");
            } else {
                let name = line.split(['{', ' ']).next();
                assert_eq!(name, declared.as_deref(), "{line}");
            }
        }
    }
}
