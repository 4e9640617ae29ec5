//! keybench: what the end-to-end key handling costs, per join, per rotation, and for
//! the full rekey of a talk after a leave — the members' side only, in one process,
//! through the client's own transitions (`nook_client::member::TalkState`), with a
//! stand-in relay that hands every envelope to every member but its sender (the
//! relay's share is one stored envelope per blob, which `relaybench` measures).
//!
//! For each talk size N it builds a talk of N members (every pair met), then:
//! - **join**: one more member takes a seat; everyone processes everything until
//!   nothing new is put. Reported: envelopes and bytes put, the CPU time of all
//!   parties together, and of the busiest one (they run on different devices).
//! - **rotation**: a member leaves (the relay's status says so); every remaining
//!   member rotates and sends its new chain to each other one, then processes the
//!   others'. Reported as for a join; "busiest" is one member's rotate + receive.
//!
//! Prints one JSON line per measurement.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use nook_client::TalkOptions;
use nook_client::member::TalkState;
use nook_crypto::{Fingerprint, Invite, RelayAddr, TalkIdentity};
use nook_proto::{ClosePolicy, Envelope, EnvelopeKind, MailboxId, Seq, TalkPhase, TalkStatus};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "keybench",
    about = "nook end-to-end key handling: join and rotation cost"
)]
struct Args {
    /// Talk sizes (members before the join, and before the leave).
    #[arg(long, value_delimiter = ',', default_value = "2,10,64")]
    members: Vec<u8>,
    /// Repetitions per size (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// What `TalkState::joined` answers besides the state: the envelopes to put.
/// (Earlier versions returned the announcement alone.)
trait IntoPuts {
    fn into_puts(self) -> Vec<(EnvelopeKind, Vec<u8>)>;
}
impl IntoPuts for Vec<(EnvelopeKind, Vec<u8>)> {
    fn into_puts(self) -> Vec<(EnvelopeKind, Vec<u8>)> {
        self
    }
}
impl IntoPuts for Vec<u8> {
    fn into_puts(self) -> Vec<(EnvelopeKind, Vec<u8>)> {
        vec![(EnvelopeKind::Handshake, self)]
    }
}

fn status(members: u8, seats: u8, left: u64) -> TalkStatus {
    TalkStatus {
        state: TalkPhase::Open,
        members,
        seats,
        quorum: 2,
        close: ClosePolicy::Owner,
        expires_at: u64::MAX / 2,
        left,
        schedule: None,
    }
}

/// The stand-in relay: every envelope, in seq order, with its sender's seat.
struct Net {
    log: Vec<(u8, Envelope)>,
}

#[derive(Default, Clone, Copy)]
struct Cost {
    envelopes: usize,
    bytes: usize,
    total: Duration,
    busiest: Duration,
}

impl Net {
    fn put(&mut self, from: u8, kind: EnvelopeKind, body: Vec<u8>) -> usize {
        let seq = self.log.len() as u64 + 1;
        let len = body.len();
        self.log.push((
            from,
            Envelope {
                seq: Seq(seq),
                kind,
                stored_at: 0,
                body,
            },
        ));
        len
    }

