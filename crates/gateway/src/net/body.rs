//! The bodies around each request and response: a request body with a deadline for all of
//! it, and a response body that tells the connection's bookkeeping when it is done.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;

/// When a request's head arrived (put into its extensions by the server): time to first token
/// is measured from here.
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub std::time::Instant);

/// A response body that marks its request finished when it is done with (sent or dropped), so
/// the connection counts as idle again (see `super::connections`).
pub(super) struct Tracked {
    pub(super) body: axum::body::Body,
    pub(super) _in_flight: super::connections::InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A request body with a deadline for all of it (`SLUICE_BODY_READ_TIMEOUT_SECS`, from the end
/// of the head), whose connection counts as idle until it has arrived: a client trickling a
/// body neither holds a connection past the deadline nor keeps the connection cap from closing
/// it to make room. Once the body is complete it is a plain body.
pub(super) struct TimedBody {
    inner: Incoming,
    /// Both `None` once the body has arrived (or failed).
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    awaiting: Option<super::connections::AwaitingBody>,
}

/// The error a [`TimedBody`] ends with when its deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

/// Whether a body rejection is a [`TimedBody`]'s deadline (wrapped by axum's body limit and
/// rejection types).
pub fn is_body_timeout(rej: &axum::extract::rejection::BytesRejection) -> bool {
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(rej);
    while let Some(err) = e {
        if err.is::<BodyTimeout>() {
            return true;
        }
        e = err.source();
    }
    false
}

impl TimedBody {
    pub(super) fn new(
        inner: Incoming,
        timeout: Duration,
        activity: &Arc<super::connections::Activity>,
    ) -> Self {
        use hyper::body::Body as _;
        if inner.is_end_stream() {
            return Self {
                inner,
                deadline: None,
                awaiting: None,
            };
        }
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            awaiting: Some(activity.awaiting_body()),
        }
    }

    fn arrived(&mut self) {
        self.deadline = None;
        self.awaiting = None;
    }
}

impl hyper::body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match polled {
            Poll::Ready(None) => this.arrived(),
            Poll::Ready(Some(Err(_))) => this.arrived(),
            Poll::Ready(Some(Ok(_))) => {
                if hyper::body::Body::is_end_stream(&this.inner) {
                    this.arrived();
                }
            }
            Poll::Pending => {
                if let Some(d) = this.deadline.as_mut() {
                    if d.as_mut().poll(cx).is_ready() {
                        this.arrived();
                        return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                    }
                }
                return Poll::Pending;
            }
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
