//! A streamed reply as its reader sees it. The call's pump (reading the provider's stream,
//! then settling) runs inside the reader's own polls, as a proxy's body would: no task of its
//! own and no channel between it and the response while the reader reads. A reader that goes
//! away hands the pump to a task of its own, which settles what was generated.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::knowledge::search::Passage;
use crate::llm::{LlmError, Usage};
use crate::Provider;

/// What a streamed reply yields.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    Text(String),
    Finish(String),
    /// The last event of a successful stream: the usage as recorded.
    Usage(Usage),
    /// Server-sent events to pass to the client as they are (a request made with
    /// [`super::Gateway::forward`]).
    Raw(bytes::Bytes),
}

type Item = Result<StreamEvent, LlmError>;
type Pump = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A streamed reply. Dropping it (the client went away, or pressed Stop) ends the provider call
/// and charges what was generated.
pub struct ChatStream {
    pub id: Uuid,
    pub model: String,
    pub provider: Provider,
    /// The passages an agent's reply is grounded in, in citation order (`[1]` first).
    pub sources: Vec<Passage>,
    events: Events,
}

enum Events {
    /// The pump, polled by the reader.
    Pumped(Pumped),
    /// From a task of its own (a reply given whole).
    Channel(mpsc::Receiver<Item>),
}

struct Pumped {
    /// `None` once it has finished.
    pump: Option<Pump>,
    outlet: Outlet,
    /// Where the pump goes on if the reader goes away first.
    runtime: tokio::runtime::Handle,
}

impl Drop for Pumped {
    fn drop(&mut self) {
        if let Some(pump) = self.pump.take() {
            // It learns that the reader went away at its next step, and settles.
            self.outlet.0.gone.store(true, Ordering::Release);
            self.runtime.spawn(pump);
        }
    }
}

/// Where the pump puts an event for the reader: one at a time, taken before the pump is
/// polled again.
#[derive(Clone, Default)]
pub(super) struct Outlet(Arc<Slot>);

#[derive(Default)]
struct Slot {
    event: Mutex<Option<Item>>,
    /// The reader went away.
    gone: AtomicBool,
}

/// The reader went away.
pub(super) struct Gone;

impl Outlet {
    /// Hands `event` to the reader; resolves once the reader has taken it and asked for more
    /// (or gone away after taking it). `Err` when the reader had gone away before.
    pub(super) async fn send(&self, event: Item) -> Result<(), Gone> {
        if self.is_gone() {
            return Err(Gone);
        }
        *self.0.event.lock().unwrap_or_else(|e| e.into_inner()) = Some(event);
        // The reader's poll takes the event and returns it; the pump goes on at its next poll.
        YieldOnce(false).await;
        Ok(())
    }