    /// Lets every member process what it has not seen, and put its answers, until
    /// nothing new is put; adds what it cost, per member, to `spent`.
    fn settle(&mut self, members: &mut [TalkState], spent: &mut [Duration], cost: &mut Cost) {
        for _ in 0..16 {
            let before = self.log.len();
            for (m, t) in members.iter_mut().zip(spent.iter_mut()) {
                let pending: Vec<Envelope> = self
                    .log
                    .iter()
                    .filter(|(from, e)| *from != m.seat && e.seq.0 > m.cursor)
                    .map(|(_, e)| e.clone())
                    .collect();
                for e in pending {
                    let start = Instant::now();
                    let h = m.handle_envelope(&e);
                    *t += start.elapsed();
                    for (k, b) in h.outgoing {
                        cost.envelopes += 1;
                        cost.bytes += self.put(m.seat, k, b);
                    }
                }
            }
            if self.log.len() == before {
                return;
            }
        }
    }
}

/// A free seat: its invite and its sealed welcome.
type FreeSeat = (Invite, Vec<u8>);

/// A talk of `n` members who all met, with the invites of `spare` more seats.
fn talk(n: u8, spare: u8) -> anyhow::Result<(Net, Vec<TalkState>, Vec<FreeSeat>)> {
    let relay = RelayAddr {
        fingerprint: Fingerprint([1; 32]),
        host: "127.0.0.1".into(),
        port: 4433,
    };
    let seats = n + spare;
    let new = TalkState::create(
        &relay,
        &TalkOptions {
            seats,
            quorum: 2,
            ttl_secs: 3600,
            close: ClosePolicy::Owner,
            alias: "owner".into(),
            schedule: None,
            pattern: Default::default(),
        },
        0,
    )?;
    let mut creator = new.state;
    let invites = creator.created(&relay, MailboxId([5; 16]), status(1, seats, 0), &new.seats);
    let mut offers: Vec<FreeSeat> = invites
        .iter()
        .zip(&new.params.offers)
        .map(|(i, o)| Ok((i.parse::<Invite>()?, o.welcome.clone())))
        .collect::<anyhow::Result<_>>()?;
    let mut net = Net { log: Vec::new() };
    let mut members = vec![creator];
    let mut spent = vec![Duration::ZERO; usize::from(seats)];
    for seat in 1..n {
        let (invite, welcome) = offers.remove(0);
        let m = join(
            &mut net,
            &invite,
            seat,
            &welcome,
            members.len() as u8 + 1,
            seats,
        )?;
        members.push(m.0);
        net.settle(&mut members, &mut spent, &mut Cost::default());
    }
    Ok((net, members, offers))
}

/// Takes `seat`; returns the member, the time its own join took, and what it put.
fn join(
    net: &mut Net,
    invite: &Invite,
    seat: u8,
    welcome: &[u8],
    members_after: u8,
    seats: u8,
) -> anyhow::Result<(TalkState, Duration, Cost)> {
    let start = Instant::now();
    let (mut m, out) = TalkState::joined(
        invite,
        TalkIdentity::generate(&mut rand::rng()),
        &format!("member-{seat}"),
        seat,
        welcome,
        status(members_after, seats, 0),
    )?;
    let took = start.elapsed();
    m.cursor = net.log.len() as u64;
    let mut cost = Cost::default();
    for (k, b) in out.into_puts() {
        cost.envelopes += 1;
        cost.bytes += net.put(seat, k, b);
    }
    Ok((m, took, cost))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn report(what: &str, n: u8, costs: &[Cost]) {
    let c = costs[0];
    let total = median(costs.iter().map(|c| c.total).collect());
    let busiest = median(costs.iter().map(|c| c.busiest).collect());
    println!(
        "{}",
        json!({
            "what": what,
            "members": n,
            "envelopes": c.envelopes,
            "bytes": c.bytes,
            "cpu_ms_all": total.as_secs_f64() * 1e3,
            "cpu_ms_busiest": busiest.as_secs_f64() * 1e3,
        })
    );
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for &n in &args.members {
        if !(2..=63).contains(&n) && n != 64 {
            bail!("talk sizes are 2..=64");
        }
        let mut joins = Vec::new();
        let mut rotations = Vec::new();
        for _ in 0..args.runs {
            // A join into a talk of n members (n + 1 seats; 64 is the most, so a
            // 64-member talk is measured with 63 members and one joiner).
            let before = n.min(63);
            let (mut net, mut members, mut free) = talk(before, 1)?;
            let (invite, welcome) = free.pop().context("a free seat")?;
            let (m, took, mut cost) =
                join(&mut net, &invite, before, &welcome, before + 1, before + 1)?;
            members.push(m);
            let mut spent = vec![Duration::ZERO; members.len()];
            let last = spent.len() - 1;
            spent[last] = took;
            net.settle(&mut members, &mut spent, &mut cost);
            cost.total = spent.iter().sum();
            cost.busiest = spent.iter().copied().max().unwrap_or_default();
            joins.push(cost);

            // A leave from a talk of n members: every other member rotates.
            let (mut net, mut members, _) = if n == before + 1 {
                (net, members, Vec::new())
            } else {
                talk(n, 0)?
            };
            let leaver = members.pop().context("a leaver")?;
            let left = 1u64 << leaver.seat;
            let mut spent = vec![Duration::ZERO; members.len()];
            let mut cost = Cost::default();
            for (m, t) in members.iter_mut().zip(spent.iter_mut()) {
                let start = Instant::now();
                let h = m.on_status(status(n - 1, n, left));
                *t += start.elapsed();
                for (k, b) in h.outgoing {
                    cost.envelopes += 1;
                    cost.bytes += net.put(m.seat, k, b);
                }
            }
            net.settle(&mut members, &mut spent, &mut cost);
            cost.total = spent.iter().sum();
            cost.busiest = spent.iter().copied().max().unwrap_or_default();
            rotations.push(cost);
        }
        report("join", n.min(63), &joins);
        report("rotation", n, &rotations);
    }
    Ok(())
}
