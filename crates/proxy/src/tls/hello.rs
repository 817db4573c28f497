//! A small TLS ClientHello reader: SNI and ALPN from the first handshake message, without
//! consuming anything (the caller keeps the bytes and replays them to rustls or to a
//! passthrough backend). Everything it reads comes from the client: every length is checked.

/// What the bytes read so far are.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A TLS handshake so far, but the ClientHello is not complete yet.
    NeedMore,
    /// Not a TLS ClientHello (plain HTTP, garbage, or a malformed hello).
    NotTls,
    Hello(ClientHello),
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` of the server_name extension, lowercased (DNS names are case-insensitive).
    pub sni: Option<String>,
    /// ALPN protocol names offered, in the client's order.
    pub alpn: Vec<Vec<u8>>,
}

/// Largest ClientHello accepted (Envoy's tls_inspector reads up to 64 KiB as well).
pub const MAX_HELLO: usize = 64 * 1024;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a 1- or 2-byte length prefix.
    fn vec8(&mut self) -> Option<Reader<'a>> {
        let n = usize::from(self.u8()?);
        self.take(n).map(|buf| Reader { buf })
    }
    fn vec16(&mut self) -> Option<Reader<'a>> {
        let n = usize::from(self.u16()?);
        self.take(n).map(|buf| Reader { buf })
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Parse the start of a TLS connection. The handshake message may span several records
/// (a large hello with post-quantum key shares does), so record payloads are joined first.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut handshake: Vec<u8> = Vec::new();
    let mut rest = buf;
    loop {
        if rest.is_empty() {
            return Parsed::NeedMore;
        }
        if rest[0] != CONTENT_HANDSHAKE {
            return Parsed::NotTls;
        }
        if rest.len() < 5 {
            // Check what we have of the version: TLS records say 3.x.
            if rest.len() >= 2 && rest[1] != 3 {
                return Parsed::NotTls;
            }
            return Parsed::NeedMore;
        }
        if rest[1] != 3 {
            return Parsed::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        // RFC 8446 §5.1: a record is at most 2^14 bytes; empty handshake records are illegal.
        if len == 0 || len > 16384 + 256 {
            return Parsed::NotTls;
        }
        if rest.len() < 5 + len {
            return Parsed::NeedMore;
        }
        handshake.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        if handshake.len() >= 4 {
            if handshake[0] != HANDSHAKE_CLIENT_HELLO {
                return Parsed::NotTls;
            }
            let msg_len =
                (usize::from(handshake[1]) << 16) | (usize::from(handshake[2]) << 8) | usize::from(handshake[3]);
            if msg_len + 4 > MAX_HELLO {
                return Parsed::NotTls;
            }
            if handshake.len() >= msg_len + 4 {
                return match client_hello(&handshake[4..4 + msg_len]) {
                    Some(h) => Parsed::Hello(h),
                    None => Parsed::NotTls,
                };
            }
        }
        if handshake.len() > MAX_HELLO {
            return Parsed::NotTls;
        }
    }
}

fn client_hello(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader { buf: body };
    let version = r.u16()?;
    if version >> 8 != 3 {
        return None;
    }
    r.take(32)?; // random
    r.vec8()?; // legacy session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut hello = ClientHello::default();
    if r.is_empty() {
        return Some(hello); // no extensions (old clients): no SNI, no ALPN
    }
    let mut exts = r.vec16()?;
    while !exts.is_empty() {
        let ty = exts.u16()?;
        let mut data = exts.vec16()?;
        match ty {
            EXT_SERVER_NAME => {
                let mut list = data.vec16()?;
                while !list.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?.buf;
                    if name_type == 0 && hello.sni.is_none() {
                        // A host name is ASCII without a trailing dot (RFC 6066 §3); anything
                        // else is refused rather than guessed at.
                        let s = std::str::from_utf8(name).ok()?;
                        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
                            return None;
                        }
                        hello.sni = Some(s.to_ascii_lowercase());
                    }
                }
            }
            EXT_ALPN => {
                let mut list = data.vec16()?;
                while !list.is_empty() {
                    let p = list.vec8()?.buf;
                    if !p.is_empty() {
                        hello.alpn.push(p.to_vec());
                    }
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    use portico_testkit::hello::{client_hello, sni_ext};

    /// A minimal TLS 1.2 ClientHello record with the given extensions.
    fn hello(exts: &[u8]) -> Vec<u8> {
        client_hello([3, 3], &[0x1301], Some(exts))
    }

    #[test]
    fn reads_sni_and_alpn_and_waits_for_more() {
        let mut exts = sni_ext("A.Example.com");
        exts.extend_from_slice(&[0, 16, 0, 14, 0, 12, 2, b'h', b'2', 8]);
        exts.extend_from_slice(b"http/1.1");
        let rec = hello(&exts);
        let Parsed::Hello(h) = parse(&rec) else { panic!("not parsed") };
        assert_eq!(h.sni.as_deref(), Some("a.example.com"));
        assert_eq!(h.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        for cut in 0..rec.len() {
            assert_eq!(parse(&rec[..cut]), Parsed::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn no_extensions_and_not_tls() {
        assert_eq!(parse(&hello(&[])), Parsed::Hello(ClientHello::default()));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parsed::NotTls);
        assert_eq!(parse(&[22, 9]), Parsed::NotTls);
    }

    #[test]
    fn hello_split_across_records() {
        let rec = hello(&sni_ext("x.io"));
        let payload = &rec[5..];
        let (a, b) = payload.split_at(10);
        let mut two = vec![22, 3, 1];
        two.extend_from_slice(&(a.len() as u16).to_be_bytes());
        two.extend_from_slice(a);
        two.extend_from_slice(&[22, 3, 1]);
        two.extend_from_slice(&(b.len() as u16).to_be_bytes());
        two.extend_from_slice(b);
        let Parsed::Hello(h) = parse(&two) else { panic!("not parsed") };
        assert_eq!(h.sni.as_deref(), Some("x.io"));
    }
}
