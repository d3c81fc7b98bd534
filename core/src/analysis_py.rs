//! The analysis side's Python API: `analysis._core.Analysis` (a set of capture files read in one
//! pass by the native reader and engine, every analyzer; `analysis.load.streamed` runs it) and
//! `analyze_native` (the same in one call). tests/test_native_*.py compare it with the engine fed
//! one record at a time, tests/test_golden.py with the retired Python engine's answers.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use serde_json::Value;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::arrow_out::Strings;
use crate::connections::Connections;
use crate::engine::{Analyzer, Config, Engine, FastMap, FastSet};
use crate::framing::FramesTable;
use crate::keepalive::Keepalive;
use crate::locations::Locations;
use crate::pairs::{Pairs, LINKS};
use crate::reader::{classify, CaptureError, CaptureSet, Line, LineTest, Placer, Skipped, Texts};
use crate::record::Val;
use crate::rings::Rings;
use crate::rules::{default_severity, Violation};
use crate::sequences::Sequences;
use crate::streams::Streams;

pub(crate) fn val_to_py<'py>(py: Python<'py>, value: &Val) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Val::Int(i) => i.into_pyobject(py)?.into_any(),
        Val::Float(f) => f.into_pyobject(py)?.into_any(),
        Val::Str(s) => s.as_ref().into_pyobject(py)?.into_any(),
        Val::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        _ => py.None().into_bound(py),
    })
}

fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any(),
            (_, Some(u)) => u.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(entries) => {
            let dict = PyDict::new(py);
            for (key, item) in entries {
                dict.set_item(key, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// A Config from `dataclasses.asdict(analysis.config.Config(...))`; missing keys keep their default.
pub(crate) fn config_from(options: Option<&Bound<'_, PyDict>>) -> PyResult<Config> {
    let mut config = Config::default();
    let Some(options) = options else {
        return Ok(config);
    };
    macro_rules! take {
        ($($field:ident),*) => {$(
            if let Some(value) = options.get_item(stringify!($field))? {
                config.$field = value.extract()?;
            }
        )*};
    }
    take!(
        response_timeout_s,
        keepalive_limit_s,
        min_reconnect_delay_s,
        accept_timeout_s,
        reconnect_window_s,
        max_violations,
        no_response_types,
        init_exempt_types,
        severity
    );
    for (rule, severity) in &config.severity {
        if default_severity(rule).is_none()
            || !["error", "warning", "info"].contains(&severity.as_str())
        {
            return Err(PyValueError::new_err(format!(
                "severity override {rule}={severity}: unknown rule or severity"
            )));
        }
    }
    Ok(config)
}

pub(crate) fn capture_error(py: Python<'_>, error: CaptureError) -> PyErr {
    match py
        .import("analysis.capture")
        .and_then(|m| m.getattr("CaptureError"))
    {
        Ok(class) => match class.call1((error.0,)) {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// The native analyzers by name, in the order given (analysis.native.ANALYZERS is the order the
/// rules run in); `wanted(table)` says which of their tables to keep.
pub(crate) fn analyzers_named(
    names: &[String],
    config: &Config,
    tables: &[String],
) -> PyResult<Vec<Box<dyn Analyzer>>> {
    let wanted = |table: &str| tables.iter().any(|t| t == table);
    names
        .iter()
        .map(|name| -> PyResult<Box<dyn Analyzer>> {
            match name.as_str() {
                "connections" => Ok(Box::new(Connections::new(config, wanted))),
                "keepalive" => Ok(Box::new(Keepalive::new(config, wanted))),
                "pairs" => Ok(Box::new(Pairs::new(config, wanted))),
                "rings" => Ok(Box::new(Rings::default())),
                "sequences" => Ok(Box::new(Sequences::new(config, wanted))),
                "streams" => Ok(Box::new(Streams::new(wanted))),
                _ => Err(PyValueError::new_err(format!(
                    "no native analyzer {name:?}"
                ))),
            }
        })
        .collect()
}

/// One native analysis of the captures at `paths`, read as one stream (analysis.reader.CaptureSet):
/// Framing, then the `analyzers` named, in the order given. The files are opened (and their
/// headers read) when it is made, so a file that is not a capture raises
/// analysis.capture.CaptureError before any work; `files` tells how far each has been read while
/// `run` works without the GIL in another thread (progress).
#[pyclass(module = "analysis._core")]
pub struct Analysis {
    /// Taken by `run` (a Mutex: a Python object may be shared between threads).
    set: Mutex<Option<CaptureSet>>,
    #[pyo3(get)]
    files: Vec<Py<CaptureProgress>>,
    arrow: bool,
}

/// How far one capture file has been read (the compressed bytes of a gzip file).
#[pyclass(module = "analysis._core", frozen)]
pub struct CaptureProgress {
    #[pyo3(get)]
    path: String,
    read: Arc<AtomicU64>,
}

#[pymethods]
impl CaptureProgress {
    #[getter]
    fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

/// More parsing threads than this would only crowd the cores (the engine's thread is the slower).
const MAX_PARSERS: usize = 8;
/// Violations handed to `on_violations` at a time: memory stays bounded however many a capture has.
const VIOLATIONS_BATCH: usize = 4096;
/// Records read between two checks for Ctrl-C (a few ms of work).
const SIGNALS_EVERY: u64 = 1 << 16;

#[pymethods]
impl Analysis {
    /// `parsers`: threads parsing the lines beside the one running the engine when the files
    /// are one recording (reader/parallel.rs); 0 reads on the caller's thread only.
    #[new]
    #[pyo3(signature = (paths, arrow=false, parsers=0))]
    fn new(py: Python<'_>, paths: Vec<String>, arrow: bool, parsers: usize) -> PyResult<Self> {
        let mut set = py
            .allow_threads(|| CaptureSet::open(&paths))
            .map_err(|e| capture_error(py, e))?;
        set.parsers = parsers.min(MAX_PARSERS);
        let files = set
            .files
            .iter()
            .map(|f| {
                let progress = CaptureProgress {
                    path: f.path.clone(),
                    read: f.progress(),
                };
                Py::new(py, progress)
            })
            .collect::<PyResult<_>>()?;
        Ok(Analysis {
            set: Mutex::new(Some(set)),
            files,
            arrow,
        })
    }

    /// Every file's header (None where it has none), in the order of `paths`.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let set = self
            .set
            .lock()
            .map_err(|_| PyValueError::new_err("poisoned"))?;
        let Some(set) = set.as_ref() else {
            return Err(PyValueError::new_err("this analysis has already run"));
        };
        set.files
            .iter()
            .map(|f| json_to_py(py, f.header.as_ref().unwrap_or(&Value::Null)))
            .collect()
    }

    /// Runs the analysis once, without the GIL: `config` is `dataclasses.asdict` of an
    /// analysis.config.Config (missing keys keep their default), `analyzers` the native analyzers
    /// by name, in their order (analysis.analyzers.ANALYZERS), `tables` the tables to build.
    /// `on_violations(rows)` is called with the
    /// violations found so far (rows as `Violation.as_row()`) every few thousand, and with the
    /// last ones at the end; without it they are all in the result's `violations`. Returns a dict:
    /// the engine's counters (`frames`, `malformed_records`, `records_after_close`, `drops`,
    /// `dropped_records`), `files` (path, header, lines, bytes_read), `damage` ((path, line,
    /// problem, kind, more) per entry), `unknown_records`, `violations`, `stats` (the analyzers'
    /// summary sections), `tables` (the analyzers' tables asked for, a list of row dicts each) and,
    /// with "frames" asked for, the `frames` table as one list per column under `frames_table`.
    /// With `arrow`, `tables` and `frames_table` are pyarrow RecordBatches of the columns of
    /// analysis.tables.COLUMNS instead (arrow_out.rs). With `on_batch` (a `Batches`), the tables
    /// are handed to it while the capture is read instead (batches.rs) and are empty here.
    /// With `locations` (a `Locations`, which needs `on_batch`), every record is placed there
    /// too, and so do the request/response links (pairs.rs `LINKS`, not a table to ask for).
    #[pyo3(signature = (config=None, analyzers=Vec::new(), tables=vec!["frames".to_owned()], on_violations=None, on_batch=None, locations=None))]
    #[allow(clippy::too_many_arguments)]
    fn run<'py>(
        &self,
        py: Python<'py>,
        config: Option<&Bound<'py, PyDict>>,
        analyzers: Vec<String>,
        tables: Vec<String>,
        on_violations: Option<Bound<'py, PyAny>>,
        on_batch: Option<Py<crate::batches::Batches>>,
        locations: Option<Py<Locations>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        if locations.is_some() && on_batch.is_none() {
            return Err(PyValueError::new_err(
                "locations are placed while batches are handed over: on_batch is needed",
            ));
        }
        // The request/response links go to the locations, and only there.
        let mut tables = tables;
        if locations.is_some() {
            tables.push(LINKS.to_owned());
        } else if tables.iter().any(|t| t == LINKS) {
            return Err(PyValueError::new_err(format!(
                "{LINKS} is the core's own table (for locations)"
            )));
        }
        let mut stream = on_batch
            .map(|batches| {
                crate::batches::Stream::new(
                    py,
                    batches,
                    &tables,
                    locations.as_ref().map(|l| l.clone_ref(py)),
                )
            })
            .transpose()?;
        let config = config_from(config)?;
        let analyzers = analyzers_named(&analyzers, &config, &tables)?;
        let frames_table = tables.iter().any(|t| t == "frames");
        let mut engine = Engine::new(config, frames_table, analyzers);
        let mut set = self.take_set()?;
        if frames_table {
            // The frames' payloads decoded (and redacted) on the parsing threads.
            let texts = if stream
                .as_mut()
                .is_some_and(|s| s.hand_text_redaction_to_reader())
            {
                Texts::Redacted
            } else {
                Texts::Decoded
            };
            set.files.iter_mut().for_each(|file| file.texts = texts);
        }
        let on_violations = on_violations.map(Bound::unbind);
        let mut failed: Option<PyErr> = None;
        let mut records: u64 = 0;
        py.allow_threads(|| {
            let placer = locations.as_ref().map(|l| l.get() as &dyn Placer);
            set.for_each_placed_by(placer, |rec, _| {
                engine.feed(rec);
                records += 1;
                if let (Some(locations), true) = (&locations, records.is_multiple_of(SIGNALS_EVERY))
                {
                    if let Err(e) = locations.get().check() {
                        failed = Some(e);
                        return ControlFlow::Break(());
                    }
                }
                if engine.ctx.violations.len() >= VIOLATIONS_BATCH {
                    if let Some(callback) = &on_violations {
                        failed = Python::with_gil(|py| hand_over(py, callback, &mut engine)).err();
                    }
                }
                if let (Some(stream), None) = (stream.as_mut(), &failed) {
                    failed = stream.after_record(&mut engine).err();
                }
                // A consumer's error or Ctrl-C stops the reading (nothing more is kept).
                go_on(&mut failed, records.is_multiple_of(SIGNALS_EVERY))
            });
            if failed.is_none() {
                engine.finish();
                if let Some(stream) = stream.as_mut() {
                    failed = stream.finish(&mut engine).err();
                }
            }
        });
        if let Some(error) = failed {
            return Err(error);
        }
        if let Some(callback) = &on_violations {
            hand_over(py, callback, &mut engine)?;
        }
        result(py, &set, engine, self.arrow)
    }

    /// Reads the captures again, without the engine, for the lines of the records of the
    /// connections `conns`, of the messages `frames` ((connection, frame number): a float number
    /// equal to the integer counts) and of those with a `subscriptionId` (the report's second
    /// pass, analysis.report.stream; in one recording, the lines that cannot hold one are passed
    /// over unparsed), in the order `run` reads them: `on_lines(list[bytes])` is called
    /// with at most 1,024 of them (or 8 MB) at a time. Damage is not reported again; an error of
    /// `on_lines`, or Ctrl-C, stops the reading. An `Analysis` reads once: `run` or `select`.
    fn select(
        &self,
        py: Python<'_>,
        conns: Vec<String>,
        frames: Vec<(String, i64)>,
        on_lines: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let mut set = self.take_set()?;
        let mut wanted: FastMap<String, FastSet<i64>> = FastMap::default();
        for (conn, n) in frames {
            wanted.entry(conn).or_default().insert(n);
        }
        if let Some(test) = select_test(conns.iter().chain(wanted.keys())) {
            set.only(test);
        }
        let conns: FastSet<String> = conns.into_iter().collect();
        let on_lines = on_lines.unbind();
        let (mut lines, mut bytes, mut records) = (Vec::new(), 0, 0u64);
        let mut failed: Option<PyErr> = None;
        py.allow_threads(|| {
            set.for_each_line(|rec, line| {
                records += 1;
                let subscription = !matches!(rec.subscription_id, Val::Absent);
                let keep = subscription
                    || rec.conn.as_str().is_some_and(|conn| {
                        conns.contains(conn)
                            || wanted.get(conn).is_some_and(|numbers| {
                                frame_number(&rec.n).is_some_and(|n| numbers.contains(&n))
                            })
                    });
                if keep {
                    lines.push(line.to_vec());
                    bytes += line.len();
                    if lines.len() >= SELECT_LINES || bytes >= SELECT_BYTES {
                        failed = Python::with_gil(|py| hand_lines(py, &on_lines, &mut lines)).err();
                        bytes = 0;
                    }
                }
                go_on(&mut failed, records.is_multiple_of(SELECT_SIGNALS_EVERY))
            });
        });
        match failed {
            Some(error) => Err(error),
            None => hand_lines(py, &on_lines, &mut lines),
        }
    }
}

/// A record's `n` as the frame number Python's `(conn, n) in wanted` would match: an integer, or
/// a float equal to one.
fn frame_number(n: &Val) -> Option<i64> {
    match *n {
        Val::Int(n) => i64::try_from(n).ok(),
        Val::Float(n) if n.fract() == 0.0 && n.abs() < 9.0e18 => Some(n as i64),
        _ => None,
    }
}

impl Analysis {
    /// The capture set, which one `run` or `select` reads.
    fn take_set(&self) -> PyResult<CaptureSet> {
        let set = self.set.lock().ok().and_then(|mut set| set.take());
        set.ok_or_else(|| PyValueError::new_err("this analysis has already run"))
    }
}

/// Whether to read on: not after an error (`failed`), nor after Ctrl-C (looked for when `due`,
/// which then becomes the error).
fn go_on(failed: &mut Option<PyErr>, due: bool) -> ControlFlow<()> {
    if failed.is_none() && due {
        *failed = Python::with_gil(|py| py.check_signals()).err();
    }
    if failed.is_some() {
        ControlFlow::Break(())
    } else {
        ControlFlow::Continue(())
    }
}

/// A test every line `select` keeps passes, and few others: it holds `subscriptionId` or one of
/// `conns`, or a `\u` escape (a writer may spell any character so, in a key or an id). None (every
/// line parsed) when an id holds a character a writer may escape otherwise (`"`, `\`, `/`, controls).
fn select_test<'c>(conns: impl Iterator<Item = &'c String> + Clone) -> Option<LineTest> {
    let escaped = |c: char| matches!(c, '"' | '\\' | '/') || c < ' ';
    if conns.clone().any(|conn| conn.contains(escaped)) {
        return None;
    }
    let literals =
        std::iter::once("subscriptionId".to_owned()).chain(conns.map(|c| regex::escape(c)));
    // more ids than a regex holds (its size limit): every line parsed
    let found = regex::bytes::Regex::new(&literals.collect::<Vec<_>>().join("|")).ok()?;
    let tested = AtomicU64::new(0);
    Some(Arc::new(move |line: &[u8]| {
        // and one line in SELECT_SIGNALS_EVERY whatever it holds: Ctrl-C is looked for as records come
        tested
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SELECT_SIGNALS_EVERY)
            || found.is_match(line)
            || unicode_escape(line)
    }))
}

/// Whether `line` holds a `\u` escape: a backslash not itself escaped, then `u`.
fn unicode_escape(line: &[u8]) -> bool {
    memchr::memmem::find_iter(line, br"\u").any(|at| {
        let before = line[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        before % 2 == 0
    })
}

/// `select` looks for Ctrl-C every this many records; its line test lets one line in this many
/// through: at most this many records and this many squared lines pass between two looks.
const SELECT_SIGNALS_EVERY: u64 = 1 << 10;

/// Lines `Analysis.select` hands over at a time, and the bytes that also end a batch.
const SELECT_LINES: usize = 1024;
const SELECT_BYTES: usize = 8 << 20;

fn hand_lines(py: Python<'_>, callback: &Py<PyAny>, lines: &mut Vec<Vec<u8>>) -> PyResult<()> {
    let batch = PyList::empty(py);
    for line in lines.drain(..) {
        batch.append(PyBytes::new(py, &line))?;
    }
    callback.call1(py, (batch,)).map(drop)
}

fn hand_over(py: Python<'_>, callback: &Py<PyAny>, engine: &mut Engine) -> PyResult<()> {
    let rows = violation_rows(py, &engine.ctx.violations)?;
    engine.ctx.violations.clear();
    callback.call1(py, (rows,))?;
    Ok(())
}

pub(crate) fn violation_rows<'py>(
    py: Python<'py>,
    found: &[Violation],
) -> PyResult<Bound<'py, PyList>> {
    let violations = PyList::empty(py);
    for v in found {
        let row = PyDict::new(py);
        row.set_item("rule", v.rule)?;
        row.set_item("severity", &v.severity)?;
        row.set_item("conn", &v.conn)?;
        row.set_item("t", val_to_py(py, &v.t)?)?;
        row.set_item("frame", v.frame)?;
        row.set_item("message", &v.message)?;
        row.set_item("at_capture_end", v.at_capture_end)?;
        violations.append(row)?;
    }
    Ok(violations)
}

/// What the core's reader makes of one line after the header (reader.rs `classify`, as `run` reads
/// every line): None for a record it hands on (or passes over: a header, a kind it does not know),
/// else the problem it reports and the kind the damage is counted under (None: the problem
/// itself). Python's line-at-a-time reader (analysis.capture, `view --follow`) asks it about the
/// lines orjson refuses, so both readers damn the same lines in the same words.
#[pyfunction]
fn line_problem(line: &[u8]) -> Option<(String, Option<&'static str>)> {
    match classify(line, Texts::Raw) {
        Line::Skipped(Skipped::Damaged(problem, kind)) => Some((problem, kind)),
        _ => None,
    }
}

/// `Analysis(paths, ...).run()` in one call (the differential tests' entry point).
#[pyfunction]
#[pyo3(signature = (paths, config=None, analyzers=Vec::new(), tables=vec!["frames".to_owned()], arrow=false, parsers=0))]
fn analyze_native<'py>(
    py: Python<'py>,
    paths: Vec<String>,
    config: Option<&Bound<'py, PyDict>>,
    analyzers: Vec<String>,
    tables: Vec<String>,
    arrow: bool,
    parsers: usize,
) -> PyResult<Bound<'py, PyDict>> {
    Analysis::new(py, paths, arrow, parsers)?.run(py, config, analyzers, tables, None, None, None)
}

