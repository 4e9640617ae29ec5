//! What members send each other: `Put` stores an envelope and pushes it, `Fetch` reads
//! back what a member missed, `Ack` releases what every recipient holds.
//!
//! An envelope lives in the envelope log, not in sled; the mailbox keeps only where
//! it is. A put is answered once the log is synced (`Durability::Log`), which is
//! cheaper than a sled flush and is all a restart needs to find it again. Until then
//! the envelope is not served, and a put whose record a failed sync gave up is
//! undone as if it had never been made (see [`Engine::put`]).

use std::sync::atomic::Ordering;

use nook_proto::codec::encode_value_into;
use nook_proto::limits::{MAX_FETCH_BYTES, MAX_FETCH_ENVELOPES, PADDING_BUCKETS};
use nook_proto::{
    Envelope, EnvelopeKind, ErrorCode, ErrorFrame, MailboxId, MemberKey, Outcome, Push, Put,
    Response, Seq,
};
use nook_vault::VaultError;

use super::mailbox::{EnvMeta, EnvRecord, env_key, welcome_key};
use super::{Engine, err, lock, storage_err, talk_err};
use crate::commit::Durability;
use crate::outbox::{Outbox, pushes_of};

impl Engine {
    /// `Put`: stores the envelope, answers `Stored` and pushes it once durable.
    ///
    /// Until then the envelope is held but not served: `Fetch`, `Ack` and the
    /// sweep see only envelopes up to the mailbox's `durable` seq. If its record
    /// is not made durable (a failed sync gives it up, see `Log::sync`), the
    /// completion undoes the put — index, quota, seq — and answers `Internal`, and
    /// nothing is pushed: a failed put has no effect, as the spec says, and a
    /// restart does not find it either. The joiner's welcome goes only with its
    /// first stored put.
    pub fn put(
        &self,
        outbox: &Outbox,
        id: u64,
        member: &MemberKey,
        req: Put,
    ) -> Result<(), ErrorFrame> {
        let len = req.body.len();
        if !PADDING_BUCKETS.contains(&len) {
            return Err(err(
                ErrorCode::TooLarge,
                format!("envelope of {len} bytes: bodies must be padded to a bucket size"),
            ));
        }
        let arc = self.mailbox(&req.mailbox)?;
        let mut mb = lock(&arc);
        let now = self.now();
        mb.talk.check_put(member, req.kind, now).map_err(talk_err)?;
        let sender = mb.talk.seat_of(member).unwrap_or(0);
        if mb.envelopes.len() as u64 >= self.limits.max_envelopes_per_mailbox
            || mb.bytes + len as u64 > self.limits.max_bytes_per_mailbox
        {
            return Err(err(
                ErrorCode::MailboxFull,
                "this talk's mailbox is full until members acknowledge what they received",
            ));
        }
        self.space.admit(self.stored_bytes(), len as u64)?;
        // Taken before anything is written: once the relay is stopping, a record
        // appended now would have nobody to answer it or undo it.
        let reservation = self.commit.reserve().ok_or_else(|| {
            err(
                ErrorCode::Internal,
                "the relay is shutting down; retry on another connection",
            )
        })?;
        let recipients = mb
            .talk
            .members()
            .iter()
            .filter(|m| m.seat != sender)
            .fold(0u64, |acc, m| acc | (1u64 << m.seat));
        let seq = mb.head + 1;
        let rec = EnvRecord {
            kind: req.kind,
            stored_at: now,
            recipients,
            body: req.body,
        };
        let key = env_key(seq);
        // Encoded and sealed in the log record's own buffer: the body is copied once.
        let loc = self
            .log
            .append_with(mb.ns.number(), &key, len + 64, |out| {
                mb.ns.seal_written(&key, out, |o| {
                    // Only a value past the codec's size limit fails to encode.
                    encode_value_into(&rec, o)
                        .map(|_| ())
                        .map_err(|_| VaultError::ValueTooLarge)
                })
            })
            .map_err(storage_err)?;
        mb.head = seq;
        mb.bytes += len as u64;
        mb.envelopes.insert(
            seq,
            EnvMeta {
                recipients,
                len: len as u64,
                loc,
            },
        );
        let envelope = Envelope {
            seq: Seq(seq),
            kind: rec.kind,
            stored_at: now,
            body: rec.body,
        };
        // The sender's own other connections (a `read --follow` beside a `send`) get
        // its chat envelopes too, so every process of a member shows what it said.
        // They are not recipients: nothing waits for their ack.
        let own_echo = req.kind == EnvelopeKind::Chat;
        let to = mb
            .subscribers
            .iter()
            .filter(|s| {
                recipients & (1u64 << s.seat) != 0
                    || (own_echo && s.seat == sender && s.outbox.id != outbox.id)
            })
            .map(|s| s.outbox.clone());
        let pushes = pushes_of(
            to,
            Push::Envelope {
                mailbox: req.mailbox,
                envelope,
            },
        );
        let settle = {
            let arc = arc.clone();
            let log = self.log.clone();
            let stats = self.stats.clone();
            let space = self.space.clone();
            move |ok: bool| {
                let mut mb = lock(&arc);
                if !ok || log.is_lost(loc) {
                    mb.undo_put(&log, seq, loc);
                    let refused = if space.disk_full_now() {
                        super::space::disk_full()
                    } else {
                        err(ErrorCode::Internal, "the relay could not store this; retry")
                    };
                    return (Outcome::Err(refused), Vec::new());
                }
                mb.durable = mb.durable.max(seq);
                stats.envelopes_stored.fetch_add(1, Ordering::Relaxed);
                let seat = 1u64 << sender;
                if mb.welcomes & seat != 0 {
                    // The member is using its seat: its welcome will not be asked for
                    // again. Not removed before: a refused or failed put leaves the
                    // join retryable.
                    match mb.ns.remove(&welcome_key(sender)) {
                        Ok(_) | Err(VaultError::NamespaceDestroyed) => {
                            space.sub_welcomes(mb.forget_welcome(sender))
                        }
                        Err(e) => tracing::error!("storage error removing a used welcome: {e}"),
                    }
                }
                if recipients == 0 {
                    // Addressed to nobody (the only member, or a pending talk's lone
                    // owner): done at once, as a restart would find it, instead of
                    // holding a place in the quota until some later ack happens to
                    // cover its seq.
                    match mb.collect(&log, seq - 1, seq) {
                        Ok(n) => {
                            stats.envelopes_deleted.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tracing::error!("storage error releasing an unaddressed envelope: {e}")
                        }
                    }
                }
                stats
                    .envelopes_delivered
                    .fetch_add(pushes.len() as u64, Ordering::Relaxed);
                (Outcome::Ok(Response::Stored { seq: Seq(seq) }), pushes)
            }
        };
        // Queued under the mailbox lock: completions of one mailbox run in seq order.
        self.commit
            .answer_reserved(reservation, Durability::Log, outbox, id, settle);
        Ok(())
    }

