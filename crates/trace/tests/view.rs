//! The HTML viewer: reference traces and a 10,000-event synthetic trace
//! render to one self-contained page of bounded size with the diagram's
//! lanes, events and arrows.

use std::path::PathBuf;
use std::time::Instant;

use kvraft_trace::{Record, VectorClock, parse_trace_file, render_html};

fn reference(name: &str) -> Vec<Record> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name).join("trace_output.log");
    parse_trace_file(path).unwrap()
}

fn count(html: &str, needle: &str) -> usize {
    html.matches(needle).count()
}

/// Checks the structure every page must have; returns the arrow count.
fn assert_page(html: &str, records: &[Record]) -> usize {
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    // Self-contained: nothing is fetched.
    for external in ["src=\"http", "href=\"http", "<link", "@import", "fetch("] {
        assert!(!html.contains(external), "page loads {external}");
    }
    let hosts: std::collections::BTreeSet<_> = records.iter().map(|r| &r.tracer_identity).collect();
    assert_eq!(count(html, "<line class=\"lane "), hosts.len());
    for h in &hosts {
        assert!(html.contains(&format!("data-host=\"{h}\"")), "lane {h}");
    }
    assert_eq!(count(html, "<circle class=\"event "), records.len());
    assert_eq!(count(html, "class=\"host-filter\""), hosts.len());
    let tags: std::collections::BTreeSet<_> = records.iter().map(|r| &r.tag).collect();
    assert_eq!(count(html, "class=\"tag-filter\""), tags.len());
    assert!(html.contains("id=\"minimap\""));
    count(html, "<line class=\"arrow ")
}

#[test]
fn reference_traces_render() {
    for name in ["3Server2ClientNormalOperation", "3Server2ClientLeaderFailure"] {
        let records = reference(name);
        let html = render_html(&records);
        let arrows = assert_page(&html, &records);
        let receives = records.iter().filter(|r| r.tag == "ReceiveTokenTrace").count();
        // Every receive in the references has its generate.
        assert_eq!(arrows, receives, "{name}");
        assert!(html.len() < 1_000_000, "{name}: {} bytes", html.len());
        // Hover text (tag and body) is in the page data.
        assert!(html.contains("\"LeaderFailOver\"") || name.contains("Normal"));
        assert!(html.contains("PutRecvd"));
    }
}

#[test]
fn hostile_text_is_escaped() {
    let mut records = reference("3Server2ClientNormalOperation");
    records[1].tag = "<script>alert(1)</script>".into();
    records[2].body = serde_json::json!({"x": "</script><b>"});
    let html = render_html(&records);
    assert!(!html.contains("<script>alert"));
    assert!(!html.contains("</script><b>"));
    assert_eq!(count(&html, "<script"), 2, "only the page's own scripts");
}

/// A synthetic run: `hosts` processes, each step one host records an event
/// and every third step sends a token to another host.
fn synthetic(events: usize, hosts: usize) -> Vec<Record> {
    let mut clocks: Vec<VectorClock> = vec![VectorClock::new(); hosts];
    let names: Vec<String> = (0..hosts).map(|h| format!("server{h}")).collect();
    let mut records = Vec::with_capacity(events);
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let push =
        |records: &mut Vec<Record>, h: usize, tag: &str, body: serde_json::Value, clocks: &mut Vec<VectorClock>| {
            clocks[h].tick(&names[h]);
            records.push(Record {
                tracer_identity: names[h].clone(),
                trace_id: 42,
                tag: tag.into(),
                body,
                vector_clock: clocks[h].clone(),
                line: 0,
            });
        };
    let mut n = 0u64;
    while records.len() < events {
        let h = (rnd() % hosts as u64) as usize;
        if records.len() % 3 == 0 && records.len() + 2 <= events {
            let to = (h + 1 + (rnd() % (hosts as u64 - 1)) as usize) % hosts;
            n += 1;
            let token = format!("tok{n}");
            push(&mut records, h, "GenerateTokenTrace", serde_json::json!({"Token": token}), &mut clocks);
            let sent = clocks[h].clone();
            clocks[to].merge(&sent);
            push(&mut records, to, "ReceiveTokenTrace", serde_json::json!({"Token": token}), &mut clocks);
        } else {
            push(
                &mut records,
                h,
                ["PutRecvd", "AppendEntriesRequestSent", "GetCommitted"][n as usize % 3],
                serde_json::json!({"Term": 1, "LeaderId": 1, "PrevLogIndex": n, "Entries": [{"Key": "k", "Val": "v".repeat(400)}]}),
                &mut clocks,
            );
        }
    }
    records
}

#[test]
fn ten_thousand_events_stay_small_and_quick() {
    let records = synthetic(10_000, 7);
    let start = Instant::now();
    let html = render_html(&records);
    let took = start.elapsed();
    let arrows = assert_page(&html, &records);
    let receives = records.iter().filter(|r| r.tag == "ReceiveTokenTrace").count();
    assert_eq!(arrows, receives);
    assert!(arrows > 3_000);
    println!("10,000 events: {:.2} MB page in {took:?}", html.len() as f64 / 1e6);
    assert!(html.len() < 5_000_000, "page is {} bytes", html.len());
    // Long bodies are cut for the tooltip data.
    assert!(html.contains("…"));
}

#[test]
fn empty_and_corrupt_traces_still_render() {
    let html = render_html(&[]);
    assert_eq!(assert_page(&html, &[]), 0);
    // A receive whose generate comes later on the same host (a cycle in a
    // corrupt trace) is placed anyway.
    let mut records = reference("3Server2ClientNormalOperation");
    let token = records[3].body.clone();
    records[2].tag = "ReceiveTokenTrace".into();
    records[2].body = token;
    let html = render_html(&records);
    assert_page(&html, &records);
}
