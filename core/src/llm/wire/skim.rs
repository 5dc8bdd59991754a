//! JSON read in one pass over its bytes where serde's visitors cost more than the answer needs:
//! a request's messages checked for contents other than text ([`plain_messages`]), a whole
//! OpenAI-format reply read for its usage, for the replies forwarded as they came (chat
//! completions: [`super::read_openai_reply`]; the Responses API:
//! [`super::responses_reply_usage`]), and a Responses API event read for the fields the
//! gateway needs ([`responses_event`], an ending event's response in the same pass).
//! serde reads such a reply through its visitors, most of the cost per token rather than per
//! byte (a reply is mostly short keys and values). This walks the bytes once, strings eight
//! bytes at a time, and makes only the usage's counts into numbers. What it passes over, it
//! passes over in one loop ([`pass`]) with its place in a local, or, for a string, number or
//! word, where it is read ([`Skim::value`]): a call's set-up cost more than most such values
//! (`bench/README.md`, "What was tried, and what it did").
//!
//! It answers only where it is sure to answer as serde does: a reply whose every string is
//! free of escapes and control characters, whose keys serde reads (the top level's, the
//! usage's) are ASCII without escapes, whose usage numbers are plain non-negative integers
//! below 10^18, and which has choices and no error. Anything else (an escape anywhere, a float
//! where a count goes, an error, a duplicate field, any text that is not JSON) is left to
//! serde: `None`. The reply's top level and its usage are read in loops of their own, with
//! their place in a local, as [`pass`] passes over values.
//! What is compared with a tree (`serde_json::Value`: the Responses API's replies and events)
//! passes over strings with the two-character escapes (`\n`, `\"`, ...), which a reply's text
//! often has, but leaves to the tree what it reads otherwise than serde's visitors: numbers
//! with an exponent or over 20 whole digits (a tree makes them `f64`, and fails past its range)
//! and `\u` escapes (a tree checks their pairs). Its strings' bytes outside ASCII are checked to
//! be UTF-8 where they are met (a tree refuses text that is not; nothing else in JSON is
//! outside ASCII), so the reply needs no second pass for that.

use super::{PromptDetails, Usage, UsageWire};

/// Deepest nesting read here; deeper replies are left to serde.
const DEPTH: u8 = 32;

/// The names a whole reply's usage is read by: chat completions' ([`CHAT`]) or the Responses
/// API's ([`RESPONSES`]).
pub(super) struct Shape {
    /// What the reply holds its output in, an array.
    list: &'static [u8],
    /// Whether that array must hold something (a chat completion has at least one choice).
    filled: bool,
    prompt: &'static [u8],
    completion: &'static [u8],
    details: &'static [u8],
    /// Whether numbers must read as a tree reads them (as `f64` where they are not whole
    /// numbers of 64 bits, which fails past its range): numbers with an exponent, or more than
    /// 20 digits before any fraction, are then left to serde, as are `\u` escapes; the
    /// two-character escapes are then passed over.
    tree: bool,
}

/// A chat completion, read as [`super::serde_reply_usage`] reads it.
pub(super) const CHAT: Shape = Shape {
    list: b"choices",
    filled: true,
    prompt: b"prompt_tokens",
    completion: b"completion_tokens",
    details: b"prompt_tokens_details",
    tree: false,
};

/// A Responses API reply (`output`, and `input_tokens`, `output_tokens` and
/// `input_tokens_details` in its usage), read as [`super::parse_responses_reply`] reads its
/// usage.
pub(super) const RESPONSES: Shape = Shape {
    list: b"output",
    filled: false,
    prompt: b"input_tokens",
    completion: b"output_tokens",
    details: b"input_tokens_details",
    tree: true,
};

/// A reply's usage as serde would read it (`Some(None)`: a reply without usage), or `None`
/// when only serde can tell (see the module's documentation).
pub(super) fn reply_usage(bytes: &[u8], shape: &Shape) -> Option<Option<Usage>> {
    let mut s = Skim::new(bytes, shape);
    let mode = s.mode;
    let usage = reply_at(&mut s, shape, |_, b, i| value_end(b, i, DEPTH, mode))?;
    s.peek().is_none().then_some(usage)
}

/// What the gateway reads of the response a Responses API stream's ending event carries: its
/// usage (as [`reply_usage`] reads it), and its `status` and `incomplete_details`, each as its
/// JSON text.
pub(super) struct Ending<'a> {
    pub usage: Option<Usage>,
    pub status: Option<&'a str>,
    pub incomplete: Option<&'a str>,
}

