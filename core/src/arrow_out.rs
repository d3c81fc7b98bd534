//! Tables leave the core as Arrow record batches, handed to pyarrow through the Arrow PyCapsule
//! Interface (the C Data Interface in two capsules): no Python object per row.
//!
//! Every value is coerced on its own, as `analysis.load.to_frame` coerces it (docs/analysis.md,
//! "Tables"): a time is epoch seconds (a number, not a bool, within `MAX_TIME`; the Python side
//! turns them into datetimes with the same code as `to_frame`), an int is `analysis.tables.int64`
//! (an integer or integral float that int64 holds), a float is a number, a bool column takes
//! what pandas' `astype("boolean")` takes, a str is `str(value)` (NaN missing). Strings are
//! `large_utf8`: one column (the frames' `text`) can pass 2 GB. `mwtap export` takes them in the
//! types its Parquet files hold instead (`Types::Parquet`): times as timestamp[us, UTC], strings
//! as utf8 (its batches hold a few megabytes of payloads).

use std::borrow::{Borrow, Cow};

use arrow_buffer::{ArrowNativeType, BooleanBufferBuilder, Buffer, NullBufferBuilder};
use arrow_data::ffi::FFI_ArrowArray;
use arrow_data::{ArrayData, ArrayDataBuilder};
use arrow_schema::ffi::FFI_ArrowSchema;
use arrow_schema::{DataType, Field, Fields, TimeUnit};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyCapsule, PyDict, PyFloat, PyInt, PyString};

use crate::engine::Row;
use crate::framing::FramesTable;
use crate::pyrepr::py_float;
use crate::record::{Val, MAX_TIME};
use crate::redact::{may_hold_token, redact_text};

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

    fn data_type(self, types: Types) -> DataType {
        match (self, types) {
            (Kind::Str, Types::Frame) => DataType::LargeUtf8,
            (Kind::Str, Types::Parquet) => DataType::Utf8,
            (Kind::Time, Types::Parquet) => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            (Kind::Time | Kind::Float, _) => DataType::Float64,
            (Kind::Int, _) => DataType::Int64,
            (Kind::Bool, _) => DataType::Boolean,
        }
    }
}

/// The Arrow types of a batch's columns: as `analysis.load` makes DataFrames of them (`Frame`:
/// times as float epoch seconds, strings large_utf8), or as `mwtap export` writes them
/// (`Parquet`, docs/export.md: times as timestamp[us, UTC], rounded half to even as
/// `analysis.export` rounds a dict row's, strings utf8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Types {
    Frame,
    Parquet,
}

