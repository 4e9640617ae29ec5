//! echo: the ceiling — a bare quinn 0.11 echo server and client on loopback, with the
//! QUIC/TLS profile nook ships, taken from nook-quic rather than copied: the relay's
//! `server_config` (TLS 1.3, ring, no 0-RTT, the relay's transport parameters and idle
//! timeout) over a self-signed Ed25519 certificate from rcgen, its UDP socket rule, and
//! the client's `client_config` (the key pinned by fingerprint, the client's transport
//! parameters). Only the ALPN differs, so that neither side can be mistaken for nook.
//! The same framing (u32 big-endian length + payload) pipelined on one
//! long-lived bidirectional stream per connection, and the same workload shape as
//! relaybench: latency with one in flight, then throughput with N connections and at
//! most `--window` messages outstanding per connection.
//!
//! The server is this binary started again with `--serve`, as its own process, so its
//! CPU seconds are measured like the relay's. With `--compare <relaybench jsonl>` it
//! prints nook's throughput as a fraction of this ceiling.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use nook_bench::proc::{CpuSnapshot, CpuUse};
use nook_bench::quic::client_config;
use nook_bench::stats::{fmt, median, pct_us, r1};
use nook_bench::{PUT_BATCH, append_jsonl, mono_ns, quiet_gate, report};
use nook_crypto::Fingerprint;
use nook_proto::limits::MAX_FRAME;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// Not nook's ALPN: this server does not speak the nook protocol (the ALPN's bytes do
/// not change what the handshake costs).
const ALPN: &[u8] = b"nook-bench-echo";

#[derive(Parser, Debug)]
#[command(
    name = "echo",
    about = "bare quinn echo over loopback: the ceiling for relaybench"
)]
struct Args {
    /// Run as the echo server (prints "<addr> <ed25519 key hex>", serves until killed).
    #[arg(long)]
    serve: bool,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Connection counts of the throughput runs (one per talk in relaybench).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    conns: Vec<usize>,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 128)]
    window: usize,
    /// Payload bytes per message (after the 4-byte length).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Connection counts of the latency runs (one message in flight per connection).
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    lat_conns: Vec<usize>,
    #[arg(long, default_value_t = 2000)]
    lat_count: u64,
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    #[arg(long, default_value_t = 5_000_000)]
    count: u64,
    #[arg(long)]
    no_latency: bool,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Append one JSON line per run here.
    #[arg(long)]
    jsonl: Option<PathBuf>,
    /// Before each run, wait until other processes use at most this many cores...
    #[arg(long, default_value_t = 0.25)]
    quiet_cores: f64,
    /// ...but no longer than this many seconds (0: do not wait).
    #[arg(long, default_value_t = 120)]
    quiet_max_wait: u64,
    /// relaybench's per-run JSON lines: print nook / echo ratios.
    #[arg(long)]
    compare: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    if args.serve {
        runtime.block_on(serve())
    } else {
        runtime.block_on(client(args))
    }
}

async fn serve() -> anyhow::Result<()> {
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let public: [u8; 32] = key_pair
        .public_key_raw()
        .try_into()
        .context("not an Ed25519 key")?;
    let cert =
        rcgen::CertificateParams::new(vec!["nook-relay".to_string()])?.self_signed(&key_pair)?;
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(key_pair.serialize_der()),
    );
    let server = nook_quic::server_config(
        vec![cert.der().clone()],
        key_der,
        &[ALPN],
        nook_quic::IDLE_TIMEOUT,
    )?;
    let bound = nook_quic::udp_socket("127.0.0.1:0".parse()?)?;
    let runtime = quinn::default_runtime().context("no runtime")?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        bound.socket,
        runtime,
    )?;
    println!("{} {}", endpoint.local_addr()?, hex(&public));
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(echo_stream(send, recv));
            }
        });
    }
    Ok(())
}

