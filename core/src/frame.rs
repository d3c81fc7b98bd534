//! What every analyzer asks of a message: its type under any prefix, arrays
//! sent bare, the body, whether a response can answer a request, and the body index fields.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::LazyLock;

use serde_json::Value;

use crate::engine::Frame;
use crate::json_out::Members;
use crate::json_value;
use crate::record::{Raw, Val};

/// Whether a request type is `name` under any of its prefixes (cqm., .ams.aam., .ams.ms., …).
pub fn type_is(type_: Option<&str>, name: &str) -> bool {
    type_.is_some_and(|t| {
        t == name
            || t.strip_suffix(name)
                .is_some_and(|prefix| prefix.ends_with('.'))
    })
}

/// An array field: a single element sent bare counts as a one-element array, a missing or null
/// one as none (Messaging Window API — Protocol Overview, Single Element Arrays).
pub fn as_list(value: Option<&Value>) -> &[Value] {
    match value {
        None | Some(Value::Null) => &[],
        Some(Value::Array(items)) => items,
        Some(single) => std::slice::from_ref(single),
    }
}

/// The payload's `body` when the payload is an object.
pub fn body<'f>(frame: &'f Frame) -> Option<&'f Value> {
    frame.payload()?.as_object()?.get("body")
}

/// cqm. / aam. / .ams.aam. ExConversationChangeNotification (the tutorials, the API reference page
/// and the v2 spelling of the same notification).
pub fn is_conversation_notification(type_: Option<&str>) -> bool {
    type_.is_some_and(|t| t.ends_with("ExConversationChangeNotification"))
}

/// ms.MessagingEventNotification and the v2 ms.OnlineEventDistribution (single change body).
pub fn is_messaging_notification(type_: Option<&str>) -> bool {
    type_.is_some_and(|t| {
        t.contains("MessagingEventNotification") || t.contains("OnlineEventDistribution")
    })
}

/// A type without its prefix: `cqm.SubscribeExConversations` -> `SubscribeExConversations`.
pub fn request_name(type_: &str) -> &str {
    // memrchr: `rsplit('.')` walked the type back a character at a time (a few percent of the
    // engine's thread, twice per response)
    memchr::memrchr(b'.', type_.as_bytes()).map_or(type_, |dot| &type_[dot + 1..])
}

/// Response types that name the request they answer (Messaging Window API — API reference pages
/// and tutorials, with the v2 and brand-side spellings): (responses, requests).
const NAMED_RESPONSES: [(&[&str], &[&str]); 7] = [
    (
        &[
            "RequestConversationResponse",
            "RequestConversation$Response",
        ],
        &["ConsumerRequestConversation", "AgentRequestConversation"],
    ),
    (
        &["PublishEventResponse", "PublishEvent$Response"],
        &["PublishEvent"],
    ),
    (
        &[
            "SubscribeExConversationsResponse",
            "SubscribeExConversations$Response",
        ],
        &["SubscribeExConversations"],
    ),
    (
        &["GenerateURLResponse", "BaseGenerateURLResponse"],
        &["GenerateURLForUploadFile", "GenerateURLForDownloadFile"],
    ),
    (&["GetClockResponse", "GetClock$Response"], &["GetClock"]),
    (&["QueryMessages$Response"], &["QueryMessages"]),
    (&["GetUserProfile$Response"], &["GetUserProfile"]),
];
/// The generic subscribe response answers any subscription request.
const GENERIC_SUBSCRIBE: [&str; 2] = ["GenericSubscribeResponse", "GenericSubscribe$Response"];
/// A string response answers requests whose success has no body of its own, and as an error
/// (4xx/5xx) any request.
const STRING_RESPONSES: [&str; 3] = ["StringResponse", "ReqBody$StringResp", "StringResp"];
/// Requests whose success has a typed response of its own.
static TYPED_SUCCESS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    NAMED_RESPONSES
        .iter()
        .flat_map(|(_, requests)| requests.iter().copied())
        .filter(|request| *request != "GetClock")
        .chain(["SubscribeMessagingEvents"])
        .collect()
});

/// Whether a response of this type (and code) can answer a request of this type. Only a response
/// type that names its request (or is a string or generic subscribe response) rules requests out:
/// a missing or undocumented type (None: absent or not a string) answers anything, as does any
/// response to a request without a type.
pub fn can_answer(response_type: Option<&str>, code: &Val, request_type: Option<&str>) -> bool {
    let (Some(response_type), Some(request_type)) = (response_type, request_type) else {
        return true;
    };
    let error = match code {
        Val::Int(code) => *code >= 400,
        _ => true, // `code.__class__ is not int`: missing, a string, a float, a boolean
    };
    let (response, request) = (request_name(response_type), request_name(request_type));
    if let Some((_, requests)) = NAMED_RESPONSES
        .iter()
        .find(|(responses, _)| responses.contains(&response))
    {
        return requests.contains(&request);
    }
    if GENERIC_SUBSCRIBE.contains(&response) {
        return request.to_lowercase().contains("subscri");
    }
    if STRING_RESPONSES.contains(&response) {
        return error || !TYPED_SUCCESS.contains(request);
    }
    true
}

