//! The relay's identity: one Ed25519 key, kept in `<data>/identity.key` (0600), used
//! both for the self-signed TLS certificate and for deletion receipts, so the
//! fingerprint in the relay's address vouches for both.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nook_crypto::Fingerprint;
use nook_crypto::auth::RelayIdentity;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

/// File holding the 32-byte Ed25519 seed.
pub const KEY_FILE: &str = "identity.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot create or read the relay data folder {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a relay identity (expected 32 bytes, found {len}); move it away to let the relay make a new one, which changes its address"
    )]
    Corrupt { path: PathBuf, len: usize },
    #[error("cannot build the TLS certificate: {0}")]
    Certificate(String),
}

/// Creates `dir` (0700) if needed and makes sure it is private.
pub fn ensure_private_dir(dir: &Path) -> Result<(), IdentityError> {
    nook_vault::private_dir(dir).map_err(|source| IdentityError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Loads the relay identity from `dir`, creating it on first start.
pub fn load_or_create(dir: &Path) -> Result<RelayIdentity, IdentityError> {
    ensure_private_dir(dir)?;
    let path = dir.join(KEY_FILE);
    let io = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    match fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let seed: [u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| IdentityError::Corrupt {
                        path: path.clone(),
                        len: bytes.len(),
                    })?;
            let seed = Zeroizing::new(seed);
            Ok(RelayIdentity::from_seed(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = RelayIdentity::generate(&mut rand::rng());
            let tmp = dir.join(format!("{KEY_FILE}.tmp"));
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            f.write_all(identity.seed().as_ref()).map_err(io)?;
            f.sync_all().map_err(io)?;
            fs::rename(&tmp, &path).map_err(io)?;
            Ok(identity)
        }
        Err(e) => Err(io(e)),
    }
}

/// Loads an existing identity without creating one.
pub fn load_existing(dir: &Path) -> Result<RelayIdentity, IdentityError> {
    let path = dir.join(KEY_FILE);
    if !path.exists() {
        return Err(IdentityError::Io {
            path,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no relay identity here yet; start nook-relay once with this --data folder",
            ),
        });
    }
    load_or_create(dir)
}

/// A fresh self-signed certificate for the identity key (made at every start; only
/// the key is pinned, so the certificate itself need not persist).
pub fn certificate(
    identity: &RelayIdentity,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), IdentityError> {
    let pkcs8 = identity.pkcs8_der();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
    let key_pair = rcgen::KeyPair::try_from(&key_der)
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    let params = rcgen::CertificateParams::new(vec!["nook-relay".to_string()])
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    Ok((cert.der().clone(), key_der))
}

/// `nook://<fingerprint>@<host>:<port>`.
pub fn address(identity: &RelayIdentity, host: &str, port: u16) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    format!(
        "nook://{}@{}:{}",
        Fingerprint::of_key(&identity.public().0),
        host,
        port
    )
}
