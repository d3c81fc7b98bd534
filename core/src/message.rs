//! The recorder's work per message: one call builds the msg record, redacts it and encodes it as
//! its capture line (docs/capture-format.md, "msg"), byte for byte what
//! `orjson.dumps(record, option=OPT_APPEND_NEWLINE)` wrote for the record Python built before.

use std::borrow::Cow;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyString};

use crate::json_out::{write_f64, write_int, write_str, Members};
use crate::json_value::{parse, Value};
use crate::lift::{lift_body, lift_index};
use crate::redact::{
    fingerprint, jwt_sub, marker, may_hold_token, redact_text_of, redacted_bytes, replace_jwts,
    surrogatepass_bytes, SURROGATE_BASE,
};

/// A record's time: a float as Python passes it, or an int (orjson writes the two differently).
pub enum Time {
    Float(f64),
    Int(i64),
}

pub struct Message<'c> {
    pub conn: &'c str,
    pub t: Time,
    pub n: i64,
    pub from_client: bool,
    pub is_text: bool,
    pub content: &'c [u8],
}

/// The capture line of a message, newline included. `max_payload` cuts the recorded payload
/// (Python slice semantics); with `redact`, secrets are replaced in the whole payload before
/// anything is lifted or cut, `size` stays the relayed length and `redacted: true` is added.
pub fn message_line(msg: &Message, max_payload: i64, redact: bool) -> Vec<u8> {
    let mut out = Vec::new();
    write_message_line(&mut out, msg, max_payload, redact);
    out
}

/// `message_line`, appended to `out`.
pub fn write_message_line(out: &mut Vec<u8>, msg: &Message, max_payload: i64, redact: bool) {
    let clean = if redact && may_hold_token(msg.content) {
        redacted_bytes(msg.content)
    } else {
        None
    };
    let payload = clean.as_deref().unwrap_or(msg.content);
    let truncated = (payload.len() as i128) > max_payload as i128;
    let kept = if truncated {
        python_slice_end(payload.len(), max_payload)
    } else {
        payload.len()
    };
    out.reserve(kept + kept / 4 + 256);
    out.extend_from_slice(b"{\"rec\":\"msg\",\"t\":");
    match msg.t {
        Time::Float(t) => write_f64(out, t),
        Time::Int(t) => write_int(out, t as i128),
    }
    out.extend_from_slice(b",\"conn\":");
    write_str(out, msg.conn);
    out.extend_from_slice(b",\"n\":");
    write_int(out, msg.n as i128);
    out.extend_from_slice(b",\"dir\":");
    out.extend_from_slice(if msg.from_client {
        b"\"c2s\""
    } else {
        b"\"s2c\""
    });
    out.extend_from_slice(if msg.is_text {
        b",\"op\":\"text\""
    } else {
        b",\"op\":\"binary\""
    });
    out.extend_from_slice(b",\"size\":");
    write_int(out, msg.content.len() as i128);
    let text = if msg.is_text {
        std::str::from_utf8(payload).ok()
    } else {
        None
    };
    if msg.is_text && text.is_none() {
        out.extend_from_slice(b",\"utf8\":false");
    }
    // Lifted from the whole payload, even when it is cut below.
    let index = text
        .filter(|t| {
            t.trim_start_matches([' ', '\t', '\n', '\r'])
                .starts_with('{')
        })
        .and_then(parse)
        .filter(|doc| matches!(doc, Value::Object(_)));
    if truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
    match text {
        Some(text) => {
            let cut = &payload[..kept];
            // Cut at a character boundary, as `decode("utf-8", "ignore")` of the valid prefix does.
            let text = match std::str::from_utf8(cut) {
                Ok(cut) => cut,
                Err(e) => &text[..e.valid_up_to()],
            };
            out.extend_from_slice(b",\"text\":");
            write_str(out, text);
            if let Some(doc) = index {
                lift_index(&doc, &mut Members { out, first: false });
            }
        }
        None => {
            out.extend_from_slice(b",\"b64\":\"");
            base64(out, &payload[..kept]);
            out.push(b'"');
        }
    }
    if clean.is_some() {
        out.extend_from_slice(b",\"redacted\":true");
    }
    out.extend_from_slice(b"}\n");
}

/// How much of `len` bytes `content[:max_payload]` keeps when `len > max_payload`.
fn python_slice_end(len: usize, max_payload: i64) -> usize {
    if max_payload >= 0 {
        max_payload as usize
    } else {
        len.saturating_sub(max_payload.unsigned_abs() as usize)
    }
}

