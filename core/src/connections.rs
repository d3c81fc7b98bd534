//! Connections: one row per connection (or refused upgrade) and
//! the reconnect chains, which connection follows which of the same client, after how long, and
//! whether a fresh token was used after 4401/4407. Tables `connections` and `reconnects`
//! (docs/analysis.md); times keep their Python types (an int minus an int is an int).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::engine::{
    trim_oldest, Analyzer, Config, Context, FastMap, Frame, Hook, OrderedMap, Row,
};
use crate::frame::type_is;
use crate::identity::{
    client_host, header_token, init_connection_token, is_agent_request, side_of_url, url_token,
    Token, CONSUMER,
};
use crate::pyrepr::py_format_g;
use crate::record::{Record, Val};

/// Close codes that ask the client for a fresh token (Messaging Window API — Protocol Overview).
const TOKEN_CLOSE_CODES: [i128; 2] = [4401, 4407];
/// Most recently closed client keys (token, sub, host) kept for linking.
pub const CLIENT_KEYS_KEPT: usize = 100_000;
/// A connection may open this long before its predecessor's close is recorded (the two records
/// come from different flows) and still follow it.
const CLOSE_AFTER_OPEN_SLACK_S: f64 = 0.05;

/// How a reconnect was told to belong to the same client, in the order tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum KeyKind {
    Token,
    Sub,
    Host,
}

impl KeyKind {
    fn name(self) -> &'static str {
        match self {
            KeyKind::Token => "token",
            KeyKind::Sub => "sub",
            KeyKind::Host => "host",
        }
    }
}

type ClientKey = (KeyKind, String);

struct Conn {
    conn: String,
    t_open: Val<'static>,
    url: Option<String>,
    client: Option<String>,
    host: Option<String>,
    open_seen: bool,
    side: Option<&'static str>,
    auth: Option<&'static str>,
    token: Option<Token>,
    linked: bool,
    prev_conn: Option<String>,
    chain: Option<String>,
    attempt: i128,
    frames_c2s: i128,
    frames_s2c: i128,
    bytes_c2s: i128,
    bytes_s2c: i128,
    pings_c2s: i128,
    pings_s2c: i128,
}

impl Conn {
    /// The client keys a reconnect is looked up by: token, else JWT sub, else host.
    fn keys(&self) -> Vec<ClientKey> {
        let mut keys = Vec::with_capacity(3);
        if let Some(token) = &self.token {
            keys.push((KeyKind::Token, token.fingerprint.clone()));
            if let Some(sub) = token.sub.as_ref().filter(|s| !s.is_empty()) {
                keys.push((KeyKind::Sub, sub.clone()));
            }
        }
        if let Some(host) = self.host.as_ref().filter(|h| !h.is_empty()) {
            keys.push((KeyKind::Host, host.clone()));
        }
        keys
    }

    fn chain(&self) -> &str {
        self.chain.as_deref().unwrap_or(&self.conn)
    }
}

/// What a later reconnect of the same client needs to know about a closed connection (shared by
/// its client keys: a successor found by one key is found by all).
struct Closed {
    conn: String,
    t_close: Val<'static>,
    code: Option<i128>,
    by: Option<&'static str>,
    fingerprint: Option<String>,
    chain: String,
    attempt: i128,
    has_successor: AtomicBool,
}

/// The reconnect linking: the last closed connection per client key, and the `reconnects` rows.
struct Links {
    /// The most recently closed keys last (bounded by `trim_oldest`: a live check runs for days).
    last_closed: OrderedMap<ClientKey, Arc<Closed>>,
    rows: Option<Vec<Row>>,
    min_reconnect_delay_s: f64,
    reconnect_window_s: f64,
}

/// A record's optional field as Python's `rec.get(name)`: an absent field is None.
fn field(value: &Val) -> Val<'static> {
    match value {
        Val::Absent => Val::Null,
        other => other.clone().into_owned(),
    }
}

