//! [`WokenOnly`]: rare signals (drain, shutdown, idle checks) raced against a busy future
//! without paying for them at each of its wake-ups.

use futures_util::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// A future polled only when its own waker fired (and at the first poll), however often the
/// task it shares is woken by others: for drain and shutdown signals raced against a connection
/// that wakes several times per request (each needless poll of a `watch` or `Notify` costs a
/// few hundred instructions).
pub(crate) struct WokenOnly<F> {
    inner: Pin<Box<F>>,
    own: OwnWaker,
}

impl<F: Future> WokenOnly<F> {
    pub(crate) fn new(inner: F) -> Self {
        WokenOnly { inner: Box::pin(inner), own: OwnWaker::new() }
    }
}

impl<F: Future> Future for WokenOnly<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.own.due(cx) {
            return Poll::Pending;
        }
        let waker = self.own.waker();
        self.inner.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

/// The waker of one future that a task polls among others: it records that this future was
/// woken (then wakes the task), so the task polls the future only when it must.
pub(crate) struct OwnWaker(Arc<WakeFlag>);

struct WakeFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl OwnWaker {
    /// Due at once: the future has not registered this waker yet.
    pub(crate) fn new() -> Self {
        OwnWaker(Arc::new(WakeFlag { woken: AtomicBool::new(true), task: AtomicWaker::new() }))
    }

    /// Whether the future must be polled now (with [`Self::waker`]); `cx`'s task is the one
    /// woken when it must next.
    pub(crate) fn due(&self, cx: &Context<'_>) -> bool {
        self.0.task.register(cx.waker());
        self.0.woken.swap(false, Ordering::AcqRel)
    }

    /// The future changed (a timer reset): poll it at the next [`Self::due`].
    pub(crate) fn force(&self) {
        self.0.woken.store(true, Ordering::Release);
    }

    pub(crate) fn waker(&self) -> Waker {
        Waker::from(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    struct Probed(Arc<Probe>);

    impl Future for Probed {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.polls.fetch_add(1, Ordering::SeqCst);
            if self.0.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.0.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_inner_future_is_polled_at_first_and_then_only_when_its_own_waker_fired() {
        let probe = Arc::new(Probe::default());
        let wakes = Arc::new(Wakes::default());
        let task = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&task);
        let mut signal = Box::pin(WokenOnly::new(Probed(probe.clone())));
        assert!(signal.as_mut().poll(&mut cx).is_pending());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 1, "polled once to register its waker");
        // The task is woken by others again and again: the inner future is left alone.
        for _ in 0..5 {
            assert!(signal.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(probe.polls.load(Ordering::SeqCst), 1);
        // Its own waker fires: the task is woken and the next poll reaches it.
        probe.ready.store(true, Ordering::SeqCst);
        probe.waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the task was woken");
        assert!(signal.as_mut().poll(&mut cx).is_ready());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
    }
}
