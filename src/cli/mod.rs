//! `cairn`'s client commands: append, read, follow and inspect a running
//! server over its HTTP API, and export and import its whole store, for
//! people at a terminal and for scripts.
//!
//! On a terminal they print tables; piped (or with `--json`) one JSON value
//! a line (NDJSON), events exactly as the server sent them. Exit codes are
//! for scripts: 0 done, 1 failed, 2 bad usage, 3 not found (`404`), 4 the
//! stream is not at the expected version (`412`), 5 no valid credential or
//! not allowed (`401`, `403`). A failure prints the server's own `detail`.
//!
//! | file | what it holds |
//! | --- | --- |
//! | `args.rs` | the commands' command line |
//! | `client.rs` | requests, and failures worded by the server |
//! | `output.rs` | tables or NDJSON, and the progress lines of long reads, exports and imports |
//! | `commands.rs` | each command |

pub mod args;
mod client;
mod commands;
mod output;

use std::process::ExitCode;

pub use args::ClientCommand;

/// Why a command failed; each kind has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or its input is malformed.
    #[error("{0}")]
    Usage(String),
    /// The server has no such stream, event, snapshot or checkpoint.
    #[error("{0}")]
    NotFound(String),
    /// The stream is not at the expected version.
    #[error("{0}")]
    Conflict(String),
    /// The credential is missing, invalid or not enough.
    #[error("{0}")]
    Refused(String),
    /// The server cannot be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The server answered that it cannot serve now (`5xx`, `408`).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else, worded by the server where it answered.
    #[error("{0}")]
    Failed(String),
    /// Standard output was closed (`cairn read … | head`): not a failure.
    #[error("standard output closed")]
    Closed,
}

impl CliError {
    /// The process's exit code for this failure.
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Closed => 0,
            CliError::Unreachable(_) | CliError::Unavailable(_) | CliError::Failed(_) => 1,
            CliError::Usage(_) => 2,
            CliError::NotFound(_) => 3,
            CliError::Conflict(_) => 4,
            CliError::Refused(_) => 5,
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::BrokenPipe => CliError::Closed,
            _ => CliError::Failed(error.to_string()),
        }
    }
}

/// Runs a client command; its exit code (after printing any failure).
pub async fn run(command: ClientCommand) -> ExitCode {
    match commands::run(command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if !matches!(error, CliError::Closed) {
                eprintln!("cairn: {error}");
            }
            ExitCode::from(error.exit_code())
        }
    }
}
