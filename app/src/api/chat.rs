//! Chat: the person's conversations with the clinic's agents. Replies are generated and
//! streamed by `GET /chat/replies/<id>` (`server::chat_stream`); these functions store what the
//! person writes.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use tessera_types::{MessageRole, MessageStatus};

use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::server::{self as srv, fail};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationRow {
    pub id: String,
    pub title: String,
    pub agent_name: Option<String>,
    pub updated: String,
    /// For a search: the text around the words in a message, when the title did not match.
    #[serde(default)]
    pub snippet: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    pub id: String,
    pub role: MessageRole,
    pub content: String,
    pub status: MessageStatus,
    pub error: Option<String>,
    /// The passages a reply is grounded in, `[1]` first.
    #[serde(default)]
    pub sources: Vec<SourceView>,
    /// When it was written (RFC 3339, UTC), and the same for people to read.
    #[serde(default)]
    pub at: String,
    #[serde(default)]
    pub at_text: String,
    /// The person's rating of a reply: `up`, `down` or none.
    #[serde(default)]
    pub rating: Option<String>,
    #[serde(default)]
    pub rating_comment: String,
}

/// A passage a reply cites: the document's name, its section, and the text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceView {
    pub name: String,
    pub heading: String,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationView {
    pub id: String,
    pub title: String,
    pub agent_name: Option<String>,
    pub messages: Vec<MessageView>,
}

/// An agent to talk to, as everyone in the clinic sees it: not its instructions or settings,
/// which are for its admins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentChoice {
    pub id: String,
    pub name: String,
    pub description: String,
}

/// The chat start page: the conversations and the agents to start one with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatHome {
    pub conversations: Vec<ConversationRow>,
    pub agents: Vec<AgentChoice>,
}

/// A message sent: where its reply will stream from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub conversation_id: String,
    pub reply_id: String,
}

/// The chat start page: the person's conversations (newest first) and the clinic's agents.
#[server(endpoint = "chat_home")]
pub async fn get_chat_home() -> Result<ChatHome, AppError> {
    let v = srv::require_viewer().await?;
    let services = srv::services()?;
    let conversations = search_rows(&v, "").await?;
    let agents = tessera_core::agents::list(&services.db, v.tenant.id).await?;
    Ok(ChatHome {
        conversations,
        agents: agents
            .into_iter()
            .map(|a| AgentChoice {
                id: a.id.to_string(),
                name: a.name,
                description: a.description,
            })
            .collect(),
    })
}

#[cfg(feature = "ssr")]
async fn search_rows(
    v: &tessera_core::auth::Viewer,
    query: &str,
) -> Result<Vec<ConversationRow>, AppError> {
    let services = srv::services()?;
    let found = tessera_core::chat::search(&services.db, v.into(), query).await?;
    Ok(found
        .into_iter()
        .map(|f| ConversationRow {
            id: f.conversation.id.to_string(),
            title: f.conversation.title,
            agent_name: f.conversation.agent_name,
            updated: tessera_core::format::date(f.conversation.updated_at),
            snippet: f.snippet,
        })
        .collect())
}

/// The person's conversations, newest first; with a query, those whose title or messages
/// contain it.
#[server(endpoint = "conversations")]
pub async fn list_conversations(query: String) -> Result<Vec<ConversationRow>, AppError> {
    let v = srv::require_viewer().await?;
    search_rows(&v, &query).await
}

/// One of the person's conversations. Anyone else gets 404.
#[server(endpoint = "conversation")]
pub async fn get_conversation(id: String) -> Result<ConversationView, AppError> {
    let v = srv::require_viewer().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&id)?;
    let (c, messages) = tessera_core::chat::get(&services.db, (&v).into(), id).await?;
    Ok(ConversationView {
        id: c.id.to_string(),
        title: c.title,
        agent_name: c.agent_name,
        messages: messages
            .into_iter()
            .map(|m| MessageView {
                id: m.id.to_string(),
                role: m.role,
                content: m.content,
                status: m.status,
                error: m.error,
                at: m
                    .created_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                at_text: tessera_core::format::date_time(m.created_at),
                rating: m.rating.map(|r| match r {
                    tessera_core::chat::Rating::Up => "up".to_string(),
                    tessera_core::chat::Rating::Down => "down".to_string(),
                }),
                rating_comment: m.rating_comment,
                sources: m
                    .sources
                    .into_iter()
                    .map(|c| SourceView {
                        name: c.name,
                        heading: c.heading,
                        text: c.text,
                    })
                    .collect(),
            })
            .collect(),
    })
}

