//! Property tests of the codec: every frame round-trips, and no byte string, however
//! cut or corrupted, makes the decoder panic.

use nook_proto::codec::{encode_frame, encode_frame_into};
use nook_proto::*;
use proptest::collection::vec;
use proptest::prelude::*;

fn arr16() -> impl Strategy<Value = [u8; 16]> {
    any::<[u8; 16]>()
}
fn arr32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}
fn sig() -> impl Strategy<Value = Signature> {
    vec(any::<u8>(), 64).prop_map(|v| {
        let mut s = [0u8; 64];
        s.copy_from_slice(&v);
        Signature(s)
    })
}
fn mailbox() -> impl Strategy<Value = MailboxId> {
    arr16().prop_map(MailboxId)
}
fn body() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..600)
}
fn kind() -> impl Strategy<Value = EnvelopeKind> {
    prop_oneof![Just(EnvelopeKind::Handshake), Just(EnvelopeKind::Chat)]
}
fn close() -> impl Strategy<Value = ClosePolicy> {
    prop_oneof![Just(ClosePolicy::Owner), Just(ClosePolicy::Any)]
}
fn status() -> impl Strategy<Value = TalkStatus> {
    (
        any::<bool>(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        close(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(open, members, seats, quorum, close, expires_at, left)| TalkStatus {
                state: if open {
                    TalkPhase::Open
                } else {
                    TalkPhase::Pending
                },
                members,
                seats,
                quorum,
                close,
                expires_at,
                left,
                // Both shapes of the appended field: scheduled and not.
                schedule: (!open).then_some(nook_proto::TalkSchedule {
                    opens_at: expires_at / 2,
                    closes_at: expires_at,
                }),
            },
        )
}
fn receipt() -> impl Strategy<Value = Receipt> {
    (mailbox(), any::<u64>(), any::<u64>(), sig()).prop_map(|(mailbox, closed_at, n, signature)| {
        Receipt {
            mailbox,
            closed_at,
            envelopes_deleted: n,
            signature,
        }
    })
}
fn envelope() -> impl Strategy<Value = Envelope> {
    (any::<u64>(), kind(), any::<u64>(), body()).prop_map(|(seq, kind, stored_at, body)| Envelope {
        seq: Seq(seq),
        kind,
        stored_at,
        body,
    })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        any::<u16>().prop_map(|version| Request::Hello { version }),
        (
            any::<u8>(),
            any::<u8>(),
            any::<u32>(),
            close(),
            vec((arr32(), body()), 0..4),
            arr32(),
            sig()
        )
            .prop_map(
                |(seats, quorum, ttl_secs, close, offers, owner, signature)| {
                    Request::Create(Create {
                        params: TalkParams {
                            seats,
                            quorum,
                            ttl_secs,
                            close,
                            offers: offers
                                .into_iter()
                                .map(|(t, welcome)| SeatOffer {
                                    token_hash: TokenHash(t),
                                    welcome,
                                })
                                .collect(),
                            schedule: (ttl_secs % 2 == 0).then_some(nook_proto::Schedule {
                                opens_in_secs: ttl_secs / 3,
                                window_secs: ttl_secs / 3,
                            }),
                        },
                        owner: MemberKey(owner),
                        signature,
                    })
                }
            ),
        (mailbox(), arr32(), arr32(), sig()).prop_map(|(mailbox, token, m, signature)| {
            Request::Join(Join {
                mailbox,
                token,
                member: MemberKey(m),
                signature,
            })
        }),
        (mailbox(), arr32(), sig()).prop_map(|(mailbox, m, signature)| Request::Auth(Auth {
            mailbox,
            member: MemberKey(m),
            signature
        })),
        mailbox().prop_map(|mailbox| Request::Subscribe { mailbox }),
        (mailbox(), kind(), body()).prop_map(|(mailbox, kind, body)| Request::Put(Put {
            mailbox,
            kind,
            body
        })),
        (mailbox(), any::<u64>(), any::<u16>()).prop_map(|(mailbox, a, limit)| Request::Fetch {
            mailbox,
            after: Seq(a),
            limit
        }),
        (mailbox(), any::<u64>()).prop_map(|(mailbox, u)| Request::Ack {
            mailbox,
            upto: Seq(u)
        }),
        (mailbox(), sig()).prop_map(|(mailbox, signature)| Request::Leave { mailbox, signature }),
        (mailbox(), body(), sig()).prop_map(|(mailbox, farewell, signature)| Request::Close(
            Close {
                mailbox,
                farewell,
                signature
            }
        )),
        any::<u64>().prop_map(|nonce| Request::Ping { nonce }),
        (close(), arr32(), arr32(), arr32(), sig()).prop_map(
            |(close, token_hash, owner, token, signature)| Request::CreateWithToken {
                create: Create {
                    params: TalkParams {
                        seats: 2,
                        quorum: 2,
                        ttl_secs: 3600,
                        close,
                        offers: vec![SeatOffer {
                            token_hash: TokenHash(token_hash),
                            welcome: Vec::new(),
                        }],
                        schedule: None,
                    },
                    owner: MemberKey(owner),
                    signature,
                },
                token: CreateToken(token),
            }
        ),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (
            any::<u16>(),
            arr32(),
            arr32(),
            any::<u64>(),
            proptest::collection::vec((arr32(), arr32(), any::<u64>()), 0..3),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(version, challenge, k, now, rotations, retiring_at)| {
                Response::Hello(HelloOk {
                    version,
                    challenge,
                    relay_key: RelayKey(k),
                    now,
                    rotations: rotations
                        .into_iter()
                        .map(|(old, new, rotated_at)| nook_proto::RotationStatement {
                            old: RelayKey(old),
                            new: RelayKey(new),
                            rotated_at,
                            signature: nook_proto::Signature([7; 64]),
                        })
                        .collect(),
                    retiring_at,
                })
            }),
        (mailbox(), status()).prop_map(|(mailbox, status)| Response::Created { mailbox, status }),
        (any::<u8>(), body(), status()).prop_map(|(seat, welcome, status)| Response::Joined {
            seat,
            welcome,
            status
        }),
        (status(), any::<u64>()).prop_map(|(status, h)| Response::Authed {
            status,
            head: Seq(h)
        }),
        status().prop_map(|status| Response::Subscribed { status }),
        any::<u64>().prop_map(|s| Response::Stored { seq: Seq(s) }),
        (vec(envelope(), 0..3), any::<bool>())
            .prop_map(|(items, more)| Response::Envelopes { items, more }),
        Just(Response::Acked),
        Just(Response::Left),
        receipt().prop_map(|receipt| Response::Closed { receipt }),
        any::<u64>().prop_map(|nonce| Response::Pong { nonce }),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::Malformed),
        Just(ErrorCode::UnsupportedVersion),
        Just(ErrorCode::NotAuthenticated),
        Just(ErrorCode::BadSignature),
        Just(ErrorCode::UnknownMailbox),
        Just(ErrorCode::MailboxClosed),
        Just(ErrorCode::TalkNotOpen),
        Just(ErrorCode::InviteInvalid),
        Just(ErrorCode::NotAllowed),
        Just(ErrorCode::TooLarge),
        Just(ErrorCode::MailboxFull),
        Just(ErrorCode::RateLimited),
        Just(ErrorCode::TooManyMailboxes),
        Just(ErrorCode::BadRequest),
        Just(ErrorCode::Internal),
        Just(ErrorCode::CreateRefused),
        Just(ErrorCode::Retiring),
        Just(ErrorCode::StorageFull),
    ]
}

