//! Every task the gateway starts, and its one shutdown sequence.
//!
//! All spawning goes through [`Lifecycle`] (a bare `tokio::spawn` is refused by clippy, see
//! `crates/gateway/clippy.toml`), so that nothing outlives the server and shutdown can wait for
//! what must finish. A task is one of two kinds:
//!
//! - a **generation** ([`Lifecycle::spawn_generation`], [`Lifecycle::generation_token`]): it is
//!   given the shutdown grace period to finish, and ends itself (with an error event) when
//!   [`Lifecycle::grace_over`] fires;
//! - **background** work ([`Lifecycle::spawn`]): sweepers, Redis listeners, connections, the
//!   demo model. It is dropped when the server has [`stopped`](Lifecycle::stopped).
//!
//! Shutdown runs in this order: [`draining`](Lifecycle::draining) (`/readyz` says 503, new
//! generations are refused), then generations get the grace period, then
//! [`grace_over`](Lifecycle::grace_over) ends the rest, then [`stop`](Lifecycle::stop) drops
//! the background tasks.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::gate::Gate;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

/// The owner of the gateway's tasks and of the three moments of its shutdown. Cheap to clone;
/// every clone is the same lifecycle.
#[derive(Clone, Default)]
pub struct Lifecycle {
    generations: TaskTracker,
    background: TaskTracker,
    draining: CancellationToken,
    grace_over: CancellationToken,
    stopped: CancellationToken,
}

impl Lifecycle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs background work until it ends or the server stops, whichever is first.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        spawn_on(&self.background, until_stopped(task, self.stopped.clone()))
    }

    /// Runs a generation's pump to its end; shutdown waits for it through the grace period.
    pub fn spawn_generation<F>(&self, pump: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        spawn_on(&self.generations, pump)
    }

    /// Counts a generation polled somewhere else (in its first reader's response body) as
    /// running until the token is dropped.
    pub fn generation_token(&self) -> TaskTrackerToken {
        self.generations.token()
    }

    /// A spawner for the rest of a generation that started in a response body (see
    /// `relay::Driver`): outside a runtime (the process is exiting) the rest is dropped, and
    /// with it its writer, which ends the stream as cancelled.
    pub fn generation_spawner(
        &self,
    ) -> impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) + Send + 'static {
        let this = self.clone();
        move |rest| {
            if tokio::runtime::Handle::try_current().is_ok() {
                this.spawn_generation(rest);
            }
        }
    }

    /// Shutdown has started: `/readyz` answers 503 and new generations are refused.
    pub fn draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Resolves when the grace period is over: a generation still running ends its stream
    /// with an error event.
    pub fn grace_over(&self) -> WaitForCancellationFutureOwned {
        self.grace_over.clone().cancelled_owned()
    }

    /// Resolves when the server has stopped: background work ends.
    pub fn stopped(&self) -> WaitForCancellationFutureOwned {
        self.stopped.clone().cancelled_owned()
    }

    /// Starts draining, gives running generations `grace` to finish, ends the rest and waits
    /// (briefly) for them to write their last event.
    pub async fn drain(&self, grace: Duration) {
        self.draining.cancel();
        self.generations.close();
        if tokio::time::timeout(grace, self.generations.wait())
            .await
            .is_err()
        {
            self.grace_over.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), self.generations.wait()).await;
        }
    }

    /// Stops the background work and waits (at most `patience`) for it to be gone.
    pub async fn stop(&self, patience: Duration) {
        self.draining.cancel();
        self.grace_over.cancel();
        self.stopped.cancel();
        self.background.close();
        let _ = tokio::time::timeout(patience, self.background.wait()).await;
    }
}

/// `task`, dropped when `stopped` is cancelled. A combinator, not an `async` block: a block
/// that captures `task` and then awaits it keeps the captured copy's slot as well as the
/// awaited one, so every connection's task (hyper's connection inline) would be twice its
/// size for as long as the connection is open. The stop is gated (see [`Gate`]): a
/// connection's task is woken for every chunk it writes, and the stop comes once.
fn until_stopped<F>(task: F, stopped: CancellationToken) -> impl Future<Output = ()> + Send
where
    F: Future<Output = ()> + Send,
{
    use futures::FutureExt as _;
    let stop = Gate::new(Box::pin(stopped.cancelled_owned()));
    futures::future::select(Box::pin(task), stop).map(drop)
}

// The one place that spawns.
#[allow(clippy::disallowed_methods)]
fn spawn_on<F>(tracker: &TaskTracker, task: F) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(tracker.track_future(task))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's task holds hyper's whole connection state: stopping it must not need
    /// a second copy of it.
    #[test]
    fn a_background_task_is_held_once() {
        let state = [7u8; 4096];
        let task = async move {
            std::future::ready(()).await;
            std::hint::black_box(&state);
        };
        let alone = std::mem::size_of_val(&task);
        let stoppable = until_stopped(task, CancellationToken::new());
        assert!(alone >= 4096);
        assert!(
            std::mem::size_of_val(&stoppable) < alone + 256,
            "{} bytes for a {alone}-byte task",
            std::mem::size_of_val(&stoppable)
        );
    }

    #[tokio::test]
    async fn background_work_ends_when_stopped_and_generations_get_their_grace() {
        let life = Lifecycle::new();
        let forever = life.spawn(std::future::pending());
        let grace_over = life.grace_over();
        let finishing = life.spawn_generation(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
        });
        life.drain(Duration::from_secs(5)).await;
        assert!(finishing.is_finished(), "drain waits for a generation");
        assert!(life.draining());
        assert!(!forever.is_finished());
        life.stop(Duration::from_secs(1)).await;
        assert!(forever.is_finished());
        grace_over.await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_generation_past_the_grace_period_is_told_to_end() {
        let life = Lifecycle::new();
        let over = life.grace_over();
        let ended = life.spawn_generation(async move {
            over.await;
        });
        life.drain(Duration::from_secs(1)).await;
        assert!(ended.is_finished());
    }
}