/// An ending event's response, at `s`'s place in `text` (what `s` reads), read in one pass,
/// where [`reply_usage`] reads it (with [`RESPONSES`]' names) and neither `status` nor
/// `incomplete_details` is given twice; `None` leaves it to the tree. Leaves `s` after it.
fn ending_at<'a>(s: &mut Skim<'a>, text: &'a str) -> Option<Ending<'a>> {
    let (mut status, mut incomplete) = (None, None);
    let mode = s.mode;
    let usage = reply_at(s, &RESPONSES, |key, b, i| {
        let end = value_end(b, i, DEPTH, mode)?;
        let slot = match key {
            b"status" => &mut status,
            b"incomplete_details" => &mut incomplete,
            _ => return Some(end),
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(text.get(i..end)?);
        Some(end)
    })?;
    Some(Ending {
        usage,
        status,
        incomplete,
    })
}

/// [`reply_usage`] of the reply at `s`'s place, leaving `s` after it, with `other` passing over
/// the value of each other key (ASCII, without escapes) at a place in the bytes: where it
/// ends. The top level is read in one loop with its place in a local, as [`pass`] reads what
/// it passes over; a key with an escape or a byte outside ASCII leaves the reply to serde.
fn reply_at<'a>(
    s: &mut Skim<'a>,
    shape: &Shape,
    mut other: impl FnMut(&'a [u8], &'a [u8], usize) -> Option<usize>,
) -> Option<Option<Usage>> {
    let (b, mode) = (s.b, s.mode);
    // Whether the list came and held something; the usage if it came; whether `error` came.
    let mut list: Option<bool> = None;
    let mut usage: Option<Option<UsageWire>> = None;
    let mut error = false;
    let i = plain_object(b, blank(b, s.i), |key, i| {
        // Most keys are none of the three: told by their length.
        if key.len() == shape.list.len() && key == shape.list {
            if list.is_some() || b.get(i) != Some(&b'[') {
                return None;
            }
            list = Some(b.get(blank(b, i + 1)) != Some(&b']'));
            pass(b, i, DEPTH, mode)
        } else if key == b"usage" {
            if usage.is_some() {
                return None;
            }
            let (end, read) = or_null(b, i, |i| usage_from(b, i, shape, mode))?;
            usage = Some(read);
            Some(end)
        } else if key == b"error" {
            // Only `"error": null` is a reply; any other error is serde's to read.
            if error {
                return None;
            }
            error = true;
            word(b, i, b"null")
        } else {
            other(key, b, i)
        }
    })?;
    s.i = i;
    if !list? && shape.filled {
        return None;
    }
    Some(usage.flatten().as_ref().and_then(UsageWire::usage))
}

/// An object's key at `i` (its opening quote) that is ASCII and has no escape, with its colon
/// and the whitespace around it passed over: the key's text and where its value starts.
#[inline(always)]
fn plain_key(b: &[u8], i: usize) -> Option<(&[u8], usize)> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let end = ascii_string_end(b, i + 1);
    if b.get(end) != Some(&b'"') {
        return None;
    }
    let at = blank(b, end + 1);
    if b.get(at) != Some(&b':') {
        return None;
    }
    Some((&b[i + 1..end], blank(b, at + 1)))
}

