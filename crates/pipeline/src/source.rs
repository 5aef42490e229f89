//! Sources: where raw lines come from, with their position for dead-letter records.
//!
//! A source fills [`RawBatch`]es: one byte buffer with line boundaries, so a batch of thousands
//! of lines costs two allocations that are reused. Lines longer than the limit are never held
//! whole: the source keeps the first bytes for the dead-letter record and skips to the newline.
//!
//! A live input (a pipe, a terminal, a socket, a FIFO: anything but a regular file) may not send
//! the rest of a batch for minutes, while the lines it did send may hold an attack in progress.
//! So once a batch has something in it, the source reads such an input only as far as the whole
//! lines already in its buffer go, and hands the batch on rather than wait for the writer.
//! Regular files and in-memory readers always fill whole batches: their next read never waits
//! long, and fewer, fuller batches are what keeps a replay fast.

use flate2::read::MultiGzDecoder;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Index of the input in [`LineSource::names`].
    pub input: u32,
    /// 1-based line number.
    pub line: u64,
    /// Byte offset of the line's start in the (decompressed) input.
    pub offset: u64,
}

/// One line of a batch: its bytes are `data[start..end]` of the batch.
#[derive(Debug, Clone, Copy)]
pub struct RawLine {
    /// Start in the batch buffer.
    pub start: usize,
    /// End in the batch buffer.
    pub end: usize,
    /// Position in the input.
    pub origin: Origin,
    /// Full length of the line; larger than `end - start` when the line was over the limit and
    /// only its head was kept.
    pub len: u64,
}

/// Where an input stopped being readable, and why.
#[derive(Debug, Clone)]
pub struct Unreadable {
    /// The line that could not be read: its number and the offset of its start.
    pub origin: Origin,
    /// What failed.
    pub message: String,
    /// The head of the line read before the failure: `data[start..end]` of the batch (empty
    /// when the failure came between lines), at most the dead-letter head.
    pub start: usize,
    /// End of that head in the batch buffer.
    pub end: usize,
    /// Bytes of the line read before the failure.
    pub len: u64,
}

/// A batch of raw lines.
#[derive(Debug, Default)]
pub struct RawBatch {
    /// Sequence number, to restore order after parallel stages.
    pub seq: u64,
    /// The lines' bytes.
    pub data: Vec<u8>,
    /// The lines.
    pub lines: Vec<RawLine>,
    /// A control message of a partitioned source instead of lines (see [`crate::checkpoint`]).
    pub control: Option<crate::checkpoint::Control>,
    /// Inputs that could not be read to their end, after the lines read before (each becomes a
    /// dead letter; the source goes on with the next input).
    pub unreadable: Vec<Unreadable>,
    /// The batch's numbers and timings so far, and when its read began (for a
    /// [`crate::BatchObserver`]); set by the pipeline, not by sources.
    pub(crate) report: crate::metrics::BatchReport,
    pub(crate) started: Option<std::time::Instant>,
}

impl RawBatch {
    /// The bytes of a line.
    pub fn bytes(&self, line: &RawLine) -> &[u8] {
        &self.data[line.start..line.end]
    }

    fn clear(&mut self) {
        self.data.clear();
        self.lines.clear();
        self.unreadable.clear();
    }
}

