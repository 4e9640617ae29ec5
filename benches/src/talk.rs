//! Talks as the benchmarks use them: a two-seat talk (mailbox) per sender/receiver
//! pair, created and joined with the same requests as `relay/tests/common.rs`, and the
//! benchmark's plaintext format.

use anyhow::bail;

use nook_crypto::auth::{AuthOp, params_digest, sign_relay_auth};
use nook_crypto::seal::seal_welcome;
use nook_crypto::{EnvelopeKey, RelayAddr, SeatSecret, TalkIdentity};
use nook_proto::limits::ALPN;
use nook_proto::{
    ClosePolicy, Create, Join, MailboxId, Request, Response, SeatOffer, TalkParams, TalkPhase,
};

use crate::quic::{RawConn, client_config};

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
        schedule: None,
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
/// joiner receives (subscribed). On [`RawConn`]s: the load generator reads and writes
/// frames itself instead of going through the client library's per-request channels,
/// as the peers' Go client speaks RESP or MQTT directly.
#[derive(Debug)]
pub struct RawPair {
    pub mailbox: MailboxId,
    pub sender: RawConn,
    pub receiver: RawConn,
    pub key: EnvelopeKey,
    /// Each connection's own client endpoint (UDP socket), kept alive with it.
    pub endpoints: [quinn::Endpoint; 2],
}

/// Creates a talk, joins its second seat and subscribes the joiner, each member on
/// its own endpoint and connection (as `RelayConnection::connect` does).
pub async fn open_raw_pair(addr: &RelayAddr) -> anyhow::Result<RawPair> {
    let config = client_config(addr.fingerprint, ALPN)?;
    let endpoint = || -> anyhow::Result<quinn::Endpoint> {
        Ok(quinn::Endpoint::client("127.0.0.1:0".parse()?)?)
    };
    let endpoints = [endpoint()?, endpoint()?];
    let mut sender = RawConn::connect(&endpoints[0], config.clone(), addr).await?;
    let mut receiver = RawConn::connect(&endpoints[1], config, addr).await?;
    let seat = SeatSecret::random(&mut rand::rng());
    let owner = TalkIdentity::generate(&mut rand::rng());
    let create = create_request(&owner, &sender.hello.challenge, two_seat_params(&seat)?)?;
    let mailbox = match sender.request(1, create).await? {
        Response::Created { mailbox, .. } => mailbox,
        other => bail!("unexpected answer to Create: {other:?}"),
    };
    let joiner = TalkIdentity::generate(&mut rand::rng());
    let token = *seat.join_token();
    let signature = sign_relay_auth(
        &joiner,
        AuthOp::Join,
        &receiver.hello.challenge,
        &mailbox,
        &token,
    );
    let join = Request::Join(Join {
        mailbox,
        token,
        member: joiner.member_key(),
        signature,
    });
    match receiver.request(1, join).await? {
        Response::Joined { status, .. } if status.state == TalkPhase::Open => {}
        other => bail!("unexpected answer to Join: {other:?}"),
    }
    match receiver.request(2, Request::Subscribe { mailbox }).await? {
        Response::Subscribed { .. } => {}
        other => bail!("unexpected answer to Subscribe: {other:?}"),
    }
    let mut talk_key = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut talk_key);
    Ok(RawPair {
        mailbox,
        sender,
        receiver,
        key: EnvelopeKey::from_talk_key(&talk_key),
        endpoints,
    })
}
