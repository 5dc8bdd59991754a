//! Splitting a document's text into passages: by Markdown structure first (sections, then
//! paragraphs, sentences and words), each passage at most [`MAX_TOKENS`] tokens of OpenAI's
//! `o200k_base` (the splitter counts with the same tokenizer as the rest of Tessera, loaded
//! from the crate, never downloaded). A passage remembers the heading of its section, so a
//! citation can name it and lexical search can match it.

use text_splitter::{ChunkConfig, MarkdownSplitter};

/// The largest passage, in tokens.
pub const MAX_TOKENS: usize = 400;
/// Passages are filled up to here before a split is considered.
const TARGET_TOKENS: usize = 250;
/// Room kept for a heading moved to the start of the next passage.
const HEADING_ROOM: usize = 40;

/// One passage of a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The heading of the section the passage comes from ("" before the first heading).
    pub heading: String,
    pub content: String,
    pub tokens: i32,
}

/// The passages of `text` (Markdown-ish, as [`super::extract`] gives it), in order.
pub fn chunk(text: &str) -> Vec<Chunk> {
    let bpe = tiktoken_rs::o200k_base_singleton();
    let config = ChunkConfig::new(TARGET_TOKENS..MAX_TOKENS - HEADING_ROOM)
        .with_sizer(bpe)
        .with_trim(true);
    let splitter = MarkdownSplitter::new(config);
    // The splitter can end a passage with the heading of the next section (it fills passages
    // up to their size), or leave a heading alone when its section is too long to join it:
    // such trailing headings move to the start of the next passage.
    let mut pieces: Vec<String> = Vec::new();
    let mut carried: Vec<String> = Vec::new();
    for piece in splitter.chunks(text) {
        let mut lines: Vec<&str> = piece.lines().collect();
        let mut trailing = Vec::new();
        while let Some(last) = lines.last() {
            if last.trim().is_empty() {
                lines.pop();
            } else if heading_text(last).is_some() {
                trailing.insert(0, last.to_string());
                lines.pop();
            } else {
                break;
            }
        }
        let body = lines.join("\n");
        if !body.trim().is_empty() {
            let mut full = carried.join("\n");
            if !full.is_empty() {
                full.push_str("\n\n");
            }
            full.push_str(&body);
            pieces.push(full);
            carried.clear();
        }
        carried.extend(trailing);
    }
    if !carried.is_empty() {
        // Headings at the very end, with nothing after them.
        pieces.push(carried.join("\n"));
    }
    let mut heading = String::new();
    let mut out = Vec::new();
    for piece in pieces.iter().map(String::as_str) {
        // The heading in force where the passage starts: the last one before it, unless the
        // passage opens with its own.
        let own = piece.lines().next().and_then(heading_text);
        let piece_heading = match own {
            Some(h) => h.to_string(),
            None => heading.clone(),
        };
        for line in piece.lines() {
            if let Some(h) = heading_text(line) {
                heading = h.to_string();
            }
        }
        let content = piece.trim();
        if content.is_empty() {
            continue;
        }
        let tokens = bpe.encode_ordinary(content).len().max(1) as i32;
        out.push(Chunk {
            heading: piece_heading,
            content: content.to_string(),
            tokens,
        });
    }
    out
}

/// The text of a Markdown heading line (`## Prices` -> `Prices`).
fn heading_text(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let hashes = t.bytes().take_while(|b| *b == b'#').count();
    if (1..=6).contains(&hashes) && t[hashes..].starts_with(' ') {
        Some(t[hashes..].trim())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_documents_are_one_passage() {
        let chunks = chunk("# Opening hours\n\nWe open at 8am on weekdays.");
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].heading, "Opening hours");
        assert!(chunks[0].content.starts_with("# Opening hours"));
    }

    #[test]
    fn sections_keep_their_headings_and_stay_within_the_limit() {
        let body = |topic: &str| {
            format!("{topic} is described in this sentence, which is long enough to matter. ")
                .repeat(40)
        };
        let text = format!(
            "# Vaccinations\n\n{}\n\n## Prices\n\n{}\n\n## Aftercare\n\n{}",
            body("Vaccination"),
            body("The price"),
            body("Aftercare")
        );
        let chunks = chunk(&text);
        assert!(chunks.len() >= 3, "{}", chunks.len());
        for c in &chunks {
            assert!(c.tokens as usize <= MAX_TOKENS, "{} tokens", c.tokens);
            assert_eq!(
                c.tokens as i64,
                crate::llm::count_tokens(&c.content).max(1),
                "token counts are the tokenizer's"
            );
        }
        // Every passage about prices carries the Prices heading, and none about aftercare does.
        for c in &chunks {
            if c.content.contains("The price is described") {
                assert_eq!(c.heading, "Prices", "{c:?}");
            }
            if c.content.contains("Aftercare is described") {
                assert_eq!(c.heading, "Aftercare", "{c:?}");
            }
        }
        // A section's heading starts a passage rather than ending the one before.
        assert!(
            chunks
                .iter()
                .all(|c| !c.content.trim_end().ends_with("## Prices")),
            "{chunks:#?}"
        );
    }

    #[test]
    fn nothing_is_lost_between_passages() {
        let words: Vec<String> = (0..3000).map(|i| format!("w{i}")).collect();
        let text = words.join(" ");
        let joined = chunk(&text)
            .iter()
            .map(|c| c.content.clone())
            .collect::<Vec<_>>()
            .join(" ");
        for w in ["w0", "w1499", "w2999"] {
            assert!(joined.split(' ').any(|x| x == w), "{w} lost");
        }
    }
}
