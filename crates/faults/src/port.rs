//! Picking loopback ports for processes that bind them later: the faults
//! harness's loopback runs, `kvraft demo`, `kvraft cluster` and the tests
//! that start real processes.
//!
//! A port is picked, checked free, released, and only then bound by the
//! child, so between the two another process can take it. Asking the
//! kernel for an ephemeral port (`bind` to port 0) makes that likely: the
//! kernel hands the same range to every outgoing connection on the machine
//! as its source port, and to every other process picking ports the same
//! way, so a just-released port is soon given out again. So ports are
//! picked at random *below* the ephemeral range, where only listeners that
//! ask for a port by number go, and each is checked free for both TCP and
//! UDP (a server's failure-detector port is UDP, the rest TCP). Within a
//! process no port is handed out twice.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::Mutex;

/// The lowest port picked: above the well-known and the commonly
/// configured service ports.
const LOWEST: u16 = 20_000;

/// Below the ephemeral range, fewer candidates than this fall back to
/// the kernel's choice (a machine whose range starts unusually low).
const MIN_SPAN: u16 = 1_000;

/// A loopback port free for TCP and UDP right now, never returned twice
/// by this process.
pub fn free_port() -> std::io::Result<u16> {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    let ephemeral_low = ephemeral_low();
    if ephemeral_low >= LOWEST.saturating_add(MIN_SPAN) {
        let span = u64::from(ephemeral_low - LOWEST);
        for _ in 0..4 * MIN_SPAN {
            let port = LOWEST + (random() % span) as u16;
            if !given.contains(&port) && free_for_both(port) {
                given.insert(port);
                return Ok(port);
            }
        }
    }
    // No room below the ephemeral range (or all of it busy): the kernel's
    // choice, still never the same twice here.
    for _ in 0..1_000 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        if !given.contains(&port) && free_for_both(port) {
            given.insert(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no loopback port free for both TCP and UDP"))
}

fn free_for_both(port: u16) -> bool {
    let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, port));
    tcp.is_ok() && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// The first port of the kernel's ephemeral range (Linux's default when
/// it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// 64 random bits: each `RandomState` is keyed afresh from the OS's
/// randomness (per thread, then stepped), and this process's id keeps two
/// processes started at once apart.
fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_below_the_ephemeral_range_never_repeat_and_skip_held_ones() {
        let low = ephemeral_low();
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        for &p in &ports {
            if low >= LOWEST + MIN_SPAN {
                assert!((LOWEST..low).contains(&p), "port {p} is not below the ephemeral range ({low})");
            }
            // Still free: nothing here kept it.
            assert!(free_for_both(p), "port {p} was handed out but is not free");
        }

        // Ports held by a listener are never handed out. (In the same test
        // as the above, whose ports these would otherwise take.)
        if low < LOWEST + MIN_SPAN {
            return; // this machine's range leaves no room: the kernel chooses
        }
        let held: Vec<TcpListener> =
            (LOWEST..low).filter_map(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).ok()).take(2_000).collect();
        let taken: HashSet<u16> = held.iter().map(|l| l.local_addr().unwrap().port()).collect();
        for _ in 0..50 {
            let p = free_port().unwrap();
            assert!(!taken.contains(&p), "port {p} is held by a listener but was handed out");
        }
    }
}
