//! A `nook rpc` process driven over its stdin and stdout, for end-to-end tests.
//!
//! Requests are written as lines; a reader thread parses every stdout line, and
//! answers and notifications are kept apart as they come, so a test can wait for the
//! answer to one id while notifications pile up. Every wait is bounded.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Nook, bin};

/// How long one answer may take.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(60);

/// A running `nook rpc`, killed on drop unless it ended.
#[derive(Debug)]
pub struct RpcSession {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    answers: HashMap<String, Value>,
    notes: Vec<Value>,
    /// Every stdout line, in order, as it was read.
    pub raw: Vec<String>,
    next_id: u64,
}

impl RpcSession {
    /// `nook rpc` on `nook`'s home.
    pub fn start(nook: &Nook) -> RpcSession {
        RpcSession::start_in(&nook.home_dir())
    }

    pub fn start_in(home: &Path) -> RpcSession {
        let mut child = Command::new(bin("nook"))
            .arg("--home")
            .arg(home)
            .arg("rpc")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nook rpc");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // stderr is drained so that a chatty process never blocks on it.
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || for _ in BufReader::new(err).lines() {});
        }
        RpcSession {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            answers: HashMap::new(),
            notes: Vec::new(),
            raw: Vec::new(),
            next_id: 1,
        }
    }

    /// Writes one raw line (a newline is added).
    pub fn write_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(line.as_bytes()).expect("write request");
        stdin.write_all(b"\n").expect("write request");
        stdin.flush().expect("flush request");
    }

    /// Sends a request without waiting; returns its id.
    pub fn request(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.write_line(&line.to_string());
        id
    }

    /// Sends a request and waits for its answer (the whole response object).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.request(method, params);
        self.answer(&json!(id))
    }

    /// A call that must succeed: its `result`.
    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params);
        assert!(r.get("error").is_none(), "{method} failed: {r}");
        r["result"].clone()
    }

    /// A call that must fail: its `error`.
    pub fn err(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params);
        assert!(r.get("result").is_none(), "{method} did not fail: {r}");
        r["error"].clone()
    }

    fn read_one(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = self.lines.recv_timeout(left) else {
            return false;
        };
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout not JSON ({e}): {line}"));
        assert_eq!(v["jsonrpc"], "2.0", "{line}");
        self.raw.push(line);
        match v.get("id") {
            Some(id) => {
                let old = self.answers.insert(id.to_string(), v.clone());
                assert!(old.is_none(), "two answers to id {id}: {v}");
            }
            None => self.notes.push(v),
        }
        true
    }

    /// The answer to `id` (which may be null), waiting for it.
    pub fn answer(&mut self, id: &Value) -> Value {
        let deadline = Instant::now() + ANSWER_LIMIT;
        loop {
            if let Some(a) = self.answers.remove(&id.to_string()) {
                return a;
            }
            assert!(self.read_one(deadline), "no answer to id {id} in time");
        }
    }

    /// Waits for a notification that satisfies `pred`, and takes it.
    pub fn notification(&mut self, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self.notes.iter().position(&pred) {
                return self.notes.remove(i);
            }
            assert!(
                self.read_one(deadline),
                "no such notification in time; got {:?}",
                self.notes
            );
        }
    }

    /// The notifications received so far, taken.
    pub fn take_notifications(&mut self) -> Vec<Value> {
        while let Ok(line) = self.lines.try_recv() {
            let v: Value = serde_json::from_str(&line).expect("JSON");
            self.raw.push(line);
            match v.get("id") {
                Some(id) => {
                    self.answers.insert(id.to_string(), v);
                }
                None => self.notes.push(v),
            }
        }
        std::mem::take(&mut self.notes)
    }

    /// Closes stdin: the process answers what it has, then exits.
    pub fn close_input(&mut self) {
        self.stdin.take();
    }

    /// Closes stdin and waits for the exit code (bounded); every line still written
    /// is read first.
    pub fn finish(mut self) -> (i32, RpcSession) {
        self.close_input();
        let deadline = Instant::now() + ANSWER_LIMIT;
        while self.read_one(deadline) {}
        let code = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "nook rpc did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        (code, self)
    }

    /// The answers that arrived and were not taken yet.
    pub fn pending_answers(&self) -> usize {
        self.answers.len()
    }
}

impl Drop for RpcSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
