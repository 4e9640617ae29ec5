//! Who holds a seat in a mailbox, and a mailbox's life from `Create` to `Close`.
//!
//! Create, join, leave and close change who is in the talk or end it: each checks a
//! relay-auth signature and is answered only once durable. Auth, subscribe and
//! unsubscribe tie a connection to a seat it already holds, or untie it. What
//! members send each other (put, fetch, ack) is in `envelopes`.

use std::sync::atomic::Ordering;

use nook_crypto::auth::{AuthOp, params_digest, verify_relay_auth};
use nook_crypto::kdf::sha256;
use nook_proto::codec::encode_value;
use nook_proto::limits::{MAX_FAREWELL, PADDING_BUCKETS};
use nook_proto::talk::Talk;
use nook_proto::{
    Close, Create, ErrorCode, ErrorFrame, Join, MailboxId, MemberKey, Push, Response, Seq,
    Signature, TalkError, TokenHash,
};
use nook_vault::VaultError;

use super::mailbox::{K_HEAD, K_META, Mailbox, MailboxMeta, Subscriber, ns_id, welcome_key};
use super::{Engine, err, lock, storage_err, talk_err};
use crate::outbox::{Outbox, pushes_of};

impl Engine {
    /// `Create`: verifies the owner's signature, stores the mailbox and answers once
    /// it is durable. Returns the new mailbox for the connection's auth table.
    pub fn create(
        &self,
        outbox: &Outbox,
        id: u64,
        challenge: &[u8; 32],
        req: Create,
    ) -> Result<MailboxId, ErrorFrame> {
        self.refuse_if_retiring()?;
        let digest = params_digest(&req.params)
            .map_err(|_| err(ErrorCode::BadRequest, "parameters cannot be encoded"))?;
        verify_relay_auth(
            &req.owner,
            AuthOp::Create,
            challenge,
            &MailboxId([0; 16]),
            &digest,
            &req.signature,
        )
        .map_err(|_| err(ErrorCode::BadSignature, "create signature does not verify"))?;
        // The relay's own bound, below the protocol's: a talk it would keep longer than
        // its operator allows is refused whole, never shortened behind the owner's back.
        let max_ttl = self.limits.max_ttl_secs;
        if req.params.ttl_secs > max_ttl {
            return Err(err(
                ErrorCode::BadRequest,
                format!(
                    "this relay keeps talks at most {} ({max_ttl} s); ask for a shorter ttl",
                    human_secs(max_ttl)
                ),
            ));
        }
        let now = self.now();
        let talk = Talk::create(&req.params, req.owner, now).map_err(talk_err)?;
        let welcome_bytes: u64 = req
            .params
            .offers
            .iter()
            .map(|o| o.welcome.len() as u64)
            .sum();
        self.space.admit(self.stored_bytes(), welcome_bytes)?;
        let mut mailbox_id = MailboxId([0; 16]);
        let ns = loop {
            rand::Rng::fill_bytes(&mut rand::rng(), &mut mailbox_id.0);
            match self.vault.create_namespace(&ns_id(&mailbox_id)) {
                Ok(ns) => break ns,
                Err(VaultError::AlreadyExists) => continue,
                Err(e) => return Err(storage_err(e)),
            }
        };
        let meta = encode_value(&MailboxMeta {
            mailbox: mailbox_id,
            talk: talk.clone(),
        })
        .map_err(|_| err(ErrorCode::Internal, "cannot encode mailbox"))?;
        let welcome_keys: Vec<[u8; 2]> = (1..req.params.seats).map(welcome_key).collect();
        let mut items: Vec<(&[u8], &[u8])> = vec![(K_META, &meta), (K_HEAD, &[0u8; 8])];
        for (k, offer) in welcome_keys.iter().zip(&req.params.offers) {
            items.push((k, &offer.welcome));
        }
        ns.put_batch(&items).map_err(storage_err)?;
        let mut mb = Mailbox::new(mailbox_id, ns, talk, 0);
        for (seat, offer) in (1..req.params.seats).zip(&req.params.offers) {
            mb.keep_welcome(seat, offer.welcome.len());
        }
        self.space.add_welcomes(mb.welcome_bytes());
        let status = mb.status();
        lock(&self.expiries).insert((mb.talk.expires_at(), mailbox_id));
        lock(&self.timers).extend(mb.talk.timers().into_iter().map(|at| (at, mailbox_id)));
        self.live.fetch_add(1, Ordering::Relaxed);
        // Never in memory: everything of a new talk is in its namespace already.
        self.stats.mailboxes_created.fetch_add(1, Ordering::Relaxed);
        self.later(
            outbox,
            id,
            Response::Created {
                mailbox: mailbox_id,
                status,
            },
            vec![],
        );
        Ok(mailbox_id)
    }

