//! Loopback ports for servers started by tests.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, PoisonError};

/// Every port this process has handed out, so that two calls never return the same one even
/// while the first caller has not bound it yet.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback TCP port that was free a moment ago and that no earlier call in this process
/// returned.
///
/// The port is found by binding `127.0.0.1:0` and closing the socket, so another process
/// can still take it before the caller binds it; the harness's `start` functions retry
/// with new ports when that happens. Servers under test should rather be handed a bound
/// listener (STYLE.md item 4); this is for processes that must be told a port number.
///
/// # Panics
///
/// If no port can be bound on 127.0.0.1, which leaves no test able to run.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..1000 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}"));
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("no unused loopback port after 1000 tries")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_never_handed_out_twice() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..100).map(|_| free_port()).collect::<Vec<_>>()))
            .collect();
        let mut seen = BTreeSet::new();
        for t in threads {
            for port in t.join().expect("thread panicked") {
                assert_ne!(port, 0);
                assert!(seen.insert(port), "port {port} handed out twice");
            }
        }
        assert_eq!(seen.len(), 400);
    }
}
