//! A call after its provider answered: reading the reply (whole or streamed), and settling the
//! reservation with the usage, so the ledger gets one event per call.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use uuid::Uuid;

use bytes::Bytes;

use super::lookups::Chosen;
use super::send::release;
use super::stream::Outlet;
use super::{Caller, ChatStream, Completion, Gateway, StreamEvent};
use crate::knowledge::search::Passage;
use crate::llm::anthropic::{self, StreamTranslator, Translation};
use crate::llm::body::Body;
use crate::llm::tokens::{count_tokens, message_tokens};
use crate::llm::wire::{self, Piece, Reply};
use crate::llm::{ChatMessage, LlmError, Usage};
use crate::metering::{CallKind, Held, Prices, UsageEvent};
use crate::Provider;

impl Gateway {
    pub(super) async fn prices(&self) -> &Prices {
        self.prices
            .get_or_init(|| async {
                Prices::load(&self.db).await.unwrap_or_else(|e| {
                    tracing::error!(error = ?e, "model prices could not be read; costs will show as 0");
                    Prices::default()
                })
            })
            .await
    }
}

/// What the client gets back.
pub(super) enum Mode {
    /// Tessera's chat: text events.
    Typed,
    /// The provider's own format, forwarded as it came; `hide_usage`: the client did not ask
    /// for OpenAI's usage chunk (the gateway always does).
    Raw { hide_usage: bool },
    /// OpenAI's Responses API, forwarded as it came (its usage is always in the reply).
    Responses,
    /// OpenAI's format translated from Anthropic's.
    Translated {
        translation: Translation,
        include_usage: bool,
    },
}

/// The prompt, for counting it when the provider reports no usage.
pub(super) enum Prompt {
    Messages(Vec<ChatMessage>),
    /// The body as the client sent it, whose messages' JSON text is counted (over-counting
    /// by its punctuation), and the prompt's upper bound, which caps the count (images are
    /// counted by their text otherwise).
    Json {
        body: Body,
        bound: i64,
    },
}

/// One call in progress, after the provider answered.
pub(super) struct Call {
    pub gateway: Gateway,
    pub caller: Caller,
    pub agent: Option<Uuid>,
    pub chosen: Chosen,
    pub model: String,
    pub prompt: Prompt,
    pub mode: Mode,
    /// Seconds since the epoch when the call was made (OpenAI's `created`).
    pub created: u64,
    /// The reply limit the call was made with.
    pub max_tokens: i64,
    pub reservation: Held,
    pub started: Instant,
    /// The passages the call is grounded in.
    pub sources: Vec<Passage>,
    /// The clinic's plan (for the metrics).
    pub plan: crate::PlanId,
    /// Time the gateway spent before calling the provider.
    pub before_provider: Duration,
}

/// What reading a provider's stream came to.
#[derive(Default)]
struct Read {
    /// Everything generated (reply text, tool calls, other choices), for counting.
    text: String,
    /// Whether any reply text reached the client.
    delivered: bool,
    /// The provider's closing events, held back until the call is settled.
    held: Vec<Bytes>,
    translator: Option<StreamTranslator>,
    usage: Option<Usage>,
    /// The provider sent a finish reason.
    finished: bool,
    /// The provider sent its end-of-stream marker.
    done: bool,
    /// The caller went away (or pressed Stop).
    cancelled: bool,
    failure: Option<LlmError>,
    /// Chunks forwarded without being read ([`wire::plain_openai_delta`],
    /// [`wire::passing_responses_event`]): their text is read only when it must be counted, or
    /// when they grow past [`UNREAD_LIMIT`].
    unread: Vec<Unread>,
    unread_bytes: usize,
}

/// Chunks forwarded unread.
enum Unread {
    /// One chunk's data.
    Data(String),
    /// Whole events as they came ([`wire::plain_openai_frame`]).
    Events(Bytes),
    /// A Responses API event ([`wire::passing_responses_event`]).
    Responses(wire::SseEvent),
}

/// The most bytes of forwarded chunks a stream keeps unread.
const UNREAD_LIMIT: usize = 64 << 10;

