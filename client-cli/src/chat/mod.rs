//! `nook chat TALK`: the full-screen terminal chat.
//!
//! # Layout
//!
//! - [`app`]: the screen as data, and what keys, the mouse, relay updates and finished
//!   operations do to it. No terminal, no network, no clock: unit-tested directly.
//! - [`view`]: drawing that data with ratatui; tested on ratatui's `TestBackend`.
//! - this file: the driver. It owns the terminal and the tasks, feeds events to the
//!   app and carries out the [`Action`]s it returns.
//!
//! # Tasks and queues
//!
//! Everything runs on the CLI's single-threaded runtime; `run` owns every task through
//! two `JoinSet`s, so leaving it by any path aborts them.
//!
//! - The follow task runs [`Client::follow`] and forwards each update to the screen
//!   through the UI queue (bounded, [`UI_QUEUE`]). `follow`'s sink cannot wait, so when
//!   the queue is full the task stops following, waits for room, and follows again from
//!   the first entry the screen has not had: the relay's pushes never outrun the screen
//!   and nothing is dropped.
//! - The send task sends typed messages one at a time, in the order typed, from the
//!   outbox (bounded, [`OUTBOX`]; a full outbox refuses the message on screen). Sending
//!   them concurrently could reorder them at the relay.
//! - `/leave` and `/close` run as one task each.
//!
//! # The terminal
//!
//! It is restored on every way out: a guard's `Drop` on return and on unwinding, a
//! panic hook for panics anywhere (also inside tasks), Ctrl-C arrives as a key in raw
//! mode, and SIGTERM, SIGHUP and SIGINT end the loop like /quit.
//!
//! A terminal can also vanish without a SIGHUP reaching us (an orphaned process group,
//! a killed tmux server). crossterm 0.29's event reader then spins on the dead tty
//! without ever reporting it (crossterm-rs/crossterm#793), so the loop also checks,
//! twice a second, whether the terminal hung up, and quits if it did.

mod app;
mod view;

use std::io::{self, IsTerminal, Stdout};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
    Event as TermEvent, EventStream,
};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use futures::StreamExt;
use nook_client::{Client, ClientError, Event, Until, Update, now_ms};

use crate::error::CliError;
use nook_crypto::auth::PortableReceipt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::{JoinError, JoinSet};

use app::{Action, App, FollowFailure};

/// Updates and results waiting for the screen. The relay's pushes wait in `follow`
/// (and on the relay) when it is full.
const UI_QUEUE: usize = 256;
/// Typed messages waiting to be sent.
const OUTBOX: usize = 32;
/// How often the loop checks that its terminal is still there.
const TTY_CHECK: Duration = Duration::from_millis(500);

