//! Talks as the benchmarks use them: a two-seat talk (mailbox) per sender/receiver
//! pair, created and joined over the real client transport exactly as
//! `relay/tests/common.rs` does, and the benchmark's plaintext format.

use anyhow::{Context, bail};
use nook_client::RelayConnection;
use nook_crypto::aead::seal_welcome;
use nook_crypto::auth::{AuthOp, params_digest, sign_relay_auth};
use nook_crypto::{EnvelopeKey, RelayAddr, SeatSecret, TalkIdentity};
use nook_proto::{
    ClosePolicy, Create, Join, MailboxId, Push, Request, Response, SeatOffer, TalkParams, TalkState,
};
use tokio::sync::mpsc;

/// Bytes of the benchmark header at the start of every plaintext: seq (u64 LE) and
/// send time (u64 LE, [`crate::mono_ns`]), like the peers' payloads.
pub const HEADER: usize = 16;

/// A plaintext of `size` bytes: header, then filler.
pub fn plaintext(seq: u64, size: usize) -> Vec<u8> {
    let mut m = vec![b'x'; size.max(HEADER)];
    m[0..8].copy_from_slice(&seq.to_le_bytes());
    m[8..16].copy_from_slice(&crate::mono_ns().to_le_bytes());
    m
}

/// (seq, send time) from a plaintext, if it is long enough.
pub fn parse_header(m: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(m.get(0..8)?.try_into().ok()?);
    let ts = u64::from_le_bytes(m.get(8..16)?.try_into().ok()?);
    Some((seq, ts))
}

/// The parameters of a two-seat talk that opens when the second member joins, with
/// one sealed welcome for the free seat.
pub fn two_seat_params(seat: &SeatSecret) -> anyhow::Result<TalkParams> {
    Ok(TalkParams {
        seats: 2,
        quorum: 2,
        ttl_secs: 3600,
        close: ClosePolicy::Owner,
        offers: vec![SeatOffer {
            token_hash: seat.token_hash(),
            welcome: seal_welcome(seat, b"welcome to the benchmark talk")?,
        }],
    })
}

/// The `Create` request for `params` signed by `owner` on a connection whose Hello
/// challenge is `challenge`.
pub fn create_request(
    owner: &TalkIdentity,
    challenge: &[u8; 32],
    params: TalkParams,
) -> anyhow::Result<Request> {
    let digest = params_digest(&params)?;
    let signature = sign_relay_auth(
        owner,
        AuthOp::Create,
        challenge,
        &MailboxId([0; 16]),
        &digest,
    );
    Ok(Request::Create(Create {
        params,
        owner: owner.member_key(),
        signature,
    }))
}

/// One talk with its two members, each on its own connection: the owner sends, the
/// joiner receives (subscribed).
#[derive(Debug)]
pub struct Pair {
    pub mailbox: MailboxId,
    pub sender: RelayConnection,
    pub receiver: RelayConnection,
    pub pushes: mpsc::Receiver<Push>,
    /// The talk's envelope key, known to both members (never to the relay).
    pub key: EnvelopeKey,
}

/// Creates a talk, joins its second seat and subscribes the joiner.
pub async fn open_pair(addr: &RelayAddr) -> anyhow::Result<Pair> {
    let sender = RelayConnection::connect(addr).await?;
    let mut receiver = RelayConnection::connect(addr).await?;
    let seat = SeatSecret::random(&mut rand::rng());
    let owner = TalkIdentity::generate(&mut rand::rng());
    let create = create_request(&owner, &sender.hello().challenge, two_seat_params(&seat)?)?;
    let mailbox = match sender.request(create).await? {
        Response::Created { mailbox, .. } => mailbox,
        other => bail!("unexpected answer to Create: {other:?}"),
    };
    let joiner = TalkIdentity::generate(&mut rand::rng());
    let token = *seat.join_token();
    let signature = sign_relay_auth(
        &joiner,
        AuthOp::Join,
        &receiver.hello().challenge,
        &mailbox,
        &token,
    );
    match receiver
        .request(Request::Join(Join {
            mailbox,
            token,
            member: joiner.member_key(),
            signature,
        }))
        .await?
    {
        Response::Joined { status, .. } if status.state == TalkState::Open => {}
        other => bail!("unexpected answer to Join: {other:?}"),
    }
    match receiver.request(Request::Subscribe { mailbox }).await? {
        Response::Subscribed { .. } => {}
        other => bail!("unexpected answer to Subscribe: {other:?}"),
    }
    let pushes = receiver.take_pushes().context("pushes already taken")?;
    let mut talk_key = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut talk_key);
    Ok(Pair {
        mailbox,
        sender,
        receiver,
        pushes,
        key: EnvelopeKey::from_talk_key(&talk_key),
    })
}
