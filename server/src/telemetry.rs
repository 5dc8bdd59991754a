//! What an operator watches: one JSON log line per event (with the request's id, route and
//! clinic), the request id in every response, and Prometheus metrics on `/metrics`.

use std::sync::OnceLock;
use std::time::Instant;

use app::server::{AppState, RequestId};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderValue, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use secrecy::ExposeSecret;
use tessera_core::observe;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

/// The header that carries the request id, both ways (a name built once: one given as text is
/// checked again at every use).
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Sets up logging from `TESSERA_LOG_FORMAT` (`json`, the default, or `text`) and `RUST_LOG`.
pub fn init_logs() -> Result<(), String> {
    let rust_log = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if !rust_log.contains("tower_sessions") {
        // The session layer opens an `info` span around every request, which would hide the
        // request's own span (and its clinic) from the handlers inside it.
        if let Ok(directive) = "tower_sessions=warn".parse() {
            filter = filter.add_directive(directive);
        }
    }
    let format = std::env::var("TESSERA_LOG_FORMAT").unwrap_or_default();
    match format.trim() {
        "" | "json" => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .init(),
        "text" => tracing_subscriber::fmt().with_env_filter(filter).init(),
        other => {
            return Err(format!(
                "TESSERA_LOG_FORMAT: expected json or text, got {other:?}"
            ))
        }
    }
    Ok(())
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The process's Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let histograms = [
            observe::HTTP_SECONDS,
            observe::GATEWAY_OVERHEAD,
            observe::PROVIDER_SECONDS,
            observe::LEDGER_LAG,
        ];
        let builder = histograms.iter().fold(builder, |b, name| {
            b.set_buckets_for_metric(Matcher::Full(name.to_string()), &observe::LATENCY_BUCKETS)
                .expect("the bucket list is not empty")
        });
        let handle = builder
            .install_recorder()
            .expect("the Prometheus recorder is the process's only recorder");
        observe::describe();
        observe::keep_handles();
        // Histogram samples wait in the recorder until an upkeep folds them into buckets: without
        // one on a timer they would pile up (a few bytes per request) on a server nobody scrapes.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no metrics upkeep thread; histograms are folded only when scraped");
        }
        handle
    })
}

/// A client's request id when it is a short plain token (a proxy's or a load balancer's),
/// else a new one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// The route's pattern for labels and logs (never the raw path: ids would make every request
/// a new series).
enum Route {
    Matched(MatchedPath),
    Other(&'static str),
}

impl Route {
    fn of(req: &Request) -> Self {
        match req.extensions().get::<MatchedPath>() {
            Some(p) => Route::Matched(p.clone()),
            None if req.uri().path().starts_with("/pkg/") => Route::Other("/pkg/*"),
            None => Route::Other("unmatched"),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Route::Matched(p) => p.as_str(),
            Route::Other(s) => s,
        }
    }
}

/// The method's label: the standard ones by name, any other as `other` (a client can send
/// any token as a method, and each would be a new series).
fn method_label(method: &http::Method) -> &'static str {
    use http::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::PATCH => "PATCH",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "other",
    }
}

