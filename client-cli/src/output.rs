//! What `nook` prints: the human text and the `--json` lines of each result.
//!
//! Text that other members chose (aliases, message text) goes through
//! [`crate::safe`] before it is printed as text; `--json` prints it exactly, since
//! serde_json escapes what JSON needs. A message's first line follows its header
//! `[hh:mm:ss] alias: `; its other lines are indented by [`CONTINUATION`], so that
//! every line that does not start with a space is a real header (`[…`) or event
//! (`* …`, `! …`) line.

use nook_client::{
    CreatedTalk, Event, HistoryEntry, JoinedTalk, Link, Member, Sent, TalkSummary, Until,
};
use nook_crypto::auth::PortableReceipt;
use nook_proto::{TalkPhase, TalkSchedule, TalkStatus};
use serde_json::{Value, json};

use crate::error::{CliError, Kind};
use crate::{safe, schedule};

/// What starts each line of a message after its first: as wide as the time stamp
/// "[hh:mm:ss] ", so the text stands under the alias and no line of a message can
/// pass for a header or an event line.
const CONTINUATION: &str = "           ";

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
            println!("{}", created_json(c));
            return;
        }
        println!(
            "talk {} created; you are {}",
            c.talk,
            safe::inline(&c.alias)
        );
        println!(
            "{} ({}/{} seats taken, opens at {}); closes {}",
            state_word(&c.status),
            c.status.members,
            c.status.seats,
            c.status.quorum,
            closes_in(
                schedule::ends_at(Some(&c.status), c.status.expires_at),
                nook_client::now_ms() / 1000
            )
        );
        schedule_line(&c.status);
        println!("invites (give each to one person; each works once):");
        for i in &c.invites {
            println!("{i}");
        }
    }

    pub fn joined(&self, j: &JoinedTalk) {
        if self.json {
            println!("{}", joined_json(j));
            return;
        }
        println!(
            "joined talk {} as {} (seat {}); {} ({}/{} seats taken); closes {}",
            j.talk,
            safe::inline(&j.alias),
            j.seat,
            state_word(&j.status),
            j.status.members,
            j.status.seats,
            closes_in(
                schedule::ends_at(Some(&j.status), j.status.expires_at),
                nook_client::now_ms() / 1000
            )
        );
        schedule_line(&j.status);
    }

    pub fn list(&self, talks: &[TalkSummary]) {
        if self.json {
            for t in talks {
                println!("{}", talk_json(t));
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
            let waiting = schedule::waiting(t.status.as_ref(), now);
            let state = match t.status {
                // Shown from cache past its end: the relay has deleted it by now.
                _ if schedule::ends_at(t.status.as_ref(), t.expires_at) <= now => {
                    "expired".to_string()
                }
                // At quorum, waiting for its time: the countdown is the state.
                Some(s) if waiting.is_some() && s.members >= s.quorum => format!(
                    "opens in {}",
                    schedule::countdown(waiting.map_or(0, |w| w.opens_at) - now)
                ),
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
                closes_in(schedule::ends_at(t.status.as_ref(), t.expires_at), now),
                // A market's or a panel's roles beside the alias (spec §20).
                match t.pattern {
                    "plain" => safe::inline(&t.alias).into_owned(),
                    _ => format!("{} ({})", safe::inline(&t.alias), t.role),
                },
                t.unread,
                // From an invite someone else handed over: parsed, but shown safely too.
                match &t.via {
                    Some(via) => format!("{} via {}", safe::inline(&t.relay), safe::inline(via)),
                    None => safe::inline(&t.relay).into_owned(),
                }
            );
        }
        for t in talks {
            if let Some(status) = t.status
                && let Some(s) = status.schedule
            {
                println!("note: {} {}", t.talk, schedule_text(&status, &s, now));
            }
        }
        for t in talks {
            if let Some(at) = t.retiring_at {
                println!(
                    "note: the relay of {} retires at {}; it then closes the talk with a signed receipt",
                    t.talk,
                    nook_crypto::auth::rfc3339_utc(at)
                );
            }
        }
        if talks.iter().any(|t| t.cached) {
            // (Under --json each talk's "cached" field says it.)
            eprintln!(
                "note: a relay could not be reached; its talks are shown as this device last knew them"
            );
        }
    }

    /// The connection state of a follower, on stderr: a line for people, or a JSON
    /// object (`{"type":"link","state":"connected"|"reconnecting",…}`) under `--json`.
    pub fn link(&self, link: &Link, until: Until) {
        match (self.json, link) {
            (true, _) => eprintln!("{}", link_json(link, until)),
            (false, Link::Connected) => {
                let what = match until {
                    Until::Closed => "until the talk closes",
                    Until::Open => "until the talk opens",
                };
                eprintln!("connected; following the talk {what} (Ctrl-C to stop)");
            }
            (
                false,
                Link::Reconnecting {
                    attempt,
                    reason,
                    delay,
                },
            ) => eprintln!(
                "connection lost ({reason}); reconnecting by itself in {:.1} s (attempt {attempt})",
                delay.as_secs_f64()
            ),
        }
    }

    /// Something the person should know that is not an error, on stderr (a JSON object
    /// with the `kind` of what happened under `--json`).
    pub fn warning(&self, kind: Kind, message: &str) {
        if self.json {
            eprintln!("{}", warning_json(kind, message));
        } else {
            eprintln!("warning: {message}");
        }
    }

    /// `nook members`: one line (or JSON object) per seat.
    pub fn members(&self, members: &[Member]) {
        for m in members {
            if self.json {
                println!("{}", member_json(m));
                continue;
            }
            let mut notes = Vec::new();
            if m.own {
                notes.push("you".to_string());
            }
            if m.role != "member" {
                notes.push(m.role.to_string());
            }
            if m.left {
                notes.push("left".to_string());
            }
            if let Some(at) = m.joined_at_ms {
                notes.push(format!("joined {}", clock(at)));
            }
            println!(
                "seat {:<2}  {:<24}  {}",
                m.seat,
                safe::inline(&m.alias),
                notes.join(", ")
            );
        }
    }

    pub fn entry(&self, talk: &str, e: &HistoryEntry) {
        if self.json {
            println!("{}", entry_json(e));
        } else {
            println!("{}", entry_text(talk, e));
        }
    }

    /// An entry with the names shown to this viewer beside the aliases (`read`).
    pub fn entry_named(&self, talk: &str, e: &HistoryEntry, names: &mut crate::cards::Names) {
        names.learn(&e.event);
        if self.json {
            println!("{}", names.json(e, entry_json(e)));
        } else {
            println!("{}", names.text(e, entry_text(talk, e)));
        }
    }
}

