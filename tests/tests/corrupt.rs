//! Faults on disk, read back: a relay whose envelope log has a flipped byte or a
//! truncated segment recovers every intact acknowledged envelope (and says what it
//! could not), and a member whose home is damaged gets an error that says what is
//! wrong and what to do — never a panic, never a silently shorter history.

use std::path::{Path, PathBuf};

use nook_e2e::{Nook, Relay, two_seat_talk};

/// Every file under `dir` whose name ends with `suffix`.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The (offset, length) of each record of a log segment (`len` u32 LE, `crc`, body;
/// after the 8-byte magic: `crates/vault/src/log.rs`).
fn records(segment: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 8;
    while let Some(h) = segment.get(at..at + 8) {
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if at + 8 + len > segment.len() {
            break;
        }
        out.push((at, 8 + len));
        at += 8 + len;
    }
    out
}

/// A relay with a talk of ann and bob, and `n` messages ann sent (acknowledged) that
/// bob has not read; then the relay is stopped. Returns the segment holding them.
fn relay_with_unread(n: usize) -> (Relay, Nook, Nook, String, Vec<String>, PathBuf) {
    let mut relay = Relay::start();
    let (ann, bob, ann_talk, bob_talk) = two_seat_talk(&relay, &[], &[]);
    // bob reads what the join left, so that only ann's messages are unread.
    bob.ok(&["read", &bob_talk]);
    let texts: Vec<String> = (0..n).map(|i| format!("kept {i}")).collect();
    for t in &texts {
        ann.ok(&["send", &ann_talk, t]);
    }
    relay.stop();
    let segment = files(&relay.data_dir(), ".seg")
        .into_iter()
        .max_by_key(|p| records(&std::fs::read(p).unwrap_or_default()).len())
        .expect("a log segment");
    (relay, ann, bob, bob_talk, texts, segment)
}

fn read_texts(bob: &Nook, talk: &str) -> Vec<String> {
    bob.ok(&["--json", "read", talk])
        .json_lines()
        .iter()
        .filter(|v| v["type"] == "message")
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect()
}

/// A byte flipped inside one acknowledged envelope in the middle of a segment: the
/// relay starts, serves every other envelope (the ones after the damage too), and
/// logs that one record was damaged and skipped.
#[test]
fn flipped_byte_mid_segment_loses_only_the_damaged_envelope() {
    let (mut relay, _ann, bob, talk, texts, segment) = relay_with_unread(6);
    let mut bytes = std::fs::read(&segment).expect("segment");
    let recs = records(&bytes);
    assert!(recs.len() >= 6, "{recs:?}");
    // The third of ann's six: two intact envelopes follow it.
    let (at, len) = recs[recs.len() - 4 + 1];
    bytes[at + len - 5] ^= 0x40;
    std::fs::write(&segment, &bytes).expect("write");

    relay.restart();
    let got = read_texts(&bob, &talk);
    let missing: Vec<&String> = texts.iter().filter(|t| !got.contains(t)).collect();
    assert_eq!(missing, [&texts[3]], "got {got:?}");
    let log = relay.log();
    assert!(
        log.contains("damaged"),
        "the relay did not say what it lost: {log}"
    );
}

/// A segment cut short in its last record (a torn tail): every record before the
/// cut is served; the relay says it ignored a torn tail.
#[test]
fn truncated_segment_keeps_every_record_before_the_cut() {
    let (mut relay, _ann, bob, talk, texts, segment) = relay_with_unread(4);
    let bytes = std::fs::read(&segment).expect("segment");
    let (at, len) = *records(&bytes).last().expect("a record");
    std::fs::write(&segment, &bytes[..at + len / 2]).expect("truncate");

    relay.restart();
    let got = read_texts(&bob, &talk);
    assert_eq!(got, texts[..3], "the intact envelopes before the cut");
    assert!(relay.log().contains("interrupted"), "{}", relay.log());
}

/// What a damaged home gives: an error with a kind and a hint (not a panic, whose
/// exit code is 101), or the full history.
fn assert_refused_or_whole(run: &nook_e2e::Run, want: &[String], got: &[String]) {
    assert_ne!(run.code, 101, "nook panicked: {}", run.stderr);
    if run.code == 0 {
        assert_eq!(got, want, "a damaged home read back a different history");
    } else {
        assert!(
            run.stderr.contains("\"kind\"") && run.stderr.contains("\"error\""),
            "{run:?}"
        );
    }
}

fn member_with_history() -> (Relay, Nook, String, Vec<String>) {
    let relay = Relay::start();
    let (ann, bob, ann_talk, bob_talk) = two_seat_talk(&relay, &[], &[]);
    let texts: Vec<String> = (0..3).map(|i| format!("home {i}")).collect();
    for t in &texts {
        ann.ok(&["send", &ann_talk, t]);
    }
    assert_eq!(read_texts(&bob, &bob_talk), texts);
    (relay, bob, bob_talk, texts)
}

fn history(bob: &Nook, talk: &str) -> (nook_e2e::Run, Vec<String>) {
    let run = bob.run(&["--json", "--connect-timeout", "2s", "read", talk]);
    let got = if run.code == 0 {
        run.json_lines()
            .iter()
            .filter(|v| v["type"] == "message")
            .filter_map(|v| v["text"].as_str().map(str::to_string))
            .collect()
    } else {
        Vec::new()
    };
    (run, got)
}

/// A member's key store with a flipped byte in a key slot, or cut short.
#[test]
fn damaged_member_key_store_is_refused_with_a_clear_error() {
    for damage in ["flip", "truncate"] {
        let (_relay, bob, talk, texts) = member_with_history();
        let keys = files(&bob.home_dir(), "keys.slots")
            .pop()
            .expect("keys.slots");
        let mut bytes = std::fs::read(&keys).expect("keys");
        match damage {
            "flip" => {
                let at = bytes.len() - 40;
                bytes[at] ^= 0x01;
            }
            _ => bytes.truncate(bytes.len() - 7),
        }
        std::fs::write(&keys, &bytes).expect("write");
        let (run, got) = history(&bob, &talk);
        assert_refused_or_whole(&run, &texts, &got);
        assert_ne!(
            run.code, 0,
            "{damage}: a damaged key store was used: {run:?}"
        );
        eprintln!("{damage}: {}", run.stderr.trim());
    }
}

/// Bytes flipped across a member's sled database: refused clearly or read whole.
#[test]
fn damaged_member_database_is_refused_or_read_whole() {
    let (_relay, bob, talk, texts) = member_with_history();
    let db = files(&bob.home_dir(), "db")
        .into_iter()
        .chain(files(&bob.home_dir(), "snap"))
        .collect::<Vec<_>>();
    assert!(
        !db.is_empty(),
        "no sled files under {}",
        bob.home_dir().display()
    );
    for f in &db {
        let mut bytes = std::fs::read(f).expect("db");
        let len = bytes.len();
        for k in 1..8 {
            if len > 0 {
                bytes[len * k / 8] ^= 0x5a;
            }
        }
        std::fs::write(f, &bytes).expect("write");
    }
    let (run, got) = history(&bob, &talk);
    assert_refused_or_whole(&run, &texts, &got);
    eprintln!("exit {}: {}", run.code, run.stderr.trim());
}
