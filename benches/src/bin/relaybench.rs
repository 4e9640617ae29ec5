//! relaybench: the relay end to end and durable, over real QUIC on loopback.
//!
//! The relay runs as its own process (`nook-relay`, release build), restarted on a
//! fresh data folder for every measurement, so its CPU seconds come from
//! `/proc/<pid>/stat`. Per talk (mailbox) there is one sender and one receiver, each
//! on its own connection (nook-client's `RelayConnection`):
//!
//! sender seals a plaintext (seq, send time, filler) with the talk's envelope key →
//! `Put` (pipelined) → relay stores it, fdatasyncs (group commit), answers `Stored`
//! and pushes it → receiver opens it, records the one-way time, acks cumulatively
//! (every `--ack-every` envelopes or when no push is waiting) → relay deletes.
//!
//! A sender never has more than `--window` envelopes outstanding end to end (sent, not
//! yet received). Latency mode: one talk, one in flight, 2,100 envelopes, the first
//! 100 not counted. Output: a text table, one JSON summary line, and with `--jsonl`
//! one JSON line per run in the peers' format.

// The same allocator as the relay, so the load generator is not slowed by glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use nook_bench::proc::{CpuSnapshot, CpuUse};
use nook_bench::relay::{RelayProcess, default_relay_bin};
use nook_bench::stats::{pct_us, r1};
use nook_bench::talk::{Pair, open_pair, parse_header, plaintext};
use nook_bench::{append_jsonl, mono_ns, quiet_gate, report};
use nook_client::RelayConnection;
use nook_crypto::{EnvelopeKey, Purpose};
use nook_proto::{
    ClientFrame, EnvelopeKind, ErrorCode, ErrorFrame, MailboxId, Outcome, Push, Put, Request,
    Response, Seq,
};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

#[derive(Parser, Debug)]
#[command(
    name = "relaybench",
    about = "nook relay: durable end-to-end latency and throughput"
)]
struct Args {
    /// The relay binary (default: nook-relay next to this binary).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// Repetitions of every measurement (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Talk counts of the throughput runs.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    talks: Vec<usize>,
    /// Seconds of sending per throughput run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Most envelopes outstanding end to end per talk in throughput runs.
    #[arg(long, default_value_t = 128)]
    window: usize,
    /// Envelope body bytes, as the relay stores and forwards them (a padding bucket); the
    /// plaintext fills the bucket (this size less 41 bytes of nonce, tag and 0x80 marker).
    #[arg(long, default_value_t = 1024)]
    envelope: usize,
    /// Talk counts of the latency runs (one envelope in flight per talk); 1 mirrors the
    /// peers' latency run, more talks give "moderate load".
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    lat_talks: Vec<usize>,
    /// Paced latency runs: total envelopes/s spread evenly over `--paced-talks` talks
    /// (open loop, at most one in flight per talk), so latency is measured at a known
    /// moderate load rather than at the closed loop's saturation. Empty: none.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000")]
    paced_rates: Vec<u64>,
    /// Talks of the paced latency runs.
    #[arg(long, default_value_t = 10)]
    paced_talks: usize,
    /// Measured envelopes per talk of the latency runs (after the warm-up).
    #[arg(long, default_value_t = 2000)]
    lat_count: u64,
    /// Envelopes of the latency run not counted.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// The receiver acks after this many envelopes (and whenever no push is waiting).
    #[arg(long, default_value_t = 32)]
    ack_every: u64,
    /// Most envelopes per talk in a throughput run.
    #[arg(long, default_value_t = 5_000_000)]
    count: u64,
    /// Skip the latency runs.
    #[arg(long)]
    no_latency: bool,
    /// Skip the throughput runs.
    #[arg(long)]
    no_throughput: bool,
    /// Async worker threads of this load generator.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Append one JSON line per run here.
    #[arg(long)]
    jsonl: Option<PathBuf>,
    /// If no envelope arrives for this many seconds during a run, dump the relay's
    /// thread stacks (gdb) and per-thread kernel state to a file (0: never).
    #[arg(long, default_value_t = 15)]
    stall_secs: u64,
    /// Where stall dumps go (default: the system temp folder).
    #[arg(long)]
    stall_dir: Option<PathBuf>,
    /// Before each run, wait until other processes use at most this many cores...
    #[arg(long, default_value_t = 0.25)]
    quiet_cores: f64,
    /// ...but no longer than this many seconds (0: do not wait).
    #[arg(long, default_value_t = 120)]
    quiet_max_wait: u64,
}

