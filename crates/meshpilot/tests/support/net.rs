//! Loopback addresses and ports for tests. Every Envoy and backend gets its own `127.0.X.Y`, so
//! listeners that bind a proxy's own IP never collide, even across test processes.
//!
//! `X` is derived from the process id (1..=250) so parallel test processes (nextest runs one per
//! test) start in different ranges; `Y` counts up from 2. Each address handed out is *claimed*
//! across processes by binding a UDP socket on it (port [`CLAIM_PORT`], outside Linux's
//! ephemeral range) and holding it for the life of the process: a process whose claim fails
//! simply moves on to the next address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Mutex;

/// UDP port bound on every allocated address to reserve it for this process.
pub const CLAIM_PORT: u16 = 61999;

struct Allocator {
    next: u32,
    claims: Vec<UdpSocket>,
}

// A std Mutex: held only for a few non-async syscalls, never across `.await`.
static ALLOCATOR: Mutex<Option<Allocator>> = Mutex::new(None);

/// Number of `Y` values per `X` (2..=254).
const PER_X: u32 = 253;
const XS: u32 = 250;

/// A fresh `127.0.X.Y` address no other test (in this or another process) was given.
pub fn loopback_ip() -> IpAddr {
    let mut guard = ALLOCATOR.lock().unwrap_or_else(|e| e.into_inner());
    let alloc = guard.get_or_insert_with(|| Allocator {
        next: (std::process::id() % XS) * PER_X,
        claims: Vec::new(),
    });
    for _ in 0..(XS * PER_X) {
        let n = alloc.next % (XS * PER_X);
        alloc.next = alloc.next.wrapping_add(1);
        let x = (n / PER_X) + 1;
        let y = (n % PER_X) + 2;
        let ip = Ipv4Addr::new(127, 0, x as u8, y as u8);
        if let Ok(claim) = UdpSocket::bind((ip, CLAIM_PORT)) {
            alloc.claims.push(claim);
            return IpAddr::V4(ip);
        }
    }
    panic!("no free 127.0.X.Y loopback address left");
}

/// A TCP port that was free on `ip` a moment ago (bind `ip:0`, read the port, release it).
pub fn free_port(ip: IpAddr) -> u16 {
    let l = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
    l.local_addr()
        .unwrap_or_else(|e| panic!("local_addr of {ip}:0: {e}"))
        .port()
}

/// `ip:PORT` with a port that was free a moment ago.
pub fn free_addr(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, free_port(ip))
}

/// Ports on `127.0.0.1` already handed out by [`admin_addr`] in this process.
static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// An address on `127.0.0.1` with a port that was free a moment ago and that this process has
/// not handed out before. The kernel may return the same ephemeral port to two `bind(:0)` calls
/// in a row once the first socket is closed, so two addresses taken back to back (a server's xDS
/// and debug ports) could otherwise be equal; this keeps them apart.
pub fn admin_addr() -> SocketAddr {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = free_port(ip);
        if !given.contains(&port) {
            given.push(port);
            return SocketAddr::new(ip, port);
        }
    }
    panic!("no port on {ip} left that this process has not handed out");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_loopback() {
        let a = loopback_ip();
        let b = loopback_ip();
        assert_ne!(a, b);
        assert!(a.is_loopback() && b.is_loopback());
        assert_ne!(a, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let p = free_port(a);
        assert_ne!(p, 0);
    }

    #[test]
    fn admin_addresses_are_never_repeated() {
        let addrs: Vec<_> = (0..200).map(|_| admin_addr()).collect();
        let mut ports: Vec<_> = addrs.iter().map(|a| a.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), addrs.len());
    }
}
