//! A JSON document parsed the way `orjson.loads` parses it, for the recorder's per-message work
//! (index lifting, the `sub` claim of a JWT, the value of a `"jwt"` member).
//!
//! What orjson (3.13) accepts and yields, kept exactly: RFC 8259 only (no NaN, no trailing comma,
//! no BOM, no control character in a string, no lone surrogate escape), at most 1024 nested
//! arrays and objects, an integer that fits i64 or u64 as an integer and any other as a float, a
//! number that overflows to infinity refused, and of duplicated keys the last one wins.

use std::borrow::Cow;

const MAX_DEPTH: usize = 1024;

#[derive(Debug, PartialEq)]
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
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        i: 0,
        depth: 0,
    };
    p.ws();
    let value = p.value()?;
    p.ws();
    (p.i == p.s.len()).then_some(value)
}

/// The most room reserved ahead for a decoded string (beyond, it grows as it needs).
const MAX_RESERVED: usize = 1 << 16;

/// Where the run of plain string bytes that starts at `i` ends: the first quote, backslash or control
/// character from `i` (or the end). Eight bytes at a time: in each 64-bit word, the lowest byte whose
/// high bit the three tests set is the first such byte (a test can only flag wrongly above a byte it
/// flags rightly, through the borrow).
fn plain_run(s: &[u8], mut i: usize) -> usize {
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

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
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

    fn container(&mut self, close: u8, object: bool) -> Option<Value<'a>> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        let mut items = Vec::new();
        let mut members = Vec::new();
        self.ws();
        if self.s.get(self.i) == Some(&close) {
            self.i += 1;
        } else {
            loop {
                self.ws();
                if object {
                    if self.s.get(self.i) != Some(&b'"') {
                        return None;
                    }
                    let key = self.string()?;
                    self.ws();
                    self.eat(b":")?;
                    self.ws();
                    members.push((key, self.value()?));
                } else {
                    items.push(self.value()?);
                }
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
        let literal = &self.text[start..self.i];
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

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.text.get(self.i..self.i + 4)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(digits, 16).ok()
    }

    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.i += 1; // the opening quote
        let start = self.i;
        let mut owned: Option<String> = None;
        loop {
            let run = self.i;
            self.i = plain_run(self.s, self.i);
            if let Some(out) = owned.as_mut() {
                out.push_str(&self.text[run..self.i]);
            }
            match *self.s.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(match owned {
                        Some(mut out) => {
                            if out.capacity() > 2 * out.len() + 64 {
                                out.shrink_to_fit(); // reserved for a longer document than the string
                            }
                            Cow::Owned(out)
                        }
                        None => Cow::Borrowed(&self.text[start..self.i - 1]),
                    });
                }
                b'\\' => {
                    let out = owned.get_or_insert_with(|| {
                        // Room for the rest of the document at once: a payload kept as JSON text in
                        // a record has an escape every ten bytes or so, and growing by doubling
                        // copied it six times over.
                        let mut out =
                            String::with_capacity((self.s.len() - start).min(MAX_RESERVED));
                        out.push_str(&self.text[start..self.i]);
                        out
                    });
                    self.i += 1;
                    let escape = *self.s.get(self.i)?;
                    self.i += 1;
                    let c = match escape {
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
                    };
                    out.push(c);
                }
                _ => return None, // a control character
            }
        }
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

    #[test]
    fn depth_limit_and_duplicates() {
        assert!(parse(&format!("{}{}", "[".repeat(1024), "]".repeat(1024))).is_some());
        assert!(parse(&format!("{}{}", "[".repeat(1025), "]".repeat(1025))).is_none());
        let doc = parse(r#"{"a":1,"a":2}"#).unwrap();
        assert_eq!(doc.get("a"), &Value::Int(2));
        assert_eq!(doc.get("b"), &Value::Null);
    }
}
