//! Wake-ups that say where they came from.
//!
//! Besides its log, an SSE body polls two things that are rarely ready: the stream's writer,
//! when the body drives it, and the keep-alive timer. hyper polls a body about three times for
//! each write (the frame, then twice to find it empty), and polling the writer runs the whole
//! upstream stack down to its socket, while polling the timer registers the task's waker with
//! tokio's timer again. Each gets a [`Signal`]: a waker of its own that records that it fired
//! before it wakes the body's task, so that the body's other polls cost an atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

use futures::task::AtomicWaker;

/// One source of wake-ups of a task.
pub(crate) struct Signal {
    fired: Arc<Fired>,
    waker: Waker,
}

struct Fired {
    flag: AtomicBool,
    /// The task to wake: the one that registered last (see [`Signal::register`]).
    task: Arc<AtomicWaker>,
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

impl Signal {
    /// Signals of one task, each fired at first so that its source is polled (armed) once.
    pub(crate) fn pair() -> (Self, Self) {
        let task = Arc::new(AtomicWaker::new());
        (Self::new(task.clone()), Self::new(task))
    }

    fn new(task: Arc<AtomicWaker>) -> Self {
        let fired = Arc::new(Fired {
            flag: AtomicBool::new(true),
            task,
        });
        Self {
            waker: Waker::from(fired.clone()),
            fired,
        }
    }

    /// Makes `waker` the task to wake, for this signal and the others of its [`pair`]. Called
    /// on every poll, before [`take`](Self::take): a wake in between is seen on the next poll.
    pub(crate) fn register(&self, waker: &Waker) {
        self.fired.task.register(waker);
    }

    /// Whether the signal fired since the last call (and then resets it).
    pub(crate) fn take(&self) -> bool {
        self.fired.flag.load(Ordering::Acquire) && self.fired.flag.swap(false, Ordering::AcqRel)
    }

    /// Fires the signal without waking the task: its source is polled on the next poll.
    pub(crate) fn arm(&self) {
        self.fired.flag.store(true, Ordering::Release);
    }

    /// The context to poll the source with, so that its wake-ups fire this signal.
    pub(crate) fn context(&self) -> Context<'_> {
        Context::from_waker(&self.waker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct CountWake(AtomicUsize);
    impl Wake for CountWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_signal_fires_once_per_wake_and_wakes_the_registered_task() {
        let (a, b) = Signal::pair();
        assert!(a.take() && b.take(), "fired at first, to arm their sources");
        assert!(!a.take() && !b.take());
        let count = Arc::new(CountWake(AtomicUsize::new(0)));
        let task = Waker::from(count.clone());
        a.register(&task);
        b.context().waker().wake_by_ref();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "either signal wakes the task"
        );
        assert!(!a.take(), "only the signal that was woken fired");
        assert!(b.take());
        assert!(!b.take());
        a.arm();
        assert!(a.take());
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "arming does not wake");
    }
}
