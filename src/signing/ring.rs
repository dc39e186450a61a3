//! The signing keys of every tenant: one [`SigningKeys`] each, made when
//! the tenant first appears (at start, or in a reload before it is swapped
//! in) and kept on the schedule from then on.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{SigningError, SigningKeys};
use crate::config::{Config, SigningSettings};
use crate::crypto::DataKeys;
use crate::store::Store;

pub struct KeyRing {
    store: Arc<dyn Store>,
    data_keys: Arc<DataKeys>,
    settings: SigningSettings,
    /// By tenant name; the top level's under "".
    sets: RwLock<HashMap<String, Arc<SigningKeys>>>,
    top: Arc<SigningKeys>,
}

impl KeyRing {
    pub fn new(store: Arc<dyn Store>, data_keys: Arc<DataKeys>, settings: SigningSettings) -> Self {
        let top = Arc::new(SigningKeys::new(
            "",
            store.clone(),
            data_keys.clone(),
            settings.clone(),
        ));
        KeyRing {
            store,
            data_keys,
            settings,
            sets: RwLock::new(HashMap::from([(String::new(), top.clone())])),
            top,
        }
    }

    /// The keys of `tenant` (empty: the top level's); `None` for a tenant
    /// whose keys were never read ([`KeyRing::prepare`] reads them before
    /// a configuration naming it serves).
    pub fn of(&self, tenant: &str) -> Option<Arc<SigningKeys>> {
        if tenant.is_empty() {
            return Some(self.top.clone());
        }
        self.sets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .cloned()
    }

    /// Reads (and adds, when due) the keys of every tenant `config` names
    /// that has none here yet, the top level's included.
    pub async fn prepare(&self, config: &Config) -> Result<(), SigningError> {
        if self.top.snapshot.load().read_at.is_none() {
            self.top.refresh().await?;
        }
        for tenant in config.tenants.keys() {
            if self.of(tenant).is_some() {
                continue;
            }
            let keys = Arc::new(SigningKeys::new(
                tenant,
                self.store.clone(),
                self.data_keys.clone(),
                self.settings.clone(),
            ));
            keys.refresh().await?;
            self.sets
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(tenant.clone())
                .or_insert(keys);
        }
        Ok(())
    }

    /// Keeps every tenant's schedule until `stop` turns true.
    pub async fn keep(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let sets: Vec<Arc<SigningKeys>> = self
                .sets
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect();
            for keys in sets {
                keys.check().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.top.check_every()) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}
