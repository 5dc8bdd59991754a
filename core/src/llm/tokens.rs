//! Token counts. Providers report what a call used; when one reports nothing (a stream cut
//! short, a server that sends no usage) Tessera counts the tokens itself with OpenAI's
//! `o200k_base` encoding from `tiktoken-rs`, whose tables ship inside the crate (nothing is
//! downloaded at run time), and the ledger marks the event as counted by Tessera. For other
//! providers' models the count is close to theirs rather than exact.

use super::ChatMessage;

/// Tokens in `text` under `o200k_base`.
pub fn count_tokens(text: &str) -> i64 {
    if text.is_empty() {
        return 0;
    }
    tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(text)
        .len() as i64
}

/// Tokens a message costs in a prompt: its text plus the few tokens that frame each message.
pub fn message_tokens(m: &ChatMessage) -> i64 {
    count_tokens(&m.content) + 4
}

/// Loads the encoding's tables (a few hundred milliseconds, once), so the first call that
/// needs a count does not wait for them.
pub async fn warm_up() {
    if let Err(e) = tokio::task::spawn_blocking(|| count_tokens("warm up")).await {
        tracing::warn!(error = %e, "the tokenizer could not be loaded ahead of time");
    }
}

/// An upper bound of a prompt's tokens, for reservations: a token is at least one byte, plus
/// each message's framing.
pub fn prompt_upper_bound(messages: &[ChatMessage]) -> i64 {
    8 + messages
        .iter()
        .map(|m| m.content.len() as i64 + 8)
        .sum::<i64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::MessageRole;

    #[test]
    fn counts_are_real_tokens() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("Hello"), 1);
        assert_eq!(count_tokens("Hello world"), 2);
        // A long word is several tokens, far fewer than its characters.
        let n = count_tokens("pneumonoultramicroscopicsilicovolcanoconiosis");
        assert!((5..20).contains(&n), "{n}");
    }

    #[test]
    fn the_upper_bound_is_never_below_the_count() {
        let messages = vec![ChatMessage {
            role: MessageRole::User,
            content: "Could you summarise the discharge instructions? ".repeat(20),
        }];
        let counted: i64 = messages.iter().map(message_tokens).sum();
        assert!(prompt_upper_bound(&messages) >= counted);
    }
}
