//! Where every record of a capture is, for `mwtap view` (analysis/view/index.py keeps the same
//! facts when it follows a capture one record at a time): fed each record with its place while
//! `Analysis.run` reads, `Locations` packs the columns the view's index keeps per record (its
//! `RECORD`: file, offset, length, time, connection, frame number, kind, direction, type, size),
//! each connection's records and messages, the subscription streams, and which request and
//! response answer each other (pairs.rs `LINKS`, which comes here instead of to Python). The view
//! takes them as bytes (`take`): no Python object per record.

use std::borrow::Cow;
use std::sync::{Mutex, MutexGuard};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList};

use crate::engine::{FastMap, FastSet, Row};
use crate::frame::type_is;
use crate::reader::{Place, Placer};
use crate::record::{Record, Val};

/// Kind codes, as analysis/view/index.py's KINDS lists them.
const OPEN: u8 = 0;
const CLOSE: u8 = 1;
const PING: u8 = 2;
const PONG: u8 = 3;
const REQ: u8 = 4;
const RESP: u8 = 5;
const NOTIFICATION: u8 = 6;
const OTHER_MSG: u8 = 7;
const REFUSED: u8 = 8;

/// A subscription stream's key within its connection: a subscriptionId, or a dialog.
enum StreamKey<'a> {
    Sub(Cow<'a, str>),
    Dialog(Cow<'a, str>),
}

/// Bytes of a packed record (analysis/view/index.py's RECORD).
const RECORD: usize = 38;
// Its fields as `State::add` packs them: file, offset, length, t, connection, frame, kind and
// direction, type, size.
const _: () = assert!(2 + 8 + 4 + 8 + 4 + 4 + 2 + 2 + 4 == RECORD);
/// Records packed here before they join the Python column (a bytearray grows in place, and the
/// core never holds the whole column nor a copy of it).
const CHUNK: usize = 1 << 16;

struct Conn {
    conn: String,
    t_open: f64,
    /// Record numbers (u32: half the memory; a view indexes fewer than 4 billion records).
    rows: Vec<u32>,
    msgs: Vec<u32>,
    /// Stream numbers by subscriptionId and by dialog (two maps: looked up by `&str`, no key
    /// made for the many notifications of a known stream).
    subs: FastMap<String, i32>,
    dialogs: FastMap<String, i32>,
}

/// A pair's connection: its number, or its id when no record of it was placed yet.
enum PairConn {
    Placed(u32),
    Unplaced(Box<str>),
}

#[derive(Default)]
struct State {
    max_types: usize,
    /// The packed records not yet handed over.
    chunk: Vec<u8>,
    count: usize,
    n: Vec<i32>,
    stream: Vec<i32>,
    conns: Vec<Conn>,
    by_conn: FastMap<String, u32>,
    types: Vec<String>,
    type_code: FastMap<String, u16>,
    subscribe_types: FastSet<u16>,
    /// (connection, is a dialog, id) of each stream.
    streams: Vec<(u32, bool, String)>,
    stream_sizes: Vec<u32>,
    /// The open, close and refused records' lines (the view reads what it shows of a connection
    /// from them), with their connection.
    connection_records: Vec<(u32, Vec<u8>)>,
    /// (connection, request frame, response frame) of each pair, linked when taken: by then every
    /// frame a pair names has been placed.
    pairs: Vec<(PairConn, i32, i32)>,
    last_t: f64,
    /// More records than the columns number were met (the rest were not placed).
    full: bool,
    /// A chunk of packed records could not be handed over.
    lost: bool,
}

/// The view's locating pass (see the module's description); `Analysis.run(..., locations=)` feeds
/// it, `take` hands over what it found.
#[pyclass(module = "analysis._core", frozen)]
pub struct Locations {
    state: Mutex<State>,
    /// The packed records handed over (made at the first hand-over).
    column: Mutex<Option<Py<PyByteArray>>>,
}

#[pymethods]
impl Locations {
    /// `max_types`: distinct type names told apart; further ones share the last code.
    #[new]
    fn new(max_types: usize) -> PyResult<Self> {
        if max_types == 0 || max_types > usize::from(u16::MAX) {
            return Err(PyValueError::new_err("max_types must be in 1..65535"));
        }
        let state = State {
            max_types,
            types: vec![String::new()],
            ..State::default()
        };
        Ok(Locations {
            state: Mutex::new(state),
            column: Mutex::new(None),
        })
    }

    /// Everything found, once: `count` records; `fixed` (a bytearray, 38 bytes a record as RECORD
    /// packs them), `peer` (int64, -1: none) and `stream` (int32, -1: none), one value per record;
    /// `connections` ((conn, t of its first record, rows, msgs: int64 record numbers) each, in the
    /// order met); `types` (code → name, 0 is ""); `subscribe_types` (codes of
    /// SubscribeMessagingEvents); `streams` ((connection, "sub"|"dialog", id) each) and
    /// `stream_sizes` (uint32); `connection_records` ((connection, line) of each open, close and
    /// refused record); `last_t`.
    fn take<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // The state is locked without the GIL held, as everywhere (see `Placer::place`).
        let mut state =
            py.allow_threads(|| self.lock().map(|mut state| std::mem::take(&mut *state)))?;
        let handed = self.hand_over(py, &std::mem::take(&mut state.chunk));
        let column = self.column.lock().map_err(|_| poisoned())?.take();
        handed?;
        if state.full {
            return Err(full());
        }
        if state.lost {
            return Err(PyValueError::new_err("records could not be handed over"));
        }
        // Each column freed once handed over: never the state and a copy of all of it.
        let out = PyDict::new(py);
        out.set_item("count", state.count)?;
        out.set_item("fixed", column)?;
        let peer = PyByteArray::new_with(py, state.count * 8, |peer| {
            state.link_pairs(peer);
            Ok(())
        })?;
        out.set_item("peer", peer)?;
        drop(std::mem::take(&mut state.n));
        let stream = bytes_of(&std::mem::take(&mut state.stream), i32::to_le_bytes);
        out.set_item("stream", PyBytes::new(py, &stream))?;
        drop(stream);
        let conns = PyList::empty(py);
        let as_i64: fn(u32) -> [u8; 8] = |g| i64::from(g).to_le_bytes();
        for c in std::mem::take(&mut state.conns) {
            let rows = PyBytes::new(py, &bytes_of(&c.rows, as_i64));
            let msgs = PyBytes::new(py, &bytes_of(&c.msgs, as_i64));
            conns.append((&c.conn, c.t_open, rows, msgs))?;
        }
        out.set_item("connections", conns)?;
        out.set_item("types", &state.types)?;
        out.set_item(
            "subscribe_types",
            state.subscribe_types.iter().collect::<Vec<_>>(),
        )?;
        let streams = PyList::empty(py);
        for (conn, dialog, id) in &state.streams {
            streams.append((conn, if *dialog { "dialog" } else { "sub" }, id))?;
        }
        out.set_item("streams", streams)?;
        let sizes = bytes_of(&state.stream_sizes, u32::to_le_bytes);
        out.set_item("stream_sizes", PyBytes::new(py, &sizes))?;
        let records = PyList::empty(py);
        for (conn, line) in &state.connection_records {
            records.append((conn, PyBytes::new(py, line)))?;
        }
        out.set_item("connection_records", records)?;
        out.set_item("last_t", state.last_t)?;
        Ok(out)
    }
}

