//! Text that other members chose, made safe to show on a terminal.
//!
//! Everything another member picks — message text and aliases today, file names,
//! titles or notes later — is hostile until shown otherwise. Printed raw, an escape
//! sequence in it recolours the screen, sets the window title, writes the clipboard
//! (OSC 52) or moves the cursor over earlier lines; a bidi override makes text read
//! backwards; an invisible character makes two aliases look alike or hides text; and
//! a line break starts a line that passes for another member's message. This module
//! turns such text into text that shows what it holds and does nothing else.
//!
//! It never changes what is stored, sent or printed by `--json` (serde_json escapes
//! what JSON needs, and scripts get the exact text): only what a person reads.
//!
//! # The rules
//!
//! A character is *escaped*, i.e. shown as its code point, written `\xHH` (two
//! lowercase hex digits) below U+0080 and `\u{h}` (lowercase hex, no leading zeros,
//! as Rust writes it) from U+0080 on, when it is one of:
//!
//! - a control character: C0 (U+0000–U+001F, so ESC is `\x1b`, BEL `\x07`, CR `\x0d`,
//!   tab `\x09`), DEL (`\x7f`), C1 (U+0080–U+009F, e.g. `\u{9b}`);
//! - a bidi control: U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069
//!   (e.g. `\u{202e}`);
//! - an invisible character that can hide or disguise text: U+00AD, U+115F, U+1160,
//!   U+180E, U+200B–U+200D, U+2060–U+2064, U+206A–U+206F, U+3164, U+FEFF, U+FFA0,
//!   U+FFF9–U+FFFB, U+1BCA0–U+1BCA3, U+1D173–U+1D17A and the tags U+E0000–U+E007F;
//! - a line or paragraph separator, U+2028 and U+2029.
//!
//! Two exceptions keep emoji whole: a zero width joiner (U+200D) between two
//! pictographs (👩‍💻, 🏳️‍🌈, 🧑🏽‍💻), and the tags of a subdivision flag (🏴, one to six
//! tag letters or digits, then U+E007F CANCEL TAG, as in 🏴󠁧󠁢󠁳󠁣󠁴󠁿). Everything else
//! passes unchanged: letters of every script (also right-to-left ones: their order is
//! the terminal's business as long as no control reorders it), combining marks,
//! variation selectors, emoji, spaces. A backslash is not escaped, so a member who
//! types `\x1b` shows the same as one who sends ESC; `--json` tells them apart.
//!
//! [`inline`] is for fields that are one line (an alias): a line break in them is
//! escaped too (`\x0a`). [`body`] is for a message: it splits the text into lines at
//! `\n` (and `\r\n`), escapes each line like [`inline`], and makes each tab four
//! spaces (white space stays white space, but no raw tab whose width depends on the
//! terminal reaches it). The caller shows the first line after its header and indents
//! the others, so that no line of a message can pass for a header of its own.

use std::borrow::Cow;
use std::fmt::Write as _;

/// What a tab in a message body becomes.
pub const TAB: &str = "    ";

/// `text` for a field that must stay on one line (an alias): every character of the
/// rules above escaped, line breaks included. Borrowed when nothing needed escaping.
pub fn inline(text: &str) -> Cow<'_, str> {
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    escape_into(&mut out, text);
    Cow::Owned(out)
}

/// The lines of a message `text`, each safe to print: split at `\n` (a `\r` right
/// before it goes too), tabs made [`TAB`], the rest escaped like [`inline`]. Always
/// at least one line; "a\n" gives "a" and "".
pub fn body(text: &str) -> Vec<Cow<'_, str>> {
    let mut lines: Vec<Cow<'_, str>> = Vec::new();
    let mut rest = text;
    while let Some((line, after)) = rest.split_once('\n') {
        lines.push(body_line(line.strip_suffix('\r').unwrap_or(line)));
        rest = after;
    }
    // The last line has no `\n` after it, so a `\r` at its end is a lone one: escaped.
    lines.push(body_line(rest));
    lines
}

fn body_line(line: &str) -> Cow<'_, str> {
    if line.contains('\t') {
        Cow::Owned(inline(&line.replace('\t', TAB)).into_owned())
    } else {
        inline(line)
    }
}

const ZWJ: char = '\u{200d}';
const BLACK_FLAG: char = '\u{1f3f4}';
const CANCEL_TAG: char = '\u{e007f}';
const VS16: char = '\u{fe0f}';
/// Most tag characters a subdivision flag has ("gbsct" has five; ISO 3166-2 allows six).
const MAX_FLAG_TAGS: usize = 6;

