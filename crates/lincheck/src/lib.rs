//! A Porcupine-style linearizability checker for key-value histories.
//!
//! Given what clients of a key-value store asked, what they got back and
//! when, [`check`] decides whether some sequential order of the operations,
//! consistent with real time, explains every answer. Each key is a register
//! that starts absent; keys are checked independently (locality makes that
//! exact) with Wing & Gong's search plus Lowe's memoisation.
//!
//! # Semantics
//!
//! * `get` must return the current value (`null` if absent); `put` sets it,
//!   `delete` removes it, `append` sets it to the current value (or `""`)
//!   followed by its argument; `cas` swaps iff the current value equals
//!   `expected` (`null` = absent) and must report `swapped` accordingly. An
//!   output of the wrong kind (a `get` answering `ok`) fits nowhere.
//! * A completed operation takes effect at one instant between its `call` and
//!   `ret`. One returning at `t` precedes one called at `t` (not concurrent);
//!   instantaneous operations at the same instant overlap each other.
//! * An operation with unknown outcome (`ret: null`) took effect at some
//!   instant after its call, or never; whatever it returned is unconstrained.
//! * The search is bounded per key; when the bound is hit the verdict is
//!   [`Verdict::Unknown`], never linearizable.
//!
//! # The JSON-lines history format
//!
//! Harnesses in any language can write histories for [`check_file`] /
//! [`parse_jsonl`]: one [`Operation`] per line, blank lines ignored, times in
//! any monotone unit shared by all clients:
//!
//! ```text
//! {"client":1,"key":"k1","op":{"type":"put","value":"v1"},"call":10,"ret":25,"output":{"type":"ok"}}
//! {"client":2,"key":"k1","op":{"type":"get"},"call":12,"ret":30,"output":{"type":"value","value":"v1"}}
//! {"client":3,"key":"k1","op":{"type":"append","value":"x"},"call":31,"ret":null,"output":null}
//! {"client":1,"key":"k2","op":{"type":"cas","expected":null,"new":"a"},"call":40,"ret":41,"output":{"type":"cas","swapped":true}}
//! {"client":2,"key":"k2","op":{"type":"delete"},"call":50,"ret":52,"output":{"type":"ok"}}
//! ```
//!
//! `op.type` is one of `get`, `put` (`value`), `delete`, `append` (`value`),
//! `cas` (`expected`: string or null, `new`); `output.type` is `value`
//! (`value`: string or null), `ok` or `cas` (`swapped`). `ret` and `output`
//! are both null (or both missing) for an unknown outcome, and `ret >= call`.
//!
//! # Example
//!
//! ```
//! use kvraft_lincheck::{check, parse_jsonl};
//!
//! let history = parse_jsonl(concat!(
//!     r#"{"client":1,"key":"k","op":{"type":"put","value":"a"},"call":0,"ret":5,"output":{"type":"ok"}}"#, "\n",
//!     r#"{"client":2,"key":"k","op":{"type":"get"},"call":6,"ret":8,"output":{"type":"value","value":null}}"#,
//! ))
//! .unwrap();
//! let report = check(&history);
//! assert!(!report.verdict.is_linearizable());
//! println!("{report}"); // NOT linearizable on key "k": ...
//! if let Some(violation) = report.verdict.violation() {
//!     println!("{violation}"); // the explanation, then the ops one per line
//! }
//! ```

mod checker;
mod error;
mod events;
mod explain;
mod history;
mod jsonl;
mod model;
mod report;
mod wgl;

pub use checker::{DEFAULT_MAX_STATES_PER_KEY, check, check_file, check_with_budget};
pub use error::{Error, ParseError};
pub use history::{InvalidOperation, Op, Operation, Output};
pub use jsonl::{parse_jsonl, to_jsonl};
pub use report::{Report, Verdict, Violation};
