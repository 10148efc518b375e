//! NDJSON replay (plain or gzip). The file is one partition in arrival order: workers read and
//! decode chunks in parallel, then admit them strictly in chunk order (only the clock's decision
//! is taken in turn), so late-event and duplicate decisions are the same on any number of
//! workers. Admitted events then go to their users' workers like any other.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use read::status::PartitionProgress;
use read::Status;

use super::{now_ms, worker_clock, InputClock, PartClock, Poll, Source, SourceError};
use crate::clock::PartitionClock;
use crate::deadletter::Coords;
use crate::decode::{decode, Decoded, MAX_EVENT_BYTES};
use crate::ingest::Ingest;
use crate::reject::{Reason, Rejection};
use crate::timekeeper::Watermark;

const CHUNK_BYTES: usize = 1 << 20;

/// How much of an overlong line is kept for its dead letter (which cuts it further).
const OVERLONG_KEPT: usize = MAX_EVENT_BYTES;

struct Reader {
    input: Box<dyn Read + Send>,
    next_index: u64,
    next_line: u64,
    eof: bool,
    carry: Vec<u8>,
}

struct Chunk {
    index: u64,
    first_line: u64,
    /// Whole lines; or, for an overlong line, the first [`OVERLONG_KEPT`] bytes of it.
    bytes: Vec<u8>,
    /// The length of the line (without its newline) when this chunk is one overlong line.
    overlong: Option<u64>,
    /// Bytes of the input this chunk stands for.
    read: u64,
}

impl Reader {
    /// The next run of whole lines, about [`CHUNK_BYTES`] long, read in blocks into a recycled
    /// buffer. The bytes after the last newline wait in `carry` for the next chunk. A line that
    /// does not end within about [`CHUNK_BYTES`] is one chunk of its own: its first bytes are kept,
    /// the rest is read up to its newline and dropped, so memory stays bounded whatever the input
    /// and the line counts once, under its own number.
    fn next_chunk(&mut self, mut bytes: Vec<u8>) -> std::io::Result<Option<Chunk>> {
        bytes.clear();
        bytes.append(&mut self.carry);
        while !self.eof && bytes.len() < CHUNK_BYTES {
            self.fill(&mut bytes)?;
        }
        if !self.eof {
            match memchr_last(&bytes) {
                Some(last) => {
                    self.carry.extend_from_slice(&bytes[last + 1..]);
                    bytes.truncate(last + 1);
                }
                None => return self.overlong(bytes).map(Some),
            }
        }
        if bytes.is_empty() {
            return Ok(None);
        }
        // At the end of the input the last line may lack its newline; it is a line all the same.
        let lines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
        let read = bytes.len() as u64;
        let chunk = Chunk { index: self.next_index, first_line: self.next_line, bytes, overlong: None, read };
        self.next_index += 1;
        self.next_line += lines;
        Ok(Some(chunk))
    }

    /// Reads one more block (up to [`CHUNK_BYTES`]) onto the end of `bytes`.
    fn fill(&mut self, bytes: &mut Vec<u8>) -> std::io::Result<()> {
        let filled = bytes.len();
        bytes.resize(filled + CHUNK_BYTES, 0);
        let n = match self.input.read(&mut bytes[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                // Not the end of the input: the caller reads again.
                bytes.truncate(filled);
                return Ok(());
            }
            Err(e) => {
                bytes.truncate(filled);
                return Err(e);
            }
        };
        bytes.truncate(filled + n);
        self.eof = n == 0;
        Ok(())
    }

    /// `bytes` is the start of a line with no newline in it yet: keeps its first
    /// [`OVERLONG_KEPT`] bytes and reads the rest of the line block by block, dropping it; what
    /// follows its newline waits in `carry`.
    fn overlong(&mut self, mut bytes: Vec<u8>) -> std::io::Result<Chunk> {
        let mut len = bytes.len() as u64;
        bytes.truncate(OVERLONG_KEPT);
        let kept = bytes.len();
        let mut ended = false;
        while !ended && !self.eof {
            bytes.truncate(kept);
            self.fill(&mut bytes)?;
            let block = &bytes[kept..];
            match block.iter().position(|b| *b == b'\n') {
                Some(newline) => {
                    len += newline as u64;
                    self.carry.extend_from_slice(&block[newline + 1..]);
                    ended = true;
                }
                None => len += block.len() as u64,
            }
        }
        bytes.truncate(kept);
        let chunk = Chunk {
            index: self.next_index,
            first_line: self.next_line,
            bytes,
            overlong: Some(len),
            read: len + ended as u64,
        };
        self.next_index += 1;
        self.next_line += 1;
        Ok(chunk)
    }
}

