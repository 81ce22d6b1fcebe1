//! One measured row (a system, a workload, a load): as a line of the table,
//! as a JSON object, and compared with another system's row.

use super::driver::{Outcome, Workload};
use super::floor::Floor;
use super::usage::Usage;

/// What one run measured, ready to print.
#[derive(Clone, Debug)]
pub struct Row {
    /// "kvraft" or "etcd".
    pub system: &'static str,
    pub op: Workload,
    pub clients: u64,
    pub window: usize,
    pub tracing: bool,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    /// The measured seconds.
    pub secs: f64,
    /// The started processes' CPU and memory (none for a cluster the bench did not start).
    pub usage: Option<Usage>,
    /// The floor this row's p50 is judged against.
    pub floor: Option<Floor>,
    /// With the floor: the median fdatasync while as many run at once as
    /// the cluster has servers (see `floor::shared_bound_ms`).
    pub shared_fsync_ms: Option<f64>,
}

impl Row {
    pub fn new(system: &'static str, op: Workload, clients: u64, window: usize, o: &Outcome) -> Row {
        let ms = |q: f64| o.hist.value_at_quantile(q) as f64 / 1000.0;
        Row {
            system,
            op,
            clients,
            window,
            tracing: false,
            ops_per_sec: if o.secs > 0.0 { o.ops as f64 / o.secs } else { 0.0 },
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: o.hist.max() as f64 / 1000.0,
            errors: o.errors,
            secs: o.secs,
            usage: o.usage,
            floor: None,
            shared_fsync_ms: None,
        }
    }

    pub fn traced(mut self, tracing: bool) -> Row {
        self.tracing = tracing;
        self
    }

    pub fn with_floor(mut self, floor: Floor) -> Row {
        self.floor = Some(floor);
        self
    }

    /// The p50 in floors.
    /// `None` without a floor, or when no operation completed (a p50 of
    /// nothing is no latency).
    pub fn p50_over_floor(&self) -> Option<f64> {
        if self.ops_per_sec <= 0.0 {
            return None;
        }
        self.floor.filter(|f| f.ms() > 0.0).map(|f| self.p50_ms / f.ms())
    }

    pub fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "system": self.system, "op": self.op.name(), "tracing": self.tracing, "clients": self.clients,
            "window": self.window, "ops_per_sec": self.ops_per_sec, "p50_ms": self.p50_ms, "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms, "p999_ms": self.p999_ms, "max_ms": self.max_ms, "errors": self.errors,
            "server_cpu_s": self.usage.map(|u| u.cpu_s),
            "server_peak_rss_bytes": self.usage.map(|u| u.peak_rss_bytes),
        });
        if let (Some(f), Some(r), Some(o)) = (self.floor, self.p50_over_floor(), v.as_object_mut()) {
            o.insert("floor_ms".into(), f.ms().into());
            o.insert("p50_over_floor".into(), r.into());
            if let Some(shared) = self.shared_fsync_ms {
                o.insert("fsync_shared_p50_ms".into(), shared.into());
                o.insert("shared_bound_ms".into(), super::floor::shared_bound_ms(&f, shared).into());
            }
        }
        v
    }

    /// The row as a line of the table.
    pub fn line(&self) -> String {
        format!(
            "{:<6} {:<6} clients={:<4} window={:<3} {:>9.0} ops/s   p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  errors {}",
            self.system,
            self.op.name(),
            self.clients,
            self.window,
            self.ops_per_sec,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            self.errors
        )
    }

    /// The started processes' CPU and memory, when known.
    pub fn usage_line(&self) -> Option<String> {
        let u = self.usage?;
        let (what, one) = if self.system == "etcd" { ("members", "member") } else { ("servers", "server") };
        let pct = if self.secs > 0.0 { 100.0 * u.cpu_s / self.secs } else { 0.0 };
        Some(format!(
            "{what}: {:.1} CPU-seconds in {:.1} s ({pct:.0}% of one core), peak RSS {:.1} MiB (largest {one})",
            u.cpu_s,
            self.secs,
            u.peak_rss_bytes as f64 / (1 << 20) as f64
        ))
    }

    /// The row on its own: the line and the usage line, or the JSON object.
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.json());
        } else {
            println!("{}", self.line());
            if let Some(u) = self.usage_line() {
                println!("{u}");
            }
        }
    }
}

