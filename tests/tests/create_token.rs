//! Who may create talks on a relay (issue 25), with the real binaries: a relay whose
//! operator set a creation token creates talks only for holders of it, while invitees
//! join and talk without it; and a flood of creates from one address is refused,
//! counted in answers, not in time.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nook_e2e::{Nook, Relay, Run, bin, relay_run, text};

const TOKEN: &str = "kT4v-personal-relay-9QzX";

/// A 0600 file holding `content`.
fn token_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `nook --json new --relay <relay>` in `nook`'s home, with `args` added and
/// `NOOK_CREATE_TOKEN` set to `env` (or unset).
fn new_talk(nook: &Nook, relay: &Relay, args: &[&str], env: Option<&str>) -> Run {
    let mut c = Command::new(bin("nook"));
    c.arg("--home")
        .arg(nook.home_dir())
        .args(["--json", "new", "--relay", &relay.address])
        .args(args)
        .env_remove("NOOK_CREATE_TOKEN")
        .stdin(Stdio::null());
    if let Some(v) = env {
        c.env("NOOK_CREATE_TOKEN", v);
    }
    c.output().unwrap().into()
}

/// The `kind` of a `--json` error on stderr.
fn error_kind(run: &Run) -> String {
    let line = run.stderr.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("not a JSON error ({e}): {}", run.stderr));
    text(&v["kind"])
}

#[test]
fn a_relay_with_a_creation_token_creates_talks_only_for_its_holders() {
    let files = tempfile::tempdir().unwrap();
    // As an operator writes it: a trailing newline is not part of the token.
    let good = token_file(files.path(), "token", &format!("{TOKEN}\n"));
    let wrong = token_file(files.path(), "wrong", "kT4v-personal-relay-0000\n");
    let relay = Relay::start_with(&["--create-token-file", good.to_str().unwrap()]);
    let ann = Nook::new();

    for (args, env) in [
        (vec![], None),
        (vec!["--create-token-file", wrong.to_str().unwrap()], None),
        (vec![], Some("kT4v-personal-relay-0000")),
        // The file wins over the environment.
        (
            vec!["--create-token-file", wrong.to_str().unwrap()],
            Some(TOKEN),
        ),
    ] {
        let run = new_talk(&ann, &relay, &args, env);
        assert_eq!(run.code, 5, "{args:?} {env:?}: {}", run.stderr);
        assert_eq!(error_kind(&run), "create_refused", "{}", run.stderr);
        assert!(
            run.stderr.contains("--create-token-file FILE")
                && run.stderr.contains("NOOK_CREATE_TOKEN"),
            "the hint says how to give the token: {}",
            run.stderr
        );
    }
    let none = ann.ok(&["--json", "list"]);
    assert!(
        none.stdout.trim().is_empty(),
        "a refused create left a talk"
    );

    // The token from the environment, and from a file.
    let by_env = new_talk(&ann, &relay, &[], Some(TOKEN));
    assert_eq!(by_env.code, 0, "{}", by_env.stderr);
    let by_file = new_talk(
        &ann,
        &relay,
        &["--create-token-file", good.to_str().unwrap()],
        None,
    );
    assert_eq!(by_file.code, 0, "{}", by_file.stderr);
    let created = by_file.json();
    let invite = text(&created["invites"][0]);
    assert!(!invite.contains(TOKEN), "the invite carries the token");

    // The invitee has no token and needs none: join, talk, read; the owner closes.
    let bea = Nook::new();
    bea.ok(&["join", &invite]);
    let talk = bea.only_talk();
    bea.ok(&["send", &talk, "no token here"]);
    let owners = text(&created["talk"]);
    let read = ann.ok(&["--json", "read", &owners]);
    assert!(read.stdout.contains("no token here"), "{}", read.stdout);
    ann.ok(&["send", &owners, "nor here"]);
    ann.ok(&["close", &owners]);

    // The token never reaches a log, an output or the home.
    assert!(!relay.log().contains(TOKEN), "{}", relay.log());
    for run in [&by_env, &by_file] {
        assert!(!run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN));
    }
    assert!(!nook_e2e::contains(
        &nook_e2e::all_bytes(ann.home.path()),
        TOKEN.as_bytes()
    ));
}

