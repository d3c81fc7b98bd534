//! The record projection: one capture line parsed into the typed fields the engine and the
//! analyzers read, borrowing strings from the line buffer where they have no escapes. Fields that
//! are only type-checked or rarely read (`text`, `b64`, `request_headers`, the body index arrays)
//! stay raw JSON slices, decoded on demand: a payload no rule needs is never materialised.
//!
//! A line is read member by member by json_value.rs's `Members`, which accepts exactly what orjson
//! accepts (the Python reader's parser): the same number handling (integers beyond 64 bits become
//! floats, 1e400 is an error), the same depth limit of 1024 nested arrays/objects, lone surrogate
//! escapes refused. The members not kept decoded are checked and passed over without being made
//! (serde_json's way, one call per escape, was a third of the reading). Other documents
//! (`parse_json`) go through serde_json, its depth limit (128) lifted to orjson's.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::LazyLock;

use memchr::memmem;

use serde::de::{Deserialize, DeserializeSeed};

use crate::json_value::{self, Members, Quoted};
use crate::pyrepr::py_float;

/// orjson's nesting limit: 1024 levels parse, 1025 do not.
const MAX_DEPTH: usize = 1024;
/// Largest |t| a reader accepts (analysis.capture.MAX_TIME).
pub const MAX_TIME: f64 = 9e9;

/// The JSON type of a field, as the Python reader tells them apart (`value.__class__`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JType {
    Absent,
    Null,
    Bool,
    Int,
    Float,
    Str,
    List,
    Dict,
}

/// A field's value; containers are only known by their type.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Val<'a> {
    #[default]
    Absent,
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(Cow<'a, str>),
    List,
    Dict,
}

/// An optional string as a row's value: None is Python's None.
impl From<Option<&str>> for Val<'static> {
    fn from(value: Option<&str>) -> Self {
        value.map_or(Val::Null, |s| Val::Str(Cow::Owned(s.to_owned())))
    }
}

/// An optional integer as a row's value: None is Python's None.
impl From<Option<i128>> for Val<'static> {
    fn from(value: Option<i128>) -> Self {
        value.map_or(Val::Null, Val::Int)
    }
}

