//! Recovery state: per worker, its ledger (the whole state of the views it fed) together with its
//! partitions' clocks and next offsets, written atomically. After a crash the worker re-inserts the
//! ledger and resumes reading exactly where the snapshot was taken: nothing lost, nothing twice.

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde::Serialize;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::Mutex;

use crate::ingest::Ledger;
use crate::source::Checkpoint;

/// 3: partition state with sessions, user logs (with path nodes and edges) and retention state;
/// ledger with session, funnel, path and retention cells.
const FORMAT: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: unreadable snapshot ({error}); move it away to rebuild the views from Kafka")]
    Corrupt { path: PathBuf, error: String },
    #[error("{dir} holds snapshots of {found} workers, but {peers} are running; run with --workers {found} or empty the directory to rebuild from Kafka")]
    WorkerCount { dir: PathBuf, found: usize, peers: usize },
}

#[derive(Serialize)]
struct Written<'a> {
    format: u32,
    ledger: &'a Ledger,
    checkpoint: &'a Checkpoint,
}

pub struct WorkerSnapshot {
    pub ledger: Ledger,
    pub checkpoint: Checkpoint,
}

fn file_name(worker: usize, peers: usize) -> String {
    format!("worker-{worker}-of-{peers}.snap")
}

/// Writes to a temporary file, syncs it, then renames over the previous snapshot.
fn write(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| SnapshotError::Io { path, error }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes a worker's snapshots on a thread of its own: the worker only serialises them in memory;
/// the file write and fsync, which grow with the state (user logs), do not stall ingestion.
pub struct Writer {
    jobs: Option<mpsc::Sender<(u64, Vec<u8>)>>,
    /// 1 + the epoch of the last durable snapshot (0: none yet).
    durable: Arc<AtomicU64>,
    busy: Arc<AtomicBool>,
    failed: Arc<Mutex<Option<SnapshotError>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub fn new(dir: &Path, worker: usize, peers: usize) -> Writer {
        let (jobs, queue) = mpsc::channel::<(u64, Vec<u8>)>();
        let (durable, busy, failed) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(None)));
        let (dir, path) = (dir.to_path_buf(), dir.join(file_name(worker, peers)));
        let thread = {
            let (durable, busy, failed) = (durable.clone(), busy.clone(), failed.clone());
            std::thread::Builder::new()
                .name(format!("snapshot-{worker}"))
                .spawn(move || {
                    for (epoch, bytes) in queue {
                        match write(&dir, &path, &bytes) {
                            Ok(()) => durable.store(epoch + 1, Ordering::Release),
                            Err(e) => *failed.lock() = Some(e),
                        }
                        busy.store(false, Ordering::Release);
                    }
                })
                .expect("the snapshot thread starts")
        };
        Writer { jobs: Some(jobs), durable, busy, failed, thread: Some(thread) }
    }

    /// Starts writing the state as of `epoch`. Returns `false` (and writes nothing) while the
    /// previous snapshot is still being written, unless `wait`; then it waits for it.
    pub fn submit(
        &self,
        epoch: u64,
        ledger: &Ledger,
        checkpoint: &Checkpoint,
        wait: bool,
    ) -> Result<bool, SnapshotError> {
        while self.busy.load(Ordering::Acquire) {
            if !wait {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if let Some(e) = self.failed.lock().take() {
            return Err(e);
        }
        let bytes = bincode::serialize(&Written { format: FORMAT, ledger, checkpoint })
            .map_err(|e| SnapshotError::Corrupt { path: PathBuf::from("(in memory)"), error: e.to_string() })?;
        self.busy.store(true, Ordering::Release);
        self.jobs.as_ref().expect("open until finish").send((epoch, bytes)).expect("the snapshot thread lives");
        Ok(true)
    }

    /// Every snapshot of an epoch before this is durable.
    pub fn durable_before(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Waits for the last write; reports a failed one.
    pub fn finish(mut self) -> Result<(), SnapshotError> {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.failed.lock().take().map_or(Ok(()), Err)
    }
}

/// This worker's snapshot, if there is one.
pub fn load(dir: &Path, worker: usize, peers: usize) -> Result<Option<WorkerSnapshot>, SnapshotError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(None);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(found) =
            name.strip_suffix(".snap").and_then(|n| n.rsplit_once("-of-")).and_then(|(_, p)| p.parse::<usize>().ok())
        {
            if found != peers {
                return Err(SnapshotError::WorkerCount { dir: dir.to_path_buf(), found, peers });
            }
        }
    }
    let path = dir.join(file_name(worker, peers));
    let mut file = match File::open(&path) {
        Ok(f) => BufReader::new(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(SnapshotError::Io { path, error }),
    };
    // The format comes first (bincode: a little-endian u32): check it before decoding the rest,
    // which an older layout would decode into nonsense or fail on.
    let mut format = [0u8; 4];
    std::io::Read::read_exact(&mut file, &mut format)
        .map_err(|e| SnapshotError::Corrupt { path: path.clone(), error: e.to_string() })?;
    let format = u32::from_le_bytes(format);
    if format != FORMAT {
        return Err(SnapshotError::Corrupt {
            path,
            error: format!("format {format} is not {FORMAT} (written by another version of clickflow)"),
        });
    }
    let rest: (Ledger, Checkpoint) = bincode::deserialize_from(file)
        .map_err(|e| SnapshotError::Corrupt { path: path.clone(), error: e.to_string() })?;
    Ok(Some(WorkerSnapshot { ledger: rest.0, checkpoint: rest.1 }))
}
