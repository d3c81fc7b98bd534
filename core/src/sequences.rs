//! Messaging events: per-dialog sequence gaps, duplicates and
//! regressions; whether and how fast the client (consumer or agent) acknowledged (ACCEPT, READ)
//! each message of another participant; publishing to closed conversations. Table `sequences`
//! (docs/analysis.md), built only when asked.
//!
//! Python compares the values it keys on with `==`: an originator 1, 1.0 and true are one id, a
//! sequence listed as 2.0 acknowledges sequence 2 (`NumKey`, `Originator`).

use serde_json::{Map, Value};

use crate::engine::{
    trim_oldest, Analyzer, Config, Context, FastMap, FastSet, Frame, Hook, OrderedMap, Row,
};
use crate::frame::{
    as_list, body, can_answer, is_conversation_notification, is_messaging_notification, lifted,
    type_is, BodyField, Lifted,
};
use crate::histogram::LogHistogram;
use crate::identity::{header_token, init_connection_token, is_agent_request, side_of_url, AGENT};
use crate::pyrepr::{py_format_g, py_str, py_str_ascii};
use crate::record::{JType, Record, Val};

const CONTENT_EVENTS: [&str; 2] = ["ContentEvent", "RichContentEvent"];
const CHAT_STATE: &str = "ChatStateEvent";
/// Recent sequences per dialog, at least (trim_oldest): duplicates, own echoes.
const SEEN_KEPT: usize = 1024;
/// Published sequences per connection still waiting for their notification.
const ECHOES_KEPT: usize = 1024;
/// Events stamped (on the server's clock) this long before the subscribe are history replay.
const HISTORY_SLACK_S: f64 = 1.0;
/// A GetClock answer further off the capture's clock than this is not a clock (a test's
/// `currentTime: 1`, a placeholder): it is not taken as the server's.
const CLOCK_OFFSET_MAX_S: f64 = 86_400.0;
/// Closed conversations, and closed dialogs, remembered (the earliest closed go first).
const CLOSED_IDS_KEPT: usize = 100_000;
/// How long an accepted message waits for its READ (bounds memory).
pub const READ_WAIT_S: f64 = 300.0;
/// A publish this soon after the close reached its connection may have crossed it in flight: the
/// client sent it before the notification reached it (a round trip between client and proxy).
const CROSSING_S: f64 = 1.0;
/// Closes a connection learned of (notified, or asked for), remembered per connection.
const KNOWN_CLOSES_KEPT: usize = 1024;
/// A GetClock answer that took longer than this says too little of the server's clock.
const CLOCK_RTT_MAX_S: f64 = 1.0;
const REQUESTS: [&str; 5] = [
    "PublishEvent",
    "SubscribeMessagingEvents",
    "UpdateConversationField",
    "InitConnection",
    "GetClock",
];
/// Columns of the `sequences` table filled in when the message is acknowledged.
const ACCEPT_MS: usize = 12;
const READ_MS: usize = 13;

/// A number as Python hashes and compares it: 1 == 1.0 == True.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NumKey {
    Int(i128),
    Float(u64),
}

fn num_key(value: &Lifted) -> Option<NumKey> {
    match value {
        Lifted::Bool(b) => Some(NumKey::Int(i128::from(*b))),
        Lifted::Int(i) => Some(NumKey::Int((*i).into())),
        Lifted::UInt(u) => Some(NumKey::Int((*u).into())),
        Lifted::Float(f) if f.fract() == 0.0 && f.abs() < 1e38 => Some(NumKey::Int(*f as i128)),
        Lifted::Float(f) => Some(NumKey::Float(f.to_bits())),
        _ => None,
    }
}

/// An originator id as a set member: a string or a number (None and containers are never kept).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Originator {
    Str(String),
    Num(NumKey),
}

impl Originator {
    fn of(value: &Lifted) -> Option<Originator> {
        match value {
            Lifted::Str(s) => Some(Originator::Str(s.to_string())),
            _ => num_key(value).map(Originator::Num),
        }
    }
}

/// The ids a connection's client goes by (`own_ids`), looked up without building a key.
#[derive(Default)]
struct OwnIds {
    strings: FastSet<String>,
    numbers: FastSet<NumKey>,
}

impl OwnIds {
    fn add(&mut self, id: Originator) {
        match id {
            Originator::Str(s) => self.strings.insert(s),
            Originator::Num(n) => self.numbers.insert(n),
        };
    }

    fn add_value(&mut self, value: &Lifted) {
        if let Some(id) = Originator::of(value) {
            self.add(id);
        }
    }

    /// `originator in own_ids` (None is never in it).
    fn contains(&self, value: &Lifted) -> bool {
        match value {
            Lifted::Str(s) => self.strings.contains(&**s),
            _ => num_key(value).is_some_and(|n| self.numbers.contains(&n)),
        }
    }
}

