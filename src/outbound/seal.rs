//! Credentials at rest: AES-256-GCM (ring) under the sender's master key.
//!
//! A sealed value is `version (1) || nonce (12) || ciphertext || tag (16)`,
//! with a fresh random nonce per seal and the destination's id as associated
//! data, so a sealed blob copied onto another row does not open. The master
//! key never leaves this type; its `Debug` prints nothing of it.

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const VERSION: u8 = 1;

/// Why a sealed value did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("sealed credentials are damaged or were sealed under another master key")]
    Open,
    #[error("the master key must be 32 bytes, written as 64 hex digits or in base64")]
    KeyFormat,
    #[error("no randomness available")]
    Random,
}

pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// A sealer from the configured master key: 64 hex digits, or base64
    /// (standard or URL-safe, padded or not) of 32 bytes. Surrounding
    /// whitespace is ignored.
    pub fn from_master_key(text: &[u8]) -> Result<Sealer, SealError> {
        let text = std::str::from_utf8(text)
            .map_err(|_| SealError::KeyFormat)?
            .trim();
        let mut raw = [0u8; 32];
        if text.len() == 64 && hex::decode_to_slice(text, &mut raw).is_ok() {
            return Sealer::from_bytes(&raw);
        }
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for e in engines {
            if let Ok(b) = e.decode(text) {
                if b.len() == 32 {
                    return Sealer::from_bytes(&b);
                }
            }
        }
        Err(SealError::KeyFormat)
    }

    /// A random key (development only: nothing sealed with it opens after a
    /// restart).
    pub fn generate() -> Result<Sealer, SealError> {
        let mut raw = [0u8; 32];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| SealError::Random)?;
        Sealer::from_bytes(&raw)
    }

    fn from_bytes(raw: &[u8]) -> Result<Sealer, SealError> {
        let key = UnboundKey::new(&AES_256_GCM, raw).map_err(|_| SealError::KeyFormat)?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    /// Encrypts `plain`, bound to `context` (the destination id).
    pub fn seal(&self, context: &str, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Decrypts what [`Sealer::seal`] made for the same `context`.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let Some((&VERSION, rest)) = sealed.split_first() else {
            return Err(SealError::Open);
        };
        if rest.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buf = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn seals_and_opens_bound_to_its_context() {
        let s = Sealer::from_master_key(HEX.as_bytes()).unwrap();
        let a = s.seal("ch-1", b"{\"webhookUrl\":\"https://x\"}").unwrap();
        let b = s.seal("ch-1", b"{\"webhookUrl\":\"https://x\"}").unwrap();
        assert_ne!(a, b, "a fresh nonce each time");
        assert!(
            !a.windows(9).any(|w| w == b"webhookUr"),
            "ciphertext, not text"
        );
        assert_eq!(
            s.open("ch-1", &a).unwrap(),
            b"{\"webhookUrl\":\"https://x\"}"
        );
        assert_eq!(s.open("ch-2", &a), Err(SealError::Open), "another row");
        let mut bad = a.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(s.open("ch-1", &bad), Err(SealError::Open));
        assert_eq!(s.open("ch-1", &a[..5]), Err(SealError::Open));
        assert_eq!(s.open("ch-1", &[]), Err(SealError::Open));
        let other = Sealer::generate().unwrap();
        assert_eq!(other.open("ch-1", &a), Err(SealError::Open));
    }

    #[test]
    fn master_key_formats() {
        let raw: Vec<u8> = (0u8..32).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        let from_hex = Sealer::from_master_key(format!(" {HEX}\n").as_bytes()).unwrap();
        let sealed = from_hex.seal("x", b"secret").unwrap();
        for text in [b64, b64url] {
            let s = Sealer::from_master_key(text.as_bytes()).unwrap();
            assert_eq!(s.open("x", &sealed).unwrap(), b"secret");
        }
        for bad in ["", "short", &HEX[..62], "zz".repeat(32).as_str()] {
            assert_eq!(
                Sealer::from_master_key(bad.as_bytes()).err(),
                Some(SealError::KeyFormat),
                "{bad}"
            );
        }
        assert_eq!(format!("{from_hex:?}"), "Sealer([redacted])");
    }
}
