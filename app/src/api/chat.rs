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
    let conversations = tessera_core::chat::list(&services.db, (&v).into()).await?;
    let agents = tessera_core::agents::list(&services.db, v.tenant.id).await?;
    Ok(ChatHome {
        conversations: conversations
            .into_iter()
            .map(|c| ConversationRow {
                id: c.id.to_string(),
                title: c.title,
                agent_name: c.agent_name,
                updated: tessera_core::format::date(c.updated_at),
            })
            .collect(),
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
