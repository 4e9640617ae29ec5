//! `nook rpc` (docs/json.md, "nook rpc"): JSON-RPC 2.0 over stdio and a Unix socket,
//! against the real binaries.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nook_e2e::rpc::RpcSession;
use nook_e2e::{Nook, Relay, Stream, text};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);
const MESSAGES: usize = 1000;

fn is_hex_id(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// ann's rpc session creates a talk; bob joins with the CLI.
fn rpc_talk(relay: &Relay) -> (Nook, RpcSession, Nook, String) {
    let (ann, bob) = (Nook::new(), Nook::new());
    let mut rpc = RpcSession::start(&ann);
    let created = rpc.ok("new", json!({"relay": relay.address, "alias": "ann"}));
    assert_eq!(created["state"], "pending", "{created}");
    let talk = text(&created["talk"]);
    let invite = text(&created["invites"][0]);
    bob.ok(&["join", &invite, "--alias", "bob"]);
    (ann, rpc, bob, talk)
}

#[test]
fn a_script_pipelines_a_thousand_sends_and_hears_replies_as_notifications() {
    let relay = Relay::start();
    let (_ann, mut rpc, bob, talk) = rpc_talk(&relay);
    let sub = rpc.ok("subscribe", json!({"talk": talk}));
    assert_eq!(sub, json!({"talk": talk, "subscribed": true}));

    // All requests are written before any answer is read.
    let ids: Vec<u64> = (0..MESSAGES)
        .map(|i| rpc.request("send", json!({"talk": talk, "text": format!("m{i}")})))
        .collect();
    let mut sent = Vec::new();
    for id in &ids {
        let a = rpc.answer(&json!(id));
        let r = &a["result"];
        assert_eq!(
            (&r["talk"], &r["stored"]),
            (&json!(talk), &json!(true)),
            "{a}"
        );
        assert!(is_hex_id(&r["id"]), "{a}");
        sent.push((text(&r["id"]), r["seq"].as_u64().unwrap()));
    }
    // The relay stored them in the order they were sent.
    assert!(
        sent.windows(2).all(|w| w[0].1 < w[1].1),
        "seqs out of order"
    );

    let read = bob.ok(&["--json", "read", &talk]).json_lines();
    let got: Vec<(String, String)> = read
        .iter()
        .filter(|e| e["type"] == "message" && e["own"] == false)
        .map(|e| (text(&e["text"]), text(&e["id"])))
        .collect();
    let want: Vec<(String, String)> = sent
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (format!("m{i}"), id.clone()))
        .collect();
    assert_eq!(got.len(), MESSAGES);
    assert_eq!(
        got, want,
        "bob reads all of them, in order, with the same ids"
    );
    assert!(
        read.iter()
            .filter(|e| e["type"] == "message")
            .all(|e| e["late"] == false && e["missed"] == 0)
    );

    // bob answers with the CLI; ann's session hears it as an event notification.
    bob.ok(&["send", &talk, "hi ann"]);
    let note = rpc.notification(LIMIT, |n| {
        n["method"] == "event" && n["params"]["event"]["text"] == "hi ann"
    });
    let event = &note["params"]["event"];
    assert_eq!(note["params"]["talk"], json!(talk));
    assert_eq!(
        (&event["own"], &event["alias"]),
        (&json!(false), &json!("bob"))
    );
    assert!(is_hex_id(&event["id"]));

    // Sends still in flight when stdin ends are answered before the process exits 0.
    let last: Vec<u64> = (0..10)
        .map(|i| rpc.request("send", json!({"talk": talk, "text": format!("late {i}")})))
        .collect();
    let (code, mut rpc) = rpc.finish();
    assert_eq!(code, 0);
    for id in last {
        let a = rpc.answer(&json!(id));
        assert_eq!(a["result"]["stored"], true, "{a}");
    }
    let texts: Vec<String> = bob
        .ok(&["--json", "read", &talk, "--new"])
        .json_lines()
        .iter()
        .filter(|e| e["type"] == "message" && e["own"] == false)
        .map(|e| text(&e["text"]))
        .collect();
    assert_eq!(
        texts,
        (0..10).map(|i| format!("late {i}")).collect::<Vec<_>>()
    );
}

