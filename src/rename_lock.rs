//! The rename lock. Every layer I/O goes by a path built from the node
//! aliases, and a rename or a removal changes the upper dir and the
//! aliases in two steps. A request that built a path between the two would
//! reach a stale or a different object, or the whiteout left behind. VFS
//! locking does not prevent that here: it does not lock a dir renamed
//! within its parent, nor anything below it, and an open or getattr of a
//! file being unlinked takes no lock at all.
//!
//! So requests that resolve paths hold one shard shared, and the commit
//! step of a rename, unlink or rmdir holds every shard exclusively. Shards
//! are picked per thread, so requests never contend with each other.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

const SHARDS: usize = 32;

pub struct RenameLock {
    shards: [RwLock<()>; SHARDS],
}

/// Held while a request resolves and uses paths.
pub struct PathGuard<'a>(#[allow(dead_code)] RwLockReadGuard<'a, ()>);

thread_local!(static HELD: Cell<usize> = const { Cell::new(0) });

impl Drop for PathGuard<'_> {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get() - 1));
    }
}

/// Held while a rename or removal changes the upper dir and the aliases.
pub struct RenameGuard<'a>(#[allow(dead_code)] Vec<RwLockWriteGuard<'a, ()>>);

fn my_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SHARD: Cell<usize> = const { Cell::new(usize::MAX) });
    SHARD.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS);
        }
        s.get()
    })
}

impl Default for RenameLock {
    fn default() -> Self {
        RenameLock {
            shards: std::array::from_fn(|_| RwLock::new(())),
        }
    }
}

impl RenameLock {
    /// Recursive, so a request may nest (e.g. readdirplus into lookup)
    /// without deadlocking against a waiting rename.
    pub fn paths(&self) -> PathGuard<'_> {
        HELD.with(|h| h.set(h.get() + 1));
        PathGuard(self.shards[my_shard()].read_recursive())
    }

    /// Waits for requests in flight on other paths, including copy-ups.
    /// Must not be called while this thread holds a PathGuard.
    pub fn commit(&self) -> RenameGuard<'_> {
        debug_assert_eq!(
            HELD.with(|h| h.get()),
            0,
            "commit under a path guard deadlocks"
        );
        RenameGuard(self.shards.iter().map(|s| s.write()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn a_rename_waits_for_path_users_and_blocks_new_ones() {
        let l = Arc::new(RenameLock::default());
        let committing = Arc::new(AtomicBool::new(false));
        let g = l.paths();
        let (l2, c2) = (l.clone(), committing.clone());
        let t = std::thread::spawn(move || {
            let w = l2.commit();
            c2.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            c2.store(false, Ordering::SeqCst);
            drop(w);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !committing.load(Ordering::SeqCst),
            "rename ran under a path user"
        );
        drop(g);
        let t0 = Instant::now();
        while !committing.load(Ordering::SeqCst) {
            assert!(t0.elapsed() < Duration::from_secs(10), "rename never ran");
            std::thread::yield_now();
        }
        // Another thread's path use starts only after the commit.
        let (l3, c3) = (l.clone(), committing.clone());
        let saw = std::thread::spawn(move || {
            let _g = l3.paths();
            c3.load(Ordering::SeqCst)
        });
        assert!(!saw.join().unwrap(), "a path user ran during the commit");
        t.join().unwrap();
    }
}
