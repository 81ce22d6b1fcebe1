//! The checker against the prototype's reference traces, tampered copies,
//! and small hand-made traces for each property.

use std::path::PathBuf;

use kvraft_trace::{Record, Severity, VectorClock, check, parse_trace, parse_trace_file};

fn reference(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name).join("trace_output.log")
}

const REFERENCES: [&str; 2] = ["3Server2ClientNormalOperation", "3Server2ClientLeaderFailure"];

#[test]
fn reference_traces_are_safe() {
    for name in REFERENCES {
        let records = parse_trace_file(reference(name)).unwrap();
        assert!(records.len() > 250, "{name}: {} records", records.len());
        let report = check(&records, false);
        println!("{name}:\n{report}");
        assert_eq!(report.errors(), 0, "{name}:\n{report}");
        assert!(report.passed());
        assert_eq!(report.hosts, 6);
    }
}

/// Rewrites line `line` (1-based) of a reference trace with `edit`.
fn tampered(name: &str, line: usize, edit: impl FnOnce(&mut Record)) -> Vec<Record> {
    let text = std::fs::read_to_string(reference(name)).unwrap();
    let mut records = parse_trace(&text).unwrap();
    let r = records.iter_mut().find(|r| r.line == line).unwrap();
    edit(r);
    // Through the file format, as a tampered file would be read.
    let text: String = records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
    parse_trace(&text).unwrap()
}

#[test]
fn a_decreased_entry_fails_and_names_the_record() {
    // Line 8: coord ServerJoiningRecvd {"coord":4,"server1":4}; lower the
    // server1 entry below what coord had already seen at line 7.
    let records = tampered("3Server2ClientLeaderFailure", 8, |r| {
        assert_eq!(r.tag, "ServerJoiningRecvd");
        r.vector_clock.set("server1", 2);
    });
    let report = check(&records, false);
    assert!(!report.passed(), "{report}");
    let f = report.of("clock-monotonic").next().unwrap_or_else(|| panic!("{report}"));
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(f.records[0].line, 8);
    assert_eq!(f.records[0].tag, "ServerJoiningRecvd");
    let text = report.to_string();
    assert!(text.contains("error[clock-monotonic] line 8 (coord ServerJoiningRecvd)"), "{text}");
    assert!(text.ends_with("FAIL"), "{text}");
}

#[test]
fn an_own_entry_that_does_not_grow_fails() {
    // Line 9: coord GenerateTokenTrace with coord:5; set coord back to 4.
    let records = tampered("3Server2ClientNormalOperation", 19, |r| {
        assert_eq!(r.tracer_identity, "coord");
        let own = r.vector_clock.get("coord");
        r.vector_clock.set("coord", own - 1);
    });
    let report = check(&records, false);
    assert!(report.of("clock-monotonic").any(|f| f.records[0].line == 19));
    // The generate's token no longer matches its record either.
    assert!(report.of("token-content").any(|f| f.records[0].line == 19));
}

#[test]
fn a_receive_before_its_generate_fails() {
    // Line 7 is coord's ReceiveTokenTrace of server1's token from line 6;
    // make the receive claim it saw less of server1 than the token had.
    let records = tampered("3Server2ClientLeaderFailure", 7, |r| {
        assert_eq!(r.tag, "ReceiveTokenTrace");
        r.vector_clock.set("server1", 3);
    });
    let report = check(&records, false);
    let f = report.of("token-order").next().expect("token-order finding");
    assert_eq!(f.records[0].line, 7);
    assert_eq!(f.records[1].line, 6);
}

#[test]
fn a_failover_without_a_fail_fails() {
    // Rename the ServerFail so the failover has no failure before it.
    let records = tampered("3Server2ClientLeaderFailure", 179, |r| {
        assert_eq!(r.tag, "ServerFail");
        r.tag = "Renamed".into();
    });
    let report = check(&records, false);
    let f = report.of("failover-after-fail").next().unwrap_or_else(|| panic!("{report}"));
    assert_eq!(f.records[0].tag, "LeaderFailOver");
    assert_eq!(f.severity, Severity::Error);
}

