//! Bearer JWTs from an identity provider (API.md, Authentication and
//! authorization), checked with jsonwebtoken: the signature against a shared
//! HMAC secret or a JWKS (a file, or an `http(s)` URL refreshed
//! periodically, where a failed refresh keeps the last good set), `exp`
//! always, `iss` and `aud` when configured.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::watch;

use super::grant::{Grant, Scope};

/// Seconds of clock difference tolerated on `exp`.
const LEEWAY_SECONDS: u64 = 5;

/// Largest JWKS document fetched, in bytes.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Fewest bytes of a shared HMAC secret (RFC 7518 §3.2: as long as the
/// hash), so that it cannot be guessed.
pub const MIN_SECRET_BYTES: usize = 32;

/// Most verified tokens remembered; past it the memory starts afresh.
const MAX_VERIFIED: usize = 10_000;

/// Where a JWT's signing keys come from.
#[derive(Debug, Clone)]
pub enum JwtKeySource {
    /// A shared HMAC secret (HS256, HS384, HS512).
    Secret(String),
    /// A JWKS file.
    JwksFile(std::path::PathBuf),
    /// A JWKS at an `http(s)` URL.
    JwksUrl(reqwest::Url),
}

impl JwtKeySource {
    /// A JWKS source as configured: a URL when it starts `http://` or
    /// `https://`, else a file path.
    pub fn jwks(location: &str) -> anyhow::Result<JwtKeySource> {
        if location.starts_with("http://") || location.starts_with("https://") {
            Ok(JwtKeySource::JwksUrl(location.parse()?))
        } else {
            Ok(JwtKeySource::JwksFile(location.into()))
        }
    }
}

/// How JWTs are checked.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Where the signing keys come from.
    pub keys: JwtKeySource,
    /// The `iss` a token must carry, if set.
    pub issuer: Option<String>,
    /// The `aud` a token must carry, if set.
    pub audience: Option<String>,
    /// How often a JWKS URL is fetched again.
    pub refresh: Duration,
}

/// Why a JWT was refused; the text is shown to the client (it names the
/// failed check, never a key).
pub type JwtRefusal = String;

/// One verification key, with the algorithms its kind of key admits: a
/// token's `alg` header only chooses among those, so an RSA public key can
/// never be used as an HMAC secret.
struct VerificationKey {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// Checks bearer JWTs.
pub struct JwtVerifier {
    keys: RwLock<Arc<Vec<VerificationKey>>>,
    issuer: Option<String>,
    audience: Option<String>,
    /// Tokens already verified, with their grant (which ends at the
    /// token's `exp`). A client sends the same token for its whole life,
    /// and checking an ES256 or RSA signature on every request would cost
    /// more than the request itself. Only tokens that passed every check get
    /// here; the memory is forgotten when the keys change.
    verified: Mutex<HashMap<String, Grant>>,
}

/// The claims Cairn reads; `exp`, `iss` and `aud` are checked by jsonwebtoken.
#[derive(Deserialize)]
struct CairnClaims {
    exp: f64,
    #[serde(default)]
    scope: Option<ScopeClaim>,
    #[serde(default)]
    cairn_streams: Option<Vec<String>>,
}

/// `scope` as identity providers write it: space-separated words, or a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeClaim {
    Words(String),
    List(Vec<String>),
}

