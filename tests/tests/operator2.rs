//! The relay as its operator meets it, part two (issue 27): a relay's own bound on a
//! talk's time-to-live, and logs at debug that say what happened without saying to
//! whom (no mailbox ids, keys or client addresses, no quinn/rustls internals).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nook_e2e::{Nook, Relay, bin, free_port, text as s};

/// A relay started with `RUST_LOG=<filter>`, its stderr in `dir/relay.log`; its
/// address and port.
struct LoggedRelay {
    child: Child,
    address: String,
    port: u16,
    log: std::path::PathBuf,
}

impl LoggedRelay {
    fn start(dir: &Path, filter: &str) -> LoggedRelay {
        LoggedRelay::start_with(dir, filter, &[])
    }

    fn start_with(dir: &Path, filter: &str, args: &[&str]) -> LoggedRelay {
        let port = free_port();
        let log = dir.join("relay.log");
        let mut child = Command::new(bin("nook-relay"))
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(dir.join("relay"))
            .env("RUST_LOG", filter)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("nook://"), "relay printed {line:?}");
        LoggedRelay {
            child,
            address: line.trim().to_string(),
            port,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// Waits (well inside the 60 s idle timeout) until the log holds `n` lines saying
    /// a client closed its connection; returns the log.
    fn wait_for_closes(&self, n: usize) -> String {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if closed_by_client(&log) >= n || Instant::now() > until {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LoggedRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connections the relay saw a client end (its close, or the end of its stream).
fn closed_by_client(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("connection ended"))
        .filter(|l| {
            l.contains("closed by the client (code 0)") || l.contains("finished its stream")
        })
        .count()
}

/// Runs of at least `n` hex digits in `text`.
fn hex_runs(text: &str, n: usize) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() >= n)
        .map(str::to_string)
        .collect()
}

#[test]
fn a_relay_refuses_a_talk_longer_than_its_max_ttl_naming_the_maximum() {
    let relay = Relay::start_with(&["--max-ttl", "1h"]);
    let a = Nook::new();
    let r = a.run(&["new", "--relay", &relay.address, "--ttl", "2h"]);
    assert_eq!(r.code, 5, "stdout {} stderr {}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("1h") && r.stderr.contains("3600 s"),
        "the refusal names the relay's maximum: {}",
        r.stderr
    );
    // Within the bound, the same relay makes the talk.
    a.ok(&["new", "--relay", &relay.address, "--ttl", "30m"]);
}

/// At debug, the relay says what kinds of requests it served, what it refused and how
/// each connection ended; it never names a mailbox, a key or a client's address, and
/// `RUST_LOG=debug` does not switch on quinn's or rustls's own debug output (which
/// carries client addresses). Every one-shot `nook` command that succeeds ends its
/// connection itself: the relay logs each as closed by the client rather than holding
/// it until the idle timeout.
#[test]
fn debug_logs_name_kinds_and_codes_never_ids_keys_or_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let relay = LoggedRelay::start_with(dir.path(), "debug", &["--max-ttl", "1h"]);
    let (a, b) = (Nook::new(), Nook::new());
    let new = a
        .ok(&[
            "--json",
            "new",
            "--relay",
            &relay.address,
            "--alias",
            "ann",
            "--ttl",
            "30m",
        ])
        .json();
    assert_eq!(
        closed_by_client(&relay.wait_for_closes(1)),
        1,
        "{}",
        relay.log()
    );
    b.ok(&["join", &s(&new["invites"][0]), "--alias", "bob"]);
    assert_eq!(
        closed_by_client(&relay.wait_for_closes(2)),
        2,
        "{}",
        relay.log()
    );
    let ta = s(&new["talk"]);
    a.ok(&["send", &ta, "hello bob"]);
    let after_send = closed_by_client(&relay.wait_for_closes(3));
    assert!(after_send >= 3, "{}", relay.log());
    // A refused command: logged by its code (its connection's close: see below).
    let refused = a.run(&["new", "--relay", &relay.address, "--ttl", "2h"]);
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    let before_close = closed_by_client(&relay.log());
    let closed = a.ok(&["--json", "close", &ta]).json_lines();
    let mailbox = closed
        .iter()
        .find_map(|l| l["receipt"]["mailbox"].as_str().or(l["mailbox"].as_str()))
        .unwrap_or_else(|| panic!("no receipt: {closed:?}"))
        .to_string();
    assert_eq!(mailbox.len(), 32, "{mailbox}");
    let log = relay.wait_for_closes(before_close + 1);
    assert!(closed_by_client(&log) > before_close, "{log}");