fn poisoned() -> PyErr {
    PyValueError::new_err("locations poisoned")
}

fn full() -> PyErr {
    PyValueError::new_err(format!("a view indexes at most {} records", u32::MAX))
}

fn bytes_of<T: Copy, const N: usize>(values: &[T], to_le: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to_le(v)).collect()
}

impl Locations {
    fn lock(&self) -> PyResult<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| poisoned())
    }

    /// `chunk` appended to the Python column (made at the first hand-over).
    fn hand_over(&self, py: Python<'_>, chunk: &[u8]) -> PyResult<()> {
        let mut column = self.column.lock().map_err(|_| poisoned())?;
        let column = column.get_or_insert_with(|| PyByteArray::new(py, &[]).unbind());
        column
            .bind(py)
            .call_method1("extend", (PyBytes::new(py, chunk),))?;
        Ok(())
    }

    /// An error once more records were met than a view indexes (`Analysis.run` stops then).
    pub(crate) fn check(&self) -> PyResult<()> {
        match self.lock()?.full {
            true => Err(full()),
            false => Ok(()),
        }
    }

    /// Rows of pairs.rs `LINKS`.
    pub(crate) fn links(&self, rows: &[Row]) -> PyResult<()> {
        let mut state = self.lock()?;
        for row in rows {
            let value = |name: &str| row.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
            let (Some(Val::Str(conn)), Some(Val::Int(frame)), Some(Val::Int(response))) =
                (value("conn"), value("frame"), value("response_frame"))
            else {
                continue;
            };
            // A frame number past 32 bits is no record's (the column is int32).
            let (Ok(frame), Ok(response)) = (i32::try_from(*frame), i32::try_from(*response))
            else {
                continue;
            };
            // Records are placed once the engine is done with their block: this connection's
            // first one may not be yet.
            let conn = match state.by_conn.get(conn.as_ref()) {
                Some(&c) => PairConn::Placed(c),
                None => PairConn::Unplaced(conn.as_ref().into()),
            };
            state.pairs.push((conn, frame, response));
        }
        Ok(())
    }
}

