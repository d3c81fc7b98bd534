//! The capture reader (analysis/capture.py's CaptureFile and analysis/reader.py's CaptureSet):
//! plain JSONL or gzip (concatenated members too), streamed line by line with one line buffer per
//! file, damaged lines reported (damage.rs) instead of failing on them, the same one-line
//! `CaptureError` messages for a file that is not a capture at all.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::ops::{ControlFlow, Range};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;
use serde_json::Value;

use crate::damage::DamageLog;
use crate::lines::Lines;
use crate::record::{json_int, parse_json, parse_line, parse_line_with, Parsed, Record, Val};
use crate::redact::redact_string;

mod parallel;

pub const FORMAT: &str = "mwtap-capture";
pub const VERSION: i64 = 1;
const KNOWN_RECORDS: [&str; 8] = [
    "header", "open", "refused", "msg", "ping", "pong", "close", "drop",
];
pub const UNKNOWN_KINDS_LISTED: usize = 20;
pub const OTHER_KINDS: &str = "(other kinds)";
const BUFFER: usize = 1 << 20;

/// A file that cannot be read as a capture at all: one line naming the file.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureError(pub String);

/// Counts records of unknown kinds: the first UNKNOWN_KINDS_LISTED kinds by name (in the order met),
/// any further kind under OTHER_KINDS (analysis.capture.count_unknown).
pub fn count_unknown(counts: &mut Vec<(String, u64)>, kind: &str, n: u64) {
    let kind = if counts.len() >= UNKNOWN_KINDS_LISTED && !counts.iter().any(|(k, _)| k == kind) {
        OTHER_KINDS
    } else {
        kind
    };
    match counts.iter_mut().find(|(k, _)| k == kind) {
        Some((_, count)) => *count += n,
        None => counts.push((kind.to_owned(), n)),
    }
}

/// Counts the bytes read from the file on disk (the compressed ones of a gzip file), for progress.
struct Counting {
    file: File,
    read: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// One capture file opened for a single streaming pass.
pub struct CaptureFile {
    pub path: String,
    pub header: Option<Value>,
    pub damage: DamageLog,
    pub unknown_records: Vec<(String, u64)>,
    pub lines: u64,
    /// None once a damaged gzip stream ended the pass.
    source: Option<Lines>,
    read: Arc<AtomicU64>,
    /// Where the current line is; after `next_with` returned a record, that record's line.
    line: Range<usize>,
    /// Where the current line starts in the file's (decompressed) bytes, and where the next does.
    line_at: u64,
    next_at: u64,
    /// What is done with each msg record's `text` as its line is parsed (`Record::table_text`):
    /// on the parsing threads when there are some, not on the engine's.
    pub texts: Texts,
    /// When set, the lines it refuses are passed over unparsed and unnoted (`CaptureSet::only`).
    pub only: Option<LineTest>,
}

/// Whether a line is worth parsing, asked before it is (on the parsing threads when there are some).
pub type LineTest = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// What the reader makes of a msg record's `text` for the frames table, ahead of the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Texts {
    /// Nothing: the engine decodes it if it needs to.
    #[default]
    Raw,
    Decoded,
    /// Decoded and redacted (`redact::redact_text`), for tables that leave redacted. Every record
    /// handed on then has it: the batches do not redact the payloads again.
    Redacted,
}

impl CaptureFile {
    /// Opens the file and reads its header line (the errors `CaptureFile.records()` raises first).
    pub fn open(path: &str) -> Result<Self, CaptureError> {
        if Path::new(path).is_dir() {
            return Err(CaptureError(format!(
                "{path}: is a directory, not a capture file"
            )));
        }
        let file = File::open(path)
            .map_err(|e| CaptureError(format!("{path}: cannot open ({})", strerror(&e))))?;
        let mut file = file;
        let mut magic = [0u8; 2];
        let gzip = file.read_exact(&mut magic).is_ok() && magic == *b"\x1f\x8b";
        let cannot_open =
            |e: io::Error| CaptureError(format!("{path}: cannot open ({})", strerror(&e)));
        file.rewind().map_err(cannot_open)?;
        let read = Arc::new(AtomicU64::new(0));
        let counting = Counting {
            file,
            read: read.clone(),
        };
        let source: Box<dyn Read + Send> = if gzip {
            Box::new(MultiGzDecoder::new(counting))
        } else {
            Box::new(counting)
        };
        let mut capture = CaptureFile {
            path: path.to_owned(),
            header: None,
            damage: DamageLog::default(),
            unknown_records: Vec::new(),
            lines: 0,
            source: Some(Lines::new(source, BUFFER)),
            read,
            line: 0..0,
            line_at: 0,
            next_at: 0,
            texts: Texts::Raw,
            only: None,
        };
        capture.read_header()?;
        Ok(capture)
    }