fn scalar_val(value: &Lifted) -> Val<'static> {
    match value {
        Lifted::Bool(b) => Val::Bool(*b),
        Lifted::Int(i) => Val::Int((*i).into()),
        Lifted::UInt(u) => Val::Int((*u).into()),
        Lifted::Float(f) => Val::Float(*f),
        Lifted::Str(s) => Val::Str(s.to_string().into()),
        _ => Val::Null,
    }
}

#[derive(Default)]
struct Dialog {
    subscribed_t: Option<f64>,
    last: Option<i128>,
    /// sequence -> its originator when that may be the consumer (no role, or role CONSUMER).
    seen: OrderedMap<i128, Option<Originator>>,
}

/// A message of another participant, waiting for the client's ACCEPT and READ.
struct Expect {
    conn: String,
    /// Which opening of `conn` it belongs to (a reopened connection id is a new state).
    serial: u64,
    dialog: String,
    conversation: Option<String>,
    seq: i128,
    t: f64,
    frame: Option<i128>,
    originator: Lifted<'static>,
    row: Option<Row>,
    accept_t: Option<f64>,
    read_t: Option<f64>,
    reported: bool,
    done: bool,
}

/// A publish waiting for its response: its dialog, and whether it was a chat state.
struct Publish {
    dialog: Option<String>,
    chat_state: bool,
}

#[derive(Default)]
struct SeqConn {
    serial: u64,
    own_ids: OwnIds,
    dialogs: FastMap<String, Dialog>,
    publishes: FastMap<String, Publish>,
    /// request id -> (conversations, dialogs) it closes (string ids only: others are never marked).
    closes: FastMap<String, (Vec<String>, Vec<String>)>,
    /// (dialog, seq) of own published events.
    echoes: FastSet<(Option<String>, i128)>,
    /// (dialog, seq) -> (insertion order, expect id): Python's dict order, kept on overwrite.
    awaiting: FastMap<(String, i128), (u64, u64)>,
    next_order: u64,
    /// An agent connection: the consumer's events are the others'; READ alone acknowledges.
    agent: bool,
    /// Closed conversation or dialog id -> when this connection learned of the close, and whether
    /// by its own close request (then it knew since it asked).
    known_closes: OrderedMap<String, (f64, bool)>,
    /// When the GetClock request now waiting for its answer was sent.
    clock_asked: Option<f64>,
    /// The server's clock minus the capture's, from the GetClock answer with the shortest round
    /// trip (`serverTimestamp`s are the server's, a subscribe's time is the capture's): its round
    /// trip and the offset.
    clock: Option<(f64, f64)>,
}

#[derive(Default)]
struct Counts {
    events: u64,
    sequenced: u64,
    from_others: u64,
    accepted: u64,
    read: u64,
}

pub struct Sequences {
    accept_timeout_s: f64,
    rows: Option<Vec<Row>>,
    conns: FastMap<String, SeqConn>,
    opened: u64,
    /// Closed conversations and dialogs (ids are global: a reconnect still publishes to them).
    closed_conversations: OrderedMap<String, f64>,
    closed_dialogs: OrderedMap<String, f64>,
    counts: Counts,
    accept_ms: LogHistogram,
    /// Expects still named by a deadline; a deadline's token is its id × 2 (+1 for the READ wait).
    expects: FastMap<u64, Expect>,
    next_expect: u64,
}

impl Sequences {
    /// `wanted(table)`: whether the `sequences` rows are kept.
    pub fn new(config: &Config, wanted: impl Fn(&str) -> bool) -> Self {
        Sequences {
            accept_timeout_s: config.accept_timeout_s,
            rows: wanted("sequences").then(Vec::new),
            conns: FastMap::default(),
            opened: 0,
            closed_conversations: OrderedMap::default(),
            closed_dialogs: OrderedMap::default(),
            counts: Counts::default(),
            accept_ms: LogHistogram::default(),
            expects: FastMap::default(),
            next_expect: 0,
        }
    }

    fn state(&mut self, rec: &Record) -> &mut SeqConn {
        let conn = rec.conn.as_str().expect("an open connection's id");
        self.conns.get_mut(conn).expect("an open connection")
    }

