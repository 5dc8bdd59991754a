//! Text from the files clinics upload: plain text, Markdown, HTML, PDF and DOCX. Each comes out
//! as Markdown-ish text (headings as `#` lines where the format has them), so the splitter can
//! keep a heading with its section. Extraction is CPU work on untrusted bytes: it runs on a
//! blocking thread, and a panic in a parser is a refusal of that file, not a crash.

use std::io::{Cursor, Read};

pub use tessera_types::DocumentKind as Kind;

/// The sentence every refusal of an unknown format ends with.
pub const SUPPORTED: &str = "Tessera reads .txt, .md, .html, .pdf and .docx files.";

/// The format of an upload, from its name and checked against its first bytes (a PDF must
/// start like one, a DOCX must be a ZIP archive); `Err` is a message for the person.
pub fn detect(name: &str, bytes: &[u8]) -> Result<Kind, String> {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let kind = match ext.as_str() {
        "txt" | "text" | "csv" => Kind::Text,
        "md" | "markdown" => Kind::Markdown,
        "html" | "htm" => Kind::Html,
        "pdf" => Kind::Pdf,
        "docx" => Kind::Docx,
        "" => return Err(format!("{name:?} has no file extension. {SUPPORTED}")),
        other => return Err(format!("{name:?} is a .{other} file. {SUPPORTED}")),
    };
    let looks_right = match kind {
        Kind::Pdf => bytes.starts_with(b"%PDF-"),
        Kind::Docx => bytes.starts_with(b"PK\x03\x04"),
        _ => !bytes.starts_with(b"%PDF-") && !bytes.starts_with(b"PK\x03\x04"),
    };
    if !looks_right {
        return Err(format!(
            "{name:?} is not a {} file, whatever its name says.",
            kind.label()
        ));
    }
    Ok(kind)
}

/// What a file held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extracted {
    /// Markdown-ish text: headings as `#` lines, paragraphs separated by blank lines.
    pub text: String,
    /// Pages, for PDFs.
    pub pages: Option<i32>,
}

/// Largest text taken from one file (a zip bomb or a huge PDF stops here).
const MAX_TEXT_BYTES: usize = 50 * 1024 * 1024;

/// Extracts the text of a file of `kind`; `Err` says, for people, why there is none.
pub fn extract(kind: Kind, bytes: &[u8]) -> Result<Extracted, String> {
    let result = std::panic::catch_unwind(|| match kind {
        Kind::Text | Kind::Markdown => utf8(bytes).map(|text| Extracted { text, pages: None }),
        Kind::Html => html(bytes).map(|text| Extracted { text, pages: None }),
        Kind::Pdf => pdf(bytes),
        Kind::Docx => docx(bytes).map(|text| Extracted { text, pages: None }),
    });
    let extracted = match result {
        Ok(r) => r?,
        Err(_) => {
            return Err(format!(
                "The {} file could not be read; it may be damaged.",
                kind.label()
            ))
        }
    };
    if extracted.text.trim().is_empty() {
        return Err(match kind {
            Kind::Pdf => "This PDF has no text in it (a scanned document?). Upload a PDF with selectable text, or the document as text.".into(),
            _ => "The file has no text in it.".into(),
        });
    }
    Ok(extracted)
}

fn utf8(bytes: &[u8]) -> Result<String, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    String::from_utf8(bytes.to_vec())
        .map(|s| s.replace("\r\n", "\n"))
        .map_err(|_| "The file is not UTF-8 text. Save it as UTF-8 and upload it again.".into())
}

fn html(bytes: &[u8]) -> Result<String, String> {
    html2text::config::plain()
        .no_link_wrapping()
        .string_from_read(bytes, 10_000)
        .map_err(|_| "The HTML file could not be read.".to_string())
}

fn pdf(bytes: &[u8]) -> Result<Extracted, String> {
    let pages = pdf_extract::extract_text_from_mem_by_pages(bytes).map_err(|e| {
        tracing::info!(error = %e, "a PDF could not be read");
        match e {
            pdf_extract::OutputError::PdfError(lopdf::Error::Decryption(_)) => {
                "This PDF is encrypted. Upload a copy without a password.".to_string()
            }
            _ => "The PDF file could not be read; it may be damaged.".to_string(),
        }
    })?;
    let count = pages.len() as i32;
    let text = pages
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    Ok(Extracted {
        text,
        pages: Some(count),
    })
}

