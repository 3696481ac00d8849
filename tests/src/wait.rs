//! Polling with a deadline: [`wait_until`] for a plain condition, [`wait_for`] for an async one
//! that may also hand back a value (a response, a usage document, an exit status).

use std::future::Future;
use std::time::{Duration, Instant};

/// How often both helpers look again.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Waits until `f` holds, checking every 20 ms, for at most `limit`. Returns whether it held.
pub async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    wait_for(limit, || std::future::ready(f().then_some(())))
        .await
        .is_some()
}

/// Calls `f` every 20 ms until it gives `Some`, for at most `limit`, and returns that value;
/// `None` if it never did. `f` is called once more at the deadline, so a slow last call still
/// counts.
///
/// ```ignore
/// let s = &sluice;
/// let usage = wait_for(Duration::from_secs(5), || async move {
///     let u = usage_of(s).await;
///     (u["open_streams"] == 0).then_some(u)
/// })
/// .await
/// .expect("every stream settled");
/// ```
pub async fn wait_for<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    f().await
}
