//! Where every record of a capture is, for `mwtap view` (analysis/view/index.py keeps the same
//! facts when it follows a capture one record at a time): fed each record with its place while
//! `Analysis.run` reads, `Locations` packs the columns the view's index keeps per record (its
//! `RECORD`: file, offset, length, time, connection, frame number, kind, direction, type, size),
//! each connection's records and messages, the subscription streams, and which request and
//! response answer each other (the pairs table, which comes here instead of to Python). The view
//! takes them as bytes (`take`): no Python object per record.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Mutex, MutexGuard};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList};
use serde::de::{Deserialize, Deserializer, IgnoredAny, SeqAccess, Visitor};

use crate::engine::{FastMap, FastSet, Row};
use crate::frame::type_is;
use crate::reader::Place;
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
#[derive(PartialEq, Eq, Hash, Clone)]
enum StreamKey {
    Sub(String),
    Dialog(String),
}

struct Conn {
    conn: String,
    t_open: f64,
    rows: Vec<i64>,
    msgs: Vec<i64>,
    streams: FastMap<StreamKey, i32>,
}

#[derive(Default)]
struct State {
    max_types: usize,
    fixed: Vec<u8>,
    n: Vec<i32>,
    peer: Vec<i64>,
    stream: Vec<i32>,
    conns: Vec<Conn>,
    by_conn: FastMap<String, u32>,
    types: Vec<String>,
    type_code: FastMap<String, u16>,
    subscribe_types: FastSet<u16>,
    streams: Vec<(u32, StreamKey)>,
    stream_sizes: Vec<u32>,
    /// The open, close and refused records' lines (the view reads what it shows of a connection
    /// from them), with their connection.
    connection_records: Vec<(u32, Vec<u8>)>,
    /// (connection, request frame, response frame) of each pair, linked when taken: by then every
    /// frame a pair names has been placed.
    pairs: Vec<(u32, i128, i128)>,
    last_t: f64,
}

/// The view's locating pass (see the module's description); `Analysis.run(..., locations=)` feeds
/// it, `take` hands over what it found.
#[pyclass(module = "analysis._core", frozen)]
pub struct Locations {
    state: Mutex<State>,
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
        })
    }

    /// Everything found, once: `count` records; `fixed` (a bytearray, 38 bytes a record as RECORD
    /// packs them),
    /// `peer` (int64, -1: none) and `stream` (int32, -1: none), one value per record;
    /// `connections` ((conn, t of its first record, rows, msgs: int64 record numbers) each, in the
    /// order met); `types` (code → name, 0 is ""); `subscribe_types` (codes of
    /// SubscribeMessagingEvents); `streams` ((connection, "sub"|"dialog", id) each) and
    /// `stream_sizes` (uint32); `connection_records` ((connection, line) of each open, close and
    /// refused record); `last_t`.
    fn take<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let mut state = std::mem::take(&mut *self.lock()?);
        state.link_pairs();
        // Each column freed once copied: the peak is the state and one column, not two states.
        let out = PyDict::new(py);
        out.set_item("count", state.n.len())?;
        drop(std::mem::take(&mut state.n));
        // A bytearray: what the index's own column is (it grows when following).
        out.set_item(
            "fixed",
            PyByteArray::new(py, &std::mem::take(&mut state.fixed)),
        )?;
        let peer = bytes_of(&std::mem::take(&mut state.peer), i64::to_le_bytes);
        out.set_item("peer", PyBytes::new(py, &peer))?;
        drop(peer);
        let stream = bytes_of(&std::mem::take(&mut state.stream), i32::to_le_bytes);
        out.set_item("stream", PyBytes::new(py, &stream))?;
        drop(stream);
        let conns = PyList::empty(py);
        for c in std::mem::take(&mut state.conns) {
            let rows = PyBytes::new(py, &bytes_of(&c.rows, i64::to_le_bytes));
            let msgs = PyBytes::new(py, &bytes_of(&c.msgs, i64::to_le_bytes));
            conns.append((&c.conn, c.t_open, rows, msgs))?;
        }
        out.set_item("connections", conns)?;
        out.set_item("types", &state.types)?;
        out.set_item(
            "subscribe_types",
            state.subscribe_types.iter().collect::<Vec<_>>(),
        )?;
        let streams = PyList::empty(py);
        for (conn, key) in &state.streams {
            match key {
                StreamKey::Sub(id) => streams.append((conn, "sub", id))?,
                StreamKey::Dialog(id) => streams.append((conn, "dialog", id))?,
            }
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

fn bytes_of<T: Copy, const N: usize>(values: &[T], to_le: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to_le(v)).collect()
}

