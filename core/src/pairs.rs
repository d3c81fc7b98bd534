//! Request/response pairing: latency, unanswered requests, orphan and
//! error responses, responses of a type that cannot answer their request, request ids, response
//! codes, and requests sent before the InitConnection response. Table `pairs` (docs/analysis.md).
//!
//! A response is paired with the oldest outstanding request of its `reqId` that its type can
//! answer (`frame::can_answer`). Requests waiting for their response are kept in the order sent
//! with one deadline armed for the oldest, as in Python, so that timeouts fire in the same order.
//!
//! Stats: `requests` (the counts, in Python's key order) and `latency`, one object per request
//! type in the order first answered, each the state of its histogram as
//! `LogHistogram.state()` writes it (`count`, `non_positive`, `min`, `max`, `buckets`: [index, n]
//! by index; `LogHistogram.from_state` rebuilds it). The keys are the request types, except that
//! Python's None key (requests without a type) is written "\u0000none" and a type that itself
//! starts with "\u0000" gets one more "\u0000" in front: no type can be mistaken for None.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::ops::{Index, IndexMut};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::engine::{
    trim_oldest, Analyzer, Config, Context, FastMap, FastSet, Frame, Hook, OrderedMap, Row,
};
use crate::frame::{can_answer, type_is};
use crate::histogram::LogHistogram;
use crate::identity::{header_token, other_token_header, url_token};
use crate::pyrepr::{py_float, py_format_g, py_str_ascii};
use crate::record::{Record, Val};

/// Answered ids remembered per connection, at least (see trim_oldest), for `reused-request-id`.
pub const ANSWERED_IDS_KEPT: usize = 10_000;
/// The `latency` key standing for Python's None (a request without a type).
pub const NONE_KEY: &str = "\u{0}none";

struct Req {
    /// Told apart from a later request in the same slot (`Pairs::pending` may name either).
    serial: u64,
    t: Val<'static>,
    n: Option<i128>,
    id: String,
    type_: Option<String>,
    conn: Arc<str>,
    timed_out: bool,
    /// Waiting for its response with a deadline (Python: a key of `Pairs.pending`).
    pending: bool,
    /// Later requests with the same id, outstanding with this one.
    queued: Vec<usize>,
    /// Sent before the InitConnection response: what the verdict says of it.
    early: Option<String>,
}

struct PairConn {
    name: Arc<str>,
    awaiting_init: bool,
    /// id -> (insertion order, the oldest request outstanding with that id): Python's dict order
    /// (replacing a value keeps its place) without an O(n) removal.
    outstanding: FastMap<String, (u64, usize)>,
    next_order: u64,
    /// Insertion-ordered, bounded by trim_oldest.
    answered: OrderedMap<String, ()>,
    reuse_reported: FastSet<String>,
    init_ids: FastSet<String>,
    /// A token sent in a header the API does not read.
    token_header: Option<String>,
}

/// The request types the config names.
struct RequestTypes {
    /// Not answered by the server: never waited for.
    no_response: Vec<String>,
    /// Allowed before the InitConnection response.
    init_exempt: Vec<String>,
}

#[derive(Default)]
struct Counts {
    total: i64,
    answered: i64,
    unanswered: i64,
    open_at_end: i64,
    late: i64,
    orphan_responses: i64,
    error_responses: i64,
}

/// The outstanding requests, each in a slot used again once it is answered or dropped: no hashing
/// per request, memory bounded by the requests outstanding at once.
#[derive(Default)]
struct Slab {
    slots: Vec<Option<Req>>,
    free: Vec<usize>,
}

impl Slab {
    fn insert(&mut self, req: Req) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(req);
                slot
            }
            None => {
                self.slots.push(Some(req));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, slot: usize) -> Req {
        let req = self.slots[slot].take().expect("an outstanding request");
        self.free.push(slot);
        req
    }

    /// Whether the request `serial` is in `slot` and waits for its response.
    fn waits(&self, slot: usize, serial: u64) -> bool {
        matches!(&self.slots[slot], Some(r) if r.serial == serial && r.pending)
    }
}

impl Index<usize> for Slab {
    type Output = Req;
    fn index(&self, slot: usize) -> &Req {
        self.slots[slot].as_ref().expect("an outstanding request")
    }
}

impl IndexMut<usize> for Slab {
    fn index_mut(&mut self, slot: usize) -> &mut Req {
        self.slots[slot].as_mut().expect("an outstanding request")
    }
}