impl<'a> Val<'a> {
    pub fn jtype(&self) -> JType {
        match self {
            Val::Absent => JType::Absent,
            Val::Null => JType::Null,
            Val::Bool(_) => JType::Bool,
            Val::Int(_) => JType::Int,
            Val::Float(_) => JType::Float,
            Val::Str(_) => JType::Str,
            Val::List => JType::List,
            Val::Dict => JType::Dict,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i128> {
        match self {
            Val::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn is_present(&self) -> bool {
        !matches!(self, Val::Absent)
    }

    /// Python's truthiness of the value (`not rec.get(key)`), for scalars.
    pub fn truthy(&self) -> bool {
        match self {
            Val::Absent | Val::Null => false,
            Val::Bool(b) => *b,
            Val::Int(i) => *i != 0,
            Val::Float(f) => *f != 0.0,
            Val::Str(s) => !s.is_empty(),
            Val::List | Val::Dict => true, // only `truncated` asks this of a container: see Raw::truthy
        }
    }

    /// The number as a float, for comparing times (`t.__class__ is int or float`).
    pub fn number(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The number, NaN when the value is not one.
    pub fn num(&self) -> f64 {
        self.number().unwrap_or(f64::NAN)
    }

    /// `self - other` of two record times as Python computes it: an int minus an int stays an
    /// int (exact, whatever its size), anything else is a float.
    pub fn minus(&self, other: &Val) -> Val<'static> {
        match (self, other) {
            (Val::Int(a), Val::Int(b)) => Val::Int(a - b),
            _ => Val::Float(self.num() - other.num()),
        }
    }

    /// `f"{value}"` of a number, as Python prints it.
    pub fn py_number(&self) -> String {
        match self {
            Val::Int(i) => i.to_string(),
            Val::Float(f) => py_float(*f),
            _ => String::new(),
        }
    }

    pub fn into_owned(self) -> Val<'static> {
        match self {
            Val::Str(s) => Val::Str(Cow::Owned(s.into_owned())),
            Val::Absent => Val::Absent,
            Val::Null => Val::Null,
            Val::Bool(b) => Val::Bool(b),
            Val::Int(i) => Val::Int(i),
            Val::Float(f) => Val::Float(f),
            Val::List => Val::List,
            Val::Dict => Val::Dict,
        }
    }
}

/// A JSON value's text decoded as a string (None when it is not one, or not JSON).
fn json_string(text: &str) -> Option<String> {
    match json_value::parse(text)? {
        json_value::Value::Str(decoded) => Some(decoded.into_owned()),
        _ => None,
    }
}

/// A field kept as its JSON text; its type is told from the first character.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw<'a>(pub Option<&'a str>);

impl<'a> Raw<'a> {
    pub fn jtype(&self) -> JType {
        let Some(text) = self.0 else {
            return JType::Absent;
        };
        match text.as_bytes()[0] {
            b'"' => JType::Str,
            b'n' => JType::Null,
            b't' | b'f' => JType::Bool,
            b'[' => JType::List,
            b'{' => JType::Dict,
            _ if text.contains(['.', 'e', 'E']) || serde_json::from_str::<i128>(text).is_err() => {
                JType::Float
            }
            _ => JType::Int,
        }
    }

    pub fn is_present(&self) -> bool {
        self.0.is_some()
    }

    /// The decoded string, when the field is one. Decoded by json_value, as serde_json decodes
    /// it: a payload kept in a record is JSON inside a JSON string, an escape every few bytes, and
    /// serde_json's one call per escape made a third of the decoding.
    pub fn string(&self) -> Option<String> {
        self.0.and_then(json_string)
    }

    /// Python's truthiness of the decoded value (`rec.get("truncated")`).
    pub fn truthy(&self) -> bool {
        let Some(text) = self.0 else { return false };
        match self.jtype() {
            JType::Absent | JType::Null => false,
            JType::Bool => text == "true",
            JType::Str => text.len() > 2,
            JType::Int | JType::Float => text.parse::<f64>().is_ok_and(|x| x != 0.0),
            JType::List | JType::Dict => !text[1..text.len() - 1]
                .trim_matches([' ', '\t', '\n', '\r'])
                .is_empty(),
        }
    }
}

/// The fields of one record the engine and the analyzers read.
#[derive(Debug, Clone, Default)]
pub struct Record<'a> {
    pub rec: Val<'a>,
    pub t: Val<'a>,
    pub conn: Val<'a>,
    pub n: Val<'a>,
    pub dir: Val<'a>,
    pub op: Val<'a>,
    pub size: Val<'a>,
    pub kind: Val<'a>,
    pub type_: Val<'a>,
    pub id: Val<'a>,
    pub req_id: Val<'a>,
    pub subscription_id: Val<'a>,
    /// A msg record's lifted `code` (any JSON scalar), a close record's close code.
    pub code: Val<'a>,
    pub url: Val<'a>,
    pub client: Val<'a>,
    pub status: Val<'a>,
    pub error: Val<'a>,
    pub reason: Val<'a>,
    pub by: Val<'a>,
    pub recorder_stopped: Val<'a>,
    pub count: Val<'a>,
    pub implicit: Val<'a>,
    pub utf8: Val<'a>,
    pub text: Raw<'a>,
    pub b64: Raw<'a>,
    pub truncated: Raw<'a>,
    pub request_headers: Raw<'a>,
    // The body index fields (docs/capture-format.md), as recorded; checked and re-lifted by the
    // analyzers that read them (lift.rs's `lift_body`, through frame::lifted).
    pub dialog_id: Raw<'a>,
    pub conversation_id: Raw<'a>,
    pub sequence: Raw<'a>,
    pub event: Raw<'a>,
    pub events: Raw<'a>,
    /// A msg record's `text` as the frames table holds it (decoded, and redacted when the table
    /// leaves redacted), made ahead by the thread that parsed the line when the reader was asked
    /// to (`CaptureFile::texts`). Only `table_text` reads it: the analyzers read `text` itself.
    pub table_text: Option<String>,
}

impl Record<'_> {
    /// The payload for the frames table: made ahead, or `text` decoded (None when absent or not
    /// a string).
    pub fn table_text(&self) -> Option<Cow<'_, str>> {
        match &self.table_text {
            Some(text) => Some(Cow::Borrowed(text)),
            None => self.text.string().map(Cow::Owned),
        }
    }
}

/// Field names the projection keeps; anything else is skipped unparsed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Rec,
    T,
    Conn,
    N,
    Dir,
    Op,
    Size,
    Kind,
    Type,
    Id,
    ReqId,
    SubscriptionId,
    Code,
    Url,
    Client,
    Status,
    Error,
    Reason,
    By,
    RecorderStopped,
    Count,
    Implicit,
    Utf8,
    Text,
    B64,
    Truncated,
    RequestHeaders,
    DialogId,
    ConversationId,
    Sequence,
    Event,
    Events,
    Other,
}

