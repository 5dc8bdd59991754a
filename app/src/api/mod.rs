//! Server functions: the UI's only way to the server, one module per page, each with the types
//! it sends to the browser. Every function is a POST under `/api/`, checked for a same-site
//! `Origin` by the server's middleware, and thin: it checks who is calling
//! ([`crate::server::session`]), calls one `tessera_core` function, and maps the result (core
//! errors become [`AppError`](crate::error::AppError) through `?`).

// The agent form's twelve fields are `save_agent`'s arguments, as `ActionForm` posts them.
#[allow(clippy::too_many_arguments)]
pub mod agents;
pub mod api_keys;
pub mod audit;
pub mod billing;
pub mod chat;
pub mod home;
pub mod invite;
pub mod knowledge;
pub mod members;
pub mod operator;
pub mod provider_keys;
pub mod session;
pub mod usage;