pub struct Pairs {
    timeout: f64,
    types: RequestTypes,
    conns: FastMap<String, PairConn>,
    reqs: Slab,
    next_serial: u64,
    /// (slot, serial) of the requests waiting for their response, in the order sent; an entry
    /// whose request no longer waits is skipped (and dropped when they outnumber the live ones).
    pending: VecDeque<(usize, u64)>,
    live_pending: usize,
    armed: bool,
    counts: Counts,
    latency: OrderedMap<Option<String>, LogHistogram>,
    rows: Option<Vec<Row>>,
    /// The `LINKS` table's rows.
    links: Option<Vec<Row>>,
}

/// An internal table: of each answered request, the connection and the frames of the request and
/// its response (what the pairs table says of them, without the rest of its row: `mwtap view`'s
/// index links the two, core/src/locations.rs).
pub const LINKS: &str = "pair_links";

/// `f"{x}"` of a type or frame number that may be None.
fn or_none<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "None".to_owned(), |v| v.to_string())
}

/// `ascii(code)` of a response's scalar `code`.
fn code_ascii(code: &Val) -> String {
    match code {
        Val::Int(i) => i.to_string(),
        Val::Float(f) => py_float(*f),
        Val::Str(s) => py_str_ascii(s),
        Val::Bool(true) => "True".into(),
        Val::Bool(false) => "False".into(),
        _ => "None".into(),
    }
}

fn string(s: &str) -> Val<'static> {
    Val::Str(Cow::Owned(s.to_owned()))
}

fn key_of(type_: &Option<String>) -> String {
    match type_ {
        None => NONE_KEY.to_owned(),
        Some(t) if t.starts_with('\u{0}') => format!("\u{0}{t}"),
        Some(t) => t.clone(),
    }
}

fn contains(types: &[String], type_: Option<&str>) -> bool {
    type_.is_some_and(|t| types.iter().any(|x| x == t))
}

/// Takes the oldest outstanding request with the head's id that the response can answer.
fn take_answered(
    outstanding: &mut FastMap<String, (u64, usize)>,
    reqs: &mut Slab,
    head_slot: usize,
    response_type: Option<&str>,
    code: &Val,
) -> Option<usize> {
    let head = &mut reqs[head_slot];
    if can_answer(response_type, code, head.type_.as_deref()) {
        let mut queued = std::mem::take(&mut head.queued);
        if queued.is_empty() {
            outstanding.remove(&head.id);
        } else {
            let next = queued.remove(0);
            outstanding.get_mut(&head.id).expect("the head's id").1 = next;
            reqs[next].queued = queued;
        }
        return Some(head_slot);
    }
    let queued = std::mem::take(&mut head.queued);
    let found = queued
        .iter()
        .position(|&s| can_answer(response_type, code, reqs[s].type_.as_deref()));
    let head = &mut reqs[head_slot];
    head.queued = queued;
    found.map(|i| head.queued.remove(i))
}

impl Pairs {
    /// `wanted(table)`: whether the rows of that table are kept.
    pub fn new(config: &Config, wanted: impl Fn(&str) -> bool) -> Self {
        Pairs {
            timeout: config.response_timeout_s,
            types: RequestTypes {
                no_response: config.no_response_types.clone(),
                init_exempt: config.init_exempt_types.clone(),
            },
            conns: FastMap::default(),
            reqs: Slab::default(),
            next_serial: 0,
            pending: VecDeque::new(),
            live_pending: 0,
            armed: false,
            counts: Counts::default(),
            latency: OrderedMap::default(),
            rows: wanted("pairs").then(Vec::new),
            links: wanted(LINKS).then(Vec::new),
        }
    }

    fn arm(&mut self, ctx: &mut Context, t: &Val) {
        self.armed = true;
        ctx.after(t.number().expect("a record's time"), self.timeout, 0);
    }

    /// No longer waiting for its response.
    fn unpend(&mut self, slot: usize) {
        let req = &mut self.reqs[slot];
        if req.pending {
            req.pending = false;
            self.live_pending -= 1;
            if self.pending.len() > 2 * self.live_pending + 64 {
                let reqs = &self.reqs;
                self.pending
                    .retain(|&(slot, serial)| reqs.waits(slot, serial));
            }
        }
    }

    /// The oldest request still waiting, dropping the entries before it that no longer wait.
    fn first_pending(&mut self) -> Option<usize> {
        while let Some(&(slot, serial)) = self.pending.front() {
            if self.reqs.waits(slot, serial) {
                return Some(slot);
            }
            self.pending.pop_front();
        }
        None
    }

