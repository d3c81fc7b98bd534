//! Subscription streams: conversation-metadata, routing-task and
//! agent-state streams keyed by the subscriptionId of the subscribe response, messaging-event
//! streams keyed by the dialogId of `ms.SubscribeMessagingEvents`. Table `streams` (docs/analysis.md);
//! times keep their Python types. Maps keep Python's dict order (IndexMap, `shift_remove` for a
//! `pop`): the rows at a close and the pending request a notification is attached to follow it.

use indexmap::IndexSet;

use crate::engine::{Analyzer, Context, FastMap, FastSet, Frame, Hook, OrderedMap, Row};
use crate::frame::{can_answer, is_messaging_notification, lifted, type_is, BodyField, Lifted};
use crate::identity::{is_agent_request, side_of_url, AGENT};
use crate::pyrepr::py_str_ascii;
use crate::record::{Record, Val};

/// What a stream is, or (for a pending request) what its response confirms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Conversations,
    RoutingTasks,
    AgentStates,
    Messaging,
    Unsubscribe,
}

/// Requests whose response names a subscriptionId that later notifications carry: the consumer's
/// conversation metadata, and on the brand side routing tasks and agent states (Messaging Agent
/// API — Getting Started, Step 5). In the order the first (Python) engine tried them.
const KEYED: [(&str, Kind); 3] = [
    ("SubscribeExConversations", Kind::Conversations),
    ("SubscribeRoutingTasks", Kind::RoutingTasks),
    ("SubscribeAgentsState", Kind::AgentStates),
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Conversations => "conversations",
            Kind::RoutingTasks => "routing-tasks",
            Kind::AgentStates => "agent-states",
            Kind::Messaging => "messaging-events",
            Kind::Unsubscribe => "unsubscribe",
        }
    }

    fn keyed(self) -> bool {
        matches!(
            self,
            Kind::Conversations | Kind::RoutingTasks | Kind::AgentStates
        )
    }
}

/// An outstanding request: what its response confirms (`key`: the dialogId of a messaging
/// subscription, the subscriptionId an unsubscribe names).
struct Action {
    kind: Kind,
    request_type: String,
    t: Val<'static>,
    frame: Option<i128>,
    key: Option<String>,
}

/// One subscription; `Val::Null` stands for Python's None in the times.
struct Stream {
    kind: Kind,
    key: String,
    request_type: Option<String>,
    t_request: Val<'static>,
    request_frame: Option<i128>,
    t_confirmed: Val<'static>,
    notifications: i128,
    t_first: Val<'static>,
    t_last: Val<'static>,
    t_unsubscribed: Val<'static>,
    after_unsubscribe: i128,
}

impl Stream {
    fn new(kind: Kind, key: &str) -> Self {
        Stream {
            kind,
            key: key.to_owned(),
            request_type: None,
            t_request: Val::Null,
            request_frame: None,
            t_confirmed: Val::Null,
            notifications: 0,
            t_first: Val::Null,
            t_last: Val::Null,
            t_unsubscribed: Val::Null,
            after_unsubscribe: 0,
        }
    }

    /// `(stream.t_request, stream.request_frame) == (t_request, request_frame)`: times compare as
    /// numbers (1 == 1.0), None only equals None.
    fn requested_by(&self, t: &Val, frame: Option<i128>) -> bool {
        let same_t = match (self.t_request.number(), t.number()) {
            (Some(a), Some(b)) => a == b,
            (None, None) => true,
            _ => false,
        };
        same_t && self.request_frame == frame
    }
}

#[derive(Default)]
struct StreamConn {
    /// Request id -> its outstanding requests, in the order sent (a response takes the oldest
    /// its type can answer, as in Pairs).
    pending: OrderedMap<String, Vec<Action>>,
    /// subscriptionId -> stream.
    streams: OrderedMap<String, Stream>,
    /// dialogId -> stream.
    dialogs: OrderedMap<String, Stream>,
    /// Subscription and dialog ids reported unknown (once each).
    unknown: FastSet<String>,
    agent: bool,
}

pub struct Streams {
    conns: FastMap<String, StreamConn>,
    rows: Option<Vec<Row>>,
}

/// Python's `x if x is not None else y` of two times.
fn or<'v>(x: &'v Val<'static>, y: &'v Val<'static>) -> &'v Val<'static> {
    if matches!(x, Val::Null) {
        y
    } else {
        x
    }
}

