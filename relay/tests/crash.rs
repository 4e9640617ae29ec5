//! The real `nook-relay` binary: kill -9 under load loses nothing it acknowledged,
//! and SIGTERM shuts it down cleanly.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use nook_client::RelayConnection;
use nook_crypto::RelayAddr;
use nook_proto::*;

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary and reads its address from the first stdout line.
fn spawn_relay(dir: &std::path::Path, port: u16) -> (Child, RelayAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nook-relay"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("nook-relay binary runs");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr: RelayAddr = line.trim().parse().expect("first line is the address");
    (child, addr)
}

struct Remote {
    addr: RelayAddr,
}

async fn member_from(
    conn: RelayConnection,
    mailbox: MailboxId,
    id: nook_crypto::TalkIdentity,
) -> Member {
    let m = Member {
        id,
        conn,
        mailbox,
        seat: 0,
    };
    m.auth_on(&m.conn).await.unwrap();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_puts_loses_no_acknowledged_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut child, addr) = spawn_relay(dir.path(), port);
    let remote = Remote { addr: addr.clone() };
    let relay_like = TestRelayAddr(remote.addr.clone());
    let c = relay_like.create(2, 1).await;
    let b = relay_like.join(c.owner.mailbox, &c.seats[0]).await;
    let mailbox = c.owner.mailbox;

    // Pipeline puts; each body carries its number. Kill the relay after 300 acks.
    let owner = std::sync::Arc::new(c.owner);
    let (tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2000u32 {
        let owner = owner.clone();
        let tx = tx.clone();
        tasks.spawn(async move {
            if let Ok(seq) = owner.put(EnvelopeKind::Chat, &i.to_le_bytes()).await {
                let _ = tx.send((seq, i));
            }
        });
        if i % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }
    drop(tx);
    let mut acked = Vec::new();
    while acked.len() < 300 {
        let Some(a) = tokio::time::timeout(Duration::from_secs(20), acked_rx.recv())
            .await
            .unwrap()
        else {
            break;
        };
        acked.push(a);
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Puts still waiting would only learn of the crash at the idle timeout.
    tasks.shutdown().await;
    while let Ok(a) = acked_rx.try_recv() {
        acked.push(a);
    }
    assert!(acked.len() >= 300, "only {} puts acknowledged", acked.len());

    let (mut child, addr2) = spawn_relay(dir.path(), port);
    assert_eq!(addr2, addr, "identity survives the crash");
    let b = member_from(
        RelayConnection::connect(&addr).await.unwrap(),
        mailbox,
        b.id,
    )
    .await;
    let key = nook_crypto::EnvelopeKey::from_talk_key(&[42; 32]);
    let mut seen = std::collections::HashMap::new();
    let mut after = 0;
    for _ in 0..100 {
        let items = b.fetch(after).await.unwrap();
        if items.is_empty() {
            break;
        }
        for e in items {
            after = e.seq.0;
            let text = key
                .open(&mailbox, nook_crypto::Purpose::Chat, &e.body)
                .unwrap();
            let n = u32::from_le_bytes(text.as_slice().try_into().unwrap());
            assert!(seen.insert(e.seq, n).is_none(), "seq delivered twice");
        }
    }
    for (seq, i) in &acked {
        assert_eq!(
            seen.get(seq),
            Some(i),
            "acknowledged envelope {i} (seq {}) lost or altered",
            seq.0
        );
    }
    // No envelope appears twice under different seqs.
    let mut values: Vec<u32> = seen.values().copied().collect();
    values.sort_unstable();
    let before = values.len();
    values.dedup();
    assert_eq!(before, values.len());

    // SIGTERM: graceful shutdown with exit code 0.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_timeout(&mut child, Duration::from_secs(20));
    assert_eq!(exit.and_then(|s| s.code()), Some(0));
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

#[test]
fn address_subcommand_prints_the_same_address() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut child, addr) = spawn_relay(dir.path(), port);
    child.kill().unwrap();
    child.wait().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nook-relay"))
        .args([
            "address",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        addr.to_string()
    );
    // Identity file and data folder are private.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.path()), 0o700);
    assert_eq!(mode(&dir.path().join("identity.key")), 0o600);
    // Without an identity, `address` fails with a hint instead of creating one.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nook-relay"))
        .args(["address", "--data"])
        .arg(empty.path().join("none"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("start nook-relay once"));
}
