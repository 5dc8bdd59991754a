//! `POST /knowledge/upload`: documents uploaded from the Knowledge page, as a plain multipart
//! form (`files`, any number, and `tags`). Without JavaScript the browser posts the form and
//! is sent back to the page with what happened (`?notice=` and `?error=`); the page, once
//! interactive, sends one file per request with `Accept: application/json` and shows the
//! answer (`{"results": [{"name", "ok", "message"}]}`) beside its progress bar. Admins only;
//! cookie-authenticated, so the request guard's same-origin check covers it.

use app::error::AppError;
use app::server::{Admin, AppState};
use axum::extract::multipart::{Multipart, MultipartError};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde_json::json;
use tessera_core::knowledge::{self, Upload};

/// Where the Knowledge page lives.
const PAGE: &str = "/knowledge";
/// Files one request may carry.
pub const MAX_FILES: usize = 20;

/// The largest request: as many files as allowed at the largest size, and the form around them.
pub fn body_limit(config: &tessera_core::Config) -> usize {
    let per_file = usize::try_from(config.max_upload_bytes()).unwrap_or(usize::MAX / 64);
    per_file.saturating_mul(MAX_FILES).saturating_add(1 << 20)
}

/// What happened to one file.
struct Outcome {
    name: String,
    ok: bool,
    message: String,
}

/// A file as read from the form: its bytes, or why it was not read whole.
enum Read {
    File(Upload),
    TooLarge(String),
}

pub async fn upload(
    State(state): State<AppState>,
    Admin(v): Admin,
    headers: HeaderMap,
    multipart: Multipart,
) -> Response {
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    let services = &state.services;
    let max = services.config.max_upload_bytes();
    let (files, tags) = match read_form(multipart, max).await {
        Ok(read) => read,
        Err(message) => return answer(wants_json, Vec::new(), Some(message)),
    };
    let tags = match knowledge::parse_tags(&tags) {
        Ok(t) => t,
        Err(e) => return answer(wants_json, Vec::new(), Some(AppError::from(e).to_string())),
    };
    if files.is_empty() {
        return answer(
            wants_json,
            Vec::new(),
            Some("Choose at least one file to upload.".into()),
        );
    }
    let mut outcomes = Vec::new();
    for file in files {
        let outcome = match file {
            Read::TooLarge(name) => Outcome {
                message: format!(
                    "{name} is larger than {}, the largest file Tessera takes.",
                    tessera_core::format::bytes(max)
                ),
                name,
                ok: false,
            },
            Read::File(mut upload) => {
                upload.tags = tags.clone();
                let name = upload.name.clone();
                match knowledge::upload(&services.db, v.tenant.id, v.actor(), upload, max).await {
                    Ok(done) => Outcome {
                        name,
                        ok: true,
                        message: done.message(),
                    },
                    Err(e) => Outcome {
                        name,
                        ok: false,
                        message: AppError::from(e).to_string(),
                    },
                }
            }
        };
        outcomes.push(outcome);
    }
    answer(wants_json, outcomes, None)
}

/// Reads the form's files (each at most `max` bytes; a larger one is noted, not kept) and its
/// tags. `Err` is a message for a form that cannot be read.
async fn read_form(mut form: Multipart, max: i64) -> Result<(Vec<Read>, String), String> {
    let unreadable = |e: MultipartError| {
        tracing::info!(error = %e, "an upload form could not be read");
        format!(
            "The upload could not be read ({}). Try again.",
            e.body_text()
        )
    };
    let mut files = Vec::new();
    let mut tags = String::new();
    while let Some(mut field) = form.next_field().await.map_err(unreadable)? {
        match field.name() {
            Some("tags") => tags = field.text().await.map_err(unreadable)?,
            Some("files") => {
                let Some(name) = field.file_name().map(str::to_string) else {
                    continue;
                };
                if name.is_empty() {
                    // The form was sent with no file chosen.
                    continue;
                }
                if files.len() >= MAX_FILES {
                    return Err(format!("Upload at most {MAX_FILES} files at a time."));
                }
                let mut bytes = Vec::new();
                let mut too_large = false;
                while let Some(chunk) = field.chunk().await.map_err(unreadable)? {
                    if too_large {
                        continue;
                    }
                    if (bytes.len() + chunk.len()) as i64 > max {
                        too_large = true;
                        bytes = Vec::new();
                    } else {
                        bytes.extend_from_slice(&chunk);
                    }
                }
                files.push(if too_large {
                    Read::TooLarge(name)
                } else {
                    Read::File(Upload {
                        name,
                        bytes,
                        tags: Vec::new(),
                    })
                });
            }
            _ => {}
        }
    }
    Ok((files, tags))
}

/// JSON for the page's own requests; otherwise back to the page with what happened.
fn answer(wants_json: bool, outcomes: Vec<Outcome>, error: Option<String>) -> Response {
    if wants_json {
        let any_ok = outcomes.iter().any(|o| o.ok);
        let results: Vec<_> = outcomes
            .iter()
            .map(|o| json!({ "name": o.name, "ok": o.ok, "message": o.message }))
            .collect();
        let status = if error.is_none() && (any_ok || results.is_empty()) {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        let mut body = json!({ "results": results });
        if let Some(e) = &error {
            body["error"] = json!(e);
            body["results"] = json!([{ "name": "", "ok": false, "message": e }]);
        }
        return (status, Json(body)).into_response();
    }
    let notices: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.ok)
        .map(|o| o.message.as_str())
        .collect();
    let mut errors: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.message.as_str())
        .collect();
    if let Some(e) = &error {
        errors.push(e);
    }
    let mut query = Vec::new();
    if !notices.is_empty() {
        query.push(format!("notice={}", crate::query_value(&notices.join(" "))));
    }
    if !errors.is_empty() {
        query.push(format!("error={}", crate::query_value(&errors.join(" "))));
    }
    let to = if query.is_empty() {
        PAGE.to_string()
    } else {
        format!("{PAGE}?{}", query.join("&"))
    };
    Redirect::to(&to).into_response()
}
