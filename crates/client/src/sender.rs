//! Many sends to one talk from one long-running program (`nook rpc`).
//!
//! A one-shot [`Client::send`] dials, authenticates, syncs, sends and hangs up; the
//! handshake and the fdatasync are most of its cost. A [`TalkSender`] dials once and
//! keeps the connection between sends, and [`TalkSender::send`] takes a whole batch
//! of texts: sealed in order, made durable with one fdatasync, put pipelined in the
//! same order (see [`TalkSession::send_texts`]). The store is leased per batch, never
//! while idle, so other `nook` processes use the home in between.
//!
//! The kept connection is subscribed to the talk, so what the relay says between two
//! batches is not missed: a new status (a member left: keys change before the next
//! message goes out), envelopes waiting (fetched and answered before the next batch,
//! as a one-shot send does), the end of the talk. The pushes are only noted here;
//! the next batch acts on them under its lease. A connection that dropped, a talk
//! that ended, or a connection unused for [`LINK_IDLE`] is replaced by a fresh one,
//! which finds out through the relay what happened, as a one-shot send would.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nook_proto::{Push, Request, Response, TalkStatus};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::api::{Client, Sent};
use crate::error::ClientError;
use crate::session::{TalkSession, authenticate};
use crate::store::TalkId;
use crate::transport::RelayConnection;

/// How long a kept connection may go unused before it is replaced: shorter than a
/// relay's idle timeout, so a batch never starts on a connection about to be dropped.
pub const LINK_IDLE: Duration = Duration::from_secs(20);

/// One talk's sends from one process, over a kept connection.
#[derive(Debug)]
pub struct TalkSender {
    client: Client,
    /// The talk as the caller named it (a unique prefix will do).
    talk: String,
    link: Option<Link>,
}

/// A connection authenticated and subscribed for one talk.
struct Link {
    conn: RelayConnection,
    talk_id: TalkId,
    status: TalkStatus,
    news: Arc<Mutex<News>>,
    drain: JoinHandle<()>,
    used: Instant,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").finish_non_exhaustive()
    }
}

/// What the relay pushed since the last batch.
#[derive(Debug, Default)]
struct News {
    status: Option<TalkStatus>,
    envelopes: bool,
    /// The talk ended or the connection dropped: the link is of no more use.
    gone: bool,
}

