//! Test harness: an in-process relay on 127.0.0.1 with a manual clock, and helpers
//! that speak the protocol through the real client transport.

#![allow(dead_code, missing_debug_implementations, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use nook_client::RelayConnection;
use nook_crypto::auth::{AuthOp, params_digest, sign_relay_auth};
use nook_crypto::kdf::sha256;
use nook_crypto::seal::seal_welcome;
use nook_crypto::{EnvelopeKey, Purpose, RelayAddr, SeatSecret, TalkIdentity};
use nook_proto::*;
use nook_relay::clock::ManualClock;
use nook_relay::{Config, Relay, Shutdown};
use tokio::task::JoinHandle;

pub const T0: u64 = 1_700_000_000;

pub struct TestRelay {
    pub addr: RelayAddr,
    pub clock: Arc<ManualClock>,
    pub engine: Arc<nook_relay::engine::Engine>,
    pub dir: tempfile::TempDir,
    shutdown: Shutdown,
    task: Option<JoinHandle<()>>,
}

impl TestRelay {
    pub fn start() -> TestRelay {
        TestRelay::start_in(tempfile::tempdir().unwrap())
    }

    pub fn start_in(dir: tempfile::TempDir) -> TestRelay {
        TestRelay::start_with(dir, nook_relay::engine::Limits::default())
    }

    pub fn start_with(dir: tempfile::TempDir, limits: nook_relay::engine::Limits) -> TestRelay {
        TestRelay::start_config(dir, |c| c.limits = limits)
    }

