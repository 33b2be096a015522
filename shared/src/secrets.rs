//! Secrets we must read back (app signing secrets, provider and connection credentials) are
//! sealed with AES-256-GCM before they reach the store (DESIGN.md §2, §6). Secrets we only
//! compare (API keys, trigger tokens, webhook secrets) are hashed instead and never come here.
//!
//! Where the 32-byte key comes from is the deployment's business: locally a key file created
//! on first start (or `BATON_SECRET_KEY`); on AWS a data key generated under the KMS key.

use crate::error::{Error, Result};
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use std::path::Path;

/// Version tag of the sealed format: `v1.<base64(nonce ‖ ciphertext ‖ tag)>`.
const PREFIX: &str = "v1.";
const NONCE_LEN: usize = 12;

pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    pub fn new(key: [u8; 32]) -> Self {
        Self { cipher: Aes256Gcm::new(&key.into()) }
    }

    /// A random key that lives as long as the process: for tests only, since anything sealed
    /// with it is unreadable after a restart.
    pub fn ephemeral() -> Self {
        Self::new(rand::random())
    }

    /// The key in `hex` (64 hex digits), as given in `BATON_SECRET_KEY`.
    pub fn from_hex(hex_key: &str) -> Result<Self> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| Error::validation("secret key must be 64 hex digits"))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| Error::validation("secret key must be 64 hex digits"))?;
        Ok(Self::new(key))
    }

    /// Reads the key file at `path`, creating it (mode 0600, 64 hex digits) when missing.
    /// Creation is exclusive, so two processes starting at once agree on one key.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        use std::io::Write;
        match std::fs::read_to_string(path) {
            Ok(s) => Self::from_hex(&s).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a 64-hex-digit key", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                match opts.open(path) {
                    Ok(mut f) => {
                        f.write_all(hex::encode(key).as_bytes())?;
                        f.sync_all()?;
                        Ok(Self::new(key))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load_or_create(path),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    pub fn seal(&self, plaintext: &[u8]) -> String {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ct = self.cipher.encrypt(Nonce::from_slice(&nonce), plaintext).expect("AES-GCM encryption cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        format!("{PREFIX}{}", B64.encode(out))
    }

    pub fn seal_str(&self, plaintext: &str) -> String {
        self.seal(plaintext.as_bytes())
    }

    /// Fails (as an internal error: the caller never supplies sealed text) when the text was
    /// sealed under another key or tampered with.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>> {
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| B64.decode(b).ok())
            .filter(|r| r.len() > NONCE_LEN)
            .ok_or_else(|| Error::Internal("sealed secret is malformed".into()))?;
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| Error::Internal("sealed secret does not open with this key".into()))
    }

    pub fn open_str(&self, sealed: &str) -> Result<String> {
        String::from_utf8(self.open(sealed)?).map_err(|_| Error::Internal("sealed secret is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_text_opens_with_the_same_key_only() {
        let a = SecretBox::ephemeral();
        let b = SecretBox::ephemeral();
        let sealed = a.seal_str("whsec_abc");
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(a.open_str(&sealed).unwrap(), "whsec_abc");
        assert!(b.open(&sealed).is_err());
    }

    #[test]
    fn sealing_twice_gives_different_text() {
        let a = SecretBox::ephemeral();
        assert_ne!(a.seal_str("x"), a.seal_str("x"));
    }

    #[test]
    fn tampered_or_malformed_text_is_rejected() {
        let a = SecretBox::ephemeral();
        let mut sealed = a.seal_str("secret").into_bytes();
        let last = sealed.len() - 2;
        sealed[last] = if sealed[last] == b'A' { b'B' } else { b'A' };
        assert!(a.open(std::str::from_utf8(&sealed).unwrap()).is_err());
        assert!(a.open("v1.").is_err());
        assert!(a.open("nope").is_err());
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baton.key");
        let first = SecretBox::load_or_create(&path).unwrap();
        let sealed = first.seal_str("kept across restarts");
        let second = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(second.open_str(&sealed).unwrap(), "kept across restarts");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&path, "short").unwrap();
        assert!(SecretBox::load_or_create(&path).is_err());
    }
}
