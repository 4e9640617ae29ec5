//! Client-side benchmarks (issue 4): `nook send` as a one-shot process, a new talk to
//! its first delivered message (CLI processes and in-process API), and closing a talk
//! that holds 10,000 messages on the relay and on the client.
//!
//! Runs the release `nook-relay` and `nook` binaries from target/release on 127.0.0.1.
//! usage: cargo build --release -p nook-relay -p nook-cli -p nook-bench &&
//!        target/release/clibench [--sends 200] [--talks 20] [--runs 3]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use nook_bench::relay::{RelayProcess, run_nook as nook, sibling_bin};
use nook_client::{Client, TalkOptions};
use nook_crypto::auth::{AuthOp, params_digest, sign_relay_auth};
use nook_crypto::kdf::sha256;
use nook_crypto::{EnvelopeKey, Purpose, RelayAddr, SeatSecret, TalkIdentity};
use nook_proto::{
    ClientFrame, ClosePolicy, Create, EnvelopeKind, MailboxId, Outcome, Put, Request, Response,
    SeatOffer, TalkParams,
};

#[derive(Parser, Debug)]
struct Args {
    /// One-shot `nook send` processes to time.
    #[arg(long, default_value_t = 200)]
    sends: usize,
    /// New-talk-to-first-message rounds.
    #[arg(long, default_value_t = 20)]
    talks: usize,
    /// Messages in the talk that is closed.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Repetitions of the close measurements.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn json(s: &str) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(
        s.lines().next().context("no output")?,
    )?)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    let (p50, p99) = (pct(&ms, 0.5), pct(&ms, 0.99));
    println!(
        "{name:<44} n={:<5} p50 {p50:8.2} ms   p99 {p99:8.2} ms   min {:8.2} ms",
        ms.len(),
        ms[0]
    );
    serde_json::json!({"name": name, "n": ms.len(), "p50_ms": p50, "p99_ms": p99, "min_ms": ms[0]})
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut results = Vec::new();

    // 1. `nook send` one-shot: connect, auth, sync, send, stored ack, exit.
    {
        let relay = RelayProcess::start(&sibling_bin("nook-relay")?)?;
        let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let (_, out) = nook(
            a.path(),
            &["--json", "new", "--relay", &relay.addr.to_string()],
        )?;
        let new = json(&out)?;
        let talk = new["talk"].as_str().context("talk")?.to_string();
        nook(
            b.path(),
            &["join", new["invites"][0].as_str().context("invite")?],
        )?;
        let msg = "m".repeat(1024);
        let mut times = Vec::new();
        for i in 0..args.sends + 5 {
            let (t, _) = nook(a.path(), &["send", &talk, &msg])?;
            if i >= 5 {
                times.push(ms(t));
            }
        }
        results.push(summary("nook send (one-shot process, 1 KiB)", times));
    }

    // 2. New talk to first delivered message, as four CLI processes. Twice: with
    // fresh homes (the first talk these two people ever have: the homes are created
    // on the way), and with homes already in use (every later talk).
    for homes_in_use in [false, true] {
        let relay = RelayProcess::start(&sibling_bin("nook-relay")?)?;
        let mut cli = Vec::new();
        for _ in 0..args.talks {
            let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
            if homes_in_use {
                nook(a.path(), &["list"])?;
                nook(b.path(), &["list"])?;
            }
            let t = Instant::now();
            let (_, out) = nook(
                a.path(),
                &["--json", "new", "--relay", &relay.addr.to_string()],
            )?;
            let new = json(&out)?;
            let talk = new["talk"].as_str().context("talk")?.to_string();
            let (_, out) = nook(
                b.path(),
                &[
                    "--json",
                    "join",
                    new["invites"][0].as_str().context("invite")?,
                ],
            )?;
            let tb = json(&out)?["talk"].as_str().context("talk")?.to_string();
            nook(a.path(), &["send", &talk, "first message"])?;
            let (_, out) = nook(b.path(), &["--json", "read", &tb, "--new"])?;
            let took = t.elapsed();
            if !out.contains("first message") {
                bail!("first message not delivered: {out}");
            }
            cli.push(ms(took));
        }
        let which = if homes_in_use {
            "homes in use"
        } else {
            "fresh homes"
        };
        results.push(summary(
            &format!("new talk -> first message (4 CLI processes, {which})"),
            cli,
        ));

        // The same through the library in one process (no process start-ups), with the
        // time of each step.
        let addr = relay.addr.to_string();
        let mut api = Vec::new();
        let mut steps: [Vec<f64>; 4] = Default::default();
        for _ in 0..args.talks {
            let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
            let (ca, cb) = (Client::new(a.path())?, Client::new(b.path())?);
            if homes_in_use {
                ca.list(false).await?;
                cb.list(false).await?;
            }
            let t = Instant::now();
            let created = ca
                .create(
                    &addr,
                    TalkOptions {
                        seats: 2,
                        quorum: 2,
                        ttl_secs: 3600,
                        close: ClosePolicy::Owner,
                        alias: "a".into(),
                        schedule: None,
                        pattern: Default::default(),
                    },
                )
                .await?;
            let t1 = Instant::now();
            let joined = cb.join(&created.invites[0], None).await?;
            let t2 = Instant::now();
            ca.send(&created.talk, "first message").await?;
            let t3 = Instant::now();
            let got = cb.fetch(&joined.talk).await?;
            let took = t.elapsed();
            steps[0].push(ms(t1 - t));
            steps[1].push(ms(t2 - t1));
            steps[2].push(ms(t3 - t2));
            steps[3].push(ms(t3.elapsed()));
            if !got.iter().any(|e| matches!(&e.event, nook_client::Event::Message { text, .. } if text == "first message")) {
                bail!("first message not delivered in-process");
            }
            api.push(ms(took));
        }
        results.push(summary(
            &format!("new talk -> first message (library, {which})"),
            api,
        ));
        for (step, times) in ["create", "join", "send", "fetch"].iter().zip(steps) {
            results.push(summary(&format!("  library step: {step} ({which})"), times));
        }
    }

    // 3. Close of a talk holding `messages` envelopes: relay deletion and client shredding.
    let mut relay_close = Vec::new();
    let mut client_shred = Vec::new();
    for _ in 0..args.runs {
        let relay = RelayProcess::start(&sibling_bin("nook-relay")?)?;
        relay_close.push(relay_close_time(&relay.addr.to_string(), args.messages).await?);
        client_shred.push(client_shred_time(&relay.addr.to_string(), args.messages).await?);
    }
    results.push(summary(
        &format!("relay: close a mailbox of {} envelopes", args.messages),
        relay_close,
    ));
    results.push(summary(
        &format!("client: shred a talk of {} messages", args.messages),
        client_shred,
    ));

    println!("{}", serde_json::json!({"clibench": results}));
    Ok(())
}

