//! The command lines behave alike (issue 21, point 7), checked with the real binaries:
//! bad values are usage errors (exit 2) found before anything is opened or sent,
//! `--json` turns usage errors into the same JSON object as every other error, `--ttl`
//! takes compound durations, `nook invites` is for the owner only, and a relay that
//! cannot start says what to do in one line and leaves nothing behind.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nook_e2e::{Nook, Relay, bin, free_port, text as s};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A well-formed relay address where nothing listens: if `nook` ever tried it, the
/// command would end with exit 4 (unreachable), not 2.
fn closed_relay() -> String {
    format!(
        "nook://{}@127.0.0.1:{}",
        nook_crypto::Fingerprint([7; 32]),
        free_port()
    )
}

/// The one JSON error object a failed `--json` command printed on stderr.
fn json_error(stderr: &str) -> serde_json::Value {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr:?}");
    let v: serde_json::Value =
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {}", lines[0]));
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["error", "exit_code", "kind"], "{v}");
    v
}

#[test]
fn bad_seats_quorum_and_alias_are_usage_errors_before_anything_is_opened() {
    let relay = closed_relay();
    let long = "x".repeat(65);
    let cases: [(&[&str], &str); 8] = [
        (&["--seats", "0"], "--seats"),
        (&["--seats", "1"], "--seats"),
        (&["--seats", "65"], "--seats"),
        (&["--quorum", "0"], "--quorum"),
        (&["--seats", "3", "--quorum", "4"], "--quorum"),
        (&["--alias", ""], "--alias"),
        (&["--alias", "tab\there"], "--alias"),
        (&["--alias", &long], "--alias"),
    ];
    for (extra, flag) in cases {
        let a = Nook::new();
        let mut args = vec!["new", "--relay", &relay];
        args.extend_from_slice(extra);
        let r = a.run(&args);
        assert_eq!(r.code, 2, "nook {args:?}: {r:?}");
        assert!(r.stderr.contains(flag), "nook {args:?}: {}", r.stderr);
        // Refused while parsing the command line: not even the home folder was made.
        assert!(!a.home_dir().exists(), "nook {args:?} opened its home");
    }
}

