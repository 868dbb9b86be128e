//! API keys: their secrets, the digests the store keeps of them, issuing a
//! key (for `POST /keys` and `cairn keys create` alike), and the ring of
//! keys each instance holds in memory to check requests without a query.

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::grant::{Grant, Scope};
use crate::names;
use crate::store::{NewKey, SharedStore, StoreError, StoredKey};

/// What every key starts with, so that a leaked one is recognisable (and
/// secret scanners can be taught it).
pub const KEY_PREFIX: &str = "cairn_";

/// Fewest characters after the prefix of a key given in the configuration.
pub const MIN_CONFIGURED_KEY_CHARS: usize = 32;

/// A key's secret. Never printed by `Debug`, so it cannot reach a log line
/// by accident; [`KeySecret::expose`] is the one way to read it.
#[derive(Clone)]
pub struct KeySecret(String);

impl KeySecret {
    /// A fresh secret: the prefix and 32 random bytes from the operating
    /// system, base64url-encoded (43 characters).
    pub fn generate() -> KeySecret {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system provides randomness");
        KeySecret(format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A secret given in the configuration (`--admin-key`): it must look
    /// like a key and be long enough to resist guessing.
    pub fn configured(secret: &str) -> Result<KeySecret, String> {
        let long_enough = secret
            .strip_prefix(KEY_PREFIX)
            .is_some_and(|rest| rest.chars().count() >= MIN_CONFIGURED_KEY_CHARS);
        if long_enough && !secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Ok(KeySecret(secret.to_owned()))
        } else {
            Err(format!(
                "an admin key must start with `{KEY_PREFIX}` and hold at least \
                 {MIN_CONFIGURED_KEY_CHARS} more characters, without spaces"
            ))
        }
    }

    /// The secret itself, to show its owner once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 digest the store keeps instead of the secret.
    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of(&self.0)
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret(…)")
    }
}

/// The SHA-256 digest of a key, in hex. A plain digest suffices (no slow
/// password hash): the secrets are 256 random bits, so there is nothing to
/// guess from a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyDigest(String);

impl KeyDigest {
    /// The digest of a presented credential.
    pub fn of(credential: &str) -> KeyDigest {
        let digest = Sha256::digest(credential.as_bytes());
        KeyDigest(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The digest as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What `POST /keys` and `cairn keys create` ask for.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    /// A name for people.
    pub name: String,
    /// What the key may do (at least one scope).
    pub scopes: Vec<Scope>,
    /// The stream prefixes it reaches (`None`: every stream; not empty).
    pub streams: Option<Vec<String>>,
    /// When it stops working, if ever (in the future).
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a key request was refused: shown to the client as a `400`.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a key request, stores the key's digest, and returns the stored
/// key with its secret, which nothing will show again.
pub async fn issue(
    store: &SharedStore,
    request: KeyRequest,
) -> Result<(StoredKey, KeySecret), IssueError> {
    names::check_name_part("a key name", &request.name).map_err(IssueError::Invalid)?;
    if request.name.trim().is_empty() {
        return Err(IssueError::Invalid("a key needs a name".into()));
    }
    if request.scopes.is_empty() {
        return Err(IssueError::Invalid("a key needs at least one scope".into()));
    }
    if let Some(prefixes) = &request.streams {
        if prefixes.is_empty() {
            return Err(IssueError::Invalid(
                "`streams` lists the prefixes a key reaches: leave it out (or null) \
                 for every stream, an empty list would reach none"
                    .into(),
            ));
        }
        for prefix in prefixes {
            names::check_name_part("a stream prefix", prefix).map_err(IssueError::Invalid)?;
        }
    }
    if request.scopes.contains(&Scope::Admin) && request.streams.is_some() {
        return Err(IssueError::Invalid(
            "an `admin` key reaches every stream: leave `streams` out".into(),
        ));
    }
    if request.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(IssueError::Invalid("`expires_at` is in the past".into()));
    }
    let mut scopes = request.scopes;
    scopes.sort();
    scopes.dedup();
    let secret = KeySecret::generate();
    let stored = store
        .create_key(NewKey {
            id: Uuid::now_v7(),
            name: request.name,
            digest: secret.digest().as_str().to_owned(),
            scopes,
            streams: request.streams,
            expires_at: request.expires_at,
        })
        .await?;
    Ok((stored, secret))
}

/// The keys an instance accepts, by digest, as last read from the store.
#[derive(Debug, Default)]
pub struct KeyRing {
    /// The grant of each key not revoked (it ends when the key expires).
    active: HashMap<KeyDigest, Grant>,
    /// Whether the store holds any key, revoked ones included: once it has,
    /// authentication stays on.
    any_stored: bool,
}

impl KeyRing {
    /// The ring of the keys stored.
    pub fn of(keys: Vec<StoredKey>) -> KeyRing {
        let any_stored = !keys.is_empty();
        let active = keys
            .into_iter()
            .filter(|k| k.revoked.is_none())
            .map(|k| {
                let key = k.key;
                let grant = Grant::new(key.scopes, key.streams).until(key.expires_at);
                (KeyDigest(key.digest), grant)
            })
            .collect();
        KeyRing { active, any_stored }
    }

    /// Whether the store holds any key.
    pub fn any_stored(&self) -> bool {
        self.any_stored
    }

    /// Whether both rings accept the same keys.
    pub fn same_keys(&self, other: &KeyRing) -> bool {
        self.active.len() == other.active.len()
            && self
                .active
                .keys()
                .all(|digest| other.active.contains_key(digest))
    }

    /// The grant of a presented key, if it is stored, not revoked and not
    /// expired. A presented key is found by its digest: the lookup's timing
    /// depends on the digest only, which a caller cannot steer towards a
    /// stored one, so it reveals nothing about any secret.
    pub fn grant(&self, digest: &KeyDigest, now: DateTime<Utc>) -> Option<&Grant> {
        self.active.get(digest).filter(|grant| grant.holds_at(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_never_debug_printed() {
        let (a, b) = (KeySecret::generate(), KeySecret::generate());
        assert!(a.expose().starts_with(KEY_PREFIX));
        assert_eq!(a.expose().len(), KEY_PREFIX.len() + 43);
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.digest(), b.digest());
        assert!(!format!("{a:?}").contains(&a.expose()[KEY_PREFIX.len()..]));
    }

    #[test]
    fn configured_keys_must_look_like_keys() {
        let long = format!("{KEY_PREFIX}{}", "x".repeat(MIN_CONFIGURED_KEY_CHARS));
        assert!(KeySecret::configured(&long).is_ok());
        assert!(KeySecret::configured(&long[1..]).is_err());
        assert!(KeySecret::configured(&long[..long.len() - 1]).is_err());
        assert!(KeySecret::configured(&format!("{long} x")).is_err());
    }
}
