//! Markdown from a model, rendered safely: raw HTML is shown as text, links keep only safe
//! schemes, and images are reduced to their description (nothing loads from elsewhere). The
//! output is HTML built only from Markdown's own elements, so it can be set as inner HTML.

use pulldown_cmark::{html, CodeBlockKind, CowStr, Event, Options, Parser, Tag, TagEnd};

fn safe_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("https://")
        || lower.starts_with("http://")
        || lower.starts_with("mailto:")
        || lower.starts_with('/')
        || lower.starts_with('#')
}

/// A fenced block's language as a label: its first word, only letters, digits and `+#._-`
/// (so it needs no escaping), at most 24 characters.
fn language_label(info: &str) -> String {
    info.split_whitespace()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "+#._-".contains(*c))
        .take(24)
        .collect()
}

/// Renders Markdown to HTML that is safe to insert into the page.
pub fn render(markdown: &str) -> String {
    let parser = Parser::new_ext(
        markdown,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS,
    );
    // For each open link: whether it was kept.
    let mut links: Vec<bool> = Vec::new();
    let events = parser.filter_map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Some(Event::Text(raw)),
        Event::Start(Tag::HtmlBlock) | Event::End(TagEnd::HtmlBlock) => None,
        Event::Start(Tag::Link { ref dest_url, .. }) => {
            let keep = safe_url(dest_url);
            links.push(keep);
            keep.then_some(event)
        }
        Event::End(TagEnd::Link) => links.pop().unwrap_or(false).then_some(event),
        // An image becomes its description, as text.
        Event::Start(Tag::Image { .. }) | Event::End(TagEnd::Image) => None,
        other => Some(other),
    });
    // Code blocks get a heading with their language and a Copy button (handled by the page).
    let events = events.flat_map(|event| match event {
        Event::Start(Tag::CodeBlock(ref kind)) => {
            let language = match kind {
                CodeBlockKind::Fenced(info) => language_label(info),
                CodeBlockKind::Indented => String::new(),
            };
            let label = if language.is_empty() { "code".to_string() } else { language };
            vec![
                Event::Html(CowStr::from(format!(
                    "<div class=\"code-block\"><div class=\"code-head\"><span class=\"code-lang\">{label}</span><button type=\"button\" class=\"copy-code\">Copy</button></div>"
                ))),
                event,
            ]
        }
        Event::End(TagEnd::CodeBlock) => vec![event, Event::Html(CowStr::from("</div>"))],
        other => vec![other],
    });
    let mut out = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut out, events);
    // A code block that scrolls sideways can be scrolled from the keyboard.
    out.replace("<pre><code", "<pre tabindex=\"0\"><code")
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn markdown_renders() {
        let html = render("# Plan\n\n- **rest**\n- fluids\n\n`code`");
        assert!(html.contains("<h1>Plan</h1>"));
        assert!(html.contains("<strong>rest</strong>"));
        assert!(html.contains("<code>code</code>"));
    }

    #[test]
    fn a_script_from_a_model_renders_as_text() {
        for attack in [
            "<script>alert(1)</script>",
            "Hello <img src=x onerror=alert(1)> there",
            "<div onclick=\"alert(1)\">x</div>\n\ntext",
        ] {
            let html = render(attack);
            assert!(!html.contains("<script"), "{html}");
            assert!(!html.contains("<img"), "{html}");
            assert!(!html.contains("<div"), "{html}");
            assert!(html.contains("&lt;"), "shown as text: {html}");
        }
    }

    #[test]
    fn code_blocks_have_their_language_and_a_copy_button() {
        let html = render("```rust\nfn main() {}\n```\n\n```\nplain\n```\n\n```<script>x\ny\n```");
        assert!(
            html.contains("<span class=\"code-lang\">rust</span>"),
            "{html}"
        );
        assert!(
            html.contains("<code class=\"language-rust\">fn main() {}"),
            "{html}"
        );
        assert!(
            html.contains("<span class=\"code-lang\">code</span>"),
            "{html}"
        );
        assert_eq!(html.matches("class=\"copy-code\"").count(), 3, "{html}");
        assert!(!html.contains("<script"), "{html}");
        // Each block's wrapper closes after its `<pre>`.
        assert_eq!(html.matches("<div class=\"code-block\">").count(), 3);
        assert_eq!(html.matches("</pre>\n</div>").count(), 3, "{html}");
    }

    #[test]
    fn tables_and_lists_render() {
        let html = render("| Day | Hours |\n|---|---|\n| Sat | 9-12 |\n\n1. one\n2. two");
        assert!(
            html.contains("<table>") && html.contains("<td>Sat</td>"),
            "{html}"
        );
        assert!(
            html.contains("<ol>") && html.contains("<li>two</li>"),
            "{html}"
        );
    }

    #[test]
    fn unsafe_links_and_images_are_dropped() {
        let html = render("[click](javascript:alert(1)) and [ok](https://example.org) ![tracker](https://evil.example/p.png)");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(html.contains("click"));
        assert!(html.contains("<a href=\"https://example.org\">ok</a>"));
        assert!(!html.contains("<img") && html.contains("tracker"), "{html}");
    }
}
