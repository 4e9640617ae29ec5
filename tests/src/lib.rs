//! Harness for end-to-end tests: runs the real `nook-relay` and `nook` binaries from
//! this workspace's target folder on 127.0.0.1, each in its own temporary folder.
//!
//! Every wait is bounded; every process is killed when its guard drops.
//!
//! The binaries are whatever the last build left in the target folder: `cargo test
//! --workspace` builds them first; `cargo test -p nook-e2e` alone does not (run
//! `cargo build --workspace` before it).

pub mod netem;
pub mod rpc;
pub mod wiretap;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A binary of this workspace, built next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    // target/<profile>/deps/<test-exe> → target/<profile>/<name>
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target folder");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        path.display()
    );
    path
}

/// A JSON value that must be a string, as a `String`; the test fails if it is not one.
pub fn text(v: &serde_json::Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// An open two-seat talk on `relay`: "ann" created it (`new` with `new_args` added), the
/// joiner took the other seat (`join` with `join_args` added); with each one's talk name.
pub fn two_seat_talk(
    relay: &Relay,
    new_args: &[&str],
    join_args: &[&str],
) -> (Nook, Nook, String, String) {
    let (ann, joiner) = (Nook::new(), Nook::new());
    let mut new = vec!["--json", "new", "--relay", &relay.address, "--alias", "ann"];
    new.extend_from_slice(new_args);
    let created = ann.ok(&new).json();
    let invite = text(&created["invites"][0]);
    let mut join = vec!["join", invite.as_str()];
    join.extend_from_slice(join_args);
    joiner.ok(&join);
    let theirs = joiner.only_talk();
    (ann, joiner, text(&created["talk"]), theirs)
}

/// A free UDP port on 127.0.0.1 (the socket is closed before the relay binds it).
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `nook-relay`, killed on drop.
#[derive(Debug)]
pub struct Relay {
    pub address: String,
    pub data: tempfile::TempDir,
    port: u16,
    args: Vec<String>,
    /// The loopback address it listens on (127.0.0.1 unless [`Relay::start_at`]).
    ip: String,
    /// Environment variables it runs with (e.g. RUST_LOG), kept across restarts.
    env: Vec<(String, String)>,
    child: Child,
}

impl Relay {
    pub fn start() -> Relay {
        Relay::start_with(&[])
    }

    /// [`Relay::start`] with more command-line arguments (kept across restarts).
    pub fn start_with(args: &[&str]) -> Relay {
        Relay::start_at("127.0.0.1", args, &[])
    }

    /// [`Relay::start_with`] on another loopback address (e.g. 127.0.0.2, so that
    /// relays can be told apart by address), with environment variables `env`.
    pub fn start_at(ip: &str, args: &[&str], env: &[(&str, &str)]) -> Relay {
        let data = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let ip = ip.to_string();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, address) = Relay::spawn(&data, &ip, port, &args, &env);
        Relay {
            address,
            data,
            port,
            args,
            ip,
            env,
            child,
        }
    }

    /// Stops the relay gracefully and starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        let (child, address) = Relay::spawn(&self.data, &self.ip, self.port, &self.args, &self.env);
        assert_eq!(address, self.address, "the relay keeps its identity");
        self.child = child;
    }

    /// Stops the relay, runs `nook-relay COMMAND… --data DIR` on its data folder (e.g.
    /// `rotate-key`), and starts it again on the same port; its address may change.
    /// Returns the command's run.
    pub fn restart_after(&mut self, command: &[&str]) -> Run {
        self.stop();
        let data = self.data_dir();
        let mut args = command.to_vec();
        let data_arg = data.to_string_lossy().into_owned();
        args.extend(["--data", data_arg.as_str()]);
        let run = relay_run(&args);
        let (child, address) = Relay::spawn(&self.data, &self.ip, self.port, &self.args, &self.env);
        self.address = address;
        self.child = child;
        run
    }

    fn spawn(
        data: &tempfile::TempDir,
        ip: &str,
        port: u16,
        args: &[String],
        env: &[(String, String)],
    ) -> (Child, String) {
        let mut child = Command::new(bin("nook-relay"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["--listen", &format!("{ip}:{port}"), "--data"])
            .arg(data.path().join("relay"))
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(data.path().join("relay.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("start nook-relay");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        assert!(line.starts_with("nook://"), "relay printed {line:?}");
        (child, line.trim().to_string())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("relay")
    }

    /// What the relay logged on stderr so far (at its default log level).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("relay.log")).unwrap_or_default()
    }

    /// Stops the relay with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = wait(&mut self.child, Duration::from_secs(20));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One person's `nook` with its own home folder.
#[derive(Debug)]
pub struct Nook {
    pub home: tempfile::TempDir,
}

/// A finished `nook` command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The stdout lines parsed as JSON objects.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
    pub fn json(&self) -> serde_json::Value {
        self.json_lines().into_iter().next().expect("one JSON line")
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Default for Nook {
    fn default() -> Self {
        Nook::new()
    }
}

impl Nook {
    pub fn new() -> Nook {
        Nook {
            home: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn home_dir(&self) -> PathBuf {
        self.home.path().join("nook")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("nook"));
        c.arg("--home").arg(self.home_dir()).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `nook args…` to completion (bounded: 60 s).
    pub fn run(&self, args: &[&str]) -> Run {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nook");
        finish(child, Duration::from_secs(60))
    }

    /// Runs `nook args…` and asserts exit code 0.
    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "nook {args:?} failed: {}", r.stderr);
        r
    }

    /// Runs `nook args…` with environment variables `env` (bounded: 60 s).
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let child = self
            .command(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nook");
        finish(child, Duration::from_secs(60))
    }

    /// Runs `nook args…` with `input` on stdin.
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nook");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes());
        }
        finish(child, Duration::from_secs(60))
    }

    /// Runs `nook args…` on a terminal of its own (util-linux `script`): stdout is
    /// every byte the terminal was sent, stderr and stdout together, escapes included.
    pub fn run_on_terminal(&self, args: &[&str]) -> Run {
        let quote = |a: &str| format!("'{}'", a.replace('\'', "'\\''"));
        let mut line = quote(&bin("nook").to_string_lossy());
        line.push_str(" --home ");
        line.push_str(&quote(&self.home_dir().to_string_lossy()));
        for a in args {
            line.push(' ');
            line.push_str(&quote(a));
        }
        let child = Command::new("script")
            .args(["--quiet", "--return", "--command", &line, "/dev/null"])
            .env_remove("NO_COLOR")
            .env("TERM", "xterm-256color")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run script (util-linux)");
        finish(child, Duration::from_secs(60))
    }

    /// Starts `nook args…` in the background (e.g. `read --follow`).
    pub fn spawn(&self, args: &[&str]) -> Background {
        self.spawn_command(self.command(args))
    }

    /// Starts `nook args…` the way a non-interactive shell starts a background job
    /// (`cmd &`): with SIGINT ignored, which the program inherits.
    pub fn spawn_as_background_job(&self, args: &[&str]) -> Background {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("trap '' INT; exec \"$0\" \"$@\"")
            .arg(bin("nook"))
            .arg("--home")
            .arg(self.home_dir())
            .args(args)
            .stdin(Stdio::null());
        self.spawn_command(c)
    }

    fn spawn_command(&self, mut command: Command) -> Background {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nook");
        let (tx, rx) = std::sync::mpsc::channel();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(line_reader(out, Stream::Stdout, tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(line_reader(err, Stream::Stderr, tx));
        }
        Background {
            child: Some(child),
            lines: rx,
            seen: Vec::new(),
            readers,
        }
    }

    /// The id of the only talk in this home.
    pub fn only_talk(&self) -> String {
        let list = self.ok(&["--json", "list"]).json_lines();
        assert_eq!(list.len(), 1, "{list:?}");
        list[0]["talk"].as_str().expect("talk id").to_string()
    }
}

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

fn line_reader(
    pipe: impl std::io::Read + Send + 'static,
    stream: Stream,
    tx: std::sync::mpsc::Sender<(Stream, String)>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send((stream, line)).is_err() {
                break;
            }
        }
    })
}

