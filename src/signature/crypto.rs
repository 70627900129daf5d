//! Key derivation, the one HMAC helper, and the constant-time matcher.

use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::parse::BASE64;
use super::{Algorithm, KeyError, Preset, Scheme};

/// Standard Webhooks (and Svix) secrets are `whsec_` + base64 of the key.
const WHSEC_PREFIX: &[u8] = b"whsec_";

/// The key bytes `scheme` signs with, from a configured secret.
pub(super) fn derive_key(scheme: &Scheme, secret: &[u8]) -> Result<Vec<u8>, KeyError> {
    if secret.is_empty() {
        return Err(KeyError::Empty);
    }
    let base64_secret = matches!(
        scheme,
        Scheme::Preset(Preset::StandardWebhooks | Preset::Svix)
    );
    match secret.strip_prefix(WHSEC_PREFIX) {
        Some(encoded) if base64_secret => {
            let key = BASE64.decode(encoded).map_err(|_| KeyError::BadBase64)?;
            if key.is_empty() {
                return Err(KeyError::Empty);
            }
            Ok(key)
        }
        // Everything else, Stripe's `whsec_…` included, is used verbatim.
        _ => Ok(secret.to_vec()),
    }
}

/// HMAC of the concatenation of `parts` (fed piecewise, never copied).
pub(super) fn mac(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        // HMAC accepts keys of any length (long ones are hashed), so this
        // cannot fail.
        let mut mac = <M as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
    match algorithm {
        Algorithm::Sha1 => run::<Hmac<Sha1>>(key, parts),
        Algorithm::Sha256 => run::<Hmac<Sha256>>(key, parts),
        Algorithm::Sha512 => run::<Hmac<Sha512>>(key, parts),
    }
}

pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The index of the first expected value equal to any candidate. Every pair is
/// compared with `ct_eq` and the loop never exits early, so timing reveals
/// neither which pair matched nor how many bytes did. (`ct_eq` on slices of
/// different lengths is false at once; lengths are public.)
pub(super) fn first_match<E: AsRef<[u8]>, C: AsRef<[u8]>>(
    expected: &[E],
    candidates: &[C],
) -> Option<usize> {
    let mut found = Choice::from(0);
    let mut index = 0u64;
    for (i, want) in (0u64..).zip(expected) {
        for candidate in candidates {
            let hit = want.as_ref().ct_eq(candidate.as_ref());
            index.conditional_assign(&i, hit & !found);
            found |= hit;
        }
    }
    let index = usize::try_from(index).ok()?;
    bool::from(found).then_some(index)
}
