//! Domain-separation labels. Every derivation, signature and AEAD of the protocol uses
//! exactly one of these. No signature label is a prefix of another, so no signed
//! transcript of one kind can be read as one of another kind. `protocol-spec.md` lists
//! the same strings.

/// HKDF info: join token from the seat secret.
pub const JOIN: &[u8] = b"nook/1 join";
/// HKDF info: welcome key from the seat secret.
pub const WELCOME: &[u8] = b"nook/1 welcome";
/// HKDF info: the seed of the seat's Ed25519 key from the seat secret.
pub const SEAT_KEY: &[u8] = b"nook/1 seat-key";
/// SHA-256 prefix: seat commitment over the seat's public key.
pub const SEAT_COMMIT: &[u8] = b"nook/1 seat-commit";
/// HKDF info: the envelope key from the talk key; also the prefix of the envelope AAD
/// (a different primitive, so the two uses cannot be confused).
pub const ENVELOPE: &[u8] = b"nook/1 envelope";
/// SHA-256 prefix: the id of an envelope key, at the head of every envelope body.
pub const ENVELOPE_ID: &[u8] = b"nook/1 envelope-id";
/// HKDF salt: the pairwise key from the X-Wing shared secret and an X25519 output.
pub const PAIRWISE: &[u8] = b"nook/1 pairwise";
/// SHA-256 prefix: a message's id from its group header.
pub const MESSAGE_ID: &[u8] = b"nook/1 message-id";
/// HKDF info: the talk's name from the talk key.
pub const TALK_NAME: &[u8] = b"nook/1 talk-name";
/// HKDF info: message key from a chain key.
pub const MSG: &[u8] = b"nook/1 msg";
/// HKDF info: next chain key from a chain key.
pub const CHAIN: &[u8] = b"nook/1 chain";
/// AEAD associated-data prefix of group messages.
pub const GROUP_AAD: &[u8] = b"nook/1 group-aad";
/// Signature prefix: group messages.
pub const GROUP_SIG: &[u8] = b"nook/1 group-sig";
/// Signature prefix: a member's announcement.
pub const ANNOUNCE: &[u8] = b"nook/1 announce";
/// Signature prefix: the end-to-end close.
pub const FAREWELL: &[u8] = b"nook/1 farewell";
/// Signature prefix: relay-auth transcripts (create, join, auth, leave, close).
pub const RELAY_AUTH: &[u8] = b"nook/1 relay-auth";
/// Signature prefix: the relay's deletion receipt.
pub const RECEIPT: &[u8] = b"nook/1 receipt";
/// Signature prefix: a relay's statement that its identity key moved to another.
pub const ROTATION: &[u8] = b"nook/1 relay-rotation";
/// AEAD associated-data prefix of the welcome.
pub const WELCOME_AAD: &[u8] = b"nook/1 aad-welcome";
/// SHA-256 prefix: the check an invite carries after its seat secret, so that a typo
/// is caught before the relay is asked.
pub const INVITE_CHECK: &[u8] = b"nook/1 invite-check";
/// SHA-256 prefix: the Argon2id salt of a relay's boards, over its fingerprint.
pub const BOARD_SALT: &[u8] = b"nook/1 board-salt";
/// HKDF info: the board id from the board seed.
pub const BOARD_ID: &[u8] = b"nook/1 board-id";
/// HKDF info: the board key from the board seed.
pub const BOARD_KEY: &[u8] = b"nook/1 board-key";
/// AEAD associated-data prefix of listings.
pub const BOARD_LISTING: &[u8] = b"nook/1 board-listing";
/// HKDF salt and AEAD associated-data prefix of seat requests.
pub const BOARD_REQUEST: &[u8] = b"nook/1 board-request";
/// HKDF salt and AEAD associated-data prefix of answers to seat requests.
pub const BOARD_ANSWER: &[u8] = b"nook/1 board-answer";
/// Signature prefix: a card key's reveal of a card to one member of one talk (§19).
pub const CARD_REVEAL: &[u8] = b"nook/1 card-reveal";
