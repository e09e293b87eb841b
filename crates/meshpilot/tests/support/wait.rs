//! Bounded polling. Tests never sleep for a fixed time and never assert on timing: they wait,
//! up to a limit, for a condition, and fail naming what they waited for.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often conditions are re-checked.
pub const POLL: Duration = Duration::from_millis(25);

/// Polls `check` until it returns `Ok`, and returns that value. Panics after `timeout` naming
/// `what` and quoting the last `Err` that `check` returned (say *why* it is not there yet).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `check` until it returns true. Panics after `timeout` naming `what`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, timeout, || {
        let fut = check();
        async move {
            if fut.await {
                Ok(())
            } else {
                Err("condition false".to_string())
            }
        }
    })
    .await
}

/// Waits up to `timeout` until `get` (a request from a pod) answers with `status`; sidecars
/// may still be taking their config and certificates.
pub async fn eventually_status(
    what: &str,
    status: u16,
    timeout: std::time::Duration,
    get: impl Fn() -> Result<super::Response, String>,
) -> super::Response {
    eventually(what, timeout, || async {
        match get() {
            Ok(r) if r.status == status => Ok(r),
            Ok(r) => Err(format!("HTTP {} {:?} {}", r.status, r.headers, r.body)),
            Err(e) => Err(e),
        }
    })
    .await
}
