//! The funnels an engine computes: from config at start, then added through the API and kept in
//! `state_dir/funnels.json`. Ingestion picks up new ones between epochs.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::funnels::{Funnel, FunnelDef, MAX_FUNNELS};

/// Writes durably: a temporary file, synced, renamed, and the directory synced (snapshots that
/// refer to a funnel must not outlive its definition).
fn save(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("a funnel named `{0}` exists already; choose another name")]
    Exists(String),
    #[error("{0}")]
    Store(String),
}

/// The funnels of the engine: from config at start, then added through the API. Ingestion picks
/// up new ones between epochs and computes them over the events it still keeps.
#[derive(Default)]
pub struct FunnelRegistry {
    funnels: RwLock<Vec<std::sync::Arc<Funnel>>>,
    version: AtomicU64,
    /// Funnels from config (the rest were added at run time and are persisted).
    from_config: AtomicU64,
    /// Where run-time funnels are kept across restarts (`state_dir/funnels.json`).
    store: Mutex<Option<std::path::PathBuf>>,
}

impl FunnelRegistry {
    pub fn new(defs: &[FunnelDef]) -> Result<FunnelRegistry, String> {
        let registry = FunnelRegistry::default();
        for def in defs {
            registry.insert(def.clone())?;
        }
        registry.from_config.store(defs.len() as u64, Ordering::Release);
        Ok(registry)
    }

    /// Keeps funnels added at run time in `path`, and adds the ones a previous run kept there
    /// (after the config's, in the order they were added, so results in snapshots line up).
    pub fn persist(&self, path: std::path::PathBuf) -> Result<usize, String> {
        let mut added = 0;
        match std::fs::read(&path) {
            Ok(bytes) => {
                let defs: Vec<FunnelDef> = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: not a list of funnels ({e}); fix or remove it", path.display()))?;
                for def in defs {
                    let name = def.name.clone();
                    match self.insert(def) {
                        Ok(_) => added += 1,
                        // The config now defines it: the config wins.
                        Err(_) if self.get(&name).is_some() => {}
                        Err(e) => return Err(format!("{}: {e}", path.display())),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
        *self.store.lock() = Some(path);
        Ok(added)
    }

    /// Adds a funnel at run time. With a store, it is saved first: a funnel the engine computes
    /// is one that a restart brings back.
    pub fn add(&self, def: FunnelDef) -> Result<std::sync::Arc<Funnel>, RegistryError> {
        let funnel = std::sync::Arc::new(Funnel::new(def).map_err(RegistryError::Invalid)?);
        let store = self.store.lock();
        let mut funnels = self.funnels.write();
        if funnels.iter().any(|f| f.def.name == funnel.def.name) {
            return Err(RegistryError::Exists(funnel.def.name.clone()));
        }
        if funnels.len() >= MAX_FUNNELS {
            return Err(RegistryError::Invalid(format!(
                "{MAX_FUNNELS} funnels are defined, the most one engine keeps"
            )));
        }
        if let Some(path) = store.as_ref() {
            let skip = self.from_config.load(Ordering::Acquire) as usize;
            let mut defs: Vec<&FunnelDef> = funnels.iter().skip(skip).map(|f| &f.def).collect();
            defs.push(&funnel.def);
            save(path, &serde_json::to_vec_pretty(&defs).expect("serialisable"))
                .map_err(|e| RegistryError::Store(format!("cannot save the funnel to {}: {e}", path.display())))?;
        }
        funnels.push(funnel.clone());
        self.version.fetch_add(1, Ordering::Release);
        Ok(funnel)
    }

    /// Adds a funnel from config or the store; its name must be new.
    fn insert(&self, def: FunnelDef) -> Result<std::sync::Arc<Funnel>, String> {
        let funnel = std::sync::Arc::new(Funnel::new(def)?);
        let mut funnels = self.funnels.write();
        if funnels.iter().any(|f| f.def.name == funnel.def.name) {
            return Err(RegistryError::Exists(funnel.def.name.clone()).to_string());
        }
        if funnels.len() >= MAX_FUNNELS {
            return Err(format!("more than {MAX_FUNNELS} funnels; remove some"));
        }
        funnels.push(funnel.clone());
        self.version.fetch_add(1, Ordering::Release);
        Ok(funnel)
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn all(&self) -> Vec<std::sync::Arc<Funnel>> {
        self.funnels.read().clone()
    }

    /// Index and funnel by name.
    pub fn get(&self, name: &str) -> Option<(u32, std::sync::Arc<Funnel>)> {
        self.funnels.read().iter().enumerate().find(|(_, f)| f.def.name == name).map(|(i, f)| (i as u32, f.clone()))
    }

    pub fn names(&self) -> Vec<String> {
        self.funnels.read().iter().map(|f| f.def.name.clone()).collect()
    }
}
