//! Definitions an engine computes (funnels, retention): from config at start, then added through
//! the API and kept in `state_dir/funnels.json` / `retention.json`. Ingestion picks up new ones between epochs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{de::DeserializeOwned, Serialize};

/// A validated definition that a registry holds.
pub trait Definition: Sized {
    type Def: Clone + Serialize + DeserializeOwned;
    /// What it is called in messages (`funnel`) and how many one engine computes.
    const KIND: &'static str;
    const MAX: usize;
    /// Where the API creates one.
    const ROUTE: &'static str;
    fn new(def: Self::Def) -> Result<Self, String>;
    fn def(&self) -> &Self::Def;
    fn name(&self) -> &str;
}

/// Writes durably: a temporary file, synced, renamed, and the directory synced (snapshots that
/// refer to a funnel must not outlive its definition).
pub fn save(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
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
    #[error("{0} exists already; choose another name")]
    Exists(String),
    #[error("{0}")]
    Store(String),
}

/// Names appear in URLs.
pub fn check_name(name: &str, kind: &str) -> Result<(), String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!("{kind} name `{name}`: use letters, digits, `_` and `-` (it appears in URLs)"));
    }
    Ok(())
}

fn exists<T: Definition>(name: &str) -> RegistryError {
    RegistryError::Exists(format!("a {} named `{name}`", T::KIND))
}

/// The definitions of one kind: from config at start, then added through the API. Ingestion picks
/// up new ones between epochs and computes them over the events it still keeps.
pub struct Registry<T> {
    items: RwLock<Vec<Arc<T>>>,
    version: AtomicU64,
    /// Definitions from config (the rest were added at run time and are persisted).
    from_config: AtomicU64,
    /// Where run-time definitions are kept across restarts.
    store: Mutex<Option<std::path::PathBuf>>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            items: RwLock::default(),
            version: AtomicU64::default(),
            from_config: AtomicU64::default(),
            store: Mutex::default(),
        }
    }
}

impl<T: Definition> Registry<T> {
    pub fn new(defs: &[T::Def]) -> Result<Registry<T>, String> {
        let registry = Registry::default();
        for def in defs {
            registry.insert(def.clone()).map_err(|e| e.to_string())?;
        }
        registry.from_config.store(defs.len() as u64, Ordering::Release);
        Ok(registry)
    }

