//! Tables leave the core while the capture is read, in batches of bounded size
//! (`Analysis.run(..., on_batch=Batches(callback, ...))`): the frames table and the analyzers'
//! rows never pile up in the core, whatever the size of the capture.
//!
//! A table is handed over (`callback(table, batch)`) each time it holds `rows` rows (the frames
//! table also once its payloads reach `payload_bytes`), then with its last rows at the end, even
//! none: every table asked for comes at least once. Each table's batches come in the order its
//! rows were made (the order of the one-pass tables); batches of different tables come in no
//! set order. A batch is a pyarrow RecordBatch (arrow_out.rs), or for the tables named in `dicts`
//! a list of at most `DICT_ROWS` row dicts holding the values as recorded (what
//! `analysis.summary.Summary` aggregates; never redacted).

use std::collections::HashMap;

use arrow_data::ArrayData;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::analysis_py::val_to_py;
use crate::arrow_out::{frames_batch, spec_of, to_pyarrow, Kind, Strings, Table, Types};
use crate::engine::{Engine, Row};
use crate::framing::FramesTable;
use crate::locations::Locations;
use crate::pairs::LINKS;

/// The analyzers' finished rows are collected every so many records: they hold at most those
/// records' rows in between.
const COLLECT_EVERY: u64 = 1024;

/// Row dicts are handed over at most this many at a time, whatever `rows` says: a row costs about
/// a kilobyte here and as much again as a Python dict, so 25,000 at once made the peak of `mwtap
/// analyze` (5M frames: 143 MB peak RSS, 93 MB with batches of 1,024).
const DICT_ROWS: usize = 1024;

/// How `Analysis.run` hands tables over while it reads (see the module's description).
/// `redact`: every string passes through the payload redaction (`analysis.redact.redact_text`)
/// first, as `mwtap export` writes them. `parquet`: the batches in the types `mwtap export`
/// writes (arrow_out.rs `Types::Parquet`: times as timestamp[us, UTC], strings utf8).
#[pyclass(module = "analysis._core", frozen)]
pub struct Batches {
    callback: Py<PyAny>,
    rows: usize,
    payload_bytes: usize,
    dicts: Vec<String>,
    redact: bool,
    types: Types,
}

#[pymethods]
impl Batches {
    #[new]
    #[pyo3(signature = (
        on_batch, rows=25_000, payload_bytes=16_000_000, dicts=Vec::new(), redact=false, parquet=false
    ))]
    fn new(
        on_batch: Py<PyAny>,
        rows: usize,
        payload_bytes: usize,
        dicts: Vec<String>,
        redact: bool,
        parquet: bool,
    ) -> PyResult<Self> {
        if rows == 0 || payload_bytes == 0 {
            return Err(PyValueError::new_err("batches of 0 rows or bytes"));
        }
        if dicts.iter().any(|t| t == "frames") {
            return Err(PyValueError::new_err(
                "the frames table is handed over as Arrow only",
            ));
        }
        Ok(Batches {
            callback: on_batch,
            rows,
            payload_bytes,
            dicts,
            redact,
            types: Types::parquet_if(parquet),
        })
    }
}

