//! Lines of a byte stream, handed out as slices of one buffer: no copy per line (a line is moved
//! only when it straddles a refill). A line keeps its newline; the last one may have none. Memory
//! is the buffer, grown only for a line longer than it.

use std::io::{self, Read};
use std::ops::Range;

pub struct Lines {
    source: Box<dyn Read + Send>,
    buf: Vec<u8>,
    start: usize,   // the next line starts here
    end: usize,     // bytes read end here
    scanned: usize, // no newline in start..scanned
    eof: bool,
}

impl Lines {
    pub fn new(source: Box<dyn Read + Send>, capacity: usize) -> Self {
        Lines {
            source,
            buf: vec![0; capacity],
            start: 0,
            end: 0,
            scanned: 0,
            eof: false,
        }
    }

    /// Where the next line is in the buffer (`get` it), None at the end. An error leaves the
    /// partial line unread.
    pub fn next(&mut self) -> io::Result<Option<Range<usize>>> {
        loop {
            if let Some(at) = memchr::memchr(b'\n', &self.buf[self.scanned..self.end]) {
                let line = self.start..self.scanned + at + 1;
                self.start = line.end;
                self.scanned = line.end;
                return Ok(Some(line));
            }
            self.scanned = self.end;
            if self.eof {
                let line = self.start..self.end;
                self.start = self.end;
                return Ok((!line.is_empty()).then_some(line));
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.end, self.scanned, self.start) =
                    (self.end - self.start, self.end - self.start, 0);
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0); // a line longer than the buffer
            }
            let n = match self.source.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                read => read?,
            };
            self.end += n;
            self.eof = n == 0;
        }
    }

    pub fn get(&self, line: Range<usize>) -> &[u8] {
        &self.buf[line]
    }

    /// The bytes read and not yet handed out as lines, and the stream the rest is in.
    pub fn into_parts(self) -> (Vec<u8>, Box<dyn Read + Send>) {
        (self.buf[self.start..self.end].to_vec(), self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_across_refills_and_longer_than_the_buffer() {
        let text = b"a\n\nlonger than four\nlast".to_vec();
        let mut lines = Lines::new(Box::new(io::Cursor::new(text)), 4);
        let mut got = Vec::new();
        while let Some(line) = lines.next().unwrap() {
            got.push(String::from_utf8(lines.get(line).to_vec()).unwrap());
        }
        assert_eq!(got, ["a\n", "\n", "longer than four\n", "last"]);
    }
}
