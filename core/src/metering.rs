//! Metering: what a clinic may spend, what it has spent, and the ledger of every model call.
//!
//! # Budget
//!
//! Before a provider call, one Lua script in Redis checks the month's limit (the plan's
//! allowance, plus whatever the spending cap buys beyond it) against tokens already used plus
//! tokens reserved by calls in flight, and reserves the call's worst case (an upper bound of the
//! prompt plus `max_tokens`). Because the check and the reservation are one atomic step and the
//! worst case is reserved, no number of concurrent calls can take recorded use past the limit.
//! After the call the reservation is settled to the real usage (or released, for a failed call).
//! A reservation left behind by a crashed request carries an expiry and gives its tokens back
//! the next time anyone reserves.
//!
//! # Ledger, and why Postgres is off the request's path
//!
//! The settle script does two things atomically: it moves the reservation into the live
//! counters and appends the call's usage event to a Redis stream (`ledger`). A request therefore
//! makes one Redis round trip to settle and never waits for Postgres. The [`LedgerWriter`] drains
//! the stream into `usage_events` in batches through a consumer group: an entry is acknowledged
//! only after its batch is committed, so a server that crashes mid-batch leaves its entries
//! pending and another writer claims them (`XAUTOCLAIM`) and writes them again, which the
//! idempotency key makes harmless. Once settled, an event survives a crash of the server that
//! made the call. It lives in Redis until written (normally well under a second), so Redis
//! should run with append-only persistence (`appendonly yes`) to survive a Redis restart in
//! that window as well.
//!
//! # Live counters
//!
//! A hash per clinic and month holds tokens, cost and requests: the real-time view. When it is
//! missing (Redis was flushed or restarted empty) the next reservation rebuilds it from the
//! ledger before checking the budget.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::{self, Db};
use crate::tenancy::{TenantId, UserId};
use crate::{Error, Redis, Result};

/// What a clinic's plan and settings allow.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Limits {
    pub plan: String,
    pub plan_name: String,
    pub active: bool,
    /// Tokens included each month; `None`: unlimited.
    pub included_tokens: Option<i64>,
    pub overage_micro_usd_per_1k: i64,
    /// Most the clinic pays beyond its allowance each month; `None`: no cap.
    pub spending_cap_micro_usd: Option<i64>,
    /// Whether the platform's own provider keys may serve this clinic.
    pub platform_keys: bool,
    /// When a payment failed and no later one succeeded (see `billing::payment_block`).
    pub payment_failed_at: Option<OffsetDateTime>,
}

impl Limits {
    /// The most tokens the clinic may use this month, or `None` for no limit: the allowance
    /// plus what the spending cap buys at the plan's overage price.
    pub fn token_limit(&self) -> Option<i64> {
        let included = self.included_tokens?;
        if self.overage_micro_usd_per_1k == 0 {
            return Some(included);
        }
        let cap = self.spending_cap_micro_usd?;
        Some(included.saturating_add(cap.saturating_mul(1000) / self.overage_micro_usd_per_1k))
    }
}

/// Reads a clinic's limits.
pub async fn limits(db: &Db, tenant: TenantId) -> Result<Limits> {
    let mut tx = db.begin_tenant(tenant).await?;
    let limits = sqlx::query_as(
        "SELECT p.id AS plan, p.name AS plan_name, t.active, p.included_tokens,
                p.overage_micro_usd_per_1k, t.spending_cap_micro_usd, p.platform_keys,
                t.payment_failed_at
           FROM tenants t JOIN plans p ON p.id = t.plan",
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    limits.ok_or(Error::NotFound)
}

/// Sets a clinic's monthly spending cap beyond its allowance (`None`: no cap). Admins only.
pub async fn set_spending_cap(
    db: &Db,
    tenant: TenantId,
    actor: crate::auth::members::Actor,
    cap_micro_usd: Option<i64>,
) -> Result<()> {
    actor.require_admin("set the spending cap")?;
    if cap_micro_usd.is_some_and(|c| c < 0) {
        return Err(Error::invalid("The spending cap cannot be negative."));
    }
    let mut tx = db.begin_tenant(tenant).await?;
    sqlx::query("UPDATE tenants SET spending_cap_micro_usd = $1")
        .bind(cap_micro_usd)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
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
    pub provider: String,
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
}

/// A clinic's use in one month.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthUsage {
    pub tokens: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_micro_usd: i64,
    pub requests: i64,
}