impl Links {
    /// Finds the connection `state` reconnects: same token, else same JWT sub, else same host.
    fn link(&mut self, ctx: &mut Context, state: &mut Conn) {
        state.linked = true;
        let t_open = state.t_open.number().expect("a record's time");
        for key in state.keys() {
            let Some(prev) = self.last_closed.get(&key) else {
                continue;
            };
            let t_close = prev.t_close.number().expect("a record's time");
            if prev.has_successor.load(Ordering::Relaxed)
                || t_close > t_open + CLOSE_AFTER_OPEN_SLACK_S
            {
                continue;
            }
            let delay = state.t_open.minus(&prev.t_close);
            let delay_s = delay.number().expect("a difference of times");
            if key.0 == KeyKind::Host && delay_s > self.reconnect_window_s {
                continue;
            }
            prev.has_successor.store(true, Ordering::Relaxed);
            let prev = Arc::clone(prev);
            state.prev_conn = Some(prev.conn.clone());
            state.chain = Some(prev.chain.clone());
            state.attempt = prev.attempt + 1;
            self.reconnected(ctx, state, &prev, key.0, delay);
            return;
        }
    }

    fn reconnected(
        &mut self,
        ctx: &mut Context,
        state: &Conn,
        prev: &Closed,
        linked_by: KeyKind,
        delay: Val<'static>,
    ) {
        let fingerprint = state.token.as_ref().map(|t| t.fingerprint.as_str());
        let fresh = match (fingerprint, &prev.fingerprint) {
            (Some(now), Some(before)) => Some(now != before),
            _ => None,
        };
        let token_close = prev.code.is_some_and(|c| TOKEN_CLOSE_CODES.contains(&c));
        let delay_s = delay.number().expect("a difference of times");
        let after = || {
            let code = prev.code.map_or("None".to_owned(), |c| c.to_string());
            let by = prev.by.unwrap_or("unknown side");
            (format!("after close {code} ({by}) of {}", prev.conn), code)
        };
        let found = if token_close && fresh == Some(false) {
            let (after, code) = after();
            let fingerprint = fingerprint.expect("a token when compared");
            Some((
                "token-not-refreshed",
                format!("reconnected with the same token {fingerprint} {after}; {code} asks for a fresh token"),
            ))
        } else if !token_close
            && (matches!(prev.by, Some("server" | "proxy")) || prev.code == Some(1006))
            && linked_by != KeyKind::Host
            && delay_s < self.min_reconnect_delay_s
        {
            let minimum = py_format_g(self.min_reconnect_delay_s);
            Some((
                "fast-reconnect",
                format!(
                    "reconnected {delay_s:.3} s {} (minimum {minimum} s)",
                    after().0
                ),
            ))
        } else {
            None
        };
        if let Some((rule, message)) = found {
            let (conn, t) = (Some(state.conn.as_str()), &state.t_open);
            ctx.violation(rule, conn, t, None, message, None, false);
        }
        if let Some(rows) = self.rows.as_mut() {
            rows.push(vec![
                ("conn", Val::Str(state.conn.clone().into())),
                ("t", state.t_open.clone()),
                ("prev_conn", Val::Str(prev.conn.clone().into())),
                ("chain", Val::from(state.chain.as_deref())),
                ("attempt", Val::Int(state.attempt)),
                ("linked_by", Val::Str(linked_by.name().into())),
                ("delay_s", delay),
                ("prev_close_code", Val::from(prev.code)),
                ("prev_closed_by", Val::from(prev.by)),
                ("fresh_token", fresh.map_or(Val::Null, Val::Bool)),
            ]);
        }
    }

    /// Remembers a connection closed during the capture under each of its client keys.
    fn closed(&mut self, state: &Conn, rec: &Record, code: Option<i128>, by: Option<&'static str>) {
        let closed = Arc::new(Closed {
            conn: state.conn.clone(),
            t_close: rec.t.clone().into_owned(),
            code,
            by,
            fingerprint: state.token.as_ref().map(|t| t.fingerprint.clone()),
            chain: state.chain().to_owned(),
            attempt: state.attempt,
            has_successor: AtomicBool::new(false),
        });
        for key in state.keys() {
            self.last_closed.shift_remove(&key); // the most recently closed last
            self.last_closed.insert(key, Arc::clone(&closed));
        }
        trim_oldest(&mut self.last_closed, CLIENT_KEYS_KEPT);
    }
}

pub struct Connections {
    conns: FastMap<String, Conn>,
    links: Links,
    rows: Option<Vec<Row>>,
}

impl Connections {
    /// `wanted(table)`: whether the rows of that table are kept.
    pub fn new(config: &Config, wanted: impl Fn(&str) -> bool) -> Self {
        Connections {
            conns: FastMap::default(),
            links: Links {
                last_closed: OrderedMap::default(),
                rows: wanted("reconnects").then(Vec::new),
                min_reconnect_delay_s: config.min_reconnect_delay_s,
                reconnect_window_s: config.reconnect_window_s,
            },
            rows: wanted("connections").then(Vec::new),
        }
    }

