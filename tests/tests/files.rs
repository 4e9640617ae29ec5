//! Files in a talk (issue 15 part 1), with the real binaries: a multi-chunk file sent
//! and saved byte for byte, hostile names kept inside the target folder, overwrite
//! refused without --force, the size cap, and erasure on close.

#![allow(clippy::unwrap_used)]

use nook_e2e::{Nook, Relay, all_bytes, contains, two_seat_talk};

/// Deterministic bytes that do not compress to a pattern, with a marker at the start.
fn content(len: usize, marker: &[u8]) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    v[..marker.len()].copy_from_slice(marker);
    v
}

fn offers(reader: &Nook, talk: &str) -> Vec<serde_json::Value> {
    reader
        .ok(&["--json", "read", talk])
        .json_lines()
        .into_iter()
        .filter(|l| l["type"] == "file_offer")
        .collect()
}

#[test]
fn a_multi_chunk_file_arrives_byte_for_byte_and_is_erased_on_close() {
    let relay = Relay::start();
    let (ann, bob, ta, tb) = two_seat_talk(&relay, &[], &[]);
    let marker = b"FILE-MARKER-5f1c2a";
    let bytes = content(3 * 1024 * 1024 + 12345, marker);
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("report.bin");
    std::fs::write(&path, &bytes).unwrap();

    let sent = ann.ok(&["--json", "send", &ta, "--file", path.to_str().unwrap()]);
    let lines = sent.json_lines();
    assert!(lines.iter().any(|l| l["type"] == "progress"), "{sent:?}");
    let done = lines.iter().find(|l| l["type"] == "file_sent").unwrap();
    assert_eq!(done["size"], bytes.len() as u64);
    assert_eq!(done["chunks"], 25);

    let offered = offers(&bob, &tb);
    assert_eq!(offered.len(), 1, "{offered:?}");
    assert_eq!(offered[0]["name"], "report.bin");
    let id = offered[0]["file_id"].as_str().unwrap()[..8].to_string();
    // The text line names the command that saves it, with this talk's name.
    let human = bob.ok(&["read", &tb]);
    assert!(
        human.stdout.contains(&format!(
            "offers report.bin (3.0 MiB) — nook save {tb} {id}"
        )),
        "{}",
        human.stdout
    );

    let out = tempfile::tempdir().unwrap();
    let to = out.path().to_str().unwrap();
    bob.ok(&["save", &tb, &id, "--to", to]);
    assert_eq!(std::fs::read(out.path().join("report.bin")).unwrap(), bytes);

    // Not replaced without --force; replaced with it.
    std::fs::write(out.path().join("report.bin"), b"mine").unwrap();
    let refused = bob.run(&["save", &tb, &id, "--to", to]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    assert_eq!(
        std::fs::read(out.path().join("report.bin")).unwrap(),
        b"mine"
    );
    bob.ok(&["save", &tb, &id, "--to", to, "--force"]);
    assert_eq!(std::fs::read(out.path().join("report.bin")).unwrap(), bytes);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);

    // The receiver's store held the chunks (sealed); after the close nothing of the
    // file is readable in either home.
    ann.ok(&["close", &ta]);
    bob.run(&["read", &tb]);
    for home in [ann.home_dir(), bob.home_dir()] {
        let all = all_bytes(&home);
        assert!(!contains(&all, marker), "file bytes left in {home:?}");
        assert!(
            !contains(&all, &bytes[4096..4160]),
            "file bytes left in {home:?}"
        );
    }
}

/// On a terminal, `nook send --file` draws a progress bar (indicatif, on stderr) and
/// clears it at the end; through a pipe (every other test) it draws none.
#[test]
fn a_file_sent_from_a_terminal_shows_a_progress_bar() {
    let relay = Relay::start();
    let (ann, _bob, ta, _tb) = two_seat_talk(&relay, &[], &[]);
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("big.bin");
    std::fs::write(&path, content(3 * 1024 * 1024, b"BAR")).unwrap();
    let path = path.to_str().unwrap();

    let shown = ann.run_on_terminal(&["send", &ta, "--file", path]);
    assert_eq!(shown.code, 0, "{shown:?}");
    // The bar's template: "{bar} {bytes}/{total_bytes} {bytes_per_sec} {eta}".
    let screen = &shown.stdout;
    assert!(screen.contains("/3.00 MiB"), "no bar drawn: {screen:?}");
    assert!(screen.contains('█') || screen.contains('░'), "{screen:?}");
    assert!(screen.contains("sent big.bin (3.0 MiB)"), "{screen:?}");

    let piped = ann.ok(&["send", &ta, "--file", path]);
    assert!(!piped.stderr.contains("MiB/"), "{}", piped.stderr);
    assert!(!piped.stderr.contains('\u{1b}'), "{:?}", piped.stderr);
}

