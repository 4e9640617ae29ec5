//! `nook`: private, ephemeral, end-to-end encrypted talks from the command line.
//!
//! Human text by default; `--json` prints one JSON object per line for scripts.
//! Errors go to stderr with a hint, and the exit code says what kind of error it was
//! (see `EXIT CODES` in `nook --help`). `nook` never prompts.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use nook_client::roles::Pattern;
use nook_client::{AskPhase, Client, ClientError, Event, TalkOptions, Until, Update};
use nook_proto::ClosePolicy;
use nook_proto::limits::MAX_SEATS;

mod boards;
mod cards;
mod chat;
mod config;
mod duration;
mod error;
mod files;
mod manual;
mod notice;
mod ops;
mod output;
mod qr;
mod receipt;
mod rpc;
mod safe;
mod schedule;
mod token;
mod wait;

use error::{CliError, EXIT_CODES, Kind};
use output::Output;

/// What `<TALK>` is, for every command that takes one.
const TALK_HELP: &str = "The talk's name, e.g. nev2-xem6 — the same for every member, as `nook new`, \
     `nook join` and `nook list` show it — or any unique prefix of it (case and dashes do not matter)";
/// What `<INVITE>` is.
const INVITE_HELP: &str = "An invite, nook://…/…#…: one of the lines `nook new` printed for \
     the talk's owner (`nook invites TALK` shows the unused ones); each works once. `-` reads it \
     from stdin; pasted inside <…> or quotes, or broken across lines, it still reads";
/// What `<TEXT>` is.
const TEXT_HELP: &str = "The message, or `-` to read it from stdin";

/// `--version`: the program's version and the protocol version it speaks, which is
/// what decides whether it works with a given relay.
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (protocol {})",
        env!("CARGO_PKG_VERSION"),
        nook_proto::limits::PROTOCOL_VERSION
    )
});