/// The body index fields (docs/capture-format.md, "Body index fields").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyField {
    DialogId,
    ConversationId,
    Sequence,
    Event,
    Events,
}

impl BodyField {
    fn key(self) -> &'static str {
        match self {
            BodyField::DialogId => "dialogId",
            BodyField::ConversationId => "conversationId",
            BodyField::Sequence => "sequence",
            BodyField::Event => "event",
            BodyField::Events => "events",
        }
    }

    fn recorded<'a>(self, frame: &Frame<'_, 'a>) -> Raw<'a> {
        let rec = frame.rec;
        match self {
            BodyField::DialogId => rec.dialog_id,
            BodyField::ConversationId => rec.conversation_id,
            BodyField::Sequence => rec.sequence,
            BodyField::Event => rec.event,
            BodyField::Events => rec.events,
        }
    }

    /// Whether a recorded value is what the recorder lifts (and not malformed).
    fn valid(self, value: &Lifted) -> bool {
        let scalar = |v: &Lifted| !v.is_container();
        let int = |v: &Lifted| v.as_int().is_some();
        match self {
            BodyField::DialogId | BodyField::ConversationId => value.as_str().is_some(),
            BodyField::Sequence => int(value),
            BodyField::Event => matches!(value, Lifted::Array(e) if e.len() == 3
                && scalar(&e[0]) && scalar(&e[1])
                && matches!(&e[2], Lifted::Array(items) if items.iter().all(scalar))),
            BodyField::Events => {
                matches!(value, Lifted::Array(entries) if entries.iter().all(|entry|
                matches!(entry, Lifted::Array(e) if e.len() == 8 && e.iter().all(scalar)
                    && (e[0].is_null() || e[0].as_str().is_some())
                    && (e[2].is_null() || int(&e[2])))))
            }
        }
    }
}

/// A body index field's value: JSON as the record holds it, its strings borrowed from the line
/// where they hold no escape (no allocation for most of them: the fields are read for most
/// messages, and making serde_json values of them was the engine's largest cost after parsing).
pub type Lifted<'a> = json_value::Value<'a>;

/// A body index field of the message: the recorded one when it is well-formed, else lifted from
/// the payload here, by the function the recorder uses. Once a frame has been re-lifted, every
/// field of it comes from that lift (all of them replaced, as the first engine replaced them).
/// None when absent or null. Parsed once per frame, whichever analyzers ask.
pub fn lifted<'f, 'a>(frame: &'f Frame<'_, 'a>, field: BodyField) -> Option<&'f Lifted<'a>> {
    if let Some(relifted) = frame.relifted.get() {
        return Some(relifted.get(field.key())).filter(|value| !value.is_null());
    }
    let recorded = frame.lifted[field as usize].get_or_init(|| {
        let raw = field.recorded(frame).0?;
        plain_value(raw)
            .or_else(|| json_value::parse_as_serde(raw))
            .filter(|value| !value.is_null() && field.valid(value))
    });
    if let Some(value) = recorded {
        return Some(value);
    }
    let relifted = frame.relifted.get_or_init(|| relift(frame));
    Some(relifted.get(field.key())).filter(|value| !value.is_null())
}

/// A recorded body index field as `parse_as_serde` reads it, when it is written as the recorder
/// writes it: arrays (no whitespace) of null, booleans, integers from 0 to 10^19 - 1 and strings
/// without escapes or control characters. None for anything else (`parse_as_serde` then reads
/// it): the fields are read for most notifications, and the general parser costs a third more
/// (callgrind, 200k frames: the arrays grown as they fill, every value's syntax checked in full).
fn plain_value(raw: &str) -> Option<Lifted<'_>> {
    let (value, end) = plain_at(raw, 0, 0)?;
    (end == raw.len()).then_some(value)
}