    fn push_row(&mut self, row: impl FnOnce() -> Row) {
        if let Some(rows) = self.rows.as_mut() {
            rows.push(row());
        }
    }

    fn orphan(&mut self, rec: &Record, code: Option<i128>) {
        self.counts.orphan_responses += 1;
        self.push_row(|| response_row(rec, None, "orphan", code));
    }

    fn unanswered(
        &mut self,
        ctx: &mut Context,
        t: &Val,
        req: &Req,
        at_capture_end: bool,
        by_client: bool,
    ) {
        let open_at_end = at_capture_end && !req.timed_out;
        self.counts.total += 1;
        if open_at_end {
            self.counts.open_at_end += 1;
        } else {
            self.counts.unanswered += 1;
        }
        if req.timed_out {
            self.counts.late += 1;
        }
        if !req.timed_out && !contains(&self.types.no_response, req.type_.as_deref()) {
            let waited = t.minus(&req.t).num();
            let (type_, id) = (or_none(req.type_.as_deref()), py_str_ascii(&req.id));
            let conn = Some(&*req.conn);
            // The client that hangs up without waiting chose not to know the answer: worth knowing
            // (info); a server that closes on a pending request dropped it (warning).
            let (message, severity, outcome, early_severity) = if at_capture_end {
                let message = format!("{type_} (id {id}) still unanswered when the capture ended ({waited:.1} s after it was sent)");
                let outcome = ", still unanswered when the capture ended".to_owned();
                (message, "info", outcome, "info")
            } else {
                let closer = if by_client {
                    "the client closed the connection"
                } else {
                    "the connection closed"
                };
                let message = format!(
                    "{type_} (id {id}) unanswered when {closer} {waited:.1} s after it was sent"
                );
                let severity = if by_client { "info" } else { "warning" };
                (
                    message,
                    severity,
                    format!(", and unanswered when {closer}"),
                    "error",
                )
            };
            let (rule, n) = ("unanswered-request", req.n);
            ctx.violation(rule, conn, t, n, message, Some(severity), at_capture_end);
            if req.early.is_some() {
                early(ctx, req, t, &outcome, Some(early_severity), at_capture_end);
            }
        }
        let status = if open_at_end {
            "open-at-end"
        } else {
            "unanswered"
        };
        self.push_row(|| request_row(req, status, None, None));
    }
}

/// An early request is judged by what the server did with it: its response, or its absence at the
/// response timeout or the close (the API reference says such requests are rejected).
fn check_init(ctx: &mut Context, types: &RequestTypes, state: &mut PairConn, req: &mut Req) {
    let type_ = req.type_.as_deref();
    if type_is(type_, "InitConnection") {
        state.init_ids.insert(req.id.clone());
    } else if !contains(&types.init_exempt, type_) {
        let sent = if state.init_ids.is_empty() {
            "without InitConnection"
        } else {
            "before the InitConnection response"
        };
        let place = match &state.token_header {
            Some(header) if !header.is_empty() => {
                format!(" (its token was in header {})", py_str_ascii(header))
            }
            _ => String::new(),
        };
        req.early = Some(format!(
            "{} sent {sent} on a connection without an Authorization header{place}",
            or_none(type_)
        ));
        if contains(&types.no_response, type_) {
            early(ctx, req, &req.t, "", None, false);
        }
    }
}

fn early(
    ctx: &mut Context,
    req: &Req,
    t: &Val,
    outcome: &str,
    severity: Option<&str>,
    at_capture_end: bool,
) {
    let verdict = req.early.as_deref().expect("an early request");
    let message = format!("{verdict}{outcome}");
    let conn = Some(&*req.conn);
    ctx.violation(
        "request-before-init",
        conn,
        t,
        req.n,
        message,
        severity,
        at_capture_end,
    );
}

/// A row of a request: answered by `resp` (with `code`), or not.
fn request_row(req: &Req, status: &str, resp: Option<&Record>, code: Option<i128>) -> Row {
    let latency = resp.map_or(Val::Null, |r| Val::Float(r.t.minus(&req.t).num() * 1000.0));
    vec![
        ("conn", string(&req.conn)),
        ("t", req.t.clone()),
        ("frame", Val::from(req.n)),
        ("id", string(&req.id)),
        ("type", Val::from(req.type_.as_deref())),
        (
            "t_response",
            resp.map_or(Val::Null, |r| r.t.clone().into_owned()),
        ),
        ("response_frame", Val::from(resp.and_then(|r| r.n.as_int()))),
        (
            "response_type",
            Val::from(resp.and_then(|r| r.type_.as_str())),
        ),
        ("code", Val::from(code)),
        ("latency_ms", latency),
        ("status", string(status)),
        ("late", Val::Bool(req.timed_out)),
        ("error", Val::Bool(code.is_some_and(|c| c >= 400))),
    ]
}

