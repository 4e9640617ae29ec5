//! What members send each other inside envelope bodies, and how group messages are
//! sealed, signed and checked.
//!
//! An envelope body opens (with the talk's [`EnvelopeKey`](crate::EnvelopeKey)) to one
//! bincode-encoded [`Inner`]. Everything in here is hidden from the relay.

use bincode::{Decode, Encode};
use nook_proto::codec::{decode_body, encode_value};
use nook_proto::{ClosePolicy, MailboxId};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::card::CardReveal;
use crate::chain::{ChainState, Delivery, ReceivingChain, SendingChain};
use crate::cipher;
use crate::identity::{KEM_PUBLIC_LEN, TalkIdentity, verify};
use crate::invite::commitment_of;
use crate::{CryptoError, labels};

/// The plaintext of an envelope body.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Inner {
    /// "I took seat N": read by every member (handshake).
    Announce(Box<Announce>),
    /// A pairwise-sealed blob for one member (handshake).
    Direct(Direct),
    /// A chat message under the sender's chain (chat).
    Group(GroupMessage),
    /// The end-to-end close signal (farewell).
    Farewell(Farewell),
}

/// The signed part of an announcement.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct AnnounceBody {
    pub seat: u8,
    pub pseudonym: [u8; 32],
    pub agreement: [u8; 32],
    /// The member's X-Wing encapsulation key: pairwise blobs to it are sealed to this.
    /// (Boxed: it is 1216 bytes, and announcements are moved around.)
    pub kem: Box<[u8; KEM_PUBLIC_LEN]>,
    pub relay_auth: [u8; 32],
    /// The seat's public key (its hash is the creator's commitment for the seat); all
    /// zeros for the creator (seat 0), whose keys the welcome carries directly.
    pub seat_key: [u8; 32],
    /// The member's alias in this talk (≤ 64 bytes of UTF-8).
    pub alias: String,
    /// The member's sending chain: present only in an announcement sealed pairwise
    /// (an `Intro` or a `Reply`), never in one every holder of the talk key can read
    /// (a newcomer's public announcement, or the creator's inside a welcome).
    pub chain: Option<ChainState>,
}

/// A member's self-introduction. Both signatures cover
/// `"nook/1 announce" ‖ mailbox ‖ bincode(body)`: `signature` by the pseudonym key,
/// `seat_signature` by the seat key (all zeros for seat 0).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Announce {
    pub body: AnnounceBody,
    pub signature: [u8; 64],
    pub seat_signature: [u8; 64],
}

/// Pairwise-sealed content, addressed by agreement keys.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Direct {
    /// Sender's agreement public key.
    pub from: [u8; 32],
    /// Recipient's agreement public key.
    pub to: [u8; 32],
    /// `seal_pairwise(bincode(DirectBody))`.
    pub sealed: Vec<u8>,
}

/// What a [`Direct`] carries.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum DirectBody {
    /// An existing member's answer to a newcomer's announcement: who it is and, in the
    /// announcement's `chain`, where its sending chain stands.
    Intro { announce: Box<Announce> },
    /// A member's new sending chain, sent to each remaining member after a member left.
    SenderKey { chain: ChainState },
    /// A newcomer's answer to an `Intro`: its announcement with its alias and its
    /// sending chain, which its public announcement leaves out.
    Reply { announce: Box<Announce> },
    /// Chosen fields of the sender's card, for the recipient alone (spec §19). Sent on
    /// its own, or as the offerer's half of an exchange once the other accepted.
    CardReveal { reveal: CardReveal },
    /// An offer to exchange cards: the names of the fields the sender would show
    /// (never their values) and whether it lets the recipient keep its card.
    CardOffer {
        exchange: [u8; 16],
        fields: Vec<u8>,
        keepable: bool,
    },
    /// The recipient of offer `exchange` accepts: its own card comes with it; the
    /// offerer's follows in a `CardReveal`.
    CardAccept {
        exchange: [u8; 16],
        reveal: CardReveal,
    },
    /// The recipient of offer `exchange` declines: no card is shown either way.
    CardDecline { exchange: [u8; 16] },
    /// A market's owner takes an offerer into the group (spec §20.2): the group's talk
    /// key `T` and the owner's group chain as it stands. Sent to that offerer alone,
    /// under its seat's key. (Appended.)
    Promote {
        talk_key: crate::secret::Secret32,
        chain: ChainState,
    },
    /// A panel's owner tells a listener of a speaker (spec §20.3): its seat, pseudonym
    /// key (to check its signatures), alias, and its chain where the owner's copy
    /// stands. Sent again with each new chain of the speaker's. (Appended.)
    Speaker {
        seat: u8,
        pseudonym: [u8; 32],
        alias: String,
        chain: ChainState,
    },
}

