//! mwtap's protocol core, imported from Python as `analysis._core`.

use pyo3::prelude::*;

mod json_blocks;
mod json_out;
mod json_value;
mod lift;
mod message;
mod redact;
// The analysis side: reader, record projection, engine, timers, the analyzers and their Python API.
mod analysis_py;
pub mod arrow_out;
mod batches;
pub mod connections;
pub mod damage;
pub mod engine;
mod engine_py;
pub mod frame;
pub mod framing;
pub mod histogram;
pub mod identity;
pub mod keepalive;
mod lines;
mod locations;
pub mod pairs;
mod partition_py;
pub mod pyrepr;
pub mod reader;
pub mod record;
pub mod rings;
pub mod rules;
pub mod sequences;
pub mod streams;
pub mod timers;

/// mimalloc rather than the system's malloc (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    message::register(m)?;
    analysis_py::register(m)?;
    engine_py::register(m)?;
    partition_py::register(m)?;
    arrow_out::register(m)?;
    batches::register(m)?;
    locations::register(m)?;
    Ok(())
}
