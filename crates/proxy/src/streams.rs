//! HTTP/2 streams run in their connection's task.
//!
//! hyper's HTTP/2 server hands each accepted stream (the service call and its response body) to
//! an executor. With tokio's, every request was a task spawned, scheduled and freed, and every
//! step of it a wake-up crossing between the stream's task and the connection's (h2 keeps all of
//! a connection's streams behind one lock, so they never run in parallel anyway). Here the
//! executor puts the stream into its connection's own set, and `WithStreams` polls that set
//! alongside the connection: one task per connection, as an Envoy worker serves a connection.

use crate::downstream::Graceful;
use futures_util::stream::FuturesUnordered;
use futures_util::Stream;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

type StreamTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The streams of one HTTP/2 connection, run by whoever polls the connection.
#[derive(Clone, Default)]
pub(crate) struct StreamExec(Arc<Mutex<FuturesUnordered<StreamTask>>>);

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        // hyper calls this from the connection's poll, never from a stream's; should that ever
        // change, the stream gets a task of its own rather than a lock taken twice.
        match self.0.try_lock() {
            Ok(set) => set.push(Box::pin(fut)),
            Err(_) => {
                tokio::spawn(fut);
            }
        }
    }
}

/// An HTTP/2 server connection together with its streams.
pub(crate) struct WithStreams<C> {
    conn: Pin<Box<C>>,
    streams: StreamExec,
}

impl<C> WithStreams<C> {
    pub(crate) fn new(conn: C, streams: StreamExec) -> WithStreams<C> {
        WithStreams { conn: Box::pin(conn), streams }
    }

    /// Poll every stream that is ready; streams that end are dropped from the set.
    fn poll_streams(&self, cx: &mut Context<'_>) {
        let Ok(mut set) = self.streams.0.lock() else { return };
        while let Poll::Ready(Some(())) = Pin::new(&mut *set).poll_next(cx) {}
    }
}

impl<C: Graceful> Future for WithStreams<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.get_mut();
        // The connection first (it accepts new streams and reads what they wait for), then the
        // streams, then the connection again to send what they produced in this same turn.
        if let Poll::Ready(out) = this.conn.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        this.poll_streams(cx);
        this.conn.as_mut().poll(cx)
    }
}

impl<C: Graceful> Graceful for WithStreams<C> {
    fn begin_graceful_shutdown(self: Pin<&mut Self>) {
        self.get_mut().conn.as_mut().begin_graceful_shutdown();
    }
}
