//! `nook wait TALK --for open|message|member|closed [--timeout 30s]`: block until it
//! happens, print the event, exit 0 — or exit 8 (`timeout`) when the time is up. A
//! script's way to wait without polling.

use std::process::ExitCode;
use std::time::Duration;

use clap::ValueEnum;
use nook_client::{Client, ClientError, Event, HistoryEntry, Until, Update, now_ms};
use nook_proto::TalkPhase;

use crate::error::CliError;
use crate::output::Output;

/// What `wait` waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WaitFor {
    /// The talk opens (quorum reached); at once if it is open already.
    Open,
    /// Another member's message arrives (one not already recorded on this device).
    Message,
    /// Another member takes a seat.
    Member,
    /// The talk is closed or expires.
    Closed,
}

/// Runs `nook wait`.
pub async fn run(
    client: &Client,
    out: &Output,
    talk: &str,
    what: WaitFor,
    timeout: Option<Duration>,
) -> Result<ExitCode, CliError> {
    let (found, result) = wait(client, talk, what, timeout).await;
    if let Some(e) = &found {
        out.entry(talk, e);
    }
    result.map(|()| ExitCode::SUCCESS)
}

/// Waits (see [`run`]): what was found, if anything (the event waited for, or the end
/// of the talk), and whether the wait succeeded.
pub async fn wait(
    client: &Client,
    talk: &str,
    what: WaitFor,
    timeout: Option<Duration>,
) -> (Option<HistoryEntry>, Result<(), CliError>) {
    let mut found: Option<HistoryEntry> = None;
    let result = waiting(client, talk, what, timeout, &mut found).await;
    (found, result)
}

async fn waiting(
    client: &Client,
    talk: &str,
    what: WaitFor,
    timeout: Option<Duration>,
    found: &mut Option<HistoryEntry>,
) -> Result<(), CliError> {
    if what == WaitFor::Open && client.info(talk).await?.open {
        *found = Some(entry(Event::Opened));
        return Ok(());
    }
    // Only what happens from now on counts (and what waits on the relay, which the
    // follow fetches first).
    let from = client.history_end(talk).await?;
    let mut ended = false;
    let following = client.follow(talk, from, Until::Closed, |u| {
        let hit = match u {
            Update::Entry(e) => {
                let end = matches!(e.event, Event::Closed { .. } | Event::Expired);
                let hit = match (&e.event, what) {
                    (Event::Opened, WaitFor::Open)
                    | (Event::Message { own: false, .. }, WaitFor::Message)
                    | (Event::MemberJoined { .. }, WaitFor::Member) => true,
                    _ => end && what == WaitFor::Closed,
                };
                if hit || end {
                    ended = end;
                    *found = Some(e);
                }
                hit || end
            }
            Update::Status(s) if what == WaitFor::Open && s.state == TalkPhase::Open => {
                *found = Some(entry(Event::Opened));
                true
            }
            _ => false,
        };
        !hit
    });
    let result = match timeout {
        Some(limit) => match tokio::time::timeout(limit, following).await {
            Ok(r) => r,
            Err(_) => return Err(CliError::Timeout { after: limit }),
        },
        None => following.await,
    };
    match result {
        Err(ClientError::TalkGone) if what == WaitFor::Closed => Ok(()),
        Err(e) => Err(e.into()),
        // The talk ended while we waited for something else.
        Ok(()) if ended && what != WaitFor::Closed => Err(ClientError::TalkGone.into()),
        Ok(()) => Ok(()),
    }
}

fn entry(event: Event) -> HistoryEntry {
    HistoryEntry {
        index: u64::MAX,
        at_ms: now_ms(),
        event,
    }
}