/// Creates a mailbox over the raw protocol, stores `n` 2 KiB envelopes nobody acks,
/// then times Close → Closed (the relay effaces the key, drops the data, signs).
async fn relay_close_time(addr: &str, n: usize) -> Result<f64> {
    let addr: RelayAddr = addr.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let conn = nook_client::RelayConnection::connect(&addr).await?;
    let mut rng = rand::rng();
    let id = TalkIdentity::generate(&mut rng);
    let seat = SeatSecret::random(&mut rng);
    let params = TalkParams {
        seats: 2,
        quorum: 1,
        ttl_secs: 3600,
        close: ClosePolicy::Owner,
        offers: vec![SeatOffer {
            token_hash: seat.token_hash(),
            welcome: nook_crypto::seal::seal_welcome(&seat, b"w")?,
        }],
        schedule: None,
    };
    let sig = sign_relay_auth(
        &id,
        AuthOp::Create,
        &conn.hello().challenge,
        &MailboxId([0; 16]),
        &params_digest(&params)?,
    );
    let Response::Created { mailbox, .. } = conn
        .request(Request::Create(Create {
            params,
            owner: id.member_key(),
            signature: sig,
        }))
        .await?
    else {
        bail!("create failed");
    };
    // Join the second seat so envelopes have a recipient and stay stored.
    let joiner = nook_client::RelayConnection::connect(&addr).await?;
    let jid = TalkIdentity::generate(&mut rng);
    let token = *seat.join_token();
    let jsig = sign_relay_auth(
        &jid,
        AuthOp::Join,
        &joiner.hello().challenge,
        &mailbox,
        &token,
    );
    joiner
        .request(Request::Join(nook_proto::Join {
            mailbox,
            token,
            member: jid.member_key(),
            signature: jsig,
        }))
        .await?;
    let key = EnvelopeKey::from_talk_key(&[1; 32]);
    let body = key.seal(&mut rng, &mailbox, Purpose::Chat, &[0u8; 1024])?;
    let mut pending = Vec::new();
    for i in 0..n {
        let rx = conn
            .send_frame(ClientFrame {
                id: 1_000_000 + i as u64,
                request: Request::Put(Put {
                    mailbox,
                    kind: EnvelopeKind::Chat,
                    body: body.clone(),
                }),
            })
            .await?;
        pending.push(rx);
        if pending.len() >= 512 {
            for rx in pending.drain(..) {
                if !matches!(rx.await?, Outcome::Ok(Response::Stored { .. })) {
                    bail!("put refused");
                }
            }
        }
    }
    for rx in pending {
        if !matches!(rx.await?, Outcome::Ok(Response::Stored { .. })) {
            bail!("put refused");
        }
    }
    let farewell = key.seal(&mut rng, &mailbox, Purpose::Farewell, b"bye")?;
    let sig = sign_relay_auth(
        &id,
        AuthOp::Close,
        &conn.hello().challenge,
        &mailbox,
        &sha256(&[&farewell]),
    );
    let t = Instant::now();
    let r = conn
        .request(Request::Close(nook_proto::Close {
            mailbox,
            farewell,
            signature: sig,
        }))
        .await?;
    let took = t.elapsed();
    match r {
        Response::Closed { receipt } if receipt.envelopes_deleted == n as u64 => Ok(ms(took)),
        r => bail!("unexpected close answer {r:?}"),
    }
}