fn push() -> impl Strategy<Value = Push> {
    prop_oneof![
        (mailbox(), envelope())
            .prop_map(|(mailbox, envelope)| Push::Envelope { mailbox, envelope }),
        (mailbox(), status()).prop_map(|(mailbox, status)| Push::SeatTaken { mailbox, status }),
        (mailbox(), status()).prop_map(|(mailbox, status)| Push::Opened { mailbox, status }),
        (mailbox(), status()).prop_map(|(mailbox, status)| Push::MemberLeft { mailbox, status }),
        (mailbox(), receipt(), body()).prop_map(|(mailbox, receipt, farewell)| Push::Closed {
            mailbox,
            receipt,
            farewell
        }),
        mailbox().prop_map(|mailbox| Push::Expired { mailbox }),
        any::<u64>().prop_map(|at| Push::Retiring { at }),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        (any::<u64>(), response()).prop_map(|(id, r)| ServerFrame::Response {
            id,
            result: Outcome::Ok(r)
        }),
        (
            any::<u64>(),
            error_code(),
            "[a-z ]{0,40}",
            prop::option::of(any::<(u8, u8)>())
        )
            .prop_map(|(id, code, m, seats)| {
                let detail = match seats {
                    Some((members, quorum)) => ErrorDetail::Seats { members, quorum },
                    None => ErrorDetail::None,
                };
                ServerFrame::Response {
                    id,
                    result: Outcome::Err(ErrorFrame::new(code, m).with_detail(detail)),
                }
            }),
        push().prop_map(ServerFrame::Push),
    ]
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    (any::<u64>(), request()).prop_map(|(id, request)| ClientFrame { id, request })
}

