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
    /// For a reply: the person's rating of it, if they gave one.
    pub rating: Option<Rating>,
    /// For a reply: the comment with the rating (empty when none).
    pub rating_comment: String,
}

/// A person's rating of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rating {
    Up,
    Down,
}

impl Rating {
    fn value(self) -> i16 {
        match self {
            Rating::Up => 1,
            Rating::Down => -1,
        }
    }

    fn from_value(v: i16) -> Option<Self> {
        match v {
            1 => Some(Rating::Up),
            -1 => Some(Rating::Down),
            _ => None,
        }
    }
}

impl std::str::FromStr for Rating {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "up" => Ok(Rating::Up),
            "down" => Ok(Rating::Down),
            _ => Err(Error::invalid("A rating is up or down.")),
        }
    }
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
    rating: Option<i16>,
    rating_comment: String,
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
            rating: r.rating.and_then(Rating::from_value),
            rating_comment: r.rating_comment,
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
        "SELECT id, role, content, status, error, created_at, sources::text AS sources, rating,
                rating_comment
           FROM messages WHERE conversation_id = $1 ORDER BY created_at, role DESC",
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
    owned_and_idle(&mut tx, who, conversation).await?;
    let reply = add_turn(&mut tx, who, conversation, text).await?;
    tx.commit().await?;
    Ok(reply)
}

/// Generates the last reply again: the reply is replaced by a pending one (the earlier text is
/// not kept). Returns the new reply's id.
pub async fn regenerate(db: &Db, who: Chatter, conversation: Uuid) -> Result<Uuid> {
    let mut tx = db.begin_tenant(who.tenant).await?;
    owned_and_idle(&mut tx, who, conversation).await?;
    let last = last_message(&mut tx, conversation).await?;
    let Some((id, MessageRole::Assistant)) = last else {
        return Err(Error::invalid("There is no reply to generate again."));
    };
    sqlx::query("DELETE FROM messages WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let reply = add_reply(&mut tx, who, conversation).await?;
    tx.commit().await?;
    Ok(reply)
}

/// Replaces the person's last question with `text` and asks again: the reply to it is replaced
/// by a pending one. Returns the new reply's id.
pub async fn edit_last(db: &Db, who: Chatter, conversation: Uuid, text: &str) -> Result<Uuid> {
    let text = check_text(text)?;
    let mut tx = db.begin_tenant(who.tenant).await?;
    owned_and_idle(&mut tx, who, conversation).await?;
    let question: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM messages WHERE conversation_id = $1 AND role = 'user'
          ORDER BY created_at DESC LIMIT 1",
    )
    .bind(conversation)
    .fetch_optional(&mut *tx)
    .await?;
    let question = question.ok_or_else(|| Error::invalid("There is no question to edit."))?;
    sqlx::query("UPDATE messages SET content = $2 WHERE id = $1")
        .bind(question)
        .bind(text)
        .execute(&mut *tx)
        .await?;
    // The replies after it (normally one) make way for the new one.
    sqlx::query(
        "DELETE FROM messages WHERE conversation_id = $1 AND role = 'assistant'
            AND created_at >= (SELECT created_at FROM messages WHERE id = $2)",
    )
    .bind(conversation)
    .bind(question)
    .execute(&mut *tx)
    .await?;
    let reply = add_reply(&mut tx, who, conversation).await?;
    tx.commit().await?;
    Ok(reply)
}

/// The last message of a conversation: its id and who wrote it.
async fn last_message(tx: &mut Tx, conversation: Uuid) -> Result<Option<(Uuid, MessageRole)>> {
    Ok(sqlx::query_as(
        "SELECT id, role FROM messages WHERE conversation_id = $1
          ORDER BY created_at DESC, role ASC LIMIT 1",
    )
    .bind(conversation)
    .fetch_optional(&mut **tx)
    .await?)
}

/// `NotFound` unless the conversation is the person's; `Conflict` while its agent is still
/// answering.
async fn owned_and_idle(tx: &mut Tx, who: Chatter, conversation: Uuid) -> Result<()> {
    let owned: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM conversations WHERE id = $1 AND user_id = $2 FOR UPDATE)",
    )
    .bind(conversation)
    .bind(who.user)
    .fetch_one(&mut **tx)
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
    .fetch_one(&mut **tx)
    .await?;
    if busy {
        return Err(Error::Conflict(
            "The agent is still answering. Wait for the reply or stop it first.".into(),
        ));
    }
    Ok(())
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
    add_reply(tx, who, conversation).await
}