/// One run's hand-over: the rows collected and not yet handed over, per table.
pub(crate) struct Stream {
    settings: Py<Batches>,
    specs: HashMap<String, Vec<(String, Kind)>>,
    /// The tables handed over as Arrow: the rows collected, as columns.
    tables: Vec<(&'static str, Table)>,
    /// The other tables' rows not yet handed over.
    pending: Vec<(&'static str, Vec<Row>)>,
    records: u64,
    /// Whether the reader redacts the frames' payloads (reader.rs `Texts::Redacted`).
    texts_redacted: bool,
    /// Where the pair links go (`mwtap view`'s index; pairs.rs `LINKS`).
    locations: Option<Py<Locations>>,
}

impl Stream {
    /// The hand-over of `tables` (their columns read here, with the GIL).
    pub(crate) fn new(
        py: Python<'_>,
        settings: Py<Batches>,
        tables: &[String],
        locations: Option<Py<Locations>>,
    ) -> PyResult<Self> {
        let dicts = &settings.get().dicts;
        let to_locations = |t: &str| locations.is_some() && t == LINKS;
        let specs = tables
            .iter()
            .filter(|t| !dicts.contains(t) && !to_locations(t))
            .map(|t| Ok((t.clone(), spec_of(py, t)?)))
            .collect::<PyResult<_>>()?;
        Ok(Stream {
            settings,
            specs,
            tables: Vec::new(),
            pending: Vec::new(),
            records: 0,
            texts_redacted: false,
            locations,
        })
    }

    /// Hands the redaction of the frames' payloads to the reader, when the tables leave redacted
    /// (they are then not redacted here again); returns whether it did.
    pub(crate) fn hand_text_redaction_to_reader(&mut self) -> bool {
        self.texts_redacted = self.settings.get().redact;
        self.texts_redacted
    }

    /// After each record fed to `engine` (called without the GIL): hands over what is full.
    pub(crate) fn after_record(&mut self, engine: &mut Engine) -> PyResult<()> {
        let settings = self.settings.get();
        if let Some(frames) = engine.framing.rows.as_mut() {
            if frames.len() >= settings.rows || frames.text.byte_len() >= settings.payload_bytes {
                // a batch's payloads end past their limit by the last one: room for twice the limit
                let next =
                    frames.empty_like(settings.rows, settings.payload_bytes.saturating_mul(2));
                let table = std::mem::replace(frames, next);
                self.send_frames(table)?;
            }
        }
        self.records += 1;
        if self.records.is_multiple_of(COLLECT_EVERY) {
            self.collect(engine)?;
            self.send_full()?;
        }
        Ok(())
    }

    /// After `engine.finish()`: every table's last rows.
    pub(crate) fn finish(&mut self, engine: &mut Engine) -> PyResult<()> {
        if let Some(frames) = engine.framing.rows.as_mut() {
            self.send_frames(std::mem::take(frames))?;
        }
        self.collect(engine)?;
        self.send_full()?;
        for (name, rows) in std::mem::take(&mut self.pending) {
            self.send(name, rows)?;
        }
        let settings = self.settings.get();
        for (name, table) in &mut self.tables {
            settings.hand_over(name, table.batch(settings.redact, settings.types))?;
        }
        Ok(())
    }

    /// The analyzers' rows made since the last time: those of the Arrow tables into their
    /// columns (handed over each time a table holds `rows` rows), the others kept as rows.
    fn collect(&mut self, engine: &mut Engine) -> PyResult<()> {
        let settings = self.settings.get();
        for (name, rows) in engine.take_tables() {
            let Some(spec) = self.specs.get(name) else {
                match self.pending.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, pending)) => pending.extend(rows),
                    None => self.pending.push((name, rows)),
                }
                continue;
            };
            let index = match self.tables.iter().position(|(n, _)| *n == name) {
                Some(index) => index,
                None => {
                    self.tables.push((name, Table::new(spec)));
                    self.tables.len() - 1
                }
            };
            let table = &mut self.tables[index].1;
            let mut rows = rows.as_slice();
            while !rows.is_empty() {
                let (now, rest) = rows.split_at((settings.rows - table.len()).min(rows.len()));
                table.add(now);
                rows = rest;
                if table.len() == settings.rows {
                    settings.hand_over(name, table.batch(settings.redact, settings.types))?;
                }
            }
        }
        Ok(())
    }

    /// Every full batch of the tables handed over as rows (`DICT_ROWS` rows each at most).
    fn send_full(&mut self) -> PyResult<()> {
        let size = self.settings.get().rows.min(DICT_ROWS);
        for index in 0..self.pending.len() {
            while self.pending[index].1.len() >= size {
                let (name, pending) = &mut self.pending[index];
                let (name, rows) = (*name, pending.drain(..size).collect());
                self.send(name, rows)?;
            }
        }
        Ok(())
    }

    /// Rows of a table handed over as dicts (or the pair links, to `locations`).
    fn send(&self, name: &'static str, rows: Vec<Row>) -> PyResult<()> {
        if let (Some(locations), LINKS) = (&self.locations, name) {
            return locations.get().links(&rows);
        }
        Python::with_gil(|py| {
            let batch = row_dicts(py, &rows)?;
            self.settings
                .get()
                .callback
                .call1(py, (name, batch))
                .map(drop)
        })
    }

    fn send_frames(&self, mut table: FramesTable) -> PyResult<()> {
        let settings = self.settings.get();
        if settings.redact {
            redact_frames(&mut table, !self.texts_redacted);
        }
        let spec = self
            .specs
            .get("frames")
            .expect("the frames table was asked for");
        settings.hand_over("frames", frames_batch(spec, table, settings.types))
    }
}

impl Batches {
    /// A table's batch to the callback, as a pyarrow RecordBatch.
    fn hand_over(&self, name: &str, batch: Result<ArrayData, String>) -> PyResult<()> {
        let batch = batch.map_err(|e| PyValueError::new_err(format!("table {name}: {e}")))?;
        Python::with_gil(|py| {
            let batch = to_pyarrow(py, batch)?;
            self.callback.call1(py, (name, batch)).map(drop)
        })
    }
}

/// Rows as dicts of their values as recorded.
pub(crate) fn row_dicts<'py>(py: Python<'py>, rows: &[Row]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for row in rows {
        let dict = PyDict::new(py);
        for (column, value) in row {
            dict.set_item(column, val_to_py(py, value)?)?;
        }
        list.append(dict)?;
    }
    Ok(list)
}

/// Redacts every string column, the payloads too with `texts`.
fn redact_frames(table: &mut FramesTable, texts: bool) {
    let mut columns = vec![
        &mut table.conn,
        &mut table.dir,
        &mut table.op,
        &mut table.kind,
        &mut table.type_,
        &mut table.id,
        &mut table.req_id,
        &mut table.subscription_id,
    ];
    if texts {
        columns.push(&mut table.text);
    }
    columns.into_iter().for_each(Strings::redact);
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Batches>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_reaches_every_string_column() {
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        let mut table = FramesTable::default();
        table.conn.push(Some(&format!("c-{token}")));
        table.dir.push(Some("c2s"));
        table.text.push(Some(&format!(r#"{{"jwt":"{token}"}}"#)));
        table.id.push(None);
        redact_frames(&mut table, true);
        let conn = table.conn.get(0).unwrap();
        assert!(!conn.contains(token) && conn.contains("[redacted sha256:"));
        assert!(!table.text.get(0).unwrap().contains(token));
        assert_eq!((table.dir.get(0), table.id.get(0)), (Some("c2s"), None));
    }
}
