//! Server-side glue for the server functions and the plain routes: the router's state, the
//! signed-in person ([`session`]), and the one mapping from core errors to responses
//! ([`error`]). Server functions stay thin: they check who is calling with this, call one
//! `tessera_core` function and map its result.

pub mod error;
pub mod session;

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::FromRef;
use leptos::prelude::*;
use tessera_core::Services;

pub use error::fail;
pub use session::{
    end_session, is_operator, require_admin, require_operator, require_viewer, signed_in_viewer,
    start_operator_session, start_session, switch_session_tenant, Admin, SignedIn,
};

use crate::error::AppError;

/// The router's state, also provided to every server function through context. Cloned for
/// every request (by each extractor and middleware that reads it), so it is one shared
/// allocation: a clone is a reference count, not a copy of the options and every service.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] shares.
pub struct Shared {
    pub leptos_options: LeptosOptions,
    pub services: Services,
}

impl AppState {
    pub fn new(leptos_options: LeptosOptions, services: Services) -> Self {
        Self(Arc::new(Shared {
            leptos_options,
            services,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

impl FromRef<AppState> for Services {
    fn from_ref(state: &AppState) -> Self {
        state.services.clone()
    }
}

/// The client's address, put on each request by the server's middleware (from the socket, or
/// from `X-Forwarded-For` when it comes through a proxy in `TESSERA_TRUSTED_PROXIES`).
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub Option<IpAddr>);

/// The request's id, put on each request by the server's middleware: in every log line of the
/// request, in the `x-request-id` response header, and on error pages, so support can find
/// the lines of a failure someone reports.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The current request's id (inside a server function or a page's render).
pub fn request_id() -> Option<String> {
    use_context::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<RequestId>().map(|r| r.0.clone()))
}

/// The services, from the server function's context.
pub fn services() -> Result<Services, AppError> {
    use_context::<AppState>()
        .map(|s| s.services.clone())
        .ok_or_else(|| {
            if use_context::<http::request::Parts>().is_some() {
                tracing::error!("AppState missing from context");
            } else {
                // A resource of a render that was already replaced (a suspense rendered its
                // children again) finishing after its scope was disposed; its result is unused.
                tracing::debug!("server function ran outside a request scope");
            }
            AppError::Internal(request_id())
        })
}

/// Names the clinic on the current request's log span (see the server's request middleware).
pub fn record_clinic(tenant: tessera_core::TenantId) {
    tracing::Span::current().record("clinic", tracing::field::display(tenant));
}

pub fn client_ip() -> Option<IpAddr> {
    use_context::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<ClientIp>().and_then(|c| c.0))
}

/// Parses an id from a form field or path; a malformed one is simply not found.
pub fn parse_id<T: std::str::FromStr>(raw: &str) -> Result<T, AppError> {
    raw.trim().parse().map_err(|_| fail(AppError::NotFound))
}
