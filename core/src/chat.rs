//! Conversations between a member of a clinic and one of its agents. A conversation is private
//! to the person who started it: every query here is bound to that person, and anyone else
//! (in the clinic or not) gets `NotFound`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::agents::Agent;
use crate::auth::Viewer;
use crate::db::{Db, Tx};
use crate::llm::{ChatMessage, ChatRequest, MessageRole};
use crate::tenancy::{TenantId, UserId};
use crate::{Error, MessageStatus, ReplyEnd, Result};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Conversation {
    pub id: Uuid,
    pub agent_id: Option<Uuid>,
    pub agent_name: Option<String>,
    pub title: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: Uuid,
    pub role: MessageRole,
    pub content: String,
    pub status: MessageStatus,
    pub error: Option<String>,
    pub created_at: OffsetDateTime,
    /// For a reply: the passages it was grounded in, `[1]` first.
    pub sources: Vec<Citation>,
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: Uuid,
    role: MessageRole,
    content: String,
    status: MessageStatus,
    error: Option<String>,
    created_at: OffsetDateTime,
    sources: String,
}

impl From<MessageRow> for Message {
    fn from(r: MessageRow) -> Self {
        Message {
            id: r.id,
            role: r.role,
            content: r.content,
            status: r.status,
            error: r.error,
            created_at: r.created_at,
            sources: serde_json::from_str(&r.sources).unwrap_or_default(),
        }
    }
}

/// A passage a reply cites: which document, which section, and the text the agent was given
/// (kept with the reply, so the citation still reads the same after the document changes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Citation {
    pub document: Uuid,
    pub name: String,
    pub heading: String,
    pub text: String,
}

impl From<&crate::knowledge::search::Passage> for Citation {
    fn from(p: &crate::knowledge::search::Passage) -> Self {
        Citation {
            document: p.document,
            name: p.name.clone(),
            heading: p.heading.clone(),
            text: p.text.clone(),
        }
    }
}

/// Keeps the passages a reply is grounded in with it.
pub async fn set_sources(
    db: &Db,
    tenant: TenantId,
    reply: Uuid,
    sources: &[Citation],
) -> Result<()> {
    let mut tx = db.begin_tenant(tenant).await?;
    let json = serde_json::to_string(sources).map_err(|e| Error::Internal(e.to_string()))?;
    sqlx::query("UPDATE messages SET sources = $2::jsonb WHERE id = $1 AND role = 'assistant'")
        .bind(reply)
        .bind(json)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Who is chatting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chatter {
    pub tenant: TenantId,
    pub user: UserId,
}

impl From<&Viewer> for Chatter {
    fn from(v: &Viewer) -> Self {
        Chatter {
            tenant: v.tenant.id,
            user: v.user.id,
        }
    }
}

const MAX_MESSAGE_CHARS: usize = 32_000;

/// A title from the first message: its first line as plain text (Markdown marks taken out),
/// shortened at a word.
pub fn title_from(message: &str) -> String {
    let plain = message.lines().map(plain_text).find(|l| !l.is_empty());
    let line = plain.as_deref().unwrap_or("New conversation");
    if line.chars().count() <= 60 {
        return line.to_string();
    }
    let cut: String = line.chars().take(60).collect();
    let cut = match cut.rfind(' ') {
        Some(i) if i > 20 => &cut[..i],
        _ => &cut,
    };
    format!("{}…", cut.trim_end())
}

/// One line of Markdown as the text a reader sees: no heading, quote or list marks, no
/// emphasis or code marks, links and images as their text.
fn plain_text(line: &str) -> String {
    let mut line = line.trim();
    // Block marks at the start: headings, quotes, list items.
    loop {
        let before = line;
        line = line.trim_start_matches('#').trim_start();
        line = line.trim_start_matches('>').trim_start();
        for bullet in ["- ", "* ", "+ "] {
            line = line.strip_prefix(bullet).unwrap_or(line);
        }
        let digits = line.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 && matches!(line[digits..].chars().next(), Some('.' | ')')) {
            line = line[digits + 1..].trim_start();
        }
        if line == before {
            break;
        }
    }
    let chars: Vec<char> = line.chars().collect();
    // Emphasis marks open or close a word; inside one (`snake_case`, `2*3`) they are text.
    let mut kept = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '*' | '_' | '~') {
            let end = (i..chars.len())
                .find(|&j| chars[j] != c)
                .unwrap_or(chars.len());
            let before = i.checked_sub(1).map(|j| chars[j]);
            let after = chars.get(end).copied();
            let inside = before.is_some_and(char::is_alphanumeric)
                && after.is_some_and(char::is_alphanumeric);
            if inside {
                kept.extend(&chars[i..end]);
            }
            i = end;
            continue;
        }
        kept.push(c);
        i += 1;
    }
    // Links and images as their text; other brackets stay.
    let chars: Vec<char> = kept.chars().filter(|c| *c != '`').collect();
    let mut out = String::with_capacity(kept.len());
    let mut i = 0;
    while i < chars.len() {
        let image = chars[i] == '!' && chars.get(i + 1) == Some(&'[');
        let open = if image { i + 1 } else { i };
        if chars[open] == '[' {
            let close = (open + 1..chars.len()).find(|&j| chars[j] == ']');
            if let Some(close) = close.filter(|&c| chars.get(c + 1) == Some(&'(')) {
                let mut depth = 0;
                let end = (close + 1..chars.len()).find(|&j| {
                    match chars[j] {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                });
                if let Some(end) = end {
                    out.extend(&chars[open + 1..close]);
                    i = end + 1;
                    continue;
                }
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn check_text(text: &str) -> Result<&str> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::invalid("Write a message first."));
    }
    if text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(Error::invalid(format!(
            "A message can be at most {} characters.",
            crate::format::thousands(MAX_MESSAGE_CHARS as i64)
        )));
    }
    Ok(text)
}