/// `new`'s `--json` object.
pub fn created_json(c: &CreatedTalk) -> Value {
    json!({
        "talk": c.talk,
        "relay": c.relay,
        "alias": c.alias,
        "state": state_word(&c.status),
        "members": c.status.members,
        "seats": c.status.seats,
        "quorum": c.status.quorum,
        "expires_at": c.status.expires_at,
        "opens_at": c.status.schedule.map(|s| s.opens_at),
        "window_ends_at": c.status.schedule.map(|s| s.closes_at),
        "invites": c.invites,
    })
}

/// `join`'s `--json` object.
pub fn joined_json(j: &JoinedTalk) -> Value {
    json!({
        "talk": j.talk,
        "alias": j.alias,
        "seat": j.seat,
        "state": state_word(&j.status),
        "members": j.status.members,
        "seats": j.status.seats,
        "quorum": j.status.quorum,
        "expires_at": j.status.expires_at,
        "opens_at": j.status.schedule.map(|s| s.opens_at),
        "window_ends_at": j.status.schedule.map(|s| s.closes_at),
    })
}

/// One talk of `list --json`.
pub fn talk_json(t: &TalkSummary) -> Value {
    let now = nook_client::now_ms() / 1000;
    let schedule = t.status.and_then(|s| s.schedule);
    json!({
        "talk": t.talk,
        "state": if schedule::ends_at(t.status.as_ref(), t.expires_at) <= now {
            "expired"
        } else {
            t.status.map(|s| state_word(&s)).unwrap_or("unknown")
        },
        "members": t.status.map(|s| s.members),
        "seats": t.status.map(|s| s.seats),
        "quorum": t.status.map(|s| s.quorum),
        "alias": t.alias,
        "owner": t.owner,
        "unread": t.unread,
        "relay": t.relay,
        "expires_at": t.expires_at,
        "opens_at": schedule.map(|s| s.opens_at),
        "opens_in_secs": schedule::waiting(t.status.as_ref(), now).map(|s| s.opens_at - now),
        "window_ends_at": schedule.map(|s| s.closes_at),
        "window_ends_in_secs": schedule.map(|s| s.closes_at.saturating_sub(now)),
        "cached": t.cached,
        "relay_retiring_at": t.retiring_at.map(nook_crypto::auth::rfc3339_utc),
        "via": t.via,
        "role": t.role,
        "pattern": t.pattern,
        "offer_limit": t.offer_limit,
        "speakers": t.speakers,
    })
}

