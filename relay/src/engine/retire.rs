//! What the engine knows of the relay's own life: its key rotation history (sent in
//! every `HelloOk`) and its retirement (protocol-spec.md §6.14, §11.12).
//!
//! A retirement is announced by the record `crate::retire` keeps in the data folder;
//! the sweep reads it (`Engine::retire_tick`), pushes `Retiring` once to every
//! subscribed connection when it first sees it, refuses `Create` from then on, and at
//! the time closes every talk as a close does: a receipt signed by the relay, the
//! `Closed` push (with an empty farewell: no member closed it) to members online, and
//! a tombstone with the receipt for members who come back.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nook_crypto::auth::RelayIdentity;
use nook_proto::{ErrorCode, ErrorFrame, MailboxId, Push, RotationStatement};

use super::mailbox::Mailbox;
use super::{Engine, EngineError, err, lock};
use crate::identity;

/// The rotation history and the retirement, as the engine holds them.
#[derive(Debug, Default)]
pub(crate) struct RelayLife {
    /// The data folder, when the store is `<data>/store` (else nothing is read).
    data_dir: Option<PathBuf>,
    rotations: Vec<RotationStatement>,
    retiring_at: Mutex<Option<u64>>,
}

impl RelayLife {
    /// Reads the rotation history (checked to end at `identity`) and the retirement
    /// of the data folder around the store folder `store`.
    pub(crate) fn load(store: &Path, identity: &RelayIdentity) -> Result<RelayLife, EngineError> {
        let data_dir = store
            .parent()
            .filter(|_| store.file_name() == Some(identity::STORE_DIR.as_ref()))
            .map(Path::to_path_buf);
        let Some(dir) = data_dir else {
            return Ok(RelayLife::default());
        };
        let rotations = identity::load_rotations(&dir, &identity.public())
            .map_err(|e| EngineError::Corrupt(e.to_string()))?;
        let retiring_at = crate::retire::read(&dir).unwrap_or_else(|e| {
            tracing::error!("the retirement record is unreadable ({e}); ignored");
            None
        });
        if let Some(at) = retiring_at {
            tracing::info!(at = %nook_crypto::auth::rfc3339_utc(at), "this relay is retiring");
        }
        Ok(RelayLife {
            data_dir: Some(dir),
            rotations,
            retiring_at: Mutex::new(retiring_at),
        })
    }
}

impl Engine {
    /// The relay's key rotation history, oldest first.
    pub fn rotations(&self) -> &[RotationStatement] {
        &self.life.rotations
    }

    /// When the relay retires, if a retirement is announced.
    pub fn retiring_at(&self) -> Option<u64> {
        *lock(&self.life.retiring_at)
    }

    /// `Retiring` once a retirement is announced: no new talk.
    pub(super) fn refuse_if_retiring(&self) -> Result<(), ErrorFrame> {
        match self.retiring_at() {
            Some(_) => Err(err(
                ErrorCode::Retiring,
                "this relay is retiring and takes no new talk",
            )),
            None => Ok(()),
        }
    }

    /// Announces the retirement at `at`: pushes `Retiring` to every subscribed
    /// connection (once each) if it is new or moved. Tests call it directly; the
    /// relay by [`Engine::retire_tick`].
    pub fn announce_retirement(&self, at: u64) {
        {
            let mut current = lock(&self.life.retiring_at);
            if *current == Some(at) {
                return;
            }
            *current = Some(at);
        }
        tracing::info!(at = %nook_crypto::auth::rfc3339_utc(at), "retirement announced: new talks are refused");
        let all: Vec<Arc<Mutex<Mailbox>>> = lock(&self.mailboxes).values().cloned().collect();
        let mut told = HashSet::new();
        let push = nook_proto::ServerFrame::Push(Push::Retiring { at });
        for arc in all {
            let mb = lock(&arc);
            for s in &mb.subscribers {
                if told.insert(s.outbox.id) {
                    s.outbox.send(&push);
                }
            }
        }
    }

    /// Run by every sweep: picks up a new retirement record, and at the retirement
    /// time closes every talk. Returns the talks closed.
    pub(super) fn retire_tick(&self) -> usize {
        if let Some(dir) = &self.life.data_dir {
            match crate::retire::read(dir) {
                Ok(Some(at)) => self.announce_retirement(at),
                Ok(None) => {}
                Err(e) => tracing::error!("the retirement record is unreadable: {e}"),
            }
        }
        match self.retiring_at() {
            Some(at) if self.now() >= at => self.close_all(),
            _ => 0,
        }
    }

    /// Closes every live talk with a receipt, as a close by a member does.
    fn close_all(&self) -> usize {
        let now = self.now();
        // Every live talk, in memory or not; each loaded in turn.
        let all: Vec<MailboxId> = lock(&self.expiries).iter().map(|(_, id)| *id).collect();
        let mut closed = Vec::new();
        for id in all {
            let arc = match self.resident(&id) {
                Ok(Some(arc)) => arc,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(
                        "could not load a talk to close at retirement, will retry: {e}"
                    );
                    continue;
                }
            };
            let arc = super::MailboxRef {
                engine: self,
                id,
                arc,
            };
            let mut mb = lock(&arc);
            if !mb.talk.close_by_relay(now) {
                continue;
            }
            let deleted = mb.envelopes.len() as u64;
            let expires = mb.talk.expires_at();
            let receipt = self.identity.sign_receipt(mb.id, now, deleted);
            if let Err(e) = self.destroy(&mut mb, expires, Some(&receipt)) {
                tracing::error!("could not close a talk at retirement, will retry: {e}");
                continue;
            }
            let subscribers: Vec<_> = mb.subscribers.drain(..).map(|s| s.outbox).collect();
            closed.push((subscribers, mb.id, receipt));
        }
        if closed.is_empty() {
            return 0;
        }
        // The tombstones (with their receipts) are durable before anyone is told.
        if let Err(e) = self.flush() {
            tracing::error!("flushing the store at retirement: {e}");
        }
        let n = closed.len();
        for (subscribers, mailbox, receipt) in closed {
            let push = Push::Closed {
                mailbox,
                receipt,
                farewell: Vec::new(),
            };
            for (outbox, frame) in crate::outbox::pushes_of(subscribers.into_iter(), push) {
                outbox.send_wire(frame);
            }
        }
        tracing::info!(count = n, "retired: every talk closed with a receipt");
        n
    }
}