impl Types {
    /// The export's types with `parquet` (the flag of `Batches` and `arrow_rows`).
    pub fn parquet_if(parquet: bool) -> Types {
        if parquet {
            Types::Parquet
        } else {
            Types::Frame
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

/// A column built from its values one at a time.
enum Column {
    Str(Strings),
    Time(Vec<f64>, NullBufferBuilder),
    Float(Vec<f64>, NullBufferBuilder),
    Int(Vec<i64>, NullBufferBuilder),
    /// Whether a bool column takes numbers depends on all its values (`bools`).
    Bool(Vec<Val<'static>>),
}

impl Column {
    /// An empty column of each of `spec`'s.
    fn of(spec: &Spec) -> Vec<Column> {
        spec.iter().map(|(_, kind)| Column::new(*kind, 0)).collect()
    }

    /// An empty column of the same kind with room for as many values as this one holds (and for
    /// strings, a quarter more bytes): the next batch of a table is as long, and a column grown
    /// by doubling copies what it holds at every step.
    fn empty_like(&self) -> Column {
        match self {
            Column::Str(strings) => Column::Str(strings.empty_like(usize::MAX, usize::MAX)),
            Column::Time(values, _) => Column::new(Kind::Time, values.len()),
            Column::Float(values, _) => Column::new(Kind::Float, values.len()),
            Column::Int(values, _) => Column::new(Kind::Int, values.len()),
            Column::Bool(values) => Column::new(Kind::Bool, values.len()),
        }
    }

    /// A column of `values` (for the frames table's own columns: no redaction, no bools).
    fn built(
        kind: Kind,
        values: impl Iterator<Item = Val<'static>>,
        types: Types,
    ) -> Result<ArrayData, String> {
        let mut column = Column::new(kind, values.size_hint().0);
        column.extend(values);
        column.finish("", false, types)
    }

    /// An empty column with room for `rows` values.
    fn new(kind: Kind, rows: usize) -> Self {
        match kind {
            Kind::Str => Column::Str(Strings::with_capacity(rows, 0)),
            Kind::Time => Column::Time(Vec::with_capacity(rows), NullBufferBuilder::new(rows)),
            Kind::Float => Column::Float(Vec::with_capacity(rows), NullBufferBuilder::new(rows)),
            Kind::Int => Column::Int(Vec::with_capacity(rows), NullBufferBuilder::new(rows)),
            Kind::Bool => Column::Bool(Vec::with_capacity(rows)),
        }
    }

    /// Appends `values`, the column's kind matched once for all of them (not once a value).
    fn extend<V: Borrow<Val<'static>>>(&mut self, values: impl Iterator<Item = V>) {
        fn add<T: Default>(values: &mut Vec<T>, nulls: &mut NullBufferBuilder, value: Option<T>) {
            nulls.append(value.is_some());
            values.push(value.unwrap_or_default());
        }
        match self {
            Column::Str(strings) => values.for_each(|v| strings.push(text(v.borrow()).as_deref())),
            Column::Time(column, nulls) => {
                values.for_each(|v| add(column, nulls, seconds(v.borrow())));
            }
            Column::Float(column, nulls) => {
                values.for_each(|v| add(column, nulls, v.borrow().number()));
            }
            Column::Int(column, nulls) => {
                values.for_each(|v| add(column, nulls, int64(v.borrow())))
            }
            Column::Bool(column) => column.extend(values.map(|v| v.borrow().clone())),
        }
    }

    /// The array (`redact`: its strings through the redaction).
    fn finish(self, name: &str, redact: bool, types: Types) -> Result<ArrayData, String> {
        match self {
            Column::Str(mut strings) => {
                if redact {
                    strings.redact();
                }
                strings.into_array(types)
            }
            Column::Time(values, nulls) if types == Types::Parquet => {
                let micros = values.iter().map(|t| (t * 1e6).round_ties_even() as i64);
                primitive(Kind::Time.data_type(types), micros.collect(), nulls)
            }
            Column::Time(values, nulls) | Column::Float(values, nulls) => {
                primitive(DataType::Float64, values, nulls)
            }
            Column::Int(values, nulls) => primitive(DataType::Int64, values, nulls),
            Column::Bool(values) => bools(name, values.iter()),
        }
    }
}

/// An analyzer's table built into columns as its rows come (a row's values lie together in
/// memory, a column's do not: each row is read once, soon after it was made).
pub struct Table {
    spec: Vec<(String, Kind)>,
    columns: Vec<Column>,
    rows: usize,
}

impl Table {
    pub fn new(spec: &Spec) -> Self {
        Table {
            spec: spec.to_vec(),
            columns: Column::of(spec),
            rows: 0,
        }
    }

    /// The rows added since the last batch.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Adds `rows`: each takes the columns the spec names (a column a row lacks is missing).
    pub fn add<N: AsRef<str>>(&mut self, rows: &[Vec<(N, Val<'static>)>]) {
        static ABSENT: Val<'static> = Val::Absent;
        // a column at a time: each column's kind is matched once for all the rows
        for (index, ((name, _), column)) in self.spec.iter().zip(&mut self.columns).enumerate() {
            let at = |(column, _): &&(N, Val<'static>)| column.as_ref() == name;
            column.extend(rows.iter().map(|row| {
                // rows have the table's columns in order: look where the column should be first
                let value = row.get(index).filter(at).or_else(|| row.iter().find(at));
                value.map_or(&ABSENT, |(_, v)| v)
            }));
        }
        self.rows += rows.len();
    }

    /// The rows added since the last batch as a batch (`redact`: the strings redacted; an int
    /// or a float written with `str()` holds no token); the table starts again empty.
    pub fn batch(&mut self, redact: bool, types: Types) -> Result<ArrayData, String> {
        let next = self.columns.iter().map(Column::empty_like).collect();
        let columns = std::mem::replace(&mut self.columns, next);
        self.rows = 0;
        columns_batch(&self.spec, columns, redact, types)
    }
}

/// The batch of `columns`, those of `spec` (`redact`: the strings redacted).
fn columns_batch(
    spec: &Spec,
    columns: Vec<Column>,
    redact: bool,
    types: Types,
) -> Result<ArrayData, String> {
    let arrays = spec
        .iter()
        .zip(columns)
        .map(|((name, _), column)| column.finish(name, redact, types))
        .collect::<Result<_, _>>()?;
    batch(spec, arrays, types)
}

/// The array, its buffers checked (lengths, offsets, UTF-8) as arrow-data checks them.
fn built(data: ArrayDataBuilder) -> Result<ArrayData, String> {
    data.build().map_err(|e| e.to_string())
}

/// A float64, int64 or timestamp column: the values (0 where missing) and the validity bitmap.
fn primitive<T: ArrowNativeType>(
    data_type: DataType,
    values: Vec<T>,
    mut nulls: NullBufferBuilder,
) -> Result<ArrayData, String> {
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

/// A string column as it is built: the bytes one after the other, 64-bit offsets, the
/// validity. A value costs no allocation of its own, and the column leaves without a copy.
#[derive(Debug)]
pub struct Strings {
    bytes: String,
    offsets: Vec<i64>,
    nulls: NullBufferBuilder,
}

impl Default for Strings {
    fn default() -> Self {
        Strings {
            bytes: String::new(),
            offsets: vec![0],
            nulls: NullBufferBuilder::new(0),
        }
    }
}

impl<S: AsRef<str>> FromIterator<Option<S>> for Strings {
    fn from_iter<I: IntoIterator<Item = Option<S>>>(values: I) -> Self {
        let mut column = Strings::default();
        values
            .into_iter()
            .for_each(|value| column.push(value.as_ref().map(AsRef::as_ref)));
        column
    }
}

impl Strings {
    /// An empty column with room for `rows` values of `bytes` bytes in all.
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Strings {
            bytes: String::with_capacity(bytes),
            offsets,
            nulls: NullBufferBuilder::new(rows),
        }
    }

    /// An empty column with room for as many values as this one holds and a quarter more bytes,
    /// at most `max_rows` and `max_bytes`: a batch of as many rows with a little more text then
    /// fits without doubling its buffer (which copied ~11 MB of payloads in every other frames
    /// batch; room never written is only address space when it is fresh).
    pub fn empty_like(&self, max_rows: usize, max_bytes: usize) -> Self {
        let bytes = self.byte_len().saturating_add(self.byte_len() / 4);
        Strings::with_capacity(self.len().min(max_rows), bytes.min(max_bytes))
    }

    pub fn push(&mut self, value: Option<&str>) {
        self.nulls.append(value.is_some());
        self.bytes.push_str(value.unwrap_or_default());
        self.offsets.push(self.bytes.len() as i64);
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of all its values.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    pub fn get(&self, row: usize) -> Option<&str> {
        let (start, end) = (self.offsets[row] as usize, self.offsets[row + 1] as usize);
        self.nulls.is_valid(row).then(|| &self.bytes[start..end])
    }

    pub fn iter(&self) -> impl Iterator<Item = Option<&str>> {
        (0..self.len()).map(|row| self.get(row))
    }

    /// Every value through the payload redaction (`redact::redact_text`). The whole column is
    /// looked at first: most hold none of the bytes a token needs, and are left as they are
    /// (`may_hold_token` only looks for substrings, so a value that may hold one makes the
    /// column's bytes hold it too).
    pub fn redact(&mut self) {
        if !may_hold_token(self.bytes.as_bytes()) {
            return;
        }
        let mut clean = Strings::default();
        self.iter()
            .for_each(|value| clean.push(value.map(redact_text).as_deref()));
        *self = clean;
    }

    /// The column as an array of `types` (utf8 only below 2 GB of strings).
    pub fn into_array(mut self, types: Types) -> Result<ArrayData, String> {
        let len = self.len();
        let offsets = match types {
            Types::Frame => Buffer::from_vec(self.offsets),
            Types::Parquet => {
                let small = self.offsets.into_iter().map(i32::try_from);
                let small: Result<Vec<i32>, _> = small.collect();
                Buffer::from_vec(small.map_err(|_| "a batch of over 2 GB of strings")?)
            }
        };
        built(
            ArrayData::builder(Kind::Str.data_type(types))
                .len(len)
                .add_buffer(offsets)
                .add_buffer(Buffer::from_vec(self.bytes.into_bytes()))
                .nulls(self.nulls.finish()),
        )
    }
}

/// The table as one struct array (what the C Data Interface hands over as a record batch).
fn batch(spec: &Spec, columns: Vec<ArrayData>, types: Types) -> Result<ArrayData, String> {
    let fields: Fields = spec
        .iter()
        .map(|(name, kind)| Field::new(name, kind.data_type(types), true))
        .collect();
    built(
        ArrayData::builder(DataType::Struct(fields))
            .len(columns.first().map_or(0, ArrayData::len))
            .child_data(columns),
    )
}

/// An analyzer's rows as a batch of the columns `spec` names (`Table`).
pub fn rows_batch<N: AsRef<str>>(
    spec: &Spec,
    rows: &[Vec<(N, Val<'static>)>],
    types: Types,
) -> Result<ArrayData, String> {
    let mut table = Table::new(spec);
    table.add(rows);
    columns_batch(spec, table.columns, false, types)
}

/// The frames table (kept per column by Framing) as a batch, each column freed once converted.
pub fn frames_batch(
    spec: &Spec,
    mut table: FramesTable,
    types: Types,
) -> Result<ArrayData, String> {
    fn take<T: Default>(column: &mut T) -> T {
        std::mem::take(column)
    }
    let ints = |values: Vec<Option<i128>>| {
        let values = values.into_iter().map(|v| v.map_or(Val::Absent, Val::Int));
        Column::built(Kind::Int, values, types)
    };
    let columns = spec
        .iter()
        .map(|(name, kind)| match (name.as_str(), kind) {
            ("conn", Kind::Str) => take(&mut table.conn).into_array(types),
            ("t", Kind::Time) => Column::built(Kind::Time, take(&mut table.t).into_iter(), types),
            ("frame", Kind::Int) => ints(take(&mut table.frame)),
            ("dir", Kind::Str) => take(&mut table.dir).into_array(types),
            ("op", Kind::Str) => take(&mut table.op).into_array(types),
            ("size", Kind::Int) => ints(take(&mut table.size)),
            ("category", Kind::Str) => take(&mut table.category).into_array(types),
            ("kind", Kind::Str) => take(&mut table.kind).into_array(types),
            ("type", Kind::Str) => take(&mut table.type_).into_array(types),
            ("id", Kind::Str) => take(&mut table.id).into_array(types),
            ("req_id", Kind::Str) => take(&mut table.req_id).into_array(types),
            ("code", Kind::Int) => ints(take(&mut table.code)),
            ("subscription_id", Kind::Str) => take(&mut table.subscription_id).into_array(types),
            ("truncated", Kind::Bool) => booleans(take(&mut table.truncated).into_iter().map(Some)),
            ("text", Kind::Str) => take(&mut table.text).into_array(types),
            _ => Err(format!(
                "frames column {name:?} ({kind:?}) is not one Framing keeps"
            )),
        })
        .collect::<Result<_, _>>()?;
    batch(spec, columns, types)
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
            .allow_threads(|| rows_batch(&spec, &rows, Types::Frame))
            .map_err(failed(name))?;
        batches.set_item(name, to_pyarrow(py, batch)?)?;
    }
    out.set_item("tables", batches)?;
    if let Some(frames) = frames {
        let spec = spec_of(py, "frames")?;
        let batch = py
            .allow_threads(|| frames_batch(&spec, frames, Types::Frame))
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

/// `analysis._core.arrow_rows(table, rows, parquet=False)`: rows of `table` (dicts of None,
/// bools, ints, floats and strs) as a pyarrow RecordBatch, converted as the native tables are
/// (tests/test_native_arrow.py holds the conversion against `analysis.load.to_frame` with it),
/// in the types `mwtap export` writes with `parquet` (pyarrow's own conversion of Python values
/// imports pandas, a third of a second).
#[pyfunction]
#[pyo3(signature = (table, rows, parquet=false))]
fn arrow_rows<'py>(
    py: Python<'py>,
    table: &str,
    rows: Vec<Bound<'py, PyDict>>,
    parquet: bool,
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
    to_pyarrow(
        py,
        rows_batch(&spec, &rows, Types::parquet_if(parquet)).map_err(PyValueError::new_err)?,
    )
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
        let batch = rows_batch(&spec, &rows, Types::Frame).unwrap();
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
        assert!(rows_batch(
            &spec,
            &rows(vec![Val::Int(1), Val::Float(0.0), Val::Null]),
            Types::Frame
        )
        .is_ok());
        assert!(rows_batch(
            &spec,
            &rows(vec![Val::Int(1), Val::Bool(true)]),
            Types::Frame
        )
        .is_err());
        assert!(rows_batch(&spec, &rows(vec![Val::Int(2)]), Types::Frame).is_err());
    }

    #[test]
    fn a_column_is_redacted_as_its_values_are_one_by_one() {
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        let escaped = token.replace('J', "\\u004a");
        let values = [
            Some("conn-1".to_owned()),
            None,
            Some(String::new()),
            Some(format!("x{token}")),
            Some("ey".into()), // a token's start at one value's end, its rest in the next
            Some(token[2..].into()),
            Some(format!(r#"{{"jwt":"{escaped}"}}"#)),
            Some("50%".into()),
        ];
        let mut column: Strings = values.iter().map(Option::as_deref).collect();
        column.redact();
        let expected: Vec<Option<String>> = values
            .iter()
            .map(|v| v.as_deref().map(|v| redact_text(v).into_owned()))
            .collect();
        let got: Vec<Option<String>> = column.iter().map(|v| v.map(str::to_owned)).collect();
        assert_eq!(got, expected);
        assert!(got.iter().flatten().all(|v| !v.contains(token)));
        let mut clean: Strings = [Some("conn-1"), None, Some("ms.PublishEvent")]
            .into_iter()
            .collect();
        clean.redact();
        assert_eq!(
            clean.iter().collect::<Vec<_>>(),
            [Some("conn-1"), None, Some("ms.PublishEvent")]
        );
    }

    #[test]
    fn rows_are_redacted_when_asked() {
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        let spec = spec(&[("s", Kind::Str), ("i", Kind::Int)]);
        let rows: Vec<Row> = vec![vec![
            ("s", Val::Str(Cow::Borrowed(token))),
            ("i", Val::Int(7)),
        ]];
        let mut table = Table::new(&spec);
        table.add(&rows);
        let redacted = table.batch(true, Types::Frame).unwrap();
        assert!(str_at(&redacted.child_data()[0], 0).starts_with("[redacted sha256:"));
        assert_eq!(at::<i64>(&redacted.child_data()[1], 0), Some(7));
        assert_eq!(
            str_at(
                &rows_batch(&spec, &rows, Types::Frame).unwrap().child_data()[0],
                0
            ),
            token
        );
    }

    #[test]
    fn parquet_types_are_the_exports() {
        let spec = spec(&[("t", Kind::Time), ("s", Kind::Str)]);
        let rows: Vec<Row> = [0.0000025, 0.0000035, 1_795_600_000.250_000_5, f64::NAN]
            .into_iter()
            .map(|t| vec![("t", Val::Float(t)), ("s", Val::Str(Cow::Borrowed("x")))])
            .collect();
        let batch = rows_batch(&spec, &rows, Types::Parquet).unwrap();
        let [t, s] = batch.child_data() else {
            panic!("two columns")
        };
        let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!((t.data_type(), s.data_type()), (&utc, &DataType::Utf8));
        let micros: Vec<Option<i64>> = (0..4).map(|row| at(t, row)).collect();
        // ties to even, as Python's round(): 2.5 -> 2, 3.5 -> 4, 1795600000250000.5 -> ...000
        assert_eq!(
            micros,
            [Some(2), Some(4), Some(1_795_600_000_250_000), None]
        );
        assert_eq!(s.buffer::<i32>(0), [0, 1, 2, 3, 4]);
    }
}