/// Reads frames and writes every complete one back, coalescing what one read brought
/// into one write (as the relay's writer coalesces its queue).
async fn echo_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::with_capacity(128 * 1024);
    loop {
        let n = match recv.read(&mut buf).await {
            Ok(Some(n)) => n,
            _ => break,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut whole = 0;
        while let Some(h) = pending.get(whole..whole + 4) {
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            if len > MAX_FRAME {
                return;
            }
            if pending.len() < whole + 4 + len {
                break;
            }
            whole += 4 + len;
        }
        if whole > 0 {
            if send.write_all(&pending[..whole]).await.is_err() {
                return;
            }
            pending.drain(..whole);
        }
    }
    let _ = send.finish();
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> anyhow::Result<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        bail!("expected 64 hex digits");
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2).context("hex")?, 16)?;
    }
    Ok(out)
}

struct Server {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    fingerprint: Fingerprint,
}

impl Server {
    fn start() -> anyhow::Result<Server> {
        let exe = std::env::current_exe()?;
        let mut child = nook_bench::proc::server_command(&exe)
            .arg("--serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = child.id();
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(Ok(l))) => l,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("echo server printed no address: {other:?}");
            }
        };
        let (addr, key) = line.split_once(' ').context("bad server line")?;
        Ok(Server {
            child,
            pid,
            addr: addr.parse()?,
            fingerprint: Fingerprint::of_key(&unhex32(key)?),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn client(args: Args) -> anyhow::Result<()> {
    println!(
        "echo: bare quinn, {} B payload + 4 B length, one long bidi stream per connection, window {}, runs {}",
        args.size, args.window, args.runs
    );
    let mut workloads: Vec<(String, usize, usize, u64, u64, Duration)> = Vec::new();
    for &c in args.lat_conns.iter().filter(|_| !args.no_latency) {
        workloads.push((
            format!("lat echo {}B {c} conns", args.size),
            c,
            1,
            args.lat_count + args.warmup,
            args.warmup,
            Duration::from_secs(60),
        ));
    }
    for &c in &args.conns {
        workloads.push((
            format!("tput echo {}B {c} conns", args.size),
            c,
            args.window,
            args.count,
            0,
            Duration::from_secs_f64(args.duration),
        ));
    }
    let mut records = Vec::new();
    for r in 1..=args.runs {
        for (label, conns, window, count, warmup, duration) in &workloads {
            let server = Server::start()?;
            let busy_before = quiet_gate(args.quiet_cores, args.quiet_max_wait).await;
            let res = run_echo(
                &server, *conns, *window, *count, *warmup, *duration, args.size,
            )
            .await;
            drop(server);
            let mut rec = match res {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("{label} run {r} failed: {e:#}");
                    continue;
                }
            };
            if let Some(o) = rec.as_object_mut() {
                o.insert("label".into(), json!(label));
                o.insert("run".into(), json!(r));
                o.insert("busy_cores_before".into(), json!(busy_before));
            }
            let g = |k: &str| rec.get(k).and_then(Value::as_f64);
            println!(
                "run {r} {label:<26} {:>9} msg/s  p50 {:>8} us  p99 {:>8} us  server cpu {:>5}  {:>9} msg/server-cpu-s  foreign {:>5}",
                fmt(g("msgs_per_s"), 0),
                fmt(g("lat_p50_us"), 1),
                fmt(g("lat_p99_us"), 1),
                fmt(g("relay_cpu_util"), 2),
                fmt(g("msgs_per_relay_cpu_s"), 0),
                fmt(g("foreign_cpu_util"), 2),
            );
            append_jsonl(args.jsonl.as_deref(), &rec)?;
            records.push(rec);
        }
    }
    let med = report::medians(&records);
    report::print_table("bare quinn echo (latency = round trip)", &med);
    let mut ratios = Vec::new();
    if let Some(path) = &args.compare {
        let nook = report::read_jsonl(path)?;
        println!("== nook / bare quinn (median msg/s; per-run ratios pair run k with run k) ==");
        for &c in &args.conns {
            let nook_label = format!("tput nook {c} talks");
            let echo_label = format!("tput echo {}B {c} conns", args.size);
            let pick = |recs: &[Value], label: &str| -> Vec<(u64, f64)> {
                recs.iter()
                    .filter(|r| r.get("label").and_then(Value::as_str) == Some(label))
                    .filter_map(|r| Some((r.get("run")?.as_u64()?, r.get("msgs_per_s")?.as_f64()?)))
                    .collect()
            };
            let n = pick(&nook, &nook_label);
            let e = pick(&records, &echo_label);
            let nm = median(&n.iter().map(|x| Some(x.1)).collect::<Vec<_>>());
            let em = median(&e.iter().map(|x| Some(x.1)).collect::<Vec<_>>());
            let per_run: Vec<Option<f64>> = n
                .iter()
                .filter_map(|(run, nv)| {
                    e.iter()
                        .find(|(r2, _)| r2 == run)
                        .map(|(_, ev)| (*ev > 0.0).then(|| nv / ev))
                })
                .collect();
            let ratio = match (nm, em) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            println!(
                "{c:>4} talks/conns: nook {:>9} msg/s, echo {:>9} msg/s, ratio {} (per run: {}; target >= 0.5)",
                fmt(nm, 0),
                fmt(em, 0),
                fmt(ratio, 3),
                per_run
                    .iter()
                    .map(|x| fmt(*x, 3))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            ratios.push(
                json!({"conns": c, "nook_msgs_per_s": r1(nm), "echo_msgs_per_s": r1(em),
                "ratio": ratio, "per_run_ratio": per_run}),
            );
        }
    }
    println!(
        "{}",
        json!({"bench": "echo", "size": args.size, "window": args.window, "runs": args.runs,
               "medians": med, "nook_over_echo": ratios})
    );
    Ok(())
}

async fn run_echo(
    server: &Server,
    conns: usize,
    window: usize,
    count: u64,
    warmup: u64,
    duration: Duration,
    size: usize,
) -> anyhow::Result<Value> {
    // The nook client's TLS and transport settings, with the server's key pinned.
    let config = client_config(server.fingerprint, ALPN)?;
    // One endpoint (socket) per connection, as nook-client's RelayConnection does.
    let mut streams = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        endpoint.set_default_client_config(config.clone());
        let conn = endpoint.connect(server.addr, "nook-relay")?.await?;
        let (send, recv) = conn.open_bi().await?;
        streams.push((endpoint, conn, send, recv));
    }
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let last_rx = Arc::new(AtomicU64::new(0));
    let cpu0 = CpuSnapshot::take(Some(server.pid));
    let t0 = mono_ns();
    let deadline = Instant::now() + duration;
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    let mut keep = Vec::new();
    for (endpoint, conn, mut send, mut recv) in streams {
        keep.push((endpoint, conn));
        let win = Arc::new(Semaphore::new(window));
        let (w2, sent2) = (win.clone(), sent.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut frame = vec![b'x'; 4 + size.max(16)];
            let mut batch = Vec::with_capacity(frame.len() * PUT_BATCH as usize);
            let len = u32::try_from(size.max(16))?;
            frame[0..4].copy_from_slice(&len.to_be_bytes());
            while n < count {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match tokio::time::timeout(deadline - now, w2.acquire()).await {
                    Err(_) => break,
                    Ok(Err(_)) => bail!("window closed"),
                    Ok(Ok(p)) => p.forget(),
                }
                // As relaybench's sender: whatever more the window has room for (up to
                // PUT_BATCH) goes in the same write.
                let mut k = 1;
                while k < PUT_BATCH.min(count - n) {
                    match w2.try_acquire() {
                        Ok(p) => p.forget(),
                        Err(_) => break,
                    }
                    k += 1;
                }
                batch.clear();
                for i in n..n + k {
                    frame[4..12].copy_from_slice(&i.to_le_bytes());
                    frame[12..20].copy_from_slice(&mono_ns().to_le_bytes());
                    batch.extend_from_slice(&frame);
                }
                send.write_all(&batch).await?;
                n += k;
                sent2.fetch_add(k, Ordering::SeqCst);
            }
            Ok::<(quinn::SendStream, u64), anyhow::Error>((send, n))
        }));
        let (rcv, lrx) = (received.clone(), last_rx.clone());
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut pending: Vec<u8> = Vec::with_capacity(128 * 1024);
            let mut lats = Vec::new();
            let mut got = 0u64;
            loop {
                let n = match recv.read(&mut buf).await {
                    Ok(Some(n)) => n,
                    _ => break,
                };
                let t = mono_ns();
                pending.extend_from_slice(&buf[..n]);
                let mut at = 0;
                while let Some(h) = pending.get(at..at + 4) {
                    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                    if pending.len() < at + 4 + len {
                        break;
                    }
                    let body = &pending[at + 4..at + 4 + len];
                    if let (Some(s), Some(ts)) = (body.get(0..8), body.get(8..16)) {
                        let seq = u64::from_le_bytes(s.try_into()?);
                        let ts = u64::from_le_bytes(ts.try_into()?);
                        if seq >= warmup {
                            lats.push(t.saturating_sub(ts));
                        }
                    }
                    at += 4 + len;
                    got += 1;
                    rcv.fetch_add(1, Ordering::SeqCst);
                    lrx.fetch_max(t, Ordering::SeqCst);
                    win.add_permits(1);
                }
                pending.drain(..at);
            }
            Ok::<(Vec<u64>, u64), anyhow::Error>((lats, got))
        }));
    }
    let mut sends = Vec::new();
    for w in writers {
        sends.push(w.await??);
    }
    let total_sent: u64 = sends.iter().map(|(_, n)| n).sum();
    let drain_end = Instant::now() + Duration::from_secs(15);
    while received.load(Ordering::SeqCst) < total_sent && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu1 = CpuSnapshot::take(Some(server.pid));
    for (mut s, _) in sends {
        let _ = s.finish();
    }
    let mut lats = Vec::new();
    for r in readers {
        if let Ok(Ok(Ok((l, _)))) = tokio::time::timeout(Duration::from_secs(5), r).await {
            lats.extend(l);
        }
    }
    for (endpoint, conn) in keep {
        conn.close(0u32.into(), b"done");
        drop(endpoint);
    }
    lats.sort_unstable();
    let rx = received.load(Ordering::SeqCst);
    let lr = last_rx.load(Ordering::SeqCst);
    let elapsed = if lr > t0 {
        (lr - t0) as f64 / 1e9
    } else {
        1e-9
    };
    let cpu = CpuUse::between(&cpu0, &cpu1);
    let per = |x: Option<f64>| x.map(|v| v / elapsed);
    Ok(json!({
        "driver": "nook-bench/echo",
        "pairs": conns,
        "size": size,
        "window": window,
        "sent": total_sent,
        "received": rx,
        "lost": total_sent.saturating_sub(rx),
        "elapsed_s": elapsed,
        "msgs_per_s": rx as f64 / elapsed,
        "lat_n": lats.len(),
        "lat_p50_us": r1(pct_us(&lats, 50.0)),
        "lat_p99_us": r1(pct_us(&lats, 99.0)),
        "lat_max_us": r1(pct_us(&lats, 100.0)),
        "relay_cpu_s": cpu.server_s,
        "relay_cpu_util": per(cpu.server_s),
        "msgs_per_relay_cpu_s": cpu.server_s.filter(|s| *s > 0.0).map(|s| rx as f64 / s),
        "client_cpu_util": per(cpu.client_s),
        "foreign_cpu_util": per(cpu.foreign_s),
    }))
}