/// An input could not be opened or read. Whose fault: the environment's (missing file,
/// permissions, corrupt compression); not retryable without a change.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The input could not be opened.
    #[error("{name}: cannot open: {source}")]
    Open {
        /// The input.
        name: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading failed part-way (I/O error or corrupt gzip data).
    #[error("{name}: read failed after byte {offset}: {source}")]
    Read {
        /// The input.
        name: String,
        /// Decompressed bytes read before the failure.
        offset: u64,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A producer of raw line batches: files now, Kafka later.
pub trait Source: Send {
    /// Names of the inputs, indexed by [`Origin::input`].
    fn names(&self) -> &[String];
    /// Fills `batch` with up to `max_lines` lines; returns `false` when the source is exhausted
    /// and `batch` is empty.
    fn fill(&mut self, batch: &mut RawBatch, max_lines: usize) -> Result<bool, SourceError>;
    /// Bytes read so far (for progress).
    fn bytes_read(&self) -> u64;

    /// Whether each input is an independent partition with its own detector state, profiles and
    /// watermark (Kafka), rather than one stream continued across inputs (files).
    fn partitioned(&self) -> bool {
        false
    }

    /// Called once before the first [`Source::fill`]: the handle to send checkpoint barriers and
    /// partition assignments in order with the batches.
    fn attach(&mut self, _controls: crate::checkpoint::ControlSender) {}
}

/// An input's buffered reader. Concrete rather than `dyn BufRead`, so that the source can see
/// whether the next line is already in memory or has to be asked of the operating system.
enum Reader {
    Plain(Buffered),
    /// Boxed: the decoder's state is large, and one allocation per input costs nothing.
    Gzip(Box<BufReader<MultiGzDecoder<Buffered>>>),
}

type Buffered = BufReader<Box<dyn Read + Send>>;

impl Reader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        match self {
            Reader::Plain(r) => r.fill_buf(),
            Reader::Gzip(r) => r.fill_buf(),
        }
    }

    fn consume(&mut self, n: usize) {
        match self {
            Reader::Plain(r) => r.consume(n),
            Reader::Gzip(r) => r.consume(n),
        }
    }

    /// Whether the next whole line is already in memory, so that reading it cannot wait for
    /// the writer. A line's head without its newline is not enough: a writer may stop
    /// mid-line (a full pipe, a flush of a block buffer), and the lines before it should not
    /// wait for the rest. For gzip only the decompressed bytes are looked at: compressed bytes
    /// buffered below them may not make a whole line, and the decoder reads (and may wait)
    /// until they do; a live gzip stream's batch can so still wait inside the decoder for its
    /// writer's next compressed block, which is how long the writer holds its lines anyway.
    fn holds_a_line(&self) -> bool {
        let buffered = match self {
            Reader::Plain(r) => r.buffer(),
            Reader::Gzip(r) => r.buffer(),
        };
        memchr::memchr(b'\n', buffered).is_some()
    }
}

struct Input {
    reader: Reader,
    line: u64,
    offset: u64,
}

/// Newline-delimited lines from files or in-memory data, gzip-compressed or not (detected by
/// the gzip magic bytes, not the file name), read one after another.
pub struct LineSource {
    names: Vec<String>,
    /// Per input (indexed like `names`): whether it is live (see the module documentation).
    live: Vec<bool>,
    pending: Vec<Box<dyn Read + Send>>,
    current: Option<Input>,
    index: usize,
    max_line_bytes: usize,
    keep_bytes: usize,
    total_read: u64,
}

impl LineSource {
    /// Opens every file up front, so that a missing or unreadable file fails before any work.
    /// `-` reads standard input. Every input that is not a regular file (standard input from a
    /// pipe or terminal, a FIFO, a device) is live: see [`LineSource::live`].
    pub fn open_files(
        paths: &[PathBuf],
        max_line_bytes: usize,
        keep_bytes: usize,
    ) -> Result<Self, SourceError> {
        let mut inputs: Vec<(String, Box<dyn Read + Send>)> = Vec::new();
        let mut live = Vec::new();
        for path in paths {
            let name = path.display().to_string();
            if path == Path::new("-") {
                live.push(!stdin_is_regular_file());
                inputs.push((name, Box::new(std::io::stdin())));
                continue;
            }
            let file = std::fs::File::open(path).map_err(|source| SourceError::Open {
                name: name.clone(),
                source,
            })?;
            let metadata = file.metadata();
            if metadata.as_ref().is_ok_and(|m| m.is_dir()) {
                return Err(SourceError::Open {
                    name,
                    source: std::io::Error::other("is a directory"),
                });
            }
            // Of a file whose kind cannot be told, only smaller batches are risked by taking it
            // for live; taking a pipe for a file would hold its alerts back.
            live.push(!metadata.is_ok_and(|m| m.file_type().is_file()));
            inputs.push((name, Box::new(file)));
        }
        let mut source = LineSource::from_readers(inputs, max_line_bytes, keep_bytes);
        source.live = live;
        Ok(source)
    }