/// Tokens held for a call in flight. Settle or release it; if neither happens (a crash), it
/// expires by itself.
#[derive(Debug)]
#[must_use = "settle or release the reservation"]
pub struct Reservation {
    pub id: Uuid,
    pub tenant: TenantId,
    /// `YYYY-MM` (UTC) of the call; its usage counts in that month.
    pub month: String,
    pub amount: i64,
    pub started_at: OffsetDateTime,
}

/// The month a moment falls in, as `YYYY-MM` (UTC).
pub fn month_of(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}", at.year(), u8::from(at.month()))
}

/// The first instant of `month` (`YYYY-MM`, UTC) and of the month after it.
pub fn month_bounds(month: &str) -> Result<(OffsetDateTime, OffsetDateTime)> {
    let bad = || Error::invalid(format!("{month:?} is not a month (YYYY-MM)."));
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    let y: i32 = y.parse().map_err(|_| bad())?;
    let m: u8 = m.parse().map_err(|_| bad())?;
    let start_month = time::Month::try_from(m).map_err(|_| bad())?;
    let start = time::Date::from_calendar_date(y, start_month, 1)
        .map_err(|_| bad())?
        .midnight()
        .assume_utc();
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let end = time::Date::from_calendar_date(ny, time::Month::try_from(nm).map_err(|_| bad())?, 1)
        .map_err(|_| bad())?
        .midnight()
        .assume_utc();
    Ok((start, end))
}

// Counters and reservations of one clinic-month live in one hash: `tokens`, `prompt`,
// `completion`, `cost`, `requests`, `reserved`, and `r:<id>` per reservation in flight, with a
// sorted set of reservation ids by expiry next to it.
const RESERVE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0, 0} end
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4], 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  local amt = redis.call('HGET', KEYS[1], 'r:' .. id)
  if amt then
    redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(amt))
    redis.call('HDEL', KEYS[1], 'r:' .. id)
  end
  redis.call('ZREM', KEYS[2], id)
end
local used = tonumber(redis.call('HGET', KEYS[1], 'tokens') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local amount = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
if limit >= 0 and used + reserved + amount > limit then return {0, used, reserved} end
redis.call('HINCRBY', KEYS[1], 'reserved', amount)
redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], amount)
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {1, used, reserved + amount}
"#;

// Releases a reservation and, when an event is given, counts it and hands it to the ledger.
// If the counters vanished meanwhile (Redis flushed), they are left for the next reservation to
// rebuild from the ledger rather than restarted from this one call.
const SETTLE: &str = r#"
local amt = redis.call('HGET', KEYS[1], 'r:' .. ARGV[1])
if amt then
  redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(amt))
  redis.call('HDEL', KEYS[1], 'r:' .. ARGV[1])
end
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] ~= '' then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('HINCRBY', KEYS[1], 'tokens', tonumber(ARGV[3]) + tonumber(ARGV[4]))
    redis.call('HINCRBY', KEYS[1], 'prompt', ARGV[3])
    redis.call('HINCRBY', KEYS[1], 'completion', ARGV[4])
    redis.call('HINCRBY', KEYS[1], 'cost', ARGV[5])
    redis.call('HINCRBY', KEYS[1], 'requests', 1)
  end
  redis.call('XADD', KEYS[3], '*', 'e', ARGV[2])
end
return 1
"#;

const INIT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'tokens', ARGV[1], 'prompt', ARGV[2], 'completion', ARGV[3],
           'cost', ARGV[4], 'requests', ARGV[5], 'reserved', 0)
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
"#;

/// The Redis stream that hands settled events to the ledger writer.
fn ledger_stream(redis: &Redis) -> String {
    redis.key("ledger")
}

/// Counters outlive their month by this long (for the dashboard's "last month").
const COUNTER_TTL_SECS: i64 = 70 * 24 * 3600;
/// The consumer group that writes the ledger.
const LEDGER_GROUP: &str = "ledger-writer";

/// Budgets and the live view over Redis, with the ledger behind them.
#[derive(Clone)]
pub struct Metering {
    redis: Redis,
    db: Db,
    reserve: Arc<redis::Script>,
    settle: Arc<redis::Script>,
    init: Arc<redis::Script>,
    /// How long a reservation may stay unsettled before it is given back.
    pub reservation_ttl: Duration,
}