/// `frames` encoded back to back, and `cuts` made into sorted points inside them.
#[allow(clippy::unwrap_used)] // a test helper: a frame that does not encode is a failed test
fn wire_cut(frames: &[ClientFrame], cuts: &[usize]) -> (Vec<u8>, Vec<usize>) {
    let mut wire = Vec::new();
    for f in frames {
        encode_frame_into(f, &mut wire).unwrap();
    }
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.sort_unstable();
    (wire, points)
}

proptest! {
    #[test]
    fn client_frames_round_trip(frames in vec(client_frame(), 1..5), cuts in vec(any::<usize>(), 0..8)) {
        // Feed the stream in pieces cut at arbitrary points.
        let (wire, points) = wire_cut(&frames, &cuts);
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        let mut prev = 0;
        for p in points.into_iter().chain([wire.len()]) {
            dec.push(&wire[prev..p]);
            prev = p;
            while let Some(f) = dec.next_frame::<ClientFrame>().unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert_eq!(dec.finish(), Ok(()));
    }

    #[test]
    fn fed_frames_round_trip(frames in vec(client_frame(), 1..5), cuts in vec(any::<usize>(), 0..8)) {
        let (wire, points) = wire_cut(&frames, &cuts);
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        let mut prev = 0;
        for p in points.into_iter().chain([wire.len()]) {
            let stopped: Option<()> = dec
                .feed(&wire[prev..p], |f: ClientFrame| {
                    got.push(f);
                    std::ops::ControlFlow::Continue(())
                })
                .unwrap();
            prop_assert_eq!(stopped, None);
            prev = p;
        }
        prop_assert_eq!(got, frames);
        prop_assert_eq!(dec.finish(), Ok(()));
    }

    #[test]
    fn fed_arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048), cut in any::<usize>()) {
        let cut = cut % (bytes.len() + 1);
        let mut dec = FrameDecoder::new();
        let go = |_: ClientFrame| std::ops::ControlFlow::<()>::Continue(());
        if dec.feed(&bytes[..cut], go).is_ok() {
            let _ = dec.feed(&bytes[cut..], go);
        }
    }

    #[test]
    fn server_frames_round_trip(frame in server_frame()) {
        let wire = encode_frame(&frame).unwrap();
        prop_assert_eq!(wire.len() - 4, u32::from_be_bytes([wire[0], wire[1], wire[2], wire[3]]) as usize);
        let back: ServerFrame = decode_body(&wire[4..]).unwrap();
        prop_assert_eq!(back, frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048)) {
        let _ = decode_body::<ClientFrame>(&bytes);
        let _ = decode_body::<ServerFrame>(&bytes);
        let mut dec = FrameDecoder::new();
        dec.push(&bytes);
        for _ in 0..bytes.len() + 1 {
            match dec.next_frame::<ClientFrame>() {
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
    }

    #[test]
    fn truncated_frames_are_errors_not_panics(frame in client_frame(), cut in any::<usize>()) {
        let wire = encode_frame(&frame).unwrap();
        let body = &wire[4..];
        let cut = cut % body.len();
        prop_assert!(decode_body::<ClientFrame>(&body[..cut]).is_err());
    }

    #[test]
    fn flipped_bytes_never_panic(frame in server_frame(), pos in any::<usize>(), bit in 0u8..8) {
        let mut wire = encode_frame(&frame).unwrap();
        let i = pos % wire.len();
        wire[i] ^= 1 << bit;
        let mut dec = FrameDecoder::new();
        dec.push(&wire);
        let _ = dec.next_frame::<ServerFrame>();
    }
}