impl Key {
    fn of(name: &str) -> Key {
        match name {
            "rec" => Key::Rec,
            "t" => Key::T,
            "conn" => Key::Conn,
            "n" => Key::N,
            "dir" => Key::Dir,
            "op" => Key::Op,
            "size" => Key::Size,
            "kind" => Key::Kind,
            "type" => Key::Type,
            "id" => Key::Id,
            "reqId" => Key::ReqId,
            "subscriptionId" => Key::SubscriptionId,
            "code" => Key::Code,
            "url" => Key::Url,
            "client" => Key::Client,
            "status" => Key::Status,
            "error" => Key::Error,
            "reason" => Key::Reason,
            "by" => Key::By,
            "recorder_stopped" => Key::RecorderStopped,
            "count" => Key::Count,
            "implicit" => Key::Implicit,
            "utf8" => Key::Utf8,
            "text" => Key::Text,
            "b64" => Key::B64,
            "truncated" => Key::Truncated,
            "request_headers" => Key::RequestHeaders,
            "dialogId" => Key::DialogId,
            "conversationId" => Key::ConversationId,
            "sequence" => Key::Sequence,
            "event" => Key::Event,
            "events" => Key::Events,
            _ => Key::Other,
        }
    }
}

/// The members of a msg record's line in the order the recorder writes them (message.rs, then
/// lift.rs), each name as it is written: `fill` looks for the next member among those after the
/// last one found before it reads a name (a record from elsewhere is read as well, by `next_key`).
const WRITTEN: [(Quoted, Key); 22] = [
    (Quoted::new(b"\"rec\":"), Key::Rec),
    (Quoted::new(b"\"t\":"), Key::T),
    (Quoted::new(b"\"conn\":"), Key::Conn),
    (Quoted::new(b"\"n\":"), Key::N),
    (Quoted::new(b"\"dir\":"), Key::Dir),
    (Quoted::new(b"\"op\":"), Key::Op),
    (Quoted::new(b"\"size\":"), Key::Size),
    (Quoted::new(b"\"utf8\":"), Key::Utf8),
    (Quoted::new(b"\"truncated\":"), Key::Truncated),
    (Quoted::new(b"\"text\":"), Key::Text),
    (Quoted::new(b"\"b64\":"), Key::B64),
    (Quoted::new(b"\"kind\":"), Key::Kind),
    (Quoted::new(b"\"type\":"), Key::Type),
    (Quoted::new(b"\"id\":"), Key::Id),
    (Quoted::new(b"\"reqId\":"), Key::ReqId),
    (Quoted::new(b"\"code\":"), Key::Code),
    (Quoted::new(b"\"subscriptionId\":"), Key::SubscriptionId),
    (Quoted::new(b"\"events\":"), Key::Events),
    (Quoted::new(b"\"dialogId\":"), Key::DialogId),
    (Quoted::new(b"\"conversationId\":"), Key::ConversationId),
    (Quoted::new(b"\"sequence\":"), Key::Sequence),
    (Quoted::new(b"\"event\":"), Key::Event),
];

/// Fills a record from the members of its line, in place (a record is large: moving it per line
/// would cost more than parsing). None where the line is not JSON.
/// With `decode_text`, a string `text` is decoded as it is read, into `table_text`.
fn fill<'a>(members: &mut Members<'a>, record: &mut Record<'a>, decode_text: bool) -> Option<()> {
    let r = record;
    let mut written = 0; // where in WRITTEN the next member's name is looked for
    loop {
        let m = &mut *members;
        let key = match m.next_of(&WRITTEN[written..]) {
            Some(at) => {
                written += at + 1;
                WRITTEN[written - 1].1
            }
            None => {
                let Some(name) = m.next_key()? else { break };
                let key = Key::of(&name);
                if let Some(at) = WRITTEN.iter().position(|(_, k)| *k == key) {
                    written = at + 1;
                }
                key
            }
        };
        match key {
            Key::Rec => r.rec = val(m)?,
            Key::T => r.t = val(m)?,
            Key::Conn => r.conn = val(m)?,
            Key::N => r.n = val(m)?,
            Key::Dir => r.dir = val(m)?,
            Key::Op => r.op = val(m)?,
            Key::Size => r.size = val(m)?,
            Key::Kind => r.kind = val(m)?,
            Key::Type => r.type_ = val(m)?,
            Key::Id => r.id = val(m)?,
            Key::ReqId => r.req_id = val(m)?,
            Key::SubscriptionId => r.subscription_id = val(m)?,
            Key::Code => r.code = val(m)?,
            Key::Url => r.url = val(m)?,
            Key::Client => r.client = val(m)?,
            Key::Status => r.status = val(m)?,
            Key::Error => r.error = val(m)?,
            Key::Reason => r.reason = val(m)?,
            Key::By => r.by = val(m)?,
            Key::RecorderStopped => r.recorder_stopped = val(m)?,
            Key::Count => r.count = val(m)?,
            Key::Implicit => r.implicit = val(m)?,
            Key::Utf8 => r.utf8 = val(m)?,
            Key::Text if decode_text => {
                let (raw, decoded) = m.raw_decoded()?;
                r.text = Raw(Some(raw));
                r.table_text = decoded.map(Cow::into_owned);
            }
            Key::Text => r.text = Raw(Some(m.raw()?)),
            Key::B64 => r.b64 = Raw(Some(m.raw()?)),
            Key::Truncated => r.truncated = Raw(Some(m.raw()?)),
            Key::RequestHeaders => r.request_headers = Raw(Some(m.raw()?)),
            Key::DialogId => r.dialog_id = Raw(Some(m.raw()?)),
            Key::ConversationId => r.conversation_id = Raw(Some(m.raw()?)),
            Key::Sequence => r.sequence = Raw(Some(m.raw()?)),
            Key::Event => r.event = Raw(Some(m.raw()?)),
            Key::Events => r.events = Raw(Some(m.raw()?)),
            Key::Other => m.skip()?,
        }
    }
    Some(())
}

