//! attackmem: what one connection can make the relay hold under the attacks of issue
//! 25, measured on the release `nook-relay` as a child process.
//!
//! For each attack a fresh relay; N attacking connections (one client endpoint); the
//! relay's resident memory (`VmRSS`) before, while the attack holds, and its peak
//! (`VmHWM`); reported per attacking connection, the median of `--runs`:
//!
//! - `idle`: Hello, then nothing (the keep-alive holds the connection).
//! - `slowloris`: a header announcing a 1 MiB frame and all of it but the last byte,
//!   never finished (the relay run with `--frame-deadline 1h`, so the frames are
//!   still held when measured: the partial-frame budget is the bound). This is also
//!   the full receive window: the relay has taken the client's whole 1 MiB window
//!   into its decoder, and QUIC flow control lets no more through.
//! - `half-open`: Initials through a UDP forwarder that drops every answer, so each
//!   handshake stays in progress (relay run with `--handshake-timeout 60s`).
//! - `fetch`: a member of a talk holding seven 128 KiB envelopes on N connections,
//!   each with a 64 KiB receive window, pipelining `Fetch` and never reading: the
//!   relay queues answers until the connection's byte bound (16 MiB) or the
//!   relay-wide one (1 GiB) drops it. Reported from the peak.
//!
//! usage: cargo build --release -p nook-relay -p nook-bench &&
//!        target/release/attackmem [--conns 200] [--runs 3]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use nook_bench::proc::rss_kib;
use nook_bench::quic::{RawConn, client_config, nook_alpn, shared_client_endpoint};
use nook_bench::relay::{RelayProcess, default_relay_bin};
use nook_bench::stats::median;
use nook_bench::talk::{create_request, two_seat_params};
use nook_crypto::auth::{AuthOp, sign_relay_auth};
use nook_crypto::{RelayAddr, SeatSecret, TalkIdentity};
use nook_proto::limits::MAX_FRAME;
use nook_proto::{Auth, ClientFrame, EnvelopeKind, Join, Put, Request, Response, Seq};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "attackmem",
    about = "nook relay: memory per connection under the attacks of issue 25"
)]
struct Args {
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// Attacking connections at once.
    #[arg(long, default_value_t = 200)]
    conns: usize,
    /// Runs per attack (a fresh relay each); the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Attacks to run, of idle, slowloris, half-open, fetch.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "idle,slowloris,half-open,fetch"
    )]
    attacks: Vec<String>,
    /// Seconds to let the relay settle before and during an attack.
    #[arg(long, default_value_t = 2)]
    settle: u64,
    #[arg(long)]
    jsonl: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bin = args.relay_bin.clone().unwrap_or_else(default_relay_bin);
    println!(
        "attackmem: {} attacking connections, {} runs each (KiB per connection: while held / peak)",
        args.conns, args.runs
    );
    for attack in &args.attacks {
        let mut held = Vec::new();
        let mut peak = Vec::new();
        for _ in 0..args.runs {
            let (h, p) = one_run(&bin, attack, &args).await?;
            held.push(Some(h));
            peak.push(Some(p));
        }
        let (h, p) = (median(&held), median(&peak));
        println!(
            "{attack:>10}: {:>8.1} KiB held, {:>8.1} KiB peak per connection (runs: {:?} / {:?})",
            h.unwrap_or(f64::NAN),
            p.unwrap_or(f64::NAN),
            held.iter().flatten().map(|v| v.round()).collect::<Vec<_>>(),
            peak.iter().flatten().map(|v| v.round()).collect::<Vec<_>>(),
        );
        nook_bench::append_jsonl(
            args.jsonl.as_deref(),
            &json!({
                "bench": "attackmem",
                "attack": attack,
                "conns": args.conns,
                "runs": args.runs,
                "held_kib_per_conn": h,
                "peak_kib_per_conn": p,
            }),
        )?;
    }
    Ok(())
}

/// One attack on a fresh relay: (KiB per connection while held, at the peak).
async fn one_run(bin: &std::path::Path, attack: &str, args: &Args) -> anyhow::Result<(f64, f64)> {
    let extra: Vec<String> = match attack {
        "slowloris" => vec!["--frame-deadline".into(), "1h".into()],
        "half-open" => vec!["--handshake-timeout".into(), "60s".into()],
        _ => vec![],
    };
    let relay = RelayProcess::start_with(bin, &extra)?;
    let endpoint = shared_client_endpoint()?;
    // The fetch attack's talk is made before the baseline: its envelopes are not what
    // the attackers cost.
    let talk = if attack == "fetch" {
        Some(LargeTalk::make(&endpoint, &relay.addr).await?)
    } else {
        None
    };
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let before = rss_kib(relay.pid).context("no relay RSS")?;
    let n = args.conns;
    let hold: Box<dyn std::any::Any + Send> = match attack {
        "idle" => Box::new(idle(&endpoint, &relay.addr, n).await?),
        "slowloris" => Box::new(slowloris(&endpoint, &relay.addr, n).await?),
        "half-open" => Box::new(half_open(&relay.addr, n).await?),
        "fetch" => match &talk {
            Some(t) => Box::new(fetch_never_read(&relay.addr, t, n).await?),
            None => bail!("no talk"),
        },
        other => bail!("unknown attack {other}"),
    };
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let during = rss_kib(relay.pid).context("no relay RSS")?;
    let hwm = vm_hwm_kib(relay.pid).context("no relay VmHWM")?;
    drop(hold);
    relay.stop();
    let per = |kib: u64| kib.saturating_sub(before) as f64 / n as f64;
    Ok((per(during), per(hwm.max(during))))
}