/// What the sender signs and the AEAD authenticates besides the ciphertext.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct GroupHeader {
    /// Sender's pseudonym public key.
    pub sender: [u8; 32],
    pub epoch: u32,
    pub index: u32,
}

impl GroupHeader {
    /// The message's id, the same for every member and for its sender: a sender's
    /// (epoch, index) never repeats within a talk, and pseudonyms are per talk.
    /// `SHA-256("nook/1 message-id" ‖ sender ‖ epoch LE ‖ index LE)`, first 8 bytes.
    pub fn message_id(&self) -> [u8; 8] {
        let digest = crate::kdf::sha256(&[
            crate::labels::MESSAGE_ID,
            &self.sender,
            &self.epoch.to_le_bytes(),
            &self.index.to_le_bytes(),
        ]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        id
    }
}

/// A chat message: `ciphertext = ChaCha20-Poly1305(MK_index, nonce 0,
/// aad = "nook/1 group-aad" ‖ mailbox ‖ bincode(header))`, signed over
/// `"nook/1 group-sig" ‖ mailbox ‖ bincode(header) ‖ ciphertext`.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct GroupMessage {
    pub header: GroupHeader,
    pub ciphertext: Vec<u8>,
    pub signature: [u8; 64],
}

/// How far the sender had received one member's current chain: `next` is the index
/// of the next message it expected from chain `epoch` of the member in `seat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, Zeroize)]
pub struct Seen {
    pub seat: u8,
    pub epoch: u32,
    pub next: u32,
}

/// Most entries a `seen` list may have: one per seat.
pub const MAX_SEEN: usize = 64;

/// The application content of a group message. `seen` is what the sender had
/// received of each other member when it sent this (protocol-spec §12.4): a member
/// that lacks messages someone else saw knows they were dropped for it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Zeroize, ZeroizeOnDrop)]
pub enum Content {
    Text {
        sent_at_ms: u64,
        text: String,
        seen: Vec<Seen>,
    },
    /// The sender is about to leave the talk; `seen` is its last summary.
    Leaving { sent_at_ms: u64, seen: Vec<Seen> },
    /// A file follows in `chunks` [`Content::FileChunk`]s of [`FILE_CHUNK_LEN`] bytes
    /// each (the last one shorter) under the same sender's chain (protocol-spec §12.5).
    /// `sha256` is the digest of the whole file: the receiver checks it end to end.
    FileOffer {
        sent_at_ms: u64,
        file_id: [u8; 16],
        /// The name the sender gave; hostile: never a path to trust.
        name: String,
        size: u64,
        chunks: u32,
        sha256: [u8; 32],
        seen: Vec<Seen>,
    },
    /// Bytes `index * FILE_CHUNK_LEN ..` of the offered file `file_id`.
    FileChunk {
        file_id: [u8; 16],
        index: u32,
        bytes: Vec<u8>,
        seen: Vec<Seen>,
    },
}

/// Bytes of file data in one [`Content::FileChunk`]: exactly what the largest padding
/// bucket holds in the worst case. The bucket (131,072 bytes) less the envelope's key
/// id, nonce and tag (48) and the padding marker (1) leaves 131,023 bytes for the inner
/// message; a chunk's content, group message and `Inner` tag take 860 bytes around the
/// data when every variable-length field is at its widest (a full `seen` list of 64
/// entries with 5-byte counters, 5-byte index, epoch and lengths, tag and signature).
/// Spec §12.7 adds it up; the vectors test seals that worst case and checks it fills
/// the bucket exactly.
pub const FILE_CHUNK_LEN: usize = 128 * 1024 - 48 - 1 - 860;

/// Longest file name an offer may carry, in bytes.
pub const MAX_FILE_NAME: usize = 255;