/// `Streams._count`: one more notification; the first after an unsubscribe is reported.
fn count(ctx: &mut Context, stream: &mut Stream, rec: &Record) {
    stream.notifications += 1;
    if matches!(stream.t_first, Val::Null) {
        stream.t_first = rec.t.clone().into_owned();
    }
    stream.t_last = rec.t.clone().into_owned();
    if !matches!(stream.t_unsubscribed, Val::Null) {
        stream.after_unsubscribe += 1;
        if stream.after_unsubscribe == 1 {
            let message = format!(
                "notification for subscription {} {:.3} s after it was unsubscribed \
                 (reported once per subscription)",
                py_str_ascii(&stream.key),
                rec.t.minus(&stream.t_unsubscribed).num()
            );
            ctx.at_message("notification-after-unsubscribe", rec, message, None);
        }
    }
}

/// `Streams._unknown`: a notification of a subscription or dialog not known, once per key.
fn unknown(
    ctx: &mut Context,
    state: &mut StreamConn,
    rec: &Record,
    key: &str,
    message: impl FnOnce() -> String,
    severity: Option<&str>,
) {
    if state.unknown.insert(key.to_owned()) {
        let message = message() + " (reported once per connection)";
        ctx.at_message("unknown-subscription", rec, message, severity);
    }
}

/// `Streams._pending_dialog`: the stream of an unanswered SubscribeMessagingEvents for the dialog
/// (events may come before the subscribe response, as conversation notifications may).
fn pending_dialog<'s>(state: &'s mut StreamConn, dialog: &str) -> Option<&'s mut Stream> {
    let action = state
        .pending
        .values()
        .flatten()
        .find(|a| a.kind == Kind::Messaging && a.key.as_deref() == Some(dialog))?;
    let mut stream = Stream::new(Kind::Messaging, dialog);
    stream.request_type = Some(action.request_type.clone());
    stream.t_request = action.t.clone();
    stream.request_frame = action.frame;
    state.dialogs.insert(dialog.to_owned(), stream);
    state.dialogs.get_mut(dialog)
}

impl Streams {
    /// `wanted(table)`: whether the rows of that table are kept.
    pub fn new(wanted: impl Fn(&str) -> bool) -> Self {
        Streams {
            conns: FastMap::default(),
            rows: wanted("streams").then(Vec::new),
        }
    }
}

/// `Streams._row`: the row of a stream that ended at `t_end` (unless unsubscribed before).
fn push_row(rows: &mut Option<Vec<Row>>, conn: &str, stream: Stream, t_end: &Val) {
    let Some(rows) = rows.as_mut() else {
        return;
    };
    let start = or(&stream.t_confirmed, &stream.t_first);
    let t_end = t_end.clone().into_owned();
    let end = or(&stream.t_unsubscribed, &t_end);
    let span = if matches!(start, Val::Null) {
        Val::Float(0.0)
    } else {
        end.minus(start)
    };
    let rate = if span.num() > 0.0 {
        Val::Float(stream.notifications as f64 * 60.0 / span.num())
    } else {
        Val::Null
    };
    let delay = if matches!(stream.t_first, Val::Null) || matches!(stream.t_request, Val::Null) {
        Val::Null
    } else {
        Val::Float(stream.t_first.minus(&stream.t_request).num() * 1000.0)
    };
    let kind = stream.kind;
    let key = |wanted: bool| {
        if wanted {
            Val::Str(stream.key.clone().into())
        } else {
            Val::Null
        }
    };
    rows.push(vec![
        ("conn", Val::Str(conn.to_owned().into())),
        ("t", or(&stream.t_request, &stream.t_first).clone()),
        ("kind", Val::Str(kind.name().into())),
        ("subscription_id", key(kind.keyed())),
        ("dialog_id", key(kind == Kind::Messaging)),
        ("request_type", Val::from(stream.request_type.as_deref())),
        ("request_frame", Val::from(stream.request_frame)),
        ("t_confirmed", stream.t_confirmed.clone()),
        ("notifications", Val::Int(stream.notifications)),
        ("first_notification_delay_ms", delay),
        ("t_first", stream.t_first.clone()),
        ("t_last", stream.t_last.clone()),
        ("rate_per_min", rate),
        ("t_unsubscribed", stream.t_unsubscribed.clone()),
        (
            "unsubscribed",
            Val::Bool(!matches!(stream.t_unsubscribed, Val::Null)),
        ),
        ("after_unsubscribe", Val::Int(stream.after_unsubscribe)),
    ]);
}

impl Analyzer for Streams {
    fn wants(&self, hook: Hook, _direction: &str, type_: Option<&str>) -> bool {
        match hook {
            Hook::Message => false, // no `message` hook
            Hook::Request => type_.is_some_and(|t| {
                t.ends_with("ExConversations")
                    || t.ends_with("MessagingEvents")
                    || KEYED.iter().any(|(name, _)| t.ends_with(name))
                    || is_agent_request(Some(t))
            }),
            Hook::Response | Hook::Notification => true,
        }
    }

