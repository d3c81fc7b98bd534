//! One partition of `mwtap analyze --jobs N` (analysis/parallel/run.py): its files analysed as
//! usual, with what the summary needs handed back so that the merge can rebuild the
//! single-process run exactly.
//!
//! The single-process run sees the partitions one after the other (they are further apart than
//! every timer delay), so a partition's rows keep their order there, but for three things the
//! merge must know: deadlines still pending when the partition's records end fire at the next
//! partition's first record; connections still open at the end are closed after everything, in
//! partition order; and deadlines of different delays due at one record fire queue by queue in
//! the order the delays were first used over the whole input, not in this partition. Hence the
//! three phases (records, end, finish) and, for violations (the only rows deadlines make), the
//! record and delay each was found at.

use std::ops::ControlFlow;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::analysis_py::{
    analyzers_named, capture_error, config_from, engine_result, val_to_py, violation_rows,
};
use crate::batches::row_dicts;
use crate::engine::{Engine, Row};
use crate::reader::CaptureSet;
use crate::record::Val;

/// Where violations were found: a record (its index in the partition) or the end.
#[derive(Clone, Copy, PartialEq)]
enum At {
    Record(u64),
    /// Deadlines pending after the last record, fired at the end.
    End,
    Finish,
}

/// The violations found, cut where the place they were found at changes: (place, delay of the
/// deadline that found them or None for the record itself, how many).
struct Places {
    segments: Vec<(At, Option<f64>, usize)>,
    current: (At, Option<f64>),
    /// Violations (of the engine's list) already given a place.
    placed: usize,
}

impl Places {
    /// From now on, violations are found at `at` by `delay`'s deadline (or the record).
    fn note(&mut self, found: usize, at: At, delay: Option<f64>) {
        if found > self.placed {
            self.segments
                .push((self.current.0, self.current.1, found - self.placed));
            self.placed = found;
        }
        self.current = (at, delay);
    }
}

