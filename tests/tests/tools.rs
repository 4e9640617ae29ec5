//! The tools a terminal user and an operator expect (issue 15): invites as QR codes,
//! completions, man pages, `--version`, NO_COLOR, the client's default relay in
//! config.toml and the relay's metrics endpoint. With the real binaries on loopback.
//!
//! `nook join -` (an invite from stdin) is tested in invites.rs.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nook_e2e::{Nook, Relay, bin, relay_run, text as s, two_seat_talk};

/// Rows of a QR code as `nook` draws them: half and full blocks only, 21 or more wide.
fn qr_rows(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| {
            l.chars().count() >= 21 && l.chars().all(|c| matches!(c, ' ' | '█' | '▀' | '▄'))
        })
        .collect()
}

#[test]
fn new_and_invites_draw_each_invite_as_a_qr_code() {
    let relay = Relay::start();
    let owner = Nook::new();
    let new = owner.ok(&["new", "--relay", &relay.address, "--seats", "3", "--qr"]);
    let invites: Vec<&str> = new
        .stdout
        .lines()
        .filter(|l| l.starts_with("nook://"))
        .collect();
    assert_eq!(invites.len(), 2, "{}", new.stdout);
    assert!(new.stdout.contains("invite 1 of 2:") && new.stdout.contains("invite 2 of 2:"));
    let rows = qr_rows(&new.stdout);
    // Two square codes: each as many rows as half its width, rounded up.
    let width = rows[0].chars().count();
    assert_eq!(rows.len(), 2 * width.div_ceil(2), "{}", new.stdout);
    let talk = owner.only_talk();
    let shown = owner.ok(&["invites", &talk, "--qr"]);
    assert!(shown.stdout.contains("invite 2 of 2:"), "{}", shown.stdout);
    assert_eq!(qr_rows(&shown.stdout).len(), rows.len());
    // Without --qr, nothing is drawn.
    assert!(qr_rows(&owner.ok(&["invites", &talk]).stdout).is_empty());
    // --qr is for a person: with --json it is a usage error, and nothing is created.
    let r = Nook::new().run(&["--json", "new", "--relay", &relay.address, "--qr"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let e: serde_json::Value = serde_json::from_str(r.stderr.trim()).unwrap();
    assert_eq!(e["kind"], "usage");
    assert!(s(&e["error"]).contains("--qr"), "{e}");
}

/// `nook` with `args`, a config folder `config`, and no NOOK_RELAY (unless `relay_env`).
fn nook_with_config(nook: &Nook, config: &Path, relay_env: Option<&str>, args: &[&str]) -> String {
    let mut c = Command::new(bin("nook"));
    c.arg("--home")
        .arg(nook.home_dir())
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("NOOK_RELAY")
        .stdin(Stdio::null());
    if let Some(r) = relay_env {
        c.env("NOOK_RELAY", r);
    }
    let out = c.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    format!(
        "{}\n{}\nexit {}",
        text(&out.stdout),
        text(&out.stderr),
        out.status.code().unwrap_or(-1)
    )
}

#[test]
fn new_takes_its_relay_from_config_toml_unless_given() {
    let relay = Relay::start();
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("nook/config.toml");
    let nook = Nook::new();
    // No relay anywhere: a usage error that says where one can come from.
    let out = nook_with_config(&nook, config.path(), None, &["new"]);
    assert!(out.ends_with("exit 2"), "{out}");
    assert!(
        out.contains("NOOK_RELAY") && out.contains("config.toml"),
        "{out}"
    );

    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, format!("relay = \"{}\"\n", relay.address)).unwrap();
    let out = nook_with_config(&nook, config.path(), None, &["--json", "new"]);
    assert!(out.ends_with("exit 0"), "{out}");
    let created: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(created["relay"], relay.address.as_str());

    // NOOK_RELAY and --relay beat the file: a dead relay there is what is tried.
    let dead = relay.address.replace(
        &format!(":{}", relay.port()),
        &format!(":{}", nook_e2e::free_port()),
    );
    for (env, args) in [
        (Some(dead.as_str()), vec!["--connect-timeout", "1s", "new"]),
        (
            None,
            vec!["--connect-timeout", "1s", "new", "--relay", &dead],
        ),
    ] {
        let out = nook_with_config(&nook, config.path(), env, &args);
        assert!(out.ends_with("exit 4"), "{env:?} {args:?}: {out}");
    }

    // The same default for `nook rpc`'s `new`.
    let mut rpc = Command::new(bin("nook"))
        .arg("--home")
        .arg(nook.home_dir())
        .arg("rpc")
        .env("XDG_CONFIG_HOME", config.path())
        .env_remove("NOOK_RELAY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    rpc.stdin
        .take()
        .unwrap()
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"new\",\"params\":{}}\n")
        .unwrap();
    let mut answer = String::new();
    rpc.stdout
        .take()
        .unwrap()
        .read_to_string(&mut answer)
        .unwrap();
    rpc.wait().unwrap();
    let answer: serde_json::Value = serde_json::from_str(answer.lines().next().unwrap()).unwrap();
    assert_eq!(
        answer["result"]["relay"],
        relay.address.as_str(),
        "{answer}"
    );

    // An unknown key is refused, naming it and the file.
    std::fs::write(&file, "relay = \"nook://x@h:1\"\nrealy = 1\n").unwrap();
    let out = nook_with_config(&nook, config.path(), None, &["new"]);
    assert!(out.ends_with("exit 5"), "{out}");
    assert!(
        out.contains("unknown field `realy`") && out.contains(&file.display().to_string()),
        "{out}"
    );
}

/// The subcommands of a binary, as its `--help` lists them (without `help`).
fn subcommands(binary: &str) -> Vec<String> {
    let help = Command::new(bin(binary)).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let section = help.split("Commands:\n").nth(1).unwrap();
    section
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn completions_cover_every_subcommand_in_each_shell() {
    for binary in ["nook", "nook-relay"] {
        let commands = subcommands(binary);
        assert!(commands.len() >= 4, "{binary}: {commands:?}");
        for shell in ["bash", "zsh", "fish"] {
            let out = Command::new(bin(binary))
                .args(["completions", shell])
                .output()
                .unwrap();
            assert!(out.status.success(), "{binary} {shell}");
            let script = String::from_utf8(out.stdout).unwrap();
            for c in &commands {
                assert!(script.contains(c.as_str()), "{binary} {shell}: no {c}");
            }
            if shell == "bash" {
                // The script must at least parse.
                let mut check = Command::new("bash")
                    .arg("-n")
                    .stdin(Stdio::piped())
                    .spawn()
                    .unwrap();
                check
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(script.as_bytes())
                    .unwrap();
                assert!(check.wait().unwrap().success(), "{binary}: bash -n failed");
            }
        }
    }
}

#[test]
fn man_pages_are_valid_roff_for_every_subcommand() {
    let groff = Command::new("groff")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !groff {
        eprintln!("note: groff is not installed: man pages checked for their structure only");
    }
    for binary in ["nook", "nook-relay"] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(bin(binary))
            .args(["man", "--out"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{binary}");
        let mut pages = vec![binary.to_string()];
        pages.extend(subcommands(binary).iter().map(|c| format!("{binary}-{c}")));
        for page in pages {
            let path = dir.path().join(format!("{page}.1"));
            let roff = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let th = format!(".TH {page} 1");
            assert!(roff.contains(&th), "{page}: no {th}");
            let name = format!(".SH NAME\n{}", page.replace('-', "\\-"));
            assert!(roff.contains(&name), "{page}: no NAME section");
            assert!(roff.contains(".SH SYNOPSIS"), "{page}");
            if groff {
                // -k: UTF-8 input, as man reads it; -ww: every warning; -z: no output.
                let check = Command::new("groff")
                    .args(["-k", "-man", "-ww", "-z", "-Tutf8"])
                    .arg(&path)
                    .output()
                    .unwrap();
                let warnings = String::from_utf8_lossy(&check.stderr);
                assert!(
                    check.status.success() && warnings.trim().is_empty(),
                    "{page}: {warnings}"
                );
            }
        }
        // The page of a nested command is there too.
        if binary == "nook" {
            assert!(dir.path().join("nook-receipt-verify.1").exists());
        }
    }
}

#[test]
fn version_names_the_protocol() {
    let protocol = format!("(protocol {})", nook_proto::limits::PROTOCOL_VERSION);
    for binary in ["nook", "nook-relay"] {
        let out = Command::new(bin(binary)).arg("--version").output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "{binary}");
        assert_eq!(
            text.trim(),
            format!("{binary} {} {protocol}", env!("CARGO_PKG_VERSION")),
        );
    }
}

/// A TCP port free on 127.0.0.1 now.
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// One HTTP/1.1 request to `port`: status line and body.
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// Family name → (type, help, samples as (labels, value)).
type Families = std::collections::BTreeMap<String, (String, String, Vec<(String, u64)>)>;

/// Parses the text exposition format; fails the test on any line out of place.
fn parse_exposition(body: &str) -> Families {
    let mut families = Families::new();
    let mut current: Option<String> = None;
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(!help.is_empty() && !families.contains_key(name), "{line}");
            families.insert(name.into(), (String::new(), help.into(), Vec::new()));
            current = Some(name.into());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(Some(name), current.as_deref(), "{line}");
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            families.get_mut(name).unwrap().0 = kind.into();
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.strip_suffix('}').unwrap().to_string()),
                None => (series, String::new()),
            };
            assert_eq!(
                Some(name),
                current.as_deref(),
                "sample outside its family: {line}"
            );
            let value: u64 = value.parse().unwrap();
            let family = families.get_mut(name).unwrap();
            assert!(!family.0.is_empty(), "sample before TYPE: {line}");
            family.2.push((labels, value));
        }
    }
    for (name, (kind, _, samples)) in &families {
        assert!(!samples.is_empty(), "{name} has no sample");
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name} is a {kind}"
        );
    }
    families
}

