//! Hand-built TLS ClientHello records, for what a real client library will not send (an old
//! client's hello, a hello split across records).

/// One handshake record holding a ClientHello: `version` (e.g. `[3, 3]`), `suites`, null
/// compression, and `exts` as written (see [`sni_ext`]); no extensions block when `exts` is
/// `None`.
pub fn client_hello(version: [u8; 2], suites: &[u16], exts: Option<&[u8]>) -> Vec<u8> {
    let mut body = version.to_vec();
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&u16::try_from(suites.len() * 2).unwrap().to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // null compression
    if let Some(exts) = exts {
        body.extend_from_slice(&u16::try_from(exts.len()).unwrap().to_be_bytes());
        body.extend_from_slice(exts);
    }
    let mut hs = vec![1];
    hs.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&u16::try_from(hs.len()).unwrap().to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// A `server_name` extension with one `host_name`.
pub fn sni_ext(name: &str) -> Vec<u8> {
    let entry_len = name.len() + 3;
    let mut e = vec![0, 0];
    e.extend_from_slice(&u16::try_from(entry_len + 2).unwrap().to_be_bytes());
    e.extend_from_slice(&u16::try_from(entry_len).unwrap().to_be_bytes());
    e.push(0);
    e.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
    e.extend_from_slice(name.as_bytes());
    e
}