#[test]
fn the_relay_tells_its_operator_how_to_give_the_token_and_refuses_a_weak_one() {
    let files = tempfile::tempdir().unwrap();
    let good = token_file(files.path(), "token", TOKEN);
    let relay = Relay::start_with(&["--create-token-file", good.to_str().unwrap()]);
    // Written just after the address line: polled for, within a bound.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !relay.log().contains("invitees need no token") && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let log = relay.log();
    assert!(
        log.contains("nook new --create-token-file FILE") && log.contains("invitees need no token"),
        "{log}"
    );
    assert!(!log.contains(TOKEN));
    let data = relay.data_dir();
    let address = relay_run(&[
        "address",
        "--data",
        data.to_str().unwrap(),
        "--create-token-file",
        good.to_str().unwrap(),
    ]);
    assert_eq!(address.code, 0, "{}", address.stderr);
    assert_eq!(address.stdout.trim(), relay.address);
    assert!(
        address.stderr.contains("--create-token-file"),
        "{}",
        address.stderr
    );
    assert!(!address.stdout.contains(TOKEN) && !address.stderr.contains(TOKEN));

    // A short token, a missing file: the relay does not start, and says why.
    let short = token_file(files.path(), "short", "hunter2\n");
    let scratch = tempfile::tempdir().unwrap();
    let d = scratch.path().join("relay");
    for (file, says) in [
        (short, "at least 16"),
        (
            files.path().join("missing"),
            "cannot read the creation token file",
        ),
    ] {
        let run = relay_run(&[
            "--listen",
            "127.0.0.1:0",
            "--data",
            d.to_str().unwrap(),
            "--create-token-file",
            file.to_str().unwrap(),
        ]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(run.stderr.contains(says), "{}", run.stderr);
    }
}

#[test]
fn a_flood_of_creates_from_one_address_is_refused_rate_limited() {
    // A day per refill: nothing refills while the test runs.
    let relay = Relay::start_with(&["--create-rate-per-address", "3/1d"]);
    let ann = Nook::new();
    let runs: Vec<Run> = (0..6).map(|_| new_talk(&ann, &relay, &[], None)).collect();
    let created = runs.iter().filter(|r| r.code == 0).count();
    let limited: Vec<&Run> = runs.iter().filter(|r| r.code != 0).collect();
    assert_eq!(created, 3, "{runs:?}");
    assert_eq!(limited.len(), 3);
    for run in limited {
        assert_eq!(run.code, 5);
        assert_eq!(error_kind(run), "rate_limited", "{}", run.stderr);
        assert!(run.stderr.contains("your address"), "{}", run.stderr);
    }
    // Joining is not a create: an invite of a talk made before the flood still works.
    let invite = text(&runs[0].json()["invites"][0]);
    Nook::new().ok(&["join", &invite]);

    // The relay-wide bucket: two creates for everyone, whatever the address.
    let relay = Relay::start_with(&["--create-rate", "2/1d"]);
    let codes: Vec<i32> = (0..4)
        .map(|_| new_talk(&Nook::new(), &relay, &[], None).code)
        .collect();
    assert_eq!(codes, [0, 0, 5, 5]);
}

#[test]
fn defence_flags_that_do_not_fit_together_stop_the_relay_at_start() {
    let scratch = tempfile::tempdir().unwrap();
    let d = scratch.path().join("relay");
    let run = relay_run(&[
        "--listen",
        "127.0.0.1:0",
        "--data",
        d.to_str().unwrap(),
        "--max-queued-bytes-per-connection",
        "4000000",
        "--max-queued-bytes",
        "2000000",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "--max-queued-bytes (2000000) must be at least --max-queued-bytes-per-connection"
        ),
        "{}",
        run.stderr
    );
    assert!(!d.exists(), "a refused start left a data folder");
}