/// Runs the chat screen for `talk` until the user quits or the talk ends.
///
/// Errors before the screen opens (unknown talk, broken store) are returned as usual;
/// a terminal that fails once the screen is open is reported here, exit code 1.
pub async fn run(client: Client, talk: &str) -> Result<ExitCode, CliError> {
    match run_screen(client, talk).await {
        Ok(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(1))),
        Err(ChatError::Client(e)) => Err(e.into()),
        Err(ChatError::Terminal(e)) => {
            eprintln!(
                "error: the terminal failed: {e}; `nook read TALK --follow` works without one"
            );
            Ok(ExitCode::from(1))
        }
        Err(ChatError::Task(e)) => {
            eprintln!("error: the chat screen stopped: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

enum ChatError {
    Client(ClientError),
    Terminal(io::Error),
    Task(JoinError),
}

impl From<ClientError> for ChatError {
    fn from(e: ClientError) -> ChatError {
        ChatError::Client(e)
    }
}

impl From<io::Error> for ChatError {
    fn from(e: io::Error) -> ChatError {
        ChatError::Terminal(e)
    }
}

/// What the tasks tell the screen.
enum ToUi {
    Update(Update),
    Sent { id: u64, result: Result<(), String> },
    FollowEnded(Result<(), FollowFailure>),
}

/// What a /leave or /close task ends with.
enum Done {
    Left(Result<(), String>),
    Closed(Result<PortableReceipt, String>),
    /// A /reveal, /accept or /exposure: lines to show, or the error.
    Card(Result<Vec<String>, String>),
}

async fn run_screen(client: Client, talk: &str) -> Result<i32, ChatError> {
    // Everything that can fail for ordinary reasons fails before the screen opens.
    let info = client.info(talk).await?;
    let talk = info.talk.clone();
    let history = client.history(&talk, false).await?;
    let from = history.next;
    let history = history.entries;
    let mut app = App::new(&info, local_utc_offset());
    app.set_names(crate::cards::Names::of(&client.known_cards(&talk).await?));
    // `history` above marked everything before `from` as shown.
    let mut marked = from;
    for entry in history {
        app.on_update(Update::Entry(entry));
    }
    let mut terms = signal(SignalKind::terminate())?;
    let mut hangups = signal(SignalKind::hangup())?;
    // In raw mode Ctrl-C is a key; this catches `kill -INT`.
    let mut interrupts = signal(SignalKind::interrupt())?;

    let mut screen = Screen::enter()?;
    let (ui_tx, mut ui_rx) = mpsc::channel(UI_QUEUE);
    let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
    let mut background = JoinSet::new();
    background.spawn(follow_task(
        client.clone(),
        talk.clone(),
        from,
        ui_tx.clone(),
    ));
    background.spawn(send_task(client.clone(), talk.clone(), outbox_rx, ui_tx));
    let mut ops: JoinSet<Done> = JoinSet::new();
    let mut events = EventStream::new();
    let mut tty_check = tokio::time::interval(TTY_CHECK);
    // Decided now: a hung-up terminal no longer answers isatty. A stdin that is a pipe
    // (crossterm then reads keys from /dev/tty) may well be at its end; that is no hang-up.
    let watch_stdin = io::stdin().is_terminal();
    tty_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        screen.draw(&app)?;
        let action = tokio::select! {
            event = events.next() => match event {
                Some(Ok(TermEvent::Key(key))) => {
                    app.set_now(now_ms());
                    app.on_key(key)
                }
                Some(Ok(TermEvent::Mouse(mouse))) => {
                    app.on_mouse(mouse);
                    Action::None
                }
                Some(Ok(TermEvent::Paste(text))) => {
                    app.on_paste(&text);
                    Action::None
                }
                // A resize needs only the redraw at the top of the loop.
                Some(Ok(_)) => Action::None,
                Some(Err(e)) => return Err(e.into()),
                None => Action::Quit,
            },
            Some(msg) = ui_rx.recv() => {
                let mut refresh = apply(&mut app, msg);
                // Take what else is waiting, then draw once.
                for _ in 0..UI_QUEUE {
                    match ui_rx.try_recv() {
                        Ok(msg) => refresh |= apply(&mut app, msg),
                        Err(_) => break,
                    }
                }
                // Members, aliases and invites come from the store, which the client
                // updated before handing the entries on.
                if refresh
                    && !app.is_ended()
                    && let Ok(info) = client.info(&talk).await
                {
                    app.set_info(&info);
                }
                // What the screen showed is read: `list` and `read --new` agree.
                if app.shown_next() > marked && !app.is_ended() {
                    marked = app.shown_next();
                    let _ = client.mark_shown(&talk, marked).await;
                }
                Action::None
            }
            Some(done) = ops.join_next() => {
                match done.map_err(ChatError::Task)? {
                    Done::Left(result) => app.on_left(result),
                    Done::Closed(result) => app.on_closed(result),
                    Done::Card(result) => app.on_card_done(result),
                }
                Action::None
            }
            Some(ended) = background.join_next() => {
                ended.map_err(ChatError::Task)?;
                Action::None
            }
            _ = tty_check.tick() => {
                if (watch_stdin && hung_up(io::stdin())) || hung_up(io::stdout()) {
                    return Ok(app.exit_code());
                }
                // The header's countdowns (a scheduled talk's opening, its window) move.
                app.set_now(now_ms());
                continue;
            }
            _ = terms.recv() => Action::Quit,
            _ = hangups.recv() => Action::Quit,
            _ = interrupts.recv() => Action::Quit,
        };
        match action {
            Action::None => {}
            Action::Send { id, text } => {
                if outbox.try_send((id, text)).is_err() {
                    app.on_sent(
                        id,
                        Err(
                            "too many messages are waiting to be sent; try again in a moment"
                                .into(),
                        ),
                    );
                }
            }
            Action::Leave => {
                let (client, talk) = (client.clone(), talk.clone());
                ops.spawn(async move {
                    Done::Left(
                        client
                            .leave(&talk)
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string()),
                    )
                });
            }
            Action::Close => {
                let (client, talk) = (client.clone(), talk.clone());
                ops.spawn(async move {
                    Done::Closed(
                        client
                            .close(&talk)
                            .await
                            .map(|(_, receipt)| receipt)
                            .map_err(|e| e.to_string()),
                    )
                });
            }
            Action::Reveal { alias, accept } => {
                let (client, talk) = (client.clone(), talk.clone());
                ops.spawn(async move {
                    Done::Card(crate::cards::chat_reveal(&client, &talk, &alias, accept).await)
                });
            }
            Action::Exposure => {
                let (client, talk) = (client.clone(), talk.clone());
                ops.spawn(
                    async move { Done::Card(crate::cards::chat_exposure(&client, &talk).await) },
                );
            }
            Action::Quit => return Ok(app.exit_code()),
        }
    }
}

/// True if `fd` is a terminal (or pipe) whose other end is gone: `poll` with no events
/// asked reports only hang-up and error conditions, and reads nothing, so no key
/// press is taken from crossterm.
fn hung_up(fd: impl AsFd) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(&fd, PollFlags::empty())];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match rustix::event::poll(&mut fds, Some(&now)) {
        Ok(_) => fds[0]
            .revents()
            .intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL),
        Err(_) => false,
    }
}

