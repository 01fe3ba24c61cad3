//! Authenticated encryption at rest (ChaCha20-Poly1305), the one implementation the
//! services seal with: webhook signing secrets under `WEBHOOK_SECRET_KEY`, and personal
//! data's keys under `DATA_MASTER_KEY` (docs/DATA-PROTECTION.md).
//!
//! A [`Key`] is 32 random bytes; it seals bytes with associated data (what the sealed
//! bytes belong to, so they cannot be moved elsewhere) into `nonce ‖ ciphertext ‖ tag`
//! with a fresh random nonce. A [`Keyring`] is the rotatable form a setting holds: base64
//! keys, comma-separated, the first sealing and every one opening; what it seals names the
//! key by its id (the first 4 bytes of the key's SHA-256, in hex).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use sha2::{Digest, Sha256};

/// Bytes of a key.
pub const KEY_BYTES: usize = 32;
/// Bytes of a nonce, at the start of what is sealed.
pub const NONCE_BYTES: usize = 12;
/// Bytes a seal adds to its input: the nonce and the tag.
pub const OVERHEAD: usize = NONCE_BYTES + 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not base64 keys of 32 bytes, comma-separated.
    #[error("keys are base64 of 32 bytes, comma-separated (the first seals)")]
    BadKey,
    /// The operating system gave no randomness.
    #[error("no randomness: {0}")]
    Random(String),
    /// Sealed with a key that is not in the ring.
    #[error("sealed with key {0}, which is not configured")]
    UnknownKey(String),
    /// Too short, or it does not open with its key and associated data: corrupted,
    /// forged, or moved from where it was sealed.
    #[error("does not open with its key (corrupted, forged or moved)")]
    Forged,
}

/// One key. Its `Debug` shows only its id.
#[derive(Clone)]
pub struct Key {
    id: String,
    bytes: [u8; KEY_BYTES],
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("id", &self.id).finish()
    }
}

fn random<const N: usize>() -> Result<[u8; N], SealError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| SealError::Random(e.to_string()))?;
    Ok(bytes)
}

impl Key {
    /// A new random key.
    pub fn generate() -> Result<Key, SealError> {
        Ok(Key::from_bytes(random()?))
    }

    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Key {
        let id = hex::encode(&Sha256::digest(bytes)[..4]);
        let cipher = ChaCha20Poly1305::new(&bytes.into());
        Key { id, bytes, cipher }
    }

    /// From bytes that must be a key's (an unwrapped key read back).
    pub fn from_slice(bytes: &[u8]) -> Result<Key, SealError> {
        let bytes: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| SealError::Forged)?;
        Ok(Key::from_bytes(bytes))
    }

    /// Its id: the first 4 bytes of its SHA-256, in hex.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its bytes, to be sealed by another key (never stored or shown in clear).
    pub fn expose(&self) -> &[u8; KEY_BYTES] {
        &self.bytes
    }

    /// `nonce ‖ ciphertext ‖ tag` of `clear`, bound to `associated`.
    pub fn seal(&self, clear: &[u8], associated: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce: [u8; NONCE_BYTES] = random()?;
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: clear,
                    aad: associated,
                },
            )
            .map_err(|_| SealError::Forged)?;
        let mut out = Vec::with_capacity(OVERHEAD + clear.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// What [`Key::seal`] sealed, given the same `associated`.
    pub fn open(&self, sealed: &[u8], associated: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < OVERHEAD {
            return Err(SealError::Forged);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: associated,
                },
            )
            .map_err(|_| SealError::Forged)
    }
}

/// The keys a setting holds: the first seals, every one opens. Its `Debug` shows only
/// key ids.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// From base64 keys of 32 bytes, comma-separated.
    pub fn from_text(text: &str) -> Result<Keyring, SealError> {
        let mut keys = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bytes = STANDARD.decode(part).map_err(|_| SealError::BadKey)?;
            let bytes: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| SealError::BadKey)?;
            keys.push(Key::from_bytes(bytes));
        }
        if keys.is_empty() {
            return Err(SealError::BadKey);
        }
        Ok(Keyring { keys })
    }

    /// A new random key in the form [`Keyring::from_text`] reads (for `dev/stack` and
    /// tests).
    pub fn generate_text() -> Result<String, SealError> {
        Ok(STANDARD.encode(random::<KEY_BYTES>()?))
    }

    /// Seals with the first key: its id and what it sealed.
    pub fn seal(&self, clear: &[u8], associated: &[u8]) -> Result<(&str, Vec<u8>), SealError> {
        let key = &self.keys[0];
        Ok((key.id(), key.seal(clear, associated)?))
    }

    /// Opens with the key `id` names.
    pub fn open(&self, id: &str, sealed: &[u8], associated: &[u8]) -> Result<Vec<u8>, SealError> {
        self.keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?
            .open(sealed, associated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_sealed_opens_only_with_its_key_and_associated_data() {
        let key = Key::generate().expect("randomness");
        let sealed = key.seal(b"hello", b"event 1").expect("seals");
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        assert_eq!(key.open(&sealed, b"event 1").expect("opens"), b"hello");
        assert_eq!(
            key.open(&sealed, b"event 2"),
            Err(SealError::Forged),
            "moved"
        );
        let other = Key::generate().expect("randomness");
        assert_eq!(other.open(&sealed, b"event 1"), Err(SealError::Forged));
        let mut flipped = sealed.clone();
        flipped[NONCE_BYTES] ^= 1;
        assert_eq!(key.open(&flipped, b"event 1"), Err(SealError::Forged));
        assert_eq!(key.open(&sealed[..10], b"event 1"), Err(SealError::Forged));
        assert_ne!(
            key.seal(b"hello", b"event 1").expect("seals"),
            sealed,
            "fresh nonces"
        );
        assert!(!format!("{key:?}").contains(&format!("{:?}", key.expose())));
    }

    #[test]
    fn a_ring_seals_with_its_first_key_and_opens_with_any() {
        let (old, new) = (
            Keyring::generate_text().expect("randomness"),
            Keyring::generate_text().expect("randomness"),
        );
        let before = Keyring::from_text(&old).expect("a key");
        let (id, sealed) = before.seal(b"tenant key", b"acme").expect("seals");
        let rotated = Keyring::from_text(&format!("{new}, {old}")).expect("keys");
        assert_eq!(
            rotated.open(id, &sealed, b"acme").expect("opens"),
            b"tenant key"
        );
        let (new_id, _) = rotated.seal(b"x", b"").expect("seals");
        assert_ne!(new_id, id);
        assert!(matches!(
            before.open(new_id, &sealed, b"acme"),
            Err(SealError::UnknownKey(_))
        ));
        for bad in ["", " , ", "short", "bm90IDMyIGJ5dGVz", "not base64!"] {
            assert_eq!(
                Keyring::from_text(bad).err(),
                Some(SealError::BadKey),
                "{bad}"
            );
        }
        assert!(!format!("{rotated:?}").contains('='));
    }
}
