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

use arrow_buffer::{ArrowNativeType, BooleanBufferBuilder, Buffer, NullBufferBuilder};
use arrow_data::ffi::FFI_ArrowArray;
use arrow_data::{ArrayData, ArrayDataBuilder};
use arrow_schema::ffi::FFI_ArrowSchema;
use arrow_schema::{DataType, Field, Fields};
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
/// A time column's value (analysis.tables.epoch_s): NaN, inf and times beyond `MAX_TIME` are missing.
fn seconds(value: &Val) -> Option<f64> {
    value.number().filter(|t| t.abs() < MAX_TIME)
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
) -> Result<ArrayData, String> {
    let numeric = !values.clone().any(|v| matches!(v, Val::Bool(_)));
    let values = values.map(|value| match value {
        Val::Bool(b) => Ok(Some(*b)),
        Val::Absent | Val::Null | Val::List | Val::Dict => Ok(None),
        Val::Float(f) if numeric && f.is_nan() => Ok(None),
        v if numeric && matches!(v.number(), Some(x) if x == 0.0 || x == 1.0) => {
            Ok(v.number().map(|x| x == 1.0))
        }
        v => Err(format!("column {name:?}: {v:?} is not a bool")),
    });
    booleans(values.collect::<Result<Vec<_>, _>>()?.into_iter())
}

/// One column of any kind from its values.
fn column<'v>(
    name: &str,
    kind: Kind,
    values: impl Iterator<Item = &'v Val<'static>> + Clone,
) -> Result<ArrayData, String> {
    match kind {
        Kind::Str => strings(values.map(text)),
        Kind::Time => primitive(DataType::Float64, values.map(seconds)),
        Kind::Float => primitive(DataType::Float64, values.map(Val::number)),
        Kind::Int => primitive(DataType::Int64, values.map(int64)),
        Kind::Bool => bools(name, values),
    }
}

/// The array, its buffers checked (lengths, offsets, UTF-8) as arrow-data checks them.
fn built(data: ArrayDataBuilder) -> Result<ArrayData, String> {
    data.build().map_err(|e| e.to_string())
}

/// A float64 or int64 column: the values (0 where missing) and the validity bitmap.
fn primitive<T: ArrowNativeType>(
    data_type: DataType,
    values: impl Iterator<Item = Option<T>>,
) -> Result<ArrayData, String> {
    let mut nulls = NullBufferBuilder::new(0);
    let values: Vec<T> = values
        .map(|v| {
            nulls.append(v.is_some());
            v.unwrap_or_default()
        })
        .collect();
    built(
        ArrayData::builder(data_type)
            .len(values.len())
            .add_buffer(Buffer::from_vec(values))
            .nulls(nulls.finish()),
    )
}

fn booleans(values: impl Iterator<Item = Option<bool>>) -> Result<ArrayData, String> {
    let mut nulls = NullBufferBuilder::new(0);
    let mut bits = BooleanBufferBuilder::new(0);
    for value in values {
        nulls.append(value.is_some());
        bits.append(value.unwrap_or(false));
    }
    built(
        ArrayData::builder(DataType::Boolean)
            .len(bits.len())
            .add_buffer(bits.finish().into_inner())
            .nulls(nulls.finish()),
    )
}

/// A large_utf8 column: 64-bit offsets, the bytes one after the other.
fn strings<S: AsRef<str>>(values: impl Iterator<Item = Option<S>>) -> Result<ArrayData, String> {
    let mut nulls = NullBufferBuilder::new(0);
    let mut offsets = vec![0i64];
    let mut bytes = Vec::new();
    for value in values {
        nulls.append(value.is_some());
        if let Some(s) = value {
            bytes.extend_from_slice(s.as_ref().as_bytes());
        }
        offsets.push(bytes.len() as i64);
    }
    built(
        ArrayData::builder(DataType::LargeUtf8)
            .len(offsets.len() - 1)
            .add_buffer(Buffer::from_vec(offsets))
            .add_buffer(Buffer::from_vec(bytes))
            .nulls(nulls.finish()),
    )
}

/// The table as one struct array (what the C Data Interface hands over as a record batch).
fn batch(spec: &Spec, columns: Vec<ArrayData>) -> Result<ArrayData, String> {
    let fields: Fields = spec
        .iter()
        .map(|(name, kind)| Field::new(name, kind.data_type(), true))
        .collect();
    built(
        ArrayData::builder(DataType::Struct(fields))
            .len(columns.first().map_or(0, ArrayData::len))
            .child_data(columns),
    )
}