/// The value starting at byte `i`, and where it ends (`depth`: arrays around it).
fn plain_at(raw: &str, i: usize, depth: usize) -> Option<(Lifted<'_>, usize)> {
    let s = raw.as_bytes();
    match *s.get(i)? {
        b'"' => {
            let end = json_value::plain_run(s, i + 1);
            (s.get(end) == Some(&b'"'))
                .then(|| (Lifted::Str(Cow::Borrowed(&raw[i + 1..end])), end + 1))
        }
        b'[' if depth < 4 => {
            // room for the longest documented array (an `events` entry's eight fields): no regrowth
            let mut items = Vec::with_capacity(8);
            let mut i = i + 1;
            if s.get(i) == Some(&b']') {
                return Some((Lifted::Array(items), i + 1));
            }
            loop {
                let (item, end) = plain_at(raw, i, depth + 1)?;
                items.push(item);
                match s.get(end)? {
                    b',' => i = end + 1,
                    b']' => return Some((Lifted::Array(items), end + 1)),
                    _ => return None,
                }
            }
        }
        first @ b'0'..=b'9' => {
            let (mut n, mut end) = (u64::from(first - b'0'), i + 1);
            while let Some(&digit @ b'0'..=b'9') = s.get(end) {
                if first == b'0' || end - i == 19 {
                    return None; // a leading zero, or maybe past u64
                }
                n = n * 10 + u64::from(digit - b'0');
                end += 1;
            }
            // an integer as `parse` gives it: i64 where it fits
            let n = i64::try_from(n).map_or(Lifted::UInt(n), Lifted::Int);
            match s.get(end) {
                Some(b'.' | b'e' | b'E') => None,
                _ => Some((n, end)),
            }
        }
        b'n' if s[i..].starts_with(b"null") => Some((Lifted::Null, i + 4)),
        b't' if s[i..].starts_with(b"true") => Some((Lifted::Bool(true), i + 4)),
        b'f' if s[i..].starts_with(b"false") => Some((Lifted::Bool(false), i + 5)),
        _ => None,
    }
}

