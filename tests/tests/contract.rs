//! The `--json` contract holds: what the real binaries print matches `docs/json.md`.
//!
//! `docs/json.md` documents every object `nook --json` prints, each with a field table
//! and a ` ```schema NAME ``` ` block of `field: type` lines. This test reads those
//! blocks, runs `nook-relay` and `nook` through one scenario that makes every command
//! print, and checks each JSON line on stdout and stderr: its kind is known (by the
//! command, by `type`, or on stderr as an error), every field it has is documented with
//! a matching type, and every documented field that is not optional is there. So a field
//! added to the output without a line in `docs/json.md` fails here, and so does a
//! schema block whose table lists other fields.
//!
//! Not exercised (documented, but too slow or not reachable from outside):
//! `event.expired` (a talk lives at least 60 s) and `event.warning` (it needs an
//! envelope altered on the relay). Every other schema in the file must be seen.

#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nook_e2e::rpc::RpcSession;
use nook_e2e::{Background, Nook, Relay, Run, Stream};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(30);

/// Documented but not produced by the scenario (see the module's doc).
// The relay_* events need a relay rotated or retiring: tests/tests/rotation.rs.
// The board commands' objects: tests/tests/boards.rs runs them (fields asserted there).
// `missing` needs a relay that drops envelopes: tests/tests/withheld.rs.
// The card commands' objects and events: tests/tests/cards.rs runs them.
// A market's objects and events: tests/tests/patterns.rs runs them.
const NOT_EXERCISED: [&str; 30] = [
    "ask_answer",
    "event.expired",
    "event.warning",
    "event.relay_rotated",
    "event.relay_retiring",
    "post",
    "unpost",
    "browse",
    "ask",
    "requests",
    "answer",
    "event.seat_request",
    "event.missing",
    "card",
    "card_clear",
    "reveal",
    "who",
    "exposure",
    "contacts",
    "contacts_forget",
    "event.card",
    "event.card_shown",
    "event.card_offer",
    "event.card_declined",
    "promote",
    "remove",
    "event.message_to",
    "event.over_limit",
    "event.offerer_removed",
    "event.promoted",
];
/// The prefix of the schemas only `nook rpc` produces.
const RPC: &str = "rpc.";
/// `nook rpc`'s schemas its board methods produce: tests/tests/boards.rs runs them.
const RPC_NOT_EXERCISED: [&str; 1] = ["rpc.ask"];

