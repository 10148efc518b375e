//! Recovery state: per worker, one file per snapshot label with every stateful part of that
//! worker at the label (its inputs' clocks and positions, its users' state, its cells, the clock)
//! and the cluster shape that wrote it. All workers snapshot at the same labels, so the files of
//! one label are the state of the whole engine after that epoch; a restart resumes the newest
//! label that every worker has written (they agree on it through the dataflow), and a label is
//! deleted only once a newer one is durable on every worker.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

/// 5: coordinated labels, parts by name, cluster shape and partition assignment in the header.
/// 6: per-key counts by minute.
/// 7: counted cells only in the read side's tables (worker 0's part `tables`).
const FORMAT: u32 = 7;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{path}: unreadable snapshot ({error}); move it away to rebuild the views from Kafka")]
    Corrupt { path: PathBuf, error: String },
    #[error("{dir} holds snapshots of {found} workers, but {peers} are running; run with the same --processes and --workers ({found} in all), or run with --fresh to rebuild the views from Kafka")]
    WorkerCount { dir: PathBuf, found: usize, peers: usize },
    #[error("{path} was written by {written}, but this engine is {now}; run with the shape it was written with, or with --fresh to rebuild the views from Kafka")]
    Shape { path: PathBuf, written: String, now: String },
}

/// The cluster as a snapshot records it: a restart with another shape cannot resume it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    pub processes: usize,
    /// Workers in all processes.
    pub workers: usize,
    /// The input partitions this worker reads, by name.
    pub assignment: Vec<String>,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts = if self.assignment.is_empty() { "none".to_string() } else { self.assignment.join(", ") };
        write!(
            f,
            "{} process(es) with {} workers in all, this worker reading partitions {parts}",
            self.processes, self.workers
        )
    }
}

/// A snapshot label: the run (one more after every restart) and the epoch within it
/// ([`views::snapshot::FINAL`] for the end of input).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Label {
    pub run: u64,
    pub epoch: u64,
}

impl Label {
    fn text(&self) -> String {
        match self.epoch {
            views::snapshot::FINAL => format!("{}-final", self.run),
            e => format!("{}-{e}", self.run),
        }
    }

    fn parse(text: &str) -> Option<Label> {
        let (run, epoch) = text.split_once('-')?;
        let epoch = if epoch == "final" { views::snapshot::FINAL } else { epoch.parse().ok()? };
        Some(Label { run: run.parse().ok()?, epoch })
    }
}

struct Header {
    shape: Shape,
    label: Label,
}

/// One worker's parts at one label.
pub struct WorkerSnapshot {
    pub label: Label,
    pub parts: BTreeMap<String, Vec<u8>>,
}

fn prefix(worker: usize, peers: usize) -> String {
    format!("worker-{worker}-of-{peers}.")
}

fn path_of(dir: &Path, worker: usize, peers: usize, label: Label) -> PathBuf {
    dir.join(format!("{}{}.snap", prefix(worker, peers), label.text()))
}

/// [`write_atomically`], tried again a few times over about eight seconds: a write can fail for
/// a moment (out of file descriptors under a flood of connections, a full disk being cleaned).
fn write_retrying(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let mut pause = std::time::Duration::from_millis(250);
    for _ in 0..5 {
        match write_atomically(dir, path, bytes) {
            Ok(()) => return Ok(()),
            Err(e) => tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "snapshot write failed"),
        }
        let _ = fs::remove_file(path.with_extension("tmp"));
        std::thread::sleep(pause);
        pause *= 2;
    }
    write_atomically(dir, path, bytes)
}

/// Writes to a temporary file, syncs it, then renames it into place and syncs the directory.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
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