/// A member's value as a field holds it (containers by their kind only).
fn val<'a>(members: &mut Members<'a>) -> Option<Val<'a>> {
    Some(match members.scalar()? {
        json_value::Value::Null => Val::Null,
        json_value::Value::Bool(b) => Val::Bool(b),
        json_value::Value::Int(i) => Val::Int(i.into()),
        json_value::Value::UInt(u) => Val::Int(u.into()),
        json_value::Value::Float(f) => Val::Float(f),
        json_value::Value::Str(s) => Val::Str(s),
        json_value::Value::Array(_) => Val::List,
        json_value::Value::Object(_) => Val::Dict,
    })
}

/// What one line holds, as the Python reader tells it.
pub enum Parsed {
    Record,
    /// Valid JSON, but not an object with a string `rec`.
    NotRecord,
    InvalidJson,
}

/// An integral JSON number (beyond i64 too, up to u64), else None: what `isinstance(v, int)` accepts
/// of a parsed number.
pub fn json_int(value: &serde_json::Value) -> Option<i128> {
    let n = value.as_number()?;
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Parses one line (its newline included or not) into `record` (a fresh one), as orjson accepts
/// JSON (json_value.rs): the fields kept decoded, the raw ones and the others only checked.
pub fn parse_line<'a>(line: &'a [u8], record: &mut Record<'a>) -> Parsed {
    parse_line_with(line, record, false)
}

/// `parse_line`, a msg record's payload decoded for the frames table as it is read (`table_text`:
/// the same string `Raw::string` gives, without a second pass over it) with `decode_text`.
pub fn parse_line_with<'a>(line: &'a [u8], record: &mut Record<'a>, decode_text: bool) -> Parsed {
    let Ok(text) = std::str::from_utf8(line) else {
        return Parsed::InvalidJson;
    };
    let Some(mut members) = Members::of(text) else {
        return match json_value::other_document(text) {
            true => Parsed::NotRecord,
            false => Parsed::InvalidJson,
        };
    };
    match fill(&mut members, record, decode_text) {
        Some(()) if matches!(record.rec, Val::Str(_)) => Parsed::Record,
        Some(()) => Parsed::NotRecord,
        None => Parsed::InvalidJson,
    }
}

/// Parses a JSON document as orjson would accept it, or None.
pub fn parse_json<'a, T: Deserialize<'a>>(text: &'a [u8]) -> Option<T> {
    parse_json_seed(text, PhantomData::<T>)
}

/// `parse_json` with a seed. serde_json checks only the values it decodes: UTF-8, lone surrogate
/// escapes and orjson's depth limit are checked here for the whole document (the fields skipped or
/// kept raw included).
fn parse_json_seed<'a, S: DeserializeSeed<'a>>(text: &'a [u8], seed: S) -> Option<S::Value> {
    let text = std::str::from_utf8(text).ok()?;
    let bytes = text.as_bytes();
    let many_brackets = || bytes.iter().filter(|&&b| b == b'[' || b == b'{').count() > MAX_DEPTH;
    if bytes.len() > MAX_DEPTH && many_brackets() && !depth_within(bytes, MAX_DEPTH) {
        return None;
    }
    if has_surrogate_escape(bytes) && unbounded(text, PhantomData::<serde_json::Value>).is_none() {
        return None;
    }
    unbounded(text, seed)
}

