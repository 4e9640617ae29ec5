//! The client's trust decision: the relay's certificate key must hash to the fingerprint
//! in its address.

use std::sync::{Arc, Mutex};

use nook_crypto::Fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Accepts exactly the relay whose Ed25519 certificate key hashes to the pinned
/// fingerprint — or, made with [`PinnedVerifier::following`], any Ed25519 key, which it
/// records as [`PinnedVerifier::deferred`] for the caller to accept only once the
/// relay's rotation statements lead there from the pinned key (protocol-spec.md §2.2,
/// §11.12); a caller that defers sends nothing but `Hello` until it has checked. No CA, no name check, no trust on first use: the fingerprint in the
/// address is the whole trust decision. The TLS 1.3 handshake signature is still
/// verified against the certificate key, so a copied certificate without its private
/// key does not pass.
#[derive(Debug)]
pub struct PinnedVerifier {
    fingerprint: Fingerprint,
    provider: Arc<CryptoProvider>,
    /// Written by rustls during a handshake, read by the caller after it failed.
    seen_mismatch: Mutex<Option<Fingerprint>>,
    /// Whether a key other than the pinned one passes the handshake, to be checked
    /// against the relay's rotation history afterwards.
    follow: bool,
    /// The key that passed that way, if one did.
    deferred: Mutex<Option<[u8; 32]>>,
}

impl PinnedVerifier {
    pub fn new(fingerprint: Fingerprint) -> PinnedVerifier {
        PinnedVerifier {
            fingerprint,
            provider: crate::provider(),
            seen_mismatch: Mutex::new(None),
            follow: false,
            deferred: Mutex::new(None),
        }
    }

    /// A verifier that lets a key other than the pinned one through the handshake and
    /// records it ([`PinnedVerifier::deferred`]): the caller MUST then accept the
    /// connection only if the relay's rotation statements lead from the pinned key to
    /// that one (`nook_crypto::rotation::follow`), and send nothing but `Hello` first.
    pub fn following(fingerprint: Fingerprint) -> PinnedVerifier {
        PinnedVerifier {
            follow: true,
            ..PinnedVerifier::new(fingerprint)
        }
    }

    /// A verifier that takes any Ed25519 certificate (whose handshake signature
    /// verifies): a forwarder's hop to a destination it holds no pin for, where the
    /// member checks the pin end to end (protocol-spec.md §18.4). Never for a member.
    pub fn any_key() -> PinnedVerifier {
        PinnedVerifier::following(Fingerprint([0; 32]))
    }

    /// The key a [`PinnedVerifier::following`] let through although it is not the
    /// pinned one; `None` when the pinned key itself was presented.
    pub fn deferred(&self) -> Option<[u8; 32]> {
        self.deferred.lock().ok().and_then(|d| *d)
    }

    /// The fingerprint a refused relay presented, if any.
    pub fn mismatch(&self) -> Option<Fingerprint> {
        self.seen_mismatch.lock().ok().and_then(|m| *m)
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = ed25519_key_of(end_entity).ok_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))?;
        let got = Fingerprint::of_key(&key);
        if got != self.fingerprint {
            if let Ok(mut m) = self.seen_mismatch.lock() {
                *m = Some(got);
            }
            if self.follow
                && let Ok(mut d) = self.deferred.lock()
            {
                *d = Some(key);
                return Ok(ServerCertVerified::assertion());
            }
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The Ed25519 key of a certificate, if it has one (parsed by webpki, not searched
/// for: a byte pattern elsewhere in the certificate must not be mistaken for the key).
fn ed25519_key_of(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    // RFC 8410: SEQUENCE { SEQUENCE { OID 1.3.101.112 } BIT STRING (0 unused) key }.
    const SPKI_PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    let spki = ee.subject_public_key_info();
    let spki: &[u8] = spki.as_ref();
    let key = spki.strip_prefix(&SPKI_PREFIX[..])?;
    key.try_into().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cert_of(key_pair: &rcgen::KeyPair) -> CertificateDer<'static> {
        rcgen::CertificateParams::new(vec!["nook-relay".to_string()])
            .unwrap()
            .self_signed(key_pair)
            .unwrap()
            .der()
            .clone()
    }

    #[test]
    fn ed25519_key_of_reads_the_key_and_nothing_else() {
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert_eq!(
            ed25519_key_of(&cert_of(&ed)).map(Vec::from),
            Some(ed.public_key_raw().to_vec())
        );
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert_eq!(ed25519_key_of(&cert_of(&p256)), None);
        assert_eq!(
            ed25519_key_of(&CertificateDer::from(vec![0x30, 0x00])),
            None
        );
    }
}
