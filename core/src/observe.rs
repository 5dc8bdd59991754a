//! Metrics: the names of every family Tessera records, with their help texts, and the small
//! functions that record them where things happen (the gauges sampled at scrape time are
//! read by the server). Recording goes through the `metrics`
//! facade (a no-op until a recorder is installed); the server installs the Prometheus
//! recorder and serves `/metrics` (see `server::telemetry`).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, histogram, Counter, Histogram,
    Unit,
};

use crate::{PlanId, Provider};

pub const HTTP_REQUESTS: &str = "tessera_http_requests_total";
pub const HTTP_SECONDS: &str = "tessera_http_request_duration_seconds";
pub const GATEWAY_OVERHEAD: &str = "tessera_gateway_overhead_seconds";
pub const PROVIDER_SECONDS: &str = "tessera_provider_response_seconds";
pub const PROVIDER_ERRORS: &str = "tessera_provider_errors_total";
pub const TOKENS: &str = "tessera_tokens_total";
pub const COST: &str = "tessera_cost_micro_usd_total";
pub const BUDGET_REFUSALS: &str = "tessera_budget_refusals_total";
pub const BUDGET_SCRIPTS: &str = "tessera_budget_scripts_total";
pub const BUDGET_OPERATIONS: &str = "tessera_budget_operations_total";
pub const LEDGER_LAG: &str = "tessera_ledger_handoff_lag_seconds";
pub const LEDGER_WRITTEN: &str = "tessera_ledger_events_written_total";
pub const LEDGER_PENDING: &str = "tessera_ledger_handoff_pending";
pub const JOBS_WAITING: &str = "tessera_ingestion_jobs_waiting";
pub const JOBS_OLDEST: &str = "tessera_ingestion_oldest_job_age_seconds";
pub const DB_CONNECTIONS: &str = "tessera_db_pool_connections";
pub const DB_MAX_CONNECTIONS: &str = "tessera_db_pool_max_connections";

/// Every family, for the help texts and for tests that check each is exposed.
pub const FAMILIES: [&str; 17] = [
    HTTP_REQUESTS,
    HTTP_SECONDS,
    GATEWAY_OVERHEAD,
    PROVIDER_SECONDS,
    PROVIDER_ERRORS,
    TOKENS,
    COST,
    BUDGET_REFUSALS,
    BUDGET_SCRIPTS,
    BUDGET_OPERATIONS,
    LEDGER_LAG,
    LEDGER_WRITTEN,
    LEDGER_PENDING,
    JOBS_WAITING,
    JOBS_OLDEST,
    DB_CONNECTIONS,
    DB_MAX_CONNECTIONS,
];

/// The histogram families, and the bucket bounds (seconds) each is exported with.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// Gives the recorder the help text and unit of every family.
pub fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "Requests answered, by route, method and status."
    );
    describe_histogram!(
        HTTP_SECONDS,
        Unit::Seconds,
        "Time to answer a request (until the response starts), by route and method."
    );
    describe_histogram!(GATEWAY_OVERHEAD, Unit::Seconds, "Time a model call spends in Tessera outside the provider: before the provider is called (limits, key, reservation, body) plus settling after its reply.");
    describe_histogram!(
        PROVIDER_SECONDS,
        Unit::Seconds,
        "Time until a provider's response headers, per attempt, by provider and operation."
    );
    describe_counter!(PROVIDER_ERRORS, "Provider calls that failed, by provider and kind (timeout, unreachable, status_4xx, status_5xx, rate_limited).");
    describe_counter!(
        TOKENS,
        "Tokens settled, by plan and kind (prompt, completion)."
    );
    describe_counter!(
        COST,
        "Cost of settled calls in millionths of a US dollar, by plan."
    );
    describe_counter!(
        BUDGET_REFUSALS,
        "Calls refused before reaching a provider, by reason (allowance, rate)."
    );
    describe_counter!(
        BUDGET_SCRIPTS,
        "Budget scripts sent to Redis (each carries the reservations and settles of calls made at about the same moment)."
    );
    describe_counter!(
        BUDGET_OPERATIONS,
        "Reservations and settles sent to Redis; divided by the scripts, the mean batch."
    );
    describe_histogram!(
        LEDGER_LAG,
        Unit::Seconds,
        "Time from a call's settle to its row in the Postgres ledger."
    );
    describe_counter!(LEDGER_WRITTEN, "Usage events written to the ledger.");
    describe_gauge!(
        LEDGER_PENDING,
        "Entries waiting in Redis for the ledger writer (each holds the usage events one settle script handed over)."
    );
    describe_gauge!(
        JOBS_WAITING,
        "Ingestion jobs waiting or in progress, across clinics."
    );
    describe_gauge!(
        JOBS_OLDEST,
        Unit::Seconds,
        "Age of the oldest ingestion job."
    );
    describe_gauge!(
        DB_CONNECTIONS,
        "Postgres pool connections, by state (idle, in_use)."
    );
    describe_gauge!(DB_MAX_CONNECTIONS, "Postgres pool size limit.");
}

