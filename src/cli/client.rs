//! The HTTP side of the client commands: requests to the server with the
//! credential, answers read as the server's exact text, and every failure
//! turned into a [`CliError`] that carries the server's own words (a
//! problem's `detail`).

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

use super::CliError;
use super::args::Server;

/// A server the commands talk to.
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    /// A client of the server `server` names.
    pub fn new(server: &Server) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: server.url.trim_end_matches('/').to_owned(),
            key: server.key.clone(),
        }
    }

    /// A request to `path` (with its query), with the credential.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends a request; a success's response, or the failure as a
    /// [`CliError`].
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, CliError> {
        let response = request.send().await.map_err(|error| {
            CliError::Unreachable(format!(
                "cannot reach {}: {}",
                self.server_name(),
                cause(&error)
            ))
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(problem(response).await)
    }

    /// `GET path`: the answer's text, exactly as sent.
    pub async fn get_text(&self, path: &str) -> Result<String, CliError> {
        self.text(self.request(Method::GET, path)).await
    }

    /// Sends a request and reads its answer's text, exactly as sent.
    pub async fn text(&self, request: RequestBuilder) -> Result<String, CliError> {
        let response = self.send(request).await?;
        response.text().await.map_err(|error| {
            CliError::Unreachable(format!("the answer broke off: {}", cause(&error)))
        })
    }

    /// The server's scheme, host and port, without any credentials its URL
    /// may carry.
    fn server_name(&self) -> String {
        match reqwest::Url::parse(&self.base) {
            Ok(url) => format!(
                "{}://{}{}",
                url.scheme(),
                url.host_str().unwrap_or(""),
                url.port().map(|p| format!(":{p}")).unwrap_or_default()
            ),
            Err(_) => "the server".to_owned(),
        }
    }
}

/// Parses JSON however deeply it nests (a trace follows up to 1000 levels
/// of effects, and event data nests up to 128 levels: past serde_json's
/// default limit of 128), to its end.
pub fn deep_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    deserializer.disable_recursion_limit();
    let value = T::deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Parses the server's JSON (see [`deep_json`]).
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, CliError> {
    deep_json(text)
        .map_err(|error| CliError::Failed(format!("the server's answer is not JSON: {error}")))
}

/// The failure a non-success answer stands for, worded by the server.
async fn problem(response: Response) -> CliError {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let detail = body["detail"].as_str().map(str::to_owned);
    let worded = |with_status: bool| match &detail {
        Some(detail) if with_status => format!("{detail} ({status})"),
        Some(detail) => detail.clone(),
        None => status.to_string(),
    };
    match status {
        StatusCode::NOT_FOUND => CliError::NotFound(worded(false)),
        StatusCode::PRECONDITION_FAILED => CliError::Conflict(worded(false)),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CliError::Refused(worded(false)),
        _ if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT => {
            CliError::Unavailable(worded(true))
        }
        _ => CliError::Failed(worded(true)),
    }
}

/// What lies under a transport error (refused, DNS, TLS…), without the
/// URL, which may carry a query or credentials.
pub fn cause(error: &reqwest::Error) -> String {
    let mut source = std::error::Error::source(error);
    let mut root = None;
    while let Some(error) = source {
        root = Some(error.to_string());
        source = error.source();
    }
    root.unwrap_or_else(|| "the request failed".to_owned())
}

/// A path segment, percent-encoded.
pub fn segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
