//! Starting a relay where it cannot listen: a typed "address in use" error, and the
//! data folder exactly as it was (nothing made, nothing removed).

#![allow(clippy::unwrap_used)]

use std::path::Path;

use nook_relay::server::StartError;
use nook_relay::{Config, Relay};

/// Every file under `dir` with its bytes, sorted (nothing when it does not exist).
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push((p.display().to_string(), Vec::new()));
                stack.push(p);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_taken_port_fails_before_anything_is_created_or_changed() {
    let dir = tempfile::tempdir().unwrap();
    let first = Relay::start(Config::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("first"),
    ))
    .unwrap();
    let taken = first.local_addr().unwrap();

    // A data folder that does not exist: it is not made.
    let fresh = dir.path().join("fresh");
    let err = Relay::start(Config::new(taken, fresh.clone())).unwrap_err();
    assert!(
        matches!(err, StartError::AddrInUse { addr } if addr == taken),
        "{err:?}"
    );
    assert!(err.to_string().contains("already in use"), "{err}");
    assert!(!fresh.exists(), "{} was created", fresh.display());

    // A folder with an identity and nothing else (as a relay's, before its store
    // was made): left exactly as it was, no store added, nothing removed.
    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("identity.key"), [7u8; 32]).unwrap();
    let before = snapshot(&existing);
    let err = Relay::start(Config::new(taken, existing.clone())).unwrap_err();
    assert!(matches!(err, StartError::AddrInUse { .. }), "{err:?}");
    assert_eq!(snapshot(&existing), before);
    drop(first);
}