    fn publish(&mut self, ctx: &mut Context, frame: &Frame) {
        let Some(Lifted::Array(event)) = lifted(frame, BodyField::Event) else {
            return; // the body is not an object
        };
        let rec = frame.rec;
        // `event` is there, so the record was lifted: an absent dialogId / conversationId is
        // absent from the payload too. Only a malformed one sends us to the payload.
        let id_type = |t: JType| matches!(t, JType::Str | JType::Null | JType::Absent);
        let (dialog, conversation) = if frame.relifted.get().is_none()
            && id_type(rec.dialog_id.jtype())
            && id_type(rec.conversation_id.jtype())
        {
            (rec.dialog_id.string(), rec.conversation_id.string())
        } else {
            let text = |v: Option<&Lifted>| v.and_then(Lifted::as_str).map(str::to_owned);
            (
                text(lifted(frame, BodyField::DialogId)),
                text(lifted(frame, BodyField::ConversationId)),
            )
        };
        let (event_type, status) = (&event[0], &event[1]);
        let t = rec.t.number().expect("a record's time");
        let chat_state = event_type.as_str() == Some(CHAT_STATE);
        let any_closed = !self.closed_dialogs.is_empty() || !self.closed_conversations.is_empty();
        if !chat_state && any_closed {
            let earlier = |closed: &OrderedMap<String, f64>, id: &Option<String>| {
                let id = id.as_deref()?;
                closed.get(id).map(|&at| (id.to_owned(), at))
            };
            let closed = earlier(&self.closed_dialogs, &dialog)
                .map(|(id, at)| ("dialog", id, at))
                .or_else(|| {
                    earlier(&self.closed_conversations, &conversation)
                        .map(|(id, at)| ("conversation", id, at))
                });
            if let Some((what, id, at)) = closed {
                let conn = rec.conn.as_str().expect("an open connection's id");
                let known = self.conns[conn].known_closes.get(&id).copied();
                let (event_type, id) = (py_str(&event_type.to_serde()), py_str_ascii(&id));
                let crossing = match known {
                    Some((_, true)) => None, // its own close request: it knew
                    Some((told, false)) => Some((t - told, "after its close notification")),
                    None => Some((t - at, "after it closed, before this connection was told")),
                };
                let (message, severity) = match crossing {
                    Some((s, after)) if s < CROSSING_S => {
                        let message = format!(
                            "{event_type} published to {what} {id} {s:.3} s {after}: \
                             it may have crossed the close in flight"
                        );
                        (message, Some("info"))
                    }
                    _ => {
                        let s = t - at;
                        let message = format!(
                            "{event_type} published to {what} {id} closed {s:.1} s earlier"
                        );
                        (message, None)
                    }
                };
                ctx.at_message("publish-after-close", rec, message, severity);
            }
        }
        let conn = rec.conn.as_str().expect("an open connection's id");
        let state = self.conns.get_mut(conn).expect("an open connection");
        let status = status.as_str().filter(|s| {
            event_type.as_str() == Some("AcceptStatusEvent") && ["ACCEPT", "READ"].contains(s)
        });
        if let (Some(status), Some(dialog), Lifted::Array(sequences)) = (status, &dialog, &event[2])
        {
            for seq in sequences {
                let Some(NumKey::Int(seq)) = num_key(seq) else {
                    continue;
                };
                let Some(&(_, id)) = state.awaiting.get(&(dialog.clone(), seq)) else {
                    continue;
                };
                let expect = self.expects.get_mut(&id).expect("an awaited message");
                if status == "ACCEPT" {
                    if expect.accept_t.is_none() {
                        expect.accept_t = Some(t);
                        self.counts.accepted += 1;
                        self.accept_ms.add((t - expect.t) * 1000.0);
                    }
                } else if expect.read_t.is_none() {
                    expect.read_t = Some(t);
                    self.counts.read += 1;
                    if expect.accept_t.is_none()
                        && !expect.reported
                        && !state.agent
                        && !state.own_ids.contains(&expect.originator)
                    {
                        expect.reported = true;
                        let message = format!(
                            "READ published for sequence {} of dialog {} from {} without an ACCEPT before it",
                            expect.seq,
                            py_str_ascii(&expect.dialog),
                            py_str(&expect.originator.to_serde())
                        );
                        ctx.at_message("missing-accept", rec, message, None);
                    }
                }
                if expect.read_t.is_some() {
                    finalize(Some(state), expect, &mut self.rows);
                }
            }
        }
        if let Some(id) = rec.id.as_str() {
            state
                .publishes
                .insert(id.to_owned(), Publish { dialog, chat_state });
        }
    }

    fn close_request(&mut self, frame: &Frame) {
        let Some(Value::Object(body)) = body(frame) else {
            return;
        };
        let Some(id) = frame.rec.id.as_str() else {
            return;
        };
        let conversation = body.get("conversationId");
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let (mut conversations, mut dialogs) = (Vec::new(), Vec::new());
        let mut closes_any = false;
        for item in as_list(body.get("conversationField")) {
            let Some(item) = item.as_object() else {
                continue;
            };
            let name = item.get("field").and_then(Value::as_str);
            let state = item.get("conversationState").and_then(Value::as_str);
            if matches!(name, Some("ConversationStateField" | "Stage")) && state == Some("CLOSE") {
                closes_any = true;
                conversations.extend(text(conversation));
                dialogs.extend(text(conversation));
            } else if name == Some("DialogChange") {
                if let Some(Value::Object(dialog)) = item.get("dialog") {
                    if dialog.get("state").and_then(Value::as_str) == Some("CLOSE") {
                        closes_any = true;
                        dialogs.extend(text(dialog.get("dialogId")));
                    }
                }
            }
        }
        if closes_any {
            let state = self.state(frame.rec);
            state.closes.insert(id.to_owned(), (conversations, dialogs));
        }
    }

