//! `nook rpc`: every command as JSON-RPC 2.0, one JSON object per line, on
//! stdin/stdout or on a Unix socket (docs/json.md, "nook rpc", is the contract).
//!
//! One process, many requests: the store is still leased per operation (other `nook`
//! commands use the home in between), but relay connections are kept. Sends are the
//! reason to use it: the `send` requests queued for one talk go out as one batch
//! ([`nook_client::TalkSender`]: sealed in order, one fdatasync, puts pipelined), each
//! answered once the relay stored it.
//!
//! Results are the objects `--json` prints (one object, or an array where `--json`
//! prints one line per item), built by [`crate::output`]; errors carry the `--json`
//! error object as their `data`. Nothing but JSON-RPC goes to stdout.
//!
//! Bounds: a line is at most [`MAX_LINE`] bytes (a longer one is skipped and answered
//! with a parse error); at most [`IN_FLIGHT`] requests, and [`IN_FLIGHT_BYTES`] of
//! request lines, of one client are in progress
//! (reading waits meanwhile); notifications wait in a queue of [`NOTE_QUEUE`], and a
//! subscription whose client does not read them is ended, not buffered; at most
//! [`MAX_CLIENTS`] socket clients at once.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};

use clap::ValueEnum;
use nook_client::{Client, ClientError, TalkOptions, TalkSender, Until, Update};
use nook_proto::ClosePolicy;
use nook_proto::limits::MAX_SEATS;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};

use crate::error::{CliError, Kind};
use crate::output::{self, entry_json};
use crate::{boards, duration, files, ops, wait};

/// The longest request line, newline included.
pub const MAX_LINE: usize = 1 << 20;
/// Requests of one client in progress at once; the next line is read when one ends.
pub const IN_FLIGHT: usize = 4096;
/// Bytes of request lines of one client in progress at once (a line holds its share
/// until answered): with [`IN_FLIGHT`], what bounds the memory one client can take.
pub const IN_FLIGHT_BYTES: usize = 16 << 20;
/// Notifications waiting for one client.
pub const NOTE_QUEUE: usize = 4096;
/// Socket clients served at once; more are disconnected at once.
pub const MAX_CLIENTS: usize = 64;
/// Texts sealed and committed together at most.
const MAX_BATCH: usize = 1024;

/// JSON-RPC 2.0's error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
/// A command's failure: -32000 minus the exit code the command line would give.
const COMMAND_ERROR: i64 = -32000;

/// The methods, for the answer to an unknown one.
const METHODS: &str = "new, join, list, send, read, wait, members, invites, leave, close, \
     subscribe, unsubscribe, post, unpost, browse, ask, asks, requests, admit, decline, save, promote, remove, \
     card_show, card_set, card_clear, reveal, who, exposure, contacts, contacts_forget";

/// A JSON-RPC error: code, message, and `data`, which always holds the `--json` error
/// object's `error`, `exit_code` and `kind` (and `field` for invalid params).
#[derive(Debug, Clone)]
struct Failure {
    code: i64,
    message: String,
    data: Value,
}

impl Failure {
    fn usage(code: i64, message: String) -> Failure {
        Failure {
            code,
            data: json!({"error": message, "exit_code": Kind::Usage.exit_code(),
                         "kind": Kind::Usage.name()}),
            message,
        }
    }

    fn params(field: &str, message: String) -> Failure {
        let mut f = Failure::usage(INVALID_PARAMS, format!("{field}: {message}"));
        f.data["field"] = json!(field);
        f
    }

    fn command(e: &CliError) -> Failure {
        Failure {
            code: COMMAND_ERROR - i64::from(e.kind().exit_code()),
            message: e.to_string(),
            data: output::error_json(e),
        }
    }

    /// With the entry that says how the talk ended, when that is why it failed.
    fn with_event(mut self, entry: Option<&nook_client::HistoryEntry>) -> Failure {
        if let Some(e) = entry {
            self.data["event"] = entry_json(e);
        }
        self
    }

    fn to_json(&self) -> Value {
        json!({"code": self.code, "message": self.message, "data": self.data})
    }
}

impl From<CliError> for Failure {
    fn from(e: CliError) -> Failure {
        Failure::command(&e)
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::command(&e.into())
    }
}

fn response(id: &Value, outcome: Result<Value, Failure>) -> String {
    match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(f) => json!({"jsonrpc": "2.0", "id": id, "error": f.to_json()}),
    }
    .to_string()
}