#[test]
fn the_metrics_endpoint_serves_counts_and_nothing_that_identifies() {
    let port = free_tcp_port();
    let relay = Relay::start_with(&["--metrics", &format!("127.0.0.1:{port}")]);
    let (ann, bob, talk, _) = two_seat_talk(&relay, &[], &[]);
    ann.ok(&["send", &talk, "hello"]);
    let delivered = |port| {
        let (_, body) = http_get(port, "/metrics");
        parse_exposition(&body)["nook_relay_envelopes_delivered_total"].2[0].1
    };
    // Bob was not following: his read fetches ann's message, one delivery at least.
    let before = delivered(port);
    bob.ok(&["read", &talk]);
    assert!(delivered(port) > before);

    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let families = parse_exposition(&body);
    let value = |name: &str| families[name].2[0].1;
    assert_eq!(value("nook_relay_mailboxes"), 1);
    assert_eq!(value("nook_relay_mailboxes_created_total"), 1);
    // Ann's message; the relay stored it before `send` exited.
    assert!(value("nook_relay_envelopes_stored_total") >= 1, "{body}");
    assert!(value("nook_relay_store_bytes") > 0);
    for name in [
        "nook_relay_connections",
        "nook_relay_handshakes_in_progress",
        "nook_relay_envelopes_deleted_total",
        "nook_relay_partial_frame_bytes",
        "nook_relay_queued_bytes",
        "nook_relay_flushes_total",
        "nook_relay_retries_sent_total",
        "nook_relay_mailboxes_deleted_total",
    ] {
        assert!(families.contains_key(name), "{name} missing: {body}");
    }
    let kinds: Vec<&str> = families["nook_relay_refusals_total"]
        .2
        .iter()
        .map(|(l, _)| l.as_str())
        .collect();
    for kind in [
        "connection_limit",
        "handshake_limit",
        "handshake_timeout",
        "frame_deadline",
        "partial_frame_budget",
        "slow_reader",
        "create_token",
        "create_rate",
    ] {
        assert!(
            kinds.contains(&format!("kind=\"{kind}\"").as_str()),
            "{kinds:?}"
        );
    }
    // Counts only: no talk, no relay key, no address.
    let fingerprint = relay.address["nook://".len()..].split('@').next().unwrap();
    for secret in [talk.as_str(), fingerprint, "127.0.0.1"] {
        assert!(!body.contains(secret), "{secret} in the metrics");
    }
    // Anything but GET /metrics is refused.
    assert_eq!(http_get(port, "/").0, "HTTP/1.1 404 Not Found");
}