impl std::fmt::Debug for Metering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metering").finish_non_exhaustive()
    }
}

impl Metering {
    pub fn new(db: Db, redis: Redis) -> Self {
        Self {
            redis,
            db,
            reserve: Arc::new(redis::Script::new(RESERVE)),
            settle: Arc::new(redis::Script::new(SETTLE)),
            init: Arc::new(redis::Script::new(INIT)),
            reservation_ttl: Duration::from_secs(15 * 60),
        }
    }

    fn counters_key(&self, tenant: TenantId, month: &str) -> String {
        self.redis.key(&format!("usage:{tenant}:{month}"))
    }

    fn reservations_key(&self, tenant: TenantId, month: &str) -> String {
        self.redis.key(&format!("reservations:{tenant}:{month}"))
    }

    /// The Redis stream that hands settled events to the ledger writer.
    pub fn ledger_stream(&self) -> String {
        ledger_stream(&self.redis)
    }

    /// Reserves `amount` tokens for one call, or fails with [`Error::OverBudget`].
    pub async fn reserve(
        &self,
        tenant: TenantId,
        limits: &Limits,
        amount: i64,
    ) -> Result<Reservation> {
        let started_at = OffsetDateTime::now_utc();
        let month = month_of(started_at);
        let id = Uuid::new_v4();
        let now_ms = unix_ms(started_at);
        let expires_ms = now_ms + self.reservation_ttl.as_millis() as i64;
        let limit = limits.token_limit().unwrap_or(-1);
        let keys = [
            self.counters_key(tenant, &month),
            self.reservations_key(tenant, &month),
        ];
        for _ in 0..3 {
            let (status, used, _reserved): (i64, i64, i64) = self
                .reserve
                .key(&keys[0])
                .key(&keys[1])
                .arg(id.to_string())
                .arg(amount)
                .arg(limit)
                .arg(now_ms)
                .arg(expires_ms)
                .arg(COUNTER_TTL_SECS)
                .invoke_async(&mut self.redis.conn())
                .await?;
            match status {
                1 => {
                    return Ok(Reservation {
                        id,
                        tenant,
                        month,
                        amount,
                        started_at,
                    })
                }
                0 => {
                    return Err(Error::OverBudget {
                        used,
                        limit,
                        requested: amount,
                    })
                }
                _ => {
                    self.rebuild(tenant, &month).await?;
                }
            }
        }
        Err(Error::Internal(
            "usage counters could not be rebuilt".into(),
        ))
    }

    /// Settles a reservation with the call's usage: counts it live and hands the event to the
    /// ledger, in one atomic step.
    pub async fn settle(&self, reservation: Reservation, event: &UsageEvent) -> Result<()> {
        let json = serde_json::to_string(event)
            .map_err(|e| Error::Internal(format!("usage event: {e}")))?;
        self.run_settle(
            &reservation,
            &json,
            event.prompt_tokens,
            event.completion_tokens,
            event.cost_micro_usd,
        )
        .await
    }

    /// Gives a reservation's tokens back without charging anything (the call failed).
    pub async fn release(&self, reservation: Reservation) -> Result<()> {
        self.run_settle(&reservation, "", 0, 0, 0).await
    }

