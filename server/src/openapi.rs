//! The OpenAPI 3.1 document of `/v1` and the Stripe webhook, served at
//! [`crate::OPENAPI_URL`]. It is written by hand (the gateway forwards bodies it does not
//! model, so there are no request types to derive it from) and kept true by
//! `server/tests/openapi.rs`: its operations are exactly [`crate::api_routes`], each answers on
//! the router, and real answers validate against its schemas.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document's text.
pub const DOCUMENT: &str = include_str!("../openapi.json");

pub async fn document() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        DOCUMENT,
    )
        .into_response()
}
