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

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use nook_bench::relay::{RelayProcess, sibling_bin};
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

    // Room on the board for every listing (the default, 4,096, already holds 1,000).
    let per_board = (args.listings + 16).max(4096).to_string();
    let relay = RelayProcess::start_with(
        &sibling_bin("nook-relay")?,
        &["--max-listings-per-board".to_string(), per_board],
    )?;
    let addr = relay.addr.to_string();
    let owner_home = tempfile::tempdir()?;
    let owner = Client::new(owner_home.path())?;
    let setup = Instant::now();
    let mut talks = Vec::new();
    for n in 0..args.listings {
        let created = owner
            .create(
                &addr,
                TalkOptions {
                    seats: 2,
                    quorum: 2,
                    ttl_secs: 3600,
                    close: ClosePolicy::Owner,
                    alias: format!("owner-{n}"),
                    schedule: None,
                    pattern: Default::default(),
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
        let found = seeker.browse(&addr, PHRASE, None).await?;
        lib.push(t.elapsed());
        anyhow::ensure!(found.len() == args.listings, "found {}", found.len());

        let t = Instant::now();
        let out = Command::new(sibling_bin("nook")?)
            .arg("--home")
            .arg(home.path())
            .args(["--json", "browse", "--relay", &addr, "--board", PHRASE])
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
    let listings = seeker.browse(&addr, PHRASE, None).await?;
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
