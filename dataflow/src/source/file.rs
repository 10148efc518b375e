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
use crate::decode::{decode, Decoded};
use crate::ingest::Ingest;
use crate::reject::Rejection;
use crate::timekeeper::Watermark;

const CHUNK_BYTES: usize = 1 << 20;

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
    bytes: Vec<u8>,
}

impl Reader {
    /// The next run of whole lines, about [`CHUNK_BYTES`] long, read in blocks into a recycled
    /// buffer. The bytes after the last newline wait in `carry` for the next chunk; a run with no
    /// newline at all is passed on as it is (a piece of an overlong line, rejected by the decoder),
    /// so memory stays bounded whatever the input.
    fn next_chunk(&mut self, mut bytes: Vec<u8>) -> std::io::Result<Option<Chunk>> {
        bytes.clear();
        bytes.append(&mut self.carry);
        while !self.eof && bytes.len() < CHUNK_BYTES {
            let filled = bytes.len();
            bytes.resize(filled + CHUNK_BYTES, 0);
            let n = match self.input.read(&mut bytes[filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    bytes.truncate(filled);
                    return Err(e);
                }
            };
            bytes.truncate(filled + n);
            self.eof = n == 0;
        }
        if !self.eof {
            if let Some(last) = memchr_last(&bytes) {
                self.carry.extend_from_slice(&bytes[last + 1..]);
                bytes.truncate(last + 1);
            }
        }
        if bytes.is_empty() {
            return Ok(None);
        }
        // A chunk that ends inside a cut long line continues that line's number in the next one.
        let lines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
        let chunk = Chunk { index: self.next_index, first_line: self.next_line, bytes };
        self.next_index += 1;
        self.next_line += lines;
        Ok(Some(chunk))
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
        let lines: Vec<(u64, &[u8])> = chunk
            .bytes
            .split(|b| *b == b'\n')
            .enumerate()
            .map(|(i, line)| (chunk.first_line + i as u64, line.strip_suffix(b"\r").unwrap_or(line)))
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .collect();
        let mut decoded = recycle(std::mem::take(&mut self.decoded));
        decoded.extend(lines.iter().map(|(_, line)| ingest.prepare(decode(line, now))));
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
            self.shared.bytes_read.fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
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
        status.set_partition(self.shared.name.clone(), PartitionProgress { position, high_watermark: None });
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
    fn an_overlong_line_is_cut_into_bounded_pieces_that_keep_its_number() {
        let mut text = vec![b'x'; 5 * CHUNK_BYTES + 17];
        text.extend_from_slice(b"\nnext\n");
        let got = chunks(reader(text));
        let (last_first, last_lines) = got.last().unwrap();
        assert_eq!(last_lines.last().unwrap(), b"next");
        assert_eq!(*last_first + last_lines.len() as u64 - 1, 2, "the line after the long one is line 2");
        assert!(got.iter().rev().skip(1).all(|(first, _)| *first == 1), "every piece is line 1");
    }
}
