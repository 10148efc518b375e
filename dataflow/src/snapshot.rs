//! Recovery state: per worker, its ledger (the whole state of the views it fed) together with its
//! partitions' clocks and next offsets, written atomically. After a crash the worker re-inserts the
//! ledger and resumes reading exactly where the snapshot was taken: nothing lost, nothing twice.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::ingest::Ledger;
use crate::source::Checkpoint;

/// 2: partition state with sessions and user logs; ledger with session and funnel cells.
const FORMAT: u32 = 2;

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
pub fn save(
    dir: &Path,
    worker: usize,
    peers: usize,
    ledger: &Ledger,
    checkpoint: &Checkpoint,
) -> Result<(), SnapshotError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| SnapshotError::Io { path, error }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(file_name(worker, peers));
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp).map_err(io(&tmp))?;
    let mut out = BufWriter::new(file);
    bincode::serialize_into(&mut out, &Written { format: FORMAT, ledger, checkpoint })
        .map_err(|e| SnapshotError::Io { path: tmp.clone(), error: std::io::Error::other(e) })?;
    let file = out.into_inner().map_err(|e| SnapshotError::Io { path: tmp.clone(), error: e.into_error() })?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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
