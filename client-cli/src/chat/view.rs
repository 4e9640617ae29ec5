//! Drawing the chat screen: a header with the talk's state, the message pane, and
//! the input line. Pure functions of [`App`]; only the 16 ANSI colours are used.
//!
//! Text from other members is shown by the rules of [`crate::safe`]: control, bidi
//! and invisible characters escaped (an escape sequence in a message must not drive
//! the screen, ratatui drops control characters silently but passes bidi controls
//! and zero width characters to the terminal), and every line of a message after its
//! first indented, so that no message can pass for another member's line. [`wrap`]
//! escapes whatever it draws once more, so that text reaching it by another path is
//! safe too.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use unicode_width::UnicodeWidthChar;

use super::app::{App, Confirm, Delivery, Item, LinkState, Message, Mode};
use crate::safe;

/// Columns of the time before each message ("12:34 "); continuation lines of a
/// message are indented as far, so the text stands in one column.
const TIME_WIDTH: usize = 6;

impl App {
    /// Draws the whole screen into `frame`.
    pub fn render(&self, frame: &mut Frame) {
        let [header, pane, footer] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Min(1),
            Constraint::Length(3),
        ])
        .areas(frame.area());
        self.render_header(frame, header);
        self.render_pane(frame, pane);
        self.render_footer(frame, footer);
    }

    fn render_header(&self, frame: &mut Frame, area: Rect) {
        let block = Block::new()
            .borders(Borders::BOTTOM)
            .border_style(Style::new().fg(Color::DarkGray));
        let inner = block.inner(area);
        frame.render_widget(block, area);

        let (state, state_style) = if self.is_ended() {
            ("closed".to_string(), Style::new().fg(Color::Red))
        } else if self.open {
            (self.state_text(), Style::new().fg(Color::Green))
        } else {
            (self.state_text(), Style::new().fg(Color::Yellow))
        };
        let (link, link_style) = match &self.link {
            LinkState::Connecting => ("connecting…".to_string(), Style::new().fg(Color::Yellow)),
            LinkState::Connected => ("● connected".to_string(), Style::new().fg(Color::Green)),
            LinkState::Reconnecting { attempt } => (
                format!("○ reconnecting (try {attempt})"),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
            LinkState::Stopped => ("offline".to_string(), Style::new().fg(Color::DarkGray)),
        };
        let [top, bottom] =
            Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(inner);
        let link_width = (text_width(&link) as u16 + 1).min(top.width);
        let [left, right] =
            Layout::horizontal([Constraint::Min(0), Constraint::Length(link_width)]).areas(top);
        let dim = Style::new().fg(Color::DarkGray);
        let first = Line::from(vec![
            Span::styled(" nook", Style::new().add_modifier(Modifier::BOLD)),
            Span::styled(" · talk ", dim),
            Span::raw(self.talk.clone()),
            Span::styled(" · ", dim),
            Span::styled(state, state_style),
            Span::styled(" · you are ", dim),
            Span::raw(safe::inline(&self.alias).into_owned()),
        ]);
        let mut names = Vec::new();
        for (seat, alias) in &self.members {
            let you = if *seat == self.seat { " (you)" } else { "" };
            names.push(format!("{}{you}", safe::inline(alias)));
        }
        let mut second = vec![
            Span::styled(" members: ", dim),
            Span::raw(names.join(", ")),
            Span::styled(" · relay ", dim),
            Span::raw(safe::inline(relay_host(&self.relay)).into_owned()),
        ];
        if let Some(via) = &self.via {
            second.push(Span::styled(" via ", dim));
            second.push(Span::raw(safe::inline(relay_host(via)).into_owned()));
        }
        if let Some(closes) = self.closes_text() {
            second.push(Span::styled(format!(" · {closes}"), dim));
        }
        // A market's role first: the members line may be cut at the screen's edge.
        if let Some(pattern) = &self.pattern {
            second.insert(0, Span::styled(format!(" {pattern} ·"), dim));
        }
        if self.owner && !self.open && !self.invites.is_empty() {
            second.push(Span::styled(
                format!(" · invites left: {} (/invites)", self.invites.len()),
                dim,
            ));
        }
        frame.render_widget(Paragraph::new(ellipsize(first, left.width)), left);
        frame.render_widget(
            Paragraph::new(ellipsize(Line::from(second), bottom.width)),
            bottom,
        );
        frame.render_widget(
            Paragraph::new(Line::styled(link, link_style)).right_aligned(),
            right,
        );
    }

    fn render_pane(&self, frame: &mut Frame, area: Rect) {
        let width = usize::from(area.width);
        let height = usize::from(area.height);
        let mut lines = Vec::new();
        for item in self.items() {
            lines.extend(self.item_lines(item, width));
        }
        let total = lines.len();
        self.pane.set((total, height));
        let bottom = total.saturating_sub(height);
        let top = self.view_top.map_or(bottom, |t| t.min(bottom));
        let shown: Vec<Line> = lines.into_iter().skip(top).take(height).collect();
        frame.render_widget(Paragraph::new(shown), area);
    }

    fn item_lines(&self, item: &Item, width: usize) -> Vec<Line<'static>> {
        match item {
            Item::Message(m) => self.message_lines(m, width),
            Item::Notice(t) => wrap(&[(t, Style::new().fg(Color::Cyan))], width, 2),
            Item::Info(t) => wrap(&[(t, Style::new())], width, 2),
            Item::Plain(t) => wrap(&[(t, Style::new())], width, 0),
            Item::Error(t) => wrap(&[(t, Style::new().fg(Color::Red))], width, 2),
        }
    }

    fn message_lines(&self, m: &Message, width: usize) -> Vec<Line<'static>> {
        let dim = Style::new().fg(Color::DarkGray);
        let who = if m.own {
            Style::new().fg(Color::Green).add_modifier(Modifier::BOLD)
        } else {
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
        };
        let time = format!("{} ", self.local_clock(m.at_ms));
        let alias = safe::inline(&m.alias);
        // One escaped line per line of the text; `wrap` indents all but the first.
        let text = safe::body(&m.text).join("\n");
        let mut spans: Vec<(&str, Style)> = vec![(&time, dim), (&alias, who)];
        if m.own {
            spans.push((" (you)", Style::new().fg(Color::Green)));
        }
        spans.push((": ", Style::new()));
        spans.push((&text, Style::new()));
        if m.late {
            spans.push((" [late]", dim));
        }
        let failed = match &m.local {
            Some((_, Delivery::Pending, _)) => {
                spans.push((" [pending]", Style::new().fg(Color::Yellow)));
                None
            }
            Some((_, Delivery::Failed(e), _)) => {
                spans.push((
                    " [not sent]",
                    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                ));
                Some(e)
            }
            _ => None,
        };
        let mut lines = Vec::new();
        if m.missed > 0 {
            let note = format!(
                "({} earlier message(s) from {alias} never arrived)",
                m.missed
            );
            lines.extend(wrap(&[(&note, dim)], width, 2));
        }
        lines.extend(wrap(&spans, width, TIME_WIDTH));
        if let Some(e) = failed {
            let why = format!("{}! {e}", " ".repeat(TIME_WIDTH));
            lines.extend(wrap(
                &[(&why, Style::new().fg(Color::Red))],
                width,
                TIME_WIDTH + 2,
            ));
        }
        lines
    }

    fn render_footer(&self, frame: &mut Frame, area: Rect) {
        let block = Block::new()
            .borders(Borders::TOP)
            .border_style(Style::new().fg(Color::DarkGray));
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let [input, hint] =
            Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(inner);
        let dim = Style::new().fg(Color::DarkGray);
        let ask = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);
        let (line, help) = match self.mode() {
            Mode::Normal => {
                self.render_input(frame, input);
                let help = match self.view_top {
                    Some(top) => {
                        let (total, height) = self.pane.get();
                        let below = total.saturating_sub(top + height);
                        format!(" scrolled back, {below} line(s) below · PgDn or Esc: newest")
                    }
                    None => " Enter send · /help commands · PgUp/PgDn scroll · Ctrl-C quit".into(),
                };
                (None, help)
            }
            Mode::Confirm(Confirm::Close) => (
                Some(Line::styled(
                    " Close the talk for everyone and delete all of it? (y/n)",
                    ask,
                )),
                " y closes, n or Esc cancels".into(),
            ),
            Mode::Confirm(Confirm::Reveal) => {
                let (alias, accept) = self.reveal_to.clone().unwrap_or_default();
                let what = if accept {
                    "Accept the exchange: show your card to"
                } else {
                    "Show your card to"
                };
                (
                    Some(Line::styled(
                        format!(
                            " {what} {} alone? It cannot be taken back. (y/n)",
                            crate::safe::inline(&alias)
                        ),
                        ask,
                    )),
                    " y shows it, n or Esc cancels".into(),
                )
            }
            Mode::Confirm(Confirm::Leave) => (
                Some(Line::styled(
                    " Leave the talk and delete it from this device? (y/n)",
                    ask,
                )),
                " y leaves, n or Esc cancels".into(),
            ),
            Mode::Busy(what) => (
                Some(Line::styled(format!(" {what}"), dim)),
                " Ctrl-C quits without waiting".into(),
            ),
            Mode::Ended { notice, .. } => (
                Some(Line::styled(
                    format!(" {notice}"),
                    Style::new().add_modifier(Modifier::BOLD),
                )),
                " Press any key to exit.".into(),
            ),
        };
        if let Some(line) = line {
            frame.render_widget(Paragraph::new(line), input);
        }
        frame.render_widget(Paragraph::new(Line::styled(help, dim)), hint);
    }

    /// The input line, scrolled sideways so that the cursor stays visible.
    fn render_input(&self, frame: &mut Frame, area: Rect) {
        const PROMPT: &str = "> ";
        let room = usize::from(area.width).saturating_sub(PROMPT.len()).max(1);
        let chars: Vec<char> = self
            .input()
            .chars()
            .iter()
            .map(|&c| clean_char(c))
            .collect();
        let cursor = self.input().cursor();
        // Walk back from the cursor while the text before it fits, leaving a column
        // for the cursor itself.
        let mut start = cursor;
        let mut before = 0;
        while start > 0 {
            let w = char_width(chars[start - 1]);
            if before + w > room - 1 {
                break;
            }
            before += w;
            start -= 1;
        }
        let mut shown = String::new();
        let mut used = 0;
        for &c in &chars[start..] {
            let w = char_width(c);
            if used + w > room {
                break;
            }
            used += w;
            shown.push(c);
        }
        let line = Line::from(vec![
            Span::styled(PROMPT, Style::new().fg(Color::Green)),
            Span::raw(shown),
        ]);
        frame.render_widget(Paragraph::new(line), area);
        let x = area.x + (PROMPT.len() + before) as u16;
        frame.set_cursor_position((x.min(area.right().saturating_sub(1)), area.y));
    }

    /// "HH:MM" of a unix-ms time, in local time.
    fn local_clock(&self, ms: u64) -> String {
        let secs = (ms / 1000) as i64 + self.utc_offset_secs;
        let day = secs.rem_euclid(86_400);
        format!("{:02}:{:02}", day / 3600, (day / 60) % 60)
    }
}