    /// A source over named readers (in-memory data, tests, the embedded demo stream). None of
    /// them is live unless marked with [`LineSource::live`].
    pub fn from_readers(
        inputs: Vec<(String, Box<dyn Read + Send>)>,
        max_line_bytes: usize,
        keep_bytes: usize,
    ) -> Self {
        let (names, pending): (Vec<_>, Vec<_>) = inputs.into_iter().unzip();
        let mut pending = pending;
        pending.reverse();
        LineSource {
            live: vec![false; names.len()],
            names,
            pending,
            current: None,
            index: 0,
            max_line_bytes,
            keep_bytes: keep_bytes.min(max_line_bytes),
            total_read: 0,
        }
    }

    /// Marks input `index` (of [`LineSource::names`]) as live: a reader whose next bytes may
    /// take any time to come, such as a pipe or a socket. A batch holding at least one line (or
    /// unreadable input) then goes down the pipeline as soon as the input holds no whole line in
    /// memory, rather than when the batch is full or the input ends. [`LineSource::open_files`]
    /// marks its inputs itself; an index past the inputs is ignored.
    pub fn live(mut self, index: usize) -> Self {
        if let Some(live) = self.live.get_mut(index) {
            *live = true;
        }
        self
    }

    /// Whether reading the next line may wait for a live input's writer: the input being read
    /// (or, between inputs, the next one, whose opening reads its first bytes) is live, and the
    /// next whole line is not in memory.
    fn next_read_may_wait(&self) -> bool {
        if !self.live.get(self.index).copied().unwrap_or(false) {
            return false;
        }
        match &self.current {
            Some(input) => !input.reader.holds_a_line(),
            None => !self.pending.is_empty(),
        }
    }

    fn next_input(&mut self) -> Result<bool, SourceError> {
        let Some(raw) = self.pending.pop() else {
            return Ok(false);
        };
        let name = &self.names[self.index];
        let mut buffered = BufReader::with_capacity(256 * 1024, raw);
        let head = buffered.fill_buf().map_err(|source| SourceError::Read {
            name: name.clone(),
            offset: 0,
            source,
        })?;
        let mut reader = if head.starts_with(&[0x1f, 0x8b]) {
            Reader::Gzip(Box::new(BufReader::with_capacity(
                256 * 1024,
                MultiGzDecoder::new(buffered),
            )))
        } else {
            Reader::Plain(buffered)
        };
        // A UTF-8 byte-order mark (Windows tools write one) is not part of the first line.
        let head = reader.fill_buf().map_err(|source| SourceError::Read {
            name: name.clone(),
            offset: 0,
            source,
        })?;
        let offset = if head.starts_with(UTF8_BOM) {
            reader.consume(UTF8_BOM.len());
            UTF8_BOM.len() as u64
        } else {
            0
        };
        self.total_read += offset;
        self.current = Some(Input {
            reader,
            line: 0,
            offset,
        });
        Ok(true)
    }

    /// Reads one line into `batch`; returns false at the end of the current input.
    fn read_line(&mut self, batch: &mut RawBatch) -> Result<bool, LineReadError> {
        let Some(input) = self.current.as_mut() else {
            return Ok(false);
        };
        let start = batch.data.len();
        let line_offset = input.offset;
        let mut len: u64 = 0;
        let mut saw_any = false;
        let mut ends_in_cr = false;
        // One byte more than the limit is held: a line's `\r` before its newline is no content.
        let within = self.max_line_bytes as u64 + 1;
        loop {
            let buf = match input.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    // The head read so far is the dead letter's raw text, like any rejected
                    // line's.
                    batch.data.truncate(start + self.keep_bytes);
                    return Err(LineReadError {
                        line_offset,
                        read_offset: input.offset,
                        start,
                        len,
                        source,
                    });
                }
            };
            if buf.is_empty() {
                break;
            }
            saw_any = true;
            let (chunk, found) = match memchr::memchr(b'\n', buf) {
                Some(i) => (&buf[..i], true),
                None => (buf, false),
            };
            if let Some(&last) = chunk.last() {
                ends_in_cr = last == b'\r';
            }
            // Keep the line whole while it is within the limit; past it keep only the head.
            let limit = if len + chunk.len() as u64 > within {
                self.keep_bytes
            } else {
                within as usize
            };
            let room = (limit as u64).saturating_sub(batch.data.len() as u64 - start as u64);
            let take = chunk.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            batch.data.extend_from_slice(&chunk[..take]);
            len += chunk.len() as u64;
            let consumed = chunk.len() + usize::from(found);
            input.reader.consume(consumed);
            input.offset += consumed as u64;
            self.total_read += consumed as u64;
            if found {
                break;
            }
        }
        if !saw_any {
            return Ok(false);
        }
        input.line += 1;
        // Measured without the `\r` of a CRLF line end, so that a line is accepted or
        // rejected the same whichever line ends its file has.
        if ends_in_cr {
            len -= 1;
        }
        if len > self.max_line_bytes as u64 {
            batch.data.truncate(start + self.keep_bytes);
        } else if ends_in_cr {
            batch.data.pop();
        }
        batch.lines.push(RawLine {
            start,
            end: batch.data.len(),
            origin: Origin {
                input: self.index as u32,
                line: input.line,
                offset: line_offset,
            },
            len,
        });
        Ok(true)
    }
}

