//! The in-memory key space: binary-safe byte-string keys and values, ordered (a BTreeMap,
//! whose behaviour, unlike a randomly seeded hash map, is a function of its inputs only).

use super::log::Record;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

#[derive(Default)]
pub struct Store {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.map.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Applies one log record (used both for new writes and for replay at boot).
    pub fn apply(&mut self, record: &Record<'_>) {
        match *record {
            Record::Set(key, value) => {
                if let Some(v) = self.map.get_mut(key) {
                    v.clear();
                    v.extend_from_slice(value);
                } else {
                    self.map.insert(key.to_vec(), value.to_vec());
                }
            }
            Record::Del(key) => {
                self.map.remove(key);
            }
            Record::Clear => self.map.clear(),
        }
    }
}
