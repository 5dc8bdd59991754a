//! The ledger: one row of `usage_events` per model call, written off the request path.
//!
//! Settled events reach Postgres through a Redis stream (see the module above). Each process's
//! [`LedgerWriter`] writes the events its own settle scripts added, in batches, from memory
//! ([`Handed`]), and removes their entries from the stream only after commit; entries left in
//! the stream longer than [`LedgerWriter::claim_after`] (their process died) are read back and
//! written by any writer. The idempotency key makes replays harmless. An event that can never
//! be written is set aside in `ledger-dead` for an operator.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::MonthUsage;
use crate::db::{self, Db};
use crate::tenancy::{TenantId, UserId};
use crate::{Error, Provider, Redis, Result};

/// The Redis stream that hands settled events to the ledger writer.
pub(crate) fn ledger_stream(redis: &Redis) -> String {
    redis.key("ledger")
}

/// How many entries wait in the hand-off stream for the ledger writer (each holds the events
/// of one settle script: one or more).
pub async fn handoff_length(redis: &Redis) -> Result<u64> {
    Ok(redis::cmd("XLEN")
        .arg(ledger_stream(redis))
        .query_async(&mut redis.conn())
        .await?)
}

/// Milliseconds since the Unix epoch at `at`.
pub(crate) fn unix_ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    unix_ms(OffsetDateTime::now_utc())
}

/// One model call, as the ledger records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub id: Uuid,
    pub tenant: TenantId,
    pub user: Option<UserId>,
    pub api_key: Option<Uuid>,
    /// The agent the call was made through, if any.
    #[serde(default)]
    pub agent: Option<Uuid>,
    pub provider: Provider,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cost_micro_usd: i64,
    pub latency_ms: i32,
    /// The provider reported no usage; Tessera counted the tokens.
    pub estimated: bool,
    pub streamed: bool,
    /// The caller stopped the reply before it finished.
    pub cancelled: bool,
    pub idempotency_key: String,
    /// When the call started, in milliseconds since the Unix epoch.
    pub occurred_at_ms: i64,
    /// What the call was for (events handed off before kinds existed were chat replies).
    #[serde(default)]
    pub kind: CallKind,
}

impl UsageEvent {
    /// The event as the hand-off carries it: exactly the JSON `serde_json::to_string` writes
    /// for it (the same fields in the same order, read back by the same `Deserialize`), written
    /// directly, because every call's settle writes one and serde's general path (each key
    /// scanned for escapes, each id through a formatter) was a measurable part of a call; its
    /// text fields are escaped by serde_json as before.
    pub(crate) fn to_json(&self) -> String {
        fn uuid(out: &mut Vec<u8>, id: &Uuid) {
            out.push(b'"');
            out.extend_from_slice(
                id.hyphenated()
                    .encode_lower(&mut Uuid::encode_buffer())
                    .as_bytes(),
            );
            out.push(b'"');
        }
        fn optional(out: &mut Vec<u8>, id: Option<&Uuid>) {
            match id {
                Some(id) => uuid(out, id),
                None => out.extend_from_slice(b"null"),
            }
        }
        let mut out = Vec::with_capacity(360 + self.model.len() + self.idempotency_key.len());
        let mut number = itoa::Buffer::new();
        out.extend_from_slice(b"{\"id\":");
        uuid(&mut out, &self.id);
        out.extend_from_slice(b",\"tenant\":");
        uuid(&mut out, &self.tenant.0);
        out.extend_from_slice(b",\"user\":");
        optional(&mut out, self.user.as_ref().map(|u| &u.0));
        out.extend_from_slice(b",\"api_key\":");
        optional(&mut out, self.api_key.as_ref());
        out.extend_from_slice(b",\"agent\":");
        optional(&mut out, self.agent.as_ref());
        out.extend_from_slice(b",\"provider\":\"");
        out.extend_from_slice(self.provider.as_str().as_bytes());
        out.extend_from_slice(b"\",\"model\":");
        crate::llm::wire::write_json_string(&mut out, &self.model);
        for (key, value) in [
            (&b",\"prompt_tokens\":"[..], self.prompt_tokens),
            (b",\"completion_tokens\":", self.completion_tokens),
            (b",\"cached_tokens\":", self.cached_tokens),
            (b",\"cost_micro_usd\":", self.cost_micro_usd),
            (b",\"latency_ms\":", i64::from(self.latency_ms)),
        ] {
            out.extend_from_slice(key);
            out.extend_from_slice(number.format(value).as_bytes());
        }
        for (key, value) in [
            (&b",\"estimated\":"[..], self.estimated),
            (b",\"streamed\":", self.streamed),
            (b",\"cancelled\":", self.cancelled),
        ] {
            out.extend_from_slice(key);
            out.extend_from_slice(if value { &b"true"[..] } else { b"false" });
        }
        out.extend_from_slice(b",\"idempotency_key\":");
        crate::llm::wire::write_json_string(&mut out, &self.idempotency_key);
        out.extend_from_slice(b",\"occurred_at_ms\":");
        out.extend_from_slice(number.format(self.occurred_at_ms).as_bytes());
        out.extend_from_slice(b",\"kind\":\"");
        out.extend_from_slice(self.kind.as_str().as_bytes());
        out.extend_from_slice(b"\"}");
        // Every piece is UTF-8, so this is never lossy.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Reads an event of the hand-off. The text [`UsageEvent::to_json`] writes is read
    /// directly, field by field in its order: the ledger writer reads every call's event, and
    /// serde's general path (each key matched by name, each id through a visitor) cost it
    /// three times the insert's own work. Any other text (an event written before a field
    /// existed, a string with escapes, other spacing) goes to serde as before, so what is read
    /// is what serde reads. `None` when the text is not an event.
    pub(crate) fn from_json(text: &[u8]) -> Option<UsageEvent> {
        Exact { rest: text }
            .event()
            .or_else(|| serde_json::from_slice(text).ok())
    }
}

/// A reader of exactly the JSON [`UsageEvent::to_json`] writes: at the first byte that
/// differs it gives up (`None`), and the text is left to serde.
struct Exact<'a> {
    rest: &'a [u8],
}

