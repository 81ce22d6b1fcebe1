//! One trace record, as a line of `trace_output.log`:
//!
//! ```json
//! {"TracerIdentity":"coord","TraceID":66617,"Tag":"CoordStart","Body":{},"VectorClock":{"coord":2}}
//! ```
//!
//! Field names and order are the prototype's; the tracing server writes this
//! form and the checker and viewer read it back.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clock::VectorClock;

/// A recorded action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The process (tracer) that recorded it; ShiViz's "host".
    #[serde(rename = "TracerIdentity")]
    pub tracer_identity: String,
    /// The trace (request) it belongs to.
    #[serde(rename = "TraceID")]
    pub trace_id: u64,
    /// The action, e.g. `PutRecvd`.
    #[serde(rename = "Tag")]
    pub tag: String,
    /// The action's details (a JSON object).
    #[serde(rename = "Body")]
    pub body: serde_json::Value,
    /// The process's clock right after the action.
    #[serde(rename = "VectorClock")]
    pub vector_clock: VectorClock,
    /// 1-based line in the file it was read from; 0 when not read from a
    /// file (then findings name the record by its 1-based position).
    #[serde(skip)]
    pub line: usize,
}

impl Record {
    /// The line number findings use: [`Record::line`], or `index + 1`.
    pub fn line_or(&self, index: usize) -> usize {
        if self.line > 0 { self.line } else { index + 1 }
    }

    /// A string field of the body (numbers are rendered as strings, so
    /// `"ClientId":"1"` and `"ServerId":1` compare alike).
    pub fn field(&self, name: &str) -> Option<String> {
        match self.body.get(name)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// An unsigned integer field of the body.
    pub fn field_u64(&self, name: &str) -> Option<u64> {
        match self.body.get(name)? {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }
}

/// Why a trace file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("line {line}: not a trace record: {message}")]
    Line { line: usize, message: String },
}

/// Reads a `trace_output.log`. Blank lines are skipped; any other line that
/// is not a record is an error naming the line.
pub fn parse_trace_file(path: impl AsRef<Path>) -> Result<Vec<Record>, ParseError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| ParseError::Io { path: path.to_owned(), source })?;
    parse_trace(&text)
}

/// Parses the text of a `trace_output.log` (see [`parse_trace_file`]).
pub fn parse_trace(text: &str) -> Result<Vec<Record>, ParseError> {
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut r: Record =
            serde_json::from_str(line).map_err(|e| ParseError::Line { line: i + 1, message: e.to_string() })?;
        r.line = i + 1;
        records.push(r);
    }
    Ok(records)
}

/// Appends `s` as a JSON string literal (quotes and escapes included).
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                use fmt::Write;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends one `trace_output.log` line (with its newline) from parts.
/// `body_json` must already be valid single-line JSON.
pub(crate) fn push_trace_line(
    out: &mut String,
    identity: &str,
    trace_id: u64,
    tag: &str,
    body_json: &str,
    clock: &VectorClock,
) {
    out.push_str("{\"TracerIdentity\":");
    push_json_str(out, identity);
    out.push_str(",\"TraceID\":");
    crate::clock::push_u64(out, trace_id);
    out.push_str(",\"Tag\":");
    push_json_str(out, tag);
    out.push_str(",\"Body\":");
    out.push_str(body_json);
    out.push_str(",\"VectorClock\":{");
    for (i, (id, v)) in clock.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, id);
        out.push(':');
        crate::clock::push_u64(out, v);
    }
    out.push_str("}}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"TracerIdentity":"coord","TraceID":8421746193027290841,"Tag":"ReceiveTokenTrace","Body":{"Token":"p3NlcnZlcjHPdOANis/j1tmBp3NlcnZlcjEE"},"VectorClock":{"coord":3,"server1":4}}"#;

    #[test]
    fn parses_and_rewrites_a_reference_line_exactly() {
        let records = parse_trace(&format!("{LINE}\n\n")).unwrap();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r.line, 1);
        assert_eq!(r.tracer_identity, "coord");
        assert_eq!(r.vector_clock.get("server1"), 4);
        assert_eq!(serde_json::to_string(r).unwrap(), LINE);

        let mut out = String::new();
        let body = serde_json::to_string(&r.body).unwrap();
        push_trace_line(&mut out, "coord", r.trace_id, &r.tag, &body, &r.vector_clock);
        assert_eq!(out, format!("{LINE}\n"));
    }

    #[test]
    fn bad_line_is_named() {
        let err = parse_trace(&format!("{LINE}\n{{\"TracerIdentity\":")).unwrap_err();
        assert!(err.to_string().starts_with("line 2:"), "{err}");
    }

    #[test]
    fn json_strings_escape_like_serde() {
        for s in ["plain", "q\"uote", "back\\slash", "nl\nx", "\u{1}", "é"] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn fields_read_numbers_and_strings() {
        let r = &parse_trace(
            r#"{"TracerIdentity":"c","TraceID":1,"Tag":"Put","Body":{"ClientId":"1","OpId":3},"VectorClock":{"c":1}}"#,
        )
        .unwrap()[0];
        assert_eq!(r.field("ClientId").as_deref(), Some("1"));
        assert_eq!(r.field("OpId").as_deref(), Some("3"));
        assert_eq!(r.field_u64("OpId"), Some(3));
        assert_eq!(r.field("Missing"), None);
    }
}
