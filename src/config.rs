//! Configuration: command-line flags, each with an environment fallback.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

use crate::auth::Scope;

/// The `cairn` command line.
#[derive(Parser)]
#[command(name = "cairn", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; plain `cairn` serves.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings of plain `cairn` (same as `cairn serve`).
    #[command(flatten)]
    pub serve: Config,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(Box<Config>),
    /// Print the OpenAPI document (regenerate the committed copy with
    /// `cargo run -- openapi > openapi/openapi.json`).
    Openapi,
    /// Manage API keys in the store directly: how the first admin key is made.
    Keys(KeysArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// The client commands, which talk to a running server.
    #[command(flatten)]
    Client(crate::cli::ClientCommand),
}

/// Which store to open: shared by `serve` and `keys`.
#[derive(Args, Clone)]
pub struct StoreArgs {
    /// The store: `postgres://user@host/db`, `sqlite://path/to/file.db` or
    /// `sqlite::memory:`; unset: the embedded SQLite store under `--data-dir`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Where the embedded store keeps its file when no database URL is given.
    #[arg(long, env = "CAIRN_DATA_DIR", default_value = "cairn-data")]
    pub data_dir: std::path::PathBuf,
    /// Database connections in the pool.
    #[arg(long, env = "CAIRN_POOL_SIZE", default_value_t = 16)]
    pub pool_size: u32,
}

/// `cairn keys`: what to do with the keys of a store.
#[derive(Args)]
pub struct KeysArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: KeysAction,
}

/// What `cairn keys` does.
#[derive(Subcommand)]
pub enum KeysAction {
    /// Create a key; its secret is printed alone on the last line.
    Create {
        /// A name for people.
        #[arg(long)]
        name: String,
        /// A scope it grants (`read`, `write`, `admin`); repeat for more.
        #[arg(long = "scope", required = true, value_parser = parse_scope)]
        scopes: Vec<Scope>,
        /// A stream prefix it reaches; repeat for more; none: every stream.
        #[arg(long = "stream")]
        streams: Vec<String>,
        /// When it stops working (RFC 3339); unset: never.
        #[arg(long)]
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
        /// The store holding the keys.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the keys in force, without their secrets.
    List {
        /// The store holding the keys.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key by its id: every server refuses it within a second.
    Revoke {
        /// The key's id, as `list` shows it.
        id: uuid::Uuid,
        /// The store holding the keys.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// A scope named on the command line.
fn parse_scope(name: &str) -> Result<Scope, String> {
    Scope::parse(name).ok_or_else(|| format!("{name:?} is not a scope: read, write or admin"))
}

/// Everything the server can be told. Never logged: the database URL may hold
/// a password.
#[derive(Parser, Clone)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "CAIRN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Largest request body, in bytes.
    #[arg(long, env = "CAIRN_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most bytes of request bodies the server holds at once; past it,
    /// requests wait to be read (within the request deadline).
    #[arg(long, env = "CAIRN_MAX_BODY_BYTES_IN_FLIGHT", default_value_t = 256 * 1024 * 1024)]
    pub max_body_bytes_in_flight: usize,
    /// Most events in one append.
    #[arg(long, env = "CAIRN_MAX_BATCH_EVENTS", default_value_t = 1000)]
    pub max_batch_events: usize,
    /// How deeply an event's `data` or `metadata` may nest (`[[1]]` is 2):
    /// deeper JSON could not be read back by most clients' parsers.
    #[arg(long, env = "CAIRN_MAX_JSON_DEPTH", default_value_t = 128)]
    pub max_json_depth: usize,
    /// Largest `limit` a read may ask for.
    #[arg(long, env = "CAIRN_MAX_PAGE_SIZE", default_value_t = 1000)]
    pub max_page_size: i64,
    /// A page of events (and a feed's read of the store) stops once its
    /// events hold this many bytes; a page always holds at least one event.
    #[arg(long, env = "CAIRN_MAX_PAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_page_bytes: usize,
    /// Most levels of causes, and of effects, a trace follows.
    #[arg(long, env = "CAIRN_TRACE_MAX_DEPTH", default_value_t = 1000)]
    pub trace_max_depth: usize,
    /// Most effects in one trace.
    #[arg(long, env = "CAIRN_TRACE_MAX_EVENTS", default_value_t = 10_000)]
    pub trace_max_events: usize,
    /// Seconds between keep-alive comments on an idle feed.
    #[arg(long, env = "CAIRN_KEEP_ALIVE_SECS", default_value_t = 15)]
    pub keep_alive_secs: u64,
    /// Most live feeds open at once (`503` past it).
    #[arg(long, env = "CAIRN_MAX_FEEDS", default_value_t = 10_000)]
    pub max_feeds: usize,
    /// Most subscription delivery feeds open at once (`503` past it).
    #[arg(long, env = "CAIRN_MAX_DELIVERY_FEEDS", default_value_t = 1000)]
    pub max_delivery_feeds: usize,
    /// Batches of live events kept for feeds; a feed further behind reads the store.
    #[arg(long, env = "CAIRN_LIVE_BUFFER", default_value_t = 1024)]
    pub live_buffer: usize,
    /// Seconds a request's header section may take to arrive, from its
    /// first byte or the connection's opening.
    #[arg(long, env = "CAIRN_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds a kept-alive connection may sit idle between requests.
    #[arg(long, env = "CAIRN_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// Seconds a whole request (not a feed's stream) may take: `408` past it.
    #[arg(long, env = "CAIRN_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Most connections open at once; past it, new ones wait to be accepted.
    #[arg(long, env = "CAIRN_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Seconds shutdown waits for requests under way before closing them.
    #[arg(long, env = "CAIRN_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// Bytes of events the live buffer keeps, at most; a feed further behind
    /// reads the store.
    #[arg(long, env = "CAIRN_LIVE_BUFFER_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub live_buffer_bytes: usize,
    /// Seconds between retention sweeps, which erase what the retention
    /// policies say is due.
    #[arg(long, env = "CAIRN_RETENTION_SWEEP_SECS", default_value_t = 60)]
    pub retention_sweep_secs: u64,
    /// Browser origins allowed by CORS (comma-separated); none turns CORS off.
    #[arg(
        long = "cors-origin",
        env = "CAIRN_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// A key with every scope over every stream, accepted from start: it
    /// must start `cairn_` and hold at least 32 more characters.
    #[arg(long, env = "CAIRN_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Accept bearer JWTs signed by the keys of this JWKS: a file path or an
    /// `http(s)` URL (fetched again every `--jwt-jwks-refresh-secs`).
    #[arg(long, env = "CAIRN_JWT_JWKS", conflicts_with = "jwt_secret")]
    pub jwt_jwks: Option<String>,
    /// Accept bearer JWTs signed with this HMAC secret (HS256/384/512).
    #[arg(long, env = "CAIRN_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// The `iss` a JWT must carry; unset: not checked.
    #[arg(long, env = "CAIRN_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The `aud` a JWT must carry; unset: not checked.
    #[arg(long, env = "CAIRN_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Seconds between fetches of a JWKS URL; a failed fetch keeps the last set.
    #[arg(long, env = "CAIRN_JWT_JWKS_REFRESH_SECS", default_value_t = 300)]
    pub jwt_jwks_refresh_secs: u64,
    /// Serve without authentication on an address other than loopback.
    #[arg(long, env = "CAIRN_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}