/// `line` cut to `width` columns, with "…" at the end when something was cut.
fn ellipsize(line: Line<'static>, width: u16) -> Line<'static> {
    let width = usize::from(width);
    if line.width() <= width || width == 0 {
        return line;
    }
    let mut spans = Vec::new();
    let mut used = 0;
    'spans: for span in line.spans {
        let mut text = String::new();
        for c in span.content.chars() {
            let w = char_width(c);
            if used + w + 1 > width {
                spans.push(Span::styled(text, span.style));
                break 'spans;
            }
            used += w;
            text.push(c);
        }
        spans.push(Span::styled(text, span.style));
    }
    spans.push(Span::raw("…"));
    Line::from(spans)
}

/// "host:port" of a relay address "nook://fingerprint@host:port".
fn relay_host(relay: &str) -> &str {
    relay.rsplit_once('@').map_or(relay, |(_, host)| host)
}

/// What a character of the input line is drawn as: controls (escape sequences, bells,
/// tabs) become a visible replacement instead of reaching the terminal. (The input
/// line is what this user types, drawn a character per cell for the cursor's sake;
/// text from others goes through [`safe`].)
fn clean_char(c: char) -> char {
    match c {
        '\t' => ' ',
        c if c.is_control() => '\u{fffd}',
        c => c,
    }
}