fn result<'py>(
    py: Python<'py>,
    set: &CaptureSet,
    engine: Engine,
    arrow: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let out = engine_result(py, engine, arrow)?;
    let files = PyList::empty(py);
    for file in &set.files {
        let entry = PyDict::new(py);
        entry.set_item("path", &file.path)?;
        entry.set_item(
            "header",
            json_to_py(py, file.header.as_ref().unwrap_or(&Value::Null))?,
        )?;
        entry.set_item("lines", file.lines)?;
        entry.set_item("bytes_read", file.bytes_read())?;
        files.append(entry)?;
    }
    out.set_item("files", files)?;
    let damage = PyList::empty(py);
    for d in set.files.iter().flat_map(|f| &f.damage.entries) {
        damage.append((&d.path, d.line, &d.problem, &d.kind, d.more))?;
    }
    out.set_item("damage", damage)?;
    let unknown = PyDict::new(py);
    for (kind, n) in set.unknown_records() {
        unknown.set_item(kind, n)?;
    }
    out.set_item("unknown_records", unknown)?;
    Ok(out)
}

/// The engine's counters, `violations` (those not handed over), `stats` and tables (see `run`).
pub(crate) fn engine_result<'py>(
    py: Python<'py>,
    mut engine: Engine,
    arrow: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("frames", engine.frames)?;
    out.set_item("malformed_records", engine.malformed_records)?;
    out.set_item("records_after_close", engine.records_after_close)?;
    out.set_item("drops", engine.drops)?;
    out.set_item("dropped_records", engine.dropped_records)?;
    out.set_item("violations", violation_rows(py, &engine.ctx.violations)?)?;
    out.set_item("stats", json_to_py(py, &Value::Object(engine.stats()))?)?;
    if arrow {
        // `tables` and `frames_table` as pyarrow RecordBatches instead (the last items of `out`)
        crate::arrow_out::set_tables(py, &out, engine.take_tables(), engine.framing.rows.take())?;
        return Ok(out);
    }
    let analyzer_tables = PyDict::new(py);
    for (name, rows) in engine.take_tables() {
        analyzer_tables.set_item(name, crate::batches::row_dicts(py, &rows)?)?;
    }
    out.set_item("tables", analyzer_tables)?;
    if let Some(rows) = &engine.framing.rows {
        out.set_item("frames_table", frames_columns(py, rows)?)?;
    }
    Ok(out)
}

