//! What `nook` prints: the human text and the `--json` lines of each result.

use nook_client::{CreatedTalk, Event, HistoryEntry, JoinedTalk, TalkSummary};
use nook_proto::{TalkPhase, TalkStatus};
use serde_json::json;

/// Where results go: text for people, or one JSON object per line for scripts.
pub struct Output {
    pub json: bool,
}

pub fn state_word(s: &TalkStatus) -> &'static str {
    match s.state {
        TalkPhase::Pending => "pending",
        TalkPhase::Open => "open",
    }
}

impl Output {
    pub fn created(&self, c: &CreatedTalk) {
        if self.json {
            println!(
                "{}",
                json!({
                    "talk": c.talk,
                    "relay": c.relay,
                    "alias": c.alias,
                    "state": state_word(&c.status),
                    "members": c.status.members,
                    "seats": c.status.seats,
                    "quorum": c.status.quorum,
                    "expires_at": c.status.expires_at,
                    "invites": c.invites,
                })
            );
            return;
        }
        println!("talk {} created; you are {}", c.talk, c.alias);
        println!(
            "{} ({}/{} seats taken, opens at {})",
            state_word(&c.status),
            c.status.members,
            c.status.seats,
            c.status.quorum
        );
        println!("invites (give each to one person; each works once):");
        for i in &c.invites {
            println!("{i}");
        }
    }

    pub fn joined(&self, j: &JoinedTalk) {
        if self.json {
            println!(
                "{}",
                json!({
                    "talk": j.talk,
                    "alias": j.alias,
                    "seat": j.seat,
                    "state": state_word(&j.status),
                    "members": j.status.members,
                    "seats": j.status.seats,
                    "quorum": j.status.quorum,
                })
            );
            return;
        }
        println!(
            "joined talk {} as {} (seat {}); {} ({}/{} seats taken)",
            j.talk,
            j.alias,
            j.seat,
            state_word(&j.status),
            j.status.members,
            j.status.seats
        );
    }

    pub fn list(&self, talks: &[TalkSummary]) {
        if self.json {
            for t in talks {
                println!(
                    "{}",
                    json!({
                        "talk": t.talk,
                        "state": t.status.map(|s| state_word(&s)).unwrap_or("unknown"),
                        "members": t.status.map(|s| s.members),
                        "seats": t.status.map(|s| s.seats),
                        "quorum": t.status.map(|s| s.quorum),
                        "alias": t.alias,
                        "owner": t.owner,
                        "unread": t.unread,
                        "relay": t.relay,
                        "expires_at": t.expires_at,
                    })
                );
            }
            return;
        }
        if talks.is_empty() {
            println!(
                "no talks; create one with `nook new --relay ADDR` or join with `nook join INVITE`"
            );
            return;
        }
        println!(
            "{:<16}  {:<14}  {:<20}  {:>6}  RELAY",
            "TALK", "STATE", "ALIAS", "UNREAD"
        );
        for t in talks {
            let state = match t.status {
                Some(s) if s.state == TalkPhase::Pending => {
                    format!("pending {}/{}", s.members, s.quorum)
                }
                Some(_) => "open".to_string(),
                None => "unknown".to_string(),
            };
            println!(
                "{:<16}  {:<14}  {:<20}  {:>6}  {}",
                t.talk, state, t.alias, t.unread, t.relay
            );
        }
    }

    pub fn entry(&self, e: &HistoryEntry) {
        if self.json {
            println!("{}", entry_json(e));
        } else {
            println!("{}", entry_text(e));
        }
    }
}

pub(crate) fn entry_json(e: &HistoryEntry) -> serde_json::Value {
    match &e.event {
        Event::Message {
            seat,
            alias,
            sent_at_ms,
            text,
            own,
            late,
            missed,
        } => json!({"type": "message", "seat": seat, "alias": alias, "sent_at_ms": sent_at_ms,
                    "text": text, "own": own, "late": late, "missed": missed}),
        Event::MemberJoined { seat, alias } => {
            json!({"type": "joined", "seat": seat, "alias": alias})
        }
        Event::MemberLeaving { seat, alias } => {
            json!({"type": "left", "seat": seat, "alias": alias})
        }
        Event::SeatsTaken {
            members,
            seats,
            quorum,
        } => {
            json!({"type": "seats", "members": members, "seats": seats, "quorum": quorum})
        }
        Event::Opened => json!({"type": "opened"}),
        Event::Closed {
            by,
            verified,
            receipt,
        } => {
            let receipt = receipt.as_ref().map(|r| crate::receipt::json(r, true));
            json!({"type": "closed", "by": by, "verified": verified, "receipt": receipt,
                    "local_data_deleted": true})
        }
        Event::Expired => json!({"type": "expired", "local_data_deleted": true}),
        Event::Warning(w) => json!({"type": "warning", "message": w}),
    }
}

pub(crate) fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

pub(crate) fn entry_text(e: &HistoryEntry) -> String {
    match &e.event {
        Event::Message {
            own,
            late,
            alias,
            text,
            sent_at_ms,
            ..
        } => {
            let me = if *own { " (you)" } else { "" };
            let late = if *late { " [late]" } else { "" };
            format!("[{}] {alias}{me}: {text}{late}", clock(*sent_at_ms))
        }
        Event::MemberJoined { seat, alias } => format!("* {alias} took seat {seat}"),
        Event::MemberLeaving { alias, .. } => format!("* {alias} left the talk"),
        Event::SeatsTaken {
            members,
            seats,
            quorum,
        } => {
            format!("* {members}/{seats} seats taken (opens at {quorum})")
        }
        Event::Opened => "* the talk is open".to_string(),
        Event::Closed {
            by,
            verified,
            receipt,
        } => {
            let who = by
                .as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default();
            let v = if *verified { " (verified)" } else { "" };
            let mut text =
                format!("* the talk was closed{who}{v}; all local data for it was deleted");
            // Last in the output, after an empty line: saved to a file, it verifies.
            if let Some(r) = receipt {
                let block = r.to_text();
                text.push_str(&format!(
                    "\n  {}\n\n{}",
                    crate::receipt::KEEP,
                    block.trim_end()
                ));
            }
            text
        }
        Event::Expired => "* the talk expired; all local data for it was deleted".to_string(),
        Event::Warning(w) => format!("! {w}"),
    }
}
