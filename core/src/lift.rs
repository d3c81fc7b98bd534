//! The index fields of a msg record, lifted from its decoded JSON payload (docs/capture-format.md,
//! "Index fields" and "Body index fields"), written as JSON members in the record's key order.

use crate::json_out::{write_scalar, write_str, Members};
use crate::json_value::Value;

/// `kind`, `type`, `id`, `reqId`, `code`, `subscriptionId`, then the body index fields. `id` and
/// `reqId` are lifted as strings (the protocol compares them as opaque strings, and a column of one
/// type is what DuckDB and pandas want); the others keep their type.
pub fn lift_index(payload: &Value, m: &mut Members) {
    if !matches!(payload, Value::Object(_)) {
        return;
    }
    let type_ = payload.get("type").as_str();
    for key in ["kind", "type"] {
        if let Some(s) = payload.get(key).as_str() {
            write_str(m.key(key), s);
        }
    }
    for key in ["id", "reqId"] {
        match payload.get(key) {
            Value::Str(s) => write_str(m.key(key), s),
            number @ (Value::Int(_) | Value::UInt(_) | Value::Float(_)) => {
                let mut text = Vec::with_capacity(24);
                write_scalar(&mut text, number);
                write_str(m.key(key), std::str::from_utf8(&text).unwrap_or_default());
            }
            _ => {}
        }
    }
    match payload.get("code") {
        Value::Null => {}
        code => write_scalar(m.key("code"), code),
    }
    let body = payload.get("body");
    if let Some(sid) = body.get("subscriptionId").as_str() {
        write_str(m.key("subscriptionId"), sid);
    }
    lift_body(type_, body, m);
}

fn is_messaging_notification(type_: &str) -> bool {
    type_.contains("MessagingEventNotification") || type_.contains("OnlineEventDistribution")
}

/// Python's `as_list`: an array, a single element sent bare as a one-element array, null as none
/// (Messaging Window API — Protocol Overview, Single Element Arrays).
fn as_list<'v, 'a>(value: &'v Value<'a>) -> &'v [Value<'a>] {
    match value {
        Value::Array(items) => items,
        Value::Null => &[],
        single => std::slice::from_ref(single),
    }
}

fn scalar_or_null<'v, 'a>(value: &'v Value<'a>) -> &'v Value<'a> {
    static NULL: Value<'static> = Value::Null;
    if value.is_container() {
        &NULL
    } else {
        value
    }
}

fn or<'v, 'a>(first: &'v Value<'a>, second: &'v Value<'a>) -> &'v Value<'a> {
    if first.truthy() {
        first
    } else {
        second
    }
}

/// The body index fields: `events` (messaging notifications), `dialogId`, `conversationId`,
/// `sequence`, `event` (PublishEvent requests).
pub fn lift_body(type_: Option<&str>, body: &Value, m: &mut Members) {
    if let Some(t) = type_.filter(|t| is_messaging_notification(t)) {
        // One [dialogId, conversationId, sequence, event type, status, originator, role, serverTimestamp] per change.
        let changes: Vec<&Value> = match body {
            Value::Object(_) if t.contains("OnlineEventDistribution") => vec![body],
            Value::Object(_) => as_list(body.get("changes"))
                .iter()
                .filter(|c| matches!(c, Value::Object(_)))
                .collect(),
            _ => Vec::new(),
        };
        let out = m.key("events");
        out.push(b'[');
        for (i, change) in changes.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let event = change.get("event");
            let meta = change.get("originatorMetadata");
            let dialog = change.get("dialogId");
            let sequence = change.get("sequence");
            let entry = [
                if matches!(dialog, Value::Str(_)) {
                    dialog
                } else {
                    &Value::Null
                },
                change.get("conversationId"),
                if matches!(sequence, Value::Int(_) | Value::UInt(_)) {
                    sequence
                } else {
                    &Value::Null
                },
                event.get("type"),
                or(event.get("status"), event.get("chatState")),
                or(change.get("originatorId"), change.get("originatorPId")),
                meta.get("role"),
                change.get("serverTimestamp"),
            ];
            out.push(b'[');
            for (j, value) in entry.into_iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                write_scalar(out, value);
            }
            out.push(b']');
        }
        out.push(b']');
    }
    if !matches!(body, Value::Object(_)) {
        return;
    }
    for key in ["dialogId", "conversationId"] {
        if let Some(s) = body.get(key).as_str() {
            write_str(m.key(key), s);
        }
    }
    if let sequence @ (Value::Int(_) | Value::UInt(_)) = body.get("sequence") {
        write_scalar(m.key("sequence"), sequence);
    }
    if type_.is_some_and(|t| t == "PublishEvent" || t.ends_with(".PublishEvent")) {
        let event = body.get("event");
        let out = m.key("event");
        out.push(b'[');
        write_scalar(out, scalar_or_null(event.get("type")));
        out.push(b',');
        write_scalar(out, scalar_or_null(event.get("status")));
        out.extend_from_slice(b",[");
        let kept = as_list(event.get("sequenceList"))
            .iter()
            .filter(|s| !matches!(s, Value::Null) && !s.is_container());
        for (i, s) in kept.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_scalar(out, s);
        }
        out.extend_from_slice(b"]]");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_value::parse;

    fn lifted(payload: &str) -> String {
        let mut out = Vec::new();
        lift_index(
            &parse(payload).unwrap(),
            &mut Members {
                out: &mut out,
                first: true,
            },
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn index_fields() {
        assert_eq!(
            lifted(
                r#"{"kind":"req","id":7,"type":"cqm.X","reqId":1.5,"code":[1],"body":{"subscriptionId":"s"}}"#
            ),
            r#""kind":"req","type":"cqm.X","id":"7","reqId":"1.5","code":null,"subscriptionId":"s""#
        );
    }

    #[test]
    fn messaging_events_and_publish_event() {
        let note = r#"{"type":"ms.MessagingEventNotification","body":{"dialogId":"d","changes":[{"dialogId":"d","sequence":true,
            "event":{"type":"ChatStateEvent","chatState":"COMPOSING"},"originatorPId":"p","originatorMetadata":{"role":"CONSUMER"},
            "serverTimestamp":5},3]}}"#;
        assert_eq!(
            lifted(note),
            r#""type":"ms.MessagingEventNotification","events":[["d",null,null,"ChatStateEvent","COMPOSING","p","CONSUMER",5]],"dialogId":"d""#
        );
        let publish = r#"{"type":".ams.ms.PublishEvent","body":{"sequence":4,"event":{"type":"AcceptStatusEvent","status":"READ","sequenceList":[1,null,{}]}}}"#;
        assert_eq!(
            lifted(publish),
            r#""type":".ams.ms.PublishEvent","sequence":4,"event":["AcceptStatusEvent","READ",[1]]"#
        );
    }
}