fn memchr_last(bytes: &[u8]) -> Option<usize> {
    bytes.iter().rposition(|b| *b == b'\n')
}

/// The file shared by every worker's [`FileSource`].
pub struct SharedFile {
    name: String,
    reader: Mutex<Reader>,
    /// Index of the chunk whose turn it is to be admitted, and the partition clock.
    turn: Mutex<(u64, PartitionClock)>,
    turn_changed: Condvar,
    lines_done: AtomicU64,
    bytes_read: AtomicU64,
    /// Chunk buffers handed back after use: fresh megabyte allocations cost page faults.
    spare: Mutex<Vec<Vec<u8>>>,
}

impl SharedFile {
    pub fn open(path: &Path) -> Result<Arc<SharedFile>, SourceError> {
        let io = |error| SourceError::Io { path: path.display().to_string(), error };
        let mut file = File::open(path).map_err(io)?;
        let mut magic = [0u8; 2];
        let gz = file.read(&mut magic).map_err(io)? == 2 && magic == [0x1f, 0x8b];
        let file = File::open(path).map_err(io)?;
        // Reads are whole blocks, so only the gzip decoder needs a buffer under it.
        let input: Box<dyn Read + Send> =
            if gz { Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))) } else { Box::new(file) };
        Ok(Arc::new(SharedFile {
            name: path.display().to_string(),
            reader: Mutex::new(Reader { input, next_index: 0, next_line: 1, eof: false, carry: Vec::new() }),
            turn: Mutex::new((0, PartitionClock::default())),
            turn_changed: Condvar::new(),
            lines_done: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            spare: Mutex::new(Vec::new()),
        }))
    }

    pub fn lines_done(&self) -> u64 {
        self.lines_done.load(Ordering::Relaxed)
    }

    /// Uncompressed bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    pub fn source(self: &Arc<Self>) -> FileSource {
        FileSource { shared: self.clone(), done: false, last_clock: None, decoded: Vec::new(), admitted: Vec::new() }
    }
}

pub struct FileSource {
    shared: Arc<SharedFile>,
    done: bool,
    last_clock: Option<PartitionClock>,
    /// Recycled allocations for a chunk's decode results and its admitted events.
    decoded: Vec<Result<Decoded<'static>, Rejection>>,
    admitted: Vec<u32>,
}

impl FileSource {
    fn process(&mut self, chunk: Chunk, ingest: &mut Ingest) {
        let now = now_ms();
        let mut decoded = recycle(std::mem::take(&mut self.decoded));
        let lines: Vec<(u64, &[u8])> = match chunk.overlong {
            Some(len) => {
                let detail = format!("{len} bytes (a line without a newline); the limit is {MAX_EVENT_BYTES}");
                decoded.push(Err(Rejection::new(Reason::TooLarge, detail)));
                vec![(chunk.first_line, &chunk.bytes[..])]
            }
            None => {
                // The newline that ends the chunk ends its last line; no line follows it.
                let body = chunk.bytes.strip_suffix(b"\n").unwrap_or(&chunk.bytes);
                let lines: Vec<(u64, &[u8])> = body
                    .split(|b| *b == b'\n')
                    .enumerate()
                    .map(|(i, line)| (chunk.first_line + i as u64, line.strip_suffix(b"\r").unwrap_or(line)))
                    .collect();
                decoded.extend(lines.iter().map(|(_, line)| {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        Err(Rejection::new(Reason::Blank, "an empty or whitespace-only line"))
                    } else {
                        ingest.prepare(decode(line, now))
                    }
                }));
                lines
            }
        };
        let mut turn = TurnGuard { turn: self.shared.turn.lock(), changed: &self.shared.turn_changed };
        while turn.turn.0 != chunk.index {
            self.shared.turn_changed.wait(&mut turn.turn);
        }
        let clock = &mut turn.turn.1;
        // Only the clock's decision is taken in turn; decoded events stay where they are.
        let mut admitted = std::mem::take(&mut self.admitted);
        for (i, ((line, raw), result)) in lines.iter().zip(decoded.iter()).enumerate() {
            let coords = Coords::File { file: &self.shared.name, line: *line };
            if ingest.admit(clock, result, &coords, raw, now) {
                admitted.push(i as u32);
            }
        }
        self.last_clock = Some(clock.time_only());
        drop(turn);
        // Counting needs no order: it runs while the next chunk's turn goes on.
        for &i in &admitted {
            let d = decoded[i as usize].as_ref().expect("admitted");
            ingest.add(d, views::admitted::ord(0, lines[i as usize].0));
        }
        admitted.clear();
        decoded.clear();
        self.admitted = admitted;
        self.shared.lines_done.fetch_add(lines.len() as u64, Ordering::Relaxed);
        self.decoded = recycle(decoded);
        self.shared.spare.lock().push(chunk.bytes);
    }
}

