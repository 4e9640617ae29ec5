//! The chat screen's state, and what keys, mouse, relay updates and finished
//! operations do to it. Nothing here touches the terminal, the network or the clock:
//! the driver in `mod.rs` feeds it events and carries out the [`Action`]s it returns,
//! and `view.rs` draws it.

use std::cell::Cell;
use std::collections::VecDeque;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind};
use nook_client::{Event, HistoryEntry, Link, TalkSummary, Update};
use nook_crypto::auth::PortableReceipt;
use nook_proto::{ClosePolicy, TalkPhase, TalkStatus};

use crate::safe;

/// Most items the message pane keeps; older ones are dropped from the screen (the
/// store keeps the talk's history; `nook read` shows all of it).
pub const MAX_ITEMS: usize = 2000;
/// Most entries of the input history (what Up and Down walk through).
const MAX_SENT: usize = 200;
/// Longest input line, in characters; the client refuses far shorter messages anyway.
const MAX_INPUT: usize = 16 * 1024;
/// Lines one notch of the mouse wheel scrolls.
const WHEEL_LINES: usize = 3;

pub const HELP: &[&str] = &[
    "commands:",
    "  /who      members, seats and the relay",
    "  /invites  the owner's unused invites",
    "  /leave    give up your seat and delete the talk here (asks first)",
    "  /close    close the talk for everyone (asks first)",
    "  /reveal ALIAS   show ALIAS your card, to them alone (asks first)",
    "  /accept ALIAS   accept ALIAS's exchange of cards (asks first)",
    "  /exposure       what is known about you here",
    "  /help     this help",
    "  /quit     leave the screen; the talk goes on (also Ctrl-C)",
    "  //text    sends \"/text\"",
    "keys: Enter send, Left/Right/Home/End move, Up/Down your earlier lines,",
    "      PageUp/PageDown or the mouse wheel scroll, Esc back to the newest",
];

/// What the driver should do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    /// Send `text`; report the outcome with [`App::on_sent`] and this `id`.
    Send {
        id: u64,
        text: String,
    },
    /// Leave the talk; report with [`App::on_left`].
    Leave,
    /// Close the talk; report with [`App::on_closed`].
    Close,
    /// Show our card to `alias` (or accept its exchange); report with
    /// [`App::on_card_done`].
    Reveal {
        alias: String,
        accept: bool,
    },
    /// Show what is known about us here; report with [`App::on_card_done`].
    Exposure,
    /// Restore the terminal and exit with [`App::exit_code`].
    Quit,
}

/// What the screen is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Typing and sending.
    Normal,
    /// Asking y/n before something that cannot be undone.
    Confirm(Confirm),
    /// Waiting for /leave or /close to finish.
    Busy(&'static str),
    /// The talk is over for this screen; any key exits with `code`.
    Ended { notice: String, code: i32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    Close,
    Leave,
    /// Showing our card to the member in `App::reveal_to`.
    Reveal,
}

/// Where one of our own messages sent from this screen stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to the client; the relay has not confirmed storing it yet.
    Pending,
    /// The relay stored it.
    Stored,
    /// It was not sent, for this reason (the client's error text).
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub alias: String,
    pub at_ms: u64,
    pub text: String,
    pub own: bool,
    pub late: bool,
    pub missed: u32,
    /// Set for messages typed on this screen: (send id, delivery, seen in the history).
    pub local: Option<(u64, Delivery, bool)>,
}

/// One thing in the message pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Message(Message),
    /// Something that happened in the talk (seats, opened, joined, left, closed).
    Notice(String),
    /// Output of a command.
    Info(String),
    /// Output meant to be copied (invites): wrapped without indent.
    Plain(String),
    /// Something went wrong or needs attention.
    Error(String),
}

/// The connection to the relay, as the header shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Connected,
    Reconnecting {
        attempt: u32,
    },
    /// The talk ended or the live connection stopped for good.
    Stopped,
}

/// Why `follow` stopped, as the driver reports it to [`App::on_follow_ended`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowFailure {
    pub message: String,
    pub exit_code: i32,
    /// The client said the talk is gone (closed or expired, local data deleted).
    pub talk_gone: bool,
}

/// The line being typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Input {
    chars: Vec<char>,
    /// Cursor position, in characters from the start (0..=len).
    cursor: usize,
}

impl Input {
    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }
    pub fn chars(&self) -> &[char] {
        &self.chars
    }
    pub fn cursor(&self) -> usize {
        self.cursor
    }
    fn set(&mut self, text: &str) {
        self.chars = text.chars().collect();
        self.cursor = self.chars.len();
    }
    fn insert(&mut self, c: char) {
        if self.chars.len() < MAX_INPUT {
            self.chars.insert(self.cursor, c);
            self.cursor += 1;
        }
    }
    fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            self.chars.remove(self.cursor);
        }
    }
    fn delete(&mut self) {
        if self.cursor < self.chars.len() {
            self.chars.remove(self.cursor);
        }
    }
    fn take(&mut self) -> String {
        let text = self.text();
        self.chars.clear();
        self.cursor = 0;
        text
    }
}