/// `send --json`'s object.
pub fn sent_json(s: &Sent) -> Value {
    json!({"talk": s.talk, "id": hex(&s.id), "seq": s.seq.0, "stored": true})
}

/// One seat of `members --json`.
pub fn member_json(m: &Member) -> Value {
    json!({"seat": m.seat, "alias": m.alias, "own": m.own, "owner": m.owner,
           "left": m.left, "joined_at_ms": m.joined_at_ms, "role": m.role})
}

/// `invites --json`'s object.
pub fn invites_json(talk: &str, invites: &[String], used: usize, issued: usize) -> Value {
    json!({"talk": talk, "invites": invites, "used": used, "issued": issued})
}

/// `promote --json`'s object.
pub fn promoted_json(talk: &str, seat: u8) -> Value {
    json!({"talk": talk, "seat": seat, "promoted": true})
}

/// `remove --json`'s object.
pub fn removed_json(talk: &str, seat: u8) -> Value {
    json!({"talk": talk, "seat": seat, "removed": true})
}

/// `leave --json`'s object.
pub fn left_json(talk: &str) -> Value {
    json!({"talk": talk, "left": true, "local_data_deleted": true})
}

/// `close --json`'s object.
pub fn closed_json(talk: &str, receipt: &PortableReceipt) -> Value {
    json!({
        "talk": talk,
        "closed": true,
        "receipt": crate::receipt::json(receipt, true),
        "local_data_deleted": true,
    })
}

/// A follower's connection state (`{"type":"link",…}`).
pub fn link_json(link: &Link, until: Until) -> Value {
    match link {
        Link::Connected => {
            let following = match until {
                Until::Closed => "until_closed",
                Until::Open => "until_open",
            };
            json!({"type": "link", "state": "connected", "following": following})
        }
        Link::Reconnecting {
            attempt,
            reason,
            delay,
        } => json!({"type": "link", "state": "reconnecting", "attempt": attempt,
                    "delay_ms": u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "reason": reason}),
    }
}

/// A warning (`{"type":"warning",…}`).
pub fn warning_json(kind: Kind, message: &str) -> Value {
    json!({"type": "warning", "kind": kind.name(), "message": message})
}

/// A failure as `--json` prints it on stderr: message, exit code, kind.
pub fn error_json(e: &CliError) -> Value {
    let kind = e.kind();
    json!({"error": e.to_string(), "exit_code": kind.exit_code(), "kind": kind.name()})
}

/// When a talk ends, for people: "in 3h", "in 2d 4h", "in 45m", "expired".
/// A scheduled talk's times for people: "is scheduled: opens at T (in 3m20s) once
/// quorum is met; its window ends at T2 (in 1h03m) and the relay then closes it".
pub fn schedule_text(status: &TalkStatus, s: &TalkSchedule, now: u64) -> String {
    let opens = if now < s.opens_at {
        format!(
            "opens at {} (in {}){}",
            nook_crypto::auth::rfc3339_utc(s.opens_at),
            schedule::countdown(s.opens_at - now),
            if status.members < status.quorum {
                " once quorum is met"
            } else {
                ""
            }
        )
    } else {
        format!("opened at {}", nook_crypto::auth::rfc3339_utc(s.opens_at))
    };
    format!(
        "is scheduled: {opens}; its window ends at {} (in {}) and the relay then closes it, erasing everything",
        nook_crypto::auth::rfc3339_utc(s.closes_at),
        schedule::countdown(s.closes_at.saturating_sub(now))
    )
}

