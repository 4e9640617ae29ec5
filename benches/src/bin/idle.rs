//! idle: what idle connections and idle mailboxes cost one relay process.
//!
//! Connections: N QUIC connections (one shared client endpoint, so one UDP socket),
//! each greeted with Hello and then left idle (the client's 10 s keep-alive keeps them
//! open). Reported: relay RSS delta / N, handshakes per second, and the relay's CPU
//! while they idle.
//!
//! Mailboxes: M two-seat talks created (Create pipelined, at most 64 per connection:
//! the relay's per-connection mailbox limit), then every connection closed. Reported:
//! relay RSS delta / M, data-folder growth / M, creates per second, the relay's CPU
//! while idle with M mailboxes, and the time and memory of a restart that recovers
//! them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nook_bench::append_jsonl;
use nook_bench::proc::{dir_size, largest_files, process_cpu_s, rss_kib, threads};
use nook_bench::quic::{RawConn, client_config, nook_alpn, shared_client_endpoint};
use nook_bench::relay::{RelayProcess, default_relay_bin};
use nook_bench::stats::{fmt, r1};
use nook_bench::talk::{create_request, two_seat_params};
use nook_crypto::{SeatSecret, TalkIdentity};
use nook_proto::limits::DEFAULT_MAX_MAILBOXES_PER_CONNECTION;
use nook_proto::{ClientFrame, Outcome, Response, ServerFrame};
use serde_json::{Value, json};
use tokio::task::JoinSet;

#[derive(Parser, Debug)]
#[command(
    name = "idle",
    about = "nook relay: memory per idle connection and per idle mailbox"
)]
struct Args {
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// Idle connection counts (a fresh relay for each).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    conns: Vec<usize>,
    /// Idle mailboxes to create (0: skip).
    #[arg(long, default_value_t = 100_000)]
    mailboxes: usize,
    /// Mailboxes created per connection (the relay allows 64 by default).
    #[arg(long, default_value_t = DEFAULT_MAX_MAILBOXES_PER_CONNECTION)]
    per_conn: usize,
    /// Stop creating mailboxes once the relay's data folder exceeds this many GB, and
    /// report how far it got: a guard kept from when the store had one sled tree per
    /// mailbox and disk grew quadratically (BENCHMARKS.md, "History").
    #[arg(long, default_value_t = 20.0)]
    max_disk_gb: f64,
    /// Print progress every this many mailboxes.
    #[arg(long, default_value_t = 10_000)]
    progress_every: u64,
    /// Handshakes / creating connections in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds to let the relay settle before reading its memory.
    #[arg(long, default_value_t = 3)]
    settle: u64,
    /// Seconds over which the relay's idle CPU is measured.
    #[arg(long, default_value_t = 10)]
    idle_cpu_secs: u64,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long)]
    jsonl: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bin = args.relay_bin.clone().unwrap_or_else(default_relay_bin);
    let mut results = Vec::new();
    for &n in args.conns.iter().filter(|n| **n > 0) {
        let rec = idle_connections(&bin, &args, n).await?;
        append_jsonl(args.jsonl.as_deref(), &rec)?;
        results.push(rec);
    }
    if args.mailboxes > 0 {
        let rec = idle_mailboxes(&bin, &args).await?;
        append_jsonl(args.jsonl.as_deref(), &rec)?;
        results.push(rec);
    }
    println!("{}", json!({"bench": "idle", "results": results}));
    Ok(())
}

async fn idle_cpu(pid: u32, secs: u64) -> Option<f64> {
    let c0 = process_cpu_s(pid)?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let c1 = process_cpu_s(pid)?;
    Some((c1 - c0) / t0.elapsed().as_secs_f64())
}

