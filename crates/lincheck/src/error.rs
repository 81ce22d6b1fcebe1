//! Error types. Bad input is always a typed error, never a panic.

use std::path::PathBuf;

use crate::history::InvalidOperation;

/// A JSON-lines history could not be read; `line` is 1-based and counts
/// blank lines too, so it matches what an editor shows.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The line is not JSON, or not an [`Operation`](crate::Operation).
    #[error("line {line}: not a valid operation: {source}")]
    Json {
        /// 1-based line number.
        line: usize,
        /// What serde_json objected to.
        source: serde_json::Error,
    },
    /// The line parsed but breaks an [`Operation`](crate::Operation) invariant.
    #[error("line {line}: invalid operation: {source}")]
    Invalid {
        /// 1-based line number.
        line: usize,
        /// Which invariant it breaks.
        source: InvalidOperation,
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

/// [`check_file`](crate::check_file) failed before it could check anything.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file asked for.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The file is not a valid history.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file asked for.
        path: PathBuf,
        /// The first bad line.
        source: ParseError,
    },
}
