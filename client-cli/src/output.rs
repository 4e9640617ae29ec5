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
                        "cached": t.cached,
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
            "{:<16}  {:<14}  {:<14}  {:<20}  {:>6}  RELAY",
            "TALK", "STATE", "CLOSES", "ALIAS", "UNREAD"
        );
        let now = nook_client::now_ms() / 1000;
        for t in talks {
            let state = match t.status {
                Some(s) if s.state == TalkPhase::Pending => {
                    format!("pending {}/{}", s.members, s.quorum)
                }
                Some(_) => "open".to_string(),
                None => "unknown".to_string(),
            };
            println!(
                "{:<16}  {:<14}  {:<14}  {:<20}  {:>6}  {}",
                t.talk,
                state,
                closes_in(t.expires_at, now),
                t.alias,
                t.unread,
                t.relay
            );
        }
        if talks.iter().any(|t| t.cached) {
            eprintln!(
                "note: a relay could not be reached; its talks are shown as this device last knew them"
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

/// When a talk ends, for people: "in 3h", "in 2d 4h", "in 45m", "expired".
pub fn closes_in(expires_at: u64, now: u64) -> String {
    let Some(left) = expires_at.checked_sub(now).filter(|l| *l > 0) else {
        return "expired".to_string();
    };
    let (d, h, m) = (left / 86_400, left % 86_400 / 3600, left % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => "in <1m".to_string(),
        (0, 0, m) => format!("in {m}m"),
        (0, h, _) => format!("in {h}h"),
        (d, 0, _) => format!("in {d}d"),
        (d, h, _) => format!("in {d}d {h}h"),
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
        Event::Closed { by, verified } => {
            json!({"type": "closed", "by": by, "verified": verified, "local_data_deleted": true})
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
        Event::Closed { by, verified } => {
            let who = by
                .as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default();
            let v = if *verified { " (verified)" } else { "" };
            format!("* the talk was closed{who}{v}; all local data for it was deleted")
        }
        Event::Expired => "* the talk expired; all local data for it was deleted".to_string(),
        Event::Warning(w) => format!("! {w}"),
    }
}

#[cfg(test)]
mod tests {
    use super::closes_in;

    #[test]
    fn expiry_reads_as_a_rounded_duration() {
        assert_eq!(closes_in(100, 100), "expired");
        assert_eq!(closes_in(100, 200), "expired");
        assert_eq!(closes_in(130, 100), "in <1m");
        assert_eq!(closes_in(100 + 45 * 60, 100), "in 45m");
        assert_eq!(closes_in(100 + 3 * 3600 + 59, 100), "in 3h");
        assert_eq!(closes_in(100 + 86_400 * 2 + 4 * 3600, 100), "in 2d 4h");
        assert_eq!(closes_in(100 + 86_400 * 7, 100), "in 7d");
    }
}
