//! Boards (protocol-spec.md §17): what a phrase derivation costs, how long browsing a
//! board of `--listings` listings takes, and the latency from ask to seat taken.
//!
//! Against the release `nook-relay` on 127.0.0.1 (started with create rates raised so
//! one process may create the talks). Setup: one owner home creates `--listings`
//! two-seat talks and posts each on one board (one Argon2id derivation per post, so the
//! setup takes a while). Then, each reported as the median of `--runs`:
//!
//! - **derive**: one `Board::derive` (Argon2id, 64 MiB, t = 3, then HKDF), in-process;
//! - **browse (library)**: `Client::browse` of the whole board from a fresh seeker home
//!   (one derivation, then `Browse` pages of 256, each listing opened);
//! - **browse (CLI)**: `nook --json browse` of the board, process start-up included;
//! - **ask → seat**: a seeker asks on one listing (`Client::ask`); the owner polls
//!   `requests` until it is there, admits it; the seeker polls `settle_asks` until it has
//!   joined. Each round uses another listing (its talk is full afterwards).
//!
//! usage: cargo build --release -p nook-relay -p nook-cli -p nook-bench &&
//!        target/release/boardbench [--listings 1000] [--runs 5]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use nook_client::board::PostOptions;
use nook_client::{AskPhase, Client, TalkOptions};
use nook_crypto::board::Board;
use nook_proto::ClosePolicy;

const PHRASE: &str = "bench board phrase";

#[derive(Parser, Debug)]
struct Args {
    /// Listings on the board.
    #[arg(long, default_value_t = 1000)]
    listings: usize,
    /// Runs of each measurement; the medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

struct RelayProc {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().context("exe dir")?.join(name);
    if !p.exists() {
        bail!(
            "{} missing: cargo build --release -p nook-relay -p nook-cli",
            p.display()
        );
    }
    Ok(p)
}

fn start_relay(listings: usize) -> Result<RelayProc> {
    let dir = tempfile::tempdir()?;
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let rate = format!("{}/1m", listings * 2 + 100);
    let per_board = (listings + 16).max(4096).to_string();
    let mut child = Command::new(bin("nook-relay")?)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.path().join("relay"))
        .args(["--create-rate", &rate, "--create-rate-per-address", &rate])
        .args(["--max-listings-per-board", &per_board])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    Ok(RelayProc {
        child,
        addr: line.trim().to_string(),
        _dir: dir,
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Polls `f` every millisecond until it yields, for at most 30 s.
async fn poll<T, F, Fut>(mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(t) = f().await? {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!("timed out");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.runs >= 1 && args.listings > args.runs, "bad sizes");

    let mut derive = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        Board::derive(PHRASE, &nook_crypto::Fingerprint([7; 32]))?;
        derive.push(t.elapsed());
    }
    println!(
        "derive (Argon2id 64 MiB, t=3, p=1): median {}",
        ms(median(derive))
    );

    let relay = start_relay(args.listings)?;
    let owner_home = tempfile::tempdir()?;
    let owner = Client::new(owner_home.path())?;
    let setup = Instant::now();
    let mut talks = Vec::new();
    for n in 0..args.listings {
        let created = owner
            .create(
                &relay.addr,
                TalkOptions {
                    seats: 2,
                    quorum: 2,
                    ttl_secs: 3600,
                    close: ClosePolicy::Owner,
                    alias: format!("owner-{n}"),
                    schedule: None,
                },
            )
            .await?;
        let opts = PostOptions {
            title: format!("talk number {n}"),
            about: "a benchmark listing with a short text about it".into(),
            tags: vec!["bench".into()],
            until: None,
            keep_open: false,
        };
        owner
            .post(&created.talk, &[PHRASE.to_string()], &opts)
            .await?;
        talks.push(created.talk);
    }
    println!(
        "setup: {} talks created and posted in {:.1} s",
        args.listings,
        setup.elapsed().as_secs_f64()
    );

    let mut lib = Vec::new();
    let mut cli = Vec::new();
    for _ in 0..args.runs {
        let home = tempfile::tempdir()?;
        let seeker = Client::new(home.path())?;
        let t = Instant::now();
        let found = seeker.browse(&relay.addr, PHRASE, None).await?;
        lib.push(t.elapsed());
        anyhow::ensure!(found.len() == args.listings, "found {}", found.len());

        let t = Instant::now();
        let out = Command::new(bin("nook")?)
            .arg("--home")
            .arg(home.path())
            .args([
                "--json",
                "browse",
                "--relay",
                &relay.addr,
                "--board",
                PHRASE,
            ])
            .stdin(Stdio::null())
            .output()?;
        cli.push(t.elapsed());
        let lines = String::from_utf8_lossy(&out.stdout).lines().count();
        anyhow::ensure!(out.status.success() && lines == args.listings, "cli browse");
    }
    println!(
        "browse {} listings: library median {}, CLI median {}",
        args.listings,
        ms(median(lib)),
        ms(median(cli))
    );

    let home = tempfile::tempdir()?;
    let seeker = Client::new(home.path())?;
    let listings = seeker.browse(&relay.addr, PHRASE, None).await?;
    let (mut total, mut seen, mut taken) = (Vec::new(), Vec::new(), Vec::new());
    for (run, l) in listings.iter().take(args.runs).enumerate() {
        let n: usize = l
            .title
            .strip_prefix("talk number ")
            .and_then(|n| n.parse().ok())
            .context("a listing not made here")?;
        let talk = talks.get(n).context("listing's talk")?.clone();
        let t = Instant::now();
        let ask = seeker
            .ask(&l.handle, "", Some(&format!("seeker-{run}")))
            .await?;
        let request = poll(|| async {
            let r = owner.requests(&talk).await?;
            Ok(r.items.into_iter().find(|i| i.request == ask.request))
        })
        .await?;
        let t_seen = t.elapsed();
        owner.answer(&talk, &request.request, true).await?;
        let t_admitted = t.elapsed();
        poll(|| async {
            let settled = seeker.settle_asks().await?;
            Ok(settled
                .into_iter()
                .find(|s| matches!(s.phase, AskPhase::Joined { .. })))
        })
        .await?;
        let t_total = t.elapsed();
        total.push(t_total);
        seen.push(t_seen);
        taken.push(t_total - t_admitted);
    }
    println!(
        "ask -> seat taken: median {} (ask -> owner sees it {}, admit -> seat taken {})",
        ms(median(total)),
        ms(median(seen)),
        ms(median(taken))
    );
    Ok(())
}
