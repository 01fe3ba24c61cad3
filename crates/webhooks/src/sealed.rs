//! Signing secrets at rest: sealed (ChaCha20-Poly1305) with a key only the services hold
//! (`WEBHOOK_SECRET_KEY`), so events, Kafka records, read models and logs carry only the
//! sealed form. A sealed secret is `v1.<key id>.<base64(nonce ‖ ciphertext)>`; the key id
//! (the first 4 bytes of the key's SHA-256, in hex) names the key that sealed it, so the
//! key can be rotated: seal with the first key of the list, open with any of them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sealing::Keyring;
use thiserror::Error;

use crate::signature::{BadSecret, Secret};

const VERSION: &str = "v1";

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

impl From<sealing::SealError> for SealError {
    fn from(e: sealing::SealError) -> Self {
        match e {
            sealing::SealError::BadKey => SealError::BadKey,
            sealing::SealError::UnknownKey(id) => SealError::UnknownKey(id),
            sealing::SealError::Forged => SealError::Forged,
            sealing::SealError::Random(reason) => SealError::Secret(BadSecret::Random(reason)),
        }
    }
}

/// The keys secrets are sealed with (`sealing::Keyring`). Its `Debug` shows only key ids.
#[derive(Debug)]
pub struct Sealer {
    keys: Keyring,
}

impl Sealer {
    /// From `WEBHOOK_SECRET_KEY`'s form: base64 keys of 32 bytes, comma-separated, the
    /// first one sealing and all of them opening.
    pub fn from_keys(text: &str) -> Result<Sealer, SealError> {
        Ok(Sealer {
            keys: Keyring::from_text(text)?,
        })
    }

    /// A new random key in the form [`Sealer::from_keys`] reads (for `dev/stack` and tests).
    pub fn generate_key() -> Result<String, BadSecret> {
        Keyring::generate_text().map_err(|e| BadSecret::Random(e.to_string()))
    }

    /// Seals a secret with the first key and a fresh random nonce.
    pub fn seal(&self, secret: &Secret) -> Result<String, SealError> {
        let (id, sealed) = self.keys.seal(secret.expose().as_bytes(), b"")?;
        Ok(format!("{VERSION}.{id}.{}", STANDARD.encode(sealed)))
    }

    /// Opens a sealed secret with the key that sealed it.
    pub fn open(&self, sealed: &str) -> Result<Secret, SealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(VERSION), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Malformed);
        };
        let bytes = STANDARD.decode(body).map_err(|_| SealError::Malformed)?;
        if bytes.len() <= sealing::NONCE_BYTES {
            return Err(SealError::Malformed);
        }
        let clear = self.keys.open(id, &bytes, b"")?;
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