/// After `new` and `join`: the schedule, for a scheduled talk.
fn schedule_line(status: &TalkStatus) {
    if let Some(s) = status.schedule {
        println!(
            "the talk {}",
            schedule_text(status, &s, nook_client::now_ms() / 1000)
        );
    }
}

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

/// An id as text: lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One history entry as a `--json` line. Every event has `type` and `at_ms` (when this
/// device recorded it, unix ms); the rest depends on the type.
pub(crate) fn entry_json(e: &HistoryEntry) -> Value {
    let mut v = match &e.event {
        Event::Message {
            seat,
            alias,
            sent_at_ms,
            text,
            own,
            late,
            missed,
            id,
        } => json!({"type": "message", "id": id.map(|i| hex(&i)), "seat": seat, "alias": alias,
                    "sent_at_ms": sent_at_ms, "text": text, "own": own, "late": late,
                    "missed": missed}),
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
        Event::RelayRotated {
            fingerprint,
            rotations,
        } => json!({"type": "relay_rotated", "fingerprint": fingerprint, "rotations": rotations}),
        Event::RelayRetiring { at } => json!({"type": "relay_retiring",
            "retiring_at": nook_crypto::auth::rfc3339_utc(*at)}),
        Event::Missing { seat, alias, count } => {
            json!({"type": "missing", "seat": seat, "alias": alias, "count": count})
        }
        Event::FileOffered {
            seat,
            alias,
            sent_at_ms,
            own,
            offer,
        } => json!({"type": "file_offer", "seat": seat, "alias": alias,
            "sent_at_ms": sent_at_ms, "own": own,
            "file_id": nook_client::files::file_id_text(&offer.file_id),
            "name": offer.name, "size": offer.size, "chunks": offer.chunks,
            "sha256": offer.sha256.iter().map(|b| format!("{b:02x}")).collect::<String>()}),
        Event::SeatRequested {
            request,
            alias,
            note,
        } => json!({"type": "seat_request", "request": request, "alias": alias, "note": note}),
        Event::CardRevealed {
            seat,
            alias,
            fields,
            keepable,
            contact,
        } => json!({"type": "card", "seat": seat, "alias": alias,
            "fields": crate::cards::fields_json(fields), "keepable": keepable,
            "contact": contact}),
        Event::CardShown {
            seat,
            alias,
            fields,
            keepable,
        } => json!({"type": "card_shown", "seat": seat, "alias": alias,
            "fields": nook_client::cards::names(fields), "keepable": keepable}),
        Event::CardOffered {
            seat,
            alias,
            fields,
            keepable,
            own,
        } => json!({"type": "card_offer", "seat": seat, "alias": alias,
            "fields": nook_client::cards::names(fields), "keepable": keepable, "own": own}),
        Event::CardDeclined { seat, alias, own } => {
            json!({"type": "card_declined", "seat": seat, "alias": alias, "own": own})
        }
        Event::MessageTo {
            seat,
            alias,
            sent_at_ms,
            text,
            id,
        } => json!({"type": "message_to", "id": hex(id), "seat": seat, "alias": alias,
                    "sent_at_ms": sent_at_ms, "text": text}),
        Event::OverLimit { seat, alias } => {
            json!({"type": "over_limit", "seat": seat, "alias": alias})
        }
        Event::OffererRemoved { seat, alias } => {
            json!({"type": "offerer_removed", "seat": seat, "alias": alias})
        }
        Event::Promoted { seat, alias } => {
            json!({"type": "promoted", "seat": seat, "alias": alias})
        }
    };
    v["at_ms"] = json!(e.at_ms);
    v
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

/// One history entry as a line; `talk` names the talk in the commands it suggests.
pub(crate) fn entry_text(talk: &str, e: &HistoryEntry) -> String {
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
            let mut lines = safe::body(text).into_iter();
            let mut out = format!(
                "[{}] {}{me}: {}",
                clock(*sent_at_ms),
                safe::inline(alias),
                lines.next().unwrap_or_default()
            );
            for line in lines {
                out.push('\n');
                out.push_str(CONTINUATION);
                out.push_str(&line);
            }
            out.push_str(late);
            out
        }
        Event::MemberJoined { seat, alias } => {
            format!("* {} took seat {seat}", safe::inline(alias))
        }
        Event::MemberLeaving { alias, .. } => format!("* {} left the talk", safe::inline(alias)),
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
                .map(|b| format!(" by {}", safe::inline(b)))
                .unwrap_or_default();
            let v = if *verified { " (verified)" } else { "" };
            let mut text =
                format!("* the talk was closed{who}{v}; all local data for it was deleted");
            // Indented under the close like every continuation line (so no line of
            // `read` that starts in column 0 is anything but a header or event), and
            // last in the output: saved to a file as it is, it verifies.
            if let Some(r) = receipt {
                text.push_str(&format!("\n  {}", crate::receipt::KEEP));
                for line in r.to_text().lines() {
                    text.push_str(&format!("\n  {line}"));
                }
            }
            text
        }
        Event::Expired => "* the talk expired; all local data for it was deleted".to_string(),
        // Warnings name members by their alias: one line, escaped like one.
        Event::Warning(w) => format!("! {}", safe::inline(w)),
        Event::RelayRotated { fingerprint, .. } => format!(
            "* the relay moved to a new key ({fingerprint}), proved by the key of the address you were given; followed"
        ),
        Event::RelayRetiring { at } => format!(
            "* the relay retires at {}: it then closes this talk (and every other) with a signed receipt",
            nook_crypto::auth::rfc3339_utc(*at)
        ),
        Event::Missing { alias, count, .. } => format!(
            "! {count} message{} from {} never arrived",
            if *count == 1 { "" } else { "s" },
            safe::inline(alias)
        ),
        Event::FileOffered {
            alias, own, offer, ..
        } => {
            let id = nook_client::files::file_id_text(&offer.file_id);
            let short = id.get(..8).unwrap_or(&id);
            if *own {
                format!(
                    "* you offered {} ({})",
                    safe::inline(&offer.name),
                    size_text(offer.size)
                )
            } else {
                format!(
                    "* {} offers {} ({}) — nook save {talk} {short}",
                    safe::inline(alias),
                    safe::inline(&offer.name),
                    size_text(offer.size)
                )
            }
        }
        Event::SeatRequested {
            request,
            alias,
            note,
        } => {
            let short = request.get(..8).unwrap_or(request);
            let note = if note.is_empty() {
                String::new()
            } else {
                format!(": \"{}\"", safe::inline(note))
            };
            format!(
                "* {} asks for a seat{note} — nook admit {talk} {short}",
                safe::inline(alias)
            )
        }
        Event::CardRevealed {
            alias,
            fields,
            keepable,
            contact,
            ..
        } => crate::cards::revealed_text(alias, fields, *keepable, *contact),
        Event::CardShown {
            alias,
            fields,
            keepable,
            ..
        } => format!(
            "* you showed {} your card: {}{}",
            safe::inline(alias),
            nook_client::cards::names(fields).join(", "),
            if *keepable { " (keepable)" } else { "" }
        ),
        Event::CardOffered {
            alias,
            fields,
            own: true,
            ..
        } => format!(
            "* you offered {} an exchange of cards ({}); nothing is shown before they accept",
            safe::inline(alias),
            nook_client::cards::names(fields).join(", ")
        ),
        Event::CardOffered {
            alias,
            fields,
            keepable,
            own: false,
            ..
        } => format!(
            "* {} offers an exchange of cards ({}{}): nook reveal TALK {} --accept, or --decline",
            safe::inline(alias),
            nook_client::cards::names(fields).join(", "),
            if *keepable { ", theirs keepable" } else { "" },
            safe::inline(alias)
        ),
        Event::CardDeclined {
            alias, own: true, ..
        } => format!(
            "* you declined {}'s exchange; no card was shown",
            safe::inline(alias)
        ),
        Event::CardDeclined {
            alias, own: false, ..
        } => format!(
            "* {} declined your exchange; no card was shown",
            safe::inline(alias)
        ),
        Event::MessageTo {
            alias,
            text,
            sent_at_ms,
            ..
        } => {
            let mut lines = safe::body(text).into_iter();
            let mut out = format!(
                "[{}] you → {} alone: {}",
                clock(*sent_at_ms),
                safe::inline(alias),
                lines.next().unwrap_or_default()
            );
            for line in lines {
                out.push('\n');
                out.push_str(CONTINUATION);
                out.push_str(&line);
            }
            out
        }
        Event::OverLimit { alias, .. } => format!(
            "! {} sent past the offer limit before you answered (a modified client): not shown",
            safe::inline(alias)
        ),
        Event::Promoted { alias, .. } => format!(
            "* {} was taken into the group (market)",
            safe::inline(alias)
        ),
        Event::OffererRemoved { alias, .. } => format!(
            "* you removed {}: nothing it sends is read any more (the relay still counts its seat)",
            safe::inline(alias)
        ),
    }
}

