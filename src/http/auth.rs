//! Authentication at the edge of the HTTP layer: a middleware that turns a
//! request's credential into a [`Grant`] (or a `401`) before any handler
//! runs, and the [`Caller`] extractor through which a handler requires a
//! scope (`403` before anything else is done) and checks the names it
//! touches against the grant's reach.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::auth::{Authenticator, Grant, Scope, Unauthenticated};

/// The query parameter a feed's credential may travel in, for browsers'
/// `EventSource`, which cannot send headers.
const ACCESS_TOKEN: &str = "access_token";

/// What the authentication middleware needs.
#[derive(Clone)]
pub struct AuthLayerState {
    /// Checks credentials.
    pub authenticator: Arc<Authenticator>,
    /// Whether the server listens on a loopback address: then, with auth
    /// off, only requests addressed to a loopback name are answered.
    pub loopback: bool,
}

/// Routes anyone may call, even with auth on (API.md).
fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/openapi.json")
        || path == "/docs"
        || path.starts_with("/docs/")
        || path == "/console"
        || path.starts_with("/console/")
}

/// Authenticates every request that needs it and records its [`Grant`].
/// With auth off, every request is granted everything (after the loopback
/// `Host` check). A credential in `access_token` (feeds only) is taken out
/// of the URI, so no handler, log line or error echoes it.
pub async fn authenticate(
    State(state): State<AuthLayerState>,
    mut request: Request,
    next: Next,
) -> Response {
    let from_query = take_access_token(&mut request);
    if !state.authenticator.is_on() {
        if state.loopback
            && let Err(refused) = loopback_host(request.headers())
        {
            return refused.into_response();
        }
        request.extensions_mut().insert(Grant::everything());
        request.extensions_mut().insert(Presented {
            authenticator: state.authenticator.clone(),
            credential: None,
        });
        return next.run(request).await;
    }
    if is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let credential = match bearer(request.headers()) {
        Ok(Some(credential)) => credential.to_owned(),
        Ok(None) => match from_query {
            Some(token) if wants_feed(request.headers()) => token,
            Some(_) => {
                return ApiError::Unauthenticated {
                    detail: "`access_token` is taken by feeds only (`Accept: text/event-stream`); \
                             send `Authorization: Bearer <key or token>`"
                        .into(),
                    token_given: true,
                }
                .into_response();
            }
            None => {
                return ApiError::Unauthenticated {
                    detail:
                        "this request needs a credential: `Authorization: Bearer <key or token>`"
                            .into(),
                    token_given: false,
                }
                .into_response();
            }
        },
        Err(Unauthenticated(detail)) => {
            return ApiError::Unauthenticated {
                detail,
                token_given: true,
            }
            .into_response();
        }
    };
    match state.authenticator.authenticate(&credential) {
        Ok(grant) => {
            request.extensions_mut().insert(grant);
            request.extensions_mut().insert(Presented {
                authenticator: state.authenticator.clone(),
                credential: Some(credential.into()),
            });
            next.run(request).await
        }
        Err(Unauthenticated(detail)) => ApiError::Unauthenticated {
            detail,
            token_given: true,
        }
        .into_response(),
    }
}

/// The credential a request presented (`None`: auth was off), kept so that
/// a feed can end when it lapses. Not `Debug`: it must never reach a log.
#[derive(Clone)]
struct Presented {
    authenticator: Arc<Authenticator>,
    credential: Option<Arc<str>>,
}

/// The credential of an `Authorization: Bearer …` header, if there is one.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Unauthenticated> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed =
        || Unauthenticated("the Authorization header must be `Bearer <credential>`".into());
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, credential) = value.split_once(' ').ok_or_else(malformed)?;
    let credential = credential.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() {
        return Err(malformed());
    }
    Ok(Some(credential))
}

/// Whether a request asks for a feed (server-sent events): only then is a
/// credential taken from the query (API.md), since URLs end up in logs.
fn wants_feed(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("text/event-stream"))
}

/// Removes `access_token` from the query of a `GET` and returns its value
/// (used only by feeds). On other methods it is left alone, and never used.
fn take_access_token(request: &mut Request) -> Option<String> {
    if request.method() != Method::GET {
        return None;
    }
    let query = request.uri().query()?;
    let pairs = || form_urlencoded::parse(query.as_bytes());
    // Most reads carry no token: their query is left as it is, unparsed
    // beyond this look.
    let token = pairs()
        .find(|(name, _)| name == ACCESS_TOKEN)
        .map(|(_, value)| value.into_owned())?;
    let mut kept = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs().filter(|(name, _)| name != ACCESS_TOKEN) {
        kept.append_pair(&name, &value);
    }
    let kept = kept.finish();
    let path = request.uri().path();
    let path_and_query = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{kept}")
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    Some(token)
}

