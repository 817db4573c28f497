//! Downstream connection plumbing: protocol detection (HTTP/2 prior knowledge vs HTTP/1.x) and
//! a stream that replays the sniffed bytes.

use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Read just enough to tell HTTP/2 prior knowledge from HTTP/1: `Some((is_h2, bytes read))`,
/// `None` when the peer closed before sending anything.
pub(crate) async fn sniff<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Option<(bool, Bytes)>> {
    let mut buf = [0u8; 24];
    let mut n = 0;
    loop {
        let m = stream.read(&mut buf[n..]).await?;
        if m == 0 {
            return Ok((n > 0).then(|| (false, Bytes::copy_from_slice(&buf[..n]))));
        }
        n += m;
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some((false, Bytes::copy_from_slice(&buf[..n]))));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some((true, Bytes::copy_from_slice(&buf[..n]))));
        }
    }
}

/// `inner`, with `prefix` read first.
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: Bytes, inner: S) -> Prefixed<S> {
        Prefixed { prefix, inner }
    }
}

/// A downstream stream that an idle connection can leave behind as a bare socket, to wait in
/// the parking lot (`park`) without its task.
pub(crate) trait IntoSocket: Sized {
    /// Only a socket is left: no replayed bytes, no state of its own (TLS has some).
    fn is_bare(&self) -> bool;
    /// The socket, out of the runtime's registration.
    fn into_socket(self) -> io::Result<std::net::TcpStream>;
}

impl IntoSocket for Prefixed<tokio::net::TcpStream> {
    fn is_bare(&self) -> bool {
        self.prefix.is_empty()
    }

    fn into_socket(self) -> io::Result<std::net::TcpStream> {
        self.inner.into_std()
    }
}

impl<S> IntoSocket for Box<tokio_rustls::server::TlsStream<S>> {
    fn is_bare(&self) -> bool {
        false
    }

    fn into_socket(self) -> io::Result<std::net::TcpStream> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "a TLS stream keeps its session state"))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn sniffs_and_replays() {
        let mut h1: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
        let (h2, pre) = sniff(&mut h1).await.unwrap().unwrap();
        assert!(!h2);
        assert_eq!(&pre[..], b"GET / HTTP/1.1\r\n\r\n");

        let mut data = H2_PREFACE.to_vec();
        data.extend_from_slice(b"rest");
        let mut r: &[u8] = &data;
        let (h2, pre) = sniff(&mut r).await.unwrap().unwrap();
        assert!(h2);
        let mut all = Vec::new();
        Prefixed::new(pre, r).read_to_end(&mut all).await.unwrap();
        assert_eq!(all, data);

        let mut empty: &[u8] = b"";
        assert!(sniff(&mut empty).await.unwrap().is_none());
    }
}
