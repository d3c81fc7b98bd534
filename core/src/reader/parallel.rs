//! One capture file read on threads beside the caller's: a thread reads its lines (inflating
//! gzip), `parsers` threads parse them a block at a time, and the caller gets the records in file
//! order on its own thread; with a `Placer` (`mwtap view`), a last thread places each block's
//! records once the caller is done with it. Line for line the outcome is
//! `CaptureFile::next_with`'s: the same records, damage and unknown kinds at the same line numbers,
//! the same end at a broken gzip stream; only the wall time differs (the parsing, ~40 % of an
//! analysis, runs beside the engine).

use std::io::{self, Read};
use std::ops::ControlFlow;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread;

use self_cell::self_cell;

use super::{classify_onto, CaptureFile, Line, LineTest, Notes, Place, Placer, Skipped, Texts};
use crate::lines::Lines;
use crate::record::Record;

/// Bytes of whole lines read into a block (a longer line makes a block of its own), and the most
/// lines a block holds (a parsed line takes ~900 bytes however short its text).
const BLOCK: usize = 256 << 10;
const LINES: usize = 1024;
/// Blocks waiting at each parser, and parsed blocks waiting for the caller. With `BLOCK`,
/// `LINES` and `PLACING_QUEUE`, this bounds the pipeline's memory: a parsed block takes at most
/// ~1 MB besides its text.
const QUEUE: usize = 2;
/// Bytes asked of the file at a time once a block is full and its last line has not ended.
const READ: usize = 16 << 10;

/// Whole lines of a file, one after another (the last line of the file may have no newline),
/// starting `at` that many bytes into the file.
struct Block {
    text: Vec<u8>,
    at: u64,
}

impl Block {
    fn lines(&self) -> impl Iterator<Item = &[u8]> {
        let text = &self.text[..];
        let ends = memchr::memchr_iter(b'\n', text).map(|at| at + 1);
        let ends = ends.chain((text.last() != Some(&b'\n')).then_some(text.len()));
        let mut start = 0;
        ends.map(move |end| &text[std::mem::replace(&mut start, end)..end])
    }
}

/// A block's lines and what each one is.
struct Classified<'a> {
    texts: Vec<&'a [u8]>,
    lines: Vec<Line<'a>>,
}

self_cell!(
    /// A block and what each of its lines is (the records borrow the block's text).
    struct Parsed {
        owner: Block,
        #[covariant]
        dependent: Classified,
    }
);

/// The placer of a pass's records (`CaptureSet::for_each_placed_by`) and the file they are in.
type Placing<'p> = Option<(&'p dyn Placer, usize)>;

/// Parsed blocks the caller is done with, waiting to be placed.
const PLACING_QUEUE: usize = 4;

impl CaptureFile {
    /// Hands the rest of the file's records to `f` as `next_with` would, until `f` breaks, with
    /// `parsers` threads parsing the lines.
    pub(super) fn each_in_parallel(
        &mut self,
        parsers: usize,
        placing: Placing,
        f: &mut impl FnMut(&Record, &[u8], u64) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        self.each_in_blocks(BLOCK, parsers, placing, f)
    }

