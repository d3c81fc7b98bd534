//! A JSON document parsed the way `orjson.loads` parses it, for the recorder's per-message work
//! (index lifting, the `sub` claim of a JWT, the value of a `"jwt"` member).
//!
//! What orjson (3.13) accepts and yields, kept exactly: RFC 8259 only (no NaN, no trailing comma,
//! no BOM, no control character in a string, no lone surrogate escape), at most 1024 nested
//! arrays and objects, an integer that fits i64 or u64 as an integer and any other as a float, a
//! number that overflows to infinity refused, and of duplicated keys the last one wins.

use std::borrow::Cow;

use crate::json_blocks::{escaped, masks, BLOCK};

const MAX_DEPTH: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    Object(Vec<(Cow<'a, str>, Value<'a>)>),
}

static NULL: Value<'static> = Value::Null;

impl<'a> Value<'a> {
    /// `dict.get(key)` of Python: the last member of that name, null when there is none.
    pub fn get(&self, key: &str) -> &Value<'a> {
        match self {
            Value::Object(members) => members
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map_or(&NULL, |(_, v)| v),
            _ => &NULL,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_container(&self) -> bool {
        matches!(self, Value::Array(_) | Value::Object(_))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// An integer (what `isinstance(v, int)` accepts of a parsed number, bools aside).
    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some((*i).into()),
            Value::UInt(u) => Some((*u).into()),
            _ => None,
        }
    }

    /// The value holding its strings itself (none borrowed from the text it was read from).
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(b),
            Value::Int(i) => Value::Int(i),
            Value::UInt(u) => Value::UInt(u),
            Value::Float(f) => Value::Float(f),
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
            Value::Array(items) => Value::Array(items.into_iter().map(Value::into_owned).collect()),
            Value::Object(members) => Value::Object(
                members
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                    .collect(),
            ),
        }
    }

    /// The same value as serde_json holds it (objects in their order, the last of two members
    /// of one name kept, as serde_json reads them).
    pub fn to_serde(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => (*i).into(),
            Value::UInt(u) => (*u).into(),
            Value::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
            }
            Value::Str(s) => serde_json::Value::String(s.to_string()),
            Value::Array(items) => items.iter().map(Value::to_serde).collect(),
            Value::Object(members) => serde_json::Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_serde()))
                    .collect(),
            ),
        }
    }

    /// Python's truth value of the decoded object.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::UInt(u) => *u != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
        }
    }
}

/// The document `text` holds, or None where orjson.loads raises.
pub fn parse(text: &str) -> Option<Value<'_>> {
    document(Parser::new(text))
}

/// `parse`, but `-0` is the float -0.0, as serde_json reads it: the body index fields a record
/// holds were read with serde_json, and whether they are well-formed stays what it was (a
/// `sequence` of `-0` is no integer there).
pub fn parse_as_serde(text: &str) -> Option<Value<'_>> {
    let mut p = Parser::new(text);
    p.minus_zero_float = true;
    document(p)
}

fn document(mut p: Parser) -> Option<Value> {
    p.ws();
    let value = p.value()?;
    p.ws();
    (p.i == p.s.len()).then_some(value)
}

/// The members of a JSON object read one at a time, for the capture reader (record.rs
/// `parse_line`): a member's value is decoded when its field is kept, and otherwise only checked
/// as `parse` checks it (orjson's rules, depth and surrogates included) and passed over, its text
/// kept where the field is read later. A payload kept as JSON inside a JSON string has an escape
/// every few bytes, which this passes over 64 bytes at a time (json_blocks.rs).
pub(crate) struct Members<'a> {
    p: Parser<'a>,
    first: bool,
}

impl<'a> Members<'a> {
    /// The members of the object `text` holds; None when it holds no object (`other_document`
    /// tells whether it holds other JSON).
    pub(crate) fn of(text: &'a str) -> Option<Self> {
        let mut p = Parser::new(text);
        p.depth = 1; // the object's
        p.minus_zero_float = true; // see `scalar`
        p.ws();
        p.eat(b"{")?;
        Some(Members { p, first: true })
    }

