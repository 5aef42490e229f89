//! The input files read in event-time order: ordered runs found in a first pass, merged by event time in the second.

use super::*;

/// The input files merged into one stream in event-time order.
///
/// The pipeline drops an event that arrives more than `event_time.allowed_lateness` behind the
/// newest one, as a live stream must. Explain reports only at the end, so it need not accept
/// that loss: the day files named newest first, or a second tenant's export appended to the
/// first, would otherwise lose everything older than what came before. A first pass reads each
/// file and splits it into ordered runs, at a line, a byte offset and an event time each: a run
/// goes on while its time keeps one direction (within the lateness), and a new one begins where
/// it turns. A run whose time goes back (an export sorted newest first, as the Entra portal
/// downloads and Okta's descending sort give) is read backwards, as natural merge sort does, in
/// blocks of at most [`BLOCK_LINES`] lines and [`BLOCK_BYTES`] bytes, each a run of its own read
/// last line first. The second pass reads every run as a lane of its own and hands the pipeline,
/// line by line, the lane whose next event is the oldest (a heap of the lanes' next times). A
/// lane is opened only when the merge reaches its run's first time and closed at its run's end,
/// so only runs that overlap in time are open at once, and a plain file's run starts reading at
/// its offset; a gzip stream cannot be entered in the middle, so its later runs read it again
/// from the start, except that a gzip file with a run read backwards is decompressed once into a
/// temporary file, which its runs then enter at their offsets. At most [`MAX_OPEN_LANES`] are open:
/// a run due beyond that waits for one to end, is read after its time, and is counted
/// ([`OrderedSource::deferred`]) for the report. Memory stays bounded: one read-ahead batch (or
/// one block read backwards) per open lane. Standard input and pipes cannot be read twice; each is one lane, read as it comes.
pub(super) struct OrderedSource {
    pub(super) names: Vec<String>,
    /// Every run, in the order the files were given and their runs come.
    pub(super) lanes: Vec<Lane>,
    /// Runs not opened yet, by first event time (the last is the earliest).
    pub(super) pending: Vec<usize>,
    /// Open lanes with a line in hand, by the event time of that line; ties go to the lane
    /// given first.
    pub(super) heap: BinaryHeap<Reverse<(i64, usize)>>,
    pub(super) open_lanes: usize,
    pub(super) normalizer: Arc<dyn Normalizer>,
    pub(super) limits: Limits,
    pub(super) lateness: i64,
    pub(super) max_line_bytes: usize,
    pub(super) keep_bytes: usize,
    /// Whether the merge compares lanes at all (a single lane needs no event times, which
    /// cost a parse each).
    pub(super) timed: bool,
    /// Lines handed on per input (its unreadable ones included), for the report's notes.
    pub(super) lines: Vec<u64>,
    /// Runs opened after their time because [`MAX_OPEN_LANES`] were open, and their lines.
    pub(super) deferred: (u64, u64),
    /// Bytes read by lanes already closed.
    pub(super) closed_bytes: u64,
    /// Gzip inputs decompressed into temporary files, removed when the source is dropped.
    pub(super) _spills: Vec<tempfile::NamedTempFile>,
}

/// Where one ordered run of an input begins.
#[derive(Debug, Clone, Copy)]
pub(super) struct RunStart {
    pub(super) line: u64,
    /// Byte offset of that line (in the decompressed stream).
    pub(super) offset: u64,
    /// Event time of its first readable line, or of its oldest when it is read backwards: the
    /// first it gives either way (`i64::MIN` when none).
    pub(super) time: i64,
    /// A block of a run whose time goes back, read backwards (its last line first).
    pub(super) reversed: bool,
}

/// How a lane reaches its input.
pub(super) enum LaneInput {
    /// A plain file (or a gzip file's decompressed copy), entered at the run's first byte; with
    /// the input's name.
    Seek(PathBuf, String),
    /// A gzip file, read from its start.
    Stream(PathBuf),
    /// Standard input or a pipe, opened up front and read as it comes.
    Open(Option<LineSource>),
}