    /// `each_in_parallel` with blocks of `block` bytes (tests try every line split). With a
    /// `placing`, the blocks the caller is done with are placed on a thread of their own, in the
    /// file's order (and freed there): the placing costs neither the caller nor the parsers
    /// time, and a block the caller stopped in is not placed.
    fn each_in_blocks(
        &mut self,
        block: usize,
        parsers: usize,
        placing: Placing,
        f: &mut impl FnMut(&Record, &[u8], u64) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let CaptureFile {
            path,
            damage,
            unknown_records,
            lines: count,
            next_at,
            source,
            texts,
            only,
            ..
        } = self;
        let texts = *texts;
        let mut notes = Notes {
            path,
            damage,
            unknown_records,
        };
        let first_at = *next_at;
        thread::scope(|s| {
            let (to_parsers, blocks): (Vec<_>, Vec<_>) =
                (0..parsers).map(|_| sync_channel(QUEUE)).unzip();
            let (to_caller, parsed): (Vec<_>, Vec<_>) =
                (0..parsers).map(|_| sync_channel(QUEUE)).unzip();
            // Named, for top -H and profilers.
            let reader = thread::Builder::new()
                .name("mwtap-read".into())
                .spawn_scoped(s, move || read_blocks(source, block, first_at, to_parsers))
                .expect("a thread to read with");
            for (blocks, to_caller) in blocks.into_iter().zip(to_caller) {
                thread::Builder::new()
                    .name("mwtap-parse".into())
                    .spawn_scoped(s, {
                        let only = only.clone();
                        move || parse_blocks(blocks, texts, only, to_caller)
                    })
                    .expect("a thread to parse with");
            }
            let to_placer = placing.map(|(placer, file)| {
                let (to_placer, done) = sync_channel(PLACING_QUEUE);
                thread::Builder::new()
                    .name("mwtap-place".into())
                    .spawn_scoped(s, move || place_blocks(done, placer, file))
                    .expect("a thread to place with");
                to_placer
            });
            let mut flow = ControlFlow::Continue(());
            // Block k is at parser k % parsers: taking them in turn keeps the file's order.
            for block in parsed.iter().cycle().map_while(|r| r.recv().ok()) {
                flow = block.with_dependent(|_, classified| {
                    for (text, line) in classified.texts.iter().zip(&classified.lines) {
                        *count += 1;
                        let at = *next_at;
                        *next_at += text.len() as u64;
                        match line {
                            Line::Record(record) => f(record, text, at)?,
                            Line::Skipped(why) => notes.note(*count, why.clone()),
                        }
                    }
                    ControlFlow::Continue(())
                });
                if flow.is_break() {
                    break;
                }
                if let Some(to_placer) = &to_placer {
                    let _ = to_placer.send(block); // fails only if the placer panicked
                }
            }
            drop(parsed); // the parsers, then the reader, stop at their next send
            let broken = reader.join().expect("the reader thread does not panic");
            if let (Some(e), true) = (broken, flow.is_continue()) {
                notes.stream_broke(*count + 1, &e);
            }
            flow
        })
    }
}

/// Reads the rest of the file into blocks of whole lines, handed to the parsers in turn. Returns
/// the error that ended a damaged gzip stream: the partial line before it is dropped and nothing
/// more is read, as by `CaptureFile::read_line`.
fn read_blocks(
    source: &mut Option<Lines>,
    block: usize,
    mut at: u64,
    parsers: Vec<SyncSender<Block>>,
) -> Option<io::Error> {
    let (mut text, mut input) = source.take()?.into_parts();
    let mut done: Option<io::Result<()>> = None; // the stream ended, or broke
    for parser in parsers.iter().cycle() {
        text.reserve((block + READ).saturating_sub(text.len()));
        let mut end = BlockEnd::default();
        let cut = loop {
            if let Some(cut) = end.find(&text, block) {
                break cut;
            }
            if done.is_some() {
                break text.len(); // the last line may have no newline
            }
            let want = block.saturating_sub(text.len()).max(READ);
            match (&mut input).take(want as u64).read_to_end(&mut text) {
                Ok(n) if n < want => done = Some(Ok(())),
                Ok(_) => {}
                Err(e) => {
                    text.truncate(memchr::memrchr(b'\n', &text).map_or(0, |at| at + 1));
                    done = Some(Err(e));
                }
            }
        };
        let rest = text.split_off(cut);
        let length = text.len() as u64;
        if !text.is_empty() && parser.send(Block { text, at }).is_err() {
            return None; // the caller stopped
        }
        at += length;
        text = rest;
        if let (true, Some(done)) = (text.is_empty(), &mut done) {
            return std::mem::replace(done, Ok(())).err();
        }
    }
    None
}

/// Where a block ends: after its `LINES`th line, or after the first line that ends at or past
/// `block` bytes, whichever comes first (so a block of tiny lines stays small once parsed too).
#[derive(Default)]
struct BlockEnd {
    scanned: usize, // no end in text[..scanned]
    lines: usize,   // the lines ending there
}

