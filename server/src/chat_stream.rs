//! `GET /chat/replies/{id}`: a signed-in person's reply, as server-sent events. A pending
//! reply is claimed and generated through the gateway by a task of its own
//! (`tessera_core::replies`); a reply already being generated (the page was reloaded, or is
//! open in another tab) is followed. Events:
//!
//! - `sources`: the passages the reply is grounded in (first, when there are any);
//! - `text`: a JSON string, the whole text so far (replaces what the page shows);
//! - `delta`: a JSON string of new text;
//! - `done`: the reply is complete (JSON usage, zeros when followed from another process);
//! - `failed`: a JSON string saying what went wrong and what to do;
//! - `stopped`: the person stopped it (`POST` to `stop_reply`); what came is kept.
//!
//! Closing the stream does not stop the reply. A reply that has ended answers 409: the page
//! reads it saved.

use std::convert::Infallible;

use app::error::AppError;
use app::server::{parse_id, AppState, SignedIn};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::Response;
use futures_util::{Stream, StreamExt};
use tessera_core::chat;
use tessera_core::gateway::{Caller, ChatOutcome};
use tessera_core::replies::{self, End, Update};
use tessera_core::{Error, ReplyEnd};
use uuid::Uuid;

fn event(name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn encode(update: Update) -> Bytes {
    match update {
        Update::Sources(sources) => {
            let cited: Vec<_> = sources
                .iter()
                .map(
                    |c| serde_json::json!({ "name": c.name, "heading": c.heading, "text": c.text }),
                )
                .collect();
            event("sources", &serde_json::json!(cited))
        }
        Update::Text(t) => event("text", &serde_json::json!(t)),
        Update::Delta(t) => event("delta", &serde_json::json!(t)),
        Update::End(End::Done {
            prompt_tokens,
            completion_tokens,
        }) => event(
            "done",
            &serde_json::json!({ "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens }),
        ),
        Update::End(End::Failed(message)) => event("failed", &serde_json::json!(message)),
        Update::End(End::Stopped) => event("stopped", &serde_json::json!(null)),
    }
}

fn events(updates: impl Stream<Item = Update> + Send + 'static) -> Response {
    crate::event_stream(Body::from_stream(
        updates.map(|u| Ok::<_, Infallible>(encode(u))),
    ))
}

pub async fn reply_stream(
    State(state): State<AppState>,
    SignedIn(v): SignedIn,
    Path(reply): Path<String>,
) -> Result<Response, AppError> {
    let services = &state.services;
    let reply: Uuid = parse_id(&reply)?;
    let who = (&v).into();
    let pending = match chat::claim(&services.db, who, reply).await {
        Ok(pending) => pending,
        // Being generated already: follow it (or 409 if it has ended meanwhile).
        Err(Error::Conflict(_)) => {
            return Ok(events(replies::follow(&services.db, who, reply).await?))
        }
        Err(e) => return Err(e.into()),
    };
    let tenant = v.tenant.id;
    let fail = |message: String| async move {
        if let Err(e) = chat::finish(
            &services.db,
            tenant,
            reply,
            "",
            ReplyEnd::Failed,
            Some(&message),
        )
        .await
        {
            tracing::error!(error = ?e, "could not save a failed reply");
        }
        events(futures_util::stream::iter([Update::End(End::Failed(
            message,
        ))]))
    };
    let Some(request) = pending.into_request() else {
        return Ok(fail(
            "This conversation's agent was deleted. Start a new conversation with another agent."
                .into(),
        )
        .await);
    };
    let caller = Caller {
        tenant,
        user: Some(v.user.id),
        api_key: None,
    };
    Ok(match services.gateway.chat(&caller, request).await {
        Ok(ChatOutcome::Stream(stream)) => {
            let sources: Vec<chat::Citation> = stream.sources.iter().map(Into::into).collect();
            if !sources.is_empty() {
                if let Err(e) = chat::set_sources(&services.db, tenant, reply, &sources).await {
                    tracing::error!(error = ?e, "could not keep a reply's sources");
                }
            }
            events(replies::generate(
                services.db.clone(),
                tenant,
                reply,
                stream,
                sources,
            ))
        }
        Ok(ChatOutcome::Complete(_)) => fail("The reply could not be streamed.".into()).await,
        Err(e) => fail(e.message).await,
    })
}
