//! Decoding a map whose length prefix comes from outside (a snapshot a
//! peer sent, or a file).
//!
//! The stock `Deserialize` for imbl's maps reserves as many entries as the
//! length prefix claims, and postcard passes that prefix on unchecked: nine
//! bytes claiming 2^60 entries abort the process on the reservation, before
//! a single entry is read. Here at most [`MAX_RESERVED`] entries are
//! reserved up front; past that the buffer grows as entries actually
//! decode, so a false length ends in a decode error, not a panic.

use std::fmt;
use std::marker::PhantomData;

use imbl::OrdMap;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// Entries reserved up front at most, whatever the prefix claims (a
/// million-key snapshot reallocates a few times more, a few ms in all).
const MAX_RESERVED: usize = 1 << 16;

/// `#[serde(deserialize_with = "cautious::ord_map")]`: as the stock
/// implementation (later duplicates win), with a bounded reservation.
pub fn ord_map<'de, D, K, V>(d: D) -> Result<OrdMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord + Clone,
    V: Deserialize<'de> + Clone,
{
    struct MapVisitor<K, V>(PhantomData<(K, V)>);

    impl<'de, K, V> Visitor<'de> for MapVisitor<K, V>
    where
        K: Deserialize<'de> + Ord + Clone,
        V: Deserialize<'de> + Clone,
    {
        type Value = OrdMap<K, V>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::with_capacity(access.size_hint().unwrap_or(0).min(MAX_RESERVED));
            while let Some(entry) = access.next_entry()? {
                entries.push(entry);
            }
            Ok(OrdMap::from(entries))
        }
    }

    d.deserialize_map(MapVisitor(PhantomData))
}