/// First request id this benchmark uses on a connection (the client library numbers
/// its own requests from 1; pipelined frames must not collide with them).
const OWN_IDS: u64 = 1 << 40;
/// Request ids of resent envelopes.
const RESEND_IDS: u64 = 1 << 50;

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    stored: AtomicU64,
    received: AtomicU64,
    refused: AtomicU64,
    rate_limited: AtomicU64,
    acks: AtomicU64,
    ack_errors: AtomicU64,
}

struct Workload {
    stall_secs: u64,
    stall_dir: PathBuf,
    label: String,
    talks: usize,
    window: usize,
    count: u64,
    warmup: u64,
    duration: Duration,
    size: usize,
    ack_every: u64,
    /// Open-loop pacing: one envelope per talk every this long.
    pace: Option<Duration>,
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
    let mut records: Vec<Value> = Vec::new();
    let body_len = args.envelope;
    if !nook_proto::limits::PADDING_BUCKETS.contains(&body_len) {
        bail!(
            "--envelope {body_len} is not a padding bucket ({:?})",
            nook_proto::limits::PADDING_BUCKETS
        );
    }
    let size = body_len - nook_crypto::aead::ENVELOPE_OVERHEAD - 1;
    println!(
        "relaybench: relay {} | plaintext {} B sealed to a {} B envelope body | runs {} | window {} | ack every {}",
        bin.display(),
        size,
        body_len,
        args.runs,
        args.window,
        args.ack_every
    );
    let stall_dir = args.stall_dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut workloads = Vec::new();
    for &talks in args.lat_talks.iter().filter(|_| !args.no_latency) {
        workloads.push(Workload {
            stall_secs: args.stall_secs,
            stall_dir: stall_dir.clone(),
            label: format!("lat nook {talks} talks"),
            talks,
            window: 1,
            count: args.lat_count + args.warmup,
            warmup: args.warmup,
            duration: Duration::from_secs(60),
            size,
            ack_every: args.ack_every,
            pace: None,
        });
    }
    for &rate in args
        .paced_rates
        .iter()
        .filter(|r| **r > 0 && !args.no_latency)
    {
        let talks = args.paced_talks.max(1);
        workloads.push(Workload {
            stall_secs: args.stall_secs,
            stall_dir: stall_dir.clone(),
            label: format!("paced nook {talks} talks {rate}/s"),
            talks,
            window: 1,
            count: args.lat_count + args.warmup,
            warmup: args.warmup,
            duration: Duration::from_secs(120),
            size,
            ack_every: args.ack_every,
            pace: Some(Duration::from_secs_f64(talks as f64 / rate as f64)),
        });
    }
    if !args.no_throughput {
        for &talks in &args.talks {
            workloads.push(Workload {
                stall_secs: args.stall_secs,
                stall_dir: stall_dir.clone(),
                label: format!("tput nook {talks} talks"),
                talks,
                window: args.window,
                count: args.count,
                warmup: 0,
                duration: Duration::from_secs_f64(args.duration),
                size,
                ack_every: args.ack_every,
                pace: None,
            });
        }
    }
    for r in 1..=args.runs {
        for w in &workloads {
            let relay = RelayProcess::start(&bin)?;
            let busy_before = quiet_gate(args.quiet_cores, args.quiet_max_wait).await;
            let wall = Instant::now();
            let result = run_workload(&relay, w).await;
            let wall_s = wall.elapsed().as_secs_f64();
            let relay_log = relay.log();
            relay.stop();
            let mut rec = match result {
                Ok(rec) => rec,
                Err(e) => {
                    eprintln!(
                        "{} run {r} failed after {wall_s:.1} s: {e:#}\nrelay log:\n{relay_log}",
                        w.label
                    );
                    continue;
                }
            };
            if let Some(o) = rec.as_object_mut() {
                o.insert("run".into(), json!(r));
                o.insert("body_size".into(), json!(body_len));
                o.insert("busy_cores_before".into(), json!(busy_before));
                o.insert("wall_s".into(), json!(wall_s));
            }
            print_run(r, &rec);
            append_jsonl(args.jsonl.as_deref(), &rec)?;
            records.push(rec);
        }
    }
    let med = report::medians(&records);
    report::print_table("nook relay, durable, end to end", &med);
    let summary = json!({
        "bench": "relaybench",
        "size": size,
        "body_size": body_len,
        "window": args.window,
        "ack_every": args.ack_every,
        "runs": args.runs,
        "medians": med,
    });
    println!("{summary}");
    Ok(())
}