fn notification(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

/// A request's params: an object whose fields are the command's options.
struct Params {
    map: Map<String, Value>,
}

impl Params {
    fn new(params: Option<Value>) -> Result<Params, Failure> {
        match params {
            None | Some(Value::Null) => Ok(Params { map: Map::new() }),
            Some(Value::Object(map)) => Ok(Params { map }),
            Some(_) => Err(Failure::params(
                "params",
                "must be an object whose fields are the command's options".into(),
            )),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.map.get(name).is_some_and(|v| !v.is_null())
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name).filter(|v| !v.is_null())
    }

    fn string(&mut self, name: &str) -> Result<Option<String>, Failure> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Failure::params(name, "must be a string".into())),
        }
    }

    fn required(&mut self, name: &str) -> Result<String, Failure> {
        self.string(name)?
            .ok_or_else(|| Failure::params(name, "is required".into()))
    }

    fn flag(&mut self, name: &str) -> Result<bool, Failure> {
        match self.take(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(_) => Err(Failure::params(name, "must be true or false".into())),
        }
    }

    fn bytes(&mut self, name: &str) -> Result<Option<u64>, Failure> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| Failure::params(name, "must be a whole number of bytes".into())),
        }
    }

    fn number(&mut self, name: &str, min: u8, max: u8) -> Result<Option<u8>, Failure> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .filter(|n| (min..=max).contains(n))
                .map(Some)
                .ok_or_else(|| {
                    Failure::params(name, format!("must be a whole number from {min} to {max}"))
                }),
        }
    }

    /// A duration as the command line takes it ("90s", "1h30m"), or whole seconds.
    fn duration<T>(
        &mut self,
        name: &str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, Failure> {
        let text = match self.take(name) {
            None => return Ok(None),
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) if n.is_u64() => format!("{n}s"),
            Some(_) => {
                return Err(Failure::params(
                    name,
                    "must be a duration such as \"90s\" or \"1h30m\", or whole seconds".into(),
                ));
            }
        };
        parse(&text).map(Some).map_err(|e| Failure::params(name, e))
    }

    /// A list of strings: an array, or one string (`split_commas`: split at commas, as
    /// the command line splits `--tags a,b`).
    fn strings(&mut self, name: &str, split_commas: bool) -> Result<Vec<String>, Failure> {
        let items = match self.take(name) {
            None => return Ok(Vec::new()),
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(a)) => a
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(Failure::params(name, "must be strings".into())),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(Failure::params(
                    name,
                    "must be a string or an array of strings".into(),
                ));
            }
        };
        Ok(if split_commas {
            items
                .iter()
                .flat_map(|s| s.split(','))
                .map(str::to_string)
                .collect()
        } else {
            items
        })
    }

    /// Refuses fields the method does not take, as the command line refuses options.
    fn done(self) -> Result<(), Failure> {
        match self.map.keys().next() {
            Some(field) => Err(Failure::params(
                field,
                "unknown field for this method".into(),
            )),
            None => Ok(()),
        }
    }
}

/// One client's line to the process: where its answers go, and its subscriptions.
struct Peer {
    notes: mpsc::Sender<String>,
    subscriptions: Mutex<HashMap<String, AbortHandle>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        // A map of handles: still whole after a panic elsewhere.
        Err(p) => p.into_inner(),
    }
}

/// What every client shares: the home, and one send queue per talk.
struct Rpc {
    client: Client,
    queues: Mutex<HashMap<String, mpsc::Sender<SendJob>>>,
}

/// One `send` waiting for its batch.
struct SendJob {
    text: String,
    reply: oneshot::Sender<Result<Value, Failure>>,
}

/// Runs `nook rpc` until stdin ends (or, with `socket`, until SIGINT or SIGTERM).
pub async fn run(client: Client, socket: Option<PathBuf>) -> Result<ExitCode, CliError> {
    let rpc = Arc::new(Rpc {
        client,
        queues: Mutex::new(HashMap::new()),
    });
    let result = match socket {
        Some(path) => listen(rpc.clone(), &path).await,
        None => {
            tokio::select! {
                () = serve(rpc.clone(), tokio::io::stdin(), tokio::io::stdout()) => {}
                () = crate::stop_requested() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    // Closing the queues ends their senders, which close their relay connections.
    locked(&rpc.queues).clear();
    result
}

/// The socket, removed when `nook rpc` ends.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn listen(rpc: Arc<Rpc>, path: &Path) -> Result<ExitCode, CliError> {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(CliError::Input(format!("cannot use {shown}: {e}"))),
        Ok(m) if !m.file_type().is_socket() => {
            return Err(CliError::Input(format!(
                "{shown} exists and is not a socket; give another --socket path"
            )));
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(CliError::Input(format!(
                    "{shown} is in use (another nook rpc?); stop it or give another --socket path"
                )));
            }
            // Left behind by a process that ended without removing it.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)
                    .map_err(|e| CliError::Input(format!("cannot remove {shown}: {e}")))?;
            }
            Err(e) => return Err(CliError::Input(format!("cannot use {shown}: {e}"))),
        },
    }
    // The umask (077, set in main) already keeps others out while it is created.
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| CliError::Input(format!("cannot listen on {shown}: {e}")))?;
    let _file = SocketFile(path.to_path_buf());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| CliError::Input(format!("cannot make {shown} private: {e}")))?;
    eprintln!("nook rpc: listening on {shown}");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    let mut clients = JoinSet::new();
    loop {
        while clients.try_join_next().is_some() {}
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = crate::stop_requested() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("nook rpc: accept failed: {e}");
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            eprintln!("nook rpc: {MAX_CLIENTS} clients already connected; one more refused");
            continue;
        };
        let (read, write) = stream.into_split();
        let rpc = rpc.clone();
        clients.spawn(async move {
            serve(rpc, read, write).await;
            drop(slot);
        });
    }
    clients.abort_all();
    Ok(ExitCode::SUCCESS)
}

