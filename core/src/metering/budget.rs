//! The budget: one Redis Lua script checks the month's limit and reserves a call's worst case
//! atomically; another settles the reservation to the real usage and hands the event to the
//! ledger in the same step. The live counters per clinic and month live next to them.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::batch::{Answer, Batch, Op};
use super::ledger::{ledger_stream, pending_in_handoff, unix_ms, write_events};
use super::report::ledger_totals;
use super::slices::{Slices, Take, IDLE, SLICE_CALLS};
use super::{Limits, MonthUsage, UsageEvent};
use crate::db::Db;
use crate::tenancy::TenantId;
use crate::{Error, Month, Redis, Result};

/// Tokens held for a call in flight. Settle or release it; if neither happens (a crash), it
/// expires by itself.
#[derive(Debug)]
#[must_use = "settle or release the reservation"]
pub struct Reservation {
    pub id: Uuid,
    pub tenant: TenantId,
    /// The month (UTC) of the call; its usage counts in that month.
    pub month: Month,
    pub amount: i64,
    pub started_at: OffsetDateTime,
    /// The slice of this process's share of the allowance the amount was taken from (see
    /// `slices.rs`), or `None` for a reservation of the call's own.
    pub slice: Option<Uuid>,
}

/// A new call's id (its reservation's, its ledger row's): a UUID of version 7, the time the
/// call started in milliseconds followed by random bits, so that ledger rows, keyed by it, go
/// in at the end of the primary key's index instead of anywhere in it (fewer pages touched and
/// logged per row as the ledger grows).
fn call_id(started_at: OffsetDateTime) -> Uuid {
    let mut random = [0u8; 10];
    random.copy_from_slice(&Uuid::new_v4().as_bytes()[6..]);
    uuid::Builder::from_unix_timestamp_millis(unix_ms(started_at).max(0) as u64, &random)
        .into_uuid()
}

impl Reservation {
    /// The reservation's field and expiry in Redis: its slice's, or its own.
    fn held_as(&self) -> Uuid {
        self.slice.unwrap_or(self.id)
    }
}

/// A reservation held by a call in flight. Settle it or release it; if the call ends any
/// other way (the client went away and the request was dropped, a panic), dropping it gives
/// the tokens back at once instead of when the reservation expires.
#[must_use = "settle or release the reservation"]
pub struct Held {
    metering: Metering,
    reservation: Option<Reservation>,
}

impl Held {
    pub fn reservation(&self) -> &Reservation {
        // Present until settle or release consume the guard.
        self.reservation
            .as_ref()
            .expect("a held reservation is present until it is settled or released")
    }

    /// Settles with the call's usage (see [`Metering::settle`]), and never loses it: when Redis cannot be reached the
    /// event goes straight to the ledger, and the live counters are corrected once Redis
    /// answers again (in the background, for as long as a reservation lives).
    pub async fn settle_durably(mut self, event: &UsageEvent) {
        let Some(r) = self.reservation.take() else {
            return;
        };
        let settled = self.metering.run_settle(&r, event).await;
        self.metering.after_settle(r, event, settled).await;
    }

    /// Settles like [`Self::settle_durably`], for a call that has answered its client: the
    /// settle is queued before this returns (what is sent after it, the next reservation or
    /// a read of the counters, comes after it) and goes to Redis with others' (see
    /// `batch.rs`). No task waits for it: its answer is taken in by the task that sends the
    /// script, and only a failed settle starts one (to write the ledger directly);
    /// [`Metering::settles_done`] waits for all of it.
    pub fn settle_soon(mut self, event: UsageEvent) {
        let Some(r) = self.reservation.take() else {
            return;
        };
        let metering = self.metering.clone();
        let busy = metering.settling.enter();
        let event = Arc::new(event);
        let op = metering.settle_of(&r, Some(&event));
        let batch = &self.metering.batch;
        batch.defer_then(op, move |settled| match settled {
            Ok([_, gone, _]) => {
                metering.settled(&r, gone == 1);
                drop(busy);
            }
            Err(e) => settle_failed(metering, r, event, e, busy),
        });
    }

    /// Gives the tokens back without charging anything.
    pub async fn release(mut self) -> Result<()> {
        match self.reservation.take() {
            Some(r) => self.metering.release(r).await,
            None => Ok(()),
        }
    }

