//! Files in a talk (issue 15): MB/s of `nook send --file` for a large file on
//! loopback, then of the receiver's `nook read` (fetch, open, store every chunk) and
//! `nook save` (check the SHA-256, write atomically).
//!
//! Runs the release `nook-relay` and `nook` binaries beside this one, on 127.0.0.1.
//! usage: cargo build --release -p nook-relay -p nook-cli -p nook-bench &&
//!        target/release/filebench [--mib 100] [--runs 3]

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use nook_bench::relay::{RelayProcess, run_nook as nook, sibling_bin};

#[derive(Parser, Debug)]
struct Args {
    /// File size in MiB.
    #[arg(long, default_value_t = 100)]
    mib: usize,
    /// Repetitions (a fresh talk each).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn mb_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let relay = RelayProcess::start(&sibling_bin("nook-relay")?)?;
    let addr = relay.addr.to_string();
    let scratch = tempfile::tempdir()?;
    let len = args.mib * 1024 * 1024;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let file = scratch.path().join("payload.bin");
    std::fs::write(&file, &data)?;
    let file = file.to_str().context("utf-8 path")?;
    for run in 0..args.runs {
        let (a, b) = (
            scratch.path().join(format!("a{run}")),
            scratch.path().join(format!("b{run}")),
        );
        let (_, created) = nook(&a, &["--json", "new", "--relay", &addr, "--alias", "ann"])?;
        let created: serde_json::Value = serde_json::from_str(created.trim())?;
        let talk = created["talk"].as_str().context("talk")?.to_string();
        let invite = created["invites"][0]
            .as_str()
            .context("invite")?
            .to_string();
        nook(&b, &["join", &invite])?;
        let (_, list) = nook(&b, &["--json", "list"])?;
        let theirs: serde_json::Value = serde_json::from_str(list.lines().next().context("list")?)?;
        let theirs = theirs["talk"].as_str().context("talk")?.to_string();
        nook(&a, &["read", &talk])?;
        let (send, out) = nook(&a, &["--json", "send", &talk, "--file", file])?;
        let sent: serde_json::Value =
            serde_json::from_str(out.lines().last().context("no result")?)?;
        let id = sent["file_id"].as_str().context("file_id")?.to_string();
        let (read, _) = nook(&b, &["read", &theirs])?;
        let to = scratch.path().join(format!("out{run}"));
        std::fs::create_dir(&to)?;
        let (save, _) = nook(
            &b,
            &["save", &theirs, &id, "--to", to.to_str().context("utf-8")?],
        )?;
        if std::fs::read(to.join("payload.bin"))? != data {
            bail!("the saved file differs");
        }
        println!(
            "{{\"run\":{run},\"mib\":{},\"send_s\":{:.3},\"send_mb_s\":{:.1},\"read_s\":{:.3},\"read_mb_s\":{:.1},\"save_s\":{:.3},\"save_mb_s\":{:.1}}}",
            args.mib,
            send.as_secs_f64(),
            mb_s(len, send),
            read.as_secs_f64(),
            mb_s(len, read),
            save.as_secs_f64(),
            mb_s(len, save),
        );
    }
    Ok(())
}