const CONVERSATION: &str =
    "SELECT c.id, c.agent_id, a.name AS agent_name, c.title, c.created_at, c.updated_at
                              FROM conversations c LEFT JOIN agents a ON a.id = c.agent_id";

/// The person's conversations, newest first.
pub async fn list(db: &Db, who: Chatter) -> Result<Vec<Conversation>> {
    let sql = format!("{CONVERSATION} WHERE c.user_id = $1 ORDER BY c.updated_at DESC LIMIT 200");
    db.tenant_all(who.tenant, sqlx::query_as(&sql).bind(who.user))
        .await
}

/// One of the person's conversations with its messages, oldest first.
pub async fn get(db: &Db, who: Chatter, id: Uuid) -> Result<(Conversation, Vec<Message>)> {
    let mut tx = db.begin_tenant(who.tenant).await?;
    let conv = sqlx::query_as::<_, Conversation>(&format!(
        "{CONVERSATION} WHERE c.id = $1 AND c.user_id = $2"
    ))
    .bind(id)
    .bind(who.user)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    let messages = sqlx::query_as::<_, MessageRow>(
        "SELECT id, role, content, status, error, created_at, sources::text AS sources FROM messages
          WHERE conversation_id = $1 ORDER BY created_at, role DESC",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((conv, messages.into_iter().map(Message::from).collect()))
}

/// Starts a conversation with `agent`, titled from the first message, with that message and a
/// pending reply to it. Returns the conversation's id and the reply's.
pub async fn start(
    db: &Db,
    who: Chatter,
    agent: Uuid,
    first_message: &str,
) -> Result<(Uuid, Uuid)> {
    let text = check_text(first_message)?;
    let mut tx = db.begin_tenant(who.tenant).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM agents WHERE id = $1)")
        .bind(agent)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Err(Error::invalid(
            "That agent no longer exists. Choose another.",
        ));
    }
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO conversations (id, tenant_id, user_id, agent_id, title) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(who.tenant)
        .bind(who.user)
        .bind(agent)
        .bind(title_from(text))
        .execute(&mut *tx)
        .await?;
    let reply = add_turn(&mut tx, who, id, text).await?;
    tx.commit().await?;
    Ok((id, reply))
}

/// Adds the person's message and a pending reply to it; returns the reply's id, which the
/// stream that generates it is keyed by.
pub async fn post(db: &Db, who: Chatter, conversation: Uuid, text: &str) -> Result<Uuid> {
    let text = check_text(text)?;
    let mut tx = db.begin_tenant(who.tenant).await?;
    let owned: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM conversations WHERE id = $1 AND user_id = $2)",
    )
    .bind(conversation)
    .bind(who.user)
    .fetch_one(&mut *tx)
    .await?;
    if !owned {
        return Err(Error::NotFound);
    }
    let busy: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE conversation_id = $1
                          AND status IN ('pending', 'generating')
                          AND created_at > now() - interval '10 minutes')",
    )
    .bind(conversation)
    .fetch_one(&mut *tx)
    .await?;
    if busy {
        return Err(Error::Conflict(
            "The agent is still answering. Wait for the reply or stop it first.".into(),
        ));
    }
    let reply = add_turn(&mut tx, who, conversation, text).await?;
    tx.commit().await?;
    Ok(reply)
}

/// The person's message and a pending reply to it, in an open transaction.
async fn add_turn(tx: &mut Tx, who: Chatter, conversation: Uuid, text: &str) -> Result<Uuid> {
    sqlx::query("INSERT INTO messages (id, tenant_id, conversation_id, role, content) VALUES ($1, $2, $3, 'user', $4)")
        .bind(Uuid::new_v4())
        .bind(who.tenant)
        .bind(conversation)
        .bind(text)
        .execute(&mut **tx)
        .await?;
    let reply = Uuid::new_v4();
    sqlx::query("INSERT INTO messages (id, tenant_id, conversation_id, role, status) VALUES ($1, $2, $3, 'assistant', 'pending')")
        .bind(reply)
        .bind(who.tenant)
        .bind(conversation)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE conversations SET updated_at = now() WHERE id = $1")
        .bind(conversation)
        .execute(&mut **tx)
        .await?;
    Ok(reply)
}