/// An object at `i` whose keys are ASCII without escapes, each of whose values `value` reads,
/// given its key and where it starts, answering where it ends: where the object ends. Read in
/// one loop with its place in a local, as [`pass`] reads what it passes over.
#[inline(always)]
fn plain_object<'a>(
    b: &'a [u8],
    i: usize,
    mut value: impl FnMut(&'a [u8], usize) -> Option<usize>,
) -> Option<usize> {
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let mut i = blank(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    loop {
        let (key, at) = plain_key(b, i)?;
        i = blank(b, value(key, at)?);
        match b.get(i) {
            Some(b',') => i = blank(b, i + 1),
            Some(b'}') => return Some(i + 1),
            _ => return None,
        }
    }
}

/// `null` at `i` (`None`), or what `read` reads there (what it reads, and where it ends).
#[inline(always)]
fn or_null<T>(
    b: &[u8],
    i: usize,
    read: impl FnOnce(usize) -> Option<(usize, T)>,
) -> Option<(usize, Option<T>)> {
    if b.get(i) == Some(&b'n') {
        return Some((word(b, i, b"null")?, None));
    }
    let (end, read) = read(i)?;
    Some((end, Some(read)))
}

/// A reply's usage object at `i`, read as [`UsageWire`] reads it (with `shape`'s names): where
/// it ends, and what it holds.
fn usage_from(b: &[u8], i: usize, shape: &Shape, mode: Mode) -> Option<(usize, UsageWire)> {
    let (mut prompt, mut completion, mut details) = (None, None, None);
    let end = plain_object(b, i, |key, i| {
        if key == shape.prompt || key == shape.completion {
            let slot = if key == shape.prompt {
                &mut prompt
            } else {
                &mut completion
            };
            if slot.is_some() {
                return None;
            }
            let (end, n) = count_from(b, i)?;
            *slot = Some(n);
            Some(end)
        } else if key == shape.details {
            if details.is_some() {
                return None;
            }
            let (end, read) = or_null(b, i, |i| details_from(b, i, mode))?;
            details = Some(read);
            Some(end)
        } else {
            value_end(b, i, DEPTH, mode)
        }
    })?;
    Some((
        end,
        UsageWire {
            prompt_tokens: prompt.flatten(),
            completion_tokens: completion.flatten(),
            prompt_tokens_details: details.flatten(),
        },
    ))
}

/// A usage's details object at `i`, read as [`PromptDetails`] reads it: where it ends, and what
/// it holds.
fn details_from(b: &[u8], i: usize, mode: Mode) -> Option<(usize, PromptDetails)> {
    let mut cached = None;
    let end = plain_object(b, i, |key, i| {
        if key != b"cached_tokens" {
            return value_end(b, i, DEPTH, mode);
        }
        if cached.is_some() {
            return None;
        }
        let (end, n) = count_from(b, i)?;
        cached = Some(n);
        Some(end)
    })?;
    Some((
        end,
        PromptDetails {
            cached_tokens: cached.flatten(),
        },
    ))
}

/// A count at `i`: `null`, or a whole number from 0 to 10^18 − 1 written plainly (what serde
/// reads into an `Option<i64>` alike; other numbers are left to it); where it ends.
#[inline(always)]
fn count_from(b: &[u8], i: usize) -> Option<(usize, Option<i64>)> {
    or_null(b, i, |i| plain_count(b, i))
}

/// A whole number from 0 to 10^18 − 1 written plainly at `i`: where it ends, and its value.
#[inline(always)]
fn plain_count(b: &[u8], i: usize) -> Option<(usize, i64)> {
    let mut end = i;
    let mut n = 0i64;
    while let Some(&d @ b'0'..=b'9') = b.get(end) {
        // A 19th digit is refused before it is added: no overflow.
        if end - i == 18 {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
        end += 1;
    }
    let plain = match end - i {
        0 => false,
        1 => true,
        _ => b[i] != b'0',
    };
    if !plain || matches!(b.get(end), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    Some((end, n))
}

/// Whether `bytes`, a list of messages already read as JSON, is one serde's reading in
/// `body::messages_bound` would find nothing to change in: a list of one or more objects, each
/// with at most one `content` (a key without escapes), none of them a list of parts. Its
/// prompt bound is then its length. `false` leaves the answer to serde.
pub(crate) fn plain_messages(bytes: &[u8]) -> bool {
    let mut s = Skim {
        b: bytes,
        i: 0,
        mode: Mode {
            escapes: true,
            tree: false,
            checked: false,
        },
    };
    s.plain_list().is_some() && s.peek().is_none()
}

/// A request body's top-level fields read in one pass ([`body_fields`]): each name (between
/// its quotes) and value as a range of the text, in order, and the range of a `messages` value
/// that is plain ([`plain_messages`]).
pub(crate) struct BodyFields {
    pub fields: Vec<((usize, usize), (usize, usize))>,
    pub plain_messages: Option<(usize, usize)>,
}

/// A JSON object's fields, where that reads it as serde reads it into names and raw values
/// (`body::Body::parse`): an object of fields with distinct names without escapes, every value
/// in JSON's grammar, escapes as serde checks a value it passes over (`\u` with four hex
/// digits, the two-character ones), nothing but whitespace after it. `None` leaves it to serde,
/// which also says what is wrong with it.
pub(crate) fn body_fields(bytes: &[u8]) -> Option<BodyFields> {
    let mut s = Skim {
        b: bytes,
        i: 0,
        mode: Mode {
            escapes: true,
            tree: false,
            checked: true,
        },
    };
    let mut read = BodyFields {
        fields: Vec::with_capacity(8),
        plain_messages: None,
    };
    s.object(|s, key| {
        if key.contains(&b'\\') {
            return None;
        }
        let name = s.at(key);
        if read
            .fields
            .iter()
            .any(|&((start, end), _)| &bytes[start..end] == key)
        {
            // serde refuses a field given twice, and says so.
            return None;
        }
        s.peek()?;
        let start = s.i;
        if key == b"messages" && s.plain_list().is_some() {
            read.plain_messages = Some((start, s.i));
        } else {
            s.i = start;
            s.value(DEPTH)?;
        }
        read.fields.push((name, (start, s.i)));
        Some(())
    })?;
    s.peek().is_none().then_some(read)
}

/// The fields of a Responses API event that the gateway reads, each as its JSON text (a
/// string with its quotes and escapes as written), as [`super::parse_responses_event`] takes
/// them.
#[derive(Default)]
pub(super) struct EventFields<'a> {
    pub kind: Option<&'a str>,
    pub delta: Option<&'a str>,
    pub response: Option<&'a str>,
    /// The response read as an ending ([`ending_at`]), in the same pass, where that reads it
    /// (else `None`, the response's text left to the tree).
    pub ending: Option<Ending<'a>>,
    pub message: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// A Responses API event's fields, read in one pass over its text where that reads the event
/// as a tree (`serde_json::Value`) reads it: an object with each of those fields at most once,
/// no key with an escape, no escape but the two-character ones, no number a tree reads
/// otherwise. `None` leaves the event to the tree.
pub(super) fn responses_event(data: &str) -> Option<EventFields<'_>> {
    let mut s = Skim::new(data.as_bytes(), &RESPONSES);
    let mut f = EventFields::default();
    s.object(|s, key| {
        if key.contains(&b'\\') {
            // Possibly one of the fields written otherwise.
            return None;
        }
        if key == b"response" && f.response.is_none() {
            // Read as an ending as it is passed over: the one pass an ending event's response
            // is read in. What does not read so is passed over again, as any other value.
            s.peek()?;
            let start = s.i;
            f.ending = ending_at(s, data);
            if f.ending.is_none() {
                s.i = start;
                s.value(DEPTH)?;
            }
            f.response = Some(data.get(start..s.i)?);
            return Some(());
        }
        let slot = match key {
            b"type" => &mut f.kind,
            b"delta" => &mut f.delta,
            b"response" => &mut f.response,
            b"message" => &mut f.message,
            b"error" => &mut f.error,
            _ => return s.value(DEPTH),
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(s.captured(data)?);
        Some(())
    })?;
    s.peek().is_none().then_some(f)
}

struct Skim<'a> {
    b: &'a [u8],
    i: usize,
    mode: Mode,
}

impl<'a> Skim<'a> {
    /// A reading of `b` from its start, with escapes and numbers as `shape` reads them.
    fn new(b: &'a [u8], shape: &Shape) -> Self {
        Self {
            b,
            i: 0,
            mode: Mode {
                // Escapes are passed over only where those a tree reads otherwise are refused;
                // a reply's text often has one (`\n`).
                escapes: shape.tree,
                tree: shape.tree,
                checked: false,
            },
        }
    }

    /// Where `piece`, a slice of what is read, starts and ends in it.
    fn at(&self, piece: &[u8]) -> (usize, usize) {
        let start = (piece.as_ptr() as usize).wrapping_sub(self.b.as_ptr() as usize);
        (start, start + piece.len())
    }

    /// A list of messages [`plain_messages`] calls plain, passed over; `None` when it is not
    /// one (or not JSON), having read part of it.
    fn plain_list(&mut self) -> Option<()> {
        let n = self.elements(|s| {
            let mut content = false;
            s.object(|s, key| {
                if key.contains(&b'\\') {
                    // Possibly `content` written otherwise.
                    return None;
                }
                if key == b"content" {
                    if content || s.peek()? == b'[' {
                        return None;
                    }
                    content = true;
                }
                s.value(DEPTH)
            })
        })?;
        (n > 0).then_some(())
    }

    /// The next byte after any whitespace (JSON's four), not taken.
    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(c);
            }
            self.i += 1;
        }
        None
    }

    /// The next value, passed over, as its text in `text` (what is being read).
    fn captured(&mut self, text: &'a str) -> Option<&'a str> {
        self.peek()?;
        let start = self.i;
        self.value(DEPTH)?;
        text.get(start..self.i)
    }

    /// Takes `c` after any whitespace.
    #[inline(always)]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A string without control characters, and without escapes unless they are allowed: its
    /// bytes between the quotes (escapes as written).
    ///
    /// Inlined where it is called, with what it calls: a call's set-up costs more than most
    /// keys' bytes (bench/README.md, "What was tried, and what it did").
    #[inline(always)]
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        self.i = string_from(self.b, start, self.mode)?;
        Some(&self.b[start..self.i - 1])
    }

    /// An object, each of whose keys is handed to `value`, which takes the key's value.
    fn object(&mut self, mut value: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            value(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An array, each of whose elements `element` takes; their number.
    fn elements(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<usize> {
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(0);
        }
        let mut n = 0;
        loop {
            element(self)?;
            n += 1;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(n);
                }
                _ => return None,
            }
        }
    }

    /// Any value, passed over: a string, number or word here, where it is read, an array or
    /// object by [`pass`] (most values a reply's reading passes over are short: a call's
    /// set-up costs more than they do).
    #[inline(always)]
    fn value(&mut self, depth: u8) -> Option<()> {
        self.i = value_end(self.b, blank(self.b, self.i), depth, self.mode)?;
        Some(())
    }
}