    fn conversation_changes(&mut self, frame: &Frame) {
        let Some(Value::Object(body)) = body(frame) else {
            return;
        };
        let t = frame.rec.t.number().expect("a record's time");
        let conn = frame.rec.conn.as_str().expect("an open connection's id");
        for change in as_list(body.get("changes")) {
            let Some(change) = change.as_object() else {
                continue;
            };
            if change.get("type").and_then(Value::as_str) != Some("UPSERT") {
                continue;
            }
            let Some(Value::Object(result)) = change.get("result") else {
                continue;
            };
            let (Some(Value::Object(details)), Some(Value::String(conversation))) =
                (result.get("conversationDetails"), result.get("convId"))
            else {
                continue;
            };
            let state = details.get("state");
            let stage = details.get("stage").filter(|s| truthy(s)).or(state);
            let known = &mut self
                .conns
                .get_mut(conn)
                .expect("an open connection")
                .known_closes;
            set_closed(&mut self.closed_dialogs, known, conversation, state, t);
            set_closed(
                &mut self.closed_conversations,
                known,
                conversation,
                stage,
                t,
            );
            for dialog in as_list(details.get("dialogs")) {
                if let Some(Value::String(id)) = dialog.get("dialogId") {
                    set_closed(&mut self.closed_dialogs, known, id, dialog.get("state"), t);
                }
            }
        }
    }

    /// One entry of the `events` index field (see lift.rs's `lift_body`).
    fn change(&mut self, ctx: &mut Context, conn: &str, rec: &Record, event: &[Lifted]) {
        let [dialog, conversation, seq, event_type, status, originator, role, stamp] = event else {
            return;
        };
        let Some(dialog) = dialog.as_str() else {
            return;
        };
        let seq = seq.as_int();
        let state = self.conns.get_mut(conn).expect("an open connection");
        if !state.dialogs.contains_key(dialog) {
            state.dialogs.insert(dialog.to_owned(), Dialog::default());
        }
        // An explicit role wins over the sequence a publish response returned: the tutorials show
        // an agent's ACCEPT at the sequence the consumer's own publish was answered with.
        let echo = match seq {
            Some(seq) if !state.echoes.is_empty() => {
                state.echoes.remove(&(Some(dialog.to_owned()), seq))
            }
            _ => false,
        };
        // The consumer's events are never an agent's own, and on a consumer connection an agent's
        // are never the client's.
        let consumer = role.as_str() == Some("CONSUMER");
        let maybe_own = role.is_null() || (consumer != state.agent);
        if !originator.is_null() && ((consumer && !state.agent) || (echo && maybe_own)) {
            state.own_ids.add_value(originator);
        }
        let own = state.own_ids.contains(originator);
        let (agent, offset) = (state.agent, state.clock.map_or(0.0, |(_, offset)| offset));
        let d = state
            .dialogs
            .get_mut(dialog)
            .expect("the dialog, added above");
        let history = d.subscribed_t.is_some_and(|subscribed| {
            let stamp = match stamp {
                Lifted::Bool(b) => Some(f64::from(u8::from(*b))),
                Lifted::Int(i) => Some(*i as f64),
                Lifted::UInt(u) => Some(*u as f64),
                Lifted::Float(f) => Some(*f),
                _ => None,
            };
            stamp.is_some_and(|s| s / 1000.0 - offset < subscribed - HISTORY_SLACK_S)
        });
        self.counts.events += 1;
        if let Some(seq) = seq {
            self.counts.sequenced += 1;
            match d.last {
                Some(last) if seq != last + 1 => {
                    out_of_order(ctx, d, rec, (dialog, agent), seq, last)
                }
                _ => d.last = Some(seq),
            }
            let kept = if maybe_own {
                Originator::of(originator)
            } else {
                None
            };
            d.seen.insert(seq, kept);
            trim_oldest(&mut d.seen, SEEN_KEPT);
        }
        let row = self.rows.as_ref().map(|_| -> Row {
            vec![
                ("conn", Val::Str(conn.to_owned().into())),
                ("t", rec.t.clone().into_owned()),
                ("frame", rec.n.clone().into_owned()),
                ("dialog_id", Val::Str(dialog.to_owned().into())),
                ("conversation_id", scalar_val(conversation)),
                ("sequence", seq.map_or(Val::Null, Val::Int)),
                ("event_type", scalar_val(event_type)),
                ("status", scalar_val(status)),
                ("originator_id", scalar_val(originator)),
                ("originator_role", scalar_val(role)),
                ("own", Val::Bool(own)),
                ("history", Val::Bool(history)),
                ("accept_ms", Val::Null),
                ("read_ms", Val::Null),
            ]
        });
        let content = event_type
            .as_str()
            .is_some_and(|t| CONTENT_EVENTS.contains(&t));
        match seq {
            Some(seq) if !own && !history && content => {
                self.counts.from_others += 1;
                let t = rec.t.number().expect("a record's time");
                let id = self.next_expect;
                self.next_expect += 1;
                self.expects.insert(
                    id,
                    Expect {
                        conn: conn.to_owned(),
                        serial: state.serial,
                        dialog: dialog.to_owned(),
                        conversation: conversation.as_str().map(str::to_owned),
                        seq,
                        t,
                        frame: rec.n.as_int(),
                        originator: originator.clone().into_owned(),
                        row,
                        accept_t: None,
                        read_t: None,
                        reported: false,
                        done: false,
                    },
                );
                let order = state.next_order;
                state.next_order += 1;
                state
                    .awaiting
                    .entry((dialog.to_owned(), seq))
                    .and_modify(|entry| entry.1 = id)
                    .or_insert((order, id));
                ctx.after(t, self.accept_timeout_s, id * 2);
            }
            _ => {
                if let (Some(rows), Some(row)) = (self.rows.as_mut(), row) {
                    rows.push(row);
                }
            }
        }
    }