    /// Keeps definitions added at run time in `path`, and adds the ones a previous run kept there
    /// (after the config's, in the order they were added, so results in snapshots line up).
    pub fn persist(&self, path: std::path::PathBuf) -> Result<usize, String> {
        let mut added = 0;
        match std::fs::read(&path) {
            Ok(bytes) => {
                let defs: Vec<T::Def> = serde_json::from_slice(&bytes).map_err(|e| {
                    format!("{}: not a list of {} definitions ({e}); fix or remove it", path.display(), T::KIND)
                })?;
                for def in defs {
                    match self.insert(def) {
                        Ok(_) => added += 1,
                        // The config now defines it: the config wins.
                        Err(RegistryError::Exists(_)) => {}
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

    /// Adds a definition at run time. With a store, it is saved first: what the engine computes
    /// is what a restart brings back.
    pub fn add(&self, def: T::Def) -> Result<Arc<T>, RegistryError> {
        let item = Arc::new(T::new(def).map_err(RegistryError::Invalid)?);
        let store = self.store.lock();
        let mut items = self.items.write();
        if items.iter().any(|f| f.name() == item.name()) {
            return Err(exists::<T>(item.name()));
        }
        if items.len() >= T::MAX {
            return Err(RegistryError::Invalid(format!(
                "{} {}s are defined, the most one engine keeps",
                T::MAX,
                T::KIND
            )));
        }
        if let Some(path) = store.as_ref() {
            let skip = self.from_config.load(Ordering::Acquire) as usize;
            let mut defs: Vec<&T::Def> = items.iter().skip(skip).map(|f| f.def()).collect();
            defs.push(item.def());
            save(path, &serde_json::to_vec_pretty(&defs).expect("serialisable"))
                .map_err(|e| RegistryError::Store(format!("cannot save the {} to {}: {e}", T::KIND, path.display())))?;
        }
        items.push(item.clone());
        self.version.fetch_add(1, Ordering::Release);
        Ok(item)
    }

    /// Adds a definition from config or the store; its name must be new.
    fn insert(&self, def: T::Def) -> Result<Arc<T>, RegistryError> {
        let item = Arc::new(T::new(def).map_err(RegistryError::Invalid)?);
        let mut items = self.items.write();
        if items.iter().any(|f| f.name() == item.name()) {
            return Err(exists::<T>(item.name()));
        }
        if items.len() >= T::MAX {
            return Err(RegistryError::Invalid(format!("more than {} {}s; remove some", T::MAX, T::KIND)));
        }
        items.push(item.clone());
        self.version.fetch_add(1, Ordering::Release);
        Ok(item)
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn all(&self) -> Vec<Arc<T>> {
        self.items.read().clone()
    }

    /// Index and definition by name.
    pub fn get(&self, name: &str) -> Option<(u32, Arc<T>)> {
        self.items.read().iter().enumerate().find(|(_, f)| f.name() == name).map(|(i, f)| (i as u32, f.clone()))
    }

    pub fn names(&self) -> Vec<String> {
        self.items.read().iter().map(|f| f.name().to_string()).collect()
    }
}

/// A worker's copy of a registry's list, taken again only when the registry changed (one atomic
/// load otherwise), so the per-event path never locks the registry.
pub struct Snapshot<T> {
    version: u64,
    list: Vec<Arc<T>>,
}

impl<T> Default for Snapshot<T> {
    fn default() -> Self {
        Snapshot { version: 0, list: Vec::new() }
    }
}

impl<T: Definition> Snapshot<T> {
    pub fn refresh(&mut self, registry: &Registry<T>) -> &[Arc<T>] {
        let version = registry.version();
        if version != self.version {
            self.version = version;
            self.list = registry.all();
        }
        &self.list
    }

    pub fn list(&self) -> &[Arc<T>] {
        &self.list
    }
}

/// Every kind of definition the engine computes: from config at start, added through the API,
/// entering the dataflow as an input. The API writes them; the engine and the read side read them.
pub struct Definitions {
    pub funnels: Arc<crate::funnels::FunnelRegistry>,
    pub retention: Arc<crate::retention::RetentionRegistry>,
    pub alerts: Arc<crate::alert_rules::AlertRegistry>,
}

impl Definitions {
    /// The definitions of a validated config.
    pub fn new(config: &crate::config::ViewConfig) -> Result<Definitions, String> {
        Ok(Definitions {
            funnels: Arc::new(Registry::new(&config.funnels)?),
            retention: Arc::new(Registry::new(&config.retention)?),
            alerts: Arc::new(Registry::new(&config.alerts.all_rules())?),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::funnels::{FunnelDef, FunnelRegistry, RegistryError};

    fn def(json: serde_json::Value) -> FunnelDef {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_registry_refuses_duplicates_and_persists_run_time_funnels() {
        let dir = std::env::temp_dir().join(format!("clickflow-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("funnels.json");
        let _ = std::fs::remove_file(&path);
        let f = |name: &str| def(serde_json::json!({"name": name, "steps": [{"event": "x"}, {"event": "y"}]}));
        let registry = FunnelRegistry::new(&[f("from_config")]).unwrap();
        assert_eq!(registry.persist(path.clone()).unwrap(), 0);
        registry.add(f("added")).unwrap();
        assert!(matches!(registry.add(f("added")), Err(RegistryError::Exists(_))));
        let restarted = FunnelRegistry::new(&[f("from_config")]).unwrap();
        assert_eq!(restarted.persist(path).unwrap(), 1);
        assert_eq!(restarted.names(), vec!["from_config", "added"]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