/// A line as read: whole, too long (skipped), or the end of input.
enum Line {
    Whole,
    TooLong,
    End,
}

/// Reads one line into `buf` (newline included), never holding more than
/// [`MAX_LINE`] bytes of it.
async fn read_line(
    reader: &mut (impl AsyncBufReadExt + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::End,
                (false, false) => Line::Whole,
            });
        }
        let (take, ends) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + take > MAX_LINE {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        reader.consume(take);
        if ends {
            return Ok(if too_long { Line::TooLong } else { Line::Whole });
        }
    }
}

/// Writes answers and notifications as they come, flushing when none waits.
async fn write_lines(
    mut answers: mpsc::Receiver<String>,
    mut notes: mpsc::Receiver<String>,
    out: impl AsyncWrite + Unpin,
) {
    let mut out = tokio::io::BufWriter::new(out);
    let (mut answers_open, mut notes_open) = (true, true);
    while answers_open || notes_open {
        let line = tokio::select! {
            a = answers.recv(), if answers_open => match a {
                Some(l) => l,
                None => { answers_open = false; continue; }
            },
            n = notes.recv(), if notes_open => match n {
                Some(l) => l,
                None => { notes_open = false; continue; }
            },
        };
        if out.write_all(line.as_bytes()).await.is_err() || out.write_all(b"\n").await.is_err() {
            return;
        }
        if answers.is_empty() && notes.is_empty() && out.flush().await.is_err() {
            return;
        }
    }
    let _ = out.flush().await;
}

/// Serves one client until its input ends; requests in progress are answered first.
async fn serve(
    rpc: Arc<Rpc>,
    input: impl AsyncRead + Unpin,
    output: impl AsyncWrite + Unpin + Send + 'static,
) {
    let (answers, answers_rx) = mpsc::channel::<String>(IN_FLIGHT);
    let (notes, notes_rx) = mpsc::channel::<String>(NOTE_QUEUE);
    let writer = tokio::spawn(write_lines(answers_rx, notes_rx, output));
    let peer = Arc::new(Peer {
        notes,
        subscriptions: Mutex::new(HashMap::new()),
    });
    let budget = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_BYTES));
    let mut tasks = JoinSet::new();
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        while tasks.try_join_next().is_some() {}
        // A slot for the answer before the request is read: at most IN_FLIGHT wait.
        let Ok(slot) = answers.clone().reserve_owned().await else {
            break;
        };
        match read_line(&mut reader, &mut line).await {
            Ok(Line::Whole) => {}
            Ok(Line::TooLong) => {
                let f = Failure::usage(
                    PARSE_ERROR,
                    format!("a request line is at most {MAX_LINE} bytes; it was skipped"),
                );
                slot.send(response(&Value::Null, Err(f)));
                continue;
            }
            Ok(Line::End) => break,
            Err(e) => {
                eprintln!("nook rpc: cannot read requests: {e}");
                break;
            }
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // A line is at most MAX_LINE bytes, far below the budget, so this never waits
        // for more than the budget holds.
        let share = u32::try_from(line.len()).unwrap_or(u32::MAX);
        let Ok(held) = budget.clone().acquire_many_owned(share).await else {
            break;
        };
        let request = match parse(&line) {
            Ok(r) => r,
            Err((id, f)) => {
                slot.send(response(&id, Err(f)));
                continue;
            }
        };
        let Request { id, method, params } = request;
        let params = match Params::new(params) {
            Ok(p) => p,
            Err(f) => {
                if let Some(id) = id {
                    slot.send(response(&id, Err(f)));
                }
                continue;
            }
        };
        // Texts join their talk's queue here, in the order they were read; a file is
        // sent on its own.
        let call = if method == "send" && !params.has("file") && !params.has("to") {
            match queue_send(&rpc, params).await {
                Ok(reply) => Call::Queued(reply),
                Err(f) => Call::Done(Err(f)),
            }
        } else {
            Call::Run(method, params)
        };
        let (rpc, peer) = (rpc.clone(), peer.clone());
        tasks.spawn(async move {
            let _held = held;
            let (outcome, notes) = match call {
                Call::Done(outcome) => (outcome, Notes::default()),
                Call::Queued(reply) => (
                    reply
                        .await
                        .unwrap_or_else(|_| Err(Failure::command(&ClientError::Protocol.into()))),
                    Notes::default(),
                ),
                Call::Run(method, params) => {
                    let mut notes = Notes::default();
                    let outcome =
                        dispatch(&rpc, &peer, id.as_ref(), &method, params, &mut notes).await;
                    (outcome, notes)
                }
            };
            let Some(id) = id else { return };
            // Settled asks and warnings go right before the answer they belong to, in
            // one write.
            let mut text = String::new();
            for ask in notes.asks {
                text.push_str(&notification("ask", json!({"request": id, "ask": ask})));
                text.push('\n');
            }
            for (kind, message) in notes.warnings {
                text.push_str(&notification(
                    "warning",
                    json!({"request": id, "warning": output::warning_json(kind, &message)}),
                ));
                text.push('\n');
            }
            text.push_str(&response(&id, outcome));
            slot.send(text);
        });
    }
    while tasks.join_next().await.is_some() {}
    for (_, s) in locked(&peer.subscriptions).drain() {
        s.abort();
    }
    drop((answers, peer));
    let _ = writer.await;
}

