//! `nook send --file` and `nook save`: the progress display and the output.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use nook_client::Client;
use nook_client::files::{Progress, SavedFile, SentFile, Source, file_id_text};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::error::CliError;
use crate::output::{Output, size_text};
use crate::safe;

/// Sends a file; a bar on stderr when it is a terminal, `progress` JSON lines on
/// stdout under `--json`.
pub async fn send(
    client: &Client,
    out: &Output,
    talk: &str,
    file: PathBuf,
    name: Option<String>,
    max: u64,
) -> Result<(), CliError> {
    let source = if file.as_os_str() == "-" {
        let name = name.ok_or_else(|| {
            CliError::Input("a file from stdin needs a name: add --name NAME".into())
        })?;
        let mut bytes = Zeroizing::new(Vec::new());
        // One byte past the cap is enough to know it is too large.
        std::io::stdin()
            .take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| CliError::Input(format!("cannot read the file from stdin: {e}")))?;
        Source::Bytes { name, bytes }
    } else {
        Source::Path(file)
    };
    let json = out.json;
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let shown = bar.clone();
    let mut report = move |p: Progress| {
        if json {
            println!("{}", progress_json(&p));
        } else if let Some(bar) = &shown {
            bar.set_length(p.size);
            bar.set_position(p.sent_bytes);
        }
    };
    let sent = client.send_file(talk, source, max, &mut report).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let sent = sent?;
    if json {
        println!("{}", sent_json(&sent));
    } else {
        eprintln!(
            "sent {} ({}){}",
            safe::inline(&sent.offer.name),
            size_text(sent.offer.size),
            if sent.resumed { ", resumed" } else { "" }
        );
    }
    Ok(())
}

/// Saves an offered file into a folder.
pub async fn save(
    client: &Client,
    out: &Output,
    talk: &str,
    file: &str,
    to: Option<PathBuf>,
    force: bool,
) -> Result<(), CliError> {
    let saved = save_fetched(client, talk, file, to, force).await?;
    if out.json {
        println!("{}", saved_json(&saved));
    } else {
        println!("saved {}", safe::inline(&saved.path.to_string_lossy()));
    }
    Ok(())
}

/// Saves an offered file after fetching what waits on the relay, so a file whose offer
/// arrived since the last read can be saved too (`nook save` and `nook rpc`'s `save`).
pub async fn save_fetched(
    client: &Client,
    talk: &str,
    file: &str,
    to: Option<PathBuf>,
    force: bool,
) -> Result<SavedFile, CliError> {
    client.fetch(talk).await?;
    let dir = to.unwrap_or_else(|| PathBuf::from("."));
    Ok(client.save_file(talk, file, &dir, force).await?)
}

/// A `progress` object (docs/json.md, `nook send --file`).
pub fn progress_json(p: &Progress) -> Value {
    json!({"type": "progress", "sent_bytes": p.sent_bytes, "size": p.size,
        "chunk": p.chunk, "chunks": p.chunks, "resumed": p.resumed})
}

/// A `file_sent` object.
pub fn sent_json(sent: &SentFile) -> Value {
    json!({"type": "file_sent", "talk": sent.talk, "file_id": file_id_text(&sent.offer.file_id),
        "name": sent.offer.name, "size": sent.offer.size,
        "chunks": sent.offer.chunks, "resumed": sent.resumed})
}

/// A `file_saved` object.
pub fn saved_json(saved: &SavedFile) -> Value {
    json!({"type": "file_saved", "file_id": file_id_text(&saved.offer.file_id),
        "path": saved.path.to_string_lossy(), "size": saved.offer.size})
}