#[test]
fn every_json_line_the_binaries_print_is_documented() {
    let mut c = Contract::load();
    let relay = Relay::start();
    let (ann, bob, cat, dan) = (Nook::new(), Nook::new(), Nook::new(), Nook::new());

    // 4 seats, open at 3, anyone may close: dan joins after the talk opened and leaves,
    // bob closes while ann follows and cat is away.
    let new = ann.ok(&[
        "--json",
        "new",
        "--relay",
        &relay.address,
        "--seats",
        "4",
        "--quorum",
        "3",
        "--close",
        "any",
    ]);
    let new = c.one(&new, "new");
    let talk = s(&new["talk"]);
    let invites: Vec<String> = new["invites"].as_array().unwrap().iter().map(s).collect();
    c.lines(&ann.ok(&["--json", "invites", &talk]), "invites");

    c.lines(&bob.ok(&["--json", "join", &invites[0]]), "join");
    c.failed(
        &bob.run(&["--json", "send", &talk, "too early"]),
        "talk_not_open",
    );
    c.lines(&cat.ok(&["--json", "join", &invites[1]]), "join");
    c.lines(&dan.ok(&["--json", "join", &invites[2]]), "join");
    c.lines(&bob.ok(&["--json", "list"]), "list");
    c.failed(&cat.run(&["--json", "invites", &talk]), "not_owner");
    c.failed(
        &cat.run(&["--json", "send", "zzzz-zzzz", "hi"]),
        "talk_unknown",
    );
    c.failed(&cat.run(&["--json", "list", "--bogus"]), "usage");
    // cat's read records dan's join first: a wait counts what still waits on the relay.
    c.events(&cat.ok(&["--json", "read", &talk]));
    c.failed(
        &cat.run(&[
            "--json",
            "wait",
            &talk,
            "--for",
            "member",
            "--timeout",
            "1s",
        ]),
        "timeout",
    );
    c.events(&cat.ok(&["--json", "wait", &talk, "--for", "open"]));

    // A message, waited for and read.
    let waiting = cat.spawn(&[
        "--json",
        "wait",
        &talk,
        "--for",
        "message",
        "--timeout",
        "30s",
    ]);
    // Whether the wait is connected before bob sends or not, it finds the message: a
    // wait counts what still waits on the relay.
    c.lines(&bob.ok(&["--json", "send", &talk, "hello"]), "send");
    c.events(&waiting.finish(LIMIT));
    c.lines(&ann.ok(&["--json", "members", &talk]), "members");

    // A file: progress lines and the result, then an offer in ann's read below.
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("notes.txt");
    std::fs::write(&path, "file contents").unwrap();
    let sent = bob.ok(&["--json", "send", &talk, "--file", path.to_str().unwrap()]);
    for v in sent.json_lines() {
        c.expect(&format!("send_file.{}", s(&v["type"])), &v);
    }
    c.stderr(&sent);
    let file_id = s(&sent.json_lines().last().unwrap()["file_id"]);

    // dan leaves; ann's history then has every event but the end.
    c.lines(&dan.ok(&["--json", "leave", &talk]), "leave");
    let read = ann.ok(&["--json", "read", &talk]);
    c.events(&read);
    let types: BTreeSet<String> = read.json_lines().iter().map(|v| s(&v["type"])).collect();
    for t in ["seats", "joined", "opened", "message", "left", "file_offer"] {
        assert!(types.contains(t), "no {t} event in {}", read.stdout);
    }
    let to = files.path().join("saved");
    std::fs::create_dir(&to).unwrap();
    c.one(
        &ann.ok(&[
            "--json",
            "save",
            &talk,
            &file_id,
            "--to",
            to.to_str().unwrap(),
        ]),
        "save",
    );

    // ann follows; the relay goes away: the follower reconnects, bob's commands show
    // what his device has, with a warning.
    let mut relay = relay;
    let mut follow = ann.spawn(&["--json", "read", &talk, "--follow", "--new"]);
    follow.wait_for(Stream::Stderr, LIMIT, |l| l.contains("connected"));
    relay.stop();
    follow.wait_for(Stream::Stderr, LIMIT, |l| l.contains("reconnecting"));
    let offline = ["--json", "--connect-timeout", "1s"];
    let members = bob.run(&[&offline[..], &["members", &talk]].concat());
    assert_eq!(members.code, 0, "{members:?}");
    c.lines(&members, "members");
    assert!(members.stderr.contains("\"warning\""), "{members:?}");
    let list = bob.ok(&[&offline[..], &["list"]].concat());
    c.lines(&list, "list");
    assert_eq!(list.json()["cached"], true, "{}", list.stdout);
    // read shows what the device has, after a warning, and exits 4 without an error.
    let stale = bob.run(&[&offline[..], &["read", &talk]].concat());
    assert_eq!(stale.code, 4, "{stale:?}");
    c.events(&stale);
    assert!(!stale.stderr.contains("\"exit_code\""), "{stale:?}");
    relay.restart();
    wait_connected_again(&mut follow);

    // bob closes; ann's follower sees who did, with the receipt; cat, away, hears of
    // it on her next read, without knowing who.
    let closed = bob.ok(&["--json", "close", &talk]);
    c.lines(&closed, "close");
    let f = follow.finish(LIMIT);
    c.events(&f);
    let end = f.json_lines().pop().unwrap();
    assert_eq!(
        (&end["type"], &end["verified"]),
        (&"closed".into(), &true.into())
    );
    let away = cat.run(&["--json", "read", &talk]);
    c.events(&away);
    c.failed_code(&away, "talk_closed");
    let gone = away.json_lines().pop().unwrap();
    assert_eq!(
        (&gone["type"], &gone["by"], &gone["verified"]),
        (&"closed".into(), &Value::Null, &false.into()),
        "{}",
        away.stdout
    );

    // The receipt, checked offline; and one that does not verify.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("closed.json");
    std::fs::write(&file, &closed.stdout).unwrap();
    let path = file.to_str().unwrap();
    c.lines(
        &bob.ok(&["--json", "receipt", "verify", path]),
        "receipt-verify",
    );
    let mut bad = closed.json();
    let sig = s(&bad["receipt"]["signature"]);
    let flipped = if sig.starts_with('0') { "1" } else { "0" };
    bad["receipt"]["signature"] = format!("{flipped}{}", &sig[1..]).into();
    std::fs::write(&file, bad.to_string()).unwrap();
    c.failed(
        &bob.run(&["--json", "receipt", "verify", path]),
        "receipt_invalid",
    );

    c.all_seen();
}