/// What a request's answer is preceded by: the asks it settled (`list`, `read`,
/// `wait` take the answers of pending asks first, ops.rs) and its warnings.
#[derive(Default)]
struct Notes {
    asks: Vec<Value>,
    warnings: Vec<(Kind, String)>,
}

/// What a request line becomes.
enum Call {
    Done(Result<Value, Failure>),
    Queued(oneshot::Receiver<Result<Value, Failure>>),
    Run(String, Params),
}

struct Request {
    /// `None` for a notification (no answer).
    id: Option<Value>,
    method: String,
    params: Option<Value>,
}

/// One request object; on failure, the id to answer with (null when unknown).
fn parse(line: &[u8]) -> Result<Request, (Value, Failure)> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        (
            Value::Null,
            Failure::usage(PARSE_ERROR, format!("not JSON: {e}")),
        )
    })?;
    let invalid = |id: Value, m: &str| (id, Failure::usage(INVALID_REQUEST, m.to_string()));
    let mut object = match value {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Err(invalid(
                Value::Null,
                "batch requests are not supported: send one request per line (they are pipelined)",
            ));
        }
        _ => return Err(invalid(Value::Null, "a request is a JSON object")),
    };
    let id = object.remove("id");
    let known_id = match &id {
        Some(v @ (Value::String(_) | Value::Number(_) | Value::Null)) => v.clone(),
        Some(_) => {
            return Err(invalid(
                Value::Null,
                "\"id\" must be a string, a number or null",
            ));
        }
        None => Value::Null,
    };
    if object.remove("jsonrpc") != Some(json!("2.0")) {
        return Err(invalid(known_id, "\"jsonrpc\" must be \"2.0\""));
    }
    let method = match object.remove("method") {
        Some(Value::String(m)) => m,
        _ => return Err(invalid(known_id, "\"method\" must be a string")),
    };
    let params = object.remove("params");
    if let Some(field) = object.keys().next() {
        return Err(invalid(
            known_id,
            &format!("unknown member \"{field}\" in the request"),
        ));
    }
    Ok(Request { id, method, params })
}

/// Puts a `send` in its talk's queue; the answer comes when its batch is stored.
async fn queue_send(
    rpc: &Arc<Rpc>,
    mut params: Params,
) -> Result<oneshot::Receiver<Result<Value, Failure>>, Failure> {
    let talk = params.required("talk")?;
    let text = params.required("text")?;
    params.done()?;
    let text = ops::message(text)?;
    let (reply, answer) = oneshot::channel();
    let mut job = SendJob { text, reply };
    // A queue found closed has just ended (idle): the next try makes a new one.
    for _ in 0..4 {
        let queue = {
            let mut queues = locked(&rpc.queues);
            queues
                .entry(talk.clone())
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(MAX_BATCH);
                    tokio::spawn(send_batches(rpc.clone(), talk.clone(), tx.downgrade(), rx));
                    tx
                })
                .clone()
        };
        match queue.send(job).await {
            Ok(()) => return Ok(answer),
            Err(mpsc::error::SendError(j)) => job = j,
        }
    }
    Err(Failure::command(&ClientError::Protocol.into()))
}

