//! Retention at the end of a run drops the versions beyond
//! `keep_versions`; LMDB frees a version's pages by reading its branch
//! pages (and its first leaf), not its leaves. An old version's pages have
//! often left the page cache by then: on the 2-vCPU test machine the cache
//! gave back 20 MB of a 220 MB store in 45 s with 21 GB of memory free,
//! and the drop of a 1M-entry version, the run's last step after the flip,
//! waited on the disk for 5-50 ms. [`Store::warm_retention`] reads those
//! pages into the page cache while the run scores, where a wait on the
//! disk costs the run nothing.
//!
//! The pages are read with `pread` from `data.mdb`, outside any
//! transaction (a long read transaction would keep the run's commits from
//! reusing freed pages), and parsed as LMDB 0.9 lays out a branch page: a
//! page freed and written again meanwhile may hold anything, and a page
//! that does not parse ends the walk. Nothing is written and nothing read
//! here is trusted: at worst the drop reads from the disk as before.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::keys::{KEY_LIVE, KEY_PREVIOUS, version_db};
use super::lmdb::Tree;
use super::{Error, Result, Retention, Store};

/// At most this many pages are read ahead for one run's retention (256 MiB
/// of 4 KiB pages; a version of 500M entries has about 25k branch pages).
pub const MAX_WARM_PAGES: u64 = 1 << 16;

/// LMDB's page header: page number (8 bytes), pad, flags, lower and upper
/// bounds of the free space (2 bytes each); the node offsets follow.
const PAGE_HEADER: usize = 16;
/// The page kinds among a page's flags (branch, leaf, overflow, meta).
const KIND_FLAGS: u16 = 0x01 | 0x02 | 0x04 | 0x08;
const P_BRANCH: u16 = 0x01;

impl Store {
    /// Reads into the page cache the pages retention will read to drop the
    /// versions it lets go once version `new` is live (see the module's
    /// comment); how many pages were read. `building` versions are left
    /// alone, as a running coordinator's retention leaves them.
    pub fn warm_retention(&self, keep: usize, new: u64) -> Result<u64> {
        let r = Retention::now(keep);
        let trees = self.read(|txn| {
            let live = self.get_u64(txn, KEY_LIVE)?;
            let previous = self.get_u64(txn, KEY_PREVIOUS)?;
            // After the flip `new` is live and the live one before it (if
            // any) is the previous one.
            let gone = self.gc_candidates(txn, &r, Some(new), live.or(previous), false)?;
            let mut trees = Vec::with_capacity(gone.len());
            for v in gone {
                let name = version_db(v);
                if let Some(tree) = txn
                    .tree(&name)
                    .map_err(|e| self.lmdb(format!("find the pages of {name}"), e))?
                {
                    trees.push(tree);
                }
            }
            Ok(trees)
        })?;
        if trees.is_empty() {
            return Ok(0);
        }
        let path = self.inner.dir.join("data.mdb");
        let file = File::open(&path).map_err(|source| Error::Io {
            path: self.inner.dir.clone(),
            context: "open data.mdb to read ahead for retention".into(),
            source,
        })?;
        let mut read = 0;
        for tree in trees {
            read += warm_tree(&file, tree, MAX_WARM_PAGES - read);
        }
        Ok(read)
    }
}

/// Reads `tree`'s branch pages, level by level, and its first leaf (where
/// LMDB's drop goes down first), at most `budget` pages; how many were
/// read.
fn warm_tree(file: &File, tree: Tree, budget: u64) -> u64 {
    let mut page = vec![0u8; tree.page_size];
    let mut level = vec![tree.root];
    let mut read = 0;
    for depth in 1..=tree.depth {
        let mut next = Vec::new();
        for &number in &level {
            let Some(at) = number.checked_mul(tree.page_size as u64) else {
                return read;
            };
            if read >= budget || file.read_exact_at(&mut page, at).is_err() {
                return read;
            }
            read += 1;
            if depth == tree.depth {
                return read; // the first leaf
            }
            if !children(&page, &mut next) {
                return read;
            }
        }
        level = next;
    }
    read
}