/// A row of a response: paired with `req`, or an orphan.
fn response_row(resp: &Record, req: Option<&Req>, status: &str, code: Option<i128>) -> Row {
    if let Some(req) = req {
        return request_row(req, status, Some(resp), code);
    }
    vec![
        ("conn", resp.conn.clone().into_owned()),
        ("t", resp.t.clone().into_owned()),
        ("frame", Val::Null),
        ("id", Val::from(resp.req_id.as_str())),
        ("type", Val::Null),
        ("t_response", resp.t.clone().into_owned()),
        ("response_frame", Val::from(resp.n.as_int())),
        ("response_type", Val::from(resp.type_.as_str())),
        ("code", Val::from(code)),
        ("latency_ms", Val::Null),
        ("status", string(status)),
        ("late", Val::Bool(false)),
        ("error", Val::Bool(code.is_some_and(|c| c >= 400))),
    ]
}

impl Analyzer for Pairs {
    fn wants(&self, hook: Hook, _direction: &str, _type: Option<&str>) -> bool {
        matches!(hook, Hook::Request | Hook::Response)
    }

    fn open(&mut self, _ctx: &mut Context, rec: &Record) {
        let awaiting_init =
            !rec.implicit.truthy() && header_token(rec).is_none() && url_token(&rec.url).is_none();
        let conn = rec.conn.as_str().expect("an open connection's id");
        let state = PairConn {
            name: Arc::from(conn),
            awaiting_init,
            outstanding: FastMap::default(),
            next_order: 0,
            answered: OrderedMap::default(),
            reuse_reported: FastSet::default(),
            init_ids: FastSet::default(),
            token_header: if awaiting_init {
                other_token_header(rec)
            } else {
                None
            },
        };
        self.conns.insert(conn.to_owned(), state);
    }

    fn request(&mut self, ctx: &mut Context, frame: &Frame) {
        let rec = frame.rec;
        let Some(req_id) = rec.id.as_str().filter(|id| !id.is_empty()) else {
            return;
        };
        let conn = rec.conn.as_str().expect("an open connection's id");
        let state = self.conns.get_mut(conn).expect("an open connection");
        let serial = self.next_serial;
        self.next_serial += 1;
        let type_ = rec.type_.as_str();
        let waits = !contains(&self.types.no_response, type_);
        let mut req = Req {
            serial,
            t: rec.t.clone().into_owned(),
            n: rec.n.as_int(),
            id: req_id.to_owned(),
            type_: type_.map(str::to_owned),
            conn: state.name.clone(),
            timed_out: false,
            pending: waits,
            queued: Vec::new(),
            early: None,
        };
        if state.awaiting_init {
            check_init(ctx, &self.types, state, &mut req);
        }
        let n = req.n;
        let slot = self.reqs.insert(req);
        if let Some(&(_, earlier)) = state.outstanding.get(req_id) {
            let earlier = &mut self.reqs[earlier];
            let message = format!(
                "request id {} reused while request {} ({}) is still unanswered",
                py_str_ascii(req_id),
                or_none(earlier.n),
                or_none(earlier.type_.as_deref())
            );
            ctx.violation(
                "duplicate-request-id",
                Some(conn),
                &rec.t,
                n,
                message,
                None,
                false,
            );
            earlier.queued.push(slot);
        } else {
            state
                .outstanding
                .insert(req_id.to_owned(), (state.next_order, slot));
            state.next_order += 1;
            if state.answered.contains_key(req_id) && state.reuse_reported.insert(req_id.to_owned())
            {
                let message = format!(
                    "request id {} reused after it was answered (reported once per id)",
                    py_str_ascii(req_id)
                );
                ctx.violation(
                    "reused-request-id",
                    Some(conn),
                    &rec.t,
                    n,
                    message,
                    None,
                    false,
                );
            }
        }
        if waits {
            self.pending.push_back((slot, serial));
            self.live_pending += 1;
            if !self.armed {
                self.arm(ctx, &rec.t);
            }
        }
    }