/// Hands one message from a task to the app; true when the store may have news
/// about members, invites or seats.
fn apply(app: &mut App, msg: ToUi) -> bool {
    match msg {
        ToUi::Update(update) => {
            let refresh = !matches!(update, Update::Link(_));
            app.on_update(update);
            refresh
        }
        ToUi::Sent { id, result } => {
            app.on_sent(id, result);
            false
        }
        ToUi::FollowEnded(result) => {
            app.on_follow_ended(result);
            false
        }
    }
}

/// Follows the talk until it ends or the screen goes, forwarding every update.
async fn follow_task(client: Client, talk: String, from: u64, tx: mpsc::Sender<ToUi>) {
    let mut next = from;
    loop {
        let mut fwd = Forward {
            tx: &tx,
            next,
            held: None,
            last: None,
            gone: false,
        };
        let result = client
            .follow(&talk, next, Until::Closed, |u| fwd.offer(u))
            .await;
        let Forward {
            next: delivered,
            held,
            last,
            gone,
            ..
        } = fwd;
        next = delivered;
        if gone {
            return;
        }
        let Some(held) = held else {
            let result = result.map_err(|e| FollowFailure {
                message: e.to_string(),
                exit_code: i32::from(crate::error::client_exit_code(&e)),
                talk_gone: matches!(e, ClientError::TalkGone | ClientError::Closed { .. }),
            });
            let _ = tx.send(ToUi::FollowEnded(result)).await;
            return;
        };
        // The screen fell behind: wait for room, then follow again from the first
        // entry it has not had.
        let index = entry_index(&held);
        let is_final = is_final(&held);
        if tx.send(ToUi::Update(held)).await.is_err() || is_final {
            return;
        }
        if let Some(i) = index {
            next = i + 1;
        }
        if let Some(last) = last {
            let _ = tx.send(ToUi::Update(last)).await;
            return;
        }
    }
}

/// The sink of one `follow` call.
struct Forward<'a> {
    tx: &'a mpsc::Sender<ToUi>,
    /// First history index the screen has not had.
    next: u64,
    /// The update that found the queue full; it goes first once there is room.
    held: Option<Update>,
    /// The talk's final entry if it came after the queue filled: the talk is deleted
    /// by then, so following again could not show who closed it.
    last: Option<Update>,
    /// The screen is gone.
    gone: bool,
}

impl Forward<'_> {
    fn offer(&mut self, update: Update) -> bool {
        if self.held.is_some() {
            if is_final(&update) {
                self.last = Some(update);
            }
            // An entry refused here comes again when following resumes from `next`;
            // a status or link state is sent afresh on reconnecting.
            return false;
        }
        let index = entry_index(&update);
        match self.tx.try_send(ToUi::Update(update)) {
            Ok(()) => {
                if let Some(i) = index {
                    self.next = i + 1;
                }
                true
            }
            Err(TrySendError::Full(msg)) => {
                if let ToUi::Update(update) = msg {
                    self.held = Some(update);
                }
                false
            }
            Err(TrySendError::Closed(_)) => {
                self.gone = true;
                false
            }
        }
    }
}

/// The history index of an entry that `follow` could deliver again.
fn entry_index(update: &Update) -> Option<u64> {
    match update {
        Update::Entry(e) if !is_final(update) && e.index != u64::MAX => Some(e.index),
        _ => None,
    }
}