/// KVRaft's row against etcd's, for the same workload and load.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub fn ratio_line(kvraft: &Row, etcd: &Row) -> String {
    let ratio = if etcd.ops_per_sec > 0.0 {
        format!("{:.2}x", kvraft.ops_per_sec / etcd.ops_per_sec)
    } else {
        "n/a (etcd did nothing)".to_owned()
    };
    format!(
        "{:<6} clients={:<4} kvraft/etcd throughput {ratio} ({:.0} vs {:.0} ops/s); p99 kvraft {:.2} ms, etcd {:.2} ms",
        kvraft.op.name(),
        kvraft.clients,
        kvraft.ops_per_sec,
        etcd.ops_per_sec,
        kvraft.p99_ms,
        etcd.p99_ms
    )
}

/// A single client's p50 in floors, and the goal.
pub fn floor_line(row: &Row) -> Option<String> {
    let f = row.floor?;
    let Some(r) = row.p50_over_floor() else {
        return Some(format!(
            "{} single-client {}: no operation completed, so no p50 (floor {:.3} ms); goal <= 1.5: not met",
            row.system,
            row.op.name(),
            f.ms()
        ));
    };
    Some(format!(
        "{} single-client {} p50 {:.3} ms = {r:.2} x the floor ({:.3} ms); goal <= 1.5: {}",
        row.system,
        row.op.name(),
        row.p50_ms,
        f.ms(),
        if r <= 1.5 { "met" } else { "not met" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: &'static str, ops: f64, p99: f64) -> Row {
        Row {
            system,
            op: Workload::Put,
            clients: 64,
            window: 1,
            tracing: false,
            ops_per_sec: ops,
            p50_ms: 1.0,
            p90_ms: 2.0,
            p99_ms: p99,
            p999_ms: 4.0,
            max_ms: 5.0,
            errors: 0,
            secs: 5.0,
            usage: Some(Usage { cpu_s: 2.5, peak_rss_bytes: 3 << 20 }),
            floor: None,
            shared_fsync_ms: None,
        }
    }

    #[test]
    fn json_has_the_fields() {
        let v = row("etcd", 100.0, 3.0).json();
        for f in ["system", "op", "clients", "ops_per_sec", "p50_ms", "p99_ms", "errors", "p90_ms", "p999_ms"] {
            assert!(v.get(f).is_some(), "{f} missing in {v}");
        }
        assert_eq!(v["system"], "etcd");
        assert_eq!(v["server_cpu_s"], 2.5);
        assert!(v.get("floor_ms").is_none());
        let f = row("kvraft", 1.0, 1.0).with_floor(Floor { fsync_ms: 0.4, rtt_ms: 0.05, rtt_one_cpu_ms: None });
        let v = f.json();
        assert_eq!(v["floor_ms"], 0.5);
        assert_eq!(v["p50_over_floor"], 2.0);
        assert!(v.get("shared_bound_ms").is_none());
        let shared = Row { shared_fsync_ms: Some(0.6), ..f.clone() }.json();
        assert_eq!(
            (shared["fsync_shared_p50_ms"].as_f64(), shared["shared_bound_ms"].as_f64()),
            (Some(0.6), Some(0.7))
        );
        assert!(floor_line(&f).unwrap().contains("2.00 x the floor"), "{}", floor_line(&f).unwrap());
        // No operation completed: no ratio, and no goal met by a p50 of 0.
        let none = Row { ops_per_sec: 0.0, p50_ms: 0.0, ..f.clone() };
        assert!(none.json().get("p50_over_floor").is_none_or(|v| v.is_null()), "{}", none.json());
        assert!(floor_line(&none).unwrap().ends_with("not met"), "{}", floor_line(&none).unwrap());
    }

    #[test]
    fn lines() {
        let k = row("kvraft", 200.0, 3.0);
        assert!(k.line().starts_with("kvraft put    clients=64 "), "{}", k.line());
        assert!(k.usage_line().unwrap().starts_with("servers: 2.5 CPU-seconds in 5.0 s (50% of one core)"));
        let e = row("etcd", 100.0, 6.0);
        assert!(e.usage_line().unwrap().starts_with("members: "));
        let r = ratio_line(&k, &e);
        assert!(r.contains("throughput 2.00x"), "{r}");
        assert!(r.contains("p99 kvraft 3.00 ms, etcd 6.00 ms"), "{r}");
        assert!(ratio_line(&k, &row("etcd", 0.0, 0.0)).contains("n/a"));
    }
}
