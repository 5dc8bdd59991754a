//! Reports from the ledger: a month's totals, use per day by model, agent or caller (and the
//! usage dashboard built from it), and the rows of the CSV export.

use time::OffsetDateTime;

use super::MonthUsage;
use crate::db::Db;
use crate::tenancy::TenantId;
use crate::{Month, Provider, Result};

/// A clinic's use in `month` according to the ledger.
pub async fn ledger_totals(db: &Db, tenant: TenantId, month: Month) -> Result<MonthUsage> {
    let (start, end) = (month.start(), month.end());
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
    month: Month,
    by: Breakdown,
) -> Result<Vec<DailyUsage>> {
    let (start, end) = (month.start(), month.end());
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
    let rows: Vec<(time::Date, String, i64, i64, i64)> = db
        .tenant_all(tenant, sqlx::query_as(&sql).bind(start).bind(end))
        .await?;
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
    pub provider: Provider,
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
pub async fn ledger_rows(db: &Db, tenant: TenantId, month: Month) -> Result<Vec<LedgerRow>> {
    let (start, end) = (month.start(), month.end());
    let query = sqlx::query_as(
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
    .bind(end);
    db.tenant_all(tenant, query).await
}

impl Breakdown {
    pub const ALL: [Breakdown; 3] = [Breakdown::Model, Breakdown::Agent, Breakdown::Caller];

    /// The chart's title.
    pub fn title(self) -> &'static str {
        match self {
            Breakdown::Model => "Tokens per day by model",
            Breakdown::Agent => "Tokens per day by agent",
            Breakdown::Caller => "Tokens per day by person or API key",
        }
    }
}

/// The most series a chart shows; beyond it the smallest share one, "Other".
const MAX_SERIES: usize = 8;

/// One stacked series of a daily chart: a model, agent or caller and its tokens on each day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Series {
    pub name: String,
    /// One value per day of the month.
    pub values: Vec<i64>,
}

/// A month's tokens per day, stacked by one breakdown, largest series first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DailyChart {
    pub by: Breakdown,
    pub series: Vec<Series>,
}

/// The usage dashboard of one month: a chart per breakdown, requests per day, and the month's
/// totals against the month before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dashboard {
    pub month: Month,
    pub previous: Month,
    pub charts: Vec<DailyChart>,
    pub requests_per_day: Vec<i64>,
    pub totals: MonthUsage,
    pub previous_totals: MonthUsage,
}

/// Builds the usage dashboard of `month` from the ledger.
pub async fn dashboard(db: &Db, tenant: TenantId, month: Month) -> Result<Dashboard> {
    let days = usize::from(month.days());
    let mut charts = Vec::with_capacity(Breakdown::ALL.len());
    let mut totals = MonthUsage::default();
    let mut requests_per_day = vec![0; days];
    for by in Breakdown::ALL {
        let rows = daily_usage(db, tenant, month, by).await?;
        if by == Breakdown::Model {
            for r in &rows {
                totals.tokens += r.tokens;
                totals.requests += r.requests;
                totals.cost_micro_usd += r.cost_micro_usd;
                if let Some(n) = requests_per_day.get_mut(day_index(r.day)) {
                    *n += r.requests;
                }
            }
        }
        charts.push(DailyChart {
            by,
            series: stack(&rows, days),
        });
    }
    let previous = month.previous();
    Ok(Dashboard {
        month,
        previous,
        charts,
        requests_per_day,
        totals,
        previous_totals: ledger_totals(db, tenant, previous).await?,
    })
}

fn day_index(day: time::Date) -> usize {
    usize::from(day.day()) - 1
}

/// Rows of one breakdown as series of `days` values, largest first; beyond [`MAX_SERIES`],
/// the smallest are summed into "Other".
fn stack(rows: &[DailyUsage], days: usize) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for r in rows {
        let i = match series.iter().position(|s| s.name == r.key) {
            Some(i) => i,
            None => {
                series.push(Series {
                    name: r.key.clone(),
                    values: vec![0; days],
                });
                series.len() - 1
            }
        };
        if let Some(v) = series[i].values.get_mut(day_index(r.day)) {
            *v += r.tokens;
        }
    }
    series.sort_by_key(|s| std::cmp::Reverse(s.values.iter().sum::<i64>()));
    if series.len() > MAX_SERIES {
        let rest = series.split_off(MAX_SERIES - 1);
        let mut other = vec![0; days];
        for s in rest {
            for (o, v) in other.iter_mut().zip(s.values) {
                *o += v;
            }
        }
        series.push(Series {
            name: "Other".into(),
            values: other,
        });
    }
    series
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn row(day: time::Date, key: &str, tokens: i64) -> DailyUsage {
        DailyUsage {
            day,
            key: key.into(),
            tokens,
            requests: 1,
            cost_micro_usd: 0,
        }
    }

    #[test]
    fn series_are_stacked_per_day_largest_first_with_the_rest_as_other() {
        let mut rows = vec![
            row(date!(2026 - 11 - 01), "small", 1),
            row(date!(2026 - 11 - 03), "big", 50),
            row(date!(2026 - 11 - 30), "big", 5),
        ];
        let stacked = stack(&rows, 30);
        assert_eq!(stacked[0].name, "big");
        assert_eq!(stacked[0].values[2], 50);
        assert_eq!(stacked[0].values[29], 5);
        assert_eq!(stacked[1].values[0], 1);

        for i in 0..10 {
            rows.push(row(date!(2026 - 11 - 02), &format!("m{i}"), 10 + i));
        }
        let stacked = stack(&rows, 30);
        assert_eq!(stacked.len(), MAX_SERIES);
        let other = stacked.last().unwrap();
        assert_eq!(other.name, "Other");
        // "small" (1) and the four smallest m (10, 11, 12, 13) fell into "Other".
        assert_eq!(other.values.iter().sum::<i64>(), 1 + 10 + 11 + 12 + 13);
    }
}