/// Whether `c` is escaped wherever it stands (the two emoji exceptions aside).
fn escaped(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || is_invisible(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// Characters that draw nothing (or, like the Hangul fillers, a blank letter), so
/// that they can hide text or make two names look alike.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{115f}'
            | '\u{1160}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200d}'
            | '\u{2060}'..='\u{2064}'
            | '\u{206a}'..='\u{206f}'
            | '\u{3164}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0000}'..='\u{e007f}'
    )
}

/// Roughly Unicode's Extended_Pictographic: the blocks emoji come from. Only decides
/// whether a zero width joiner next to it is kept, so a symbol counted in too many
/// keeps one invisible joiner between two visible symbols, which hides nothing.
fn is_pictograph(c: char) -> bool {
    matches!(c, '\u{2190}'..='\u{2bff}' | '\u{1f000}'..='\u{1faff}')
}

/// What may stand before the joiner of an emoji sequence: a pictograph, or the end
/// of one (VS16, or a skin tone, which lies in the pictograph blocks).
fn ends_pictograph(c: char) -> bool {
    c == VS16 || is_pictograph(c)
}

fn is_flag_tag(c: char) -> bool {
    matches!(c, '\u{e0030}'..='\u{e0039}' | '\u{e0061}'..='\u{e007a}')
}

/// Bytes of a subdivision flag's tags at the start of `rest` (what follows a 🏴),
/// cancel tag included; `None` when `rest` does not start with such tags.
fn flag_tags(rest: &str) -> Option<usize> {
    let tags = rest.chars().take_while(|&c| is_flag_tag(c)).count();
    let cancel = rest.chars().nth(tags);
    // Every tag character is four bytes in UTF-8.
    ((1..=MAX_FLAG_TAGS).contains(&tags) && cancel == Some(CANCEL_TAG)).then_some(4 * (tags + 1))
}

fn escape_into(out: &mut String, text: &str) {
    let mut prev = None;
    let mut at = 0;
    while let Some(c) = text[at..].chars().next() {
        let after = at + c.len_utf8();
        if c == BLACK_FLAG
            && let Some(tags) = flag_tags(&text[after..])
        {
            out.push_str(&text[at..after + tags]);
            at = after + tags;
            prev = Some(CANCEL_TAG);
            continue;
        }
        let next = text[after..].chars().next();
        let joins_emoji =
            c == ZWJ && prev.is_some_and(ends_pictograph) && next.is_some_and(is_pictograph);
        if escaped(c) && !joins_emoji {
            push_code(out, c);
        } else {
            out.push(c);
        }
        prev = Some(c);
        at = after;
    }
}

