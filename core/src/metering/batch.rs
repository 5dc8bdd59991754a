//! Budget operations of concurrent calls in one Redis round trip (a group commit).
//!
//! Every reservation and settle goes through [`Batch::run`]. An operation that arrives when no
//! script is in flight is sent at once, by its own call: a lone call waits for nothing and
//! takes no detour through another task. Operations that arrive while a script is in flight
//! wait; when it is back, a task sends all of them together in the next script (up to
//! [`MOST`]) and goes on until none wait. Under load one script therefore carries many calls'
//! operations, and Redis and the server do a round trip's fixed work (a read and a write on
//! each side, a script started, the wake-ups between tasks) once for many calls. Each operation
//! is still atomic on its own, and each caller gets its own answer.
//!
//! The task owns the operations it sends, so a caller that goes away (its request dropped)
//! takes nobody else's operation with it, and its own goes out as it would have: a settle
//! whose caller left is still counted and handed to the ledger.
//!
//! A settle whose call has already answered its client ([`Batch::defer_then`]) waits for
//! company: for up to [`LINGER`], or until an operation that has a caller waiting on it goes
//! (a reservation, a read of the counters), whichever comes first; it goes at once only when a
//! full script's worth waits. A script's return does not send the settles that came meanwhile
//! either: they linger in turn. Nobody waits for them, so the wait costs no latency, and a
//! script carries the settles of all the calls that answered during the linger instead of the
//! few that answered during one round trip (under load, scripts would otherwise go back to
//! back, each with its fixed work on both sides for a few calls). It never makes
//! the budget less exact: until it is settled the call's worst case stays reserved, and any
//! operation sent later (a reservation, a read of the counters through [`Batch::flush`]) goes
//! in the same script or a later one, after it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use uuid::Uuid;

use super::ledger::{ledger_stream, Handed, HandedEntry, UsageEvent};
use crate::{Error, Redis, Result};

/// The most operations one script carries (a script holds Redis while it runs).
pub(super) const MOST: usize = 128;

/// How long a deferred settle waits for others to go in the same script.
pub(super) const LINGER: Duration = Duration::from_millis(5);

// Runs each operation in turn; each takes its keys from KEYS and its arguments from ARGV where
// the one before it left off, and answers three numbers. After the answers come two numbers
// per stream that settles added an entry to, in the order of the first settle of each: the
// entry's id (`<ms>-<seq>`), so that the process keeps its events for its ledger writer.
//
// reserve  KEYS counters, reservations[, the clinic's and the key's requests this minute]
//          ARGV 'r', id, amount, limit (-1: none), now (ms), expiry (ms), counters' lifetime (s),
//               the clinic's and the key's requests per minute (-1: none), rated (1 or 0),
//               wanted (at least amount), slice (1 or 0), given back first (slices only)
//          -> {1, used, granted} reserved; {0, used, reserved} over the limit;
//             {2, clinic's, key's} over a per-minute limit; {-1, 0, 0} the counters are missing
//             (rebuild them and try again)
//          A call's reservation is granted `amount` exactly. A slice (a process's share of the
//          allowance, see `budget.rs`) is granted `amount` and, as far as the limit leaves room
//          (an eighth of what is left at most), up to `wanted`; it adds to what the slice
//          already holds, after giving back the tokens the process no longer counts on.
// settle   KEYS counters, reservations, the ledger stream
//          ARGV 's', id, the event ('' to release without charging), prompt, completion, cost,
//               the amount reserved, slice (1 or 0), calls
//          -> {1, 0, 0}; {1, 1, 0} for a slice that is gone (expired, or Redis was flushed)
//          A call on a slice takes its amount out of the slice's field instead of removing a
//          field of its own. The settles of several calls on one slice may come as one
//          (`calls` of them: their events one per line, their numbers summed; see
//          `Batch::send`). The events of a script's settles go to the stream as one entry
//          (field `e`: the events, one JSON object per line), whose id follows the answers
//          (see below). The ledger writer removes the entry once its events are written.
// return   KEYS counters, reservations
//          ARGV 'g', the slice's id
//          -> {1, what it held, 0}: a slice is given back whole
//
// Counters and reservations of one clinic-month live in one hash: `tokens`, `prompt`,
// `completion`, `cost`, `requests`, `reserved`, and `r:<id>` per reservation in flight, with a
// sorted set of reservation ids by expiry next to it. A reservation counts the request against
// the per-minute limits first (once: a retry after a rebuild is not rated), and gives back
// reservations whose caller vanished without settling. A settle whose counters vanished meanwhile
// (Redis flushed) leaves them for the next reservation to rebuild from the ledger rather than
// restarting them from this one call.
//
// What Redis does per operation is kept small, because a script costs Redis a few microseconds
// per command it runs: a clinic-month's counters are read once per script (`HMGET`, only when a
// reservation needs them) and its counters written once at its end (one `HINCRBY` per field
// that changed, however many operations changed it); every read in between goes through the
// script's own copy, so each operation still sees the ones before it. A settle finds its
// reservation still held when removing its `r:<id>` field removes something (`HDEL` answers 1),
// and takes the amount from its own caller, who made the reservation, instead of reading it
// first; the field itself stays, because expired reservations are given back by the amount it
// holds (by any replica, old or new). Settles on one slice read its field once and write it
// once per script (before any other operation, which may read or change it, and at the end),
// and the events of all settles go in one stream entry. Expired reservations are looked for
// once per script and clinic-month, and only when something is reserved.
const SCRIPT: &str = r#"
local out = {}
local k, a = 1, 1
local seen, order = {}, {}
-- Settles' takes from slices, applied with one HINCRBY per slice (before any other operation
-- that reads or changes a slice, and at the end), and the events for each stream.
local taken, takes = {}, {}
local events, streams = {}, {}
local function apply_takes()
  for _, t in ipairs(takes) do
    if t.take > 0 then redis.call('HINCRBY', t.c, t.f, -t.take) end
  end
  taken, takes = {}, {}
