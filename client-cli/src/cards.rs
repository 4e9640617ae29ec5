//! Cards (protocol-spec.md §19): `card set|show|clear`, `reveal`, `exposure`,
//! `contacts`, `who`, and the names shown beside aliases to the viewer a card was
//! shown to. Their `--json` objects are in docs/json.md.
//!
//! Every card field another member sent is hostile text: in human output it passes
//! through `safe` like message text, one field per line.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Subcommand;
use nook_client::cards::{Contact, Exposure, Known, OwnCard, Who};
use nook_client::{Client, Event, HistoryEntry};
use nook_crypto::card::{Card, FIELD_NAMES, field_kind, field_name};
use serde_json::{Value, json};

use crate::error::CliError;
use crate::output::{Output, clock};
use crate::safe;

/// What the CLI says before a card goes out.
pub const IRREVOCABLE: &str = "a card once shown cannot be taken back: the member can copy it, and closing the talk erases it only from devices that play by the rules";

#[derive(Subcommand, Debug)]
pub enum CardsCommand {
    /// Your card (kept in this home, outside every talk): set, show, clear.
    Card {
        #[command(subcommand)]
        command: CardCommand,
    },
    /// Show your card to one member of a talk, to them alone, or exchange cards.
    ///
    /// Chosen fields only (--fields); --mutual offers an exchange instead, which the
    /// other accepts (--accept) or declines (--decline). A card cannot be taken back.
    #[command(after_help = "EXAMPLES:
  nook reveal nev2-xem6 ivory-ocelot --fields name,org
  nook reveal nev2-xem6 ivory-ocelot --mutual --keepable
  nook reveal nev2-xem6 quiet-otter --accept
  nook reveal nev2-xem6 quiet-otter --decline")]
    Reveal {
        #[arg(help = crate::TALK_HELP)]
        talk: String,
        /// The member's alias in the talk.
        alias: String,
        /// Which fields to show or offer, comma-separated: name, org, role, contact,
        /// note (default: every field of your card).
        #[arg(long, value_delimiter = ',', value_parser = field)]
        fields: Vec<u8>,
        /// Offer an exchange instead: the member sees only the field names, and
        /// neither card is shown before they accept.
        #[arg(long, conflicts_with_all = ["accept", "decline"])]
        mutual: bool,
        /// Accept the exchange the member offered: your card (the offered fields)
        /// goes to them, theirs comes back.
        #[arg(long, conflicts_with_all = ["decline", "fields"])]
        accept: bool,
        /// Decline the exchange the member offered: no card is shown either way.
        #[arg(long, conflicts_with_all = ["keepable", "fields"])]
        decline: bool,
        /// Let the member keep your card after the talk ends (`nook contacts`).
        #[arg(long)]
        keepable: bool,
        /// Do not ask for confirmation (a card cannot be taken back).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// What is known about you in a talk.
    ///
    /// Who saw which fields of your card, what the relay learns of the talk (with its
    /// values), what this home stores for it.
    Exposure {
        #[arg(help = crate::TALK_HELP)]
        talk: String,
    },
    /// The members of a talk as you know them, with the names they showed you.
    Who {
        #[arg(help = crate::TALK_HELP)]
        talk: String,
    },
    /// Cards kept after their talks (revealed as keepable); `forget ID` erases one.
    Contacts {
        #[command(subcommand)]
        command: Option<ContactsCommand>,
    },
}

#[derive(Subcommand, Debug)]
pub enum CardCommand {
    /// Set your card (replaces the one you had; the card key stays).
    #[command(after_help = "EXAMPLES:
  nook card set --name 'Dana Reyes' --org 'Acme GmbH' --role 'Head of Procurement' --contact dana@acme.example")]
    Set {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        contact: Option<String>,
        #[arg(long)]
        note: Option<String>,
    },
    /// Show your card.
    Show,
    /// Erase your card and its key.
    Clear,
}

#[derive(Subcommand, Debug)]
pub enum ContactsCommand {
    /// Erase a kept card (its id as `nook contacts` shows it, at least 4 digits).
    Forget { id: String },
}

fn field(s: &str) -> Result<u8, String> {
    field_kind(s.trim())
        .ok_or_else(|| format!("unknown field {s:?}: use {}", FIELD_NAMES.join(", ")))
}

/// The one-line label of a card shown beside an alias: name and organisation, or
/// its first field. Escaped.
pub fn label(card: &Card) -> String {
    let main: Vec<&str> = [0u8, 1].iter().filter_map(|k| card.get(*k)).collect();
    let text = if main.is_empty() {
        card.fields
            .first()
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    } else {
        main.join(", ")
    };
    safe::inline(&text).into_owned()
}

/// The labels of the cards shown to this viewer, by seat.
/// (Debug prints only how many: names are not for logs.)
#[derive(Default)]
pub struct Names(Vec<(u8, String, String)>);

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Names({})", self.0.len())
    }
}

