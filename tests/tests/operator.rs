//! The relay as its operator meets it (issue 27), with the real binaries: a store of
//! another format version is refused by name and kept byte for byte, a lost
//! `identity.key` is never replaced beside a store, `address` prints the address the
//! relay recorded, a second relay on a folder names the first by pid, and `status`
//! reads a stopped relay's store.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use nook_e2e::{Nook, Relay, Run, relay_run, text as s, two_seat_talk};

/// The texts of the messages `nook read` shows.
fn texts(n: &Nook, talk: &str) -> Vec<String> {
    n.ok(&["--json", "read", talk])
        .json_lines()
        .iter()
        .filter(|l| l["type"] == "message")
        .map(|l| s(&l["text"]))
        .collect()
}

/// Every file under `dir` with its bytes, sorted.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
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

/// The store and the identity: what a refused start must leave as it was.
fn what_must_not_change(data: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut all = snapshot(&data.join("store"));
    let key = data.join("identity.key");
    all.push((key.clone(), std::fs::read(&key).unwrap_or_default()));
    all
}

/// Fails naming the files that differ (not printing their bytes).
fn assert_same(now: &[(PathBuf, Vec<u8>)], before: &[(PathBuf, Vec<u8>)], what: &str) {
    if now != before {
        let changed: Vec<_> = now
            .iter()
            .filter(|f| !before.contains(f))
            .chain(before.iter().filter(|f| !now.contains(f)))
            .map(|(p, _)| p.display().to_string())
            .collect();
        panic!("{what}: {changed:?}");
    }
}

/// `nook-relay` started on the relay's folder and port, to completion.
fn start_again(relay: &Relay) -> Run {
    let data = relay.data_dir();
    relay_run(&[
        "--listen",
        &format!("127.0.0.1:{}", relay.port()),
        "--data",
        data.to_str().unwrap(),
    ])
}

/// A start that must fail: exit 1, one `error:` line, no address.
fn assert_refused(r: &Run) {
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stdout, "",
        "an address printed by a relay that did not start"
    );
    assert_eq!(r.stderr.lines().count(), 1, "{:?}", r.stderr);
    assert!(r.stderr.starts_with("error: "), "{:?}", r.stderr);
}

#[test]
fn a_store_of_another_format_refuses_to_start_and_is_kept_byte_for_byte() {
    let mut relay = Relay::start();
    let (a, b, ta, tb) = two_seat_talk(&relay, &[], &["--alias", "bob"]);
    for text in ["one", "two", "three"] {
        a.ok(&["send", &ta, text]);
    }
    relay.stop();
    let data = relay.data_dir();

    // What an older or newer relay would have written: a segment header naming format 2.
    let log = data.join("store/log");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::metadata(p).unwrap().len() > 8)
        .collect();
    segments.sort();
    assert_eq!(
        segments.len(),
        1,
        "one segment holds the envelopes: {segments:?}"
    );
    let segment = &segments[0];
    let honest = std::fs::read(segment).unwrap();
    assert_eq!(&honest[..8], b"nooklog1");
    let mut forged = honest.clone();
    forged[7] = b'2';
    std::fs::write(segment, &forged).unwrap();
    let before = what_must_not_change(&data);

    let r = start_again(&relay);
    assert_refused(&r);
    let name = segment.file_name().unwrap().to_str().unwrap();
    for says in [
        name,
        "log segment format 2",
        "only format 1",
        "nook-relay status",
    ] {
        assert!(r.stderr.contains(says), "{says:?} not in {:?}", r.stderr);
    }
    assert_same(
        &what_must_not_change(&data),
        &before,
        "the refused start changed the store",
    );

    // `status` tells what the folder holds, without changing it either.
    let st = relay_run(&["status", "--data", data.to_str().unwrap()]);
    assert_eq!(st.code, 0, "{st:?}");
    assert!(
        st.stdout.contains("log segments 2 (1 file)"),
        "{}",
        st.stdout
    );
    assert!(st.stdout.contains("refuses to start here"), "{}", st.stdout);
    // It opens the database as a start would (sled rewrites its own snapshot then),
    // and changes nothing else.
    let not_sled = |files: Vec<(PathBuf, Vec<u8>)>| -> Vec<(PathBuf, Vec<u8>)> {
        files
            .into_iter()
            .filter(|(p, _)| !p.to_string_lossy().contains("db.sled"))
            .collect()
    };
    assert_same(
        &not_sled(what_must_not_change(&data)),
        &not_sled(before),
        "status changed the store",
    );

    // The same for a key store of version 2.
    std::fs::write(segment, &honest).unwrap();
    let keys = data.join("store/keys.slots");
    let honest_keys = std::fs::read(&keys).unwrap();
    let mut forged_keys = honest_keys.clone();
    forged_keys[8] = 2;
    std::fs::write(&keys, &forged_keys).unwrap();
    let before = what_must_not_change(&data);
    let r = start_again(&relay);
    assert_refused(&r);
    for says in ["keys.slots", "key store format 2", "only format 1"] {
        assert!(r.stderr.contains(says), "{says:?} not in {:?}", r.stderr);
    }
    assert_same(
        &what_must_not_change(&data),
        &before,
        "the refused start changed the store",
    );

    // Put back, the relay that reads them finds every acknowledged envelope.
    std::fs::write(&keys, &honest_keys).unwrap();
    relay.restart();
    assert_eq!(texts(&b, &tb), ["one", "two", "three"]);
}

