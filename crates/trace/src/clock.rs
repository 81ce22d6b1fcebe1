//! Vector clocks: one logical counter per process, keyed by tracer identity.
//!
//! Invariant: no entry is ever zero. A missing entry *means* zero, so keeping
//! zeros out makes structural equality (`==`) the same as clock equality, and
//! keeps the serialized form identical to the prototype's (which never wrote
//! zeros). Every constructor and mutator keeps the invariant.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// A vector clock. Serializes as a JSON object with sorted keys, e.g.
/// `{"coord":3,"server1":4}`.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct VectorClock(BTreeMap<String, u64>);

/// How two clocks relate under happened-before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Causality {
    /// Same clock: the same event (or two events a trace cannot tell apart).
    Equal,
    /// The left clock happened before the right one.
    Before,
    /// The left clock happened after the right one.
    After,
    /// Neither saw the other.
    Concurrent,
}

impl VectorClock {
    /// The empty clock (every entry zero).
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry for `id` (zero when absent).
    pub fn get(&self, id: &str) -> u64 {
        self.0.get(id).copied().unwrap_or(0)
    }

    /// Sets the entry for `id`; setting zero removes it (see the invariant).
    pub fn set(&mut self, id: &str, value: u64) {
        if value == 0 {
            self.0.remove(id);
        } else if let Some(v) = self.0.get_mut(id) {
            *v = value;
        } else {
            self.0.insert(id.to_owned(), value);
        }
    }

    /// Advances `id`'s own entry by one and returns the new value. Saturates
    /// rather than wrapping: a clock merged from a forged token must not
    /// panic the process.
    pub fn tick(&mut self, id: &str) -> u64 {
        let next = self.get(id).saturating_add(1);
        self.set(id, next);
        next
    }

    /// Pointwise maximum: afterwards `self` has seen everything `other` saw.
    pub fn merge(&mut self, other: &VectorClock) {
        for (id, &v) in &other.0 {
            if v > self.get(id) {
                self.set(id, v);
            }
        }
    }

    /// [`VectorClock::merge`], unless the merge would make the clock's
    /// [`VectorClock::id_bytes`] exceed `max_id_bytes`: then nothing changes
    /// and the result is false. Every token a process makes carries its
    /// whole clock, so a clock grown without bound by forged tokens naming
    /// ever new processes would grow every message after them.
    pub fn merge_within(&mut self, other: &VectorClock, max_id_bytes: usize) -> bool {
        let new: usize = other.0.keys().filter(|id| !self.0.contains_key(*id)).map(|id| id.len()).sum();
        if new > 0 && self.id_bytes().saturating_add(new) > max_id_bytes {
            return false;
        }
        self.merge(other);
        true
    }

    /// The bytes of all the clock's ids together.
    pub fn id_bytes(&self) -> usize {
        self.0.keys().map(String::len).sum()
    }

    /// `self <= other` pointwise: every event `self` saw, `other` saw too.
    pub fn le(&self, other: &VectorClock) -> bool {
        self.0.iter().all(|(id, &v)| v <= other.get(id))
    }

    /// Strict happened-before: `self <= other` and `self != other`.
    pub fn happened_before(&self, other: &VectorClock) -> bool {
        self != other && self.le(other)
    }

    /// The causal relation between `self` and `other`.
    pub fn compare(&self, other: &VectorClock) -> Causality {
        match (self.le(other), other.le(self)) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::Before,
            (false, true) => Causality::After,
            (false, false) => Causality::Concurrent,
        }
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(k, &v)| (k.as_str(), v))
    }

    /// Number of non-zero entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when every entry is zero.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sum of all entries. If `a` happened before `b` then `a.sum() < b.sum()`,
    /// so sorting by it gives a linear extension of happened-before.
    pub fn sum(&self) -> u128 {
        self.0.values().map(|&v| u128::from(v)).sum()
    }

    /// The clock in ShiViz's spelling: JSON with `", "` between entries, as
    /// the prototype's `shiviz_output.log` has it (`{"coord":3, "server1":4}`).
    pub fn to_shiviz(&self) -> String {
        let mut out = String::with_capacity(2 + self.0.len() * 16);
        self.write_shiviz(&mut out);
        out
    }

    /// Appends [`Self::to_shiviz`] to `out` (no intermediate allocation).
    pub fn write_shiviz(&self, out: &mut String) {
        out.push('{');
        for (i, (id, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            crate::record::push_json_str(out, id);
            out.push(':');
            push_u64(out, *v);
        }
        out.push('}');
    }
}

