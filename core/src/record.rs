//! The record projection: one capture line parsed into the typed fields the engine and the
//! analyzers read, borrowing strings from the line buffer where they have no escapes. Fields that
//! are only type-checked or rarely read (`text`, `b64`, `request_headers`, the body index arrays)
//! stay raw JSON slices, decoded on demand: a payload no rule needs is never materialised.
//!
//! A JSON line is accepted exactly when orjson accepts it (the Python reader's parser): same
//! number handling (integers beyond 64 bits become floats, 1e400 is an error) and the same depth
//! limit of 1024 nested arrays/objects, which serde_json's own limit (128) is lifted to.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::LazyLock;

use memchr::memmem;

use serde::de::{
    Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;

use crate::json_value;
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

impl<'de> Deserialize<'de> for Val<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValVisitor)
    }
}

struct ValVisitor;

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Val<'de>, E> {
        Ok(Val::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Val<'de>, E> {
        Ok(Val::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Val<'de>, E> {
        Ok(Val::Int(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Val<'de>, E> {
        Ok(Val::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Val::List)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Val::Dict)
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
pub struct Raw<'a>(pub Option<&'a RawValue>);

impl<'a> Raw<'a> {
    pub fn jtype(&self) -> JType {
        let Some(raw) = self.0 else {
            return JType::Absent;
        };
        let text = raw.get();
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
        self.0.and_then(|raw| json_string(raw.get()))
    }

    /// Python's truthiness of the decoded value (`rec.get("truncated")`).
    pub fn truthy(&self) -> bool {
        let Some(raw) = self.0 else { return false };
        let text = raw.get();
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

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
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
                })
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Fills a record from a line, in place (a record is large: moving it per line would cost more
/// than parsing). The value tells whether the line is a record: an object whose `rec` is a string.
struct LineSeed<'r, 'a>(&'r mut Record<'a>);

impl<'de> DeserializeSeed<'de> for LineSeed<'_, 'de> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LineSeed<'_, 'de> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        ValVisitor.visit_seq(seq).map(|_| false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Rec => self.0.rec = map.next_value()?,
                Key::T => self.0.t = map.next_value()?,
                Key::Conn => self.0.conn = map.next_value()?,
                Key::N => self.0.n = map.next_value()?,
                Key::Dir => self.0.dir = map.next_value()?,
                Key::Op => self.0.op = map.next_value()?,
                Key::Size => self.0.size = map.next_value()?,
                Key::Kind => self.0.kind = map.next_value()?,
                Key::Type => self.0.type_ = map.next_value()?,
                Key::Id => self.0.id = map.next_value()?,
                Key::ReqId => self.0.req_id = map.next_value()?,
                Key::SubscriptionId => self.0.subscription_id = map.next_value()?,
                Key::Code => self.0.code = map.next_value()?,
                Key::Url => self.0.url = map.next_value()?,
                Key::Client => self.0.client = map.next_value()?,
                Key::Status => self.0.status = map.next_value()?,
                Key::Error => self.0.error = map.next_value()?,
                Key::Reason => self.0.reason = map.next_value()?,
                Key::By => self.0.by = map.next_value()?,
                Key::RecorderStopped => self.0.recorder_stopped = map.next_value()?,
                Key::Count => self.0.count = map.next_value()?,
                Key::Implicit => self.0.implicit = map.next_value()?,
                Key::Utf8 => self.0.utf8 = map.next_value()?,
                Key::Text => self.0.text = Raw(Some(map.next_value()?)),
                Key::B64 => self.0.b64 = Raw(Some(map.next_value()?)),
                Key::Truncated => self.0.truncated = Raw(Some(map.next_value()?)),
                Key::RequestHeaders => self.0.request_headers = Raw(Some(map.next_value()?)),
                Key::DialogId => self.0.dialog_id = Raw(Some(map.next_value()?)),
                Key::ConversationId => self.0.conversation_id = Raw(Some(map.next_value()?)),
                Key::Sequence => self.0.sequence = Raw(Some(map.next_value()?)),
                Key::Event => self.0.event = Raw(Some(map.next_value()?)),
                Key::Events => self.0.events = Raw(Some(map.next_value()?)),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(matches!(self.0.rec, Val::Str(_)))
    }
}

/// What one line holds, as the Python reader tells it.
pub enum Parsed {
    Record,
    /// Valid JSON, but not an object with a string `rec`.
    NotRecord,
    InvalidJson,
}

/// Parses one line (its newline included or not) into `record` (a fresh one).
/// An integral JSON number (beyond i64 too, up to u64), else None: what `isinstance(v, int)` accepts
/// of a parsed number.
pub fn json_int(value: &serde_json::Value) -> Option<i128> {
    let n = value.as_number()?;
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

pub fn parse_line<'a>(line: &'a [u8], record: &mut Record<'a>) -> Parsed {
    match parse_json_seed(line, LineSeed(record)) {
        Some(true) => Parsed::Record,
        Some(false) => Parsed::NotRecord,
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

const ID: &[JType] = &[JType::Str, JType::Null, JType::Absent];
const STR: &[JType] = &[JType::Str];
const MAYBE_STR: &[JType] = &[JType::Str, JType::Absent];
const MAYBE_INT: &[JType] = &[JType::Int, JType::Absent];
const OPT_INT: &[JType] = &[JType::Int, JType::Null, JType::Absent];
const OPT_LIST: &[JType] = &[JType::List, JType::Null, JType::Absent];
const SCALAR: &[JType] = &[
    JType::Int,
    JType::Float,
    JType::Str,
    JType::Bool,
    JType::Null,
    JType::Absent,
];

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
        let fields: &[(&str, JType, &[JType])] = match rec {
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
            .find(|(_, jtype, allowed)| !allowed.contains(jtype))?;
        let problem = format!("field '{name}' of a {rec} record has the wrong type");
        Some((problem, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            assert!(matches!(parsed(bad), Parsed::InvalidJson), "{bad:?}");
        }
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(matches!(parsed(deep(1024).as_bytes()), Parsed::NotRecord));
        assert!(matches!(parsed(deep(1025).as_bytes()), Parsed::InvalidJson));
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