/// A pending reply at the end of the conversation, which moves to the top of the list.
async fn add_reply(tx: &mut Tx, who: Chatter, conversation: Uuid) -> Result<Uuid> {
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

/// Saves the text of a reply being generated so far, so a page opened meanwhile shows it.
/// Returns false when the reply is no longer being generated (someone stopped it).
pub async fn save_progress(db: &Db, tenant: TenantId, reply: Uuid, content: &str) -> Result<bool> {
    let mut tx = db.begin_tenant(tenant).await?;
    let n = sqlx::query("UPDATE messages SET content = $2 WHERE id = $1 AND status = 'generating'")
        .bind(reply)
        .bind(content)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}

/// Marks a reply of the person's that is waiting or being generated as stopped: it keeps what
/// was generated so far (its generator saves the rest of its text as it notices; see
/// `replies::stop`). A reply that has ended already is left as it is.
pub async fn stop(db: &Db, who: Chatter, reply: Uuid) -> Result<()> {
    let mut tx = db.begin_tenant(who.tenant).await?;
    let owned: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM messages m JOIN conversations c ON c.id = m.conversation_id
                         WHERE m.id = $1 AND m.role = 'assistant' AND c.user_id = $2)",
    )
    .bind(reply)
    .bind(who.user)
    .fetch_one(&mut *tx)
    .await?;
    if !owned {
        return Err(Error::NotFound);
    }
    sqlx::query(
        "UPDATE messages SET status = 'stopped'
          WHERE id = $1 AND status IN ('pending', 'generating')",
    )
    .bind(reply)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Where a reply of the person's is: its status, text so far, error and sources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub status: MessageStatus,
    pub content: String,
    pub error: Option<String>,
    pub sources: Vec<Citation>,
}

/// A reply of the person's as saved now (`NotFound` if it is not theirs).
pub async fn progress(db: &Db, who: Chatter, reply: Uuid) -> Result<Progress> {
    let row: Option<(MessageStatus, String, Option<String>, String)> = db
        .tenant_optional(
            who.tenant,
            sqlx::query_as(
                "SELECT m.status, m.content, m.error, m.sources::text
                   FROM messages m JOIN conversations c ON c.id = m.conversation_id
                  WHERE m.id = $1 AND m.role = 'assistant' AND c.user_id = $2",
            )
            .bind(reply)
            .bind(who.user),
        )
        .await?;
    let (status, content, error, sources) = row.ok_or(Error::NotFound)?;
    Ok(Progress {
        status,
        content,
        error,
        sources: serde_json::from_str(&sources).unwrap_or_default(),
    })
}

const MAX_COMMENT_CHARS: usize = 2_000;

/// Rates a reply of the person's that has ended, or takes the rating back (`None`). The
/// comment is optional; it is kept with the rating and shown to the clinic's admins.
pub async fn rate(
    db: &Db,
    who: Chatter,
    reply: Uuid,
    rating: Option<Rating>,
    comment: &str,
) -> Result<()> {
    let comment = comment.trim();
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(Error::invalid(format!(
            "A comment can be at most {} characters.",
            crate::format::thousands(MAX_COMMENT_CHARS as i64)
        )));
    }
    let comment = if rating.is_some() { comment } else { "" };
    let mut tx = db.begin_tenant(who.tenant).await?;
    let status: Option<MessageStatus> = sqlx::query_scalar(
        "SELECT m.status FROM messages m JOIN conversations c ON c.id = m.conversation_id
          WHERE m.id = $1 AND m.role = 'assistant' AND c.user_id = $2",
    )
    .bind(reply)
    .bind(who.user)
    .fetch_optional(&mut *tx)
    .await?;
    match status {
        None => return Err(Error::NotFound),
        Some(s) if s.in_progress() => {
            return Err(Error::invalid("Rate the reply once it has ended."))
        }
        Some(_) => {}
    }
    sqlx::query(
        "UPDATE messages SET rating = $2, rating_comment = $3,
                rated_at = CASE WHEN $2::smallint IS NULL THEN NULL ELSE now() END
          WHERE id = $1",
    )
    .bind(reply)
    .bind(rating.map(Rating::value))
    .bind(comment)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A conversation found by a search: where the words were found, with a line around them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub conversation: Conversation,
    /// Text around the first match in a message, when the title did not match.
    pub snippet: Option<String>,
}