/// Peak resident set size of `pid` in KiB (`VmHWM`).
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

async fn idle(
    endpoint: &quinn::Endpoint,
    addr: &RelayAddr,
    n: usize,
) -> anyhow::Result<Vec<RawConn>> {
    let config = client_config(addr.fingerprint, nook_alpn())?;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(RawConn::connect(endpoint, config.clone(), addr).await?);
    }
    Ok(conns)
}

async fn slowloris(
    endpoint: &quinn::Endpoint,
    addr: &RelayAddr,
    n: usize,
) -> anyhow::Result<Vec<RawConn>> {
    let mut conns = idle(endpoint, addr, n).await?;
    let mut frame = (MAX_FRAME as u32).to_be_bytes().to_vec();
    frame.resize(4 + MAX_FRAME - 1, 7);
    for c in &mut conns {
        c.send.write_all(&frame).await?;
    }
    Ok(conns)
}

/// Handshakes begun through a forwarder that drops every answer; the forwarder task
/// and the client endpoint are what the caller holds.
async fn half_open(addr: &RelayAddr, n: usize) -> anyhow::Result<HalfOpen> {
    let relay: SocketAddr = addr.host_port().parse()?;
    let way = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let way_addr = way.local_addr()?;
    let forward = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((len, from)) = way.recv_from(&mut buf).await else {
                return;
            };
            if from != relay {
                let _ = way.send_to(&buf[..len], relay).await;
            }
        }
    });
    let endpoint = shared_client_endpoint()?;
    let config = client_config(addr.fingerprint, nook_alpn())?;
    let connecting = (0..n)
        .map(|_| endpoint.connect_with(config.clone(), way_addr, addr.host_name()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HalfOpen {
        _endpoint: endpoint,
        _connecting: connecting,
        forward,
    })
}

struct HalfOpen {
    _endpoint: quinn::Endpoint,
    _connecting: Vec<quinn::Connecting>,
    forward: tokio::task::JoinHandle<()>,
}

impl Drop for HalfOpen {
    fn drop(&mut self) {
        self.forward.abort();
    }
}

/// A two-seat talk holding seven envelopes of 128 KiB for its second member.
struct LargeTalk {
    mailbox: nook_proto::MailboxId,
    bob: TalkIdentity,
    _owner: RawConn,
}

impl LargeTalk {
    async fn make(endpoint: &quinn::Endpoint, addr: &RelayAddr) -> anyhow::Result<LargeTalk> {
        let config = client_config(addr.fingerprint, nook_alpn())?;
        let mut rng = rand::rng();
        let seat = SeatSecret::random(&mut rng);
        let alice = TalkIdentity::generate(&mut rng);
        let bob = TalkIdentity::generate(&mut rng);
        let mut owner = RawConn::connect(endpoint, config.clone(), addr).await?;
        let create = create_request(&alice, &owner.hello.challenge, two_seat_params(&seat)?)?;
        let Response::Created { mailbox, .. } = owner.request(1, create).await? else {
            bail!("not created");
        };
        let mut joiner = RawConn::connect(endpoint, config, addr).await?;
        let token = *seat.join_token();
        let signature = sign_relay_auth(
            &bob,
            AuthOp::Join,
            &joiner.hello.challenge,
            &mailbox,
            &token,
        );
        joiner
            .request(
                1,
                Request::Join(Join {
                    mailbox,
                    token,
                    member: bob.member_key(),
                    signature,
                }),
            )
            .await?;
        joiner.close();
        for id in 2..9 {
            owner
                .request(
                    id,
                    Request::Put(Put {
                        mailbox,
                        kind: EnvelopeKind::Chat,
                        body: vec![0x5a; 128 * 1024],
                    }),
                )
                .await?;
        }
        Ok(LargeTalk {
            mailbox,
            bob,
            _owner: owner,
        })
    }
}

/// `n` connections of bob, each with a 64 KiB receive window, authenticated, then
/// each sending 64 `Fetch` at once and never reading. Returns holding the connections.
async fn fetch_never_read(
    addr: &RelayAddr,
    talk: &LargeTalk,
    n: usize,
) -> anyhow::Result<Vec<(quinn::Endpoint, RawConn)>> {
    let mut config = client_config(addr.fingerprint, nook_alpn())?;
    let mut transport = nook_quic::client_transport();
    transport.stream_receive_window(quinn::VarInt::from_u32(64 * 1024));
    transport.receive_window(quinn::VarInt::from_u32(64 * 1024));
    config.transport_config(Arc::new(transport));
    let mut held = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let endpoint = shared_client_endpoint()?;
        let mut conn = RawConn::connect(&endpoint, config.clone(), addr).await?;
        let signature = sign_relay_auth(
            &talk.bob,
            AuthOp::Auth,
            &conn.hello.challenge,
            &talk.mailbox,
            &[],
        );
        conn.write(&[ClientFrame {
            id: 1,
            request: Request::Auth(Auth {
                mailbox: talk.mailbox,
                member: talk.bob.member_key(),
                signature,
            }),
        }])
        .await?;
        held.push((endpoint, conn));
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the attack took over 5 minutes to mount");
        }
    }
    // Every connection authenticated first, then all of them ask at once: the relay
    // holds the answers of all of them together, which is the worst case.
    let fetches: Vec<ClientFrame> = (2..66)
        .map(|id| ClientFrame {
            id,
            request: Request::Fetch {
                mailbox: talk.mailbox,
                after: Seq(0),
                limit: 256,
            },
        })
        .collect();
    for (_, conn) in &mut held {
        // A write the relay stops taking (it dropped the connection) is the end.
        let _ = conn.write(&fetches).await;
    }
    Ok(held)
}