    /// Keeps the reservation from expiring for another [`Metering::reservation_ttl`] (a long
    /// stream outlives the first expiry).
    pub async fn extend(&self) -> Result<()> {
        self.metering.extend(self.reservation()).await
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(reservation) = self.reservation.take() else {
            return;
        };
        if let Some(slice) = reservation.slice {
            // Back into the slice, here: no round trip.
            self.metering.slices.released(slice, reservation.amount);
            return;
        }
        let metering = self.metering.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = metering.release(reservation).await {
                    tracing::warn!(error = ?e, "a dropped reservation could not be released; it expires by itself");
                }
            });
        }
    }
}

/// A call's own reservation on its way to Redis. A call that goes away before the answer (its
/// request dropped) does not take its operation with it (see `batch.rs`): the script still
/// runs, and what it reserved would be held, by nobody, until it expired. So unless the answer
/// came, the reservation is released behind it, in the same queue and after it (releasing one
/// that was never made changes nothing).
struct Unanswered<'a> {
    metering: &'a Metering,
    reservation: Option<Reservation>,
}

impl Unanswered<'_> {
    /// The answer came: the reservation is the caller's, to settle or release.
    fn answered(mut self) -> Reservation {
        self.reservation
            .take()
            .expect("an unanswered reservation is present until answered")
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some(reservation) = self.reservation.take() {
            // Released as a dropped call's is.
            drop(Held {
                metering: self.metering.clone(),
                reservation: Some(reservation),
            });
        }
    }
}

/// What follows a queued settle that failed ([`Held::settle_soon`]): the event written to
/// the ledger directly, in a task (none when the runtime is gone, at exit).
fn settle_failed(
    metering: Metering,
    r: Reservation,
    event: Arc<UsageEvent>,
    e: Error,
    busy: Entered,
) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            metering.after_settle(r, &event, Err(e)).await;
            drop(busy);
        });
    }
}

/// A top-up on its way to Redis: the slice counts on it (and is not given back) until it is
/// granted, refused, or its call goes away.
struct Pending<'a> {
    slices: &'a Slices,
    slice: Uuid,
    armed: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.slices.not_granted(self.slice);
        }
    }
}

/// A top-up ahead of need on its way: however it ends (dropped too), the slice is told.
struct Ahead {
    metering: Metering,
    slice: Uuid,
    /// What it was granted, and until when.
    granted: Option<(i64, i64)>,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.metering
            .slices
            .topped_up_ahead(self.slice, self.granted.take());
    }
}

// Reservations and settles are one script for many calls (see `batch.rs`), which also
// describes the counters' layout.

// Settles a call whose event the ledger already has (written there while Redis could not be
// reached): releases the reservation and counts the call live. It counts only while the
// reservation is still held (a settle whose reply was lost already counted it) and the
// counters were not rebuilt from the ledger after the event was written (they hold it then).
//
// A call on a slice has no field of its own to tell whether its settle was counted (ARGV[6] is
// '1'): it is counted, and the slice's field is left as it is (the slice, retired when the
// settle failed, gives back whatever it still holds when it is given back whole). Should the
// failed settle have been counted after all, the live counters count the call twice until they
// are next rebuilt, which can only refuse calls early, never let them spend past the limit; the
// ledger has it once.
const CORRECT: &str = r#"
if ARGV[6] ~= '1' then
  local amt = redis.call('HGET', KEYS[1], 'r:' .. ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  if not amt then return 0 end
  redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(amt))
  redis.call('HDEL', KEYS[1], 'r:' .. ARGV[1])
end
local rebuilt = tonumber(redis.call('HGET', KEYS[1], 'rebuilt_at') or '0')
if rebuilt < tonumber(ARGV[5]) then
  redis.call('HINCRBY', KEYS[1], 'tokens', tonumber(ARGV[2]) + tonumber(ARGV[3]))
  redis.call('HINCRBY', KEYS[1], 'prompt', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'completion', ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'cost', ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'requests', 1)
end
return 1
"#;

const INIT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'tokens', ARGV[1], 'prompt', ARGV[2], 'completion', ARGV[3],
           'cost', ARGV[4], 'requests', ARGV[5], 'reserved', 0, 'rebuilt_at', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
