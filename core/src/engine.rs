//! The sans-I/O protocol engine, fed capture records one at a time (`analysis.Engine` in Python): it keeps
//! per-connection state (open, closed, implicit opens, records after a close, drops) and hands each
//! record to the analyzers, each owning one concern and one output table.
//!
//! Framing (framing.rs) classifies every message first; the other analyzers implement `Analyzer`
//! and are routed messages by (direction, category, type) through `Analyzer::wants`. Their hooks
//! are called in the order of `Engine::new`'s list (analysis.native.ANALYZERS: Connections,
//! Keepalive, Pairs, Streams, Sequences, Rings), so their violations come out in that order.
//! Deadlines: `Context::after` in a hook, `Analyzer::deadline` when the capture's clock passes it.

use std::cell::OnceCell;
use std::collections::HashMap;

use indexmap::IndexMap;
use serde_json::Value;

use crate::frame::Lifted;
use crate::framing::Framing;
use crate::record::{parse_json, Record, Val};
use crate::rules::{default_severity, Violation};
use crate::timers::Timers;

const ROUTES_KEPT: usize = 4096;
/// Closed connection ids remembered, to count records after a close.
pub const CLOSED_CONNS_KEPT: usize = 100_000;

/// Thresholds and switches of the analysis (analysis/config.py).
#[derive(Debug, Clone)]
pub struct Config {
    pub response_timeout_s: f64,
    pub keepalive_limit_s: f64,
    pub min_reconnect_delay_s: f64,
    pub accept_timeout_s: f64,
    pub reconnect_window_s: f64,
    pub max_violations: usize,
    pub no_response_types: Vec<String>,
    pub init_exempt_types: Vec<String>,
    /// Per-rule severity overrides.
    pub severity: HashMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            response_timeout_s: 30.0,
            keepalive_limit_s: 60.0,
            min_reconnect_delay_s: 1.0,
            accept_timeout_s: 10.0,
            reconnect_window_s: 600.0,
            max_violations: 1000,
            no_response_types: vec!["KeepAlive".into()],
            init_exempt_types: ["InitConnection", "GetClock", ".GetClock", "KeepAlive"]
                .map(String::from)
                .to_vec(),
            severity: HashMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Req,
    Resp,
    Notification,
}

impl Category {
    pub fn from_kind(kind: &str) -> Option<Category> {
        match kind {
            "req" => Some(Category::Req),
            "resp" => Some(Category::Resp),
            "notification" => Some(Category::Notification),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Category::Req => "req",
            Category::Resp => "resp",
            Category::Notification => "notification",
        }
    }
}

/// The message hooks an analyzer may want, per (direction, type): `message` for every message,
/// then the one of its category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Message,
    Request,
    Response,
    Notification,
}

/// A msg record plus its category (None for unusable frames) and its payload, parsed at most once.
pub struct Frame<'r, 'a> {
    pub rec: &'r Record<'a>,
    pub category: Option<Category>,
    payload: OnceCell<Option<Value>>,
    /// The body index fields lifted from the payload, once one recorded was malformed or missing
    /// (frame::lifted): shared by the analyzers, so that they all see one lift.
    pub(crate) relifted: OnceCell<Lifted<'a>>,
    /// The recorded body index fields found well-formed, parsed once for every analyzer.
    pub(crate) lifted: [OnceCell<Option<Lifted<'a>>>; 5],
}

impl<'r, 'a> Frame<'r, 'a> {
    pub fn new(rec: &'r Record<'a>, category: Option<Category>) -> Self {
        Frame {
            rec,
            category,
            payload: OnceCell::new(),
            relifted: OnceCell::new(),
            lifted: Default::default(),
        }
    }

    /// A frame whose payload was already parsed (or is known to be none).
    pub fn with_payload(
        rec: &'r Record<'a>,
        category: Option<Category>,
        payload: Option<Value>,
    ) -> Self {
        Frame {
            rec,
            category,
            payload: OnceCell::from(payload),
            relifted: OnceCell::new(),
            lifted: Default::default(),
        }
    }