fn print_run(r: usize, rec: &Value) {
    let g = |k: &str| rec.get(k).and_then(Value::as_f64);
    println!(
        "run {r} {:<22} {:>9} msg/s  p50 {:>8} us  p99 {:>8} us  relay cpu {:>5}  {:>9} msg/relay-cpu-s  foreign {:>5}  lost {} rate-limited {} left {}",
        rec.get("label").and_then(Value::as_str).unwrap_or("?"),
        nook_bench::stats::fmt(g("msgs_per_s"), 0),
        nook_bench::stats::fmt(g("lat_p50_us"), 1),
        nook_bench::stats::fmt(g("lat_p99_us"), 1),
        nook_bench::stats::fmt(g("relay_cpu_util"), 2),
        nook_bench::stats::fmt(g("msgs_per_relay_cpu_s"), 0),
        nook_bench::stats::fmt(g("foreign_cpu_util"), 2),
        nook_bench::stats::fmt(g("lost"), 0),
        nook_bench::stats::fmt(g("rate_limited"), 0),
        nook_bench::stats::fmt(g("left_on_relay"), 0),
    );
}

struct PairTasks {
    counters: Arc<Counters>,
    sender: tokio::task::JoinHandle<anyhow::Result<()>>,
    receiver: tokio::task::JoinHandle<anyhow::Result<Received>>,
}

struct Received {
    lats: Vec<u64>,
    left_on_relay: usize,
}