/// nook: private, ephemeral talks. Each talk gets a fresh pseudonym; when it is
/// closed, the relay and every member delete everything.
#[derive(Parser, Debug)]
#[command(name = "nook", version = VERSION.as_str(), about, after_help = EXIT_CODES)]
struct Cli {
    /// Home folder for keys and history (default: $XDG_DATA_HOME/nook or ~/.local/share/nook).
    #[arg(long, env = "NOOK_HOME", global = true)]
    home: Option<PathBuf>,
    /// Print one JSON object per line instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Wait this long for a relay to answer (1s to 1h), then exit 4.
    #[arg(long, env = "NOOK_CONNECT_TIMEOUT", global = true, default_value = "4s", value_name = "WAIT", value_parser = duration::parse_wait)]
    connect_timeout: std::time::Duration,
    /// How long `read --follow`, `chat` and `nook rpc` hold a message back until the
    /// messages its author had seen arrive (protocol-spec §13.3). Rarely worth changing;
    /// documented in README, hidden from help.
    #[arg(long, env = "NOOK_CAUSAL_WAIT", global = true, hide = true, default_value = "5s", value_name = "WAIT", value_parser = duration::parse_wait)]
    causal_wait: std::time::Duration,
    /// Route through this forwarding relay, nook://<fingerprint>@host:port, so the
    /// talk's relay never learns your address (private routing). `new` and `join` keep
    /// it as the talk's route; other commands take it for this run instead of the
    /// talk's. New talks default to NOOK_VIA, else `via` in config.toml.
    #[arg(long, global = true, value_name = "RELAY")]
    via: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CloseArg {
    Owner,
    Any,
}

/// `nook new --pattern`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum PatternArg {
    // Everyone reads and writes to all.
    Plain,
    // You ask; every other seat is an offerer (protocol-spec §20.2).
    Market,
    // You and --speakers seats speak; the others listen (protocol-spec §20.3).
    Panel,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a talk and print one invite per free seat.
    #[command(after_help = examples::NEW)]
    New {
        /// The relay's address, nook://<fingerprint>@host:port (printed by nook-relay).
        /// Default: NOOK_RELAY, else `relay` in $XDG_CONFIG_HOME/nook/config.toml
        /// (~/.config/nook/config.toml).
        #[arg(long)]
        relay: Option<String>,
        /// Members including you (2-64).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=i64::from(MAX_SEATS)))]
        seats: u8,
        /// Members needed before the talk opens, you included: 1 to --seats (default: all seats).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_SEATS)))]
        quorum: Option<u8>,
        /// How long the talk may live, 60s to 30d: e.g. 90s, 45m, 1h30m, 24h, 2d12h, 7d
        /// (default: 24h; with --opens-at, until its window ends).
        #[arg(long, value_parser = duration::parse)]
        ttl: Option<u32>,
        /// Schedule the talk around an event: seats can be taken before, it opens at
        /// TIME once quorum is met (not before), and the relay closes it, erasing
        /// everything, when --window ends. TIME is RFC 3339 (2026-12-24T18:00:00+01:00)
        /// or from now (+2h, +90s).
        #[arg(long, value_name = "TIME")]
        opens_at: Option<String>,
        /// How long a scheduled talk stays open from TIME, 1s to 30d (default: 3h).
        /// Invites are refused once it ends.
        #[arg(long, value_name = "DURATION", requires = "opens_at", value_parser = schedule::parse_window)]
        window: Option<u32>,
        /// Your alias in this talk, 1 to 64 bytes (default: a random one such as quiet-otter).
        #[arg(long, value_parser = alias)]
        alias: Option<String>,
        /// Who may close the talk.
        #[arg(long, value_enum, default_value = "owner")]
        close: CloseArg,
        /// A file holding the relay's creation token, for a relay whose operator lets
        /// only holders of it create talks (default: the token's text in
        /// $NOOK_CREATE_TOKEN, if set). Invitees need none.
        #[arg(long, value_name = "PATH")]
        create_token_file: Option<PathBuf>,
        /// Also draw each invite as a QR code, to scan from this screen.
        #[arg(long)]
        qr: bool,
        /// The talk's pattern: plain; market (every other seat is an offerer who writes
        /// to you alone and never sees another offerer's alias or messages); or panel
        /// (you and --speakers seats write to all, the others read and never see each
        /// other).
        #[arg(long, value_enum, default_value = "plain")]
        pattern: PatternArg,
        /// In a market, how many messages an offerer may send until you write to it
        /// (1-100, default 1).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=100))]
        offer_limit: Option<u8>,
        /// In a panel, how many seats besides yours speak (the first invites; default
        /// 1); the rest listen.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=63))]
        speakers: Option<u8>,
    },
    /// Take a seat with an invite.
    #[command(after_help = examples::JOIN)]
    Join {
        #[arg(help = INVITE_HELP)]
        invite: String,
        /// Your alias in this talk, 1 to 64 bytes (default: a random one).
        #[arg(long, value_parser = alias)]
        alias: Option<String>,
    },
    /// Show every talk: state, alias, unread messages.
    #[command(after_help = examples::LIST)]
    List,
    /// Send a message (TEXT, or `-` to read it from stdin) or a file (--file). Exits 0 once the relay stored it.
    #[command(after_help = examples::SEND)]
    Send {
        #[arg(help = TALK_HELP)]
        talk: String,
        #[arg(help = TEXT_HELP, required_unless_present = "file")]
        text: Option<String>,
        /// Send a file instead of a text (`-`: stdin, with --name). A send cut off
        /// goes on where it stopped when run again with the same file.
        #[arg(long, value_name = "PATH", conflicts_with = "text")]
        file: Option<std::path::PathBuf>,
        /// The name to offer a file from stdin under.
        #[arg(long, requires = "file")]
        name: Option<String>,
        /// Largest file to send, in bytes.
        #[arg(long, value_name = "BYTES", default_value_t = nook_client::files::DEFAULT_MAX_FILE)]
        max_file: u64,
        /// In a market you own: write to the offerer called ALIAS alone (without it,
        /// your message goes to every offerer, each on its own).
        #[arg(long, value_name = "ALIAS", conflicts_with = "file")]
        to: Option<String>,
    },
    /// Save a file offered in a talk into a folder (its name made safe; never
    /// written outside the folder).
    Save {
        #[arg(help = TALK_HELP)]
        talk: String,
        /// The file: a prefix of its id (as `read` shows it) or its exact name.
        file: String,
        /// The folder to write it into (default: the current folder).
        #[arg(long, value_name = "DIR")]
        to: Option<std::path::PathBuf>,
        /// Replace a file of the same name.
        #[arg(long)]
        force: bool,
    },
    /// Fetch and show a talk's messages and events.
    #[command(after_help = examples::READ)]
    Read {
        #[arg(help = TALK_HELP)]
        talk: String,
        /// Only what `read` has not shown before.
        #[arg(long)]
        new: bool,
        /// Keep showing new messages until the talk closes.
        #[arg(long)]
        follow: bool,
        /// Wait until the talk is open (quorum reached), then exit.
        #[arg(long)]
        wait_open: bool,
    },
    /// Wait until something happens in a talk, print it, and exit 0 (exit 8 on
    /// timeout). Only what happens from now on counts; `--for open` returns at once if
    /// the talk is open.
    #[command(after_help = examples::WAIT)]
    Wait {
        #[arg(help = TALK_HELP)]
        talk: String,
        /// What to wait for.
        #[arg(long = "for", value_enum)]
        what: wait::WaitFor,
        /// Give up after this long (exit 8, kind "timeout"), e.g. 30s or 5m; default: no limit.
        #[arg(long, value_parser = duration::parse_wait)]
        timeout: Option<std::time::Duration>,
    },
    /// Show a talk's seats: seat, alias, yours, the owner's, left, when it joined.
    #[command(after_help = examples::MEMBERS)]
    Members {
        #[arg(help = TALK_HELP)]
        talk: String,
    },
    /// Show the owner's unused invites for a talk.
    #[command(after_help = examples::INVITES)]
    Invites {
        #[arg(help = TALK_HELP)]
        talk: String,
        /// Also draw each unused invite as a QR code, to scan from this screen.
        #[arg(long)]
        qr: bool,
    },
    /// Give up your seat and delete the talk from this device.
    #[command(after_help = examples::LEAVE)]
    Leave {
        #[arg(help = TALK_HELP)]
        talk: String,
    },
    /// In a market you own: take the offerer called ALIAS into the group. It gets the
    /// group's key and your chain, and meets the other members (it learns their
    /// aliases, they learn its).
    Promote {
        #[arg(help = TALK_HELP)]
        talk: String,
        /// The offerer's alias (`nook who TALK`).
        alias: String,
    },
    /// In a market you own: stop reading the offerer called ALIAS and erase its keys
    /// here. The relay still counts its seat: it is not evicted.
    Remove {
        #[arg(help = TALK_HELP)]
        talk: String,
        /// The offerer's alias (`nook who TALK`).
        alias: String,
    },
    /// Close the talk for everyone; prints the relay's signed deletion receipt.
    #[command(after_help = examples::CLOSE)]
    Close {
        #[arg(help = TALK_HELP)]
        talk: String,
    },
    /// Full-screen chat in the terminal.
    #[command(after_help = examples::CHAT)]
    Chat {
        #[arg(help = TALK_HELP)]
        talk: String,
    },
    /// Serve every command as JSON-RPC 2.0 on stdin/stdout or a Unix socket, for bots.
    ///
    /// One JSON object per line both ways; events of subscribed talks come as
    /// notifications. One process keeps its relay connections and commits sends in
    /// batches: the way to send many messages. Ends when stdin ends (after answering
    /// what is in progress). The protocol: docs/json.md, "nook rpc".
    #[command(after_help = examples::RPC)]
    Rpc {
        /// Listen on this Unix socket (created 0600, removed on exit) instead of
        /// stdin/stdout; several clients may connect.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Check a deletion receipt that `nook close` or `nook read` printed.
    Receipt {
        #[command(subcommand)]
        command: ReceiptCommand,
    },
    /// Print a shell completion script on stdout.
    #[command(after_help = examples::COMPLETIONS)]
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (nook.1 and one per command) into a folder.
    #[command(after_help = examples::MAN)]
    Man {
        /// The folder to write into (created if missing), e.g. /usr/local/share/man/man1.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Boards: post, unpost, browse, ask, asks, requests, admit, decline.
    #[command(flatten)]
    Board(boards::BoardCommand),
    /// Cards: card, reveal, exposure, who, contacts.
    #[command(flatten)]
    Cards(cards::CardsCommand),
}

#[derive(Subcommand, Debug)]
enum ReceiptCommand {
    /// Check a receipt offline: its relay key must be the one its relay address pins,
    /// and the relay's signature must verify. Exits 0 if valid, 7 if not.
    Verify {
        /// A file holding the receipt (text as printed, or the --json output), or `-`
        /// for stdin.
        file: String,
    },
}

/// One example per command, shown below its `--help`. Talk names and the relay address
/// are made up.
mod examples {
    pub const NEW: &str = "EXAMPLES:
  nook new --relay 'nook://3q2…@relay.example.org:4433' --seats 3 --ttl 1h30m
  nook new --seats 5 --quorum 3 --alias ann --close any    # relay from NOOK_RELAY or config.toml
  nook new --qr    # invites as QR codes, to scan with a phone
  nook new --seats 4 --opens-at 2026-12-24T14:00:00+01:00 --window 3h    # around an event";
    pub const JOIN: &str = "EXAMPLES:
  nook join 'nook://3q2…@relay.example.org:4433/…#…' --alias bob
  nook join - < invite.txt    # the invite from a file or a pipe, not the command line";
    pub const LIST: &str = "EXAMPLES:
  nook list
  nook --json list";
    pub const SEND: &str = "EXAMPLES:
  nook send nev2-xem6 'see you at eight'
  echo 'from a script' | nook send nev2-xem6 -";
    pub const READ: &str = "EXAMPLES:
  nook read nev2-xem6 --new
  nook read nev2-xem6 --wait-open
  nook --json read nev2-xem6 --follow";
    pub const WAIT: &str = "EXAMPLES:
  nook wait nev2-xem6 --for open --timeout 10m
  nook --json wait nev2-xem6 --for message && echo 'someone wrote'";
    pub const MEMBERS: &str = "EXAMPLES:
  nook members nev2-xem6
  nook --json members nev2-xem6";
    pub const INVITES: &str = "EXAMPLES:
  nook invites nev2-xem6    # on the device that created the talk
  nook invites nev2-xem6 --qr";
    pub const LEAVE: &str = "EXAMPLES:
  nook leave nev2-xem6";
    pub const CLOSE: &str = "EXAMPLES:
  nook close nev2-xem6";
    pub const CHAT: &str = "EXAMPLES:
  nook chat nev2-xem6";
    pub const COMPLETIONS: &str = "EXAMPLES:
  nook completions bash > ~/.local/share/bash-completion/completions/nook
  nook completions zsh > \"${fpath[1]}/_nook\"
  nook completions fish > ~/.config/fish/completions/nook.fish";
    pub const MAN: &str = "EXAMPLES:
  nook man --out ~/.local/share/man/man1 && man nook-new";
    pub const RPC: &str = r#"EXAMPLES:
  echo '{"jsonrpc":"2.0","id":1,"method":"list"}' | nook rpc
  nook rpc --socket "$XDG_RUNTIME_DIR/nook.sock""#;
}

/// `--alias`: checked here, so a bad alias is a command-line error like any other
/// and nothing is created or sent first. The rule is the client library's.
fn alias(text: &str) -> Result<String, String> {
    if nook_client::member::valid_alias(text) {
        Ok(text.to_string())
    } else {
        Err("an alias is 1 to 64 bytes without control characters".into())
    }
}

impl Cli {
    /// The rules between arguments that clap's parsers cannot see one at a time; the
    /// relay enforces the same (nook_proto's `Talk::create`: quorum 1..=seats).
    fn check(&self) -> Result<(), clap::Error> {
        if self.json
            && let (name, Command::New { qr: true, .. } | Command::Invites { qr: true, .. }) =
                (self.command_name(), &self.command)
        {
            return Err(Cli::usage(
                name,
                clap::error::ErrorKind::ArgumentConflict,
                "--qr draws for a person and cannot be used with --json; the invites are in \
                 the JSON output as text"
                    .into(),
            ));
        }
        if let Command::New {
            seats,
            quorum: Some(quorum),
            ..
        } = self.command
            && quorum > seats
        {
            let message = format!(
                "invalid value '{quorum}' for '--quorum <QUORUM>': the quorum can be at most \
                 the number of seats ({seats}); raise --seats or lower --quorum"
            );
            return Err(Cli::usage(
                "new",
                clap::error::ErrorKind::ValueValidation,
                message,
            ));
        }
        Ok(())
    }

    fn command_name(&self) -> &'static str {
        match self.command {
            Command::New { .. } => "new",
            Command::Invites { .. } => "invites",
            _ => "",
        }
    }

    /// A usage error of subcommand `name`, shown as clap shows its own.
    fn usage(name: &str, kind: clap::error::ErrorKind, message: String) -> clap::Error {
        let mut cmd = Cli::command();
        cmd.build();
        match cmd.find_subcommand_mut(name) {
            Some(sub) => sub.error(kind, message),
            None => cmd.error(kind, message),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM; never, if neither can be listened for.
async fn stop_requested() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

fn default_home() -> Result<PathBuf, CliError> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("nook"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/nook")),
        None => Err(CliError::Input(
            "no HOME set: pass --home DIR or set NOOK_HOME".into(),
        )),
    }
}

fn main() -> ExitCode {
    // Everything nook writes is private to this user: folders 0700, files 0600, also
    // for the files sled creates itself.
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    let cli = match Cli::try_parse().and_then(|cli| cli.check().map(|()| cli)) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => report(&e, json),
    }
}

/// A command line clap refused: its own text (help and version go to stdout as
/// usual), or, when `--json` is on the command line, the JSON error object.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let is_output = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
    // The command line did not parse, so `--json` is looked for by hand: any argument
    // before a `--` that ends the options, as clap reads it.
    let json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    if is_output || !json {
        let _ = e.print();
        return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(Kind::Usage.exit_code()));
    }
    report(&CliError::Usage(e), true)
}