    /// The decoded JSON payload; None when there is no text, it was truncated or is not JSON
    /// (analysis.frame.parse_payload; a JSON `null` is Some(Value::Null)).
    pub fn payload(&self) -> Option<&Value> {
        self.payload
            .get_or_init(|| parse_payload(self.rec))
            .as_ref()
    }
}

pub fn parse_payload(rec: &Record) -> Option<Value> {
    if rec.truncated.truthy() {
        return None;
    }
    parse_json(rec.text.string()?.as_bytes())
}

/// A row of an analyzer's table: (column, value) in the column order of docs/analysis.md.
pub type Row = Vec<(&'static str, Val<'static>)>;

/// One concern of the analysis. Every hook has a do-nothing default; `ctx` is how an analyzer
/// reports violations and sets deadlines.
pub trait Analyzer: Send {
    /// Whether `hook` needs messages of this direction ("c2s"/"s2c") and type. Asked once per
    /// combination (the engine caches the answer), so it must not depend on state.
    fn wants(&self, _hook: Hook, _direction: &str, _type: Option<&str>) -> bool {
        true
    }
    fn open(&mut self, _ctx: &mut Context, _rec: &Record) {}
    fn refused(&mut self, _ctx: &mut Context, _rec: &Record) {}
    fn message(&mut self, _ctx: &mut Context, _frame: &Frame) {}
    fn request(&mut self, _ctx: &mut Context, _frame: &Frame) {}
    fn response(&mut self, _ctx: &mut Context, _frame: &Frame) {}
    fn notification(&mut self, _ctx: &mut Context, _frame: &Frame) {}
    fn ping(&mut self, _ctx: &mut Context, _rec: &Record) {}
    fn pong(&mut self, _ctx: &mut Context, _rec: &Record) {}
    /// The connection ended (`at_capture_end`: it was still open when the capture ended).
    fn close(&mut self, _ctx: &mut Context, _rec: &Record, _at_capture_end: bool) {}
    /// A deadline set with `Context::after` passed (`token` is the one given there).
    fn deadline(&mut self, _ctx: &mut Context, _deadline: f64, _token: u64) {}
    /// Aggregates the analyzer keeps itself (sections of the summary).
    fn stats(&self) -> serde_json::Map<String, Value> {
        serde_json::Map::new()
    }
    /// The rows of the tables the analyzer was asked for made since the last call, as (table,
    /// rows), every table asked for (the rows of its finished ones: a row is never changed once
    /// taken). Called while the capture is read (batches.rs) and after `finish`.
    fn take_tables(&mut self) -> Vec<(&'static str, Vec<Row>)> {
        Vec::new()
    }
}

/// What analyzers share: the config, the timers and the violations found.
pub struct Context {
    pub config: Config,
    timers: Timers<(usize, u64)>,
    /// The analyzer whose hook is running (whose deadlines `after` sets).
    current: usize,
    pub violations: Vec<Violation>,
}

impl Context {
    /// Calls `deadline(deadline, token)` of the running analyzer once the capture's clock reaches
    /// `now + delay`.
    pub fn after(&mut self, now: f64, delay: f64, token: u64) {
        self.timers.after(now, delay, (self.current, token));
    }