/// The whole chat screen as data.
#[derive(Debug)]
pub struct App {
    pub(super) talk: String,
    pub(super) alias: String,
    pub(super) seat: u8,
    pub(super) relay: String,
    /// The forwarding relay the talk's traffic goes through (`--via`), if routed.
    pub(super) via: Option<String>,
    /// In a market or a panel: this device's role and the pattern's terms (spec §20).
    pub(super) pattern: Option<String>,
    pub(super) owner: bool,
    pub(super) status: Option<TalkStatus>,
    /// `status` came from the relay while this screen was up.
    live_status: bool,
    pub(super) open: bool,
    pub(super) members: Vec<(u8, String)>,
    pub(super) invites: Vec<String>,
    /// Unix seconds at which the relay deletes the talk.
    pub(super) expires_at: u64,
    /// The first history index not yet on the screen.
    shown_next: u64,
    pub(super) link: LinkState,
    pub(super) items: VecDeque<Item>,
    pub(super) input: Input,
    pub(super) mode: Mode,
    /// Top line of the pane when scrolled back; `None` follows the newest line.
    pub(super) view_top: Option<usize>,
    /// (wrapped lines in all, lines the pane shows), as of the last render; paging
    /// and clamping need them and only rendering knows the width.
    pub(super) pane: Cell<(usize, usize)>,
    /// Seconds to add to UTC for local time (fixed at start; 0 in tests).
    pub(super) utc_offset_secs: i64,
    now_ms: u64,
    sent: Vec<String>,
    /// Position in `sent` while walking it with Up/Down, and the line typed before.
    browse: Option<(usize, String)>,
    next_id: u64,
    /// /quit was refused once because of pending messages.
    quit_warned: bool,
    /// The names members showed this viewer (spec §19), beside their aliases.
    names: crate::cards::Names,
    /// Whom a /reveal or /accept waiting for its y/n is for, and whether it accepts.
    pub(super) reveal_to: Option<(String, bool)>,
}

impl App {
    /// A screen for the talk `info` describes; `utc_offset_secs` turns message times
    /// into local time.
    pub fn new(info: &TalkSummary, utc_offset_secs: i64) -> App {
        let mut app = App {
            talk: info.talk.clone(),
            alias: String::new(),
            seat: 0,
            relay: String::new(),
            via: None,
            pattern: None,
            owner: false,
            status: None,
            live_status: false,
            open: false,
            members: Vec::new(),
            invites: Vec::new(),
            expires_at: 0,
            shown_next: 0,
            link: LinkState::Connecting,
            items: VecDeque::new(),
            input: Input::default(),
            mode: Mode::Normal,
            view_top: None,
            pane: Cell::new((0, 0)),
            utc_offset_secs,
            now_ms: 0,
            sent: Vec::new(),
            browse: None,
            next_id: 0,
            quit_warned: false,
            names: crate::cards::Names::default(),
            reveal_to: None,
        };
        app.set_info(info);
        app.push(Item::Info(
            "type a message and press Enter; /help lists the commands".into(),
        ));
        app
    }

    /// The names members showed this viewer so far.
    pub fn set_names(&mut self, names: crate::cards::Names) {
        self.names = names;
    }

    /// The outcome of a /reveal, /accept or /exposure: lines to show, or the error.
    pub fn on_card_done(&mut self, result: Result<Vec<String>, String>) {
        match result {
            Ok(lines) => {
                for l in lines {
                    self.push(Item::Info(l));
                }
            }
            Err(e) => self.push(Item::Error(safe::inline(&e).into_owned())),
        }
    }

    /// Takes what the local store knows now (members, invites, status).
    pub fn set_info(&mut self, info: &TalkSummary) {
        self.alias = info.alias.clone();
        self.seat = info.seat;
        self.relay = info.relay.clone();
        self.via = info.via.clone();
        self.pattern = match (info.offer_limit, info.speakers) {
            (Some(limit), _) => Some(format!("market {} (offer limit {limit})", info.role)),
            (_, Some(n)) => Some(format!(
                "panel {} ({n} speakers besides the owner)",
                info.role
            )),
            _ => None,
        };
        self.owner = info.owner;
        // A status from the relay is fresher than the store's: `follow` hands it on
        // before it records it.
        if !self.live_status && info.status.is_some() {
            self.status = info.status;
        }
        self.open |= info.open;
        self.members = info.members.clone();
        self.invites = info.invites.clone();
        self.expires_at = info.expires_at;
    }

    /// The first history index this screen has not shown (for the unread mark).
    pub fn shown_next(&self) -> u64 {
        self.shown_next
    }

    /// "closes in 3h" (or "expired"), for the header; nothing while the expiry is
    /// unknown.
    pub fn closes_text(&self) -> Option<String> {
        if self.expires_at == 0 {
            return None;
        }
        let now = self.now_ms / 1000;
        // A scheduled talk ends with its window, and counts it down to the second.
        if let Some(s) = self.status.and_then(|s| s.schedule)
            && s.closes_at <= self.expires_at
        {
            return Some(match s.closes_at.checked_sub(now).filter(|l| *l > 0) {
                Some(left) => format!("window ends in {}", crate::schedule::countdown(left)),
                None => "window ended".into(),
            });
        }
        let when = crate::output::closes_in(self.expires_at, now);
        Some(if when == "expired" {
            when
        } else {
            format!("closes {when}")
        })
    }

    /// The time new local lines are stamped with (unix ms).
    pub fn set_now(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.items.iter()
    }

    pub fn input(&self) -> &Input {
        &self.input
    }

    pub fn is_ended(&self) -> bool {
        matches!(self.mode, Mode::Ended { .. })
    }

    /// The process exit code when the screen closes now.
    pub fn exit_code(&self) -> i32 {
        match &self.mode {
            Mode::Ended { code, .. } => *code,
            _ => 0,
        }
    }