    fn state(&mut self, rec: &Record) -> &mut Conn {
        let conn = rec.conn.as_str().expect("an open connection's id");
        self.conns.get_mut(conn).expect("an open connection")
    }
}

impl Analyzer for Connections {
    fn wants(&self, hook: Hook, _direction: &str, type_: Option<&str>) -> bool {
        match hook {
            Hook::Message => true,
            Hook::Request => type_is(type_, "InitConnection") || is_agent_request(type_),
            Hook::Response | Hook::Notification => false,
        }
    }

    fn open(&mut self, ctx: &mut Context, rec: &Record) {
        let conn = rec
            .conn
            .as_str()
            .expect("an open connection's id")
            .to_owned();
        let mut state = Conn {
            conn: conn.clone(),
            t_open: rec.t.clone().into_owned(),
            url: rec.url.as_str().map(str::to_owned),
            client: rec.client.as_str().map(str::to_owned),
            host: client_host(rec),
            open_seen: !rec.implicit.truthy(),
            side: side_of_url(&rec.url),
            auth: None,
            token: None,
            linked: false,
            prev_conn: None,
            chain: None,
            attempt: 0,
            frames_c2s: 0,
            frames_s2c: 0,
            bytes_c2s: 0,
            bytes_s2c: 0,
            pings_c2s: 0,
            pings_s2c: 0,
        };
        let found = header_token(rec)
            .map(|token| ("header", token))
            .or_else(|| url_token(&rec.url).map(|token| ("url", token)));
        if let Some((auth, token)) = found {
            state.auth = Some(auth);
            state.token = Some(token);
            self.links.link(ctx, &mut state);
        }
        self.conns.insert(conn, state);
    }

    fn message(&mut self, _ctx: &mut Context, frame: &Frame) {
        let rec = frame.rec;
        let size = rec.size.as_int().unwrap_or(0);
        let state = self.state(rec);
        if rec.dir.as_str() == Some("c2s") {
            state.frames_c2s += 1;
            state.bytes_c2s += size;
        } else {
            state.frames_s2c += 1;
            state.bytes_s2c += size;
        }
    }

    fn request(&mut self, ctx: &mut Context, frame: &Frame) {
        let type_ = frame.rec.type_.as_str();
        let conn = frame.rec.conn.as_str().expect("an open connection's id");
        let state = self.conns.get_mut(conn).expect("an open connection");
        if is_agent_request(type_) {
            state.side = Some(crate::identity::AGENT);
        } else if state.auth.is_none() && type_is(type_, "InitConnection") {
            state.auth = Some("init");
            state.token = init_connection_token(frame.payload());
            if !state.linked {
                self.links.link(ctx, state);
            }
        }
    }

    fn ping(&mut self, _ctx: &mut Context, rec: &Record) {
        let state = self.state(rec);
        if rec.dir.as_str() == Some("c2s") {
            state.pings_c2s += 1;
        } else {
            state.pings_s2c += 1;
        }
    }

    fn refused(&mut self, _ctx: &mut Context, rec: &Record) {
        if let Some(rows) = self.rows.as_mut() {
            rows.push(vec![
                ("conn", field(&rec.conn)),
                ("t", field(&rec.t)),
                ("url", field(&rec.url)),
                ("client", field(&rec.client)),
                ("state", Val::Str("refused".into())),
                ("refused_status", field(&rec.status)),
                ("opened_at", Val::Null),
                ("closed_at", field(&rec.t)),
                ("close_reason", field(&rec.error)),
            ]);
        }
    }