/// Records are placed as `Analysis.run` reads them, in the file's order (on a thread of their
/// own when there are parsing threads).
impl Placer for Locations {
    fn place(&self, placed: &[(&Record, Place)]) {
        let Ok(mut state) = self.state.lock() else {
            return; // poisoned: `check` and `take` say so
        };
        for (rec, place) in placed {
            if state.count >= u32::MAX as usize {
                state.full = true;
                return;
            }
            state.add(rec, place);
        }
        if state.chunk.len() < CHUNK * RECORD {
            return;
        }
        let chunk = std::mem::take(&mut state.chunk);
        // The GIL is waited for without the state's lock held, by the one thread that places
        // records (the chunks join the column in order).
        drop(state);
        if Python::with_gil(|py| self.hand_over(py, &chunk)).is_err() {
            // Not expected (a bytearray's extend fails only without memory): the records are
            // counted but missing, which `take` reports.
            if let Ok(mut state) = self.state.lock() {
                state.lost = true;
            }
        }
    }
}

impl State {
    fn add(&mut self, rec: &Record, place: &Place) {
        let (Some(conn), Some(t)) = (rec.conn.as_str(), rec.t.number()) else {
            return;
        };
        let c = match self.by_conn.get(conn) {
            Some(&c) => c,
            None => {
                let c = self.conns.len() as u32;
                self.conns.push(Conn {
                    conn: conn.to_owned(),
                    t_open: t,
                    rows: Vec::new(),
                    msgs: Vec::new(),
                    subs: FastMap::default(),
                    dialogs: FastMap::default(),
                });
                self.by_conn.insert(conn.to_owned(), c);
                c
            }
        };
        let g = self.count as u32;
        let (code, type_code, n, size, stream);
        if rec.rec.as_str() == Some("msg") {
            code = match rec.kind.as_str() {
                Some("req") => REQ,
                Some("resp") => RESP,
                Some("notification") => NOTIFICATION,
                _ => OTHER_MSG,
            };
            type_code = self.type_code(rec.type_.as_str());
            let msgs = &mut self.conns[c as usize].msgs;
            n = match rec.n {
                Val::Int(n) => i32::try_from(n).unwrap_or(msgs.len() as i32),
                _ => msgs.len() as i32,
            };
            size = match rec.size {
                Val::Int(size) => u32::try_from(size).unwrap_or(0),
                _ => 0,
            };
            msgs.push(g);
            let streamed = code == NOTIFICATION
                || (code == RESP && rec.subscription_id.is_present())
                || (code == REQ && self.subscribe_types.contains(&type_code));
            stream = if streamed { self.stream(c, rec) } else { -1 };
        } else {
            let rows = &self.conns[c as usize].rows;
            code = match rec.rec.as_str() {
                Some("open") => OPEN,
                Some("close") => CLOSE,
                Some("ping") => PING,
                Some("pong") => PONG,
                Some("refused") => REFUSED,
                _ => return,
            };
            (type_code, size, stream) = (0, 0, -1);
            n = rows.last().map_or(-1, |&g| self.n(g));
            if matches!(code, OPEN | CLOSE | REFUSED) {
                self.connection_records.push((c, place.line.to_vec()));
            }
        }
        let dir = match rec.dir.as_str() {
            Some("c2s") => 0u8,
            Some("s2c") => 1,
            _ => 2,
        };
        // Packed in place, then appended at once (one copy, not ten small ones).
        let mut packed = [0u8; RECORD];
        let fields: [&[u8]; 9] = [
            &u16::try_from(place.file).unwrap_or(u16::MAX).to_le_bytes(),
            &(place.offset as i64).to_le_bytes(),
            &u32::try_from(place.line.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
            &t.to_le_bytes(),
            &c.to_le_bytes(),
            &n.to_le_bytes(),
            &[code, dir],
            &type_code.to_le_bytes(),
            &size.to_le_bytes(),
        ];
        let mut at = 0;
        for field in fields {
            packed[at..at + field.len()].copy_from_slice(field);
            at += field.len();
        }
        if self.chunk.capacity() == 0 {
            // Room for a chunk and the rest of a block placed at once (reader/parallel.rs LINES).
            self.chunk.reserve_exact((CHUNK + 1024) * RECORD);
        }
        self.chunk.extend_from_slice(&packed);
        if self.stream.len() == self.stream.capacity() {
            // Grown a chunk at a time: never twice what it holds.
            self.stream.reserve_exact(CHUNK);
            self.n.reserve_exact(CHUNK);
        }
        self.stream.push(stream);
        self.n.push(n);
        self.count += 1;
        self.conns[c as usize].rows.push(g);
        if t > self.last_t {
            self.last_t = t;
        }
    }

    /// A type's code: 0 for none (or not a string), the last one shared past `max_types`.
    fn type_code(&mut self, type_: Option<&str>) -> u16 {
        let Some(type_) = type_ else { return 0 };
        if let Some(&code) = self.type_code.get(type_) {
            return code;
        }
        let code = self.types.len().min(self.max_types);
        if code < self.max_types {
            self.types.push(type_.to_owned());
            if type_is(Some(type_), "SubscribeMessagingEvents") {
                self.subscribe_types.insert(code as u16);
            }
        }
        self.type_code.insert(type_.to_owned(), code as u16);
        code as u16
    }

    /// The subscription a message belongs to: notifications by their subscriptionId (or the
    /// dialog of their messaging events), subscribe requests for a dialog, answers naming one.
    fn stream(&mut self, c: u32, rec: &Record) -> i32 {
        let key = if let Some(id) = rec.subscription_id.as_str() {
            StreamKey::Sub(Cow::Borrowed(id))
        } else if rec.kind.as_str() == Some("notification") {
            match rec.events.0.and_then(first_dialog) {
                Some(dialog) => StreamKey::Dialog(dialog),
                None => return -1,
            }
        } else if rec.kind.as_str() == Some("req")
            && type_is(rec.type_.as_str(), "SubscribeMessagingEvents")
        {
            match rec.dialog_id.string() {
                Some(dialog) => StreamKey::Dialog(Cow::Owned(dialog)),
                None => return -1,
            }
        } else {
            return -1;
        };
        let conn = &mut self.conns[c as usize];
        let (known, dialog, id) = match &key {
            StreamKey::Sub(id) => (&mut conn.subs, false, id),
            StreamKey::Dialog(id) => (&mut conn.dialogs, true, id),
        };
        let number = match known.get(id.as_ref()) {
            Some(&number) => number,
            None => {
                let number = self.streams.len() as i32;
                let id = id.clone().into_owned();
                known.insert(id.clone(), number);
                self.streams.push((c, dialog, id));
                self.stream_sizes.push(0);
                number
            }
        };
        self.stream_sizes[number as usize] += 1;
        number
    }

    /// The frame number of record `g`.
    fn n(&self, g: u32) -> i32 {
        self.n[g as usize]
    }

    /// The record number of message `n` of connection `c` (recorders number a connection's
    /// messages 0, 1, …; a capture that does not is searched).
    fn frame(&self, c: u32, n: i32) -> Option<u32> {
        let msgs = &self.conns[c as usize].msgs;
        let at = usize::try_from(n).ok().filter(|&at| at < msgs.len());
        if let Some(g) = at.map(|at| msgs[at]) {
            if self.n(g) == n {
                return Some(g);
            }
        }
        msgs.iter().copied().find(|&g| self.n(g) == n)
    }

    /// Each pair's request and response point at each other (in `peer`, int64 a record); a
    /// subscribe and its answer share their stream.
    fn link_pairs(&mut self, peer: &mut [u8]) {
        peer.fill(0xFF); // -1: none
        for (conn, frame, response) in std::mem::take(&mut self.pairs) {
            let c = match conn {
                PairConn::Placed(c) => c,
                PairConn::Unplaced(conn) => match self.by_conn.get(&*conn) {
                    Some(&c) => c,
                    None => continue,
                },
            };
            let (Some(req), Some(resp)) = (self.frame(c, frame), self.frame(c, response)) else {
                continue;
            };
            let (req, resp) = (req as usize, resp as usize);
            peer[req * 8..req * 8 + 8].copy_from_slice(&(resp as i64).to_le_bytes());
            peer[resp * 8..resp * 8 + 8].copy_from_slice(&(req as i64).to_le_bytes());
            let (of_req, of_resp) = (self.stream[req], self.stream[resp]);
            if of_req >= 0 && of_resp < 0 {
                self.stream[resp] = of_req;
                self.stream_sizes[of_req as usize] += 1;
            } else if of_resp >= 0 && of_req < 0 {
                self.stream[req] = of_resp;
                self.stream_sizes[of_resp as usize] += 1;
            }
        }
    }
}

/// `events[0][0]` when it is a string: the dialog of a notification's first event. `events` is JSON
/// the reader has checked, so only its start is read (most of it is the events' content); a
/// string without escapes is borrowed as it is.
fn first_dialog(events: &str) -> Option<Cow<'_, str>> {
    let bytes = events.as_bytes();
    let mut at = 0;
    for opening in [b'[', b'[', b'"'] {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(at) {
            at += 1;
        }
        if bytes.get(at) != Some(&opening) {
            return None;
        }
        at += 1;
    }
    let start = at;
    match memchr::memchr2(b'"', b'\\', &bytes[start..]) {
        Some(end) if bytes[start + end] == b'"' => {
            return Some(Cow::Borrowed(&events[start..start + end]));
        }
        None => return None,
        Some(_) => {}
    }
    while at < bytes.len() && bytes[at] != b'"' {
        at += if bytes[at] == b'\\' { 2 } else { 1 };
    }
    serde_json::from_str(events.get(start - 1..at + 1)?)
        .ok()
        .map(Cow::Owned)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Locations>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dialog_of_the_first_event() {
        let events = r#"[["d\"1", 4, {"x": [1, 2]}], ["d2"], 7]"#;
        assert_eq!(first_dialog(events).as_deref(), Some("d\"1"));
        assert_eq!(first_dialog(" [ [\"d\\\\\"] ]").as_deref(), Some("d\\"));
        // Without an escape, the dialog is the events' own text (nothing made per notification).
        assert!(matches!(
            first_dialog("[[\"d1\", 2]]"),
            Some(Cow::Borrowed("d1"))
        ));
        for not_one in [
            "[]",
            "[[]]",
            "[[1, \"d\"]]",
            "[\"d\"]",
            "{\"0\": [\"d\"]}",
            "\"d\"",
            "[[\"d",
            "[[\"d\\\"]]",
            "null",
        ] {
            assert_eq!(first_dialog(not_one), None, "{not_one}");
        }
    }
}