/// `nook rpc`'s answers are the objects above, its errors and notifications are as
/// documented in its section.
#[test]
fn every_rpc_answer_and_notification_is_documented() {
    let mut c = Contract::load();
    let mut relay = Relay::start();
    let bob = Nook::new();
    let ann = Nook::new();
    let mut rpc = RpcSession::start(&ann);
    let new = rpc.call(
        "new",
        json!({"relay": relay.address, "seats": 3, "quorum": 2, "close": "any", "ttl": "1h"}),
    );
    let new = c.answer(&new, "new");
    let talk = s(&new["talk"]);
    c.answer(&rpc.call("invites", json!({"talk": talk})), "invites");
    c.answer(
        &rpc.call("subscribe", json!({"talk": talk})),
        "rpc.subscription",
    );
    bob.ok(&["join", &s(&new["invites"][0])]);
    let open = rpc.call(
        "wait",
        json!({"talk": talk, "for": "open", "timeout": "30s"}),
    );
    c.answer(&open, "event");
    c.answer(
        &rpc.call("send", json!({"talk": talk, "text": "hello"})),
        "send",
    );
    bob.ok(&["send", &talk, "hi ann"]);
    let heard = rpc.notification(LIMIT, |n| n["params"]["event"]["text"] == "hi ann");
    c.notification(&heard);
    c.answer(&rpc.call("read", json!({"talk": talk})), "event");
    c.answer(&rpc.call("members", json!({"talk": talk})), "members");
    c.answer(&rpc.call("list", json!({})), "list");

    // Files both ways: ann's send reports its progress, bob's offer is saved.
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("plan.txt");
    std::fs::write(&path, "the plan").unwrap();
    let sent = rpc.call(
        "send",
        json!({"talk": talk, "file": path.to_str().unwrap()}),
    );
    c.answer(&sent, "send_file.file_sent");
    let progress = rpc.notification(LIMIT, |n| n["method"] == "progress");
    assert_eq!(progress["params"]["progress"]["size"], 8, "{progress}");
    c.notification(&progress);
    let theirs = files.path().join("notes.txt");
    std::fs::write(&theirs, "bob's notes").unwrap();
    let offered = bob.ok(&["--json", "send", &talk, "--file", theirs.to_str().unwrap()]);
    let file_id = s(&offered.json_lines().last().unwrap()["file_id"]);
    let to = files.path().join("saved");
    std::fs::create_dir(&to).unwrap();
    c.answer(
        &rpc.call(
            "save",
            json!({"talk": talk, "file": file_id, "to": to.to_str().unwrap()}),
        ),
        "save",
    );
    assert_eq!(
        std::fs::read_to_string(to.join("notes.txt")).unwrap(),
        "bob's notes"
    );
    c.answer(
        &rpc.call(
            "save",
            json!({"talk": talk, "file": file_id, "to": to.to_str().unwrap()}),
        ),
        "error",
    );
    c.answer(
        &rpc.call(
            "send",
            json!({"talk": talk, "file": "/nonexistent/x", "text": "x"}),
        ),
        "error",
    );
    c.answer(
        &rpc.call("send", json!({"talk": "zzzz-zzzz", "text": "x"})),
        "error",
    );
    let bad = rpc.call("list", json!({"bogus": 1}));
    assert_eq!(bad["error"]["data"]["field"], "bogus", "{bad}");
    c.answer(&bad, "error");

    // The relay goes away: the subscription says it reconnects; members come with a
    // warning first.
    relay.stop();
    let lost = rpc.notification(LIMIT, |n| n["params"]["link"]["state"] == "reconnecting");
    c.notification(&lost);
    c.answer(&rpc.call("members", json!({"talk": talk})), "members");
    let warned = rpc.notification(LIMIT, |n| n["method"] == "warning");
    c.notification(&warned);
    relay.restart();

    // ann closes: the subscription's last event, then it ends.
    c.answer(&rpc.call("close", json!({"talk": talk})), "close");
    let ended = rpc.notification(LIMIT, |n| n["method"] == "unsubscribed");
    assert_eq!(ended["params"]["reason"], "ended", "{ended}");
    c.notification(&ended);
    c.answer(
        &rpc.call("unsubscribe", json!({"talk": talk})),
        "rpc.subscription",
    );
    let (code, mut rpc) = rpc.finish();
    assert_eq!(code, 0);
    for n in rpc.take_notifications() {
        c.notification(&n);
    }
    c.all_rpc_seen();
}