/// One ordered run of an input.
pub(super) struct Lane {
    pub(super) input: u32,
    pub(super) how: LaneInput,
    pub(super) source: Option<LineSource>,
    pub(super) start: RunStart,
    /// The first line of the next run of the same input.
    pub(super) until: Option<u64>,
    /// Added to the line numbers and offsets the source reports (a seeked file counts from
    /// where it was entered).
    pub(super) shift: (u64, u64),
    /// Lines the source has produced so far.
    pub(super) produced: u64,
    pub(super) batch: RawBatch,
    /// Event time of each line of `batch` (`i64::MIN` when unreadable: it goes out at once and
    /// becomes a dead letter in the pipeline).
    pub(super) times: Vec<i64>,
    pub(super) next: usize,
    pub(super) ended: bool,
    pub(super) deferred: bool,
    /// Where the input stopped being readable; handed on once the lane's lines are out, since
    /// they were read before it.
    pub(super) unreadable: Vec<Unreadable>,
}

impl OrderedSource {
    pub(super) fn open(paths: &[PathBuf], config: &Config) -> Result<OrderedSource> {
        let input = &config.input;
        let normalizer: Arc<dyn Normalizer> = match &input.mapping {
            Some(path) => Arc::new(Mapping::load(path)?),
            None => Arc::from(input.format.normalizer()),
        };
        let limits = Limits::default();
        let lateness = config.event_time.allowed_lateness.millis();
        let open = |path: &Path| {
            LineSource::open_files(
                &[path.to_path_buf()],
                input.max_line_bytes,
                input.dead_letter_raw_bytes,
            )
        };
        let mut lanes = Vec::new();
        let mut spills = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let input_index = u32::try_from(i).context("too many input files")?;
            let (starts, how) = if can_read_twice(path) {
                let starts = run_starts(open(path)?, normalizer.as_ref(), &limits, lateness)?;
                let name = path.display().to_string();
                let how = if !is_gzip(path) {
                    LaneInput::Seek(path.clone(), name)
                } else if starts.iter().any(|s| s.reversed)
                    && let Some(spill) = decompress(path)
                {
                    // Read backwards block by block, a gzip stream would be decompressed from
                    // its start once per block.
                    let how = LaneInput::Seek(spill.path().to_path_buf(), name);
                    spills.push(spill);
                    how
                } else {
                    LaneInput::Stream(path.clone())
                };
                (starts, how)
            } else {
                let start = RunStart {
                    line: 1,
                    offset: 0,
                    time: i64::MIN,
                    reversed: false,
                };
                (vec![start], LaneInput::Open(Some(open(path)?)))
            };
            for (k, &start) in starts.iter().enumerate() {
                lanes.push(Lane {
                    input: input_index,
                    how: match &how {
                        LaneInput::Seek(p, name) => LaneInput::Seek(p.clone(), name.clone()),
                        LaneInput::Stream(p) => LaneInput::Stream(p.clone()),
                        LaneInput::Open(_) => LaneInput::Open(None),
                    },
                    source: None,
                    start,
                    until: starts.get(k + 1).map(|s| s.line),
                    shift: (0, 0),
                    produced: 0,
                    batch: RawBatch::default(),
                    times: Vec::new(),
                    next: 0,
                    ended: false,
                    deferred: false,
                    unreadable: Vec::new(),
                });
            }
            if let (LaneInput::Open(source), Some(lane)) = (how, lanes.last_mut()) {
                lane.how = LaneInput::Open(source);
            }
        }
        let mut pending: Vec<usize> = (0..lanes.len()).collect();
        pending.sort_by_key(|&i| std::cmp::Reverse((lanes[i].start.time, i)));
        Ok(OrderedSource {
            names: paths.iter().map(|p| p.display().to_string()).collect(),
            timed: lanes.len() > 1,
            lanes,
            pending,
            heap: BinaryHeap::new(),
            open_lanes: 0,
            normalizer,
            limits,
            lateness,
            max_line_bytes: input.max_line_bytes,
            keep_bytes: input.dead_letter_raw_bytes,
            lines: vec![0; paths.len()],
            deferred: (0, 0),
            closed_bytes: 0,
            _spills: spills,
        })
    }

    /// Opens the runs whose time the merge has reached (within the lateness, since a run's
    /// first line need not be its oldest), as many as [`MAX_OPEN_LANES`] allows.
    pub(super) fn open_due(&mut self, batch: &mut RawBatch) -> Result<(), SourceError> {
        while let Some(&i) = self.pending.last() {
            let head = self.heap.peek().map(|Reverse((t, _))| *t);
            let first = self.lanes[i].start.time;
            if head.is_some_and(|h| first.saturating_sub(self.lateness) > h) {
                return Ok(());
            }
            if head.is_some() && self.open_lanes >= MAX_OPEN_LANES {
                if !self.lanes[i].deferred {
                    self.lanes[i].deferred = true;
                    self.deferred.0 += 1;
                }
                return Ok(());
            }
            self.pending.pop();
            self.open_lanes += 1;
            self.lanes[i].open(self.max_line_bytes, self.keep_bytes)?;
            self.advance(i, batch)?;
        }
        Ok(())
    }

    /// Puts lane `i` back on the heap with its next line, or closes it at its end.
    pub(super) fn advance(&mut self, i: usize, batch: &mut RawBatch) -> Result<(), SourceError> {
        let (normalizer, limits) = (self.normalizer.as_ref(), &self.limits);
        let lane = &mut self.lanes[i];
        if lane.ready(normalizer, limits, self.max_line_bytes, self.timed)? {
            let t = lane.times.get(lane.next).copied().unwrap_or(i64::MIN);
            self.heap.push(Reverse((t, i)));
        } else {
            batch.unreadable.append(&mut lane.unreadable);
            if let Some(source) = lane.source.take() {
                self.closed_bytes += source.bytes_read();
            }
            lane.batch = RawBatch::default();
            lane.times = Vec::new();
            self.open_lanes = self.open_lanes.saturating_sub(1);
        }
        Ok(())
    }
}