    /// The state an expect belongs to, unless its connection closed since.
    fn state_of<'c>(
        conns: &'c mut FastMap<String, SeqConn>,
        expect: &Expect,
    ) -> Option<&'c mut SeqConn> {
        conns
            .get_mut(&expect.conn)
            .filter(|state| state.serial == expect.serial)
    }

    fn accept_due(&mut self, ctx: &mut Context, deadline: f64, id: u64) {
        let mut expect = self
            .expects
            .remove(&id)
            .expect("a deadline this analyzer set");
        let Some(state) = Self::state_of(&mut self.conns, &expect) else {
            return; // closed: the close reported and finalized it
        };
        if expect.done {
            return;
        }
        // (an agent's READ has finalized its message already: an agent may READ without ACCEPT)
        if expect.accept_t.is_none() && !state.own_ids.contains(&expect.originator) {
            expect.reported = true;
            let closed = closed_at(&self.closed_dialogs, &self.closed_conversations, &expect);
            let dialog = py_str_ascii(&expect.dialog);
            let within = format!(
                "from {} within {} s",
                py_str(&expect.originator.to_serde()),
                py_format_g(self.accept_timeout_s)
            );
            let (message, severity) = if let Some((what, at)) = closed {
                // An ACCEPT would be a publish to a closed dialog: not acknowledging is right.
                (closed_message(&expect, state.agent, what, at), Some("info"))
            } else if state.agent {
                let message = format!(
                    "the agent acknowledged (ACCEPT or READ) no consumer message at sequence {} of dialog {dialog} {within}",
                    expect.seq
                );
                (message, None)
            } else {
                let read = if expect.read_t.is_some() {
                    " (a READ was sent)"
                } else {
                    ""
                };
                let message = format!(
                    "no ACCEPT for sequence {} of dialog {dialog} {within}{read}",
                    expect.seq
                );
                (message, None)
            };
            ctx.violation(
                "missing-accept",
                Some(&expect.conn),
                &Val::Float(deadline),
                expect.frame,
                message,
                severity,
                false,
            );
        }
        // An accepted message waits for its READ, but not forever (bounded memory).
        if expect.accept_t.is_none() {
            finalize(Some(state), &mut expect, &mut self.rows);
        } else {
            ctx.after(expect.t, READ_WAIT_S, id * 2 + 1);
            self.expects.insert(id, expect);
        }
    }

    fn read_due(&mut self, id: u64) {
        let mut expect = self
            .expects
            .remove(&id)
            .expect("a deadline this analyzer set");
        if !expect.done {
            let state = Self::state_of(&mut self.conns, &expect);
            finalize(state, &mut expect, &mut self.rows);
        }
    }
}

/// Python's truthiness of a JSON value (`stage or state`).
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(entries) => !entries.is_empty(),
    }
}

fn mark(closed: &mut OrderedMap<String, f64>, key: &str, t: f64) {
    if !closed.contains_key(key) {
        closed.insert(key.to_owned(), t);
        trim_oldest(closed, CLOSED_IDS_KEPT);
    }
}

/// When the dialog of an awaited message closed, or else its conversation (then named).
fn closed_at(
    dialogs: &OrderedMap<String, f64>,
    conversations: &OrderedMap<String, f64>,
    expect: &Expect,
) -> Option<(Option<String>, f64)> {
    let conversation = expect.conversation.as_deref().unwrap_or(&expect.dialog);
    let dialog = dialogs.get(&expect.dialog).map(|&at| (None, at));
    dialog.or_else(|| {
        let at = *conversations.get(conversation)?;
        Some((Some(py_str_ascii(conversation)), at))
    })
}