fn char_width(c: char) -> usize {
    c.width().unwrap_or(0)
}

fn text_width(text: &str) -> usize {
    text.chars().map(char_width).sum()
}

/// Breaks styled text into lines at most `width` columns wide, at spaces where it
/// can and inside a word where it must; continuation lines start with `indent`
/// spaces. A line break in the text starts a new line. Each line of the text is
/// drawn as [`safe::inline`] shows it.
fn wrap(spans: &[(&str, Style)], width: usize, indent: usize) -> Vec<Line<'static>> {
    let width = width.max(1);
    // In a very narrow pane a full indent would leave no room; one space still marks
    // a continuation, so that a line of a message never starts where headers start.
    let indent = if indent * 2 <= width {
        indent
    } else if width >= 2 {
        indent.min(1)
    } else {
        0
    };
    let mut lines = Vec::new();
    let mut cur: Vec<(char, Style)> = Vec::new();
    let mut cur_width = 0;
    // Width of the indent that starts `cur`; breaking before it would loop.
    let mut start_width = 0;
    // Index in `cur` of the last space a break may replace.
    let mut space: Option<usize> = None;
    let continuation = |lines: &mut Vec<Line<'static>>, line: &[(char, Style)]| {
        lines.push(to_line(line));
        (vec![(' ', Style::new()); indent], indent)
    };
    for &(text, style) in spans {
        for (n, segment) in text.split('\n').enumerate() {
            if n > 0 {
                (cur, cur_width) = continuation(&mut lines, &cur);
                start_width = indent;
                space = None;
            }
            for c in safe::inline(segment).chars() {
                let w = char_width(c);
                if cur_width + w > width && cur_width > start_width {
                    let fits_after = |at: usize| {
                        let rest: usize = cur[at + 1..].iter().map(|&(c, _)| char_width(c)).sum();
                        indent + rest + w <= width
                    };
                    match space {
                        Some(at) if c != ' ' && fits_after(at) => {
                            let rest = cur.split_off(at + 1);
                            cur.pop();
                            (cur, _) = continuation(&mut lines, &cur);
                            cur.extend(rest);
                            cur_width = cur.iter().map(|&(c, _)| char_width(c)).sum();
                        }
                        _ => {
                            (cur, cur_width) = continuation(&mut lines, &cur);
                            if c == ' ' {
                                // The break replaces this space.
                                start_width = indent;
                                space = None;
                                continue;
                            }
                        }
                    }
                    start_width = indent;
                    space = None;
                }
                if c == ' ' && cur_width > start_width {
                    space = Some(cur.len());
                }
                cur.push((c, style));
                cur_width += w;
            }
        }
    }
    lines.push(to_line(&cur));
    lines
}

