//! The models an API process keeps loaded for predictions: at most `--model-cache-mb` of
//! them (counted by the size of their files), the least recently used dropped first, so that
//! a service holding thousands of models serves the ones in use from memory without keeping
//! every model it ever served. Whether a model still exists is asked of the store on every
//! request, not of this cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::model::Model;

/// Loaded models by id, bounded by the bytes of their files.
pub type ModelCache = Cache<Model>;

/// Values by id, bounded by the bytes each is said to take.
pub struct Cache<T> {
    max_bytes: u64,
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    map: HashMap<String, Entry<T>>,
    bytes: u64,
    /// Counts uses: an entry's `used` is the tick of its last one.
    tick: u64,
}

struct Entry<T> {
    model: Arc<T>,
    bytes: u64,
    used: u64,
}

impl<T> Cache<T> {
    pub fn new(max_bytes: u64) -> Cache<T> {
        Cache {
            max_bytes,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                bytes: 0,
                tick: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The model, if loaded (it counts as used now).
    pub fn get(&self, id: &str) -> Option<Arc<T>> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let e = inner.map.get_mut(id)?;
        e.used = tick;
        Some(e.model.clone())
    }

    /// Keeps `model` (whose file has `bytes`), dropping the least recently used others until
    /// the cache fits; a model larger than the whole cache is kept alone, until the next.
    pub fn insert(&self, id: &str, model: Arc<T>, bytes: u64) {
        let mut inner = self.lock();
        inner.tick += 1;
        let used = inner.tick;
        if let Some(old) = inner
            .map
            .insert(id.to_string(), Entry { model, bytes, used })
        {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.bytes > self.max_bytes && inner.map.len() > 1 {
            let oldest = inner
                .map
                .iter()
                .filter(|(k, _)| k.as_str() != id)
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
                .expect("another entry");
            let e = inner.map.remove(&oldest).expect("present");
            inner.bytes -= e.bytes;
        }
    }

    /// Drops a model (deleted).
    pub fn remove(&self, id: &str) {
        let mut inner = self.lock();
        if let Some(e) = inner.map.remove(id) {
            inner.bytes -= e.bytes;
        }
    }

    /// How many models are loaded, and the bytes of their files.
    pub fn usage(&self) -> (usize, u64) {
        let inner = self.lock();
        (inner.map.len(), inner.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_model_goes_first_and_the_cache_stays_in_its_bytes() {
        let c = Cache::<u32>::new(100);
        let m = Arc::new(7);
        c.insert("m_a", m.clone(), 40);
        c.insert("m_b", m.clone(), 40);
        assert!(c.get("m_a").is_some()); // a used after b
        c.insert("m_c", m.clone(), 40);
        assert!(c.get("m_b").is_none(), "the least recently used stays");
        assert!(c.get("m_a").is_some() && c.get("m_c").is_some());
        assert_eq!(c.usage(), (2, 80));
        // The same id again replaces its entry and its bytes.
        c.insert("m_c", m.clone(), 50);
        assert_eq!(c.usage(), (2, 90));
        // One larger than the whole cache is kept, alone.
        c.insert("m_big", m.clone(), 500);
        assert_eq!(c.usage(), (1, 500));
        assert!(c.get("m_big").is_some());
        c.remove("m_big");
        c.remove("m_big");
        assert_eq!(c.usage(), (0, 0));
    }
}
