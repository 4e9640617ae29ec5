//! Messages per second from one script: one `nook send` process per message, against
//! the same script's messages over one `nook rpc` (issue 26 point 7: at least 20×).
//!
//! Both in the same run, against the release `nook-relay` on 127.0.0.1, into one open
//! two-seat talk; each run times both, and the medians of `--runs` runs are compared.
//! The rpc side writes every `send` request before reading answers (pipelined, as
//! docs/json.md suggests) and is timed from the first request written to the last
//! answer read, the process already started; the one-shot side is timed over its
//! whole loop, process start-ups included (they are what a one-shot send costs).
//!
//! usage: cargo build --release -p nook-relay -p nook-cli -p nook-bench &&
//!        target/release/rpcbench [--oneshot 100] [--rpc 5000] [--runs 5] [--size 100]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use nook_bench::relay::{RelayProcess, sibling_bin};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// One-shot `nook send` processes per run.
    #[arg(long, default_value_t = 100)]
    oneshot: usize,
    /// Messages sent over `nook rpc` per run.
    #[arg(long, default_value_t = 5000)]
    rpc: usize,
    /// Runs; the medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Bytes of text per message.
    #[arg(long, default_value_t = 100)]
    size: usize,
}

fn nook(home: &Path, args: &[&str]) -> Result<String> {
    Ok(nook_bench::relay::run_nook(home, args)?.1)
}

/// One-shot: `count` `nook send` processes, one after the other. Messages per second.
fn oneshot(home: &Path, talk: &str, text: &str, count: usize) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..count {
        nook(home, &["send", talk, text])?;
    }
    Ok(count as f64 / t.elapsed().as_secs_f64())
}

/// Over one `nook rpc`: `count` sends written at once, every answer read. Messages
/// per second.
fn over_rpc(home: &Path, talk: &str, text: &str, count: usize) -> Result<f64> {
    let mut child = Command::new(sibling_bin("nook")?)
        .arg("--home")
        .arg(home)
        .arg("rpc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut answers = BufReader::new(child.stdout.take().context("stdout")?).lines();
    // Warm: the process is up and the home opened before the clock starts.
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":0,"method":"list"}}"#)?;
    answers.next().context("no answer to list")??;
    let requests: Vec<String> = (1..=count)
        .map(|id| {
            json!({"jsonrpc": "2.0", "id": id, "method": "send",
                   "params": {"talk": talk, "text": text}})
            .to_string()
        })
        .collect();
    let t = Instant::now();
    // Written from another thread: the answers must be read meanwhile, or both pipes fill.
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(stdin);
        for r in requests {
            out.write_all(r.as_bytes())?;
            out.write_all(b"\n")?;
        }
        out.flush()
    });
    let mut stored = 0;
    while stored < count {
        let line = answers.next().context("nook rpc ended early")??;
        let v: Value = serde_json::from_str(&line)?;
        if v.get("id").is_none() {
            continue;
        }
        if v["result"]["stored"] != true {
            bail!("a send failed: {line}");
        }
        stored += 1;
    }
    let rate = count as f64 / t.elapsed().as_secs_f64();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    let status = child.wait()?;
    if !status.success() {
        bail!("nook rpc exited with {status}");
    }
    Ok(rate)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args = Args::parse();
    let relay = RelayProcess::start(&sibling_bin("nook-relay")?)?;
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let new: Value = serde_json::from_str(
        nook(
            a.path(),
            &["--json", "new", "--relay", &relay.addr.to_string()],
        )?
        .lines()
        .next()
        .context("new printed nothing")?,
    )?;
    let talk = new["talk"].as_str().context("talk")?.to_string();
    nook(
        b.path(),
        &["join", new["invites"][0].as_str().context("invite")?],
    )?;
    let text = "m".repeat(args.size);
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for run in 1..=args.runs.max(1) {
        let o = oneshot(a.path(), &talk, &text, args.oneshot)?;
        let r = over_rpc(a.path(), &talk, &text, args.rpc)?;
        println!("run {run}: one-shot nook send {o:8.1} msg/s   nook rpc {r:9.1} msg/s");
        one.push(o);
        many.push(r);
        // The other member reads (and acknowledges) what came, so the mailbox never fills.
        nook(b.path(), &["read", &talk, "--new"])?;
    }
    let (o, r) = (median(one), median(many));
    println!(
        "median of {} runs ({} B messages): one-shot {o:.1} msg/s ({} per run), rpc {r:.1} msg/s ({} per run), ratio {:.1}x",
        args.runs.max(1),
        args.size,
        args.oneshot,
        args.rpc,
        r / o
    );
    Ok(())
}
