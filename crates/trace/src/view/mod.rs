//! The trace viewer: one self-contained HTML page (inline CSS, JS and SVG,
//! nothing fetched) with the space-time diagram of a trace.
//!
//! The diagram is static SVG, so it reads without JS and a browser test can
//! find its parts: one `line.lane` per host (`id="lane-N"`,
//! `data-host`), one `circle.event` per record (`id="eN"`, N its index),
//! one `line.arrow` per matched token (`data-from`/`data-to` name the two
//! events). Every element carries classes `hN` (its hosts) and `tN` (its
//! tags), which is how the script filters with a single CSS rule. The
//! script adds hover tooltips (tag, body, clock), click-to-highlight of a
//! trace, vertical zoom down to the whole trace on one screen, and a
//! minimap of the whole trace for orientation.
//!
//! Size: about 350 bytes per event (element, arrow share, data with the
//! body cut to [`MAX_BODY_CHARS`]), so 10,000 events stay under 5 MB.

mod layout;

use std::fmt::Write;

use crate::record::Record;
use layout::layout;

/// Body text kept per event for the tooltip.
pub const MAX_BODY_CHARS: usize = 200;

const LANE_W: usize = 150;
const ROW_H: usize = 18;
const LEFT: usize = 90;
const TOP: usize = 14;
const RADIUS: f64 = 4.5;

