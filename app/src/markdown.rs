//! Markdown from a model, rendered safely: raw HTML is shown as text, links keep only safe
//! schemes, and images are reduced to their description (nothing loads from elsewhere). The
//! output is HTML built only from Markdown's own elements, so it can be set as inner HTML.

use pulldown_cmark::{html, Event, Options, Parser, Tag, TagEnd};

fn safe_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("https://")
        || lower.starts_with("http://")
        || lower.starts_with("mailto:")
        || lower.starts_with('/')
        || lower.starts_with('#')
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
    let mut out = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut out, events);
    out
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
    fn unsafe_links_and_images_are_dropped() {
        let html = render("[click](javascript:alert(1)) and [ok](https://example.org) ![tracker](https://evil.example/p.png)");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(html.contains("click"));
        assert!(html.contains("<a href=\"https://example.org\">ok</a>"));
        assert!(!html.contains("<img") && html.contains("tracker"), "{html}");
    }
}