    /// A violation found at the message (or other record) `rec`: its connection, time and frame.
    pub fn at_message(
        &mut self,
        rule: &'static str,
        rec: &Record,
        message: String,
        severity: Option<&str>,
    ) {
        let (conn, frame) = (rec.conn.as_str(), rec.n.as_int());
        self.violation(rule, conn, &rec.t, frame, message, severity, false);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn violation(
        &mut self,
        rule: &'static str,
        conn: Option<&str>,
        t: &Val,
        frame: Option<i128>,
        message: String,
        severity: Option<&str>,
        at_capture_end: bool,
    ) {
        let severity = self
            .config
            .severity
            .get(rule)
            .map(String::as_str)
            .or(severity)
            .or(default_severity(rule))
            .expect("a known rule");
        self.violations.push(Violation {
            rule,
            severity: severity.to_owned(),
            conn: conn.map(str::to_owned),
            t: t.clone().into_owned(),
            frame,
            message,
            at_capture_end,
        });
    }
}

/// A message type's routes, one per direction and category (`slot`), each found when first needed.
type Slots = [Option<Vec<(Hook, usize)>>; 8];

fn slot(c2s: bool, category: Option<Category>) -> usize {
    let category = match category {
        None => 0,
        Some(Category::Req) => 1,
        Some(Category::Resp) => 2,
        Some(Category::Notification) => 3,
    };
    usize::from(c2s) * 4 + category
}

/// Every analyzer's `message` hook that wants such messages, then their category hooks.
fn route(
    analyzers: &[Box<dyn Analyzer>],
    c2s: bool,
    category: Option<Category>,
    type_: Option<&str>,
) -> Vec<(Hook, usize)> {
    let direction = if c2s { "c2s" } else { "s2c" };
    let category_hook = category.map(|c| match c {
        Category::Req => Hook::Request,
        Category::Resp => Hook::Response,
        Category::Notification => Hook::Notification,
    });
    [Some(Hook::Message), category_hook]
        .into_iter()
        .flatten()
        .flat_map(|hook| {
            analyzers
                .iter()
                .enumerate()
                .filter(move |(_, a)| a.wants(hook, direction, type_))
                .map(move |(i, _)| (hook, i))
        })
        .collect()
}

/// Hash maps of the engine and the analyzers: foldhash (several times cheaper than SipHash on the
/// short keys of a capture, and seeded per process, so a capture cannot be crafted to collide).
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
pub type OrderedMap<K, V> = IndexMap<K, V, foldhash::fast::RandomState>;

/// Feed capture records with `feed`, then call `finish` once.
pub struct Engine {
    pub ctx: Context,
    pub framing: Framing,
    analyzers: Vec<Box<dyn Analyzer>>,
    /// Message type -> its routes (`ROUTES_KEPT` types at most).
    routes: FastMap<String, Slots>,
    untyped_routes: Slots,
    /// Open connection -> the order it was opened in (Python's dict order, for `finish`).
    open_conns: FastMap<String, u64>,
    opened: u64,
    /// Closed connection ids, oldest first, bounded by `trim_oldest`.
    closed_conns: OrderedMap<String, ()>,
    last_t: f64,
    last_t_value: Val<'static>,
    pub frames: u64,
    pub dropped_records: i128,
    pub drops: u64,
    pub malformed_records: u64,
    pub records_after_close: u64,
}

/// Drops the oldest entries once `entries` holds 1.25 × `limit`, keeping the newest `limit`.
pub fn trim_oldest<K, V, S>(entries: &mut IndexMap<K, V, S>, limit: usize) {
    if entries.len() > limit + limit / 4 {
        let excess = entries.len() - limit;
        entries.drain(..excess);
    }
}

impl Engine {
    pub fn new(config: Config, frames_table: bool, analyzers: Vec<Box<dyn Analyzer>>) -> Self {
        Engine {
            ctx: Context {
                config,
                timers: Timers::default(),
                current: 0,
                violations: Vec::new(),
            },
            framing: Framing::new(frames_table),
            analyzers,
            routes: FastMap::default(),
            untyped_routes: Slots::default(),
            open_conns: FastMap::default(),
            opened: 0,
            closed_conns: OrderedMap::default(),
            last_t: f64::NEG_INFINITY,
            last_t_value: Val::Absent,
            frames: 0,
            dropped_records: 0,
            drops: 0,
            malformed_records: 0,
            records_after_close: 0,
        }
    }