impl JwtVerifier {
    /// A verifier with its keys loaded; a JWKS URL is then refreshed in the
    /// background for as long as the verifier lives. Fails when the keys
    /// cannot be loaded at all: a server that could check no token is
    /// better not started.
    /// `changes` is counted up whenever a refresh replaces the keys.
    pub async fn start(
        config: &JwtConfig,
        changes: Arc<watch::Sender<u64>>,
    ) -> anyhow::Result<Arc<JwtVerifier>> {
        let keys = load(&config.keys).await?;
        let verifier = Arc::new(JwtVerifier {
            keys: RwLock::new(Arc::new(keys)),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            verified: Mutex::new(HashMap::new()),
        });
        if let JwtKeySource::JwksUrl(_) = &config.keys {
            let weak = Arc::downgrade(&verifier);
            let (source, every) = (config.keys.clone(), config.refresh);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(verifier) = weak.upgrade() else {
                        return;
                    };
                    match load(&source).await {
                        Ok(keys) => {
                            *verifier.keys.write().expect("never poisoned") = Arc::new(keys);
                            verifier.verified.lock().expect("never poisoned").clear();
                            changes.send_modify(|count| *count += 1);
                        }
                        Err(error) => {
                            tracing::warn!(%error, "refreshing the JWKS failed; the last set stays");
                        }
                    }
                }
            });
        }
        Ok(verifier)
    }

    /// The grant of a token, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Grant, JwtRefusal> {
        if let Some(known) = self.verified.lock().expect("never poisoned").get(token)
            && known.holds_at(chrono::Utc::now())
        {
            return Ok(known.clone());
        }
        let grant = self.check(token)?;
        let mut verified = self.verified.lock().expect("never poisoned");
        if verified.len() >= MAX_VERIFIED {
            verified.clear();
        }
        verified.insert(token.to_owned(), grant.clone());
        Ok(grant)
    }

    /// Checks a token's signature and claims; its grant, ending at its `exp`
    /// (give or take the leeway).
    fn check(&self, token: &str) -> Result<Grant, JwtRefusal> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| format!("the token is not a JWT this server accepts ({e})"))?;
        let keys = self.keys.read().expect("never poisoned").clone();
        let candidates: Vec<&VerificationKey> = keys
            .iter()
            .filter(|k| header.kid.is_none() || k.kid == header.kid)
            .collect();
        if candidates.is_empty() {
            return Err("no key of this server signed the token (unknown `kid`)".into());
        }
        // Only keys whose kind admits the token's `alg` are tried.
        let candidates: Vec<&VerificationKey> = candidates
            .into_iter()
            .filter(|k| k.algorithms.contains(&header.alg))
            .collect();
        if candidates.is_empty() {
            return Err(format!(
                "the token's algorithm {:?} does not fit its key",
                header.alg
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        let mut required = vec!["exp"];
        match &self.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        // Without a `kid`, each key that fits is tried in turn.
        let mut outcome = Err("no key".to_owned());
        for key in candidates {
            outcome = jsonwebtoken::decode::<CairnClaims>(token, &key.key, &validation)
                .map_err(|e| refusal(&e));
            if outcome.is_ok() {
                break;
            }
        }
        let claims = outcome?.claims;
        let until = chrono::DateTime::from_timestamp(
            (claims.exp as i64).saturating_add(LEEWAY_SECONDS as i64),
            0,
        );
        Ok(grant_of(claims)?.until(until))
    }
}

/// The text of a refused token: which check failed.
fn refusal(error: &jsonwebtoken::errors::Error) -> JwtRefusal {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::InvalidAudience => "the token is for another audience".into(),
        ErrorKind::InvalidIssuer => "the token is from another issuer".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        _ => format!("the token is malformed ({error})"),
    }
}

/// The grant a token's claims give: scopes from the `cairn:` words of
/// `scope` (others, which identity providers add, are ignored; an unknown
/// `cairn:` word is refused), prefixes from `cairn_streams`.
fn grant_of(claims: CairnClaims) -> Result<Grant, JwtRefusal> {
    let words = match claims.scope {
        None => Vec::new(),
        Some(ScopeClaim::Words(words)) => words.split_whitespace().map(str::to_owned).collect(),
        Some(ScopeClaim::List(words)) => words,
    };
    let mut scopes = Vec::new();
    for word in &words {
        if let Some(name) = word.strip_prefix("cairn:") {
            let scope = Scope::parse(name)
                .ok_or_else(|| format!("the token's scope {word:?} is no Cairn scope"))?;
            scopes.push(scope);
        }
    }
    Ok(Grant::new(scopes, claims.cairn_streams))
}

/// Loads the verification keys of a source.
async fn load(source: &JwtKeySource) -> anyhow::Result<Vec<VerificationKey>> {
    let set: JwkSet = match source {
        JwtKeySource::Secret(secret) => {
            return Ok(vec![VerificationKey {
                kid: None,
                key: DecodingKey::from_secret(secret.as_bytes()),
                algorithms: vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            }]);
        }
        JwtKeySource::JwksFile(path) => {
            let text = tokio::fs::read(path).await.map_err(|e| {
                anyhow::anyhow!("cannot read the JWKS file {}: {e}", path.display())
            })?;
            serde_json::from_slice(&text)?
        }
        JwtKeySource::JwksUrl(url) => fetch(url).await?,
    };
    let keys: Vec<VerificationKey> = set.keys.iter().filter_map(verification_key).collect();
    anyhow::ensure!(
        !keys.is_empty(),
        "the JWKS holds no key this server can use"
    );
    Ok(keys)
}

/// Fetches a JWKS, within a deadline and a size bound.
async fn fetch(url: &reqwest::Url) -> anyhow::Result<JwkSet> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut response = client.get(url.clone()).send().await?.error_for_status()?;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
        anyhow::ensure!(
            body.len() <= MAX_JWKS_BYTES,
            "the JWKS is larger than 1 MiB"
        );
    }
    Ok(serde_json::from_slice(&body)?)
}

/// A JWK as a verification key, with the algorithms its kind admits (only
/// its own `alg` when it names one); `None` for kinds not supported.
fn verification_key(jwk: &Jwk) -> Option<VerificationKey> {
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => {
            vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
        }
    };
    let algorithms = match jwk.common.key_algorithm {
        Some(named) => {
            let named = Algorithm::from_str(&format!("{named:?}")).ok()?;
            family.into_iter().filter(|a| *a == named).collect()
        }
        None => family,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerificationKey {
        kid: jwk.common.key_id.clone(),
        key,
        algorithms,
    })
}