#[test]
fn usage_errors_under_json_are_one_json_object_of_kind_usage() {
    let relay = closed_relay();
    let a = Nook::new();
    for args in [
        vec!["--json", "list", "--bogus"],
        vec!["--json", "send"],
        vec!["--json", "frobnicate"],
        vec!["--json", "new", "--relay", &relay, "--ttl", "1h30"],
        // --json anywhere before `--` counts, also after the bad value.
        vec!["new", "--relay", &relay, "--seats", "0", "--json"],
        vec![
            "--json", "new", "--relay", &relay, "--seats", "3", "--quorum", "4",
        ],
    ] {
        let r = a.run(&args);
        assert_eq!(r.code, 2, "nook {args:?}: {r:?}");
        assert_eq!(r.stdout, "", "nook {args:?}");
        let err = json_error(&r.stderr);
        assert_eq!(err["kind"], "usage", "nook {args:?}");
        assert_eq!(err["exit_code"], 2, "nook {args:?}");
        assert!(!s(&err["error"]).is_empty());
    }
    // Without --json, clap's own text.
    let r = a.run(&["list", "--bogus"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.starts_with("error: unexpected argument '--bogus'"),
        "{}",
        r.stderr
    );
    // Help and version are not errors, --json or not.
    let r = a.run(&["--json", "list", "--help"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("Usage: nook list"), "{}", r.stdout);
    let r = a.run(&["--json", "--version"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("nook "), "{}", r.stdout);
    // Every other error carries its kind as well.
    let r = a.run(&["--json", "send", "ffff", "x"]);
    assert_eq!(r.code, 3);
    assert_eq!(json_error(&r.stderr)["kind"], "talk_unknown");
}

#[test]
fn ttl_takes_compound_durations_and_quorum_follows_the_relay_rule() {
    let relay = Relay::start();
    for (ttl, secs) in [("1h30m", 5400), ("2d12h", 216_000)] {
        let a = Nook::new();
        let before = now_secs();
        let new = a
            .ok(&["--json", "new", "--relay", &relay.address, "--ttl", ttl])
            .json();
        let after = now_secs();
        let expires = new["expires_at"].as_u64().unwrap();
        // The relay's clock is this machine's; allow a second of rounding either way.
        assert!(
            (before + secs - 1..=after + secs + 1).contains(&expires),
            "--ttl {ttl}: expires_at {expires}, created between {before} and {after}"
        );
    }
    // The relay takes any quorum from 1 to seats; so does `nook new`.
    let a = Nook::new();
    let new = a
        .ok(&[
            "--json",
            "new",
            "--relay",
            &relay.address,
            "--seats",
            "2",
            "--quorum",
            "1",
        ])
        .json();
    assert_eq!(new["state"], "open", "{new}");
}

#[test]
fn only_the_owner_holds_invites() {
    let relay = Relay::start();
    let (a, b) = (Nook::new(), Nook::new());
    let new = a
        .ok(&["--json", "new", "--relay", &relay.address, "--seats", "3"])
        .json();
    let ta = s(&new["talk"]);
    b.ok(&["join", &s(&new["invites"][0])]);
    let tb = b.only_talk();

    let r = b.run(&["invites", &tb]);
    assert_eq!(r.code, 5, "{r:?}");
    assert_eq!(r.stdout, "");
    assert!(r.stderr.contains("only the owner"), "{}", r.stderr);
    let r = b.run(&["--json", "invites", &tb]);
    assert_eq!(r.code, 5, "{r:?}");
    assert_eq!(json_error(&r.stderr)["kind"], "not_owner");

    // The owner, once it has fetched the join, sees the one invite left.
    a.ok(&["read", &ta]);
    let owner = a.ok(&["--json", "invites", &ta]).json();
    assert_eq!(
        owner["invites"].as_array().map(Vec::len),
        Some(1),
        "{owner}"
    );
    assert_eq!(owner["invites"][0], new["invites"][1]);
}

/// A `nook-relay` started by this test, killed on drop.
struct RelayProcess(Child);

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn relay_command(port: u16, data: &Path) -> Command {
    let mut c = Command::new(bin("nook-relay"));
    c.args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data)
        .stdin(Stdio::null())
        // What the relay would choose itself, not what this test runs under.
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG");
    c
}

/// Waits (bounded) until `file` holds `needle`, and returns what it holds.
fn wait_for_text(file: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_relay_on_a_taken_port_says_use_listen_in_one_line_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();

    // The first relay, its stderr in a file (not a terminal).
    let log = dir.path().join("first.log");
    let mut first = relay_command(port, &dir.path().join("first"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(first.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _first = RelayProcess(first);
    assert!(line.starts_with("nook://"), "first relay printed {line:?}");
    let logged = wait_for_text(&log, "relay listening");
    assert!(logged.contains("relay listening"), "{logged:?}");
    assert!(!logged.contains('\x1b'), "colour in a log file: {logged:?}");

    // The second, on the same port, with a data folder that does not exist yet.
    let data = dir.path().join("second");
    let second = relay_command(port, &data)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut second = RelayProcess(second);
    while second.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = second.0.try_wait().unwrap();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the second relay should fail at once, got {status:?}"
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.0.stderr.take().unwrap(), &mut stderr).unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut second.0.stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(stdout, "", "no address for a relay that did not start");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr:?}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr:?}");
    assert!(stderr.contains("--listen"), "{stderr:?}");
    assert!(
        !stderr.to_lowercase().contains("stack backtrace"),
        "{stderr:?}"
    );
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    assert!(
        !data.exists(),
        "a relay that could not listen created {}",
        data.display()
    );
}
