//! Tables leave the core as Arrow record batches, handed to pyarrow through the Arrow PyCapsule
//! Interface (the C Data Interface in two capsules): no Python object per row.
//!
//! Every value is coerced on its own, as `analysis.load.to_frame` coerces it (docs/analysis.md,
//! "Tables"): a time is epoch seconds (a number, not a bool, within `MAX_TIME`; the Python side
//! turns them into datetimes with the same code as `to_frame`), an int is `analysis.tables.int64`
//! (an integer or integral float that int64 holds), a float is a number, a bool column takes
//! what pandas' `astype("boolean")` takes, a str is `str(value)` (NaN missing). Strings are
//! `large_utf8`: one column (the frames' `text`) can pass 2 GB.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, LargeStringBuilder};
use arrow_array::ffi::to_ffi;
use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Schema};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyCapsule, PyDict, PyFloat, PyInt, PyString};

use crate::engine::Row;
use crate::framing::FramesTable;
use crate::pyrepr::py_float;
use crate::record::{Val, MAX_TIME};

/// A column's dtype token (analysis.tables.COLUMNS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Time,
    Float,
    Int,
    Bool,
}

impl Kind {
    pub fn parse(token: &str) -> Result<Kind, String> {
        Ok(match token {
            "str" => Kind::Str,
            "time" => Kind::Time,
            "float" => Kind::Float,
            "int" => Kind::Int,
            "bool" => Kind::Bool,
            _ => return Err(format!("unknown column type {token:?}")),
        })
    }

    fn data_type(self) -> DataType {
        match self {
            Kind::Str => DataType::LargeUtf8,
            Kind::Time | Kind::Float => DataType::Float64,
            Kind::Int => DataType::Int64,
            Kind::Bool => DataType::Boolean,
        }
    }
}

/// A table's columns: (name, kind), in the table's order.
pub type Spec = [(String, Kind)];

/// A float column's value: a number (not a bool: `int64` and `epoch_s` do not take bools either).
fn number(value: &Val) -> Option<f64> {
    match value {
        Val::Int(i) => Some(*i as f64),
        Val::Float(f) => Some(*f),
        _ => None,
    }
}

/// A time column's value (analysis.tables.epoch_s): NaN, inf and times beyond `MAX_TIME` are missing.
fn seconds(value: &Val) -> Option<f64> {
    number(value).filter(|t| t.abs() < MAX_TIME)
}

/// 2**63 (the float nearest is exact).
const TWO_63: f64 = 9.223_372_036_854_776e18;

/// An int column's value (analysis.tables.int64).
fn int64(value: &Val) -> Option<i64> {
    match value {
        Val::Int(i) => i64::try_from(*i).ok(),
        // -2**63 <= f < 2**63, integral (NaN and inf fail both)
        Val::Float(f) if f.fract() == 0.0 && *f >= -TWO_63 && *f < TWO_63 => Some(*f as i64),
        _ => None,
    }
}

/// A str column's value: `str(value)`, NaN and the values Python gets as None missing.
fn text<'a>(value: &'a Val) -> Option<Cow<'a, str>> {
    match value {
        Val::Str(s) => Some(Cow::Borrowed(s.as_ref())),
        Val::Int(i) => Some(Cow::Owned(i.to_string())),
        Val::Float(f) if f.is_nan() => None,
        Val::Float(f) => Some(Cow::Owned(py_float(*f))),
        Val::Bool(b) => Some(Cow::Borrowed(if *b { "True" } else { "False" })),
        Val::Absent | Val::Null | Val::List | Val::Dict => None,
    }
}