    /// The oldest pending request's deadline passed: every request due by then timed out.
    fn deadline(&mut self, ctx: &mut Context, deadline: f64, _token: u64) {
        self.armed = false;
        let timeout = self.timeout;
        while let Some(slot) = self.first_pending() {
            let req = &mut self.reqs[slot];
            let t = req.t.number().expect("a record's time") + timeout;
            if t > deadline {
                break;
            }
            self.pending.pop_front();
            self.live_pending -= 1;
            req.pending = false;
            req.timed_out = true;
            let message = format!(
                "{} (id {}) has no response after {} s",
                or_none(req.type_.as_deref()),
                py_str_ascii(&req.id),
                py_format_g(timeout)
            );
            let (conn, t) = (Some(&*req.conn), Val::Float(t));
            ctx.violation("unanswered-request", conn, &t, req.n, message, None, false);
            if req.early.is_some() {
                let outcome = format!(", and no response after {} s", py_format_g(timeout));
                early(ctx, req, &t, &outcome, Some("error"), false);
            }
        }
        if let Some(slot) = self.first_pending() {
            let t = self.reqs[slot].t.clone();
            self.arm(ctx, &t);
        }
    }

    fn response(&mut self, ctx: &mut Context, frame: &Frame) {
        let rec = frame.rec;
        let conn = rec.conn.as_str().expect("an open connection's id");
        let t = &rec.t;
        let n = rec.n.as_int();
        let code = match rec.code {
            Val::Int(code) if (100..=599).contains(&code) => Some(code),
            _ => {
                let problem = if rec.code.is_present() {
                    let code = code_ascii(&rec.code);
                    format!("code {code} is not an HTTP status (100-599)")
                } else {
                    "no code".to_owned()
                };
                let message = format!("response has {problem}");
                ctx.violation(
                    "invalid-response-code",
                    Some(conn),
                    t,
                    n,
                    message,
                    None,
                    false,
                );
                None
            }
        };
        let req_id = rec.req_id.as_str();
        let state = self.conns.get_mut(conn).expect("an open connection");
        let head = req_id.and_then(|id| state.outstanding.get(id)).map(|e| e.1);
        let (Some(req_id), Some(head)) = (req_id, head) else {
            let why = match req_id {
                None => "has no reqId".to_owned(),
                Some(id) if state.answered.contains_key(id) => {
                    format!("answers request id {} a second time", py_str_ascii(id))
                }
                Some(id) => format!(
                    "answers request id {} that was never sent",
                    py_str_ascii(id)
                ),
            };
            let message = format!("response {why}");
            ctx.violation("orphan-response", Some(conn), t, n, message, None, false);
            self.orphan(rec, code);
            return;
        };
        let code_val = Val::from(code);
        let response_type = rec.type_.as_str();
        let taken = take_answered(
            &mut state.outstanding,
            &mut self.reqs,
            head,
            response_type,
            &code_val,
        );
        let Some(slot) = taken else {
            let head = &self.reqs[head];
            let named: Vec<String> = std::iter::once(head)
                .chain(head.queued.iter().map(|&s| &self.reqs[s]))
                .map(|r| format!("request {} ({})", or_none(r.n), or_none(r.type_.as_deref())))
                .collect();
            let message = format!(
                "{} (reqId {}) cannot answer {}, outstanding with that id; left unpaired",
                or_none(response_type),
                py_str_ascii(req_id),
                named.join(", ")
            );
            ctx.violation(
                "response-type-mismatch",
                Some(conn),
                t,
                n,
                message,
                None,
                false,
            );
            self.orphan(rec, code);
            return;
        };
        self.unpend(slot);
        let req = self.reqs.remove(slot);
        let state = self.conns.get_mut(conn).expect("an open connection");
        state.answered.insert(req_id.to_owned(), ());
        trim_oldest(&mut state.answered, ANSWERED_IDS_KEPT);
        if state.awaiting_init && state.init_ids.contains(req_id) && code.is_some_and(|c| c < 400) {
            state.awaiting_init = false;
        }
        if req.early.is_some() && !req.timed_out {
            // A late answer was judged at the timeout already.
            match code {
                Some(code) if code < 400 => {
                    let outcome = format!("; this server answered it {code}, but the API reference allows rejecting such requests");
                    early(ctx, &req, &req.t, &outcome, Some("warning"), false);
                }
                _ => {
                    let code = code.map_or_else(|| "an invalid code".to_owned(), |c| c.to_string());
                    let outcome = format!("; refused with {code}");
                    early(ctx, &req, &req.t, &outcome, Some("error"), false);
                }
            }
        }
        let counts = &mut self.counts;
        counts.total += 1;
        counts.answered += 1;
        if req.timed_out {
            counts.late += 1;
        }
        if code.is_some_and(|c| c >= 400) {
            counts.error_responses += 1;
        }
        let latency = t.minus(&req.t).num() * 1000.0;
        match self.latency.get_mut(&req.type_) {
            Some(histogram) => histogram.add(latency),
            None => {
                let mut histogram = LogHistogram::default();
                histogram.add(latency);
                self.latency.insert(req.type_.clone(), histogram);
            }
        }
        if let Some(links) = self.links.as_mut() {
            links.push(vec![
                ("conn", string(&req.conn)),
                ("frame", Val::from(req.n)),
                ("response_frame", Val::from(rec.n.as_int())),
            ]);
        }
        self.push_row(|| response_row(rec, Some(&req), "answered", code));
    }

