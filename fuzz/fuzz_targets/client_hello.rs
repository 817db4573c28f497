//! Any bytes → the TLS ClientHello reader must never panic, and what it returns must be sane.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The reader is plain `std` code; including its source keeps this target from building the
// whole data plane (tokio, hyper, aws-lc) with sanitizers.
#[path = "../../crates/proxy/src/tls/hello.rs"]
#[allow(dead_code)]
mod hello;

fuzz_target!(|data: &[u8]| {
    match hello::parse(data) {
        hello::Parsed::Hello(h) => {
            if let Some(sni) = &h.sni {
                assert!(!sni.is_empty() && sni.bytes().all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()));
            }
            assert!(h.alpn.iter().all(|p| !p.is_empty()));
            // More bytes after a complete hello never change the answer.
            let mut longer = data.to_vec();
            longer.extend_from_slice(b"\x17\x03\x03");
            assert!(matches!(hello::parse(&longer), hello::Parsed::Hello(ref h2) if *h2 == h));
        }
        hello::Parsed::NeedMore | hello::Parsed::NotTls => {}
    }
});