fn lock(m: &Mutex<News>) -> MutexGuard<'_, News> {
    match m.lock() {
        Ok(n) => n,
        // Only flags and a status behind it: still whole after a panic elsewhere.
        Err(p) => p.into_inner(),
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

impl Link {
    fn stale(&self) -> bool {
        lock(&self.news).gone || self.conn.is_closed() || self.used.elapsed() > LINK_IDLE
    }
}

impl TalkSender {
    /// Sends to `talk` (a name or unique prefix, as every command takes). Nothing is
    /// dialled before the first [`TalkSender::send`].
    pub fn new(client: &Client, talk: &str) -> TalkSender {
        TalkSender {
            client: client.clone(),
            talk: talk.to_string(),
            link: None,
        }
    }

    /// Lets the kept connection go (it is dialled again by the next send).
    pub fn disconnect(&mut self) {
        self.link = None;
    }

    /// True when a connection is kept.
    pub fn is_connected(&self) -> bool {
        self.link.is_some()
    }

    /// Sends `texts` in order; one result per text, each `Ok` once the relay stored
    /// it durably. `Err` when nothing could be sent (the talk is unknown, not open,
    /// ended; the relay is unreachable).
    pub async fn send(
        &mut self,
        texts: &[String],
    ) -> Result<Vec<Result<Sent, ClientError>>, ClientError> {
        let result = self.send_on_link(texts).await;
        let keep = match &result {
            Ok(items) => !items
                .iter()
                .any(|r| r.as_ref().is_err_and(ClientError::is_transient)),
            Err(_) => false,
        };
        if !keep {
            // Whatever went wrong, the next batch starts from a fresh connection.
            self.link = None;
        }
        result
    }

    async fn send_on_link(
        &mut self,
        texts: &[String],
    ) -> Result<Vec<Result<Sent, ClientError>>, ClientError> {
        if self.link.as_ref().is_some_and(Link::stale) {
            self.link = None;
        }
        let (link, mut session) = match self.link.take() {
            Some(mut link) => {
                let session = TalkSession::load(self.client.leases().take().await?, &link.talk_id)?;
                let session = catch_up(&mut link, session).await?;
                (link, session)
            }
            None => self.connect().await?,
        };
        let link = self.link.insert(link);
        link.used = Instant::now();
        let sent = session.send_texts(&link.conn, link.status, texts).await?;
        let talk = session.state().name();
        Ok(sent
            .into_iter()
            .map(|r| {
                r.map(|(seq, id)| Sent {
                    talk: talk.clone(),
                    seq,
                    id,
                })
            })
            .collect())
    }

    /// Dials and authenticates (without the store: a slow relay never blocks another
    /// command on this home), subscribes, and catches up as a one-shot send does.
    async fn connect(&self) -> Result<(Link, TalkSession), ClientError> {
        let leases = self.client.leases();
        let (talk_id, target) = {
            let session = TalkSession::find(leases.take().await?, &self.talk)?;
            (session.talk_id(), session.target()?)
        };
        let answer = authenticate(self.client.dialer(), &target).await;
        let mut session = TalkSession::load(leases.take().await?, &talk_id)?;
        let mut authed = session.settle(answer).await?;
        let pushes = authed.conn.take_pushes().ok_or(ClientError::Protocol)?;
        let mailbox = session.state().mailbox;
        let status = match authed.conn.request(Request::Subscribe { mailbox }).await? {
            Response::Subscribed { status } => status,
            _ => return Err(ClientError::Protocol),
        };
        let news = Arc::new(Mutex::new(News {
            status: Some(status),
            // Whatever waits is fetched before the first message, as by `send`.
            envelopes: true,
            gone: false,
        }));
        let drain = tokio::spawn(drain(pushes, news.clone()));
        let mut link = Link {
            conn: authed.conn,
            talk_id,
            status: authed.status,
            news,
            drain,
            used: Instant::now(),
        };
        let session = catch_up(&mut link, session).await?;
        Ok((link, session))
    }
}

/// Acts on what the relay pushed since the last batch, under the batch's lease: the
/// status first (keys change when a seat left), then whatever waits.
async fn catch_up(link: &mut Link, mut session: TalkSession) -> Result<TalkSession, ClientError> {
    let news = std::mem::take(&mut *lock(&link.news));
    if let Some(status) = news.status {
        link.status = status;
    }
    if session.has_left(&link.status) {
        // Left from another process: the relay no longer counts this seat.
        session.delete()?;
        return Err(ClientError::TalkGone);
    }
    session.apply_status(&link.conn, link.status).await?;
    if news.envelopes {
        session.sync(&link.conn).await?;
    }
    Ok(session)
}

/// Notes the pushes of a kept connection until it ends.
async fn drain(mut pushes: mpsc::Receiver<Push>, news: Arc<Mutex<News>>) {
    while let Some(push) = pushes.recv().await {
        let mut n = lock(&news);
        match push {
            Push::Envelope { .. } => n.envelopes = true,
            Push::SeatTaken { status, .. }
            | Push::Opened { status, .. }
            | Push::MemberLeft { status, .. } => n.status = Some(status),
            Push::Closed { .. } | Push::Expired { .. } => n.gone = true,
            // A follower records the retirement in the history; sending goes on.
            Push::Retiring { .. } => {}
            // For the owner's follower (`nook requests`); nothing to send.
            Push::SeatRequested { .. } => {}
        }
    }
    lock(&news).gone = true;
}

#[cfg(test)]
mod tests {
    use nook_proto::{EnvelopeKind, Request};

    use crate::member::Event;
    use crate::session::TalkSession;
    use crate::testkit::{FakeRelay, home, status, three};

    fn texts(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_group_send_puts_in_order_and_a_text_too_long_fails_alone() {
        let (_dir, leases) = home();
        let (mut net, a, mut b, _) = three();
        let talk_id = a.talk_id;
        let mut session = TalkSession::new(leases.take().await.unwrap(), a);
        let relay = FakeRelay::new(false);
        let long = "x".repeat(nook_proto::limits::MAX_ENVELOPE + 1);
        let results = session
            .send_texts(
                &relay,
                status(3, true),
                &texts(&["one", &long, "two", "three"]),
            )
            .await
            .unwrap();
        assert_eq!(results.len(), 4);
        assert!(results[1].is_err(), "the long one fails");
        let seqs: Vec<u64> = [0, 2, 3]
            .iter()
            .map(|&i| results[i].as_ref().unwrap().0.0)
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        // The relay saw the three puts in the texts' order; a member reads them so.
        let puts: Vec<Vec<u8>> = relay
            .requests()
            .into_iter()
            .filter_map(|r| match r {
                Request::Put(p) => Some(p.body),
                _ => None,
            })
            .collect();
        assert_eq!(puts.len(), 3);
        let sender = session.state().seat;
        for body in puts {
            net.put(sender, EnvelopeKind::Chat, body);
        }
        let read: Vec<String> = net
            .deliver(&mut b)
            .into_iter()
            .filter_map(|e| match e {
                Event::Message {
                    text,
                    late: false,
                    missed: 0,
                    ..
                } => Some(text),
                _ => None,
            })
            .collect();
        assert_eq!(read, ["one", "two", "three"]);
        // This device's history has its own three, with the ids the results gave.
        let own: Vec<[u8; 8]> = session
            .store()
            .history(&talk_id, 0)
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.event {
                Event::Message { own: true, id, .. } => id,
                _ => None,
            })
            .collect();
        let ids: Vec<[u8; 8]> = [0, 2, 3]
            .iter()
            .map(|&i| results[i].as_ref().unwrap().1)
            .collect();
        assert_eq!(own, ids);
    }

    #[tokio::test]
    async fn a_group_send_whose_puts_are_lost_has_moved_the_chain_on_disk_first() {
        let (_dir, leases) = home();
        let (_, a, _, _) = three();
        let talk_id = a.talk_id;
        let before = a.sending_index();
        let mut session = TalkSession::new(leases.take().await.unwrap(), a);
        let relay = FakeRelay::new(true);
        let results = session
            .send_texts(&relay, status(3, true), &texts(&["a", "b", "c"]))
            .await
            .unwrap();
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().is_err_and(|e| e.is_transient()))
        );
        drop(session);
        leases.close_idle();
        // Whatever the relay did with the puts, the next messages use new keys.
        let stored = leases
            .take()
            .await
            .unwrap()
            .load(&talk_id)
            .unwrap()
            .unwrap();
        assert_eq!(stored.sending_index(), before + 3);
    }

    #[tokio::test]
    async fn a_group_send_to_a_pending_talk_sends_nothing() {
        let (_dir, leases) = home();
        let (_, a, _, _) = three();
        let mut session = TalkSession::new(leases.take().await.unwrap(), a);
        let relay = FakeRelay::new(false);
        let err = session
            .send_texts(&relay, status(1, false), &texts(&["early"]))
            .await
            .unwrap_err();
        assert!(matches!(err, crate::ClientError::Pending { .. }), "{err:?}");
        assert!(relay.requests().is_empty());
    }
}