/// A bool column as pandas' `astype("boolean")` has it: bools, or (in a column without bools)
/// the numbers 0 and 1 (NaN missing); anything else is an error, as there.
fn bools<'v>(
    name: &str,
    values: impl Iterator<Item = &'v Val<'static>> + Clone,
) -> Result<ArrayRef, String> {
    let numeric = !values.clone().any(|v| matches!(v, Val::Bool(_)));
    let mut column = BooleanBuilder::new();
    for value in values {
        column.append_option(match value {
            Val::Bool(b) => Some(*b),
            Val::Absent | Val::Null | Val::List | Val::Dict => None,
            Val::Float(f) if numeric && f.is_nan() => None,
            v if numeric && matches!(number(v), Some(x) if x == 0.0 || x == 1.0) => {
                number(v).map(|x| x == 1.0)
            }
            v => return Err(format!("column {name:?}: {v:?} is not a bool")),
        });
    }
    Ok(Arc::new(column.finish()))
}

/// One column of any kind from its values.
fn column<'v>(
    name: &str,
    kind: Kind,
    values: impl Iterator<Item = &'v Val<'static>> + Clone,
) -> Result<ArrayRef, String> {
    Ok(match kind {
        Kind::Str => Arc::new(values.map(text).collect::<arrow_array::LargeStringArray>()),
        Kind::Time => floats(values.map(seconds)),
        Kind::Float => floats(values.map(number)),
        Kind::Int => ints(values.map(int64)),
        Kind::Bool => bools(name, values)?,
    })
}

fn floats(values: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    let mut column = Float64Builder::new();
    column.extend(values);
    Arc::new(column.finish())
}

fn ints(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    let mut column = Int64Builder::new();
    column.extend(values);
    Arc::new(column.finish())
}

fn strings<S: AsRef<str>>(values: impl Iterator<Item = Option<S>>) -> ArrayRef {
    let mut column = LargeStringBuilder::new();
    column.extend(values);
    Arc::new(column.finish())
}

