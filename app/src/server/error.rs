//! The one mapping from the core's errors to what a client sees: client mistakes keep their
//! message and get a 4xx; anything else is logged once, with its source chain, and reads the
//! same everywhere ("Something went wrong on our side…"). Server functions get the status
//! through Leptos' response options; plain axum routes through [`IntoResponse`].

use axum::response::{IntoResponse, Response};
use leptos::prelude::use_context;

use crate::error::AppError;

/// Sets the response status for `err` (inside a server function) and returns it; an outage
/// also says when to try again.
pub fn fail(err: AppError) -> AppError {
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
        res.set_status(err.status_code());
        if let Some(retry) = err.retry_after() {
            res.insert_header(http::header::RETRY_AFTER, retry);
        }
    }
    err
}

/// `error: source: source…`, for the log.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl From<tessera_core::Error> for AppError {
    fn from(err: tessera_core::Error) -> Self {
        use tessera_core::Error as E;
        let mapped = match err {
            E::Invalid(m) => AppError::Invalid(m),
            E::Conflict(m) => AppError::Conflict(m),
            E::NotFound => AppError::NotFound,
            E::Forbidden(m) | E::PlanLimit(m) => AppError::Forbidden(m),
            E::Unauthenticated(m) => AppError::Unauthenticated(m),
            E::Gone(m) => AppError::Gone(m),
            E::Unavailable(m) => AppError::Unavailable(m),
            e @ (E::RateLimited { .. } | E::OverBudget { .. }) => {
                AppError::TooManyRequests(e.to_string())
            }
            other if other.is_outage() => {
                tracing::warn!(error = %chain(&other), "a backing service is unreachable");
                AppError::Unavailable(tessera_types::TRY_AGAIN_SHORTLY.into())
            }
            other => {
                tracing::error!(error = %chain(&other), "request failed");
                AppError::Internal(super::request_id())
            }
        };
        fail(mapped)
    }
}

/// A form field that is not one of an enum's names (a role, a provider, a plan).
impl From<tessera_types::UnknownName> for AppError {
    fn from(e: tessera_types::UnknownName) -> Self {
        fail(AppError::Invalid(e.to_string()))
    }
}

/// A form field or query parameter that is not a month.
impl From<tessera_types::NotAMonth> for AppError {
    fn from(e: tessera_types::NotAMonth) -> Self {
        fail(AppError::Invalid(e.to_string()))
    }
}

impl AppError {
    pub fn status_code(&self) -> http::StatusCode {
        http::StatusCode::from_u16(self.status()).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// `Retry-After` for a service that is briefly unavailable.
    fn retry_after(&self) -> Option<http::HeaderValue> {
        matches!(self, AppError::Unavailable(_))
            .then(|| http::HeaderValue::from(tessera_types::OUTAGE_RETRY_SECS))
    }
}

/// Plain routes answer an error as its status and message.
impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let retry = self.retry_after();
        let mut res = (self.status_code(), self.to_string()).into_response();
        if let Some(retry) = retry {
            res.headers_mut().insert(http::header::RETRY_AFTER, retry);
        }
        res
    }
}