    pub fn feed(&mut self, rec: &Record) {
        let Some(t) = rec.t.number() else {
            self.malformed_records += 1;
            return;
        };
        self.advance(t, &rec.t);
        match rec.rec.as_str() {
            Some("msg") => self.message(rec),
            Some("open") => self.open(rec),
            // A connection the recorder closed when it stopped was open when the capture ended.
            Some("close") if self.known_conn(rec) => {
                let conn = rec
                    .conn
                    .as_str()
                    .expect("a known connection is a string")
                    .to_owned();
                self.end(&conn, rec, rec.recorder_stopped == Val::Bool(true));
            }
            Some("ping") if self.known_conn(rec) => self.each(|a, ctx| a.ping(ctx, rec)),
            Some("pong") if self.known_conn(rec) => self.each(|a, ctx| a.pong(ctx, rec)),
            Some("refused") => self.each(|a, ctx| a.refused(ctx, rec)),
            Some("drop") => {
                self.drops += 1;
                match rec.count {
                    Val::Int(count) => self.dropped_records += count,
                    Val::Bool(b) => self.dropped_records += i128::from(b), // isinstance(count, int)
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Lets the clock reach `t` (the time `value` of a record, or a live clock): deadlines up to
    /// `t` fire.
    pub fn advance(&mut self, t: f64, value: &Val) {
        self.advance_noting(t, value, |_, _, _| {});
    }

    /// `advance`, calling `firing(ctx, delay, deadline)` before each deadline fires (the
    /// partitions of `--jobs` place what each one finds in the single-process order by it).
    pub fn advance_noting(
        &mut self,
        t: f64,
        value: &Val,
        mut firing: impl FnMut(&Context, f64, f64),
    ) {
        if t > self.last_t {
            self.last_t = t;
            self.last_t_value = value.clone().into_owned();
            if t >= self.ctx.timers.next_due {
                self.run_timers(t, &mut firing);
            }
        }
    }

    /// The time of the latest record (the value as recorded).
    pub fn last_t(&self) -> &Val<'static> {
        &self.last_t_value
    }

    /// How many connections are open.
    pub fn open_connections(&self) -> usize {
        self.open_conns.len()
    }

    /// The deadlines' delays, in the order they were first used (the order they fire in).
    pub fn delays(&self) -> Vec<f64> {
        (0..self.ctx.timers.queue_count())
            .map(|index| self.ctx.timers.delay(index))
            .collect()
    }

    fn run_timers(&mut self, now: f64, firing: &mut impl FnMut(&Context, f64, f64)) {
        for index in 0..self.ctx.timers.queue_count() {
            let delay = self.ctx.timers.delay(index);
            while let Some((deadline, (analyzer, token))) = self.ctx.timers.pop_due(index, now) {
                firing(&self.ctx, delay, deadline);
                self.ctx.current = analyzer;
                self.analyzers[analyzer].deadline(&mut self.ctx, deadline, token);
            }
        }
        self.ctx.timers.reset_next_due();
    }

    fn each(&mut self, mut hook: impl FnMut(&mut dyn Analyzer, &mut Context)) {
        for (i, analyzer) in self.analyzers.iter_mut().enumerate() {
            self.ctx.current = i;
            hook(analyzer.as_mut(), &mut self.ctx);
        }
    }

    fn message(&mut self, rec: &Record) {
        let conn = rec.conn.as_str();
        if !conn.is_some_and(|c| self.open_conns.contains_key(c)) && !self.known_conn(rec) {
            return;
        }
        let c2s = match rec.dir.as_str() {
            Some("c2s") => true,
            Some("s2c") => false,
            _ => {
                self.malformed_records += 1;
                return;
            }
        };
        self.frames += 1;
        let frame = self.framing.classify(&mut self.ctx, rec);
        if self.analyzers.is_empty() {
            return;
        }
        let slots = match rec.type_.as_str() {
            Some(type_) => {
                if !self.routes.contains_key(type_) {
                    if self.routes.len() >= ROUTES_KEPT {
                        self.routes.clear(); // endless distinct types: stay bounded
                    }
                    self.routes.insert(type_.to_owned(), Slots::default());
                }
                self.routes.get_mut(type_).expect("just inserted")
            }
            None => &mut self.untyped_routes,
        };
        let route = slots[slot(c2s, frame.category)]
            .get_or_insert_with(|| route(&self.analyzers, c2s, frame.category, rec.type_.as_str()));
        for &(hook, i) in route.iter() {
            self.ctx.current = i;
            let analyzer = &mut self.analyzers[i];
            match hook {
                Hook::Message => analyzer.message(&mut self.ctx, &frame),
                Hook::Request => analyzer.request(&mut self.ctx, &frame),
                Hook::Response => analyzer.response(&mut self.ctx, &frame),
                Hook::Notification => analyzer.notification(&mut self.ctx, &frame),
            }
        }
    }

    /// Whether the record's connection is open, opening it implicitly if the capture missed its
    /// open record; false (and counted) for a malformed id or a connection already closed.
    fn known_conn(&mut self, rec: &Record) -> bool {
        let Some(conn) = rec.conn.as_str() else {
            self.malformed_records += 1;
            return false;
        };
        if !self.open_conns.contains_key(conn) {
            if self.closed_conns.contains_key(conn) {
                self.records_after_close += 1;
                return false;
            }
            let implicit = Record {
                rec: Val::Str("open".into()),
                t: rec.t.clone(),
                conn: rec.conn.clone(),
                implicit: Val::Bool(true),
                ..Record::default()
            };
            self.open(&implicit);
        }
        true
    }

    fn open(&mut self, rec: &Record) {
        let conn = match rec.conn.as_str() {
            Some(conn) if !self.open_conns.contains_key(conn) => conn,
            _ => {
                self.malformed_records += 1;
                return;
            }
        };
        self.closed_conns.shift_remove(conn);
        self.opened += 1;
        self.open_conns.insert(conn.to_owned(), self.opened);
        self.each(|a, ctx| a.open(ctx, rec));
    }

    fn end(&mut self, conn: &str, rec: &Record, at_capture_end: bool) {
        self.open_conns.remove(conn);
        self.closed_conns.insert(conn.to_owned(), ());
        trim_oldest(&mut self.closed_conns, CLOSED_CONNS_KEPT);
        self.each(|a, ctx| a.close(ctx, rec, at_capture_end));
    }

    /// End of capture: close what is still open, in the order it was opened (the analyzers mark
    /// what that leaves pending).
    pub fn finish(&mut self) {
        let t = if self.open_conns.is_empty() {
            Val::Float(0.0)
        } else {
            self.last_t_value.clone()
        };
        let mut open: Vec<(String, u64)> = self
            .open_conns
            .iter()
            .map(|(c, n)| (c.clone(), *n))
            .collect();
        open.sort_by_key(|(_, n)| *n);
        for (conn, _) in open {
            let close = Record {
                rec: Val::Str("close".into()),
                t: t.clone(),
                conn: Val::Str(conn.as_str().into()),
                code: Val::Null,
                reason: Val::Null,
                by: Val::Null,
                ..Record::default()
            };
            self.end(&conn, &close, true);
        }
    }

    /// Every analyzer's tables (`Analyzer::take_tables`), in analyzer order.
    pub fn take_tables(&mut self) -> Vec<(&'static str, Vec<Row>)> {
        self.analyzers
            .iter_mut()
            .flat_map(|a| a.take_tables())
            .collect()
    }

    pub fn stats(&self) -> serde_json::Map<String, Value> {
        let mut merged = serde_json::Map::new();
        for analyzer in &self.analyzers {
            merged.extend(analyzer.stats());
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{parse_line, Parsed};
    use std::sync::{Arc, Mutex};

    /// Notes the hooks it is called with; sets a 5 s deadline at every open.
    struct Probe(Arc<Mutex<Vec<String>>>);

    impl Analyzer for Probe {
        fn wants(&self, hook: Hook, _direction: &str, type_: Option<&str>) -> bool {
            hook != Hook::Message && type_ != Some("Ignored")
        }
        fn open(&mut self, ctx: &mut Context, rec: &Record) {
            let note = format!(
                "open {} implicit={}",
                rec.conn.as_str().unwrap(),
                rec.implicit.truthy()
            );
            self.0.lock().unwrap().push(note);
            ctx.after(rec.t.number().unwrap(), 5.0, 7);
        }
        fn request(&mut self, _ctx: &mut Context, frame: &Frame) {
            self.0
                .lock()
                .unwrap()
                .push(format!("request {}", frame.rec.type_.as_str().unwrap()));
        }
        fn deadline(&mut self, _ctx: &mut Context, deadline: f64, token: u64) {
            self.0
                .lock()
                .unwrap()
                .push(format!("deadline {deadline} {token}"));
        }
        fn close(&mut self, _ctx: &mut Context, rec: &Record, at_capture_end: bool) {
            let note = format!(
                "close {} at_end={at_capture_end}",
                rec.conn.as_str().unwrap()
            );
            self.0.lock().unwrap().push(note);
        }
    }

    #[test]
    fn hooks_deadlines_and_connection_bookkeeping() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut engine = Engine::new(Config::default(), false, vec![Box::new(Probe(log.clone()))]);
        for line in [
            r#"{"rec":"msg","t":1,"conn":"a","dir":"c2s","kind":"req","type":"GetClock","id":"1"}"#,
            r#"{"rec":"msg","t":2,"conn":"a","dir":"c2s","kind":"req","type":"Ignored","id":"2"}"#,
            r#"{"rec":"open","t":3,"conn":"b"}"#,
            r#"{"rec":"open","t":3,"conn":"b"}"#,
            r#"{"rec":"msg","t":7,"conn":"a","dir":"sideways"}"#,
            r#"{"rec":"close","t":8.5,"conn":"a"}"#,
            r#"{"rec":"ping","t":9,"conn":"a"}"#,
            r#"{"rec":"drop","t":9,"count":4}"#,
            r#"{"rec":"msg","t":"late","conn":"b","dir":"c2s"}"#,
        ] {
            let mut rec = Record::default();
            assert!(
                matches!(parse_line(line.as_bytes(), &mut rec), Parsed::Record),
                "{line}"
            );
            engine.feed(&rec);
        }
        engine.finish();
        let expected = [
            "open a implicit=true",
            "request GetClock",
            "open b implicit=false",
            "deadline 6 7", // the clock reached 7
            "deadline 8 7", // due before the close at 8.5 is handled
            "close a at_end=false",
            "close b at_end=true",
        ];
        assert_eq!(*log.lock().unwrap(), expected);
        let counts = (
            engine.frames,
            engine.malformed_records,
            engine.records_after_close,
            engine.drops,
        );
        assert_eq!(counts, (2, 3, 1, 1));
        assert_eq!(engine.dropped_records, 4);
    }

    #[test]
    fn trim_keeps_the_newest() {
        let mut entries: IndexMap<u32, ()> = (0..12).map(|n| (n, ())).collect();
        trim_oldest(&mut entries, 10);
        assert_eq!(entries.len(), 12);
        entries.insert(12, ());
        entries.insert(13, ());
        trim_oldest(&mut entries, 10);
        assert_eq!(
            entries.keys().copied().collect::<Vec<_>>(),
            (4..14).collect::<Vec<_>>()
        );
    }
}
