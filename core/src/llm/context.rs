//! The history sent with a conversation: the instructions always, then as many of the newest
//! turns as fit in the agent's context budget.

use super::tokens::message_tokens;
use super::{ChatMessage, MessageRole};

/// The messages sent to the model: the system prompt always, then as much recent history as
/// fits in `budget` tokens (oldest turns dropped first). The newest message is always kept.
pub fn context(system_prompt: &str, history: &[ChatMessage], budget: i64) -> Vec<ChatMessage> {
    let mut out = Vec::new();
    let system = (!system_prompt.trim().is_empty()).then(|| ChatMessage {
        role: MessageRole::System,
        content: system_prompt.to_string(),
    });
    // Bytes bound tokens from above: when everything fits by bytes, nothing needs counting.
    let bytes: usize = system
        .iter()
        .chain(history)
        .map(|m| m.content.len() + 4)
        .sum();
    let mut used = match &system {
        Some(s) if bytes as i64 > budget => message_tokens(s),
        _ => 0,
    };
    out.extend(system);
    let mut kept = Vec::new();
    for (i, m) in history.iter().enumerate().rev() {
        let cost = if bytes as i64 > budget {
            message_tokens(m)
        } else {
            0
        };
        if i + 1 != history.len() && used + cost > budget {
            break;
        }
        used += cost;
        kept.push(m.clone());
    }
    // Never start with a reply the model did not see the question to.
    while kept.len() > 1
        && kept
            .last()
            .is_some_and(|m| m.role == MessageRole::Assistant)
    {
        kept.pop();
    }
    out.extend(kept.into_iter().rev());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: MessageRole, words: usize, tag: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: format!("{tag} {}", "word ".repeat(words))
                .trim()
                .to_string(),
        }
    }

    #[test]
    fn context_keeps_the_system_prompt_and_the_newest_turns() {
        // m0 (user) .. m10 (user), alternating.
        let history: Vec<ChatMessage> = (0..11)
            .map(|i| {
                let role = if i % 2 == 0 {
                    MessageRole::User
                } else {
                    MessageRole::Assistant
                };
                msg(role, 20, &format!("m{i}"))
            })
            .collect();
        let tags = |ms: &[ChatMessage]| -> Vec<String> {
            ms.iter()
                .map(|m| m.content.split(' ').next().unwrap().to_string())
                .collect()
        };
        let all = context("Be kind.", &history, 100_000);
        assert_eq!(all.len(), 12);
        assert_eq!(all[0].role, MessageRole::System);

        // Every message costs the same.
        let system = message_tokens(&all[0]);
        let per = message_tokens(&history[10]);
        assert_eq!(per, message_tokens(&history[1]));
        let trimmed = context("Be kind.", &history, system + per * 3);
        assert_eq!(trimmed[0].content, "Be kind.");
        assert_eq!(tags(&trimmed[1..]), ["m8", "m9", "m10"]);

        // Room for two: the older of them is a reply whose question was cut, so it goes too.
        let two = context("Be kind.", &history, system + per * 2);
        assert_eq!(tags(&two[1..]), ["m10"]);

        // The newest message stays even when it alone is over budget.
        let tiny = context("", &history, 1);
        assert_eq!(tags(&tiny), ["m10"]);
    }
}