/// Most chunks a file may have (a 64 GiB file; the sender's size cap is lower).
pub const MAX_FILE_CHUNKS: u32 = 1 << 19;

/// How many chunks a file of `size` bytes has (an empty file has none).
pub fn file_chunks(size: u64) -> Option<u32> {
    let n = size.div_ceil(FILE_CHUNK_LEN as u64);
    u32::try_from(n).ok().filter(|n| *n <= MAX_FILE_CHUNKS)
}

/// The end-to-end close, signed with the closer's pseudonym key over
/// `"nook/1 farewell" ‖ mailbox ‖ encode(seen)`; `seen` is the closer's summary,
/// its own chain included.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Farewell {
    pub sender: [u8; 32],
    pub seen: Vec<Seen>,
    pub signature: [u8; 64],
}

/// What the creator leaves, sealed under the welcome key, for each seat.
#[derive(Clone, PartialEq, Eq, Encode, Decode, Zeroize, ZeroizeOnDrop)]
pub struct Welcome {
    /// The talk key `T`; the envelope key derives from it.
    pub talk_key: [u8; 32],
    /// The seat this welcome is for (1..seats).
    pub seat: u8,
    #[zeroize(skip)]
    pub params: WelcomeParams,
    /// The creator's announcement (seat 0), signed over the all-zero mailbox id: the
    /// relay names the mailbox only after the welcomes are sealed.
    #[zeroize(skip)]
    pub creator: Announce,
    /// `commitments[i]` commits to the opening of seat `i + 1`.
    pub commitments: Vec<[u8; 32]>,
    /// The talk's pattern (protocol-spec §20.2). Appended: a welcome sealed before
    /// patterns existed ends before it and decodes as [`Pattern::Plain`].
    #[zeroize(skip)]
    pub pattern: Pattern,
}

/// A welcome as versions before patterns sealed it: no `pattern`.
#[derive(Decode)]
struct WelcomeBeforePatterns {
    talk_key: [u8; 32],
    seat: u8,
    params: WelcomeParams,
    creator: Announce,
    commitments: Vec<[u8; 32]>,
}

/// How a talk is shaped (protocol-spec §20.2), told by its creator in every welcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub enum Pattern {
    /// Every member reads and writes to all.
    #[default]
    Plain,
    /// The owner asks; every other seat is an offerer whose traffic only the owner
    /// reads. The welcome of an offerer's seat carries, as `talk_key`, a key made for
    /// that seat alone, so an offerer never holds the group's key or another's.
    /// An offerer may send `offer_limit` messages until the owner writes to it.
    Market { offer_limit: u8 },
    /// The owner and the seats `1..=speakers` speak to all; every other seat is a
    /// listener, which reads the speakers and is invisible to everyone but the owner.
    /// A listener's welcome carries its seat's own key, as an offerer's (spec §20.3).
    Panel { speakers: u8 },
}

/// The talk parameters a joiner is told (the relay knows them too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct WelcomeParams {
    pub seats: u8,
    pub quorum: u8,
    pub ttl_secs: u32,
    pub close: ClosePolicy,
    /// Unix seconds of creation, per the creator's clock.
    pub created_at: u64,
}

/// Longest alias in bytes.
pub const MAX_ALIAS: usize = 64;

impl Inner {
    pub fn encode(&self) -> Result<Vec<u8>, CryptoError> {
        encode_value(self).map_err(|_| CryptoError::Malformed)
    }
    pub fn decode(bytes: &[u8]) -> Result<Inner, CryptoError> {
        decode_body(bytes).map_err(|_| CryptoError::Malformed)
    }
}

impl DirectBody {
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        encode_value(self)
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Malformed)
    }
    pub fn decode(bytes: &[u8]) -> Result<DirectBody, CryptoError> {
        let body: DirectBody = decode_body(bytes).map_err(|_| CryptoError::Malformed)?;
        let valid = match &body {
            DirectBody::CardReveal { reveal } | DirectBody::CardAccept { reveal, .. } => {
                reveal.card.is_valid()
            }
            DirectBody::CardOffer { fields, .. } => {
                !fields.is_empty() && crate::card::valid_kinds(fields)
            }
            DirectBody::Speaker { alias, .. } => !alias.is_empty() && alias.len() <= MAX_ALIAS,
            _ => true,
        };
        if valid {
            Ok(body)
        } else {
            Err(CryptoError::Malformed)
        }
    }
}