    /// The counter of `bytes_read`, for another thread to watch.
    pub fn progress(&self) -> Arc<AtomicU64> {
        self.read.clone()
    }

    /// How far the pass has read into the file on disk (compressed bytes for gzip).
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// The current line.
    fn line(&self) -> &[u8] {
        self.source
            .as_ref()
            .map_or(&[], |lines| lines.get(self.line.clone()))
    }

    /// Reads the next line; false at the end of the file or of what could be decompressed (the
    /// damage is then noted and the partial line dropped, as Python's reader does).
    fn read_line(&mut self) -> bool {
        let Some(lines) = self.source.as_mut() else {
            return false;
        };
        match lines.next() {
            Ok(Some(line)) => {
                self.line_at = self.next_at;
                self.next_at += line.len() as u64;
                self.line = line;
                self.lines += 1;
                true
            }
            Ok(None) => false,
            Err(e) => {
                let lineno = self.lines + 1;
                self.notes().stream_broke(lineno, &e);
                self.source = None;
                false
            }
        }
    }

    fn read_header(&mut self) -> Result<(), CaptureError> {
        if !self.read_line() {
            let path = &self.path;
            return Err(CaptureError(format!(
                "{path}: empty file, not an mwtap capture"
            )));
        }
        let path = &self.path;
        let not_capture =
            |why: &str| CaptureError(format!("{path}:1: not an mwtap capture ({why})"));
        let header: Value = match parse_line(self.line(), &mut Record::default()) {
            Parsed::InvalidJson => return Err(not_capture("no JSON header line")),
            Parsed::NotRecord => return Err(not_capture("first line is not a header")),
            // The header is read whole: a number past a double (1e400) anywhere in it, which
            // `parse_line` passes over in fields it skips, refuses it here (as Python's reader does).
            Parsed::Record => match parse_json(self.line()) {
                Some(header) => header,
                None => return Err(not_capture("no JSON header line")),
            },
        };
        if header.get("rec").and_then(Value::as_str) != Some("header")
            || header.get("format").and_then(Value::as_str) != Some(FORMAT)
        {
            return Err(not_capture(&format!("first line is not a {FORMAT} header")));
        }
        // isinstance(version, int): a bool is an int to Python.
        let version = match header.get("version") {
            Some(Value::Bool(b)) => Some(*b as i128),
            Some(value) => json_int(value),
            None => None,
        };
        match version {
            Some(v) if v >= 1 && v <= VERSION.into() => {}
            Some(v) if v > VERSION.into() => {
                return Err(CaptureError(format!(
                    "{path}:1: capture format version {v} is newer than this mwtap reads (up to {VERSION}); upgrade mwtap"
                )))
            }
            _ => return Err(CaptureError(format!("{path}:1: capture header has no valid version"))),
        }
        self.header = Some(header);
        Ok(())
    }

    /// Reads up to the next usable record and hands it to `f` with its line and where the line
    /// starts (None at the end of the file). Damaged lines and records of unknown kinds on the way
    /// are noted.
    pub fn next_with<T>(&mut self, f: impl FnOnce(&Record, &[u8], u64) -> T) -> Option<T> {
        self.next_as(self.texts, f)
    }

    /// `next_with`, the texts made as `texts` says.
    fn next_as<T>(&mut self, texts: Texts, f: impl FnOnce(&Record, &[u8], u64) -> T) -> Option<T> {
        while self.read_line() {
            let line = self.source.as_ref()?.get(self.line.clone());
            if self.only.as_ref().is_some_and(|only| !only(line)) {
                continue;
            }
            let skipped = match classify(line, texts) {
                Line::Record(record) => return Some(f(&record, line, self.line_at)),
                Line::Skipped(skipped) => skipped,
            };
            let lineno = self.lines;
            self.notes().note(lineno, skipped);
        }
        None
    }