/// Refuses a request whose `Host` is not `localhost`, `127.0.0.1` or
/// `[::1]` (with or without a port). A server on a loopback address without
/// authentication trusts whoever can reach it; a web page can reach it too,
/// through a name of its own that it re-points at 127.0.0.1 (DNS rebinding),
/// but then the `Host` it sends is that name.
fn loopback_host(headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .unwrap_or_default();
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host.as_str(),
    };
    let loopback = name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "[::1]";
    if loopback {
        Ok(())
    } else {
        Err(ApiError::MisdirectedHost(host))
    }
}

/// A scope a route requires, as a type, so that a handler states it in its
/// signature.
pub trait Requires: Send + Sync {
    /// The scope.
    const SCOPE: Scope;
}

/// The `read` scope.
pub struct Read;
/// The `write` scope.
pub struct Write;
/// The `admin` scope.
pub struct Admin;

impl Requires for Read {
    const SCOPE: Scope = Scope::Read;
}
impl Requires for Write {
    const SCOPE: Scope = Scope::Write;
}
impl Requires for Admin {
    const SCOPE: Scope = Scope::Admin;
}

/// The caller of a route that requires the scope `S`: extracting it
/// answers `403` when the caller's grant lacks `S`. Its methods check the
/// names a request touches against the grant's reach.
pub struct Caller<S> {
    grant: Grant,
    presented: Option<Presented>,
    scope: PhantomData<S>,
}

impl<S: Requires, St: Send + Sync> FromRequestParts<St> for Caller<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, ApiError> {
        // The middleware records a grant for every route that is not public.
        let grant = parts
            .extensions
            .get::<Grant>()
            .cloned()
            .ok_or(ApiError::Internal)?;
        match S::SCOPE {
            // Administration (keys, metrics) reaches past any stream prefix:
            // only a grant over every stream may do it.
            Scope::Admin => grant.everywhere(Scope::Admin, "administration")?,
            scope => grant.require(scope)?,
        }
        Ok(Caller {
            grant,
            presented: parts.extensions.get::<Presented>().cloned(),
            scope: PhantomData,
        })
    }
}

impl<S: Requires> Caller<S> {
    /// Checks that a stream is in reach.
    pub fn stream(&self, stream: &str) -> Result<(), ApiError> {
        Ok(self.grant.stream(S::SCOPE, stream)?)
    }

    /// Checks that a consumer's checkpoint is in reach.
    pub fn consumer(&self, consumer: &str) -> Result<(), ApiError> {
        Ok(self.grant.consumer(S::SCOPE, consumer)?)
    }

    /// Checks that a whole category is in reach.
    pub fn category(&self, category: &str) -> Result<(), ApiError> {
        Ok(self.grant.category(S::SCOPE, category)?)
    }

    /// Checks that every stream is in reach, as `what` (a store-wide read)
    /// needs.
    pub fn everywhere(&self, what: &'static str) -> Result<(), ApiError> {
        Ok(self.grant.everywhere(S::SCOPE, what)?)
    }

    /// Whether every stream is in reach: then no name needs checking.
    pub fn reaches_everything(&self) -> bool {
        self.grant.everywhere(S::SCOPE, "everything").is_ok()
    }

    /// Whether a stream is in reach, for reads that hide what is not.
    pub fn reaches(&self, stream: &str) -> bool {
        self.grant.reaches(stream)
    }

    /// [`Caller::reaches`], for a feed that outlives the request.
    pub fn reach(&self) -> impl Fn(&str) -> bool + Send + 'static {
        let grant = self.grant.clone();
        move |stream| grant.reaches(stream)
    }

    /// Resolves once the caller's credential is no longer accepted (revoked
    /// or expired), or auth turns on for a caller admitted while it was off.
    /// A feed ends then.
    pub fn lapsed(&self) -> impl Future<Output = ()> + Send + 'static {
        let presented = self.presented.clone();
        let expires = self.grant.expires();
        async move {
            match presented {
                Some(p) => {
                    let credential = p.credential.as_deref();
                    p.authenticator.lapsed(credential, expires).await;
                }
                None => std::future::pending().await,
            }
        }
    }

    /// The prefixes a listing of `prefix` may show (see [`Grant::listable`]).
    pub fn listable(&self, prefix: &str) -> Vec<String> {
        self.grant.listable(prefix)
    }
}
