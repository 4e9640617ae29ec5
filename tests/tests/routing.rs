//! Private routing (protocol-spec.md §18) with the real binaries: a member, a
//! forwarding relay on 127.0.0.2 and the talk's relay on 127.0.0.3, so that what each
//! relay learns can be told apart by address.
//!
//! What is shown: a whole talk through the forwarder (new, join, send, `read
//! --follow`, `chat` in a tmux terminal, close with a receipt that verifies); the
//! destination's connection log (its `nook_peers` target, off unless named)
//! holds only the forwarder's address; the forwarder's memory and log hold no mailbox
//! id, relay-auth key or join token of the talk (while the destination's memory,
//! scanned the same way, does hold the mailbox id: the scan can find what it looks
//! for); a routed and a direct member share a talk; and each hop that fails (dead
//! forwarder, refusing forwarder, dead destination behind a live forwarder, a
//! forwarder at its limit) fails by itself, with its own `kind`, within the command's
//! bounded run. The chat test needs tmux (NOOK_SKIP_TMUX_TESTS=1 skips it, as in
//! client-cli/tests/chat.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nook_crypto::Invite;
use nook_e2e::{Nook, Relay, Stream, contains, process_memory, text};

const FORWARDER: &str = "127.0.0.2";
const DESTINATION: &str = "127.0.0.3";
/// A command's whole run is bounded by this (it is killed after it).
const BOUND: Duration = Duration::from_secs(30);

/// The destination, logging the peer of each accepted connection (the `nook_peers`
/// target, off unless named).
fn destination() -> Relay {
    Relay::start_at(
        DESTINATION,
        &[],
        &[("RUST_LOG", "nook_relay=info,nook_peers=trace")],
    )
}

fn forwarder(args: &[&str]) -> Relay {
    Relay::start_at(FORWARDER, args, &[])
}

/// The relay-auth public key this home uses in its (only) talk.
fn auth_key(nook: &Nook) -> [u8; 32] {
    let home = nook_client::store::Home::new(&nook.home_dir()).unwrap();
    let store = home.open().unwrap();
    let talks = store.talks().unwrap();
    assert_eq!(talks.len(), 1);
    talks[0].identity().member_key().0
}

