//! The ShiViz log format, as the prototype's `shiviz_output.log` has it:
//! the parser regex on the first line, a blank line, then two lines per
//! event:
//!
//! ```text
//! coord {"coord":3, "server1":4}
//! 8421746193027290841 ReceiveTokenTrace {"Token":"p3Nl..."}
//! ```
//!
//! The regex makes the host everything before the first space, so hosts
//! must not contain whitespace (the tracing server refuses such identities).

use crate::clock::VectorClock;

/// The first line of the file (without its newline): ShiViz's log parser.
pub const SHIVIZ_REGEX: &str = r"(?<host>\S*) (?<clock>{.*})\n(?<event>.*)";

/// The file's header: the regex line and the blank line after it.
pub fn header() -> String {
    format!("{SHIVIZ_REGEX}\n\n")
}

/// Appends one event's two lines. `body_json` must be single-line JSON; a
/// tag's control characters (which would split the event line) become `?`.
pub(crate) fn push_event(out: &mut String, host: &str, clock: &VectorClock, trace_id: u64, tag: &str, body_json: &str) {
    out.push_str(host);
    out.push(' ');
    clock.write_shiviz(out);
    out.push('\n');
    crate::clock::push_u64(out, trace_id);
    out.push(' ');
    out.extend(tag.chars().map(|c| if c.is_control() { '?' } else { c }));
    out.push(' ');
    out.push_str(body_json);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_layout() {
        let reference = include_str!("../tests/data/3Server2ClientNormalOperation/shiviz_output.log");
        let mut out = header();
        let clock: VectorClock = [("coord", 3), ("server3", 4)].into_iter().collect();
        push_event(
            &mut out,
            "coord",
            &clock,
            1168172316029545133,
            "ReceiveTokenTrace",
            r#"{"Token":"p3NlcnZlcjPPEDYuiD1i6q2Bp3NlcnZlcjME"}"#,
        );
        // The reference starts with the same header and contains this exact
        // event (its clock order is Go's random map order; ours is sorted,
        // and for this event they agree).
        assert!(reference.starts_with(&header()));
        assert!(reference.contains(&out[header().len()..]), "{out}");
        assert_eq!(
            out,
            concat!(
                "(?<host>\\S*) (?<clock>{.*})\\n(?<event>.*)\n\n",
                "coord {\"coord\":3, \"server3\":4}\n",
                "1168172316029545133 ReceiveTokenTrace {\"Token\":\"p3NlcnZlcjPPEDYuiD1i6q2Bp3NlcnZlcjME\"}\n"
            )
        );
    }
}