impl Names {
    pub fn of(known: &[Known]) -> Names {
        Names(
            known
                .iter()
                .map(|k| (k.seat, label(&k.card), raw_label(&k.card)))
                .collect(),
        )
    }

    /// Takes in a card that arrives while following.
    pub fn learn(&mut self, event: &Event) {
        if let Event::CardRevealed { seat, fields, .. } = event {
            let card = Card {
                fields: fields.clone(),
            };
            self.0.retain(|(s, _, _)| s != seat);
            self.0.push((*seat, label(&card), raw_label(&card)));
        }
    }

    /// The label of `seat` as sent (for a screen that escapes it itself).
    pub fn raw(&self, seat: u8) -> Option<&str> {
        self.0
            .iter()
            .find(|(s, _, _)| *s == seat)
            .map(|(_, _, r)| r.as_str())
    }

    pub fn get(&self, seat: u8) -> Option<&str> {
        self.0
            .iter()
            .find(|(s, _, _)| *s == seat)
            .map(|(_, l, _)| l.as_str())
    }

    /// A message's text line with the name beside its author's alias.
    pub fn text(&self, e: &HistoryEntry, text: String) -> String {
        match &e.event {
            Event::Message {
                seat,
                alias,
                own: false,
                ..
            } => match self.get(*seat) {
                Some(name) => {
                    let alias = safe::inline(alias);
                    text.replacen(&format!("] {alias}: "), &format!("] {alias} · {name}: "), 1)
                }
                None => text,
            },
            _ => text,
        }
    }

    /// A message's JSON with `name`: the label shown to this viewer.
    pub fn json(&self, e: &HistoryEntry, mut v: Value) -> Value {
        if let Event::Message {
            seat, own: false, ..
        } = &e.event
            && let Some((_, _, raw)) = self.0.iter().find(|(s, _, _)| s == seat)
        {
            v["name"] = json!(raw);
        }
        v
    }
}

fn raw_label(card: &Card) -> String {
    let main: Vec<&str> = [0u8, 1].iter().filter_map(|k| card.get(*k)).collect();
    if main.is_empty() {
        card.fields
            .first()
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    } else {
        main.join(", ")
    }
}

/// A card's fields as a JSON object `{"name": …, "org": …}` (values exact).
pub fn fields_json(fields: &[(u8, String)]) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in fields {
        if let Some(n) = field_name(*k) {
            m.insert(n.to_owned(), json!(v));
        }
    }
    Value::Object(m)
}

/// A card's fields for people: one indented, escaped line each.
fn fields_text(fields: &[(u8, String)]) -> String {
    let mut out = String::new();
    for (k, v) in fields {
        let name = field_name(*k).unwrap_or("?");
        out.push_str(&format!("\n    {name}: {}", safe::inline(v)));
    }
    out
}

/// The history line of a card shown to us.
pub fn revealed_text(
    alias: &str,
    fields: &[(u8, String)],
    keepable: bool,
    contact: bool,
) -> String {
    let mut out = format!(
        "* {} showed you their card (only you see it){}{}:",
        safe::inline(alias),
        if keepable { "; you may keep it" } else { "" },
        if contact {
            "; the same person as one of your contacts"
        } else {
            ""
        }
    );
    out.push_str(&fields_text(fields));
    out
}