/// The person's conversations whose title or messages contain `query` (case-insensitive),
/// newest first. An empty query lists them all.
pub async fn search(db: &Db, who: Chatter, query: &str) -> Result<Vec<Found>> {
    let query = query.trim();
    if query.is_empty() {
        return Ok(list(db, who)
            .await?
            .into_iter()
            .map(|conversation| Found {
                conversation,
                snippet: None,
            })
            .collect());
    }
    let query: String = query.chars().take(200).collect();
    let pattern = format!(
        "%{}%",
        query
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        conversation: Conversation,
        title_matches: bool,
        content: Option<String>,
    }
    let sql = "SELECT * FROM (
            SELECT c.id, c.agent_id, a.name AS agent_name, c.title, c.created_at, c.updated_at,
                   c.title ILIKE $2 AS title_matches,
                   (SELECT m.content FROM messages m
                     WHERE m.conversation_id = c.id AND m.content ILIKE $2
                     ORDER BY m.created_at LIMIT 1) AS content
              FROM conversations c LEFT JOIN agents a ON a.id = c.agent_id
             WHERE c.user_id = $1) found
          WHERE title_matches OR content IS NOT NULL
          ORDER BY updated_at DESC LIMIT 50";
    let rows: Vec<Row> = db
        .tenant_all(who.tenant, sqlx::query_as(sql).bind(who.user).bind(pattern))
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| Found {
            snippet: (!r.title_matches)
                .then(|| r.content.as_deref().map(|c| snippet(c, &query)))
                .flatten(),
            conversation: r.conversation,
        })
        .collect())
}

/// About 120 characters of `text` around the first place `query` is found in it, on one line.
pub fn snippet(text: &str, query: &str) -> String {
    let flat: Vec<char> = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .collect();
    let lower: Vec<char> = flat.iter().flat_map(|c| c.to_lowercase()).collect();
    let needle: Vec<char> = query.chars().flat_map(|c| c.to_lowercase()).collect();
    // Lower-casing can change lengths (rarely); positions are then only approximate.
    let at = (lower.len() == flat.len())
        .then(|| {
            lower
                .windows(needle.len().max(1))
                .position(|w| w == needle.as_slice())
        })
        .flatten()
        .unwrap_or(0);
    let start = at.saturating_sub(40);
    let end = (at + needle.len() + 80).min(flat.len());
    let mut out: String = flat[start..end].iter().collect();
    if start > 0 {
        out.insert(0, '…');
    }
    if end < flat.len() {
        out.push('…');
    }
    out
}

/// What the clinic's people think of an agent's replies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentFeedback {
    pub agent_id: Option<Uuid>,
    pub agent_name: Option<String>,
    pub up: i64,
    pub down: i64,
    /// The latest comments, newest first.
    pub comments: Vec<FeedbackComment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedbackComment {
    pub rating: Rating,
    pub comment: String,
    pub at: OffsetDateTime,
}

/// Ratings of the clinic's replies per agent (most rated first), each with its latest five
/// comments. Only the ratings and comments: the conversations stay private.
pub async fn feedback_by_agent(db: &Db, tenant: TenantId) -> Result<Vec<AgentFeedback>> {
    let mut tx = db.begin_tenant(tenant).await?;
    let counts: Vec<(Option<Uuid>, Option<String>, i64, i64)> = sqlx::query_as(
        "SELECT c.agent_id, a.name, count(*) FILTER (WHERE m.rating = 1),
                count(*) FILTER (WHERE m.rating = -1)
           FROM messages m JOIN conversations c ON c.id = m.conversation_id
           LEFT JOIN agents a ON a.id = c.agent_id
          WHERE m.rating IS NOT NULL
          GROUP BY c.agent_id, a.name
          ORDER BY count(*) DESC, a.name",
    )
    .fetch_all(&mut *tx)
    .await?;
    let comments: Vec<(Option<Uuid>, i16, String, OffsetDateTime)> = sqlx::query_as(
        "SELECT agent_id, rating, rating_comment, rated_at FROM (
            SELECT c.agent_id, m.rating, m.rating_comment, m.rated_at,
                   row_number() OVER (PARTITION BY c.agent_id ORDER BY m.rated_at DESC) AS n
              FROM messages m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.rating IS NOT NULL AND m.rating_comment <> '') latest
          WHERE n <= 5 ORDER BY rated_at DESC",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(counts
        .into_iter()
        .map(|(agent_id, agent_name, up, down)| AgentFeedback {
            agent_id,
            agent_name,
            up,
            down,
            comments: comments
                .iter()
                .filter(|c| c.0 == agent_id)
                .filter_map(|(_, rating, comment, at)| {
                    Some(FeedbackComment {
                        rating: Rating::from_value(*rating)?,
                        comment: comment.clone(),
                        at: *at,
                    })
                })
                .collect(),
        })
        .collect())
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