    /// `Fetch`: the envelopes after `after` that `member` has to receive.
    pub fn fetch(
        &self,
        mailbox: &MailboxId,
        member: &MemberKey,
        after: Seq,
        limit: u16,
    ) -> Result<Response, ErrorFrame> {
        let mb = self.mailbox(mailbox)?;
        let mb = lock(&mb);
        let seat = mb.talk.authorize(member, self.now()).map_err(talk_err)?;
        let limit = usize::from(limit.clamp(1, MAX_FETCH_ENVELOPES));
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        // Only what is durable: an envelope above `durable` may still be undone.
        let from = after.0.saturating_add(1);
        let held = if from <= mb.durable {
            mb.envelopes.range(from..=mb.durable)
        } else {
            mb.envelopes.range(0..0)
        };
        for (seq, meta) in held {
            if meta.recipients & (1u64 << seat) == 0 {
                continue;
            }
            if items.len() == limit || bytes + meta.len as usize > MAX_FETCH_BYTES {
                more = true;
                break;
            }
            let rec = mb.load(&self.log, *seq, meta.loc).map_err(|e| {
                tracing::error!("unreadable envelope record: {e}");
                err(ErrorCode::Internal, "stored envelope is damaged")
            })?;
            bytes += rec.body.len();
            items.push(Envelope {
                seq: Seq(*seq),
                kind: rec.kind,
                stored_at: rec.stored_at,
                body: rec.body,
            });
        }
        self.stats
            .envelopes_delivered
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        Ok(Response::Envelopes { items, more })
    }

    /// `Ack`: `member` holds everything up to `upto`; delete what nobody needs.
    pub fn ack(
        &self,
        mailbox: &MailboxId,
        member: &MemberKey,
        upto: Seq,
    ) -> Result<Response, ErrorFrame> {
        let mb = self.mailbox(mailbox)?;
        let mut mb = lock(&mb);
        let seat = mb.talk.authorize(member, self.now()).map_err(talk_err)?;
        // Up to what is durable: a mark past it could cover a seq that a failed
        // put gives back, and delete its next envelope unseen.
        let upto = upto.0.min(mb.durable);
        let old = mb.acked.get(&seat).copied().unwrap_or(0);
        if upto > old {
            mb.acked.insert(seat, upto);
            // Noted before the release below: see `make_durable`.
            self.marks.note(&mb.ns, seat, upto);
            let n = mb.collect(&self.log, old, upto).map_err(storage_err)?;
            self.stats.envelopes_deleted.fetch_add(n, Ordering::Relaxed);
        }
        Ok(Response::Acked)
    }
}