impl BlockEnd {
    fn find(&mut self, text: &[u8], block: usize) -> Option<usize> {
        self.scanned = self.scanned.min(text.len()); // a broken stream's partial line was cut off
        for at in memchr::memchr_iter(b'\n', &text[self.scanned..]) {
            let end = self.scanned + at + 1;
            self.lines += 1;
            if self.lines == LINES || end >= block {
                return Some(end);
            }
        }
        self.scanned = text.len();
        None
    }
}

fn parse_blocks(
    blocks: Receiver<Block>,
    texts: Texts,
    only: Option<LineTest>,
    caller: SyncSender<Parsed>,
) {
    for block in blocks {
        let parsed = Parsed::new(block, |block| {
            let texts_of_lines: Vec<&[u8]> = block.lines().collect();
            let mut lines = Vec::with_capacity(texts_of_lines.len());
            for &line in &texts_of_lines {
                match &only {
                    Some(only) if !only(line) => lines.push(Line::Skipped(Skipped::Passed)),
                    _ => classify_onto(line, texts, &mut lines),
                }
            }
            Classified {
                texts: texts_of_lines,
                lines,
            }
        });
        if caller.send(parsed).is_err() {
            return;
        }
    }
}

/// Places the records of each block the caller is done with (of file `file`).
fn place_blocks(blocks: Receiver<Parsed>, placer: &dyn Placer, file: usize) {
    for block in blocks {
        block.with_dependent(|block, classified| {
            let mut offset = block.at;
            let mut placed = Vec::with_capacity(classified.lines.len());
            for (&line, parsed) in classified.texts.iter().zip(&classified.lines) {
                if let Line::Record(record) = parsed {
                    placed.push((record, Place { file, offset, line }));
                }
                offset += line.len() as u64;
            }
            placer.place(&placed);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::*;
    use crate::damage::Damage;
    use crate::redact::redact_text;

    /// What a pass hands on and notes: each record's line, its offset and decoded text, the
    /// damage, the unknown kinds, the line count.
    type Pass = (
        Vec<(Vec<u8>, u64, Option<String>)>,
        Vec<Damage>,
        Vec<(String, u64)>,
        u64,
    );

    fn one_by_one(path: &str, texts: Texts, stop_after: usize) -> Pass {
        let mut file = CaptureFile::open(path).unwrap();
        file.texts = texts;
        let mut lines = Vec::new();
        while let Some(()) =
            file.next_with(|rec, line, at| lines.push((line.to_vec(), at, rec.table_text.clone())))
        {
            if lines.len() == stop_after {
                break;
            }
        }
        (lines, file.damage.entries, file.unknown_records, file.lines)
    }

    /// The place of each record placed, in the order placed.
    #[derive(Default)]
    struct Placed(Mutex<Vec<(usize, u64, Vec<u8>)>>);

    impl Placer for Placed {
        fn place(&self, placed: &[(&Record, Place)]) {
            let mut places = self.0.lock().unwrap();
            places.extend(
                placed
                    .iter()
                    .map(|(_, p)| (p.file, p.offset, p.line.to_vec())),
            );
        }
    }

    /// The pass with blocks of `block` bytes, `parsers` threads and `stop` records at most; every
    /// record handed on is placed, in the same order, at the same place (but for those of the
    /// block the pass stopped in).
    fn in_blocks(path: &str, texts: Texts, block: usize, parsers: usize, stop: usize) -> Pass {
        let mut file = CaptureFile::open(path).unwrap();
        file.texts = texts;
        let mut lines = Vec::new();
        let placed = Placed::default();
        let _ = file.each_in_blocks(block, parsers, Some((&placed, 7)), &mut |rec, line, at| {
            lines.push((line.to_vec(), at, rec.table_text.clone()));
            if lines.len() == stop {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        let places = placed.0.into_inner().unwrap();
        let handed = lines.iter().map(|(line, at, _)| (7, *at, line.clone()));
        if stop == usize::MAX {
            assert!(places.iter().cloned().eq(handed), "all placed, in order");
        } else {
            assert!(
                places.len() < lines.len(),
                "the block stopped in is not placed"
            );
            assert!(places.iter().cloned().eq(handed.take(places.len())));
        }
        (lines, file.damage.entries, file.unknown_records, file.lines)
    }

    /// A file in the temporary folder, removed when dropped: also when a test fails.
    struct Written(String);

    impl std::ops::Deref for Written {
        type Target = str;
        fn deref(&self) -> &str {
            &self.0
        }
    }

    impl Drop for Written {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn written(name: &str, bytes: &[u8]) -> Written {
        let path =
            std::env::temp_dir().join(format!("mwtap-parallel-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        Written(path.to_str().unwrap().to_owned())
    }

    fn gzipped(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    /// A capture with every kind of line the reader tells apart, a line longer than the small
    /// blocks, and no newline at the end.
    fn capture() -> Vec<u8> {
        let mut text =
            String::from("{\"rec\":\"header\",\"format\":\"mwtap-capture\",\"version\":1}\n");
        for i in 0..40 {
            let line = match i % 8 {
                0 => format!("{{\"rec\":\"msg\",\"t\":{i},\"conn\":\"c\",\"n\":{i},\"dir\":\"c2s\",\"op\":\"text\",\"size\":2,\"text\":\"{{\\\"jwt\\\":\\\"{TOKEN}\\\"}}\"}}"),
                1 => "{\"rec\":\"msg\", broken".to_owned(),
                2 => format!("{{\"rec\":\"future\",\"t\":{i}}}"),
                3 => "[1,2]".to_owned(),
                4 => format!("{{\"rec\":\"ping\",\"t\":1e400,\"conn\":\"c\",\"n\":{i}}}"),
                5 => "{\"rec\":\"header\",\"format\":\"mwtap-capture\",\"version\":1}".to_owned(),
                6 => format!("{{\"rec\":\"pong\",\"t\":{i},\"conn\":\"c\",\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(300)),
                _ => String::new(),
            };
            text.push_str(&line);
            text.push('\n');
        }
        text.push_str("{\"rec\":\"close\",\"t\":99,\"conn\":\"c\"");
        text.into_bytes()
    }

    #[test]
    fn a_block_ends_after_the_line_that_reaches_its_size_or_after_its_last_line() {
        let text = b"ab\ncdefgh\nij\n";
        assert_eq!(BlockEnd::default().find(text, 1), Some(3));
        assert_eq!(BlockEnd::default().find(text, 4), Some(10));
        assert_eq!(BlockEnd::default().find(text, 100), None);
        let mut end = BlockEnd::default();
        assert_eq!(end.find(b"abc", 2), None); // a line longer than the block: not ended yet
        assert_eq!(end.find(b"abcdef\nx", 2), Some(7));
        let blank = vec![b'\n'; 3 * LINES];
        assert_eq!(BlockEnd::default().find(&blank, 1 << 20), Some(LINES));
    }

    /// A JWT (three base64url segments) in the msg records' payloads.
    const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjb25zdW1lciJ9.c2lnbmF0dXJlc2lnbmF0dXJl";

    #[test]
    fn lines_a_test_refuses_are_passed_over_unparsed_and_unnoted() {
        let path = written("only.jsonl", &capture());
        let only: LineTest = std::sync::Arc::new(|line: &[u8]| {
            memchr::memmem::find(line, b"pong").is_some()
                || line.starts_with(b"{\"rec\":\"msg\", broken")
        });
        let pass = |parsers: usize, block: usize| {
            let mut file = CaptureFile::open(&path).unwrap();
            file.only = Some(only.clone());
            let mut lines = Vec::new();
            let mut add = |_: &Record, line: &[u8], at: u64| {
                lines.push((line.to_vec(), at));
                ControlFlow::Continue(())
            };
            if parsers == 0 {
                while file.next_with(&mut add).is_some() {}
            } else {
                let _ = file.each_in_blocks(block, parsers, None, &mut add);
            }
            (lines, file.damage.entries, file.lines)
        };
        let (lines, damage, count) = pass(0, 0);
        assert_eq!(lines.len(), 5); // the pongs, and nothing else: not the ping with 1e400 either
        assert!(lines
            .iter()
            .all(|(line, _)| line.starts_with(b"{\"rec\":\"pong\"")));
        // only the broken lines the test let through are noted (not the truncated last one)
        assert_eq!(damage.len(), 5);
        assert!(
            damage.iter().all(|d| d.problem == "invalid JSON"),
            "{damage:?}"
        );
        assert_eq!(count, 42);
        for block in [64, 1000, 1 << 20] {
            for parsers in [1, 2] {
                assert_eq!(pass(parsers, block), (lines.clone(), damage.clone(), count));
            }
        }
    }

    #[test]
    fn texts_are_decoded_and_redacted_ahead_as_asked() {
        let path = written("texts.jsonl", &capture());
        let (decoded, ..) = one_by_one(&path, Texts::Decoded, 1);
        let (redacted, ..) = one_by_one(&path, Texts::Redacted, 1);
        let (raw, ..) = one_by_one(&path, Texts::Raw, 1);
        let text = decoded[0].2.clone().unwrap();
        assert_eq!(text, format!("{{\"jwt\":\"{TOKEN}\"}}"));
        assert_eq!(redacted[0].2.as_deref(), Some(&*redact_text(&text)));
        assert!(!redacted[0].2.as_ref().unwrap().contains(TOKEN));
        assert_eq!(raw[0].2, None);
    }

    #[test]
    fn every_block_size_and_parser_count_reads_as_one_thread_does() {
        let plain = capture();
        let mut damaged_gz = gzipped(&plain);
        damaged_gz.truncate(damaged_gz.len() * 2 / 3);
        let mut tiny_lines = plain.clone();
        tiny_lines.extend(b"\n".repeat(2 * LINES + 5));
        tiny_lines.extend(&plain[plain.iter().position(|&b| b == b'\n').unwrap() + 1..]);
        let files = [
            written("plain.jsonl", &plain),
            written("tiny-lines.jsonl", &tiny_lines),
            written("whole.jsonl.gz", &gzipped(&plain)),
            written("cut.jsonl.gz", &damaged_gz),
            written(
                "header-only.jsonl",
                &plain[..plain.iter().position(|&b| b == b'\n').unwrap() + 1],
            ),
        ];
        // Each record's offset is where its line starts in the file's (decompressed) bytes.
        for (path, bytes) in files
            .iter()
            .map(|f| &f.0)
            .zip([&plain, &tiny_lines, &plain])
        {
            let (records, ..) = one_by_one(path, Texts::Raw, usize::MAX);
            assert!(records.len() >= 10, "{path}: {}", records.len());
            for (line, at, _) in records {
                assert_eq!(
                    &bytes[at as usize..at as usize + line.len()],
                    &line[..],
                    "{path}"
                );
            }
        }
        for path in files.iter().map(|f| &f.0) {
            let expected = one_by_one(path, Texts::Raw, usize::MAX);
            assert!(
                path.ends_with("header-only.jsonl") || !expected.0.is_empty(),
                "{path}"
            );
            for block in [1, 2, 7, 64, 333, 1 << 20] {
                for parsers in [1, 2, 3] {
                    let got = in_blocks(path, Texts::Raw, block, parsers, usize::MAX);
                    assert_eq!(
                        got, expected,
                        "{path}, blocks of {block}, {parsers} parsers"
                    );
                }
            }
        }
        let expected = one_by_one(&files[0], Texts::Raw, 3);
        assert_eq!(expected.0.len(), 3);
        for block in [1, 64, 1 << 20] {
            assert_eq!(
                in_blocks(&files[0], Texts::Raw, block, 2, 3),
                expected,
                "stopped, blocks of {block}"
            );
        }
        for texts in [Texts::Decoded, Texts::Redacted] {
            let expected = one_by_one(&files[0], texts, usize::MAX);
            assert_eq!(in_blocks(&files[0], texts, 64, 2, usize::MAX), expected);
        }
    }
}