/// `text` deserialized without serde_json's depth limit (the depth was measured), with nothing but
/// whitespace after the document.
fn unbounded<'a, S: DeserializeSeed<'a>>(text: &'a str, seed: S) -> Option<S::Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let value = seed.deserialize(&mut de).ok()?;
    de.end().ok().map(|_| value)
}

/// Whether the text may hold a `\\uD800`-`\\uDFFF` escape (a surrogate, lone or paired).
fn has_surrogate_escape(text: &[u8]) -> bool {
    static ESCAPE: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\\u"));
    ESCAPE.find_iter(text).any(|at| {
        matches!(text.get(at + 2), Some(b'd' | b'D'))
            && matches!(
                text.get(at + 3),
                Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
            )
    })
}

/// Whether arrays and objects nest at most `limit` deep (brackets inside strings not counted).
fn depth_within(text: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in text {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// The JSON types a field may hold, a bit each (a field's check is one AND, not a search).
#[derive(Clone, Copy)]
struct Types(u16);

const _: () = assert!((JType::Dict as u16) < 16, "a bit for each JSON type");

impl Types {
    const fn of(types: &[JType]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < types.len() {
            bits |= 1 << types[i] as u16;
            i += 1;
        }
        Types(bits)
    }

    fn allow(self, jtype: JType) -> bool {
        self.0 & (1 << jtype as u16) != 0
    }
}

const ID: Types = Types::of(&[JType::Str, JType::Null, JType::Absent]);
const STR: Types = Types::of(&[JType::Str]);
const MAYBE_STR: Types = Types::of(&[JType::Str, JType::Absent]);
const MAYBE_INT: Types = Types::of(&[JType::Int, JType::Absent]);
const OPT_INT: Types = Types::of(&[JType::Int, JType::Null, JType::Absent]);
const OPT_LIST: Types = Types::of(&[JType::List, JType::Null, JType::Absent]);
const SCALAR: Types = Types::of(&[
    JType::Int,
    JType::Float,
    JType::Str,
    JType::Bool,
    JType::Null,
    JType::Absent,
]);

impl Record<'_> {
    /// (problem, kind) of a record that parsed but cannot be analysed (analysis.capture._unusable):
    /// a time beyond any calendar, or a field whose type is not the documented one.
    /// The kind is None where the problem is its own kind.
    pub fn unusable(&self) -> Option<(String, Option<&'static str>)> {
        if let Some(t) = self.t.number() {
            if !(-MAX_TIME < t && t < MAX_TIME) {
                return Some((
                    format!("time t={} out of range", self.t.py_number()),
                    Some("time out of range"),
                ));
            }
        }
        let rec = self.rec.as_str().unwrap_or_default();
        let fields: &[(&str, JType, Types)] = match rec {
            "msg" => &[
                ("conn", self.conn.jtype(), STR),
                ("n", self.n.jtype(), MAYBE_INT),
                ("dir", self.dir.jtype(), STR),
                ("op", self.op.jtype(), MAYBE_STR),
                ("size", self.size.jtype(), MAYBE_INT),
                ("text", self.text.jtype(), MAYBE_STR),
                ("b64", self.b64.jtype(), MAYBE_STR),
                ("kind", self.kind.jtype(), ID),
                ("type", self.type_.jtype(), ID),
                ("id", self.id.jtype(), ID),
                ("reqId", self.req_id.jtype(), ID),
                ("subscriptionId", self.subscription_id.jtype(), ID),
                ("code", self.code.jtype(), SCALAR),
            ],
            "open" => &[
                ("conn", self.conn.jtype(), STR),
                ("url", self.url.jtype(), ID),
                ("client", self.client.jtype(), ID),
                ("request_headers", self.request_headers.jtype(), OPT_LIST),
                ("status", self.status.jtype(), OPT_INT),
            ],
            "refused" => &[
                ("conn", self.conn.jtype(), STR),
                ("url", self.url.jtype(), ID),
                ("client", self.client.jtype(), ID),
                ("status", self.status.jtype(), OPT_INT),
                ("error", self.error.jtype(), ID),
            ],
            "ping" | "pong" => &[
                ("conn", self.conn.jtype(), STR),
                ("dir", self.dir.jtype(), ID),
            ],
            "close" => &[
                ("conn", self.conn.jtype(), STR),
                ("code", self.code.jtype(), OPT_INT),
                ("reason", self.reason.jtype(), ID),
                ("by", self.by.jtype(), ID),
            ],
            "drop" => &[
                ("count", self.count.jtype(), OPT_INT),
                ("reason", self.reason.jtype(), ID),
            ],
            _ => &[],
        };
        let (name, _, _) = fields
            .iter()
            .find(|(_, jtype, allowed)| !allowed.allow(*jtype))?;
        let problem = format!("field '{name}' of a {rec} record has the wrong type");
        Some((problem, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::io::Write;

    fn record(line: &str) -> Record<'_> {
        let mut r = Record::default();
        assert!(
            matches!(parse_line(line.as_bytes(), &mut r), Parsed::Record),
            "{line}"
        );
        r
    }

    fn parsed(line: &[u8]) -> Parsed {
        parse_line(line, &mut Record::default())
    }

    #[test]
    fn lines_parse_as_orjson_accepts_them() {
        assert!(matches!(parsed(b"[1, {\"a\": 2}]\n"), Parsed::NotRecord));
        assert!(matches!(parsed(b"{\"rec\": 5}"), Parsed::NotRecord));
        for bad in [
            &b"\n"[..],
            b"{\"rec\":\"msg\",\"t\":1e400}",
            b"\xef\xbb\xbf{}",
            b"{} x",
            b"NaN",
            b"{\"a\":\"\\ud800\"}",
            b"{\"a\":\"\xff\"}",
            b"{\"rec\":\"msg\",\"text\":\"\\udc00\\ud800\"}",
            b"{\"rec\":\"msg\"\"t\":1}",
            b"{\"rec\":\"msg\",,\"t\":1}",
            b"{\"rec\":\"msg\",\"t\":1,}",
            b"{\"rec\":\"msg\",\"t\" 1}",
            b"{\"rec\"\"msg\"}",
            b"{\"rec\":}",
            b"{\"rec\":\"msg\",\"t\":1 \"n\":1}",
        ] {
            assert!(matches!(parsed(bad), Parsed::InvalidJson), "{bad:?}");
        }
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(matches!(parsed(deep(1024).as_bytes()), Parsed::NotRecord));
        assert!(matches!(parsed(deep(1025).as_bytes()), Parsed::InvalidJson));
    }

    #[test]
    fn a_line_is_damage_exactly_where_json_value_reads_no_document() {
        let values = [
            "1",
            "-0",
            "1e400",
            "1E+2",
            "01",
            "1.",
            "-",
            "18446744073709551616",
            "true",
            "tru",
            "null",
            r#""a\"b""#,
            r#""\ud83d\ude00""#,
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\u12G4""#,
            r#""\x""#,
            "\"tab\tin\"",
            r#""{\"k\":[1,{\"x\":\"y\"}]}""#,
            "[]",
            "[1,]",
            "[1 2]",
            "{}",
            r#"{"a":[{"b":null}]}"#,
            r#"{"a" 1}"#,
            r#"{"a":1,}"#,
            "[[[]]]",
        ];
        for v in values {
            for line in [
                format!(r#"{{"rec":"msg","t":1,"text":{v},"code":{v},"other":{v}}}"#),
                format!(r#" {{ "other" : {v} , "rec" : "msg" , "text" : {v} }} "#),
                format!(r#"{{"\u0072ec":"msg","events":{v}}}"#),
                format!(r#"{{"rec":"msg","text":"{{\"a\":1}}","events":{v},"text":{v}}}"#),
                format!("[{v}]"),
            ] {
                let mut r = Record::default();
                let outcome = parse_line(line.as_bytes(), &mut r);
                // orjson's verdict, but a number past a double refused only where it is decoded
                // (as serde_json read records): the reader reads 1e400 in a field it passes over.
                let decoded_past_a_double = v == "1e400" && line.contains(r#""code""#);
                let refused = decoded_past_a_double
                    || json_value::parse(&line.replace("1e400", "1")).is_none();
                assert_eq!(matches!(outcome, Parsed::InvalidJson), refused, "{line}");
                // Decoding the payload while reading it reads the same, and gives what decoding
                // it afterwards gives (the last `text` member's string, or none).
                let mut decoding = Record::default();
                let decoded = parse_line_with(line.as_bytes(), &mut decoding, true);
                assert_eq!(
                    std::mem::discriminant(&decoded),
                    std::mem::discriminant(&outcome)
                );
                if matches!(decoded, Parsed::Record) {
                    assert_eq!(decoding.table_text, r.text.string(), "{line}");
                }
                if matches!(outcome, Parsed::Record) {
                    let finite = v.replace("1e400", "1");
                    let value = json_value::parse(&finite).expect("JSON");
                    let kept = r.text.0.or(r.events.0).expect("a raw member kept");
                    assert_eq!(kept, v, "{line}");
                    assert_eq!(r.rec.as_str(), Some("msg"));
                    if line.contains(r#""code""#) {
                        let expected = match &value {
                            json_value::Value::Int(0) if v == "-0" => Val::Float(-0.0),
                            json_value::Value::Null => Val::Null,
                            json_value::Value::Bool(b) => Val::Bool(*b),
                            json_value::Value::Int(i) => Val::Int((*i).into()),
                            json_value::Value::UInt(u) => Val::Int((*u).into()),
                            json_value::Value::Float(f) => Val::Float(*f),
                            json_value::Value::Str(s) => Val::Str(s.clone()),
                            json_value::Value::Array(_) => Val::List,
                            json_value::Value::Object(_) => Val::Dict,
                        };
                        assert_eq!(r.code, expected, "{line}");
                    }
                }
            }
        }
    }

    /// The members of the object `line` holds: each name decoded, each value as the line has it.
    fn members_of(line: &str) -> Vec<(String, &str)> {
        let mut members = Members::of(line.trim_end()).expect("an object");
        let mut read = Vec::new();
        while let Some(name) = members.next_key().expect("JSON") {
            read.push((name.into_owned(), members.raw().expect("JSON")));
        }
        read
    }

    /// `members` written again, `comma` after each comma and `colon` between each name and its
    /// value, the names from the `escaped`th on written as `\u` escapes.
    fn written(members: &[(String, &str)], comma: &str, colon: &str, escaped: usize) -> String {
        let mut out = Vec::new();
        for (at, (name, raw)) in members.iter().enumerate() {
            out.extend_from_slice(if at == 0 { b"{" } else { b"," });
            out.extend_from_slice(comma.as_bytes());
            if at >= escaped {
                out.push(b'"');
                name.chars()
                    .for_each(|c| write!(out, "\\u{:04x}", c as u32).expect("a Vec"));
                out.push(b'"');
            } else {
                crate::json_out::write_str(&mut out, name);
            }
            out.extend_from_slice(colon.as_bytes());
            out.extend_from_slice(raw.as_bytes());
        }
        out.push(b'}');
        String::from_utf8(out).expect("UTF-8")
    }

    /// A line read with the names found as the recorder writes them reads as it does with every
    /// name read by `next_key`: in any order, spaced, or with names written otherwise.
    #[test]
    fn names_found_as_written_read_as_any_name() {
        use crate::message::{message_line, Message, Time};
        let payloads: [&[u8]; 7] = [
            br#"{"kind":"req","id":"7","type":"GetClock","body":{}}"#,
            br#"{"kind":"resp","reqId":7,"code":200,"type":"GetClock$Response","body":{"currentTime":5}}"#,
            concat!(
                r#"{"kind":"notification","type":"ms.MessagingEventNotification","body":{"subscriptionId":"s","#,
                r#""changes":[{"sequence":3,"dialogId":"d","conversationId":"c","event":{"type":"ContentEvent"},"#,
                r#""originatorMetadata":{"role":"CONSUMER"},"serverTimestamp":5}]}}"#
            )
            .as_bytes(),
            concat!(
                r#"{"kind":"req","id":1,"type":"ms.PublishEvent","body":{"dialogId":"d","conversationId":"c","#,
                r#""sequence":4,"event":{"type":"AcceptStatusEvent","status":"READ","sequenceList":[1]}}}"#
            )
            .as_bytes(),
            b"not json, \"quoted\"",
            b"\xff\xfe",
            br#"{"kind":"req","id":"x","type":"LongOne","body":{"text":"0123456789012345678901234567890123456789"}}"#,
        ];
        let mut lines: Vec<String> = vec![
            r#"{"rec":"open","t":1.5,"conn":"c","url":"ws://h/p","client":"127.0.0.1:5","status":101}"#.into(),
            r#"{"rec":"close","t":2,"conn":"c","code":1000,"reason":"","by":"client"}"#.into(),
            r#"{"rec":"ping","t":2,"conn":"c","dir":"c2s","payload":""}"#.into(),
            // names that begin as a written one does, past its first eight bytes too; duplicates
            concat!(
                r#"{"rec":"msg","t":1,"t":2,"conn":"c","subscriptionIdX":"s","conversationIdX":"x","#,
                r#""truncatedd":true,"text":"{}","events":[],"eventsX":1,"type":"a","type":"b"}"#
            )
            .into(),
        ];
        for (i, payload) in payloads.iter().enumerate() {
            for (max_payload, is_text) in [(1 << 20, true), (40, true), (1 << 20, false)] {
                let msg = Message {
                    conn: "c-1",
                    t: Time::Float(1795544000.9388244 + i as f64),
                    n: i as i64,
                    from_client: i % 2 == 0,
                    is_text,
                    content: payload,
                };
                let line = message_line(&msg, max_payload, false);
                lines.push(String::from_utf8(line).expect("a line is UTF-8"));
            }
        }
        let read = |line: &str| {
            let mut r = Record::default();
            let parsed = parse_line_with(line.as_bytes(), &mut r, true);
            assert!(matches!(parsed, Parsed::Record), "{line}");
            format!("{r:?}")
        };
        for line in &lines {
            let mut members = members_of(line);
            let n = members.len();
            let expected = read(&written(&members, " ", " : ", n));
            assert_eq!(read(line), expected, "{line}");
            // in reverse order too, unless a name is there twice (the last one is kept)
            let names: HashSet<&str> = members.iter().map(|(name, _)| name.as_str()).collect();
            let orders = if names.len() == n { 2 } else { 1 };
            for _ in 0..orders {
                for escaped in [0, 1, 3, n / 2, n - 1, n] {
                    for colon in [":", " :", ": ", "\t:\n"] {
                        let variant = written(&members, "", colon, escaped);
                        assert_eq!(read(&variant), expected, "{variant}");
                    }
                }
                members.reverse();
            }
        }
    }

    #[test]
    fn minus_zero_is_the_float_serde_json_made_of_it() {
        let r = record(r#"{"rec":"msg","t":1,"conn":"c","dir":"c2s","n":-0,"code":-0.0,"size":0}"#);
        assert!(matches!(r.n, Val::Float(z) if z == 0.0 && z.is_sign_negative()));
        assert!(matches!(r.code, Val::Float(z) if z == 0.0 && z.is_sign_negative()));
        assert_eq!(r.size, Val::Int(0));
        assert_eq!(
            r.unusable().unwrap().0,
            "field 'n' of a msg record has the wrong type"
        );
    }

    #[test]
    fn fields_keep_their_type_and_the_last_duplicate() {
        let r = record(
            r#"{"rec":"msg","t":1,"t":2.5,"conn":"c\"1","dir":"c2s","n":18446744073709551615,"text":"{}","code":[1]}"#,
        );
        assert_eq!(r.t, Val::Float(2.5));
        assert_eq!(r.conn.as_str(), Some("c\"1"));
        assert_eq!(r.n, Val::Int(18446744073709551615));
        assert_eq!(r.text.string().as_deref(), Some("{}"));
        assert_eq!(r.code.jtype(), JType::List);
        assert_eq!(
            r.unusable().unwrap().0,
            "field 'code' of a msg record has the wrong type"
        );
    }

    #[test]
    fn times_beyond_the_calendar_are_damage() {
        let r = record(r#"{"rec":"open","t":1e16,"conn":"c"}"#);
        assert_eq!(r.unusable().unwrap().0, "time t=1e+16 out of range");
        let r = record(r#"{"rec":"open","t":-9000000000,"conn":"c"}"#);
        assert_eq!(r.unusable().unwrap().0, "time t=-9000000000 out of range");
    }

    #[test]
    fn truncated_is_python_truthiness() {
        for (value, truthy) in [
            ("true", true),
            ("0", false),
            ("0.0", false),
            ("\"\"", false),
            ("\"x\"", true),
            ("[ ]", false),
            ("{\"a\":1}", true),
            ("null", false),
        ] {
            let line = format!(r#"{{"rec":"msg","truncated":{value}}}"#);
            assert_eq!(record(&line).truncated.truthy(), truthy, "{value}");
        }
    }

    #[test]
    fn json_string_decodes_as_serde_json_does() {
        let mut cases: Vec<String> = [
            r#""""#,
            r#""plain""#,
            r#""{\"kind\":\"req\",\"id\":\"1\"}""#,
            r#""a\\u00e9b""#,
            r#""\u00e9\u4e2d\u0041""#,
            r#""\ud83d\ude00""#,
            r#""\ud83d""#,
            r#""\ude00x""#,
            r#""\b\f\n\r\t\/\\""#,
            r#""\x""#,
            r#""\u12""#,
            r#""\u+123""#,
            r#""\u12G4""#,
            r#""tail\""#,
            "\"raw\tcontrol\"",
            r#""é中😀""#,
            r#""a"b""#,
            r#"null"#,
            r#"12"#,
            r#""\u0000""#,
            r#"" spaced ""#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // every pair of pieces, quoted: escapes at the ends, next to each other, split
        let pieces = [
            r"\", r#"\""#, r"\u00e9", r"\ud83d", r"\ude00", "a", "é", r"\n", "\"", r"\u",
        ];
        for a in pieces {
            for b in pieces {
                cases.push(format!("\"{a}{b}\""));
                cases.push(format!("\"x{a}y{b}z\""));
            }
        }
        for case in &cases {
            let serde: Option<String> = serde_json::from_str(case).ok();
            assert_eq!(json_string(case), serde, "{case}");
        }
    }
}