"#;

/// Counters outlive their month by this long (for the dashboard's "last month").
const COUNTER_TTL_SECS: i64 = 70 * 24 * 3600;

/// Budgets and the live view over Redis, with the ledger behind them. One shared allocation:
/// every call in flight holds a clone (one reference count, not one per part).
#[derive(Clone)]
pub struct Metering(Arc<Parts>);

/// What a [`Metering`] shares.
pub struct Parts {
    pub(super) redis: Redis,
    db: Db,
    batch: Batch,
    correct: redis::Script,
    init: redis::Script,
    slices: Slices,
    /// The task that gives idle slices back runs.
    sweeping: std::sync::atomic::AtomicBool,
    /// Settles of calls that have answered ([`Held::settle_soon`]) not finished yet.
    settling: Arc<InFlight>,
    /// How long a reservation may stay unsettled before it is given back.
    pub reservation_ttl: Duration,
    /// Clinic-months' keys ([`Metering::month_keys`]).
    month_keys: std::sync::Mutex<crate::FastMap<(TenantId, Month), Arc<MonthKeys>>>,
    /// The ledger's hand-off stream.
    stream: String,
}

/// The most clinic-months whose keys are kept formatted.
const MONTH_KEYS_KEPT: usize = 4096;

/// A clinic-month's keys: its counters' hash and its reservations' sorted set.
struct MonthKeys {
    counters: String,
    reservations: String,
}

impl std::ops::Deref for Metering {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

impl std::fmt::Debug for Metering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metering").finish_non_exhaustive()
    }
}

impl Metering {
    pub fn new(db: Db, redis: Redis) -> Self {
        Self::with_reservation_ttl(db, redis, Duration::from_secs(15 * 60))
    }

    /// A metering whose reservations expire after `reservation_ttl` when neither settled nor
    /// released.
    pub fn with_reservation_ttl(db: Db, redis: Redis, reservation_ttl: Duration) -> Self {
        Self(Arc::new(Parts {
            batch: Batch::new(redis.clone()),
            stream: ledger_stream(&redis),
            redis,
            db,
            correct: redis::Script::new(CORRECT),
            init: redis::Script::new(INIT),
            slices: Slices::default(),
            sweeping: Default::default(),
            settling: Arc::default(),
            reservation_ttl,
            month_keys: Default::default(),
        }))
    }

    fn counters_key(&self, tenant: TenantId, month: Month) -> String {
        self.month_keys(tenant, month).counters.clone()
    }

    fn reservations_key(&self, tenant: TenantId, month: Month) -> String {
        self.month_keys(tenant, month).reservations.clone()
    }

    /// A clinic-month's counters and reservations keys, formatted once: every call's settle
    /// names them. The cache is emptied when it holds [`MONTH_KEYS_KEPT`] clinic-months.
    fn month_keys(&self, tenant: TenantId, month: Month) -> Arc<MonthKeys> {
        let mut keys = self.month_keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = keys.get(&(tenant, month)) {
            return Arc::clone(k);
        }
        if keys.len() >= MONTH_KEYS_KEPT {
            keys.clear();
        }
        let k = Arc::new(MonthKeys {
            counters: self.redis.key(&format!("usage:{tenant}:{month}")),
            reservations: self.redis.key(&format!("reservations:{tenant}:{month}")),
        });
        keys.insert((tenant, month), Arc::clone(&k));
        k
    }

    /// Budget scripts sent to Redis by this process so far, and the reservations and settles
    /// they carried (more than one each when calls overlap).
    pub fn scripts_sent(&self) -> (u64, u64) {
        self.batch.sent()
    }

    /// The Redis stream that hands settled events to the ledger writer.
    pub fn ledger_stream(&self) -> String {
        self.stream.clone()
    }

    /// Reserves `amount` tokens for one call, as a reservation of its own, or fails with
    /// [`Error::OverBudget`].
    pub async fn reserve(
        &self,
        tenant: TenantId,
        limits: &Limits,
        amount: i64,
    ) -> Result<Reservation> {
        self.reserve_own(tenant, None, limits, amount).await
    }