/// Sends one talk's queued texts, a batch at a time, over one kept connection. Ends
/// when the queue is idle: at once when no connection is kept, else after
/// [`nook_client::sender::LINK_IDLE`].
async fn send_batches(
    rpc: Arc<Rpc>,
    talk: String,
    me: mpsc::WeakSender<SendJob>,
    mut jobs: mpsc::Receiver<SendJob>,
) {
    let mut sender = TalkSender::new(&rpc.client, &talk);
    loop {
        let idle = if sender.is_connected() {
            nook_client::sender::LINK_IDLE
        } else {
            std::time::Duration::ZERO
        };
        let first = match tokio::time::timeout(idle, jobs.recv()).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(_) => {
                // Idle: leave the map, refuse new jobs, and send what got in meanwhile.
                {
                    let mut queues = locked(&rpc.queues);
                    let mine = me.upgrade();
                    if queues
                        .get(&talk)
                        .zip(mine.as_ref())
                        .is_some_and(|(q, me)| q.same_channel(me))
                    {
                        queues.remove(&talk);
                    }
                }
                jobs.close();
                let mut rest = Vec::new();
                while let Ok(job) = jobs.try_recv() {
                    rest.push(job);
                }
                while !rest.is_empty() {
                    let later = rest.split_off(rest.len().min(MAX_BATCH));
                    send_batch(&mut sender, rest).await;
                    rest = later;
                }
                return;
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        send_batch(&mut sender, batch).await;
    }
}

async fn send_batch(sender: &mut TalkSender, batch: Vec<SendJob>) {
    let (texts, replies): (Vec<String>, Vec<_>) =
        batch.into_iter().map(|j| (j.text, j.reply)).unzip();
    let outcomes: Vec<Result<Value, Failure>> = match sender.send(&texts).await {
        Ok(results) => results
            .into_iter()
            .map(|r| r.map(|s| output::sent_json(&s)).map_err(Failure::from))
            .collect(),
        Err(e) => vec![Err(Failure::from(e)); replies.len()],
    };
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        // A client that went away no longer waits for its answer.
        let _ = reply.send(outcome);
    }
}