    /// The next member's name (its value to be read next), Some(None) at the object's end (text
    /// after it is refused), None where the text is not JSON.
    pub(crate) fn next_key(&mut self) -> Option<Option<Cow<'a, str>>> {
        let first = std::mem::replace(&mut self.first, false);
        let p = &mut self.p;
        p.ws();
        match *p.s.get(p.i)? {
            b'}' => return self.end().then_some(None),
            b',' if !first => {
                p.i += 1;
                p.ws();
            }
            _ if first => {}
            _ => return None,
        }
        if p.s.get(p.i) != Some(&b'"') {
            return None;
        }
        let key = p.short_string()?;
        p.ws();
        p.eat(b":")?;
        p.ws();
        Some(Some(key))
    }

    /// Which of `names` the next member's name and colon are, byte for byte, when no whitespace
    /// comes before the name: that one's place in `names`, the name and colon passed over as
    /// `next_key` passes them over (the value is to be read next). None, and nothing read, for any
    /// other name. A name the recorder writes is found in a few instructions this way, where
    /// `next_key` reads any name.
    #[inline]
    pub(crate) fn next_of<K>(&mut self, names: &[(Quoted, K)]) -> Option<usize> {
        let p = &mut self.p;
        let at = match self.first {
            true => p.i,
            false if p.s.get(p.i) == Some(&b',') => p.i + 1,
            false => return None,
        };
        let rest = &p.s[at..];
        let found = names.iter().position(|(name, _)| name.starts(rest))?;
        self.first = false;
        p.i = at + names[found].0.bytes.len();
        p.ws();
        Some(found)
    }

    /// The value: a scalar decoded (1e400 refused), a container checked and given empty (only
    /// its kind is kept). `-0` is the float -0.0 here, as serde_json, which read record lines
    /// before, reads it (orjson, and `parse`, read the integer 0): a field's type, and so whether
    /// a record is damaged, stays what it was.
    pub(crate) fn scalar(&mut self) -> Option<Value<'a>> {
        match *self.p.s.get(self.p.i)? {
            b'{' => self.p.skip().map(|_| Value::Object(Vec::new())),
            b'[' => self.p.skip().map(|_| Value::Array(Vec::new())),
            _ => self.p.value(),
        }
    }

    /// The value's JSON text, checked.
    pub(crate) fn raw(&mut self) -> Option<&'a str> {
        let start = self.p.i;
        self.p.skip()?;
        Some(&self.p.text[start..self.p.i])
    }

    /// The value's JSON text, checked, and when it is a string, the string decoded (one pass).
    pub(crate) fn raw_decoded(&mut self) -> Option<(&'a str, Option<Cow<'a, str>>)> {
        if self.p.s.get(self.p.i) != Some(&b'"') {
            return self.raw().map(|raw| (raw, None));
        }
        let start = self.p.i;
        let decoded = self.p.string()?;
        Some((&self.p.text[start..self.p.i], Some(decoded)))
    }

    /// The value checked and passed over.
    pub(crate) fn skip(&mut self) -> Option<()> {
        self.p.skip()
    }

    /// Past the closing brace: only whitespace follows.
    fn end(&mut self) -> bool {
        self.p.i += 1;
        self.p.ws();
        self.p.i == self.p.s.len()
    }
}

/// A member's name in quotes and its colon as a writer writes them (`"rec":`; the name without
/// quote, backslash or control character), for `Members::next_of`. Its first eight bytes are
/// kept as one word: most such names fit, and one comparison of words costs less than a call to
/// memcmp for a few bytes.
pub(crate) struct Quoted {
    head: u64,
    mask: u64,
    bytes: &'static [u8],
}

impl Quoted {
    pub(crate) const fn new(bytes: &'static [u8]) -> Self {
        let (mut head, mut i) = (0, 0);
        while i < bytes.len() && i < 8 {
            head |= (bytes[i] as u64) << (8 * i);
            i += 1;
        }
        let mask = if i == 8 { u64::MAX } else { (1 << (8 * i)) - 1 };
        Quoted { head, mask, bytes }
    }