fn is_final(update: &Update) -> bool {
    matches!(update, Update::Entry(e) if matches!(e.event, Event::Closed { .. } | Event::Expired))
}

/// Sends the typed messages one at a time, in order, and reports each outcome.
async fn send_task(
    client: Client,
    talk: String,
    mut outbox: mpsc::Receiver<(u64, String)>,
    tx: mpsc::Sender<ToUi>,
) {
    while let Some((id, text)) = outbox.recv().await {
        let result = client
            .send(&talk, &text)
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        if tx.send(ToUi::Sent { id, result }).await.is_err() {
            return;
        }
    }
}

/// Seconds local time is ahead of UTC, now.
fn local_utc_offset() -> i64 {
    i64::from(chrono::Local::now().offset().local_minus_utc())
}

/// Whether the terminal is in the chat's modes (raw, alternate screen, mouse).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The terminal while the chat screen is up; dropping it restores the terminal.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    fn enter() -> io::Result<Screen> {
        install_panic_hook();
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let entered = execute!(
            io::stdout(),
            EnterAlternateScreen,
            EnableMouseCapture,
            EnableBracketedPaste
        )
        .and_then(|()| Terminal::new(CrosstermBackend::new(io::stdout())));
        match entered {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    fn draw(&mut self, app: &App) -> io::Result<()> {
        self.terminal.draw(|frame| app.render(frame)).map(drop)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the terminal back as it was; does nothing when it already is.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        // Nothing useful can be done if these fail: the process is leaving anyway.
        let _ = execute!(
            io::stdout(),
            DisableBracketedPaste,
            DisableMouseCapture,
            LeaveAlternateScreen,
            crossterm::cursor::Show
        );
        let _ = disable_raw_mode();
    }
}

/// Restores the terminal before the panic message is printed, so that it is readable
/// and the shell is usable after any panic, also in a task.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use nook_client::HistoryEntry;

    fn entry(index: u64, event: Event) -> Update {
        Update::Entry(HistoryEntry {
            index,
            at_ms: 0,
            event,
        })
    }

    #[test]
    fn a_full_ui_queue_holds_the_update_and_keeps_the_final_entry() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut fwd = Forward {
            tx: &tx,
            next: 5,
            held: None,
            last: None,
            gone: false,
        };
        assert!(fwd.offer(entry(5, Event::Opened)));
        assert_eq!(fwd.next, 6);
        // The queue is full: the next entry is held and `follow` told to stop.
        assert!(!fwd.offer(entry(6, Event::Opened)));
        assert_eq!(fwd.next, 6, "entry 6 is not delivered yet");
        assert!(matches!(&fwd.held, Some(Update::Entry(e)) if e.index == 6));
        // What `follow` still hands over is refused, except the talk's end.
        assert!(!fwd.offer(entry(7, Event::Opened)));
        let closed = Event::Closed {
            by: None,
            verified: false,
            receipt: None,
        };
        assert!(!fwd.offer(entry(u64::MAX, closed)));
        assert!(fwd.last.as_ref().is_some_and(is_final));
        assert!(matches!(&fwd.held, Some(Update::Entry(e)) if e.index == 6));
        assert!(rx.try_recv().is_ok());
        assert!(!fwd.gone);
        // A closed queue means the screen is gone.
        drop(rx);
        let mut fwd = Forward {
            tx: &tx,
            next: 0,
            held: None,
            last: None,
            gone: false,
        };
        assert!(!fwd.offer(entry(0, Event::Opened)));
        assert!(fwd.gone);
    }

    #[test]
    fn a_terminal_whose_other_end_closed_is_seen_as_hung_up() {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .unwrap();
        assert!(!hung_up(&slave), "a live terminal is not hung up");
        drop(master);
        assert!(hung_up(&slave), "the terminal's other end closed");
    }

    #[test]
    fn final_entries_are_never_resumed_from() {
        let closed = entry(
            u64::MAX,
            Event::Closed {
                by: None,
                verified: false,
                receipt: None,
            },
        );
        assert!(is_final(&closed));
        assert_eq!(entry_index(&closed), None);
        assert_eq!(entry_index(&entry(3, Event::Expired)), None);
        assert_eq!(entry_index(&entry(3, Event::Opened)), Some(3));
        assert_eq!(
            entry_index(&Update::Link(nook_client::Link::Connected)),
            None
        );
    }
}
