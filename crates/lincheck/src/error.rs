//! Error types. Bad input is always a typed error, never a panic.
//!
//! Each message already includes its cause, so the causes are fields rather
//! than [`source`](std::error::Error::source)s: an error-chain printer would
//! otherwise show them twice.

use std::path::PathBuf;

use crate::history::InvalidOperation;

/// A JSON-lines history could not be read; `line` is 1-based and counts
/// blank lines too, so it matches what an editor shows.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The line is not JSON, or not an [`Operation`](crate::Operation).
    #[error("line {line}, column {}: not a valid operation: {}", cause.column(), json_message(cause))]
    Json {
        /// 1-based line number.
        line: usize,
        /// What serde_json objected to (its own line number is always 1).
        cause: serde_json::Error,
    },
    /// The line parsed but breaks an [`Operation`](crate::Operation) invariant.
    #[error("line {line}: invalid operation: it {cause}")]
    Invalid {
        /// 1-based line number.
        line: usize,
        /// Which invariant it breaks.
        cause: InvalidOperation,
    },
}

impl ParseError {
    /// The 1-based number of the offending line.
    pub fn line(&self) -> usize {
        match self {
            ParseError::Json { line, .. } | ParseError::Invalid { line, .. } => *line,
        }
    }
}

/// serde_json's message without its " at line 1 column N" suffix, which
/// counts within the one line parsed and so would contradict ours.
fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(message) => message.to_owned(),
        None => full,
    }
}

/// [`check_file`](crate::check_file) failed before it could check anything.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {}: {cause}", path.display())]
    Io {
        /// The file asked for.
        path: PathBuf,
        /// Why reading failed.
        cause: std::io::Error,
    },
    /// The file is not a valid history.
    #[error("{}: {cause}", path.display())]
    Parse {
        /// The file asked for.
        path: PathBuf,
        /// The first bad line.
        cause: ParseError,
    },
}