impl Read {
    /// Takes in a piece of the reply: its text (to count), its finish, usage, end or error.
    fn take(
        &mut self,
        piece: Piece,
        provider_error: impl FnOnce(&str) -> LlmError,
    ) -> Option<Piece> {
        match piece {
            Piece::Text(t) => {
                self.text.push_str(&t);
                self.delivered = true;
                Some(Piece::Text(t))
            }
            Piece::Unseen(t) => {
                self.text.push_str(&t);
                None
            }
            Piece::Finish(r) => {
                self.finished = true;
                Some(Piece::Finish(r))
            }
            Piece::Usage(u) => {
                self.usage = Some(wire::merge_usage(self.usage, u));
                None
            }
            Piece::Done => {
                self.done = true;
                None
            }
            Piece::Error(message) => {
                self.failure = Some(provider_error(&message));
                None
            }
        }
    }

    /// Reads the chunks forwarded unread, so that [`Self::text`] holds everything generated
    /// (in another order than it came, which counting does not mind).
    fn catch_up(&mut self, provider: Provider, provider_error: impl Fn(&str) -> LlmError) {
        let mut pieces = Vec::new();
        for unread in std::mem::take(&mut self.unread) {
            match unread {
                Unread::Data(data) => {
                    let event = wire::SseEvent { event: None, data };
                    wire::parse_event(provider, &event, &mut pieces);
                }
                Unread::Events(bytes) => {
                    for event in wire::sse_events(&String::from_utf8_lossy(&bytes)) {
                        wire::parse_event(provider, &event, &mut pieces);
                    }
                }
                Unread::Responses(event) => wire::parse_responses_event(&event, &mut pieces),
            }
        }
        self.unread_bytes = 0;
        for piece in pieces {
            self.take(piece, &provider_error);
        }
    }
}

impl Call {
    fn event(&self, usage: Usage, streamed: bool, cancelled: bool, cost: i64) -> UsageEvent {
        UsageEvent {
            id: self.reservation.reservation().id,
            tenant: self.caller.tenant,
            user: self.caller.user,
            api_key: self.caller.api_key,
            agent: self.agent,
            provider: self.chosen.provider,
            model: self.model.clone(),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens,
            cost_micro_usd: cost,
            latency_ms: self.started.elapsed().as_millis().min(i32::MAX as u128) as i32,
            estimated: usage.estimated,
            streamed,
            cancelled,
            idempotency_key: self.reservation.reservation().id.to_string(),
            occurred_at_ms: (self
                .reservation
                .reservation()
                .started_at
                .unix_timestamp_nanos()
                / 1_000_000) as i64,
            kind: CallKind::Chat,
        }
    }

    /// Usage as the provider reported it, trusted only within what the call could have used:
    /// no count below zero, cached tokens within the prompt, and no more in all than the
    /// reservation (the call's worst case) plus a margin for the providers' own counting.
    /// Anything else (a broken or lying endpoint) is charged at the reservation, and logged.
    fn checked(&self, usage: Usage) -> Usage {
        let reserved = self.reservation.reservation().amount;
        let margin = reserved / 10 + 64;
        let plausible = usage.prompt_tokens >= 0
            && usage.completion_tokens >= 0
            && (0..=usage.prompt_tokens).contains(&usage.cached_tokens)
            && usage
                .prompt_tokens
                .checked_add(usage.completion_tokens)
                .is_some_and(|total| total <= reserved.saturating_add(margin));
        if plausible {
            return usage;
        }
        tracing::warn!(
            tenant = %self.caller.tenant,
            provider = self.chosen.provider.as_str(),
            ?usage,
            reserved,
            "implausible usage from the provider; charged at the reservation"
        );
        Usage {
            prompt_tokens: (reserved - self.max_tokens).max(0),
            completion_tokens: self.max_tokens.min(reserved),
            cached_tokens: 0,
            estimated: true,
        }
    }

    /// The usage checked, and the call's event with its cost (counted in the metrics).
    async fn charge(&self, usage: Usage, streamed: bool, cancelled: bool) -> (Usage, UsageEvent) {
        let usage = self.checked(usage);
        let cost = self.gateway.prices().await.cost(
            &self.model,
            usage.prompt_tokens,
            usage.completion_tokens,
        );
        crate::observe::settled(
            self.plan,
            usage.prompt_tokens,
            usage.completion_tokens,
            cost,
        );
        (usage, self.event(usage, streamed, cancelled, cost))
    }

