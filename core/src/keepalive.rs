//! Keep-alive: the client's silences (any client message, ping or
//! pong resets the clock), and the WebSocket pings and pongs themselves. Tables `keepalive`,
//! `silences`, `pings` (docs/analysis.md); times keep their Python types (an int minus an int is
//! an int).

use crate::engine::{Analyzer, Config, Context, FastMap, Frame, Hook, Row};
use crate::identity::{is_agent_request, side_of_url, AGENT};
use crate::pyrepr::py_format_g;
use crate::record::{Record, Val};

/// A server close after a silence of at least this share of the limit is a keep-alive gap (the
/// server enforced the limit on its own clock, the capture sees the silence a few ms shorter).
const SERVER_CLOSE_TOLERANCE: f64 = 0.98;
/// On an agent connection a silence may exceed the limit by this share of it (node-agent-sdk pings
/// on a 60 s timer that fires a few ms late).
pub const AGENT_SLACK: f64 = 0.1;
struct Silence {
    last: Val<'static>,
    activities: i128,
    longest: Val<'static>,
    longest_start: Val<'static>,
    over_limit: i128,
    limit: f64,
}

pub struct Keepalive {
    limit: f64,
    conns: FastMap<String, Silence>,
    rows: Option<Vec<Row>>,
    silence_rows: Option<Vec<Row>>,
    ping_rows: Option<Vec<Row>>,
}

impl Keepalive {
    /// `wanted(table)`: whether the rows of that table are kept.
    pub fn new(config: &Config, wanted: impl Fn(&str) -> bool) -> Self {
        let table = |name| wanted(name).then(Vec::new);
        Keepalive {
            limit: config.keepalive_limit_s,
            conns: FastMap::default(),
            rows: table("keepalive"),
            silence_rows: table("silences"),
            ping_rows: table("pings"),
        }
    }

    fn agent_limit(&self) -> f64 {
        self.limit * (1.0 + AGENT_SLACK)
    }

    fn activity(&mut self, ctx: &mut Context, conn: &str, t: &Val, frame: Option<i128>) {
        let base = self.limit;
        let state = self.conns.get_mut(conn).expect("an open connection");
        let gap = t.minus(&state.last);
        if gap.num() > state.longest.num() || gap.num() > state.limit {
            let limit = state.limit;
            gap_found(ctx, base, state, conn, t, frame, &gap, "", false, limit);
        }
        if let Some(rows) = self.silence_rows.as_mut() {
            let over = Val::Bool(gap.num() > state.limit);
            rows.push(vec![
                ("conn", Val::Str(conn.to_owned().into())),
                ("t", t.clone().into_owned()),
                ("start", state.last.clone()),
                ("silence_s", gap),
                ("over_limit", over),
                ("ended_by", Val::Str("activity".into())),
            ]);
        }
        state.last = t.clone().into_owned();
        state.activities += 1;
    }
}

/// `Keepalive._gap`: the longest silence so far, and a violation past `limit`.
#[allow(clippy::too_many_arguments)]
fn gap_found(
    ctx: &mut Context,
    base_limit: f64,
    state: &mut Silence,
    conn: &str,
    t: &Val,
    frame: Option<i128>,
    gap: &Val<'static>,
    how: &str,
    at_capture_end: bool,
    limit: f64,
) {
    if gap.num() > state.longest.num() {
        state.longest = gap.clone();
        state.longest_start = state.last.clone();
    }
    if gap.num() > limit {
        state.over_limit += 1;
        let slack = if state.limit > base_limit {
            " + 10% for an agent"
        } else {
            ""
        };
        let message = format!(
            "client silent for {:.1} s{how} (limit {} s{slack})",
            gap.num(),
            py_format_g(base_limit)
        );
        ctx.violation(
            "keepalive-gap",
            Some(conn),
            t,
            frame,
            message,
            None,
            at_capture_end,
        );
    }
}

impl Analyzer for Keepalive {
    fn wants(&self, _hook: Hook, direction: &str, _type: Option<&str>) -> bool {
        direction == "c2s" // only the client's activity counts
    }

