//! A hostile member cannot drive another member's terminal or fake lines in it (issue 21):
//! what `nook read`, `read --follow`, `new`, `join` and `list` print holds no escape
//! sequence, bell, bidi control or invisible character raw, and every line that is not
//! indented is a real header or event line. `--json` keeps the exact text.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nook_e2e::{Nook, Relay, Stream, two_seat_talk};

/// An alias the CLI accepts (it refuses control characters in aliases) that would
/// still reorder and hide text: a right-to-left override, an isolate and a zero width
/// space. Shown raw, "eve\u{202e}nna" reads "eveann" backwards after "eve".
const EVE: &str = "eve\u{202e}nna\u{2066}\u{200b}";

/// What eve sends: escape sequences, OSC 52, a bell, bidi overrides, a faked message
/// line, a carriage return over the header, C1 controls.
const HOSTILE: &[&str] = &[
    "\x1b[31mred\x1b[0m then \x1b[2J\x1b[1;1H a cleared screen",
    "\x1b]0;pwned\x07",
    "\x1b]52;c;cGFzc3dvcmQ=\x07 your clipboard",
    "ding\x07 dong",
    "invoice\u{202e}fdp.exe \u{2066}isolated\u{2069} \u{200e}\u{200f}\u{061c} hid\u{200b}den\u{feff}",
    "fine\n[15:44:00] bob: send me the password",
    "\r[15:44:01] bob: over the header",
    "also\n* bob left the talk\n! a warning",
    "\u{9b}31m C1 CSI and \u{85} NEL",
];

/// Ordinary text in several scripts, combining marks and emoji: shown as it is.
const NORMAL: &str = "café 日本語 👩\u{200d}💻 🏳\u{fe0f}\u{200d}🌈 e\u{301} שלום";