/// Appends the decimal digits of `v`.
pub(crate) fn push_u64(out: &mut String, v: u64) {
    use fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(out, "{v}");
}

impl fmt::Debug for VectorClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_shiviz())
    }
}

impl fmt::Display for VectorClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_shiviz())
    }
}

impl<'de> Deserialize<'de> for VectorClock {
    /// Reads any map of counters, dropping zero entries (the invariant).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = BTreeMap::<String, u64>::deserialize(d)?;
        map.retain(|_, v| *v > 0);
        Ok(Self(map))
    }
}

impl<S: Into<String>> FromIterator<(S, u64)> for VectorClock {
    fn from_iter<I: IntoIterator<Item = (S, u64)>>(iter: I) -> Self {
        let mut map = BTreeMap::new();
        for (k, v) in iter {
            if v > 0 {
                map.insert(k.into(), v);
            }
        }
        Self(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vc(entries: &[(&str, u64)]) -> VectorClock {
        entries.iter().map(|&(k, v)| (k, v)).collect()
    }

    #[test]
    fn tick_advances_only_the_own_entry() {
        let mut c = VectorClock::new();
        assert_eq!(c.tick("a"), 1);
        assert_eq!(c.tick("a"), 2);
        assert_eq!(c.get("a"), 2);
        assert_eq!(c.get("b"), 0);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn merge_is_pointwise_max() {
        let mut a = vc(&[("a", 3), ("b", 1)]);
        a.merge(&vc(&[("b", 5), ("c", 2), ("a", 1)]));
        assert_eq!(a, vc(&[("a", 3), ("b", 5), ("c", 2)]));
    }

    #[test]
    fn happened_before_and_concurrency() {
        let a = vc(&[("a", 1)]);
        let b = vc(&[("a", 1), ("b", 1)]);
        let c = vc(&[("c", 1)]);
        assert!(a.happened_before(&b));
        assert!(!b.happened_before(&a));
        assert!(!a.happened_before(&a));
        assert_eq!(a.compare(&b), Causality::Before);
        assert_eq!(b.compare(&a), Causality::After);
        assert_eq!(a.compare(&a.clone()), Causality::Equal);
        assert_eq!(b.compare(&c), Causality::Concurrent);
        assert!(a.sum() < b.sum());
    }

    #[test]
    fn zero_entries_are_absent() {
        let mut a = vc(&[("a", 0), ("b", 2)]);
        assert_eq!(a, vc(&[("b", 2)]));
        a.set("b", 0);
        assert!(a.is_empty());
        let parsed: VectorClock = serde_json::from_str(r#"{"x":0,"y":1}"#).unwrap();
        assert_eq!(parsed, vc(&[("y", 1)]));
    }

    #[test]
    fn serializes_sorted_like_the_reference() {
        let c = vc(&[("server1", 4), ("coord", 3)]);
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"coord":3,"server1":4}"#);
        assert_eq!(c.to_shiviz(), r#"{"coord":3, "server1":4}"#);
        assert_eq!(VectorClock::new().to_shiviz(), "{}");
    }

    #[test]
    fn a_merge_past_the_bound_changes_nothing() {
        let mut a = vc(&[("aa", 1), ("bb", 1)]);
        // Known ids always merge: they do not grow the clock.
        assert!(a.merge_within(&vc(&[("aa", 7)]), 4));
        assert_eq!(a.get("aa"), 7);
        // A new id that would take the ids past 5 bytes is refused whole.
        assert!(!a.merge_within(&vc(&[("bb", 9), ("cc", 1)]), 5));
        assert_eq!(a, vc(&[("aa", 7), ("bb", 1)]));
        assert!(a.merge_within(&vc(&[("bb", 9), ("cc", 1)]), 6));
        assert_eq!(a.id_bytes(), 6);
    }

    #[test]
    fn tick_saturates_instead_of_overflowing() {
        let mut c = vc(&[("a", u64::MAX)]);
        assert_eq!(c.tick("a"), u64::MAX);
    }
}