pub(super) fn can_read_twice(path: &Path) -> bool {
    path != Path::new("-") && std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Whether the file is gzip-compressed, as [`LineSource`] tells it: by its magic bytes.
pub(super) fn is_gzip(path: &Path) -> bool {
    use std::io::Read as _;
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == [0x1f, 0x8b])
}

/// A gzip file decompressed into a temporary file, so that its runs can be entered at their
/// offsets; `None` when that fails (no room, a corrupt stream: the file is then read as before,
/// and the corruption reported where it is).
pub(super) fn decompress(path: &Path) -> Option<tempfile::NamedTempFile> {
    let mut spill = tempfile::Builder::new()
        .prefix("authwatch-explain-")
        .tempfile()
        .ok()?;
    let file = std::fs::File::open(path).ok()?;
    let mut gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file));
    let mut out = std::io::BufWriter::new(spill.as_file_mut());
    std::io::copy(&mut gz, &mut out).ok()?;
    out.flush().ok()?;
    drop(out);
    Some(spill)
}

/// Which way a run's time goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Not known yet: every line so far is within the lateness of every other.
    Either,
    /// Forward in time (within the lateness of the newest so far).
    Up,
    /// Back in time (within the lateness of the oldest so far): read backwards.
    Down,
}

/// The run being found by [`run_starts`].
struct Run {
    direction: Direction,
    /// Oldest and newest event time so far.
    oldest: i64,
    newest: i64,
    /// Event time of its first readable line.
    first: Option<i64>,
    /// Its blocks so far (the last one still growing), each with the oldest time in it.
    blocks: Vec<RunStart>,
    block_lines: usize,
    block_bytes: u64,
}

impl Run {
    fn new(line: u64, offset: u64) -> Run {
        Run {
            direction: Direction::Either,
            oldest: i64::MAX,
            newest: i64::MIN,
            first: None,
            blocks: vec![RunStart {
                line,
                offset,
                time: i64::MAX,
                reversed: true,
            }],
            block_lines: 0,
            block_bytes: 0,
        }
    }

    /// Whether an event at `t` goes on the run, which then takes it.
    fn takes(&mut self, t: i64, lateness: i64) -> bool {
        if self.first.is_some() {
            let up = t >= self.newest.saturating_sub(lateness);
            let down = t <= self.oldest.saturating_add(lateness);
            match (self.direction, up, down) {
                (Direction::Either, true, false) => self.direction = Direction::Up,
                (Direction::Either, false, true) => self.direction = Direction::Down,
                (Direction::Either, true, true)
                | (Direction::Up, true, _)
                | (Direction::Down, _, true) => {}
                _ => return false,
            }
        }
        self.first.get_or_insert(t);
        self.oldest = self.oldest.min(t);
        self.newest = self.newest.max(t);
        if let Some(block) = self.blocks.last_mut() {
            block.time = block.time.min(t);
        }
        true
    }

    /// Counts a line in the current block, after starting a new block when it is full.
    fn count(&mut self, line: u64, offset: u64, bytes: u64) {
        if self.block_lines >= BLOCK_LINES || self.block_bytes >= BLOCK_BYTES {
            self.blocks.push(RunStart {
                line,
                offset,
                time: i64::MAX,
                reversed: true,
            });
            self.block_lines = 0;
            self.block_bytes = 0;
        }
        self.block_lines += 1;
        self.block_bytes += bytes;
    }