/// The frames table as `{column: [value, …]}`, the values as recorded.
fn frames_columns<'py>(py: Python<'py>, rows: &FramesTable) -> PyResult<Bound<'py, PyDict>> {
    let table = PyDict::new(py);
    fn strings(column: &Strings) -> Vec<Option<&str>> {
        column.iter().collect()
    }
    table.set_item("conn", strings(&rows.conn))?;
    let t = PyList::empty(py);
    for value in &rows.t {
        t.append(val_to_py(py, value)?)?;
    }
    table.set_item("t", t)?;
    table.set_item("frame", &rows.frame)?;
    table.set_item("dir", strings(&rows.dir))?;
    table.set_item("op", strings(&rows.op))?;
    table.set_item("size", &rows.size)?;
    table.set_item("category", strings(&rows.category))?;
    table.set_item("kind", strings(&rows.kind))?;
    table.set_item("type", strings(&rows.type_))?;
    table.set_item("id", strings(&rows.id))?;
    table.set_item("req_id", strings(&rows.req_id))?;
    table.set_item("code", &rows.code)?;
    table.set_item("subscription_id", strings(&rows.subscription_id))?;
    table.set_item("truncated", &rows.truncated)?;
    table.set_item("text", strings(&rows.text))?;
    Ok(table)
}