    /// Runs the settle script: releases `r`, and with a non-empty `event_json` counts its tokens
    /// and cost and hands the event to the ledger.
    async fn run_settle(
        &self,
        r: &Reservation,
        event_json: &str,
        prompt_tokens: i64,
        completion_tokens: i64,
        cost_micro_usd: i64,
    ) -> Result<()> {
        let _: i64 = self
            .settle
            .key(self.counters_key(r.tenant, &r.month))
            .key(self.reservations_key(r.tenant, &r.month))
            .key(self.ledger_stream())
            .arg(r.id.to_string())
            .arg(event_json)
            .arg(prompt_tokens)
            .arg(completion_tokens)
            .arg(cost_micro_usd)
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    /// Rebuilds a clinic-month's live counters from the ledger, if they are missing.
    pub async fn rebuild(&self, tenant: TenantId, month: &str) -> Result<()> {
        let totals = ledger_totals(&self.db, tenant, month).await?;
        let _: i64 = self
            .init
            .key(self.counters_key(tenant, month))
            .arg(totals.tokens)
            .arg(totals.prompt_tokens)
            .arg(totals.completion_tokens)
            .arg(totals.cost_micro_usd)
            .arg(totals.requests)
            .arg(COUNTER_TTL_SECS)
            .invoke_async(&mut self.redis.conn())
            .await?;
        tracing::info!(%tenant, month, "usage counters rebuilt from the ledger");
        Ok(())
    }

    /// The live view of a clinic's use in `month` (rebuilt from the ledger when missing), and
    /// the tokens reserved by calls in flight.
    pub async fn month_usage(&self, tenant: TenantId, month: &str) -> Result<(MonthUsage, i64)> {
        let key = self.counters_key(tenant, month);
        for _ in 0..2 {
            let values: Vec<Option<i64>> = redis::cmd("HMGET")
                .arg(&key)
                .arg(&[
                    "tokens",
                    "prompt",
                    "completion",
                    "cost",
                    "requests",
                    "reserved",
                ])
                .query_async(&mut self.redis.conn())
                .await?;
            if values.iter().all(Option::is_none) {
                self.rebuild(tenant, month).await?;
                continue;
            }
            let v = |i: usize| values.get(i).copied().flatten().unwrap_or(0);
            return Ok((
                MonthUsage {
                    tokens: v(0),
                    prompt_tokens: v(1),
                    completion_tokens: v(2),
                    cost_micro_usd: v(3),
                    requests: v(4),
                },
                v(5),
            ));
        }
        Err(Error::Internal(
            "usage counters could not be rebuilt".into(),
        ))
    }
}

/// A clinic's use in `month` according to the ledger.
pub async fn ledger_totals(db: &Db, tenant: TenantId, month: &str) -> Result<MonthUsage> {
    let (start, end) = month_bounds(month)?;
    let mut tx = db.begin_tenant(tenant).await?;
    let (prompt, completion, cost, requests): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(prompt_tokens), 0)::bigint, coalesce(sum(completion_tokens), 0)::bigint,
                coalesce(sum(cost_micro_usd), 0)::bigint, count(*)
           FROM usage_events WHERE occurred_at >= $1 AND occurred_at < $2",
    )
    .bind(start)
    .bind(end)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(MonthUsage {
        tokens: prompt + completion,
        prompt_tokens: prompt,
        completion_tokens: completion,
        cost_micro_usd: cost,
        requests,
    })
}

fn unix_ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    unix_ms(OffsetDateTime::now_utc())
}

/// Drains the hand-off stream into the Postgres ledger. Run one per process (`serve` and
/// `worker` do); any number may run at once.
#[derive(Clone)]
pub struct LedgerWriter {
    db: Db,
    redis: Redis,
    stream: String,
    consumer: String,
    /// The consumer group exists (created once, and again after an error).
    group_ready: Arc<std::sync::atomic::AtomicBool>,
    /// Entries another writer took but did not acknowledge for this long are claimed.
    pub claim_after: Duration,
    pub batch: usize,
}

impl LedgerWriter {
    pub fn new(db: Db, redis: Redis) -> Self {
        let stream = ledger_stream(&redis);
        Self {
            db,
            redis,
            stream,
            consumer: format!("writer-{}", Uuid::new_v4()),
            group_ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            claim_after: Duration::from_secs(30),
            batch: 500,
        }
    }

