//! The board commands (protocol-spec.md §17): `post`, `unpost`, `browse`, `ask`, `asks`,
//! `requests`, `admit`, `decline`. Their `--json` objects are in docs/json.md.
//!
//! Titles, about texts, tags, aliases and notes come from strangers: in human output
//! they pass through `safe` like everything else another person chose.

use std::process::ExitCode;

use clap::Subcommand;
use nook_client::board::SeatRequestView;
use nook_client::{AskPhase, AskStatus, Client, FoundListing};
use serde_json::{Value, json};

use crate::error::CliError;
use crate::output::{Output, closes_in};
use crate::safe;

#[derive(Subcommand, Debug)]
pub enum BoardCommand {
    /// Publish an open talk on a board named by a phrase (owner only); seekers find
    /// it with `nook browse` and ask for a seat.
    #[command(after_help = "EXAMPLES:
  nook post nev2-xem6 --board 'procurement berlin' --title 'Tender review' --about 'Two seats' --tags berlin,tenders --until 24h")]
    Post {
        #[arg(help = crate::TALK_HELP)]
        talk: String,
        /// The board's phrase, as the community shares it (repeat for several boards).
        #[arg(long = "board", required = true, value_name = "PHRASE")]
        boards: Vec<String>,
        /// A title, 1 to 120 bytes.
        #[arg(long)]
        title: String,
        /// What the talk is about, at most 1000 bytes.
        #[arg(long, default_value = "")]
        about: String,
        /// Tags, comma-separated (at most 8, each 1 to 32 bytes).
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// Withdraw the listing after this long (default: when the talk ends), e.g. 24h.
        #[arg(long, value_parser = crate::duration::parse)]
        until: Option<u32>,
        /// Keep the listing after the talk opens, until it is full.
        #[arg(long)]
        keep_open: bool,
    },
    /// Withdraw every board listing of a talk (owner only).
    Unpost {
        #[arg(help = crate::TALK_HELP)]
        talk: String,
    },
    /// Show the open talks on a board: title, about, tags, seats, when it closes.
    #[command(after_help = "EXAMPLES:
  nook browse --relay 'nook://3q2…@relay.example.org:4433' --board 'procurement berlin' --tag berlin")]
    Browse {
        /// The relay's address, nook://<fingerprint>@host:port.
        #[arg(long, env = "NOOK_RELAY")]
        relay: String,
        /// The board's phrase.
        #[arg(long = "board", value_name = "PHRASE")]
        board: String,
        /// Only listings with this tag.
        #[arg(long)]
        tag: Option<String>,
    },
    /// Ask for a seat on a listing (its handle from `nook browse`) under a fresh
    /// pseudonym; asking again is the same ask. `nook asks` takes the answer.
    Ask {
        /// The listing's handle, nook-listing:…, as `nook browse` prints it.
        listing: String,
        /// Why you, for the owner (at most 400 bytes).
        #[arg(long, default_value = "")]
        note: String,
        /// Your alias in the talk, 1 to 64 bytes (default: a random one).
        #[arg(long, value_parser = crate::alias)]
        alias: Option<String>,
    },
    /// Show your pending asks; an admitted one takes its seat now, a declined one is
    /// reported once.
    Asks,
    /// Show the seat requests waiting on a talk's listings (owner only).
    Requests {
        #[arg(help = crate::TALK_HELP)]
        talk: String,
    },
    /// Admit a request: hand it one of the talk's unused invites (owner only).
    Admit {
        #[arg(help = crate::TALK_HELP)]
        talk: String,
        /// The request's id, or a unique prefix of it, from `nook requests`.
        request: String,
    },
    /// Decline a request (owner only); the seeker is told so.
    Decline {
        #[arg(help = crate::TALK_HELP)]
        talk: String,
        /// The request's id, or a unique prefix of it, from `nook requests`.
        request: String,
    },
}

