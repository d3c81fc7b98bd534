//! One capture file read on threads beside the caller's: a thread reads its lines (inflating
//! gzip), `parsers` threads parse them a block at a time, and the caller gets the records in file
//! order on its own thread. Line for line the outcome is `CaptureFile::next_with`'s: the same
//! records, damage and unknown kinds at the same line numbers, the same end at a broken gzip
//! stream; only the wall time differs (the parsing, ~40 % of an analysis, runs beside the engine).

use std::io::{self, Read};
use std::ops::ControlFlow;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread;

use self_cell::self_cell;

use super::{classify, CaptureFile, Line, Notes};
use crate::lines::Lines;
use crate::record::Record;

/// Bytes of whole lines read into a block (a longer line makes a block of its own).
const BLOCK: usize = 64 << 10;
/// Blocks waiting at each parser, and parsed blocks waiting for the caller. With `BLOCK`, this
/// bounds the pipeline's memory: a parsed block takes about three times its text.
const QUEUE: usize = 2;
/// Bytes asked of the file at a time once a block is full and its last line has not ended.
const READ: usize = 16 << 10;

/// Whole lines of a file, one after another (the last line of the file may have no newline).
struct Block(Vec<u8>);

impl Block {
    fn lines(&self) -> impl Iterator<Item = &[u8]> {
        let text = &self.0[..];
        let ends = memchr::memchr_iter(b'\n', text).map(|at| at + 1);
        let ends = ends.chain((text.last() != Some(&b'\n')).then_some(text.len()));
        let mut start = 0;
        ends.map(move |end| &text[std::mem::replace(&mut start, end)..end])
    }
}

type Classified<'a> = Vec<Line<'a>>;

self_cell!(
    /// A block and what each of its lines is (the records borrow the block's text).
    struct Parsed {
        owner: Block,
        #[covariant]
        dependent: Classified,
    }
);

impl CaptureFile {
    /// Hands the rest of the file's records to `f` as `next_with` would, until `f` breaks, with
    /// `parsers` threads parsing the lines.
    pub(super) fn each_in_parallel(
        &mut self,
        parsers: usize,
        f: &mut impl FnMut(&Record, &[u8]) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        self.each_in_blocks(BLOCK, parsers, f)
    }