#[test]
fn a_missing_identity_beside_a_store_refuses_to_start_and_makes_nothing() {
    let mut relay = Relay::start();
    let (a, b, ta, tb) = two_seat_talk(&relay, &[], &["--alias", "bob"]);
    a.ok(&["send", &ta, "before"]);
    relay.stop();
    let data = relay.data_dir();
    let key = data.join("identity.key");
    let saved = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let store = snapshot(&data.join("store"));

    let r = start_again(&relay);
    assert_refused(&r);
    for says in [
        "identity.key is missing",
        "restore identity.key from your backup",
    ] {
        assert!(r.stderr.contains(says), "{says:?} not in {:?}", r.stderr);
    }
    assert!(!key.exists(), "a new identity was made");
    assert_same(&snapshot(&data.join("store")), &store, "the store changed");

    // Restored from the backup, it is the relay the members were given.
    std::fs::write(&key, saved).unwrap();
    relay.restart();
    b.ok(&["send", &tb, "after"]);
    assert_eq!(texts(&a, &ta), ["before", "after"]);
}

#[test]
fn address_prints_the_address_of_the_relay_that_owns_the_folder() {
    let mut relay = Relay::start();
    assert_ne!(
        relay.port(),
        4433,
        "the test needs a port other than the default"
    );
    let data = relay.data_dir();
    let data = data.to_str().unwrap();
    let address = |extra: &[&str]| {
        let mut args = vec!["address", "--data", data];
        args.extend_from_slice(extra);
        let r = relay_run(&args);
        assert_eq!(r.code, 0, "{r:?}");
        r.stdout.trim().to_string()
    };
    assert_eq!(address(&[]), relay.address, "while it runs");
    relay.stop();
    assert_eq!(address(&[]), relay.address, "while it is stopped");
    assert!(relay.address.ends_with(&format!(":{}", relay.port())));
    let public = address(&["--public-host", "Relay.Example.org"]);
    let fingerprint = relay.address.split('@').next().unwrap();
    assert_eq!(
        public,
        format!("{fingerprint}@relay.example.org:{}", relay.port())
    );

    // Garbage is refused, with what to give instead.
    let r = relay_run(&[
        "address",
        "--data",
        data,
        "--public-host",
        "relay example.org",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("is not a host name or IP address"),
        "{}",
        r.stderr
    );
    let fresh = tempfile::tempdir().unwrap();
    let never = fresh.path().join("never");
    let r = relay_run(&[
        "--public-host",
        "relay.org:4433",
        "--data",
        never.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(!never.exists());
}

#[test]
fn a_second_relay_on_a_folder_names_the_first_by_pid_and_leaves_it_serving() {
    let relay = Relay::start();
    let data = relay.data_dir();
    let recorded = std::fs::read(data.join("address")).unwrap();
    let other_port = nook_e2e::free_port();
    for port in [other_port, relay.port()] {
        let r = relay_run(&[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data",
            data.to_str().unwrap(),
        ]);
        assert_refused(&r);
        let says = format!("another nook-relay (pid {}) uses this folder", relay.pid());
        assert!(r.stderr.contains(&says), "{says:?} not in {:?}", r.stderr);
    }
    // The first one still serves, at the address it recorded.
    let (a, b, ta, tb) = two_seat_talk(&relay, &[], &["--alias", "bob"]);
    a.ok(&["send", &ta, "still here"]);
    assert_eq!(texts(&b, &tb), ["still here"]);
    assert_eq!(std::fs::read(data.join("address")).unwrap(), recorded);
}

#[test]
fn status_reads_a_stopped_relays_store_and_refuses_while_it_runs() {
    let mut relay = Relay::start();
    let (a, _b, ta, _tb) = two_seat_talk(&relay, &[], &["--alias", "bob"]);
    for text in ["one", "two", "three"] {
        a.ok(&["send", &ta, text]);
    }
    let data = relay.data_dir();
    let data = data.to_str().unwrap();
    let r = relay_run(&["status", "--data", data]);
    assert_eq!(r.code, 1, "{r:?}");
    let says = format!("nook-relay (pid {}) is running", relay.pid());
    assert!(r.stderr.contains(&says), "{says:?} not in {:?}", r.stderr);

    relay.stop();
    let r = relay_run(&["status", "--data", data]);
    assert_eq!(r.code, 0, "{r:?}");
    let field = |name: &str| -> String {
        r.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name:?} in {}", r.stdout))
            .trim()
            .to_string()
    };
    assert_eq!(field("talks"), "1");
    let envelopes: u64 = field("envelopes")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(envelopes >= 3, "{}", r.stdout);
    assert!(
        field("formats").starts_with("key store 1, vault 3, log segments 1"),
        "{}",
        r.stdout
    );
    assert!(field("address").starts_with(&relay.address), "{}", r.stdout);
    let bytes: u64 = field("bytes")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(bytes > 0);
}