/// A DOCX is a ZIP archive whose `word/document.xml` holds the paragraphs; a paragraph styled
/// as a heading becomes a `#` line, table cells are joined with ` | `.
fn docx(bytes: &[u8]) -> Result<String, String> {
    use quick_xml::events::Event;
    let unreadable = || "The Word file could not be read; it may be damaged.".to_string();
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|_| unreadable())?;
    let mut xml = Vec::new();
    archive
        .by_name("word/document.xml")
        .map_err(|_| unreadable())?
        .take(MAX_TEXT_BYTES as u64)
        .read_to_end(&mut xml)
        .map_err(|_| unreadable())?;
    let mut reader = quick_xml::Reader::from_reader(xml.as_slice());
    let mut out = String::new();
    let mut paragraph = String::new();
    let mut heading: Option<usize> = None;
    let mut in_text = false;
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).map_err(|_| unreadable())? {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                "t" => in_text = true,
                "tab" => paragraph.push('\t'),
                "br" | "cr" => paragraph.push('\n'),
                "tc" if !paragraph.is_empty() => paragraph.push_str(" | "),
                "pStyle" => {
                    for a in e.attributes().flatten() {
                        if a.key.local_name().as_ref() == "val" {
                            let v = a.value.to_ascii_lowercase();
                            if v == "title" {
                                heading = Some(1);
                            } else if let Some(n) = v.strip_prefix("heading") {
                                heading = Some(n.trim().parse::<usize>().unwrap_or(1).clamp(1, 6));
                            }
                        }
                    }
                }
                _ => {}
            },
            // Entities arrive as their own events; the text between them is plain.
            Event::Text(t) if in_text => paragraph.push_str(&t.xml10_content()),
            Event::GeneralRef(r) if in_text => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    paragraph.push(c);
                } else {
                    let entity = format!("&{};", r.xml10_content());
                    paragraph.push_str(&quick_xml::escape::unescape(&entity).unwrap_or_default());
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                "t" => in_text = false,
                "p" => {
                    let text = paragraph.trim();
                    if !text.is_empty() {
                        if let Some(level) = heading {
                            out.push_str(&"#".repeat(level));
                            out.push(' ');
                        }
                        out.push_str(text);
                        out.push_str("\n\n");
                    }
                    paragraph.clear();
                    heading = None;
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        if out.len() > MAX_TEXT_BYTES {
            break;
        }
        buf.clear();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_by_name_and_checked_by_content() {
        assert_eq!(detect("Prices.MD", b"# Prices"), Ok(Kind::Markdown));
        assert_eq!(detect("leaflet.pdf", b"%PDF-1.7 ..."), Ok(Kind::Pdf));
        assert_eq!(detect("protocol.docx", b"PK\x03\x04..."), Ok(Kind::Docx));
        let refused = detect("scan.jpg", b"\xFF\xD8").unwrap_err();
        assert!(
            refused.contains(".jpg") && refused.contains(".pdf"),
            "{refused}"
        );
        assert!(detect("fake.pdf", b"hello")
            .unwrap_err()
            .contains("not a PDF"));
        assert!(detect("notes", b"hello")
            .unwrap_err()
            .contains("no file extension"));
        assert!(detect("renamed.txt", b"%PDF-1.4").is_err());
    }

    #[test]
    fn text_and_markdown_must_be_utf8_and_not_empty() {
        let e = extract(Kind::Text, b"\xEF\xBB\xBFHello\r\nthere").unwrap();
        assert_eq!(e.text, "Hello\nthere");
        assert!(extract(Kind::Text, b"\xFF\xFE\x00")
            .unwrap_err()
            .contains("UTF-8"));
        assert!(extract(Kind::Markdown, b"  \n ")
            .unwrap_err()
            .contains("no text"));
    }

    #[test]
    fn html_keeps_headings_and_drops_markup() {
        let page = b"<html><head><title>x</title><style>p{color:red}</style></head><body><h1>Opening hours</h1><p>We open at <b>8am</b>.</p><script>alert(1)</script></body></html>";
        let e = extract(Kind::Html, page).unwrap();
        assert!(e.text.contains("# Opening hours"), "{}", e.text);
        assert!(e.text.contains("We open at"), "{}", e.text);
        assert!(
            !e.text.contains("alert") && !e.text.contains("color"),
            "{}",
            e.text
        );
    }

    #[test]
    fn docx_paragraphs_headings_and_tables() {
        let bytes = fixtures::docx(&[
            ("Heading1", "Vaccination protocol"),
            ("", "Flu shots are given from October & on request."),
            ("Heading2", "Prices"),
            ("", "A flu shot costs 25 euros."),
        ]);
        let e = extract(Kind::Docx, &bytes).unwrap();
        assert_eq!(
            e.text,
            "# Vaccination protocol\n\nFlu shots are given from October & on request.\n\n## Prices\n\nA flu shot costs 25 euros.\n\n"
        );
        assert!(extract(Kind::Docx, b"PK\x03\x04 not really a zip")
            .unwrap_err()
            .contains("could not be read"));
    }

    #[test]
    fn pdf_text_pages_and_refusals() {
        let bytes = fixtures::pdf(&[
            "Flu shots are given in October.",
            "Prices are listed at the desk.",
        ]);
        let e = extract(Kind::Pdf, &bytes).unwrap();
        assert_eq!(e.pages, Some(2));
        assert!(
            e.text.contains("Flu shots are given in October."),
            "{:?}",
            e.text
        );
        assert!(
            e.text.contains("Prices are listed at the desk."),
            "{:?}",
            e.text
        );
        // A page with no text at all: what a scan looks like.
        let scan = fixtures::pdf(&[""]);
        assert!(extract(Kind::Pdf, &scan).unwrap_err().contains("scanned"));
        assert!(extract(Kind::Pdf, b"%PDF-1.4 garbage")
            .unwrap_err()
            .contains("could not be read"));
    }
}

/// Small files of each format, built in code, for tests here and elsewhere (no binary
/// fixtures in the repository).
pub mod fixtures {
    use std::io::Write;

    /// A DOCX whose paragraphs are `(style, text)`; an empty style is a body paragraph.
    pub fn docx(paragraphs: &[(&str, &str)]) -> Vec<u8> {
        let mut body = String::new();
        for (style, text) in paragraphs {
            body.push_str("<w:p>");
            if !style.is_empty() {
                body.push_str(&format!("<w:pPr><w:pStyle w:val=\"{style}\"/></w:pPr>"));
            }
            let escaped = text.replace('&', "&amp;").replace('<', "&lt;");
            body.push_str(&format!(
                "<w:r><w:t xml:space=\"preserve\">{escaped}</w:t></w:r></w:p>"
            ));
        }
        let document = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\
             <w:document xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"><w:body>{body}</w:body></w:document>"
        );
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let parts = [
            ("[Content_Types].xml", "<?xml version=\"1.0\"?><Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\"><Default Extension=\"xml\" ContentType=\"application/xml\"/><Override PartName=\"/word/document.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml\"/></Types>".to_string()),
            ("word/document.xml", document),
        ];
        for (name, content) in parts {
            zip.start_file(name, options).expect("zip entry");
            zip.write_all(content.as_bytes()).expect("zip write");
        }
        zip.finish().expect("zip").into_inner()
    }

    /// A PDF with one page per entry, each showing its text in Helvetica.
    pub fn pdf(pages: &[&str]) -> Vec<u8> {
        use lopdf::content::{Content, Operation};
        use lopdf::{dictionary, Document, Object, Stream};
        let mut doc = Document::with_version("1.5");
        let pages_id = doc.new_object_id();
        let font_id = doc.add_object(dictionary! {
            "Type" => "Font",
            "Subtype" => "Type1",
            "BaseFont" => "Helvetica",
        });
        let resources_id = doc.add_object(dictionary! {
            "Font" => dictionary! { "F1" => font_id },
        });
        let mut kids = Vec::new();
        for text in pages {
            let operations = if text.is_empty() {
                vec![]
            } else {
                vec![
                    Operation::new("BT", vec![]),
                    Operation::new("Tf", vec!["F1".into(), 12.into()]),
                    Operation::new("Td", vec![72.into(), 720.into()]),
                    Operation::new("Tj", vec![Object::string_literal(*text)]),
                    Operation::new("ET", vec![]),
                ]
            };
            let content = Content { operations };
            let content_id = doc.add_object(Stream::new(
                dictionary! {},
                content.encode().expect("pdf content"),
            ));
            let page_id = doc.add_object(dictionary! {
                "Type" => "Page",
                "Parent" => pages_id,
                "Contents" => content_id,
            });
            kids.push(page_id.into());
        }
        let count = kids.len() as i64;
        doc.objects.insert(
            pages_id,
            Object::Dictionary(dictionary! {
                "Type" => "Pages",
                "Kids" => kids,
                "Count" => count,
                "Resources" => resources_id,
                "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
            }),
        );
        let catalog_id = doc.add_object(dictionary! {
            "Type" => "Catalog",
            "Pages" => pages_id,
        });
        doc.trailer.set("Root", catalog_id);
        let mut out = Vec::new();
        doc.save_to(&mut out).expect("pdf save");
        out
    }
}