/// Appends the child page numbers of branch page `page`; false when it
/// is not a well-formed branch page.
fn children(page: &[u8], out: &mut Vec<u64>) -> bool {
    let half = |at: usize| {
        page.get(at..at + 2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
    };
    let (Some(flags), Some(lower), Some(upper)) = (half(10), half(12), half(14)) else {
        return false;
    };
    let (lower, upper) = (usize::from(lower), usize::from(upper));
    if flags & KIND_FLAGS != P_BRANCH || lower < PAGE_HEADER || lower > upper || upper > page.len()
    {
        return false;
    }
    for i in 0..(lower - PAGE_HEADER) / 2 {
        // A node: the child's page number in three halves (low, high,
        // top), then the key's size and the key.
        let node = half(PAGE_HEADER + 2 * i).map(usize::from);
        let halves = node.and_then(|n| Some((half(n)?, half(n + 2)?, half(n + 4)?)));
        let Some((low, high, top)) = halves.filter(|_| node >= Some(upper)) else {
            return false;
        };
        out.push(u64::from(low) | u64::from(high) << 16 | u64::from(top) << 32);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EntityIds, Predictions};
    use crate::store::Status;
    use crate::store::commit::tests::new_version;

    /// A version of `rows` entries, validated and flipped live.
    fn live_version(store: &Store, rows: u64) -> u64 {
        let v = new_version(store, rows);
        let ids = EntityIds::Int((0..rows).collect());
        let preds = Predictions::Scores {
            width: 1,
            values: vec![0.5; rows as usize],
        };
        assert!(store.commit_chunk(v, 0..rows, &ids, &preds, 0).unwrap());
        store
            .update_record(v, |r| r.status = Status::Validated)
            .unwrap();
        store.flip(v).unwrap();
        v
    }

    fn tree(store: &Store, v: u64) -> Tree {
        store
            .read(|txn| Ok(txn.tree(&version_db(v)).unwrap().unwrap()))
            .unwrap()
    }

    #[test]
    fn the_versions_retention_will_drop_have_their_branch_pages_and_first_leaf_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // 60k entries: more leaves than one branch page holds, so depth 3.
        let old: Vec<u64> = (0..3).map(|_| live_version(&store, 60_000)).collect();
        let t = tree(&store, old[0]);
        assert_eq!(t.depth, 3, "{t:?}");
        assert!(t.branch_pages > 1, "{t:?}");
        let new = live_version(&store, 10);
        // Keeping 3 with v4 live: v1 goes (v3 is the one live before v4).
        assert_eq!(
            store.warm_retention(3, new).unwrap(),
            t.branch_pages + 1,
            "every branch page of v{} and its first leaf",
            old[0]
        );
        // Keeping 2: v1 and v2 go.
        let t2 = tree(&store, old[1]);
        assert_eq!(
            store.warm_retention(2, new).unwrap(),
            t.branch_pages + 1 + t2.branch_pages + 1
        );
        // Keeping 4: nothing goes, nothing is read.
        assert_eq!(store.warm_retention(4, new).unwrap(), 0);
        // And retention then drops what was read ahead for.
        assert_eq!(store.gc(3).unwrap(), vec![old[0]]);
    }

    #[test]
    fn a_page_that_is_not_a_branch_page_ends_the_walk() {
        let mut page = vec![0u8; 4096];
        let mut out = Vec::new();
        assert!(!children(&page, &mut out), "zeros are no branch page");
        // A branch page with one node at 4088 pointing at page 0x1_0002_0003.
        page[10..12].copy_from_slice(&P_BRANCH.to_ne_bytes());
        page[12..14].copy_from_slice(&18u16.to_ne_bytes());
        page[14..16].copy_from_slice(&4088u16.to_ne_bytes());
        page[16..18].copy_from_slice(&4088u16.to_ne_bytes());
        for (at, half) in [(4088, 3u16), (4090, 2), (4092, 1)] {
            page[at..at + 2].copy_from_slice(&half.to_ne_bytes());
        }
        assert!(children(&page, &mut out));
        assert_eq!(out, [0x1_0002_0003]);
        // A node offset inside the header or past the page, a lower bound
        // past the upper one, a leaf's flags: not parsed.
        for (at, bad) in [(16, 8u16), (16, 4095), (12, 4090), (10, 0x02)] {
            let mut broken = page.clone();
            broken[at..at + 2].copy_from_slice(&bad.to_ne_bytes());
            assert!(!children(&broken, &mut Vec::new()), "byte {at} = {bad}");
        }
    }
}