    /// Runs until the process ends: drains, then waits a moment when there is nothing to do.
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.drain_once().await {
                Ok(0) => tokio::time::sleep(Duration::from_millis(200)).await,
                Ok(_) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(error = ?e, "ledger writer failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn ensure_group(&self) -> Result<()> {
        if self.group_ready.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let created: redis::RedisResult<String> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(LEDGER_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.redis.conn())
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        self.group_ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Up to `count` entries never delivered to any writer.
    async fn read_new(&self, count: usize) -> Result<Vec<(String, Option<Vec<u8>>)>> {
        let read: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(LEDGER_GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(&mut self.redis.conn())
            .await?;
        let mut entries = Vec::new();
        if let Value::Array(streams) = read {
            for s in streams {
                if let Value::Array(parts) = s {
                    if parts.len() == 2 {
                        entries.extend(parse_entries(&parts[1]));
                    }
                }
            }
        }
        Ok(entries)
    }

    /// Writes one batch: entries abandoned by a crashed writer first, then new ones. Returns how
    /// many entries it handled.
    pub async fn drain_once(&self) -> Result<usize> {
        let result = self.drain_batch().await;
        if result.is_err() {
            // The group may be gone with a flushed Redis: create it again next time.
            self.group_ready
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    async fn drain_batch(&self) -> Result<usize> {
        self.ensure_group().await?;
        let claimed: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(LEDGER_GROUP)
            .arg(&self.consumer)
            .arg(self.claim_after.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.batch)
            .query_async(&mut self.redis.conn())
            .await?;
        let mut entries = match &claimed {
            Value::Array(parts) if parts.len() >= 2 => parse_entries(&parts[1]),
            _ => Vec::new(),
        };
        if entries.is_empty() {
            entries = self.read_new(self.batch).await?;
        }
        if entries.is_empty() {
            return Ok(0);
        }
        // Each entry's event, read once; `None` for one that cannot be read.
        let parsed: Vec<Option<UsageEvent>> = entries
            .iter()
            .map(|(_, payload)| {
                payload
                    .as_deref()
                    .and_then(|p| serde_json::from_slice::<UsageEvent>(p).ok())
            })
            .collect();
        let mut aside: Vec<usize> = (0..entries.len())
            .filter(|&i| parsed[i].is_none())
            .collect();
        let events: Vec<UsageEvent> = parsed.iter().flatten().cloned().collect();
        if let Err(e) = write_events(&self.db, &events).await {
            if !is_integrity_violation(&e) {
                // Postgres is unavailable or similar: leave the batch pending and retry.
                return Err(e);
            }
            // One event breaks a constraint (say its clinic was deleted meanwhile): write the
            // others one by one and set aside the ones that cannot be written.
            for (i, event) in parsed.iter().enumerate() {
                let Some(event) = event else { continue };
                if let Err(e) = write_events(&self.db, std::slice::from_ref(event)).await {
                    if !is_integrity_violation(&e) {
                        return Err(e);
                    }
                    aside.push(i);
                }
            }
        }
        for &i in &aside {
            // Kept aside for an operator rather than retried forever.
            let (id, payload) = &entries[i];
            tracing::error!(entry = %id, "usage event that cannot be written moved to ledger-dead");
            let _: String = redis::cmd("XADD")
                .arg(self.redis.key("ledger-dead"))
                .arg("*")
                .arg("e")
                .arg(payload.clone().unwrap_or_default())
                .query_async(&mut self.redis.conn())
                .await?;
        }
        let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
        let mut pipe = redis::pipe();
        pipe.cmd("XACK")
            .arg(&self.stream)
            .arg(LEDGER_GROUP)
            .arg(&ids)
            .ignore()
            .cmd("XDEL")
            .arg(&self.stream)
            .arg(&ids)
            .ignore();
        let _: () = pipe.query_async(&mut self.redis.conn()).await?;
        Ok(entries.len())
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

    /// Reads up to `count` new entries without writing them, as a writer that then crashes
    /// would. For tests of the recovery path.
    #[doc(hidden)]
    pub async fn read_and_abandon(&self, count: usize) -> Result<usize> {
        self.ensure_group().await?;
        Ok(self.read_new(count).await?.len())
    }
}

/// A constraint violation (SQLSTATE class 23): retrying cannot help.
fn is_integrity_violation(e: &Error) -> bool {
    matches!(e, Error::Database(sqlx::Error::Database(db)) if db.code().is_some_and(|c| c.starts_with("23")))
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

/// Inserts events into the ledger in one transaction, one statement per clinic; events already
/// there (same clinic and idempotency key) are skipped.
pub async fn write_events(db: &Db, events: &[UsageEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut by_tenant: std::collections::BTreeMap<TenantId, Vec<&UsageEvent>> = Default::default();
    for e in events {
        by_tenant.entry(e.tenant).or_default().push(e);
    }
    let mut tx = db.pool().begin().await?;
    for (tenant, events) in by_tenant {
        db::set_tenant(&mut tx, tenant).await?;
        let occurred: Vec<OffsetDateTime> = events
            .iter()
            .map(|e| {
                OffsetDateTime::from_unix_timestamp_nanos(e.occurred_at_ms as i128 * 1_000_000)
                    .unwrap_or_else(|_| OffsetDateTime::now_utc())
            })
            .collect();
        sqlx::query(
            "INSERT INTO usage_events (id, tenant_id, user_id, api_key_id, provider, model,
                    prompt_tokens, completion_tokens, cached_tokens, cost_micro_usd, latency_ms,
                    estimated, streamed, cancelled, idempotency_key, occurred_at, agent_id)
             SELECT u.id, $1, u.user_id, u.api_key_id, u.provider, u.model, u.prompt_tokens,
                    u.completion_tokens, u.cached_tokens, u.cost, u.latency_ms, u.estimated,
                    u.streamed, u.cancelled, u.idempotency_key, u.occurred_at,
                    -- An agent deleted since the call is recorded as none.
                    (SELECT a.id FROM agents a WHERE a.id = u.agent_id)
               FROM UNNEST($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
                           $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::int[],
                           $12::bool[], $13::bool[], $14::bool[], $15::text[], $16::timestamptz[],
                           $17::uuid[])
                 AS u(id, user_id, api_key_id, provider, model, prompt_tokens, completion_tokens,
                      cached_tokens, cost, latency_ms, estimated, streamed, cancelled,
                      idempotency_key, occurred_at, agent_id)
             ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
        )
        .bind(tenant)
        .bind(events.iter().map(|e| e.id).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.user.map(|u| u.0))
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.api_key).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.provider.clone())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.model.clone()).collect::<Vec<_>>())
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
                .map(|e| e.idempotency_key.clone())
                .collect::<Vec<_>>(),
        )
        .bind(occurred)
        .bind(events.iter().map(|e| e.agent).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Model list prices, longest prefix first, for putting a cost on a call.
#[derive(Clone, Debug, Default)]
pub struct Prices {
    rows: Vec<(String, i64, i64)>,
}

impl Prices {
    /// Reads the price list (a global table, not tenant data).
    pub async fn load(db: &Db) -> Result<Self> {
        let mut rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT model_prefix, input_micro_usd_per_mtok, output_micro_usd_per_mtok FROM model_prices",
        )
        .fetch_all(db.pool())
        .await?;
        rows.sort_by(|a, b| b.0.len().cmp(&a.0.len()));
        Ok(Self { rows })
    }

    /// The cost of a call in micro-dollars, rounded up; 0 for a model with no listed price.
    pub fn cost(&self, model: &str, prompt_tokens: i64, completion_tokens: i64) -> i64 {
        let Some((_, input, output)) = self
            .rows
            .iter()
            .find(|(p, _, _)| model.starts_with(p.as_str()))
        else {
            return 0;
        };
        let micro_millionths =
            prompt_tokens as i128 * *input as i128 + completion_tokens as i128 * *output as i128;
        ((micro_millionths + 999_999) / 1_000_000) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(included: Option<i64>, overage: i64, cap: Option<i64>) -> Limits {
        Limits {
            plan: "starter".into(),
            plan_name: "Starter".into(),
            active: true,
            included_tokens: included,
            overage_micro_usd_per_1k: overage,
            spending_cap_micro_usd: cap,
            platform_keys: true,
            payment_failed_at: None,
        }
    }

    #[test]
    fn the_token_limit_is_the_allowance_plus_what_the_cap_buys() {
        assert_eq!(
            limits(Some(1_000_000), 3000, Some(0)).token_limit(),
            Some(1_000_000)
        );
        // $3 buys 1,000 × 3,000,000 / 3,000 = 1,000,000 tokens at $0.003 per 1k.
        assert_eq!(
            limits(Some(1_000_000), 3000, Some(3_000_000)).token_limit(),
            Some(2_000_000)
        );
        assert_eq!(limits(Some(1_000_000), 3000, None).token_limit(), None);
        assert_eq!(limits(None, 0, Some(0)).token_limit(), None);
    }

    #[test]
    fn months_are_utc_and_bounded() {
        let at = time::macros::datetime!(2026-12-31 23:30 -02:00);
        assert_eq!(month_of(at), "2027-01");
        let (s, e) = month_bounds("2026-12").unwrap();
        assert_eq!(s, time::macros::datetime!(2026-12-01 0:00 UTC));
        assert_eq!(e, time::macros::datetime!(2027-01-01 0:00 UTC));
        assert!(month_bounds("2026-13").is_err());
    }

    #[test]
    fn cost_uses_the_longest_prefix_and_rounds_up() {
        let prices = Prices {
            rows: vec![
                ("gpt-4o-mini".into(), 150_000, 600_000),
                ("gpt-4o".into(), 2_500_000, 10_000_000),
            ],
        };
        assert_eq!(prices.cost("gpt-4o-mini-2024", 1_000_000, 0), 150_000);
        assert_eq!(prices.cost("gpt-4o", 1, 0), 3);
        assert_eq!(prices.cost("unknown", 1000, 1000), 0);
    }
}

/// How the usage dashboard splits a day's tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breakdown {
    Model,
    Agent,
    /// The person, or the API key, that made the call.
    Caller,
}

/// One day's use for one model, agent or caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DailyUsage {
    pub day: time::Date,
    pub key: String,
    pub tokens: i64,
    pub requests: i64,
    pub cost_micro_usd: i64,
}

/// A clinic's use in `month`, per day and per `by`, from the ledger.
pub async fn daily_usage(
    db: &Db,
    tenant: TenantId,
    month: &str,
    by: Breakdown,
) -> Result<Vec<DailyUsage>> {
    let (start, end) = month_bounds(month)?;
    let key = match by {
        Breakdown::Model => "e.model",
        Breakdown::Agent => "coalesce(a.name, 'No agent')",
        Breakdown::Caller => "coalesce(u.name, 'API key ' || k.name, 'Removed')",
    };
    let sql = format!(
        "SELECT (e.occurred_at AT TIME ZONE 'UTC')::date AS day, {key} AS key,
                sum(e.prompt_tokens + e.completion_tokens)::bigint, count(*), sum(e.cost_micro_usd)::bigint
           FROM usage_events e
           LEFT JOIN agents a ON a.id = e.agent_id
           LEFT JOIN users u ON u.id = e.user_id
           LEFT JOIN api_keys k ON k.id = e.api_key_id
          WHERE e.occurred_at >= $1 AND e.occurred_at < $2
          GROUP BY 1, 2 ORDER BY 1, 2"
    );
    let mut tx = db.begin_tenant(tenant).await?;
    let rows: Vec<(time::Date, String, i64, i64, i64)> = sqlx::query_as(&sql)
        .bind(start)
        .bind(end)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|(day, key, tokens, requests, cost_micro_usd)| DailyUsage {
            day,
            key,
            tokens,
            requests,
            cost_micro_usd,
        })
        .collect())
}

/// One ledger row as the CSV export shows it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct LedgerRow {
    pub occurred_at: OffsetDateTime,
    pub provider: String,
    pub model: String,
    pub agent: Option<String>,
    pub person: Option<String>,
    pub api_key: Option<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cost_micro_usd: i64,
    pub latency_ms: i32,
    pub estimated: bool,
    pub streamed: bool,
    pub cancelled: bool,
    pub idempotency_key: String,
}

/// Every ledger row of a clinic in `month`, oldest first.
pub async fn ledger_rows(db: &Db, tenant: TenantId, month: &str) -> Result<Vec<LedgerRow>> {
    let (start, end) = month_bounds(month)?;
    let mut tx = db.begin_tenant(tenant).await?;
    let rows = sqlx::query_as::<_, LedgerRow>(
        "SELECT e.occurred_at, e.provider, e.model, a.name AS agent, u.name AS person, k.name AS api_key,
                e.prompt_tokens, e.completion_tokens, e.cached_tokens, e.cost_micro_usd, e.latency_ms,
                e.estimated, e.streamed, e.cancelled, e.idempotency_key
           FROM usage_events e
           LEFT JOIN agents a ON a.id = e.agent_id
           LEFT JOIN users u ON u.id = e.user_id
           LEFT JOIN api_keys k ON k.id = e.api_key_id
          WHERE e.occurred_at >= $1 AND e.occurred_at < $2
          ORDER BY e.occurred_at, e.id",
    )
    .bind(start)
    .bind(end)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// The month before `month` (`YYYY-MM`).
pub fn previous_month(month: &str) -> Result<String> {
    let (start, _) = month_bounds(month)?;
    Ok(month_of(start - time::Duration::days(1)))
}
