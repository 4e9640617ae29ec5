//! Invites drawn as QR codes in the terminal (`nook new --qr`, `nook invites --qr`), so
//! a phone camera can carry one across the room instead of a copy-paste.

use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};

/// `text` as a QR code of half-block characters, two modules per character cell, with
/// its quiet zone; `None` if it is too long for any QR code (an invite never is).
///
/// The light modules are the ones drawn: on the usual light-on-dark terminal the code
/// then reads dark-on-light, as scanners expect, and the quiet zone shows as a frame.
pub fn render(text: &str) -> Option<String> {
    // Level M: an invite fits a small code that still scans from a slightly smudged
    // or skewed screen.
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_invite_is_drawn_as_a_square_of_block_characters() {
        let invite = "nook://3q2vxk7b4m5y6d7c8e9f0g1h2j3k4l5m6n7p8q9r0s1t2u3v4@relay.example.org:4433/\
                      AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8#ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8";
        let drawn = render(invite).unwrap();
        let lines: Vec<&str> = drawn.lines().collect();
        let width = lines[0].chars().count();
        // Every row is as wide as the first; two modules per row: half as many rows.
        assert!(lines.iter().all(|l| l.chars().count() == width));
        assert_eq!(lines.len(), width.div_ceil(2));
        assert!(
            drawn
                .chars()
                .all(|c| matches!(c, ' ' | '█' | '▀' | '▄' | '\n')),
            "{drawn}"
        );
        // The quiet zone is drawn, so the first row is all full blocks.
        assert!(lines[0].chars().all(|c| c == '█'), "{}", lines[0]);
    }

    #[test]
    fn text_too_long_for_any_qr_code_is_refused() {
        assert!(render(&"x".repeat(5000)).is_none());
    }
}