    /// Reserves `amount` tokens for a model call, or fails with [`Error::OverBudget`]. An API
    /// request (`rate` is `Some`, with its key) is counted against the plan's requests per
    /// minute in the same Redis round trip, and fails with [`Error::RateLimited`] when the
    /// clinic or the key is over its limit this minute. A call that no per-minute limit counts
    /// takes its worst case from this process's slice of the allowance (`slices.rs`): most such
    /// calls reserve without a round trip.
    pub async fn reserve_admitted(
        &self,
        tenant: TenantId,
        rate: Option<Option<Uuid>>,
        limits: &Limits,
        amount: i64,
    ) -> Result<Reservation> {
        let rated = rate.filter(|_| {
            limits.requests_per_minute.is_some() || limits.key_requests_per_minute.is_some()
        });
        if rated.is_some() {
            return self.reserve_own(tenant, rated, limits, amount).await;
        }
        self.reserve_sliced(tenant, limits, amount).await
    }

    async fn reserve_own(
        &self,
        tenant: TenantId,
        rated: Option<Option<Uuid>>,
        limits: &Limits,
        amount: i64,
    ) -> Result<Reservation> {
        let started_at = OffsetDateTime::now_utc();
        let id = call_id(started_at);
        let month = Month::of(started_at);
        // Should this call go away before the answer, the script may still reserve.
        let unanswered = Unanswered {
            metering: self,
            reservation: Some(Reservation {
                id,
                tenant,
                month,
                amount,
                started_at,
                slice: None,
            }),
        };
        match self
            .reserve_in_redis(tenant, month, started_at, rated, limits, amount, id, None)
            .await
        {
            Ok(_) => Ok(unanswered.answered()),
            Err(e @ (Error::OverBudget { .. } | Error::RateLimited { .. })) => {
                // Refused: nothing was reserved.
                drop(unanswered.answered());
                Err(e)
            }
            // Redis failed, perhaps after the script ran: released behind it.
            Err(e) => Err(e),
        }
    }

    async fn reserve_sliced(
        &self,
        tenant: TenantId,
        limits: &Limits,
        amount: i64,
    ) -> Result<Reservation> {
        let started_at = OffsetDateTime::now_utc();
        let month = Month::of(started_at);
        let ttl_ms = self.reservation_ttl.as_millis() as i64;
        let reservation = |slice| Reservation {
            id: call_id(started_at),
            tenant,
            month,
            amount,
            started_at,
            slice: Some(slice),
        };
        let (slice, back) = loop {
            // Listening before looking, so that a top-up ending in between is not missed.
            let changed = self.slices.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self
                .slices
                .take(tenant, month, amount, unix_ms(started_at), ttl_ms / 2)
            {
                Take::Taken(slice) => return Ok(reservation(slice)),
                Take::TakenTopUpAhead(slice) => {
                    self.top_up_ahead(tenant, month, limits, amount, slice);
                    return Ok(reservation(slice));
                }
                Take::TopUp { slice, back } => break (slice, back),
                Take::Wait => changed.await,
            }
        };
        self.sweep_idle_slices();
        // Should this call go away before the answer, the slice no longer counts on it.
        let mut pending = Pending {
            slices: &self.slices,
            slice,
            armed: true,
        };
        let wanted = amount.saturating_mul(SLICE_CALLS);
        let (granted, expires_ms) = self
            .reserve_in_redis(
                tenant,
                month,
                started_at,
                None,
                limits,
                amount,
                slice,
                Some((wanted, back)),
            )
            .await?;
        pending.armed = false;
        self.slices.granted(slice, amount, granted, expires_ms);
        Ok(reservation(slice))
    }

    /// Tops `slice` up in the background, ahead of need (`Take::TakenTopUpAhead`): as a call
    /// of `amount` would, giving nothing back. Settles wait for it ([`Self::settles_done`]), so
    /// that a slice given back at shutdown is not held by it.
    fn top_up_ahead(
        &self,
        tenant: TenantId,
        month: Month,
        limits: &Limits,
        amount: i64,
        slice: Uuid,
    ) {
        let mut ahead = Ahead {
            metering: self.clone(),
            slice,
            granted: None,
        };
        let limits = limits.clone();
        let busy = self.settling.enter();
        tokio::spawn(async move {
            let _busy = busy;
            let topped_up = ahead
                .metering
                .reserve_in_redis(
                    tenant,
                    month,
                    OffsetDateTime::now_utc(),
                    None,
                    &limits,
                    amount,
                    slice,
                    Some((amount.saturating_mul(SLICE_CALLS), 0)),
                )
                .await;
            if let Err(e) = &topped_up {
                if !matches!(e, Error::OverBudget { .. }) {
                    tracing::warn!(error = ?e, "a slice of the allowance could not be topped up ahead of need");
                }
            }
            ahead.granted = topped_up.ok();
            // The slice is told before the settles are done.
            drop(ahead);
        });
    }