    for kind in [
        "kind=\"create\"",
        "kind=\"join\"",
        "kind=\"put\"",
        "kind=\"close\"",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(" request") && l.contains(kind)),
            "no {kind} request line: {log}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.contains("refused") && l.contains("code=BadRequest")),
        "the refused create is logged by its code: {log}"
    );
    assert!(!log.contains(&mailbox), "the mailbox id is logged: {log}");
    // Keys and ids would show as long hex runs; the log has none at all.
    assert!(hex_runs(&log, 32).is_empty(), "{:?}", hex_runs(&log, 32));
    // The only address in the log is the relay's own listen address.
    let own = format!("127.0.0.1:{}", relay.port);
    for (i, _) in log.match_indices("127.0.0.1:") {
        assert!(
            log[i..].starts_with(&own),
            "a client address is logged: {log}"
        );
    }
    for crate_name in ["quinn", "rustls"] {
        assert!(
            !log.contains(crate_name),
            "{crate_name}'s own output is on at RUST_LOG=debug: {log}"
        );
    }
}

/// A command the relay refuses ends its connection as promptly as one that succeeded.
///
/// Ignored, failing today: `RelayConnection`'s drop closes the connection, but `nook`
/// leaves its single-threaded runtime at once, so the connection's driver never sends
/// the close and the relay holds the slot until the 60 s idle timeout. The fix is one
/// more turn of the runtime in `client-cli/src/main.rs` after `run` returns (or
/// `close().await` on the error paths of `crates/client/src/api.rs`).
#[test]
fn a_refused_command_closes_its_connection_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let relay = LoggedRelay::start_with(dir.path(), "nook_relay=debug", &["--max-ttl", "1h"]);
    let refused = Nook::new().run(&["new", "--relay", &relay.address, "--ttl", "2h"]);
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    let log = relay.wait_for_closes(1);
    assert_eq!(closed_by_client(&log), 1, "{log}");
}

/// Even `RUST_LOG=trace` leaves quinn (which logs every packet's source address) and
/// rustls at warn: they are off unless named.
#[test]
fn trace_for_all_does_not_switch_on_quinn_or_rustls() {
    let dir = tempfile::tempdir().unwrap();
    let relay = LoggedRelay::start(dir.path(), "trace");
    Nook::new().ok(&["new", "--relay", &relay.address]);
    let log = relay.wait_for_closes(1);
    assert!(log.contains("kind=\"create\""), "{log}");
    let own = format!("127.0.0.1:{}", relay.port);
    for (i, _) in log.match_indices("127.0.0.1:") {
        assert!(log[i..].starts_with(&own), "a client address is logged");
    }
    assert!(!log.contains("quinn") && !log.contains("rustls"));
}

/// An operator who asks for quinn by name gets it.
#[test]
fn quinn_trace_is_on_when_named() {
    let dir = tempfile::tempdir().unwrap();
    let relay = LoggedRelay::start(dir.path(), "nook_relay=info,quinn_proto=trace");
    Nook::new().ok(&["new", "--relay", &relay.address]);
    let until = Instant::now() + Duration::from_secs(10);
    while !relay.log().contains("quinn") && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(relay.log().contains("quinn"), "{}", relay.log());
}

#[test]
fn the_status_line_comes_at_the_interval_the_operator_sets() {
    let relay = Relay::start_with(&["--status-every", "1s"]);
    // Polled, bounded: the line is due a second after the start.
    let mut log = String::new();
    for _ in 0..100 {
        log = relay.log();
        if log.contains("status") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(log.contains("status"), "{log}");
    assert!(
        log.contains("connections=0") && log.contains("refused_at_limit=0"),
        "{log}"
    );
}
