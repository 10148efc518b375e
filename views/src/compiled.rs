//! A worker's compiled copy of a registry's definitions (funnels, retention), rebuilt only when
//! the registry changed (one atomic load otherwise), so the per-event path never locks it.

use std::sync::Arc;

use schema::registry::{Definition, Registry};

pub struct Compiled<C> {
    version: u64,
    list: Vec<Arc<C>>,
}

impl<C> Default for Compiled<C> {
    fn default() -> Self {
        Compiled { version: 0, list: Vec::new() }
    }
}

impl<C> Compiled<C> {
    /// The current list, compiled with `compile` after a change (definitions in a registry are
    /// validated, so compiling them cannot fail).
    pub fn refresh<D: Definition>(
        &mut self,
        registry: &Registry<D>,
        compile: impl Fn(D::Def) -> Result<C, String>,
    ) -> &[Arc<C>] {
        let version = registry.version();
        if version != self.version {
            self.version = version;
            self.list = registry
                .all()
                .iter()
                .map(|d| Arc::new(compile(d.def().clone()).expect("registered definitions are valid")))
                .collect();
        }
        &self.list
    }

    pub fn list(&self) -> &[Arc<C>] {
        &self.list
    }
}