/// How strings and numbers are read.
#[derive(Clone, Copy)]
struct Mode {
    /// Strings with escapes are passed over (their text is not read).
    escapes: bool,
    /// What a tree (`serde_json::Value`) would refuse or read otherwise is refused: numbers
    /// with an exponent or more than 20 whole digits (see [`Shape::tree`]), and escapes other
    /// than the two-character ones (`\u` ones may be halves of a pair a tree checks); and a
    /// string's bytes outside ASCII are checked to be UTF-8 (a tree's strings are).
    tree: bool,
    /// Escapes are checked as serde checks those of a value it passes over: the
    /// two-character ones, and `\u` with four hex digits.
    checked: bool,
}

/// Where whitespace (JSON's four) from `i` on ends. Most places have none: a byte above the
/// space, told in one comparison, ends it at once.
#[inline(always)]
fn blank(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        if c > b' ' || !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
            break;
        }
        i += 1;
    }
    i
}

/// A string whose text starts at `i` (after its opening quote), as `mode` reads it (see
/// [`Skim::string`]; where `mode.tree`, its bytes outside ASCII must be UTF-8, as a tree's
/// strings are): where it ends, after its closing quote.
#[inline(always)]
fn string_from(b: &[u8], i: usize, mode: Mode) -> Option<usize> {
    let mut end = stop(b, i, mode.tree);
    loop {
        match *b.get(end)? {
            b'"' => return Some(end + 1),
            b'\\' if mode.escapes => {
                let plain = matches!(
                    b.get(end + 1),
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't')
                );
                let hex = || {
                    b.get(end + 1) == Some(&b'u')
                        && b.get(end + 2..end + 6)
                            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
                };
                let allowed = if mode.tree {
                    plain
                } else if mode.checked {
                    plain || hex()
                } else {
                    true
                };
                if !allowed {
                    return None;
                }
                // The escaped character (`u` of `\uXXXX`, whose digits are plain) is passed
                // over.
                end = stop(b, end + 2, mode.tree);
            }
            // Only where `mode.tree` does the search stop at such a byte: one character's
            // bytes, checked (a continuation byte first is no character).
            c @ 0x80.. => {
                let width = match c {
                    0xf0.. => 4,
                    0xe0.. => 3,
                    _ => 2,
                };
                std::str::from_utf8(b.get(end..end + width)?).ok()?;
                end = stop(b, end + width, mode.tree);
            }
            _ => return None,
        }
    }
}