/// The checker holds the binaries to the contract, so it must itself refuse what the
/// contract does not allow.
#[test]
fn the_checker_refuses_an_undocumented_field_a_wrong_type_and_a_missing_field() {
    let c = Contract::load();
    let good = serde_json::json!({"talk": "abcd-efgh", "left": true, "local_data_deleted": true});
    c.check("leave", &good).unwrap();
    let mut extra = good.clone();
    extra["surprise"] = 1.into();
    assert!(c.check("leave", &extra).unwrap_err().contains("surprise"));
    let mut wrong = good.clone();
    wrong["left"] = "yes".into();
    assert!(c.check("leave", &wrong).unwrap_err().contains("left"));
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("talk");
    assert!(c.check("leave", &missing).unwrap_err().contains("talk"));
    // Nested objects are checked against their own schema; nullable fields take null.
    let closed = serde_json::json!({"type": "closed", "by": null, "verified": false,
        "receipt": {"format": "nook deletion receipt v1"}, "local_data_deleted": true,
        "at_ms": 1});
    assert!(
        c.check("event.closed", &closed)
            .unwrap_err()
            .contains("documented field `closed_at` is missing")
    );
    let mut closed = closed;
    closed["receipt"] = Value::Null;
    c.check("event.closed", &closed).unwrap();
    // 1.5 is not an integer.
    closed["at_ms"] = 1.5.into();
    assert!(c.check("event.closed", &closed).is_err());
}