    fn close(&mut self, ctx: &mut Context, rec: &Record, at_capture_end: bool) {
        let conn = rec.conn.as_str().expect("an open connection's id");
        let mut state = self.conns.remove(conn).expect("an open connection");
        if !state.linked {
            self.links.link(ctx, &mut state);
        }
        let code = rec.code.as_int();
        let by = match rec.by.as_str() {
            Some("client") => Some("client"),
            Some("server") => Some("server"),
            Some("proxy") => Some("proxy"),
            _ => None,
        };
        if !at_capture_end {
            self.links.closed(&state, rec, code, by);
        }
        let Some(rows) = self.rows.as_mut() else {
            return;
        };
        let side = state
            .side
            .or((state.auth == Some("init")).then_some(CONSUMER));
        let t = rec.t.clone().into_owned();
        let status = if at_capture_end {
            "open-at-end"
        } else {
            "closed"
        };
        let (token, sub) = match &state.token {
            Some(token) => (Some(token.fingerprint.as_str()), token.sub.as_deref()),
            None => (None, None),
        };
        rows.push(vec![
            ("conn", Val::Str(state.conn.clone().into())),
            ("t", state.t_open.clone()),
            ("url", Val::from(state.url.as_deref())),
            ("client", Val::from(state.client.as_deref())),
            ("state", Val::Str(status.into())),
            ("refused_status", Val::Null),
            (
                "opened_at",
                if state.open_seen {
                    state.t_open.clone()
                } else {
                    Val::Null
                },
            ),
            (
                "closed_at",
                if at_capture_end { Val::Null } else { t.clone() },
            ),
            ("duration_s", t.minus(&state.t_open)),
            ("close_code", Val::from(code)),
            ("close_reason", field(&rec.reason)),
            ("closed_by", Val::from(by)),
            ("side", Val::from(side)),
            ("auth", Val::from(state.auth)),
            ("token", Val::from(token)),
            ("sub", Val::from(sub)),
            ("frames_c2s", Val::Int(state.frames_c2s)),
            ("frames_s2c", Val::Int(state.frames_s2c)),
            ("bytes_c2s", Val::Int(state.bytes_c2s)),
            ("bytes_s2c", Val::Int(state.bytes_s2c)),
            ("pings_c2s", Val::Int(state.pings_c2s)),
            ("pings_s2c", Val::Int(state.pings_s2c)),
            ("chain", Val::Str(state.chain().to_owned().into())),
            ("prev_conn", Val::from(state.prev_conn.as_deref())),
        ]);
    }

    fn take_tables(&mut self) -> Vec<(&'static str, Vec<Row>)> {
        [
            ("connections", self.rows.as_mut().map(std::mem::take)),
            ("reconnects", self.links.rows.as_mut().map(std::mem::take)),
        ]
        .into_iter()
        .filter_map(|(name, rows)| rows.map(|r| (name, r)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::record::{parse_line, Parsed};

    /// (conn, prev_conn, linked_by) of each reconnect of the capture `lines`.
    fn reconnects(lines: &[&str]) -> Vec<(String, String, String)> {
        let analyzer = Connections::new(&Config::default(), |table| table == "reconnects");
        let mut engine = Engine::new(Config::default(), false, vec![Box::new(analyzer)]);
        for line in lines {
            let mut rec = Record::default();
            assert!(matches!(
                parse_line(line.as_bytes(), &mut rec),
                Parsed::Record
            ));
            engine.feed(&rec);
        }
        engine.finish();
        let (_, rows) = engine.take_tables().pop().expect("the reconnects table");
        let text = |row: &Row, column| match row.iter().find(|(c, _)| *c == column) {
            Some((_, Val::Str(s))) => s.to_string(),
            other => panic!("{column}: {other:?}"),
        };
        rows.iter()
            .map(|r| (text(r, "conn"), text(r, "prev_conn"), text(r, "linked_by")))
            .collect()
    }

    #[test]
    fn a_closed_connection_has_one_successor_whichever_key_finds_it() {
        let open = |t: &str, conn: &str, client: &str, token: &str| {
            let header = if token.is_empty() {
                String::new()
            } else {
                format!(r#","request_headers":[["Authorization","jwt {token}"]]"#)
            };
            format!(r#"{{"rec":"open","t":{t},"conn":"{conn}","client":"{client}:1"{header}}}"#)
        };
        let close = |t: &str, conn: &str| format!(r#"{{"rec":"close","t":{t},"conn":"{conn}"}}"#);
        let lines = [
            open("1", "x1", "h1", "tok"),
            close("2", "x1"),
            open("3", "x2", "h2", "tok"), // by token
            open("4", "x3", "h1", ""),
            close("5", "x3"), // by host: x1 already followed
            open("10", "y1", "h3", ""),
            close("10.5", "y1"),
            // Linked as they close at the end, in the order they opened: y3 opened 60 ms before
            // y1's close (too early to follow it), y2 40 ms before.
            open("10.44", "y3", "h3", ""),
            open("10.46", "y2", "h3", ""),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let found = reconnects(&lines);
        let expected = [("x2", "x1", "token"), ("y2", "y1", "host")];
        let expected: Vec<_> = expected
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        assert_eq!(found, expected);
    }
}