    /// Messages typed here that the relay has not confirmed yet.
    pub fn pending_sends(&self) -> usize {
        self.items
            .iter()
            .filter(|i| {
                matches!(
                    i,
                    Item::Message(Message {
                        local: Some((_, Delivery::Pending, _)),
                        ..
                    })
                )
            })
            .count()
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('C')) {
            return Action::Quit;
        }
        match self.mode.clone() {
            Mode::Ended { .. } => Action::Quit,
            Mode::Busy(_) => Action::None,
            Mode::Confirm(what) => self.on_confirm_key(what, key),
            Mode::Normal => self.on_normal_key(key, ctrl),
        }
    }

    pub fn on_mouse(&mut self, mouse: MouseEvent) {
        match mouse.kind {
            MouseEventKind::ScrollUp => self.scroll_up(WHEEL_LINES),
            MouseEventKind::ScrollDown => self.scroll_down(WHEEL_LINES),
            _ => {}
        }
    }

    /// Pasted text goes into the input line; line breaks become spaces, so a paste
    /// never sends by itself.
    pub fn on_paste(&mut self, text: &str) {
        if self.mode != Mode::Normal {
            return;
        }
        for c in text.chars() {
            match c {
                '\r' => {}
                '\n' | '\t' => self.input.insert(' '),
                c if c.is_control() => {}
                c => self.input.insert(c),
            }
        }
    }

    pub fn on_update(&mut self, update: Update) {
        if self.is_ended() {
            return;
        }
        match update {
            Update::Entry(entry) => {
                // u64::MAX marks the final entry of a talk already deleted.
                if entry.index != u64::MAX {
                    self.shown_next = self.shown_next.max(entry.index + 1);
                }
                self.on_entry(entry);
            }
            Update::Status(status) => {
                self.live_status = true;
                self.open |= status.state == TalkPhase::Open;
                self.status = Some(status);
            }
            Update::Link(Link::Connected) => {
                if matches!(self.link, LinkState::Reconnecting { .. }) {
                    self.push(Item::Notice("* connected to the relay again".into()));
                }
                self.link = LinkState::Connected;
            }
            Update::Link(Link::Reconnecting {
                attempt, reason, ..
            }) => {
                if !matches!(self.link, LinkState::Reconnecting { .. }) {
                    let reason = reason
                        .strip_suffix("; run the command again")
                        .unwrap_or(&reason);
                    self.push(Item::Error(format!("{reason}; reconnecting…")));
                }
                self.link = LinkState::Reconnecting { attempt };
            }
        }
    }

    /// A send finished: `Ok` once the relay stored it, or the client's error text.
    pub fn on_sent(&mut self, id: u64, result: Result<(), String>) {
        for item in self.items.iter_mut().rev() {
            if let Item::Message(Message {
                local: Some((mid, delivery, _)),
                ..
            }) = item
                && *mid == id
            {
                if *delivery == Delivery::Pending {
                    *delivery = match result {
                        Ok(()) => Delivery::Stored,
                        Err(e) => Delivery::Failed(e),
                    };
                }
                return;
            }
        }
    }

    /// /close finished: `Ok(envelopes the relay deleted)` after its signed receipt
    /// verified and the local data was deleted, or the client's error text.
    pub fn on_closed(&mut self, result: Result<PortableReceipt, String>) {
        match result {
            Ok(receipt) => {
                let ended = self.end(
                    format!(
                        "you closed the talk; the relay's signed deletion receipt verified ({} envelope(s) deleted there)",
                        receipt.envelopes_deleted
                    ),
                    0,
                );
                if ended {
                    self.show_receipt(&receipt);
                }
            }
            Err(e) if !self.is_ended() => {
                self.mode = Mode::Normal;
                self.push(Item::Error(format!("not closed: {e}")));
            }
            Err(_) => {}
        }
    }

    /// The receipt in its portable form, lines that copy as they are.
    fn show_receipt(&mut self, receipt: &PortableReceipt) {
        self.push(Item::Info(crate::receipt::KEEP.into()));
        for line in receipt.to_text().lines() {
            self.push(Item::Plain(line.to_string()));
        }
    }

    /// /leave finished.
    pub fn on_left(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => {
                if !self.is_ended() {
                    self.push(Item::Notice(
                        "* you left the talk; all local data for it has been deleted".into(),
                    ));
                    self.link = LinkState::Stopped;
                    self.mode = Mode::Ended {
                        notice: "You left the talk. All local data for it has been deleted.".into(),
                        code: 0,
                    };
                }
            }
            Err(e) if !self.is_ended() => {
                self.mode = Mode::Normal;
                self.push(Item::Error(format!("not left: {e}")));
            }
            Err(_) => {}
        }
    }

    /// The live connection stopped for good (it retries lost connections itself).
    pub fn on_follow_ended(&mut self, result: Result<(), FollowFailure>) {
        if self.is_ended() {
            return;
        }
        match result {
            // Only after the closing entry (handled already) or when we stopped it.
            Ok(()) => {}
            // Our own /leave or /close deleted the talk under it: their result decides.
            Err(_) if matches!(self.mode, Mode::Busy(_)) => {}
            Err(f) if f.talk_gone => {
                self.end("the talk has ended (closed, expired or left)".into(), 0);
            }
            Err(f) => {
                self.push(Item::Error(format!(
                    "the live connection stopped: {}",
                    f.message
                )));
                self.link = LinkState::Stopped;
                self.mode = Mode::Ended {
                    notice: "The connection to the talk stopped; nothing was deleted.".into(),
                    code: f.exit_code,
                };
            }
        }
    }

    fn on_entry(&mut self, entry: HistoryEntry) {
        self.names.learn(&entry.event);
        match entry.event {
            Event::Message {
                seat,
                own,
                late,
                missed,
                alias,
                text,
                sent_at_ms,
                ..
            } => {
                if own && self.match_own(&text, sent_at_ms) {
                    return;
                }
                // The name this member showed us, beside its alias (escaped with it).
                let alias = match self.names.raw(seat) {
                    Some(name) if !own => format!("{alias} · {name}"),
                    _ => alias,
                };
                self.push(Item::Message(Message {
                    alias,
                    at_ms: sent_at_ms,
                    text,
                    own,
                    late,
                    missed,
                    local: None,
                }));
            }
            Event::Closed {
                receipt,
                verified,
                by,
            } => {
                // Notices are one line each: an alias is escaped, line breaks included.
                let who = by
                    .map(|b| format!(" by {}", safe::inline(&b)))
                    .unwrap_or_default();
                let v = if verified {
                    " (the relay's signed receipt verified)"
                } else {
                    ""
                };
                if self.end(format!("the talk was closed{who}{v}"), 0)
                    && let Some(receipt) = receipt
                {
                    self.show_receipt(&receipt);
                }
            }
            Event::Expired => {
                self.end("the talk expired".into(), 0);
            }
            Event::Opened => {
                self.open = true;
                self.push(Item::Notice(crate::output::entry_text(
                    &self.talk,
                    &entry_of(Event::Opened),
                )));
            }
            // Warnings name members by their alias.
            Event::Warning(w) => self.push(Item::Error(safe::inline(&w).into_owned())),
            // Lost messages are shown as prominently as a warning.
            event @ Event::Missing { .. } => {
                let text = crate::output::entry_text(&self.talk, &entry_of(event));
                self.push(Item::Error(text.trim_start_matches("! ").to_string()));
            }
            event => self.push(Item::Notice(crate::output::entry_text(
                &self.talk,
                &entry_of(event),
            ))),
        }
    }

    /// Our own message came back through the history: it is the first line typed here
    /// with the same text not yet seen there. Returns whether one matched.
    fn match_own(&mut self, text: &str, sent_at_ms: u64) -> bool {
        for item in self.items.iter_mut() {
            if let Item::Message(m) = item
                && let Some((_, delivery, seen)) = &mut m.local
                && !*seen
                && m.text == text
                && !matches!(delivery, Delivery::Failed(_))
            {
                *seen = true;
                // In the history means the relay stored it.
                *delivery = Delivery::Stored;
                m.at_ms = sent_at_ms;
                return true;
            }
        }
        false
    }

    /// Ends the screen's talk; false if it had ended already.
    fn end(&mut self, what: String, code: i32) -> bool {
        if self.is_ended() {
            return false;
        }
        self.push(Item::Notice(format!(
            "* {what}; all local data for it has been deleted"
        )));
        self.link = LinkState::Stopped;
        self.view_top = None;
        self.mode = Mode::Ended {
            notice: "The talk was closed. All local data for it has been deleted.".into(),
            code,
        };
        true
    }

    fn on_confirm_key(&mut self, what: Confirm, key: KeyEvent) -> Action {
        match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') => match what {
                Confirm::Close => {
                    self.mode = Mode::Busy("closing the talk…");
                    Action::Close
                }
                Confirm::Leave => {
                    self.mode = Mode::Busy("leaving the talk…");
                    Action::Leave
                }
                Confirm::Reveal => {
                    self.mode = Mode::Normal;
                    match self.reveal_to.take() {
                        Some((alias, accept)) => Action::Reveal { alias, accept },
                        None => Action::None,
                    }
                }
            },
            KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => {
                self.mode = Mode::Normal;
                self.reveal_to = None;
                self.push(Item::Info(match what {
                    Confirm::Close => "not closed".into(),
                    Confirm::Leave => "still in the talk".into(),
                    Confirm::Reveal => "not revealed; nothing was sent".into(),
                }));
                Action::None
            }
            _ => Action::None,
        }
    }

    fn on_normal_key(&mut self, key: KeyEvent, ctrl: bool) -> Action {
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        match key.code {
            KeyCode::Enter => return self.submit(),
            KeyCode::Char('a') if ctrl => self.input.cursor = 0,
            KeyCode::Char('e') if ctrl => self.input.cursor = self.input.chars.len(),
            KeyCode::Char('u') if ctrl => {
                self.input.chars.drain(..self.input.cursor);
                self.input.cursor = 0;
            }
            // Ctrl+Alt is how some terminals report AltGr characters.
            KeyCode::Char(c) if ctrl == alt => {
                self.browse = None;
                self.input.insert(c);
            }
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Left => self.input.cursor = self.input.cursor.saturating_sub(1),
            KeyCode::Right => {
                self.input.cursor = (self.input.cursor + 1).min(self.input.chars.len())
            }
            KeyCode::Home => self.input.cursor = 0,
            KeyCode::End => self.input.cursor = self.input.chars.len(),
            KeyCode::Up => self.history_back(),
            KeyCode::Down => self.history_forward(),
            KeyCode::PageUp => self.scroll_up(self.page()),
            KeyCode::PageDown => self.scroll_down(self.page()),
            KeyCode::Esc => self.view_top = None,
            _ => {}
        }
        Action::None
    }

    fn submit(&mut self) -> Action {
        let line = self.input.take();
        self.browse = None;
        if line.trim().is_empty() {
            return Action::None;
        }
        if self.sent.last() != Some(&line) {
            self.sent.push(line.clone());
            if self.sent.len() > MAX_SENT {
                self.sent.remove(0);
            }
        }
        // Sending something means wanting to see it: back to the newest line.
        self.view_top = None;
        if let Some(text) = line.strip_prefix("//") {
            return self.send(format!("/{text}"));
        }
        if line.starts_with('/') {
            return self.command(&line);
        }
        self.send(line)
    }

    fn send(&mut self, text: String) -> Action {
        self.quit_warned = false;
        let id = self.next_id;
        self.next_id += 1;
        self.push(Item::Message(Message {
            alias: self.alias.clone(),
            at_ms: self.now_ms,
            text: text.clone(),
            own: true,
            late: false,
            missed: 0,
            local: Some((id, Delivery::Pending, false)),
        }));
        Action::Send { id, text }
    }

    fn command(&mut self, line: &str) -> Action {
        let name = line.split_whitespace().next().unwrap_or(line);
        match name {
            "/who" => {
                for l in self.who() {
                    self.push(Item::Info(l));
                }
            }
            "/invites" => {
                if !self.owner {
                    self.push(Item::Info(
                        "only the talk's owner holds invites; ask them for one".into(),
                    ));
                } else if self.invites.is_empty() {
                    self.push(Item::Info("no unused invites".into()));
                } else {
                    self.push(Item::Info(format!(
                        "{} unused invite(s); give each to one person, each works once \
                         (`nook invites {}` prints them for copying):",
                        self.invites.len(),
                        self.talk
                    )));
                    for i in self.invites.clone() {
                        self.push(Item::Plain(i));
                    }
                }
            }
            "/leave" => self.mode = Mode::Confirm(Confirm::Leave),
            "/reveal" | "/accept" => match line.split_whitespace().nth(1) {
                Some(alias) => {
                    self.push(Item::Info(format!("note: {}", crate::cards::IRREVOCABLE)));
                    self.reveal_to = Some((alias.to_owned(), name == "/accept"));
                    self.mode = Mode::Confirm(Confirm::Reveal);
                }
                None => self.push(Item::Error(format!("{name} needs an alias: {name} ALIAS"))),
            },
            "/exposure" => return Action::Exposure,
            "/close" => {
                let owner_only = self.status.is_some_and(|s| s.close == ClosePolicy::Owner);
                if owner_only && !self.owner {
                    self.push(Item::Error("only the owner may close this talk".into()));
                } else {
                    self.mode = Mode::Confirm(Confirm::Close);
                }
            }
            "/help" => {
                for l in HELP {
                    self.push(Item::Info((*l).to_string()));
                }
            }
            "/quit" | "/exit" => {
                let pending = self.pending_sends();
                if pending > 0 && !self.quit_warned {
                    self.quit_warned = true;
                    self.push(Item::Error(format!(
                        "{pending} message(s) not confirmed yet; /quit again to stop waiting for them"
                    )));
                } else {
                    return Action::Quit;
                }
            }
            _ => self.push(Item::Error(format!(
                "unknown command {name}; /help lists the commands (//text sends \"/text\")"
            ))),
        }
        Action::None
    }

    fn who(&self) -> Vec<String> {
        let mut out = vec![format!("talk {}: {}", self.talk, self.state_text())];
        for (seat, alias) in &self.members {
            let you = if *seat == self.seat { " (you)" } else { "" };
            let owner = if *seat == 0 { ", owner" } else { "" };
            out.push(format!(
                "  seat {seat}: {}{you}{owner}",
                safe::inline(alias)
            ));
        }
        out.push(format!("relay {}", self.relay));
        out
    }

    /// The talk's state in a few words: "pending 1/3", "open 3/3"; a scheduled talk
    /// waiting for its time counts down to it: "opens in 3m20s".
    pub fn state_text(&self) -> String {
        let now = self.now_ms / 1000;
        if !self.open
            && let Some(s) = self.status
            && let Some(w) = crate::schedule::waiting(Some(&s), now)
        {
            let opens = crate::schedule::countdown(w.opens_at - now);
            return if s.members >= s.quorum {
                format!("opens in {opens} ({}/{})", s.members, s.seats)
            } else {
                format!("pending {}/{}, opens in {opens}", s.members, s.quorum)
            };
        }
        match self.status {
            None if self.open => "open".into(),
            None => "state unknown".into(),
            Some(s) if s.state == TalkPhase::Open || self.open => {
                format!("open {}/{}", s.members, s.seats)
            }
            Some(s) if s.quorum == s.seats => format!("pending {}/{}", s.members, s.quorum),
            Some(s) => format!("pending {}/{} (of {} seats)", s.members, s.quorum, s.seats),
        }
    }

    fn history_back(&mut self) {
        let Some(last) = self.sent.len().checked_sub(1) else {
            return;
        };
        let pos = match &self.browse {
            None => {
                self.browse = Some((last, self.input.text()));
                last
            }
            Some((0, _)) => return,
            Some((i, _)) => i - 1,
        };
        if let Some((p, _)) = &mut self.browse {
            *p = pos;
        }
        let text = self.sent[pos].clone();
        self.input.set(&text);
    }

    fn history_forward(&mut self) {
        let Some((pos, draft)) = self.browse.take() else {
            return;
        };
        if pos + 1 < self.sent.len() {
            let text = self.sent[pos + 1].clone();
            self.input.set(&text);
            self.browse = Some((pos + 1, draft));
        } else {
            self.input.set(&draft);
        }
    }

    fn page(&self) -> usize {
        self.pane.get().1.saturating_sub(1).max(1)
    }

    fn scroll_up(&mut self, n: usize) {
        let (total, height) = self.pane.get();
        let bottom = total.saturating_sub(height);
        if bottom == 0 {
            return;
        }
        self.view_top = Some(
            self.view_top
                .unwrap_or(bottom)
                .min(bottom)
                .saturating_sub(n),
        );
    }

    fn scroll_down(&mut self, n: usize) {
        let (total, height) = self.pane.get();
        let bottom = total.saturating_sub(height);
        if let Some(top) = self.view_top {
            self.view_top = (top + n < bottom).then_some(top + n);
        }
    }

    fn push(&mut self, item: Item) {
        self.items.push_back(item);
        if self.items.len() > MAX_ITEMS {
            self.items.pop_front();
            // Keep a scrolled-back view roughly where it was: one item is about a line.
            if let Some(top) = &mut self.view_top {
                *top = top.saturating_sub(1);
            }
        }
    }
}