/// The test's own list of what must never reach a terminal raw.
fn dangerous(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// Panics, naming the first, if `out` holds a character that must not reach a terminal
/// (the emoji joiners of [`NORMAL`] aside).
fn assert_terminal_safe(what: &str, out: &str) {
    let without_emoji = out.replace(NORMAL, "");
    let bad: Vec<String> = without_emoji
        .chars()
        .filter(|&c| dangerous(c))
        .map(|c| format!("U+{:04X}", u32::from(c)))
        .collect();
    assert!(bad.is_empty(), "{what} printed {bad:?} raw:\n{out}");
    assert!(!out.as_bytes().contains(&0x1b) && !out.as_bytes().contains(&0x07));
}

/// Checks that every line of `nook read` text output either is indented (the rest of
/// a message) or is one of the entries that `--json read` lists, of the same kind and
/// in the same order: a header `[hh:mm:ss] …` per message, `* …`/`! …` per event.
fn assert_lines_match_entries(text: &str, entries: &[serde_json::Value]) {
    let heads: Vec<&str> = text.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(
        heads.len(),
        entries.len(),
        "one unindented line per entry:\n{text}"
    );
    for (line, e) in heads.iter().zip(entries) {
        let header = line.starts_with('[');
        assert_eq!(
            header,
            e["type"] == "message",
            "{line:?} is not a header of entry {e}"
        );
        if !header {
            let mark = if e["type"] == "warning" { "! " } else { "* " };
            assert!(line.starts_with(mark), "{line:?} for {e}");
        }
    }
}

/// A two-seat talk that any member may close: "ann" created it, eve (alias [`EVE`])
/// took the other seat; with each one's talk name.
fn ann_and_eve(relay: &Relay) -> (Nook, Nook, String, String) {
    two_seat_talk(relay, &["--close", "any"], &["--alias", EVE])
}

#[test]
fn read_shows_hostile_text_escaped_and_json_keeps_it_exact() {
    let relay = Relay::start();
    let (ann, eve, ta, te) = ann_and_eve(&relay);
    for text in HOSTILE {
        eve.ok(&["send", &te, text]);
    }
    eve.ok(&["send", &te, NORMAL]);
    ann.ok(&["send", &ta, "hi eve"]);

    let read = ann.ok(&["read", &ta]).stdout;
    assert_terminal_safe("read", &read);
    let entries = ann.ok(&["--json", "read", &ta]).json_lines();
    let messages: Vec<&serde_json::Value> =
        entries.iter().filter(|e| e["type"] == "message").collect();
    assert_eq!(messages.len(), HOSTILE.len() + 2, "{entries:?}");
    // Every line that looks like a header is one: one per message, none faked.
    assert_eq!(
        read.lines().filter(|l| l.starts_with('[')).count(),
        messages.len(),
        "{read}"
    );
    assert_lines_match_entries(&read, &entries);

    // What was sent is shown, escaped where it must be.
    for shown in [
        "\\x1b[31mred\\x1b[0m then \\x1b[2J\\x1b[1;1H a cleared screen",
        ": \\x1b]0;pwned\\x07",
        "\\x1b]52;c;cGFzc3dvcmQ=\\x07 your clipboard",
        "ding\\x07 dong",
        "invoice\\u{202e}fdp.exe \\u{2066}isolated\\u{2069}",
        "\\u{200e}\\u{200f}\\u{61c} hid\\u{200b}den\\u{feff}",
        ": fine\n",
        "\\x0d[15:44:01] bob: over the header",
        "\\u{9b}31m C1 CSI and \\u{85} NEL",
        NORMAL,
        "eve\\u{202e}nna\\u{2066}\\u{200b}: ",
    ] {
        assert!(read.contains(shown), "{shown:?} not in:\n{read}");
    }
    // The faked lines are there, but indented under eve's header.
    for faked in [
        "[15:44:00] bob: send me the password",
        "* bob left the talk",
        "! a warning",
    ] {
        let line = read
            .lines()
            .find(|l| l.contains(faked))
            .unwrap_or_else(|| panic!("{faked:?} not in:\n{read}"));
        assert!(
            line.starts_with(' ') && line.trim_start() == faked,
            "{line:?}"
        );
    }
    // Eve's seat event shows her alias escaped too.
    assert!(
        read.lines()
            .any(|l| l == "* eve\\u{202e}nna\\u{2066}\\u{200b} took seat 1"),
        "{read}"
    );

    // `--json` keeps the exact text and alias.
    let from_eve: Vec<(&str, &str)> = messages
        .iter()
        .filter(|m| m["own"] == false)
        .map(|m| (m["alias"].as_str().unwrap(), m["text"].as_str().unwrap()))
        .collect();
    let mut sent: Vec<&str> = HOSTILE.to_vec();
    sent.push(NORMAL);
    assert_eq!(from_eve, sent.iter().map(|t| (EVE, *t)).collect::<Vec<_>>());
}

#[test]
fn read_follow_shows_hostile_text_escaped() {
    let relay = Relay::start();
    let (ann, eve, ta, te) = ann_and_eve(&relay);
    eve.ok(&["send", &te, HOSTILE[0]]);
    let mut follow = ann.spawn(&["read", &ta, "--follow"]);
    let limit = Duration::from_secs(30);
    follow.wait_for(Stream::Stderr, limit, |l| l.contains("following"));
    for text in &HOSTILE[1..] {
        eve.ok(&["send", &te, text]);
    }
    // The last line eve sends arrives last: everything before it was printed.
    follow.wait_for(Stream::Stdout, limit, |l| l.contains("NEL"));
    // Eve closes (ann closing would delete the talk under her own follower).
    eve.ok(&["close", &te]);
    let f = follow.finish(Duration::from_secs(60));
    assert_eq!(
        f.code, 6,
        "a follower whose talk closed ends with exit 6: {f:?}"
    );
    assert_terminal_safe("read --follow", &f.stdout);
    assert_eq!(
        f.stdout.lines().filter(|l| l.starts_with('[')).count(),
        HOSTILE.len(),
        "{}",
        f.stdout
    );
    let heads: Vec<&str> = f.stdout.lines().filter(|l| !l.starts_with(' ')).collect();
    assert!(
        heads
            .iter()
            .all(|l| l.starts_with("[") || l.starts_with("* ")),
        "{heads:?}"
    );
    assert!(
        f.stdout.contains("\\x1b]52;c;cGFzc3dvcmQ=\\x07"),
        "{}",
        f.stdout
    );
    assert!(
        f.stdout
            .lines()
            .any(|l| l.starts_with("* the talk was closed by eve\\u{202e}nna\\u{2066}\\u{200b}")),
        "{}",
        f.stdout
    );
}

#[test]
fn new_join_and_list_show_aliases_escaped() {
    let relay = Relay::start();
    let owner_alias = "\u{202d}mallory\u{2069}\u{200f}";
    let (a, b) = (Nook::new(), Nook::new());
    let new = a.ok(&[
        "new",
        "--relay",
        &relay.address,
        "--alias",
        owner_alias,
        "--seats",
        "3",
    ]);
    assert_terminal_safe("new", &new.stdout);
    assert!(
        new.stdout
            .contains("you are \\u{202d}mallory\\u{2069}\\u{200f}"),
        "{}",
        new.stdout
    );
    let invite = new
        .stdout
        .lines()
        .find(|l| l.starts_with("nook://"))
        .unwrap()
        .to_string();
    let joined = b.ok(&["join", &invite, "--alias", EVE]);
    assert_terminal_safe("join", &joined.stdout);
    assert!(
        joined
            .stdout
            .contains(" as eve\\u{202e}nna\\u{2066}\\u{200b} "),
        "{}",
        joined.stdout
    );
    for (who, alias) in [
        (&a, "\\u{202d}mallory\\u{2069}\\u{200f}"),
        (&b, "eve\\u{202e}nna"),
    ] {
        let list = who.ok(&["list"]).stdout;
        assert_terminal_safe("list", &list);
        assert!(list.contains(alias), "{list}");
    }
    // The owner's read shows the newcomer's alias escaped in the event line.
    let ta = a.only_talk();
    let read = a.ok(&["read", &ta]).stdout;
    assert_terminal_safe("read", &read);
    assert!(
        read.contains("* eve\\u{202e}nna\\u{2066}\\u{200b} took seat 1"),
        "{read}"
    );
    // And `--json` keeps both exact.
    assert_eq!(a.ok(&["--json", "list"]).json()["alias"], owner_alias);
    assert_eq!(b.ok(&["--json", "list"]).json()["alias"], EVE);
}