/// Analyses the captures at `paths` (one partition) with the native analyzers named (see
/// `Analysis.run`). `end_t`: the last time of the whole input when this is not the last
/// partition; its pending deadlines then fire after its records, and connections still open
/// close at that time. Returns a dict: the engine's counters, `stats`, `files` (path, damage
/// entries, unknown record kinds, per file), `tables` (per phase: records, end, finish, each a
/// dict of table -> row dicts), `violations` ((record index or "end" or "finish", delay or None,
/// rows) per run of rows found at one place), `t_min` / `t_max` (the earliest and latest time of
/// the records, the latter as recorded), `latest_fired` (the latest deadline that fired),
/// `open_at_end`, `delays` (the timer delays in the order first used).
#[pyfunction]
#[pyo3(signature = (paths, config, analyzers, tables, end_t=None))]
fn analyze_partition<'py>(
    py: Python<'py>,
    paths: Vec<String>,
    config: &Bound<'py, PyDict>,
    analyzers: Vec<String>,
    tables: Vec<String>,
    end_t: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let config = config_from(Some(config))?;
    let analyzers = analyzers_named(&analyzers, &config, &tables)?;
    let end_t = end_t.map(|t| time_value(&t)).transpose()?;
    let mut set = py
        .allow_threads(|| CaptureSet::open(&paths))
        .map_err(|e| capture_error(py, e))?;
    let mut engine = Engine::new(config, false, analyzers);
    let mut places = Places {
        segments: Vec::new(),
        current: (At::Record(0), None),
        placed: 0,
    };
    let mut phases: Vec<Vec<(&'static str, Vec<Row>)>> = Vec::new();
    let (mut t_min, mut latest_fired) = (f64::INFINITY, f64::NEG_INFINITY);
    let (t_max, open_at_end) = py.allow_threads(|| {
        let mut index = 0;
        set.for_each(|rec| {
            if let Some(t) = rec.t.number() {
                t_min = t_min.min(t);
                let at = At::Record(index);
                engine.advance_noting(t, &rec.t, |ctx, delay, deadline| {
                    latest_fired = latest_fired.max(deadline);
                    places.note(ctx.violations.len(), at, Some(delay));
                });
            }
            places.note(engine.ctx.violations.len(), At::Record(index), None);
            engine.feed(rec);
            index += 1;
            ControlFlow::Continue(())
        });
        phases.push(engine.take_tables());
        let t_max = match engine.last_t() {
            Val::Absent => Val::Float(f64::NEG_INFINITY), // no record
            t => t.clone(),
        };
        if let Some(end_t) = &end_t {
            engine.advance_noting(f64::INFINITY, end_t, |ctx, delay, deadline| {
                latest_fired = latest_fired.max(deadline);
                places.note(ctx.violations.len(), At::End, Some(delay));
            });
        }
        phases.push(engine.take_tables());
        let open_at_end = engine.open_connections() > 0;
        places.note(engine.ctx.violations.len(), At::Finish, None);
        engine.finish();
        places.note(engine.ctx.violations.len(), At::Finish, None);
        (t_max, open_at_end)
    });
    let violations = PyList::empty(py);
    let mut found = engine.ctx.violations.as_slice();
    for (at, delay, n) in places.segments {
        let (rows, rest) = found.split_at(n);
        found = rest;
        let at = match at {
            At::Record(index) => index.into_pyobject(py)?.into_any(),
            At::End => "end".into_pyobject(py)?.into_any(),
            At::Finish => "finish".into_pyobject(py)?.into_any(),
        };
        violations.append((at, delay, violation_rows(py, rows)?))?;
    }
    engine.ctx.violations.clear();
    let delays = engine.delays();
    // The counters, stats and the tables of the finish phase.
    let out = engine_result(py, engine, false)?;
    let phase_tables = PyList::empty(py);
    for phase in phases {
        let dict = PyDict::new(py);
        for (name, rows) in phase {
            dict.set_item(name, row_dicts(py, &rows)?)?;
        }
        phase_tables.append(dict)?;
    }
    phase_tables.append(out.get_item("tables")?)?;
    out.set_item("tables", phase_tables)?;
    out.set_item("violations", violations)?;
    let files = PyList::empty(py);
    for file in &set.files {
        let damage = PyList::empty(py);
        for d in &file.damage.entries {
            damage.append((&d.path, d.line, &d.problem, &d.kind, d.more))?;
        }
        files.append((&file.path, damage, file.unknown_records.clone()))?;
    }
    out.set_item("files", files)?;
    out.set_item("t_min", t_min)?;
    out.set_item("t_max", val_to_py(py, &t_max)?)?;
    out.set_item("latest_fired", latest_fired)?;
    out.set_item("open_at_end", open_at_end)?;
    out.set_item("delays", delays)?;
    Ok(out)
}

/// A time given by Python (an int or a float), as a record holds it.
fn time_value(t: &Bound<'_, PyAny>) -> PyResult<Val<'static>> {
    Ok(match t.extract::<i64>() {
        Ok(i) => Val::Int(i128::from(i)),
        Err(_) => Val::Float(t.extract()?),
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(analyze_partition, m)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_take_the_place_they_were_found_at() {
        let mut places = Places {
            segments: Vec::new(),
            current: (At::Record(0), None),
            placed: 0,
        };
        places.note(0, At::Record(0), None);
        places.note(2, At::Record(1), Some(30.0)); // 2 found by record 0
        places.note(2, At::Record(1), Some(10.0)); // none by the 30 s deadline
        places.note(3, At::Record(1), None); // 1 by the 10 s deadline
        places.note(3, At::End, Some(10.0));
        places.note(5, At::Finish, None); // 2 at the end
        places.note(6, At::Finish, None);
        let segments: Vec<_> = places
            .segments
            .iter()
            .map(|&(at, delay, n)| (at == At::End, delay, n))
            .collect();
        assert_eq!(
            segments,
            [
                (false, None, 2),
                (false, Some(10.0), 1),
                (true, Some(10.0), 2),
                (false, None, 1)
            ]
        );
        assert!(places.segments[0].0 == At::Record(0) && places.segments[3].0 == At::Finish);
    }
}