fn base64(out: &mut Vec<u8>, data: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i) & 63) as usize]
            } else {
                b'='
            });
        }
    }
}

// -- Python ----------------------------------------------------------------------------------

#[pyfunction(name = "message_line")]
#[allow(clippy::too_many_arguments)]
fn py_message_line<'py>(
    py: Python<'py>,
    conn: &str,
    t: &Bound<'py, PyAny>,
    n: i64,
    from_client: bool,
    is_text: bool,
    content: &[u8],
    max_payload: i64,
    redact: bool,
) -> PyResult<Bound<'py, PyBytes>> {
    let msg = Message {
        conn,
        t: time_of(t)?,
        n,
        from_client,
        is_text,
        content,
    };
    Ok(PyBytes::new(py, &message_line(&msg, max_payload, redact)))
}

fn time_of(t: &Bound<'_, PyAny>) -> PyResult<Time> {
    if let Ok(f) = t.downcast::<PyFloat>() {
        Ok(Time::Float(f.value()))
    } else if t.is_instance_of::<pyo3::types::PyInt>() {
        Ok(Time::Int(t.extract()?))
    } else {
        Err(PyTypeError::new_err("t must be a float or an int"))
    }
}

const KEPT_CAPACITY: usize = 2 << 20;

/// The capture writer's buffer (recorder/writer.py): capture lines, encoded messages or lines
/// handed over, in the order they came, until the writer takes them to write them out. The
/// recorder's messages are encoded straight into it, one native call a message, which says
/// whether the buffer reached `limit` bytes (the writer's cue to write it out).
#[pyclass(name = "Lines", module = "analysis._core")]
struct Lines {
    data: Vec<u8>,
    lines: usize,
    #[pyo3(get, set)]
    limit: usize,
}

#[pymethods]
impl Lines {
    #[new]
    fn new(limit: usize) -> Self {
        Self {
            data: Vec::new(),
            lines: 0,
            limit,
        }
    }

    /// `message_line(...)` appended; whether the buffer is full.
    #[allow(clippy::too_many_arguments)]
    fn message(
        &mut self,
        conn: &str,
        t: &Bound<'_, PyAny>,
        n: i64,
        from_client: bool,
        is_text: bool,
        content: &[u8],
        max_payload: i64,
        redact: bool,
    ) -> PyResult<bool> {
        let msg = Message {
            conn,
            t: time_of(t)?,
            n,
            from_client,
            is_text,
            content,
        };
        write_message_line(&mut self.data, &msg, max_payload, redact);
        self.lines += 1;
        Ok(self.data.len() >= self.limit)
    }

    /// A line already encoded (newline included) appended; whether the buffer is full.
    fn append(&mut self, line: &[u8]) -> bool {
        self.data.extend_from_slice(line);
        self.lines += 1;
        self.data.len() >= self.limit
    }

    /// Everything buffered, and the buffer emptied.
    fn take<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let data = PyBytes::new(py, &self.data);
        self.data.clear();
        self.data.shrink_to(KEPT_CAPACITY); // a message of megabytes leaves no buffer that size behind
        self.lines = 0;
        data
    }

    /// Lines buffered.
    #[getter]
    fn lines(&self) -> usize {
        self.lines
    }
}

/// A Python string's text, to `f` with the flag saying whether its lone surrogates (which Rust
/// strings cannot hold) stand in as private-use characters (`redact::SURROGATE_BASE`).
fn with_text<'py>(
    s: &Bound<'py, PyString>,
    f: impl Fn(&str, bool) -> Cow<'_, str>,
) -> PyResult<Bound<'py, PyString>> {
    let py = s.py();
    if let Ok(text) = s.to_str() {
        return Ok(match f(text, false) {
            Cow::Borrowed(_) => s.clone(),
            Cow::Owned(clean) => PyString::new(py, &clean),
        });
    }
    let utf16: Vec<u8> = s
        .call_method1("encode", ("utf-16-le", "surrogatepass"))?
        .extract()?;
    let units = utf16
        .chunks(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
    let text: String = char::decode_utf16(units)
        .map(|c| {
            c.unwrap_or_else(|lone| {
                let unit = lone.unpaired_surrogate() as u32;
                char::from_u32(SURROGATE_BASE + unit - 0xD800)
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
        })
        .collect();
    match f(&text, true) {
        Cow::Borrowed(_) => Ok(s.clone()),
        Cow::Owned(clean) => {
            let bytes = PyBytes::new(py, &surrogatepass_bytes(&clean));
            Ok(bytes
                .call_method1("decode", ("utf-8", "surrogatepass"))?
                .downcast_into()?)
        }
    }
}

/// A secret's UTF-8 bytes (`surrogatepass`, as Python's hashlib was given them).
fn secret_bytes(s: &Bound<'_, PyString>) -> PyResult<Vec<u8>> {
    match s.to_str() {
        Ok(text) => Ok(text.as_bytes().to_vec()),
        Err(_) => Ok(s
            .call_method1("encode", ("utf-8", "surrogatepass"))?
            .extract()?),
    }
}

#[pyfunction(name = "redact_text")]
fn py_redact_text<'py>(text: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyString>> {
    with_text(text, redact_text_of)
}

#[pyfunction(name = "replace_jwts")]
fn py_replace_jwts<'py>(text: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyString>> {
    with_text(text, |text, _| replace_jwts(text))
}

