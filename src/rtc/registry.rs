//! The rooms that exist right now. A room is created by its first join and removed by
//! its actor when the last participant leaves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::actor::{spawn_room, RoomHandle};
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Rooms {
    inner: Arc<Mutex<HashMap<String, RoomHandle>>>,
    generations: Arc<AtomicU64>,
    max_participants: usize,
    pub metrics: Arc<Metrics>,
}

impl Rooms {
    pub fn new(max_participants: usize, metrics: Arc<Metrics>) -> Self {
        Rooms {
            inner: Arc::default(),
            generations: Arc::new(AtomicU64::new(1)),
            max_participants,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomHandle>> {
        // A panic elsewhere must not take the registry down with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get_or_create(&self, name: &str) -> RoomHandle {
        let mut rooms = self.lock();
        if let Some(h) = rooms.get(name) {
            return h.clone();
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let h = spawn_room(
            name,
            generation,
            self.max_participants,
            self.clone(),
            self.metrics.clone(),
        );
        rooms.insert(name.to_string(), h.clone());
        h
    }

    /// Removes the room if it is still the same generation (not a newer room of that name).
    pub fn remove_if(&self, name: &str, generation: u64) -> bool {
        let mut rooms = self.lock();
        match rooms.get(name) {
            Some(h) if h.generation == generation => {
                rooms.remove(name);
                true
            }
            _ => false,
        }
    }

    pub fn list(&self) -> Vec<RoomHandle> {
        let mut v: Vec<RoomHandle> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}