    /// `each_in_parallel` with blocks of `block` bytes (tests try every line split).
    fn each_in_blocks(
        &mut self,
        block: usize,
        parsers: usize,
        f: &mut impl FnMut(&Record, &[u8]) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let CaptureFile {
            path,
            damage,
            unknown_records,
            lines: count,
            source,
            ..
        } = self;
        let mut notes = Notes {
            path,
            damage,
            unknown_records,
        };
        thread::scope(|s| {
            let (to_parsers, blocks): (Vec<_>, Vec<_>) =
                (0..parsers).map(|_| sync_channel(QUEUE)).unzip();
            let (to_caller, parsed): (Vec<_>, Vec<_>) =
                (0..parsers).map(|_| sync_channel(QUEUE)).unzip();
            let reader = s.spawn(move || read_blocks(source, block, to_parsers));
            for (blocks, to_caller) in blocks.into_iter().zip(to_caller) {
                s.spawn(move || parse_blocks(blocks, to_caller));
            }
            let mut flow = ControlFlow::Continue(());
            // Block k is at parser k % parsers: taking them in turn keeps the file's order.
            for block in parsed.iter().cycle().map_while(|r| r.recv().ok()) {
                flow = block.with_dependent(|block, lines| {
                    for (text, line) in block.lines().zip(lines) {
                        *count += 1;
                        match line {
                            Line::Record(record) => f(record, text)?,
                            Line::Skipped(why) => notes.note(*count, why.clone()),
                        }
                    }
                    ControlFlow::Continue(())
                });
                if flow.is_break() {
                    break;
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
    parsers: Vec<SyncSender<Block>>,
) -> Option<io::Error> {
    let (mut text, mut input) = source.take()?.into_parts();
    for parser in parsers.iter().cycle() {
        // Read on until a line ends past `block` bytes, or the stream does (`ended`).
        text.reserve((block + READ).saturating_sub(text.len()));
        let mut from = 0; // no newline in text[..from] once it is past `block`
        let (cut, ended) = loop {
            if text.len() >= block {
                if let Some(at) = memchr::memrchr(b'\n', &text[from..]) {
                    break (from + at + 1, None);
                }
                from = text.len();
            }
            let want = block.saturating_sub(text.len()).max(READ);
            match (&mut input).take(want as u64).read_to_end(&mut text) {
                Ok(n) if n < want => break (text.len(), Some(Ok(()))), // the last line may have no newline
                Ok(_) => {}
                Err(e) => {
                    break (
                        memchr::memrchr(b'\n', &text).map_or(0, |at| at + 1),
                        Some(Err(e)),
                    )
                }
            }
        };
        let rest = text.split_off(cut); // at the end: nothing, or the partial line an error cut
        if !text.is_empty() && parser.send(Block(text)).is_err() {
            return None; // the caller stopped
        }
        match ended {
            None => text = rest,
            Some(Ok(())) => return None,
            Some(Err(e)) => return Some(e),
        }
    }
    None
}

fn parse_blocks(blocks: Receiver<Block>, caller: SyncSender<Parsed>) {
    for block in blocks {
        let parsed = Parsed::new(block, |block| {
            let mut lines = Vec::with_capacity(memchr::memchr_iter(b'\n', &block.0).count() + 1);
            lines.extend(block.lines().map(classify));
            lines
        });
        if caller.send(parsed).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::damage::Damage;

    /// What a pass hands on and notes: each record's line, the damage, the unknown kinds, the
    /// line count.
    type Pass = (Vec<Vec<u8>>, Vec<Damage>, Vec<(String, u64)>, u64);

    fn one_by_one(path: &str, stop_after: usize) -> Pass {
        let mut file = CaptureFile::open(path).unwrap();
        let mut lines = Vec::new();
        while let Some(()) = file.next_with(|_, line| lines.push(line.to_vec())) {
            if lines.len() == stop_after {
                break;
            }
        }
        (lines, file.damage.entries, file.unknown_records, file.lines)
    }

    fn in_blocks(path: &str, block: usize, parsers: usize, stop_after: usize) -> Pass {
        let mut file = CaptureFile::open(path).unwrap();
        let mut lines = Vec::new();
        let _ = file.each_in_blocks(block, parsers, &mut |_, line| {
            lines.push(line.to_vec());
            if lines.len() == stop_after {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        (lines, file.damage.entries, file.unknown_records, file.lines)
    }

    fn written(name: &str, bytes: &[u8]) -> String {
        let path =
            std::env::temp_dir().join(format!("mwtap-parallel-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_owned()
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
                0 => format!("{{\"rec\":\"msg\",\"t\":{i},\"conn\":\"c\",\"n\":{i},\"dir\":\"c2s\",\"op\":\"text\",\"size\":2,\"text\":\"{{}}\"}}"),
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
    fn every_block_size_and_parser_count_reads_as_one_thread_does() {
        let plain = capture();
        let mut damaged_gz = gzipped(&plain);
        damaged_gz.truncate(damaged_gz.len() * 2 / 3);
        let files = [
            written("plain.jsonl", &plain),
            written("whole.jsonl.gz", &gzipped(&plain)),
            written("cut.jsonl.gz", &damaged_gz),
            written(
                "header-only.jsonl",
                &plain[..plain.iter().position(|&b| b == b'\n').unwrap() + 1],
            ),
        ];
        for path in &files {
            let expected = one_by_one(path, usize::MAX);
            assert!(
                path.ends_with("header-only.jsonl") || !expected.0.is_empty(),
                "{path}"
            );
            for block in [1, 2, 7, 64, 333, 1 << 20] {
                for parsers in [1, 2, 3] {
                    let got = in_blocks(path, block, parsers, usize::MAX);
                    assert_eq!(
                        got, expected,
                        "{path}, blocks of {block}, {parsers} parsers"
                    );
                }
            }
        }
        let expected = one_by_one(&files[0], 3);
        assert_eq!(expected.0.len(), 3);
        for block in [1, 64, 1 << 20] {
            assert_eq!(
                in_blocks(&files[0], block, 2, 3),
                expected,
                "stopped, blocks of {block}"
            );
        }
        for path in files {
            std::fs::remove_file(path).unwrap();
        }
    }
}
