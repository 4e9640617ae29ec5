//! Taking turns on the home's store, inside a process and across processes.
//!
//! sled lets one process open a database, and several `nook` processes share a home
//! (a `read --follow` beside a `send`). So the store is held only for the length of
//! one operation: across processes the home's file lock queues them; inside a process
//! (the chat screen's follow and send tasks) an async gate does, without blocking a
//! thread. Opening the store costs ~10 ms (sled), so an open store is kept for
//! [`STORE_IDLE`] after its last use and handed to the next operation; after that it
//! is closed, which lets other processes take the home.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::store::{Home, Store, StoreError};

/// How long an idle open store is kept.
pub const STORE_IDLE: Duration = Duration::from_millis(250);

/// The turn-taking of one [`crate::Client`] and its clones.
#[derive(Debug, Clone)]
pub(crate) struct Leases {
    home: Home,
    gate: Arc<tokio::sync::Mutex<()>>,
    cache: Arc<Mutex<IdleStore>>,
}

/// The store kept open between two operations.
#[derive(Debug, Default)]
struct IdleStore {
    store: Option<Store>,
    /// Bumped at each return, so a closer only closes the store it was made for.
    generation: u64,
    /// The timer that closes the idle store; aborted when a newer one replaces it.
    closer: Option<tokio::task::JoinHandle<()>>,
}

/// The store, held by one operation until dropped.
pub(crate) struct StoreLease {
    /// Always `Some` until `drop` hands it back.
    store: Option<Store>,
    cache: Arc<Mutex<IdleStore>>,
    _gate: tokio::sync::OwnedMutexGuard<()>,
}

/// A poisoned lock only means another task panicked while holding it; the idle store
/// it guards is still whole (at worst an open store is closed late).
fn lock(m: &Mutex<IdleStore>) -> MutexGuard<'_, IdleStore> {
    match m.lock() {
        Ok(c) => c,
        Err(p) => p.into_inner(),
    }
}

impl Leases {
    pub(crate) fn new(home: Home) -> Leases {
        Leases {
            home,
            gate: Arc::new(tokio::sync::Mutex::new(())),
            cache: Arc::new(Mutex::new(IdleStore::default())),
        }
    }

    pub(crate) fn home(&self) -> &Home {
        &self.home
    }

    /// Waits for this process's turn, then for the home's lock (unless the store is
    /// still open from the last turn).
    pub(crate) async fn take(&self) -> Result<StoreLease, StoreError> {
        let gate = self.gate.clone().lock_owned().await;
        let cached = lock(&self.cache).store.take();
        let store = match cached {
            Some(s) => s,
            None => self.home.open()?,
        };
        Ok(StoreLease {
            store: Some(store),
            cache: self.cache.clone(),
            _gate: gate,
        })
    }

    /// Closes the store now if no operation holds it.
    pub(crate) fn close_idle(&self) {
        let idle = {
            let mut c = lock(&self.cache);
            c.generation += 1;
            c.store.take()
        };
        drop(idle);
    }
}

impl std::ops::Deref for StoreLease {
    type Target = Store;
    fn deref(&self) -> &Store {
        match &self.store {
            Some(s) => s,
            None => unreachable!("the store is taken only when the lease drops"),
        }
    }
}

impl Drop for StoreLease {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let mut cache = lock(&self.cache);
        cache.generation += 1;
        let generation = cache.generation;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                cache.store = Some(store);
                let shared = self.cache.clone();
                let closer = runtime.spawn(async move {
                    tokio::time::sleep(STORE_IDLE).await;
                    let idle = {
                        let mut c = lock(&shared);
                        if c.generation == generation {
                            c.store.take()
                        } else {
                            None
                        }
                    };
                    drop(idle);
                });
                if let Some(old) = cache.closer.replace(closer) {
                    old.abort();
                }
            }
            // No runtime to close it later: close it now.
            Err(_) => drop(store),
        }
    }
}