impl<'a> Exact<'a> {
    fn event(mut self) -> Option<UsageEvent> {
        self.text(b"{\"id\":")?;
        let id = self.uuid()?;
        self.text(b",\"tenant\":")?;
        let tenant = TenantId(self.uuid()?);
        self.text(b",\"user\":")?;
        let user = self.optional_uuid()?.map(UserId);
        self.text(b",\"api_key\":")?;
        let api_key = self.optional_uuid()?;
        self.text(b",\"agent\":")?;
        let agent = self.optional_uuid()?;
        self.text(b",\"provider\":")?;
        let provider = self.string()?;
        let provider = *Provider::ALL.iter().find(|p| p.as_str() == provider)?;
        self.text(b",\"model\":")?;
        let model = self.string()?.to_string();
        self.text(b",\"prompt_tokens\":")?;
        let prompt_tokens = self.integer()?;
        self.text(b",\"completion_tokens\":")?;
        let completion_tokens = self.integer()?;
        self.text(b",\"cached_tokens\":")?;
        let cached_tokens = self.integer()?;
        self.text(b",\"cost_micro_usd\":")?;
        let cost_micro_usd = self.integer()?;
        self.text(b",\"latency_ms\":")?;
        let latency_ms = self.integer()?;
        self.text(b",\"estimated\":")?;
        let estimated = self.boolean()?;
        self.text(b",\"streamed\":")?;
        let streamed = self.boolean()?;
        self.text(b",\"cancelled\":")?;
        let cancelled = self.boolean()?;
        self.text(b",\"idempotency_key\":")?;
        let idempotency_key = self.string()?.to_string();
        self.text(b",\"occurred_at_ms\":")?;
        let occurred_at_ms = self.integer()?;
        self.text(b",\"kind\":")?;
        let kind = self.string()?;
        let kind = CallKind::ALL.into_iter().find(|k| k.as_str() == kind)?;
        self.text(b"}")?;
        self.rest.is_empty().then_some(UsageEvent {
            id,
            tenant,
            user,
            api_key,
            agent,
            provider,
            model,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            cost_micro_usd,
            latency_ms,
            estimated,
            streamed,
            cancelled,
            idempotency_key,
            occurred_at_ms,
            kind,
        })
    }

    /// These exact bytes.
    fn text(&mut self, text: &[u8]) -> Option<()> {
        self.rest = self.rest.strip_prefix(text)?;
        Some(())
    }

    /// An id, quoted, in the hyphenated form `to_json` writes.
    fn uuid(&mut self) -> Option<Uuid> {
        let (quoted, rest) = self.rest.split_at_checked(38)?;
        let id = quoted.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        let id = Uuid::try_parse_ascii(id).ok()?;
        self.rest = rest;
        Some(id)
    }

    fn optional_uuid(&mut self) -> Option<Option<Uuid>> {
        match self.rest.strip_prefix(b"null") {
            Some(rest) => {
                self.rest = rest;
                Some(None)
            }
            None => self.uuid().map(Some),
        }
    }

    /// A string without escapes (one with any is serde's to read).
    fn string(&mut self) -> Option<&'a str> {
        let rest = self.rest.strip_prefix(b"\"")?;
        let end = crate::llm::wire::string_end(rest, 0);
        if rest.get(end) != Some(&b'"') {
            return None;
        }
        let text = std::str::from_utf8(&rest[..end]).ok()?;
        self.rest = &rest[end + 1..];
        Some(text)
    }

    /// A whole number as `to_json` writes one (no leading zeros, no `-0`, which serde reads as
    /// a fraction, no fraction, no exponent), that fits `T`.
    fn integer<T: TryFrom<i64>>(&mut self) -> Option<T> {
        let sign = usize::from(self.rest.first() == Some(&b'-'));
        let digits = self.rest[sign..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        // i64's widest are 19 digits.
        if digits == 0 || digits > 19 || (self.rest[sign] == b'0' && (digits > 1 || sign == 1)) {
            return None;
        }
        let (number, rest) = self.rest.split_at(sign + digits);
        let magnitude = number[sign..].iter().try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        let number = if sign == 1 {
            0i64.checked_sub_unsigned(magnitude)?
        } else {
            i64::try_from(magnitude).ok()?
        };
        let number = T::try_from(number).ok()?;
        self.rest = rest;
        Some(number)
    }

    fn boolean(&mut self) -> Option<bool> {
        if let Some(rest) = self.rest.strip_prefix(b"true") {
            self.rest = rest;
            Some(true)
        } else {
            self.rest = self.rest.strip_prefix(b"false")?;
            Some(false)
        }
    }
}

/// What a model call was for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// A chat reply.
    #[default]
    Chat,
    /// Embeddings: documents indexed, or a question searched.
    Embedding,
}

