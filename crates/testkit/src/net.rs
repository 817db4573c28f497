//! Ports on 127.0.0.1.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A port nobody listens on right now (the OS picks it; a test binds it soon after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Wait (10 s at most) until something accepts on `port`.
pub fn wait_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}