    /// Settles the reservation with `usage` (checked first). The usage is never lost: when
    /// Redis cannot be reached it goes straight to the ledger (see [`crate::metering::Held::settle_durably`]).
    async fn settle(self, usage: Usage, streamed: bool, cancelled: bool) -> Usage {
        let settling = Instant::now();
        let (usage, event) = self.charge(usage, streamed, cancelled).await;
        self.reservation.settle_durably(&event).await;
        crate::observe::gateway_overhead(
            if streamed { "stream" } else { "json" },
            self.before_provider + settling.elapsed(),
        );
        usage
    }

    /// Settles like [`Self::settle`] without waiting for Redis: for a call whose client reads
    /// the provider's usage from the reply itself (the API), the settle is queued here and
    /// goes to Redis with others' while the reply is on its way (see
    /// [`crate::metering::Held::settle_soon`]). Tessera's chat waits, since its usage is shown
    /// with the reply.
    async fn settle_soon(self, usage: Usage, streamed: bool, cancelled: bool) -> Usage {
        if matches!(self.mode, Mode::Typed) {
            // Boxed: inline, the wait would make the future of every API call as large.
            return Box::pin(self.settle(usage, streamed, cancelled)).await;
        }
        let settling = Instant::now();
        let (usage, event) = self.charge(usage, streamed, cancelled).await;
        self.reservation.settle_soon(event);
        crate::observe::gateway_overhead(
            if streamed { "stream" } else { "json" },
            self.before_provider + settling.elapsed(),
        );
        usage
    }

    /// The usage when the provider reported none (or only part): the prompt as the provider
    /// counted it if it did, else counted here, and the completion counted here; marked as
    /// counted by Tessera.
    fn count(&self, completion: &str, known: Option<Usage>) -> Usage {
        let prompt = known
            .map(|u| u.prompt_tokens)
            .filter(|p| *p > 0)
            .unwrap_or_else(|| match &self.prompt {
                Prompt::Messages(messages) => messages.iter().map(message_tokens).sum::<i64>() + 3,
                // Long texts (images, audio) are not worth tokenizing: the bound stands.
                Prompt::Json { body, bound } => match body.raw("messages").or(body.raw("input")) {
                    Some(text) if text.len() <= 256 << 10 => count_tokens(text).min(*bound),
                    Some(_) => *bound,
                    None => 0,
                },
            });
        Usage {
            prompt_tokens: prompt,
            completion_tokens: count_tokens(completion),
            cached_tokens: known.map(|u| u.cached_tokens.max(0)).unwrap_or(0),
            estimated: true,
        }
    }

