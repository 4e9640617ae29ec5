//! vaultbench: the relay's storage path without the network, to see what a durable
//! envelope costs in nook-vault (sled 0.34 + sealing + group-committed fdatasync).
//!
//! Writers (threads, one namespace each) repeat what `Engine::put` stores for one
//! envelope, then wait for a durable flush shared with the other writers
//! (`Vault::durable_flush` is group-committed), and every `--ack-every` envelopes do
//! what `Engine::ack` does (write the ack mark, remove the acked envelopes).
//!
//! Modes of the envelope write:
//! - `batch`: `put_batch([(e‖seq, body), (h, seq)])`, what the relay does today;
//! - `puts`: the same two values with two plain `put`s;
//! - `put1`: the envelope record alone (head recovered from the highest key).
//!
//! `--creates N`: time `create_namespace` in steps, with the data folder's size.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use nook_bench::proc::{dir_size, self_cpu_s};
use nook_vault::Vault;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "vaultbench",
    about = "nook-vault durable write path, without the network"
)]
struct Args {
    /// Modes to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "batch,puts,put1")]
    modes: Vec<String>,
    /// Concurrent writers (one namespace each), like talks.
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    writers: Vec<usize>,
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Envelope body bytes (before the vault's own sealing).
    #[arg(long, default_value_t = 2048)]
    value: usize,
    #[arg(long, default_value_t = 32)]
    ack_every: u64,
    /// Skip the durable flush after each envelope (what the writes cost alone).
    #[arg(long)]
    no_flush: bool,
    /// Also time this many namespace creations (0: skip).
    #[arg(long, default_value_t = 0)]
    creates: usize,
    /// Scratch folder (default: a temporary folder).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut results = Vec::new();
    for mode in &args.modes {
        if !matches!(mode.as_str(), "batch" | "puts" | "put1") {
            bail!("unknown mode {mode}");
        }
        for &w in &args.writers {
            results.push(writes(&args, mode, w)?);
        }
    }
    if args.creates > 0 {
        results.push(creates(&args)?);
    }
    println!("{}", json!({"bench": "vaultbench", "results": results}));
    Ok(())
}

fn scratch(args: &Args) -> anyhow::Result<tempfile::TempDir> {
    Ok(match &args.dir {
        Some(d) => tempfile::Builder::new()
            .prefix("vaultbench-")
            .tempdir_in(d)?,
        None => tempfile::Builder::new().prefix("vaultbench-").tempdir()?,
    })
}

fn env_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'e';
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn writes(args: &Args, mode: &str, writers: usize) -> anyhow::Result<serde_json::Value> {
    let dir = scratch(args)?;
    let vault = Arc::new(Vault::open(dir.path())?);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.secs);
    let cpu0 = self_cpu_s();
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for w in 0..writers {
        let ns = vault.create_namespace(format!("mailbox/{w}").as_bytes())?;
        let (vault, done) = (vault.clone(), done.clone());
        let (mode, value, ack_every) = (mode.to_string(), args.value, args.ack_every.max(1));
        let flush = !args.no_flush;
        handles.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let body = vec![0x5a_u8; value];
            let mut seq = 0u64;
            while Instant::now() < deadline {
                seq += 1;
                let key = env_key(seq);
                let head = seq.to_le_bytes();
                match mode.as_str() {
                    "batch" => ns.put_batch(&[(&key, &body), (b"h", &head)])?,
                    "puts" => {
                        ns.put(&key, &body)?;
                        ns.put(b"h", &head)?;
                    }
                    _ => ns.put(&key, &body)?,
                }
                if flush {
                    vault.durable_flush()?;
                }
                done.fetch_add(1, Ordering::Relaxed);
                if seq.is_multiple_of(ack_every) {
                    ns.put(b"a\x01", &seq.to_le_bytes())?;
                    for s in seq + 1 - ack_every..=seq {
                        ns.remove(&env_key(s))?;
                    }
                }
            }
            Ok(())
        }));
    }
    for h in handles {
        match h.join() {
            Ok(r) => r?,
            Err(_) => bail!("a writer panicked"),
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = match (cpu0, self_cpu_s()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let n = done.load(Ordering::Relaxed);
    let (disk, _) = dir_size(dir.path());
    println!(
        "{mode:>5} {writers:>3} writers{}: {:>8.0} envelopes/s, {:>6.1} us CPU each ({:.2} cores), data folder {} MB",
        if args.no_flush {
            ", no flush"
        } else {
            ", durable"
        },
        n as f64 / elapsed,
        cpu.map(|c| c * 1e6 / n.max(1) as f64).unwrap_or(f64::NAN),
        cpu.map(|c| c / elapsed).unwrap_or(f64::NAN),
        disk / 1_000_000,
    );
    Ok(
        json!({"mode": mode, "writers": writers, "envelopes_per_s": n as f64 / elapsed,
              "cpu_us_per_envelope": cpu.map(|c| c * 1e6 / n.max(1) as f64),
              "disk_bytes": disk}),
    )
}

fn creates(args: &Args) -> anyhow::Result<serde_json::Value> {
    let dir = scratch(args)?;
    let vault = Vault::open(dir.path())?;
    let step = (args.creates / 10).max(1);
    let mut steps = Vec::new();
    let mut t = Instant::now();
    for i in 1..=args.creates {
        let ns = vault.create_namespace(format!("mailbox/{i}").as_bytes())?;
        ns.put_batch(&[
            (b"m", &[7u8; 120]),
            (b"h", &[0u8; 8]),
            (b"w\x01", &[1u8; 512]),
        ])?;
        vault.durable_flush()?;
        if i % step == 0 {
            let dt = t.elapsed().as_secs_f64();
            let (disk, _) = dir_size(dir.path());
            println!(
                "create_namespace: {i:>7} namespaces, last {step} at {:>7.0}/s, data folder {:>6} MB",
                step as f64 / dt,
                disk / 1_000_000
            );
            steps.push(json!({"namespaces": i, "per_s": step as f64 / dt, "disk_bytes": disk}));
            t = Instant::now();
        }
    }
    Ok(json!({"mode": "create", "steps": steps}))
}
