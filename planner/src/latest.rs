//! [`Latest`]: a value that is replaced whole and read as a copy.

use std::sync::{PoisonError, RwLock};

/// A value replaced whole and read as a clone: a managed table's current
/// snapshot, a cached table's state. Every write is one assignment, so a panic
/// elsewhere while the lock was held cannot leave a half-written value; a
/// poisoned lock is used as it is instead of spreading the panic to every reader.
#[derive(Debug, Default)]
pub(crate) struct Latest<T>(RwLock<T>);

impl<T: Clone> Latest<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(RwLock::new(value))
    }

    pub(crate) fn get(&self) -> T {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = value;
    }

    /// Set `value` and return the one it replaced (one swap: concurrent
    /// replacements each see the value the other left).
    pub(crate) fn replace(&self, value: T) -> T {
        std::mem::replace(&mut *self.0.write().unwrap_or_else(PoisonError::into_inner), value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_reads_and_writes() {
        let latest = std::sync::Arc::new(Latest::new(1));
        let held = std::sync::Arc::clone(&latest);
        let panicked = std::thread::spawn(move || {
            let _guard = held.0.write();
            panic!("while holding the lock");
        })
        .join();
        assert!(panicked.is_err() && latest.0.is_poisoned());
        assert_eq!(latest.get(), 1);
        latest.set(2);
        assert_eq!(latest.get(), 2);
    }
}
