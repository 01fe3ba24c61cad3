//! Signing secrets at rest: sealed (ChaCha20-Poly1305) with a key only the services hold
//! (`WEBHOOK_SECRET_KEY`), so events, Kafka records, read models and logs carry only the
//! sealed form. A sealed secret is `v1.<key id>.<base64(nonce ‖ ciphertext)>`; the key id
//! (the first 4 bytes of the key's SHA-256, in hex) names the key that sealed it, so the
//! key can be rotated: seal with the first key of the list, open with any of them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::signature::{BadSecret, Secret};

const VERSION: &str = "v1";
const NONCE_BYTES: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SealError {
    #[error("WEBHOOK_SECRET_KEY holds base64 keys of 32 bytes, comma-separated (the first seals)")]
    BadKey,
    #[error("the sealed secret is not v1.<key id>.<base64>")]
    Malformed,
    #[error("the secret was sealed with key {0}, which is not configured")]
    UnknownKey(String),
    #[error("the sealed secret does not open with its key (corrupted or forged)")]
    Forged,
    #[error(transparent)]
    Secret(#[from] BadSecret),
}

struct SealKey {
    id: String,
    cipher: ChaCha20Poly1305,
}

/// The keys secrets are sealed with. Its `Debug` shows only key ids.
pub struct Sealer {
    keys: Vec<SealKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Sealer").field("key_ids", &ids).finish()
    }
}

impl Sealer {
    /// From `WEBHOOK_SECRET_KEY`'s form: base64 keys of 32 bytes, comma-separated, the
    /// first one sealing and all of them opening.
    pub fn from_keys(text: &str) -> Result<Sealer, SealError> {
        let mut keys = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bytes = STANDARD.decode(part).map_err(|_| SealError::BadKey)?;
            if bytes.len() != 32 {
                return Err(SealError::BadKey);
            }
            let id = hex::encode(&Sha256::digest(&bytes)[..4]);
            let cipher = ChaCha20Poly1305::new(Key::from_slice(&bytes));
            keys.push(SealKey { id, cipher });
        }
        if keys.is_empty() {
            return Err(SealError::BadKey);
        }
        Ok(Sealer { keys })
    }

    /// A new random key in the form [`Sealer::from_keys`] reads (for `dev/stack` and tests).
    pub fn generate_key() -> Result<String, BadSecret> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| BadSecret::Random(e.to_string()))?;
        Ok(STANDARD.encode(key))
    }

    /// Seals a secret with the first key and a fresh random nonce.
    pub fn seal(&self, secret: &Secret) -> Result<String, SealError> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|e| BadSecret::Random(e.to_string()))?;
        let ciphertext = key
            .cipher
            .encrypt(Nonce::from_slice(&nonce), secret.expose().as_bytes())
            .map_err(|_| SealError::Forged)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(format!("{VERSION}.{}.{}", key.id, STANDARD.encode(out)))
    }

    /// Opens a sealed secret with the key that sealed it.
    pub fn open(&self, sealed: &str) -> Result<Secret, SealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(VERSION), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Malformed);
        };
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let bytes = STANDARD.decode(body).map_err(|_| SealError::Malformed)?;
        if bytes.len() <= NONCE_BYTES {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let clear = key
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| SealError::Forged)?;
        let text = String::from_utf8(clear).map_err(|_| SealError::Forged)?;
        Ok(Secret::parse(&text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::from_keys(&Sealer::generate_key().expect("randomness")).expect("a valid key")
    }

    #[test]
    fn a_sealed_secret_opens_to_itself_and_shows_nothing_of_it() {
        let sealer = sealer();
        let secret = Secret::generate().expect("randomness");
        let sealed = sealer.seal(&secret).expect("seals");
        assert_eq!(sealer.open(&sealed).expect("opens"), secret);
        let clear = secret.expose();
        let key_b64 = clear.trim_start_matches("whsec_");
        assert!(!sealed.contains(key_b64), "{sealed}");
        // Two seals of one secret differ (fresh nonces).
        assert_ne!(sealer.seal(&secret).expect("seals"), sealed);
    }

    #[test]
    fn a_rotated_key_still_opens_what_the_old_one_sealed() {
        let old = Sealer::generate_key().expect("randomness");
        let new = Sealer::generate_key().expect("randomness");
        let secret = Secret::generate().expect("randomness");
        let sealed_by_old = Sealer::from_keys(&old)
            .expect("key")
            .seal(&secret)
            .expect("seals");
        let both = Sealer::from_keys(&format!("{new},{old}")).expect("keys");
        assert_eq!(both.open(&sealed_by_old).expect("opens"), secret);
        let sealed_by_new = both.seal(&secret).expect("seals");
        assert!(matches!(
            Sealer::from_keys(&old).expect("key").open(&sealed_by_new),
            Err(SealError::UnknownKey(_))
        ));
    }

    #[test]
    fn tampering_and_bad_keys_are_errors() {
        let sealer = sealer();
        let sealed = sealer
            .seal(&Secret::generate().expect("randomness"))
            .expect("seals");
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_eq!(sealer.open(&tampered), Err(SealError::Forged));
        assert_eq!(sealer.open("whsec_abc"), Err(SealError::Malformed));
        for bad in ["", "short", "bm90IDMyIGJ5dGVz", "not base64!"] {
            assert!(
                matches!(Sealer::from_keys(bad), Err(SealError::BadKey)),
                "{bad}"
            );
        }
        assert!(!format!("{sealer:?}").contains('='));
    }
}
