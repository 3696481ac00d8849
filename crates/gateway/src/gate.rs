//! A future polled only when its own waker fired.
//!
//! Long-lived tasks wait for a rare event (a cancel, shutdown, a deadline) next to their real
//! work: a connection next to its HTTP traffic, a pump next to its upstream. Raced with
//! `select!`, the rare future is polled on every wake-up of the task, once per token of every
//! open stream, and polling a `Notify` or a cancellation token takes a lock. A [`Gate`] gives
//! the rare future a waker of its own that records that it fired before waking the task, so
//! the task's other wake-ups cost one atomic load here.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// `future`, polled only after its own waker fired (and on the first poll).
pub struct Gate<F> {
    future: F,
    fired: Arc<Fired>,
    waker: Waker,
}

struct Fired {
    flag: AtomicBool,
    /// The task to wake: the one that polled the gate last.
    task: AtomicWaker,
}

impl Wake for Fired {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.flag.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future + Unpin> Gate<F> {
    pub fn new(future: F) -> Self {
        // Fired at first, so that the first poll arms the future.
        let fired = Arc::new(Fired {
            flag: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            future,
            waker: Waker::from(fired.clone()),
            fired,
        }
    }
}

impl<F: Future + Unpin> Future for Gate<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Registered before the check: a wake in between is seen on the next poll.
        this.fired.task.register(cx.waker());
        if !this.fired.flag.load(Ordering::Acquire)
            || !this.fired.flag.swap(false, Ordering::AcqRel)
        {
            return Poll::Pending;
        }
        Pin::new(&mut this.future).poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Counts its polls; ready once `open` is set (and its waker was kept to be woken).
    struct Counted {
        polls: Arc<AtomicUsize>,
        open: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Counted {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.open.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn the_inner_future_is_polled_only_after_its_waker_fired() {
        let polls = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicBool::new(false));
        let kept = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let mut gate = Gate::new(Counted {
            polls: polls.clone(),
            open: open.clone(),
            waker: kept.clone(),
        });
        let task_woken = Arc::new(AtomicUsize::new(0));
        struct CountWake(Arc<AtomicUsize>);
        impl Wake for CountWake {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let task = Waker::from(Arc::new(CountWake(task_woken.clone())));
        let mut cx = Context::from_waker(&task);
        assert!(Pin::new(&mut gate).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1, "the first poll arms it");
        for _ in 0..10 {
            assert!(Pin::new(&mut gate).poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "not polled without a wake");
        open.store(true, Ordering::SeqCst);
        kept.lock().unwrap().take().unwrap().wake();
        assert_eq!(
            task_woken.load(Ordering::SeqCst),
            1,
            "its wake wakes the task"
        );
        assert!(Pin::new(&mut gate).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_gated_cancellation_is_seen() {
        let token = tokio_util::sync::CancellationToken::new();
        let gate = Gate::new(Box::pin(token.clone().cancelled_owned()));
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            token.cancel();
        };
        let ((), ()) =
            tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(gate, cancel) })
                .await
                .expect("the gate resolved after the cancel");
    }
}