    /// `s.starts_with(self.bytes)`.
    #[inline]
    fn starts(&self, s: &[u8]) -> bool {
        match s.get(..8) {
            Some(word) => {
                u64::from_le_bytes(word.try_into().expect("eight bytes")) & self.mask == self.head
                    && (self.bytes.len() <= 8 || s[8..].starts_with(&self.bytes[8..]))
            }
            None => s.starts_with(self.bytes),
        }
    }
}

/// Whether `text` holds one JSON document that is no object, as the capture reader checks a line
/// that is no record: an array passed over as `Members` passes a member over, a scalar decoded.
pub(crate) fn other_document(text: &str) -> bool {
    let mut p = Parser::new(text);
    p.ws();
    let read = match p.s.get(p.i) {
        Some(b'[') => p.skip().is_some(),
        _ => p.value().is_some(),
    };
    p.ws();
    read && p.i == p.s.len()
}

/// The bytes `short_string` reads one at a time before it leaves a string to the word scan.
const SHORT: usize = 16;

/// The most room reserved ahead for a decoded string (beyond, it grows as it needs).
const MAX_RESERVED: usize = 1 << 16;

/// Where the run of plain string bytes that starts at `i` ends: the first quote, backslash or control
/// character from `i` (or the end). Eight bytes at a time: in each 64-bit word, the lowest byte whose
/// high bit the three tests set is the first such byte (a test can only flag wrongly above a byte it
/// flags rightly, through the borrow).
pub(crate) fn plain_run(s: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    while let Some(word) = s.get(i..i + 8) {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let zero = |x: u64| x.wrapping_sub(ONES) & !x;
        let found = (zero(quote) | zero(backslash) | (w.wrapping_sub(ONES * 0x20) & !w)) & HIGH;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while s
        .get(i)
        .is_some_and(|&b| b != b'"' && b != b'\\' && b >= 0x20)
    {
        i += 1;
    }
    i
}

/// Whether the escaped bytes `bits` of `block` are all escapes of one character (`\u` and unknown
/// ones are left to `Parser::escape`).
fn single_escapes(block: &[u8; BLOCK], mut bits: u64) -> bool {
    while bits != 0 {
        if !matches!(
            block[bits.trailing_zeros() as usize],
            b'/' | b'b' | b'f' | b'n' | b'r' | b't'
        ) {
            return false;
        }
        bits &= bits - 1;
    }
    true
}

/// A string's text as `Parser::pass_blocks` reads it: nothing of its own until its first escape
/// (the text is then borrowed from the document), then the bytes so far, the escapes unescaped.
struct Unescaping {
    /// Where the plain bytes not yet copied start.
    run: usize,
    bytes: Option<Vec<u8>>,
}

impl Unescaping {
    /// The bytes up to `at` (a backslash), copied.
    #[inline(always)] // an escape every few bytes: a call each cost a third of the copying
    fn plain_to(&mut self, document: &[u8], at: usize) -> &mut Vec<u8> {
        let bytes = self.bytes.get_or_insert_with(|| {
            // Room for the rest of the document at once: a payload kept as JSON text in a
            // record has an escape every ten bytes or so, and growing by doubling copied it six
            // times over.
            Vec::with_capacity((document.len() - self.run).min(MAX_RESERVED))
        });
        let run = &document[self.run..at];
        match document.get(self.run..self.run + 16) {
            // a short run (most of them: an escape comes every ten bytes or so) copied sixteen
            // bytes at once, the bytes past it then dropped: no call to copy a few bytes
            Some(sixteen) if run.len() <= 16 => {
                let len = bytes.len();
                bytes.extend_from_slice(<&[u8; 16]>::try_from(sixteen).expect("sixteen bytes"));
                bytes.truncate(len + run.len());
            }
            _ => bytes.extend_from_slice(run),
        }
        bytes
    }

    /// The escape at `at` (its backslash), which stands for `c`, the plain bytes resuming at `next`.
    fn push(&mut self, document: &[u8], at: usize, c: char, next: usize) {
        let bytes = self.plain_to(document, at);
        bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        self.run = next;
    }

    /// The escape of one character whose backslash is at `at` (`escaped`: the byte after it).
    #[inline(always)]
    fn escape_at(&mut self, document: &[u8], at: usize, escaped: u8) {
        let byte = match escaped {
            // the character is the escaped byte itself: it starts the next plain bytes
            b'"' | b'\\' | b'/' => {
                self.plain_to(document, at);
                self.run = at + 1;
                return;
            }
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            _ => b'\t', // single_escapes let no other through
        };
        self.plain_to(document, at).push(byte);
        self.run = at + 2;
    }
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    depth: usize,
    /// `-0` read as the float -0.0, as serde_json reads it (`parse_as_serde`).
    minus_zero_float: bool,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            s: text.as_bytes(),
            text,
            i: 0,
            depth: 0,
            minus_zero_float: false,
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, literal: &[u8]) -> Option<()> {
        self.s[self.i..]
            .starts_with(literal)
            .then(|| self.i += literal.len())
    }

    fn value(&mut self) -> Option<Value<'a>> {
        match *self.s.get(self.i)? {
            b'{' => self.container(b'}', true),
            b'[' => self.container(b']', false),
            b'"' => self.string().map(Value::Str),
            b't' => self.eat(b"true").map(|_| Value::Bool(true)),
            b'f' => self.eat(b"false").map(|_| Value::Bool(false)),
            b'n' => self.eat(b"null").map(|_| Value::Null),
            _ => self.number(),
        }
    }

    /// Checks the value at `i` as `value` would read it, without making it, and passes it; of
    /// its numbers only the grammar is checked (as serde_json passes over what it does not keep:
    /// the capture reader reads a record holding 1e400 in a field it does not decode).
    fn skip(&mut self) -> Option<()> {
        match *self.s.get(self.i)? {
            b'{' => self.skip_container(b'}', true),
            b'[' => self.skip_container(b']', false),
            b'"' => self.skip_string(),
            b't' => self.eat(b"true"),
            b'f' => self.eat(b"false"),
            b'n' => self.eat(b"null"),
            _ => self.number_syntax().map(drop),
        }
    }

    fn skip_container(&mut self, close: u8, object: bool) -> Option<()> {
        self.each_item(close, object, |p| {
            if object {
                p.skip_string()?;
                p.ws();
                p.eat(b":")?;
                p.ws();
            }
            p.skip()
        })
    }

    /// Reads the array or object at `i` (its depth counted): `item` reads each item, or each
    /// member from its key on (the key's quote checked).
    fn each_item(
        &mut self,
        close: u8,
        object: bool,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.s.get(self.i) == Some(&close) {
            self.i += 1;
        } else {
            loop {
                self.ws();
                if object && self.s.get(self.i) != Some(&b'"') {
                    return None;
                }
                item(self)?;
                self.ws();
                match *self.s.get(self.i)? {
                    b',' => self.i += 1,
                    c if c == close => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// The string at `i` (its opening quote): borrowed from the document when it has no escape.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let start = self.i + 1;
        // most strings other than payloads are short and plain: read before a block is
        self.i = plain_run(self.s, start);
        if self.s.get(self.i) == Some(&b'"') {
            self.i += 1;
            return Some(Cow::Borrowed(&self.text[start..self.i - 1]));
        }
        let mut text = Unescaping {
            run: start,
            bytes: None,
        };
        self.pass_blocks(Some(&mut text))?;
        let end = self.i - 1; // the closing quote
        Some(match text.bytes {
            Some(mut bytes) => {
                bytes.extend_from_slice(&self.s[text.run..end]);
                if bytes.capacity() > 2 * bytes.len() + 64 {
                    bytes.shrink_to_fit(); // reserved for a longer document than the string
                }
                // UTF-8: the document's characters, less backslashes, and escapes' characters
                Cow::Owned(String::from_utf8(bytes).ok()?)
            }
            None => Cow::Borrowed(&self.text[start..end]),
        })
    }

    /// Passes the string at `i` (its opening quote), checked as `string` checks it.
    fn skip_string(&mut self) -> Option<()> {
        self.i = plain_run(self.s, self.i + 1);
        if self.s.get(self.i) == Some(&b'"') {
            self.i += 1;
            return Some(());
        }
        self.pass_blocks(None)
    }

    /// Reads the rest of a string from `i` (outside any escape) to its closing quote, unescaping
    /// it into `text` when given. A block of json_blocks.rs at a time while its escapes are of one
    /// character other than `\u`; byte by byte through a block with a `\u`, an unknown escape or
    /// a control character.
    fn pass_blocks(&mut self, mut text: Option<&mut Unescaping>) -> Option<()> {
        let mut carry = 0; // 1: the block's first byte is escaped by the backslash before it
        loop {
            let start = self.i;
            let padded;
            let block: &[u8; BLOCK] = match self.s.get(start..start + BLOCK) {
                Some(block) => block.try_into().expect("a block"),
                None => {
                    // the text's last bytes, then spaces: no string ends in them, and one that
                    // ends the text escaping a space goes to the byte reader, which refuses it
                    let rest = &self.s[start..];
                    let mut tail = [b' '; BLOCK];
                    tail[..rest.len()].copy_from_slice(rest);
                    padded = tail;
                    &padded
                }
            };
            let escaped_first = carry;
            let masks = masks(block);
            let escaped = escaped(masks.backslashes, &mut carry);
            let ends = masks.quotes & !escaped;
            let before = (ends & ends.wrapping_neg()).wrapping_sub(1); // all bits when no end
            let other_escapes = escaped & !(masks.quotes | masks.backslashes) & before;
            if masks.controls & before == 0 && single_escapes(block, other_escapes) {
                if let Some(text) = text.as_deref_mut() {
                    // the escape that reaches into the block, then those that start in it (one
                    // on its last byte is the next block's: its escaped byte is checked there)
                    if escaped_first == 1 {
                        text.escape_at(self.s, start - 1, block[0]);
                    }
                    let mut starts = masks.backslashes & !escaped & before & !(1 << (BLOCK - 1));
                    while starts != 0 {
                        let at = starts.trailing_zeros() as usize;
                        text.escape_at(self.s, start + at, block[at + 1]);
                        starts &= starts - 1;
                    }
                }
                if ends != 0 {
                    self.i = start + ends.trailing_zeros() as usize + 1;
                    return Some(());
                }
                if start + BLOCK >= self.s.len() {
                    return None; // the text ends inside the string
                }
                self.i = start + BLOCK;
                continue;
            }
            // from the escape that reaches into the block, if one does, to the block's end or past
            self.i = start - escaped_first as usize;
            carry = 0;
            while self.i < start + BLOCK {
                self.i = plain_run(self.s, self.i);
                match *self.s.get(self.i)? {
                    b'"' => {
                        self.i += 1;
                        return Some(());
                    }
                    b'\\' => match text.as_deref_mut() {
                        Some(text) => {
                            let at = self.i;
                            let c = self.escape()?;
                            text.push(self.s, at, c, self.i);
                        }
                        None => {
                            self.escape()?;
                        }
                    },
                    _ => return None, // a control character
                }
            }
        }
    }

    fn container(&mut self, close: u8, object: bool) -> Option<Value<'a>> {
        let (mut items, mut members) = (Vec::new(), Vec::new());
        self.each_item(close, object, |p| {
            if object {
                let key = p.string()?;
                p.ws();
                p.eat(b":")?;
                p.ws();
                members.push((key, p.value()?));
            } else {
                items.push(p.value()?);
            }
            Some(())
        })?;
        Some(if object {
            Value::Object(members)
        } else {
            Value::Array(items)
        })
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Option<Value<'a>> {
        let start = self.i;
        let float = self.number_syntax()?;
        let literal = &self.text[start..self.i];
        if !float && self.minus_zero_float && literal == "-0" {
            return Some(Value::Float(-0.0));
        }
        if !float {
            if let Ok(i) = literal.parse::<i64>() {
                return Some(Value::Int(i));
            }
            if let Ok(u) = literal.parse::<u64>() {
                return Some(Value::UInt(u));
            }
        }
        let f: f64 = literal.parse().ok()?;
        f.is_finite().then_some(Value::Float(f))
    }

    /// Passes a number's text, checked against JSON's grammar only (its value is not made: a
    /// number past a double is refused by `number`, not here). Whether it has a fraction or an
    /// exponent.
    fn number_syntax(&mut self) -> Option<bool> {
        if self.s[self.i] == b'-' {
            self.i += 1;
        }
        let int_start = self.i;
        let int_digits = self.digits();
        if int_digits == 0 || (int_digits > 1 && self.s[int_start] == b'0') {
            return None;
        }
        let mut float = false;
        if self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
            float = true;
        }
        if let Some(b'e' | b'E') = self.s.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.s.get(self.i) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
            float = true;
        }
        Some(float)
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.text.get(self.i..self.i + 4)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(digits, 16).ok()
    }

    /// `string` for the names of a record's members: a few plain bytes, read one at a time (the
    /// word scan's set-up costs more than such a name); anything longer or escaped as `string`.
    fn short_string(&mut self) -> Option<Cow<'a, str>> {
        let start = self.i + 1;
        for (at, &b) in self.s.iter().enumerate().skip(start).take(SHORT) {
            match b {
                b'"' => {
                    self.i = at + 1;
                    return Some(Cow::Borrowed(&self.text[start..at]));
                }
                b'\\' | 0..=0x1f => break,
                _ => {}
            }
        }
        self.string()
    }

    /// The character the escape at `i` (its backslash) stands for, the escape passed; None for an
    /// unknown escape or a surrogate that is not one of a pair.
    fn escape(&mut self) -> Option<char> {
        let escape = *self.s.get(self.i + 1)?;
        self.i += 2;
        Some(match escape {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                let code = match unit {
                    0xD800..=0xDBFF => {
                        self.eat(b"\\u")?;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => unit,
                };
                char::from_u32(code)?
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_orjson_reads_them() {
        assert_eq!(parse("-0"), Some(Value::Int(0)));
        assert_eq!(parse("18446744073709551615"), Some(Value::UInt(u64::MAX)));
        assert_eq!(
            parse("18446744073709551616"),
            Some(Value::Float(1.8446744073709552e19))
        );
        assert_eq!(parse("1E2"), Some(Value::Float(100.0)));
        assert_eq!(parse("1e-400"), Some(Value::Float(0.0)));
        for bad in [
            "1e400",
            "01",
            "1.",
            ".5",
            "-",
            "NaN",
            "[1,]",
            "{\"a\":1,}",
            "\u{feff}{}",
            "{} x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn strings_and_surrogates() {
        assert_eq!(
            parse(r#""\ud83d\ude00\u00e9\/""#),
            Some(Value::Str("😀é/".into()))
        );
        for bad in [
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud83d\u0041""#,
            "\"a\tb\"",
            r#""\x""#,
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn short_strings_read_as_strings_do() {
        let chars = [
            'a', '"', '\\', 'u', '0', '\u{1f}', '\0', 'é', '😀', '/', ' ',
        ];
        for len in 0..=SHORT + 2 {
            for at in 0..len {
                for c in chars {
                    for tail in ["\"", "\\\"\"", "\\u0041\"", ""] {
                        let mut text: String = "\"".to_owned() + &"k".repeat(len);
                        text.replace_range(1 + at..2 + at, &c.to_string());
                        text.push_str(tail);
                        text.push_str(":1");
                        let (mut short, mut long) = (Parser::new(&text), Parser::new(&text));
                        assert_eq!(short.short_string(), long.string(), "{text:?}");
                        assert_eq!(short.i, long.i, "{text:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn plain_runs_end_at_the_first_quote_backslash_or_control_character() {
        let naive = |s: &[u8], i: usize| {
            (i..s.len())
                .find(|&j| matches!(s[j], b'"' | b'\\' | 0..=0x1f))
                .unwrap_or(s.len())
        };
        // every byte value at every place around two words, alone and behind another special byte
        for len in 0..20 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = byte;
                    for start in 0..=at {
                        assert_eq!(plain_run(&s, start), naive(&s, start), "{s:?} from {start}");
                    }
                    for later in at + 1..len {
                        for special in [b'"', b'\\', 0x1f, 0] {
                            s[later] = special;
                            assert_eq!(plain_run(&s, 0), naive(&s, 0), "{s:?}");
                            s[later] = b'a';
                        }
                    }
                }
            }
        }
        let text = "é€😀\u{7f}\u{80}ÿ".repeat(3) + "\"";
        assert_eq!(plain_run(text.as_bytes(), 0), text.len() - 1);
    }

    /// `skip_string` and `string` against a byte-at-a-time reader of the same rules: where they
    /// stop, or that they fail, and the text read, for escapes of every kind at every place around
    /// three words and two blocks' ends, and random strings.
    #[test]
    fn strings_end_and_read_as_a_byte_reader_reads_them() {
        fn by_bytes(text: &str) -> Option<(usize, String)> {
            let mut p = Parser::new(text);
            p.i = 1;
            let mut read = String::new();
            loop {
                match *p.s.get(p.i)? {
                    b'"' => return Some((p.i + 1, read)),
                    b'\\' => read.push(p.escape()?),
                    0..=0x1f => return None,
                    _ => {
                        let c = text[p.i..].chars().next().expect("a character");
                        read.push(c);
                        p.i += c.len_utf8();
                    }
                }
            }
        }
        let check = |text: &str| {
            let expected = by_bytes(text);
            let mut p = Parser::new(text);
            let skipped = p.skip_string().map(|()| p.i);
            assert_eq!(skipped, expected.as_ref().map(|(end, _)| *end), "{text:?}");
            let mut p = Parser::new(text);
            let read = p.string().map(|read| (p.i, read.into_owned()));
            assert_eq!(read, expected, "{text:?}");
        };
        let pieces = [
            "\\\"",
            "\\\\",
            "\\/",
            "\\n",
            "\\t",
            "\\b",
            "\\f",
            "\\r",
            "\\u0041",
            "\\ud83d\\ude00",
            "\\ud83d",
            "\\ude00",
            "\\x",
            "\\",
            "\"",
            "\u{1}",
            "\u{1f}",
            "é",
            "😀",
            "\u{7f}",
            "\\u00",
            "\\u12G4",
        ];
        // every piece at every place in short strings and around the ends of the first two blocks
        let blocks = (BLOCK - 8..BLOCK + 8).chain(2 * BLOCK - 8..2 * BLOCK + 8);
        for len in (0..26).chain(blocks) {
            for at in 0..=len {
                for piece in pieces {
                    for later in [None, Some("\""), Some("\\\""), Some("\u{1}")] {
                        let mut text =
                            format!("\"{}{piece}{}", "a".repeat(at), "b".repeat(len - at));
                        if let Some(later) = later {
                            text.push_str(later);
                        }
                        check(&text);
                        text.push('"');
                        check(&text);
                    }
                }
            }
        }
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..200_000 {
            let mut text = String::from("\"");
            for _ in 0..(state % 60) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push_str(pieces[(state % pieces.len() as u64) as usize]);
                text.push_str(&"abc"[..(state >> 32) as usize % 4]);
            }
            check(&text);
        }
    }

    #[test]
    fn depth_limit_and_duplicates() {
        assert!(parse(&format!("{}{}", "[".repeat(1024), "]".repeat(1024))).is_some());
        assert!(parse(&format!("{}{}", "[".repeat(1025), "]".repeat(1025))).is_none());
        let doc = parse(r#"{"a":1,"a":2}"#).unwrap();
        assert_eq!(doc.get("a"), &Value::Int(2));
        assert_eq!(doc.get("b"), &Value::Null);
    }
}
