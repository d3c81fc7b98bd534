//! `analysis._core.Engine`: the native engine fed one capture line at a time, for the jobs whose
//! records arrive one by one (`record --live`, replay's diff, imported HAR and flow files):
//! violations come back from the call that found them.

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::analysis_py::{analyzers_named, config_from, engine_result, frame_rows, violation_rows};
use crate::batches::row_dicts;
use crate::engine::{Config, Engine};
use crate::record::{parse_line, Parsed, Record, Val};

#[pyclass(name = "Engine", module = "analysis._core")]
pub struct StreamEngine {
    /// None once finished (a Mutex: a Python object may be shared between threads).
    engine: Mutex<Option<Engine>>,
}

impl StreamEngine {
    fn with<T>(&self, f: impl FnOnce(&mut Engine) -> PyResult<T>) -> PyResult<T> {
        let mut engine = self
            .engine
            .lock()
            .map_err(|_| PyValueError::new_err("engine poisoned"))?;
        match engine.as_mut() {
            Some(engine) => shielded(|| f(engine)),
            None => Err(PyValueError::new_err("the engine has finished")),
        }
    }
}

/// `f()`, a panic turned into ValueError: a bug in the core must not escape as PanicException (a
/// BaseException) into the proxy, whose live check catches Exception.
fn shielded<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(PyValueError::new_err(
            "the protocol core failed on this record (a bug in mwtap)",
        ))
    })
}

/// The violations found since the last call, as rows (None when there are none: the common case).
fn found(py: Python<'_>, engine: &mut Engine) -> PyResult<Option<Py<PyList>>> {
    if engine.ctx.violations.is_empty() {
        return Ok(None);
    }
    let rows = violation_rows(py, &engine.ctx.violations)?;
    engine.ctx.violations.clear();
    Ok(Some(rows.unbind()))
}

#[pymethods]
impl StreamEngine {
    /// `config` as `dataclasses.asdict(analysis.config.Config(...))`, `analyzers` the native
    /// analyzers by name in their order, `tables` the tables to build (none for live checking).
    #[new]
    #[pyo3(signature = (config=None, analyzers=Vec::new(), tables=Vec::new()))]
    fn new(
        config: Option<&Bound<'_, PyDict>>,
        analyzers: Vec<String>,
        tables: Vec<String>,
    ) -> PyResult<Self> {
        let config = config_from(config)?;
        let analyzers = analyzers_named(&analyzers, &config, &tables)?;
        let frames_table = tables.iter().any(|t| t == "frames");
        Ok(StreamEngine {
            engine: Mutex::new(Some(Engine::new(config, frames_table, analyzers))),
        })
    }

    /// Feeds one capture record, as its JSON line; returns the violation rows it revealed (rows
    /// as `Violation.as_row()`), or None. A line that is not a JSON object with a string `rec`
    /// raises ValueError.
    fn feed(&self, py: Python<'_>, line: &Bound<'_, PyBytes>) -> PyResult<Option<Py<PyList>>> {
        self.with(|engine| {
            let mut rec = Record::default();
            match parse_line(line.as_bytes(), &mut rec) {
                Parsed::Record => engine.feed(&rec),
                _ => return Err(PyValueError::new_err("not a capture record")),
            }
            found(py, engine)
        })
    }

    /// The rows of the tables asked for (`frames` too) made since the last call, `{table: [row
    /// dict, …]}` with the values as recorded (as `Batches` hands dicts over), or None when there
    /// are none.
    fn take_tables(&self, py: Python<'_>) -> PyResult<Option<Py<PyDict>>> {
        self.with(|engine| {
            let mut out: Option<Bound<'_, PyDict>> = None;
            for (name, rows) in engine.take_tables() {
                if rows.is_empty() {
                    continue;
                }
                // each table is one analyzer's
                out.get_or_insert_with(|| PyDict::new(py))
                    .set_item(name, row_dicts(py, &rows)?)?;
            }
            if let Some(frames) = engine.framing.rows.as_mut().filter(|f| !f.is_empty()) {
                let rows = frame_rows(py, &std::mem::take(frames))?;
                out.get_or_insert_with(|| PyDict::new(py))
                    .set_item("frames", rows)?;
            }
            Ok(out.map(Bound::unbind))
        })
    }

    /// Lets the clock reach `t` without a record (live checking): deadlines up to `t` fire.
    fn advance(&self, py: Python<'_>, t: f64) -> PyResult<Option<Py<PyList>>> {
        self.with(|engine| {
            engine.advance(t, &Val::Float(t));
            found(py, engine)
        })
    }

    /// End of the records: what is still pending on open connections is reported. Returns the
    /// engine's result as `Analysis.run` does without files: counters, `violations` (those not
    /// returned yet), `stats`, `tables`.
    fn finish<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let engine = self
            .engine
            .lock()
            .map_err(|_| PyValueError::new_err("engine poisoned"))?
            .take();
        let Some(mut engine) = engine else {
            return Err(PyValueError::new_err("the engine has finished"));
        };
        shielded(|| {
            engine.finish();
            engine_result(py, engine, false)
        })
    }
}

/// The frames-table row (a dict) of one capture line, its category told as the engine tells it, or
/// None for a line that is not a msg record of a string `conn` and a `c2s` or `s2c` `dir`, or that
/// the capture reader takes for damage (a field of the wrong type, a time out of range). What
/// the line breaks of the framing rules is not reported: the report shows, in a second pass, frames
/// the first pass checked.
#[pyfunction]
fn frame_row<'py>(
    py: Python<'py>,
    line: &Bound<'py, PyBytes>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    shielded(|| {
        let mut rec = Record::default();
        let usable = matches!(parse_line(line.as_bytes(), &mut rec), Parsed::Record)
            && rec.rec.as_str() == Some("msg")
            && rec.conn.as_str().is_some()
            && matches!(rec.dir.as_str(), Some("c2s" | "s2c"))
            && rec.unusable().is_none();
        if !usable {
            return Ok(None);
        }
        let mut engine = Engine::new(Config::default(), true, Vec::new());
        engine.framing.classify(&mut engine.ctx, &rec);
        let rows = engine.framing.rows.take().unwrap_or_default();
        frame_rows(py, &rows)?.get_item(0).map(Some)
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<StreamEngine>()?;
    m.add_function(wrap_pyfunction!(frame_row, m)?)?;
    // The bounds and slacks of the analyzers that the Python side needs too (`--jobs` plans its
    // partitions' overlap by READ_WAIT_S, the built-in server idles agents out by AGENT_SLACK).
    m.add("READ_WAIT_S", crate::sequences::READ_WAIT_S)?;
    m.add("AGENT_SLACK", crate::keepalive::AGENT_SLACK)?;
    m.add("ANSWERED_IDS_KEPT", crate::pairs::ANSWERED_IDS_KEPT)?;
    m.add("CLIENT_KEYS_KEPT", crate::connections::CLIENT_KEYS_KEPT)?;
    m.add("CLOSED_CONNS_KEPT", crate::engine::CLOSED_CONNS_KEPT)
}