impl Locations {
    fn lock(&self) -> PyResult<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| PyValueError::new_err("locations poisoned"))
    }

    /// Places one record read by `Analysis.run`.
    pub(crate) fn add(&self, rec: &Record, place: &Place) -> PyResult<()> {
        self.lock()?.add(rec, place);
        Ok(())
    }

    /// Rows of the pairs table.
    pub(crate) fn pairs(&self, rows: &[Row]) -> PyResult<()> {
        let mut state = self.lock()?;
        for row in rows {
            let value = |name: &str| row.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
            let (Some(Val::Str(conn)), Some(Val::Int(frame)), Some(Val::Int(response))) =
                (value("conn"), value("frame"), value("response_frame"))
            else {
                continue;
            };
            if let Some(&c) = state.by_conn.get(conn.as_ref()) {
                state.pairs.push((c, *frame, *response));
            }
        }
        Ok(())
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
                    streams: FastMap::default(),
                });
                self.by_conn.insert(conn.to_owned(), c);
                c
            }
        };
        let g = self.n.len() as i64;
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
            n = rows.last().map_or(-1, |&g| self.n[g as usize]);
            if matches!(code, OPEN | CLOSE | REFUSED) {
                self.connection_records.push((c, place.line.to_vec()));
            }
        }
        let dir = match rec.dir.as_str() {
            Some("c2s") => 0u8,
            Some("s2c") => 1,
            _ => 2,
        };
        let fixed = &mut self.fixed;
        fixed.extend(u16::try_from(place.file).unwrap_or(u16::MAX).to_le_bytes());
        fixed.extend((place.offset as i64).to_le_bytes());
        fixed.extend(
            u32::try_from(place.line.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        fixed.extend(t.to_le_bytes());
        fixed.extend(c.to_le_bytes());
        fixed.extend(n.to_le_bytes());
        fixed.extend([code, dir]);
        fixed.extend(type_code.to_le_bytes());
        fixed.extend(size.to_le_bytes());
        self.n.push(n);
        self.peer.push(-1);
        self.stream.push(stream);
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
            Some(StreamKey::Sub(id.to_owned()))
        } else if rec.kind.as_str() == Some("notification") {
            // events[0][0]: the dialog of the first event, when it is a string.
            let events = rec.events.0;
            let first =
                events.and_then(|raw| serde_json::from_str::<First<First<String>>>(raw.get()).ok());
            first.and_then(|event| event.0?.0).map(StreamKey::Dialog)
        } else if rec.kind.as_str() == Some("req")
            && type_is(rec.type_.as_str(), "SubscribeMessagingEvents")
        {
            rec.dialog_id.string().map(StreamKey::Dialog)
        } else {
            None
        };
        let Some(key) = key else { return -1 };
        let number = match self.conns[c as usize].streams.get(&key) {
            Some(&number) => number,
            None => {
                let number = self.streams.len() as i32;
                self.conns[c as usize].streams.insert(key.clone(), number);
                self.streams.push((c, key));
                self.stream_sizes.push(0);
                number
            }
        };
        self.stream_sizes[number as usize] += 1;
        number
    }

    /// The record number of message `n` of connection `c` (recorders number a connection's
    /// messages 0, 1, …; a capture that does not is searched).
    fn frame(&self, c: u32, n: i128) -> Option<i64> {
        let msgs = &self.conns[c as usize].msgs;
        let at = usize::try_from(n).ok().filter(|&at| at < msgs.len());
        if let Some(g) = at.map(|at| msgs[at]) {
            if i128::from(self.n[g as usize]) == n {
                return Some(g);
            }
        }
        msgs.iter()
            .copied()
            .find(|&g| i128::from(self.n[g as usize]) == n)
    }

    /// Each pair's request and response point at each other; a subscribe and its answer share
    /// their stream.
    fn link_pairs(&mut self) {
        for (c, frame, response) in std::mem::take(&mut self.pairs) {
            let (Some(req), Some(resp)) = (self.frame(c, frame), self.frame(c, response)) else {
                continue;
            };
            let (req, resp) = (req as usize, resp as usize);
            self.peer[req] = resp as i64;
            self.peer[resp] = req as i64;
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

/// The first element of a JSON array (None for an empty one), the rest skipped unparsed; any other
/// JSON, or a first element that is not a `T`, does not deserialize.
struct First<T>(Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Elements<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Elements<T> {
            type Value = First<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<First<T>, A::Error> {
                let first = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
        }
        deserializer.deserialize_seq(Elements(PhantomData))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Locations>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `events[0][0]` as analysis/view/index.py reads it: the first event's dialog when a string.
    fn dialog(events: &str) -> Option<String> {
        let first = serde_json::from_str::<First<First<String>>>(events).ok();
        first.and_then(|event| event.0?.0)
    }

    #[test]
    fn the_dialog_of_the_first_event() {
        let events = r#"[["d\"1", 4, {"x": [1, 2]}], ["d2"], 7]"#;
        assert_eq!(dialog(events).as_deref(), Some("d\"1"));
        for not_one in [
            "[]",
            "[[]]",
            "[[1, \"d\"]]",
            "[\"d\"]",
            "{\"0\": [\"d\"]}",
            "\"d\"",
            "null",
        ] {
            assert_eq!(dialog(not_one), None, "{not_one}");
        }
    }
}
