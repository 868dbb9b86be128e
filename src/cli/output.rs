//! How the client commands print: a table on a terminal, NDJSON otherwise
//! (or as `--json`/`--table` say), and a progress line on standard error
//! for long reads whose output goes elsewhere.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::CliError;
use super::args::Server;
use super::client::parse_json;

/// Widest data shown in a table row, in characters.
const DATA_WIDTH: usize = 60;

/// Where and how a command prints.
pub struct Output {
    json: bool,
    header_printed: bool,
    out: std::io::StdoutLock<'static>,
}

impl Output {
    /// Output as the options say, else as standard output is (a terminal:
    /// tables).
    pub fn new(server: &Server) -> Output {
        let terminal = std::io::stdout().is_terminal();
        Output {
            json: server.json || (!server.table && !terminal),
            header_printed: false,
            out: std::io::stdout().lock(),
        }
    }

    /// Whether values are printed as JSON.
    pub fn json(&self) -> bool {
        self.json
    }

    /// Prints a line as it is.
    pub fn line(&mut self, line: &str) -> Result<(), CliError> {
        writeln!(self.out, "{line}")?;
        Ok(())
    }

    /// Prints an event, given as the server's JSON text: that text as it
    /// is, or a table row under a header printed once.
    pub fn raw_event(&mut self, event: &str) -> Result<(), CliError> {
        if self.json {
            return self.line(event);
        }
        let event: Value = parse_json(event)?;
        if !self.header_printed {
            self.header_printed = true;
            self.line(&format!(
                "{:>8} {:>9}  {:<27} {:<20} {:<24} DATA",
                "POSITION", "GLOBAL", "TIME", "TYPE", "STREAM"
            ))?;
        }
        self.line(&format!(
            "{:>8} {:>9}  {:<27} {:<20} {:<24} {}",
            event["position"].to_string(),
            event["global_position"].to_string(),
            event["time"].as_str().unwrap_or(""),
            event["type"].as_str().unwrap_or(""),
            event["stream"].as_str().unwrap_or(""),
            clipped(&event["data"].to_string(), DATA_WIDTH),
        ))
    }

    /// Prints bytes as they are (an export, as the server sent it).
    pub fn raw(&mut self, bytes: &[u8]) -> Result<(), CliError> {
        self.out.write_all(bytes)?;
        Ok(())
    }

    /// Sends what is printed on its way (a live feed prints as events come).
    pub fn flush(&mut self) -> Result<(), CliError> {
        self.out.flush()?;
        Ok(())
    }
}

/// `text` cut to `width` characters, with `…` where it was cut.
pub fn clipped(text: &str, width: usize) -> String {
    match text.char_indices().nth(width) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// A line on standard error counting the events a read has printed, shown
/// only when standard error is a terminal and standard output a file (a
/// long read to a file), never when the output is piped.
pub fn progress() -> ProgressBar {
    let to_file = std::fs::metadata("/dev/stdout").is_ok_and(|m| m.is_file());
    on_stderr(
        to_file,
        None,
        "{spinner} {human_pos} events read ({per_sec}) {elapsed}",
    )
}

/// A line on standard error counting the events an export has written,
/// shown only when standard error is a terminal and standard output is not
/// (the export goes to a file or a pipe).
pub fn export_progress() -> ProgressBar {
    on_stderr(
        !std::io::stdout().is_terminal(),
        None,
        "{spinner} {human_pos} events exported ({per_sec}) {elapsed}",
    )
}

/// A bar on standard error following the bytes of a file an import has
/// sent (a spinner when its length is unknown), shown only when standard
/// error is a terminal.
pub fn upload_progress(length: Option<u64>) -> ProgressBar {
    let template = match length {
        Some(_) => "{bar:40} {bytes}/{total_bytes} sent ({bytes_per_sec}, {eta} left)",
        None => "{spinner} {bytes} sent ({bytes_per_sec}) {elapsed}",
    };
    on_stderr(true, length, template)
}

/// A progress display on standard error, drawn when `visible` and standard
/// error is a terminal, else hidden.
fn on_stderr(visible: bool, length: Option<u64>, template: &str) -> ProgressBar {
    let target = match visible && std::io::stderr().is_terminal() {
        true => ProgressDrawTarget::stderr(),
        false => ProgressDrawTarget::hidden(),
    };
    let bar = ProgressBar::with_draw_target(length, target);
    bar.set_style(ProgressStyle::with_template(template).expect("the template is valid"));
    bar
}