    /// `Join`: spends the token, hands back the welcome, pushes "seat taken" (and
    /// "opened" when quorum is reached) once durable.
    pub fn join(
        &self,
        outbox: &Outbox,
        id: u64,
        challenge: &[u8; 32],
        req: Join,
    ) -> Result<u8, ErrorFrame> {
        verify_relay_auth(
            &req.member,
            AuthOp::Join,
            challenge,
            &req.mailbox,
            &req.token,
            &req.signature,
        )
        .map_err(|_| err(ErrorCode::BadSignature, "join signature does not verify"))?;
        // A joiner is no member: after a scheduled talk's window, its answer is that
        // window's end, not the members' "closed".
        let mb = self.mailbox(&req.mailbox).map_err(|e| {
            if e.code == ErrorCode::MailboxClosed && self.ended_by_window(&req.mailbox) {
                talk_err(TalkError::WindowEnded)
            } else {
                e
            }
        })?;
        // A seat taken is a small write, but a write: refused at the disk reserve,
        // which is kept for what frees space.
        self.space.admit_disk(0)?;
        let mut mb = lock(&mb);
        let token_hash = TokenHash(sha256(&[&req.token]));
        let now = self.now();
        let joined = mb
            .talk
            .join(&token_hash, req.member, now)
            .map_err(talk_err)?;
        let welcome = if mb.welcomes & (1u64 << joined.seat) != 0 {
            mb.ns.get(&welcome_key(joined.seat)).map_err(storage_err)?
        } else {
            None
        };
        let status = mb.status();
        let (welcome, pushes) = if joined.retry {
            // The same key retries: hand the welcome over again while it is kept.
            let Some(welcome) = welcome else {
                return Err(talk_err(TalkError::InviteInvalid));
            };
            (welcome, vec![])
        } else {
            mb.save_meta().map_err(storage_err)?;
            let subscribers = || mb.subscribers.iter().map(|s| s.outbox.clone());
            let mut pushes = pushes_of(
                subscribers(),
                Push::SeatTaken {
                    mailbox: req.mailbox,
                    status,
                },
            );
            if joined.opened {
                pushes.extend(pushes_of(
                    subscribers(),
                    Push::Opened {
                        mailbox: req.mailbox,
                        status,
                    },
                ));
            }
            (welcome.unwrap_or_default(), pushes)
        };
        self.later(
            outbox,
            id,
            Response::Joined {
                seat: joined.seat,
                welcome,
                status,
            },
            pushes,
        );
        Ok(joined.seat)
    }

    /// `Auth`: proves an existing member's key on this connection.
    pub fn auth(
        &self,
        challenge: &[u8; 32],
        mailbox: &MailboxId,
        member: &MemberKey,
        signature: &Signature,
    ) -> Result<Response, ErrorFrame> {
        verify_relay_auth(member, AuthOp::Auth, challenge, mailbox, &[], signature)
            .map_err(|_| err(ErrorCode::BadSignature, "auth signature does not verify"))?;
        let mb = self.mailbox(mailbox)?;
        let mb = lock(&mb);
        mb.talk.authorize(member, self.now()).map_err(talk_err)?;
        // What a member could have seen: a put still being made durable may fail.
        Ok(Response::Authed {
            status: mb.status(),
            head: Seq(mb.durable),
        })
    }

    /// `Subscribe`: pushes for `mailbox` go to `outbox` from now on.
    pub fn subscribe(
        &self,
        outbox: &Outbox,
        mailbox: &MailboxId,
        member: &MemberKey,
    ) -> Result<Response, ErrorFrame> {
        let mb = self.mailbox(mailbox)?;
        let mut mb = lock(&mb);
        let seat = mb.talk.authorize(member, self.now()).map_err(talk_err)?;
        if !mb.subscribers.iter().any(|s| s.outbox.id == outbox.id) {
            mb.subscribers.push(Subscriber {
                outbox: outbox.clone(),
                seat,
            });
        }
        Ok(Response::Subscribed {
            status: mb.status(),
        })
    }

    /// Forgets the subscriptions of outbox `outbox_id` (its connection ended).
    pub fn unsubscribe(&self, outbox_id: u64, mailboxes: &[MailboxId]) {
        for id in mailboxes {
            let Some(mb) = lock(&self.mailboxes).get(id).cloned() else {
                continue;
            };
            lock(&mb).subscribers.retain(|s| s.outbox.id != outbox_id);
            drop(mb);
            self.evict_if_idle(id, None);
        }
    }

