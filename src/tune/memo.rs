//! Compiled code shared by the candidates that differ only in how they run
//! (threads, split): the tuner compiles each code once.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::rc::{Rc, Weak};

use crate::error::Result;

/// Kernels compiled lately that a memo keeps alive, for the next
/// candidates that differ from them only in their run (the spaces list a
/// code's runs one after another, and a climb tries them as neighbours).
const RECENT: usize = 8;

/// The compiled code of each key that is still held (by a finalist, the
/// heuristic, or the [`RECENT`] last built).
pub(super) struct Memo<K, V> {
    held: RefCell<HashMap<K, Weak<V>>>,
    recent: RefCell<VecDeque<Rc<V>>>,
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Memo<K, V> {
        Memo { held: RefCell::default(), recent: RefCell::default() }
    }
}

impl<K: Eq + Hash, V> Memo<K, V> {
    /// The code of `key`: the one held, or the one `build` makes.
    pub(super) fn get_or_build(&self, key: K, build: impl FnOnce() -> Result<V>) -> Result<Rc<V>> {
        let held = self.held.borrow().get(&key).and_then(Weak::upgrade);
        let built = match held {
            Some(built) => built,
            None => {
                let built = Rc::new(build()?);
                let mut held = self.held.borrow_mut();
                held.retain(|_, b| b.strong_count() > 0);
                held.insert(key, Rc::downgrade(&built));
                built
            }
        };
        let mut recent = self.recent.borrow_mut();
        if !recent.iter().any(|b| Rc::ptr_eq(b, &built)) {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(Rc::clone(&built));
        }
        Ok(built)
    }
}