fn batch(spec: &Spec, columns: Vec<ArrayRef>) -> Result<RecordBatch, String> {
    let fields: Vec<Field> = spec
        .iter()
        .map(|(name, kind)| Field::new(name, kind.data_type(), true))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

/// An analyzer's rows as a batch of the columns `spec` names (a column a row lacks is missing).
pub fn rows_batch<N: AsRef<str>>(
    spec: &Spec,
    rows: &[Vec<(N, Val<'static>)>],
) -> Result<RecordBatch, String> {
    static ABSENT: Val<'static> = Val::Absent;
    let columns = spec
        .iter()
        .enumerate()
        .map(|(index, (name, kind))| {
            let values = rows.iter().map(move |row| {
                // rows have the table's columns in order: look where the column should be first
                let at = |(column, _): &&(N, Val<'static>)| column.as_ref() == name;
                row.get(index)
                    .filter(|entry| at(entry))
                    .or_else(|| row.iter().find(at))
                    .map_or(&ABSENT, |(_, v)| v)
            });
            column(name, *kind, values)
        })
        .collect::<Result<_, _>>()?;
    batch(spec, columns)
}

/// The frames table (kept per column by Framing) as a batch, each column freed once converted.
pub fn frames_batch(spec: &Spec, mut table: FramesTable) -> Result<RecordBatch, String> {
    fn take<T>(column: &mut Vec<T>) -> Vec<T> {
        std::mem::take(column)
    }
    fn int_column(values: Vec<Option<i128>>) -> ArrayRef {
        ints(
            values
                .into_iter()
                .map(|v| v.and_then(|i| i64::try_from(i).ok())),
        )
    }
    fn str_column(values: Vec<Option<String>>) -> ArrayRef {
        strings(values.into_iter())
    }
    let columns = spec
        .iter()
        .map(|(name, kind)| -> Result<ArrayRef, String> {
            Ok(match (name.as_str(), kind) {
                ("conn", Kind::Str) => strings(take(&mut table.conn).into_iter().map(Some)),
                ("t", Kind::Time) => column(name, *kind, take(&mut table.t).iter())?,
                ("frame", Kind::Int) => int_column(take(&mut table.frame)),
                ("dir", Kind::Str) => strings(take(&mut table.dir).into_iter().map(Some)),
                ("op", Kind::Str) => str_column(take(&mut table.op)),
                ("size", Kind::Int) => int_column(take(&mut table.size)),
                ("category", Kind::Str) => strings(take(&mut table.category).into_iter()),
                ("kind", Kind::Str) => str_column(take(&mut table.kind)),
                ("type", Kind::Str) => str_column(take(&mut table.type_)),
                ("id", Kind::Str) => str_column(take(&mut table.id)),
                ("req_id", Kind::Str) => str_column(take(&mut table.req_id)),
                ("code", Kind::Int) => int_column(take(&mut table.code)),
                ("subscription_id", Kind::Str) => str_column(take(&mut table.subscription_id)),
                ("truncated", Kind::Bool) => {
                    Arc::new(arrow_array::BooleanArray::from(take(&mut table.truncated)))
                }
                ("text", Kind::Str) => str_column(take(&mut table.text)),
                _ => {
                    return Err(format!(
                        "frames column {name:?} ({kind:?}) is not one Framing keeps"
                    ))
                }
            })
        })
        .collect::<Result<_, _>>()?;
    batch(spec, columns)
}

/// A batch as Python sees it through the Arrow PyCapsule Interface (`pyarrow.record_batch(x)`).
#[pyclass(frozen, module = "analysis._core")]
struct ArrowBatch(StructArray);

#[pymethods]
impl ArrowBatch {
    /// The batch as an "arrow_schema" and an "arrow_array" capsule; `requested_schema` is
    /// ignored (the interface lets a producer keep its own).
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyCapsule>, Bound<'py, PyCapsule>)> {
        let _ = requested_schema;
        let (array, schema) =
            to_ffi(&self.0.to_data()).map_err(|e| PyValueError::new_err(e.to_string()))?;
        // The capsules own the structs; their destructors drop them, which releases whatever the
        // consumer did not move out (pyarrow moves them out and clears `release`).
        Ok((
            PyCapsule::new(py, schema, Some(c"arrow_schema".to_owned()))?,
            PyCapsule::new(py, array, Some(c"arrow_array".to_owned()))?,
        ))
    }
}

/// A batch as a `pyarrow.RecordBatch` (the buffers are shared, not copied).
fn to_pyarrow(py: Python<'_>, batch: RecordBatch) -> PyResult<Bound<'_, PyAny>> {
    let exported = Bound::new(py, ArrowBatch(StructArray::from(batch)))?;
    py.import("pyarrow")?
        .call_method1("record_batch", (exported,))
}

/// `analyze_native(..., arrow=True)`: `tables` (each analyzer table named) and, when kept,
/// `frames_table` as pyarrow RecordBatches, set in `out`.
pub fn set_tables(
    py: Python<'_>,
    out: &Bound<'_, PyDict>,
    tables: Vec<(&'static str, Vec<Row>)>,
    frames: Option<FramesTable>,
) -> PyResult<()> {
    fn failed(name: &'static str) -> impl Fn(String) -> PyErr {
        move |e| PyValueError::new_err(format!("table {name}: {e}"))
    }
    let batches = PyDict::new(py);
    for (name, rows) in tables {
        let spec = spec_of(py, name)?;
        let batch = py
            .allow_threads(|| rows_batch(&spec, &rows))
            .map_err(failed(name))?;
        batches.set_item(name, to_pyarrow(py, batch)?)?;
    }
    out.set_item("tables", batches)?;
    if let Some(frames) = frames {
        let spec = spec_of(py, "frames")?;
        let batch = py
            .allow_threads(|| frames_batch(&spec, frames))
            .map_err(failed("frames"))?;
        out.set_item("frames_table", to_pyarrow(py, batch)?)?;
    }
    Ok(())
}

/// A Python scalar as the reader would have it.
fn val_of(value: &Bound<'_, PyAny>) -> PyResult<Val<'static>> {
    Ok(if value.is_none() {
        Val::Null
    } else if let Ok(b) = value.downcast::<PyBool>() {
        Val::Bool(b.is_true())
    } else if value.is_instance_of::<PyInt>() {
        Val::Int(value.extract()?)
    } else if value.is_instance_of::<PyFloat>() {
        Val::Float(value.extract()?)
    } else if value.is_instance_of::<PyString>() {
        Val::Str(Cow::Owned(value.extract()?))
    } else {
        return Err(PyValueError::new_err(format!(
            "{value:?} is not None, a bool, an int, a float or a str"
        )));
    })
}

/// `analysis._core.arrow_rows(table, rows)`: rows of `table` (dicts of None, bools, ints, floats
/// and strs) as a pyarrow RecordBatch, converted as the native tables are (tests/test_native_arrow.py
/// holds the conversion against `analysis.load.to_frame` with it).
#[pyfunction]
fn arrow_rows<'py>(
    py: Python<'py>,
    table: &str,
    rows: Vec<Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let spec = spec_of(py, table)?;
    let rows = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|(name, value)| Ok((name.extract::<String>()?, val_of(&value)?)))
                .collect()
        })
        .collect::<PyResult<Vec<Vec<_>>>>()?;
    to_pyarrow(py, rows_batch(&spec, &rows).map_err(PyValueError::new_err)?)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(arrow_rows, m)?)
}

/// A table's spec from `analysis.tables.COLUMNS` (the one list of columns and types).
fn spec_of(py: Python<'_>, table: &str) -> PyResult<Vec<(String, Kind)>> {
    let columns: Vec<(String, String)> = py
        .import("analysis.tables")?
        .getattr("COLUMNS")?
        .get_item(table)?
        .extract()?;
    columns
        .into_iter()
        .map(|(name, token)| Ok((name, Kind::parse(&token).map_err(PyValueError::new_err)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};

    fn spec(columns: &[(&str, Kind)]) -> Vec<(String, Kind)> {
        columns.iter().map(|(n, k)| (n.to_string(), *k)).collect()
    }

    #[test]
    fn values_are_coerced_one_by_one() {
        let spec = spec(&[
            ("s", Kind::Str),
            ("t", Kind::Time),
            ("i", Kind::Int),
            ("f", Kind::Float),
        ]);
        let rows: Vec<Row> = vec![
            vec![
                ("s", Val::Int(5)),
                ("t", Val::Float(1.5)),
                ("i", Val::Float(3.0)),
                ("f", Val::Int(2)),
            ],
            vec![
                ("s", Val::Bool(true)),
                ("t", Val::Float(f64::NAN)),
                ("i", Val::Int(1 << 63)),
                ("f", Val::Bool(true)),
            ],
            vec![
                ("i", Val::Float(0.5)),
                ("s", Val::Float(1e16)),
                ("t", Val::Int(10_000_000_000)),
            ],
        ];
        let batch = rows_batch(&spec, &rows).unwrap();
        let s = batch.column(0).as_string::<i64>();
        assert_eq!((s.value(0), s.value(1), s.value(2)), ("5", "True", "1e+16"));
        let t = batch.column(1).as_primitive::<Float64Type>();
        assert_eq!((t.value(0), t.is_null(1), t.is_null(2)), (1.5, true, true));
        let i = batch.column(2).as_primitive::<Int64Type>();
        assert_eq!((i.value(0), i.is_null(1), i.is_null(2)), (3, true, true));
        let f = batch.column(3).as_primitive::<Float64Type>();
        assert_eq!((f.value(0), f.is_null(1), f.is_null(2)), (2.0, true, true));
    }

    #[test]
    fn bool_columns_take_what_pandas_takes() {
        let spec = spec(&[("b", Kind::Bool)]);
        let rows = |values: Vec<Val<'static>>| -> Vec<Row> {
            values.into_iter().map(|v| vec![("b", v)]).collect()
        };
        assert!(rows_batch(&spec, &rows(vec![Val::Int(1), Val::Float(0.0), Val::Null])).is_ok());
        assert!(rows_batch(&spec, &rows(vec![Val::Int(1), Val::Bool(true)])).is_err());
        assert!(rows_batch(&spec, &rows(vec![Val::Int(2)])).is_err());
    }
}