#[test]
fn metrics_on_a_non_loopback_address_need_to_be_forced() {
    let data = tempfile::tempdir().unwrap();
    let data = data.path().to_string_lossy().into_owned();
    let port = free_tcp_port().to_string();
    let r = relay_run(&[
        "--metrics",
        &format!("0.0.0.0:{port}"),
        "--data",
        &data,
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("not a loopback address") && r.stderr.contains("--metrics-allow-remote"),
        "{}",
        r.stderr
    );
    // Nothing was started or written.
    assert!(!Path::new(&data).join("identity.key").exists());
}

/// The dist/ unit has its hardening, and systemd-analyze (where installed) accepts it.
#[test]
fn the_systemd_unit_verifies() {
    let has = Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/nook-relay.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "DynamicUser=yes",
        "StateDirectory=nook-relay",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(text.contains(line), "{line:?} missing");
    }
    if !has {
        eprintln!("note: systemd-analyze is not installed: dist/nook-relay.service not verified");
        return;
    }
    // verify checks ExecStart's binary exists: point it at this build's.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("nook-relay.service");
    let exe = bin("nook-relay");
    std::fs::write(
        &local,
        text.replace("/usr/local/bin/nook-relay", &exe.to_string_lossy()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&local)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

/// The SGR parameters of `bytes` that set a colour (30–49 and 90–107: foreground,
/// background, 256-colour and RGB), one string per escape sequence holding one.
fn colour_escapes(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut found = Vec::new();
    for seq in text.split("\x1b[").skip(1) {
        let params: String = seq
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ';')
            .collect();
        if !seq[params.len()..].starts_with('m') {
            continue;
        }
        let colour = params
            .split(';')
            .filter_map(|p| p.parse::<u32>().ok())
            .any(|p| (30..=49).contains(&p) && p != 39 && p != 49 || (90..=107).contains(&p));
        if colour {
            found.push(params);
        }
    }
    found
}

/// What `nook chat` wrote to its terminal (`script` gives it one) until it showed
/// "connected", with NO_COLOR set or not.
fn chat_screen_bytes(nook: &Nook, talk: &str, no_color: bool) -> Vec<u8> {
    use std::sync::{Arc, Mutex};
    let command = format!(
        // script's terminal has no size until told: the chat draws nothing in 0x0.
        "stty rows 30 cols 100; exec {} --home '{}' chat {talk}",
        bin("nook").display(),
        nook.home_dir().display()
    );
    let mut c = Command::new("script");
    c.args(["-q", "-f", "-c", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if no_color {
        c.env("NO_COLOR", "1");
    }
    let mut child = c.spawn().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut out = child.stdout.take().unwrap();
    let sink = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let shown = loop {
        let bytes = seen.lock().unwrap().clone();
        if nook_e2e::contains(&bytes, "connected".as_bytes()) {
            break bytes;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the chat never showed \"connected\": {}",
            String::from_utf8_lossy(&bytes)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    drop(child.stdin.take());
    let _ = reader.join();
    shown
}

#[test]
fn no_color_keeps_the_chat_screen_free_of_colour() {
    let has_script = Command::new("script")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_script {
        eprintln!(
            "note: `script` (util-linux) is not installed: the NO_COLOR chat test is skipped"
        );
        return;
    }
    let relay = Relay::start();
    let (ann, _bob, talk, _) = two_seat_talk(&relay, &[], &[]);
    // Without NO_COLOR the screen is coloured, so the check below can fail.
    let coloured = chat_screen_bytes(&ann, &talk, false);
    assert!(!colour_escapes(&coloured).is_empty());
    let plain = chat_screen_bytes(&ann, &talk, true);
    assert_eq!(colour_escapes(&plain), Vec::<String>::new());
}
