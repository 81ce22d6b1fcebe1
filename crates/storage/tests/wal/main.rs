//! The storage's tests, one module per concern, in one test binary (one
//! link instead of six).

mod bounded_disk;
mod corruption;
mod model;
mod roundtrip;
mod salted;
mod snapshots;
mod support;
mod torn_tail;
