//! relaybench: the relay end to end and durable, over real QUIC on loopback.
//!
//! The relay runs as its own process (`nook-relay`, release build), restarted on a
//! fresh data folder for every measurement, so its CPU seconds come from
//! `/proc/<pid>/stat`. Per talk (mailbox) there is one sender and one receiver, each
//! on its own QUIC connection and UDP socket. The talks are created and joined as
//! `relay/tests/common` does; then the generator speaks the protocol itself
//! ([`RawConn`](nook_bench::quic::RawConn) halves: frames encoded, written and decoded
//! by the task that needs them), as the peers' Go client speaks RESP or MQTT, rather
//! than through the client library's per-request channels and tasks:
//!
//! sender seals a plaintext (seq, send time, filler) with the talk's envelope key →
//! `Put` (pipelined) → relay stores it, fdatasyncs (group commit), answers `Stored`
//! and pushes it → receiver opens it, records the one-way time, acks cumulatively
//! (every `--ack-every` envelopes, and whenever nothing more has arrived) → relay
//! deletes.
//!
//! A sender never has more than `--window` envelopes outstanding end to end (sent, not
//! yet received). Latency mode: one talk, one in flight, 2,100 envelopes, the first
//! 100 not counted. Output: a text table, one JSON summary line, and with `--jsonl`
//! one JSON line per run in the peers' format.

// The same allocator as the relay, so the load generator is not slowed by glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use nook_bench::proc::{CpuSnapshot, CpuUse};
use nook_bench::relay::{RelayProcess, default_relay_bin};
use nook_bench::stats::{pct_us, r1};
use nook_bench::talk::{RawPair, open_raw_pair, parse_header, plaintext};
use nook_bench::{PUT_BATCH, append_jsonl, mono_ns, quiet_gate, report};
use nook_crypto::{EnvelopeKey, Purpose};
use nook_proto::codec::encode_frame;
use nook_proto::{
    ClientFrame, EnvelopeKind, ErrorCode, ErrorFrame, FrameDecoder, MailboxId, Outcome, Push, Put,
    Request, Response, Seq, ServerFrame,
};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

#[derive(Parser, Debug)]
#[command(
    name = "relaybench",
    about = "nook relay: durable end-to-end latency and throughput"
)]
struct Args {
    /// The relay binary (default: nook-relay next to this binary).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// An argument for every relay started (repeatable), e.g.
    /// `--relay-arg=--requests-per-second=1000000` to measure one talk without the
    /// per-connection rate limit.
    #[arg(long, allow_hyphen_values = true)]
    relay_arg: Vec<String>,
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
    /// The receiver acks after this many envelopes (and whenever nothing more has
    /// arrived).
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

/// First request id of the pipelined frames (setup requests use small ids); a put
/// of message `n` has id `OWN_IDS + n`, and so has its re-sending.
const OWN_IDS: u64 = 1 << 40;

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
    let size = body_len - nook_crypto::seal::ENVELOPE_OVERHEAD - 1;
    println!(
        "relaybench: relay {} | plaintext {} B sealed to a {} B envelope body | runs {} | window {} | ack every {}",
        bin.display(),
        size,
        body_len,
        args.runs,
        args.window,
        args.ack_every
    );
    if !args.relay_arg.is_empty() {
        println!("relaybench: relay arguments {}", args.relay_arg.join(" "));
    }
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
            let relay = RelayProcess::start_with(&bin, &args.relay_arg)?;
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
                o.insert("relay_args".into(), json!(args.relay_arg));
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
        "relay_args": args.relay_arg,
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

/// What one talk's tasks share of its sending connection.
struct Sending {
    send: tokio::sync::Mutex<quinn::SendStream>,
    mailbox: MailboxId,
    key: EnvelopeKey,
    size: usize,
}

impl Sending {
    /// Message `n` sealed into its `Put` frame (request id `OWN_IDS + n`).
    fn frame(&self, n: u64) -> anyhow::Result<Bytes> {
        let body = self.key.seal(
            &mut rand::rng(),
            &self.mailbox,
            Purpose::Chat,
            &plaintext(n, self.size),
        )?;
        let frame = ClientFrame {
            id: OWN_IDS + n,
            request: Request::Put(Put {
                mailbox: self.mailbox,
                kind: EnvelopeKind::Chat,
                body,
            }),
        };
        Ok(Bytes::from(encode_frame(&frame)?))
    }