/// An analyzer's rows as a batch of the columns `spec` names (a column a row lacks is missing).
pub fn rows_batch<N: AsRef<str>>(
    spec: &Spec,
    rows: &[Vec<(N, Val<'static>)>],
) -> Result<ArrayData, String> {
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
pub fn frames_batch(spec: &Spec, mut table: FramesTable) -> Result<ArrayData, String> {
    fn take<T>(column: &mut Vec<T>) -> Vec<T> {
        std::mem::take(column)
    }
    fn ints(values: Vec<Option<i128>>) -> Result<ArrayData, String> {
        let values = values.into_iter();
        primitive(
            DataType::Int64,
            values.map(|v| v.and_then(|i| i64::try_from(i).ok())),
        )
    }
    let columns = spec
        .iter()
        .map(|(name, kind)| match (name.as_str(), kind) {
            ("conn", Kind::Str) => strings(take(&mut table.conn).into_iter().map(Some)),
            ("t", Kind::Time) => column(name, *kind, take(&mut table.t).iter()),
            ("frame", Kind::Int) => ints(take(&mut table.frame)),
            ("dir", Kind::Str) => strings(take(&mut table.dir).into_iter().map(Some)),
            ("op", Kind::Str) => strings(take(&mut table.op).into_iter()),
            ("size", Kind::Int) => ints(take(&mut table.size)),
            ("category", Kind::Str) => strings(take(&mut table.category).into_iter()),
            ("kind", Kind::Str) => strings(take(&mut table.kind).into_iter()),
            ("type", Kind::Str) => strings(take(&mut table.type_).into_iter()),
            ("id", Kind::Str) => strings(take(&mut table.id).into_iter()),
            ("req_id", Kind::Str) => strings(take(&mut table.req_id).into_iter()),
            ("code", Kind::Int) => ints(take(&mut table.code)),
            ("subscription_id", Kind::Str) => strings(take(&mut table.subscription_id).into_iter()),
            ("truncated", Kind::Bool) => booleans(take(&mut table.truncated).into_iter().map(Some)),
            ("text", Kind::Str) => strings(take(&mut table.text).into_iter()),
            _ => Err(format!(
                "frames column {name:?} ({kind:?}) is not one Framing keeps"
            )),
        })
        .collect::<Result<_, _>>()?;
    batch(spec, columns)
}

/// A batch as Python sees it through the Arrow PyCapsule Interface (`pyarrow.record_batch(x)`).
#[pyclass(frozen, module = "analysis._core")]
struct ArrowBatch(ArrayData);

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
        let schema = FFI_ArrowSchema::try_from(self.0.data_type())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let array = FFI_ArrowArray::new(&self.0);
        // The capsules own the structs; their destructors drop them, which releases whatever the
        // consumer did not move out (pyarrow moves them out and clears `release`).
        Ok((
            PyCapsule::new(py, schema, Some(c"arrow_schema".to_owned()))?,
            PyCapsule::new(py, array, Some(c"arrow_array".to_owned()))?,
        ))
    }
}

/// A batch as a `pyarrow.RecordBatch` (the buffers are shared, not copied).
pub(crate) fn to_pyarrow(py: Python<'_>, batch: ArrayData) -> PyResult<Bound<'_, PyAny>> {
    let exported = Bound::new(py, ArrowBatch(batch))?;
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
pub(crate) fn spec_of(py: Python<'_>, table: &str) -> PyResult<Vec<(String, Kind)>> {
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

    /// The `row`th value of a column (None where missing).
    fn at<T: ArrowNativeType>(column: &ArrayData, row: usize) -> Option<T> {
        column.is_valid(row).then(|| column.buffer::<T>(0)[row])
    }

    fn str_at(column: &ArrayData, row: usize) -> &str {
        let offsets = column.buffer::<i64>(0);
        let bytes = &column.buffers()[1][offsets[row] as usize..offsets[row + 1] as usize];
        std::str::from_utf8(bytes).unwrap()
    }

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
        let [s, t, i, f] = batch.child_data() else {
            panic!("four columns")
        };
        assert_eq!(
            (str_at(s, 0), str_at(s, 1), str_at(s, 2)),
            ("5", "True", "1e+16")
        );
        assert_eq!(
            (at(t, 0), at::<f64>(t, 1), at::<f64>(t, 2)),
            (Some(1.5), None, None)
        );
        assert_eq!(
            (at(i, 0), at::<i64>(i, 1), at::<i64>(i, 2)),
            (Some(3), None, None)
        );
        assert_eq!(
            (at(f, 0), at::<f64>(f, 1), at::<f64>(f, 2)),
            (Some(2.0), None, None)
        );
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