/// The body index fields lift.rs's `lift_body` gives for the frame's type and body, as an object
/// (null ones left out).
fn relift(frame: &Frame) -> Lifted<'static> {
    let body = body(frame).cloned().unwrap_or(Value::Null);
    let text = serde_json::to_string(&body).unwrap_or_else(|_| "null".to_owned());
    let Some(body) = json_value::parse(&text) else {
        return Lifted::Object(Vec::new());
    };
    let mut out = vec![b'{'];
    crate::lift::lift_body(
        frame.rec.type_.as_str(),
        &body,
        &mut Members {
            out: &mut out,
            first: true,
        },
    );
    out.push(b'}');
    let text = String::from_utf8(out).expect("lift_body writes UTF-8");
    match json_value::parse(&text) {
        Some(Lifted::Object(fields)) => Lifted::Object(
            fields
                .into_iter()
                .filter(|(_, value)| !value.is_null())
                .map(|(name, value)| (Cow::Owned(name.into_owned()), value.into_owned()))
                .collect(),
        ),
        _ => Lifted::Object(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorded body index field is read as serde_json read it (which decided whether a field
    /// was well-formed before): the same value, and refused where serde_json refused it (but for
    /// nesting beyond serde_json's 128 levels, which no well-formed field has: `valid` refuses
    /// it either way); what `plain_value` reads, it reads as `parse_as_serde` does.
    #[test]
    fn recorded_fields_read_as_serde_json_reads_them() {
        let pieces = [
            "[",
            "]",
            ",",
            "\"",
            "\"d-1\"",
            "\"é\\\"x\"",
            "\"\\u0041\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud800\"",
            "\"a\tb\"",
            "null",
            "nul",
            "true",
            "false",
            "0",
            "00",
            "7",
            "-1",
            "-0",
            "-0.0",
            "1.5",
            "1e3",
            "1e400",
            "18446744073709551615",
            "9999999999999999999",
            "99999999999999999999",
            "-9223372036854775809",
            "1795544000928",
            "1795544000.9388244",
            " ",
            "{}",
            "{\"a\":1,\"a\":[2]}",
            ":",
            "x",
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let (mut read, mut plain_read) = (0, 0);
        for round in 0..200_000 {
            let mut text = String::new();
            for _ in 0..1 + round % 12 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push_str(pieces[(state % pieces.len() as u64) as usize]);
            }
            let serde = serde_json::from_str::<Value>(&text).ok();
            let ours = json_value::parse_as_serde(&text);
            if let Some(plain) = plain_value(&text) {
                plain_read += 1;
                assert_eq!(Some(&plain), ours.as_ref(), "{text}");
            }
            read += usize::from(ours.is_some());
            assert_eq!(ours.map(|v| v.to_serde()), serde, "{text}");
        }
        assert!(
            read > 5_000 && plain_read > 2_000,
            "only {read} read, {plain_read} plain"
        );
        let event = r#"[["dialog-0-0",null,0,"ContentEvent",null,"agent-1","ASSIGNED_AGENT",1795544000928]]"#;
        assert_eq!(plain_value(event), json_value::parse_as_serde(event));
        let Some(Lifted::Array(entries)) = plain_value(event) else {
            panic!("an array");
        };
        let Lifted::Array(fields) = &entries[0] else {
            panic!("an entry");
        };
        // the strings are the line's own bytes: nothing allocated for them
        assert!(matches!(
            &fields[0],
            Lifted::Str(Cow::Borrowed("dialog-0-0"))
        ));
        let parsed = |text| json_value::parse_as_serde(text).expect("JSON");
        assert!(BodyField::Events.valid(&parsed(event)));
        assert!(
            BodyField::Sequence.valid(&parsed("0")) && !BodyField::Sequence.valid(&parsed("-0"))
        );
        assert!(!BodyField::Events.valid(&parsed(r#"[["d",null,-0,"E",null,"a","R",1]]"#)));
    }

    /// A recorded field that is null or malformed is lifted from the payload instead, and then
    /// every field of the frame is; a well-formed one is taken as recorded.
    #[test]
    fn fields_come_from_the_record_or_else_from_the_payload() {
        use crate::record::{parse_line, Parsed, Record};
        let payload = concat!(
            r#"{\"type\":\"ms.PublishEvent\",\"body\":{\"dialogId\":\"d1\",\"sequence\":3,"#,
            r#"\"event\":{\"type\":\"ContentEvent\"}}}"#
        );
        // the fields asked of one frame, in turn
        let read = |fields: &str, asked: &[BodyField]| {
            let line = format!(
                r#"{{"rec":"msg","t":1,"conn":"c","n":0,"dir":"c2s","op":"text","size":1,"text":"{}","#,
                payload
            ) + &format!(r#""type":"ms.PublishEvent"{fields}}}"#);
            let mut rec = Record::default();
            assert!(matches!(
                parse_line(line.as_bytes(), &mut rec),
                Parsed::Record
            ));
            let frame = Frame::new(&rec, None);
            let values = asked
                .iter()
                .map(|field| lifted(&frame, *field).map(Lifted::to_serde));
            values.collect::<Vec<_>>()
        };
        let (d1, d2) = (Some(serde_json::json!("d1")), Some(serde_json::json!("d2")));
        let dialog = [BodyField::DialogId];
        assert_eq!(read(r#","dialogId":"d2""#, &dialog), vec![d2.clone()]);
        assert_eq!(read(r#","dialogId":null"#, &dialog), vec![d1.clone()]);
        assert_eq!(read(r#","dialogId":7"#, &dialog), vec![d1.clone()]);
        assert_eq!(read("", &dialog), vec![d1.clone()]);
        // serde_json's -0 is a float, no sequence: the payload's is taken, and from then on every
        // field of the frame comes from the payload
        let both = [
            BodyField::DialogId,
            BodyField::Sequence,
            BodyField::DialogId,
        ];
        let three = Some(serde_json::json!(3));
        let fields = r#","dialogId":"d2","sequence":-0"#;
        assert_eq!(read(fields, &both), [d2, three, d1]);
        let zero = Some(serde_json::json!(0));
        assert_eq!(read(r#","sequence":0"#, &[BodyField::Sequence]), [zero]);
        assert_eq!(read("", &[BodyField::Events]), [None]);
    }

    #[test]
    fn types_under_any_prefix() {
        assert!(type_is(Some(".ams.cm.PublishEvent"), "PublishEvent"));
        assert!(type_is(Some("PublishEvent"), "PublishEvent"));
        assert!(!type_is(Some("ms.XPublishEvent"), "PublishEvent"));
        assert!(!type_is(None, "PublishEvent"));
        assert_eq!(request_name(".GetClock$Response"), "GetClock$Response");
        assert_eq!(request_name("GetClock"), "GetClock");
        assert_eq!(request_name("ms.é.Ünïcode"), "Ünïcode");
        assert_eq!(request_name("cm.PublishEvent."), "");
    }

    #[test]
    fn which_responses_answer_which_requests() {
        let ok = Val::Int(200);
        assert!(can_answer(
            Some("cm.RequestConversationResponse"),
            &ok,
            Some("cm.ConsumerRequestConversation")
        ));
        assert!(!can_answer(
            Some("ms.PublishEventResponse"),
            &ok,
            Some("cm.ConsumerRequestConversation")
        ));
        assert!(can_answer(
            Some("GenericSubscribeResponse"),
            &ok,
            Some("ms.SubscribeMessagingEvents")
        ));
        assert!(!can_answer(
            Some("GenericSubscribeResponse"),
            &ok,
            Some("GetClock")
        ));
        assert!(!can_answer(
            Some("StringResponse"),
            &ok,
            Some("ms.PublishEvent")
        ));
        assert!(can_answer(
            Some("StringResponse"),
            &Val::Int(400),
            Some("ms.PublishEvent")
        ));
        assert!(can_answer(
            Some("StringResponse"),
            &Val::Null,
            Some("ms.PublishEvent")
        ));
        assert!(can_answer(Some("StringResponse"), &ok, Some("GetClock")));
        assert!(can_answer(None, &ok, Some("GetClock")));
        assert!(can_answer(Some("Whatever"), &ok, Some("GetClock")));
    }
}