/// Renders the page for `records` (in file order).
pub fn render_html(records: &[Record]) -> String {
    let l = layout(records);
    let width = LEFT * 2 + LANE_W * l.hosts.len().saturating_sub(1);
    let height = TOP * 2 + ROW_H * l.rows.max(1);
    let x = |lane: usize| LEFT + LANE_W * lane;
    let y = |row: usize| TOP + ROW_H * row;

    // Tags in order of first appearance, with their counts.
    let mut tags: Vec<(&str, usize)> = Vec::new();
    let mut tag_of = Vec::with_capacity(records.len());
    {
        let mut index = std::collections::HashMap::new();
        for r in records {
            let t = *index.entry(r.tag.as_str()).or_insert_with(|| {
                tags.push((r.tag.as_str(), 0));
                tags.len() - 1
            });
            tags[t].1 += 1;
            tag_of.push(t);
        }
    }

    let mut out = String::with_capacity(records.len() * 360 + 16_384);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    out.push_str("<title>KVRaft trace</title>\n<style>\n");
    out.push_str(include_str!("viewer.css"));
    for t in 0..tags.len() {
        let _ = writeln!(out, ".event.t{t}{{fill:{}}}", color(t));
    }
    out.push_str("</style>\n<style id=\"filter-style\"></style>\n</head><body>\n");

    // Controls: summary, host and tag filters, zoom, pinned details.
    out.push_str("<div id=\"controls\"><h1>KVRaft trace</h1>\n");
    let _ = writeln!(
        out,
        "<div id=\"summary\">{} events, {} hosts, {} messages</div>",
        records.len(),
        l.hosts.len(),
        l.arrows.len()
    );
    out.push_str(concat!(
        "<fieldset><legend>Zoom <span id=\"zoom-level\">100%</span></legend>",
        "<button id=\"zoom-out\">&minus;</button><button id=\"zoom-in\">+</button>",
        "<button id=\"zoom-reset\">100%</button><button id=\"zoom-fit\">fit</button></fieldset>\n",
        "<fieldset id=\"host-filters\"><legend>Hosts</legend>\n"
    ));
    for (h, host) in l.hosts.iter().enumerate() {
        let _ = writeln!(
            out,
            "<label><input type=\"checkbox\" class=\"host-filter\" data-h=\"{h}\" checked> {}</label>",
            esc(host)
        );
    }
    out.push_str(concat!(
        "</fieldset>\n<fieldset id=\"tag-filters\"><legend>Tags</legend>",
        "<button id=\"tags-all\">all</button><button id=\"tags-none\">none</button>\n"
    ));
    for (t, (tag, count)) in tags.iter().enumerate() {
        let _ = writeln!(
            out,
            "<label><input type=\"checkbox\" class=\"tag-filter\" data-t=\"{t}\" checked> <span class=\"swatch\" style=\"background:{}\"></span>{} <span class=\"count\">{count}</span></label>",
            color(t),
            esc(tag)
        );
    }
    out.push_str("</fieldset>\n<div id=\"details\"></div></div>\n");

    // The diagram: sticky lane heads over the SVG.
    let _ = write!(out, "<div id=\"diagram\"><div id=\"lane-heads\" style=\"width:{width}px\">");
    for (h, host) in l.hosts.iter().enumerate() {
        let _ = write!(out, "<div class=\"lane-head h{h}\" style=\"left:{}px\">{}</div>", x(h), esc(host));
    }
    out.push_str("</div>\n");
    let _ = writeln!(
        out,
        "<svg id=\"spacetime\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">"
    );
    out.push_str("<defs><marker id=\"arrowhead\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\" fill=\"#999\"/></marker></defs>\n<g id=\"lanes\">\n");
    for (h, host) in l.hosts.iter().enumerate() {
        let _ = writeln!(
            out,
            "<line class=\"lane h{h}\" id=\"lane-{h}\" data-host=\"{}\" x1=\"{}\" y1=\"0\" x2=\"{}\" y2=\"{height}\"/>",
            esc(host),
            x(h),
            x(h)
        );
    }
    out.push_str("</g>\n<g id=\"arrows\">\n");
    for &(g, r) in &l.arrows {
        let (x1, y1) = (x(l.lane[g]) as f64, y(l.row[g]) as f64);
        let (x2, y2) = (x(l.lane[r]) as f64, y(l.row[r]) as f64);
        // End at the receiving circle's edge so the head stays visible.
        let len = ((x2 - x1).powi(2) + (y2 - y1).powi(2)).sqrt().max(1.0);
        let k = (len - RADIUS - 1.0).max(0.0) / len;
        let _ = writeln!(
            out,
            "<line class=\"arrow h{} h{} t{} t{}\" data-from=\"e{g}\" data-to=\"e{r}\" x1=\"{x1}\" y1=\"{y1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>",
            l.lane[g],
            l.lane[r],
            tag_of[g],
            tag_of[r],
            x1 + (x2 - x1) * k,
            y1 + (y2 - y1) * k
        );
    }
    out.push_str("</g>\n<g id=\"events\">\n");
    for (i, ((&lane, &row), &tag)) in l.lane.iter().zip(&l.row).zip(&tag_of).enumerate() {
        let _ = writeln!(
            out,
            "<circle class=\"event h{lane} t{tag}\" id=\"e{i}\" cx=\"{}\" cy=\"{}\" r=\"{RADIUS}\"/>",
            x(lane),
            y(row)
        );
    }
    out.push_str("</g>\n</svg></div>\n<canvas id=\"minimap\" title=\"overview: click or drag to move\"></canvas>\n<div id=\"tooltip\"></div>\n");

    // The data the script needs, as JSON inside a non-executed script tag.
    let events: Vec<serde_json::Value> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            serde_json::json!([
                l.lane[i],
                l.row[i],
                tag_of[i],
                r.trace_id.to_string(),
                r.vector_clock.to_shiviz(),
                cut(&r.body.to_string()),
                r.line_or(i)
            ])
        })
        .collect();
    let data = serde_json::json!({
        "hosts": l.hosts,
        "tags": tags.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        "rows": l.rows,
        "width": width,
        "height": height,
        "geom": {"left": LEFT, "laneW": LANE_W, "top": TOP, "rowH": ROW_H, "r": RADIUS},
        "ev": events,
    });
    out.push_str("<script type=\"application/json\" id=\"trace-data\">");
    // `<` only occurs inside JSON strings, where \u003c means the same;
    // this keeps `</script>` in a body from ending the tag.
    out.push_str(&data.to_string().replace('<', "\\u003c"));
    out.push_str("</script>\n<script>\n");
    out.push_str(include_str!("viewer.js"));
    out.push_str("</script>\n</body></html>\n");
    out
}

/// A tag's color; the script computes the same for the minimap.
fn color(t: usize) -> String {
    format!("hsl({:.1},65%,45%)", (t as f64 * 137.508) % 360.0)
}

/// At most [`MAX_BODY_CHARS`] characters, marked when cut.
fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_BODY_CHARS) {
        None => s.to_owned(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
