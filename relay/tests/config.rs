//! `nook-relay --config FILE` with the real binary: settings come from the file,
//! the command line and the environment beat it, and an unknown key or a bad value is
//! refused naming the key and the file.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn relay() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nook-relay"));
    c.env_remove("NOOK_RELAY_DATA")
        .env_remove("NOOK_RELAY_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A UDP port free on 127.0.0.1 now.
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Starts the relay with `args`, reads the address it prints, and stops it.
fn address_printed(args: &[&str], file: &Path) -> String {
    let mut child = relay()
        .arg("--config")
        .arg(file)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    // The first line comes once the relay listens, or EOF if it exits.
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    line.trim().to_string()
}

#[test]
fn the_file_sets_flags_and_the_command_line_beats_it() {
    let dir = tempfile::tempdir().unwrap();
    let (from_file, from_flag) = (free_port(), free_port());
    let file = dir.path().join("relay.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:{from_file}\"\ndata = \"{}\"\nmax-ttl = \"1h\"\nstatus-every = 0\n",
            data.display()
        ),
    )
    .unwrap();
    let address = address_printed(&[], &file);
    assert!(address.ends_with(&format!(":{from_file}")), "{address}");
    // The data folder came from the file too.
    assert!(data.join("identity.key").exists());
    let listen = format!("127.0.0.1:{from_flag}");
    let address = address_printed(&["--listen", &listen], &file);
    assert!(address.ends_with(&format!(":{from_flag}")), "{address}");
}

#[test]
fn the_environment_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (in_file, in_env) = (dir.path().join("file-data"), dir.path().join("env-data"));
    std::fs::create_dir(&in_file).unwrap();
    std::fs::create_dir(&in_env).unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, format!("data = \"{}\"\n", in_file.display())).unwrap();
    let status = |env: Option<&Path>| {
        let mut c = relay();
        c.arg("--config").arg(&file).arg("status");
        if let Some(e) = env {
            c.env("NOOK_RELAY_DATA", e);
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    assert!(status(None).contains(&in_file.display().to_string()));
    assert!(status(Some(&in_env)).contains(&in_env.display().to_string()));
}

#[test]
fn unknown_keys_and_bad_values_are_refused_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    let shown = file.display().to_string();
    for (content, says) in [
        ("max-tll = \"1h\"\n", "unknown key `max-tll`"),
        ("max_ttl = \"1h\"\n", "unknown key `max_ttl`"),
        ("max-ttl = \"30s\"\n", "`max-ttl` in the config file"),
        ("max-connections = 0\n", "must be at least 1"),
        (
            "max-connections = 1.5\n",
            "must be a string or a whole number",
        ),
        ("metrics-allow-remote = \"yes\"\n", "must be true or false"),
        ("[limits]\nmax-ttl = \"1h\"\n", "unknown key `limits`"),
        ("listen = \n", "not valid TOML"),
    ] {
        std::fs::write(&file, content).unwrap();
        let out = relay()
            .arg("--config")
            .arg(&file)
            .args(["--data"])
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{content}: {}", text(&out));
        let err = text(&out);
        assert!(
            err.contains(says) && err.contains(&shown),
            "{content}: {err}"
        );
        // Refused before anything was created.
        assert!(!dir.path().join("data").exists());
    }
    let out = relay()
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(
        text(&out).contains("cannot read the config file"),
        "{}",
        text(&out)
    );
}