#[test]
fn all_joined_before_a_join_fails() {
    let mut records = parse_trace_file(reference("3Server2ClientNormalOperation")).unwrap();
    // Drop the coord's receipt of one join.
    let i = records.iter().position(|r| r.tag == "ServerJoiningRecvd").unwrap();
    records[i].tag = "Dropped".into();
    let report = check(&records, false);
    assert!(report.of("all-joined").any(|f| f.records[0].tag == "AllServersJoined"), "{report}");
}

// ---- hand-made traces ----

/// A tiny trace builder: each event ticks its host; `send`/`recv` pass
/// clocks like tokens do.
#[derive(Default)]
struct Sim {
    clocks: std::collections::HashMap<String, VectorClock>,
    records: Vec<Record>,
}

impl Sim {
    fn ev(&mut self, host: &str, tag: &str, body: serde_json::Value) -> VectorClock {
        let c = self.clocks.entry(host.into()).or_default();
        c.tick(host);
        let clock = c.clone();
        self.records.push(Record {
            tracer_identity: host.into(),
            trace_id: 1,
            tag: tag.into(),
            body,
            vector_clock: clock.clone(),
            line: 0,
        });
        clock
    }

    /// A message from `from` to `to` (a token pair without token bodies).
    fn msg(&mut self, from: &str, to: &str) {
        let sent = self.ev(from, "Send", serde_json::json!({}));
        self.clocks.entry(to.into()).or_default().merge(&sent);
        self.ev(to, "Recv", serde_json::json!({}));
    }
}

fn put(sim: &mut Sim, client: &str, op: u64, key: &str, value: &str) {
    sim.ev(client, "Put", serde_json::json!({"ClientId": client, "OpId": op, "Key": key, "Value": value}));
    sim.msg(client, "server1");
    sim.ev("server1", "PutCommitted", serde_json::json!({"ClientId": client, "OpId": op, "Key": key, "Value": value}));
    sim.msg("server1", client);
    sim.ev(client, "PutResultRecvd", serde_json::json!({"OpId": op, "Key": key}));
}

fn get(sim: &mut Sim, client: &str, op: u64, key: &str, value: &str) {
    sim.ev(client, "Get", serde_json::json!({"ClientId": client, "OpId": op, "Key": key}));
    sim.msg(client, "server1");
    sim.msg("server1", client);
    sim.ev(client, "GetResultRecvd", serde_json::json!({"OpId": op, "Key": key, "Value": value}));
}

#[test]
fn reads_of_the_latest_value_pass() {
    let mut sim = Sim::default();
    get(&mut sim, "client1", 1, "k", "");
    put(&mut sim, "client1", 2, "k", "a");
    get(&mut sim, "client2", 1, "k", "a");
    put(&mut sim, "client2", 2, "k", "b");
    get(&mut sim, "client1", 3, "k", "b");
    let report = check(&sim.records, true);
    assert!(report.passed(), "{report}");
}

#[test]
fn a_stale_read_fails() {
    let mut sim = Sim::default();
    put(&mut sim, "client1", 1, "k", "a");
    put(&mut sim, "client1", 2, "k", "b");
    // client2 talks to the server after both puts completed, so its next
    // get causally follows them.
    get(&mut sim, "client2", 1, "other", "");
    get(&mut sim, "client2", 2, "k", "a");
    let report = check(&sim.records, false);
    let f = report.of("stale-read").next().unwrap_or_else(|| panic!("{report}"));
    assert_eq!(f.records[0].tag, "GetResultRecvd");
    assert!(f.message.contains("k=\"a\""), "{}", f.message);
    // Reading the initial value after a completed put is stale too.
    let mut sim = Sim::default();
    put(&mut sim, "client1", 1, "k", "a");
    get(&mut sim, "client2", 1, "other", "");
    get(&mut sim, "client2", 2, "k", "");
    assert_eq!(check(&sim.records, false).of("stale-read").count(), 1);
}

#[test]
fn a_read_of_an_unwritten_value_fails() {
    let mut sim = Sim::default();
    get(&mut sim, "client1", 1, "k", "ghost");
    put(&mut sim, "client1", 2, "k", "ghost");
    let report = check(&sim.records, false);
    assert_eq!(report.of("read-unwritten").count(), 1, "{report}");
}