/// An object's key at `i` (after any whitespace) and its colon passed over: where its value
/// starts.
#[inline(always)]
fn key(b: &[u8], i: usize, mode: Mode) -> Option<usize> {
    let i = blank(b, i);
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let i = blank(b, string_from(b, i + 1, mode)?);
    (b.get(i) == Some(&b':')).then_some(i + 1)
}

/// A number's digits at `i` (after its sign), in JSON's grammar (no leading zeros, a fraction
/// and an exponent each with digits), as `tree` reads them (see [`Shape::tree`]): where it
/// ends.
fn number_from(b: &[u8], mut i: usize, tree: bool) -> Option<usize> {
    let digits = |mut i: usize| {
        while let Some(b'0'..=b'9') = b.get(i) {
            i += 1;
        }
        i
    };
    let start = i;
    i = match b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(i + 1),
        _ => return None,
    };
    if tree && i - start > 20 {
        return None;
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        if tree {
            return None;
        }
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits(i);
        if end == i {
            return None;
        }
        i = end;
    }
    // A digit after a leading zero is no number.
    (!matches!(b.get(i), Some(b'0'..=b'9'))).then_some(i)
}

/// Any value at `i` (after any whitespace) passed over in one loop, with every place in a local
/// rather than a field written back at each step, and its open arrays and objects as bits of a
/// word: where it ends, or `None` where it is not JSON as `mode` reads it, or where it nests
/// more than `depth` values deep.
fn pass(b: &[u8], mut i: usize, depth: u8, mode: Mode) -> Option<usize> {
    // Arrays and objects that may be open at once: a value at the deepest level is not one.
    let most = u32::from(depth.min(64)).checked_sub(1)?;
    let mut open = 0u32;
    // Bit k is set when the container k levels out from the innermost open one is an object.
    let mut objects = 0u64;
    loop {
        i = blank(b, i);
        let c = *b.get(i)?;
        match c {
            b'{' | b'[' => {
                i = blank(b, i + 1);
                // `}` and `]` come two places after `{` and `[` in ASCII.
                if b.get(i) == Some(&(c + 2)) {
                    i += 1;
                } else {
                    if open == most {
                        return None;
                    }
                    open += 1;
                    objects = objects << 1 | u64::from(c == b'{');
                    if c == b'{' {
                        i = key(b, i, mode)?;
                    }
                    continue;
                }
            }
            _ => i = scalar(b, i, c, mode)?,
        }
        // After a value: a comma and the next (its key first, in an object), or the ends of
        // the containers it closes.
        loop {
            if open == 0 {
                return Some(i);
            }
            i = blank(b, i);
            let c = *b.get(i)?;
            i += 1;
            let object = objects & 1 == 1;
            if c == b',' {
                if object {
                    i = key(b, i, mode)?;
                }
                break;
            }
            if c != if object { b'}' } else { b']' } {
                return None;
            }
            open -= 1;
            objects >>= 1;
        }
    }
}

/// Any value at `i` (not whitespace), passed over as [`Skim::value`] passes it: where it ends.
#[inline(always)]
fn value_end(b: &[u8], i: usize, depth: u8, mode: Mode) -> Option<usize> {
    match *b.get(i)? {
        b'{' | b'[' => pass(b, i, depth, mode),
        c => scalar(b, i, c, mode),
    }
}

