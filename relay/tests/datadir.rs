//! The data folder as an operator meets it (issue 27): a store of another format
//! version, a lost or swapped identity, a second relay on the folder, a folder of
//! another user. Each start that must fail fails with a typed error that says what to
//! do, and leaves the store byte for byte as it was.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use nook_proto::*;
use nook_relay::engine::EngineError;
use nook_relay::identity::IdentityError;
use nook_relay::server::StartError;
use nook_relay::{Config, Relay};
use nook_vault::{FormatOf, VaultError};

/// Every file under `dir` with its bytes, sorted (nothing when it does not exist).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push((p.clone(), Vec::new()));
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn start_in(dir: &Path) -> Result<Relay, StartError> {
    Relay::start(Config::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.to_path_buf(),
    ))
}

/// A stopped relay's folder whose store holds a talk with `n` chat envelopes that
/// the relay acknowledged and no recipient has yet; and how many records are live.
async fn folder_with_envelopes(n: u8) -> (tempfile::TempDir, u64) {
    let relay = TestRelay::start();
    let c = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let _b = join(&relay, c.owner.mailbox, &c.seats[0]).await;
    for i in 0..n {
        c.owner.put(EnvelopeKind::Chat, &[i]).await.unwrap();
    }
    let live = relay.engine.log_stats().live_records;
    assert!(live >= u64::from(n), "{live}");
    (relay.stop().await, live)
}

