//! Random operation sequences against a reference model of one talk, over real QUIC on
//! 127.0.0.1, with graceful restarts, compaction and small log segments in between.
//!
//! The model is what the spec promises: seqs go up by one per stored envelope and never
//! repeat (not across restarts either), a member fetches exactly the envelopes addressed
//! to it that are not deleted yet, an envelope goes once every remaining recipient has
//! acked it, the quota counts what waits, chat waits for quorum, and a restart changes
//! nothing a member can see. Each case is a fixed seed, so a failure names the seed and
//! the operations that led to it; `NOOK_MODEL_CASES=500` runs more of them. Whenever
//! nothing waits, the mailbox is checked to be out of memory before the next operation,
//! so every operation on an idle talk runs on its state as loaded from the store.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use nook_client::RequestError;
use nook_crypto::{SeatSecret, TalkIdentity};
use nook_proto::limits::PADDING_BUCKETS;
use nook_proto::*;

/// Envelopes that may wait in the mailbox: small, so the quota is reached often.
const QUOTA: u64 = 6;
const OPS: usize = 48;
const DEFAULT_CASES: u64 = 12;

fn limits() -> nook_relay::engine::Limits {
    nook_relay::engine::Limits {
        max_envelopes_per_mailbox: QUOTA,
        // Small segments: rotation, dead segments and compaction happen within a case.
        log_segment_bytes: 4096,
        ..Default::default()
    }
}

/// splitmix64: a fixed sequence per seed, so every case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Stored {
    /// Seats it was addressed to: the members other than its sender when it was put.
    recipients: u64,
}

/// What the relay must hold for the talk.
struct Model {
    quorum: u8,
    head: u64,
    waiting: BTreeMap<u64, Stored>,
    acked: [u64; 3],
    /// Seats taken and not given up.
    members: u64,
    /// Reached quorum (a talk stays open once opened).
    open: bool,
}

impl Model {
    fn is_member(&self, seat: u8) -> bool {
        self.members & (1 << seat) != 0
    }