    /// Runs a reservation script for `id` (a call's own, or with `slice` = `(wanted, back)` a
    /// slice's top-up), rebuilding missing counters; the amount granted and until when.
    #[allow(clippy::too_many_arguments)]
    async fn reserve_in_redis(
        &self,
        tenant: TenantId,
        month: Month,
        started_at: OffsetDateTime,
        rated: Option<Option<Uuid>>,
        limits: &Limits,
        amount: i64,
        id: Uuid,
        slice: Option<(i64, i64)>,
    ) -> Result<(i64, i64)> {
        let now_ms = unix_ms(started_at);
        let expires_ms = now_ms + self.reservation_ttl.as_millis() as i64;
        let limit = limits.token_limit().unwrap_or(-1);
        let keys = self.month_keys(tenant, month);
        let now_s = started_at.unix_timestamp();
        let rate_keys = rated.map(|api_key| self.rate_keys(tenant, api_key, now_s));
        let (wanted, back) = slice.unwrap_or((amount, 0));
        for attempt in 0..3 {
            let [status, used, granted] = self
                .batch
                .run(Op::Reserve {
                    counters: keys.counters.clone(),
                    reservations: keys.reservations.clone(),
                    // The request is counted once, on the first attempt.
                    rate: rate_keys.clone().filter(|_| attempt == 0),
                    id,
                    amount,
                    limit,
                    now_ms,
                    expires_ms,
                    ttl_secs: COUNTER_TTL_SECS,
                    requests_per_minute: limits.requests_per_minute.map_or(-1, i64::from),
                    key_requests_per_minute: limits.key_requests_per_minute.map_or(-1, i64::from),
                    wanted,
                    slice: slice.is_some(),
                    back,
                })
                .await?;
            match status {
                2 => {
                    return Err(Error::RateLimited {
                        retry_after_secs: (60 - now_s.rem_euclid(60)).max(1) as u64,
                    })
                }
                1 => return Ok((granted.max(amount), expires_ms)),
                0 => {
                    return Err(Error::OverBudget {
                        used,
                        limit,
                        requested: amount,
                    })
                }
                _ => {
                    self.rebuild(tenant, month).await?;
                }
            }
        }
        Err(Error::Internal(
            "usage counters could not be rebuilt".into(),
        ))
    }

    /// Gives back every slice of the allowance no call holds (at shutdown, so that other
    /// processes need not wait for them to expire). Tests call it to see the counters of calls
    /// in flight alone.
    pub async fn return_slices(&self) -> Result<()> {
        // Slices with settles still on their way are not idle yet.
        self.settles_done().await;
        self.return_idle(Duration::ZERO).await
    }

    /// Waits until the settles of calls that have answered ([`Held::settle_soon`]) are done
    /// (at shutdown: nothing is left behind).
    pub async fn settles_done(&self) {
        if let Err(e) = self.batch.flush().await {
            tracing::warn!(error = ?e, "settles could not be flushed");
        }
        self.settling.idle().await;
    }

    /// Gives back the slices no call has used for `idle`.
    async fn return_idle(&self, idle: Duration) -> Result<()> {
        let mut result = Ok(());
        for (slice, tenant, month) in self.slices.idle(idle) {
            let keys = self.month_keys(tenant, month);
            let returned = self
                .batch
                .run(Op::Return {
                    counters: keys.counters.clone(),
                    reservations: keys.reservations.clone(),
                    id: slice,
                })
                .await;
            if let Err(e) = returned {
                tracing::warn!(error = ?e, "a slice of the allowance could not be given back; it expires by itself");
                result = Err(e);
            }
        }
        result
    }

