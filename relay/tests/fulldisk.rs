//! The relay on a full disk, and at its storage quota.
//!
//! A relay stopped on a full disk could not start again (opening wrote a fresh log
//! segment), and while full, acks were answered `Internal` and freed nothing (sled
//! stops for good at its first failed write): only an operator could recover. Now
//! new talks, joins and envelopes are refused with `StorageFull` below the disk
//! reserve, the reserve is held in a file the relay gives up when the disk fills
//! anyway, and everything that frees space keeps working.
//!
//! Opening the envelope log no longer writes (its first append makes the segment),
//! but sled's open does, so without a reserve to give up a full disk still keeps the
//! store from opening; the reserve is what makes a full disk survivable.
//!
//! The disk tests run on a small tmpfs (the relay test, the real binary) (it needs the right to mount:
//! root, as here and in CI; without it the test says so and returns).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use nook_client::{RelayConnection, RequestError};
use nook_proto::limits::MAX_ENVELOPE;
use nook_proto::*;

fn code(r: Result<impl std::fmt::Debug, RequestError>) -> ErrorCode {
    match r {
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("not a relay refusal: {e}")),
        Ok(v) => panic!("expected a refusal, got {v:?}"),
    }
}

/// A tmpfs of `size_mib` MiB mounted on a fresh folder, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: u32) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m,mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free(&self) -> u64 {
        let st = rustix::fs::statvfs(self.path()).unwrap();
        st.f_bavail * st.f_frsize
    }

    /// Writes a file of zeros until the disk refuses more; returns its path.
    fn fill(&self, name: &str) -> PathBuf {
        let path = self.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let chunk = vec![0u8; 64 * 1024];
        // Bounded: the tmpfs is small.
        for _ in 0..100_000 {
            if f.write_all(&chunk).is_err() {
                break;
            }
        }
        let small = [0u8; 512];
        for _ in 0..1_000 {
            if f.write_all(&small).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Polls `cond` until it holds; the bound only guards against a hang.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn wait_for_async<F: std::future::Future<Output = bool>>(
    what: &str,
    mut cond: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A body of the largest bucket, all `i`.
fn big(i: u8) -> Vec<u8> {
    vec![i; MAX_ENVELOPE]
}

/// What `member` is served, as (seq, the byte its body is made of).
async fn served(member: &Member) -> Vec<(u64, u8)> {
    let mut out = Vec::new();
    let mut after = 0;
    // Bounded: each round returns at least one envelope or ends.
    for _ in 0..1_000 {
        let got = member.fetch(after).await.unwrap();
        let Some(last) = got.last() else { break };
        after = last.seq.0;
        out.extend(got.iter().map(|e| (e.seq.0, e.body[0])));
    }
    out
}

/// The head a member is told at `Auth` (the highest seq stored).
async fn head(member: &Member, conn: &RelayConnection) -> u64 {
    match member.auth_on(conn).await.unwrap() {
        Response::Authed { head, .. } => head.0,
        r => panic!("unexpected {r:?}"),
    }
}

/// `member` on a new connection to the relay at `addr`, authenticated.
async fn back(addr: &nook_crypto::RelayAddr, m: Member) -> Member {
    let member = Member {
        id: m.id,
        conn: RelayConnection::connect(addr).await.unwrap(),
        mailbox: m.mailbox,
        seat: m.seat,
    };
    member.auth_on(&member.conn).await.unwrap();
    member
}

const RESERVE: u64 = 2 << 20;

fn start(dir: &Path) -> RelayProcess {
    RelayProcess::spawn(dir, &["--disk-reserve", &RESERVE.to_string()])
        .unwrap_or_else(|log| panic!("the relay did not start:\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_only_new_writes_and_the_relay_restarts_and_frees_it() {
    let Some(disk) = Tmpfs::mount(24) else {
        eprintln!(
            "NOTE: skipped: mounting a tmpfs is not permitted here (needs root); \
             CI runs this test"
        );
        return;
    };
    let data = disk.path().join("relay");
    let relay = start(&data);
    let at = TestRelayAddr(relay.addr.clone());
    // The reserve is held in a file once the sweeper has seen room for it.
    wait_for("the reserve file", || {
        std::fs::metadata(data.join("store").join(nook_relay::engine::RESERVE_FILE))
            .is_ok_and(|m| m.len() == RESERVE)
    });

    // A talk that will be left while full, one that will be closed while full, and
    // one that fills the disk.
    let left = at.create(3, 1).await;
    let leaver = at.join(left.owner.mailbox, &left.seats[0]).await;
    let closed = at.create(2, 1).await;
    let mut fill = at.create(2, 2).await;
    let reader = at.join(fill.owner.mailbox, &fill.seats[0]).await;
    leaver
        .put(EnvelopeKind::Chat, b"before the disk filled")
        .await
        .unwrap();

    // (a) Puts until the disk is at its reserve: refused with StorageFull.
    let mut stored = Vec::new();
    let mut refusal = None;
    for i in 0..=255u8 {
        match fill.owner.put_raw(EnvelopeKind::Chat, big(i)).await {
            Ok(seq) => stored.push((seq.0, i)),
            Err(e) => {
                refusal = Some(e.code());
                break;
            }
        }
    }
    assert_eq!(
        refusal,
        Some(Some(ErrorCode::StorageFull)),
        "{} stored",
        stored.len()
    );
    assert!(stored.len() > 20, "only {} puts fit", stored.len());
    let last = stored.last().unwrap().0;
    // A refused put leaves no trace: not served, head not advanced; new talks and
    // joins are refused too.
    assert_eq!(served(&reader).await, stored);
    assert_eq!(head(&fill.owner, &fill.owner.conn).await, last);
    let refused_create = tokio::time::timeout(Duration::from_secs(30), async {
        let conn = RelayConnection::connect(&relay.addr).await.unwrap();
        let (req, _) = heavy_create(&conn.hello().challenge, 2, 512);
        conn.request(req).await
    })
    .await
    .unwrap();
    assert_eq!(code(refused_create), ErrorCode::StorageFull);

    // The relay stops; something else takes every byte left.
    relay.stop();
    let filler = disk.fill("filler");
    assert!(
        disk.free() < RESERVE / 2,
        "the disk is not full: {}",
        disk.free()
    );

    // (b) It starts on the full disk: it gives its reserve up, serves reads and
    // refuses new writes.
    let relay = start(&data);
    let reader = back(&relay.addr, reader).await;
    fill.owner = back(&relay.addr, fill.owner).await;
    // (d) Every envelope answered Stored is there, and nothing else.
    assert_eq!(served(&reader).await, stored);
    assert_eq!(head(&reader, &reader.conn).await, last);
    assert_eq!(
        code(fill.owner.put_raw(EnvelopeKind::Chat, big(1)).await),
        ErrorCode::StorageFull
    );
    assert_eq!(head(&reader, &reader.conn).await, last);

    // (c) Acks, leaves and closes work while full, and free space.
    let free_before = disk.free();
    reader.ack(last).await.unwrap();
    let leaver = back(&relay.addr, leaver).await;
    leaver.leave().await.unwrap();
    let closer = back(&relay.addr, closed.owner).await;
    closer.close(Vec::new()).await.unwrap();
    let freed = (stored.len() as u64) * MAX_ENVELOPE as u64;
    wait_for("the acked envelopes' disk freed", || {
        disk.free() >= free_before + freed / 2
    });
    // Then new envelopes are taken again (the filler stays: the space came from the
    // acks).
    let again = fill
        .owner
        .put_raw(EnvelopeKind::Chat, big(200))
        .await
        .unwrap();
    assert_eq!(again.0, last + 1);
    assert_eq!(served(&reader).await, vec![(last + 1, 200)]);

    // And what was stored then survives one more restart, on the still nearly full disk.
    relay.stop();
    let relay = start(&data);
    let reader = back(&relay.addr, reader).await;
    wait_for_async("the envelope stored after the disk was freed", || async {
        served(&reader).await == vec![(last + 1, 200)]
    })
    .await;
    relay.stop();
    std::fs::remove_file(filler).unwrap();
}

#[tokio::test]
async fn past_the_storage_quota_new_talks_and_envelopes_are_refused_until_acks_free_it() {
    // Room for the talks' welcomes and six envelopes of 128 KiB.
    let limits = nook_relay::engine::Limits {
        max_stored_bytes: 6 * MAX_ENVELOPE as u64 + 64 * 1024,
        disk_reserve_bytes: 0,
        ..Default::default()
    };
    let relay = TestRelay::start_with(tempfile::tempdir().unwrap(), limits);
    let c = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let b = join(&relay, c.owner.mailbox, &c.seats[0]).await;
    let mut seqs = Vec::new();
    let mut refusal = None;
    for i in 0..20u8 {
        match c.owner.put_raw(EnvelopeKind::Chat, big(i)).await {
            Ok(seq) => seqs.push(seq.0),
            Err(e) => {
                refusal = e.code();
                break;
            }
        }
    }
    assert_eq!(refusal, Some(ErrorCode::StorageFull));
    assert!(!seqs.is_empty() && seqs.len() <= 6, "{seqs:?}");
    assert!(relay.engine.stored_bytes() <= relay.engine.max_stored_bytes());
    // Refused: not held, not served.
    let held = relay.engine.held(&c.owner.mailbox).unwrap();
    assert_eq!(
        (held.head, held.envelopes),
        (*seqs.last().unwrap(), seqs.len() as u64)
    );
    // A new talk is refused as well (its welcomes would not fit).
    let conn = relay.connect().await;
    let (req, _) = heavy_create(&conn.hello().challenge, 64, 8192);
    assert_eq!(code(conn.request(req).await), ErrorCode::StorageFull);

    // Acks free it: the next put is taken.
    assert_eq!(b.fetch(0).await.unwrap().len(), seqs.len());
    b.ack(*seqs.last().unwrap()).await.unwrap();
    let next = c.owner.put_raw(EnvelopeKind::Chat, big(99)).await.unwrap();
    assert_eq!(next.0, seqs.last().unwrap() + 1);
    relay.stop().await;
}

#[test]
fn the_envelope_log_opens_on_a_full_disk_and_appends_once_there_is_room() {
    use nook_vault::Log;
    let Some(disk) = Tmpfs::mount(1) else {
        eprintln!("NOTE: skipped: mounting a tmpfs is not permitted here (needs root)");
        return;
    };
    let dir = disk.path().join("log");
    let open = || {
        let mut found = Vec::new();
        let (log, _) = Log::open(&dir, 1 << 20, |r| {
            found.push(r.sealed.clone());
            true
        })
        .expect("the log opens");
        (log, found)
    };
    let (log, _) = open();
    log.append(1, b"e1", b"kept").unwrap();
    log.sync().unwrap();
    drop(log);
    let filler = disk.fill("filler");
    // Opening used to write a fresh segment first, and failed here.
    let (log, found) = open();
    assert_eq!(found, vec![b"kept".to_vec()]);
    let full = log.append(1, b"e2", &[7; 4096]);
    assert!(
        full.as_ref().is_err_and(nook_vault::log::is_disk_full),
        "{full:?}"
    );
    std::fs::remove_file(filler).unwrap();
    let loc = log.append(1, b"e2", b"after").unwrap();
    log.sync().unwrap();
    assert_eq!(log.read(loc).unwrap().sealed, b"after");
    drop(log);
    let (_log, found) = open();
    assert_eq!(found, vec![b"kept".to_vec(), b"after".to_vec()]);
}