/// The handles of the metrics every model call records, looked up once instead of by name
/// and labels at each call ([`keep_handles`]).
struct Handles {
    /// By provider ([`Provider::ALL`]), then operation (chat, embeddings).
    provider_seconds: Vec<[Histogram; 2]>,
    /// JSON, stream.
    overhead: [Histogram; 2],
    /// By plan ([`PlanId::ALL`]): prompt and completion tokens, cost.
    settled: Vec<[Counter; 3]>,
    scripts: Counter,
    operations: Counter,
    ledger_lag: Histogram,
    ledger_written: Counter,
}

static HANDLES: OnceLock<Handles> = OnceLock::new();

/// Looks up the handles of the metrics every call records, once: call it after installing
/// the recorder (`server::telemetry::prometheus` does). Until then, and without it, each
/// recording looks its metric up by name (and records nothing without a recorder).
pub fn keep_handles() {
    HANDLES.get_or_init(|| Handles {
        provider_seconds: Provider::ALL
            .iter()
            .map(|p| {
                ["chat", "embeddings"]
                    .map(|op| histogram!(PROVIDER_SECONDS, "provider" => p.as_str(), "op" => op))
            })
            .collect(),
        overhead: ["json", "stream"].map(|mode| histogram!(GATEWAY_OVERHEAD, "mode" => mode)),
        settled: PlanId::ALL
            .iter()
            .map(|p| {
                let plan = p.as_str();
                [
                    counter!(TOKENS, "plan" => plan, "kind" => "prompt"),
                    counter!(TOKENS, "plan" => plan, "kind" => "completion"),
                    counter!(COST, "plan" => plan),
                ]
            })
            .collect(),
        scripts: counter!(BUDGET_SCRIPTS),
        operations: counter!(BUDGET_OPERATIONS),
        ledger_lag: histogram!(LEDGER_LAG),
        ledger_written: counter!(LEDGER_WRITTEN),
    });
}

/// The position of `item` in `all`.
fn index<T: PartialEq>(all: &[T], item: &T) -> Option<usize> {
    all.iter().position(|x| x == item)
}

pub fn provider_response(provider: Provider, op: &'static str, took: Duration) {
    let op_index = match op {
        "chat" => Some(0),
        "embeddings" => Some(1),
        _ => None,
    };
    let kept = HANDLES.get().and_then(|h| {
        h.provider_seconds
            .get(index(Provider::ALL, &provider)?)?
            .get(op_index?)
    });
    match kept {
        Some(h) => h.record(took),
        None => {
            histogram!(PROVIDER_SECONDS, "provider" => provider.as_str(), "op" => op).record(took)
        }
    }
}

pub fn provider_error(provider: Provider, kind: &'static str) {
    counter!(PROVIDER_ERRORS, "provider" => provider.as_str(), "kind" => kind).increment(1);
}

/// The kind label of a provider's error status.
pub fn status_kind(status: u16) -> &'static str {
    match status {
        429 => "rate_limited",
        500.. => "status_5xx",
        _ => "status_4xx",
    }
}

pub fn gateway_overhead(mode: &'static str, took: Duration) {
    let kept = HANDLES.get().and_then(|h| match mode {
        "json" => Some(&h.overhead[0]),
        "stream" => Some(&h.overhead[1]),
        _ => None,
    });
    match kept {
        Some(h) => h.record(took),
        None => histogram!(GATEWAY_OVERHEAD, "mode" => mode).record(took),
    }
}

pub fn settled(plan: PlanId, prompt_tokens: i64, completion_tokens: i64, cost_micro_usd: i64) {
    let counts = [prompt_tokens, completion_tokens, cost_micro_usd].map(|n| n.max(0) as u64);
    if let Some(kept) = HANDLES
        .get()
        .and_then(|h| h.settled.get(index(PlanId::ALL, &plan)?))
    {
        for (counter, n) in kept.iter().zip(counts) {
            counter.increment(n);
        }
        return;
    }
    let plan = plan.as_str();
    counter!(TOKENS, "plan" => plan, "kind" => "prompt").increment(counts[0]);
    counter!(TOKENS, "plan" => plan, "kind" => "completion").increment(counts[1]);
    counter!(COST, "plan" => plan).increment(counts[2]);
}

/// Counts a refusal by the budget or the rate limit (other errors are not counted here).
pub fn refused(err: &crate::Error) {
    let reason = match err {
        crate::Error::OverBudget { .. } => "allowance",
        crate::Error::RateLimited { .. } => "rate",
        _ => return,
    };
    counter!(BUDGET_REFUSALS, "reason" => reason).increment(1);
}

/// One budget script sent, carrying `operations` reservations and settles.
pub fn budget_batch(operations: usize) {
    match HANDLES.get() {
        Some(h) => {
            h.scripts.increment(1);
            h.operations.increment(operations as u64);
        }
        None => {
            counter!(BUDGET_SCRIPTS).increment(1);
            counter!(BUDGET_OPERATIONS).increment(operations as u64);
        }
    }
}

pub fn ledger_written(lags: impl Iterator<Item = Duration>) {
    let (lag, written) = match HANDLES.get() {
        Some(h) => (h.ledger_lag.clone(), h.ledger_written.clone()),
        None => (histogram!(LEDGER_LAG), counter!(LEDGER_WRITTEN)),
    };
    let mut n = 0;
    for took in lags {
        lag.record(took);
        n += 1;
    }
    written.increment(n);
}
