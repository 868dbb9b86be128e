//! The client commands' command line: what `cairn append`, `read`, `tail`…
//! take. Each command carries [`Server`], so `--url` and `--key` go after
//! the command's name, like its other options.

use clap::{Args, Subcommand};

/// How to reach the server, and how to print.
#[derive(Args, Clone, Debug)]
pub struct Server {
    /// The server's base URL.
    #[arg(long, env = "CAIRN_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An API key or JWT, sent as `Authorization: Bearer …`.
    #[arg(long, env = "CAIRN_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Print NDJSON (one JSON value a line), as when the output is piped.
    #[arg(long, conflicts_with = "table")]
    pub json: bool,
    /// Print tables, as on a terminal.
    #[arg(long)]
    pub table: bool,
}

/// Where events are read from: exactly one of a stream, a category or the
/// whole log.
#[derive(Args, Clone, Debug)]
#[group(required = true, multiple = false)]
pub struct Source {
    /// A stream, e.g. `account-123`.
    pub stream: Option<String>,
    /// Every stream of a category, in global order.
    #[arg(long)]
    pub category: Option<String>,
    /// The whole log, in global order.
    #[arg(long)]
    pub all: bool,
}

/// The client commands.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Append events to a stream: one from `--type`/`--data`, or every line
    /// of standard input (NDJSON, one event object a line), atomically.
    ///
    /// Prints the stream's new version and the events' positions. With
    /// `--expect`, fails with exit code 4 when the stream is not at that
    /// version.
    Append {
        /// The stream to append to.
        stream: String,
        /// The event's type; without it, events are read from standard input.
        #[arg(long = "type", requires = "data")]
        event_type: Option<String>,
        /// The event's data, as JSON.
        #[arg(long, allow_hyphen_values = true, requires = "event_type")]
        data: Option<String>,
        /// The event's metadata, as a JSON object.
        #[arg(long, requires = "event_type")]
        metadata: Option<String>,
        /// The version the stream must be at: a number, `-1` (no stream
        /// yet) or `exists`.
        #[arg(long, allow_hyphen_values = true)]
        expect: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// Read events: a stream, a category or the whole log, page after page.
    ///
    /// Prints every event from `--position` to the end (or `--limit` of
    /// them). Writing to a file, a progress line counts them on the terminal.
    Read {
        #[command(flatten)]
        source: Source,
        /// Where to start: a stream position, or a global one for
        /// `--category` and `--all`.
        #[arg(long)]
        position: Option<i64>,
        /// Most events to print (default: all).
        #[arg(long)]
        limit: Option<u64>,
        /// Events asked for a page (default 100; at most the server's
        /// `--max-page-size`, 1000 unless configured).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        page_size: Option<u64>,
        /// Newest first (a stream only).
        #[arg(long)]
        backward: bool,
        /// Only events of this type; repeat for several (`--category`, `--all`).
        #[arg(long = "type")]
        types: Vec<String>,
        /// The stream as it was at this version (a stream only; `-1`: before
        /// its first event).
        #[arg(long, allow_hyphen_values = true)]
        until_version: Option<i64>,
        /// Only events committed at or before this instant (RFC 3339; a stream only).
        #[arg(long)]
        as_of: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// Follow events live, as they are appended (until interrupted). A
    /// dropped connection is resumed where it stopped.
    Tail {
        #[command(flatten)]
        source: Source,
        /// Start at this position instead of with the next new event.
        #[arg(long)]
        position: Option<i64>,
        /// Only events of this type; repeat for several (`--category`, `--all`).
        #[arg(long = "type")]
        types: Vec<String>,
        #[command(flatten)]
        server: Server,
    },
    /// Show which event caused which around one event, as a tree.
    Trace {
        /// The event's id.
        id: uuid::Uuid,
        #[command(flatten)]
        server: Server,
    },
    /// List streams by name.
    Streams {
        /// Only names starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        #[command(flatten)]
        server: Server,
    },
    /// Print the last event of a stream (of a type, with `--type`).
    Last {
        /// The stream.
        stream: String,
        /// Only events of this type; repeat for several.
        #[arg(long = "type")]
        types: Vec<String>,
        #[command(flatten)]
        server: Server,
    },
    /// Write the whole store to standard output as NDJSON, one record a
    /// line (admin): `cairn export > backup.ndjson`.
    ///
    /// Events in global order, then snapshots, checkpoints, schemas,
    /// retention policies, tombstones and streams, and last the head. On a
    /// terminal, a progress line counts the events. Fails (exit 1) if the
    /// export breaks off: the output then lacks its head line.
    Export {
        /// The first global position of the events written (the other
        /// records are written whole).
        #[arg(long)]
        position: Option<i64>,
        /// The last global position of the events written.
        #[arg(long)]
        until: Option<i64>,
        #[command(flatten)]
        server: Server,
    },
    /// Restore an export into the server's store (admin), exactly: same
    /// ids, positions, global positions, times, versions and head.
    ///
    /// The store must be empty, or hold the beginning of the same export:
    /// an import cut short continues where it stopped when run again. The
    /// file is streamed; on a terminal, a progress bar follows its bytes.
    Import {
        /// The export (`-` for standard input).
        file: std::path::PathBuf,
        #[command(flatten)]
        server: Server,
    },
    /// Get or set a consumer's checkpoint.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Get or store a snapshot of a stream.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

/// `cairn checkpoint`.
#[derive(Subcommand, Debug)]
pub enum CheckpointCommand {
    /// Print a consumer's stored position.
    Get {
        /// The consumer.
        consumer: String,
        #[command(flatten)]
        server: Server,
    },
    /// Store a consumer's position (a global position the log has reached).
    Set {
        /// The consumer.
        consumer: String,
        /// The position.
        position: i64,
        #[command(flatten)]
        server: Server,
    },
}

/// `cairn snapshot`.
#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Print a stream's newest snapshot (at or below `--until-version`).
    Get {
        /// The stream.
        stream: String,
        /// Only snapshots of this version or lower (`-1`: none).
        #[arg(long, allow_hyphen_values = true)]
        until_version: Option<i64>,
        #[command(flatten)]
        server: Server,
    },
    /// Store a snapshot of a stream at a version.
    Put {
        /// The stream.
        stream: String,
        /// The stream version the state reflects.
        #[arg(long)]
        version: i64,
        /// The state, as JSON.
        #[arg(long, allow_hyphen_values = true)]
        state: String,
        /// The snapshot's type.
        #[arg(long = "type")]
        snapshot_type: Option<String>,
        #[command(flatten)]
        server: Server,
    },
}

impl ClientCommand {
    /// The server options of whichever command this is.
    pub fn server(&self) -> &Server {
        match self {
            ClientCommand::Append { server, .. }
            | ClientCommand::Read { server, .. }
            | ClientCommand::Tail { server, .. }
            | ClientCommand::Trace { server, .. }
            | ClientCommand::Streams { server, .. }
            | ClientCommand::Last { server, .. }
            | ClientCommand::Export { server, .. }
            | ClientCommand::Import { server, .. }
            | ClientCommand::Checkpoint(CheckpointCommand::Get { server, .. })
            | ClientCommand::Checkpoint(CheckpointCommand::Set { server, .. })
            | ClientCommand::Snapshot(SnapshotCommand::Get { server, .. })
            | ClientCommand::Snapshot(SnapshotCommand::Put { server, .. }) => server,
        }
    }
}