/// What generating a pending reply needs: the agent and the history before it.
pub struct PendingReply {
    pub conversation: Uuid,
    pub agent: Option<Agent>,
    /// Earlier messages, oldest first (failed and empty ones left out).
    pub history: Vec<ChatMessage>,
}

impl PendingReply {
    /// The streamed call to the agent with the history, or `None` when the agent has been
    /// deleted. The gateway makes it as the agent does (its model, instructions, the clinic's
    /// passages for the question, and its limits), as for the API's `agent:<slug>`.
    pub fn into_request(self) -> Option<ChatRequest> {
        let agent = self.agent?;
        Some(ChatRequest {
            model: format!("{}{}", crate::agents::MODEL_PREFIX, agent.slug),
            messages: self.history,
            stream: true,
            ..Default::default()
        })
    }
}

/// Claims a pending reply of the person's for generation: it becomes `generating`, so it is
/// generated once, and a page opened meanwhile waits for it instead of asking again.
/// `NotFound` if it is not theirs; `Conflict` if it is already being generated or has ended.
pub async fn claim(db: &Db, who: Chatter, reply: Uuid) -> Result<PendingReply> {
    let mut tx = db.begin_tenant(who.tenant).await?;
    let row: Option<(Uuid, Option<Uuid>, MessageStatus)> = sqlx::query_as(
        "SELECT c.id, c.agent_id, m.status FROM messages m JOIN conversations c ON c.id = m.conversation_id
          WHERE m.id = $1 AND m.role = 'assistant' AND c.user_id = $2 FOR UPDATE OF m",
    )
    .bind(reply)
    .bind(who.user)
    .fetch_optional(&mut *tx)
    .await?;
    let (conversation, agent_id, status) = row.ok_or(Error::NotFound)?;
    if status != MessageStatus::Pending {
        return Err(Error::Conflict(
            "This reply is already being generated or has ended.".into(),
        ));
    }
    sqlx::query("UPDATE messages SET status = 'generating' WHERE id = $1")
        .bind(reply)
        .execute(&mut *tx)
        .await?;
    let agent = match agent_id {
        Some(id) => {
            sqlx::query_as::<_, Agent>(&format!(
                "SELECT {} FROM agents WHERE id = $1",
                crate::agents::COLUMNS
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        }
        None => None,
    };
    let rows: Vec<(MessageRole, String)> = sqlx::query_as(
        "SELECT role, content FROM messages
          WHERE conversation_id = $1 AND id <> $2 AND status IN ('complete', 'stopped') AND content <> ''
          ORDER BY created_at, role DESC",
    )
    .bind(conversation)
    .bind(reply)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let history = rows
        .into_iter()
        .map(|(role, content)| ChatMessage { role, content })
        .collect();
    Ok(PendingReply {
        conversation,
        agent,
        history,
    })
}

/// Stores how a reply ended: its text, and complete, stopped or failed (with a message).
pub async fn finish(
    db: &Db,
    tenant: TenantId,
    reply: Uuid,
    content: &str,
    end: ReplyEnd,
    error: Option<&str>,
) -> Result<()> {
    let mut tx = db.begin_tenant(tenant).await?;
    sqlx::query("UPDATE messages SET content = $2, status = $3, error = $4 WHERE id = $1")
        .bind(reply)
        .bind(content)
        .bind(MessageStatus::from(end))
        .bind(error)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn rename(db: &Db, who: Chatter, id: Uuid, title: &str) -> Result<()> {
    let title = title.trim();
    if title.is_empty() || title.chars().count() > 120 {
        return Err(Error::invalid("A title needs 1 to 120 characters."));
    }
    let rename = sqlx::query("UPDATE conversations SET title = $3 WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(who.user)
        .bind(title);
    db.tenant_change_one(who.tenant, rename).await
}

pub async fn delete(db: &Db, who: Chatter, id: Uuid) -> Result<()> {
    let delete = sqlx::query("DELETE FROM conversations WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(who.user);
    db.tenant_change_one(who.tenant, delete).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_come_from_the_first_line() {
        assert_eq!(title_from("\n  Dosage question\nmore"), "Dosage question");
        let long =
            "Could you summarise the discharge instructions for the patient in bed twelve please";
        let t = title_from(long);
        assert!(t.ends_with('…') && t.chars().count() <= 61, "{t}");
    }

    #[test]
    fn titles_are_plain_text() {
        assert_eq!(
            title_from("What are our **appointments** for _today_?"),
            "What are our appointments for today?"
        );
        assert_eq!(
            title_from("## Dosage of `amoxicillin`"),
            "Dosage of amoxicillin"
        );
        assert_eq!(
            title_from("> - see [the leaflet](https://example.com/a_(b)) please"),
            "see the leaflet please"
        );
        assert_eq!(title_from("1. ![scan](x.png) results"), "scan results");
        assert_eq!(title_from("**\n**\nSecond line"), "Second line");
        // Inside a word they are text.
        assert_eq!(title_from("snake_case 2*3"), "snake_case 2*3");
        // Brackets that are not a link stay.
        assert_eq!(
            title_from("Open on Saturday? [note]"),
            "Open on Saturday? [note]"
        );
    }
}