/// Why an awaited message's missing ACCEPT is no fault: its dialog, or (`conversation`, named) its
/// conversation, closed `at`, before the deadline or even before the message arrived.
fn closed_message(expect: &Expect, agent: bool, conversation: Option<String>, at: f64) -> String {
    let (seq, dialog) = (expect.seq, py_str_ascii(&expect.dialog));
    if at < expect.t {
        let what = conversation.map_or("the dialog".to_owned(), |c| format!("conversation {c}"));
        let s = expect.t - at;
        return format!(
            "sequence {seq} of dialog {dialog} arrived {s:.1} s after {what} closed, and was not acknowledged"
        );
    }
    let before = if agent {
        "before the agent's ACCEPT or READ"
    } else {
        "before any ACCEPT"
    };
    let s = at - expect.t;
    match conversation {
        None => format!("dialog {dialog} closed {s:.1} s after sequence {seq} arrived, {before}"),
        Some(c) => format!(
            "conversation {c} closed {s:.1} s after sequence {seq} of dialog {dialog} arrived, {before}"
        ),
    }
}

/// A conversation notification's `state`: CLOSE closes, OPEN reopens; `known`: the closes the
/// notification's connection learned of.
fn set_closed(
    closed: &mut OrderedMap<String, f64>,
    known: &mut OrderedMap<String, (f64, bool)>,
    key: &str,
    state: Option<&Value>,
    t: f64,
) {
    match state.and_then(Value::as_str) {
        Some("CLOSE") => {
            mark(closed, key, t);
            if !known.contains_key(key) {
                known.insert(key.to_owned(), (t, false));
                trim_oldest(known, KNOWN_CLOSES_KEPT);
            }
        }
        Some("OPEN") => {
            closed.shift_remove(key);
            known.shift_remove(key);
        }
        _ => {}
    }
}

/// `of`: the dialog, and whether the connection is an agent's.
fn out_of_order(
    ctx: &mut Context,
    d: &mut Dialog,
    rec: &Record,
    of: (&str, bool),
    seq: i128,
    last: i128,
) {
    let (dialog, agent) = (py_str_ascii(of.0), of.1);
    if seq > last + 1 {
        let missing = if seq == last + 2 {
            format!("{}", last + 1)
        } else {
            format!("{}-{}", last + 1, seq - 1)
        };
        d.last = Some(seq);
        let message = format!("dialog {dialog}: sequence {seq} after {last} (missing {missing})");
        if agent {
            ctx.at_message("sequence-gap", rec, message, None);
        } else {
            // A conversation numbers every event, and a message for agents only is never sent to
            // the consumer: a consumer's gap is not proof of a loss.
            let message = format!("{message}: lost, or a message for agents only");
            ctx.at_message("sequence-gap", rec, message, Some("info"));
        }
        return;
    }
    let (rule, message) = if d.seen.contains_key(&seq) {
        (
            "sequence-duplicate",
            format!("dialog {dialog}: sequence {seq} delivered again"),
        )
    } else {
        (
            "sequence-regression",
            format!("dialog {dialog}: sequence {seq} after {last}"),
        )
    };
    ctx.at_message(rule, rec, message, None);
}

/// The message is done with: off its connection's awaited messages, its row (if kept) written.
fn finalize(state: Option<&mut SeqConn>, expect: &mut Expect, rows: &mut Option<Vec<Row>>) {
    expect.done = true;
    if let Some(state) = state {
        state.awaiting.remove(&(expect.dialog.clone(), expect.seq));
    }
    if let Some(mut row) = expect.row.take() {
        if let Some(accept_t) = expect.accept_t {
            row[ACCEPT_MS].1 = Val::Float((accept_t - expect.t) * 1000.0);
        }
        if let Some(read_t) = expect.read_t {
            row[READ_MS].1 = Val::Float((read_t - expect.t) * 1000.0);
        }
        rows.as_mut().expect("rows are kept").push(row);
    }
}

impl Analyzer for Sequences {
    fn wants(&self, hook: Hook, _direction: &str, type_: Option<&str>) -> bool {
        match hook {
            Hook::Request => {
                REQUESTS.iter().any(|name| type_is(type_, name)) || is_agent_request(type_)
            }
            Hook::Notification => {
                is_messaging_notification(type_) || is_conversation_notification(type_)
            }
            Hook::Response => true,
            Hook::Message => false,
        }
    }

    fn open(&mut self, _ctx: &mut Context, rec: &Record) {
        self.opened += 1;
        let mut state = SeqConn {
            serial: self.opened,
            agent: side_of_url(&rec.url) == Some(AGENT),
            ..SeqConn::default()
        };
        if let Some(sub) = header_token(rec).and_then(|token| token.sub) {
            state.own_ids.add(Originator::Str(sub));
        }
        let conn = rec.conn.as_str().expect("an open connection's id");
        self.conns.insert(conn.to_owned(), state);
    }

