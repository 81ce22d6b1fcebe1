//! Tokens: a message's causality as the trace records it.
//!
//! Records are matched by their `Body.Token` string. A receive must carry a
//! clock strictly after its generate's (the receiver merged the token, then
//! ticked) and continue the same trace id. A generate's token must decode to
//! exactly the record's own host, trace id and clock, which checks the
//! tracer itself. A receive whose generate is missing (dropped record) is a
//! warning, and then the clock inside the token stands in for it.

use std::collections::HashMap;

use super::Ctx;
use crate::base64;
use crate::record::Record;
use crate::token::Token;

const GENERATE: &str = "GenerateTokenTrace";
const RECEIVE: &str = "ReceiveTokenTrace";

/// The `Body.Token` string of a token record.
pub(crate) fn token_of(r: &Record) -> Option<&str> {
    r.body.get("Token")?.as_str()
}

/// Maps each token string to its (first) `GenerateTokenTrace`.
pub(crate) fn generates(records: &[Record]) -> HashMap<&str, usize> {
    let mut map = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        if r.tag == GENERATE
            && let Some(t) = token_of(r)
        {
            map.entry(t).or_insert(i);
        }
    }
    map
}

fn decode(text: &str) -> Option<Token> {
    Token::decode(&base64::decode(text).ok()?).ok()
}

pub(super) fn check(ctx: &mut Ctx<'_>) {
    let records = ctx.records;
    let gens = generates(records);
    for (i, r) in records.iter().enumerate() {
        if r.tag != GENERATE && r.tag != RECEIVE {
            continue;
        }
        let Some(text) = token_of(r) else {
            ctx.error("token", &[i], "token record without a Body.Token".into());
            continue;
        };
        if r.tag == GENERATE {
            check_generate(ctx, i, text);
            continue;
        }
        match gens.get(text) {
            Some(&g) => {
                let sent = &records[g];
                if !sent.vector_clock.happened_before(&r.vector_clock) {
                    ctx.error(
                        "token-order",
                        &[i, g],
                        format!(
                            "receive clock {} is not after the generate clock {}",
                            r.vector_clock, sent.vector_clock
                        ),
                    );
                }
                if sent.trace_id != r.trace_id {
                    ctx.error(
                        "token-trace",
                        &[i, g],
                        format!(
                            "receive continues trace {} but the token was generated in trace {}",
                            r.trace_id, sent.trace_id
                        ),
                    );
                }
            }
            None => {
                ctx.warning("token-unmatched", &[i], "no GenerateTokenTrace for this token (record lost?)".into());
                if let Some(tok) = decode(text)
                    && !tok.clock.happened_before(&r.vector_clock)
                {
                    ctx.error(
                        "token-order",
                        &[i],
                        format!("receive clock {} is not after the token's clock {}", r.vector_clock, tok.clock),
                    );
                }
            }
        }
    }
}

fn check_generate(ctx: &mut Ctx<'_>, i: usize, text: &str) {
    let r = &ctx.records[i];
    match decode(text) {
        None => ctx.warning("token-format", &[i], "token is not base64 of a known token layout".into()),
        Some(tok) => {
            if tok.sender != r.tracer_identity || tok.trace_id != r.trace_id || tok.clock != r.vector_clock {
                ctx.error(
                    "token-content",
                    &[i],
                    format!(
                        "token carries ({}, trace {}, {}) but the record is ({}, trace {}, {})",
                        tok.sender, tok.trace_id, tok.clock, r.tracer_identity, r.trace_id, r.vector_clock
                    ),
                );
            }
        }
    }
}