impl Source for LineSource {
    fn names(&self) -> &[String] {
        &self.names
    }

    fn fill(&mut self, batch: &mut RawBatch, max_lines: usize) -> Result<bool, SourceError> {
        batch.clear();
        while batch.lines.len() < max_lines {
            // A live input's writer may be silent for minutes: what it has sent goes on now.
            if (!batch.lines.is_empty() || !batch.unreadable.is_empty())
                && self.next_read_may_wait()
            {
                break;
            }
            let read = match self.current {
                Some(_) => self.read_line(batch),
                None => match self.next_input() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(SourceError::Read { source, .. }) => Err(LineReadError {
                        line_offset: 0,
                        read_offset: 0,
                        start: batch.data.len(),
                        len: 0,
                        source,
                    }),
                    Err(e) => return Err(e),
                },
            };
            match read {
                Ok(true) => {}
                Ok(false) => {
                    self.current = None;
                    self.index += 1;
                }
                // A truncated or corrupt gzip stream, or an I/O error part-way: the lines read
                // so far stay in the batch, the failure becomes a dead letter, and the source goes
                // on with the next input. Stopping here would drop both, silently.
                Err(e) => {
                    let line = self.current.as_ref().map_or(0, |i| i.line) + 1;
                    let LineReadError {
                        line_offset,
                        read_offset,
                        start,
                        len,
                        source,
                    } = e;
                    batch.unreadable.push(Unreadable {
                        origin: Origin {
                            input: self.index as u32,
                            line,
                            offset: line_offset,
                        },
                        message: format!(
                            "line {line} and the rest of the input could not be read (after \
                             byte {read_offset} of its content): {source}"
                        ),
                        start,
                        end: batch.data.len(),
                        len,
                    });
                    self.current = None;
                    self.index += 1;
                }
            }
        }
        Ok(!batch.lines.is_empty() || !batch.unreadable.is_empty())
    }

    fn bytes_read(&self) -> u64 {
        self.total_read
    }
}

const UTF8_BOM: &[u8] = &[0xef, 0xbb, 0xbf];

/// Whether standard input is a regular file (`< file`), rather than a pipe, terminal or socket
/// whose writer may pause. Asked of a duplicate of its descriptor, as `Stdin` does not give its
/// metadata; when that fails it counts as live, which costs at most smaller batches.
fn stdin_is_regular_file() -> bool {
    #[cfg(unix)]
    let owned = {
        use std::os::fd::AsFd;
        std::io::stdin().as_fd().try_clone_to_owned()
    };
    #[cfg(windows)]
    let owned = {
        use std::os::windows::io::AsHandle;
        std::io::stdin().as_handle().try_clone_to_owned()
    };
    #[cfg(any(unix, windows))]
    {
        owned
            .and_then(|owned| std::fs::File::from(owned).metadata())
            .is_ok_and(|m| m.file_type().is_file())
    }
    #[cfg(not(any(unix, windows)))]
    {
        false
    }
}