    /// Where the lines that are not records are noted.
    pub(crate) fn notes(&mut self) -> Notes<'_> {
        Notes {
            path: &self.path,
            damage: &mut self.damage,
            unknown_records: &mut self.unknown_records,
        }
    }

    /// The record `next_with` last handed out, parsed again, its text made as `texts` says (for
    /// merging files by time: `pull` peeks at each record's time with `Texts::Raw`).
    pub fn with_current<T>(&self, f: impl FnOnce(&Record, &[u8], u64) -> T) -> T {
        match classify(self.line(), self.texts) {
            Line::Record(record) => f(&record, self.line(), self.line_at),
            Line::Skipped(_) => unreachable!("the current line is a record"),
        }
    }
}

/// What one line of a capture is to the reader.
// Nearly every line is a record: boxing it would add an allocation per line for nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Line<'a> {
    /// A record to hand on.
    Record(Record<'a>),
    Skipped(Skipped),
}

/// A line that is not handed on.
#[derive(Clone)]
pub(crate) enum Skipped {
    /// A damaged line: the problem, and the kind it is counted under when not the problem itself.
    Damaged(String, Option<&'static str>),
    /// A record of a kind this reader does not know (counted).
    Unknown(String),
    /// A header line after the first (rotated parts concatenated).
    Header,
    /// A line the reader was told to pass over (`CaptureFile::only`).
    Passed,
}

/// Parses and checks one line (its newline kept: a last line without one is truncated), a msg
/// record's text handled as `texts` says.
pub(crate) fn classify(line: &[u8], texts: Texts) -> Line<'_> {
    let mut record = Record::default();
    match read_record(line, texts, &mut record) {
        None => Line::Record(record),
        Some(skipped) => Line::Skipped(skipped),
    }
}

/// `classify`, its line pushed onto `lines`, the record read where it lies there (a record is
/// large: returned and then pushed, it was copied twice a line).
pub(crate) fn classify_onto<'a>(line: &'a [u8], texts: Texts, lines: &mut Vec<Line<'a>>) {
    lines.push(Line::Record(Record::default()));
    let Some(Line::Record(record)) = lines.last_mut() else {
        unreachable!("a record was just pushed")
    };
    if let Some(skipped) = read_record(line, texts, record) {
        *lines.last_mut().expect("just pushed") = Line::Skipped(skipped);
    }
}

/// Reads `line` into `record` (a default one): None when it is a record to hand on, else why not.
fn read_record<'a>(line: &'a [u8], texts: Texts, record: &mut Record<'a>) -> Option<Skipped> {
    match parse_line_with(line, record, texts != Texts::Raw) {
        Parsed::Record => {}
        Parsed::InvalidJson if line.ends_with(b"\n") => return Some(damage("invalid JSON")),
        Parsed::InvalidJson => return Some(damage("truncated line")),
        Parsed::NotRecord => return Some(damage("not a capture record")),
    };
    if let Some((problem, kind)) = record.unusable() {
        return Some(Skipped::Damaged(problem, kind));
    }
    match record.rec.as_str().unwrap_or_default() {
        "header" => Some(Skipped::Header),
        "msg" if texts != Texts::Raw => {
            if let (Texts::Redacted, Some(text)) = (texts, record.table_text.as_mut()) {
                redact_string(text);
            }
            None
        }
        kind if KNOWN_RECORDS.contains(&kind) => None,
        kind => Some(Skipped::Unknown(kind.to_owned())),
    }
}

fn damage(problem: &str) -> Skipped {
    Skipped::Damaged(problem.to_owned(), None)
}

/// A file's damage log and unknown-kind counts, where the lines that are not records go.
pub(crate) struct Notes<'f> {
    path: &'f str,
    damage: &'f mut DamageLog,
    unknown_records: &'f mut Vec<(String, u64)>,
}

