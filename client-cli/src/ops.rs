//! What a command does beyond one library call, shared by the command line and
//! `nook rpc`, so both follow one rule. Warnings (the relay could not be asked, what
//! is shown is this device's knowledge) go to `warn`; each front end shows them its way.

use nook_client::{AskStatus, Client, ClientError, Event, HistoryEntry, JoinedTalk, Member};

use crate::error::{self, CliError, Kind};

/// `join`: an invite to one of this device's own talks is refused before anything is
/// stored or sent (joining it would spend the seat on a second copy of the talk).
pub async fn join(
    client: &Client,
    invite: &str,
    alias: Option<&str>,
) -> Result<JoinedTalk, CliError> {
    // Parsed here (the library parses again) to tell a typo first.
    let parsed: nook_crypto::Invite = invite.parse().map_err(ClientError::Invite)?;
    let own = client.list(false).await?.into_iter().find(|t| {
        t.invites
            .iter()
            .any(|i| i.parse::<nook_crypto::Invite>().is_ok_and(|i| i == parsed))
    });
    if let Some(t) = own {
        return Err(CliError::OwnInvite { talk: t.talk });
    }
    Ok(client.join(invite, alias).await?)
}

/// `send`'s text: never empty.
pub fn message(text: String) -> Result<String, CliError> {
    if text.is_empty() {
        return Err(CliError::Input("the message is empty".into()));
    }
    Ok(text)
}

/// The owner's unused invites of a talk, and how many of those issued were used.
#[derive(Debug)]
pub struct Invites {
    pub talk: String,
    pub invites: Vec<String>,
    pub used: usize,
    pub issued: usize,
}

/// `invites`: asks the relay first, which drops invites whose seats were taken.
pub async fn invites(
    client: &Client,
    talk: &str,
    warn: &mut (dyn FnMut(Kind, String) + Send),
) -> Result<Invites, CliError> {
    // A member's device never had the invites: an empty list would say "all used"
    // when the truth is "ask the owner".
    let info = client.info(talk).await?;
    if !info.owner {
        return Err(CliError::NotOwner { talk: info.talk });
    }
    match client.fetch(talk).await {
        Ok(_) => {}
        Err(e) if e.is_transient() || matches!(e, ClientError::Connect(_)) => warn(
            error::client_kind(&e),
            format!(
                "the relay could not be reached ({e}); some of these invites may have been used since this device last heard from it"
            ),
        ),
        Err(e) => return Err(e.into()),
    }
    let info = client.info(talk).await?;
    let issued = usize::from(info.seats.saturating_sub(1));
    Ok(Invites {
        used: issued.saturating_sub(info.invites.len()),
        issued,
        talk: info.talk,
        invites: info.invites,
    })
}

/// `members`: asks the relay first, since announcements that wait there name members.
pub async fn members(
    client: &Client,
    talk: &str,
    warn: &mut (dyn FnMut(Kind, String) + Send),
) -> Result<Vec<Member>, CliError> {
    match client.fetch(talk).await {
        Ok(_) => {}
        Err(e) if e.is_transient() || matches!(e, ClientError::Connect(_)) => warn(
            error::client_kind(&e),
            format!("{e}; showing the members this device knew of"),
        ),
        Err(e) => return Err(e.into()),
    }
    Ok(client.members(talk).await?)
}

/// `read`'s first step: fetch what waits on the relay. `Ok(Some(e))`: the relay could
/// not be reached, and what this device has is all there is to show (the caller
/// warns, or fails if it needed the relay). `Err`: with the entry that says how the
/// talk ended while this device was away (the relay's receipt when it was closed).
pub async fn fetch_for_read(
    client: &Client,
    talk: &str,
) -> Result<Option<ClientError>, (CliError, Option<HistoryEntry>)> {
    match client.fetch(talk).await {
        // The owner's device learns of seat requests by asking: new ones go into the
        // history that `read` shows next.
        Ok(_) => Ok(client.note_seat_requests(talk).await.err()),
        Err(e @ (ClientError::TalkGone | ClientError::Closed { .. })) => {
            let receipt = match &e {
                ClientError::Closed { receipt } => receipt.clone(),
                _ => None,
            };
            let closed = HistoryEntry {
                index: u64::MAX,
                at_ms: nook_client::now_ms(),
                event: Event::Closed {
                    by: None,
                    verified: false,
                    receipt,
                },
            };
            Err((e.into(), Some(closed)))
        }
        Err(e @ (ClientError::Connect(_) | ClientError::Lost { .. })) => Ok(Some(e)),
        Err(e) => Err((e.into(), None)),
    }
}

/// Before the commands a seeker runs next (`list`, `read`, `wait`, and `nook rpc`'s
/// `list`, `read` and `wait`): each pending ask that has an answer now is taken (an
/// admit joins its seat) and `report`ed once. Without a pending ask nothing is sent. A
/// failure here never fails the command it precedes: it is a warning, and the ask stays
/// pending for the next contact.
pub async fn settle_asks(
    client: &Client,
    report: &mut (dyn FnMut(&AskStatus) + Send),
    warn: &mut (dyn FnMut(Kind, String) + Send),
) {
    match client.settle_asks().await {
        Ok(settled) => settled.iter().for_each(report),
        Err(e) => warn(
            error::client_kind(&e),
            format!("{e}; your pending asks were not checked (`nook asks` checks them)"),
        ),
    }
}
