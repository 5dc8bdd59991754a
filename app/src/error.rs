//! The error type every server function returns. It crosses the wire as JSON, so the browser
//! shows the same message the server chose; unexpected failures are opaque.

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("We couldn't find that.")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// A service Tessera depends on (Stripe) failed; the message says what to do.
    #[error("{0}")]
    Unavailable(String),
    /// Unexpected; with the request's id (when known) for support to find its log lines.
    #[error("{}{}", tessera_types::SOMETHING_WENT_WRONG, reference(.0))]
    Internal(Option<String>),
    /// The request did not reach the server or its answer could not be read.
    #[error("Couldn't reach Tessera: {0}")]
    Transport(String),
}

impl AppError {
    pub fn status(&self) -> u16 {
        match self {
            AppError::Unauthenticated(_) => 401,
            AppError::Forbidden(_) => 403,
            AppError::NotFound => 404,
            AppError::Invalid(_) => 422,
            AppError::Conflict(_) => 409,
            AppError::Gone(_) => 410,
            AppError::TooManyRequests(_) => 429,
            AppError::Unavailable(_) => 503,
            AppError::Internal(_) | AppError::Transport(_) => 500,
        }
    }
}

/// " Reference: <request id>." for an error message, when the id is known.
fn reference(id: &Option<String>) -> String {
    id.as_deref()
        .map(|id| format!(" Reference: {id}."))
        .unwrap_or_default()
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            // Form fields that could not be read are the client's mistake.
            ServerFnErrorErr::Args(m) | ServerFnErrorErr::MissingArg(m) => {
                // Decoding the arguments fails before the function body runs, so set the
                // status here: a malformed form is the client's mistake, not a 500.
                #[cfg(feature = "ssr")]
                if let Some(res) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
                    res.set_status(http::StatusCode::UNPROCESSABLE_ENTITY);
                }
                AppError::Invalid(format!("Some fields were missing or malformed: {m}"))
            }
            ServerFnErrorErr::Request(m) | ServerFnErrorErr::Response(m) => AppError::Transport(m),
            other => AppError::Transport(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unexpected_error_names_its_request_for_support() {
        let with = AppError::Internal(Some("5f0c9d2e".into()));
        assert_eq!(
            with.to_string(),
            format!(
                "{} Reference: 5f0c9d2e.",
                tessera_types::SOMETHING_WENT_WRONG
            )
        );
        assert_eq!(
            AppError::Internal(None).to_string(),
            tessera_types::SOMETHING_WENT_WRONG
        );
        assert_eq!(with.status(), 500);
        // It crosses the wire with its reference.
        let json = serde_json::to_string(&with).unwrap();
        assert_eq!(serde_json::from_str::<AppError>(&json).unwrap(), with);
    }
}