/// docs/json.md names every error `kind` of the exit-code table in README.md.
#[test]
fn every_error_kind_of_the_readme_is_in_the_contract() {
    let c = Contract::load();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let kinds: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        // Rows `| 5 | `talk_not_open` | …`: an exit code, then the kind.
        .filter_map(|l| l.split_once(" | `"))
        .filter(|(code, _)| code.parse::<u8>().is_ok())
        .filter_map(|(_, rest)| rest.split('`').next())
        .collect();
    assert!(kinds.len() > 20, "{kinds:?}");
    for kind in kinds {
        assert!(
            c.doc.contains(&format!("`{kind}`")),
            "docs/json.md does not name the error kind {kind}"
        );
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// A follower that lost its relay says `connected` again once it is back.
fn wait_connected_again(follow: &mut Background) {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let states: Vec<String> = follow
            .lines_so_far(Stream::Stderr)
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["state"].as_str().map(str::to_string))
            .collect();
        let back = states.iter().rposition(|s| s == "connected");
        let lost = states.iter().position(|s| s == "reconnecting");
        if matches!((back, lost), (Some(b), Some(l)) if b > l) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{states:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- the schema language of docs/json.md ----

/// A field's type, as a schema block writes it.
#[derive(Debug, Clone)]
enum Ty {
    String,
    Integer,
    Boolean,
    Object,
    Null,
    Literal(Value),
    Array(Box<Ty>),
    /// An object of another schema's shape.
    Schema(String),
    OneOf(Vec<Ty>),
}

#[derive(Debug)]
struct Field {
    ty: Ty,
    optional: bool,
}

/// The schemas of docs/json.md, and which of them the scenario has produced.
struct Contract {
    doc: String,
    schemas: BTreeMap<String, BTreeMap<String, Field>>,
    /// The schemas a line has matched, nested ones included.
    seen: RefCell<BTreeSet<String>>,
}

impl Contract {
    fn load() -> Contract {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/json.md");
        let doc = std::fs::read_to_string(path).expect("docs/json.md");
        let schemas = parse_doc(&doc);
        for fields in schemas.values() {
            for f in fields.values() {
                for name in refs(&f.ty) {
                    assert!(schemas.contains_key(&name), "no schema {name} for {f:?}");
                }
            }
        }
        Contract {
            doc,
            schemas,
            seen: RefCell::default(),
        }
    }

    /// `v` against schema `name`: an error that names the field, or `Ok`.
    fn check(&self, name: &str, v: &Value) -> Result<(), String> {
        let fields = self
            .schemas
            .get(name)
            .ok_or_else(|| format!("no schema {name} in docs/json.md"))?;
        let obj = v
            .as_object()
            .ok_or_else(|| format!("{name}: not an object: {v}"))?;
        for (k, val) in obj {
            let f = fields
                .get(k)
                .ok_or_else(|| format!("{name}: field `{k}` is not documented in docs/json.md"))?;
            self.matches(&f.ty, val)
                .map_err(|e| format!("{name}: field `{k}` = {val}: {e}"))?;
        }
        for (k, f) in fields {
            if !f.optional && !obj.contains_key(k) {
                return Err(format!("{name}: documented field `{k}` is missing"));
            }
        }
        self.seen.borrow_mut().insert(name.to_string());
        Ok(())
    }

    fn matches(&self, ty: &Ty, v: &Value) -> Result<(), String> {
        let ok = match ty {
            Ty::String => v.is_string(),
            Ty::Integer => v.is_u64() || v.is_i64(),
            Ty::Boolean => v.is_boolean(),
            Ty::Object => v.is_object(),
            Ty::Null => v.is_null(),
            Ty::Literal(l) => v == l,
            Ty::Array(t) => {
                let items = v.as_array().ok_or("not an array")?;
                return items.iter().try_for_each(|i| self.matches(t, i));
            }
            Ty::Schema(name) => return self.check(name, v),
            Ty::OneOf(alts) => {
                let errors: Vec<String> = alts
                    .iter()
                    .filter_map(|t| self.matches(t, v).err())
                    .collect();
                if errors.len() < alts.len() {
                    return Ok(());
                }
                return Err(errors.join("; "));
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!("not {ty:?}"))
        }
    }

    /// Checks `v` as `name` and records that `name` was seen.
    fn expect(&mut self, name: &str, v: &Value) {
        if let Err(e) = self.check(name, v) {
            panic!("{e}\n  line: {v}");
        }
    }

    /// Every stderr line: a warning, a link state, or the error (which must be last
    /// and carry the process's exit code).
    fn stderr(&mut self, r: &Run) {
        let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        for (i, l) in lines.iter().enumerate() {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {l}\n{r:?}"));
            let name = match v["type"].as_str() {
                Some("link") => format!("link.{}", v["state"].as_str().unwrap_or("?")),
                Some(t) => t.to_string(),
                None => {
                    assert_eq!(i + 1, lines.len(), "an error is the last line: {r:?}");
                    assert_eq!(v["exit_code"], r.code, "{r:?}");
                    "error".to_string()
                }
            };
            self.expect(&name, &v);
            if let Some(kind) = v.get("kind").and_then(Value::as_str) {
                assert!(
                    self.doc.contains(&format!("`{kind}`")),
                    "kind {kind} is not in docs/json.md"
                );
            }
        }
    }

    /// Every stdout line as `name`; stderr as [`Contract::stderr`].
    fn lines(&mut self, r: &Run, name: &str) {
        for v in r.json_lines() {
            self.expect(name, &v);
        }
        self.stderr(r);
    }

    /// The only stdout line, as `name`.
    fn one(&mut self, r: &Run, name: &str) -> Value {
        assert_eq!(r.json_lines().len(), 1, "{r:?}");
        self.lines(r, name);
        r.json()
    }

    /// `read` / `wait`: every stdout line is an event, known by its `type`.
    fn events(&mut self, r: &Run) {
        let lines = r.json_lines();
        assert!(!lines.is_empty(), "no events: {r:?}");
        for v in lines {
            let t = v["type"]
                .as_str()
                .unwrap_or_else(|| panic!("an event without a type: {v}"));
            self.expect(&format!("event.{t}"), &v);
        }
        self.stderr(r);
    }

    /// The run failed with an error of `kind` (and printed nothing on stdout).
    fn failed(&mut self, r: &Run, kind: &str) {
        assert!(r.stdout.trim().is_empty(), "{r:?}");
        self.failed_code(r, kind);
    }

    /// The run's last stderr line is an error of `kind`.
    fn failed_code(&mut self, r: &Run, kind: &str) {
        assert_ne!(r.code, 0, "{r:?}");
        self.stderr(r);
        let last: Value = serde_json::from_str(r.stderr.lines().last().unwrap()).unwrap();
        assert_eq!(last["kind"], kind, "{r:?}");
    }

    /// Every documented schema was produced, except the ones listed as not exercised
    /// and those of `nook rpc` (its own test sees them: [`Contract::all_rpc_seen`]).
    fn all_seen(&self) {
        let missing: Vec<&String> = self
            .schemas
            .keys()
            .filter(|k| !self.seen.borrow().contains(*k) && !NOT_EXERCISED.contains(&k.as_str()))
            .filter(|k| !k.starts_with(RPC))
            .collect();
        assert!(missing.is_empty(), "never printed: {missing:?}");
        for n in NOT_EXERCISED {
            assert!(self.schemas.contains_key(n), "{n} is not documented");
        }
    }

    /// Every schema of `nook rpc` was produced.
    fn all_rpc_seen(&self) {
        let missing: Vec<&String> = self
            .schemas
            .keys()
            .filter(|k| k.starts_with(RPC) && !self.seen.borrow().contains(*k))
            .filter(|k| !RPC_NOT_EXERCISED.contains(&k.as_str()))
            .collect();
        for n in RPC_NOT_EXERCISED {
            assert!(self.schemas.contains_key(n), "{n} is not documented");
        }
        assert!(missing.is_empty(), "nook rpc never produced: {missing:?}");
    }

    /// A `nook rpc` answer: its result as `name` (each item, for an array), or its
    /// error as `rpc.error`. Returns the result (null for an error).
    fn answer(&mut self, a: &Value, name: &str) -> Value {
        assert_eq!(a["jsonrpc"], "2.0", "{a}");
        match (a.get("result"), a.get("error")) {
            (Some(Value::Array(items)), None) => {
                for v in items {
                    self.expect_item(name, v);
                }
            }
            (Some(v), None) => self.expect_item(name, v),
            (None, Some(e)) => self.expect("rpc.error", e),
            _ => panic!("neither result nor error: {a}"),
        }
        a.get("result").cloned().unwrap_or(Value::Null)
    }

    /// `name`, or for `"event"` the event schema its `type` names.
    fn expect_item(&mut self, name: &str, v: &Value) {
        if name == "event" {
            let t = v["type"].as_str().unwrap_or_else(|| panic!("no type: {v}"));
            self.expect(&format!("event.{t}"), v);
        } else {
            self.expect(name, v);
        }
    }

    /// A notification: its params as `rpc.METHOD`.
    fn notification(&mut self, n: &Value) {
        assert_eq!(n["jsonrpc"], "2.0", "{n}");
        assert!(n.get("id").is_none(), "{n}");
        let method = n["method"].as_str().unwrap_or_else(|| panic!("{n}"));
        self.expect(&format!("{RPC}{method}"), &n["params"]);
    }
}

/// Every ` ```schema NAME ``` ` block of the document. The field table above each block
/// must name the same fields, so the human table and the checked block cannot part.
fn parse_doc(doc: &str) -> BTreeMap<String, BTreeMap<String, Field>> {
    let mut schemas = BTreeMap::new();
    let mut table: Vec<String> = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("| field |") {
            table.clear();
        } else if let Some(row) = line.strip_prefix("| `") {
            table.push(row.split('`').next().unwrap_or_default().to_string());
        } else if let Some(name) = line.strip_prefix("```schema ") {
            let name = name.trim().to_string();
            let mut fields = BTreeMap::new();
            for l in lines.by_ref().take_while(|l| !l.starts_with("```")) {
                let (field, ty) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("schema {name}: not `field: type`: {l}"));
                let (field, optional) = match field.trim().strip_suffix('?') {
                    Some(f) => (f, true),
                    None => (field.trim(), false),
                };
                let ty = parse_ty(ty).unwrap_or_else(|e| panic!("schema {name}: {e}"));
                let old = fields.insert(field.to_string(), Field { ty, optional });
                assert!(old.is_none(), "schema {name}: {field} twice");
            }
            let names: Vec<&String> = fields.keys().collect();
            let mut documented: Vec<&String> = table.iter().collect();
            documented.sort();
            assert_eq!(
                documented, names,
                "docs/json.md: the table above schema {name} lists other fields"
            );
            table.clear();
            assert!(
                schemas.insert(name.clone(), fields).is_none(),
                "schema {name} twice"
            );
        }
    }
    assert!(!schemas.is_empty(), "no schema blocks in docs/json.md");
    schemas
}

fn parse_ty(text: &str) -> Result<Ty, String> {
    let text = text.trim();
    if let Some(inner) = text.strip_suffix('?') {
        return Ok(Ty::OneOf(vec![parse_ty(inner)?, Ty::Null]));
    }
    if text.contains('|') {
        return text
            .split('|')
            .map(parse_ty)
            .collect::<Result<_, _>>()
            .map(Ty::OneOf);
    }
    Ok(match text {
        "string" => Ty::String,
        "integer" => Ty::Integer,
        "boolean" => Ty::Boolean,
        "object" => Ty::Object,
        "null" => Ty::Null,
        "true" => Ty::Literal(true.into()),
        "false" => Ty::Literal(false.into()),
        t if t.starts_with('"') => {
            Ty::Literal(serde_json::from_str(t).map_err(|e| format!("{t}: {e}"))?)
        }
        t if t.starts_with('[') && t.ends_with(']') => {
            Ty::Array(Box::new(parse_ty(&t[1..t.len() - 1])?))
        }
        t if !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) =>
        {
            Ty::Schema(t.to_string())
        }
        t => return Err(format!("unknown type {t:?}")),
    })
}

/// The schemas `ty` refers to.
fn refs(ty: &Ty) -> Vec<String> {
    match ty {
        Ty::Schema(n) => vec![n.clone()],
        Ty::Array(t) => refs(t),
        Ty::OneOf(ts) => ts.iter().flat_map(refs).collect(),
        _ => Vec::new(),
    }
}