fn read_header(path: &Path) -> Result<(Header, BufReader<File>), SnapshotError> {
    let corrupt = |error: String| SnapshotError::Corrupt { path: path.to_path_buf(), error };
    let mut file =
        BufReader::new(File::open(path).map_err(|error| SnapshotError::Io { path: path.to_path_buf(), error })?);
    // The format comes first (bincode: a little-endian u32): check it before decoding the rest,
    // which an older layout would decode into nonsense or fail on.
    let mut format = [0u8; 4];
    file.read_exact(&mut format).map_err(|e| corrupt(e.to_string()))?;
    let format = u32::from_le_bytes(format);
    if format != FORMAT {
        return Err(corrupt(format!("format {format} is not {FORMAT} (written by another version of clickflow)")));
    }
    let shape: Shape = bincode::deserialize_from(&mut file).map_err(|e| corrupt(e.to_string()))?;
    let label: Label = bincode::deserialize_from(&mut file).map_err(|e| corrupt(e.to_string()))?;
    Ok((Header { shape, label }, file))
}

/// The labels of this worker's snapshots in `dir`, checked against the engine's `shape`.
pub fn labels(dir: &Path, worker: usize, shape: &Shape) -> Result<Vec<Label>, SnapshotError> {
    let Ok(entries) = fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mine = prefix(worker, shape.workers);
    let mut labels = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".snap") else { continue };
        if let Some(found) = stem.split_once("-of-").and_then(|(_, rest)| rest.split('.').next()?.parse::<usize>().ok())
        {
            if found != shape.workers {
                return Err(SnapshotError::WorkerCount { dir: dir.to_path_buf(), found, peers: shape.workers });
            }
        }
        let Some(label) = stem.strip_prefix(&mine).and_then(Label::parse) else { continue };
        let (header, _) = read_header(&entry.path())?;
        if header.shape != *shape {
            let (written, now) = (header.shape.to_string(), shape.to_string());
            return Err(SnapshotError::Shape { path: entry.path(), written, now });
        }
        labels.push(label);
    }
    labels.sort();
    Ok(labels)
}

/// This worker's snapshot at `label`.
pub fn load(dir: &Path, worker: usize, peers: usize, label: Label) -> Result<WorkerSnapshot, SnapshotError> {
    let path = path_of(dir, worker, peers, label);
    let (header, file) = read_header(&path)?;
    let parts: BTreeMap<String, Vec<u8>> = bincode::deserialize_from(file)
        .map_err(|e| SnapshotError::Corrupt { path: path.clone(), error: e.to_string() })?;
    Ok(WorkerSnapshot { label: header.label, parts })
}

/// Deletes this worker's snapshots older than `label` (which is durable on every worker).
pub fn remove_before(dir: &Path, worker: usize, peers: usize, label: Label) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mine = prefix(worker, peers);
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = name.strip_suffix(".snap").and_then(|s| s.strip_prefix(&mine)).and_then(Label::parse);
        if old.is_some_and(|l| l < label) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

struct Queue {
    jobs: usize,
    failed: Option<SnapshotError>,
}

