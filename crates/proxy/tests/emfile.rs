//! Out of file descriptors at accept (EMFILE): the listener backs off instead of dying or
//! spinning, keeps serving open connections, and accepts again once descriptors are free.
//! Its own test binary: it exhausts this process's descriptors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const EMFILE: i32 = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_backs_off_on_emfile_and_serves_again() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let mut kept = H1::connect(addr).await;
    assert_eq!(kept.get("h", "/warm").await.status, 200);

    // Take every free descriptor but one (for the client's socket).
    let mut hog = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => hog.push(f),
            Err(e) if e.raw_os_error() == Some(EMFILE) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(hog.len() > 10);
    hog.pop();
    // The kernel completes the handshake; the proxy's accept() fails with EMFILE.
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    waiting.write_all(b"GET /late HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await.unwrap();
    // Meanwhile the open connection (and its pooled upstream connection) is still served.
    assert_eq!(kept.get("h", "/during").await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(hog);

    // Descriptors are back: the waiting connection is accepted and answered.
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), waiting.read_to_end(&mut resp)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&resp).starts_with("HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&resp));
    assert_eq!(get(addr, "h", "/after").await.status, 200);
}