    /// `Leave`: removes the member's seat; the others are told once durable.
    pub fn leave(
        &self,
        outbox: &Outbox,
        id: u64,
        challenge: &[u8; 32],
        mailbox: &MailboxId,
        member: &MemberKey,
        signature: &Signature,
    ) -> Result<(), ErrorFrame> {
        verify_relay_auth(member, AuthOp::Leave, challenge, mailbox, &[], signature)
            .map_err(|_| err(ErrorCode::BadSignature, "leave signature does not verify"))?;
        let arc = self.mailbox(mailbox)?;
        let mut mb = lock(&arc);
        let now = self.now();
        let left = mb.talk.leave(member, now).map_err(talk_err)?;
        // The leaver's other connections (a follower in another process) are told
        // too, then unsubscribed: their seat is gone.
        let leaver_elsewhere: Vec<Outbox> = mb
            .subscribers
            .iter()
            .filter(|s| s.seat == left.seat && s.outbox.id != outbox.id)
            .map(|s| s.outbox.clone())
            .collect();
        mb.subscribers.retain(|s| s.seat != left.seat);
        if left.empty {
            let expires = mb.talk.expires_at();
            let status = mb.status();
            self.destroy(&mut mb, expires, None).map_err(storage_err)?;
            let pushes = pushes_of(
                leaver_elsewhere.into_iter(),
                Push::MemberLeft {
                    mailbox: *mailbox,
                    status,
                },
            );
            self.later(outbox, id, Response::Left, pushes);
            return Ok(());
        }
        mb.save_meta().map_err(storage_err)?;
        let head = mb.head;
        let n = mb.collect(&self.log, 0, head).map_err(storage_err)?;
        self.stats.envelopes_deleted.fetch_add(n, Ordering::Relaxed);
        let status = mb.status();
        let pushes = pushes_of(
            mb.subscribers
                .iter()
                .map(|s| s.outbox.clone())
                .chain(leaver_elsewhere),
            Push::MemberLeft {
                mailbox: *mailbox,
                status,
            },
        );
        self.later(outbox, id, Response::Left, pushes);
        Ok(())
    }

    /// `Close`: checks the close policy, deletes the mailbox (crypto-shredding its
    /// key first), keeps a tombstone, and answers with a signed receipt.
    pub fn close(
        &self,
        outbox: &Outbox,
        id: u64,
        challenge: &[u8; 32],
        member: &MemberKey,
        req: Close,
    ) -> Result<(), ErrorFrame> {
        if req.farewell.len() > MAX_FAREWELL || !PADDING_BUCKETS.contains(&req.farewell.len()) {
            return Err(err(
                ErrorCode::TooLarge,
                "the farewell must be one padded bucket of at most 2048 bytes",
            ));
        }
        let digest = sha256(&[&req.farewell]);
        verify_relay_auth(
            member,
            AuthOp::Close,
            challenge,
            &req.mailbox,
            &digest,
            &req.signature,
        )
        .map_err(|_| err(ErrorCode::BadSignature, "close signature does not verify"))?;
        let arc = self.mailbox(&req.mailbox)?;
        let mut mb = lock(&arc);
        let now = self.now();
        mb.talk.close(member, now).map_err(talk_err)?;
        let deleted = mb.envelopes.len() as u64;
        let expires = mb.talk.expires_at();
        let receipt = self.identity.sign_receipt(req.mailbox, now, deleted);
        self.destroy(&mut mb, expires, Some(&receipt))
            .map_err(storage_err)?;
        let push = Push::Closed {
            mailbox: req.mailbox,
            receipt,
            farewell: req.farewell,
        };
        let pushes = pushes_of(
            mb.subscribers
                .drain(..)
                .filter(|s| s.outbox.id != outbox.id)
                .map(|s| s.outbox),
            push,
        );
        self.later(outbox, id, Response::Closed { receipt }, pushes);
        Ok(())
    }

    /// Whether `member` holds a seat in `mailbox`.
    pub fn is_member(&self, mailbox: &MailboxId, member: &MemberKey) -> bool {
        self.mailbox(mailbox)
            .map(|m| lock(&m).talk.is_member(member))
            .unwrap_or(false)
    }
}

/// `secs` as the client's `--ttl` writes it, largest unit first: `1h`, `1h30m`, `30d`.
fn human_secs(secs: u32) -> String {
    let mut out = String::new();
    let mut rest = secs;
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if rest >= len {
            out.push_str(&format!("{}{unit}", rest / len));
            rest %= len;
        }
    }
    if out.is_empty() { "0s".into() } else { out }
}

#[cfg(test)]
mod tests {
    use super::human_secs;

    #[test]
    fn a_ttl_bound_reads_as_the_client_writes_it() {
        assert_eq!(human_secs(3600), "1h");
        assert_eq!(human_secs(5400), "1h30m");
        assert_eq!(human_secs(30 * 86_400), "30d");
        assert_eq!(human_secs(90), "1m30s");
    }
}
