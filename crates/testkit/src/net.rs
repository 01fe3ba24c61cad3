//! Free local addresses for the servers a test starts as processes of their own.
//!
//! A port the kernel hands out for `bind(127.0.0.1:0)` is free again as soon as the probe
//! closes, so two probes in a row can name the same port: a stack of a dozen services
//! then starts two of them on one address and one exits with "address in use". Every
//! address handed out here is remembered for the life of the test process and never
//! handed out twice.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A local address (`127.0.0.1:port`) nothing listens on now and this process has not
/// handed out before.
pub fn free_addr() -> String {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    // Probes stay open until one is new, so the kernel cannot offer the same port twice.
    let mut probes = Vec::new();
    loop {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let addr = probe.local_addr().expect("a bound address");
        if handed_out.insert(addr.port()) {
            return addr.to_string();
        }
        probes.push(probe);
    }
}

/// Only the port of [`free_addr`].
pub fn free_port() -> u16 {
    let addr = free_addr();
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("an address ends in its port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_address_is_handed_out_twice() {
        let addrs: HashSet<String> = (0..500).map(|_| free_addr()).collect();
        assert_eq!(addrs.len(), 500);
    }
}