/// A line whose reading failed part-way: where it starts, how far the input was read, and the
/// head already in the batch (from `start`).
struct LineReadError {
    line_offset: u64,
    read_offset: u64,
    start: usize,
    len: u64,
    source: std::io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A gzip stream cut short: the lines before the cut are read, the cut is reported where it
    /// is, and the next input is read as usual.
    #[test]
    fn a_truncated_gzip_input_keeps_its_lines_and_the_next_input() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let text: String = (0..5000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        gz.write_all(text.as_bytes()).unwrap();
        let mut bytes = gz.finish().unwrap();
        bytes.truncate(bytes.len() - 40);
        let mut s = LineSource::from_readers(
            vec![
                ("cut.gz".into(), Box::new(std::io::Cursor::new(bytes))),
                (
                    "next".into(),
                    Box::new(std::io::Cursor::new(b"{}\n".to_vec())),
                ),
            ],
            100,
            10,
        );
        let mut batch = RawBatch::default();
        let (mut read, mut unreadable, mut heads) = (Vec::new(), Vec::new(), Vec::new());
        while s.fill(&mut batch, 512).unwrap() {
            read.extend(batch.lines.iter().map(|l| (l.origin.input, l.origin.line)));
            unreadable.extend(batch.unreadable.iter().cloned());
            heads.extend(
                batch
                    .unreadable
                    .iter()
                    .map(|u| batch.data[u.start..u.end].to_vec()),
            );
        }
        assert_eq!(unreadable.len(), 1, "{unreadable:?}");
        let cut = &unreadable[0];
        let first_input = read.iter().filter(|(i, _)| *i == 0).count() as u64;
        assert!(first_input > 4000 && first_input < 5000, "{first_input}");
        assert_eq!((cut.origin.input, cut.origin.line), (0, first_input + 1));
        // Review finding 9: the offset is where the cut line starts (as for every dead letter),
        // not how far the input was read, and the part of it that was read is kept.
        let line_start: usize = text
            .lines()
            .take(first_input as usize)
            .map(|l| l.len() + 1)
            .sum();
        assert_eq!(cut.origin.offset, line_start as u64);
        let whole = text.lines().nth(first_input as usize).unwrap();
        assert!(cut.len > 0, "the cut falls inside a line: {cut:?}");
        assert_eq!(heads[0], &whole.as_bytes()[..(cut.len as usize).min(10)]);
        assert!(cut.message.contains("could not be read"), "{}", cut.message);
        assert_eq!(read.last(), Some(&(1, 1)), "the next input was not read");
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_line() {
        let mut s = source(b"\xef\xbb\xbf{\"a\":1}\n{\"b\":2}\n", 100, 10);
        let got = lines(&mut s, 10);
        assert_eq!(got[0].0, b"{\"a\":1}");
        assert_eq!((got[0].1.line, got[0].1.offset), (1, 3));
        assert_eq!((got[1].1.line, got[1].1.offset), (2, 11));
        // Only at the start of an input: elsewhere it stays in the line (and is rejected there).
        let mut s = source(b"{}\n\xef\xbb\xbf{}\n", 100, 10);
        assert_eq!(lines(&mut s, 10)[1].0, b"\xef\xbb\xbf{}");
    }

    fn source(data: &[u8], max: usize, keep: usize) -> LineSource {
        LineSource::from_readers(
            vec![("mem".into(), Box::new(std::io::Cursor::new(data.to_vec())))],
            max,
            keep,
        )
    }

    fn lines(src: &mut LineSource, per_batch: usize) -> Vec<(Vec<u8>, Origin, u64)> {
        let mut out = Vec::new();
        let mut batch = RawBatch::default();
        while src.fill(&mut batch, per_batch).unwrap() {
            for l in &batch.lines {
                out.push((batch.bytes(l).to_vec(), l.origin, l.len));
            }
        }
        out
    }

    #[test]
    fn splits_lines_with_positions_across_batches() {
        let mut s = source(b"a\nbb\r\n\nccc", 100, 10);
        let got = lines(&mut s, 2);
        let texts: Vec<&[u8]> = got.iter().map(|(b, _, _)| b.as_slice()).collect();
        assert_eq!(texts, [&b"a"[..], b"bb", b"", b"ccc"]);
        let offsets: Vec<(u64, u64)> = got.iter().map(|(_, o, _)| (o.line, o.offset)).collect();
        assert_eq!(offsets, [(1, 0), (2, 2), (3, 6), (4, 7)]);
        assert_eq!(s.bytes_read(), 10);
    }

    #[test]
    fn over_long_lines_keep_only_their_head() {
        let mut data = vec![b'x'; 5000];
        data.extend_from_slice(b"\nok\n");
        let mut s = source(&data, 1024, 16);
        let got = lines(&mut s, 10);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.len(), 16);
        assert_eq!(got[0].2, 5000);
        assert_eq!(got[1].0, b"ok");
        assert_eq!(got[1].1.offset, 5001);
    }