async fn run_workload(relay: &RelayProcess, w: &Workload) -> anyhow::Result<Value> {
    // Set up every talk first (create, join, subscribe), a few at a time.
    let mut pairs: Vec<Pair> = Vec::with_capacity(w.talks);
    while pairs.len() < w.talks {
        let batch = (w.talks - pairs.len()).min(16);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..batch {
            let addr = relay.addr.clone();
            set.spawn(async move { open_pair(&addr).await });
        }
        while let Some(p) = set.join_next().await {
            pairs.push(p??);
        }
    }
    let last_rx = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let cpu0 = CpuSnapshot::take(Some(relay.pid));
    let t0 = mono_ns();
    let deadline = Instant::now() + w.duration;
    let mut tasks = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let Pair {
            mailbox,
            sender,
            receiver,
            pushes,
            key,
        } = pair;
        let counters = Arc::new(Counters::default());
        let window = Arc::new(Semaphore::new(w.window));
        let receiver = tokio::spawn(receive(
            Arc::new(receiver),
            pushes,
            mailbox,
            key.clone(),
            window.clone(),
            counters.clone(),
            last_rx.clone(),
            w.warmup,
            w.ack_every,
            stop_rx.clone(),
        ));
        let sender = tokio::spawn(send(
            Arc::new(sender),
            mailbox,
            key,
            window,
            counters.clone(),
            w.count,
            w.size,
            deadline,
            w.pace,
        ));
        tasks.push(PairTasks {
            counters,
            sender,
            receiver,
        });
    }
    let watchdog = (w.stall_secs > 0).then(|| {
        let counters: Vec<Arc<Counters>> = tasks.iter().map(|t| t.counters.clone()).collect();
        tokio::spawn(watch_for_stall(
            counters,
            relay.pid,
            Duration::from_secs(w.stall_secs),
            w.stall_dir.clone(),
            w.label.clone(),
        ))
    });
    let mut errors = Vec::new();
    for t in &mut tasks {
        match (&mut t.sender).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("sender: {e:#}")),
            Err(e) => errors.push(format!("sender task: {e}")),
        }
    }
    // Drain: wait (bounded) until every stored envelope has reached its receiver.
    let drain_end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < drain_end {
        let pending = tasks.iter().any(|t| {
            t.counters.received.load(Ordering::SeqCst) < t.counters.stored.load(Ordering::SeqCst)
        });
        if !pending {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu1 = CpuSnapshot::take(Some(relay.pid));
    if let Some(w) = &watchdog {
        w.abort();
    }
    let _ = stop_tx.send(true);
    let mut lats: Vec<u64> = Vec::new();
    let mut left = 0usize;
    for t in tasks.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(20), &mut t.receiver).await {
            Ok(Ok(Ok(r))) => {
                lats.extend(r.lats);
                left += r.left_on_relay;
            }
            Ok(Ok(Err(e))) => errors.push(format!("receiver: {e:#}")),
            Ok(Err(e)) => errors.push(format!("receiver task: {e}")),
            Err(_) => errors.push("receiver did not finish".into()),
        }
    }
    if let Some(e) = errors.first() {
        bail!(
            "{} of {} tasks failed, first: {e}",
            errors.len(),
            2 * tasks.len()
        );
    }
    lats.sort_unstable();
    let sum = |f: fn(&Counters) -> &AtomicU64| -> u64 {
        tasks
            .iter()
            .map(|t| f(&t.counters).load(Ordering::SeqCst))
            .sum()
    };
    let sent = sum(|c| &c.sent);
    let stored = sum(|c| &c.stored);
    let received = sum(|c| &c.received);
    let refused = sum(|c| &c.refused);
    let rate_limited = sum(|c| &c.rate_limited);
    let acks = sum(|c| &c.acks);
    let ack_errors = sum(|c| &c.ack_errors);
    let lr = last_rx.load(Ordering::SeqCst);
    let elapsed = if lr > t0 {
        (lr - t0) as f64 / 1e9
    } else {
        1e-9
    };
    let cpu = CpuUse::between(&cpu0, &cpu1);
    let per = |x: Option<f64>| x.map(|v| v / elapsed);
    Ok(json!({
        "driver": "nook-bench/relaybench",
        "label": w.label,
        "pairs": w.talks,
        "size": w.size,
        "window": w.window,
        "sent": sent,
        "stored": stored,
        "received": received,
        "lost": sent.saturating_sub(received),
        "refused": refused,
        "rate_limited": rate_limited,
        "acks": acks,
        "ack_errors": ack_errors,
        "left_on_relay": left,
        "elapsed_s": elapsed,
        "msgs_per_s": received as f64 / elapsed,
        "lat_n": lats.len(),
        "lat_p50_us": r1(pct_us(&lats, 50.0)),
        "lat_p99_us": r1(pct_us(&lats, 99.0)),
        "lat_max_us": r1(pct_us(&lats, 100.0)),
        "relay_cpu_s": cpu.server_s,
        "relay_cpu_util": per(cpu.server_s),
        "msgs_per_relay_cpu_s": cpu.server_s.filter(|s| *s > 0.0).map(|s| received as f64 / s),
        "client_cpu_util": per(cpu.client_s),
        "foreign_cpu_util": per(cpu.foreign_s),
    }))
}