end
while a <= #ARGV do
  local c, z = KEYS[k], KEYS[k + 1]
  local id = ARGV[a + 1]
  local s = seen[c]
  if not s then
    -- Changes to write at the end, and what was read (used = -1: not yet; exists = 0: not
    -- known yet, 1: yes, 2: no).
    s = {tokens = 0, prompt = 0, completion = 0, cost = 0, requests = 0, held = 0,
         used = -1, reserved = 0, exists = 0, swept = false, expires = false}
    seen[c] = s
    order[#order + 1] = c
  end
  if ARGV[a] ~= 's' and #takes > 0 then apply_takes() end
  if ARGV[a] == 'r' then
    local status, x, y = nil, 0, 0
    if ARGV[a + 9] == '1' then
      local ka, kb = KEYS[k + 2], KEYS[k + 3]
      x = redis.call('INCR', ka)
      if x == 1 then redis.call('EXPIRE', ka, 61) end
      if kb ~= ka then
        y = redis.call('INCR', kb)
        if y == 1 then redis.call('EXPIRE', kb, 61) end
      end
      local la, lb = tonumber(ARGV[a + 7]), tonumber(ARGV[a + 8])
      if (la >= 0 and x > la) or (lb >= 0 and kb ~= ka and y > lb) then status = 2 end
      k = k + 2
    end
    if not status then
      if s.used < 0 then
        local v = redis.call('HMGET', c, 'tokens', 'reserved')
        s.used, s.reserved = tonumber(v[1] or '0'), tonumber(v[2] or '0')
        if v[1] then s.exists = 1 end
      end
      if s.exists == 0 then s.exists = redis.call('EXISTS', c) == 1 and 1 or 2 end
      if s.exists == 2 then
        status, x, y = -1, 0, 0
      else
        if not s.swept then
          s.swept = true
          if s.reserved + s.held > 0 then
            local expired = redis.call('ZRANGEBYSCORE', z, '-inf', ARGV[a + 4], 'LIMIT', 0, 100)
            for _, e in ipairs(expired) do
              local amt = redis.call('HGET', c, 'r:' .. e)
              if amt then
                s.held = s.held - tonumber(amt)
                redis.call('HDEL', c, 'r:' .. e)
              end
              redis.call('ZREM', z, e)
            end
          end
        end
        local slice, back = ARGV[a + 11] == '1', tonumber(ARGV[a + 12])
        if slice and back > 0 then
          local v = redis.call('HGET', c, 'r:' .. id)
          if v then
            back = math.min(back, tonumber(v))
            redis.call('HINCRBY', c, 'r:' .. id, -back)
            s.held = s.held - back
          end
        end
        local used, reserved = s.used + s.tokens, s.reserved + s.held
        local amount, limit = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
        if limit >= 0 and used + reserved + amount > limit then
          status, x, y = 0, used, reserved
        else
          local grant, wanted = amount, tonumber(ARGV[a + 10])
          if wanted > amount then
            if limit < 0 then
              grant = wanted
            else
              grant = math.max(amount, math.min(wanted, math.floor((limit - used - reserved) / 8)))
            end
          end
          s.held = s.held + grant
          if slice then
            redis.call('HINCRBY', c, 'r:' .. id, grant)
          else
            redis.call('HSET', c, 'r:' .. id, grant)
          end
          redis.call('ZADD', z, ARGV[a + 5], id)
          if not s.expires then
            s.expires = true
            redis.call('EXPIRE', z, ARGV[a + 6])
          end
          status, x, y = 1, used, grant
        end
      end
    end
    out[#out + 1] = status
    out[#out + 1] = x
    out[#out + 1] = y
    k = k + 2
    a = a + 13
  elseif ARGV[a] == 'g' then
    local v = redis.call('HGET', c, 'r:' .. id)
    redis.call('ZREM', z, id)
    if v then
      redis.call('HDEL', c, 'r:' .. id)
      s.exists = 1
      s.held = s.held - tonumber(v)
    end
    out[#out + 1] = 1
    out[#out + 1] = tonumber(v or '0')
    out[#out + 1] = 0
    k = k + 2
    a = a + 2
  else
    local gone = 0
    if ARGV[a + 7] == '1' then
      -- (A slice's id is unique: it names one clinic-month's field.)
      local t = taken[id]
      if not t then
        local f = 'r:' .. id
        local v = redis.call('HGET', c, f)
        t = {c = c, f = f, left = v and tonumber(v), take = 0}
        taken[id] = t
        takes[#takes + 1] = t
      end
      if t.left then
        local take = math.min(tonumber(ARGV[a + 6]), t.left)
        t.left = t.left - take
        t.take = t.take + take
        s.exists = 1
        s.held = s.held - take
      else
        gone = 1
      end
    else
      redis.call('ZREM', z, id)
      if redis.call('HDEL', c, 'r:' .. id) == 1 then
        s.exists = 1
        s.held = s.held - tonumber(ARGV[a + 6])
      end
    end
    if ARGV[a + 2] ~= '' then
      if s.exists == 0 then s.exists = redis.call('EXISTS', c) == 1 and 1 or 2 end
      if s.exists == 1 then
        local p, q = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
        s.tokens = s.tokens + p + q
        s.prompt = s.prompt + p
        s.completion = s.completion + q
        s.cost = s.cost + tonumber(ARGV[a + 5])
        s.requests = s.requests + tonumber(ARGV[a + 8])
      end
      local st = KEYS[k + 2]
      if not events[st] then
        events[st] = {}
        streams[#streams + 1] = st
      end
      table.insert(events[st], ARGV[a + 2])
    end
    out[#out + 1] = 1
    out[#out + 1] = gone
    out[#out + 1] = 0
    k = k + 3
    a = a + 9
  end
end
apply_takes()
for _, st in ipairs(streams) do
  local e = events[st]
  local added = redis.call('XADD', st, '*', 'e', #e == 1 and e[1] or table.concat(e, '\n'))
  local ms, seq = string.match(added, '^(%d+)%-(%d+)$')
  out[#out + 1] = tonumber(ms)
  out[#out + 1] = tonumber(seq)
end
for _, c in ipairs(order) do
  local s = seen[c]
  if s.tokens ~= 0 then redis.call('HINCRBY', c, 'tokens', s.tokens) end
  if s.prompt ~= 0 then redis.call('HINCRBY', c, 'prompt', s.prompt) end
  if s.completion ~= 0 then redis.call('HINCRBY', c, 'completion', s.completion) end
  if s.cost ~= 0 then redis.call('HINCRBY', c, 'cost', s.cost) end
  if s.requests ~= 0 then redis.call('HINCRBY', c, 'requests', s.requests) end
  if s.held ~= 0 then redis.call('HINCRBY', c, 'reserved', s.held) end
end
return out
"#;

/// One budget operation (see the script above).
pub(super) enum Op {
    Reserve {
        counters: String,
        reservations: String,
        /// The clinic's and the key's per-minute counters, when the request is rated.
        rate: Option<(String, String)>,
        id: Uuid,
        amount: i64,
        limit: i64,
        now_ms: i64,
        expires_ms: i64,
        ttl_secs: i64,
        requests_per_minute: i64,
        key_requests_per_minute: i64,
        /// Grant up to this much when the limit leaves room (at least `amount`).
        wanted: i64,
        /// `id` is a slice's: add to what it holds, after giving back `back`.
        slice: bool,
        back: i64,
    },
    /// Gives a slice back whole.
    Return {
        counters: String,
        reservations: String,
        id: Uuid,
    },
    Settle {
        counters: String,
        reservations: String,
        stream: String,
        id: Uuid,
        /// The usage event's JSON; empty to release without charging.
        event: String,
        /// The event itself, kept in this process for its ledger writer once its entry is in
        /// the stream (`None`: the writer reads it back from the stream, later).
        usage: Option<Arc<UsageEvent>>,
        prompt_tokens: i64,
        completion_tokens: i64,
        cost_micro_usd: i64,
        /// What the reservation holds (given back if it is still held).
        amount: i64,
        /// `id` is the slice the call's reservation was taken from.
        slice: bool,
    },
    /// Nothing: answered `[1, 0, 0]` once every operation queued before it has been answered
    /// ([`Batch::flush`]). Never sent to Redis.
    Flush,
}

impl Op {
    /// Puts the operation in `call`; a settle that is the first of `together`, with theirs.
    fn add_to(&self, together: Option<&Together>, call: &mut redis::ScriptInvocation<'_>) {
        match self {
            Op::Reserve {
                counters,
                reservations,
                rate,
                id,
                amount,
                limit,
                now_ms,
                expires_ms,
                ttl_secs,
                requests_per_minute,
                key_requests_per_minute,
                wanted,
                slice,
                back,
            } => {
                call.key(counters).key(reservations);
                if let Some((clinic, key)) = rate {
                    call.key(clinic).key(key);
                }
                call.arg("r")
                    .arg(id.to_string())
                    .arg(amount)
                    .arg(limit)
                    .arg(now_ms)
                    .arg(expires_ms)
                    .arg(ttl_secs)
                    .arg(requests_per_minute)
                    .arg(key_requests_per_minute)
                    .arg(if rate.is_some() { "1" } else { "0" })
                    .arg(wanted)
                    .arg(if *slice { "1" } else { "0" })
                    .arg(back);
            }
            Op::Return {
                counters,
                reservations,
                id,
            } => {
                call.key(counters).key(reservations);
                call.arg("g").arg(id.to_string());
            }
            Op::Settle {
                counters,
                reservations,
                stream,
                id,
                event,
                prompt_tokens,
                completion_tokens,
                cost_micro_usd,
                amount,
                slice,
                usage: _,
            } => {
                // As the first of settles taken together, it carries theirs.
                let (event, prompt, completion, cost, amount, calls) = match together {
                    Some(t) => (
                        t.events.as_str(),
                        t.prompt_tokens,
                        t.completion_tokens,
                        t.cost_micro_usd,
                        t.amount,
                        t.calls,
                    ),
                    None => (
                        event.as_str(),
                        *prompt_tokens,
                        *completion_tokens,
                        *cost_micro_usd,
                        *amount,
                        1,
                    ),
                };
                call.key(counters).key(reservations).key(stream);
                call.arg("s")
                    .arg(id.to_string())
                    .arg(event)
                    .arg(prompt)
                    .arg(completion)
                    .arg(cost)
                    .arg(amount)
                    .arg(if *slice { "1" } else { "0" })
                    .arg(calls);
            }
            Op::Flush => {}
        }
    }

    /// A settle that charges a call on a slice: the slice's id and the keys it goes with.
    fn charge_on_slice(&self) -> Option<(&Uuid, &str, &str)> {
        match self {
            Op::Settle {
                counters,
                stream,
                id,
                event,
                slice: true,
                ..
            } if !event.is_empty() => Some((id, counters, stream)),
            _ => None,
        }
    }
}

/// The settles of several calls on one slice, sent as one operation (see [`Batch::send`]).
struct Together {
    /// Where the first of them is among the operations.
    first: usize,
    events: String,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_micro_usd: i64,
    amount: i64,
    calls: i64,
}

impl Together {
    fn new(first: usize, op: &Op) -> Self {
        let mut t = Together {
            first,
            events: String::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_micro_usd: 0,
            amount: 0,
            calls: 0,
        };
        t.add(op);
        t
    }

    fn add(&mut self, op: &Op) {
        if let Op::Settle {
            event,
            prompt_tokens,
            completion_tokens,
            cost_micro_usd,
            amount,
            ..
        } = op
        {
            if self.calls > 0 {
                self.events.push('\n');
            }
            self.events.push_str(event);
            self.prompt_tokens = self.prompt_tokens.saturating_add(*prompt_tokens);
            self.completion_tokens = self.completion_tokens.saturating_add(*completion_tokens);
            self.cost_micro_usd = self.cost_micro_usd.saturating_add(*cost_micro_usd);
            self.amount = self.amount.saturating_add(*amount);
            self.calls += 1;
        }
    }
}

/// What a script is sent: an operation as it is, or settles taken together.
enum Sent {
    One(usize),
    Together(Together),
}

/// The operations of one script, with the settles of calls on one slice taken together: those
/// that follow one another (no reservation or return between them, which may read or change
/// the slice) go as one, their events in one text and their numbers summed. The script does
/// for them what it would for each in turn (the slice's tokens are taken until none are left
/// either way, and a slice that is gone is gone for all), for the cost of one; each still gets
/// its answer. Returns what to send and, for each of `ops`, which of that answers it (`None` for
/// [`Op::Flush`], which goes nowhere).
fn together(ops: &[Op]) -> (Vec<Sent>, Vec<Option<usize>>) {
    let mut sent: Vec<Sent> = Vec::with_capacity(ops.len());
    let mut of = Vec::with_capacity(ops.len());
    // Where the settles since the last reservation or return start in `sent`.
    let mut run = 0;
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Flush => {
                of.push(None);
                continue;
            }
            Op::Settle { .. } => {
                if let Some(key) = op.charge_on_slice() {
                    let earlier = (run..sent.len()).find(|&j| {
                        let first = match &sent[j] {
                            Sent::One(first) => *first,
                            Sent::Together(t) => t.first,
                        };
                        ops[first].charge_on_slice() == Some(key)
                    });
                    if let Some(j) = earlier {
                        if let Sent::One(first) = sent[j] {
                            sent[j] = Sent::Together(Together::new(first, &ops[first]));
                        }
                        if let Sent::Together(t) = &mut sent[j] {
                            t.add(op);
                        }
                        of.push(Some(j));
                        continue;
                    }
                }
            }
            Op::Reserve { .. } | Op::Return { .. } => run = sent.len() + 1,
        }
        of.push(Some(sent.len()));
        sent.push(Sent::One(i));
    }
    (sent, of)
}

/// An operation's answer: `[status, a, b]` as the script says.
pub(super) type Answer = [i64; 3];

struct Waiting {
    op: Op,
    answer: Reply,
    /// A settle whose call has answered ([`Batch::defer_then`]): nobody waits for it.
    deferred: bool,
}

/// Where an operation's answer goes.
enum Reply {
    /// To a caller waiting on the receiver.
    Channel(oneshot::Sender<Result<Answer>>),
    /// To a function, run by whoever has the answer ([`Batch::defer_then`]).
    Then(Then),
}

type ThenFn = Box<dyn FnOnce(Result<Answer>) + Send>;

/// A function for an operation's answer; called with an error if the operation is dropped
/// unanswered (its batch ended early), as a waiting caller's receiver would see one.
struct Then(Option<ThenFn>);

impl Reply {
    fn send(self, answer: Result<Answer>) {
        match self {
            Reply::Channel(sender) => {
                let _ = sender.send(answer);
            }
            Reply::Then(mut then) => {
                if let Some(f) = then.0.take() {
                    f(answer);
                }
            }
        }
    }
}

impl Drop for Then {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(lost()));
        }
    }
}

/// The error of an operation whose batch ended before it was answered.
fn lost() -> Error {
    Error::Internal("a budget operation was lost (its batch ended early)".into())
}

#[derive(Default)]
struct Queue {
    /// A script is in flight; whoever sent it hands on what waits here when it returns.
    busy: bool,
    waiting: Vec<Waiting>,
    /// A task will send what waits once [`LINGER`] is over (unless a script does first).
    lingering: bool,
}

/// Budget operations batched across concurrent calls (see the module's documentation).
#[derive(Clone)]
pub(super) struct Batch {
    redis: Redis,
    /// The ledger stream, whose entries' events the process keeps for its writer, in
    /// `handed`.
    ledger: Arc<str>,
    handed: Arc<Handed>,
    script: Arc<redis::Script>,
    queue: Arc<Mutex<Queue>>,
    /// Scripts sent and the operations they carried, since the start.
    sent: Arc<[AtomicU64; 2]>,
}

impl Batch {
    pub fn new(redis: Redis) -> Self {
        Self {
            ledger: ledger_stream(&redis).into(),
            handed: redis.shared(),
            redis,
            script: Arc::new(redis::Script::new(SCRIPT)),
            queue: Arc::default(),
            sent: Arc::default(),
        }
    }

    /// Scripts sent so far, and the operations they carried.
    pub fn sent(&self) -> (u64, u64) {
        (
            self.sent[0].load(Ordering::Relaxed),
            self.sent[1].load(Ordering::Relaxed),
        )
    }

    /// Runs `op`: at once when no script is in flight and nothing waits, else with whatever
    /// waits, in the next script (after it: deferred settles go before a reservation).
    pub async fn run(&self, op: Op) -> Result<Answer> {
        enum Turn {
            Now(Op),
            Later(oneshot::Receiver<Result<Answer>>),
        }
        let turn = {
            let mut queue = self.lock();
            if queue.busy || !queue.waiting.is_empty() {
                let (answer, answered) = oneshot::channel();
                queue.waiting.push(Waiting {
                    op,
                    answer: Reply::Channel(answer),
                    deferred: false,
                });
                if !queue.busy {
                    // Deferred settles wait: this operation goes after them, in a script sent
                    // by a task (which owns them all, whatever happens to this call).
                    queue.busy = true;
                    drop(queue);
                    tokio::spawn(self.clone().drain());
                }
                Turn::Later(answered)
            } else {
                queue.busy = true;
                Turn::Now(op)
            }
        };
        let op = match turn {
            Turn::Now(op) => op,
            Turn::Later(answered) => return Self::answer(answered).await,
        };
        // Nothing in flight: this call sends its own operation now. Operations that arrive
        // meanwhile are sent by a task once it is back (or, should this call be dropped
        // first, at once).
        let _handover = Handover {
            batch: self,
            armed: true,
        };
        let mut answers = self.send(std::slice::from_ref(&op)).await?;
        answers
            .pop()
            .ok_or_else(|| Error::Internal("the budget script answered nothing".into()))
    }

    /// Queues `op` (a settle whose call has answered) to go with the next script, or on its
    /// own after [`LINGER`]; its answer goes to `then`, run by the task that receives it (so it
    /// must not block), or with an error if the operation is lost. No task waits for it.
    /// Queued before this returns, so anything sent after it (a reservation, [`Self::flush`])
    /// goes after it.
    pub fn defer_then(&self, op: Op, then: impl FnOnce(Result<Answer>) + Send + 'static) {
        self.queue_deferred(Waiting {
            op,
            answer: Reply::Then(Then(Some(Box::new(then)))),
            deferred: true,
        });
    }

    /// Queues `op` like [`Self::defer_then`], its answer on the receiver.
    #[cfg(test)]
    pub fn defer(&self, op: Op) -> oneshot::Receiver<Result<Answer>> {
        let (answer, answered) = oneshot::channel();
        self.queue_deferred(Waiting {
            op,
            answer: Reply::Channel(answer),
            deferred: true,
        });
        answered
    }

    fn queue_deferred(&self, waiting: Waiting) {
        let mut queue = self.lock();
        queue.waiting.push(waiting);
        if queue.busy {
            return;
        }
        if queue.waiting.len() >= MOST {
            queue.busy = true;
            drop(queue);
            tokio::spawn(self.clone().drain());
        } else {
            self.linger(queue);
        }
    }

    /// Unless a task already will, starts one that sends what waits once [`LINGER`] is over
    /// (if no script has taken it by then). Called with no script in flight.
    fn linger(&self, mut queue: std::sync::MutexGuard<'_, Queue>) {
        if queue.lingering {
            return;
        }
        queue.lingering = true;
        drop(queue);
        let batch = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER).await;
            let send = {
                let mut queue = batch.lock();
                queue.lingering = false;
                // A script in flight takes what waits when it is back.
                let send = !queue.busy && !queue.waiting.is_empty();
                queue.busy |= send;
                send
            };
            if send {
                batch.drain().await;
            }
        });
    }

    /// What follows a script's return: `true` when the next script should go now (something
    /// that waits has a caller waiting on it, or a full script's worth waits); otherwise no
    /// script is in flight any more, and settles that wait only for company linger until
    /// [`LINGER`] is over or an operation with a caller comes (which takes them along). Under
    /// load this keeps scripts from going back to back with a few settles each: each carries
    /// what came during the linger, and Redis and the server do a script's fixed work once for
    /// many more calls.
    fn next_now(&self) -> bool {
        let mut queue = self.lock();
        if queue.waiting.is_empty() {
            queue.busy = false;
            return false;
        }
        if queue.waiting.len() >= MOST || queue.waiting.iter().any(|w| !w.deferred) {
            return true;
        }
        queue.busy = false;
        self.linger(queue);
        false
    }

    /// Returns once every operation queued before the call has been answered (at once when
    /// none waits or is in flight): what reads Redis after it sees their effects.
    pub async fn flush(&self) -> Result<()> {
        let idle = {
            let queue = self.lock();
            !queue.busy && queue.waiting.is_empty()
        };
        if idle {
            return Ok(());
        }
        self.run(Op::Flush).await.map(|_| ())
    }

    /// The answer on `answered`, or an error if its batch ended early.
    pub async fn answer(answered: oneshot::Receiver<Result<Answer>>) -> Result<Answer> {
        answered.await.unwrap_or_else(|_| Err(lost()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends what waits, a script at a time, until nothing does or only settles that may
    /// linger do ([`Self::next_now`]).
    async fn drain(self) {
        loop {
            let batch: Vec<Waiting> = {
                let mut queue = self.lock();
                if queue.waiting.is_empty() {
                    queue.busy = false;
                    return;
                }
                let n = queue.waiting.len().min(MOST);
                queue.waiting.drain(..n).collect()
            };
            // Should this task end early (a panic), its operations are answered with an error
            // as their senders drop, and the next operation starts again.
            let mut handover = Handover {
                batch: &self,
                armed: true,
            };
            let (ops, answers): (Vec<Op>, Vec<_>) =
                batch.into_iter().map(|w| (w.op, w.answer)).unzip();
            match self.send(&ops).await {
                Ok(numbers) => {
                    for (answer, n) in answers.into_iter().zip(numbers) {
                        answer.send(Ok(n));
                    }
                }
                Err(e) => {
                    for answer in answers {
                        answer.send(Err(e.copy()));
                    }
                }
            }
            handover.armed = false;
            if !self.next_now() {
                return;
            }
        }
    }

    /// One script carrying `ops`; their answers in order. [`Op::Flush`] goes in no script
    /// (with nothing else, none is sent).
    async fn send(&self, ops: &[Op]) -> Result<Vec<Answer>> {
        const FLUSHED: Answer = [1, 0, 0];
        let real = ops.iter().filter(|op| !matches!(op, Op::Flush)).count();
        if real == 0 {
            return Ok(vec![FLUSHED; ops.len()]);
        }
        crate::observe::budget_batch(real);
        self.sent[0].fetch_add(1, Ordering::Relaxed);
        self.sent[1].fetch_add(real as u64, Ordering::Relaxed);
        let (sent, of) = together(ops);
        let mut call = self.script.prepare_invoke();
        for s in &sent {
            match s {
                Sent::One(i) => ops[*i].add_to(None, &mut call),
                Sent::Together(t) => ops[t.first].add_to(Some(t), &mut call),
            }
        }
        let numbers: Vec<i64> = call.invoke_async(&mut self.redis.conn()).await?;
        let streams = streams_of(ops);
        if numbers.len() != sent.len() * 3 + streams.len() * 2 {
            return Err(Error::Internal(format!(
                "the budget script answered {} numbers for {} operations",
                numbers.len(),
                sent.len()
            )));
        }
        for (stream, entry) in streams.iter().zip(numbers[sent.len() * 3..].chunks(2)) {
            if **stream == *self.ledger {
                self.hand_over(ops, stream, entry[0], entry[1]);
            }
        }
        Ok(of
            .iter()
            .map(|i| match i {
                Some(i) => [numbers[3 * i], numbers[3 * i + 1], numbers[3 * i + 2]],
                None => FLUSHED,
            })
            .collect())
    }

    /// Keeps the events of the entry `<ms>-<seq>` that `ops`' settles added to `stream`, for
    /// the process's ledger writer; unless one of them came without its event (then the writer
    /// reads the entry back from the stream).
    fn hand_over(&self, ops: &[Op], stream: &str, ms: i64, seq: i64) {
        let mut events = Vec::new();
        for op in ops {
            if let Op::Settle {
                stream: s,
                event,
                usage,
                ..
            } = op
            {
                if s == stream && !event.is_empty() {
                    match usage {
                        Some(usage) => events.push(usage.clone()),
                        None => return,
                    }
                }
            }
        }
        self.handed.add(HandedEntry {
            id: format!("{ms}-{seq}"),
            events,
        });
    }
}

/// The streams `ops`' settles add an entry to, in the order the script adds them (of the
/// first settle with an event of each).
fn streams_of(ops: &[Op]) -> Vec<&str> {
    let mut streams: Vec<&str> = Vec::new();
    for op in ops {
        if let Op::Settle { stream, event, .. } = op {
            if !event.is_empty() && !streams.contains(&stream.as_str()) {
                streams.push(stream);
            }
        }
    }
    streams
}

/// Whoever sends a script hands the queue on when it is back, or when it is dropped before (its
/// request went away, a panic): what arrived meanwhile is sent by a task, and with nothing
/// waiting the next operation goes at once. No operation is left waiting behind a script that
/// will never come back.
struct Handover<'a> {
    batch: &'a Batch,
    armed: bool,
}

impl Drop for Handover<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            if self.batch.next_now() {
                tokio::spawn(self.batch.clone().drain());
            }
            return;
        }
        let mut queue = self.batch.lock();
        if queue.waiting.is_empty() {
            queue.busy = false;
        } else {
            // No runtime to send them on (it is shutting down): they are answered with an
            // error as they drop (out of the lock: an answer's function may take it).
            let lost = std::mem::take(&mut queue.waiting);
            queue.busy = false;
            drop(queue);
            drop(lost);
        }
    }
}

impl Error {
    /// The same error for another operation of a failed script.
    fn copy(&self) -> Error {
        match self {
            Error::Redis(e) => Error::Redis(copy(e)),
            other => Error::Internal(other.to_string()),
        }
    }
}

/// A Redis error for each operation of a failed batch: the same kind, so that an outage still
/// reads as one ([`Error::is_outage`]).
fn copy(e: &redis::RedisError) -> redis::RedisError {
    use std::io::ErrorKind;
    if e.is_io_error() {
        let kind = if e.is_connection_refusal() {
            ErrorKind::ConnectionRefused
        } else if e.is_timeout() {
            ErrorKind::TimedOut
        } else if e.is_connection_dropped() {
            ErrorKind::ConnectionReset
        } else {
            ErrorKind::Other
        };
        return std::io::Error::new(kind, e.to_string()).into();
    }
    (e.kind(), "Redis error", e.to_string()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserve(c: &str, z: &str, id: Uuid, amount: i64, limit: i64) -> Op {
        Op::Reserve {
            counters: c.into(),
            reservations: z.into(),
            rate: None,
            id,
            amount,
            limit,
            now_ms: 1_000,
            expires_ms: i64::MAX / 2,
            ttl_secs: 600,
            requests_per_minute: -1,
            key_requests_per_minute: -1,
            wanted: amount,
            slice: false,
            back: 0,
        }
    }

    fn settle(c: &str, z: &str, stream: &str, id: Uuid, tokens: (i64, i64), amount: i64) -> Op {
        Op::Settle {
            counters: c.into(),
            reservations: z.into(),
            stream: stream.into(),
            id,
            event: if tokens == (0, 0) {
                String::new()
            } else {
                format!("{{\"id\":\"{id}\"}}")
            },
            prompt_tokens: tokens.0,
            completion_tokens: tokens.1,
            cost_micro_usd: 3,
            amount,
            slice: false,
            usage: None,
        }
    }

    async fn test_redis() -> Redis {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        Redis::connect(&url, &format!("test:{}:", Uuid::new_v4()))
            .await
            .expect("connect to Redis")
    }

    /// A clinic-month's counters, all zero (as a rebuild from an empty ledger leaves them).
    async fn empty_counters(redis: &Redis, c: &str) {
        let _: () = redis::cmd("HSET")
            .arg(c)
            .arg(&["tokens", "0", "prompt", "0", "completion", "0", "cost", "0"])
            .arg(&["requests", "0", "reserved", "0"])
            .query_async(&mut redis.conn())
            .await
            .unwrap();
    }

    /// The entries of `stream`, oldest first: each one's id and fields.
    async fn entries(redis: &Redis, stream: &str) -> Vec<(String, Vec<(String, String)>)> {
        redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query_async(&mut redis.conn())
            .await
            .unwrap()
    }

    /// The `e` field of each entry of `stream`, oldest first.
    async fn handed_over(redis: &Redis, stream: &str) -> Vec<String> {
        entries(redis, stream)
            .await
            .into_iter()
            .flat_map(|(_, fields)| fields.into_iter().map(|(_, v)| v))
            .collect()
    }

    /// A usage event of the settle of `id` (the rest as a gateway call's).
    fn usage(id: Uuid) -> Arc<UsageEvent> {
        Arc::new(UsageEvent {
            id,
            tenant: crate::tenancy::TenantId::new(),
            user: None,
            api_key: None,
            agent: None,
            provider: crate::Provider::OpenAi,
            model: "gpt-4o-mini".into(),
            prompt_tokens: 1,
            completion_tokens: 2,
            cached_tokens: 0,
            cost_micro_usd: 3,
            latency_ms: 4,
            estimated: false,
            streamed: false,
            cancelled: false,
            idempotency_key: id.to_string(),
            occurred_at_ms: 5,
            kind: crate::metering::CallKind::Chat,
        })
    }

    /// The settle of `id` on `stream` with its usage event (kept in the process when the
    /// stream is the ledger's).
    fn settle_with_usage(c: &str, z: &str, stream: &str, id: Uuid) -> Op {
        let mut op = settle(c, z, stream, id, (1, 2), 10);
        if let Op::Settle { usage, .. } = &mut op {
            *usage = Some(self::usage(id));
        }
        op
    }

    /// A script's entry in the ledger stream is kept in the process, with its id as Redis gave
    /// it, for the process's ledger writer: the events of the settles that charged, as one
    /// entry. A release adds nothing, and an entry of another stream is not kept.
    #[tokio::test]
    async fn a_scripts_ledger_entry_is_kept_for_the_writer_with_its_id() {
        let redis = test_redis().await;
        let (c, z) = (redis.key("c"), redis.key("z"));
        let (ledger, other) = (ledger_stream(&redis), redis.key("other"));
        empty_counters(&redis, &c).await;
        let batch = Batch::new(redis.clone());
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        for &id in &ids {
            batch.run(reserve(&c, &z, id, 10, -1)).await.unwrap();
        }

        let answers = batch
            .send(&[
                settle_with_usage(&c, &z, &ledger, ids[0]),
                settle(&c, &z, &ledger, ids[1], (0, 0), 10),
                settle_with_usage(&c, &z, &other, ids[2]),
                settle_with_usage(&c, &z, &ledger, ids[3]),
            ])
            .await
            .unwrap();

        assert_eq!(answers, vec![[1, 0, 0]; 4]);
        let in_ledger = entries(&redis, &ledger).await;
        assert_eq!(in_ledger.len(), 1);
        assert_eq!(entries(&redis, &other).await.len(), 1);
        assert_eq!(
            batch.handed.held(),
            vec![(in_ledger[0].0.clone(), vec![ids[0], ids[3]])]
        );
    }

    /// Operations of one script see the ones before them, although the counters are read once
    /// and written once at its end; a settle gives back only a reservation still held.
    #[tokio::test]
    async fn operations_in_one_script_see_each_other() {
        let redis = test_redis().await;
        let (c, z, stream) = (redis.key("c"), redis.key("z"), redis.key("s"));
        let batch = Batch::new(redis.clone());
        let [a, b, d, e] = [(); 4].map(|_| Uuid::new_v4());

        // Missing counters are reported, and nothing is reserved.
        let answers = batch.send(&[reserve(&c, &z, a, 600, 1_000)]).await.unwrap();
        assert_eq!(answers, vec![[-1, 0, 0]]);
        empty_counters(&redis, &c).await;

        // The second reservation does not fit beside the first...
        let answers = batch
            .send(&[
                reserve(&c, &z, a, 600, 1_000),
                reserve(&c, &z, b, 600, 1_000),
            ])
            .await
            .unwrap();
        assert_eq!(answers, vec![[1, 0, 600], [0, 0, 600]]);
        // ...but fits once the first is settled earlier in the same script; a settle of
        // something never reserved counts its usage and gives nothing back; a release gives
        // back only its own reservation.
        let answers = batch
            .send(&[
                settle(&c, &z, &stream, a, (30, 20), 600),
                reserve(&c, &z, b, 600, 1_000),
                settle(&c, &z, &stream, d, (1, 1), 500),
                reserve(&c, &z, e, 400, 1_000),
                settle(&c, &z, &stream, b, (0, 0), 600),
            ])
            .await
            .unwrap();
        assert_eq!(
            answers,
            vec![[1, 0, 0], [1, 50, 600], [1, 0, 0], [0, 52, 600], [1, 0, 0]]
        );
        let counters: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(&c)
            .query_async(&mut redis.conn())
            .await
            .unwrap();
        let expected: std::collections::HashMap<String, i64> = [
            ("tokens", 52),
            ("prompt", 31),
            ("completion", 21),
            ("cost", 6),
            ("requests", 2),
            ("reserved", 0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(counters, expected);
        let held: i64 = redis::cmd("ZCARD")
            .arg(&z)
            .query_async(&mut redis.conn())
            .await
            .unwrap();
        let handed: i64 = redis::cmd("XLEN")
            .arg(&stream)
            .query_async(&mut redis.conn())
            .await
            .unwrap();
        // The two events of the script's settles that charged something, as one entry.
        assert_eq!((held, handed), (0, 1));
        assert_eq!(
            handed_over(&redis, &stream).await,
            vec![format!("{{\"id\":\"{a}\"}}\n{{\"id\":\"{d}\"}}")]
        );
        let _: () = redis::cmd("DEL")
            .arg(&[&c, &z, &stream])
            .query_async(&mut redis.conn())
            .await
            .unwrap();
    }

    /// A deferred settle goes before anything sent after it: the next reservation sees it
    /// (here one that fits only once the first call is settled), and so does whatever reads
    /// the counters after a flush. Alone, it is sent once the linger is over.
    #[tokio::test]
    async fn a_deferred_settle_goes_before_what_follows_it() {
        let redis = test_redis().await;
        let (c, z, stream) = (redis.key("c"), redis.key("z"), redis.key("s"));
        let batch = Batch::new(redis.clone());
        empty_counters(&redis, &c).await;
        let [a, b, d] = [(); 3].map(|_| Uuid::new_v4());
        let tokens = |redis: Redis, c: String| async move {
            let v: Option<i64> = redis::cmd("HGET")
                .arg(&c)
                .arg("tokens")
                .query_async(&mut redis.conn())
                .await
                .unwrap();
            v.unwrap_or(0)
        };

        assert_eq!(
            batch.run(reserve(&c, &z, a, 600, 1_000)).await.unwrap(),
            [1, 0, 600]
        );
        let first = batch.defer(settle(&c, &z, &stream, a, (60, 40), 600));
        // 600 more fit only once the first call's 600 reserved became the 100 it used.
        assert_eq!(
            batch.run(reserve(&c, &z, b, 600, 1_000)).await.unwrap(),
            [1, 100, 600]
        );
        assert_eq!(first.await.unwrap().unwrap(), [1, 0, 0]);

        let second = batch.defer(settle(&c, &z, &stream, b, (5, 5), 600));
        batch.flush().await.unwrap();
        assert_eq!(tokens(redis.clone(), c.clone()).await, 110);
        assert_eq!(second.await.unwrap().unwrap(), [1, 0, 0]);

        // Alone, with nothing sent after it, it goes once the linger is over.
        let third = batch.defer(settle(&c, &z, &stream, d, (1, 1), 2));
        let answer = tokio::time::timeout(LINGER * 20, third).await;
        assert_eq!(answer.unwrap().unwrap().unwrap(), [1, 0, 0]);
        assert_eq!(tokens(redis.clone(), c.clone()).await, 112);
        // Nothing waits: a flush sends nothing.
        let sent = batch.sent();
        batch.flush().await.unwrap();
        assert_eq!(batch.sent(), sent);
        let _: () = redis::cmd("DEL")
            .arg(&[&c, &z, &stream])
            .query_async(&mut redis.conn())
            .await
            .unwrap();
    }

    /// Settles deferred while a script is in flight do not go the moment it is back: they
    /// linger for company (under load, scripts would otherwise go back to back with a few
    /// settles each), then go together in one script.
    #[tokio::test]
    async fn settles_that_come_during_a_script_linger_after_it() {
        let redis = test_redis().await;
        let (c, z, stream) = (redis.key("c"), redis.key("z"), redis.key("s"));
        let batch = Batch::new(redis.clone());
        empty_counters(&redis, &c).await;
        let ids = [(); 4].map(|_| Uuid::new_v4());
        for id in &ids[1..] {
            assert_eq!(
                batch.run(reserve(&c, &z, *id, 10, 1_000)).await.unwrap()[0],
                1
            );
        }
        let before = batch.sent();

        // A reservation in flight (this test's runtime runs one task at a time: the spawned
        // call sends its script before this one goes on), and three calls answered meanwhile.
        let started = std::time::Instant::now();
        let in_flight = tokio::spawn({
            let batch = batch.clone();
            let op = reserve(&c, &z, ids[0], 10, 1_000);
            async move { batch.run(op).await }
        });
        tokio::task::yield_now().await;
        let settled: Vec<_> = ids[1..]
            .iter()
            .map(|id| batch.defer(settle(&c, &z, &stream, *id, (1, 1), 10)))
            .collect();
        assert_eq!(in_flight.await.unwrap().unwrap()[0], 1);
        tokio::time::sleep(Duration::from_millis(1)).await;
        if started.elapsed() < LINGER {
            // Back, and nothing sent after it: the settles linger.
            assert_eq!(batch.sent(), (before.0 + 1, before.1 + 1));
        }
        for answer in settled {
            let answer = tokio::time::timeout(LINGER * 20, answer).await;
            assert_eq!(answer.unwrap().unwrap().unwrap(), [1, 0, 0]);
        }
        // All three in one script after the reservation's.
        assert_eq!(batch.sent(), (before.0 + 2, before.1 + 4));
        let _: () = redis::cmd("DEL")
            .arg(&[&c, &z, &stream])
            .query_async(&mut redis.conn())
            .await
            .unwrap();
    }

    /// A slice is topped up (after giving back what it held free), is taken from by its calls'
    /// settles, tells a settle when Redis no longer holds it, and is given back whole.
    #[tokio::test]
    async fn a_slice_is_topped_up_settled_from_and_given_back() {
        let redis = test_redis().await;
        let (c, z, stream) = (redis.key("c"), redis.key("z"), redis.key("s"));
        let batch = Batch::new(redis.clone());
        empty_counters(&redis, &c).await;
        let slice = Uuid::new_v4();
        let top_up = |amount: i64, w: i64, b: i64| {
            let mut op = reserve(&c, &z, slice, amount, 8_000);
            if let Op::Reserve {
                wanted,
                slice,
                back,
                ..
            } = &mut op
            {
                (*wanted, *slice, *back) = (w, true, b);
            }
            op
        };
        let on_slice = |tokens: (i64, i64), amount: i64| {
            let mut op = settle(&c, &z, &stream, slice, tokens, amount);
            if let Op::Settle { slice, .. } = &mut op {
                *slice = true;
            }
            op
        };
        let field = |redis: Redis, c: String| async move {
            let v: (Option<i64>, Option<i64>) = redis::cmd("HMGET")
                .arg(&c)
                .arg(format!("r:{slice}"))
                .arg("reserved")
                .query_async(&mut redis.conn())
                .await
                .unwrap();
            v
        };

        // Granted what it wants when an eighth of the room covers it (1,000 of 8,000), else an
        // eighth of the room (what the limit leaves beside the 20 used and the 900 still held:
        // 885); a call's settle takes its amount out of the slice.
        let answers = batch
            .send(&[
                top_up(100, 1_000, 0),
                on_slice((10, 10), 100),
                top_up(100, 3_200, 0),
            ])
            .await
            .unwrap();
        assert_eq!(answers, vec![[1, 0, 1_000], [1, 0, 0], [1, 20, 885]]);
        assert_eq!(
            field(redis.clone(), c.clone()).await,
            (Some(1_785), Some(1_785))
        );
        // A top-up gives back what the process held free before it is checked: 7,000 fit only
        // with the 1,685 given back (20 used + 100 held by a call + 7,000 ≤ 8,000).
        let answers = batch.send(&[top_up(7_000, 7_000, 1_685)]).await.unwrap();
        assert_eq!(answers, vec![[1, 20, 7_000]]);
        assert_eq!(
            field(redis.clone(), c.clone()).await,
            (Some(7_100), Some(7_100))
        );
        // Given back whole.
        let answers = batch
            .send(&[Op::Return {
                counters: c.clone(),
                reservations: z.clone(),
                id: slice,
            }])
            .await
            .unwrap();
        assert_eq!(answers, vec![[1, 7_100, 0]]);
        assert_eq!(field(redis.clone(), c.clone()).await, (None, Some(0)));
        // A settle on a slice Redis no longer holds says so, and still counts the call.
        let answers = batch.send(&[on_slice((1, 1), 100)]).await.unwrap();
        assert_eq!(answers, vec![[1, 1, 0]]);
        let tokens: i64 = redis::cmd("HGET")
            .arg(&c)
            .arg("tokens")
            .query_async(&mut redis.conn())
            .await
            .unwrap();
        assert_eq!(tokens, 22);
        let _: () = redis::cmd("DEL")
            .arg(&[&c, &z, &stream])
            .query_async(&mut redis.conn())
            .await
            .unwrap();
    }

    /// Settles on one slice in one script each take from what the ones before them left (the
    /// slice's field is read and written once), and their events go as one entry.
    #[tokio::test]
    async fn settles_on_one_slice_in_one_script_take_in_turn() {
        let redis = test_redis().await;
        let (c, z, stream) = (redis.key("c"), redis.key("z"), redis.key("s"));
        let batch = Batch::new(redis.clone());
        empty_counters(&redis, &c).await;
        let slice = Uuid::new_v4();
        let mut top_up = reserve(&c, &z, slice, 1_000, 8_000);
        if let Op::Reserve { slice, .. } = &mut top_up {
            *slice = true;
        }
        assert_eq!(batch.send(&[top_up]).await.unwrap(), vec![[1, 0, 1_000]]);
        let on_slice = |tokens: (i64, i64), amount: i64| {
            let mut op = settle(&c, &z, &stream, slice, tokens, amount);
            if let Op::Settle { slice, .. } = &mut op {
                *slice = true;
            }
            op
        };
        // The third takes only what the first two left (800 of its 900).
        let answers = batch
            .send(&[
                on_slice((10, 10), 100),
                on_slice((5, 5), 100),
                on_slice((1, 1), 900),
            ])
            .await
            .unwrap();
        assert_eq!(answers, vec![[1, 0, 0]; 3]);
        let (field, reserved, tokens): (Option<i64>, i64, i64) = redis::cmd("HMGET")
            .arg(&c)
            .arg(format!("r:{slice}"))
            .arg("reserved")
            .arg("tokens")
            .query_async(&mut redis.conn())
            .await
            .unwrap();
        assert_eq!((field, reserved, tokens), (Some(0), 0, 32));
        // Sent as one operation, counted as three calls.
        let requests: i64 = redis::cmd("HGET")
            .arg(&c)
            .arg("requests")
            .query_async(&mut redis.conn())
            .await
            .unwrap();
        assert_eq!(requests, 3);
        let handed = handed_over(&redis, &stream).await;
        assert_eq!(handed.len(), 1);
        assert_eq!(handed[0].lines().count(), 3);
        // A settle, then the slice given back in the same script: the settle's take is
        // applied first, and the slice is gone for the settle after it.
        let answers = batch
            .send(&[
                on_slice((0, 1), 0),
                Op::Return {
                    counters: c.clone(),
                    reservations: z.clone(),
                    id: slice,
                },
                on_slice((0, 1), 0),
            ])
            .await
            .unwrap();
        assert_eq!(answers, vec![[1, 0, 0], [1, 0, 0], [1, 1, 0]]);
        let _: () = redis::cmd("DEL")
            .arg(&[&c, &z, &stream])
            .query_async(&mut redis.conn())
            .await
            .unwrap();
    }

    /// Charges on one slice that follow one another go as one operation; a reservation or a
    /// return between them, another slice, a call's own reservation, a release or a flush
    /// keep theirs.
    #[test]
    fn settles_on_one_slice_go_together_until_something_else_touches_it() {
        let (c, z, st) = ("c", "z", "s");
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let on = |slice: Uuid, tokens: (i64, i64), amount: i64| {
            let mut op = settle(c, z, st, slice, tokens, amount);
            if let Op::Settle { slice, .. } = &mut op {
                *slice = true;
            }
            op
        };
        let ops = [
            on(a, (1, 2), 10),               // 0
            on(b, (1, 1), 10),               // 1
            settle(c, z, st, a, (1, 1), 10), // 2: a call's own reservation
            on(a, (3, 4), 20),               // 0
            Op::Flush,                       // -
            on(a, (0, 0), 5),                // 3: a release
            reserve(c, z, b, 5, -1),         // 4
            on(a, (1, 1), 10),               // 5: after a reservation
            on(b, (2, 2), 10),               // 6
            on(a, (1, 0), 10),               // 5
        ];
        let (sent, of) = together(&ops);
        assert_eq!(
            of,
            [0, 1, 2, 0, usize::MAX, 3, 4, 5, 6, 5]
                .map(|i| (i != usize::MAX).then_some(i))
                .to_vec()
        );
        assert_eq!(sent.len(), 7);
        let Sent::Together(first) = &sent[0] else {
            panic!("the first two charges on slice a go together")
        };
        assert_eq!(
            (
                first.first,
                first.prompt_tokens,
                first.completion_tokens,
                first.cost_micro_usd,
                first.amount,
                first.calls
            ),
            (0, 4, 6, 6, 30, 2)
        );
        assert_eq!(
            first.events,
            format!("{{\"id\":\"{a}\"}}\n{{\"id\":\"{a}\"}}")
        );
        assert!(matches!(sent[1], Sent::One(1)));
        assert!(matches!(sent[2], Sent::One(2)));
        assert!(matches!(sent[3], Sent::One(5)));
        assert!(matches!(
            sent[5],
            Sent::Together(Together {
                first: 7,
                calls: 2,
                ..
            })
        ));
    }

    #[test]
    fn a_copied_error_reads_as_an_outage_when_the_original_did() {
        let refused: redis::RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert!(Error::Redis(copy(&refused)).is_outage());
        let timed_out: redis::RedisError =
            std::io::Error::new(std::io::ErrorKind::TimedOut, "slow").into();
        assert!(Error::Redis(copy(&timed_out)).is_outage());
        let script: redis::RedisError = (
            redis::ErrorKind::ResponseError,
            "ERR",
            "bad script".to_string(),
        )
            .into();
        assert_eq!(copy(&script).kind(), redis::ErrorKind::ResponseError);
        assert!(!Error::Redis(copy(&script)).is_outage());
    }
}