/// Starts a conversation with an agent; its first reply streams from `/chat/replies/<id>`.
#[server(endpoint = "start_conversation")]
pub async fn start_conversation(agent_id: String, text: String) -> Result<Sent, AppError> {
    let v = srv::require_viewer().await?;
    let services = srv::services()?;
    let agent: uuid::Uuid = agent_id
        .trim()
        .parse()
        .map_err(|_| fail(AppError::Invalid("Choose an agent to talk to.".into())))?;
    let (conversation, reply) =
        tessera_core::chat::start(&services.db, (&v).into(), agent, &text).await?;
    // A form posted before the page was interactive lands on the conversation, whose page then
    // starts the reply.
    leptos_axum::redirect(&format!("/chat/{conversation}"));
    Ok(Sent {
        conversation_id: conversation.to_string(),
        reply_id: reply.to_string(),
    })
}

/// Adds a message to a conversation; its reply streams from `/chat/replies/<id>`.
#[server(endpoint = "send_message")]
pub async fn send_message(conversation_id: String, text: String) -> Result<Sent, AppError> {
    let v = srv::require_viewer().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&conversation_id)?;
    let reply = tessera_core::chat::post(&services.db, (&v).into(), id, &text).await?;
    Ok(Sent {
        conversation_id,
        reply_id: reply.to_string(),
    })
}

#[server(endpoint = "rename_conversation")]
pub async fn rename_conversation(id: String, title: String) -> Result<(), AppError> {
    let v = srv::require_viewer().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&id)?;
    tessera_core::chat::rename(&services.db, (&v).into(), id, &title).await?;
    Ok(())
}

#[server(endpoint = "delete_conversation")]
pub async fn delete_conversation(id: String) -> Result<(), AppError> {
    let v = srv::require_viewer().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&id)?;
    tessera_core::chat::delete(&services.db, (&v).into(), id).await?;
    Ok(())
}

/// Stops a reply that is being generated; what came so far is kept (and charged).
#[server(endpoint = "stop_reply")]
pub async fn stop_reply(reply_id: String) -> Result<(), AppError> {
    let v = srv::require_viewer().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&reply_id)?;
    tessera_core::replies::stop(&services.db, (&v).into(), id).await?;
    Ok(())
}

/// Generates the conversation's last reply again; the new one streams from
/// `/chat/replies/<id>`.
#[server(endpoint = "regenerate_reply")]
pub async fn regenerate_reply(conversation_id: String) -> Result<Sent, AppError> {
    let v = srv::require_viewer().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&conversation_id)?;
    let reply = tessera_core::chat::regenerate(&services.db, (&v).into(), id).await?;
    Ok(Sent {
        conversation_id,
        reply_id: reply.to_string(),
    })
}

/// Replaces the person's last question and asks it again.
#[server(endpoint = "edit_last_message")]
pub async fn edit_last_message(conversation_id: String, text: String) -> Result<Sent, AppError> {
    let v = srv::require_viewer().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&conversation_id)?;
    let reply = tessera_core::chat::edit_last(&services.db, (&v).into(), id, &text).await?;
    Ok(Sent {
        conversation_id,
        reply_id: reply.to_string(),
    })
}

/// Rates a reply (`up`, `down`, or empty to take the rating back), with an optional comment
/// that the clinic's admins see.
#[server(endpoint = "rate_reply")]
pub async fn rate_reply(
    reply_id: String,
    rating: String,
    comment: Option<String>,
) -> Result<(), AppError> {
    let v = srv::require_viewer().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&reply_id)?;
    let rating = match rating.trim() {
        "" => None,
        r => Some(r.parse::<tessera_core::chat::Rating>()?),
    };
    tessera_core::chat::rate(
        &services.db,
        (&v).into(),
        id,
        rating,
        comment.as_deref().unwrap_or(""),
    )
    .await?;
    Ok(())
}

/// What people think of an agent's replies: counts and the latest comments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFeedbackView {
    pub agent: String,
    pub up: i64,
    pub down: i64,
    pub comments: Vec<FeedbackCommentView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackCommentView {
    pub up: bool,
    pub comment: String,
    pub date: String,
}

/// The clinic's feedback on its agents' replies (admins).
#[server(endpoint = "agent_feedback")]
pub async fn get_agent_feedback() -> Result<Vec<AgentFeedbackView>, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let feedback = tessera_core::chat::feedback_by_agent(&services.db, v.tenant.id).await?;
    Ok(feedback
        .into_iter()
        .map(|f| AgentFeedbackView {
            agent: f.agent_name.unwrap_or_else(|| "Deleted agent".into()),
            up: f.up,
            down: f.down,
            comments: f
                .comments
                .into_iter()
                .map(|c| FeedbackCommentView {
                    up: c.rating == tessera_core::chat::Rating::Up,
                    comment: c.comment,
                    date: tessera_core::format::date(c.at),
                })
                .collect(),
        })
        .collect())
}