#[allow(clippy::too_many_arguments)]
async fn send(
    conn: Arc<RelayConnection>,
    mailbox: MailboxId,
    key: EnvelopeKey,
    window: Arc<Semaphore>,
    counters: Arc<Counters>,
    count: u64,
    size: usize,
    deadline: Instant,
    pace: Option<Duration>,
) -> anyhow::Result<()> {
    let mut ticks = pace.map(|p| {
        // Talks start spread over one period, not in lockstep.
        let offset = p.mul_f64(rand::random::<f64>());
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, p);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let checker = tokio::spawn(check_stored(
        conn.clone(),
        rx,
        counters.clone(),
        window.clone(),
        (mailbox, key.clone(), size),
    ));
    let mut id = OWN_IDS;
    let mut n = 0u64;
    while n < count {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if let Some(t) = ticks.as_mut() {
            t.tick().await;
        }
        match tokio::time::timeout(deadline - now, window.acquire()).await {
            Err(_) => break,
            Ok(Err(_)) => bail!("window closed"),
            Ok(Ok(permit)) => permit.forget(),
        }
        let answer = conn
            .send_frame(ClientFrame {
                id,
                request: Request::Put(sealed_put(&key, mailbox, n, size)?),
            })
            .await?;
        id += 1;
        counters.sent.fetch_add(1, Ordering::SeqCst);
        // The message number, not a copy of the envelope: a refused one is sealed anew.
        if tx.send((answer, n)).is_err() {
            break;
        }
        n += 1;
    }
    drop(tx);
    checker.await?
}

/// Waits for each `Stored` answer in order; resends what the relay refused with
/// `RateLimited` (counted), counts other refusals as lost.
/// A `Put` of message `n`, freshly sealed.
fn sealed_put(key: &EnvelopeKey, mailbox: MailboxId, n: u64, size: usize) -> anyhow::Result<Put> {
    let body = key.seal(
        &mut rand::rng(),
        &mailbox,
        Purpose::Chat,
        &plaintext(n, size),
    )?;
    Ok(Put {
        mailbox,
        kind: EnvelopeKind::Chat,
        body,
    })
}

async fn check_stored(
    conn: Arc<RelayConnection>,
    mut rx: mpsc::UnboundedReceiver<(oneshot::Receiver<Outcome>, u64)>,
    counters: Arc<Counters>,
    window: Arc<Semaphore>,
    (mailbox, key, size): (MailboxId, EnvelopeKey, usize),
) -> anyhow::Result<()> {
    let mut id = RESEND_IDS;
    let mut first_refusal: Option<ErrorFrame> = None;
    while let Some((answer, n)) = rx.recv().await {
        let mut outcome = answer.await;
        loop {
            match outcome {
                Ok(Outcome::Ok(Response::Stored { .. })) => {
                    counters.stored.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                Ok(Outcome::Err(e)) if e.code == ErrorCode::RateLimited => {
                    counters.rate_limited.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let again = conn
                        .send_frame(ClientFrame {
                            id,
                            request: Request::Put(sealed_put(&key, mailbox, n, size)?),
                        })
                        .await?;
                    id += 1;
                    outcome = again.await;
                }
                Ok(Outcome::Err(e)) => {
                    counters.refused.fetch_add(1, Ordering::SeqCst);
                    window.add_permits(1);
                    if first_refusal.is_none() {
                        eprintln!("relay refused an envelope: {e}");
                        first_refusal = Some(e);
                    }
                    break;
                }
                Ok(Outcome::Ok(other)) => bail!("unexpected answer to Put: {other:?}"),
                Err(_) => bail!("connection lost: {}", conn.close_reason()),
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn receive(
    conn: Arc<RelayConnection>,
    mut pushes: mpsc::Receiver<Push>,
    mailbox: MailboxId,
    key: EnvelopeKey,
    window: Arc<Semaphore>,
    counters: Arc<Counters>,
    last_rx: Arc<AtomicU64>,
    warmup: u64,
    ack_every: u64,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Received> {
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let checker = tokio::spawn(check_acks(ack_rx, counters.clone()));
    let mut lats = Vec::with_capacity(4096);
    let mut id = OWN_IDS;
    let mut highest = 0u64;
    let mut acked = 0u64;
    let ack = |upto: u64, id: u64| ClientFrame {
        id,
        request: Request::Ack {
            mailbox,
            upto: Seq(upto),
        },
    };
    loop {
        let push = match pushes.try_recv() {
            Ok(p) => Some(p),
            Err(mpsc::error::TryRecvError::Empty) => {
                // Nothing waiting: acknowledge what we hold before sleeping.
                if highest > acked {
                    ack_tx.send(conn.send_frame(ack(highest, id)).await?)?;
                    id += 1;
                    acked = highest;
                }
                tokio::select! {
                    p = pushes.recv() => p,
                    _ = stop.changed() => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => None,
        };
        let Some(push) = push else {
            bail!("push stream ended: {}", conn.close_reason());
        };
        let t = mono_ns();
        let Push::Envelope { envelope, .. } = push else {
            continue;
        };
        let plain = key
            .open(&mailbox, Purpose::Chat, &envelope.body)
            .context("an envelope did not open")?;
        let (seq, ts) = parse_header(&plain).context("short plaintext")?;
        if seq >= warmup {
            lats.push(t.saturating_sub(ts));
        }
        counters.received.fetch_add(1, Ordering::SeqCst);
        last_rx.fetch_max(t, Ordering::SeqCst);
        window.add_permits(1);
        highest = highest.max(envelope.seq.0);
        if highest - acked >= ack_every {
            ack_tx.send(conn.send_frame(ack(highest, id)).await?)?;
            id += 1;
            acked = highest;
        }
    }
    if highest > acked {
        ack_tx.send(conn.send_frame(ack(highest, id)).await?)?;
    }
    drop(ack_tx);
    checker.await?;
    // After the last ack the relay must hold nothing more for this member.
    let left_on_relay = match conn
        .request(Request::Fetch {
            mailbox,
            after: Seq(0),
            limit: 256,
        })
        .await?
    {
        Response::Envelopes { items, .. } => items.len(),
        other => bail!("unexpected answer to Fetch: {other:?}"),
    };
    Ok(Received {
        lats,
        left_on_relay,
    })
}

async fn check_acks(
    mut rx: mpsc::UnboundedReceiver<oneshot::Receiver<Outcome>>,
    counters: Arc<Counters>,
) {
    while let Some(answer) = rx.recv().await {
        match answer.await {
            Ok(Outcome::Ok(Response::Acked)) => {
                counters.acks.fetch_add(1, Ordering::SeqCst);
            }
            _ => {
                counters.ack_errors.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Dumps the relay's threads once if no envelope was received for `after`.
async fn watch_for_stall(
    counters: Vec<Arc<Counters>>,
    pid: u32,
    after: Duration,
    dir: PathBuf,
    label: String,
) {
    let total = || -> u64 {
        counters
            .iter()
            .map(|c| c.received.load(Ordering::SeqCst))
            .sum()
    };
    let mut last = total();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = total();
        if now != last {
            last = now;
            since = Instant::now();
            continue;
        }
        if since.elapsed() < after {
            continue;
        }
        let path = dir.join(format!("nook-relay-stall-{pid}.txt"));
        eprintln!(
            "{label}: no envelope received for {} s (after {last}); dumping relay threads to {}",
            after.as_secs(),
            path.display()
        );
        let dump = tokio::task::spawn_blocking(move || {
            let mut out = String::new();
            if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
                for t in tasks.flatten() {
                    let p = t.path();
                    let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
                    out.push_str(&format!(
                        "tid {} {} wchan={} stat={}\n",
                        t.file_name().to_string_lossy(),
                        read("comm").trim(),
                        read("wchan").trim(),
                        read("stat").trim()
                    ));
                }
            }
            match std::process::Command::new("gdb")
                .args([
                    "-p",
                    &pid.to_string(),
                    "-batch",
                    "-ex",
                    "thread apply all bt",
                ])
                .output()
            {
                Ok(o) => out.push_str(&String::from_utf8_lossy(&o.stdout)),
                Err(e) => out.push_str(&format!("gdb not run: {e}\n")),
            }
            std::fs::write(&path, out)
        })
        .await;
        if let Ok(Err(e)) = dump {
            eprintln!("could not write the stall dump: {e}");
        }
        return;
    }
}