    /// Seals and writes the `Put`s of messages `ns`, in one stream write.
    async fn put(&self, ns: std::ops::Range<u64>) -> anyhow::Result<()> {
        let mut frames = ns
            .map(|n| self.frame(n))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.send.lock().await.write_all_chunks(&mut frames).await?;
        Ok(())
    }
}

async fn run_workload(relay: &RelayProcess, w: &Workload) -> anyhow::Result<Value> {
    // Set up every talk first (create, join, subscribe), a few at a time.
    let mut pairs: Vec<RawPair> = Vec::with_capacity(w.talks);
    while pairs.len() < w.talks {
        let batch = (w.talks - pairs.len()).min(16);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..batch {
            let addr = relay.addr.clone();
            set.spawn(async move { open_raw_pair(&addr).await });
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
    // Connections and endpoints stay open until the relay is stopped.
    let mut keep = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let RawPair {
            mailbox,
            sender,
            receiver,
            key,
            endpoints,
        } = pair;
        let (sender_conn, sender_send, sender_recv) = sender.into_parts()?;
        let (receiver_conn, receiver_send, receiver_recv) = receiver.into_parts()?;
        keep.push((endpoints, sender_conn, receiver_conn));
        let counters = Arc::new(Counters::default());
        let window = Arc::new(Semaphore::new(w.window));
        let receiver = tokio::spawn(receive(
            receiver_recv,
            receiver_send,
            mailbox,
            key.clone(),
            window.clone(),
            counters.clone(),
            last_rx.clone(),
            (w.warmup, w.ack_every),
            stop_rx.clone(),
        ));
        let sending = Arc::new(Sending {
            send: tokio::sync::Mutex::new(sender_send),
            mailbox,
            key,
            size: w.size,
        });
        let (done_tx, done_rx) = watch::channel(None);
        tokio::spawn(send(
            sending.clone(),
            window.clone(),
            counters.clone(),
            (w.count, deadline, w.pace),
            done_tx,
        ));
        let sender = tokio::spawn(check_stored(
            sender_recv,
            sending,
            window,
            counters.clone(),
            done_rx,
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
        // Every put is answered well within this after the sending stops.
        match tokio::time::timeout(w.duration + Duration::from_secs(30), &mut t.sender).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => errors.push(format!("sender: {e:#}")),
            Ok(Err(e)) => errors.push(format!("sender task: {e}")),
            Err(_) => errors.push("sender did not finish".into()),
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
    drop(keep);
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

/// A talk's sender: seals and writes `Put`s, at most `window` outstanding end to end
/// (or one per `pace` tick), until `count` or the deadline; then says how many.
async fn send(
    sending: Arc<Sending>,
    window: Arc<Semaphore>,
    counters: Arc<Counters>,
    (count, deadline, pace): (u64, Instant, Option<Duration>),
    done: watch::Sender<Option<u64>>,
) {
    let mut ticks = pace.map(|p| {
        // Talks start spread over one period, not in lockstep.
        let offset = p.mul_f64(rand::random::<f64>());
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, p);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
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
            Ok(Ok(permit)) => permit.forget(),
            // The deadline, or a closed window.
            _ => break,
        }
        // Whatever more the window has room for goes in the same write (never when
        // paced: one envelope per tick).
        let mut k = 1;
        while pace.is_none() && k < PUT_BATCH.min(count - n) {
            match window.try_acquire() {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
            k += 1;
        }
        if let Err(e) = sending.put(n..n + k).await {
            eprintln!("sending failed: {e:#}");
            break;
        }
        counters.sent.fetch_add(k, Ordering::SeqCst);
        n += k;
    }
    let _ = done.send(Some(n));
}

/// Reads the sending connection's answers: counts `Stored`, re-sends what the relay
/// refused with `RateLimited` (counted), counts other refusals as lost. Ends when the
/// sender is done and every put it wrote has its answer.
async fn check_stored(
    mut recv: quinn::RecvStream,
    sending: Arc<Sending>,
    window: Arc<Semaphore>,
    counters: Arc<Counters>,
    mut done: watch::Receiver<Option<u64>>,
) -> anyhow::Result<()> {
    let mut decoder = FrameDecoder::new();
    let mut answered = 0u64;
    let mut first_refusal: Option<ErrorFrame> = None;
    let mut sending_done = false;
    loop {
        if done.borrow().is_some_and(|total| answered >= total) {
            return Ok(());
        }
        let chunk = tokio::select! {
            r = recv.read_chunk(usize::MAX, true) => match r.context("connection lost")? {
                Some(c) => c.bytes,
                None => bail!("the relay ended the stream"),
            },
            r = done.changed(), if !sending_done => {
                if r.is_err() {
                    bail!("the sender task ended without its count");
                }
                sending_done = true;
                continue;
            }
        };
        decoder.push(&chunk);
        while let Some(frame) = decoder.next_frame::<ServerFrame>()? {
            let ServerFrame::Response { id, result } = frame else {
                continue;
            };
            match result {
                Outcome::Ok(Response::Stored { .. }) => {
                    counters.stored.fetch_add(1, Ordering::SeqCst);
                    answered += 1;
                }
                Outcome::Err(e) if e.code == ErrorCode::RateLimited => {
                    counters.rate_limited.fetch_add(1, Ordering::SeqCst);
                    let n = id
                        .checked_sub(OWN_IDS)
                        .context("a refusal of a request this benchmark did not send")?;
                    // Sealed anew (fresh nonce), after the relay's bucket has refilled a bit.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    sending.put(n..n + 1).await?;
                }
                Outcome::Err(e) => {
                    counters.refused.fetch_add(1, Ordering::SeqCst);
                    answered += 1;
                    window.add_permits(1);
                    if first_refusal.is_none() {
                        eprintln!("relay refused an envelope: {e}");
                        first_refusal = Some(e);
                    }
                }
                Outcome::Ok(other) => bail!("unexpected answer to Put: {other:?}"),
            }
        }
    }
}

/// The next chunk of `recv` if one has already arrived (quinn's `read_chunk` is
/// cancel-safe: a pending read dropped here loses nothing).
fn ready_chunk(
    recv: &mut quinn::RecvStream,
) -> Option<Result<Option<quinn::Chunk>, quinn::ReadError>> {
    let mut read = std::pin::pin!(recv.read_chunk(usize::MAX, true));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match read.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => Some(r),
        std::task::Poll::Pending => None,
    }
}

/// A talk's receiver: opens every pushed envelope, records its one-way time, acks
/// cumulatively (every `ack_every` envelopes, and whenever nothing more has arrived),
/// until `stop`; then acks the rest and checks the relay holds nothing more.
#[allow(clippy::too_many_arguments)]
async fn receive(
    mut recv: quinn::RecvStream,
    mut send: quinn::SendStream,
    mailbox: MailboxId,
    key: EnvelopeKey,
    window: Arc<Semaphore>,
    counters: Arc<Counters>,
    last_rx: Arc<AtomicU64>,
    (warmup, ack_every): (u64, u64),
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Received> {
    let mut decoder = FrameDecoder::new();
    let mut lats = Vec::with_capacity(4096);
    let mut id = OWN_IDS;
    let (mut highest, mut acked) = (0u64, 0u64);
    let mut acks: Vec<Bytes> = Vec::new();
    async fn write(
        send: &mut quinn::SendStream,
        id: &mut u64,
        request: Request,
    ) -> anyhow::Result<u64> {
        let this = *id;
        *id += 1;
        let frame = encode_frame(&ClientFrame { id: this, request })?;
        send.write_chunk(Bytes::from(frame)).await?;
        Ok(this)
    }
    let ack = |upto: u64| Request::Ack {
        mailbox,
        upto: Seq(upto),
    };
    loop {
        let read = match ready_chunk(&mut recv) {
            Some(r) => r,
            None => {
                // Nothing more has arrived: acknowledge what was handled, then wait.
                if highest > acked {
                    write(&mut send, &mut id, ack(highest)).await?;
                    acked = highest;
                }
                tokio::select! {
                    r = recv.read_chunk(usize::MAX, true) => r,
                    _ = stop.changed() => break,
                }
            }
        };
        let chunk = match read.context("connection lost")? {
            Some(c) => c.bytes,
            None => bail!("the relay ended the stream"),
        };
        let t = mono_ns();
        let mut on_frame = |frame: ServerFrame| -> anyhow::Result<()> {
            match frame {
                ServerFrame::Push(Push::Envelope { envelope, .. }) => {
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
                        // Written after the chunk, in one write with any others.
                        let frame = ClientFrame {
                            id,
                            request: ack(highest),
                        };
                        id += 1;
                        acks.push(Bytes::from(encode_frame(&frame)?));
                        acked = highest;
                    }
                }
                ServerFrame::Push(_) => {}
                ServerFrame::Response { result, .. } => count_ack_answer(&counters, &result),
            }
            Ok(())
        };
        // Decoded from quinn's chunk in place, as the relay does.
        let failed = decoder.feed(&chunk, |frame| match on_frame(frame) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if !acks.is_empty() {
            send.write_all_chunks(&mut acks).await?;
            acks.clear();
        }
    }
    if highest > acked {
        write(&mut send, &mut id, ack(highest)).await?;
    }
    // After the last ack the relay must hold nothing more for this member.
    let fetch = write(
        &mut send,
        &mut id,
        Request::Fetch {
            mailbox,
            after: Seq(0),
            limit: 256,
        },
    )
    .await?;
    let left_on_relay = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            while let Some(frame) = decoder.next_frame::<ServerFrame>()? {
                match frame {
                    ServerFrame::Response {
                        id,
                        result: Outcome::Ok(Response::Envelopes { items, .. }),
                    } if id == fetch => return Ok(items.len()),
                    ServerFrame::Response { id, result } if id == fetch => {
                        bail!("unexpected answer to Fetch: {result:?}")
                    }
                    ServerFrame::Response { result, .. } => count_ack_answer(&counters, &result),
                    ServerFrame::Push(_) => {}
                }
            }
            match recv.read_chunk(usize::MAX, true).await? {
                Some(c) => decoder.push(&c.bytes),
                None => bail!("the relay ended the stream before answering Fetch"),
            }
        }
    })
    .await
    .context("no answer to Fetch within 20 s")??;
    Ok(Received {
        lats,
        left_on_relay,
    })
}

/// Counts the answer to one of the receiver's acks (the only requests it pipelines).
fn count_ack_answer(counters: &Counters, result: &Outcome) {
    let counter = match result {
        Outcome::Ok(Response::Acked) => &counters.acks,
        _ => &counters.ack_errors,
    };
    counter.fetch_add(1, Ordering::SeqCst);
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