/// A real talk whose local history holds `n` messages; times the local shredding
/// `nook close` performs after the relay's receipt (efface the key, drop the data).
async fn client_shred_time(addr: &str, n: usize) -> Result<f64> {
    let home = tempfile::tempdir()?;
    let client = Client::new(home.path())?;
    let created = client
        .create(
            addr,
            TalkOptions {
                seats: 2,
                quorum: 1,
                ttl_secs: 3600,
                close: ClosePolicy::Owner,
                alias: "a".into(),
                schedule: None,
                pattern: Default::default(),
            },
        )
        .await?;
    client.close_store();
    let homedir = nook_client::store::Home::new(home.path())?;
    let store = homedir.open()?;
    let talk = store.find(&created.talk)?;
    let events: Vec<nook_client::Event> = (0..n)
        .map(|i| nook_client::Event::Message {
            seat: 1,
            alias: "b".into(),
            sent_at_ms: i as u64,
            text: "m".repeat(1024),
            own: false,
            late: false,
            missed: 0,
            id: Some((i as u64).to_le_bytes()),
        })
        .collect();
    for chunk in events.chunks(1000) {
        store.append(&talk.talk_id, chunk.to_vec(), 0)?;
    }
    store.flush()?;
    let t = Instant::now();
    store.delete(&talk.talk_id)?;
    Ok(ms(t.elapsed()))
}
