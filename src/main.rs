//! The `cairn` binary: serve (the default), manage keys in a store, print
//! the OpenAPI document or shell completions, or act as a client of a
//! running server.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use cairn::auth::KeyRequest;
use cairn::config::{Cli, Command, Config, KeysAction, KeysArgs};
use cairn::store::StoredKey;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(Box::new(cli.serve))) {
        Command::Openapi => {
            let document = cairn::http::openapi().to_pretty_json()?;
            print_all(&document)?;
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cairn", &mut script);
            print_all(&String::from_utf8_lossy(&script))?;
        }
        Command::Serve(config) => serve(*config).await?,
        Command::Keys(args) => keys(args).await?,
        Command::Client(command) => return Ok(cairn::cli::run(command).await),
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `text`; a reader that stops early (`cairn openapi | head`) is not
/// an error.
fn print_all(text: &str) -> anyhow::Result<()> {
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}

/// `cairn keys`: creates, lists or revokes keys in the store directly.
async fn keys(args: KeysArgs) -> anyhow::Result<()> {
    let (KeysAction::Create { store, .. }
    | KeysAction::List { store }
    | KeysAction::Revoke { store, .. }) = &args.action;
    let store = cairn::open_store(store).await?;
    let mut out = std::io::stdout().lock();
    match args.action {
        KeysAction::Create {
            name,
            scopes,
            streams,
            expires_at,
            ..
        } => {
            let request = KeyRequest {
                name,
                scopes,
                streams: (!streams.is_empty()).then_some(streams),
                expires_at,
            };
            let (stored, secret) = cairn::auth::issue(&store, request).await?;
            writeln!(out, "created {}", describe(&stored))?;
            writeln!(out, "{}", secret.expose())?;
        }
        KeysAction::List { .. } => {
            for stored in store.keys().await?.iter().filter(|k| k.revoked.is_none()) {
                writeln!(out, "{}", describe(stored))?;
            }
        }
        KeysAction::Revoke { id, .. } => {
            anyhow::ensure!(store.revoke_key(id).await?, "no key {id} is in force");
            writeln!(out, "revoked {id}: every server refuses it within a second")?;
        }
    }
    Ok(())
}

/// One line about a key, without its secret.
fn describe(stored: &StoredKey) -> String {
    let key = &stored.key;
    let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
    let streams = key
        .streams
        .as_ref()
        .map_or_else(|| "every stream".to_owned(), |s| s.join(" "));
    let expires = key
        .expires_at
        .map_or_else(|| "never".to_owned(), |at| at.to_rfc3339());
    format!(
        "{} {:?} scopes: {} streams: {streams} expires: {expires}",
        key.id,
        key.name,
        scopes.join(" ")
    )
}

/// Serves until ctrl-c or SIGTERM, then finishes the requests under way.
async fn serve(config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        // Colour for a terminal only: in a file or a log collector the escape
        // codes are noise.
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let config = fit_to_file_limit(config);
    let store = cairn::open_store(&config.store).await?;
    let app = cairn::app(&config, store).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, "cairn is serving");
    app.serve(listener, shutdown_signal()).await;
    tracing::info!("cairn has stopped");
    Ok(())
}

/// File descriptors kept for all but client connections: the store's
/// pool and writer, the listener, the data file, logs.
const RESERVED_FILES: u64 = 64;

/// Raises the process's open-file limit as far as the connection cap needs
/// (up to the hard limit); where it cannot reach, lowers the cap to fit, so
/// that connections past it wait in the listen queue instead of failing to
/// be accepted, with the server's own files starved.
fn fit_to_file_limit(mut config: Config) -> Config {
    let reserved = u64::from(config.store.pool_size) + RESERVED_FILES;
    let wanted = config.max_connections as u64 + reserved;
    let limit = match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-file limit");
            return config;
        }
    };
    if limit < wanted {
        let fits = usize::try_from(limit.saturating_sub(reserved)).unwrap_or(usize::MAX);
        config.max_connections = fits.max(1);
        tracing::warn!(
            limit,
            max_connections = config.max_connections,
            "the open-file limit is below what --max-connections needs: fewer connections are served at once"
        );
    }
    config
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
