//! Reporting overage to Stripe's Billing Meter: tokens beyond the month's allowance, one event
//! per clinic and hour, through an outbox.
//!
//! **Queue** ([`queue_overage`]). For each clinic with a Stripe customer, in one transaction
//! holding the clinic's row: every whole hour from `metered_through` up to `now - delay` (the
//! delay lets calls still on their way into the ledger land in their own hour) is read from the
//! ledger; an hour's overage is what it pushed the month's running total past the allowance
//! (`max(0, after − allowance) − max(0, before − allowance)`); each non-zero hour becomes an
//! outbox row with a deterministic identifier (`tessera-<clinic>-<YYYYMMDDHH>`), and
//! `metered_through` moves on. The rows and the mark commit together, so a crash leaves either
//! both or neither.
//!
//! **Send** ([`send_due`]). Each unsent row is locked (`SKIP LOCKED`, so replicas share the
//! work), sent as a meter event whose identifier is also the request's idempotency key, and
//! marked sent in the same transaction. A crash after Stripe recorded the event but before the
//! mark leaves the row unsent; sending it again replays Stripe's first answer (or meets
//! Stripe's refusal of a duplicate identifier, which counts as sent), so each hour is counted
//! once. Failures are retried with exponential backoff, up to an hour apart.

use std::time::Duration;

use time::OffsetDateTime;

use super::StripeApi;
use crate::db::Db;
use crate::tenancy::TenantId;
use crate::Result;

/// The identifier of a clinic's meter event for the hour starting at `hour`.
pub fn identifier(tenant: TenantId, hour: OffsetDateTime) -> String {
    format!(
        "tessera-{tenant}-{:04}{:02}{:02}{:02}",
        hour.year(),
        u8::from(hour.month()),
        hour.day(),
        hour.hour()
    )
}

fn truncate_to_hour(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_time(time::Time::from_hms(t.hour(), 0, 0).unwrap_or(time::Time::MIDNIGHT))
}

fn month_start(t: OffsetDateTime) -> OffsetDateTime {
    crate::Month::of(t).start()
}

/// Overage per hour from per-hour totals (ascending, all in or after the month of the first),
/// counting from the start of each month, reporting only hours at or after `from`.
pub fn overage_by_hour(
    hours: &[(OffsetDateTime, i64)],
    included: i64,
    from: OffsetDateTime,
) -> Vec<(OffsetDateTime, i64)> {
    let mut out = Vec::new();
    let mut month = None;
    let mut total = 0i64;
    for &(hour, tokens) in hours {
        let m = crate::Month::of(hour);
        if month != Some(m) {
            month = Some(m);
            total = 0;
        }
        let before = total;
        total = total.saturating_add(tokens);
        let over = (total - included).max(0) - (before - included).max(0);
        if hour >= from && over > 0 {
            out.push((hour, over));
        }
    }
    out
}

/// Puts the clinic's overage for every finished hour before `cutoff` into the outbox. Returns
/// how many rows it added; 0 also when another worker holds the clinic.
pub async fn queue_overage(db: &Db, tenant: TenantId, cutoff: OffsetDateTime) -> Result<usize> {
    let end = truncate_to_hour(cutoff);
    let mut tx = db.begin_tenant(tenant).await?;
    let row: Option<(Option<OffsetDateTime>, Option<String>, String)> = sqlx::query_as(
        "SELECT metered_through, stripe_customer_id, plan FROM tenants FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some((through, Some(customer), plan)) = row else {
        return Ok(0);
    };
    let (included, overage_price): (Option<i64>, i64) =
        sqlx::query_as("SELECT included_tokens, overage_micro_usd_per_1k FROM plans WHERE id = $1")
            .bind(&plan)
            .fetch_one(&mut *tx)
            .await?;
    let start = through.unwrap_or(end);
    if start >= end {
        return Ok(0);
    }
    let mut added = 0;
    // Unlimited plans and plans without an overage price have nothing to report.
    if let (Some(included), true) = (included, overage_price > 0) {
        let hours: Vec<(OffsetDateTime, i64)> = sqlx::query_as(
            "SELECT date_trunc('hour', occurred_at, 'UTC'),
                    sum(prompt_tokens + completion_tokens)::bigint
               FROM usage_events
              WHERE occurred_at >= $1 AND occurred_at < $2
              GROUP BY 1 ORDER BY 1",
        )
        .bind(month_start(start))
        .bind(end)
        .fetch_all(&mut *tx)
        .await?;
        for (hour, tokens) in overage_by_hour(&hours, included, start) {
            let done = sqlx::query(
                "INSERT INTO meter_outbox (tenant_id, hour, identifier, stripe_customer_id, tokens)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(tenant)
            .bind(hour)
            .bind(identifier(tenant, hour))
            .bind(&customer)
            .bind(tokens)
            .execute(&mut *tx)
            .await?;
            added += done.rows_affected() as usize;
        }
    }
    sqlx::query("UPDATE tenants SET metered_through = $1")
        .bind(end)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(added)
}

/// What one round of sending did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub sent: usize,
    pub failed: usize,
}