/// A byte count as people read it (binary units).
pub(crate) fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(alias: &str, text: &str, own: bool, late: bool) -> HistoryEntry {
        HistoryEntry {
            index: 0,
            at_ms: 0,
            event: Event::Message {
                seat: 1,
                alias: alias.into(),
                // 15:43:59 UTC.
                sent_at_ms: (15 * 3600 + 43 * 60 + 59) * 1000,
                text: text.into(),
                own,
                late,
                missed: 0,
                id: Some([0xab; 8]),
            },
        }
    }

    fn event(event: Event) -> String {
        entry_text(
            "nev2-xem6",
            &HistoryEntry {
                index: 0,
                at_ms: 0,
                event,
            },
        )
    }

    #[test]
    fn a_message_is_one_header_and_indented_lines() {
        assert_eq!(
            entry_text("nev2-xem6", &message("eve", "hello", false, false)),
            "[15:43:59] eve: hello"
        );
        assert_eq!(
            entry_text(
                "nev2-xem6",
                &message(
                    "eve",
                    "fine\n[15:44:00] bob: send me the password\n* bob left\n! hm",
                    false,
                    true
                )
            ),
            "[15:43:59] eve: fine\n           [15:44:00] bob: send me the password\n           * bob left\n           ! hm [late]"
        );
        assert_eq!(
            entry_text("nev2-xem6", &message("ann", "a\r\n\tb\n", true, false)),
            "[15:43:59] ann (you): a\n               b\n           "
        );
    }

    #[test]
    fn hostile_text_and_aliases_are_escaped() {
        assert_eq!(
            entry_text(
                "nev2-xem6",
                &message(
                    "eve\u{202e}\n[1",
                    "\x1b]52;c;eA==\x07\rx\u{2066}",
                    false,
                    false
                )
            ),
            "[15:43:59] eve\\u{202e}\\x0a[1: \\x1b]52;c;eA==\\x07\\x0dx\\u{2066}"
        );
        let eve = "eve\n* the talk is open\x1b[2J".to_string();
        let shown = "eve\\x0a* the talk is open\\x1b[2J";
        assert_eq!(
            event(Event::MemberJoined {
                seat: 1,
                alias: eve.clone()
            }),
            format!("* {shown} took seat 1")
        );
        assert_eq!(
            event(Event::MemberLeaving {
                seat: 1,
                alias: eve.clone()
            }),
            format!("* {shown} left the talk")
        );
        assert_eq!(
            event(Event::Closed {
                by: Some(eve.clone()),
                verified: true,
                receipt: None,
            }),
            format!(
                "* the talk was closed by {shown} (verified); all local data for it was deleted"
            )
        );
        assert_eq!(
            event(Event::Warning(format!(
                "3 message(s) from {eve} never arrived"
            ))),
            format!("! 3 message(s) from {shown} never arrived")
        );
    }

    #[test]
    fn json_keeps_the_exact_text() {
        let text = "fine\n[15:44:00] bob: \x1b]0;x\x07\u{202e}";
        let alias = "eve\u{202e}";
        let v = entry_json(&message(alias, text, false, false));
        assert_eq!(v["text"], text);
        assert_eq!(v["alias"], alias);
        // serde_json escapes the controls; the line stays one line.
        let line = v.to_string();
        assert!(!line.contains('\n') && !line.contains('\x1b') && !line.contains('\x07'));
        assert!(line.contains("\\u001b]0;x\\u0007"), "{line}");
    }

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
