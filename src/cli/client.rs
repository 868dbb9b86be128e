//! The HTTP side of the client commands: requests to the server with the
//! credential, and every failure turned into a [`CliError`] that carries
//! the server's own words (a problem's `detail`).

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
                self.base,
                without_url(&error)
            ))
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(problem(response).await)
    }

    /// `GET path` as JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value, CliError> {
        self.json(self.request(Method::GET, path)).await
    }

    /// Sends a request and reads its answer as JSON.
    pub async fn json(&self, request: RequestBuilder) -> Result<Value, CliError> {
        let response = self.send(request).await?;
        response
            .json()
            .await
            .map_err(|error| CliError::Failed(format!("the server's answer is not JSON: {error}")))
    }
}

/// The failure a non-success answer stands for, worded by the server.
async fn problem(response: Response) -> CliError {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let detail = body["detail"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| status.to_string());
    match status {
        StatusCode::NOT_FOUND => CliError::NotFound(detail),
        StatusCode::PRECONDITION_FAILED => CliError::Conflict(detail),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CliError::Refused(detail),
        _ => CliError::Failed(format!("{detail} ({status})")),
    }
}

/// A transport error's text without the URL, which may carry a query.
fn without_url(error: &reqwest::Error) -> String {
    let mut error = error.to_string();
    if let Some(at) = error.find(" for url (") {
        error.truncate(at);
    }
    error
}

/// A path segment, percent-encoded.
pub fn segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