/// Backoff after `attempts` failures: 30 s, 1 min, 2 min, ... up to an hour.
pub fn backoff(attempts: i32) -> Duration {
    Duration::from_secs((30u64 << attempts.clamp(0, 7) as u32).min(3600))
}

/// Sends the clinic's due outbox rows, oldest first, each marked sent in the transaction that
/// holds it. Stops at the first failure (it is retried after its backoff).
pub async fn send_due(db: &Db, api: &StripeApi, tenant: TenantId) -> Result<Sent> {
    let mut report = Sent::default();
    loop {
        let mut tx = db.begin_tenant(tenant).await?;
        let row: Option<(OffsetDateTime, String, String, i64, i32)> = sqlx::query_as(
            "SELECT hour, identifier, stripe_customer_id, tokens, attempts FROM meter_outbox
              WHERE sent_at IS NULL AND next_attempt_at <= now()
              ORDER BY hour LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some((hour, identifier, customer, tokens, attempts)) = row else {
            return Ok(report);
        };
        // Inside the hour, so Stripe counts it in the right period.
        let timestamp = hour.unix_timestamp() + 3599;
        match api
            .meter_event(&identifier, &customer, tokens, timestamp)
            .await
        {
            Ok(()) => {
                sqlx::query("UPDATE meter_outbox SET sent_at = now(), last_error = NULL WHERE identifier = $1")
                    .bind(&identifier)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                report.sent += 1;
            }
            Err(error) => {
                tracing::warn!(%identifier, %error, "meter event not sent; will retry");
                let wait = backoff(attempts);
                sqlx::query(
                    "UPDATE meter_outbox SET attempts = attempts + 1, last_error = $2,
                            next_attempt_at = now() + make_interval(secs => $3)
                      WHERE identifier = $1",
                )
                .bind(&identifier)
                .bind(&error)
                .bind(wait.as_secs_f64())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                report.failed += 1;
                return Ok(report);
            }
        }
    }
}

/// One round for every clinic with a Stripe customer: queue, then send. A clinic whose round
/// fails (say, the database hiccups) is logged and counted as failed; the others go on.
pub async fn tick(db: &Db, api: &StripeApi, now: OffsetDateTime, delay: Duration) -> Result<Sent> {
    let tenants: Vec<TenantId> = sqlx::query_scalar("SELECT billing_customers()")
        .fetch_all(db.pool())
        .await?;
    let cutoff = now - delay;
    let mut total = Sent::default();
    for tenant in tenants {
        let round = async {
            queue_overage(db, tenant, cutoff).await?;
            send_due(db, api, tenant).await
        };
        match round.await {
            Ok(s) => {
                total.sent += s.sent;
                total.failed += s.failed;
            }
            Err(e) => {
                tracing::error!(error = ?e, %tenant, "meter round failed for a clinic");
                total.failed += 1;
            }
        }
    }
    Ok(total)
}

/// The meter worker: a round every `interval`, for as long as the process runs.
pub async fn run(
    db: Db,
    api: StripeApi,
    interval: Duration,
    delay: Duration,
    stop: crate::shutdown::Shutdown,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A round in progress is finished; the next is not started once stopping.
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait() => return,
        }
        match tick(&db, &api, OffsetDateTime::now_utc(), delay).await {
            Ok(s) if s.sent + s.failed > 0 => {
                tracing::info!(
                    sent = s.sent,
                    failed = s.failed,
                    "overage reported to Stripe"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = ?e, "meter worker round failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn overage_is_what_each_hour_adds_beyond_the_allowance() {
        let h = |d: u8, hh: u8| {
            datetime!(2026-11-01 0:00 UTC)
                .replace_day(d)
                .unwrap()
                .replace_hour(hh)
                .unwrap()
        };
        let hours = [
            (h(1, 0), 600),
            (h(1, 1), 600), // crosses 1,000: 200 over
            (h(2, 5), 300), // all over
            (h(3, 9), 0),
        ];
        assert_eq!(
            overage_by_hour(&hours, 1000, h(1, 0)),
            vec![(h(1, 1), 200), (h(2, 5), 300)]
        );
        // Counting from the month's start, but reporting from `from` on.
        assert_eq!(overage_by_hour(&hours, 1000, h(2, 0)), vec![(h(2, 5), 300)]);
        // A new month starts from zero.
        let next = [(h(30, 23), 1500), (datetime!(2026-12-01 0:00 UTC), 900)];
        assert_eq!(
            overage_by_hour(&next, 1000, h(1, 0)),
            vec![(h(30, 23), 500)]
        );
    }

    #[test]
    fn identifiers_are_per_clinic_and_hour() {
        let t = TenantId(uuid::Uuid::nil());
        let id = identifier(t, datetime!(2026-11-29 07:00 UTC));
        assert_eq!(
            id,
            "tessera-00000000-0000-0000-0000-000000000000-2026112907"
        );
        assert!(id.len() <= 100);
    }

    #[test]
    fn backoff_grows_to_an_hour() {
        assert_eq!(backoff(0), Duration::from_secs(30));
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(10), Duration::from_secs(3600));
    }
}
