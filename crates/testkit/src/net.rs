//! Ports on 127.0.0.1.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A port nobody listens on right now (the OS picks it; a test binds it soon after).
///
/// Never the same port twice in one process: the kernel may hand a just-released port out again,
/// and two tests running side by side would then both bind it (one gateway failing to start while
/// the other's admin server answers its readiness probe).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
        let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Wait (10 s at most) until something accepts on `port`.
pub fn wait_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}