#[test]
fn a_put_not_causally_before_the_get_may_be_missed() {
    // Vector clocks see causality, not real time: client2's get began
    // before it heard of anything, so reading the old value is not
    // provably stale (it may well be; lincheck judges real time).
    let mut sim = Sim::default();
    put(&mut sim, "client1", 1, "k", "a");
    put(&mut sim, "client1", 2, "k", "b");
    get(&mut sim, "client2", 1, "k", "a");
    assert_eq!(check(&sim.records, false).errors(), 0);
}

#[test]
fn concurrent_puts_may_be_read_either_way() {
    // Two puts whose results are concurrent with the get's start.
    let mut sim = Sim::default();
    sim.ev("client1", "Put", serde_json::json!({"ClientId": "1", "OpId": 1, "Key": "k", "Value": "a"}));
    sim.ev("client2", "Put", serde_json::json!({"ClientId": "2", "OpId": 1, "Key": "k", "Value": "b"}));
    get(&mut sim, "client3", 1, "k", "a");
    get(&mut sim, "client3", 2, "k", "b");
    let report = check(&sim.records, false);
    assert_eq!(report.errors(), 0, "{report}");
    // ...but they never got results: warnings, which fail only when strict.
    assert_eq!(report.of("put-no-result").count(), 2);
    assert!(report.passed());
    assert!(!check(&sim.records, true).passed());
}

#[test]
fn two_leaders_in_one_term_fail() {
    let mut sim = Sim::default();
    sim.ev("server1", "BecameLeader", serde_json::json!({"ServerId": 1, "Term": 3}));
    sim.ev("server2", "BecameLeader", serde_json::json!({"ServerId": 2, "Term": 3}));
    sim.ev("server2", "BecameLeader", serde_json::json!({"ServerId": 2, "Term": 4}));
    let report = check(&sim.records, false);
    let f: Vec<_> = report.of("one-leader-per-term").collect();
    assert_eq!(f.len(), 1, "{report}");
    assert_eq!(f[0].severity, Severity::Error);
    assert!(f[0].message.contains("term 3"));
}

#[test]
fn uncommitted_requests_warn_unless_the_server_failed() {
    let mut sim = Sim::default();
    for s in ["server1", "server2"] {
        let id = &s[6..];
        sim.ev(s, "ServerStart", serde_json::json!({"ServerId": id.parse::<u64>().unwrap()}));
        sim.ev(s, "PutRecvd", serde_json::json!({"ClientId": "1", "OpId": 1, "Key": "k", "Value": "v"}));
    }
    sim.ev("coord", "ServerFail", serde_json::json!({"ServerId": 1}));
    let report = check(&sim.records, false);
    let f: Vec<_> = report.of("request-uncommitted").collect();
    assert_eq!(f.len(), 1, "{report}");
    assert_eq!(f[0].records[0].host, "server2");
    assert_eq!(f[0].severity, Severity::Warning);
}

#[test]
fn dropped_records_and_restarts_are_warnings() {
    let mut sim = Sim::default();
    sim.ev("a", "X", serde_json::json!({}));
    sim.ev("a", "X", serde_json::json!({}));
    // Lose two records of a.
    sim.clocks.get_mut("a").unwrap().tick("a");
    sim.clocks.get_mut("a").unwrap().tick("a");
    sim.ev("a", "X", serde_json::json!({}));
    // a restarts: a fresh clock.
    sim.clocks.remove("a");
    sim.ev("a", "X", serde_json::json!({}));
    let report = check(&sim.records, false);
    assert_eq!(report.errors(), 0, "{report}");
    assert_eq!(report.of("records-missing").count(), 1, "{report}");
    assert_eq!(report.of("host-restart").count(), 1, "{report}");
}

#[test]
fn a_tampered_read_value_fails() {
    // Line 113: client1 GetResultRecvd {"OpId":2,"Key":"k0","Value":"val0"}.
    let records = tampered("3Server2ClientLeaderFailure", 113, |r| {
        assert_eq!(r.tag, "GetResultRecvd");
        r.body["Value"] = "val7".into();
    });
    let report = check(&records, false);
    let f = report.of("read-unwritten").next().unwrap_or_else(|| panic!("{report}"));
    assert_eq!(f.records[0].line, 113);
}