/// Runs one method other than `send`.
async fn dispatch(
    rpc: &Rpc,
    peer: &Arc<Peer>,
    id: Option<&Value>,
    method: &str,
    mut p: Params,
    notes: &mut Notes,
) -> Result<Value, Failure> {
    let client = &rpc.client;
    if matches!(method, "list" | "read" | "wait") {
        let Notes { asks, warnings } = notes;
        ops::settle_asks(
            client,
            &mut |a| asks.push(boards::ask_json(a)),
            &mut |kind, message| warnings.push((kind, message)),
        )
        .await;
    }
    let mut warn = |kind: Kind, message: String| notes.warnings.push((kind, message));
    match method {
        "new" => {
            let relay = match p.string("relay")? {
                Some(r) => r,
                // The same default as `nook new`: NOOK_RELAY, then config.toml.
                None => crate::config::default_relay()?.ok_or_else(|| {
                    Failure::params(
                        "relay",
                        "is required (or set NOOK_RELAY, or relay in config.toml)".into(),
                    )
                })?,
            };
            let seats = p.number("seats", 2, MAX_SEATS)?.unwrap_or(2);
            let quorum = p.number("quorum", 1, MAX_SEATS)?.unwrap_or(seats);
            if quorum > seats {
                return Err(Failure::params(
                    "quorum",
                    format!("can be at most the number of seats ({seats})"),
                ));
            }
            let ttl = p.duration("ttl", duration::parse)?;
            let opens_at = p.string("opens_at")?;
            let window = p.duration("window", crate::schedule::parse_window)?;
            if window.is_some() && opens_at.is_none() {
                return Err(Failure::params(
                    "window",
                    "is for a scheduled talk: give opens_at too".into(),
                ));
            }
            let (ttl, schedule) = crate::schedule_of(ttl, opens_at.as_deref(), window)
                .map_err(|e| Failure::params("opens_at", e))?;
            let alias = p.string("alias")?;
            if let Some(a) = &alias
                && let Err(e) = crate::alias(a)
            {
                return Err(Failure::params("alias", e));
            }
            let close = match p.string("close")?.as_deref() {
                None | Some("owner") => ClosePolicy::Owner,
                Some("any") => ClosePolicy::Any,
                Some(_) => {
                    return Err(Failure::params(
                        "close",
                        "must be \"owner\" or \"any\"".into(),
                    ));
                }
            };
            let token_file = p.string("create_token_file")?;
            let offer_limit = p.number("offer_limit", 1, 100)?;
            let speakers = p.number("speakers", 1, 63)?;
            let pattern = match (p.string("pattern")?.as_deref(), offer_limit, speakers) {
                (None | Some("plain"), None, None) => nook_client::roles::Pattern::Plain,
                (Some("market"), limit, None) => nook_client::roles::Pattern::Market {
                    offer_limit: limit.unwrap_or(1),
                },
                (Some("panel"), None, n) => nook_client::roles::Pattern::Panel {
                    speakers: n.unwrap_or(1),
                },
                (Some("plain" | "market" | "panel") | None, Some(_), _) => {
                    return Err(Failure::params(
                        "offer_limit",
                        "is for market talks: give pattern \"market\"".into(),
                    ));
                }
                (Some("plain" | "market") | None, _, Some(_)) => {
                    return Err(Failure::params(
                        "speakers",
                        "is for panels: give pattern \"panel\"".into(),
                    ));
                }
                (Some(_), _, _) => {
                    return Err(Failure::params(
                        "pattern",
                        "must be \"plain\", \"market\" or \"panel\"".into(),
                    ));
                }
            };
            if let nook_client::roles::Pattern::Panel { speakers } = pattern
                && speakers + 1 >= seats
            {
                return Err(Failure::params(
                    "speakers",
                    format!(
                        "a panel of {seats} seats has at most {} speakers",
                        seats.saturating_sub(2)
                    ),
                ));
            }
            p.done()?;
            let token = crate::token::given(token_file.as_deref().map(Path::new))?;
            let alias = match alias {
                Some(a) => a,
                None => client.fresh_alias().await?,
            };
            let opts = TalkOptions {
                seats,
                quorum,
                ttl_secs: ttl,
                close,
                alias,
                schedule,
                pattern,
            };
            let created = client
                .create_with_token(&relay, opts, token.as_ref())
                .await?;
            Ok(output::created_json(&created))
        }
        "join" => {
            let invite = p.required("invite")?;
            let alias = p.string("alias")?;
            if let Some(a) = &alias
                && let Err(e) = crate::alias(a)
            {
                return Err(Failure::params("alias", e));
            }
            p.done()?;
            let joined = ops::join(client, &invite, alias.as_deref()).await?;
            Ok(output::joined_json(&joined))
        }
        "list" => {
            p.done()?;
            let talks = client.list(true).await?;
            Ok(Value::Array(talks.iter().map(output::talk_json).collect()))
        }
        "read" => {
            let talk = p.required("talk")?;
            let new = p.flag("new")?;
            for option in ["follow", "wait_open"] {
                if p.map.contains_key(option) {
                    return Err(Failure::params(
                        option,
                        "not in nook rpc: `subscribe` streams a talk's events, `wait` waits".into(),
                    ));
                }
            }
            p.done()?;
            match ops::fetch_for_read(client, &talk).await {
                Ok(None) => {}
                Ok(Some(e)) => warn(
                    crate::error::client_kind(&e),
                    format!("{e}; showing what this device already has"),
                ),
                Err((e, ended)) => return Err(Failure::command(&e).with_event(ended.as_ref())),
            }
            let history = client.history(&talk, new).await?;
            Ok(Value::Array(
                history.entries.iter().map(entry_json).collect(),
            ))
        }
        "wait" => {
            let talk = p.required("talk")?;
            let what = p.required("for")?;
            let what = wait::WaitFor::from_str(&what, false).map_err(|_| {
                Failure::params(
                    "for",
                    "must be \"open\", \"message\", \"member\" or \"closed\"".into(),
                )
            })?;
            let timeout = p.duration("timeout", duration::parse_wait)?;
            p.done()?;
            let (found, result) = wait::wait(client, &talk, what, timeout).await;
            match (result, found) {
                (Ok(()), Some(e)) => Ok(entry_json(&e)),
                (Ok(()), None) => Err(Failure::from(ClientError::Protocol)),
                (Err(e), found) => Err(Failure::command(&e).with_event(found.as_ref())),
            }
        }
        "members" => {
            let talk = p.required("talk")?;
            p.done()?;
            let members = ops::members(client, &talk, &mut warn).await?;
            Ok(Value::Array(
                members.iter().map(output::member_json).collect(),
            ))
        }
        "invites" => {
            let talk = p.required("talk")?;
            p.done()?;
            let i = ops::invites(client, &talk, &mut warn).await?;
            Ok(output::invites_json(&i.talk, &i.invites, i.used, i.issued))
        }
        // Texts to the whole talk never come here: they are queued (see `serve`).
        "send" if p.has("to") => {
            let talk = p.required("talk")?;
            let to = p.required("to")?;
            let text = p.required("text")?;
            if p.has("file") {
                return Err(Failure::params(
                    "file",
                    "a file goes to the whole talk; `to` is for a text".into(),
                ));
            }
            p.done()?;
            let text = ops::message(text)?;
            Ok(output::sent_json(&client.send_to(&talk, &to, &text).await?))
        }
        "send" => {
            let talk = p.required("talk")?;
            let file = p.required("file")?;
            if p.has("text") {
                return Err(Failure::params(
                    "text",
                    "a send carries a text or a file, not both".into(),
                ));
            }
            let max = p
                .bytes("max_file")?
                .unwrap_or(nook_client::files::DEFAULT_MAX_FILE);
            p.done()?;
            // Progress goes out as it happens; a full notification queue drops a line
            // of it rather than hold the send (the answer says how it ended).
            let mut report = |progress: nook_client::files::Progress| {
                if let Some(id) = id {
                    let _ = peer.notes.try_send(notification(
                        "progress",
                        json!({"request": id, "progress": files::progress_json(&progress)}),
                    ));
                }
            };
            let source = nook_client::files::Source::Path(PathBuf::from(file));
            let sent = client.send_file(&talk, source, max, &mut report).await?;
            Ok(files::sent_json(&sent))
        }
        "promote" | "remove" => {
            let talk = p.required("talk")?;
            let alias = p.required("alias")?;
            p.done()?;
            Ok(if method == "promote" {
                let (talk, seat) = client.promote(&talk, &alias).await?;
                output::promoted_json(&talk, seat)
            } else {
                let (talk, seat) = client.remove(&talk, &alias).await?;
                output::removed_json(&talk, seat)
            })
        }
        "save" => {
            let talk = p.required("talk")?;
            let file = p.required("file")?;
            let to = p.string("to")?.map(PathBuf::from);
            let force = p.flag("force")?;
            p.done()?;
            let saved = files::save_fetched(client, &talk, &file, to, force).await?;
            Ok(files::saved_json(&saved))
        }
        "leave" => {
            let talk = p.required("talk")?;
            p.done()?;
            Ok(output::left_json(&client.leave(&talk).await?))
        }
        "close" => {
            let talk = p.required("talk")?;
            p.done()?;
            let (talk, receipt) = client.close(&talk).await?;
            Ok(output::closed_json(&talk, &receipt))
        }
        "subscribe" => {
            let talk = p.required("talk")?;
            p.done()?;
            subscribe(client, peer, &talk).await
        }
        "unsubscribe" => {
            let talk = p.required("talk")?;
            p.done()?;
            let name = client.info(&talk).await.map(|i| i.talk).unwrap_or(talk);
            if let Some(s) = locked(&peer.subscriptions).remove(&name) {
                s.abort();
            }
            Ok(json!({"talk": name, "subscribed": false}))
        }
        "card_show" => {
            p.done()?;
            Ok(crate::cards::card_json(client.card().await?.as_ref()))
        }
        "card_set" => {
            let mut fields = Vec::new();
            for (kind, name) in nook_crypto::card::FIELD_NAMES.iter().enumerate() {
                if let (Some(v), Ok(k)) = (p.string(name)?, u8::try_from(kind)) {
                    fields.push((k, v));
                }
            }
            p.done()?;
            if fields.is_empty() {
                return Err(Failure::params("name", "give at least one field".into()));
            }
            let own = client.set_card(nook_crypto::card::Card { fields }).await?;
            Ok(crate::cards::card_json(Some(&own)))
        }
        "card_clear" => {
            p.done()?;
            Ok(json!({"cleared": client.clear_card().await?}))
        }
        "reveal" => {
            let talk = p.required("talk")?;
            let alias = p.required("alias")?;
            let mut fields = Vec::new();
            for f in p.strings("fields", true)? {
                fields
                    .push(nook_crypto::card::field_kind(f.trim()).ok_or_else(|| {
                        Failure::params("fields", format!("unknown field {f:?}"))
                    })?);
            }
            fields.sort_unstable();
            fields.dedup();
            let (mutual, accept, decline) =
                (p.flag("mutual")?, p.flag("accept")?, p.flag("decline")?);
            let keepable = p.flag("keepable")?;
            p.done()?;
            if u8::from(mutual) + u8::from(accept) + u8::from(decline) > 1 {
                return Err(Failure::params(
                    "mutual",
                    "mutual, accept and decline exclude each other".into(),
                ));
            }
            let fields = (!fields.is_empty()).then_some(fields);
            let (sent, action) = if accept {
                (
                    client.accept_exchange(&talk, &alias, keepable).await?,
                    "accepted",
                )
            } else if decline {
                (client.decline_exchange(&talk, &alias).await?, "declined")
            } else if mutual {
                let sent = client
                    .offer_exchange(&talk, &alias, fields.as_deref(), keepable)
                    .await?;
                (sent, "offered")
            } else {
                let sent = client
                    .reveal(&talk, &alias, fields.as_deref(), keepable)
                    .await?;
                (sent, "revealed")
            };
            Ok(crate::cards::reveal_json(&sent, action))
        }
        "who" => {
            let talk = p.required("talk")?;
            p.done()?;
            let (_, members) = client.who(&talk).await?;
            Ok(Value::Array(
                members.iter().map(crate::cards::who_json).collect(),
            ))
        }
        "exposure" => {
            let talk = p.required("talk")?;
            p.done()?;
            Ok(crate::cards::exposure_json(&client.exposure(&talk).await?))
        }
        "contacts" => {
            p.done()?;
            Ok(Value::Array(
                client
                    .contacts()
                    .await?
                    .iter()
                    .map(crate::cards::contact_json)
                    .collect(),
            ))
        }
        "contacts_forget" => {
            let id = p.required("id")?;
            p.done()?;
            let gone = client.forget_contact(&id).await?;
            Ok(Value::Array(
                gone.iter().map(|c| json!({"forgotten": c.id()})).collect(),
            ))
        }
        "post" => {
            let talk = p.required("talk")?;
            let board = p.strings("board", false)?;
            if board.is_empty() {
                return Err(Failure::params("board", "is required".into()));
            }
            let opts = nook_client::board::PostOptions {
                title: p.required("title")?,
                about: p.string("about")?.unwrap_or_default(),
                tags: p.strings("tags", true)?,
                until: p.duration("until", duration::parse)?.map(u64::from),
                keep_open: p.flag("keep_open")?,
            };
            p.done()?;
            Ok(boards::post_json(&client.post(&talk, &board, &opts).await?))
        }
        "unpost" => {
            let talk = p.required("talk")?;
            p.done()?;
            let n = client.unpost(&talk).await?;
            Ok(boards::unpost_json(&talk, n))
        }
        "browse" => {
            let relay = match p.string("relay")? {
                Some(r) => r,
                None => std::env::var("NOOK_RELAY")
                    .ok()
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| {
                        Failure::params("relay", "is required (or set NOOK_RELAY)".into())
                    })?,
            };
            let board = p.required("board")?;
            let tag = p.string("tag")?;
            p.done()?;
            let found = client.browse(&relay, &board, tag.as_deref()).await?;
            Ok(Value::Array(
                found.iter().map(boards::listing_json).collect(),
            ))
        }
        "ask" => {
            let listing = p.required("listing")?;
            let note = p.string("note")?.unwrap_or_default();
            let alias = p.string("alias")?;
            if let Some(a) = &alias
                && let Err(e) = crate::alias(a)
            {
                return Err(Failure::params("alias", e));
            }
            p.done()?;
            let ask = client.ask(&listing, &note, alias.as_deref()).await?;
            Ok(boards::ask_json(&ask))
        }
        "asks" => {
            p.done()?;
            let asks = client.asks().await?;
            Ok(Value::Array(asks.iter().map(boards::ask_json).collect()))
        }
        "requests" => {
            let talk = p.required("talk")?;
            p.done()?;
            let r = client.requests(&talk).await?;
            if let Some(w) = boards::unopened_warning(&r) {
                warn(Kind::BadInput, w);
            }
            Ok(Value::Array(
                r.items
                    .iter()
                    .map(|i| boards::request_json(&r.talk, i))
                    .collect(),
            ))
        }
        "admit" | "decline" => {
            let talk = p.required("talk")?;
            let request = p.required("request")?;
            p.done()?;
            let a = client.answer(&talk, &request, method == "admit").await?;
            Ok(boards::answer_json(&a))
        }
        "chat" => Err(Failure::usage(
            METHOD_NOT_FOUND,
            "chat needs a terminal; subscribe to the talk and send instead".into(),
        )),
        other => Err(Failure::usage(
            METHOD_NOT_FOUND,
            format!("no method \"{other}\"; the methods are {METHODS}"),
        )),
    }
}

