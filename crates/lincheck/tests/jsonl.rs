//! The JSON-lines wire format: exact shape, round trip, and errors that name
//! the offending line.

mod common;

use common::{Sim, Values, simulate};
use kvraft_lincheck::{
    Error, InvalidOperation, Op, Operation, Output, ParseError, Verdict, check_file, parse_jsonl, to_jsonl,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const PUT: &str =
    r#"{"client":1,"key":"k1","op":{"type":"put","value":"v1"},"call":10,"ret":25,"output":{"type":"ok"}}"#;
const PENDING_GET: &str = r#"{"client":2,"key":"k1","op":{"type":"get"},"call":12,"ret":null,"output":null}"#;

#[test]
fn documented_lines_parse_to_the_documented_operations() {
    let ops = parse_jsonl(&format!("{PUT}\n{PENDING_GET}\n")).expect("valid");
    assert_eq!(
        ops,
        vec![
            Operation {
                client: 1,
                key: "k1".into(),
                op: Op::Put { value: "v1".into() },
                call: 10,
                ret: Some(25),
                output: Some(Output::Ok),
            },
            Operation { client: 2, key: "k1".into(), op: Op::Get, call: 12, ret: None, output: None },
        ]
    );
    // And serialising gives back exactly those lines.
    assert_eq!(to_jsonl(&ops), format!("{PUT}\n{PENDING_GET}\n"));
}

#[test]
fn every_variant_has_the_documented_tags() {
    let line = r#"{"client":3,"key":"k","op":{"type":"cas","expected":null,"new":"n"},"call":1,"ret":2,"output":{"type":"cas","swapped":true}}
{"client":3,"key":"k","op":{"type":"append","value":"x"},"call":3,"ret":4,"output":{"type":"ok"}}
{"client":3,"key":"k","op":{"type":"delete"},"call":5,"ret":6,"output":{"type":"ok"}}
{"client":3,"key":"k","op":{"type":"get"},"call":7,"ret":8,"output":{"type":"value","value":null}}"#;
    let ops = parse_jsonl(line).expect("valid");
    let kinds: Vec<_> = ops.iter().map(|o| (&o.op, o.output.as_ref())).collect();
    assert_eq!(
        kinds,
        vec![
            (&Op::Cas { expected: None, new: "n".into() }, Some(&Output::Cas { swapped: true })),
            (&Op::Append { value: "x".into() }, Some(&Output::Ok)),
            (&Op::Delete, Some(&Output::Ok)),
            (&Op::Get, Some(&Output::Value { value: None })),
        ]
    );
}

#[test]
fn random_histories_round_trip() {
    for seed in 0..20 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let history = simulate(
            &mut rng,
            &Sim {
                clients: 4,
                keys: vec!["a".into(), "b \"quoted\"\n".into()],
                ops: 50,
                pending: 0.2,
                max_gap: 3,
                max_duration: 5,
                values: Values::Small,
            },
        );
        let text = to_jsonl(&history);
        assert_eq!(text.lines().count(), history.len());
        assert_eq!(parse_jsonl(&text).expect("own output parses"), history);
    }
}

#[test]
fn blank_lines_are_skipped_but_counted() {
    let text = format!("\n{PUT}\n   \n\r\n{PENDING_GET}\r\n\n");
    assert_eq!(parse_jsonl(&text).expect("valid").len(), 2);
    assert_eq!(parse_jsonl("").expect("empty is fine"), vec![]);
}

#[test]
fn malformed_line_is_an_error_naming_its_line() {
    let text = format!("{PUT}\n\n{{\"client\":1,\"key\":\"k1\"\n{PUT}\n");
    let err = parse_jsonl(&text).expect_err("line 3 is truncated");
    assert_eq!(err.line(), 3);
    assert!(matches!(err, ParseError::Json { line: 3, .. }), "{err:?}");
    assert!(err.to_string().starts_with("line 3, column "), "{err}");
}

#[test]
fn wrong_shape_names_line_and_cause() {
    let bad_type = PUT.replace(r#""type":"put""#, r#""type":"increment""#);
    let err = parse_jsonl(&format!("{PUT}\n{bad_type}")).expect_err("unknown op type");
    assert_eq!(err.line(), 2);
    let msg = err.to_string();
    assert!(msg.contains("increment"), "{msg}");
    // serde's own "line 1" would contradict ours; it is stripped.
    assert!(!msg.contains("at line 1"), "{msg}");
}

#[test]
fn invariant_violations_are_errors_naming_their_line() {
    let early = PUT.replace(r#""ret":25"#, r#""ret":5"#);
    let err = parse_jsonl(&format!("{PUT}\n{PUT}\n{early}\n")).expect_err("ret < call");
    assert!(
        matches!(err, ParseError::Invalid { line: 3, cause: InvalidOperation::ReturnBeforeCall { call: 10, ret: 5 } }),
        "{err:?}"
    );
    let no_output = PUT.replace(r#""output":{"type":"ok"}"#, r#""output":null"#);
    let err = parse_jsonl(&no_output).expect_err("ret without output");
    assert_eq!(
        err.to_string(),
        "line 1: invalid operation: it has a return time but no output (an unknown outcome has \"ret\":null)"
    );
}

#[test]
fn check_file_reads_parses_and_checks() {
    let dir = std::env::temp_dir().join(format!("kvraft-lincheck-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let good = dir.join("good.jsonl");
    let stale =
        r#"{"client":2,"key":"k1","op":{"type":"get"},"call":30,"ret":31,"output":{"type":"value","value":null}}"#;
    std::fs::write(&good, format!("{PUT}\n{PENDING_GET}\n")).expect("write");
    let report = check_file(&good).expect("readable");
    assert_eq!(report.verdict, Verdict::Linearizable);
    assert_eq!((report.keys, report.ops_checked), (1, 2));

    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, format!("{PUT}\n{stale}\n")).expect("write");
    let report = check_file(&bad).expect("readable");
    assert_eq!(report.verdict.violation().map(|v| v.key.as_str()), Some("k1"));

    let garbled = dir.join("garbled.jsonl");
    std::fs::write(&garbled, format!("{PUT}\nnot json\n")).expect("write");
    match check_file(&garbled) {
        Err(Error::Parse { cause, .. }) => assert_eq!(cause.line(), 2),
        other => panic!("expected a parse error, got {other:?}"),
    }

    let missing = dir.join("missing.jsonl");
    assert!(matches!(check_file(&missing), Err(Error::Io { .. })));

    std::fs::remove_dir_all(&dir).expect("clean up");
}