#[pyfunction(name = "marker")]
fn py_marker(secret: &Bound<'_, PyString>) -> PyResult<String> {
    Ok(marker(&secret_bytes(secret)?))
}

#[pyfunction(name = "fingerprint")]
fn py_fingerprint(secret: &Bound<'_, PyString>) -> PyResult<String> {
    Ok(fingerprint(&secret_bytes(secret)?))
}

#[pyfunction(name = "jwt_sub")]
fn py_jwt_sub(token: &Bound<'_, PyString>) -> PyResult<Option<String>> {
    Ok(jwt_sub(&secret_bytes(token)?))
}

/// The body index fields of a message as a JSON object, from its type (None unless a string) and
/// its body as JSON text (`orjson.dumps` of the decoded body).
#[pyfunction(name = "lift_body", signature = (type_, body))]
fn py_lift_body<'py>(
    py: Python<'py>,
    type_: Option<&str>,
    body: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let body = std::str::from_utf8(body)
        .ok()
        .and_then(parse)
        .ok_or_else(|| PyTypeError::new_err("body is not JSON"))?;
    let mut out = vec![b'{'];
    lift_body(
        type_,
        &body,
        &mut Members {
            out: &mut out,
            first: true,
        },
    );
    out.push(b'}');
    Ok(PyBytes::new(py, &out))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_message_line, m)?)?;
    m.add_class::<Lines>()?;
    m.add_function(wrap_pyfunction!(py_redact_text, m)?)?;
    m.add_function(wrap_pyfunction!(py_replace_jwts, m)?)?;
    m.add_function(wrap_pyfunction!(py_marker, m)?)?;
    m.add_function(wrap_pyfunction!(py_fingerprint, m)?)?;
    m.add_function(wrap_pyfunction!(py_jwt_sub, m)?)?;
    m.add_function(wrap_pyfunction!(py_lift_body, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(content: &[u8], is_text: bool, max_payload: i64) -> String {
        let msg = Message {
            conn: "c",
            t: Time::Float(1.5),
            n: 0,
            from_client: true,
            is_text,
            content,
        };
        String::from_utf8(message_line(&msg, max_payload, true)).unwrap()
    }

    #[test]
    fn text_with_index_fields() {
        assert_eq!(
            line(br#" {"kind":"req","id":1,"type":"GetClock","body":{}}"#, true, 1 << 26),
            "{\"rec\":\"msg\",\"t\":1.5,\"conn\":\"c\",\"n\":0,\"dir\":\"c2s\",\"op\":\"text\",\"size\":50,\
             \"text\":\" {\\\"kind\\\":\\\"req\\\",\\\"id\\\":1,\\\"type\\\":\\\"GetClock\\\",\\\"body\\\":{}}\",\
             \"kind\":\"req\",\"type\":\"GetClock\",\"id\":\"1\"}\n"
        );
    }

    #[test]
    fn cut_at_a_character_boundary_and_binary_as_base64() {
        assert!(line("ééé".as_bytes(), true, 3)
            .contains("\"size\":6,\"truncated\":true,\"text\":\"é\"}"));
        assert!(line(&[0xff, 1, 2, 3], true, 2)
            .contains("\"utf8\":false,\"truncated\":true,\"b64\":\"/wE=\"}"));
        assert!(line(b"abcd", false, 100).contains("\"b64\":\"YWJjZA==\"}"));
    }
}