impl Notes<'_> {
    /// Notes line `lineno` (1-based) when it is damaged or of an unknown kind.
    pub(crate) fn note(&mut self, lineno: u64, skipped: Skipped) {
        match skipped {
            Skipped::Damaged(problem, kind) => self.damage.add(self.path, lineno, problem, kind),
            Skipped::Unknown(kind) => count_unknown(self.unknown_records, &kind, 1),
            Skipped::Header | Skipped::Passed => {}
        }
    }

    /// Notes that the compressed stream broke before line `lineno`.
    pub(crate) fn stream_broke(&mut self, lineno: u64, e: &io::Error) {
        self.damage.add(self.path, lineno, stream_damage(e), None);
    }
}

/// The damage a read error of the (gzip) stream is noted as: the wording analysis.capture uses
/// too, as zlib's and flate2's own messages differ.
fn stream_damage(e: &io::Error) -> String {
    let how = if e.kind() == io::ErrorKind::UnexpectedEof {
        "ends early"
    } else {
        "corrupt data"
    };
    format!("compressed stream damaged ({how})")
}

/// The OS's wording of an error (Python's `e.strerror`), without Rust's " (os error N)".
fn strerror(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The sort key of a record when files are merged by time (analysis.reader._time).
fn time_key(record: &Record) -> f64 {
    match &record.t {
        Val::Bool(b) => f64::from(u8::from(*b)),
        t => t.number().unwrap_or(0.0),
    }
}

/// Where a record's line is: the file (its place in the paths the set was opened with), where
/// the line starts in the file's bytes (decompressed, for gzip), and the line, newline kept.
#[derive(Clone, Copy)]
pub struct Place<'a> {
    pub file: usize,
    pub offset: u64,
    pub line: &'a [u8],
}

/// Told of every record the caller of `CaptureSet::for_each_placed_by` gets, in the same order:
/// when the files are one recording read with parsing threads, a block at a time on a thread of
/// its own once the caller is done with the block (so that its work is neither the engine's nor
/// the parsers'); else one at a time on the caller's thread, just before the caller gets it.
/// That thread is joined before `for_each_placed_by` returns: a placer that takes the GIL needs
/// the caller not to hold it. `mwtap view`'s index (locations.rs) is one.
pub trait Placer: Sync {
    fn place(&self, placed: &[(&Record, Place)]);
}

/// Several capture files read as one stream (analysis.reader.CaptureSet): the parts of one
/// recording (same header `recording`) in `part` order, then path order; different recordings
/// merged by time, ties to the recording met first.
pub struct CaptureSet {
    pub files: Vec<CaptureFile>,
    chains: Vec<Vec<usize>>,
    /// Threads parsing lines beside the caller's (reader/parallel.rs) when the files are one
    /// recording; 0: everything on the caller's thread.
    pub parsers: usize,
}

