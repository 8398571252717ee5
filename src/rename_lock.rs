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
//!
//! Who takes it: every core entry point that builds paths takes `paths()`
//! itself, first thing (it nests, and is free under this thread's own
//! commit), so no FUSE handler has to. unlink, rmdir and rename take
//! `commit()` for their last step, never while holding `paths()`.
//!
//! Lock order, for the whole crate (take left before right, never back):
//!   rename lock (paths or commit)
//!   -> Node::copy_up_lock (one at a time: a parent is copied up before
//!      the child's is taken)
//!   -> Splits::naming (a lookup picking a split id for a name)
//!   -> NodeTable shard (dashmap) -> Node::state (RwLock)
//!   -> Ghosts slot (ghost.rs), WorkDir/InoMap/Handles/Splits maps (leaves).
//! A `Node::state` guard is never held across a call that may take a
//! table shard or another node's state (intern, forget, copy_up).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

const SHARDS: usize = 32;

pub struct RenameLock {
    shards: [RwLock<()>; SHARDS],
}

/// Held while a request resolves and uses paths (empty under a commit:
/// the committing thread already excludes every other).
pub struct PathGuard<'a>(#[allow(dead_code)] Option<RwLockReadGuard<'a, ()>>);

thread_local! {
    /// Path guards this thread holds.
    static HELD: Cell<usize> = const { Cell::new(0) };
    /// Whether this thread holds the commit.
    static COMMITTING: Cell<bool> = const { Cell::new(false) };
}

impl Drop for PathGuard<'_> {
    fn drop(&mut self) {
        if self.0.is_some() {
            HELD.with(|h| h.set(h.get() - 1));
        }
    }
}

/// Held while a rename or removal changes the upper dir and the aliases.
pub struct RenameGuard<'a>(#[allow(dead_code)] Vec<RwLockWriteGuard<'a, ()>>);

impl Drop for RenameGuard<'_> {
    fn drop(&mut self) {
        COMMITTING.with(|c| c.set(false));
    }
}

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
        if COMMITTING.with(|c| c.get()) {
            return PathGuard(None);
        }
        HELD.with(|h| h.set(h.get() + 1));
        PathGuard(Some(self.shards[my_shard()].read_recursive()))
    }

    /// Waits for requests in flight on other paths, including copy-ups.
    /// Must not be called while this thread holds a PathGuard.
    pub fn commit(&self) -> RenameGuard<'_> {
        debug_assert_eq!(
            HELD.with(|h| h.get()),
            0,
            "commit under a path guard deadlocks"
        );
        let g = RenameGuard(self.shards.iter().map(|s| s.write()).collect());
        COMMITTING.with(|c| c.set(true));
        g
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

    #[test]
    fn path_guards_nest_and_are_free_under_the_own_commit() {
        let l = RenameLock::default();
        {
            let _a = l.paths();
            let _b = l.paths();
        }
        let c = l.commit();
        // Would deadlock if it took a shard the commit holds.
        drop(l.paths());
        drop(c);
        let _g = l.paths();
        assert_eq!(HELD.with(|h| h.get()), 1);
    }
}