#[test]
fn hostile_names_stay_inside_the_target_folder() {
    let relay = Relay::start();
    let (ann, bob, ta, tb) = two_seat_talk(&relay, &[], &[]);
    let names = [
        ("../../etc/passwd", "passwd"),
        ("/tmp/absolute", "absolute"),
        ("evil\nname\u{1b}[31m", "evilname[31m"),
        ("..", "file"),
    ];
    for (name, _) in names {
        let r = ann.run_with_stdin(&["send", &ta, "--file", "-", "--name", name], "payload");
        assert_eq!(r.code, 0, "{r:?}");
    }
    let offered = offers(&bob, &tb);
    assert_eq!(offered.len(), names.len(), "{offered:?}");
    let root = tempfile::tempdir().unwrap();
    let target = root.path().join("in");
    std::fs::create_dir(&target).unwrap();
    for o in &offered {
        let id = o["file_id"].as_str().unwrap().to_string();
        bob.ok(&["save", &tb, &id, "--to", target.to_str().unwrap()]);
    }
    let mut written: Vec<String> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    let mut expected: Vec<String> = names.iter().map(|(_, s)| s.to_string()).collect();
    expected.sort();
    assert_eq!(written, expected);
    // Nothing beside the target folder.
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    // The offer line is escaped on a terminal.
    let human = bob.ok(&["read", &tb]);
    assert!(!human.stdout.contains('\u{1b}'), "{}", human.stdout);
}

#[test]
fn a_file_over_the_cap_is_refused_before_anything_is_sent() {
    let relay = Relay::start();
    let (ann, bob, ta, tb) = two_seat_talk(&relay, &[], &[]);
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("big");
    std::fs::write(&path, content(5000, b"x")).unwrap();
    let refused = ann.run(&[
        "send",
        &ta,
        "--file",
        path.to_str().unwrap(),
        "--max-file",
        "4096",
    ]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("--max-file"), "{}", refused.stderr);
    assert!(offers(&bob, &tb).is_empty());
}

/// How a send is cut off mid-way.
enum Cut {
    KillSender,
    RestartRelay,
}

#[test]
fn a_send_cut_off_by_killing_the_sender_resumes_and_the_file_arrives_once_and_whole() {
    cut_off_and_resume(Cut::KillSender);
}

#[test]
fn a_send_cut_off_by_a_relay_restart_resumes_and_the_file_arrives_once_and_whole() {
    cut_off_and_resume(Cut::RestartRelay);
}

/// A mailbox that holds few envelopes: the send fills it and waits (back-pressure)
/// until bob reads, so it is cut off there deterministically mid-way; the rerun goes
/// on while bob reads, and bob saves one whole file.
fn cut_off_and_resume(cut: Cut) {
    use nook_e2e::Stream;
    use std::time::{Duration, Instant};
    let mut relay = Relay::start_with(&["--max-envelopes-per-mailbox", "12"]);
    let (ann, bob, ta, tb) = two_seat_talk(&relay, &[], &[]);
    bob.ok(&["read", &tb]);
    ann.ok(&["read", &ta]);
    let bytes = content(20 * 130_163 - 77, b"RESUME-MARKER");
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("big.bin");
    std::fs::write(&path, &bytes).unwrap();
    let p = path.to_str().unwrap();

    let mut first = ann.spawn(&["--json", "send", &ta, "--file", p]);
    first.wait_for(Stream::Stdout, Duration::from_secs(60), |l| {
        l.contains("\"chunk\":8")
    });
    match cut {
        Cut::KillSender => first.terminate(),
        Cut::RestartRelay => relay.restart(),
    }
    let cut = first.finish(Duration::from_secs(60));
    assert_ne!(cut.code, 0, "{cut:?}");
    assert!(!cut.stdout.contains("file_sent"), "{cut:?}");

    // Offered, not complete: save refuses with what is missing.
    let offered = offers(&bob, &tb);
    assert_eq!(offered.len(), 1, "{offered:?}");
    let id = offered[0]["file_id"].as_str().unwrap().to_string();
    let out = tempfile::tempdir().unwrap();
    let to = out.path().to_str().unwrap();
    let early = bob.run(&["save", &tb, &id, "--to", to]);
    assert_ne!(early.code, 0, "{early:?}");
    assert!(early.stderr.contains("not complete"), "{}", early.stderr);
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);

    // Run again: it goes on from where it stopped while bob reads (each read frees
    // the mailbox), and finishes.
    let mut second = ann.spawn(&["--json", "send", &ta, "--file", p]);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut done = false;
    for _ in 0..1000 {
        bob.ok(&["read", &tb]);
        if second
            .lines_so_far(Stream::Stdout)
            .iter()
            .any(|l| l.contains("file_sent"))
        {
            done = true;
            break;
        }
        assert!(Instant::now() < deadline, "the resumed send did not finish");
    }
    assert!(done);
    let second = second.finish(Duration::from_secs(30));
    assert_eq!(second.code, 0, "{second:?}");
    let last: serde_json::Value =
        serde_json::from_str(second.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["resumed"], true, "{second:?}");
    assert_eq!(last["file_id"].as_str().unwrap(), id);

    // One offer, one whole file.
    assert_eq!(offers(&bob, &tb).len(), 1);
    bob.ok(&["save", &tb, &id[..8], "--to", to]);
    assert_eq!(std::fs::read(out.path().join("big.bin")).unwrap(), bytes);
}