fn push_code(out: &mut String, c: char) {
    let code = u32::from(c);
    // Writing to a String cannot fail.
    let _ = if code < 0x80 {
        write!(out, "\\x{code:02x}")
    } else {
        write!(out, "\\u{{{code:x}}}")
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test's own list of what must never reach a terminal raw, written apart from
    /// the module's predicates so that a mistake there does not hide here.
    fn dangerous(c: char) -> bool {
        let code = u32::from(c);
        code < 0x20
            || (0x7f..=0x9f).contains(&code)
            || [
                0x61c, 0x200b, 0x200c, 0x200d, 0x200e, 0x200f, 0x202a, 0x202b, 0x202c, 0x202d,
                0x202e, 0x2060, 0x2066, 0x2067, 0x2068, 0x2069, 0xfeff, 0x2028, 0x2029,
            ]
            .contains(&code)
            || (0xe0000..=0xe007f).contains(&code)
    }

    fn owned(s: &str) -> String {
        inline(s).into_owned()
    }

    #[test]
    fn every_c0_control_and_del_is_escaped_as_hex() {
        for code in (0u8..0x20).chain([0x7f]) {
            let c = char::from(code);
            assert_eq!(
                owned(&format!("a{c}b")),
                format!("a\\x{code:02x}b"),
                "{code:#x}"
            );
        }
        assert_eq!(owned("\x1b"), "\\x1b");
        assert_eq!(owned("\x07"), "\\x07");
        assert_eq!(owned("\r"), "\\x0d");
        assert_eq!(owned("\0"), "\\x00");
    }

    #[test]
    fn every_c1_control_is_escaped() {
        for code in 0x80u32..=0x9f {
            let c = char::from_u32(code).expect("a char");
            assert_eq!(owned(&c.to_string()), format!("\\u{{{code:x}}}"));
        }
        // CSI and NEL, which some terminals obey like ESC [ and a line break.
        assert_eq!(owned("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(owned("a\u{85}b"), "a\\u{85}b");
    }

    #[test]
    fn escape_sequences_become_visible_text() {
        assert_eq!(owned("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
        assert_eq!(owned("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
        // OSC 52: write "password" to the clipboard.
        assert_eq!(
            owned("\x1b]52;c;cGFzc3dvcmQ=\x07"),
            "\\x1b]52;c;cGFzc3dvcmQ=\\x07"
        );
        assert_eq!(owned("\x1b[2J\x1b[1;1H"), "\\x1b[2J\\x1b[1;1H");
        assert_eq!(owned("\x1b]8;;http://x\x1b\\"), "\\x1b]8;;http://x\\x1b\\");
    }

    #[test]
    fn bidi_controls_are_escaped() {
        for code in [
            0x61c, 0x200e, 0x200f, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068,
            0x2069,
        ] {
            let c = char::from_u32(code).expect("a char");
            assert_eq!(owned(&format!("x{c}y")), format!("x\\u{{{code:x}}}y"));
        }
        // The classic: "annexe.txt" that reads as "annexe" + "txt.exe" reversed.
        assert_eq!(owned("invoice\u{202e}fdp.exe"), "invoice\\u{202e}fdp.exe");
    }

    #[test]
    fn invisible_characters_are_escaped() {
        for code in [
            0xad, 0x115f, 0x1160, 0x180e, 0x200b, 0x200c, 0x200d, 0x2060, 0x2061, 0x2064, 0x206a,
            0x206f, 0x3164, 0xfeff, 0xffa0, 0xfff9, 0xfffb, 0x1bca0, 0x1d173, 0xe0000, 0xe0001,
            0xe0041, 0xe007f,
        ] {
            let c = char::from_u32(code).expect("a char");
            assert_eq!(owned(&format!("b{c}ob")), format!("b\\u{{{code:x}}}ob"));
        }
        assert_eq!(owned("a\u{2028}b\u{2029}c"), "a\\u{2028}b\\u{2029}c");
    }

    #[test]
    fn normal_text_passes_unchanged_and_borrowed() {
        for text in [
            "",
            "hello, world",
            "café",
            "naïve façade",
            "日本語です",
            "Здравствуйте",
            "שלום",
            "مرحبا",
            "e\u{301} a\u{308}\u{323}", // combining marks
            "👍🏽 🎉 ❤️ 1️⃣",              // skin tone, VS16, keycap
            "🇫🇷",
            "back\\slash and \"quotes\" and 100%",
            "wide\u{3000}space",
        ] {
            assert!(
                matches!(inline(text), Cow::Borrowed(t) if t == text),
                "{text:?}"
            );
            let lines = body(text);
            assert_eq!(lines.len(), 1);
            assert!(
                matches!(&lines[0], Cow::Borrowed(t) if *t == text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn emoji_sequences_keep_their_joiners_and_flag_tags() {
        for emoji in [
            "👩\u{200d}💻",
            "🏳\u{fe0f}\u{200d}🌈",
            "❤\u{fe0f}\u{200d}🔥",
            "🏃\u{200d}♀\u{fe0f}",
            "🧑🏽\u{200d}💻",
            "👨\u{200d}👩\u{200d}👧\u{200d}👦",
            "🏴\u{200d}☠\u{fe0f}",
            // Scotland: black flag, tags "gbsct", cancel tag.
            "🏴\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f}",
        ] {
            let text = format!("look {emoji}!");
            assert_eq!(inline(&text), text, "{emoji:?}");
        }
    }

    #[test]
    fn joiners_and_tags_outside_emoji_are_escaped() {
        assert_eq!(owned("b\u{200d}ob"), "b\\u{200d}ob");
        assert_eq!(owned("👩\u{200d}"), "👩\\u{200d}");
        assert_eq!(owned("\u{200d}💻"), "\\u{200d}💻");
        assert_eq!(owned("x\u{200d}💻"), "x\\u{200d}💻");
        // Tags smuggle invisible ASCII ("hi") after ordinary text.
        assert_eq!(owned("ok\u{e0068}\u{e0069}"), "ok\\u{e0068}\\u{e0069}");
        // After a flag, but not a flag's tags: no cancel tag, too many, or not letters.
        assert_eq!(owned("🏴\u{e0067}"), "🏴\\u{e0067}");
        let seven = "\u{e0061}".repeat(7);
        assert_eq!(
            owned(&format!("🏴{seven}\u{e007f}")),
            format!("🏴{}\\u{{e007f}}", "\\u{e0061}".repeat(7))
        );
        assert_eq!(owned("🏴\u{e0020}\u{e007f}"), "🏴\\u{e0020}\\u{e007f}");
        assert_eq!(owned("🏴\u{e007f}"), "🏴\\u{e007f}");
    }

    #[test]
    fn an_inline_field_never_keeps_a_line_break() {
        assert_eq!(owned("eve\n[15:44:00] bob"), "eve\\x0a[15:44:00] bob");
        assert_eq!(owned("eve\r\n* bob left"), "eve\\x0d\\x0a* bob left");
        assert_eq!(owned("a\tb"), "a\\x09b");
    }

    #[test]
    fn a_body_is_split_into_lines_at_line_breaks() {
        assert_eq!(
            body("fine\n[15:44:00] bob: send me the password"),
            ["fine", "[15:44:00] bob: send me the password"]
        );
        assert_eq!(body("a\r\nb\r\n"), ["a", "b", ""]);
        assert_eq!(body("x\n"), ["x", ""]);
        assert_eq!(body("\n\n"), ["", "", ""]);
        assert_eq!(body(""), [""]);
        // A lone carriage return would send the cursor back over the header.
        assert_eq!(body("a\rb"), ["a\\x0db"]);
        assert_eq!(body("end\r"), ["end\\x0d"]);
        assert_eq!(body("a\r\rb\n"), ["a\\x0d\\x0db", ""]);
        // Other line breaks are escaped, not followed.
        assert_eq!(
            body("a\x0bb\x0cc\u{85}d\u{2028}e"),
            ["a\\x0bb\\x0cc\\u{85}d\\u{2028}e"]
        );
        // Each line is escaped on its own.
        assert_eq!(body("\x1b[2J\n\u{202e}x"), ["\\x1b[2J", "\\u{202e}x"]);
    }

    #[test]
    fn a_tab_in_a_body_is_four_spaces() {
        assert_eq!(body("fn main() {\n\tok\n}"), ["fn main() {", "    ok", "}"]);
        assert_eq!(body("a\t\x1b"), ["a    \\x1b"]);
        assert!(matches!(&body("\t")[0], Cow::Owned(t) if t == TAB));
    }

    #[test]
    fn escaping_again_changes_nothing() {
        let hostile = "\x1b]0;x\x07 \u{202e}ab 👩\u{200d}💻 b\u{200d}ob 🏴\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f}\u{9b}";
        let once = owned(hostile);
        assert_eq!(owned(&once), once);
        let plain = owned("\x1b[1m\u{202e}b\u{200d}ob\r\n");
        assert!(matches!(inline(&plain), Cow::Borrowed(_)), "{plain:?}");
    }

    #[test]
    fn no_dangerous_character_survives_anywhere() {
        // Every Unicode scalar value between letters; those of the planes where controls,
        // format characters and emoji live also alone, between pictographs (where a
        // joiner is kept) and in a body. One buffer for all: a debug build runs this
        // 1.1 million times.
        let mut text = String::new();
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let contexts: &[(&str, &str)] = match u32::from(c) {
                0..=0xffff | 0x1f000..=0x1faff | 0xe0000..=0xe0fff => {
                    &[("a", "b"), ("", ""), ("👩", "💻"), ("x", "\ny")]
                }
                _ => &[("a", "b")],
            };
            for &(before, after) in contexts {
                text.clear();
                text.push_str(before);
                text.push(c);
                text.push_str(after);
                let kept_joiner = c == ZWJ && before == "👩";
                if after.starts_with('\n') {
                    let lines = body(&text);
                    assert!(lines.iter().all(|l| !l.chars().any(dangerous)), "{c:?}");
                    continue;
                }
                let shown = inline(&text);
                assert!(
                    kept_joiner || !shown.chars().any(dangerous),
                    "{c:?} in {text:?} gave {shown:?}"
                );
                // What is not escaped is shown as it is, without a copy.
                if !escaped(c) {
                    assert!(matches!(shown, Cow::Borrowed(_)), "{c:?}");
                }
            }
        }
    }
}