    pub fn start_config(dir: tempfile::TempDir, adjust: impl FnOnce(&mut Config)) -> TestRelay {
        let clock = Arc::new(ManualClock::new(T0));
        let mut config = Config::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        adjust(&mut config);
        // The sweeper runs only when a test calls it, so TTLs are driven by the clock.
        config.sweep_every = std::time::Duration::from_secs(3600);
        let relay = Relay::start_with_clock(config, clock.clone()).unwrap();
        let addr: RelayAddr = relay.address().parse().unwrap();
        let engine = relay.engine().clone();
        let (shutdown, stop) = Shutdown::new();
        let task = tokio::spawn(relay.run(stop));
        TestRelay {
            addr,
            clock,
            engine,
            dir,
            shutdown,
            task: Some(task),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub async fn connect(&self) -> RelayConnection {
        RelayConnection::connect(&self.addr).await.unwrap()
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.trigger();
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        self.dir
    }
}

/// A member's view for these tests: its identity and its connection.
pub struct Member {
    pub id: TalkIdentity,
    pub conn: RelayConnection,
    pub mailbox: MailboxId,
    pub seat: u8,
}

pub struct Created {
    pub owner: Member,
    pub seats: Vec<SeatSecret>,
    pub talk_key: [u8; 32],
    pub status: TalkStatus,
}

pub fn params(seats: u8, quorum: u8, close: ClosePolicy, secrets: &[SeatSecret]) -> TalkParams {
    TalkParams {
        seats,
        quorum,
        ttl_secs: 3600,
        close,
        offers: secrets
            .iter()
            .map(|s| SeatOffer {
                token_hash: s.token_hash(),
                welcome: seal_welcome(s, b"welcome for this seat").unwrap(),
            })
            .collect(),
        schedule: None,
    }
}

pub async fn create(relay: &TestRelay, seats: u8, quorum: u8, close: ClosePolicy) -> Created {
    create_on(relay.connect().await, seats, quorum, close).await
}

/// A relay reached by address only (the binary in another process).
pub struct TestRelayAddr(pub RelayAddr);

impl TestRelayAddr {
    pub async fn create(&self, seats: u8, quorum: u8) -> Created {
        create_on(
            RelayConnection::connect(&self.0).await.unwrap(),
            seats,
            quorum,
            ClosePolicy::Owner,
        )
        .await
    }
    pub async fn join(&self, mailbox: MailboxId, seat: &SeatSecret) -> Member {
        join_with(
            RelayConnection::connect(&self.0).await.unwrap(),
            mailbox,
            seat,
        )
        .await
        .unwrap()
        .0
    }
}

pub async fn create_on(
    conn: RelayConnection,
    seats: u8,
    quorum: u8,
    close: ClosePolicy,
) -> Created {
    create_adjusted(conn, seats, quorum, close, |_| {}).await
}

/// [`create_on`] with the talk's parameters changed by `adjust` before they are signed
/// (a schedule, say).
pub async fn create_adjusted(
    conn: RelayConnection,
    seats: u8,
    quorum: u8,
    close: ClosePolicy,
    adjust: impl FnOnce(&mut TalkParams),
) -> Created {
    let mut rng = rand::rng();
    let secrets: Vec<SeatSecret> = (1..seats).map(|_| SeatSecret::random(&mut rng)).collect();
    let id = TalkIdentity::generate(&mut rng);
    let mut p = params(seats, quorum, close, &secrets);
    adjust(&mut p);
    let sig = sign_relay_auth(
        &id,
        AuthOp::Create,
        &conn.hello().challenge,
        &MailboxId([0; 16]),
        &params_digest(&p).unwrap(),
    );
    let r = conn
        .request(Request::Create(Create {
            params: p,
            owner: id.member_key(),
            signature: sig,
        }))
        .await
        .unwrap();
    let Response::Created { mailbox, status } = r else {
        panic!("unexpected {r:?}")
    };
    Created {
        owner: Member {
            id,
            conn,
            mailbox,
            seat: 0,
        },
        seats: secrets,
        talk_key: [42; 32],
        status,
    }
}

pub async fn join_with(
    conn: RelayConnection,
    mailbox: MailboxId,
    seat: &SeatSecret,
) -> Result<(Member, Vec<u8>, TalkStatus), nook_client::RequestError> {
    let id = TalkIdentity::generate(&mut rand::rng());
    let token = *seat.join_token();
    let sig = sign_relay_auth(&id, AuthOp::Join, &conn.hello().challenge, &mailbox, &token);
    let r = conn
        .request(Request::Join(Join {
            mailbox,
            token,
            member: id.member_key(),
            signature: sig,
        }))
        .await?;
    let Response::Joined {
        seat,
        welcome,
        status,
    } = r
    else {
        panic!("unexpected {r:?}")
    };
    Ok((
        Member {
            id,
            conn,
            mailbox,
            seat,
        },
        welcome,
        status,
    ))
}

pub async fn join(relay: &TestRelay, mailbox: MailboxId, seat: &SeatSecret) -> Member {
    join_with(relay.connect().await, mailbox, seat)
        .await
        .unwrap()
        .0
}

impl Member {
    pub async fn subscribe(&self) -> TalkStatus {
        match self
            .conn
            .request(Request::Subscribe {
                mailbox: self.mailbox,
            })
            .await
            .unwrap()
        {
            Response::Subscribed { status } => status,
            r => panic!("unexpected {r:?}"),
        }
    }

    pub async fn put(
        &self,
        kind: EnvelopeKind,
        text: &[u8],
    ) -> Result<Seq, nook_client::RequestError> {
        let body = EnvelopeKey::from_talk_key(&[42; 32])
            .seal(&mut rand::rng(), &self.mailbox, Purpose::from(kind), text)
            .unwrap();
        self.put_raw(kind, body).await
    }

    pub async fn put_raw(
        &self,
        kind: EnvelopeKind,
        body: Vec<u8>,
    ) -> Result<Seq, nook_client::RequestError> {
        match self
            .conn
            .request(Request::Put(Put {
                mailbox: self.mailbox,
                kind,
                body,
            }))
            .await?
        {
            Response::Stored { seq } => Ok(seq),
            r => panic!("unexpected {r:?}"),
        }
    }

    pub async fn fetch(&self, after: u64) -> Result<Vec<Envelope>, nook_client::RequestError> {
        match self
            .conn
            .request(Request::Fetch {
                mailbox: self.mailbox,
                after: Seq(after),
                limit: 256,
            })
            .await?
        {
            Response::Envelopes { items, .. } => Ok(items),
            r => panic!("unexpected {r:?}"),
        }
    }

    pub async fn ack(&self, upto: u64) -> Result<(), nook_client::RequestError> {
        self.conn
            .request(Request::Ack {
                mailbox: self.mailbox,
                upto: Seq(upto),
            })
            .await
            .map(|_| ())
    }

    pub async fn auth_on(
        &self,
        conn: &RelayConnection,
    ) -> Result<Response, nook_client::RequestError> {
        let sig = sign_relay_auth(
            &self.id,
            AuthOp::Auth,
            &conn.hello().challenge,
            &self.mailbox,
            &[],
        );
        conn.request(Request::Auth(Auth {
            mailbox: self.mailbox,
            member: self.id.member_key(),
            signature: sig,
        }))
        .await
    }

    /// Closes with `farewell`, or with a sealed placeholder farewell if it is empty.
    pub async fn close(&self, farewell: Vec<u8>) -> Result<Receipt, nook_client::RequestError> {
        let farewell = if farewell.is_empty() {
            EnvelopeKey::from_talk_key(&[42; 32])
                .seal(
                    &mut rand::rng(),
                    &self.mailbox,
                    Purpose::Farewell,
                    b"farewell",
                )
                .unwrap()
        } else {
            farewell
        };
        self.close_exact(farewell).await
    }

    pub async fn close_exact(
        &self,
        farewell: Vec<u8>,
    ) -> Result<Receipt, nook_client::RequestError> {
        let sig = sign_relay_auth(
            &self.id,
            AuthOp::Close,
            &self.conn.hello().challenge,
            &self.mailbox,
            &sha256(&[&farewell]),
        );
        match self
            .conn
            .request(Request::Close(Close {
                mailbox: self.mailbox,
                farewell,
                signature: sig,
            }))
            .await?
        {
            Response::Closed { receipt } => Ok(receipt),
            r => panic!("unexpected {r:?}"),
        }
    }

    pub async fn leave(&self) -> Result<(), nook_client::RequestError> {
        let sig = sign_relay_auth(
            &self.id,
            AuthOp::Leave,
            &self.conn.hello().challenge,
            &self.mailbox,
            &[],
        );
        self.conn
            .request(Request::Leave {
                mailbox: self.mailbox,
                signature: sig,
            })
            .await
            .map(|_| ())
    }
}

/// Waits for the next push, bounded in time.
/// A member coming back on a new connection (after a restart), authenticated.
pub async fn reconnect(
    relay: &TestRelay,
    id: TalkIdentity,
    mailbox: MailboxId,
    seat: u8,
) -> Member {
    let member = Member {
        id,
        conn: relay.connect().await,
        mailbox,
        seat,
    };
    member.auth_on(&member.conn).await.unwrap();
    member
}

pub async fn next_push(rx: &mut tokio::sync::mpsc::Receiver<Push>) -> Push {
    tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("no push within 10 s")
        .expect("push channel closed")
}

/// Every file under `dir`, concatenated.
pub fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.extend_from_slice(&b);
            }
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl TestRelay {
    /// [`TestRelay::start_config`], also returning the relay's connection counters.
    pub fn start_watched(
        dir: tempfile::TempDir,
        adjust: impl FnOnce(&mut Config),
    ) -> (TestRelay, Arc<nook_relay::conn::ConnStats>) {
        let clock = Arc::new(ManualClock::new(T0));
        let mut config = Config::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        adjust(&mut config);
        config.sweep_every = std::time::Duration::from_secs(3600);
        let relay = Relay::start_with_clock(config, clock.clone()).unwrap();
        let addr: RelayAddr = relay.address().parse().unwrap();
        let engine = relay.engine().clone();
        let stats = relay.conn_stats().clone();
        let (shutdown, stop) = Shutdown::new();
        let task = tokio::spawn(relay.run(stop));
        let relay = TestRelay {
            addr,
            clock,
            engine,
            dir,
            shutdown,
            task: Some(task),
        };
        (relay, stats)
    }
}

/// Waits until `cond` holds, polling; the bound only guards against a hang.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The real `nook-relay` binary in another process, killed when dropped.
pub struct RelayProcess {
    pub child: std::process::Child,
    pub addr: RelayAddr,
}

impl RelayProcess {
    /// Starts the binary on a free loopback port with `args` besides `--listen` and
    /// `--data`, and reads its address from its first stdout line. `None` if it
    /// exits before printing one (its stderr is returned then).
    pub fn spawn(dir: &std::path::Path, args: &[&str]) -> Result<RelayProcess, String> {
        use std::io::{BufRead, BufReader};
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its log goes to a file outside `dir` (which may be a full disk), read back
        // only if it fails to start.
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nook-relay"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(dir)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("nook-relay binary runs");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        match line.trim().parse() {
            Ok(addr) => {
                // Whatever else it prints is read and dropped, so that it never
                // writes to a closed pipe.
                std::thread::spawn(move || {
                    let mut sink = String::new();
                    while stdout.read_line(&mut sink).is_ok_and(|n| n > 0) {
                        sink.clear();
                    }
                });
                Ok(RelayProcess { child, addr })
            }
            Err(_) => {
                let _ = child.wait();
                Err(std::fs::read_to_string(log.path()).unwrap_or_default())
            }
        }
    }