/// Prints a failure on stderr, as text or as one JSON object, and gives its exit code.
fn report(e: &CliError, json: bool) -> ExitCode {
    let kind = e.kind();
    if json {
        eprintln!("{}", output::error_json(e));
    } else {
        eprintln!("error: {e}");
    }
    ExitCode::from(kind.exit_code())
}

/// `nook new` with no relay from the command line, NOOK_RELAY or config.toml.
fn no_relay() -> CliError {
    CliError::Usage(Cli::usage(
        "new",
        clap::error::ErrorKind::MissingRequiredArgument,
        "no relay given: pass --relay nook://…, set NOOK_RELAY, or put \
         relay = \"nook://…\" in $XDG_CONFIG_HOME/nook/config.toml"
            .into(),
    ))
}

async fn run(mut cli: Cli) -> Result<ExitCode, CliError> {
    // A missing relay is the command line's fault: said before a home is needed.
    if let Command::New { relay, .. } = &mut cli.command
        && relay.is_none()
    {
        *relay = Some(config::default_relay()?.ok_or_else(no_relay)?);
    }
    // Checking a receipt, completions and man pages need no home: nothing is created
    // for them.
    match &cli.command {
        Command::Receipt {
            command: ReceiptCommand::Verify { file },
        } => return receipt::verify(file, &Output { json: cli.json }),
        Command::Completions { shell } => {
            manual::completions(Cli::command(), *shell);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man { out } => {
            let written = manual::man_pages(Cli::command(), out).map_err(|e| {
                CliError::Input(format!("cannot write man pages to {}: {e}", out.display()))
            })?;
            for path in written {
                println!("{}", path.display());
            }
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let home = match cli.home {
        Some(h) => h,
        None => default_home()?,
    };
    let mut client = Client::new(&home)?;
    client.set_connect_timeout(cli.connect_timeout);
    client.set_causal_wait(cli.causal_wait);
    // A home-wide route applies to talks made now, never to existing ones.
    let via = match (cli.via, &cli.command) {
        (Some(v), _) => Some(v),
        (None, Command::New { .. } | Command::Join { .. }) => config::default_via()?,
        (None, _) => None,
    };
    if let Some(via) = via {
        let via = via
            .trim()
            .parse()
            .map_err(|e| CliError::from(ClientError::Address(e)))?;
        client.set_via(Some(via));
    }
    // The chat screen shows its own link state; a line on stderr would tear it.
    let quiet = cli.json || matches!(cli.command, Command::Chat { .. } | Command::Rpc { .. });
    let notice = notice::connecting(client.dialer(), quiet);
    let result = dispatch(&client, cli.command, Output { json: cli.json }).await;
    if let Some(task) = notice {
        task.abort();
    }
    // Close the store before exiting, so its last writes are flushed by sled now.
    client.close_store();
    // A connection dropped on an error path has said goodbye but not yet sent it.
    nook_client::transport::let_closes_go_out().await;
    result
}

async fn dispatch(client: &Client, command: Command, out: Output) -> Result<ExitCode, CliError> {
    match command {
        Command::New {
            relay,
            seats,
            quorum,
            ttl,
            opens_at,
            window,
            alias,
            close,
            create_token_file,
            qr,
            pattern,
            offer_limit,
            speakers,
        } => {
            let conflict = |m: &str| -> CliError {
                Cli::usage("new", clap::error::ErrorKind::ArgumentConflict, m.into()).into()
            };
            let pattern = match (pattern, offer_limit, speakers) {
                (PatternArg::Market, limit, None) => Pattern::Market {
                    offer_limit: limit.unwrap_or(1),
                },
                (PatternArg::Panel, None, n) => Pattern::Panel {
                    speakers: n.unwrap_or(1),
                },
                (PatternArg::Plain, None, None) => Pattern::Plain,
                (_, Some(_), _) => {
                    return Err(conflict(
                        "--offer-limit is for market talks: use it with --pattern market",
                    ));
                }
                (_, _, Some(_)) => {
                    return Err(conflict(
                        "--speakers is for panels: use it with --pattern panel",
                    ));
                }
            };
            if let Pattern::Panel { speakers } = pattern
                && speakers + 1 >= seats
            {
                return Err(Cli::usage(
                    "new",
                    clap::error::ErrorKind::ValueValidation,
                    format!(
                        "a panel of {seats} seats has at most {} speakers besides you, so \
                         that one seat listens; raise --seats or lower --speakers",
                        seats.saturating_sub(2)
                    ),
                )
                .into());
            }
            let (ttl, schedule) = schedule_of(ttl, opens_at.as_deref(), window)
                .map_err(|e| Cli::usage("new", clap::error::ErrorKind::ValueValidation, e))?;
            // Resolved in `run`, before the home was opened.
            let relay = relay.ok_or_else(no_relay)?;
            let token = token::given(create_token_file.as_deref())?;
            let alias = match alias {
                Some(a) => a,
                None => client.fresh_alias().await?,
            };
            let opts = TalkOptions {
                seats,
                quorum: quorum.unwrap_or(seats),
                ttl_secs: ttl,
                close: match close {
                    CloseArg::Owner => ClosePolicy::Owner,
                    CloseArg::Any => ClosePolicy::Any,
                },
                alias,
                schedule,
                pattern,
            };
            let created = client
                .create_with_token(&relay, opts, token.as_ref())
                .await?;
            out.created(&created);
            if qr {
                show_qr(&created.invites);
            }
        }
        Command::Join { invite, alias } => {
            // `-`: from a pipe or a file, so the invite need not be on the command line.
            let invite = if invite == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .take(64 * 1024)
                    .read_to_string(&mut s)
                    .map_err(|e| {
                        CliError::Input(format!("cannot read the invite from stdin: {e}"))
                    })?;
                s
            } else {
                invite
            };
            let joined = ops::join(client, &invite, alias.as_deref()).await?;
            out.joined(&joined);
        }
        Command::List => {
            settle_asks(client, &out).await;
            let talks = client.list(true).await?;
            out.list(&talks);
        }
        Command::Send {
            talk,
            file: Some(file),
            name,
            max_file,
            ..
        } => files::send(client, &out, &talk, file, name, max_file).await?,
        Command::Save {
            talk,
            file,
            to,
            force,
        } => files::save(client, &out, &talk, &file, to, force).await?,
        Command::Send { talk, text, to, .. } => {
            let text = text.unwrap_or_default();
            let text = if text == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).map_err(|e| {
                    CliError::Input(format!("cannot read the message from stdin: {e}"))
                })?;
                s.trim_end_matches('\n').to_string()
            } else {
                text
            };
            let text = ops::message(text)?;
            let sent = match to {
                Some(alias) => client.send_to(&talk, &alias, &text).await?,
                None => client.send(&talk, &text).await?,
            };
            if out.json {
                println!("{}", output::sent_json(&sent));
            }
        }
        Command::Read {
            talk,
            new,
            follow,
            wait_open,
        } => return read(client, &out, &talk, new, follow, wait_open).await,
        Command::Invites { talk, qr } => {
            let info = ops::invites(client, &talk, &mut |k, m| out.warning(k, &m)).await?;
            let (used, issued) = (info.used, info.issued);
            if out.json {
                println!(
                    "{}",
                    output::invites_json(&info.talk, &info.invites, used, issued)
                );
            } else {
                // The used ones are dead: only their count is worth showing.
                println!(
                    "{used} of {issued} invite(s) used (their seats are taken); {} unused{}",
                    info.invites.len(),
                    if info.invites.is_empty() { "" } else { ":" }
                );
                for i in &info.invites {
                    println!("{i}");
                }
                if qr {
                    show_qr(&info.invites);
                }
            }
        }
        Command::Promote { talk, alias } => {
            let (talk, seat) = client.promote(&talk, &alias).await?;
            if out.json {
                println!("{}", output::promoted_json(&talk, seat));
            } else {
                println!(
                    "promoted {} into talk {talk}'s group: it meets the other members as \
                     they next read",
                    safe::inline(&alias)
                );
            }
        }
        Command::Remove { talk, alias } => {
            let (talk, seat) = client.remove(&talk, &alias).await?;
            if out.json {
                println!("{}", output::removed_json(&talk, seat));
            } else {
                println!(
                    "removed {} from talk {talk}: its keys are erased here and nothing it \
                     sends is read; the relay still counts its seat",
                    safe::inline(&alias)
                );
            }
        }
        Command::Leave { talk } => {
            let id = client.leave(&talk).await?;
            if out.json {
                println!("{}", output::left_json(&id));
            } else {
                println!("left talk {id}; its local data was deleted");
            }
        }
        Command::Close { talk } => {
            let (id, receipt) = client.close(&talk).await?;
            if out.json {
                println!("{}", output::closed_json(&id, &receipt));
            } else {
                // The receipt comes last, after an empty line, so the whole output
                // saved to a file is what `nook receipt verify` reads.
                println!("talk {id} closed; all local data for it was deleted");
                println!("{}\n", receipt::KEEP);
                print!("{}", receipt.to_text());
            }
        }
        Command::Members { talk } => {
            out.members(&ops::members(client, &talk, &mut |k, m| out.warning(k, &m)).await?);
        }
        Command::Wait {
            talk,
            what,
            timeout,
        } => {
            settle_asks(client, &out).await;
            return wait::run(client, &out, &talk, what, timeout).await;
        }
        Command::Receipt {
            command: ReceiptCommand::Verify { file },
        } => return receipt::verify(&file, &out),
        Command::Rpc { socket } => return rpc::run(client.clone(), socket).await,
        // Answered in `run`, before a home is opened.
        Command::Completions { .. } | Command::Man { .. } => {}
        Command::Chat { talk } => {
            if !std::io::stdout().is_terminal() {
                return Err(CliError::Input(
                    "nook chat needs a terminal; in scripts use `nook read TALK --follow` and `nook send`".into(),
                ));
            }
            return chat::run(client.clone(), &talk).await;
        }
        Command::Board(cmd) => return boards::run(client, cmd, &out).await,
        Command::Cards(cmd) => return cards::run(client, cmd, &out).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// Each invite as a QR code, under the line it is the code of.
fn show_qr(invites: &[String]) {
    for (n, invite) in invites.iter().enumerate() {
        println!("\ninvite {} of {}:", n + 1, invites.len());
        match qr::render(invite) {
            Some(code) => println!("{code}"),
            None => println!("(too long for a QR code: give the line above)"),
        }
    }
}

/// The pending asks' answers, taken before a command a seeker runs next (ops.rs).
/// The TTL and schedule of `nook new` (and `nook rpc`'s `new`): `--ttl` (default 24h),
/// or with `--opens-at` the schedule and a TTL that covers its window.
pub(crate) fn schedule_of(
    ttl: Option<u32>,
    opens_at: Option<&str>,
    window: Option<u32>,
) -> Result<(u32, Option<nook_proto::Schedule>), String> {
    let Some(opens_at) = opens_at else {
        return Ok((ttl.unwrap_or(DEFAULT_TTL_SECS), None));
    };
    let now = nook_client::now_ms() / 1000;
    let at = schedule::parse_opens_at(opens_at, now)?;
    let window = match window {
        Some(w) => w,
        None => schedule::parse_window(schedule::DEFAULT_WINDOW)?,
    };
    let (schedule, ttl) = schedule::plan(at, window, ttl, now)?;
    Ok((ttl, Some(schedule)))
}

/// `nook new`'s TTL when none is given.
const DEFAULT_TTL_SECS: u32 = 24 * 3600;

async fn settle_asks(client: &Client, out: &Output) {
    ops::settle_asks(
        client,
        &mut |a| boards::report_settled(out, a),
        &mut |k, m| out.warning(k, &m),
    )
    .await;
}

/// How often `read LISTING --wait-open` asks the relay whether its ask was answered.
const ASK_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// `read LISTING`: the talk this device's ask on the listing took a seat in. With
/// `wait` (`--wait-open`, `--follow`) it waits for the owner's answer; without, a
/// waiting ask is reported and `None` returned.
async fn seat_from_listing(
    client: &Client,
    out: &Output,
    listing: &str,
    wait: bool,
) -> Result<Option<String>, CliError> {
    loop {
        let Some(ask) = client.ask_state(listing).await? else {
            return Err(ClientError::Board(nook_client::BoardError::NoAsk).into());
        };
        match &ask.phase {
            AskPhase::Joined { talk } => {
                boards::report_settled(out, &ask);
                return Ok(Some(talk.clone()));
            }
            AskPhase::Declined => {
                return Err(ClientError::Board(nook_client::BoardError::Declined).into());
            }
            AskPhase::Gone => {
                return Err(ClientError::Board(nook_client::BoardError::ListingGone).into());
            }
            AskPhase::Waiting if !wait => {
                boards::report_settled(out, &ask);
                return Ok(None);
            }
            AskPhase::Waiting => {}
        }
        tokio::select! {
            () = tokio::time::sleep(ASK_POLL) => {}
            () = stop_requested() => return Ok(None),
        }
    }
}

async fn read(
    client: &Client,
    out: &Output,
    talk: &str,
    new: bool,
    follow: bool,
    wait_open: bool,
) -> Result<ExitCode, CliError> {
    let seated;
    let talk = if talk.starts_with(nook_client::board::LISTING_PREFIX) {
        match seat_from_listing(client, out, talk, follow || wait_open).await? {
            Some(t) => {
                seated = t;
                seated.as_str()
            }
            None => return Ok(ExitCode::SUCCESS),
        }
    } else {
        settle_asks(client, out).await;
        talk
    };
    let mut exit = ExitCode::SUCCESS;
    match ops::fetch_for_read(client, talk).await {
        Ok(None) => {}
        Ok(Some(e)) if !follow && !wait_open => {
            out.warning(
                error::client_kind(&e),
                &format!("{e}; showing what this device already has"),
            );
            exit = ExitCode::from(error::client_exit_code(&e));
        }
        Ok(Some(e)) => return Err(e.into()),
        Err((e, ended)) => {
            // Ended while this device was away: the relay says so, with its receipt
            // when the talk was closed (not expired).
            if let Some(ended) = ended {
                out.entry(talk, &ended);
            }
            return Err(e);
        }
    }
    let history = client.history(talk, new).await?;
    // Follow on from the first entry not printed, so nothing shows twice.
    let (entries, from) = (history.entries, history.next);
    let mut opened = entries.iter().any(|e| matches!(e.event, Event::Opened));
    // The names members showed this viewer, beside their aliases (spec §19).
    let mut names = cards::Names::of(&client.known_cards(talk).await?);
    for e in &entries {
        out.entry_named(talk, e, &mut names);
    }
    if !follow && !wait_open {
        return Ok(exit);
    }
    if wait_open && !follow {
        opened = opened || client.info(talk).await?.open;
        if opened {
            return Ok(exit);
        }
    }
    let until = if follow { Until::Closed } else { Until::Open };
    let mut ended = false;
    let following = client.follow(talk, from, until, |u| {
        match u {
            Update::Entry(e) => {
                ended |= matches!(e.event, Event::Closed { .. } | Event::Expired);
                out.entry_named(talk, &e, &mut names);
            }
            Update::Link(link) => out.link(&link, until),
            Update::Status(_) => {}
        }
        true
    });
    // Ctrl-C or SIGTERM stop the follow cleanly, so what was shown is marked below.
    let result = tokio::select! {
        r = following => r,
        () = stop_requested() => Ok(()),
    };
    match result {
        // The talk ended (closed, expired, or left by another process of this member):
        // everything local is gone, whoever caused it.
        Err(ClientError::TalkGone) => return Err(ClientError::TalkGone.into()),
        Err(e) => return Err(e.into()),
        Ok(()) if ended => return Err(ClientError::TalkGone.into()),
        Ok(()) => {}
    }
    // Mark what was shown, so `read --new` starts after it.
    client.history(talk, true).await?;
    Ok(exit)
}