/// A string, number, `true`, `false` or `null` at `i`, whose first byte is `c`: where it ends;
/// `None` for anything else.
#[inline(always)]
fn scalar(b: &[u8], i: usize, c: u8, mode: Mode) -> Option<usize> {
    match c {
        b'"' => string_from(b, i + 1, mode),
        b'-' => number_from(b, i + 1, mode.tree),
        b'0'..=b'9' => number_from(b, i, mode.tree),
        b't' => word(b, i, b"true"),
        b'f' => word(b, i, b"false"),
        b'n' => word(b, i, b"null"),
        _ => None,
    }
}

/// `word` at `i`: where it ends.
#[inline(always)]
fn word(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    b.get(i..)?.starts_with(word).then_some(i + word.len())
}

/// The index of the first `"`, `\` or control character at or after `i` (`b.len()` if none),
/// eight bytes at a time.
#[inline(always)]
pub(crate) fn string_end(b: &[u8], i: usize) -> usize {
    stop(b, i, false)
}

/// [`string_end`], stopping at a byte outside ASCII too.
#[inline(always)]
fn ascii_string_end(b: &[u8], i: usize) -> usize {
    stop(b, i, true)
}

/// The index of the first `"`, `\` or control character at or after `i`, or byte outside
/// ASCII if `ascii` (`b.len()` if none), eight bytes at a time.
#[inline(always)]
fn stop(b: &[u8], mut i: usize, ascii: bool) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let quote = w ^ (ONES * u64::from(b'"'));
        let slash = w ^ (ONES * u64::from(b'\\'));
        // A zero byte of `quote` or `slash`, or a byte of `w` below 0x20 (or from 0x80), sets
        // its high bit; the lowest one set is the first such byte (borrows only run upwards).
        let found = (quote.wrapping_sub(ONES) & !quote
            | slash.wrapping_sub(ONES) & !slash
            | w.wrapping_sub(ONES * 0x20) & !w
            | if ascii { w } else { 0 })
            & HIGH;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !matches!(b[i], b'"' | b'\\' | 0..=0x1f) && !(ascii && b[i] >= 0x80) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::super::serde_reply_usage;
    use super::*;

    const REPLIES: [&str; 6] = [
        r#"{"choices":[{"finish_reason":"stop","index":0,"logprobs":null,"message":{"annotations":[],"content":"Simulated reply from gpt-4o-mini: Summarise the clinic's opening hours.","refusal":null,"role":"assistant"}}],"created":1796524107,"id":"chatcmpl-sim-2","model":"gpt-4o-mini","object":"chat.completion","service_tier":"default","system_fingerprint":"fp_sim","usage":{"completion_tokens":16,"completion_tokens_details":{"accepted_prediction_tokens":0,"audio_tokens":0,"reasoning_tokens":0,"rejected_prediction_tokens":0},"prompt_tokens":30,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":7},"total_tokens":46}}"#,
        "{\n  \"id\": \"c1\",\n  \"choices\": [\n    {\"index\": 0, \"message\": {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"t\", \"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": \"{}\"}}]}, \"finish_reason\": \"tool_calls\"},\n    {\"index\": 1, \"message\": {\"content\": \"Ça va — très bien 👍\"}, \"logprobs\": {\"content\": [{\"token\": \"a\", \"logprob\": -0.25e-3, \"bytes\": [97]}]}}\n  ],\n  \"usage\": {\"prompt_tokens\": 0, \"completion_tokens\": 5, \"prompt_tokens_details\": null},\n  \"error\": null\n}\n",
        r#"{"choices":[{"message":{"content":"Hi"},"finish_reason":"stop"}]}"#,
        r#"{"usage":null,"choices":[{}],"x":[[],{},[1.5,-0,true,false],{"a":{"b":[0e1,1E+2,3.25E-7]}}]}"#,
        r#"{"choices":[1],"usage":{"completion_tokens":3,"prompt_tokens":999999999999999999,"prompt_tokens_details":{"cached_tokens":null,"x":"y"}}}"#,
        r#"  {"choices":[{"message":{"content":"tab	here"}}],"usage":{"prompt_tokens":4}}  "#,
    ];

    #[test]
    fn replies_are_read_here_as_serde_reads_them() {
        for (n, reply) in REPLIES.iter().enumerate() {
            let bytes = reply.as_bytes();
            let here = reply_usage(bytes, &CHAT);
            // The tab in the last is a control character: left to serde (which refuses it).
            if n == 5 {
                assert_eq!(here, None);
                continue;
            }
            assert!(here.is_some(), "reply {n} was left to serde");
            assert_eq!(here, serde_reply_usage(bytes), "reply {n}");
        }
        let usage = reply_usage(REPLIES[0].as_bytes(), &CHAT).flatten().unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens
            ),
            (30, 16, 7)
        );
        assert_eq!(reply_usage(REPLIES[2].as_bytes(), &CHAT), Some(None));
    }

    #[test]
    fn what_is_not_sure_is_left_to_serde() {
        for body in [
            // Escapes, errors, floats and negative counts, duplicates, no choices, not JSON.
            r#"{"choices":[{"message":{"content":"a\"b"}}],"usage":{"prompt_tokens":1}}"#,
            r#"{"choices":[{}],"error":{"message":"no"}}"#,
            r#"{"choices":[{}],"usage":{"prompt_tokens":1.0}}"#,
            r#"{"choices":[{}],"usage":{"prompt_tokens":-0}}"#,
            r#"{"choices":[{}],"usage":{"prompt_tokens":1,"prompt_tokens":2}}"#,
            r#"{"choices":[{}],"choices":[{}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":1}}"#,
            r#"{"usage":{"prompt_tokens":1}}"#,
            r#"{"choices":[{}],"usage":{"prompt_tokens":1000000000000000000}}"#,
            r#"{"choices":[{}],"usage":{"prompt_tokens":01}}"#,
            r#"{"choices":[{}],"é":1}"#,
            r#"{"choices":[{}],}"#,
            r#"{"choices":[{}]} x"#,
            r#"[{"choices":[{}]}]"#,
            "",
        ] {
            assert_eq!(reply_usage(body.as_bytes(), &CHAT), None, "{body}");
        }
    }

    /// Every reply above changed in one byte (each byte replaced by each of a set of bytes
    /// that matter to JSON, or removed) and cut at every length: wherever the reading here
    /// answers, serde answers the same.
    #[test]
    fn a_changed_reply_is_never_read_otherwise_than_by_serde() {
        let checked = changed_replies(&REPLIES, |b| reply_usage(b, &CHAT), serde_reply_usage);
        // Most changes keep a reply readable here (a changed letter of a text, a digit).
        assert!(checked > 10_000, "only {checked} changed replies read here");
    }

    /// Each of `replies` changed in one byte, or cut: where `here` answers, `serde` answers the
    /// same. The number of changed replies `here` answered.
    fn changed_replies(
        replies: &[&str],
        here: impl Fn(&[u8]) -> Option<Option<Usage>>,
        serde: impl Fn(&[u8]) -> Option<Option<Usage>>,
    ) -> usize {
        let swaps = b"\"\\{}[],: \n0123456789-+.eEntfrul\x01\x7f\xc3\xffx";
        let mut checked = 0;
        let mut check = |bytes: &[u8]| {
            if let Some(here) = here(bytes) {
                assert_eq!(
                    Some(here),
                    serde(bytes),
                    "{}",
                    String::from_utf8_lossy(bytes)
                );
                checked += 1;
            }
        };
        for reply in replies {
            let bytes = reply.as_bytes();
            for at in 0..bytes.len() {
                let mut changed = bytes.to_vec();
                for &swap in swaps {
                    changed[at] = swap;
                    check(&changed);
                }
                changed.remove(at);
                check(&changed);
                check(&bytes[..at]);
            }
        }
        checked
    }

    /// Responses API replies: the simulator's, one with a function call and escapes, one
    /// without usage, one with an empty output, one with numbers a tree reads as `f64`.
    const RESPONSES_REPLIES: [&str; 5] = [
        r#"{"id":"resp_sim_1","object":"response","created_at":1796524107,"status":"completed","background":false,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":64,"model":"gpt-4o-mini","output":[{"type":"message","id":"msg_sim_2","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Simulated reply from gpt-4o-mini: Summarise the clinic's opening hours.","annotations":[],"logprobs":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":30,"input_tokens_details":{"cached_tokens":7},"output_tokens":16,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":46},"user":null,"metadata":{}}"#,
        r#"{"object":"response","status":"completed","output":[{"type":"function_call","name":"f","arguments":"{\"a\":1}"}],"usage":{"input_tokens":5,"output_tokens":3}}"#,
        r#"{"object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"Hi"}]}]}"#,
        r#"{"object":"response","status":"incomplete","output":[],"usage":{"input_tokens":9,"output_tokens":0,"input_tokens_details":null}}"#,
        r#"{"output":[{"logprob":-1.25e-5}],"temperature":1.5e300,"usage":{"input_tokens":2}}"#,
    ];

    /// A Responses API reply's usage as the gateway reads it by serde (`None`: not a reply).
    fn serde_responses_usage(bytes: &[u8]) -> Option<Option<Usage>> {
        let tree: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        super::super::parse_responses_reply(&tree).map(|r| r.usage)
    }

    #[test]
    fn responses_replies_are_read_here_as_serde_reads_them() {
        // The second has escapes in a string: passed over, as a tree reads them.
        let read: Vec<_> = RESPONSES_REPLIES
            .iter()
            .map(|r| super::super::responses_reply_usage(r.as_bytes()).map(Some))
            .collect();
        let usage = read[0].flatten().unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens
            ),
            (30, 16, 7)
        );
        assert_eq!(read[1].flatten().map(|u| u.completion_tokens), Some(3));
        // No usage: the text is to be counted, from the tree.
        assert_eq!(read[2], None);
        assert_eq!(
            reply_usage(RESPONSES_REPLIES[2].as_bytes(), &RESPONSES),
            Some(None)
        );
        assert_eq!(read[3].flatten().map(|u| u.prompt_tokens), Some(9));
        // An exponent is left to the tree, which reads 1.5e300 but not 1.5e400.
        assert_eq!(read[4], None);
        for (n, reply) in RESPONSES_REPLIES.iter().enumerate() {
            if let Some(here) = read[n] {
                assert_eq!(Some(here), serde_responses_usage(reply.as_bytes()), "{n}");
            }
        }
        // A chat completion is no response, nor a response a chat completion.
        assert_eq!(reply_usage(REPLIES[0].as_bytes(), &RESPONSES), None);
        assert_eq!(reply_usage(RESPONSES_REPLIES[0].as_bytes(), &CHAT), None);
        let checked = changed_replies(
            &RESPONSES_REPLIES,
            |b| super::super::responses_reply_usage(b).map(Some),
            serde_responses_usage,
        );
        assert!(checked > 10_000, "only {checked} changed replies read here");
    }

    /// A Responses API reply's text outside ASCII is read where it is UTF-8 and left to the
    /// tree (which refuses it) where it is not; keys with escapes or outside ASCII are left
    /// to it too.
    #[test]
    fn a_replys_text_is_checked_for_utf8_as_it_is_passed_over() {
        let reply = |text: &[u8], key: &[u8]| {
            let mut r = br#"{"output":[{"type":"message","content":[{"text":""#.to_vec();
            r.extend_from_slice(text);
            r.extend_from_slice(br#""}]}],""#);
            r.extend_from_slice(key);
            r.extend_from_slice(br#"":1,"usage":{"input_tokens":4,"output_tokens":2}}"#);
            r
        };
        let read = |bytes: &[u8]| {
            let here = super::super::responses_reply_usage(bytes);
            if here.is_some() {
                assert_eq!(here.map(Some), serde_responses_usage(bytes));
            }
            here.map(|u| u.completion_tokens)
        };
        for text in [
            "Ça va — très bien 👍".as_bytes(),
            "日本語のテキスト, long enough to be read eight bytes at a time".as_bytes(),
            "é".as_bytes(),
            b"",
        ] {
            assert_eq!(read(&reply(text, b"x")), Some(2), "{text:?}");
        }
        for text in [
            &b"\xc3("[..],
            b"abcdefgh\xff",
            b"\xed\xa0\x80 a surrogate",
            b"\xc0\xaf overlong",
            b"\x80",
            b"cut \xf0\x9f\x91",
        ] {
            let bytes = reply(text, b"x");
            assert_eq!(read(&bytes), None, "{text:?}");
            assert_eq!(serde_responses_usage(&bytes), None, "{text:?}");
        }
        // A key written with an escape, or outside ASCII, is left to the tree.
        for key in [&br"outp\u0075t"[..], br"a\nb", "clé".as_bytes()] {
            assert_eq!(read(&reply(b"hi", key)), None, "{key:?}");
        }
    }

    /// Values nested deeper than is read here are left to serde; shallower ones are read.
    #[test]
    fn deep_values_are_read_as_serde_reads_them_or_left_to_it() {
        for depth in [1, 30, 31, 32, 33, 64, 65, 200] {
            let arrays = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
            for deep in [arrays, objects] {
                let reply =
                    format!(r#"{{"choices":[{{}}],"x":{deep},"usage":{{"prompt_tokens":1}}}}"#);
                if let Some(here) = reply_usage(reply.as_bytes(), &CHAT) {
                    assert!(depth < 32, "{depth}");
                    assert_eq!(Some(here), serde_reply_usage(reply.as_bytes()), "{depth}");
                }
            }
        }
        assert!(reply_usage(br#"{"choices":[[[{"a":[1]}]]]}"#, &CHAT).is_some());
    }

    #[test]
    fn a_strings_end_is_found_in_words_and_bytes() {
        let text = b"0123456789abcdef\"";
        for start in 0..text.len() {
            assert_eq!(string_end(text, start), 16);
        }
        assert_eq!(string_end(b"abc\\d", 0), 3);
        assert_eq!(string_end(b"abcdefgh\x1fij", 0), 8);
        assert_eq!(string_end(b"\xc3\xa9\xf0\x9f\x91\x8d12345", 0), 11);
        assert_eq!(string_end(b"", 0), 0);
        // Outside ASCII, too, where asked: in words and in the bytes after them.
        assert_eq!(ascii_string_end(b"abcdefgh\xc3\xa9\"", 0), 8);
        assert_eq!(ascii_string_end(b"abcdefghi\xc3\xa9\"", 0), 9);
        assert_eq!(ascii_string_end(b"abc\xc3\xa9defgh\"", 0), 3);
        assert_eq!(ascii_string_end(b"ab\xc3", 0), 2);
        assert_eq!(ascii_string_end(b"abcdefghij\"", 0), 10);
    }
}