pub async fn run(client: &Client, cmd: CardsCommand, out: &Output) -> Result<ExitCode, CliError> {
    match cmd {
        CardsCommand::Card { command } => card(client, command, out).await?,
        CardsCommand::Reveal {
            talk,
            alias,
            fields,
            mutual,
            accept,
            decline,
            keepable,
            yes,
        } => {
            let fields = (!fields.is_empty()).then_some(fields);
            if !decline && !confirm(yes, out)? {
                return Err(CliError::Input(
                    "not revealed: nothing was sent (give --yes to reveal without asking)".into(),
                ));
            }
            let (sent, action) = if accept {
                (
                    client.accept_exchange(&talk, &alias, keepable).await?,
                    "accepted",
                )
            } else if decline {
                (client.decline_exchange(&talk, &alias).await?, "declined")
            } else if mutual {
                (
                    client
                        .offer_exchange(&talk, &alias, fields.as_deref(), keepable)
                        .await?,
                    "offered",
                )
            } else {
                (
                    client
                        .reveal(&talk, &alias, fields.as_deref(), keepable)
                        .await?,
                    "revealed",
                )
            };
            if out.json {
                println!("{}", reveal_json(&sent, action));
            } else {
                let who = safe::inline(&sent.alias);
                let fields = sent.fields.join(", ");
                match action {
                    "revealed" => println!("showed {who} your card ({fields}); only they see it"),
                    "accepted" => println!(
                        "accepted {who}'s exchange: they now see your card ({fields}); theirs comes when their device next runs"
                    ),
                    "declined" => println!("declined {who}'s exchange; no card was shown"),
                    _ => println!(
                        "offered {who} an exchange of cards ({fields}); nothing is shown before they accept"
                    ),
                }
            }
        }
        CardsCommand::Exposure { talk } => {
            let e = client.exposure(&talk).await?;
            if out.json {
                println!("{}", exposure_json(&e));
            } else {
                print!("{}", exposure_text(&e));
            }
        }
        CardsCommand::Who { talk } => {
            let (_, members) = client.who(&talk).await?;
            for w in &members {
                if out.json {
                    println!("{}", who_json(w));
                } else {
                    println!("{}", who_text(w));
                }
            }
        }
        CardsCommand::Contacts { command: None } => {
            let contacts = client.contacts().await?;
            if !out.json && contacts.is_empty() {
                println!("no contacts: a card is kept only when its owner revealed it as keepable");
            }
            for c in &contacts {
                if out.json {
                    println!("{}", contact_json(c));
                } else {
                    println!("{}", contact_text(c));
                }
            }
        }
        CardsCommand::Contacts {
            command: Some(ContactsCommand::Forget { id }),
        } => {
            let gone = client.forget_contact(&id).await?;
            for c in &gone {
                if out.json {
                    println!("{}", json!({"forgotten": c.id()}));
                } else {
                    println!("forgot contact {}", c.id());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `/reveal ALIAS` (all of the card's fields) or `/accept ALIAS` in `nook chat`.
pub async fn chat_reveal(
    client: &Client,
    talk: &str,
    alias: &str,
    accept: bool,
) -> Result<Vec<String>, String> {
    let sent = if accept {
        client.accept_exchange(talk, alias, false).await
    } else {
        client.reveal(talk, alias, None, false).await
    }
    .map_err(|e| e.to_string())?;
    Ok(vec![format!(
        "{} now sees your card ({}); only they do",
        safe::inline(&sent.alias),
        sent.fields.join(", ")
    )])
}

/// `/exposure` in `nook chat`.
pub async fn chat_exposure(client: &Client, talk: &str) -> Result<Vec<String>, String> {
    let e = client.exposure(talk).await.map_err(|e| e.to_string())?;
    Ok(exposure_text(&e).lines().map(str::to_owned).collect())
}

/// Says that a card cannot be taken back; on a terminal, asks. `--yes` or no terminal
/// (a script) goes on, having said it.
fn confirm(yes: bool, out: &Output) -> Result<bool, CliError> {
    if !out.json {
        eprintln!("note: {IRREVOCABLE}");
    }
    if yes || out.json || !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Ok(true);
    }
    eprint!("reveal? [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| CliError::Input(format!("cannot read the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

async fn card(client: &Client, cmd: CardCommand, out: &Output) -> Result<(), CliError> {
    match cmd {
        CardCommand::Set {
            name,
            org,
            role,
            contact,
            note,
        } => {
            let fields: Vec<(u8, String)> = [name, org, role, contact, note]
                .into_iter()
                .enumerate()
                .filter_map(|(i, v)| Some((u8::try_from(i).ok()?, v?)))
                .collect();
            if fields.is_empty() {
                return Err(CliError::Input(
                    "give at least one field: --name, --org, --role, --contact or --note".into(),
                ));
            }
            let own = client.set_card(Card { fields }).await?;
            print_card(&own, out);
        }
        CardCommand::Show => match client.card().await? {
            Some(own) => print_card(&own, out),
            None if out.json => println!("{}", card_json(None)),
            None => println!("no card: set one with `nook card set --name …`"),
        },
        CardCommand::Clear => {
            let had = client.clear_card().await?;
            if out.json {
                println!("{}", json!({"cleared": had}));
            } else if had {
                println!("your card and its key were erased from this home");
            } else {
                println!("there was no card");
            }
        }
    }
    Ok(())
}

/// The `card` object (`card show`, `card set`); `{"card": null}` without a card.
pub(crate) fn card_json(own: Option<&OwnCard>) -> Value {
    match own {
        Some(own) => json!({"card": fields_json(&own.card.fields), "key_id": own.key_id}),
        None => json!({"card": null}),
    }
}

fn print_card(own: &OwnCard, out: &Output) {
    if out.json {
        println!("{}", card_json(Some(own)));
        return;
    }
    println!(
        "your card (key {}):{}",
        own.key_id,
        fields_text(&own.card.fields)
    );
}

pub(crate) fn reveal_json(s: &nook_client::cards::CardSent, action: &str) -> Value {
    json!({"talk": s.talk, "seat": s.seat, "alias": s.alias, "action": action,
           "fields": s.fields, "keepable": s.keepable, "irrevocable": action != "declined"})
}

pub(crate) fn who_json(w: &Who) -> Value {
    json!({"seat": w.seat, "alias": w.alias, "own": w.own, "left": w.left,
           "card": w.card.as_ref().map(|k| fields_json(&k.card.fields)),
           "contact": w.card.as_ref().is_some_and(|k| k.contact),
           "saw": w.saw, "role": w.role})
}

fn who_text(w: &Who) -> String {
    let mut line = format!("seat {:<2}  {}", w.seat, safe::inline(&w.alias));
    if let Some(k) = &w.card {
        line.push_str(&format!(" · {}", label(&k.card)));
        if k.contact {
            line.push_str(" (a contact)");
        }
    }
    let mut notes = Vec::new();
    if w.own {
        notes.push("you".to_owned());
    }
    if w.role != "member" {
        notes.push(w.role.to_owned());
    }
    if w.left {
        notes.push("left".to_owned());
    }
    if !w.saw.is_empty() {
        notes.push(format!("saw your {}", w.saw.join(", ")));
    }
    if !notes.is_empty() {
        line.push_str(&format!("  ({})", notes.join("; ")));
    }
    line
}

pub(crate) fn contact_json(c: &Contact) -> Value {
    json!({"id": c.id(), "card": fields_json(&c.card.fields), "kept_at_ms": c.kept_at_ms})
}

fn contact_text(c: &Contact) -> String {
    format!(
        "{}  {}  (kept {}){}",
        c.id(),
        label(&c.card),
        clock(c.kept_at_ms),
        fields_text(&c.card.fields)
    )
}

pub(crate) fn exposure_json(e: &Exposure) -> Value {
    json!({
        "talk": e.talk,
        "alias": e.alias,
        "seat": e.seat,
        "shown": e.shown.iter().map(|(seat, alias, fields, keepable)| json!({
            "seat": seat, "alias": alias, "fields": fields, "keepable": keepable})).collect::<Vec<_>>(),
        "offered": e.offered.iter().map(|(seat, alias, fields)| json!({
            "seat": seat, "alias": alias, "fields": fields})).collect::<Vec<_>>(),
        "relay": {
            "seats": e.relay.seats, "quorum": e.relay.quorum, "ttl_secs": e.relay.ttl_secs,
            "close": e.relay.close, "expires_at": e.relay.expires_at,
            "members": e.relay.members, "seats_left": e.relay.seats_left,
            "chat_envelopes_sent": e.relay.chat_envelopes_sent,
            "card_envelopes_sent": e.relay.card_envelopes_sent,
        },
        "home": {
            "history_entries": e.home.history_entries, "cards_known": e.home.cards_known,
            "has_card": e.home.has_card, "contacts": e.home.contacts,
        },
    })
}

fn exposure_text(e: &Exposure) -> String {
    let mut o = format!(
        "what is known about you ({}, seat {}) in talk {}\n\nyour card:\n",
        safe::inline(&e.alias),
        e.seat,
        e.talk
    );
    if e.shown.is_empty() {
        o.push_str("  no member has seen any field of it\n");
    }
    for (seat, alias, fields, keepable) in &e.shown {
        o.push_str(&format!(
            "  {} (seat {seat}) saw: {}{}\n",
            safe::inline(alias),
            fields.join(", "),
            if *keepable { " (may keep it)" } else { "" }
        ));
    }
    for (seat, alias, fields) in &e.offered {
        o.push_str(&format!(
            "  offered to {} (seat {seat}), not answered: {} (names only, nothing shown)\n",
            safe::inline(alias),
            fields.join(", ")
        ));
    }
    o.push_str("  every other member knows you only by your alias; a card once shown cannot be taken back\n");
    let r = &e.relay;
    o.push_str(&format!(
        "\nthe relay learns (protocol-spec §14):\n  the talk's parameters: {} seats, quorum {}, ttl {} s, closed by {}, expires at unix {}\n  members now: {}; seats left: {}\n  your relay-auth key for this talk (fresh, used nowhere else), your seat, when and from which address you connect\n  {} chat envelopes from you, padded to 512 B … 128 KiB; {} of them card messages (2048 B, like a long message: the relay cannot tell them apart)\n  not: your alias, your card, your card key, any text, or that you are the same person as in another talk\n",
        r.seats,
        r.quorum,
        r.ttl_secs,
        r.close,
        r.expires_at,
        r.members.map_or("unknown".into(), |m| m.to_string()),
        r.seats_left,
        r.chat_envelopes_sent,
        r.card_envelopes_sent,
    ));
    let h = &e.home;
    o.push_str(&format!(
        "\nthis home stores for the talk (sealed, erased when it ends): its keys and state, {} history entries, {} card(s) shown to you\noutside every talk: {}, {} contact(s)\n",
        h.history_entries,
        h.cards_known,
        if h.has_card { "your card and card key" } else { "no card" },
        h.contacts
    ));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_card_text_is_escaped_and_stays_on_its_own_lines() {
        let fields = vec![
            (0, "Dana\u{1b}[2J\u{202e}".to_owned()),
            (
                1,
                "Acme\n* forged: you showed everyone your card".to_owned(),
            ),
        ];
        let text = revealed_text("ivory\nocelot", &fields, false, false);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}'),
            "{text}"
        );
        // One header line, then exactly one indented line per field.
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("* ivory\\x0aocelot"), "{text}");
        assert!(lines[1..].iter().all(|l| l.starts_with("    ")), "{text}");
        let card = Card { fields };
        assert!(!label(&card).contains('\n'));
        assert!(!label(&card).contains('\u{1b}'));
    }
}