    /// The process's resident set size, from /proc (Linux), in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS in /proc/PID/status");
        let kib: u64 = line
            .trim_start_matches("VmRSS:")
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kib * 1024
    }

    /// SIGTERM, and waits for the process to end (bounded).
    pub fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `Create` of a talk of `seats` seats whose every welcome is `welcome_len` bytes
/// (a padding bucket): what a client that wants the relay to hold the most sends.
pub fn heavy_create(
    challenge: &[u8; 32],
    seats: u8,
    welcome_len: usize,
) -> (Request, TalkIdentity) {
    let mut rng = rand::rng();
    let id = TalkIdentity::generate(&mut rng);
    let p = TalkParams {
        seats,
        quorum: seats,
        ttl_secs: 3600,
        close: ClosePolicy::Owner,
        offers: (1..seats)
            .map(|_| {
                let mut welcome = vec![0u8; welcome_len];
                rand::Rng::fill_bytes(&mut rng, &mut welcome);
                SeatOffer {
                    token_hash: SeatSecret::random(&mut rng).token_hash(),
                    welcome,
                }
            })
            .collect(),
        schedule: None,
    };
    let signature = sign_relay_auth(
        &id,
        AuthOp::Create,
        challenge,
        &MailboxId([0; 16]),
        &params_digest(&p).unwrap(),
    );
    let owner = id.member_key();
    (
        Request::Create(Create {
            params: p,
            owner,
            signature,
        }),
        id,
    )
}

/// A pinned client endpoint for raw QUIC (the attack tests speak bytes, not frames).
pub fn raw_endpoint(addr: &RelayAddr) -> quinn::Endpoint {
    let config = nook_quic::client_config(addr.fingerprint, nook_proto::limits::ALPN).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    endpoint
}

/// A finished QUIC handshake with the relay, no stream opened.
pub async fn handshake(endpoint: &quinn::Endpoint, addr: &RelayAddr) -> quinn::Connection {
    let target: std::net::SocketAddr = addr.host_port().parse().unwrap();
    endpoint
        .connect(target, addr.host_name())
        .unwrap()
        .await
        .unwrap()
}

/// The application close code the relay ended `conn` with, waiting for it (the bound
/// guards against a hang; the assertion is on the code).
pub async fn close_code_of(conn: &quinn::Connection) -> u64 {
    let closed = tokio::time::timeout(std::time::Duration::from_secs(30), conn.closed())
        .await
        .expect("the relay kept the connection");
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        e => panic!("closed otherwise: {e}"),
    }
}
