//! `GET /chat/replies/{id}`: generates a pending reply of a signed-in person's conversation
//! through the gateway and streams it to the browser as server-sent events:
//!
//! - `sources`: the passages the reply is grounded in (sent first, when there are any);
//! - `delta`: a JSON string of new text;
//! - `done`: the reply is complete (JSON usage);
//! - `failed`: a JSON string saying what went wrong and what to do.
//!
//! The text is saved as it ends: complete, failed (with the message), or stopped when the
//! browser closes the stream (the Stop button, a reload), in which case only what was generated
//! is charged. A reply is generated once: while it is, it is `generating`, and asking again
//! answers 409 (the page then waits for what is saved).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use app::error::AppError;
use app::server::{parse_id, AppState, SignedIn};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};

use axum::response::Response;
use futures_util::StreamExt;
use tessera_core::chat;
use tessera_core::gateway::{Caller, ChatOutcome, ChatStream, StreamEvent};
use tessera_core::{Db, ReplyEnd, TenantId};
use uuid::Uuid;

fn event(name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
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

    async fn save(&mut self, end: ReplyEnd, error: Option<&str>) {
        self.done = true;
        if let Err(e) =
            chat::finish(&self.db, self.tenant, self.reply, &self.text(), end, error).await
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
            if let Err(e) = chat::finish(&db, tenant, reply, &text, ReplyEnd::Stopped, None).await {
                tracing::error!(error = ?e, "could not save a stopped reply");
            }
        });
    }
}

impl Saver {
    fn new(db: Db, tenant: TenantId, reply: Uuid) -> Self {
        Self {
            db,
            tenant,
            reply,
            text: Arc::new(Mutex::new(String::new())),
            done: false,
        }
    }

    /// Saves the reply as failed with `message`, and answers a stream that says so.
    async fn fail(mut self, message: &str) -> Response {
        self.save(ReplyEnd::Failed, Some(message)).await;
        crate::event_stream(Body::from(event("failed", &serde_json::json!(message))))
    }
}

pub async fn reply_stream(
    State(state): State<AppState>,
    SignedIn(v): SignedIn,
    Path(reply): Path<String>,
) -> Result<Response, AppError> {
    let services = &state.services;
    let reply: Uuid = parse_id(&reply)?;
    let pending = chat::claim(&services.db, (&v).into(), reply).await?;
    let saver = Saver::new(services.db.clone(), v.tenant.id, reply);
    let Some(request) = pending.into_request() else {
        return Ok(saver
            .fail("This conversation's agent was deleted. Start a new conversation with another agent.")
            .await);
    };
    let caller = Caller {
        tenant: v.tenant.id,
        user: Some(v.user.id),
        api_key: None,
    };
    Ok(match services.gateway.chat(&caller, request).await {
        Ok(ChatOutcome::Stream(stream)) => {
            let sources: Vec<chat::Citation> = stream.sources.iter().map(Into::into).collect();
            if !sources.is_empty() {
                if let Err(e) = chat::set_sources(&services.db, v.tenant.id, reply, &sources).await
                {
                    tracing::error!(error = ?e, "could not keep a reply's sources");
                }
            }
            relay(stream, saver, &sources)
        }
        Ok(ChatOutcome::Complete(_)) => saver.fail("The reply could not be streamed.").await,
        Err(e) => saver.fail(&e.message).await,
    })
}

/// Sends the passages the reply is grounded in, then its text as it comes, and saves it when
/// it ends.
fn relay(stream: ChatStream, saver: Saver, sources: &[chat::Citation]) -> Response {
    let first = (!sources.is_empty()).then(|| {
        let cited: Vec<_> = sources
            .iter()
            .map(|c| serde_json::json!({ "name": c.name, "heading": c.heading, "text": c.text }))
            .collect();
        Ok::<_, Infallible>(event("sources", &serde_json::json!(cited)))
    });
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
                Ok(StreamEvent::Finish(_) | StreamEvent::Raw(_)) => Bytes::new(),
                Ok(StreamEvent::Usage(u)) => {
                    saver.lock().await.save(ReplyEnd::Complete, None).await;
                    event("done", &serde_json::json!({ "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens }))
                }
                Err(e) => {
                    saver.lock().await.save(ReplyEnd::Failed, Some(&e.message)).await;
                    event("failed", &serde_json::json!(e.message))
                }
            };
            Ok::<_, Infallible>(bytes)
        }
    });
    crate::event_stream(Body::from_stream(
        futures_util::stream::iter(first).chain(body),
    ))
}