    /// The run's starts: one when it is read forward, its blocks when backwards.
    fn finish(self, starts: &mut Vec<RunStart>) {
        if self.direction == Direction::Down {
            starts.extend(self.blocks.into_iter().map(|b| RunStart {
                // A block with no readable line goes out at once (as dead letters).
                time: if b.time == i64::MAX { i64::MIN } else { b.time },
                ..b
            }));
        } else if let Some(b) = self.blocks.first() {
            starts.push(RunStart {
                time: self.first.unwrap_or(i64::MIN),
                reversed: false,
                ..*b
            });
        }
    }
}

/// Where each ordered run of one input begins: line 1, then every line where the time turns
/// (goes back by more than the lateness in a run going forward, or ahead in one going back).
/// A run going back is given as its blocks, read backwards. At most [`MAX_RUNS_PER_INPUT`]
/// runs: from the turn that would begin one more (the 64th), the rest of the input is one run
/// read as it comes.
pub(super) fn run_starts(
    mut source: LineSource,
    normalizer: &dyn Normalizer,
    limits: &Limits,
    lateness: i64,
) -> Result<Vec<RunStart>, SourceError> {
    let mut starts = Vec::new();
    let mut runs = 1;
    let mut run: Option<Run> = None;
    let mut batch = RawBatch::default();
    'read: while source.fill(&mut batch, 4 * LANE_LINES)? {
        for line in &batch.lines {
            let (number, offset) = (line.origin.line, line.origin.offset);
            let current = run.get_or_insert_with(|| Run::new(number, offset));
            if let Ok(e) = normalizer.normalize(batch.bytes(line), 0, limits)
                && !current.takes(e.time, lateness)
            {
                if let Some(done) = run.take() {
                    done.finish(&mut starts);
                }
                runs += 1;
                if runs > MAX_RUNS_PER_INPUT {
                    // Shuffled rather than a few ordered exports put together.
                    starts.push(RunStart {
                        line: number,
                        offset,
                        time: e.time,
                        reversed: false,
                    });
                    break 'read;
                }
                let mut next = Run::new(number, offset);
                next.takes(e.time, lateness);
                run = Some(next);
            }
            if let Some(current) = run.as_mut() {
                current.count(number, offset, line.len);
            }
        }
    }
    if let Some(done) = run.take() {
        done.finish(&mut starts);
    }
    if starts.is_empty() {
        starts.push(RunStart {
            line: 1,
            offset: 0,
            time: i64::MIN,
            reversed: false,
        });
    }
    Ok(starts)
}

impl Lane {
    pub(super) fn open(
        &mut self,
        max_line_bytes: usize,
        keep_bytes: usize,
    ) -> Result<(), SourceError> {
        self.source = match &mut self.how {
            LaneInput::Open(source) => source.take(),
            LaneInput::Stream(path) => Some(LineSource::open_files(
                std::slice::from_ref(path),
                max_line_bytes,
                keep_bytes,
            )?),
            LaneInput::Seek(path, name) => {
                use std::io::{Seek as _, SeekFrom};
                let name = name.clone();
                let mut file = std::fs::File::open(&*path).map_err(|source| SourceError::Open {
                    name: name.clone(),
                    source,
                })?;
                if self.start.offset > 0 {
                    file.seek(SeekFrom::Start(self.start.offset))
                        .map_err(|source| SourceError::Open {
                            name: name.clone(),
                            source,
                        })?;
                    self.shift = (self.start.line - 1, self.start.offset);
                }
                Some(LineSource::from_readers(
                    vec![(name, Box::new(file))],
                    max_line_bytes,
                    keep_bytes,
                ))
            }
        };
        Ok(())
    }

