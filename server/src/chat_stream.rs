//! `GET /chat/replies/{id}`: generates a pending reply of a signed-in person's conversation
//! through the gateway and streams it to the browser as server-sent events:
//!
//! - `delta`: a JSON string of new text;
//! - `done`: the reply is complete (JSON usage);
//! - `failed`: a JSON string saying what went wrong and what to do.
//!
//! The text is saved as it ends: complete, failed (with the message), or stopped when the
//! browser closes the stream (the Stop button), in which case only what was generated is
//! charged. A reply is generated once; asking again answers 409.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use app::server::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tessera_core::chat::{self, Chatter};
use tessera_core::llm::{Caller, ChatOutcome, ChatRequest, StreamEvent};
use tessera_core::{Db, TenantId};
use tower_sessions::Session;
use uuid::Uuid;

fn event(name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn sse(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Saves the reply when the stream ends, however it ends. Dropped before the end means the
/// person stopped it.
struct Saver {
    db: Db,
    tenant: TenantId,
    reply: Uuid,
    text: Arc<Mutex<String>>,
    done: bool,
}

impl Saver {
    fn text(&self) -> String {
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }

    async fn save(&mut self, status: &str, error: Option<&str>) {
        self.done = true;
        if let Err(e) = chat::finish(
            &self.db,
            self.tenant,
            self.reply,
            &self.text(),
            status,
            error,
        )
        .await
        {
            tracing::error!(error = ?e, "could not save a reply");
        }
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (db, tenant, reply, text) = (self.db.clone(), self.tenant, self.reply, self.text());
        tokio::spawn(async move {
            if let Err(e) = chat::finish(&db, tenant, reply, &text, "stopped", None).await {
                tracing::error!(error = ?e, "could not save a stopped reply");
            }
        });
    }
}

pub async fn reply_stream(
    State(state): State<AppState>,
    session: Session,
    Path(reply): Path<String>,
) -> Response {
    let services = state.services.clone();
    let v = match crate::signed_in::viewer(&state, &session).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    let (user, tenant) = (v.user.id, v.tenant.id);
    let Ok(reply) = reply.parse::<Uuid>() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let who = Chatter { tenant, user };
    let pending = match chat::claim(&services.db, who, reply).await {
        Ok(p) => p,
        Err(e) => {
            let status =
                StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, e.to_string()).into_response();
        }
    };
    let mut saver = Saver {
        db: services.db.clone(),
        tenant,
        reply,
        text: Arc::new(Mutex::new(String::new())),
        done: false,
    };
    let Some(agent) = pending.agent else {
        let message =
            "This conversation's agent was deleted. Start a new conversation with another agent.";
        saver.save("failed", Some(message)).await;
        return sse(Body::from(event("failed", &serde_json::json!(message))));
    };
    let request = tessera_core::agents::apply(
        &agent,
        ChatRequest {
            messages: pending.history,
            stream: true,
            ..Default::default()
        },
    );
    let caller = Caller {
        tenant,
        user: Some(user),
        api_key: None,
    };
    let stream = match services.gateway.chat(&caller, request).await {
        Ok(ChatOutcome::Stream(s)) => s,
        Ok(ChatOutcome::Complete(_)) => {
            saver
                .save("failed", Some("The reply could not be streamed."))
                .await;
            return sse(Body::from(event(
                "failed",
                &serde_json::json!("The reply could not be streamed."),
            )));
        }
        Err(e) => {
            saver.save("failed", Some(&e.message)).await;
            return sse(Body::from(event("failed", &serde_json::json!(e.message))));
        }
    };
    let text = saver.text.clone();
    let saver = Arc::new(tokio::sync::Mutex::new(saver));
    let body = stream.then(move |ev| {
        let text = text.clone();
        let saver = saver.clone();
        async move {
            let bytes = match ev {
                Ok(StreamEvent::Text(t)) => {
                    if let Ok(mut all) = text.lock() {
                        all.push_str(&t);
                    }
                    event("delta", &serde_json::json!(t))
                }
                Ok(StreamEvent::Finish(_)) => Bytes::new(),
                Ok(StreamEvent::Usage(u)) => {
                    saver.lock().await.save("complete", None).await;
                    event("done", &serde_json::json!({ "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens }))
                }
                Err(e) => {
                    saver.lock().await.save("failed", Some(&e.message)).await;
                    event("failed", &serde_json::json!(e.message))
                }
            };
            Ok::<_, Infallible>(bytes)
        }
    });
    sse(Body::from_stream(body))
}