    fn open(&mut self, _ctx: &mut Context, rec: &Record) {
        let limit = if side_of_url(&rec.url) == Some(AGENT) {
            self.agent_limit()
        } else {
            self.limit
        };
        let state = Silence {
            last: rec.t.clone().into_owned(),
            activities: 0,
            longest: Val::Float(0.0),
            longest_start: Val::Null,
            over_limit: 0,
            limit,
        };
        let conn = rec.conn.as_str().expect("an open connection's id");
        self.conns.insert(conn.to_owned(), state);
    }

    fn message(&mut self, ctx: &mut Context, frame: &Frame) {
        let rec = frame.rec;
        let conn = rec.conn.as_str().expect("an open connection's id");
        if is_agent_request(rec.type_.as_str()) {
            let limit = self.agent_limit();
            self.conns.get_mut(conn).expect("an open connection").limit = limit;
        }
        self.activity(ctx, conn, &rec.t, rec.n.as_int());
    }

    fn ping(&mut self, ctx: &mut Context, rec: &Record) {
        let conn = rec.conn.as_str().expect("an open connection's id");
        if let Some(rows) = self.ping_rows.as_mut() {
            rows.push(vec![
                ("conn", Val::Str(conn.to_owned().into())),
                ("t", rec.t.clone().into_owned()),
                ("rec", rec.rec.clone().into_owned()),
                ("dir", rec.dir.clone().into_owned()),
            ]);
        }
        if rec.dir.as_str() == Some("c2s") {
            self.activity(ctx, conn, &rec.t, None);
        }
    }

    fn pong(&mut self, ctx: &mut Context, rec: &Record) {
        self.ping(ctx, rec);
    }

    fn close(&mut self, ctx: &mut Context, rec: &Record, at_capture_end: bool) {
        let conn = rec.conn.as_str().expect("an open connection's id");
        let mut state = self.conns.remove(conn).expect("an open connection");
        let silence = rec.t.minus(&state.last);
        let by_server = rec.by.as_str() == Some("server");
        let how = if by_server {
            " before the server closed the connection"
        } else if at_capture_end {
            " until the capture ended"
        } else {
            " before the close"
        };
        let limit = if by_server {
            state.limit * SERVER_CLOSE_TOLERANCE
        } else {
            state.limit
        };
        let t = &rec.t;
        gap_found(
            ctx,
            self.limit,
            &mut state,
            conn,
            t,
            None,
            &silence,
            how,
            at_capture_end,
            limit,
        );
        let over = silence.num() > limit;
        if let Some(rows) = self.silence_rows.as_mut() {
            let ended_by = if at_capture_end {
                "capture-end"
            } else {
                "close"
            };
            rows.push(vec![
                ("conn", Val::Str(conn.to_owned().into())),
                ("t", t.clone().into_owned()),
                ("start", state.last.clone()),
                ("silence_s", silence.clone()),
                ("over_limit", Val::Bool(over)),
                ("ended_by", Val::Str(ended_by.into())),
            ]);
        }
        if let Some(rows) = self.rows.as_mut() {
            rows.push(vec![
                ("conn", Val::Str(conn.to_owned().into())),
                ("t", t.clone().into_owned()),
                ("client_activities", Val::Int(state.activities)),
                ("longest_gap_s", state.longest),
                ("longest_gap_start", state.longest_start),
                ("gaps_over_limit", Val::Int(state.over_limit)),
                ("silence_before_close_s", silence),
                (
                    "closed_by_server_after_silence",
                    Val::Bool(by_server && over),
                ),
                ("at_capture_end", Val::Bool(at_capture_end)),
            ]);
        }
    }

    fn take_tables(&mut self) -> Vec<(&'static str, Vec<Row>)> {
        [
            ("keepalive", self.rows.as_mut().map(std::mem::take)),
            ("silences", self.silence_rows.as_mut().map(std::mem::take)),
            ("pings", self.ping_rows.as_mut().map(std::mem::take)),
        ]
        .into_iter()
        .filter_map(|(name, rows)| rows.map(|r| (name, r)))
        .collect()
    }
}