    fn request(&mut self, _ctx: &mut Context, frame: &Frame) {
        let type_ = frame.rec.type_.as_str();
        if is_agent_request(type_) {
            self.state(frame.rec).agent = true;
        } else if type_is(type_, "PublishEvent") {
            self.publish(_ctx, frame);
        } else if type_is(type_, "SubscribeMessagingEvents") {
            if let Some(Lifted::Str(dialog)) = lifted(frame, BodyField::DialogId) {
                let t = frame.rec.t.number().expect("a record's time");
                let dialogs = &mut self.state(frame.rec).dialogs;
                dialogs.insert(
                    dialog.to_string(),
                    Dialog {
                        subscribed_t: Some(t),
                        ..Dialog::default()
                    },
                );
            }
        } else if type_is(type_, "UpdateConversationField") {
            self.close_request(frame);
        } else if type_is(type_, "GetClock") {
            self.state(frame.rec).clock_asked = frame.rec.t.number();
        } else if type_is(type_, "InitConnection") {
            if let Some(sub) = init_connection_token(frame.payload()).and_then(|token| token.sub) {
                self.state(frame.rec).own_ids.add(Originator::Str(sub));
            }
        }
    }

    fn response(&mut self, _ctx: &mut Context, frame: &Frame) {
        let rec = frame.rec;
        let (code, type_) = (&rec.code, rec.type_.as_str());
        let t = rec.t.number().expect("a record's time");
        if type_.is_some_and(|name| name.contains("GetClock")) {
            let state = self.state(rec);
            let Some(asked) = state.clock_asked.take() else {
                return;
            };
            let rtt = t - asked;
            let better = state.clock.is_none_or(|(best, _)| rtt < best);
            if !(rtt <= CLOCK_RTT_MAX_S && better) {
                return; // the payload is read only for an answer that could be taken
            }
            let now = body(frame)
                .and_then(|b| b.get("currentTime"))
                .and_then(Value::as_f64);
            let offset = now.map(|ms| ms / 1000.0 - (asked + t) / 2.0);
            if let Some(offset) = offset.filter(|s| s.abs() <= CLOCK_OFFSET_MAX_S) {
                state.clock = Some((rtt, offset));
            }
            return;
        }
        let Some(req_id) = rec.req_id.as_str() else {
            return; // None is never a request id kept
        };
        let ok = matches!(code, Val::Int(code) if *code < 400);
        let conn = rec.conn.as_str().expect("an open connection's id");
        let state = self.conns.get_mut(conn).expect("an open connection");
        if state.publishes.contains_key(req_id) && can_answer(type_, code, Some("ms.PublishEvent"))
        {
            let publish = state.publishes.remove(req_id).expect("checked above");
            if ok && !publish.chat_state {
                if let Some(seq) = lifted(frame, BodyField::Sequence).and_then(Lifted::as_int) {
                    own_published(state, publish.dialog, seq);
                }
            }
            return;
        }
        if !state.closes.contains_key(req_id)
            || !can_answer(type_, code, Some("cm.UpdateConversationField"))
        {
            return;
        }
        let (conversations, dialogs) = state.closes.remove(req_id).expect("checked above");
        if ok {
            for (closed, ids) in [
                (&mut self.closed_conversations, conversations),
                (&mut self.closed_dialogs, dialogs),
            ] {
                for id in ids {
                    mark(closed, &id, t);
                    state.known_closes.insert(id, (t, true));
                    trim_oldest(&mut state.known_closes, KNOWN_CLOSES_KEPT);
                }
            }
        }
    }

    fn notification(&mut self, ctx: &mut Context, frame: &Frame) {
        let rec = frame.rec;
        let type_ = rec.type_.as_str();
        if is_messaging_notification(type_) {
            let conn = rec.conn.as_str().expect("an open connection's id");
            if let Some(Lifted::Array(events)) = lifted(frame, BodyField::Events) {
                for event in events {
                    if let Lifted::Array(event) = event {
                        self.change(ctx, conn, rec, event);
                    }
                }
            }
        } else if is_conversation_notification(type_)
            && (text_has_close(rec)
                || !self.closed_dialogs.is_empty()
                || !self.closed_conversations.is_empty())
        {
            self.conversation_changes(frame);
        }
    }

    fn deadline(&mut self, ctx: &mut Context, deadline: f64, token: u64) {
        if token.is_multiple_of(2) {
            self.accept_due(ctx, deadline, token / 2);
        } else {
            self.read_due(token / 2);
        }
    }