/// The peers the destination logged for accepted connections.
fn accepted_peers(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("connection accepted"))
        .filter_map(|l| {
            let at = l.find("127.0.0.")?;
            Some(l[at..at + 9].to_string())
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The `--json` error a failed command printed last on stderr.
fn json_error(stderr: &str) -> serde_json::Value {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("a JSON error");
    serde_json::from_str(line).unwrap()
}

#[test]
fn a_whole_talk_runs_through_a_forwarder_that_learns_nothing_of_it() {
    let fwd = forwarder(&[]);
    let dest = destination();
    let (ann, bob) = (Nook::new(), Nook::new());
    let created = ann
        .ok(&[
            "--json",
            "new",
            "--relay",
            &dest.address,
            "--via",
            &fwd.address,
            "--alias",
            "ann",
        ])
        .json();
    let talk = text(&created["talk"]);
    let invite_text = text(&created["invites"][0]);
    bob.ok(&[
        "join",
        &invite_text,
        "--via",
        &fwd.address,
        "--alias",
        "bob",
    ]);
    // Both keep the route as the talk's: later commands name no --via.
    for nook in [&ann, &bob] {
        let listed = nook.ok(&["--json", "list"]).json();
        assert_eq!(text(&listed["via"]), fwd.address);
        assert_eq!(text(&listed["relay"]), dest.address);
    }
    let shown = ann.ok(&["list"]).stdout;
    assert!(shown.contains(&format!("via {}", fwd.address)), "{shown}");

    let invite: Invite = invite_text.parse().unwrap();
    let mailbox = invite.mailbox.0;
    let token = *invite.seat_secret.join_token();
    let (ann_key, bob_key) = (auth_key(&ann), auth_key(&bob));

    // Pushes come through the forwarder: bob follows, ann sends.
    let mut follow = bob.spawn(&["--json", "read", &talk, "--follow"]);
    follow.wait_for(Stream::Stderr, BOUND, |l| l.contains("following"));
    ann.ok(&["send", &talk, "hello through the forwarder"]);
    follow.wait_for(Stream::Stdout, BOUND, |l| {
        l.contains("hello through the forwarder")
    });

    // While the follower's session is up: the forwarder's memory and log hold none
    // of the talk's identifiers; the destination's memory does hold the mailbox id.
    let needles: [(&str, &[u8]); 4] = [
        ("mailbox id", &mailbox),
        ("join token", &token),
        ("ann's relay-auth key", &ann_key),
        ("bob's relay-auth key", &bob_key),
    ];
    let seen = process_memory(fwd.pid());
    assert!(
        seen.len() > 1 << 20,
        "the scan read the forwarder's memory: {} bytes",
        seen.len()
    );
    let fwd_log = fwd.log();
    for (what, needle) in needles {
        assert!(
            !contains(&seen, needle),
            "the forwarder's memory holds the {what}"
        );
        assert!(
            !fwd_log.contains(&hex(needle)),
            "the forwarder's log holds the {what}"
        );
    }
    assert!(
        contains(&process_memory(dest.pid()), &mailbox),
        "control: the destination's memory holds the mailbox id, so the scan finds it"
    );
    // The forwarder logs neither side's address at its default level.
    assert!(!fwd_log.contains(DESTINATION), "{fwd_log}");
    assert!(!fwd_log.contains("127.0.0.1"), "{fwd_log}");

    // Close with a receipt that verifies; the follower hears it through the forwarder.
    let closed = ann.ok(&["close", &talk]);
    let verified =
        Nook::new().run_with_stdin(&["--json", "receipt", "verify", "-"], &closed.stdout);
    assert_eq!(verified.code, 0, "{verified:?}");
    let f = follow.finish(BOUND);
    assert_eq!(f.code, 6, "the follower learns of the close: {f:?}");

    // The destination saw only the forwarder.
    let log = dest.log();
    let peers = accepted_peers(&log);
    assert!(
        !peers.is_empty(),
        "the destination logged its connections: {log}"
    );
    assert!(
        peers.iter().all(|p| p == "127.0.0.2"),
        "the destination saw {peers:?}"
    );
    assert!(!log.contains("127.0.0.1"), "{log}");
}

#[test]
fn a_routed_member_and_a_direct_member_share_a_talk() {
    let fwd = forwarder(&[]);
    let dest = destination();
    let (ann, bob) = (Nook::new(), Nook::new());
    let created = ann
        .ok(&["--json", "new", "--relay", &dest.address, "--alias", "ann"])
        .json();
    let talk = text(&created["talk"]);
    bob.ok(&["join", &text(&created["invites"][0]), "--via", &fwd.address]);
    assert!(ann.ok(&["--json", "list"]).json()["via"].is_null());
    ann.ok(&["send", &talk, "direct to routed"]);
    bob.ok(&["send", &talk, "routed to direct"]);
    let bob_read = bob.ok(&["read", &talk]).stdout;
    assert!(bob_read.contains("direct to routed"), "{bob_read}");
    let ann_read = ann.ok(&["read", &talk]).stdout;
    assert!(ann_read.contains("routed to direct"), "{ann_read}");
    // The destination saw ann directly and bob only as the forwarder.
    let mut peers = accepted_peers(&dest.log());
    peers.sort();
    peers.dedup();
    assert_eq!(peers, ["127.0.0.1", "127.0.0.2"]);
}

/// Runs `nook --json args…` in the background, bounded by [`BOUND`]: the failure's
/// `kind` and exit code, and its message.
fn fails(nook: &Nook, args: &[&str]) -> (String, i32, String) {
    let mut all = vec!["--json", "--connect-timeout", "2s"];
    all.extend_from_slice(args);
    let run = nook.spawn(&all).finish(BOUND);
    let err = json_error(&run.stderr);
    (text(&err["kind"]), run.code, text(&err["error"]))
}

#[test]
fn each_failed_hop_fails_by_itself_and_says_which() {
    let dest = destination();
    let fwd = forwarder(&[]);
    let ann = Nook::new();
    let created = ann
        .ok(&[
            "--json",
            "new",
            "--relay",
            &dest.address,
            "--via",
            &fwd.address,
        ])
        .json();
    let talk = text(&created["talk"]);

    // A dead forwarder: nothing listens at its port.
    let (host, _) = fwd.address.rsplit_once(':').unwrap();
    let dead = format!("{host}:{}", nook_e2e::free_port());
    let (kind, code, message) = fails(&ann, &["send", &talk, "x", "--via", &dead]);
    assert_eq!(
        (kind.as_str(), code),
        ("forwarder_unreachable", 4),
        "{message}"
    );
    assert!(message.contains("--via"), "{message}");

    // A forwarder that refuses.
    let refusing = Relay::start_at("127.0.0.4", &["--no-forward"], &[]);
    let (kind, code, message) = fails(&ann, &["send", &talk, "x", "--via", &refusing.address]);
    assert_eq!((kind.as_str(), code), ("forward_refused", 5), "{message}");
    assert!(message.contains("--no-forward"), "{message}");

    // A live forwarder in front of a dead destination.
    let mut dest = dest;
    dest.stop();
    let (kind, code, message) = fails(&ann, &["send", &talk, "x"]);
    assert_eq!(
        (kind.as_str(), code),
        ("destination_unreachable", 4),
        "{message}"
    );
    assert!(message.contains("is up"), "{message}");
}

/// The value of the metric `name` (one sample, no labels) a relay serves on `port`.
fn metric(port: u16, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(BOUND)).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {response}"))
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

#[test]
fn a_forwarder_at_its_limit_refuses_the_next_session() {
    let dest = destination();
    let metrics = free_tcp_port();
    let fwd = forwarder(&[
        "--forward-per-address",
        "1",
        "--metrics",
        &format!("127.0.0.1:{metrics}"),
    ]);
    let (ann, bob) = (Nook::new(), Nook::new());
    let created = ann
        .ok(&[
            "--json",
            "new",
            "--relay",
            &dest.address,
            "--via",
            &fwd.address,
        ])
        .json();
    let talk = text(&created["talk"]);
    bob.ok(&["join", &text(&created["invites"][0])]);
    // Ann's follower holds the one session her address may have.
    let mut follow = ann.spawn(&["--json", "read", &talk, "--follow"]);
    follow.wait_for(Stream::Stderr, BOUND, |l| l.contains("following"));
    let (kind, code, message) = fails(&ann, &["send", &talk, "x"]);
    assert_eq!((kind.as_str(), code), ("forward_refused", 5), "{message}");
    assert_eq!(metric(metrics, "nook_relay_forwards_refused_total"), 1);
    assert_eq!(metric(metrics, "nook_relay_forwarded_sessions"), 1);
    follow.terminate();
    let _ = follow.finish(BOUND);
    // Its session ended, so the count went back: the next one passes.
    ann.ok(&["send", &talk, "after the follower"]);
    // And the forwarder holds no session once they are over (polled: the forwarder
    // sees the end a moment after the member's process exits).
    let deadline = std::time::Instant::now() + BOUND;
    while metric(metrics, "nook_relay_forwarded_sessions") != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the forwarder still counts a session"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metric(metrics, "nook_relay_forwarded_sessions_total") >= 3);
}

/// A private tmux server with one 80×24 session running `command`; killed on drop.
struct Tmux {
    dir: tempfile::TempDir,
}

impl Tmux {
    fn start(command: &str) -> Tmux {
        let tmux = Tmux {
            dir: tempfile::tempdir().unwrap(),
        };
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "chat",
            "-x",
            "80",
            "-y",
            "24",
            command,
        ]);
        assert!(out.status.success(), "tmux new-session failed: {out:?}");
        tmux
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        // Its own socket folder and no config file: the user's tmux is never touched.
        std::process::Command::new("tmux")
            .env("TMUX_TMPDIR", self.dir.path())
            .env_remove("TMUX")
            .env("TERM", "xterm-256color")
            .args(["-L", "nook-routing-test", "-f", "/dev/null"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run tmux (apt-get install tmux; NOOK_SKIP_TMUX_TESTS=1 skips this test)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "chat"]).stdout)
            .into_owned()
    }

    /// Polls the screen (every 100 ms, for at most [`BOUND`]) until it shows all of
    /// `texts`.
    fn wait_for(&self, texts: &[&str]) -> String {
        let deadline = std::time::Instant::now() + BOUND;
        let mut screen = String::new();
        while std::time::Instant::now() < deadline {
            screen = self.screen();
            if texts.iter().all(|t| screen.contains(t)) {
                return screen;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the chat screen never showed {texts:?}; it shows:\n{screen}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn chat_runs_through_the_forwarder() {
    if std::env::var_os("NOOK_SKIP_TMUX_TESTS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED chat_runs_through_the_forwarder: NOOK_SKIP_TMUX_TESTS=1");
        return;
    }
    let fwd = forwarder(&[]);
    let dest = destination();
    let (ann, bob) = (Nook::new(), Nook::new());
    let created = ann
        .ok(&[
            "--json",
            "new",
            "--relay",
            &dest.address,
            "--via",
            &fwd.address,
            "--alias",
            "ann",
        ])
        .json();
    let talk = text(&created["talk"]);
    bob.ok(&["join", &text(&created["invites"][0]), "--via", &fwd.address]);

    let command = format!(
        "'{}' --home '{}' chat {talk}; echo \"nook exited with $?\"; sleep 60",
        nook_e2e::bin("nook").display(),
        ann.home_dir().display()
    );
    let tmux = Tmux::start(&command);
    // The header names the forwarder.
    tmux.wait_for(&["open 2/2", "● connected", "via 127.0.0.2:"]);
    // A push reaches the chat screen through the forwarder...
    bob.ok(&["send", &talk, "pushed through the forwarder"]);
    tmux.wait_for(&["pushed through the forwarder"]);
    // ...and what is typed there reaches the talk through it.
    let out = tmux.run(&["send-keys", "-t", "chat", "-l", "typed in the chat screen"]);
    assert!(out.status.success());
    assert!(
        tmux.run(&["send-keys", "-t", "chat", "Enter"])
            .status
            .success()
    );
    let deadline = std::time::Instant::now() + BOUND;
    let mut read = String::new();
    while std::time::Instant::now() < deadline {
        read = bob.ok(&["read", &talk]).stdout;
        if read.contains("typed in the chat screen") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(read.contains("typed in the chat screen"), "{read}");
    assert!(
        accepted_peers(&dest.log()).iter().all(|p| p == "127.0.0.2"),
        "{}",
        dest.log()
    );
}

#[test]
fn a_home_wide_route_applies_to_new_talks_only() {
    let fwd = forwarder(&[]);
    let dest = destination();
    let ann = Nook::new();
    // A talk made before the home-wide route goes direct, and stays so.
    let before = ann
        .ok(&["--json", "new", "--relay", &dest.address, "--quorum", "1"])
        .json();
    let before = text(&before["talk"]);
    // NOOK_VIA routes the next new talk.
    let env = [("NOOK_VIA", fwd.address.as_str())];
    let created = ann.run_with_env(&["--json", "new", "--relay", &dest.address], &env);
    assert_eq!(created.code, 0, "{created:?}");
    let routed = text(&created.json()["talk"]);
    let listed = ann.ok(&["--json", "list"]).json_lines();
    let via_of = |talk: &str| {
        listed
            .iter()
            .find(|t| text(&t["talk"]) == talk)
            .map(|t| t["via"].clone())
            .unwrap()
    };
    assert_eq!(text(&via_of(&routed)), fwd.address);
    assert!(via_of(&before).is_null());
    // NOOK_VIA naming a dead forwarder does not touch the direct talk's commands.
    let (host, _) = fwd.address.rsplit_once(':').unwrap();
    let dead = format!("{host}:{}", nook_e2e::free_port());
    let sent = ann.run_with_env(&["send", &before, "still direct"], &[("NOOK_VIA", &dead)]);
    assert_eq!(sent.code, 0, "{sent:?}");
}

#[test]
fn a_routed_talk_follows_its_relay_s_key_rotation() {
    let fwd = forwarder(&[]);
    let mut dest = destination();
    let (ann, bob) = (Nook::new(), Nook::new());
    let created = ann
        .ok(&[
            "--json",
            "new",
            "--relay",
            &dest.address,
            "--via",
            &fwd.address,
        ])
        .json();
    let talk = text(&created["talk"]);
    bob.ok(&["join", &text(&created["invites"][0]), "--via", &fwd.address]);
    let old = dest.address.clone();
    let rotated = dest.restart_after(&["rotate-key"]);
    assert_eq!(rotated.code, 0, "{rotated:?}");
    assert_ne!(dest.address, old);
    // The inner channel checks the key as a direct connection does: the new key is
    // taken at the end of the rotation chain from the pinned one.
    ann.ok(&["send", &talk, "after the rotation"]);
    let read = bob.ok(&["--json", "read", &talk]).json_lines();
    assert!(
        read.iter()
            .any(|e| e["type"] == "message" && text(&e["text"]) == "after the rotation"),
        "{read:?}"
    );
    assert!(
        read.iter().any(|e| e["type"] == "relay_rotated"),
        "told of the rotation: {read:?}"
    );
}
