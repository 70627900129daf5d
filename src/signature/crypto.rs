//! Key derivation, the one HMAC helper, and the constant-time matcher.

use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};

use super::parse::BASE64;
use super::{Algorithm, Key, KeyError, KeyKind, Preset, Scheme};

/// Standard Webhooks (and Svix) secrets are `whsec_` + base64 of the key.
const WHSEC_PREFIX: &[u8] = b"whsec_";
/// Standard Webhooks asymmetric keys: `whpk_` + base64 of an ed25519 public
/// key, `whsk_` + base64 of its secret key (seed, or seed ‖ public key).
const WHPK_PREFIX: &[u8] = b"whpk_";
const WHSK_PREFIX: &[u8] = b"whsk_";

/// The key `scheme` signs with, from a configured secret.
pub(super) fn derive_key(scheme: &Scheme, secret: &[u8]) -> Result<Key, KeyError> {
    if secret.is_empty() {
        return Err(KeyError::Empty);
    }
    if matches!(scheme, Scheme::Preset(Preset::StandardWebhooks)) {
        if let Some(encoded) = secret.strip_prefix(WHPK_PREFIX) {
            let public = BASE64.decode(encoded).map_err(|_| KeyError::BadEd25519)?;
            if public.len() != 32 {
                return Err(KeyError::BadEd25519);
            }
            return Ok(Key(public, KeyKind::Ed25519Public));
        }
        if let Some(encoded) = secret.strip_prefix(WHSK_PREFIX) {
            let bytes = BASE64.decode(encoded).map_err(|_| KeyError::BadEd25519)?;
            let pair = match bytes.len() {
                32 => Ed25519KeyPair::from_seed_unchecked(&bytes),
                64 => Ed25519KeyPair::from_seed_and_public_key(&bytes[..32], &bytes[32..]),
                _ => return Err(KeyError::BadEd25519),
            }
            .map_err(|_| KeyError::BadEd25519)?;
            let public = pair.public_key().as_ref().to_vec();
            let seed = bytes.get(..32).unwrap_or_default().to_vec();
            return Ok(Key(public, KeyKind::Ed25519Secret(seed)));
        }
    }
    derive_mac_key(scheme, secret).map(|bytes| {
        let keys = Box::new(MacKeys::new(&bytes));
        Key(bytes, KeyKind::Mac(keys))
    })
}

fn derive_mac_key(scheme: &Scheme, secret: &[u8]) -> Result<Vec<u8>, KeyError> {
    let base64_secret = matches!(
        scheme,
        Scheme::Preset(Preset::StandardWebhooks | Preset::Svix | Preset::Clerk | Preset::Resend)
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

/// One key's HMAC states for each algorithm, keyed once when the key is
/// derived: a MAC then starts from a copy of the state instead of hashing
/// the padded key again (two compression blocks a request).
#[derive(Clone)]
pub(super) struct MacKeys {
    sha1: Hmac<Sha1>,
    sha256: Hmac<Sha256>,
    sha512: Hmac<Sha512>,
}

impl MacKeys {
    pub(super) fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of any length (long ones are hashed).
        let keyed = "HMAC accepts keys of any length";
        MacKeys {
            sha1: <Hmac<Sha1> as Mac>::new_from_slice(key).expect(keyed),
            sha256: <Hmac<Sha256> as Mac>::new_from_slice(key).expect(keyed),
            sha512: <Hmac<Sha512> as Mac>::new_from_slice(key).expect(keyed),
        }
    }

    /// [`mac`] with this key, without allocating.
    pub(super) fn mac(&self, algorithm: Algorithm, parts: &[&[u8]]) -> Tag {
        fn run<M: Mac + Clone>(keyed: &M, parts: &[&[u8]]) -> Tag {
            let mut mac = keyed.clone();
            for part in parts {
                mac.update(part);
            }
            Tag::of(&mac.finalize().into_bytes())
        }
        match algorithm {
            Algorithm::Sha1 => run(&self.sha1, parts),
            Algorithm::Sha256 => run(&self.sha256, parts),
            Algorithm::Sha512 => run(&self.sha512, parts),
        }
    }
}

/// A MAC value (up to SHA-512's 64 bytes) held inline; empty for a key
/// that expects nothing.
#[derive(Clone, Copy)]
pub(super) struct Tag {
    bytes: [u8; 64],
    len: usize,
}

impl Tag {
    pub(super) const EMPTY: Tag = Tag {
        bytes: [0; 64],
        len: 0,
    };

    fn of(value: &[u8]) -> Tag {
        let mut tag = Tag::EMPTY;
        let len = value.len().min(tag.bytes.len());
        tag.bytes[..len].copy_from_slice(&value[..len]);
        tag.len = len;
        tag
    }
}

impl AsRef<[u8]> for Tag {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// `a == b` in constant time, with `subtle`'s compare a 64-bit word at a
/// time (then a byte at a time for the rest) rather than a byte at a time:
/// the same guarantee (every word compared, no data-dependent branch or
/// early exit) at an eighth of the barriers. Slices of different lengths
/// are unequal at once; lengths are public.
pub(super) fn ct_eq_bytes(a: &[u8], b: &[u8]) -> Choice {
    if a.len() != b.len() {
        return Choice::from(0);
    }
    let (a_words, a_rest) = a.as_chunks::<8>();
    let (b_words, b_rest) = b.as_chunks::<8>();
    let mut equal = Choice::from(1);
    for (x, y) in a_words.iter().zip(b_words) {
        equal &= u64::from_ne_bytes(*x).ct_eq(&u64::from_ne_bytes(*y));
    }
    equal & a_rest.ct_eq(b_rest)
}

/// The index of the first expected value equal to any candidate. Every pair is
/// compared with [`ct_eq_bytes`] and the loop never exits early, so timing
/// reveals neither which pair matched nor how many bytes did.
pub(super) fn first_match<E: AsRef<[u8]>, C: AsRef<[u8]>>(
    expected: &[E],
    candidates: &[C],
) -> Option<usize> {
    let mut found = Choice::from(0);
    let mut index = 0u64;
    for (i, want) in (0u64..).zip(expected) {
        for candidate in candidates {
            let hit = ct_eq_bytes(want.as_ref(), candidate.as_ref());
            index.conditional_assign(&i, hit & !found);
            found |= hit;
        }
    }
    let index = usize::try_from(index).ok()?;
    bool::from(found).then_some(index)
}

/// The index of the first active ed25519 key that verifies any candidate over
/// `message`. Every (key, candidate) pair is tried (public keys and signatures
/// are public, but the work stays independent of which one matches).
pub(super) fn first_ed25519_match(
    keys: &[Key],
    active: &[bool],
    message: &[u8],
    candidates: &[Vec<u8>],
) -> Option<usize> {
    let mut found = None;
    for (i, (key, on)) in keys.iter().zip(active).enumerate() {
        if !on || matches!(key.1, KeyKind::Mac(_)) {
            continue;
        }
        let public = UnparsedPublicKey::new(&ED25519, key.0.as_slice());
        for candidate in candidates {
            if public.verify(message, candidate).is_ok() && found.is_none() {
                found = Some(i);
            }
        }
    }
    found
}

/// An ed25519 signature of `message` with a `whsk_` key; `None` for any other.
pub(super) fn ed25519_sign(key: &Key, message: &[u8]) -> Option<Vec<u8>> {
    let KeyKind::Ed25519Secret(seed) = &key.1 else {
        return None;
    };
    let pair = Ed25519KeyPair::from_seed_unchecked(seed).ok()?;
    Some(pair.sign(message).as_ref().to_vec())
}