/// Writes one worker's snapshots on a thread of its own: the worker only serialises them in
/// memory; the file write and fsync, which grow with the state, do not stall ingestion. While a
/// write is in progress the worker skips labels (see `busy`), so at most one waits.
pub struct Writer {
    jobs: Option<mpsc::Sender<(Label, Vec<u8>)>>,
    /// 1 + the epoch of the newest durable snapshot of this run (0: none yet).
    durable: Arc<AtomicU64>,
    queue: Arc<(Mutex<Queue>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub fn new(dir: &Path, worker: usize, shape: Shape) -> Writer {
        let (jobs, incoming) = mpsc::channel::<(Label, Vec<u8>)>();
        let durable = Arc::new(AtomicU64::new(0));
        let queue = Arc::new((Mutex::new(Queue { jobs: 0, failed: None }), Condvar::new()));
        let thread = {
            let (dir, durable, queue, peers) = (dir.to_path_buf(), durable.clone(), queue.clone(), shape.workers);
            std::thread::Builder::new()
                .name(format!("snapshot-{worker}"))
                .spawn(move || {
                    for (label, bytes) in incoming {
                        let result = write_retrying(&dir, &path_of(&dir, worker, peers, label), &bytes);
                        let mut q = queue.0.lock();
                        match result {
                            Ok(()) => {
                                durable.store(label.epoch.saturating_add(1), Ordering::Release);
                                q.failed = None;
                            }
                            Err(e) => {
                                // The engine goes on: offsets are committed only for written
                                // snapshots, so a crash now replays from the last one.
                                tracing::error!(
                                    error = %e,
                                    "a snapshot could not be written; the views go on and the next snapshot tries again"
                                );
                                q.failed = Some(e);
                            }
                        }
                        q.jobs -= 1;
                        queue.1.notify_all();
                    }
                })
                .expect("the snapshot thread starts")
        };
        Writer { jobs: Some(jobs), durable, queue, thread: Some(thread) }
    }

    /// Whether a snapshot is being written (the worker skips the labels that come meanwhile).
    pub fn busy(&self) -> bool {
        self.queue.0.lock().jobs > 0
    }

    /// Queues this worker's parts at `label` for writing (waits while two are queued).
    pub fn submit(&self, shape: &Shape, label: Label, parts: &BTreeMap<&str, Vec<u8>>) {
        let mut q = self.queue.0.lock();
        while q.jobs >= 2 {
            self.queue.1.wait(&mut q);
        }
        let mut bytes = FORMAT.to_le_bytes().to_vec();
        let serialised = bincode::serialize_into(&mut bytes, shape)
            .and_then(|_| bincode::serialize_into(&mut bytes, &label))
            .and_then(|_| bincode::serialize_into(&mut bytes, parts));
        serialised.expect("snapshots serialise");
        q.jobs += 1;
        self.jobs.as_ref().expect("open until finish").send((label, bytes)).expect("the snapshot thread lives");
    }

    /// The newest epoch of this run whose snapshot is durable, if any.
    pub fn durable(&self) -> Option<u64> {
        self.durable.load(Ordering::Acquire).checked_sub(1)
    }

    /// Waits for the writes queued; reports the last one if it failed.
    pub fn finish(mut self) -> Result<(), SnapshotError> {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.queue.0.lock().failed.take().map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(workers: usize) -> Shape {
        Shape { processes: 1, workers, assignment: vec!["clicks/0".into()] }
    }

    #[test]
    fn labels_list_this_workers_snapshots_and_a_changed_shape_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::new(dir.path(), 0, shape(2));
        let parts: BTreeMap<&str, Vec<u8>> = [("users", vec![1, 2, 3])].into_iter().collect();
        for epoch in [50, 100, views::snapshot::FINAL] {
            writer.submit(&shape(2), Label { run: 0, epoch }, &parts);
        }
        writer.finish().unwrap();
        let labels = labels(dir.path(), 0, &shape(2)).unwrap();
        assert_eq!(labels.iter().map(|l| l.epoch).collect::<Vec<_>>(), vec![50, 100, views::snapshot::FINAL]);
        let snap = load(dir.path(), 0, 2, labels[1]).unwrap();
        assert_eq!(snap.parts["users"], vec![1, 2, 3]);
        remove_before(dir.path(), 0, 2, labels[2]);
        assert_eq!(super::labels(dir.path(), 0, &shape(2)).unwrap(), vec![labels[2]]);
        let moved = Shape { assignment: vec!["clicks/1".into()], ..shape(2) };
        let err = super::labels(dir.path(), 0, &moved).unwrap_err().to_string();
        assert!(err.contains("clicks/0") && err.contains("--fresh"), "{err}");
        let err = super::labels(dir.path(), 0, &shape(4)).unwrap_err().to_string();
        assert!(err.contains("2 are running") || err.contains("snapshots of 2 workers"), "{err}");
    }
}
