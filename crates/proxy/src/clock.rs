//! The time as of this poll of a connection's task: read once, then shared by whatever the poll
//! runs (the guard's timers and progress, the request's start and end, the pool's idle checks).
//!
//! A clock read costs about 20 ns on a VM, and an HTTP/1.1 request made eleven of our own. Time
//! does not need to move within one poll: every deadline and duration the request path keeps is
//! milliseconds or coarser, as with Envoy's per-loop approximate time. Outside a connection's
//! poll (other tasks, the control thread) [`now`] reads the clock each time.
//!
//! It is `tokio::time::Instant`, so tests that pause tokio's clock see paused time here too.

use std::cell::Cell;
use std::future::Future;

use tokio::time::Instant;

#[derive(Clone, Copy)]
enum Reading {
    /// Not inside a connection's poll: read the clock every time.
    Outside,
    /// Inside one, not read yet.
    Unread,
    At(Instant),
}

thread_local! {
    static NOW: Cell<Reading> = const { Cell::new(Reading::Outside) };
}

/// The current time: the poll's reading inside a connection's task, a fresh one elsewhere.
pub(crate) fn now() -> Instant {
    NOW.with(|cell| match cell.get() {
        Reading::At(t) => t,
        Reading::Unread => {
            let t = Instant::now();
            cell.set(Reading::At(t));
            t
        }
        Reading::Outside => Instant::now(),
    })
}

/// Runs `fut` with one clock reading per poll (nested uses keep their own).
pub(crate) async fn per_poll<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        let _scope = Scope::enter();
        fut.as_mut().poll(cx)
    })
    .await
}

/// Restores what was there before on the way out, a panic included: a reading left behind would
/// stop time for the thread's other tasks.
struct Scope(Reading);

impl Scope {
    fn enter() -> Scope {
        Scope(NOW.with(|cell| cell.replace(Reading::Unread)))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        NOW.with(|cell| cell.set(self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Busy until the clock has surely moved, without yielding to the runtime.
    fn let_time_pass() {
        let from = std::time::Instant::now();
        while from.elapsed() < Duration::from_millis(2) {
            std::hint::spin_loop();
        }
    }

    #[tokio::test]
    async fn one_reading_per_poll_and_fresh_ones_outside() {
        let outside = now();
        let_time_pass();
        assert!(now() > outside, "outside a connection's poll every read is fresh");

        let (first, same_poll, next_poll) = per_poll(async {
            let first = now();
            let_time_pass();
            let same_poll = now();
            tokio::task::yield_now().await;
            (first, same_poll, now())
        })
        .await;
        assert_eq!(first, same_poll, "one reading within one poll");
        assert!(next_poll >= first + Duration::from_millis(2), "the next poll reads again");

        let after = now();
        let_time_pass();
        assert!(now() > after, "the reading is gone once the future has ended");
    }

    #[tokio::test]
    async fn a_panic_inside_a_poll_does_not_stop_the_thread_s_clock() {
        let panicking = std::panic::AssertUnwindSafe(per_poll(async {
            let _ = now();
            panic!("inside the poll");
        }));
        assert!(futures_util::FutureExt::catch_unwind(panicking).await.is_err());
        let before = now();
        let_time_pass();
        assert!(now() > before);
    }
}