#[test]
fn bad_requests_get_json_rpc_errors_and_command_errors_carry_their_kind() {
    let nook = Nook::new();
    let mut rpc = RpcSession::start(&nook);
    let usage = |e: &Value, code: i64| {
        assert_eq!(e["code"], code, "{e}");
        assert_eq!(
            (&e["data"]["kind"], &e["data"]["exit_code"]),
            (&json!("usage"), &json!(2)),
            "{e}"
        );
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    };

    rpc.write_line("{not json");
    usage(&rpc.answer(&Value::Null)["error"], -32700);
    rpc.write_line(r#"[{"jsonrpc":"2.0","id":1,"method":"list"}]"#);
    let batch = rpc.answer(&Value::Null)["error"].clone();
    usage(&batch, -32600);
    assert!(
        batch["message"].as_str().unwrap().contains("batch"),
        "{batch}"
    );
    rpc.write_line(r#"{"id":"x","method":"list"}"#);
    usage(&rpc.answer(&json!("x"))["error"], -32600);
    rpc.write_line(r#"{"jsonrpc":"2.0","id":{"no":1},"method":"list"}"#);
    usage(&rpc.answer(&Value::Null)["error"], -32600);

    let unknown = rpc.err("frobnicate", json!({}));
    usage(&unknown, -32601);
    assert!(
        unknown["message"].as_str().unwrap().contains("subscribe"),
        "{unknown}"
    );

    // Invalid params name the field.
    for (method, params, field) in [
        ("send", json!({"talk": "abcd"}), "text"),
        ("send", json!({"talk": "abcd", "text": 7}), "text"),
        ("new", json!({"relay": "x", "seats": 99}), "seats"),
        (
            "new",
            json!({"relay": "x", "seats": 3, "quorum": 4}),
            "quorum",
        ),
        ("new", json!({"relay": "x", "ttl": "forever"}), "ttl"),
        ("wait", json!({"talk": "abcd", "for": "godot"}), "for"),
        ("list", json!({"bogus": true}), "bogus"),
        ("read", json!({"talk": "abcd", "follow": true}), "follow"),
    ] {
        let e = rpc.err(method, params.clone());
        usage(&e, -32602);
        assert_eq!(e["data"]["field"], field, "{method} {params}: {e}");
    }
    let positional = rpc.err("list", json!([1]));
    usage(&positional, -32602);

    // A command's error: the code says the exit code, data is the --json error object.
    let missing = rpc.err("send", json!({"talk": "zzzz-zzzz", "text": "hi"}));
    assert_eq!(missing["code"], -32003, "{missing}");
    assert_eq!(missing["data"]["kind"], "talk_unknown");
    assert_eq!(missing["data"]["exit_code"], 3);
    assert_eq!(missing["data"]["error"], missing["message"]);
    let empty = rpc.err("send", json!({"talk": "zzzz", "text": ""}));
    assert_eq!(empty["data"]["kind"], "bad_input", "{empty}");
    let read = rpc.err("read", json!({"talk": "zzzz"}));
    assert_eq!(read["data"]["kind"], "talk_unknown", "{read}");

    // A notification (no id) is run and never answered: the next answer is the next
    // request's. A line past 1 MiB is skipped with a parse error, and the process goes on.
    rpc.write_line(r#"{"jsonrpc":"2.0","method":"list"}"#);
    rpc.write_line(&"x".repeat(2 << 20));
    usage(&rpc.answer(&Value::Null)["error"], -32700);
    assert_eq!(rpc.ok("list", json!({})), json!([]));
    let (code, rpc) = rpc.finish();
    assert_eq!(code, 0);
    assert_eq!(
        rpc.pending_answers(),
        0,
        "nothing answered the notification"
    );
    assert!(rpc.raw.iter().all(|l| l.len() < 4096), "answers stay small");
}

/// One line-oriented client of the socket.
struct SocketClient {
    out: UnixStream,
    lines: std::io::Lines<BufReader<UnixStream>>,
    next: u64,
}

impl SocketClient {
    fn connect(path: &std::path::Path) -> SocketClient {
        let out = UnixStream::connect(path).unwrap();
        out.set_read_timeout(Some(LIMIT)).unwrap();
        let lines = BufReader::new(out.try_clone().unwrap()).lines();
        SocketClient {
            out,
            lines,
            next: 1,
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(self.out, "{line}").unwrap();
        // Bounded: each read waits at most LIMIT, and notifications are few here.
        for _ in 0..100 {
            let v: Value = serde_json::from_str(&self.lines.next().unwrap().unwrap()).unwrap();
            if v["id"] == id {
                return v;
            }
        }
        panic!("no answer to {id}");
    }
}

#[test]
fn the_socket_is_private_serves_several_clients_and_the_cli_shares_the_home() {
    let relay = Relay::start();
    let (ann, bob) = (Nook::new(), Nook::new());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nook.sock");
    let sock = path.to_str().unwrap();

    // A path that is not a socket is refused and left alone.
    std::fs::write(&path, "keep me").unwrap();
    let refused = ann.run(&["--json", "rpc", "--socket", sock]);
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(refused.stderr.contains("not a socket"), "{refused:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    std::fs::remove_file(&path).unwrap();

    let mut server = ann.spawn(&["rpc", "--socket", sock]);
    server.wait_for(Stream::Stderr, LIMIT, |l| l.contains("listening"));
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // A second server on a live socket is refused.
    let busy = ann.run(&["rpc", "--socket", sock]);
    assert_eq!(busy.code, 5, "{busy:?}");
    assert!(busy.stderr.contains("in use"), "{busy:?}");

    let (mut one, mut two) = (SocketClient::connect(&path), SocketClient::connect(&path));
    let created = one.call("new", json!({"relay": relay.address, "alias": "ann"}));
    let talk = text(&created["result"]["talk"]);
    bob.ok(&["join", &text(&created["result"]["invites"][0])]);
    let listed = two.call("list", json!({}));
    assert_eq!(listed["result"][0]["talk"], json!(talk), "{listed}");

    // While the rpc process runs (and after it sent), other commands use the home.
    let sent = one.call("send", json!({"talk": talk, "text": "from rpc"}));
    assert_eq!(sent["result"]["stored"], true, "{sent}");
    ann.ok(&["send", &talk, "from the cli"]);
    let list = ann.ok(&["--json", "list"]).json();
    assert_eq!(list["talk"], json!(talk));
    let again = two.call("send", json!({"talk": talk, "text": "from rpc again"}));
    assert_eq!(again["result"]["stored"], true, "{again}");
    let texts: Vec<String> = bob
        .ok(&["--json", "read", &talk])
        .json_lines()
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| text(&e["text"]))
        .collect();
    assert_eq!(texts, ["from rpc", "from the cli", "from rpc again"]);

    // SIGTERM: the socket goes with the process.
    server.terminate();
    let end = server.finish(LIMIT);
    assert_eq!(end.code, 0, "{end:?}");
    assert!(!path.exists(), "the socket is removed on exit");

    // A socket left behind by a process that died (nobody listens on it) is taken over.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(
        path.exists(),
        "a listener that ends without cleanup leaves its socket"
    );
    let mut next = ann.spawn(&["rpc", "--socket", sock]);
    next.wait_for(Stream::Stderr, LIMIT, |l| l.contains("listening"));
    let mut client = SocketClient::connect(&path);
    assert_eq!(
        client.call("list", json!({}))["result"][0]["talk"],
        json!(talk)
    );
    next.terminate();
    assert_eq!(next.finish(LIMIT).code, 0);
}

#[test]
fn the_example_bot_answers_a_message_by_its_id() {
    let relay = Relay::start();
    let (bot, bob) = (Nook::new(), Nook::new());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/standup_bot.py");
    let dir = tempfile::tempdir().unwrap();
    let invite_file = dir.path().join("invite");
    let mut run = std::process::Command::new("python3")
        .arg(script)
        .args(["--nook", nook_e2e::bin("nook").to_str().unwrap()])
        .args(["--home", bot.home_dir().to_str().unwrap()])
        .args(["--relay", &relay.address, "--invite-file"])
        .arg(&invite_file)
        .args(["--replies", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    // The bot writes bob's invite once the talk exists.
    let deadline = Instant::now() + LIMIT;
    let invite = loop {
        if let Ok(i) = std::fs::read_to_string(&invite_file)
            && i.ends_with('\n')
        {
            break i.trim().to_string();
        }
        assert!(Instant::now() < deadline, "the bot wrote no invite");
        std::thread::sleep(Duration::from_millis(50));
    };
    bob.ok(&["join", &invite, "--alias", "bob"]);
    let talk = bob.only_talk();
    let sent = bob
        .ok(&["--json", "send", &talk, "!standup shipped the rpc"])
        .json();
    let asked = text(&sent["id"]);
    let mut follow = bob.spawn(&["--json", "read", &talk, "--follow"]);
    let reply = follow.wait_for(Stream::Stdout, LIMIT, |l| l.contains("\"own\":false"));
    let reply: Value = serde_json::from_str(&reply).unwrap();
    let said = text(&reply["text"]);
    assert!(said.contains(&asked), "the reply names the message: {said}");
    assert!(said.contains("bob"), "{said}");
    // With its one reply given, the bot ends its rpc session and exits 0.
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the bot did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut err);
    assert!(status.success(), "bot failed: {err}");
}