impl Welcome {
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        encode_value(self)
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Malformed)
    }
    pub fn decode(bytes: &[u8]) -> Result<Welcome, CryptoError> {
        if let Ok(w) = decode_body::<Welcome>(bytes) {
            return Ok(w);
        }
        let mut old: WelcomeBeforePatterns =
            decode_body(bytes).map_err(|_| CryptoError::Malformed)?;
        let welcome = Welcome {
            talk_key: old.talk_key,
            seat: old.seat,
            params: old.params,
            creator: old.creator,
            commitments: old.commitments,
            pattern: Pattern::Plain,
        };
        old.talk_key.zeroize();
        Ok(welcome)
    }
}

impl Content {
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        encode_value(self)
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Malformed)
    }
    pub fn decode(bytes: &[u8]) -> Result<Content, CryptoError> {
        let content: Content = decode_body(bytes).map_err(|_| CryptoError::Malformed)?;
        if content.seen().len() > MAX_SEEN {
            return Err(CryptoError::Malformed);
        }
        match &content {
            Content::FileOffer {
                name, size, chunks, ..
            } if name.len() > MAX_FILE_NAME || file_chunks(*size) != Some(*chunks) => {
                Err(CryptoError::Malformed)
            }
            Content::FileChunk { index, bytes, .. }
                if bytes.len() > FILE_CHUNK_LEN
                    || bytes.is_empty()
                    || *index >= MAX_FILE_CHUNKS =>
            {
                Err(CryptoError::Malformed)
            }
            _ => Ok(content),
        }
    }

    /// The sender's summary of what it had received.
    pub fn seen(&self) -> &[Seen] {
        match self {
            Content::Text { seen, .. }
            | Content::Leaving { seen, .. }
            | Content::FileOffer { seen, .. }
            | Content::FileChunk { seen, .. } => seen,
        }
    }
}

impl Announce {
    /// Makes and signs `identity`'s announcement for `seat` of `mailbox`. `seat_seed`
    /// (from the seat secret) co-signs it; the creator (seat 0) has none.
    pub fn new(
        identity: &TalkIdentity,
        mailbox: &MailboxId,
        seat: u8,
        seat_seed: Option<&[u8; 32]>,
        alias: &str,
        chain: Option<&ChainState>,
    ) -> Result<Announce, CryptoError> {
        if alias.len() > MAX_ALIAS {
            return Err(CryptoError::Malformed);
        }
        let public = identity.public();
        let seat_key = seat_seed.map(ed25519_dalek::SigningKey::from_bytes);
        let body = AnnounceBody {
            seat,
            pseudonym: public.pseudonym,
            agreement: public.agreement,
            kem: Box::new(identity.kem_public()),
            relay_auth: public.relay_auth,
            seat_key: seat_key
                .as_ref()
                .map_or([0; 32], |k| k.verifying_key().to_bytes()),
            alias: alias.to_owned(),
            chain: chain.cloned(),
        };
        let transcript = announce_transcript(mailbox, &body)?;
        let signature = identity.sign_pseudonym(&transcript);
        let seat_signature = seat_key.map_or([0; 64], |k| {
            ed25519_dalek::Signer::sign(&k, &transcript).to_bytes()
        });
        Ok(Announce {
            body,
            signature,
            seat_signature,
        })
    }

    /// Checks the pseudonym signature and, for seats other than 0, that the seat key
    /// matches the creator's commitment for that seat and co-signed the announcement:
    /// only the holder of the seat's secret can produce that, and nothing in it can be
    /// replayed under other keys. For seat 0 only the pseudonym signature is checked:
    /// callers must compare the keys with the creator's from the welcome.
    pub fn verify(&self, mailbox: &MailboxId, commitments: &[[u8; 32]]) -> Result<(), CryptoError> {
        if self.body.alias.len() > MAX_ALIAS {
            return Err(CryptoError::Malformed);
        }
        let transcript = announce_transcript(mailbox, &self.body)?;
        verify(&self.body.pseudonym, &transcript, &self.signature)?;
        if self.body.seat == 0 {
            return Ok(());
        }
        let expected = commitments
            .get(usize::from(self.body.seat) - 1)
            .ok_or(CryptoError::NotASeat)?;
        if commitment_of(&self.body.seat_key) != *expected {
            return Err(CryptoError::NotASeat);
        }
        verify(&self.body.seat_key, &transcript, &self.seat_signature)
            .map_err(|_| CryptoError::NotASeat)
    }
}