    /// Starts, once per process, the task that gives slices back after [`IDLE`] without a call.
    /// It ends when this metering is dropped.
    fn sweep_idle_slices(&self) {
        use std::sync::atomic::Ordering;
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Relaxed);
            return;
        };
        // Without a strong reference: the task must not keep the metering alive.
        let metering = Arc::downgrade(&self.0);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(IDLE / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(metering) = metering.upgrade().map(Metering) else {
                    break;
                };
                if metering.slices.any() {
                    let _ = metering.return_idle(IDLE).await;
                }
            }
        });
    }

    /// Settles a reservation with the call's usage: counts it live and hands the event to the
    /// ledger, in one atomic step.
    pub async fn settle(&self, reservation: Reservation, event: &UsageEvent) -> Result<()> {
        let settled = self
            .run_settle(&reservation, event)
            .await
            .map(|[_, gone, _]| gone == 1);
        self.settled(&reservation, !matches!(settled, Ok(false)));
        settled.map(|_| ())
    }

    /// A call on a slice is settled, or given up on: the slice no longer counts on it, and
    /// is retired when `gone` (Redis no longer holds it, or the settle failed).
    fn settled(&self, r: &Reservation, gone: bool) {
        if let Some(slice) = r.slice {
            if gone {
                tracing::info!(tenant = %r.tenant, "a slice of the allowance is retired");
            }
            self.slices.settled(slice, gone);
        }
    }

    /// Sends the settle of `r` with `event` (with others', see `batch.rs`); its answer.
    async fn run_settle(&self, r: &Reservation, event: &UsageEvent) -> Result<Answer> {
        let event = Arc::new(event.clone());
        self.batch.run(self.settle_of(r, Some(&event))).await
    }

    /// What follows a settle's answer: the slice told (retired when Redis no longer held it);
    /// when Redis could not be reached, the event written straight to the ledger and the live
    /// counters corrected once Redis answers again (in the background, for as long as a
    /// reservation lives).
    async fn after_settle(&self, r: Reservation, event: &UsageEvent, settled: Result<Answer>) {
        let e = match settled {
            Ok([_, gone, _]) => {
                self.settled(&r, gone == 1);
                return;
            }
            Err(e) => e,
        };
        tracing::error!(error = ?e, "usage could not be settled in Redis; writing it to the ledger");
        // The call's slice is taken from no more; the call keeps its part of it (the slice is
        // not given back) until it is counted live.
        if let Some(slice) = r.slice {
            self.slices.retire(slice);
        }
        // Boxed, as the rest of this path: it is rare, and inline it would make every
        // settle's future (one per call) as large as a Postgres query's.
        if let Err(e) = Box::pin(write_events(&self.db, [event])).await {
            tracing::error!(error = ?e, event = ?event, "usage could not be recorded");
            self.settled(&r, true);
            return;
        }
        let written_ms = unix_ms(OffsetDateTime::now_utc());
        let metering = self.clone();
        let event = event.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(500);
            let deadline = tokio::time::Instant::now() + metering.reservation_ttl;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(wait).await;
                match metering.correct(&r, &event, written_ms).await {
                    Ok(()) => {
                        metering.settled(&r, true);
                        return;
                    }
                    Err(_) => wait = (wait * 2).min(Duration::from_secs(10)),
                }
            }
            metering.settled(&r, true);
            tracing::warn!(event = %event.id, "live counters not corrected; they are right again when next rebuilt");
        });
    }

    /// Counts live a call the ledger already has (see [`Held::settle_durably`]).
    async fn correct(&self, r: &Reservation, event: &UsageEvent, written_ms: i64) -> Result<()> {
        let keys = self.month_keys(r.tenant, r.month);
        let _: i64 = self
            .correct
            .key(&keys.counters)
            .key(&keys.reservations)
            .arg(r.id.to_string())
            .arg(event.prompt_tokens)
            .arg(event.completion_tokens)
            .arg(event.cost_micro_usd)
            .arg(written_ms)
            .arg(if r.slice.is_some() { "1" } else { "0" })
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    /// Holds `reservation` for a call: released when dropped unless settled or released.
    pub fn hold(&self, reservation: Reservation) -> Held {
        Held {
            metering: self.clone(),
            reservation: Some(reservation),
        }
    }

    /// Pushes a reservation's expiry another `reservation_ttl` from now.
    pub async fn extend(&self, r: &Reservation) -> Result<()> {
        let expires_ms =
            unix_ms(OffsetDateTime::now_utc()) + self.reservation_ttl.as_millis() as i64;
        let _: i64 = redis::cmd("ZADD")
            .arg(self.reservations_key(r.tenant, r.month))
            .arg("XX")
            .arg(expires_ms)
            .arg(r.held_as().to_string())
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    /// Gives a reservation's tokens back without charging anything (the call failed).
    pub async fn release(&self, reservation: Reservation) -> Result<()> {
        if let Some(slice) = reservation.slice {
            // Back into the slice, here: no round trip.
            self.slices.released(slice, reservation.amount);
            return Ok(());
        }
        self.batch
            .run(self.settle_of(&reservation, None))
            .await
            .map(|_| ())
    }

    /// The settle script's operation: releases `r`, and with an `event` counts its tokens and
    /// cost and hands the event to the ledger (its JSON to the stream, the event itself to this
    /// process's writer once the script is back).
    fn settle_of(&self, r: &Reservation, event: Option<&Arc<UsageEvent>>) -> Op {
        let keys = self.month_keys(r.tenant, r.month);
        Op::Settle {
            counters: keys.counters.clone(),
            reservations: keys.reservations.clone(),
            stream: self.stream.clone(),
            id: r.held_as(),
            event: event.map(|e| e.to_json()).unwrap_or_default(),
            prompt_tokens: event.map_or(0, |e| e.prompt_tokens),
            completion_tokens: event.map_or(0, |e| e.completion_tokens),
            cost_micro_usd: event.map_or(0, |e| e.cost_micro_usd),
            amount: r.amount,
            slice: r.slice.is_some(),
            usage: event.cloned(),
        }
    }

    /// Rebuilds a clinic-month's live counters from the ledger, if they are missing.
    pub async fn rebuild(&self, tenant: TenantId, month: Month) -> Result<()> {
        let mut totals = ledger_totals(&self.db, tenant, month).await?;
        totals.add(&pending_in_handoff(&self.db, &self.redis, tenant, month).await?);
        let _: i64 = self
            .init
            .key(self.counters_key(tenant, month))
            .arg(totals.tokens)
            .arg(totals.prompt_tokens)
            .arg(totals.completion_tokens)
            .arg(totals.cost_micro_usd)
            .arg(totals.requests)
            .arg(COUNTER_TTL_SECS)
            .arg(unix_ms(OffsetDateTime::now_utc()))
            .invoke_async(&mut self.redis.conn())
            .await?;
        tracing::info!(%tenant, %month, "usage counters rebuilt from the ledger and the hand-off");
        Ok(())
    }

    /// The live view of a clinic's use in `month` (rebuilt from the ledger when missing), and
    /// the tokens reserved by calls in flight.
    pub async fn month_usage(&self, tenant: TenantId, month: Month) -> Result<(MonthUsage, i64)> {
        // Settles queued by this process go first: a call that has answered is counted.
        self.batch.flush().await?;
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

/// Tasks in flight, and a way to wait until there are none.
#[derive(Default)]
struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One task counted by an [`InFlight`] until dropped.
struct Entered(Arc<InFlight>);

impl InFlight {
    fn enter(self: &Arc<Self>) -> Entered {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Entered(Arc::clone(self))
    }

    async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_are_ordered_by_their_start_and_unique() {
        let start = OffsetDateTime::now_utc();
        let later = start + Duration::from_millis(2);
        let (a, b, c) = (call_id(start), call_id(start), call_id(later));
        assert_eq!(a.get_version(), Some(uuid::Version::SortRand));
        assert_ne!(a, b);
        assert!(a < c && b < c, "{a} {b} {c}");
        // The leading 48 bits are the start in milliseconds.
        let ms = u64::from_be_bytes([
            0,
            0,
            a.as_bytes()[0],
            a.as_bytes()[1],
            a.as_bytes()[2],
            a.as_bytes()[3],
            a.as_bytes()[4],
            a.as_bytes()[5],
        ]);
        assert_eq!(ms as i64, unix_ms(start));
    }
}