    /// What the relay does after an ack or a leave: over seqs `from+1..=to`, deletes
    /// each envelope whose remaining recipients have all acked it.
    fn collect(&mut self, from: u64, to: u64) {
        let done: Vec<u64> = self
            .waiting
            .range(from.saturating_add(1)..=to)
            .filter(|(seq, e)| {
                (0..3u8)
                    .filter(|s| e.recipients & self.members & (1 << s) != 0)
                    .all(|s| self.acked[usize::from(s)] >= **seq)
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in done {
            self.waiting.remove(&seq);
        }
    }

    /// The seqs `seat` fetches after `after`.
    fn fetch(&self, seat: u8, after: u64) -> Vec<u64> {
        self.waiting
            .range(after.saturating_add(1)..)
            .filter(|(_, e)| e.recipients & (1 << seat) != 0)
            .map(|(seq, _)| *seq)
            .collect()
    }
}

fn refusal<T>(r: Result<T, RequestError>) -> Option<ErrorCode> {
    match r {
        Ok(_) => None,
        Err(e) => Some(
            e.code()
                .unwrap_or_else(|| panic!("not a relay refusal: {e}")),
        ),
    }
}

struct Case {
    seed: u64,
    log: Vec<String>,
}

impl Case {
    fn fail(&self, what: String) -> ! {
        panic!(
            "seed {}: {what}\noperations:\n  {}",
            self.seed,
            self.log.join("\n  ")
        )
    }
    /// A request by a seat that is no member must be refused, whatever the reason.
    fn refused<T>(&self, seat: u8, what: &str, r: &Result<T, RequestError>) {
        if r.is_ok() {
            self.fail(format!(
                "seat {seat} is no member but its {what} was accepted"
            ));
        }
    }
    fn check<T: PartialEq + std::fmt::Debug>(&self, what: &str, got: T, want: T) {
        if got != want {
            self.fail(format!("{what}: relay {got:?}, model {want:?}"));
        }
    }
}

/// Every member's view of the mailbox equals the model's.
async fn check_all(case: &Case, model: &Model, members: &[Option<Member>; 3], what: &str) {
    for (seat, m) in members.iter().enumerate() {
        let Some(m) = m else { continue };
        let seat = seat as u8;
        if !model.is_member(seat) {
            continue;
        }
        let got: Vec<u64> = m.fetch(0).await.unwrap().iter().map(|e| e.seq.0).collect();
        case.check(
            &format!("{what}: seat {seat} fetches from 0"),
            got,
            model.fetch(seat, 0),
        );
    }
}

async fn run_case(seed: u64) {
    let mut rng = Rng(seed);
    let mut case = Case {
        seed,
        log: Vec::new(),
    };
    let quorum = 2 + rng.below(2) as u8;
    let mut relay = TestRelay::start_with(tempfile::tempdir().unwrap(), limits());
    let created = create(&relay, 3, quorum, ClosePolicy::Owner).await;
    let mailbox = created.owner.mailbox;
    let secrets: Vec<SeatSecret> = created.seats;
    let mut members: [Option<Member>; 3] = [Some(created.owner), None, None];
    let mut used = [true, false, false];
    let mut model = Model {
        quorum,
        head: 0,
        waiting: BTreeMap::new(),
        acked: [0; 3],
        members: 1,
        open: false,
    };
    case.log.push(format!("create: 3 seats, quorum {quorum}"));

    for _ in 0..OPS {
        // Nothing waits and nobody is subscribed: the mailbox must be in the store
        // only, so the next operation works on it as loaded back from there.
        if model.waiting.is_empty() {
            let engine = &relay.engine;
            until("the idle mailbox is evicted", || {
                engine.evict_idle();
                engine.resident_count() == 0
            })
            .await;
        }
        let roll = rng.below(100);
        let seat = rng.below(3) as u8;
        match roll {
            // A seat is taken (or a used invite is refused).
            0..=9 => {
                if seat == 0 {
                    continue;
                }
                let secret = &secrets[usize::from(seat) - 1];
                let joined = join_with(relay.connect().await, mailbox, secret).await;
                case.log.push(format!("join seat {seat}"));
                if used[usize::from(seat)] {
                    case.check(
                        "used invite",
                        refusal(joined),
                        Some(ErrorCode::InviteInvalid),
                    );
                    continue;
                }
                let (m, _, status) = joined.unwrap_or_else(|e| case.fail(format!("join: {e}")));
                used[usize::from(seat)] = true;
                model.members |= 1 << seat;
                if model.members.count_ones() >= u32::from(model.quorum) {
                    model.open = true;
                }
                case.check(
                    "state after join",
                    status.state == TalkPhase::Open,
                    model.open,
                );
                case.check("seat of the invite", m.seat, seat);
                members[usize::from(seat)] = Some(m);
            }
            // A put: chat or handshake, of a padded size or not.
            10..=44 => {
                let Some(m) = &members[usize::from(seat)] else {
                    continue;
                };
                let chat = rng.below(4) != 0;
                let kind = if chat {
                    EnvelopeKind::Chat
                } else {
                    EnvelopeKind::Handshake
                };
                let padded = rng.below(8) != 0;
                let r = if padded {
                    m.put(kind, &model.head.to_le_bytes()).await
                } else {
                    m.put_raw(kind, vec![7; PADDING_BUCKETS[0] + 1]).await
                };
                case.log.push(format!(
                    "seat {seat} puts {kind:?} {}",
                    if padded { "padded" } else { "unpadded" }
                ));
                let want = if !model.is_member(seat) {
                    None // refused, for any of the reasons a non-member is
                } else if !padded {
                    Some(ErrorCode::TooLarge)
                } else if chat && !model.open {
                    Some(ErrorCode::TalkNotOpen)
                } else if model.waiting.len() as u64 >= QUOTA {
                    Some(ErrorCode::MailboxFull)
                } else {
                    model.head += 1;
                    let recipients = model.members & !(1 << seat);
                    model.waiting.insert(model.head, Stored { recipients });
                    // Addressed to nobody: done at once.
                    model.collect(model.head - 1, model.head);
                    case.check(
                        "seq of a stored put",
                        r.as_ref().ok().map(|s| s.0),
                        Some(model.head),
                    );
                    continue;
                };
                match want {
                    Some(code) => case.check("put refusal", refusal(r), Some(code)),
                    None => case.refused(seat, "put", &r),
                }
            }
            // A fetch from some cursor.
            45..=59 => {
                let Some(m) = &members[usize::from(seat)] else {
                    continue;
                };
                let after = match rng.below(4) {
                    0 => 0,
                    1 => u64::MAX,
                    _ => rng.below(model.head + 2),
                };
                let r = m.fetch(after).await;
                case.log.push(format!("seat {seat} fetches after {after}"));
                if !model.is_member(seat) {
                    case.refused(seat, "fetch", &r);
                    continue;
                }
                let got: Vec<u64> = r.unwrap().iter().map(|e| e.seq.0).collect();
                case.check("fetch", got, model.fetch(seat, after));
            }
            // An ack up to some seq (past the head too).
            60..=79 => {
                let Some(m) = &members[usize::from(seat)] else {
                    continue;
                };
                let upto = match rng.below(4) {
                    0 => u64::MAX,
                    1 => model.head,
                    _ => rng.below(model.head + 2),
                };
                let r = m.ack(upto).await;
                case.log.push(format!("seat {seat} acks up to {upto}"));
                if !model.is_member(seat) {
                    case.refused(seat, "ack", &r);
                    continue;
                }
                r.unwrap_or_else(|e| case.fail(format!("ack: {e}")));
                let old = model.acked[usize::from(seat)];
                let upto = upto.min(model.head);
                if upto > old {
                    model.acked[usize::from(seat)] = upto;
                    model.collect(old, upto);
                }
            }
            // A member other than the owner gives up its seat.
            80..=83 => {
                if seat == 0 || !model.is_member(seat) {
                    continue;
                }
                let Some(m) = &members[usize::from(seat)] else {
                    continue;
                };
                m.leave()
                    .await
                    .unwrap_or_else(|e| case.fail(format!("leave: {e}")));
                case.log.push(format!("seat {seat} leaves"));
                model.members &= !(1 << seat);
                let head = model.head;
                model.collect(0, head);
            }
            // Only the owner may close.
            84..=86 => {
                let Some(m) = &members[usize::from(seat)] else {
                    continue;
                };
                if seat == 0 || !model.is_member(seat) {
                    continue;
                }
                case.log.push(format!("seat {seat} tries to close"));
                let r = m.close(Vec::new()).await;
                case.check("close by a member", refusal(r), Some(ErrorCode::NotAllowed));
            }
            // The relay's housekeeping: marks, expiry (none due) and compaction.
            87..=91 => {
                case.log.push("sweep and compact".into());
                relay.engine.sweep();
                relay.engine.compact();
            }
            // A graceful restart on the same folder; every member comes back.
            _ => {
                case.log.push("restart".into());
                let who: Vec<(usize, TalkIdentity, u8)> = members
                    .iter_mut()
                    .enumerate()
                    .filter_map(|(i, m)| m.take().map(|m| (i, m.id, m.seat)))
                    .collect();
                relay = TestRelay::start_with(relay.stop().await, limits());
                for (i, id, s) in who {
                    if model.is_member(s) {
                        members[i] = Some(reconnect(&relay, id, mailbox, s).await);
                    }
                }
                check_all(&case, &model, &members, "after restart").await;
            }
        }
    }
    check_all(&case, &model, &members, "at the end").await;

    // Every remaining member acks everything: nothing may wait any more.
    for (seat, m) in members.iter().enumerate() {
        let Some(m) = m else { continue };
        if model.is_member(seat as u8) {
            m.ack(u64::MAX).await.unwrap();
        }
    }
    for (seat, m) in members.iter().enumerate() {
        let Some(m) = m else { continue };
        if model.is_member(seat as u8) {
            case.check("after every ack", m.fetch(0).await.unwrap().len(), 0);
        }
    }

    // The talk ends, closed by its owner or by its TTL; after a restart every member
    // that was left learns "closed".
    let owner = members[0].take().unwrap();
    let mut ended: Vec<(TalkIdentity, u8)> = Vec::new();
    if rng.below(2) == 0 {
        case.log.push("the owner closes".into());
        owner.close(Vec::new()).await.unwrap();
    } else {
        case.log.push("the TTL passes".into());
        relay.clock.advance(3601);
        case.check("talks expired by the sweep", relay.engine.sweep(), 1);
        ended.push((owner.id, 0));
    }
    ended.extend(
        members
            .iter_mut()
            .filter_map(|m| m.take())
            .filter(|m| model.is_member(m.seat))
            .map(|m| (m.id, m.seat)),
    );
    let relay = TestRelay::start_with(relay.stop().await, limits());
    for (id, s) in ended {
        let m = Member {
            id,
            conn: relay.connect().await,
            mailbox,
            seat: s,
        };
        case.check(
            "auth after the end and a restart",
            refusal(m.auth_on(&m.conn).await),
            Some(ErrorCode::MailboxClosed),
        );
    }
    relay.stop().await;
}

#[tokio::test]
async fn random_operations_match_the_model_across_restarts() {
    let cases = std::env::var("NOOK_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    for seed in 1..=cases {
        run_case(seed).await;
    }
}