    /// Review finding 8: a line of exactly the limit was rejected when it ended in CRLF, as
    /// the `\r` counted against the limit; one byte more is over it either way.
    #[test]
    fn a_crlf_line_of_exactly_the_limit_is_whole() {
        let max = 1024;
        let exact = vec![b'x'; max];
        let over = vec![b'y'; max + 1];
        let mut data = Vec::new();
        for (line, end) in [
            (&exact, &b"\n"[..]),
            (&exact, b"\r\n"),
            (&over, b"\n"),
            (&over, b"\r\n"),
            (&exact, b"\r"),
        ] {
            data.extend_from_slice(line);
            data.extend_from_slice(end);
        }
        // Across buffer boundaries too: one byte per read.
        for per_read in [usize::MAX, 1] {
            let mut s = LineSource::from_readers(
                vec![(
                    "mem".into(),
                    Box::new(Chunked(std::io::Cursor::new(data.clone()), per_read)),
                )],
                max,
                16,
            );
            let got = lines(&mut s, 10);
            let lens: Vec<(usize, u64)> = got.iter().map(|(b, _, len)| (b.len(), *len)).collect();
            assert_eq!(
                lens,
                [
                    (max, max as u64),
                    (max, max as u64),
                    (16, max as u64 + 1),
                    (16, max as u64 + 1),
                    (max, max as u64)
                ],
                "per read {per_read}"
            );
            assert_eq!(got[1].0, exact);
        }
    }

    /// A reader that returns at most `.1` bytes per read.
    struct Chunked(std::io::Cursor<Vec<u8>>, usize);