    fn close(&mut self, ctx: &mut Context, rec: &Record, at_capture_end: bool) {
        let conn = rec.conn.as_str().expect("an open connection's id");
        let mut state = self.conns.remove(conn).expect("an open connection");
        let t = rec.t.number().expect("a record's time");
        let mut awaiting: Vec<(u64, u64)> =
            state.awaiting.drain().map(|(_, entry)| entry).collect();
        awaiting.sort_unstable();
        for (_, id) in awaiting {
            let expect = self.expects.get_mut(&id).expect("an awaited message");
            let acknowledged =
                expect.accept_t.is_some() || (state.agent && expect.read_t.is_some());
            if !acknowledged && !expect.reported && !state.own_ids.contains(&expect.originator) {
                // Still within its allowance: the client closed (or the capture ended) before the deadline.
                let waited = t - expect.t;
                let ended = if at_capture_end {
                    "the capture ended"
                } else {
                    "the connection closed"
                };
                let (what, before) = if state.agent {
                    (
                        "the consumer message at sequence",
                        "before the agent's ACCEPT or READ",
                    )
                } else {
                    ("sequence", "before any ACCEPT")
                };
                let message = format!(
                    "{ended} {waited:.1} s after {what} {} of dialog {} arrived, {before}",
                    expect.seq,
                    py_str_ascii(&expect.dialog)
                );
                ctx.violation(
                    "missing-accept",
                    Some(conn),
                    &rec.t,
                    None,
                    message,
                    Some("info"),
                    at_capture_end,
                );
            }
            finalize(None, expect, &mut self.rows);
        }
    }

    fn stats(&self) -> Map<String, Value> {
        let c = &self.counts;
        let percentile = |q| {
            self.accept_ms
                .percentile(q)
                .map_or(Value::Null, Value::from)
        };
        let messaging: Map<String, Value> = [
            ("events", Value::from(c.events)),
            ("sequenced", Value::from(c.sequenced)),
            ("from_others", Value::from(c.from_others)),
            ("accepted", Value::from(c.accepted)),
            ("read", Value::from(c.read)),
            ("accept_p50_ms", percentile(50.0)),
            ("accept_p90_ms", percentile(90.0)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        // The accept times themselves, for the merge of `--jobs` (analysis.parallel), which
        // works the percentiles out again; the summary shows only `messaging`.
        Map::from_iter([
            ("messaging".to_owned(), Value::Object(messaging)),
            ("accept_ms".to_owned(), self.accept_ms.state()),
        ])
    }

    fn take_tables(&mut self) -> Vec<(&'static str, Vec<Row>)> {
        self.rows
            .as_mut()
            .map(std::mem::take)
            .map(|rows| ("sequences", rows))
            .into_iter()
            .collect()
    }
}

/// The echo of an own event tells the client's own originatorId, whichever comes first.
fn own_published(state: &mut SeqConn, dialog: Option<String>, seq: i128) {
    let originator = dialog
        .as_deref()
        .and_then(|d| state.dialogs.get(d))
        .and_then(|d| d.seen.get(&seq).cloned().flatten());
    if let Some(originator) = originator {
        state.own_ids.add(originator);
        return;
    }
    if state.echoes.len() >= ECHOES_KEPT {
        state.echoes.clear();
    }
    state.echoes.insert((dialog, seq));
}

/// `"CLOSE" in rec["text"]`, on the JSON text when it has no escapes.
fn text_has_close(rec: &Record) -> bool {
    let Some(json) = rec.text.0 else {
        return false;
    };
    if json.contains('\\') {
        rec.text.string().is_some_and(|text| text.contains("CLOSE"))
    } else {
        json.contains("CLOSE")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Lifted<'_> {
        crate::json_value::parse_as_serde(text).expect("JSON")
    }

    #[test]
    fn numbers_compare_as_python_compares_them() {
        assert_eq!(num_key(&value("1")), num_key(&value("1.0")));
        assert_eq!(num_key(&value("true")), num_key(&value("1")));
        assert_eq!(num_key(&value("-0.0")), num_key(&value("0")));
        assert_eq!(
            num_key(&value("18446744073709551615")),
            Some(NumKey::Int(18446744073709551615))
        );
        assert_ne!(num_key(&value("1.5")), num_key(&value("1")));
        assert_eq!(num_key(&value("\"1\"")), None);
        let mut own = OwnIds::default();
        own.add_value(&value("1.0"));
        own.add_value(&value("\"me\""));
        assert!(own.contains(&value("true")) && own.contains(&value("\"me\"")));
        assert!(!own.contains(&value("\"1\"")) && !own.contains(&value("null")));
    }

    #[test]
    fn values_printed_as_str_prints_them() {
        let printed: Vec<String> = ["\"agent-1\"", "null", "true", "1e16", "2.0", "7"]
            .iter()
            .map(|v| py_str(&value(v).to_serde()))
            .collect();
        assert_eq!(printed, ["agent-1", "None", "True", "1e+16", "2.0", "7"]);
        let truthy = |text| truthy(&value(text).to_serde());
        assert!(truthy("\"CLOSE\"") && !truthy("\"\"") && !truthy("0.0"));
        assert!(!truthy("[]") && truthy("{\"a\":1}"));
    }
}
