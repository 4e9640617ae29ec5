//! The cost of one forwarding hop (private routing, protocol-spec.md §18): latency and
//! throughput to the same relay, directly and through a forwarder, in the same run.
//!
//! Two release relays on 127.0.0.1 (the destination and the forwarder). Each run
//! measures both ways, alternating which goes first:
//!
//! - **latency**: sequential `Ping` round trips on one connection (`--pings`), p50 and
//!   p99: direct it is member → destination → member; routed the same frames cross the
//!   forwarder twice and the inner TLS channel;
//! - **throughput**: `--puts` envelopes of `--size` bytes (a padding bucket) put into
//!   an open two-seat talk with `--window` requests in flight, timed from the first put
//!   written to the last `Stored` read; MiB/s of envelope bodies.
//!
//! Medians over `--runs` runs are printed as a table and as JSON lines.
//!
//! usage: cargo build --release -p nook-relay -p nook-bench &&
//!        target/release/routebench [--runs 5] [--pings 2000] [--puts 1000] [--size 16384]

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use nook_bench::relay::{RelayProcess, default_relay_bin};
use nook_bench::stats::{median, pct_us, r1};
use nook_bench::talk::{create_request, two_seat_params};
use nook_client::RelayConnection;
use nook_crypto::auth::{AuthOp, sign_relay_auth};
use nook_crypto::{RelayAddr, SeatSecret, TalkIdentity};
use nook_proto::{EnvelopeKind, Join, MailboxId, Put, Request, Response};
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    /// Runs; the medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Sequential pings per way per run.
    #[arg(long, default_value_t = 2000)]
    pings: usize,
    /// Envelopes put per way per run.
    #[arg(long, default_value_t = 1000)]
    puts: usize,
    /// Bytes per envelope body (a padding bucket: 512 … 131072).
    #[arg(long, default_value_t = 16384)]
    size: usize,
    /// Puts in flight at once.
    #[arg(long, default_value_t = 32)]
    window: usize,
}

const LIMIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Direct,
    Routed,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Direct => "direct",
            Way::Routed => "via",
        }
    }
}

async fn connect(way: Way, dest: &RelayAddr, fwd: &RelayAddr) -> Result<RelayConnection> {
    Ok(match way {
        Way::Direct => RelayConnection::connect_within(dest, LIMIT).await?,
        Way::Routed => RelayConnection::connect_via(dest, fwd, LIMIT).await?,
    })
}

/// Sequential ping round trips, in ns, sorted.
async fn pings(conn: &RelayConnection, n: usize) -> Result<Vec<u64>> {
    let mut out = Vec::with_capacity(n);
    for nonce in 0..n as u64 {
        let t = Instant::now();
        match conn.request(Request::Ping { nonce }).await? {
            Response::Pong { nonce: got } if got == nonce => {}
            other => bail!("unexpected answer to Ping: {other:?}"),
        }
        out.push(t.elapsed().as_nanos() as u64);
    }
    out.sort_unstable();
    Ok(out)
}

/// An open two-seat talk: the owner's connection (which puts) and its mailbox; the
/// joiner's connection is closed once it has joined.
async fn open_talk(
    way: Way,
    dest: &RelayAddr,
    fwd: &RelayAddr,
) -> Result<(RelayConnection, MailboxId)> {
    let owner_conn = connect(way, dest, fwd).await?;
    let seat = SeatSecret::random(&mut rand::rng());
    let owner = TalkIdentity::generate(&mut rand::rng());
    let create = create_request(
        &owner,
        &owner_conn.hello().challenge,
        two_seat_params(&seat)?,
    )?;
    let mailbox = match owner_conn.request(create).await? {
        Response::Created { mailbox, .. } => mailbox,
        other => bail!("unexpected answer to Create: {other:?}"),
    };
    let joiner_conn = connect(way, dest, fwd).await?;
    let joiner = TalkIdentity::generate(&mut rand::rng());
    let token = *seat.join_token();
    let signature = sign_relay_auth(
        &joiner,
        AuthOp::Join,
        &joiner_conn.hello().challenge,
        &mailbox,
        &token,
    );
    match joiner_conn
        .request(Request::Join(Join {
            mailbox,
            token,
            member: joiner.member_key(),
            signature,
        }))
        .await?
    {
        Response::Joined { .. } => {}
        other => bail!("unexpected answer to Join: {other:?}"),
    }
    joiner_conn.close().await;
    Ok((owner_conn, mailbox))
}