    impl Read for Chunked {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.1);
            self.0.read(&mut buf[..n])
        }
    }

    /// Fills batches of up to 2048 lines on another thread and sends each batch's lines, so
    /// that a `fill` waiting for more input fails the test by a timeout instead of hanging it.
    fn fill_on_a_thread(
        mut src: LineSource,
    ) -> (
        std::sync::mpsc::Receiver<Vec<Vec<u8>>>,
        std::thread::JoinHandle<()>,
    ) {
        let (tx, rx) = std::sync::mpsc::channel();
        let filler = std::thread::spawn(move || {
            let mut batch = RawBatch::default();
            while src.fill(&mut batch, 2048).unwrap() {
                let lines = batch.lines.iter().map(|l| batch.bytes(l).to_vec());
                if tx.send(lines.collect()).is_err() {
                    return;
                }
            }
        });
        (rx, filler)
    }

    fn next_batch(rx: &std::sync::mpsc::Receiver<Vec<Vec<u8>>>, what: &str) -> Vec<Vec<u8>> {
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{what}: no batch within 10 s ({e})"))
    }

    /// `tail -f log | authwatch replay -`: a batch went on only when full (2048 lines) or at
    /// the end of the input, so on a quiet stream an attack's lines waited for hours.
    #[test]
    fn a_live_input_hands_on_its_lines_without_waiting_for_more() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        writer
            .write_all(b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n")
            .unwrap();
        let src = LineSource::from_readers(vec![("pipe".into(), Box::new(reader))], 100, 10);
        let (rx, filler) = fill_on_a_thread(src.live(0));
        let got = next_batch(&rx, "three lines written, the writer still there");
        assert_eq!(got, [&b"{\"n\":1}"[..], b"{\"n\":2}", b"{\"n\":3}"]);
        // A writer stopping mid-line holds back only that line.
        writer.write_all(b"{\"n\":4}\n{\"n\":").unwrap();
        assert_eq!(next_batch(&rx, "a line and a head"), [b"{\"n\":4}"]);
        writer.write_all(b"5}\n").unwrap();
        drop(writer);
        assert_eq!(next_batch(&rx, "the rest of the line"), [b"{\"n\":5}"]);
        filler.join().unwrap();
        assert!(rx.try_recv().is_err());
    }

    /// A file, then standard input from a pipe: the file's last lines go on before the source
    /// waits for the pipe's first bytes.
    #[test]
    fn lines_read_go_on_before_a_live_input_is_opened() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let src = LineSource::from_readers(
            vec![
                (
                    "file".into(),
                    Box::new(std::io::Cursor::new(b"a\nb\n".to_vec())),
                ),
                ("-".into(), Box::new(reader)),
            ],
            100,
            10,
        )
        .live(1);
        let (rx, filler) = fill_on_a_thread(src);
        assert_eq!(next_batch(&rx, "the file's lines"), [b"a", b"b"]);
        writer.write_all(b"c\n").unwrap();
        assert_eq!(next_batch(&rx, "the pipe's first line"), [b"c"]);
        drop(writer);
        filler.join().unwrap();
    }

    /// Inputs that are not live keep whole batches however their reads come: the next read of
    /// a file never waits long, and a batch's fixed costs are paid once per 2048 lines.
    #[test]
    fn inputs_not_live_fill_whole_batches() {
        let data: Vec<u8> = (0..100)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        for live in [false, true] {
            let mut s = LineSource::from_readers(
                vec![(
                    "mem".into(),
                    Box::new(Chunked(std::io::Cursor::new(data.clone()), 7)),
                )],
                100,
                10,
            );
            if live {
                s = s.live(0);
            }
            let mut batch = RawBatch::default();
            let mut sizes = Vec::new();
            while s.fill(&mut batch, 2048).unwrap() {
                sizes.push(batch.lines.len());
            }
            assert_eq!(sizes.iter().sum::<usize>(), 100);
            if live {
                // A read of 7 bytes completes at most four of these lines: the end of one and
                // three more.
                assert!(sizes.iter().all(|&n| n <= 4), "{sizes:?}");
            } else {
                assert_eq!(sizes, [100]);
            }
        }
    }

    /// `open_files` tells a regular file (not live) from a FIFO (live).
    #[cfg(unix)]
    #[test]
    fn open_files_takes_a_fifo_for_live_and_a_file_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("events.jsonl");
        std::fs::write(&file, "{}\n").unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("no mkfifo: skipped");
            return;
        }
        // Opening a FIFO for reading waits for a writer.
        let writing = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(fifo))
        };
        let s = LineSource::open_files(&[file, fifo], 100, 10).unwrap();
        let _writer = writing.join().unwrap().unwrap();
        assert_eq!(s.live, [false, true]);
    }

    #[test]
    fn reads_gzip_and_several_inputs_in_order() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"one\ntwo\n").unwrap();
        let gz = gz.finish().unwrap();
        let mut s = LineSource::from_readers(
            vec![
                ("a.gz".into(), Box::new(std::io::Cursor::new(gz))),
                (
                    "b".into(),
                    Box::new(std::io::Cursor::new(b"three".to_vec())),
                ),
            ],
            100,
            10,
        );
        let got = lines(&mut s, 100);
        let texts: Vec<&[u8]> = got.iter().map(|(b, _, _)| b.as_slice()).collect();
        assert_eq!(texts, [&b"one"[..], b"two", b"three"]);
        assert_eq!(got[2].1.input, 1);
        assert_eq!(s.names(), ["a.gz", "b"]);
    }

    #[test]
    fn missing_file_fails_at_open() {
        let e = LineSource::open_files(&[PathBuf::from("/nonexistent/x.jsonl")], 100, 10)
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/x.jsonl: cannot open"),
            "{e}"
        );
    }

    #[test]
    fn corrupt_gzip_is_an_unreadable_input_at_its_first_line() {
        let mut s = LineSource::from_readers(
            vec![(
                "bad.gz".into(),
                Box::new(std::io::Cursor::new(vec![
                    0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7,
                ])),
            )],
            100,
            10,
        );
        let mut batch = RawBatch::default();
        assert!(s.fill(&mut batch, 10).unwrap());
        assert!(batch.lines.is_empty());
        assert_eq!(batch.unreadable.len(), 1);
        let u = &batch.unreadable[0];
        assert_eq!((u.origin.input, u.origin.line, u.origin.offset), (0, 1, 0));
        assert!(u.message.contains("could not be read"), "{}", u.message);
        assert!(!s.fill(&mut batch, 10).unwrap());
    }
}