/// The segment files of the folder's envelope log that hold records.
fn full_segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.join("store/log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::metadata(p).unwrap().len() > 8)
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_log_segment_of_another_format_refuses_the_start_and_is_kept_byte_for_byte() {
    let (dir, live) = folder_with_envelopes(3).await;
    let segments = full_segments(dir.path());
    assert_eq!(segments.len(), 1, "{segments:?}");
    let segment = &segments[0];
    let honest = std::fs::read(segment).unwrap();
    let mut forged = honest.clone();
    assert_eq!(&forged[..8], b"nooklog1");
    forged[7] = b'2';
    std::fs::write(segment, &forged).unwrap();
    let store = dir.path().join("store");
    let before = snapshot(&store);

    let err = start_in(dir.path()).unwrap_err();
    match &err {
        StartError::Store(EngineError::Vault(VaultError::UnsupportedFormat {
            file,
            what: FormatOf::LogSegment,
            found: 2,
            supported: [1],
        })) => assert_eq!(file, segment),
        other => panic!("expected a format refusal, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("log segment format 2") && text.contains("only format 1"),
        "{text}"
    );
    assert_eq!(snapshot(&store), before, "the store was changed");

    // The version that wrote it (here: the header put back) finds every envelope.
    std::fs::write(segment, &honest).unwrap();
    let relay = start_in(dir.path()).unwrap();
    assert_eq!(relay.engine().log_stats().live_records, live);
}

#[tokio::test]
async fn a_key_store_of_another_format_refuses_the_start_and_is_kept_byte_for_byte() {
    let (dir, live) = folder_with_envelopes(3).await;
    let keys = dir.path().join("store/keys.slots");
    let honest = std::fs::read(&keys).unwrap();
    let mut forged = honest.clone();
    forged[8] = 7;
    std::fs::write(&keys, &forged).unwrap();
    let store = dir.path().join("store");
    let before = snapshot(&store);

    let err = start_in(dir.path()).unwrap_err();
    assert!(
        matches!(
            &err,
            StartError::Store(EngineError::Vault(VaultError::UnsupportedFormat {
                what: FormatOf::KeyStore,
                found: 7,
                ..
            }))
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("key store format 7"), "{err}");
    assert_eq!(snapshot(&store), before, "the store was changed");

    std::fs::write(&keys, &honest).unwrap();
    let relay = start_in(dir.path()).unwrap();
    assert_eq!(relay.engine().log_stats().live_records, live);
}

#[tokio::test]
async fn a_missing_identity_beside_a_store_refuses_the_start_and_makes_nothing() {
    let (dir, _) = folder_with_envelopes(1).await;
    let key = dir.path().join("identity.key");
    let fingerprint = nook_relay::identity::peek_fingerprint(dir.path())
        .unwrap()
        .unwrap();
    std::fs::remove_file(&key).unwrap();
    let before = snapshot(&dir.path().join("store"));

    let err = start_in(dir.path()).unwrap_err();
    assert!(
        matches!(&err, StartError::Identity(IdentityError::Missing { owner: Some(fp), .. })
            if *fp == fingerprint),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("identity.key is missing"), "{text}");
    assert!(
        text.contains("restore identity.key from your backup"),
        "{text}"
    );
    assert!(!key.exists(), "a new identity was made");
    assert_eq!(snapshot(&dir.path().join("store")), before);

    // A damaged key is not replaced either.
    std::fs::write(&key, b"not a key").unwrap();
    let err = start_in(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StartError::Identity(IdentityError::Corrupt { len: 9, .. })
        ),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&key).unwrap(), b"not a key");
}

#[tokio::test]
async fn another_identity_beside_a_store_refuses_the_start() {
    let (dir, live) = folder_with_envelopes(1).await;
    let key = dir.path().join("identity.key");
    let honest = std::fs::read(&key).unwrap();
    std::fs::write(&key, [9u8; 32]).unwrap();
    let before = snapshot(&dir.path().join("store"));
    let err = start_in(dir.path()).unwrap_err();
    assert!(
        matches!(&err, StartError::Identity(IdentityError::Mismatch { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("from your backup"), "{err}");
    assert_eq!(snapshot(&dir.path().join("store")), before);
    std::fs::write(&key, honest).unwrap();
    let relay = start_in(dir.path()).unwrap();
    assert_eq!(relay.engine().log_stats().live_records, live);
}

#[tokio::test]
async fn a_store_without_an_owner_record_adopts_the_identity_once() {
    let (dir, _) = folder_with_envelopes(1).await;
    let owner = dir.path().join("store/owner");
    // As an older relay left it.
    std::fs::remove_file(&owner).unwrap();
    drop(start_in(dir.path()).unwrap());
    let fingerprint = nook_relay::identity::peek_fingerprint(dir.path())
        .unwrap()
        .unwrap();
    assert!(
        std::fs::read_to_string(&owner)
            .unwrap()
            .contains(&fingerprint.to_string())
    );
    std::fs::write(dir.path().join("identity.key"), [9u8; 32]).unwrap();
    assert!(matches!(
        start_in(dir.path()),
        Err(StartError::Identity(IdentityError::Mismatch { .. }))
    ));
}

#[tokio::test]
async fn a_second_relay_on_the_folder_names_the_first_by_pid_and_leaves_it_serving() {
    let relay = TestRelay::start();
    let dir = relay.data_dir();
    let address = std::fs::read_to_string(dir.join("address")).unwrap();
    let pid = std::process::id();
    let taken: std::net::SocketAddr = relay.addr.host_port().parse().unwrap();
    // On another port, and on the first one's port: either way the lock answers.
    for listen in ["127.0.0.1:0".parse().unwrap(), taken] {
        let err = Relay::start(Config::new(listen, dir.clone())).unwrap_err();
        assert!(
            matches!(&err, StartError::Identity(IdentityError::InUse { pid: Some(p), .. }) if *p == pid),
            "{listen}: {err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("another nook-relay (pid {pid}) uses this folder")),
            "{err}"
        );
    }
    // The first is unharmed: it serves, and its recorded address is its own.
    let c = create(&relay, 2, 2, ClosePolicy::Owner).await;
    assert_eq!(c.status.members, 1);
    assert_eq!(
        std::fs::read_to_string(dir.join("address")).unwrap(),
        address
    );
    assert_eq!(address.trim(), relay.addr.to_string());
    relay.stop().await;
}

#[tokio::test]
async fn a_folder_of_another_user_is_refused_before_anything_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("theirs");
    std::fs::create_dir(&data).unwrap();
    // Only root can give a folder away; elsewhere this case cannot be set up.
    if std::os::unix::fs::chown(&data, Some(65534), Some(65534)).is_err() {
        return;
    }
    let err = start_in(&data).unwrap_err();
    assert!(
        matches!(
            &err,
            StartError::Identity(IdentityError::NotOwner { owner: 65534, .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("belongs to user 65534"), "{err}");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
}

#[tokio::test]
async fn a_bad_public_host_is_refused_before_anything_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("new");
    let mut config = Config::new("127.0.0.1:0".parse().unwrap(), data.clone());
    config.public_host = Some("relay example.org".into());
    let err = Relay::start(config).unwrap_err();
    assert!(matches!(err, StartError::PublicHost(_)), "{err:?}");
    assert!(!data.exists());
}
