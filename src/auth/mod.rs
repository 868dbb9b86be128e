//! Who is calling, and what they may do (API.md, Authentication and
//! authorization). Nothing here knows HTTP: the HTTP layer hands over a
//! credential and gets a [`Grant`] or a refusal.
//!
//! | file | what it holds |
//! | --- | --- |
//! | `grant.rs` | scopes, stream prefixes, and the rules of reach |
//! | `keys.rs` | API key secrets and digests, issuing keys, the in-memory key ring |
//! | `jwt.rs` | bearer JWTs: HMAC or JWKS, claims to a grant |

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

pub mod grant;
pub mod jwt;
pub mod keys;

pub use grant::{Denied, Grant, Scope};
pub use keys::{IssueError, KeyRequest, KeySecret, issue};

use crate::store::SharedStore;
use jwt::{JwtConfig, JwtVerifier};
use keys::{KEY_PREFIX, KeyDigest, KeyRing};

/// How often each instance reads the stored keys: a key revoked on any
/// instance is refused by every instance within this (API.md: 1 s).
pub const KEY_REFRESH: Duration = Duration::from_millis(500);

/// The credentials configured at start.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// A key with every scope over every stream (`--admin-key`).
    pub admin_key: Option<KeySecret>,
    /// How bearer JWTs are checked, if they are accepted.
    pub jwt: Option<JwtConfig>,
}

/// Why a request's credential was not accepted: shown to the client as a
/// `401`. The text never includes the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unauthenticated(pub String);

/// Checks credentials against the configured ones and the stored keys.
pub struct Authenticator {
    admin_key: Option<KeyDigest>,
    jwt: Option<Arc<JwtVerifier>>,
    ring: RwLock<Arc<KeyRing>>,
    store: SharedStore,
    /// Counts the changes of the accepted credentials (stored keys, JWT
    /// signing keys), so that feeds can check theirs again.
    credential_changes: Arc<watch::Sender<u64>>,
}

impl Authenticator {
    /// An authenticator with the stored keys loaded, which then reads them
    /// again every [`KEY_REFRESH`] for as long as it lives.
    pub async fn start(config: &AuthConfig, store: SharedStore) -> anyhow::Result<Arc<Self>> {
        let credential_changes = Arc::new(watch::Sender::new(0));
        let jwt = match &config.jwt {
            Some(jwt) => Some(JwtVerifier::start(jwt, credential_changes.clone()).await?),
            None => None,
        };
        let ring = KeyRing::of(store.keys().await?);
        let authenticator = Arc::new(Authenticator {
            admin_key: config.admin_key.as_ref().map(KeySecret::digest),
            jwt,
            ring: RwLock::new(Arc::new(ring)),
            store,
            credential_changes,
        });
        let weak = Arc::downgrade(&authenticator);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(KEY_REFRESH).await;
                let Some(authenticator) = weak.upgrade() else {
                    return;
                };
                match authenticator.reload_keys().await {
                    Ok(()) => failing = false,
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!(%error, "reading the stored keys failed; the last ones stay");
                    }
                    Err(_) => {}
                }
            }
        });
        Ok(authenticator)
    }

    /// Whether requests need a credential: one is configured, or the store
    /// holds (or ever held) a key.
    pub fn is_on(&self) -> bool {
        self.admin_key.is_some()
            || self.jwt.is_some()
            || self.ring.read().expect("never poisoned").any_stored()
    }

    /// Reads the stored keys again, at once, after this instance created or
    /// revoked one. Should the store fail, the interval's next read makes up.
    pub async fn refresh_keys(&self) {
        if let Err(error) = self.reload_keys().await {
            tracing::warn!(%error, "reading the stored keys failed; the next read makes up");
        }
    }

    /// Reads the stored keys again.
    async fn reload_keys(&self) -> Result<(), crate::store::StoreError> {
        let ring = Arc::new(KeyRing::of(self.store.keys().await?));
        let old = std::mem::replace(
            &mut *self.ring.write().expect("never poisoned"),
            ring.clone(),
        );
        if !old.same_keys(&ring) {
            self.credential_changes.send_modify(|changes| *changes += 1);
        }
        Ok(())
    }

    /// Resolves once a request authenticated with `credential` (`None`: auth
    /// was off) would no longer be: the key revoked, its JWT's signing key
    /// gone, the grant expired (`expires`), or auth turned on. A feed ends
    /// then, so that it does not outlive its right to exist.
    pub async fn lapsed(&self, credential: Option<&str>, expires: Option<chrono::DateTime<Utc>>) {
        let still = || match credential {
            Some(credential) => self.authenticate(credential).is_ok(),
            None => !self.is_on(),
        };
        // Watched from now on, and checked once more: a change between the
        // request's authentication and this moment is not missed.
        let mut changes = self.credential_changes.subscribe();
        if !still() {
            return;
        }
        let expiry = async {
            match expires {
                Some(at) => {
                    tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                () = &mut expiry => return,
                changed = changes.changed() => {
                    if changed.is_err() || !still() {
                        return;
                    }
                }
            }
        }
    }

    /// The grant of a credential: an API key (it starts `cairn_`) or, when
    /// JWTs are configured, a bearer JWT.
    pub fn authenticate(&self, credential: &str) -> Result<Grant, Unauthenticated> {
        if credential.starts_with(KEY_PREFIX) {
            let digest = KeyDigest::of(credential);
            if self.admin_key.as_ref() == Some(&digest) {
                return Ok(Grant::everything());
            }
            let ring = self.ring.read().expect("never poisoned").clone();
            // Unknown, revoked and expired keys get one answer: which of
            // them it was would tell that a key exists.
            return ring.grant(&digest, Utc::now()).cloned().ok_or_else(|| {
                Unauthenticated("the API key is not valid (unknown, revoked or expired)".into())
            });
        }
        match &self.jwt {
            Some(jwt) => jwt.verify(credential).map_err(Unauthenticated),
            None => Err(Unauthenticated(format!(
                "the credential is not an API key (they start `{KEY_PREFIX}`), \
                 and this server accepts no JWTs"
            ))),
        }
    }
}