/// The frames table as row dicts (`{column: value}`), the values as recorded.
pub(crate) fn frame_rows<'py>(py: Python<'py>, rows: &FramesTable) -> PyResult<Bound<'py, PyList>> {
    let columns: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)> =
        frames_columns(py, rows)?.iter().collect();
    let out = PyList::empty(py);
    for i in 0..rows.len() {
        let row = PyDict::new(py);
        for (name, values) in &columns {
            row.set_item(name, values.get_item(i)?)?;
        }
        out.append(row)?;
    }
    Ok(out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Analysis>()?;
    m.add_class::<CaptureProgress>()?;
    m.add_function(wrap_pyfunction!(analyze_native, m)?)?;
    m.add_function(wrap_pyfunction!(line_problem, m)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_lets_through_every_line_it_may_keep() {
        assert!(unicode_escape(br#"{"conn":"c\u006fnn-1"}"#));
        assert!(!unicode_escape(br#"{"text":"caf\\u00e9"}"#)); // an escaped backslash, then u
        assert!(unicode_escape(br#"{"text":"caf\\\u00e9"}"#));
        for odd in ["a/b", "a\"b", "a\\b", "a\nb"] {
            assert!(
                select_test(["conn-1".to_owned(), odd.into()].iter()).is_none(),
                "{odd}"
            );
        }
        let test = select_test(["conn-1".to_owned(), "x.y".into()].iter()).unwrap();
        let other = br#"{"rec":"msg","conn":"conn-2","text":"{\"a\":1}"}"#;
        let kept: Vec<bool> = (0..2 * SELECT_SIGNALS_EVERY).map(|_| test(other)).collect();
        // one line in SELECT_SIGNALS_EVERY passes whatever it holds (Ctrl-C is looked for as records come)
        assert_eq!(kept.iter().filter(|&&k| k).count(), 2);
        for line in [
            &br#"{"rec":"msg","conn":"conn-1"}"#[..],
            br#"{"rec":"msg","conn":"conn-2","subscriptionId":"s-1"}"#,
            br#"{"rec":"msg","conn":"c\u006fnn-1"}"#,
            br#"{"rec":"ping","conn":"x.y"}"#,
        ] {
            assert!(test(line), "{}", String::from_utf8_lossy(line));
        }
        assert!(!test(br#"{"rec":"msg","conn":"xzy"}"#)); // the dot is no wildcard
    }

    #[test]
    fn frame_numbers_match_as_python_compares_them() {
        assert_eq!(frame_number(&Val::Int(5)), Some(5));
        assert_eq!(frame_number(&Val::Float(5.0)), Some(5)); // (c, 5.0) in {(c, 5)}
        assert_eq!(frame_number(&Val::Float(-0.0)), Some(0));
        for other in [
            Val::Float(5.5),
            Val::Float(f64::INFINITY),
            Val::Float(f64::NAN),
            Val::Bool(true),
        ] {
            assert_eq!(frame_number(&other), None);
        }
        assert_eq!(frame_number(&Val::Int(1 << 70)), None);
    }
}
