//! The JSON-lines wire format: one serde-serialised [`Operation`] per line.

use crate::error::ParseError;
use crate::history::Operation;

/// Parses a history, one [`Operation`] per line; blank lines are skipped.
///
/// Each operation is also [validated](Operation::validate), so the checker
/// never sees, say, a return before its call. The first bad line wins.
pub fn parse_jsonl(text: &str) -> Result<Vec<Operation>, ParseError> {
    let mut ops = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        // Parse the untrimmed line so that serde's column matches the file.
        let op: Operation = serde_json::from_str(raw).map_err(|cause| ParseError::Json { line, cause })?;
        op.validate().map_err(|cause| ParseError::Invalid { line, cause })?;
        ops.push(op);
    }
    Ok(ops)
}

/// Writes a history in the format [`parse_jsonl`] reads: one line per
/// operation, each ending in `\n`.
pub fn to_jsonl(history: &[Operation]) -> String {
    let mut out = String::new();
    for op in history {
        // Serialising these plain data types cannot fail: no maps with
        // non-string keys, no hand-written Serialize impls.
        let line = serde_json::to_string(op).expect("an Operation always serialises");
        out.push_str(&line);
        out.push('\n');
    }
    out
}