impl CaptureSet {
    /// Opens every file up front, so a file that is not a capture fails before any analysis.
    pub fn open(paths: &[String]) -> Result<Self, CaptureError> {
        let files = paths
            .iter()
            .map(|p| CaptureFile::open(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut recordings: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, file) in files.iter().enumerate() {
            let header = file.header.as_ref();
            let key = match header.and_then(|h| h.get("recording")) {
                Some(Value::String(id)) => id.clone(),
                _ => file.path.clone(),
            };
            match recordings.iter_mut().find(|(k, _)| *k == key) {
                Some((_, parts)) => parts.push(i),
                None => recordings.push((key, vec![i])),
            }
        }
        let part = |file: &CaptureFile| match file.header.as_ref().and_then(|h| h.get("part")) {
            Some(Value::Bool(b)) => i128::from(*b),
            Some(value) => json_int(value).unwrap_or(0),
            None => 0,
        };
        let chains = recordings
            .into_iter()
            .map(|(_, mut parts)| {
                parts.sort_by(|&a, &b| {
                    (part(&files[a]), &files[a].path).cmp(&(part(&files[b]), &files[b].path))
                });
                parts
            })
            .collect();
        Ok(CaptureSet {
            files,
            chains,
            parsers: 0,
        })
    }

    /// Hands every record to `f`, in the order the Python CaptureSet yields them, until `f`
    /// breaks.
    pub fn for_each(&mut self, mut f: impl FnMut(&Record) -> ControlFlow<()>) {
        self.for_each_line(|record, _| f(record))
    }

    /// Parses only the lines `test` accepts (the others are passed over as if absent) when the
    /// files are one recording: merging several by time needs the time of every record.
    pub fn only(&mut self, test: LineTest) {
        if self.chains.len() == 1 {
            for file in &mut self.files {
                file.only = Some(test.clone());
            }
        }
    }

    /// `for_each`, each record with its line.
    pub fn for_each_line(&mut self, mut f: impl FnMut(&Record, &[u8]) -> ControlFlow<()>) {
        self.for_each_placed(|record, place| f(record, place.line))
    }

    /// `for_each`, each record with where its line is.
    pub fn for_each_placed(&mut self, f: impl FnMut(&Record, Place) -> ControlFlow<()>) {
        self.for_each_placed_by(None, f);
    }

    /// `for_each_placed`, every record handed to `f` also placed by `placer` (see `Placer`).
    pub fn for_each_placed_by(
        &mut self,
        placer: Option<&dyn Placer>,
        mut f: impl FnMut(&Record, Place) -> ControlFlow<()>,
    ) {
        // Each record is placed here before `f` gets it, unless a parsing thread placed it.
        let mut hand = |record: &Record, line: &[u8], offset: u64, file: usize, placed: bool| {
            let place = Place { file, offset, line };
            if let (Some(placer), false) = (placer, placed) {
                placer.place(&[(record, place)]);
            }
            f(record, place)
        };
        if self.chains.len() == 1 {
            for &i in &self.chains[0] {
                let file = &mut self.files[i];
                let flow = if self.parsers > 0 {
                    let placing = placer.map(|p| (p, i));
                    file.each_in_parallel(self.parsers, placing, &mut |r, line, offset| {
                        hand(r, line, offset, i, true)
                    })
                } else {
                    let mut flow = ControlFlow::Continue(());
                    while let Some(next) = file.next_with(|r, line, o| hand(r, line, o, i, false)) {
                        flow = next;
                        if flow.is_break() {
                            break;
                        }
                    }
                    flow
                };
                if flow.is_break() {
                    return;
                }
            }
            return;
        }
        // One pending record per recording: (its time, the file holding it, where its chain is).
        let mut pending: Vec<Option<(f64, usize, usize)>> =
            (0..self.chains.len()).map(|c| self.pull(c, 0)).collect();
        loop {
            let mut best: Option<usize> = None;
            for (c, p) in pending.iter().enumerate() {
                if let Some((t, _, _)) = p {
                    if best.is_none_or(|b| *t < pending[b].expect("pending").0) {
                        best = Some(c);
                    }
                }
            }
            let Some(c) = best else { return };
            let (_, file, at) = pending[c].expect("pending");
            let handed =
                |record: &Record, line: &[u8], offset| hand(record, line, offset, file, false);
            if self.files[file].with_current(handed).is_break() {
                return;
            }
            pending[c] = self.pull(c, at);
        }
    }

    /// The next record of chain `c` from its part `at` on: (time, file, part index).
    fn pull(&mut self, c: usize, mut at: usize) -> Option<(f64, usize, usize)> {
        while at < self.chains[c].len() {
            let file = self.chains[c][at];
            if let Some(t) = self.files[file].next_as(Texts::Raw, |record, _, _| time_key(record)) {
                return Some((t, file, at));
            }
            at += 1;
        }
        None
    }

    /// Every file's unknown record kinds, merged with the one-file bound.
    pub fn unknown_records(&self) -> Vec<(String, u64)> {
        let mut counts = Vec::new();
        for file in &self.files {
            for (kind, n) in &file.unknown_records {
                count_unknown(&mut counts, kind, *n);
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kinds_are_bounded() {
        let mut counts = Vec::new();
        for n in 0..30 {
            count_unknown(&mut counts, &format!("k{n}"), 1);
        }
        count_unknown(&mut counts, "k3", 2);
        assert_eq!(counts.len(), UNKNOWN_KINDS_LISTED + 1);
        assert_eq!(counts[3], ("k3".to_owned(), 3));
        assert_eq!(counts[UNKNOWN_KINDS_LISTED], (OTHER_KINDS.to_owned(), 10));
    }
}