fn to_line(chars: &[(char, Style)]) -> Line<'static> {
    let mut spans: Vec<Span<'static>> = Vec::new();
    let mut text = String::new();
    let mut style = None;
    for &(c, s) in chars {
        if style.is_some_and(|st| st != s) {
            spans.push(Span::styled(
                std::mem::take(&mut text),
                style.unwrap_or_default(),
            ));
        }
        style = Some(s);
        text.push(c);
    }
    if !text.is_empty() {
        spans.push(Span::styled(text, style.unwrap_or_default()));
    }
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::super::app::tests::{info, key, message, status, type_text};
    use super::super::app::{Action, App};
    use super::*;
    use crossterm::event::KeyCode;
    use nook_client::{Event, HistoryEntry, Link, Update};
    use nook_proto::TalkPhase;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    /// The screen as 24 lines of text, trailing spaces removed.
    fn screen(app: &App) -> Vec<String> {
        screen_sized(app, 80, 24)
    }

    fn screen_sized(app: &App, w: u16, h: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
        terminal.draw(|f| app.render(f)).expect("draw");
        let buffer = terminal.backend().buffer();
        (0..h)
            .map(|y| {
                let mut line = String::new();
                for x in 0..w {
                    line.push_str(buffer.cell((x, y)).map_or(" ", |c| c.symbol()));
                }
                line.trim_end().to_string()
            })
            .collect()
    }

    fn line_of<'a>(screen: &'a [String], needle: &str) -> &'a str {
        screen
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{}", screen.join("\n")))
    }

    /// 10:00 UTC on some day, in ms.
    const TEN: u64 = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000 + 10 * 3_600_000;

    #[test]
    fn the_header_says_when_the_talk_closes() {
        let mut i = info(Some(status(TalkPhase::Open, 2, 2)));
        i.expires_at = TEN / 1000 + 3 * 3600 + 100;
        let mut app = App::new(&i, 0);
        app.set_now(TEN);
        let s = screen(&app);
        assert!(
            s[1].ends_with(" · relay 127.0.0.1:4433 · closes in 3h"),
            "{}",
            s[1]
        );
    }

    #[test]
    fn the_header_shows_a_market_role() {
        let mut i = info(Some(status(TalkPhase::Open, 2, 2)));
        i.role = "offerer";
        i.pattern = "market";
        i.offer_limit = Some(2);
        let s = screen(&App::new(&i, 0));
        assert!(
            s[1].starts_with(" market offerer (offer limit 2) · members: quiet-otter (you)"),
            "{}",
            s[1]
        );
    }

    #[test]
    fn the_header_shows_a_routed_talk_s_forwarder() {
        let mut i = info(Some(status(TalkPhase::Open, 2, 2)));
        i.via = Some("nook://fwdfp@127.0.0.2:4434".into());
        let s = screen(&App::new(&i, 0));
        assert_eq!(
            s[1],
            " members: quiet-otter (you) · relay 127.0.0.1:4433 via 127.0.0.2:4434"
        );
    }

    #[test]
    fn a_scheduled_talk_counts_down_to_its_opening_and_its_windows_end() {
        let now = TEN / 1000;
        let scheduled = |members, phase| {
            let mut st = status(phase, members, 2);
            st.schedule = Some(nook_proto::TalkSchedule {
                opens_at: now + 200,
                closes_at: now + 200 + 3720,
            });
            let mut i = info(Some(st));
            i.expires_at = now + 86_400;
            i
        };
        let mut app = App::new(&scheduled(2, TalkPhase::Pending), 0);
        app.set_now(TEN);
        let s = screen(&app);
        assert!(s[0].contains(" · opens in 3m20s (2/2) · "), "{}", s[0]);
        assert!(s[1].contains(" · window ends in 1h05m"), "{}", s[1]);
        // Below quorum: the seats, and the time it opens at if they are taken.
        let mut app = App::new(&scheduled(1, TalkPhase::Pending), 0);
        app.set_now(TEN);
        assert!(
            screen(&app)[0].contains(" · pending 1/2, opens in 3m20s · "),
            "{}",
            screen(&app)[0]
        );
        // Open: the usual state, and the window's countdown.
        let mut app = App::new(&scheduled(2, TalkPhase::Open), 0);
        app.set_now(TEN + 300_000);
        let s = screen(&app);
        assert!(s[0].contains(" · open 2/2 · "), "{}", s[0]);
        assert!(s[1].contains(" · window ends in 1h00m"), "{}", s[1]);
    }

    #[test]
    fn pending_talk_shows_seats_and_unused_invites() {
        let app = App::new(&info(Some(status(TalkPhase::Pending, 1, 3))), 0);
        let s = screen(&app);
        assert_eq!(s.len(), 24);
        assert!(
            s[0].starts_with(" nook · talk 0123456789abcdef · pending 1/3 · you are quiet-otter"),
            "{}",
            s[0]
        );
        assert!(s[0].ends_with("connecting…"), "{}", s[0]);
        assert_eq!(
            s[1],
            " members: quiet-otter (you) · relay 127.0.0.1:4433 · invites left: 2 (/invites)"
        );
        assert_eq!(s[2], "─".repeat(80));
        assert_eq!(
            s[3],
            "type a message and press Enter; /help lists the commands"
        );
        assert_eq!(s[21], "─".repeat(80));
        assert_eq!(s[22], ">");
        assert_eq!(
            s[23],
            " Enter send · /help commands · PgUp/PgDn scroll · Ctrl-C quit"
        );
    }

    #[test]
    fn a_long_member_list_is_cut_with_an_ellipsis() {
        let mut i = info(Some(status(TalkPhase::Open, 9, 9)));
        for seat in 1..9 {
            i.members.push((seat, format!("member-number-{seat}")));
        }
        let s = screen(&App::new(&i, 0));
        assert_eq!(s[1].chars().count(), 80);
        assert!(s[1].starts_with(" members: quiet-otter (you), member-number-1,"));
        assert!(s[1].ends_with('…'), "{}", s[1]);
    }

    #[test]
    fn sending_while_pending_shows_the_clients_error() {
        let mut app = App::new(&info(Some(status(TalkPhase::Pending, 1, 3))), 0);
        app.set_now(TEN);
        type_text(&mut app, "anyone here?");
        let Action::Send { id, .. } = app.on_key(key(KeyCode::Enter)) else {
            panic!("a send")
        };
        let err = nook_client::ClientError::Pending {
            members: 1,
            quorum: 3,
        };
        app.on_sent(id, Err(err.to_string()));
        let s = screen(&app);
        assert_eq!(s[4], "10:00 quiet-otter (you): anyone here? [not sent]");
        // The screen waits for the talk to open by itself: no command to suggest.
        assert_eq!(s[5], "      ! the talk is not open yet (1/3 seats taken)");
    }

    #[test]
    fn open_talk_with_messages_marks_own_and_pending() {
        let mut i = info(Some(status(TalkPhase::Open, 2, 2)));
        i.members.push((1, "brave-fox".into()));
        let mut app = App::new(&i, 3600);
        app.on_update(Update::Link(Link::Connected));
        app.on_update(Update::Entry(HistoryEntry {
            index: 0,
            at_ms: TEN,
            event: Event::Opened,
        }));
        app.on_update(message("brave-fox", TEN + 60_000, "hello there", false));
        app.on_update(message("quiet-otter", TEN + 120_000, "hi fox", true));
        app.set_now(TEN + 180_000);
        type_text(&mut app, "on its way");
        assert!(matches!(
            app.on_key(key(KeyCode::Enter)),
            Action::Send { .. }
        ));
        let s = screen(&app);
        assert!(s[0].contains("· open 2/2 ·"), "{}", s[0]);
        assert!(s[0].ends_with("● connected"), "{}", s[0]);
        assert_eq!(
            s[1],
            " members: quiet-otter (you), brave-fox · relay 127.0.0.1:4433"
        );
        assert_eq!(s[4], "* the talk is open");
        // Local time: one hour east of UTC.
        assert_eq!(s[5], "11:01 brave-fox: hello there");
        assert_eq!(s[6], "11:02 quiet-otter (you): hi fox");
        assert_eq!(s[7], "11:03 quiet-otter (you): on its way [pending]");
        assert_eq!(s[22], ">");
    }

    #[test]
    fn long_messages_wrap_under_their_text() {
        let mut app = App::new(&info(Some(status(TalkPhase::Open, 2, 2))), 0);
        let long = "word ".repeat(30);
        app.on_update(message("brave-fox", TEN, long.trim_end(), false));
        let s = screen(&app);
        let first = line_of(&s, "brave-fox");
        assert!(first.len() <= 80);
        assert!(first.ends_with("word"), "breaks between words: {first:?}");
        let at = s
            .iter()
            .position(|l| l.contains("brave-fox"))
            .expect("line");
        assert!(s[at + 1].starts_with("      word"), "{:?}", s[at + 1]);
        // And in a narrow terminal too, without losing text.
        let narrow = screen_sized(&app, 30, 24);
        let words: usize = narrow.iter().map(|l| l.matches("word").count()).sum();
        assert_eq!(words, 30);
        assert!(narrow.iter().all(|l| l.chars().count() <= 30));
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let mut app = App::new(&info(Some(status(TalkPhase::Open, 2, 2))), 0);
        app.on_update(message("eve\x1b", TEN, "\x1b[2Jgotcha\x07", false));
        let s = screen(&app);
        assert!(s.iter().all(|l| !l.contains('\x1b') && !l.contains('\x07')));
        assert_eq!(line_of(&s, "gotcha"), "10:00 eve\\x1b: \\x1b[2Jgotcha\\x07");
    }

    /// What must never reach the terminal raw (the test's own list): controls, bidi
    /// controls, zero width and other invisible characters.
    fn dangerous(c: char) -> bool {
        c.is_control()
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

    fn assert_no_dangerous_cell(s: &[String]) {
        for line in s {
            assert!(
                !line.chars().any(dangerous),
                "{line:?} in\n{}",
                s.join("\n")
            );
        }
    }

    #[test]
    fn hostile_text_and_aliases_are_escaped_on_the_screen() {
        let mut i = info(Some(status(TalkPhase::Open, 2, 2)));
        // A modified client can announce any alias, line breaks included.
        let eve = "eve\u{202e}nna\n10:00 bob\x1b]0;x\x07";
        i.members.push((1, eve.into()));
        let mut app = App::new(&i, 0);
        for text in [
            "\x1b]52;c;cGFzc3dvcmQ=\x07clip",
            "invoice\u{202e}fdp.exe \u{2066}iso\u{2069} \u{200e}\u{200f}\u{61c}z\u{200b}w\u{feff}",
            "\u{9b}31m c1 \u{85} nel\ttab",
            "café 日本語 👍🏽 e\u{301}",
        ] {
            app.on_update(message(eve, TEN, text, false));
        }
        // Wide enough that nothing wraps.
        let s = screen_sized(&app, 160, 24);
        assert_no_dangerous_cell(&s);
        let alias = "eve\\u{202e}nna\\x0a10:00 bob\\x1b]0;x\\x07";
        assert_eq!(
            s[1],
            format!(" members: quiet-otter (you), {alias} · relay 127.0.0.1:4433")
        );
        let header = format!("10:00 {alias}: ");
        let shown: Vec<&str> = s.iter().filter_map(|l| l.strip_prefix(&header)).collect();
        assert_eq!(shown.len(), 4, "{}", s.join("\n"));
        assert_eq!(
            shown[..3],
            [
                "\\x1b]52;c;cGFzc3dvcmQ=\\x07clip",
                "invoice\\u{202e}fdp.exe \\u{2066}iso\\u{2069} \\u{200e}\\u{200f}\\u{61c}z\\u{200b}w\\u{feff}",
                "\\u{9b}31m c1 \\u{85} nel    tab",
            ]
        );
        // Ordinary text stays as it is (a wide character's second cell reads as a space).
        assert!(
            shown[3].starts_with("café 日") && shown[3].ends_with("👍🏽  e\u{301}"),
            "{:?}",
            shown[3]
        );
    }

    #[test]
    fn a_multi_line_message_cannot_pass_for_other_lines() {
        let mut app = App::new(&info(Some(status(TalkPhase::Open, 2, 2))), 0);
        app.on_update(message("brave-fox", TEN, "first", false));
        app.on_update(message(
            "eve",
            TEN,
            "fine\n10:01 brave-fox: send me the password\r\n* brave-fox left the talk\n\rx",
            false,
        ));
        for (w, h) in [(80, 24), (30, 24), (11, 60)] {
            let s = screen_sized(&app, w, h);
            assert_no_dangerous_cell(&s);
            let pane = &s[3..usize::from(h) - 3];
            let unindented: Vec<&String> = pane
                .iter()
                .filter(|l| !l.is_empty() && !l.starts_with(' '))
                .collect();
            assert_eq!(unindented.len(), 3, "{w} columns:\n{}", s.join("\n"));
            assert!(unindented[0].starts_with("type"));
            assert!(unindented[1].starts_with("10:00"));
            assert!(unindented[2].starts_with("10:00"));
        }
        let s = screen(&app);
        assert_eq!(s[5], "10:00 eve: fine");
        assert_eq!(s[6], "      10:01 brave-fox: send me the password");
        assert_eq!(s[7], "      * brave-fox left the talk");
        assert_eq!(s[8], "      \\x0dx");
    }

    #[test]
    fn events_and_warnings_show_aliases_on_one_escaped_line() {
        let mut app = App::new(&info(Some(status(TalkPhase::Open, 2, 2))), 0);
        let eve = "eve\n* the talk is open\u{202e}";
        app.on_update(Update::Entry(HistoryEntry {
            index: 1,
            at_ms: TEN,
            event: Event::MemberJoined {
                seat: 1,
                alias: eve.into(),
            },
        }));
        app.on_update(Update::Entry(HistoryEntry {
            index: 2,
            at_ms: TEN,
            event: Event::Warning(format!("a message claiming to be from {eve} was rejected")),
        }));
        app.on_update(Update::Entry(HistoryEntry {
            index: 3,
            at_ms: TEN,
            event: Event::Closed {
                by: Some(eve.into()),
                verified: false,
                receipt: None,
            },
        }));
        let s = screen_sized(&app, 120, 24);
        assert_no_dangerous_cell(&s);
        let eve = "eve\\x0a* the talk is open\\u{202e}";
        assert_eq!(s[4], format!("* {eve} took seat 1"));
        assert_eq!(
            s[5],
            format!("a message claiming to be from {eve} was rejected")
        );
        assert_eq!(
            s[6],
            format!("* the talk was closed by {eve}; all local data for it has been deleted")
        );
    }

    #[test]
    fn closed_talk_shows_the_deletion_notice() {
        let mut app = App::new(&info(Some(status(TalkPhase::Open, 2, 2))), 0);
        app.on_update(Update::Link(Link::Connected));
        app.on_update(message("brave-fox", TEN, "bye", false));
        app.on_update(Update::Entry(HistoryEntry {
            index: u64::MAX,
            at_ms: TEN,
            event: Event::Closed {
                by: Some("brave-fox".into()),
                verified: true,
                receipt: None,
            },
        }));
        let s = screen(&app);
        assert!(s[0].contains("· closed ·"), "{}", s[0]);
        assert!(s[0].ends_with("offline"), "{}", s[0]);
        assert_eq!(
            s[5],
            "* the talk was closed by brave-fox (the relay's signed receipt verified); all"
        );
        assert_eq!(s[6], "  local data for it has been deleted");
        assert_eq!(
            s[22],
            " The talk was closed. All local data for it has been deleted."
        );
        assert_eq!(s[23], " Press any key to exit.");
    }

    #[test]
    fn confirmation_replaces_the_input_line() {
        let mut app = App::new(&info(Some(status(TalkPhase::Open, 2, 2))), 0);
        type_text(&mut app, "/close");
        app.on_key(key(KeyCode::Enter));
        let s = screen(&app);
        assert_eq!(
            s[22],
            " Close the talk for everyone and delete all of it? (y/n)"
        );
        assert_eq!(s[23], " y closes, n or Esc cancels");
    }

    #[test]
    fn reconnecting_is_visible_in_the_header() {
        let mut app = App::new(&info(Some(status(TalkPhase::Open, 2, 2))), 0);
        app.on_update(Update::Link(Link::Reconnecting {
            attempt: 3,
            reason: "connection to the relay lost: timed out".into(),
            delay: std::time::Duration::from_millis(400),
        }));
        let s = screen(&app);
        assert!(s[0].ends_with("○ reconnecting (try 3)"), "{}", s[0]);
        assert_eq!(
            s[4],
            "connection to the relay lost: timed out; reconnecting…"
        );
    }

    #[test]
    fn page_up_and_the_wheel_scroll_back_and_page_down_returns() {
        let mut app = App::new(&info(Some(status(TalkPhase::Open, 2, 2))), 0);
        for n in 0..40 {
            app.on_update(message("brave-fox", TEN, &format!("message {n}"), false));
        }
        // 41 lines, 18 shown: the newest at the bottom.
        let s = screen(&app);
        assert_eq!(s[20], "10:00 brave-fox: message 39");
        assert_eq!(s[3], "10:00 brave-fox: message 22");
        app.on_key(key(KeyCode::PageUp));
        let s = screen(&app);
        assert_eq!(s[20], "10:00 brave-fox: message 22", "one line of overlap");
        assert!(
            s[23].starts_with(" scrolled back, 17 line(s) below"),
            "{}",
            s[23]
        );
        app.on_key(key(KeyCode::PageUp));
        app.on_key(key(KeyCode::PageUp));
        let s = screen(&app);
        assert_eq!(
            s[3],
            "type a message and press Enter; /help lists the commands"
        );
        // New messages do not move a scrolled-back view.
        app.on_update(message("brave-fox", TEN, "message 40", false));
        assert_eq!(screen(&app)[3], s[3]);
        app.on_mouse(crossterm::event::MouseEvent {
            kind: crossterm::event::MouseEventKind::ScrollDown,
            column: 0,
            row: 0,
            modifiers: crossterm::event::KeyModifiers::NONE,
        });
        assert_eq!(screen(&app)[3], "10:00 brave-fox: message 2");
        for _ in 0..3 {
            app.on_key(key(KeyCode::PageDown));
        }
        let s = screen(&app);
        assert_eq!(s[20], "10:00 brave-fox: message 40");
        assert!(s[23].starts_with(" Enter send"), "{}", s[23]);
    }

    #[test]
    fn the_input_scrolls_sideways_to_keep_the_cursor_visible() {
        let mut app = App::new(&info(Some(status(TalkPhase::Open, 2, 2))), 0);
        let text: String = (0..100)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        type_text(&mut app, &text);
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
        terminal.draw(|f| app.render(f)).expect("draw");
        let s = screen(&app);
        assert!(s[22].ends_with("uv"), "{}", s[22]);
        assert_eq!(
            terminal.get_cursor_position().expect("cursor"),
            (79, 22).into()
        );
        app.on_key(key(KeyCode::Home));
        terminal.draw(|f| app.render(f)).expect("draw");
        assert!(screen(&app)[22].starts_with("> abcdef"));
        assert_eq!(
            terminal.get_cursor_position().expect("cursor"),
            (2, 22).into()
        );
    }

    #[test]
    fn wrap_breaks_at_spaces_and_inside_long_words() {
        let text =
            |lines: Vec<Line>| -> Vec<String> { lines.iter().map(|l| l.to_string()).collect() };
        let plain = Style::new();
        assert_eq!(
            text(wrap(&[("aaa bbb ccc", plain)], 7, 0)),
            ["aaa bbb", "ccc"]
        );
        assert_eq!(
            text(wrap(&[("abcdefghij", plain)], 4, 1)),
            ["abcd", " efg", " hij"]
        );
        assert_eq!(text(wrap(&[("one\ntwo", plain)], 10, 2)), ["one", "  two"]);
        assert_eq!(text(wrap(&[("", plain)], 10, 2)), [""]);
        // Wide characters count two columns.
        assert_eq!(
            text(wrap(&[("日本語です", plain)], 4, 0)),
            ["日本", "語で", "す"]
        );
    }

    #[test]
    fn an_80_by_24_screen_is_the_smallest_we_design_for_but_smaller_does_not_panic() {
        let mut app = App::new(&info(Some(status(TalkPhase::Pending, 1, 3))), 0);
        type_text(&mut app, "some text");
        for (w, h) in [(1, 1), (10, 3), (20, 6), (80, 24), (200, 60)] {
            let s = screen_sized(&app, w, h);
            assert_eq!(s.len(), usize::from(h));
        }
    }
}