pub async fn run(client: &Client, cmd: BoardCommand, out: &Output) -> Result<ExitCode, CliError> {
    match cmd {
        BoardCommand::Post {
            talk,
            boards,
            title,
            about,
            tags,
            until,
            keep_open,
        } => {
            let opts = nook_client::board::PostOptions {
                title,
                about,
                tags,
                until: until.map(u64::from),
                keep_open,
            };
            let posted = client.post(&talk, &boards, &opts).await?;
            if out.json {
                println!("{}", post_json(&posted));
            } else {
                println!(
                    "{}: posted on {} board(s); `nook requests {}` shows who asks",
                    posted.talk,
                    posted.listings.len(),
                    posted.talk
                );
            }
        }
        BoardCommand::Unpost { talk } => {
            let n = client.unpost(&talk).await?;
            if out.json {
                println!("{}", unpost_json(&talk, n));
            } else {
                println!("withdrew {n} listing(s)");
            }
        }
        BoardCommand::Browse { relay, board, tag } => {
            let found = client.browse(&relay, &board, tag.as_deref()).await?;
            let now = nook_client::now_ms() / 1000;
            for l in &found {
                if out.json {
                    println!("{}", listing_json(l));
                } else {
                    print_listing(l, now);
                }
            }
            if !out.json && found.is_empty() {
                eprintln!("no open talk on this board (a wrong phrase looks the same)");
            }
        }
        BoardCommand::Ask {
            listing,
            note,
            alias,
        } => {
            let ask = client.ask(&listing, &note, alias.as_deref()).await?;
            print_ask(out, &ask);
        }
        BoardCommand::Asks => {
            for ask in client.asks().await? {
                print_ask(out, &ask);
            }
        }
        BoardCommand::Requests { talk } => {
            let r = client.requests(&talk).await?;
            for item in &r.items {
                if out.json {
                    println!("{}", request_json(&r.talk, item));
                } else {
                    println!(
                        "{}  {}  {}",
                        item.request,
                        safe::inline(&item.alias),
                        safe::inline(&item.note)
                    );
                }
            }
            if let Some(w) = unopened_warning(&r) {
                out.warning(crate::error::Kind::BadInput, &w);
            }
        }
        BoardCommand::Admit { talk, request } => answer(client, out, &talk, &request, true).await?,
        BoardCommand::Decline { talk, request } => {
            answer(client, out, &talk, &request, false).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn answer(
    client: &Client,
    out: &Output,
    talk: &str,
    request: &str,
    admit: bool,
) -> Result<(), CliError> {
    let a = client.answer(talk, request, admit).await?;
    if out.json {
        println!("{}", answer_json(&a));
    } else {
        let word = if a.admitted { "admitted" } else { "declined" };
        println!("{word} request {}", a.request);
    }
    Ok(())
}

/// `post --json`.
pub fn post_json(p: &nook_client::Posted) -> Value {
    json!({"talk": p.talk, "listings": p.listings, "until": p.closes_at})
}

/// `unpost --json`.
pub fn unpost_json(talk: &str, withdrawn: usize) -> Value {
    json!({"talk": talk, "withdrawn": withdrawn})
}

/// `admit --json` and `decline --json`.
pub fn answer_json(a: &nook_client::board::Answered) -> Value {
    let word = if a.admitted { "admitted" } else { "declined" };
    json!({"talk": a.talk, "request": a.request, "answer": word})
}

/// `requests`: the warning that counts the requests not shown, if any.
pub fn unopened_warning(r: &nook_client::Requests) -> Option<String> {
    (r.forged + r.replayed > 0).then(|| {
        format!(
            "{} request(s) did not open (forged or altered) and {} repeated an earlier one; they are not shown",
            r.forged, r.replayed
        )
    })
}

fn print_listing(l: &FoundListing, now: u64) {
    let state = if l.open { "open" } else { "pending" };
    println!(
        "{}  [{}/{} seats, quorum {}, {state}, closes {}]",
        safe::inline(&l.title),
        l.members,
        l.seats,
        l.quorum,
        closes_in(l.closes_at, now)
    );
    if !l.about.is_empty() {
        for line in safe::body(&l.about) {
            println!("  {line}");
        }
    }
    if !l.tags.is_empty() {
        let tags: Vec<String> = l
            .tags
            .iter()
            .map(|t| safe::inline(t).into_owned())
            .collect();
        println!("  tags: {}", tags.join(", "));
    }
    println!("  nook ask {}", l.handle);
}

/// One listing of `browse --json`.
pub fn listing_json(l: &FoundListing) -> Value {
    json!({
        "listing": l.handle,
        "title": l.title,
        "about": l.about,
        "tags": l.tags,
        "members": l.members,
        "seats": l.seats,
        "quorum": l.quorum,
        "open": l.open,
        "closes_at": l.closes_at,
    })
}

/// One request of `requests --json`.
pub fn request_json(talk: &str, r: &SeatRequestView) -> Value {
    json!({
        "talk": talk,
        "request": r.request,
        "alias": r.alias,
        "note": r.note,
        "asked_at": r.asked_at,
    })
}

/// One ask of `ask --json` and `asks --json`.
pub fn ask_json(a: &AskStatus) -> Value {
    let (state, talk) = match &a.phase {
        AskPhase::Waiting => ("waiting", None),
        AskPhase::Joined { talk } => ("joined", Some(talk.clone())),
        AskPhase::Declined => ("declined", None),
        AskPhase::Gone => ("gone", None),
    };
    json!({"request": a.request, "alias": a.alias, "state": state, "talk": talk})
}

fn print_ask(out: &Output, a: &AskStatus) {
    if out.json {
        println!("{}", ask_json(a));
    } else {
        println!("{}", ask_text(a));
    }
}

/// An ask that another command (`list`, `read`, `wait`) took the answer of: a notice on
/// stderr, so that command's own output stays what its contract says.
pub fn report_settled(out: &Output, a: &AskStatus) {
    if out.json {
        let mut v = ask_json(a);
        v["type"] = json!("ask_answer");
        eprintln!("{v}");
    } else {
        eprintln!("{}", ask_text(a));
    }
}

fn ask_text(a: &AskStatus) -> String {
    let short = a.request.get(..8).unwrap_or(&a.request);
    // The alias is this device's own choice, but it came back through the store: shown
    // safe all the same.
    let alias = safe::inline(&a.alias);
    match &a.phase {
        AskPhase::Waiting => {
            format!("ask {short} as {alias}: waiting for the owner (`nook asks` checks again)")
        }
        AskPhase::Joined { talk } => format!(
            "ask {short}: admitted; you took a seat in {talk} as {alias} (`nook read {talk} --wait-open`)"
        ),
        AskPhase::Declined => format!("ask {short}: declined by the owner"),
        AskPhase::Gone => format!("ask {short}: the listing or its talk is gone"),
    }
}