    /// Whether the lane has a line in hand, reading ahead when it has none.
    pub(super) fn ready(
        &mut self,
        normalizer: &dyn Normalizer,
        limits: &Limits,
        max_line_bytes: usize,
        timed: bool,
    ) -> Result<bool, SourceError> {
        while self.next == self.batch.lines.len() {
            if self.ended {
                return Ok(false);
            }
            self.next = 0;
            self.times.clear();
            let mut batch = std::mem::take(&mut self.batch);
            if self.start.reversed {
                // The whole block at once (it is bounded by BLOCK_LINES and BLOCK_BYTES), its
                // last line first.
                batch.data.clear();
                batch.lines.clear();
                let mut chunk = RawBatch::default();
                while self.read_chunk(&mut chunk)? {
                    for l in &chunk.lines {
                        let start = batch.data.len();
                        batch.data.extend_from_slice(chunk.bytes(l));
                        batch.lines.push(RawLine {
                            start,
                            end: batch.data.len(),
                            ..*l
                        });
                    }
                }
                batch.lines.reverse();
                self.ended = true;
            } else if !self.read_chunk(&mut batch)? {
                batch.lines.clear();
            }
            self.batch = batch;
            let batch = &self.batch;
            self.times.extend(batch.lines.iter().map(|l| {
                if !timed || l.len > max_line_bytes as u64 {
                    return i64::MIN;
                }
                normalizer
                    .normalize(batch.bytes(l), 0, limits)
                    .map_or(i64::MIN, |e| e.time)
            }));
        }
        Ok(true)
    }

    /// Reads the run's next lines into `batch` (those before the run's first line are left
    /// out, so it may hold none); false at the run's end.
    fn read_chunk(&mut self, batch: &mut RawBatch) -> Result<bool, SourceError> {
        if self.ended {
            return Ok(false);
        }
        let Some(source) = self.source.as_mut() else {
            self.ended = true;
            return Ok(false);
        };
        // Not past the run's end: the next run reads those lines, and reading them here too
        // would read the file twice.
        let next_line = self.shift.0 + self.produced + 1;
        let want = match self.until {
            Some(u) if next_line >= u => {
                self.ended = true;
                return Ok(false);
            }
            Some(u) => usize::try_from(u - next_line).map_or(LANE_LINES, |n| n.min(LANE_LINES)),
            None => LANE_LINES,
        };
        if !source.fill(batch, want)? {
            self.ended = true;
            return Ok(false);
        }
        self.produced += batch.lines.len() as u64;
        let (lines, bytes) = self.shift;
        for l in &mut batch.lines {
            l.origin.line += lines;
            l.origin.offset += bytes;
        }
        for u in &mut batch.unreadable {
            u.origin.line += lines;
            u.origin.offset += bytes;
        }
        let (from, until) = (self.start.line, self.until);
        let before_end = |line: u64| until.is_none_or(|u| line < u);
        let past_end = batch
            .lines
            .iter()
            .map(|l| l.origin.line)
            .chain(batch.unreadable.iter().map(|u| u.origin.line))
            .any(|line| !before_end(line));
        if past_end {
            // The next run reads the rest.
            self.ended = true;
        }
        batch
            .lines
            .retain(|l| l.origin.line >= from && before_end(l.origin.line));
        let input = self.input;
        self.unreadable.extend(
            batch
                .unreadable
                .drain(..)
                .filter(|u| u.origin.line >= from && before_end(u.origin.line))
                .map(|mut u| {
                    u.origin.input = input;
                    u
                }),
        );
        Ok(true)
    }
}

impl Source for OrderedSource {
    fn names(&self) -> &[String] {
        &self.names
    }

    fn fill(&mut self, batch: &mut RawBatch, max_lines: usize) -> Result<bool, SourceError> {
        batch.data.clear();
        batch.lines.clear();
        batch.unreadable.clear();
        while batch.lines.len() < max_lines {
            self.open_due(batch)?;
            let Some(Reverse((_, i))) = self.heap.pop() else {
                break;
            };
            let Some(lane) = self.lanes.get_mut(i) else {
                break;
            };
            let Some(line) = lane.batch.lines.get(lane.next).copied() else {
                break;
            };
            lane.next += 1;
            let start = batch.data.len();
            batch.data.extend_from_slice(lane.batch.bytes(&line));
            batch.lines.push(RawLine {
                start,
                end: batch.data.len(),
                origin: Origin {
                    input: lane.input,
                    ..line.origin
                },
                len: line.len,
            });
            if let Some(n) = self.lines.get_mut(lane.input as usize) {
                *n += 1;
            }
            if lane.deferred {
                self.deferred.1 += 1;
            }
            self.advance(i, batch)?;
        }
        Ok(!batch.lines.is_empty() || !batch.unreadable.is_empty())
    }

    fn bytes_read(&self) -> u64 {
        self.closed_bytes
            + self
                .lanes
                .iter()
                .filter_map(|l| l.source.as_ref())
                .map(Source::bytes_read)
                .sum::<u64>()
    }
}