impl CallKind {
    pub const ALL: [CallKind; 2] = [CallKind::Chat, CallKind::Embedding];

    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Chat => "chat",
            CallKind::Embedding => "embedding",
        }
    }
}

/// The events a process handed to the ledger stream and has not written yet, kept so that its
/// writer writes them from memory instead of reading them back from Redis (one per [`Redis`]
/// handle and its clones, [`Redis::shared`]: the process's settle scripts add to it, its ledger
/// writers take from it). Reading them back, with their parse, was most of a writer's work per
/// call after the insert's. The stream stays the durable copy: an entry leaves it only once its events
/// are in the ledger, and entries a process leaves there (it died, or it held
/// [`HANDED_MOST`] events already) are written by any writer that finds them older than its
/// [`LedgerWriter::claim_after`].
#[derive(Default)]
pub struct Handed {
    held: std::sync::Mutex<HandedQueue>,
}

#[derive(Default)]
struct HandedQueue {
    entries: std::collections::VecDeque<HandedEntry>,
    /// Events of all the entries.
    events: usize,
}

/// One entry of the ledger stream, with the events it carries.
pub(crate) struct HandedEntry {
    /// Its id in the stream (`<ms>-<seq>`).
    pub id: String,
    pub events: Vec<Arc<UsageEvent>>,
}

/// The most events a process keeps for its writer (Postgres out of reach for a while). Beyond
/// it, entries stay in the stream only, where a writer finds them once they are older than its
/// [`LedgerWriter::claim_after`].
pub const HANDED_MOST: usize = 100_000;

impl Handed {
    fn lock(&self) -> std::sync::MutexGuard<'_, HandedQueue> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `entry`, just added to the stream, for this process's writer.
    pub(crate) fn add(&self, entry: HandedEntry) {
        let mut held = self.lock();
        if held.events + entry.events.len() > HANDED_MOST {
            return;
        }
        held.events += entry.events.len();
        held.entries.push_back(entry);
    }

    /// Up to `most` entries, oldest first (as the stream's reading took them before:
    /// `XREADGROUP ... COUNT`).
    fn take(&self, most: usize) -> Vec<HandedEntry> {
        let mut held = self.lock();
        let n = most.min(held.entries.len());
        let taken: Vec<HandedEntry> = held.entries.drain(..n).collect();
        held.events -= taken.iter().map(|e| e.events.len()).sum::<usize>();
        taken
    }

    /// Puts back, in front and in their order, entries whose batch failed.
    fn put_back(&self, entries: Vec<HandedEntry>) {
        let mut held = self.lock();
        for entry in entries.into_iter().rev() {
            held.events += entry.events.len();
            held.entries.push_front(entry);
        }
    }

    /// Each entry's id and its events' ids, oldest first.
    #[cfg(test)]
    pub(crate) fn held(&self) -> Vec<(String, Vec<Uuid>)> {
        let held = self.lock();
        held.entries
            .iter()
            .map(|e| (e.id.clone(), e.events.iter().map(|ev| ev.id).collect()))
            .collect()
    }

    /// Forgets every entry, as the process's end would; how many events they held.
    fn forget(&self) -> usize {
        let mut held = self.lock();
        held.entries.clear();
        std::mem::take(&mut held.events)
    }
}

/// An event of a batch: the entry it came in, the event (`None` when its text cannot be
/// read), and its text as the stream holds it (`None` for one written from memory).
type Item<'a> = (usize, Option<&'a UsageEvent>, Option<&'a [u8]>);

/// Writes the hand-off stream's events into the Postgres ledger. Run one per process (`serve`
/// and `worker` do); any number may run at once. Each writes the events its own process
/// handed over, from memory ([`Handed`]), and any entries older than [`Self::claim_after`]
/// (left by a process that died) from the stream.
#[derive(Clone)]
pub struct LedgerWriter {
    db: Db,
    redis: Redis,
    stream: String,
    /// This process's events not yet written (shared with its settles through the Redis
    /// handle).
    handed: Arc<Handed>,
    /// Entries still in the stream this long after they were added are taken from it: their
    /// process is gone, or could not write them for that long (Postgres out of reach). A
    /// process's own entries are written from memory, normally well within it; one written
    /// both ways goes in once (the ledger skips an event it has).
    pub claim_after: Duration,
    /// The most entries a batch takes (each holds the events of one settle script).
    pub batch: usize,
}

/// How long the writer lets events gather after a partial batch.
pub const GATHER: Duration = Duration::from_millis(50);

impl LedgerWriter {
    pub fn new(db: Db, redis: Redis) -> Self {
        let stream = ledger_stream(&redis);
        Self {
            db,
            handed: redis.shared(),
            redis,
            stream,
            claim_after: Duration::from_secs(30),
            batch: 500,
        }
    }

