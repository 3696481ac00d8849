//! The stream driver: an upstream body through the SSE parser and a provider's mapper into
//! normalised events, as one poll-based stream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use eventsource_stream::EventStreamError;
use futures::Stream;

use crate::error::TimeoutPhase;
use crate::provider::{EventStream, Provider, StreamMapper};
use crate::sse::{self, ReadError};
use crate::{AdapterError, StreamEvent};

/// The SSE parser and the mapper as one poll-based stream: a frame's wake-up polls the parser
/// once and maps what it gives, with no `async` state machine around it. The mapper reads each
/// event's type and data where the parser has them (in the upstream's read, for simple reads).
struct Driver<R> {
    parser: sse::Parser<R>,
    mapper: Box<dyn StreamMapper>,
    /// Mapped events not yet handed out; reused for the whole stream.
    out: VecDeque<StreamEvent>,
    completed_at_eof: Arc<AtomicBool>,
    provider: Provider,
    /// A failure to report once the events mapped before it are delivered.
    failed: Option<AdapterError>,
    done: bool,
}

/// Runs the SSE parser and the mapper, yielding normalised events one by one.
pub(crate) fn drive<B>(
    body: B,
    idle: Duration,
    mapper: Box<dyn StreamMapper>,
    provider: Provider,
) -> EventStream
where
    B: Stream<Item = reqwest::Result<bytes::Bytes>> + Send + Unpin + 'static,
{
    let flag = Arc::new(AtomicBool::new(false));
    Box::pin(Driver {
        parser: sse::parser(body, idle, flag.clone()),
        mapper,
        out: VecDeque::with_capacity(4),
        completed_at_eof: flag,
        provider,
        failed: None,
        done: false,
    })
}

impl<R> Stream for Driver<R>
where
    R: Stream<Item = Result<bytes::Bytes, ReadError>> + Unpin,
{
    type Item = Result<StreamEvent, AdapterError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let d = &mut *self;
        loop {
            if let Some(ev) = d.out.pop_front() {
                return Poll::Ready(Some(Ok(ev)));
            }
            if let Some(e) = d.failed.take() {
                return Poll::Ready(Some(Err(e)));
            }
            if d.done {
                return Poll::Ready(None);
            }
            let (mapper, out) = (&mut d.mapper, &mut d.out);
            let next = ready!(d
                .parser
                .poll_event(cx, |event, data| mapper.on_event(event, data, out)));
            let failure = match next {
                Some(Ok(mapped)) => match mapped {
                    Ok(false) => None,
                    Ok(true) => {
                        d.done = true;
                        d.mapper.on_end(&mut d.out).err()
                    }
                    // The half-written event Sluice completed at end of input: the connection
                    // was cut in the middle of an event.
                    Err(AdapterError::Protocol(_))
                        if d.completed_at_eof.load(Ordering::Relaxed) =>
                    {
                        Some(AdapterError::Truncated(
                            "the upstream closed the connection in the middle of an event".into(),
                        ))
                    }
                    Err(e) => Some(d.provider.scrub(e)),
                },
                Some(Err(EventStreamError::Transport(ReadError::Idle))) => {
                    Some(d.provider.timeout(TimeoutPhase::Idle))
                }
                Some(Err(EventStreamError::Transport(ReadError::Io(e)))) => {
                    Some(AdapterError::Truncated(format!(
                        "the upstream connection failed mid-stream: {e}"
                    )))
                }
                Some(Err(e)) => Some(AdapterError::Protocol(e.to_string())),
                None => {
                    d.done = true;
                    d.mapper.on_end(&mut d.out).err()
                }
            };
            if let Some(e) = failure {
                // Events already mapped are delivered first, then the error, then the end.
                d.done = true;
                d.failed = Some(e);
            }
        }
    }
}
