//! Framing: what each message is (request, response, notification
//! or unusable), the framing rules, and the per-frame table. The engine calls `classify` for every
//! msg record before any other analyzer.

use serde_json::Value;

use crate::arrow_out::Strings;
use crate::engine::{parse_payload, Category, Context, Frame};
use crate::pyrepr::{py_ascii, py_str_ascii};
use crate::record::{Record, Val};
use crate::rules::{INFO, WARNING};

/// The `frames` table, column by column (docs/analysis.md; `t` as recorded, int or float).
#[derive(Debug, Default)]
pub struct FramesTable {
    pub conn: Strings,
    pub t: Vec<Val<'static>>,
    pub frame: Vec<Option<i128>>,
    pub dir: Strings,
    pub op: Strings,
    pub size: Vec<Option<i128>>,
    pub category: Strings,
    pub kind: Strings,
    pub type_: Strings,
    pub id: Strings,
    pub req_id: Strings,
    pub code: Vec<Option<i128>>,
    pub subscription_id: Strings,
    pub truncated: Vec<bool>,
    pub text: Strings,
}

impl FramesTable {
    fn push(&mut self, rec: &Record, category: Option<Category>) {
        self.conn.push(Some(rec.conn.as_str().unwrap_or_default()));
        self.t.push(rec.t.clone().into_owned());
        self.frame.push(rec.n.as_int());
        self.dir.push(Some(rec.dir.as_str().unwrap_or_default()));
        self.op.push(rec.op.as_str());
        self.size.push(rec.size.as_int());
        self.category.push(category.map(Category::name));
        self.kind.push(rec.kind.as_str());
        self.type_.push(rec.type_.as_str());
        self.id.push(rec.id.as_str());
        self.req_id.push(rec.req_id.as_str());
        self.code.push(rec.code.as_int()); // an int code only (not a bool, a float or a string)
        self.subscription_id.push(rec.subscription_id.as_str());
        self.truncated.push(rec.truncated.truthy());
        self.text.push(rec.table_text().as_deref());
    }

    /// An empty table with room for as many rows and bytes as this one holds, at most `max_rows`
    /// rows and `max_bytes` bytes a column (bounds from the batch's limits: one huge payload does
    /// not make the next batch reserve its size): the next batch is about as big, and columns
    /// grown by doubling copy what they hold at every step.
    pub fn empty_like(&self, max_rows: usize, max_bytes: usize) -> Self {
        let rows = self.len().min(max_rows);
        FramesTable {
            conn: self.conn.empty_like(max_rows, max_bytes),
            t: Vec::with_capacity(rows),
            frame: Vec::with_capacity(rows),
            dir: self.dir.empty_like(max_rows, max_bytes),
            op: self.op.empty_like(max_rows, max_bytes),
            size: Vec::with_capacity(rows),
            category: self.category.empty_like(max_rows, max_bytes),
            kind: self.kind.empty_like(max_rows, max_bytes),
            type_: self.type_.empty_like(max_rows, max_bytes),
            id: self.id.empty_like(max_rows, max_bytes),
            req_id: self.req_id.empty_like(max_rows, max_bytes),
            code: Vec::with_capacity(rows),
            subscription_id: self.subscription_id.empty_like(max_rows, max_bytes),
            truncated: Vec::with_capacity(rows),
            text: self.text.empty_like(max_rows, max_bytes),
        }
    }

    /// Its rows.
    pub fn len(&self) -> usize {
        self.conn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Framing {
    /// The per-frame table, when wanted (`mwtap analyze` does not build it).
    pub rows: Option<FramesTable>,
}

/// `_JSON_TYPES`: how a message names the JSON type of a payload that is not an object.
fn json_type(payload: Option<&Value>) -> &'static str {
    match payload {
        None | Some(Value::Null) => "null",
        Some(Value::Array(_)) => "an array",
        Some(Value::String(_)) => "a string",
        Some(Value::Number(_)) => "a number",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Object(_)) => "a value",
    }
}

/// Python's `str.strip()` whitespace: Unicode White_Space plus the separators \x1c-\x1f.
fn py_strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

impl Framing {
    pub fn new(frames_table: bool) -> Self {
        Framing {
            rows: frames_table.then(FramesTable::default),
        }
    }