fn announce_transcript(mailbox: &MailboxId, body: &AnnounceBody) -> Result<Vec<u8>, CryptoError> {
    let mut t = Vec::with_capacity(200);
    t.extend_from_slice(labels::ANNOUNCE);
    t.extend_from_slice(&mailbox.0);
    t.extend_from_slice(&encode_value(body).map_err(|_| CryptoError::Malformed)?);
    Ok(t)
}

/// Encrypts and signs `content` as the next message of `chain`.
pub fn seal_group(
    identity: &TalkIdentity,
    chain: &mut SendingChain,
    mailbox: &MailboxId,
    content: &Content,
) -> Result<GroupMessage, CryptoError> {
    let epoch = chain.state().epoch;
    let (index, key) = chain.next_key()?;
    let header = GroupHeader {
        sender: identity.public().pseudonym,
        epoch,
        index,
    };
    let header_bytes = encode_value(&header).map_err(|_| CryptoError::Malformed)?;
    let plaintext = content.encode()?;
    // Each message key seals exactly one message, so the nonce is zero.
    let ciphertext = cipher::seal(
        &key.0,
        &[0; cipher::NONCE_LEN],
        &group_aad(mailbox, &header_bytes),
        &plaintext,
    )?;
    let signature =
        identity.sign_pseudonym(&group_sig_transcript(mailbox, &header_bytes, &ciphertext));
    Ok(GroupMessage {
        header,
        ciphertext,
        signature,
    })
}

/// Checks the signature against the sender's pseudonym key, then decrypts with the
/// chain. The chain changes only if both succeed, so a forged message costs nothing.
pub fn open_group(
    sender_pseudonym: &[u8; 32],
    chain: &mut ReceivingChain,
    mailbox: &MailboxId,
    message: &GroupMessage,
) -> Result<(Content, Delivery), CryptoError> {
    if message.header.sender != *sender_pseudonym {
        return Err(CryptoError::BadSignature);
    }
    let header_bytes = encode_value(&message.header).map_err(|_| CryptoError::Malformed)?;
    verify(
        sender_pseudonym,
        &group_sig_transcript(mailbox, &header_bytes, &message.ciphertext),
        &message.signature,
    )?;
    let pending = chain.prepare(message.header.epoch, message.header.index)?;
    let plaintext = cipher::open(
        &pending.key().0,
        &[0; cipher::NONCE_LEN],
        &group_aad(mailbox, &header_bytes),
        &message.ciphertext,
    )?;
    let content = Content::decode(&plaintext)?;
    Ok((content, chain.commit(pending)))
}

impl Farewell {
    pub fn new(
        identity: &TalkIdentity,
        mailbox: &MailboxId,
        seen: Vec<Seen>,
    ) -> Result<Farewell, CryptoError> {
        let signature = identity.sign_pseudonym(&farewell_transcript(mailbox, &seen)?);
        Ok(Farewell {
            sender: identity.public().pseudonym,
            seen,
            signature,
        })
    }
    pub fn verify(&self, mailbox: &MailboxId) -> Result<(), CryptoError> {
        verify(
            &self.sender,
            &farewell_transcript(mailbox, &self.seen)?,
            &self.signature,
        )
    }
}

fn farewell_transcript(mailbox: &MailboxId, seen: &[Seen]) -> Result<Vec<u8>, CryptoError> {
    if seen.len() > MAX_SEEN {
        return Err(CryptoError::Malformed);
    }
    let seen = encode_value(&seen.to_vec()).map_err(|_| CryptoError::Malformed)?;
    Ok([labels::FAREWELL, &mailbox.0, &seen].concat())
}

fn group_aad(mailbox: &MailboxId, header: &[u8]) -> Vec<u8> {
    [labels::GROUP_AAD, &mailbox.0, header].concat()
}

fn group_sig_transcript(mailbox: &MailboxId, header: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    [labels::GROUP_SIG, &mailbox.0, header, ciphertext].concat()
}

impl std::fmt::Debug for Welcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Welcome")
            .field("seat", &self.seat)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}