    /// Resolves once the reader has gone away. It needs no waker: the reader goes away only by
    /// dropping the stream, which hands the pump to a task that polls it at once.
    pub(super) fn gone(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |_| {
            if self.is_gone() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    fn is_gone(&self) -> bool {
        self.0.gone.load(Ordering::Acquire)
    }

    fn take(&self) -> Option<Item> {
        self.0
            .event
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// Pending once (without a wake: the reader polls again when it wants the next event), then
/// ready.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

impl ChatStream {
    /// A stream whose events `pump` hands to `outlet`. Must be made inside the runtime.
    pub(super) fn pumped(
        id: Uuid,
        model: String,
        provider: Provider,
        sources: Vec<Passage>,
        outlet: Outlet,
        pump: impl Future<Output = ()> + Send + 'static,
    ) -> ChatStream {
        ChatStream {
            id,
            model,
            provider,
            sources,
            events: Events::Pumped(Pumped {
                pump: Some(Box::pin(pump)),
                outlet,
                runtime: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// The same reply given whole: nothing is passed on until the provider has finished; then
    /// the text comes as one event (and a forwarded stream's events as one piece), followed by
    /// the closing events. Dropping it still ends the provider call at once.
    pub fn whole(self) -> ChatStream {
        let (tx, rx) = mpsc::channel(8);
        let ChatStream {
            id,
            model,
            provider,
            sources,
            events,
        } = self;
        tokio::spawn(gather(events, tx));
        ChatStream {
            id,
            model,
            provider,
            sources,
            events: Events::Channel(rx),
        }
    }
}

impl futures_util::Stream for ChatStream {
    type Item = Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.events.poll_next(cx)
    }
}

impl Events {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let p = match self {
            Events::Channel(rx) => return rx.poll_recv(cx),
            Events::Pumped(p) => p,
        };
        if let Some(event) = p.outlet.take() {
            return Poll::Ready(Some(event));
        }
        let Some(pump) = p.pump.as_mut() else {
            return Poll::Ready(None);
        };
        match pump.as_mut().poll(cx) {
            Poll::Ready(()) => {
                p.pump = None;
                Poll::Ready(p.outlet.take())
            }
            Poll::Pending => match p.outlet.take() {
                Some(event) => Poll::Ready(Some(event)),
                None => Poll::Pending,
            },
        }
    }
}

/// Collects a stream's events, joining neighbouring text and raw events, and sends them once
/// the stream has ended (or stops when the receiver goes away, which drops `events`: the call
/// is then settled as stopped).
async fn gather(mut events: Events, tx: mpsc::Sender<Item>) {
    let mut gathered: Vec<Item> = Vec::new();
    loop {
        let next = tokio::select! {
            next = std::future::poll_fn(|cx| events.poll_next(cx)) => next,
            _ = tx.closed() => return,
        };
        let Some(event) = next else { break };
        match (gathered.last_mut(), event) {
            (Some(Ok(StreamEvent::Text(all))), Ok(StreamEvent::Text(more))) => all.push_str(&more),
            (Some(Ok(StreamEvent::Raw(all))), Ok(StreamEvent::Raw(more))) => {
                let mut joined = bytes::BytesMut::from(&all[..]);
                joined.extend_from_slice(&more);
                *all = joined.freeze();
            }
            (_, event) => gathered.push(event),
        }
    }
    for event in gathered {
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::time::Duration;
    use tokio::sync::oneshot;

    fn stream_of(outlet: &Outlet, pump: impl Future<Output = ()> + Send + 'static) -> ChatStream {
        let outlet = outlet.clone();
        ChatStream::pumped(
            Uuid::nil(),
            "m".into(),
            Provider::OpenAi,
            vec![],
            outlet,
            pump,
        )
    }

    fn text(t: &str) -> Option<StreamEvent> {
        Some(StreamEvent::Text(t.into()))
    }

    #[tokio::test]
    async fn a_pumps_events_are_read_in_order_then_the_stream_ends() {
        let outlet = Outlet::default();
        let o = outlet.clone();
        let mut s = stream_of(&outlet, async move {
            for t in ["a", "b", "c"] {
                assert!(o.send(Ok(StreamEvent::Text(t.into()))).await.is_ok());
            }
        });
        let mut read = Vec::new();
        while let Some(event) = s.next().await {
            read.push(event.ok());
        }
        assert_eq!(read, [text("a"), text("b"), text("c")]);
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn a_pump_whose_reader_goes_away_goes_on_in_a_task_and_learns_of_it() {
        // Gone while the pump waits for its next event.
        let outlet = Outlet::default();
        let (sent_tx, sent_rx) = oneshot::channel();
        let o = outlet.clone();
        let mut s = stream_of(&outlet, async move {
            let mut sent = 0;
            while o
                .send(Ok(StreamEvent::Text(sent.to_string())))
                .await
                .is_ok()
            {
                sent += 1;
            }
            let _ = sent_tx.send(sent);
        });
        assert_eq!(s.next().await.map(Result::ok), Some(text("0")));
        assert_eq!(s.next().await.map(Result::ok), Some(text("1")));
        drop(s);
        // Both events were taken; the third found the reader gone.
        assert_eq!(sent_rx.await, Ok(2));

        // Gone while the pump waits for something else (the provider).
        let outlet = Outlet::default();
        let (done_tx, done_rx) = oneshot::channel();
        let o = outlet.clone();
        let mut s = stream_of(&outlet, async move {
            assert!(o.send(Ok(StreamEvent::Text("a".into()))).await.is_ok());
            tokio::select! {
                () = o.gone() => {}
                () = std::future::pending() => {}
            }
            let _ = done_tx.send(());
        });
        assert_eq!(s.next().await.map(Result::ok), Some(text("a")));
        let waiting = tokio::time::timeout(Duration::from_millis(20), s.next()).await;
        assert!(waiting.is_err(), "the pump waits");
        drop(s);
        assert_eq!(done_rx.await, Ok(()));

        // Gone before it was read at all: the pump still runs, and finds the reader gone.
        let outlet = Outlet::default();
        let (refused_tx, refused_rx) = oneshot::channel();
        let o = outlet.clone();
        let s = stream_of(&outlet, async move {
            let refused = o.send(Ok(StreamEvent::Text("a".into()))).await.is_err();
            let _ = refused_tx.send(refused);
        });
        drop(s);
        assert_eq!(refused_rx.await, Ok(true));
    }

    #[tokio::test]
    async fn a_whole_stream_gives_its_events_joined_at_the_end() {
        let outlet = Outlet::default();
        let o = outlet.clone();
        let s = stream_of(&outlet, async move {
            for t in ["a", "b"] {
                assert!(o.send(Ok(StreamEvent::Text(t.into()))).await.is_ok());
            }
            let usage = Usage {
                prompt_tokens: 1,
                completion_tokens: 2,
                ..Usage::default()
            };
            assert!(o.send(Ok(StreamEvent::Usage(usage))).await.is_ok());
        });
        let read: Vec<_> = s.whole().map(Result::ok).collect().await;
        assert_eq!(read.len(), 2);
        assert_eq!(read[0], text("ab"));
        assert!(matches!(read[1], Some(StreamEvent::Usage(_))));
    }
}