    pub async fn complete(self, response: crate::egress::Response) -> Result<Completion, LlmError> {
        let timeout = Duration::from_secs(self.gateway.config.provider_timeout_secs);
        let provider = self.chosen.provider;
        let read = tokio::time::timeout(timeout, wire::read_limited(response, wire::REPLY_LIMIT));
        let bytes = match read.await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => {
                release(self.reservation).await;
                return Err(LlmError::malformed(provider));
            }
            Err(_) => {
                release(self.reservation).await;
                return Err(LlmError::timeout(provider, timeout));
            }
        };
        // An OpenAI-format reply forwarded as it came is read without building a tree, and
        // only for its usage when the provider reported it (its client reads the bytes).
        let fast = matches!(self.mode, Mode::Raw { .. }) && provider != Provider::Anthropic;
        // A Responses API reply that reported its usage likewise.
        let responses_usage = matches!(self.mode, Mode::Responses)
            .then(|| wire::responses_reply_usage(&bytes))
            .flatten();
        let (reply, unseen, tree) = if fast {
            match wire::read_openai_reply(&bytes) {
                Some((reply, unseen)) => (reply, unseen, None),
                None => {
                    release(self.reservation).await;
                    return Err(LlmError::malformed(provider));
                }
            }
        } else if let Some(usage) = responses_usage {
            let reply = Reply {
                text: String::new(),
                finish_reason: String::new(),
                usage: Some(usage),
            };
            (reply, String::new(), None)
        } else {
            let tree: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
            let reply = tree.as_ref().and_then(|t| match self.mode {
                Mode::Responses => wire::parse_responses_reply(t),
                _ => wire::parse_reply(provider, t),
            });
            match reply {
                Some(reply) => (reply, String::new(), tree),
                None => {
                    release(self.reservation).await;
                    return Err(LlmError::malformed(provider));
                }
            }
        };
        let usage = match reply.usage {
            Some(u) => u,
            None => self.count(&format!("{}{unseen}", reply.text), None),
        };
        let id = self.reservation.reservation().id;
        let model = self.model.clone();
        let sources = self.sources.clone();
        let created = self.created;
        let translation = match &self.mode {
            Mode::Translated { translation, .. } => Some(translation.clone()),
            _ => None,
        };
        let raw = matches!(self.mode, Mode::Raw { .. } | Mode::Responses);
        let usage = self.settle_soon(usage, false, false).await;
        let body = match (translation, tree) {
            (Some(t), Some(tree)) => Some(Bytes::from(
                serde_json::to_vec(&anthropic::reply(&tree, &t, &usage, created))
                    .map_err(LlmError::internal)?,
            )),
            _ if raw => Some(Bytes::from(bytes)),
            _ => None,
        };
        Ok(Completion {
            id,
            model,
            provider,
            content: reply.text,
            finish_reason: reply.finish_reason,
            usage,
            sources,
            body,
        })
    }

    pub fn stream(self, response: crate::egress::Response) -> ChatStream {
        let outlet = Outlet::default();
        ChatStream::pumped(
            self.reservation.reservation().id,
            self.model.clone(),
            self.chosen.provider,
            self.sources.clone(),
            outlet.clone(),
            self.pump(response, outlet),
        )
    }

    /// Forwards the provider's stream, then settles: the provider's usage on success (counted
    /// here and marked if it sent none); what was generated if the client went away (the
    /// provider's count when it sent one, else the text counted); what was delivered if the
    /// provider failed part-way; nothing if it failed before any text.
    async fn pump(self, response: crate::egress::Response, tx: Outlet) {
        let provider = self.chosen.provider;
        let mut read = self.read(response, &tx).await;
        let reported = read
            .usage
            .is_some_and(|u| u.prompt_tokens > 0 || u.completion_tokens > 0);
        if read.cancelled || read.failure.is_some() || !(read.done || read.finished) || !reported {
            // What was generated may have to be counted: every chunk's text is read.
            read.catch_up(provider, |m| self.provider_error(m));
        }
        if read.cancelled {
            // Stopped by the caller: charge what was generated.
            let complete_usage = read
                .usage
                .filter(|u| read.finished && u.completion_tokens > 0);
            let charged = complete_usage.unwrap_or_else(|| self.count(&read.text, read.usage));
            Box::pin(self.settle(charged, true, true)).await;
            return;
        }
        if read.failure.is_none() && !(read.done || read.finished) {
            read.failure = Some(LlmError::interrupted(provider));
        }
        if let Some(err) = read.failure {
            if read.text.is_empty() && !read.delivered {
                // Nothing reached the client: not charged.
                release(self.reservation).await;
            } else {
                // What reached the client was generated for it: charged, as counted here.
                let delivered = self.count(&read.text, read.usage);
                Box::pin(self.settle(delivered, true, false)).await;
            }
            let _ = tx.send(Err(err)).await;
            return;
        }
        let usage = match read.usage {
            Some(u) if u.prompt_tokens > 0 || u.completion_tokens > 0 => u,
            // The provider reported nothing: count, and say so.
            known => self.count(&read.text, known),
        };
        let usage = self.settle_soon(usage, true, false).await;
        // The end reaches the client once the call is settled (or, through the API, its settle
        // queued).
        for bytes in read.held {
            if tx.send(Ok(StreamEvent::Raw(bytes))).await.is_err() {
                return;
            }
        }
        if let Some(mut translator) = read.translator {
            for bytes in translator.event(r#"{"type":"message_stop"}"#, Some(usage)) {
                if tx
                    .send(Ok(StreamEvent::Raw(Bytes::from(bytes))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        let _ = tx.send(Ok(StreamEvent::Usage(usage))).await;
    }

    /// Reads the provider's stream until it ends, fails, goes quiet for the provider timeout,
    /// or the client goes away, forwarding text and finish reasons as they come.
    async fn read(&self, response: crate::egress::Response, tx: &Outlet) -> Read {
        let provider = self.chosen.provider;
        let idle = Duration::from_secs(self.gateway.config.provider_timeout_secs);
        let mut body = http_body_util::BodyDataStream::new(response.into_body());
        let mut parser = match self.mode {
            // Its closing events carry the whole response (and echo its instructions).
            Mode::Responses => wire::SseParser::with_limit(wire::REPLY_LIMIT),
            _ => wire::SseParser::default(),
        };
        let mut pieces = Vec::new();
        let mut read = Read::default();
        // OpenAI's chunks forwarded as they came need not be read as they pass.
        let unread_ok = matches!(self.mode, Mode::Raw { .. }) && provider != Provider::Anthropic;
        if let Mode::Translated {
            translation,
            include_usage,
        } = &self.mode
        {
            read.translator = Some(StreamTranslator::new(
                &self.model,
                self.created,
                *include_usage,
                translation.clone(),
            ));
        }
        // Tokio's clock (the timer's), not the system's.
        use tokio::time::Instant;
        let extend_every = self.gateway.metering.reservation_ttl / 3;
        let mut extended = Instant::now();
        // One timer for the whole stream, not one per chunk: each wait for the provider notes
        // when it began, and when the timer fires it is set again for that wait's end unless
        // the provider really has been quiet for `idle`.
        let quiet = tokio::time::sleep(idle);
        tokio::pin!(quiet);
        loop {
            let mut now = Instant::now();
            if now.duration_since(extended) >= extend_every {
                // A long stream keeps its reservation: it must not expire and be handed out
                // again while this call can still spend it.
                if let Err(e) = self.reservation.extend().await {
                    tracing::warn!(error = ?e, "could not extend a stream's reservation");
                }
                extended = Instant::now();
                now = extended;
            }
            let next = loop {
                tokio::select! {
                    () = tx.gone() => { read.cancelled = true; return read; }
                    () = &mut quiet => {
                        let deadline = now + idle;
                        if Instant::now() < deadline {
                            quiet.as_mut().reset(deadline);
                            continue;
                        }
                        break None;
                    }
                    next = body.next() => break Some(next),
                }
            };
            let bytes = match next {
                None => {
                    read.failure = Some(LlmError::timeout(provider, idle));
                    return read;
                }
                Some(None) => return read,
                Some(Some(Err(e))) => {
                    tracing::warn!(error = %crate::egress::Chain(&e), "provider stream broke");
                    read.failure = Some(LlmError::interrupted(provider));
                    return read;
                }
                Some(Some(Ok(bytes))) => bytes,
            };
            let out = if unread_ok && parser.is_idle() && wire::plain_openai_frame(&bytes) {
                // Nothing but generated text, in whole events: forwarded as the bytes that
                // came, as a proxy would, and read only if its text must be counted.
                read.unread_bytes += bytes.len();
                read.unread.push(Unread::Events(bytes.clone()));
                vec![StreamEvent::Raw(bytes)]
            } else {
                self.take_events(parser.feed(&bytes), unread_ok, &mut pieces, &mut read)
            };
            if read.unread_bytes > UNREAD_LIMIT {
                read.catch_up(provider, |m| self.provider_error(m));
            }
            for event in out {
                if tx.send(Ok(event)).await.is_err() {
                    read.cancelled = true;
                    return read;
                }
            }
            if read.failure.is_some() {
                return read;
            }
            if read.done {
                return read;
            }
        }
    }

    /// Takes in the events of one read from the provider: what the client gets of them (as
    /// one piece for a forwarded stream: one write to the client per read from the provider,
    /// as a proxy would, rather than one per event), with their pieces taken into `read`.
    fn take_events(
        &self,
        events: Vec<wire::SseEvent>,
        unread_ok: bool,
        pieces: &mut Vec<Piece>,
        read: &mut Read,
    ) -> Vec<StreamEvent> {
        let provider = self.chosen.provider;
        let mut out: Vec<StreamEvent> = Vec::new();
        let mut raw: Vec<u8> = Vec::new();
        for ev in events {
            if unread_ok && wire::plain_openai_delta(&ev.data) {
                // Forwarded as it came, read later only if its text must be counted.
                frame(&ev, &mut raw);
                read.unread_bytes += ev.data.len();
                read.unread.push(Unread::Data(ev.data));
                continue;
            }
            let responses = matches!(self.mode, Mode::Responses);
            if responses && wire::passing_responses_event(&ev) {
                // Forwarded as it came, read later only if its text must be counted.
                frame(&ev, &mut raw);
                read.unread_bytes += ev.data.len();
                read.unread.push(Unread::Responses(ev));
                continue;
            }
            let before = pieces.len();
            if responses {
                wire::parse_responses_event(&ev, pieces);
            } else {
                wire::parse_event(provider, &ev, pieces);
            }
            let ends = pieces[before..].iter().any(|p| matches!(p, Piece::Done));
            let fails = pieces[before..]
                .iter()
                .any(|p| matches!(p, Piece::Error(_)));
            // At once, for the translator (merging the same usage again later changes
            // nothing).
            for p in &pieces[before..] {
                if let Piece::Usage(u) = p {
                    read.usage = Some(wire::merge_usage(read.usage, *u));
                }
            }
            match &self.mode {
                Mode::Typed => {}
                // A provider's error event is worded by the gateway instead.
                _ if fails => {}
                Mode::Raw { .. } | Mode::Responses => {
                    if matches!(self.mode, Mode::Raw { hide_usage: true })
                        && wire::is_usage_chunk(&ev.data)
                    {
                        continue;
                    }
                    if ends {
                        let mut held = Vec::new();
                        frame(&ev, &mut held);
                        read.held.push(Bytes::from(held));
                    } else {
                        frame(&ev, &mut raw);
                    }
                }
                Mode::Translated { .. } => {
                    if !ends {
                        if let Some(t) = read.translator.as_mut() {
                            for b in t.event(&ev.data, read.usage) {
                                raw.extend_from_slice(&b);
                            }
                        }
                    }
                }
            }
        }
        let typed = matches!(self.mode, Mode::Typed);
        for piece in pieces.drain(..) {
            match read.take(piece, |m| self.provider_error(m)) {
                Some(Piece::Text(t)) if typed => out.push(StreamEvent::Text(t)),
                Some(Piece::Finish(r)) if typed => out.push(StreamEvent::Finish(r)),
                _ => {}
            }
        }
        if !raw.is_empty() {
            out.push(StreamEvent::Raw(Bytes::from(raw)));
        }
        out
    }

    /// An error event inside a stream, worded like a provider's error answer.
    fn provider_error(&self, message: &str) -> LlmError {
        LlmError::from_provider(
            self.chosen.provider,
            self.chosen.platform,
            502,
            &serde_json::json!({"error": {"message": message}}).to_string(),
            self.chosen.key.secret.as_ref(),
        )
    }
}

/// Appends a server-sent event as it came (its data unchanged, no JSON read or written).
fn frame(ev: &wire::SseEvent, out: &mut Vec<u8>) {
    out.reserve(ev.data.len() + 32);
    if let Some(event) = &ev.event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    // Line by line (the line ends found by memchr; nearly every event has one line).
    let mut data = ev.data.as_bytes();
    loop {
        let end = memchr::memchr(b'\n', data);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&data[..end.unwrap_or(data.len())]);
        out.push(b'\n');
        match end {
            Some(end) => data = &data[end + 1..],
            None => break,
        }
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event is written back as the lines it was read from: a data line per line of its
    /// data, its name first, a blank line last.
    #[test]
    fn an_event_is_framed_as_it_was_read() {
        let texts = [
            "data: {\"a\":1}\n\n",
            "event: message_delta\ndata: {\"b\":2}\n\n",
            "data: one\ndata: \ndata: three\n\n",
        ];
        for text in texts {
            let events = wire::sse_events(text);
            assert_eq!(events.len(), 1, "{text:?}");
            let mut out = Vec::new();
            frame(&events[0], &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }
}