/// Starts streaming `talk`'s events from now on to this client: what waits on the
/// relay, then what happens. A second subscribe to the same talk changes nothing.
async fn subscribe(client: &Client, peer: &Arc<Peer>, talk: &str) -> Result<Value, Failure> {
    let name = client.info(talk).await?.talk;
    let from = client.history_end(&name).await?;
    let answer = json!({"talk": name, "subscribed": true});
    let mut subscriptions = locked(&peer.subscriptions);
    if subscriptions.contains_key(&name) {
        return Ok(answer);
    }
    let (client, task_peer, talk) = (client.clone(), peer.clone(), name.clone());
    let task = tokio::spawn(async move {
        let notes = task_peer.notes.clone();
        let mut lagged = false;
        let following = client.follow(&talk, from, Until::Closed, |u| {
            let note = match u {
                Update::Entry(e) => {
                    notification("event", json!({"talk": talk, "event": entry_json(&e)}))
                }
                Update::Link(link) => notification(
                    "link",
                    json!({"talk": talk, "link": output::link_json(&link, Until::Closed)}),
                ),
                Update::Status(_) => return true,
            };
            // A client that does not read its notifications loses the subscription
            // rather than this process buffering them without bound.
            lagged = notes.try_send(note).is_err();
            !lagged
        });
        let result = following.await;
        let (reason, error) = match result {
            _ if lagged => ("lagged", Value::Null),
            // The talk closed, expired, or this member left it (here or elsewhere);
            // its last event was the final one.
            Ok(()) | Err(ClientError::TalkGone) => ("ended", Value::Null),
            Err(e) => ("error", output::error_json(&e.into())),
        };
        locked(&task_peer.subscriptions).remove(&talk);
        let _ = notes
            .send(notification(
                "unsubscribed",
                json!({"talk": talk, "reason": reason, "error": error}),
            ))
            .await;
    });
    subscriptions.insert(name, task.abort_handle());
    Ok(answer)
}