    fn open(&mut self, _ctx: &mut Context, rec: &Record) {
        let conn = rec.conn.as_str().expect("an open connection's id");
        let state = StreamConn {
            agent: side_of_url(&rec.url) == Some(AGENT),
            ..StreamConn::default()
        };
        self.conns.insert(conn.to_owned(), state);
    }

    fn request(&mut self, _ctx: &mut Context, frame: &Frame) {
        let rec = frame.rec;
        let type_ = rec.type_.as_str();
        let conn = rec.conn.as_str().expect("an open connection's id");
        let state = self.conns.get_mut(conn).expect("an open connection");
        if is_agent_request(type_) {
            state.agent = true;
        }
        let Some(req_id) = rec.id.as_str() else {
            return;
        };
        let keyed = KEYED
            .iter()
            .find(|(name, _)| type_is(type_, name))
            .map(|(_, kind)| *kind);
        let (kind, key) = if type_is(type_, "UnsubscribeExConversations") {
            let sid = rec.subscription_id.as_str().map(str::to_owned);
            (Kind::Unsubscribe, sid)
        } else if let Some(kind) = keyed {
            (kind, None)
        } else if type_is(type_, "SubscribeMessagingEvents") {
            match lifted(frame, BodyField::DialogId) {
                Some(Lifted::Str(dialog)) => (Kind::Messaging, Some(dialog.to_string())),
                _ => return,
            }
        } else {
            return;
        };
        let action = Action {
            kind,
            request_type: type_.expect("a routed request's type").to_owned(),
            t: rec.t.clone().into_owned(),
            frame: rec.n.as_int(),
            key,
        };
        match state.pending.get_mut(req_id) {
            Some(actions) => actions.push(action),
            None => {
                state.pending.insert(req_id.to_owned(), vec![action]);
            }
        }
    }

    fn response(&mut self, _ctx: &mut Context, frame: &Frame) {
        let rec = frame.rec;
        let conn = rec.conn.as_str().expect("an open connection's id");
        let state = self.conns.get_mut(conn).expect("an open connection");
        let Some(req_id) = rec.req_id.as_str() else {
            return;
        };
        let Some(actions) = state.pending.get_mut(req_id) else {
            return;
        };
        let code = &rec.code;
        let type_ = rec.type_.as_str();
        let Some(answered) = actions
            .iter()
            .position(|a| can_answer(type_, code, Some(&a.request_type)))
        else {
            return;
        };
        let action = actions.remove(answered);
        if actions.is_empty() {
            state.pending.shift_remove(req_id);
        }
        let t = &rec.t;
        if !matches!(code, Val::Int(c) if *c < 400) {
            // A refused subscription does not keep the events that came before its answer.
            if let (Kind::Messaging, Some(key)) = (action.kind, &action.key) {
                if state
                    .dialogs
                    .get(key)
                    .is_some_and(|s| s.requested_by(&action.t, action.frame))
                {
                    let stream = state.dialogs.shift_remove(key).expect("just found");
                    push_row(&mut self.rows, conn, stream, t);
                }
            }
            return;
        }
        let stream = match action.kind {
            Kind::Unsubscribe => {
                let key = action.key.as_deref();
                if let Some(stream) = key.and_then(|k| state.streams.get_mut(k)) {
                    stream.t_unsubscribed = t.clone().into_owned();
                }
                return;
            }
            kind if kind.keyed() => {
                let Some(key) = rec.subscription_id.as_str() else {
                    return;
                };
                // Notifications may have come before this response.
                let stream = state
                    .streams
                    .entry(key.to_owned())
                    .or_insert_with(|| Stream::new(kind, key));
                stream.kind = kind;
                stream
            }
            kind => {
                let key = action
                    .key
                    .as_deref()
                    .expect("a messaging subscription's dialog");
                let previous = state.dialogs.get_mut(key);
                match previous {
                    Some(previous) if !previous.requested_by(&action.t, action.frame) => {
                        let ended = std::mem::replace(previous, Stream::new(kind, key));
                        push_row(&mut self.rows, conn, ended, t);
                    }
                    // The events that came while this subscription was unanswered are already
                    // counted on it.
                    Some(_) => {}
                    None => {
                        state.dialogs.insert(key.to_owned(), Stream::new(kind, key));
                    }
                }
                state.dialogs.get_mut(key).expect("just set")
            }
        };
        stream.request_type = Some(action.request_type);
        stream.t_request = action.t;
        stream.request_frame = action.frame;
        stream.t_confirmed = t.clone().into_owned();
    }