/// MiB/s of envelope bodies put with `window` in flight.
async fn throughput(
    conn: &RelayConnection,
    mailbox: MailboxId,
    puts: usize,
    size: usize,
    window: usize,
) -> Result<f64> {
    let body = vec![0x5au8; size];
    let started = Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    // Ids far above those `request` gives out on the same connection.
    for id in (1_000_000u64..).take(puts) {
        if in_flight.len() >= window {
            wait_stored(in_flight.pop_front()).await?;
        }
        let frame = nook_proto::ClientFrame {
            id,
            request: Request::Put(Put {
                mailbox,
                kind: EnvelopeKind::Chat,
                body: body.clone(),
            }),
        };
        in_flight.push_back(conn.send_frame(frame).await?);
    }
    while let Some(rx) = in_flight.pop_front() {
        wait_stored(Some(rx)).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok((puts * size) as f64 / (1024.0 * 1024.0) / secs)
}

async fn wait_stored(
    rx: Option<tokio::sync::oneshot::Receiver<nook_proto::Outcome>>,
) -> Result<()> {
    match rx {
        Some(rx) => match rx.await? {
            nook_proto::Outcome::Ok(Response::Stored { .. }) => Ok(()),
            other => bail!("unexpected answer to Put: {other:?}"),
        },
        None => Ok(()),
    }
}

/// One way's figures of one run: ping p50 and p99 (µs), put throughput (MiB/s).
#[derive(Clone, Copy)]
struct Row {
    way: Way,
    p50: Option<f64>,
    p99: Option<f64>,
    mib_s: Option<f64>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let bin = default_relay_bin();
    let dest = RelayProcess::start(&bin)?;
    let fwd = RelayProcess::start(&bin)?;
    let mut rows: Vec<Row> = Vec::new();
    for run in 0..args.runs {
        let ways = if run % 2 == 0 {
            [Way::Direct, Way::Routed]
        } else {
            [Way::Routed, Way::Direct]
        };
        for way in ways {
            let conn = connect(way, &dest.addr, &fwd.addr).await?;
            // Warm-up: the first requests pay for lazy set-up on both sides.
            pings(&conn, 50).await?;
            let lat = pings(&conn, args.pings).await?;
            conn.close().await;
            let (owner, mailbox) = open_talk(way, &dest.addr, &fwd.addr).await?;
            let mib_s = throughput(&owner, mailbox, args.puts, args.size, args.window).await?;
            owner.close().await;
            let (p50, p99) = (pct_us(&lat, 50.0), pct_us(&lat, 99.0));
            let line = json!({
                "bench": "routebench", "run": run, "way": way.name(),
                "ping_p50_us": r1(p50), "ping_p99_us": r1(p99),
                "put_mib_s": r1(Some(mib_s)), "pings": args.pings, "puts": args.puts,
                "size": args.size, "window": args.window,
            });
            println!("{line}");
            rows.push(Row {
                way,
                p50,
                p99,
                mib_s: Some(mib_s),
            });
        }
    }
    println!(
        "\nmedians over {} runs ({} pings, {} puts of {} B, window {}):",
        args.runs, args.pings, args.puts, args.size, args.window
    );
    println!(
        "{:<8} {:>12} {:>12} {:>12}",
        "way", "p50 µs", "p99 µs", "put MiB/s"
    );
    let mut med = Vec::new();
    for way in [Way::Direct, Way::Routed] {
        let pick = |f: fn(&Row) -> Option<f64>| {
            median(
                &rows
                    .iter()
                    .filter(|r| r.way == way)
                    .map(f)
                    .collect::<Vec<_>>(),
            )
        };
        let m = (pick(|r| r.p50), pick(|r| r.p99), pick(|r| r.mib_s));
        println!(
            "{:<8} {:>12.1} {:>12.1} {:>12.1}",
            way.name(),
            m.0.unwrap_or(f64::NAN),
            m.1.unwrap_or(f64::NAN),
            m.2.unwrap_or(f64::NAN)
        );
        med.push(m);
    }
    if let [
        (Some(d50), Some(d99), Some(dt)),
        (Some(v50), Some(v99), Some(vt)),
    ] = med[..]
    {
        println!(
            "one hop adds {:.1} µs at p50, {:.1} µs at p99; throughput {:.0}% of direct",
            v50 - d50,
            v99 - d99,
            vt / dt * 100.0
        );
    }
    dest.stop();
    fwd.stop();
    Ok(())
}