/// Holds the admission turn; passes it on when dropped, even by a panic, so other workers never
/// wait forever for a chunk that will not come.
struct TurnGuard<'a> {
    turn: parking_lot::MutexGuard<'a, (u64, PartitionClock)>,
    changed: &'a Condvar,
}

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        self.turn.0 += 1;
        self.changed.notify_all();
    }
}

/// Reuses an empty vector's allocation for another element type; here the same type with another
/// lifetime, so the layout matches and nothing is allocated.
fn recycle<A, B>(mut v: Vec<A>) -> Vec<B> {
    v.clear();
    // An empty Vec holds no values, so only the allocation (same size and alignment) carries over.
    v.into_iter().map(|_| unreachable!("the vector is empty")).collect()
}

impl Source for FileSource {
    fn poll(&mut self, ingest: &mut Ingest, deadline: Instant) -> Result<Poll, SourceError> {
        while !self.done {
            let buffer = self.shared.spare.lock().pop().unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES + 4096));
            let chunk = self
                .shared
                .reader
                .lock()
                .next_chunk(buffer)
                .map_err(|error| SourceError::Io { path: self.shared.name.clone(), error })?;
            let Some(chunk) = chunk else {
                self.done = true;
                break;
            };
            self.shared.bytes_read.fetch_add(chunk.read, Ordering::Relaxed);
            self.process(chunk, ingest);
            if Instant::now() >= deadline || ingest.full() {
                return Ok(Poll::Busy);
            }
        }
        Ok(Poll::Done)
    }

    /// As `as_of`, the watermark after this worker's own last chunk (its chunk in flight is
    /// admitted at or after it); until it has admitted one, it holds `as_of` back. As the floor,
    /// the shared partition's watermark now: every chunk this worker admits from now on is at
    /// or after it.
    fn clock(&self, lateness_ms: i64, as_of: Option<i64>) -> InputClock {
        let mut own = worker_clock(
            self.last_clock.iter().map(|clock| PartClock { clock, idle: self.done, finished: self.done }),
            lateness_ms,
            as_of,
        );
        if self.last_clock.is_none() && !self.done {
            own.watermark = Watermark::Pending;
        }
        if !self.done {
            let now = self.shared.turn.lock().1.time_only();
            own.floor = worker_clock(
                std::iter::once(PartClock { clock: &now, idle: false, finished: false }),
                lateness_ms,
                as_of,
            )
            .floor;
        }
        own
    }

    fn caught_up(&self) -> bool {
        self.done
    }

    fn report(&self, status: &Status) {
        let position = self.shared.lines_done() as i64;
        status.set_partition(self.shared.name.clone(), PartitionProgress { position, ..Default::default() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(text: Vec<u8>) -> Reader {
        Reader {
            input: Box::new(std::io::Cursor::new(text)),
            next_index: 0,
            next_line: 1,
            eof: false,
            carry: Vec::new(),
        }
    }

    /// `(first_line, lines)` of every chunk, with each chunk's size checked.
    fn chunks(mut r: Reader) -> Vec<(u64, Vec<Vec<u8>>)> {
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk(Vec::new()).unwrap() {
            assert!(c.bytes.len() <= 2 * CHUNK_BYTES, "chunk of {} bytes", c.bytes.len());
            let lines = c.bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
            out.push((c.first_line, lines));
        }
        out
    }

    #[test]
    fn chunks_end_at_newlines_and_number_lines_across_chunks() {
        let text: Vec<u8> = (0..200_000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        let got = chunks(reader(text));
        assert!(got.len() > 1);
        let mut expected_line = 1;
        for (first, lines) in got {
            assert_eq!(first, expected_line);
            for (k, line) in lines.iter().enumerate() {
                assert_eq!(line, format!("line {}", first - 1 + k as u64).as_bytes());
            }
            expected_line += lines.len() as u64;
        }
        assert_eq!(expected_line, 200_001);
    }

    #[test]
    fn an_overlong_line_is_one_chunk_of_its_own_with_a_bounded_prefix() {
        let mut text = b"first\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 5 * CHUNK_BYTES + 17));
        text.extend_from_slice(b"\nnext\nlast\n");
        let mut r = reader(text.clone());
        let mut got = Vec::new();
        while let Some(c) = r.next_chunk(Vec::new()).unwrap() {
            assert!(c.bytes.capacity() <= 3 * CHUNK_BYTES, "a buffer of {} bytes", c.bytes.capacity());
            got.push((c.index, c.first_line, c.overlong, c.bytes.len(), c.read));
        }
        let long = 5 * CHUNK_BYTES as u64 + 17;
        assert_eq!(
            got,
            vec![(0, 1, None, 6, 6), (1, 2, Some(long), OVERLONG_KEPT, long + 1), (2, 3, None, 10, 10)],
            "the line before, the long line (line 2) alone, and the lines after it"
        );
        assert_eq!(got.iter().map(|c| c.4).sum::<u64>(), text.len() as u64);
    }

    /// What a replay of `text` through one [`FileSource`] counted.
    #[derive(Debug)]
    struct Counted {
        rejects: std::collections::BTreeMap<String, i64>,
        accepted: i64,
        /// Lines of the admitted events, in order.
        admitted: Vec<u64>,
        /// `(reason, line, payload length)` of every dead letter.
        letters: Vec<(String, u64, usize)>,
        lines_done: u64,
        bytes_read: u64,
    }

    fn replay(text: &[u8]) -> Counted {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text).unwrap();
        file.flush().unwrap();
        let shared = SharedFile::open(file.path()).unwrap();
        let sink = crate::deadletter::MemorySink::default();
        let mut ingest = Ingest::new(&schema::ViewConfig::default(), 300_000, Box::new(sink.clone()));
        let mut source = shared.source();
        let deadline = Instant::now() + std::time::Duration::from_secs(3600);
        while source.poll(&mut ingest, deadline).unwrap() != Poll::Done {}
        let admitted = ingest.admitted.iter().map(|a| a.ord).collect();
        let mut cells = Vec::new();
        ingest.flush(&mut cells);
        let mut counted = Counted {
            rejects: Default::default(),
            accepted: 0,
            admitted,
            letters: Vec::new(),
            lines_done: shared.lines_done(),
            bytes_read: shared.bytes_read(),
        };
        for (cell, n) in cells {
            match cell {
                schema::cells::Cell::Reject { reason } => *counted.rejects.entry(reason).or_default() += n,
                schema::cells::Cell::Accepted => counted.accepted += n,
                _ => {}
            }
        }
        counted.letters = sink
            .0
            .lock()
            .iter()
            .map(|l| {
                let reason = l["reason"].as_str().unwrap().to_string();
                (reason, l["source"]["line"].as_u64().unwrap(), l["payload"].as_str().unwrap().len())
            })
            .collect();
        counted
    }

    fn event(i: u64) -> Vec<u8> {
        let ts = now_ms() - 60_000;
        format!(r#"{{"user_id":"u{i}","event":"page_view","ts":{ts},"page":"/p/{i}"}}"#).into_bytes()
    }

    fn rejects(pairs: &[(&str, i64)]) -> std::collections::BTreeMap<String, i64> {
        pairs.iter().map(|(r, n)| (r.to_string(), *n)).collect()
    }

    /// Good lines, then one line of `long` bytes without a newline in it, then good lines, a bad
    /// one and a good one: the long line is one `too_large` at its own line number, and every
    /// line after it keeps its number.
    #[test]
    fn an_overlong_line_is_one_too_large_reject_and_later_lines_keep_their_numbers() {
        for (before, long) in [
            (3, 5 * CHUNK_BYTES + 17),
            (3, CHUNK_BYTES),
            (1, CHUNK_BYTES + 1),
            (20_000, 2 * CHUNK_BYTES),
            (0, 3 * CHUNK_BYTES - 5),
            (5, 200_000),
        ] {
            let mut text = Vec::new();
            let mut line = 0;
            let mut good = Vec::new();
            for _ in 0..before {
                line += 1;
                text.extend(event(line));
                text.push(b'\n');
                good.push(line);
            }
            line += 1;
            let long_line = line;
            text.extend(std::iter::repeat_n(b'x', long));
            text.push(b'\n');
            for _ in 0..3 {
                line += 1;
                text.extend(event(line));
                text.push(b'\n');
                good.push(line);
            }
            line += 1;
            let bad_line = line;
            text.extend_from_slice(b"{not json\n");
            line += 1;
            text.extend(event(line));
            text.push(b'\n');
            good.push(line);

            let got = replay(&text);
            let case = format!("{before} lines, then a line of {long} bytes");
            assert_eq!(got.rejects, rejects(&[("invalid_json", 1), ("too_large", 1)]), "{case}");
            assert_eq!(got.accepted, good.len() as i64, "{case}");
            assert_eq!(got.admitted, good, "{case}");
            assert_eq!(got.letters.len(), 2, "{case}: {:?}", got.letters);
            let (reason, at, payload) = &got.letters[0];
            assert_eq!((reason.as_str(), *at), ("too_large", long_line), "{case}");
            assert!(*payload > 0 && *payload <= 64 * 1024, "{case}: a bounded prefix, not {payload} bytes");
            assert_eq!((got.letters[1].0.as_str(), got.letters[1].1), ("invalid_json", bad_line), "{case}");
            assert_eq!(got.lines_done, line, "{case}");
            assert_eq!(got.bytes_read, text.len() as u64, "{case}");
        }
    }

    #[test]
    fn an_overlong_last_line_without_a_newline_is_one_too_large_reject() {
        let mut text = event(1);
        text.push(b'\n');
        text.extend(std::iter::repeat_n(b'y', 4 * CHUNK_BYTES + 3));
        let got = replay(&text);
        assert_eq!(got.rejects, rejects(&[("too_large", 1)]));
        assert_eq!(got.admitted, vec![1]);
        assert_eq!(got.letters.iter().map(|l| (l.0.as_str(), l.1)).collect::<Vec<_>>(), vec![("too_large", 2)]);
        assert_eq!(got.lines_done, 2);
    }

    #[test]
    fn blank_lines_are_counted_but_not_dead_lettered() {
        // Lines 2, 3, 4 and 7 are blank (empty, spaces, a tab and a CR); CRLF endings and the
        // newline that ends the file are not blank lines.
        let mut text = Vec::new();
        for (i, line) in [
            event(1),
            b"".to_vec(),
            b"   ".to_vec(),
            b"\t\r".to_vec(),
            [event(5), b"\r".to_vec()].concat(),
            [event(6), b"\r".to_vec()].concat(),
            b"\r".to_vec(),
            event(8),
        ]
        .into_iter()
        .enumerate()
        {
            let _ = i;
            text.extend(line);
            text.push(b'\n');
        }
        let got = replay(&text);
        assert_eq!(got.rejects, rejects(&[("blank", 4)]));
        assert_eq!(got.admitted, vec![1, 5, 6, 8]);
        assert!(got.letters.is_empty(), "blank lines fill no dead letters: {:?}", got.letters);
        assert_eq!(got.lines_done, 8);

        // The last line without a newline; a blank one at the end is still a line.
        let got = replay(&[event(1), b"\n".to_vec(), event(2)].concat());
        assert_eq!((got.rejects.len(), got.admitted.clone()), (0, vec![1, 2]));
        let got = replay(&[event(1), b"\n\n".to_vec()].concat());
        assert_eq!((got.rejects, got.admitted), (rejects(&[("blank", 1)]), vec![1]));
        let got = replay(&[event(1), b"\r\n  ".to_vec()].concat());
        assert_eq!((got.rejects, got.admitted), (rejects(&[("blank", 1)]), vec![1]));
        let got = replay(b"");
        assert_eq!((got.rejects.len(), got.lines_done), (0, 0));
    }

    /// Many blank lines across chunk boundaries: each counted once.
    #[test]
    fn blank_lines_across_chunks_are_each_counted_once() {
        let mut text = Vec::new();
        let mut good = Vec::new();
        for line in 1..=300_000u64 {
            if line % 3 == 0 {
                text.extend_from_slice(if line % 2 == 0 { b"  \r\n" } else { b"\n" });
            } else {
                text.extend(event(line));
                text.extend_from_slice(b"\r\n");
                good.push(line);
            }
        }
        let got = replay(&text);
        assert_eq!(got.rejects, rejects(&[("blank", 100_000)]));
        assert_eq!(got.admitted, good);
        assert_eq!(got.lines_done, 300_000);
    }
}