    /// Runs until `stop` is triggered: drains, then waits a moment when there is nothing to
    /// do. After a partial batch it waits briefly too, so that under load the events of that
    /// moment go to Postgres together: batches grow with the load (up to [`Self::batch`], then
    /// back to back) instead of one small insert per event, and an event waits at most about
    /// [`GATHER`] longer for the ledger. On `stop` it drains what is left (the hand-off is
    /// flushed) for up to `flush_within`, then returns.
    ///
    /// It looks for entries left behind in the stream (a Redis round trip) at most once per
    /// [`Self::claim_after`] / 8, and again at once while it finds a full batch of them: they
    /// are that old anyway, and a batch of its own events pays no such look.
    pub async fn run(self, stop: crate::shutdown::Shutdown, flush_within: Duration) {
        let mut backoff = Duration::from_millis(200);
        let look_every = self.claim_after / 8;
        let mut looked: Option<std::time::Instant> = None;
        loop {
            let look = looked.is_none_or(|at| at.elapsed() >= look_every);
            let drained = self.drain_step(look).await;
            if look {
                looked = match drained {
                    Ok((_, true)) => None,
                    Ok(_) => Some(std::time::Instant::now()),
                    Err(_) => looked,
                };
            }
            let pause = match drained.map(|(n, _)| n) {
                Ok(0) => Duration::from_millis(200),
                Ok(n) if n < self.batch => {
                    backoff = Duration::from_millis(200);
                    GATHER
                }
                Ok(_) => {
                    backoff = Duration::from_millis(200);
                    Duration::ZERO
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "ledger writer failed; retrying");
                    let pause = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    pause
                }
            };
            if stop.is_triggered() || (!pause.is_zero() && stop.sleep(pause).await) {
                break;
            }
        }
        match tokio::time::timeout(flush_within, self.drain_all()).await {
            Ok(Ok(n)) => tracing::info!(written = n, "ledger hand-off flushed"),
            Ok(Err(e)) => {
                tracing::warn!(error = ?e, "ledger hand-off not flushed; another writer will take it")
            }
            Err(_) => {
                tracing::warn!("ledger hand-off not flushed in time; another writer will take it")
            }
        }
    }

    /// Writes one batch: this process's events, from memory, then (with room left) entries
    /// left in the stream longer than [`Self::claim_after`]. Returns how many events it
    /// handled. The events of a batch that fails stay: this process's are taken again first,
    /// and the stream's are still there.
    pub async fn drain_once(&self) -> Result<usize> {
        self.drain_step(true).await.map(|(n, _)| n)
    }

    /// [`Self::drain_once`], looking for entries left behind in the stream only if `look`.
    /// Also returns whether it found a full batch's room of them (more may wait).
    async fn drain_step(&self, look: bool) -> Result<(usize, bool)> {
        let handed = &self.handed;
        let own = handed.take(self.batch);
        let taken = own.len();
        let mut done = 0;
        if !own.is_empty() {
            let ids: Vec<&str> = own.iter().map(|e| e.id.as_str()).collect();
            let items: Vec<Item<'_>> = own
                .iter()
                .enumerate()
                .flat_map(|(i, e)| e.events.iter().map(move |ev| (i, Some(&**ev), None)))
                .collect();
            match self.write(&ids, &items).await {
                Ok(n) => done = n,
                Err(e) => {
                    handed.put_back(own);
                    return Err(e);
                }
            }
        }
        if taken >= self.batch || !look {
            // A full batch of its own, or not the time to look: what was left behind waits.
            return Ok((done, false));
        }
        let room = self.batch - taken;
        let left = self.left_behind(room).await?;
        if left.is_empty() {
            return Ok((done, false));
        }
        let full = left.len() >= room;
        let ids: Vec<&str> = left.iter().map(|(id, _)| id.as_str()).collect();
        // Each event of each entry (one per line: a settle script hands over its settles'
        // events as one entry), read once; an entry without events is one that cannot be read.
        let read: Vec<(usize, &[u8], Option<UsageEvent>)> = left
            .iter()
            .enumerate()
            .flat_map(|(i, (_, payload))| {
                let lines = payload.as_deref().map(events_of).into_iter().flatten();
                let none = payload.is_none().then_some((i, &[][..], None));
                lines
                    .map(move |line| (i, line, UsageEvent::from_json(line)))
                    .chain(none)
            })
            .collect();
        let items: Vec<Item<'_>> = read
            .iter()
            .map(|(i, line, event)| (*i, event.as_ref(), Some(*line)))
            .collect();
        Ok((done + self.write(&ids, &items).await?, full))
    }

    /// Entries of the stream added more than [`Self::claim_after`] ago, oldest first, at most
    /// `count`.
    async fn left_behind(&self, count: usize) -> Result<Vec<(String, Option<Vec<u8>>)>> {
        let through = now_ms() - self.claim_after.as_millis() as i64;
        if through < 0 || count == 0 {
            return Ok(Vec::new());
        }
        let raw: Value = redis::cmd("XRANGE")
            .arg(&self.stream)
            .arg("-")
            .arg(through)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(parse_entries(&raw))
    }

    /// Writes a batch's events (`items`, of the entries `ids`) to the ledger, sets aside those
    /// that cannot be read or that Postgres refuses, and removes the entries from the stream.
    /// Returns how many events it handled.
    async fn write(&self, ids: &[&str], items: &[Item<'_>]) -> Result<usize> {
        let mut aside: Vec<usize> = (0..items.len()).filter(|&i| items[i].1.is_none()).collect();
        if let Err(e) = write_events(&self.db, items.iter().filter_map(|p| p.1)).await {
            if !is_refused_by_postgres(&e) {
                // Postgres is unreachable or similar: the batch stays, to be taken again.
                return Err(e);
            }
            // Postgres refused the batch (say one event's clinic was deleted meanwhile, or a
            // value it cannot store): write the events one by one, and set aside the ones it
            // refuses again, so one bad event never holds up the others.
            for (i, (_, event, _)) in items.iter().enumerate() {
                let Some(event) = event else { continue };
                if let Err(e) = write_events(&self.db, [*event]).await {
                    if !is_refused_by_postgres(&e) {
                        return Err(e);
                    }
                    tracing::error!(error = ?e, event = %event.id, "Postgres refused a usage event");
                    aside.push(i);
                }
            }
        }
        for &i in &aside {
            let (entry, event, text) = items[i];
            let json;
            let text = match (text, event) {
                (Some(text), _) => text,
                (None, Some(event)) => {
                    json = event.to_json();
                    json.as_bytes()
                }
                (None, None) => &[],
            };
            self.set_aside(ids[entry], text).await?;
        }
        let _: () = redis::cmd("XDEL")
            .arg(&self.stream)
            .arg(ids)
            .query_async(&mut self.redis.conn())
            .await?;
        // A stream entry's id starts with the time (ms) Redis took it: the settle.
        let now = now_ms();
        let lag = |entry: usize| {
            let added = ids[entry]
                .split('-')
                .next()
                .and_then(|ms| ms.parse::<i64>().ok())
                .unwrap_or(now);
            Duration::from_millis(now.saturating_sub(added).max(0) as u64)
        };
        // Only what reached the ledger (not what was set aside).
        crate::observe::ledger_written(
            items
                .iter()
                .enumerate()
                .filter(|(i, _)| !aside.contains(i))
                .map(|(_, (entry, _, _))| lag(*entry)),
        );
        Ok(items.len())
    }

    /// Keeps an event that cannot be written for an operator (`server ledger dead-letters`)
    /// rather than retrying it for ever. The dead-letter stream keeps the newest
    /// [`DEAD_LETTER_MAX`] events.
    async fn set_aside(&self, id: &str, event: &[u8]) -> Result<()> {
        tracing::error!(entry = %id, "usage event that cannot be written moved to ledger-dead");
        let _: String = redis::cmd("XADD")
            .arg(dead_letter_stream(&self.redis))
            .arg("MAXLEN")
            .arg("~")
            .arg(DEAD_LETTER_MAX)
            .arg("*")
            .arg("e")
            .arg(event)
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    /// Drains until nothing is left (tests, shutdown).
    pub async fn drain_all(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let n = self.drain_once().await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// Forgets the events this process handed over and has not written, as its end would:
    /// their entries stay in the stream, for a writer that finds them left behind. How many
    /// events it forgot. For tests of the recovery path.
    #[doc(hidden)]
    pub fn forget_own(&self) -> usize {
        self.handed.forget()
    }
}

/// Postgres answered and refused the statement (any SQLSTATE: a constraint, a value it cannot
/// store), or the event's clinic does not exist ([`write_events`]): retrying the same event
/// cannot help. Anything else (unreachable, pool exhausted) may pass on a retry.
fn is_refused_by_postgres(e: &Error) -> bool {
    matches!(
        e,
        Error::Database(sqlx::Error::Database(_)) | Error::NotFound
    )
}

/// The most events the dead-letter stream keeps (approximately; the oldest go first).
pub const DEAD_LETTER_MAX: usize = 10_000;

/// Where events that cannot be written are kept for an operator.
pub fn dead_letter_stream(redis: &Redis) -> String {
    redis.key("ledger-dead")
}

/// Events set aside because Postgres refused them, newest first, at most `count`, and how many
/// there are in all: `(stream entry id, the event as settled)`.
pub async fn dead_letters(redis: &Redis, count: usize) -> Result<(usize, Vec<(String, String)>)> {
    let key = dead_letter_stream(redis);
    let total: usize = redis::cmd("XLEN")
        .arg(&key)
        .query_async(&mut redis.conn())
        .await?;
    let raw: Value = redis::cmd("XREVRANGE")
        .arg(&key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(count)
        .query_async(&mut redis.conn())
        .await?;
    let entries = parse_entries(&raw)
        .into_iter()
        .map(|(id, payload)| {
            (
                id,
                String::from_utf8_lossy(&payload.unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    Ok((total, entries))
}

/// The events of a hand-off entry: one JSON object per line (a settle script hands over the
/// events of all its settles as one entry).
fn events_of(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    // As `payload.split(|b| *b == b'\n')`, with the line ends found by memchr.
    let mut rest = Some(payload);
    std::iter::from_fn(move || {
        let text = rest?;
        Some(match memchr::memchr(b'\n', text) {
            Some(end) => {
                rest = Some(&text[end + 1..]);
                &text[..end]
            }
            None => {
                rest = None;
                text
            }
        })
    })
}

/// `[[id, [field, value, ...]], ...]` to `(id, value of field "e")`.
fn parse_entries(value: &Value) -> Vec<(String, Option<Vec<u8>>)> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let id = match pair.first()? {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            let payload = match pair.get(1) {
                Some(Value::Array(fields)) => fields
                    .chunks(2)
                    .find(|kv| matches!(&kv[0], Value::BulkString(k) if k == b"e"))
                    .and_then(|kv| match kv.get(1) {
                        Some(Value::BulkString(v)) => Some(v.clone()),
                        _ => None,
                    }),
                _ => None,
            };
            Some((id, payload))
        })
        .collect()
}

/// What the hand-off stream still holds of a clinic's `month` and the ledger does not have yet
/// (a settled call on its way to Postgres), so counters rebuilt meanwhile miss nothing.
pub(crate) async fn pending_in_handoff(
    db: &Db,
    redis: &Redis,
    tenant: TenantId,
    month: crate::Month,
) -> Result<MonthUsage> {
    let raw: Value = redis::cmd("XRANGE")
        .arg(ledger_stream(redis))
        .arg("-")
        .arg("+")
        .query_async(&mut redis.conn())
        .await?;
    let entries = parse_entries(&raw);
    let events: Vec<UsageEvent> = entries
        .iter()
        .filter_map(|(_, payload)| payload.as_deref())
        .flat_map(events_of)
        .filter_map(UsageEvent::from_json)
        .filter(|e| e.tenant == tenant && crate::Month::of(occurred_at(e)) == month)
        .collect();
    let mut pending = MonthUsage::default();
    if events.is_empty() {
        return Ok(pending);
    }
    // Written already but not yet removed from the stream: counted by the ledger.
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let written: Vec<Uuid> = db
        .tenant_all(
            tenant,
            sqlx::query_as::<_, (Uuid,)>("SELECT id FROM usage_events WHERE id = ANY($1)")
                .bind(&ids),
        )
        .await?
        .into_iter()
        .map(|(id,)| id)
        .collect();
    for e in events.iter().filter(|e| !written.contains(&e.id)) {
        pending.add(&MonthUsage {
            tokens: e.prompt_tokens + e.completion_tokens,
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            cost_micro_usd: e.cost_micro_usd,
            requests: 1,
        });
    }
    Ok(pending)
}

fn occurred_at(e: &UsageEvent) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.occurred_at_ms) * 1_000_000)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
}

/// Inserts events into the ledger in one transaction, one statement per clinic and
/// [`INSERT_PIECE`] rows (pausing between pieces); events already there (same id, which is also
/// their idempotency key) are skipped. A clinic that does not exist refuses its events
/// ([`Error::NotFound`]): each statement inserts its rows only if the clinic exists (checked
/// once per statement rather than by a foreign key per row, which cost more than half of each
/// insert), and only when it inserts fewer rows than it was given is the clinic looked up.
///
/// An event is almost never there already: only when a writer died between its commit and the
/// entry's deletion from the stream, a process's own entry was also taken as left behind (it
/// could not write it for [`LedgerWriter::claim_after`]), or a settle that seemed to fail
/// reached Redis after its event had been written directly. So the batch is inserted without looking for each row first (the check
/// costs about a sixth of an insert, `bench/ledger-dedup.sh`), and only when Postgres finds one
/// there (the ledger's key refuses it) is it inserted again, skipping what is there.
pub async fn write_events<'a>(
    db: &Db,
    events: impl IntoIterator<Item = &'a UsageEvent>,
) -> Result<()> {
    let mut by_tenant: std::collections::BTreeMap<TenantId, Vec<&UsageEvent>> = Default::default();
    for e in events {
        by_tenant.entry(e.tenant).or_default().push(e);
    }
    if by_tenant.is_empty() {
        return Ok(());
    }
    match insert_events(db, &by_tenant, false).await {
        Err(Error::Database(sqlx::Error::Database(e)))
            if e.constraint() == Some(LEDGER_KEY) && e.is_unique_violation() =>
        {
            insert_events(db, &by_tenant, true).await
        }
        other => other,
    }
}

/// The ledger's primary key: a second row with an id that is there already breaks it.
const LEDGER_KEY: &str = "usage_events_pkey";

/// The ledger's insert of a clinic's batch ([`insert_events`]): one row per element of the
/// arrays; `$1` the clinic, and no row at all if the clinic does not exist. The agent is
/// recorded as the call made it: the ledger has no key to `agents` (migration 17), so a batch
/// with an agent deleted since its calls goes in whole, and reports show those calls under no
/// agent.
macro_rules! insert_rows {
    () => {
        "INSERT INTO usage_events (id, tenant_id, user_id, api_key_id, provider, model,
                    prompt_tokens, completion_tokens, cached_tokens, cost_micro_usd, latency_ms,
                    estimated, streamed, cancelled, idempotency_key, occurred_at, agent_id, kind)
             SELECT u.id, $1, u.user_id, u.api_key_id, u.provider, u.model, u.prompt_tokens,
                    u.completion_tokens, u.cached_tokens, u.cost, u.latency_ms, u.estimated,
                    u.streamed, u.cancelled, u.idempotency_key, u.occurred_at, u.agent_id, u.kind
               FROM UNNEST($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
                           $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::int[],
                           $12::bool[], $13::bool[], $14::bool[], $15::text[], $16::timestamptz[],
                           $17::uuid[], $18::text[])
                 AS u(id, user_id, api_key_id, provider, model, prompt_tokens, completion_tokens,
                      cached_tokens, cost, latency_ms, estimated, streamed, cancelled,
                      idempotency_key, occurred_at, agent_id, kind)
              WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $1)"
    };
}