/// A request handle's metrics: its method and status, the count of its kind, the time of its
/// route and method.
type Kept = (&'static str, u16, metrics::Counter, metrics::Histogram);

/// Counts and times an answered request. The metrics' handles are kept per worker thread, by
/// route, method and status (a bounded set: route patterns, standard methods, statuses), so a
/// request looks them up in a map instead of by name and allocated labels.
fn record_request(method: &'static str, route: &str, status: u16, took: std::time::Duration) {
    use std::cell::RefCell;
    thread_local! {
        static KEPT: RefCell<tessera_core::FastMap<Box<str>, Vec<Kept>>> = RefCell::default();
    }
    KEPT.with(|kept| {
        let mut kept = kept.borrow_mut();
        if !kept.contains_key(route) {
            kept.insert(route.into(), Vec::new());
        }
        let handles = kept.get_mut(route).expect("the route's entry is there");
        let i = match handles
            .iter()
            .position(|(m, s, _, _)| *m == method && *s == status)
        {
            Some(i) => i,
            None => {
                handles.push((
                    method,
                    status,
                    metrics::counter!(observe::HTTP_REQUESTS, "method" => method, "route" => route.to_string(), "status" => status.to_string()),
                    metrics::histogram!(observe::HTTP_SECONDS, "method" => method, "route" => route.to_string()),
                ));
                handles.len() - 1
            }
        };
        let (_, _, count, seconds) = &handles[i];
        count.increment(1);
        seconds.record(took);
    });
}

/// Outermost middleware: gives the request its id (in its extensions, its log span and the
/// response's `x-request-id`), counts and times it, and logs one line when it is answered.
/// Inside it the request passes [`crate::guard::guard`] (one layer for both, so a request's
/// service and future are boxed once).
pub async fn request_context(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = request_id(&req);
    let route = Route::of(&req);
    let method = method_label(req.method());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        route = %route.as_str(),
        clinic = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut res = crate::guard::guard(State(state), req, next)
        .instrument(span.clone())
        .await;
    let took = started.elapsed();
    let status = res.status().as_u16();
    record_request(method, route.as_str(), status, took);
    // Refusals and failures are logged at `info` and `warn`; successes at `debug`
    // (`RUST_LOG=info,server::telemetry=debug` logs every request), which keeps a busy
    // gateway's log, and its CPU, for what needs reading.
    span.in_scope(|| {
        let ms = took.as_secs_f64() * 1000.0;
        match status {
            500.. => tracing::warn!(status, ms, "answered"),
            400.. => tracing::info!(status, ms, "answered"),
            _ => tracing::debug!(status, ms, "answered"),
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, value);
    }
    res
}

/// Reads the gauges that are sampled rather than counted (the job queue, the ledger hand-off,
/// the pool). Called when metrics are scraped; a source that does not answer within a second
/// keeps its last value.
async fn sample(services: &tessera_core::Services) {
    use metrics::gauge;
    let pool = services.db.pool();
    let size = pool.size() as f64;
    let idle = pool.num_idle() as f64;
    gauge!(observe::DB_CONNECTIONS, "state" => "idle").set(idle);
    gauge!(observe::DB_CONNECTIONS, "state" => "in_use").set((size - idle).max(0.0));
    gauge!(observe::DB_MAX_CONNECTIONS).set(pool.options().get_max_connections() as f64);
    let within = std::time::Duration::from_secs(1);
    let backlog = tessera_core::knowledge::ingest::backlog(&services.db);
    if let Ok(Ok((waiting, oldest))) = tokio::time::timeout(within, backlog).await {
        gauge!(observe::JOBS_WAITING).set(waiting as f64);
        gauge!(observe::JOBS_OLDEST).set(oldest);
    }
    let pending = tessera_core::metering::handoff_length(&services.redis);
    if let Ok(Ok(pending)) = tokio::time::timeout(within, pending).await {
        gauge!(observe::LEDGER_PENDING).set(pending as f64);
    }
}

async fn render(state: &AppState) -> Response {
    let handle = prometheus();
    sample(&state.services).await;
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        handle.render(),
    )
        .into_response()
}

/// `/metrics` on the main address: only with `TESSERA_METRICS_TOKEN`, to its bearer.
pub async fn metrics_with_token(
    State(state): State<AppState>,
    headers: http::HeaderMap,
) -> Response {
    let Some(token) = &state.services.config.metrics_token else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !tessera_core::crypto::constant_time_eq(given.as_bytes(), token.expose_secret().as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "Metrics need the token in TESSERA_METRICS_TOKEN as a bearer token.",
        )
            .into_response();
    }
    render(&state).await
}

async fn metrics_open(State(state): State<AppState>) -> Response {
    render(&state).await
}

/// The operations listener (`TESSERA_METRICS_ADDR`): metrics and health, no authentication,
/// for the private network a scraper and probes reach.
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_open))
        .route("/healthz", get(crate::health::healthz))
        .route("/readyz", get(crate::health::readyz))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value: &str) -> Request {
        Request::builder()
            .uri("/v1/models")
            .header(REQUEST_ID, value)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[test]
    fn methods_beyond_the_standard_ones_share_one_label() {
        assert_eq!(method_label(&http::Method::POST), "POST");
        let custom = http::Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method_label(&custom), "other");
    }

    #[test]
    fn a_plain_request_id_is_kept_and_anything_else_replaced() {
        assert_eq!(request_id(&with_header("lb-1234.abc_9")), "lb-1234.abc_9");
        for bad in ["", "has space", "quote\"", &"x".repeat(65), "tab\there"] {
            let id = request_id(&with_header(bad));
            assert_eq!(id.len(), 32, "{bad:?} gave {id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
}