fn entry_of(event: Event) -> HistoryEntry {
    HistoryEntry {
        index: 0,
        at_ms: 0,
        event,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use nook_proto::TalkStatus;

    pub fn status(state: TalkPhase, members: u8, seats: u8) -> TalkStatus {
        TalkStatus {
            state,
            members,
            seats,
            quorum: seats,
            close: ClosePolicy::Owner,
            expires_at: 0,
            left: 0,
            schedule: None,
        }
    }

    pub fn info(status: Option<TalkStatus>) -> TalkSummary {
        TalkSummary {
            talk: "0123456789abcdef".into(),
            relay: "nook://abcdefgh@127.0.0.1:4433".into(),
            alias: "quiet-otter".into(),
            seat: 0,
            owner: true,
            status,
            open: status.is_some_and(|s| s.state == TalkPhase::Open),
            unread: 0,
            expires_at: 0,
            members: vec![(0, "quiet-otter".into())],
            invites: vec!["nook-invite-one".into(), "nook-invite-two".into()],
            seats: 3,
            cached: false,
            retiring_at: None,
            via: None,
            role: "owner",
            pattern: "plain",
            offer_limit: None,
            speakers: None,
        }
    }

    /// A receipt signed by a fixed relay key.
    pub fn receipt(deleted: u64) -> PortableReceipt {
        let relay = nook_crypto::auth::RelayIdentity::from_seed(&[7; 32]);
        let signed = relay.sign_receipt(nook_proto::MailboxId([1; 16]), 1_700_000_000, deleted);
        let fingerprint = nook_crypto::Fingerprint::of_key(&relay.public().0);
        let addr = format!("nook://{fingerprint}@127.0.0.1:4433")
            .parse()
            .expect("a relay address");
        PortableReceipt::new(addr, relay.public(), &signed)
    }

    pub fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    pub fn type_text(app: &mut App, text: &str) {
        for c in text.chars() {
            assert_eq!(app.on_key(key(KeyCode::Char(c))), Action::None);
        }
    }

    pub fn message(alias: &str, at_ms: u64, text: &str, own: bool) -> Update {
        Update::Entry(HistoryEntry {
            index: 1,
            at_ms,
            event: Event::Message {
                seat: if own { 0 } else { 1 },
                alias: alias.into(),
                sent_at_ms: at_ms,
                text: text.into(),
                own,
                late: false,
                missed: 0,
                id: Some([1; 8]),
            },
        })
    }

    fn open_app() -> App {
        App::new(&info(Some(status(TalkPhase::Open, 2, 2))), 0)
    }

    fn last_item(app: &App) -> &Item {
        app.items.back().expect("an item")
    }

    #[test]
    fn typing_inserts_at_the_cursor() {
        let mut app = open_app();
        type_text(&mut app, "helo");
        app.on_key(key(KeyCode::Left));
        type_text(&mut app, "l");
        assert_eq!(app.input.text(), "hello");
        assert_eq!(app.input.cursor(), 4);
        app.on_key(key(KeyCode::Home));
        assert_eq!(app.input.cursor(), 0);
        type_text(&mut app, ">");
        app.on_key(key(KeyCode::End));
        type_text(&mut app, "!");
        assert_eq!(app.input.text(), ">hello!");
        // Right at the end and Left at the start stay put.
        app.on_key(key(KeyCode::Right));
        assert_eq!(app.input.cursor(), 7);
        app.on_key(key(KeyCode::Home));
        app.on_key(key(KeyCode::Left));
        assert_eq!(app.input.cursor(), 0);
    }

    #[test]
    fn backspace_and_delete_edit_around_the_cursor() {
        let mut app = open_app();
        type_text(&mut app, "abcd");
        app.on_key(key(KeyCode::Backspace));
        assert_eq!(app.input.text(), "abc");
        app.on_key(key(KeyCode::Home));
        app.on_key(key(KeyCode::Backspace));
        assert_eq!(
            app.input.text(),
            "abc",
            "backspace at the start does nothing"
        );
        app.on_key(key(KeyCode::Delete));
        assert_eq!(app.input.text(), "bc");
        assert_eq!(app.input.cursor(), 0);
        app.on_key(key(KeyCode::End));
        app.on_key(key(KeyCode::Delete));
        assert_eq!(app.input.text(), "bc", "delete at the end does nothing");
        // Multi-byte characters are one position each.
        type_text(&mut app, "é€");
        app.on_key(key(KeyCode::Left));
        app.on_key(key(KeyCode::Backspace));
        assert_eq!(app.input.text(), "bc€");
    }

    #[test]
    fn enter_sends_and_marks_the_line_pending_until_stored() {
        let mut app = open_app();
        app.set_now(1_000);
        type_text(&mut app, "hello");
        let action = app.on_key(key(KeyCode::Enter));
        assert_eq!(
            action,
            Action::Send {
                id: 0,
                text: "hello".into()
            }
        );
        assert_eq!(app.input.text(), "");
        assert_eq!(app.pending_sends(), 1);
        app.on_sent(0, Ok(()));
        assert_eq!(app.pending_sends(), 0);
        let Item::Message(m) = last_item(&app) else {
            panic!("a message")
        };
        assert_eq!(m.local, Some((0, Delivery::Stored, false)));
        // The same message coming back through the history is not shown twice.
        let n = app.items.len();
        app.on_update(message("quiet-otter", 1_234, "hello", true));
        assert_eq!(app.items.len(), n);
        // Empty lines send nothing.
        assert_eq!(app.on_key(key(KeyCode::Enter)), Action::None);
    }

    #[test]
    fn a_failed_send_keeps_the_clients_error() {
        let mut app = App::new(&info(Some(status(TalkPhase::Pending, 1, 3))), 0);
        type_text(&mut app, "too early");
        let Action::Send { id, .. } = app.on_key(key(KeyCode::Enter)) else {
            panic!("a send")
        };
        let err = nook_client::ClientError::Pending {
            members: 1,
            quorum: 3,
        }
        .to_string();
        app.on_sent(id, Err(err.clone()));
        let Item::Message(m) = last_item(&app) else {
            panic!("a message")
        };
        assert_eq!(m.local, Some((id, Delivery::Failed(err), false)));
        assert!(
            matches!(&m.local, Some((_, Delivery::Failed(e), _)) if e.contains("not open yet (1/3 seats taken)"))
        );
    }

    #[test]
    fn up_and_down_walk_through_what_was_sent() {
        let mut app = open_app();
        for line in ["first", "second", "/who"] {
            type_text(&mut app, line);
            app.on_key(key(KeyCode::Enter));
        }
        type_text(&mut app, "draft");
        app.on_key(key(KeyCode::Up));
        assert_eq!(app.input.text(), "/who");
        app.on_key(key(KeyCode::Up));
        assert_eq!(app.input.text(), "second");
        assert_eq!(app.input.cursor(), 6);
        app.on_key(key(KeyCode::Up));
        app.on_key(key(KeyCode::Up));
        assert_eq!(app.input.text(), "first", "stops at the oldest");
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.input.text(), "second");
        app.on_key(key(KeyCode::Down));
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.input.text(), "draft", "back to what was being typed");
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.input.text(), "draft");
    }

    #[test]
    fn unknown_commands_get_a_hint() {
        let mut app = open_app();
        type_text(&mut app, "/frobnicate now");
        assert_eq!(app.on_key(key(KeyCode::Enter)), Action::None);
        assert_eq!(
            last_item(&app),
            &Item::Error(
                "unknown command /frobnicate; /help lists the commands (//text sends \"/text\")"
                    .into()
            )
        );
        // A doubled slash sends the text with one slash.
        type_text(&mut app, "//shrug");
        assert_eq!(
            app.on_key(key(KeyCode::Enter)),
            Action::Send {
                id: 0,
                text: "/shrug".into()
            }
        );
    }

    #[test]
    fn close_asks_for_confirmation() {
        let mut app = open_app();
        type_text(&mut app, "/close");
        assert_eq!(app.on_key(key(KeyCode::Enter)), Action::None);
        assert_eq!(app.mode, Mode::Confirm(Confirm::Close));
        // Other keys neither confirm nor type.
        assert_eq!(app.on_key(key(KeyCode::Char('x'))), Action::None);
        assert_eq!(app.on_key(key(KeyCode::Enter)), Action::None);
        assert_eq!(app.mode, Mode::Confirm(Confirm::Close));
        assert_eq!(app.on_key(key(KeyCode::Char('n'))), Action::None);
        assert_eq!(app.mode, Mode::Normal);
        assert_eq!(last_item(&app), &Item::Info("not closed".into()));
        type_text(&mut app, "/close");
        app.on_key(key(KeyCode::Enter));
        assert_eq!(app.on_key(key(KeyCode::Char('y'))), Action::Close);
        assert!(matches!(app.mode, Mode::Busy(_)));
        // A failure brings the screen back.
        app.on_closed(Err("the relay refused".into()));
        assert_eq!(app.mode, Mode::Normal);
        type_text(&mut app, "/close");
        app.on_key(key(KeyCode::Enter));
        app.on_key(key(KeyCode::Char('y')));
        app.on_closed(Ok(receipt(3)));
        assert!(app.is_ended());
        // The receipt is on the screen, line by line, to copy and check later.
        let lines: Vec<&Item> = app.items.iter().collect();
        assert!(lines.contains(&&Item::Plain("nook deletion receipt v1".into())));
        assert!(lines.contains(&&Item::Plain("envelopes-deleted: 3".into())));
        assert_eq!(app.exit_code(), 0);
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Action::Quit);
    }

    #[test]
    fn a_close_that_arrives_shows_the_relays_receipt() {
        let mut app = App::new(&info(Some(status(TalkPhase::Open, 2, 2))), 0);
        app.on_update(Update::Entry(entry_of(Event::Closed {
            by: Some("brave-fox".into()),
            verified: true,
            receipt: Some(Box::new(receipt(5))),
        })));
        assert!(app.is_ended());
        let plain: Vec<&str> = app
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Plain(l) => Some(l.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(plain.first(), Some(&"nook deletion receipt v1"));
        assert!(plain.contains(&"envelopes-deleted: 5"), "{plain:?}");
    }

    #[test]
    fn a_member_may_not_ask_to_close_an_owner_only_talk() {
        let mut i = info(Some(status(TalkPhase::Open, 2, 2)));
        i.owner = false;
        let mut app = App::new(&i, 0);
        type_text(&mut app, "/close");
        app.on_key(key(KeyCode::Enter));
        assert_eq!(app.mode, Mode::Normal);
        assert_eq!(
            last_item(&app),
            &Item::Error("only the owner may close this talk".into())
        );
        type_text(&mut app, "/invites");
        app.on_key(key(KeyCode::Enter));
        assert!(matches!(last_item(&app), Item::Info(t) if t.starts_with("only the talk's owner")));
    }

    #[test]
    fn leave_asks_too_and_ends_the_screen() {
        let mut app = open_app();
        type_text(&mut app, "/leave");
        app.on_key(key(KeyCode::Enter));
        assert_eq!(app.mode, Mode::Confirm(Confirm::Leave));
        assert_eq!(app.on_key(key(KeyCode::Char('Y'))), Action::Leave);
        // Ctrl-C still gets out while waiting.
        assert_eq!(
            app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit
        );
        // The live connection failing under our own /leave does not decide the exit.
        app.on_follow_ended(Err(FollowFailure {
            message: "gone".into(),
            exit_code: 6,
            talk_gone: true,
        }));
        assert!(!app.is_ended());
        app.on_left(Ok(()));
        assert!(app.is_ended());
        assert_eq!(app.exit_code(), 0);
    }

    #[test]
    fn commands_list_members_invites_and_help() {
        let mut app = open_app();
        type_text(&mut app, "/who");
        app.on_key(key(KeyCode::Enter));
        let texts: Vec<String> = app
            .items()
            .filter_map(|i| match i {
                Item::Info(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        assert!(texts.contains(&"talk 0123456789abcdef: open 2/2".to_string()));
        assert!(texts.contains(&"  seat 0: quiet-otter (you), owner".to_string()));
        type_text(&mut app, "/invites");
        app.on_key(key(KeyCode::Enter));
        assert_eq!(last_item(&app), &Item::Plain("nook-invite-two".into()));
        type_text(&mut app, "/help");
        app.on_key(key(KeyCode::Enter));
        assert_eq!(last_item(&app), &Item::Info(HELP[HELP.len() - 1].into()));
        type_text(&mut app, "/quit");
        assert_eq!(app.on_key(key(KeyCode::Enter)), Action::Quit);
    }

    #[test]
    fn quit_warns_once_about_pending_messages() {
        let mut app = open_app();
        type_text(&mut app, "in flight");
        app.on_key(key(KeyCode::Enter));
        type_text(&mut app, "/quit");
        assert_eq!(app.on_key(key(KeyCode::Enter)), Action::None);
        type_text(&mut app, "/quit");
        assert_eq!(app.on_key(key(KeyCode::Enter)), Action::Quit);
    }

    #[test]
    fn updates_change_the_state_and_the_link() {
        let mut app = App::new(&info(Some(status(TalkPhase::Pending, 1, 3))), 0);
        assert_eq!(app.state_text(), "pending 1/3");
        app.on_update(Update::Status(status(TalkPhase::Pending, 2, 3)));
        assert_eq!(app.state_text(), "pending 2/3");
        // The store may not have recorded it yet: its older status does not win.
        app.set_info(&info(Some(status(TalkPhase::Pending, 1, 3))));
        assert_eq!(app.state_text(), "pending 2/3");
        app.on_update(Update::Link(Link::Connected));
        assert_eq!(app.link, LinkState::Connected);
        app.on_update(Update::Link(Link::Reconnecting {
            attempt: 1,
            reason: "the connection to the relay was lost (reset); run the command again".into(),
            delay: std::time::Duration::from_millis(400),
        }));
        app.on_update(Update::Link(Link::Reconnecting {
            attempt: 2,
            reason: "again".into(),
            delay: std::time::Duration::from_millis(400),
        }));
        assert_eq!(app.link, LinkState::Reconnecting { attempt: 2 });
        assert_eq!(
            last_item(&app),
            &Item::Error("the connection to the relay was lost (reset); reconnecting…".into()),
            "one line per outage, without the CLI's advice"
        );
        app.on_update(Update::Link(Link::Connected));
        assert_eq!(
            last_item(&app),
            &Item::Notice("* connected to the relay again".into())
        );
        app.on_update(Update::Entry(entry_of(Event::Opened)));
        app.on_update(Update::Status(status(TalkPhase::Open, 3, 3)));
        assert_eq!(app.state_text(), "open 3/3");
        app.on_update(Update::Entry(entry_of(Event::Closed {
            by: Some("brave-fox".into()),
            verified: true,
            receipt: None,
        })));
        assert!(app.is_ended());
        assert_eq!(app.link, LinkState::Stopped);
        // Nothing after the end changes the screen.
        let n = app.items.len();
        app.on_update(message("brave-fox", 1, "late", false));
        assert_eq!(app.items.len(), n);
    }

    #[test]
    fn who_warnings_and_closing_show_aliases_escaped_on_one_line() {
        let mut i = info(Some(status(TalkPhase::Open, 2, 2)));
        let eve = "eve\n  seat 0: quiet-otter\u{202e}";
        let shown = "eve\\x0a  seat 0: quiet-otter\\u{202e}";
        i.members.push((1, eve.into()));
        let mut app = App::new(&i, 0);
        type_text(&mut app, "/who");
        app.on_key(key(KeyCode::Enter));
        assert!(
            app.items()
                .any(|it| *it == Item::Info(format!("  seat 1: {shown}"))),
            "{:?}",
            app.items
        );
        app.on_update(Update::Entry(entry_of(Event::Warning(format!(
            "a message from {eve} could not be read"
        )))));
        assert_eq!(
            last_item(&app),
            &Item::Error(format!("a message from {shown} could not be read"))
        );
        app.on_update(Update::Entry(entry_of(Event::Closed {
            by: Some(eve.into()),
            verified: false,
            receipt: None,
        })));
        assert_eq!(
            last_item(&app),
            &Item::Notice(format!(
                "* the talk was closed by {shown}; all local data for it has been deleted"
            ))
        );
        // The message itself is kept exact: it is escaped where it is drawn.
        let mut app = open_app();
        app.on_update(message(eve, 1, "a\nb\x1b", false));
        assert!(
            matches!(last_item(&app), Item::Message(m) if m.alias == eve && m.text == "a\nb\x1b")
        );
    }

    #[test]
    fn paste_goes_into_the_input_without_sending() {
        let mut app = open_app();
        app.on_paste("two\nlines\x1b[31m");
        assert_eq!(app.input.text(), "two lines[31m");
    }
}