/// A background `nook`, killed on drop unless finished. Its output is read as it
/// comes, so a test can wait for a line.
#[derive(Debug)]
pub struct Background {
    child: Option<Child>,
    lines: std::sync::mpsc::Receiver<(Stream, String)>,
    seen: Vec<(Stream, String)>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Waits, at most `limit`, for a line on `stream` that satisfies `pred`.
    pub fn wait_for(
        &mut self,
        stream: Stream,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        if let Some((_, l)) = self.seen.iter().find(|(s, l)| *s == stream && pred(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((s, l)) => {
                    self.seen.push((s, l.clone()));
                    if s == stream && pred(&l) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no matching {stream:?} line within {limit:?}; saw {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Its process id, while it runs (for a test that reads its memory).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("still running").id()
    }

    /// Sends it SIGTERM (as a service manager or `kill` would).
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Sends it SIGINT (as Ctrl-C, or a script's `kill -INT`, would).
    pub fn interrupt(&self) {
        self.signal("-INT");
    }

    fn signal(&self, which: &str) {
        let pid = self.child.as_ref().expect("still running").id();
        let status = Command::new("kill")
            .args([which, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {which} {pid} failed");
    }

    /// Every line seen so far on `stream` (without waiting).
    pub fn lines_so_far(&mut self, stream: Stream) -> Vec<String> {
        self.seen.extend(self.lines.try_iter());
        self.seen
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Waits for it to end by itself, at most `limit`.
    pub fn finish(mut self, limit: Duration) -> Run {
        let mut child = self.child.take().expect("child");
        let status = wait(&mut child, limit);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.seen.extend(self.lines.try_iter());
        let pick = |stream: Stream| {
            self.seen
                .iter()
                .filter(|(s, _)| *s == stream)
                .map(|(_, l)| format!("{l}\n"))
                .collect::<String>()
        };
        Run {
            code: status.and_then(|s| s.code()).unwrap_or(-1),
            stdout: pick(Stream::Stdout),
            stderr: pick(Stream::Stderr),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return None,
        }
    }
    None
}

fn finish(mut child: Child, limit: Duration) -> Run {
    // Read output on threads so a chatty child cannot block on a full pipe.
    let out = child.stdout.take();
    let err = child.stderr.take();
    let read = |p: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = p {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    };
    let t_out = read(out.map(|o| Box::new(o) as Box<dyn std::io::Read + Send>));
    let t_err = read(err.map(|e| Box::new(e) as Box<dyn std::io::Read + Send>));
    let status = wait(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Run {
        code: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// Every byte of every file under `dir` (missing folders give nothing).
pub fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.extend_from_slice(&b);
            }
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

// ---- for the operator tests (tests/operator.rs) ----

impl Relay {
    /// The UDP port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the running relay.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Runs `nook-relay args…` to completion (bounded: 30 s; a relay that starts after
/// all is killed then), for its commands and for starts that must fail.
pub fn relay_run(args: &[&str]) -> Run {
    let child = Command::new(bin("nook-relay"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nook-relay");
    finish(child, Duration::from_secs(30))
}

/// The writable memory of process `pid` that is present (resident pages, found in
/// /proc/PID/pagemap), concatenated: where anything it received or derived at run
/// time can be. Its code and read-only data cannot hold them, and the address space
/// its allocator only reserved (about a GiB) holds nothing.
pub fn process_memory(pid: u32) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    const PAGE: u64 = 4096;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read /proc/PID/maps");
    let mut mem =
        std::fs::File::open(format!("/proc/{pid}/mem")).expect("open /proc/PID/mem (as root)");
    let mut pagemap =
        std::fs::File::open(format!("/proc/{pid}/pagemap")).expect("open /proc/PID/pagemap");
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).unwrap_or("");
        if !perms.starts_with("rw") || path == "[vvar]" || path == "[vsyscall]" {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let start = u64::from_str_radix(start, 16).expect("a hex address in maps");
        let end = u64::from_str_radix(end, 16).expect("a hex address in maps");
        let pages = ((end - start) / PAGE) as usize;
        let mut entries = vec![0u8; pages * 8];
        if pagemap.seek(SeekFrom::Start(start / PAGE * 8)).is_err()
            || pagemap.read_exact(&mut entries).is_err()
        {
            continue;
        }
        let present: Vec<bool> = entries.chunks_exact(8).map(|e| e[7] & 0x80 != 0).collect();
        let mut page = 0;
        while page < pages {
            if !present[page] {
                page += 1;
                continue;
            }
            let run = present[page..].iter().take_while(|p| **p).count();
            let mut region = vec![0u8; run * PAGE as usize];
            let at = start + page as u64 * PAGE;
            if mem.seek(SeekFrom::Start(at)).is_ok() && mem.read_exact(&mut region).is_ok() {
                out.extend_from_slice(&region);
            }
            page += run;
        }
    }
    out
}