    fn notification(&mut self, ctx: &mut Context, frame: &Frame) {
        let rec = frame.rec;
        let conn = rec.conn.as_str().expect("an open connection's id");
        let state = self.conns.get_mut(conn).expect("an open connection");
        if let Some(sid) = rec.subscription_id.as_str() {
            if !state.streams.contains_key(sid) {
                let pending_kind = state
                    .pending
                    .values()
                    .flatten()
                    .map(|a| a.kind)
                    .find(|k| k.keyed());
                let Some(kind) = pending_kind else {
                    let message = || {
                        format!(
                            "notification for unknown subscription {}",
                            py_str_ascii(sid)
                        )
                    };
                    unknown(ctx, state, rec, sid, message, None);
                    return;
                };
                state.streams.insert(sid.to_owned(), Stream::new(kind, sid));
            }
            let stream = state.streams.get_mut(sid).expect("just found or added");
            count(ctx, stream, rec);
        } else if is_messaging_notification(rec.type_.as_str()) {
            let events = lifted(frame, BodyField::Events);
            let events: &[Lifted] = match events {
                Some(Lifted::Array(events)) => events,
                _ => &[],
            };
            if let [event] = events {
                if let Some(dialog) = dialog_of(event) {
                    count_dialog(ctx, state, rec, dialog);
                }
                return;
            }
            // Each dialog once, in the order of its first event (`dict.fromkeys`).
            let dialogs: IndexSet<&str> = events.iter().filter_map(dialog_of).collect();
            for dialog in dialogs {
                count_dialog(ctx, state, rec, dialog);
            }
        }
    }

    fn close(&mut self, _ctx: &mut Context, rec: &Record, _at_capture_end: bool) {
        let conn = rec.conn.as_str().expect("an open connection's id");
        let state = self.conns.remove(conn).expect("an open connection");
        for (_, stream) in state.streams.into_iter().chain(state.dialogs) {
            push_row(&mut self.rows, conn, stream, &rec.t);
        }
    }

    fn take_tables(&mut self) -> Vec<(&'static str, Vec<Row>)> {
        self.rows
            .as_mut()
            .map(std::mem::take)
            .map(|rows| vec![("streams", rows)])
            .unwrap_or_default()
    }
}

/// The dialogId of an entry of the lifted `events` (a string or null).
fn dialog_of<'e>(event: &'e Lifted) -> Option<&'e str> {
    match event {
        Lifted::Array(fields) => fields.first()?.as_str(),
        _ => None,
    }
}

/// One messaging event of `dialog`: counted on its stream, a pending subscription's, or (on an
/// agent connection) one opened for it; else reported.
fn count_dialog(ctx: &mut Context, state: &mut StreamConn, rec: &Record, dialog: &str) {
    if !state.dialogs.contains_key(dialog) && pending_dialog(state, dialog).is_none() {
        if !state.agent {
            let message = || {
                format!(
                    "messaging events for dialog {} that was not subscribed on this connection",
                    py_str_ascii(dialog)
                )
            };
            unknown(ctx, state, rec, dialog, message, Some("info"));
            return;
        }
        // The brand side delivers the events of the conversations the agent takes part in
        // without a subscription (Messaging Agent API — Getting Started, Step 7).
        let stream = Stream::new(Kind::Messaging, dialog);
        state.dialogs.insert(dialog.to_owned(), stream);
    }
    let stream = state.dialogs.get_mut(dialog).expect("found or added");
    count(ctx, stream, rec);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_matched_by_time_as_a_number_and_frame() {
        let mut stream = Stream::new(Kind::Messaging, "d");
        assert!(stream.requested_by(&Val::Null, None));
        stream.t_request = Val::Int(20);
        stream.request_frame = Some(3);
        assert!(stream.requested_by(&Val::Float(20.0), Some(3)));
        assert!(!stream.requested_by(&Val::Int(20), None));
        assert!(!stream.requested_by(&Val::Null, Some(3)));
        assert!(!stream.requested_by(&Val::Float(20.5), Some(3)));
    }

    #[test]
    fn times_keep_their_python_types_and_format() {
        assert_eq!(Val::Int(7).minus(&Val::Int(2)), Val::Int(5));
        assert_eq!(Val::Int(7).minus(&Val::Float(2.5)), Val::Float(4.5));
        // f"{x:.3f}": ties of the exact binary value to even, the sign of a negative zero kept.
        for (x, python) in [
            (1.0625, "1.062"),
            (0.0625, "0.062"),
            (-0.0, "-0.000"),
            (-0.0004, "-0.000"),
            (2.0005, "2.001"),
            (0.1235, "0.123"),
            (5.0, "5.000"),
        ] {
            assert_eq!(format!("{x:.3}"), python);
        }
    }

    #[test]
    fn kinds_and_their_names() {
        let keyed: Vec<&str> = KEYED.iter().map(|(_, kind)| kind.name()).collect();
        assert_eq!(keyed, ["conversations", "routing-tasks", "agent-states"]);
        assert!(KEYED.iter().all(|(_, kind)| kind.keyed()));
        assert!(!Kind::Messaging.keyed() && !Kind::Unsubscribe.keyed());
    }
}