async fn idle_connections(bin: &std::path::Path, args: &Args, n: usize) -> anyhow::Result<Value> {
    let relay = RelayProcess::start(bin)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0 = rss_kib(relay.pid).context("relay RSS")?;
    let endpoint = shared_client_endpoint()?;
    let config = client_config(relay.addr.fingerprint, nook_alpn())?;
    let started = Instant::now();
    let mut conns: Vec<RawConn> = Vec::with_capacity(n);
    let mut failures = 0usize;
    let mut first_error = None;
    let mut set = JoinSet::new();
    let mut launched = 0usize;
    while conns.len() + failures < n {
        while launched < n && set.len() < args.concurrency {
            let (e, c, a) = (endpoint.clone(), config.clone(), relay.addr.clone());
            set.spawn(async move { RawConn::connect(&e, c, &a).await });
            launched += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(c))) => conns.push(c),
            Some(Ok(Err(e))) => {
                failures += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Some(Err(e)) => {
                failures += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            None => break,
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let rss1 = rss_kib(relay.pid).context("relay RSS")?;
    let cpu = idle_cpu(relay.pid, args.idle_cpu_secs).await;
    let rss2 = rss_kib(relay.pid);
    let open = conns
        .iter()
        .filter(|c| c.conn.close_reason().is_none())
        .count();
    let per_conn = (rss1.saturating_sub(rss0)) as f64 / conns.len().max(1) as f64;
    println!(
        "idle connections: {} open of {n} ({failures} failed{}), {:.0} handshakes/s; relay RSS {} -> {} KiB (+{} KiB after {} s idle): {:.1} KiB per connection; relay threads {}; idle relay CPU {} cores",
        open,
        first_error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default(),
        conns.len() as f64 / connect_s,
        rss0,
        rss1,
        rss2.map(|r| r.saturating_sub(rss1)).unwrap_or(0),
        args.idle_cpu_secs,
        per_conn,
        threads(relay.pid).unwrap_or(0),
        fmt(cpu, 3),
    );
    for c in conns {
        c.close();
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
    relay.stop();
    Ok(json!({
        "label": format!("idle conns {n}"),
        "connections": n,
        "open": open,
        "failed": failures,
        "handshakes_per_s": r1(Some(n as f64 / connect_s)),
        "relay_rss_before_kib": rss0,
        "relay_rss_after_kib": rss1,
        "kib_per_connection": r1(Some(per_conn)),
        "idle_relay_cpu_util": cpu,
    }))
}

async fn idle_mailboxes(bin: &std::path::Path, args: &Args) -> anyhow::Result<Value> {
    let target = args.mailboxes;
    let relay = RelayProcess::start(bin)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0 = rss_kib(relay.pid).context("relay RSS")?;
    let (disk0, alloc0) = dir_size(&relay.data_dir());
    let endpoint = shared_client_endpoint()?;
    let config = client_config(relay.addr.fingerprint, nook_alpn())?;
    let next = Arc::new(AtomicU64::new(0));
    let created = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let cpu0 = process_cpu_s(relay.pid);
    let started = Instant::now();
    let per_conn = args.per_conn.max(1);
    let progress_every = args.progress_every.max(1);
    let data_dir = relay.data_dir();
    let last_mark = Arc::new(std::sync::Mutex::new(started));
    let halted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let monitor = {
        let (halted, data_dir) = (halted.clone(), data_dir.clone());
        let cap = (args.max_disk_gb * 1e9) as u64;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let d = data_dir.clone();
                let size = tokio::task::spawn_blocking(move || dir_size(&d).0)
                    .await
                    .unwrap_or(0);
                if size > cap {
                    eprintln!(
                        "  data folder at {} MB: stopping creation (--max-disk-gb)",
                        size / 1_000_000
                    );
                    halted.store(true, Ordering::SeqCst);
                    return;
                }
            }
        })
    };
    let mut set = JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (data_dir, last_mark, halted) = (data_dir.clone(), last_mark.clone(), halted.clone());
        let (e, c, a) = (endpoint.clone(), config.clone(), relay.addr.clone());
        let (next, created, refused) = (next.clone(), created.clone(), refused.clone());
        set.spawn(async move {
            let mut first_refusal: Option<String> = None;
            loop {
                let start = next.fetch_add(per_conn as u64, Ordering::SeqCst) as usize;
                if start >= target || halted.load(Ordering::SeqCst) {
                    break;
                }
                let k = per_conn.min(target - start);
                let mut conn = RawConn::connect(&e, c.clone(), &a).await?;
                // One owner identity per connection (what the relay stores per mailbox
                // is the same: one 32-byte member key), a fresh seat per mailbox.
                let owner = TalkIdentity::generate(&mut rand::rng());
                let mut frames = Vec::with_capacity(k);
                for i in 0..k {
                    let seat = SeatSecret::random(&mut rand::rng());
                    let req =
                        create_request(&owner, &conn.hello.challenge, two_seat_params(&seat)?)?;
                    frames.push(ClientFrame {
                        id: i as u64 + 1,
                        request: req,
                    });
                }
                conn.write(&frames).await?;
                let mut answered = 0;
                while answered < k {
                    match conn.read().await? {
                        ServerFrame::Response { result, .. } => {
                            answered += 1;
                            match result {
                                Outcome::Ok(Response::Created { .. }) => {
                                    let total = created.fetch_add(1, Ordering::SeqCst) + 1;
                                    if total % progress_every == 0 {
                                        let now = Instant::now();
                                        let since = last_mark
                                            .lock()
                                            .map(|mut m| {
                                                let d = now.duration_since(*m);
                                                *m = now;
                                                d
                                            })
                                            .unwrap_or_default();
                                        eprintln!(
                                            "  {total} mailboxes after {:.1} s ({:.0}/s lately), data folder {} MB",
                                            now.duration_since(started).as_secs_f64(),
                                            progress_every as f64 / since.as_secs_f64().max(1e-9),
                                            dir_size(&data_dir).0 / 1_000_000
                                        );
                                    }
                                }
                                Outcome::Err(e) => {
                                    refused.fetch_add(1, Ordering::SeqCst);
                                    first_refusal.get_or_insert_with(|| e.to_string());
                                }
                                Outcome::Ok(other) => anyhow::bail!("unexpected answer: {other:?}"),
                            }
                        }
                        ServerFrame::Push(_) => {}
                    }
                }
                conn.close();
            }
            Ok::<Option<String>, anyhow::Error>(first_refusal)
        });
    }
    let mut first_refusal = None;
    while let Some(r) = set.join_next().await {
        if let Some(e) = r?? {
            first_refusal.get_or_insert(e);
        }
    }
    monitor.abort();
    let halted = halted.load(Ordering::SeqCst);
    let create_s = started.elapsed().as_secs_f64();
    let cpu1 = process_cpu_s(relay.pid);
    let _ = tokio::time::timeout(Duration::from_secs(5), endpoint.wait_idle()).await;
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let made = created.load(Ordering::SeqCst);
    let rss1 = rss_kib(relay.pid).context("relay RSS")?;
    let (disk1, alloc1) = dir_size(&relay.data_dir());
    let cpu = idle_cpu(relay.pid, args.idle_cpu_secs).await;
    let create_cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let per = |d: u64| d as f64 / made.max(1) as f64;
    let rss_per = per(rss1.saturating_sub(rss0)) * 1024.0;
    let disk_per = per(disk1.saturating_sub(disk0));
    let alloc_per = per(alloc1.saturating_sub(alloc0));
    println!(
        "idle mailboxes: {made} created of {target}{} ({} refused{}) in {create_s:.1} s = {:.0} creates/s, relay CPU {} s; relay RSS {rss0} -> {rss1} KiB = {rss_per:.0} B per mailbox; data folder {disk0} -> {disk1} B = {disk_per:.0} B per mailbox ({alloc_per:.0} B allocated); idle relay CPU with them {} cores",
        if halted {
            ", stopped at the disk cap"
        } else {
            ""
        },
        refused.load(Ordering::SeqCst),
        first_refusal
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default(),
        made as f64 / create_s,
        fmt(create_cpu, 1),
        fmt(cpu, 3),
    );
    let (files, nfiles) = largest_files(&relay.data_dir(), 6);
    println!(
        "  data folder: {nfiles} files; largest: {}",
        files
            .iter()
            .map(|(p, b)| format!("{p} {b} B"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Restart on the same store: recovery time and the memory of a relay that loaded them.
    let scratch = relay.stop_keep()?;
    let relay = RelayProcess::start_in(bin, scratch)?;
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let rss_restart = rss_kib(relay.pid);
    let restart_cpu = idle_cpu(relay.pid, args.idle_cpu_secs).await;
    println!(
        "restart with {made} mailboxes: address printed after {:.2} s; relay RSS {} KiB; idle relay CPU {} cores",
        relay.startup.as_secs_f64(),
        rss_restart
            .map(|r| r.to_string())
            .unwrap_or_else(|| "-".into()),
        fmt(restart_cpu, 3),
    );
    let restart_s = relay.startup.as_secs_f64();
    relay.stop();
    Ok(json!({
        "label": format!("idle mailboxes {target}"),
        "mailboxes": made,
        "refused": refused.load(Ordering::SeqCst),
        "stopped_at_disk_cap": halted,
        "creates_per_s": r1(Some(made as f64 / create_s)),
        "create_relay_cpu_s": create_cpu,
        "relay_rss_before_kib": rss0,
        "relay_rss_after_kib": rss1,
        "bytes_rss_per_mailbox": r1(Some(rss_per)),
        "disk_before_bytes": disk0,
        "disk_after_bytes": disk1,
        "bytes_disk_per_mailbox": r1(Some(disk_per)),
        "bytes_allocated_per_mailbox": r1(Some(alloc_per)),
        "idle_relay_cpu_util": cpu,
        "restart_s": r1(Some(restart_s)),
        "largest_files": files,
        "files": nfiles,
        "restart_rss_kib": rss_restart,
        "restart_idle_relay_cpu_util": restart_cpu,
    }))
}