/// A batch's rows, refused as a whole if one is in the ledger already.
const INSERT: &str = insert_rows!();
/// A batch's rows, skipping those in the ledger already.
const INSERT_SKIPPING: &str = concat!(insert_rows!(), " ON CONFLICT (id) DO NOTHING");

/// Rows per statement of [`write_events`]. Under load a batch holds hundreds of events (about
/// 650 at concurrency 32 on two cores): as one statement, several milliseconds of Postgres at a
/// stretch, during which the calls in flight wait for a core. So a batch goes in as statements
/// of at most this many rows, still in one transaction (one commit), and after each such piece
/// the writer pauses as long as the piece took (at most [`GATHER`]): the calls in flight are
/// stretched by one piece at a time instead of the whole batch. A batch of one piece, as at
/// low load, goes in without a pause. Each further statement costs Postgres more than its rows
/// (about a fifth of a millisecond), so pieces are no smaller than this: in pieces of 128 the
/// tail was a little shorter than in these, for more added cost (bench/README.md).
pub const INSERT_PIECE: usize = 256;

/// One transaction of [`write_events`]; `skip_existing`: rows whose id is in the ledger
/// already are skipped instead of refusing the batch.
async fn insert_events(
    db: &Db,
    by_tenant: &std::collections::BTreeMap<TenantId, Vec<&UsageEvent>>,
    skip_existing: bool,
) -> Result<()> {
    let mut tx = db.pool().begin().await?;
    // Rows written since the last pause, and when that stretch began.
    let mut rows = 0;
    let mut stretch = std::time::Instant::now();
    for (&tenant, events) in by_tenant {
        db::set_tenant(&mut tx, tenant).await?;
        let statement = if skip_existing {
            INSERT_SKIPPING
        } else {
            INSERT
        };
        for events in events.chunks(INSERT_PIECE) {
            if rows >= INSERT_PIECE {
                tokio::time::sleep(stretch.elapsed().min(GATHER)).await;
                rows = 0;
                stretch = std::time::Instant::now();
            }
            rows += events.len();
            let inserted = insert_piece(&mut tx, statement, tenant, events).await?;
            // Fewer rows than events: the clinic is gone, or (skipping) some were there.
            if inserted < events.len() as u64 && !clinic_exists(&mut tx, tenant).await? {
                return Err(Error::NotFound);
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Whether `tenant` exists (seen as `tenant`, in a transaction set to it).
async fn clinic_exists(tx: &mut db::Tx, tenant: TenantId) -> Result<bool> {
    let (known,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)")
        .bind(tenant)
        .fetch_one(&mut **tx)
        .await?;
    Ok(known)
}

/// One statement of [`insert_events`]: `events`, all of `tenant`, as rows of `statement`.
/// Returns how many rows it inserted.
async fn insert_piece(
    tx: &mut db::Tx,
    statement: &'static str,
    tenant: TenantId,
    events: &[&UsageEvent],
) -> Result<u64> {
    let occurred: Vec<OffsetDateTime> = events.iter().map(|e| occurred_at(e)).collect();
    let done = sqlx::query(statement)
        .bind(tenant)
        .bind(events.iter().map(|e| e.id).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.user.map(|u| u.0))
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.api_key).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.provider).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.model.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.prompt_tokens).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.completion_tokens)
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.cached_tokens).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.cost_micro_usd).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.latency_ms).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.estimated).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.streamed).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.cancelled).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.idempotency_key.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(occurred)
        .bind(events.iter().map(|e| e.agent).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> UsageEvent {
        UsageEvent {
            id: Uuid::new_v4(),
            tenant: TenantId::new(),
            user: None,
            api_key: Some(Uuid::new_v4()),
            agent: None,
            provider: Provider::OpenAi,
            model: "gpt-4o-mini".into(),
            prompt_tokens: 31,
            completion_tokens: 0,
            cached_tokens: 7,
            cost_micro_usd: 9_223_372_036_854_775_807,
            latency_ms: 12,
            estimated: false,
            streamed: true,
            cancelled: false,
            idempotency_key: "call-1".into(),
            occurred_at_ms: -1,
            kind: CallKind::Chat,
        }
    }

    /// The hand-written JSON is serde's, byte for byte, and reads back as the same event:
    /// writers of either kind and every reader agree.
    #[test]
    fn an_events_json_is_serdes() {
        let all_bytes: String = (0u8..0x80).map(char::from).collect();
        let mut variants = vec![event()];
        let mut e = event();
        e.user = Some(UserId::new());
        e.agent = Some(Uuid::new_v4());
        e.api_key = None;
        e.provider = Provider::OpenAiCompatible;
        e.model = format!("llama3.1:8b \"quoted\" \\ é ✓ {all_bytes}");
        e.idempotency_key = format!("key\u{7f}\u{2028}{all_bytes}");
        e.estimated = true;
        e.cancelled = true;
        e.streamed = false;
        e.prompt_tokens = i64::MIN;
        e.latency_ms = i32::MAX;
        e.kind = CallKind::Embedding;
        variants.push(e);
        let mut e = event();
        e.provider = Provider::Anthropic;
        e.model = String::new();
        e.idempotency_key = String::new();
        variants.push(e);
        for e in variants {
            let json = e.to_json();
            assert_eq!(json, serde_json::to_string(&e).unwrap());
            assert_eq!(serde_json::from_str::<UsageEvent>(&json).unwrap(), e);
            assert_eq!(UsageEvent::from_json(json.as_bytes()), Some(e));
        }
    }

    /// The layout `to_json` writes is read without serde; the same with an escape in a string
    /// is left to serde, and reads the same.
    #[test]
    fn an_events_own_json_is_read_directly() {
        let mut e = event();
        e.user = Some(UserId::new());
        e.agent = Some(Uuid::new_v4());
        e.model = "claude-3-5-haiku-latest é ✓".into();
        e.prompt_tokens = i64::MIN;
        e.completion_tokens = 0;
        e.latency_ms = i32::MAX;
        e.kind = CallKind::Embedding;
        for provider in Provider::ALL {
            e.provider = *provider;
            let json = e.to_json();
            assert_eq!(
                Exact {
                    rest: json.as_bytes()
                }
                .event(),
                Some(e.clone())
            );
        }
        e.model = "a \"quoted\" model".into();
        let json = e.to_json();
        assert_eq!(
            Exact {
                rest: json.as_bytes()
            }
            .event(),
            None
        );
        assert_eq!(UsageEvent::from_json(json.as_bytes()), Some(e));
    }

    /// A process's handed-over entries are taken oldest first, a batch's number of them at a
    /// time; a failed batch's go back in front, in their order; beyond [`HANDED_MOST`] events
    /// an entry is left to the stream.
    #[test]
    fn handed_entries_are_taken_whole_in_order_and_kept_up_to_the_most() {
        let entry = |id: &str, n: usize| HandedEntry {
            id: id.into(),
            events: (0..n).map(|_| Arc::new(event())).collect(),
        };
        let ids =
            |entries: &[HandedEntry]| entries.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        let handed = Handed::default();
        for (id, n) in [("1-0", 3), ("2-0", 4), ("3-0", 2)] {
            handed.add(entry(id, n));
        }

        let first = handed.take(1);
        assert_eq!(ids(&first), ["1-0"]);
        handed.put_back(first);
        assert_eq!(ids(&handed.take(2)), ["1-0", "2-0"]);
        assert_eq!(ids(&handed.take(10)), ["3-0"]);
        assert!(handed.take(10).is_empty());

        handed.add(entry("4-0", HANDED_MOST - 1));
        handed.add(entry("5-0", 2));
        handed.add(entry("6-0", 1));
        assert_eq!(ids(&handed.take(usize::MAX)), ["4-0", "6-0"]);
        assert_eq!(handed.forget(), 0);
    }

    /// An entry's lines are split as `split` splits them: empty lines and a last line without
    /// its end included.
    #[test]
    fn an_entrys_events_are_its_lines() {
        for payload in [
            "",
            "\n",
            "a",
            "a\n",
            "\na",
            "a\nb",
            "a\n\nb\n",
            "{\"x\":1}\n{}",
        ] {
            let here: Vec<&[u8]> = events_of(payload.as_bytes()).collect();
            let split: Vec<&[u8]> = payload.as_bytes().split(|b| *b == b'\n').collect();
            assert_eq!(here, split, "{payload:?}");
        }
    }

    /// Numbers at the ends of their types are read directly; one past them goes to serde.
    #[test]
    fn numbers_at_the_ends_of_their_types_are_read_exactly() {
        for (text, read) in [
            ("0", Some(0)),
            ("-1", Some(-1)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("99999999999999999999", None),
            ("-", None),
            ("", None),
        ] {
            let mut at = Exact {
                rest: text.as_bytes(),
            };
            assert_eq!(at.integer::<i64>(), read, "{text}");
        }
        let mut at = Exact {
            rest: b"2147483648",
        };
        assert_eq!(at.integer::<i32>(), None);
        let mut at = Exact {
            rest: b"-2147483648,",
        };
        assert_eq!(at.integer::<i32>(), Some(i32::MIN));
        assert_eq!(at.rest, b",");
    }

    /// Any other text reads as serde reads it: events written before a field existed, other
    /// spacing or order, and texts that are not events at all.
    #[test]
    fn other_texts_read_as_serde_reads_them() {
        let e = event();
        let json = e.to_json();
        let mut texts = vec![
            json.replace(",\"agent\":null", "")
                .replace(",\"kind\":\"chat\"", ""),
            json.replace(":", ": ").replace(",", ", "),
            format!("{json}\n"),
            format!(" {json}"),
            json.replace("\"provider\":\"openai\"", "\"provider\":\" openai \""),
            json.replacen(&e.id.to_string(), &e.id.simple().to_string(), 1),
            json.replacen(&e.id.to_string(), &e.id.to_string().to_uppercase(), 1),
            serde_json::to_string(&serde_json::from_str::<serde_json::Value>(&json).unwrap())
                .unwrap(),
        ];
        for (field, bad) in [
            ("\"latency_ms\":12", "\"latency_ms\":2147483648"),
            ("\"latency_ms\":12", "\"latency_ms\":012"),
            ("\"latency_ms\":12", "\"latency_ms\":12.0"),
            ("\"latency_ms\":12", "\"latency_ms\":-0"),
            ("\"prompt_tokens\":31", "\"prompt_tokens\":1e3"),
            ("\"prompt_tokens\":31", "\"prompt_tokens\":-"),
            (
                "\"cost_micro_usd\":9223372036854775807",
                "\"cost_micro_usd\":9223372036854775808",
            ),
            ("\"provider\":\"openai\"", "\"provider\":\"mistral\""),
            ("\"kind\":\"chat\"", "\"kind\":\"image\""),
            ("\"streamed\":true", "\"streamed\":1"),
            ("\"user\":null", "\"user\":\"not-an-id\""),
            ("\"model\":\"gpt-4o-mini\"", "\"model\":\"gpt\u{1}\""),
        ] {
            assert!(json.contains(field), "{field}");
            texts.push(json.replacen(field, bad, 1));
        }
        texts.push(format!("{json}}}"));
        texts.push(json[..json.len() - 1].to_string());
        texts.push(String::new());
        for text in texts {
            assert_eq!(
                UsageEvent::from_json(text.as_bytes()),
                serde_json::from_str::<UsageEvent>(&text).ok(),
                "{text}"
            );
        }
        let mut bytes = json.into_bytes();
        let at = bytes.iter().position(|&b| b == b'g').unwrap();
        bytes[at] = 0xff;
        assert_eq!(UsageEvent::from_json(&bytes), None);
    }
}
