//! Streams copied from another process: a [`Follower`] reads a stream's log from a position
//! (without counting as one of its readers) and yields each event in a compact serialized form;
//! [`Writer::append_replica`] appends such an event, verbatim, to a replica made by
//! [`crate::Registry::create_replica`]. A replica's readers are ordinary readers, so they get
//! the same bytes, in both formats, as readers of the original.
//!
//! The relay knows nothing of how the entries travel (the gateway carries them through Redis).

use std::sync::Arc;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::event::{Delta, Done, Event, EventRef, Failure, ToolCall, Usage};
use crate::log::Cursor;
use crate::shared::Shared;
use crate::Writer;

/// One event as it travels to a replica. The first event also carries the OpenAI chunk head,
/// which the original fixed when its first event came.
#[derive(Debug, Serialize, Deserialize)]
struct Entry<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    h: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    e: Wire<'a>,
}

/// Externally tagged (`{"d":{...}}`): serde buffers internally tagged enums, which would lose
/// the borrowed text and raw logprobs.
#[derive(Debug, Serialize, Deserialize)]
enum Wire<'a> {
    #[serde(rename = "d")]
    Delta {
        #[serde(default, skip_serializing_if = "is_zero")]
        c: u32,
        #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
        t: Option<std::borrow::Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
        r: Option<std::borrow::Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
        x: Option<std::borrow::Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tc: Vec<WireCall>,
        #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
        lp: Option<&'a RawValue>,
        /// A thinking signature.
        #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
        s: Option<std::borrow::Cow<'a, str>>,
    },
    #[serde(rename = "done")]
    Done {
        f: Vec<(u32, String)>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        u: Option<Usage>,
    },
    #[serde(rename = "failed")]
    Failed {
        m: String,
        t: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        c: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        f: Vec<(u32, String)>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct WireCall {
    i: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why a replica entry was not appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    #[error("replica entry {got} does not follow event {have}")]
    Gap { have: u64, got: u64 },
    #[error("bad replica entry: {0}")]
    Decode(String),
    #[error("the replica has ended")]
    Ended,
}

/// `event` (the log's event `id`) as a replica entry; `head` goes with the first.
fn encode(id: u64, event: EventRef<'_>, head: &str) -> String {
    let e = match event {
        EventRef::Delta(d) => Wire::Delta {
            c: d.choice,
            t: d.content.map(Into::into),
            r: d.reasoning.map(Into::into),
            x: d.refusal.map(Into::into),
            tc: d
                .tool_calls
                .iter()
                .map(|c| WireCall {
                    i: c.index,
                    id: c.id.clone(),
                    n: c.name.clone(),
                    a: c.arguments.clone(),
                })
                .collect(),
            lp: d.logprobs,
            s: d.signature.map(Into::into),
        },
        EventRef::Done(d) => Wire::Done {
            f: d.finish_reasons.clone(),
            u: d.usage,
        },
        EventRef::Failed(f) => Wire::Failed {
            m: f.message.clone(),
            t: f.kind.clone(),
            c: f.code.clone(),
            f: f.finish_reasons.clone(),
        },
    };
    let entry = Entry {
        h: (id == 1).then(|| head.into()),
        e,
    };
    // Only strings, numbers and raw JSON: serialising cannot fail.
    serde_json::to_string(&entry).unwrap_or_default()
}

/// Reads a stream's log for a replica: every event from a position on, as replica entries. Not
/// counted as a reader (the grace period ignores it).
#[derive(Debug)]
pub struct Follower {
    shared: Arc<Shared>,
    at: Cursor,
    ended: bool,
}

impl Follower {
    pub(crate) fn new(shared: Arc<Shared>, after: u64) -> Self {
        let at = shared.read().cursor(after);
        Self {
            shared,
            at,
            ended: false,
        }
    }

    /// The id of the last event taken.
    pub fn position(&self) -> u64 {
        self.at.id
    }

    /// Waits for events past the position, then takes up to `max` of them, as `(id, entry)`
    /// into `out`; false (and nothing taken) after the terminal event.
    pub async fn next_batch(&mut self, max: usize, out: &mut Vec<(u64, String)>) -> bool {
        std::future::poll_fn(|cx| self.poll_batch(cx, max, out)).await
    }

    fn poll_batch(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        out: &mut Vec<(u64, String)>,
    ) -> Poll<bool> {
        loop {
            if self.ended {
                return Poll::Ready(false);
            }
            {
                let log = self.shared.read();
                let head = log.chunk_head();
                let mut n = 0;
                while n < max {
                    let Some(e) = log.next(&mut self.at) else {
                        break;
                    };
                    out.push((self.at.id, encode(self.at.id, e, head)));
                    n += 1;
                    if e.is_terminal() {
                        self.ended = true;
                        break;
                    }
                }
                if n > 0 {
                    return Poll::Ready(true);
                }
                if log.terminal().is_some() || self.shared.is_discarded() {
                    self.ended = true;
                    return Poll::Ready(false);
                }
            }
            if self.shared.wait(self.at.id, cx.waker()) {
                return Poll::Pending;
            }
        }
    }
}

impl Writer {
    /// Appends a replica entry for event `id`: entries already appended are skipped (`Ok(false)`),
    /// a gap is an error. Returns `Ok(true)` when appended; a terminal entry ends the replica.
    pub fn append_replica(&mut self, id: u64, entry: &str) -> Result<bool, ReplicaError> {
        let have = self.last_id();
        if id <= have {
            return Ok(false);
        }
        if self.is_ended() {
            return Err(ReplicaError::Ended);
        }
        if id != have + 1 {
            return Err(ReplicaError::Gap { have, got: id });
        }
        let entry: Entry<'_> =
            serde_json::from_str(entry).map_err(|e| ReplicaError::Decode(e.to_string()))?;
        if let Some(h) = entry.h {
            self.set_chunk_head(&h);
        }
        match entry.e {
            Wire::Delta {
                c,
                t,
                r,
                x,
                tc,
                lp,
                s,
            } => {
                self.push_delta(Delta {
                    choice: c,
                    content: t.map(Into::into),
                    reasoning: r.map(Into::into),
                    refusal: x.map(Into::into),
                    tool_calls: tc
                        .into_iter()
                        .map(|c| ToolCall {
                            index: c.i,
                            id: c.id,
                            name: c.n,
                            arguments: c.a,
                        })
                        .collect(),
                    logprobs: lp.map(ToOwned::to_owned),
                    signature: s.map(Into::into),
                    first: false,
                });
            }
            Wire::Done { f, u } => self.end_with(Event::Done(Done {
                finish_reasons: f,
                usage: u,
            })),
            Wire::Failed { m, t, c, f } => self.end_with(Event::Failed(Failure {
                message: m,
                kind: t,
                code: c,
                finish_reasons: f,
            })),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, Limits, Meta, Registry, StreamId};

    fn drain(r: &mut crate::Reader) -> Vec<u8> {
        let mut out = Vec::new();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        while let Poll::Ready(Some(b)) = r.poll_chunk(&mut cx) {
            out.extend_from_slice(&b);
        }
        out
    }

    #[tokio::test]
    async fn a_replica_reads_byte_identical_in_both_formats() {
        let r = Registry::new(Limits::default());
        let mut w = r
            .create(
                Meta {
                    id: "chatcmpl-x".into(),
                    model: "m".into(),
                    created: 5,
                    system_fingerprint: Some("fp".into()),
                },
                true,
            )
            .unwrap();
        let h = w.handle();
        w.push_delta(Delta::text(0, "Hel\"lo"));
        w.push_delta(Delta {
            reasoning: Some("hmm".into()),
            ..Delta::default()
        });
        w.push_delta(Delta {
            signature: Some("EqQB\"sig".into()),
            ..Delta::default()
        });
        w.push_delta(Delta {
            choice: 1,
            tool_calls: vec![ToolCall {
                index: 0,
                id: Some("c1".into()),
                name: Some("f".into()),
                arguments: Some("{\"a\":".into()),
            }],
            logprobs: Some(RawValue::from_string("{\"content\":[]}".into()).unwrap()),
            ..Delta::default()
        });
        w.record_finish(0, "stop");
        w.record_usage(Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
            total_tokens: 7,
            ..Usage::default()
        });
        w.finish();

        let other = Registry::new(Limits::default());
        let id = StreamId::random();
        let mut rw = other.create_replica(id, true, Some("t".into())).unwrap();
        let mut f = h.follow(0);
        let mut out = Vec::new();
        while f.next_batch(2, &mut out).await {}
        assert_eq!(out.len(), 5);
        assert!(out[2].1.contains("\"s\":\"EqQB\\\"sig\""), "{}", out[2].1);
        // Replayed entries are skipped; a gap is refused.
        assert_eq!(rw.append_replica(1, &out[0].1), Ok(true));
        assert_eq!(rw.append_replica(1, &out[0].1), Ok(false));
        assert!(matches!(
            rw.append_replica(3, &out[2].1),
            Err(ReplicaError::Gap { .. })
        ));
        for (i, e) in &out[1..] {
            assert_eq!(rw.append_replica(*i, e), Ok(true));
        }
        let rh = other.get(id.as_str()).unwrap();
        assert_eq!(rh.owner(), Some("t"));
        assert!(rh.is_replica() && !h.is_replica());
        let mut a = h.reader(Format::Browser);
        let mut b = rh.reader(Format::Browser);
        for _ in 0..out.len() {
            let (a, b) = (a.next_event().await.unwrap(), b.next_event().await.unwrap());
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }
        for format in [Format::Browser, Format::OpenAi] {
            for after in 0..h.last_event_id(format) {
                let a = drain(&mut h.subscribe(after, format).unwrap());
                let b = drain(&mut rh.subscribe(after, format).unwrap());
                assert_eq!(
                    String::from_utf8_lossy(&a),
                    String::from_utf8_lossy(&b),
                    "{format:?} after {after}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_follower_is_not_a_reader_and_waits_for_events() {
        let r = Registry::new(Limits::default());
        let mut w = r.create(Meta::default(), false).unwrap();
        let mut f = w.handle().follow(0);
        assert_eq!(w.handle().reader_count(), 0);
        let task = tokio::spawn(async move {
            let mut out = Vec::new();
            while f.next_batch(64, &mut out).await {}
            out
        });
        tokio::task::yield_now().await;
        w.push_delta(Delta::text(0, "a"));
        w.fail(Failure {
            message: "m".into(),
            kind: "k".into(),
            ..Failure::default()
        });
        let out = task.await.unwrap();
        assert_eq!(out.len(), 2);
        assert!(out[0].1.contains("\"h\""), "{}", out[0].1);
        assert!(out[1].1.contains("failed"), "{}", out[1].1);
    }
}