    pub fn classify<'r, 'a>(&mut self, ctx: &mut Context, rec: &'r Record<'a>) -> Frame<'r, 'a> {
        let frame = match &rec.kind {
            Val::Str(kind) => match Category::from_kind(kind) {
                Some(category) => {
                    if !rec.type_.is_present() {
                        missing_type(ctx, rec);
                    }
                    if category == Category::Req && !rec.id.truthy() {
                        request_without_id(ctx, rec);
                    }
                    Frame::new(rec, Some(category))
                }
                None => {
                    let message = format!(
                        "kind {} is not req, resp or notification",
                        py_str_ascii(kind)
                    );
                    ctx.at_message("unknown-kind", rec, message, None);
                    Frame::new(rec, None)
                }
            },
            _ => without_kind(ctx, rec),
        };
        if let Some(rows) = self.rows.as_mut() {
            rows.push(rec, frame.category);
        }
        frame
    }
}

fn without_kind<'r, 'a>(ctx: &mut Context, rec: &'r Record<'a>) -> Frame<'r, 'a> {
    if rec.op.as_str() == Some("binary") {
        let size = rec.size.as_int().map_or("None".into(), |s| s.to_string());
        let message = format!("binary message of {size} bytes (every message is JSON text)");
        ctx.at_message("binary-frame", rec, message, None);
        return Frame::with_payload(rec, None, None);
    }
    if !rec.text.is_present() {
        ctx.at_message(
            "invalid-json",
            rec,
            "text message is not valid UTF-8".into(),
            None,
        );
        return Frame::with_payload(rec, None, None);
    }
    let lifted = [
        &rec.type_,
        &rec.id,
        &rec.req_id,
        &rec.code,
        &rec.subscription_id,
    ];
    if !lifted.iter().any(|v| v.is_present()) {
        return unlifted(ctx, rec);
    }
    if rec.dir.as_str() == Some("c2s") {
        if rec.id.is_present() && rec.type_.is_present() {
            let message = "request without kind (allowed by the documented examples)".into();
            ctx.at_message("missing-kind", rec, message, Some(INFO));
        } else {
            ctx.at_message(
                "missing-kind",
                rec,
                "client message without kind".into(),
                None,
            );
            if !rec.type_.is_present() {
                missing_type(ctx, rec);
            }
            if !rec.id.truthy() {
                request_without_id(ctx, rec);
            }
        }
        return Frame::new(rec, Some(Category::Req));
    }
    let category = if rec.req_id.is_present() {
        Category::Resp
    } else {
        Category::Notification
    };
    let message = format!("server message without kind (taken as {})", category.name());
    ctx.at_message("missing-kind", rec, message, None);
    if !rec.type_.is_present() {
        missing_type(ctx, rec);
    }
    Frame::new(rec, Some(category))
}

/// A text frame without any index field: parsed to tell invalid JSON from an empty object.
fn unlifted<'r, 'a>(ctx: &mut Context, rec: &'r Record<'a>) -> Frame<'r, 'a> {
    if rec.truncated.truthy() {
        return Frame::with_payload(rec, None, None);
    }
    let payload = parse_payload(rec);
    let text = rec.text.string().unwrap_or_default();
    match &payload {
        None | Some(Value::Null) if py_strip(&text) != "null" => {
            ctx.at_message("invalid-json", rec, "text message is not JSON".into(), None);
        }
        Some(Value::Object(object)) => match object.get("kind") {
            Some(kind) => {
                ctx.at_message(
                    "unknown-kind",
                    rec,
                    format!("kind {} is not a string", py_ascii(kind)),
                    None,
                );
            }
            None => ctx.at_message(
                "missing-kind",
                rec,
                "JSON object without kind, type or id".into(),
                None,
            ),
        },
        _ => {
            let message = format!(
                "JSON message is {}, not an object",
                json_type(payload.as_ref())
            );
            ctx.at_message("invalid-json", rec, message, None);
        }
    }
    Frame::with_payload(rec, None, payload)
}

fn missing_type(ctx: &mut Context, rec: &Record) {
    let severity = if rec.dir.as_str() == Some("c2s") {
        None
    } else {
        Some(WARNING)
    };
    ctx.at_message("missing-type", rec, "message has no type".into(), severity);
}

fn request_without_id(ctx: &mut Context, rec: &Record) {
    let message = "request has no id (responses cannot be paired)".into();
    ctx.at_message("request-without-id", rec, message, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_is_pythons() {
        assert_eq!(py_strip("\u{1c}\u{a0} null\u{3000}\n"), "null");
        assert_eq!(py_strip("\u{200b}null"), "\u{200b}null"); // ZERO WIDTH SPACE is not whitespace
    }
}