    fn close(&mut self, ctx: &mut Context, rec: &Record, at_capture_end: bool) {
        let conn = rec.conn.as_str().expect("an open connection's id");
        let state = self.conns.remove(conn).expect("an open connection");
        let by_client = rec.by.as_str() == Some("client");
        let mut heads: Vec<(u64, usize)> = state.outstanding.into_values().collect();
        heads.sort_unstable();
        for (_, head) in heads {
            let queued = std::mem::take(&mut self.reqs[head].queued);
            for slot in std::iter::once(head).chain(queued) {
                self.unpend(slot);
                let req = self.reqs.remove(slot);
                self.unanswered(ctx, &rec.t, &req, at_capture_end, by_client);
            }
        }
    }

    fn stats(&self) -> Map<String, Value> {
        let c = &self.counts;
        let requests = json!({
            "total": c.total, "answered": c.answered, "unanswered": c.unanswered,
            "open_at_end": c.open_at_end, "late": c.late,
            "orphan_responses": c.orphan_responses, "error_responses": c.error_responses,
        });
        let latency: Map<String, Value> = self
            .latency
            .iter()
            .map(|(type_, h)| (key_of(type_), h.state()))
            .collect();
        let mut stats = Map::new();
        stats.insert("requests".into(), requests);
        stats.insert("latency".into(), Value::Object(latency));
        stats
    }

    fn take_tables(&mut self) -> Vec<(&'static str, Vec<Row>)> {
        let rows = self
            .rows
            .as_mut()
            .map(|rows| ("pairs", std::mem::take(rows)));
        let links = self
            .links
            .as_mut()
            .map(|links| (LINKS, std::mem::take(links)));
        rows.into_iter().chain(links).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_keys_tell_none_from_every_type() {
        assert_eq!(key_of(&None), NONE_KEY);
        assert_eq!(key_of(&Some("\u{0}none".into())), "\u{0}\u{0}none");
        assert_eq!(key_of(&Some("GetClock".into())), "GetClock");
    }

    #[test]
    fn a_slot_used_again_is_not_the_request_that_left_it() {
        let req = |serial| Req {
            serial,
            t: Val::Int(0),
            n: None,
            id: "1".into(),
            type_: None,
            conn: Arc::from("c"),
            timed_out: false,
            pending: true,
            queued: Vec::new(),
            early: None,
        };
        let mut slab = Slab::default();
        let first = slab.insert(req(0));
        assert!(slab.waits(first, 0));
        assert_eq!(slab.remove(first).serial, 0);
        let second = slab.insert(req(1));
        assert_eq!(second, first);
        assert!(!slab.waits(second, 0) && slab.waits(second, 1));
        slab[second].pending = false;
        assert!(!slab.waits(second, 1));
    }

    #[test]
    fn codes_and_times_as_python_writes_them() {
        assert_eq!(code_ascii(&Val::Str("é'".into())), "\"\\xe9'\"");
        assert_eq!(code_ascii(&Val::Float(200.0)), "200.0");
        assert_eq!(code_ascii(&Val::Bool(true)), "True");
        assert_eq!(code_ascii(&Val::Null), "None");
        assert_eq!(Val::Int(1 << 60).minus(&Val::Int((1 << 60) - 1)).num(), 1.0);
        assert_eq!(Val::Float(2.5).minus(&Val::Int(1)).num(), 1.5);
    }
}
