//! The live version's replies held in memory (`herd serve --preload MIB`).
//!
//! By default a GET walks the store's B-tree to its value and formats the
//! value's JSON (100 scores for a top-100 list). With `--preload`, a thread
//! of its own renders every prediction of the live version once, when that
//! version becomes live (at start, and after each flip, which the store
//! check notices within about a second), and keeps the JSON in memory; a
//! single-key read of the live version is then a hash lookup and a copy.
//! This is the trade Redis makes (the replies live in RAM), taken only when
//! asked for and only up to the memory given.
//!
//! Nothing served changes:
//! - every request still checks the live pointer (in a read transaction of
//!   its own, unless LMDB's last commit id is the one last seen with the
//!   pointer naming the held version: then nothing was committed since),
//!   and held replies answer only when it names the held version of the
//!   store open now: a flip is served from the next request on, from the
//!   store until the new version is held;
//! - a held reply was rendered with the `stale` flag of its render time;
//!   once the flag would read otherwise (its TTL passed), the read goes to
//!   the store, which renders it anew;
//! - a key held replies do not answer exactly as the store would (not
//!   held, an id the held version's id kind does not read) goes to the
//!   store.
//!
//! The replies of a version are rendered in pieces of [`PIECE`] entities,
//! each copied out of its own short read transaction and rendered after it
//! ends (so the lock that opening a database in a transaction holds is
//! never held for long); a
//! version that is live was finished by its run and is not written again,
//! and the build checks before each piece that it is still live.
//!
//! Memory: the JSON blocks and the index together stay under the limit
//! given; a version that does not fit is served from the store, and this is
//! logged once per version.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use crate::store::json::{self, IdRef};
use crate::store::{self, FileId, IdKind, Snapshot, Store, ValueRef};

/// Entities copied out of one read transaction at a time.
pub(crate) const PIECE: usize = 4096;
/// Bytes of JSON in the largest block of held replies (a larger reply gets
/// a block of its own) ...
const BLOCK_BYTES: usize = 64 << 20;
/// ... and in the first block.
const MIN_BLOCK_BYTES: usize = 1 << 20;
/// A lower bound of the index's bytes per entity (a slot of the integer
/// table, at most half full, is 40 bytes), checked before it is made.
const INDEX_BYTES_PER_ENTITY: usize = 80;

/// Where one held reply lies.
#[derive(Clone, Copy, Debug)]
struct Entry {
    block: u32,
    offset: u32,
    len: u32,
    /// Unix seconds after which the prediction is stale.
    until: u64,
}

/// The held version's replies, by entity key.
enum Index {
    /// Integer ids, by value.
    Int(IntTable),
    /// String ids, by their bytes.
    Str(HashMap<Box<[u8]>, Entry>),
}

/// Integer ids to entries: open addressing with linear probing, at most
/// half full, in one allocation advised to huge pages (a random id's slot
/// is then one cache miss, not a TLB miss too). The hash is seeded per
/// table, so no set of ids is slow to look up by design.
struct IntTable {
    slots: Vec<Slot>,
    /// Bits of the slot number.
    bits: u32,
    seed: u64,
    len: usize,
}

#[derive(Clone, Copy)]
struct Slot {
    key: u64,
    /// `None`: the slot is free.
    entry: Option<Entry>,
}

impl IntTable {
    fn with_capacity(n: usize) -> IntTable {
        let bits = (n.max(8) * 2).next_power_of_two().trailing_zeros();
        let mut slots: Vec<Slot> = Vec::with_capacity(1 << bits);
        // Advised before the first write touches its pages.
        crate::memory::huge_pages(
            slots.as_ptr().cast(),
            slots.capacity() * std::mem::size_of::<Slot>(),
        );
        slots.resize(
            1 << bits,
            Slot {
                key: 0,
                entry: None,
            },
        );
        IntTable {
            slots,
            bits,
            seed: std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u64),
            len: 0,
        }
    }

    fn home(&self, key: u64) -> usize {
        ((key ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bits)) as usize
    }

    fn get(&self, key: u64) -> Option<&Entry> {
        let mask = self.slots.len() - 1;
        let mut at = self.home(key);
        loop {
            let slot = &self.slots[at];
            match &slot.entry {
                None => return None,
                Some(e) if slot.key == key => return Some(e),
                Some(_) => at = (at + 1) & mask,
            }
        }
    }

    fn insert(&mut self, key: u64, entry: Entry) {
        if (self.len + 1) * 2 > self.slots.len() {
            let mut bigger = IntTable::with_capacity(self.slots.len());
            bigger.seed = self.seed;
            for s in &self.slots {
                if let Some(e) = s.entry {
                    bigger.insert(s.key, e);
                }
            }
            *self = bigger;
        }
        let mask = self.slots.len() - 1;
        let mut at = self.home(key);
        loop {
            let slot = &mut self.slots[at];
            match slot.entry {
                Some(_) if slot.key != key => at = (at + 1) & mask,
                Some(_) => {
                    slot.entry = Some(entry);
                    return;
                }
                None => {
                    *slot = Slot {
                        key,
                        entry: Some(entry),
                    };
                    self.len += 1;
                    return;
                }
            }
        }
    }

    fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
    }
}

/// One version's rendered replies.
pub(crate) struct Held {
    /// The store they were read from.
    pub file: Option<FileId>,
    pub version: u64,
    /// Unix seconds at render time (it decided each reply's `stale` flag).
    rendered_at: u64,
    blocks: Vec<Vec<u8>>,
    index: Index,
    /// Bytes of the ids of string keys.
    key_bytes: usize,
    /// Predictions the version holds.
    expected: usize,
    /// The id of the last commit seen with the held version live
    /// (`u64::MAX`: none yet); see [`super::reader::Reader::read_held`].
    pub verified: AtomicU64,
}

/// Why a version was not held.
#[derive(Debug)]
pub(crate) enum Unheld {
    /// It needs more than the limit: `done` of `of` predictions fit.
    TooLarge {
        limit: usize,
        done: usize,
        of: usize,
    },
    /// Its ids' kind was not recorded (a store written before it was).
    NoIdKind,
    /// It stopped being live while it was read.
    NotLive,
    Store(store::Error),
    /// A key of the version that its id kind cannot read.
    BadKey(String),
}

impl std::fmt::Display for Unheld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unheld::TooLarge { limit, done, of } => write!(
                f,
                "its {of} predictions do not fit in --preload {} MiB (it was full after {done}, index included)",
                limit >> 20
            ),
            Unheld::NoIdKind => write!(
                f,
                "its record does not say whether its ids are integers or strings (a store written by an older herd)"
            ),
            Unheld::NotLive => write!(f, "it stopped being live while it was read"),
            Unheld::Store(e) => write!(f, "{e}"),
            Unheld::BadKey(why) => write!(f, "it holds {why}"),
        }
    }
}

impl From<store::Error> for Unheld {
    fn from(e: store::Error) -> Unheld {
        Unheld::Store(e)
    }
}

impl Held {
    /// The held reply for entity `id` (as a request names it), when it
    /// answers exactly what the store would at `now`.
    pub fn get(&self, id: &[u8], int_id: Option<u64>, now: u64) -> Option<&[u8]> {
        let entry = match &self.index {
            // The store's reader looks a decimal id up as an integer first:
            // only that lookup is mirrored.
            Index::Int(table) => table.get(int_id?)?,
            Index::Str(map) => {
                // ... and in a version of string ids, an 8-byte string id
                // equal to that integer's key would be found first (and
                // shown as a number): left to the store.
                if let Some(n) = int_id
                    && map.contains_key(&n.to_be_bytes()[..])
                {
                    return None;
                }
                map.get(id)?
            }
        };
        if (entry.until < now) != (entry.until < self.rendered_at) {
            return None;
        }
        let block = &self.blocks[entry.block as usize];
        let start = entry.offset as usize;
        let reply = &block[start..start + entry.len as usize];
        prefetch(reply);
        Some(reply)
    }

    /// Entities held.
    pub fn len(&self) -> usize {
        match &self.index {
            Index::Int(t) => t.len,
            Index::Str(m) => m.len(),
        }
    }

    /// Bytes held: the JSON blocks, the ids of string keys, the index.
    pub fn total_bytes(&self) -> usize {
        let index = match &self.index {
            Index::Int(t) => t.bytes(),
            Index::Str(m) => m.capacity() * (std::mem::size_of::<(Box<[u8]>, Entry)>() + 1),
        };
        let blocks: usize = self.blocks.iter().map(Vec::capacity).sum();
        blocks + self.key_bytes + index
    }

    /// Appends one rendered reply, unless its block would take the bytes
    /// held past `limit`.
    fn push(&mut self, key: &[u8], json: &[u8], until: u64, limit: usize) -> Result<(), Unheld> {
        let fits = self
            .blocks
            .last()
            .is_some_and(|b| b.capacity() - b.len() >= json.len());
        if !fits {
            // Blocks double from MIN_BLOCK_BYTES up to BLOCK_BYTES, so a
            // small version takes little more than its replies.
            let next = self
                .blocks
                .last()
                .map_or(MIN_BLOCK_BYTES, |b| b.capacity() * 2);
            let size = next.min(BLOCK_BYTES).max(json.len());
            if self.total_bytes() + size > limit {
                return Err(Unheld::TooLarge {
                    limit,
                    done: self.len(),
                    of: self.expected,
                });
            }
            let block: Vec<u8> = Vec::with_capacity(size);
            crate::memory::huge_pages(block.as_ptr(), block.capacity());
            self.blocks.push(block);
        }
        let block = self.blocks.len() - 1;
        let b = &mut self.blocks[block];
        let entry = Entry {
            block: block as u32,
            offset: b.len() as u32,
            len: json.len() as u32,
            until,
        };
        b.extend_from_slice(json);
        match &mut self.index {
            Index::Int(t) => {
                let bytes = <[u8; 8]>::try_from(key)
                    .map_err(|_| Unheld::BadKey(format!("an integer id of {} bytes", key.len())))?;
                t.insert(u64::from_be_bytes(bytes), entry);
            }
            Index::Str(m) => {
                self.key_bytes += key.len();
                m.insert(key.into(), entry);
            }
        }
        Ok(())
    }
}

/// What rendering a reply needs from the store's reader: the model
/// version's JSON literal of a value (read in the snapshot).
pub(crate) type ModelOf<'a> =
    dyn FnMut(&Snapshot<'_, '_>, u64, u32) -> Result<Arc<str>, store::Error> + 'a;

/// Renders every prediction of `version`, live in `store`, into memory,
/// under `limit` bytes; `now` decides the `stale` flags.
pub(crate) fn build(
    store: &Store,
    version: u64,
    limit: usize,
    now: u64,
    model_of: &mut ModelOf<'_>,
) -> Result<Held, Unheld> {
    let mut held: Option<Held> = None;
    // The last key of the piece before (empty, which no key is: the start).
    let mut after: Vec<u8> = Vec::new();
    let mut piece: Vec<Copied> = Vec::with_capacity(PIECE);
    let mut json = Vec::new();
    loop {
        piece.clear();
        store.snapshot(|snap| {
            if snap.live()? != Some(version) {
                return Ok(Err(Unheld::NotLive));
            }
            if held.is_none() {
                match start(snap, store, version, limit, now)? {
                    Ok(h) => held = Some(h),
                    Err(why) => return Ok(Err(why)),
                }
            }
            snap.scan_from(version, &after, |key, value| {
                if key == after.as_slice() {
                    return Ok(true);
                }
                piece.push(Copied {
                    key: key.to_vec(),
                    value: value.as_bytes().to_vec(),
                    model: model_of(snap, version, value.model_ref())?,
                });
                Ok(piece.len() < PIECE)
            })?;
            Ok(Ok(()))
        })??;
        let h = held.as_mut().expect("made by the first piece");
        let Some(last) = piece.last() else {
            return Ok(held.take().expect("made by the first piece"));
        };
        after.clone_from(&last.key);
        // Rendered outside the read transaction.
        for c in &piece {
            let value =
                ValueRef::parse(&c.value).map_err(|e| Unheld::Store(store.corrupt(version, e)))?;
            let id = match (&h.index, <[u8; 8]>::try_from(c.key.as_slice())) {
                (Index::Int(_), Ok(b)) => IdRef::Int(u64::from_be_bytes(b)),
                _ => IdRef::Str(&c.key),
            };
            json.clear();
            render(&mut json, id, version, &c.model, now, value);
            let until = u64::from(value.timestamp()).saturating_add(u64::from(value.ttl()));
            h.push(&c.key, &json, until, limit)?;
        }
    }
}

/// One prediction copied out of a read transaction, to be rendered.
struct Copied {
    key: Vec<u8>,
    value: Vec<u8>,
    /// Its model version, as a JSON string literal.
    model: Arc<str>,
}

/// An empty [`Held`] for `version`, its index sized for the version's
/// predictions; refused when that alone passes `limit`.
fn start(
    snap: &Snapshot<'_, '_>,
    store: &Store,
    version: u64,
    limit: usize,
    now: u64,
) -> Result<Result<Held, Unheld>, store::Error> {
    let record = snap.record(version)?;
    let n = usize::try_from(snap.entries(version)?).unwrap_or(usize::MAX);
    let too_large = Unheld::TooLarge {
        limit,
        done: 0,
        of: n,
    };
    // Checked before the index is made, and again once it is.
    if n.saturating_mul(INDEX_BYTES_PER_ENTITY) > limit {
        return Ok(Err(too_large));
    }
    let index = match record.id_kind {
        Some(IdKind::Int) => Index::Int(IntTable::with_capacity(n)),
        Some(IdKind::String) => Index::Str(HashMap::with_capacity(n)),
        None => return Ok(Err(Unheld::NoIdKind)),
    };
    let h = Held {
        file: store.file_id(),
        version,
        rendered_at: now,
        blocks: Vec::new(),
        index,
        key_bytes: 0,
        expected: n,
        verified: AtomicU64::new(u64::MAX),
    };
    Ok(match h.total_bytes() > limit {
        true => Err(too_large),
        false => Ok(h),
    })
}

fn render(out: &mut Vec<u8>, id: IdRef<'_>, version: u64, model: &str, now: u64, v: ValueRef<'_>) {
    json::write_prediction(
        out,
        json::Fields {
            id,
            version,
            model_version_json: model,
            now,
        },
        v,
    );
}

/// The log line of a version held.
pub(crate) fn held_line(h: &Held, started: Instant) -> String {
    format!(
        "herd serve: preloaded v{}: {} predictions, {:.1} MiB, in {:.2} s",
        h.version,
        h.len(),
        h.total_bytes() as f64 / (1u64 << 20) as f64,
        started.elapsed().as_secs_f64()
    )
}

/// Asks for every cache line of `bytes` at once: a held reply is cold, and
/// the copy that follows then waits for one round trip to memory instead of
/// one per line or two (measured: a 3.3 KB reply's copy took 40% less).
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for at in (0..bytes.len()).step_by(64) {
        // SAFETY: a prefetch is only a hint; the address is inside `bytes`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                bytes.as_ptr().add(at).cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32) -> Entry {
        Entry {
            block: n,
            offset: n,
            len: n,
            until: u64::from(n),
        }
    }

    #[test]
    fn the_integer_table_finds_every_key_it_holds_and_no_other() {
        // Sized for 8, grown past it; keys at both ends and with the same
        // home slot under any seed (equal low bits do not matter: the hash
        // multiplies).
        let mut t = IntTable::with_capacity(8);
        let mut keys: Vec<u64> = vec![0, 1, u64::MAX, u64::MAX - 1, 1 << 63];
        let mut rng = crate::splitmix::SplitMix64(7);
        keys.extend((0..5000).map(|_| rng.next_u64()));
        keys.extend((0..5000).map(|i| i << 32));
        keys.sort_unstable();
        keys.dedup();
        for (i, &k) in keys.iter().enumerate() {
            t.insert(k, entry(i as u32));
        }
        // Inserting a key again replaces its entry.
        t.insert(keys[3], entry(99_999));
        assert_eq!(t.len, keys.len());
        assert!(t.len * 2 <= t.slots.len());
        for (i, &k) in keys.iter().enumerate() {
            let want = if i == 3 { 99_999 } else { i as u32 };
            assert_eq!(t.get(k).map(|e| e.block), Some(want), "key {k}");
        }
        for k in [2u64, 3, 1 << 40, u64::MAX - 2] {
            assert!(
                keys.binary_search(&k).is_ok() || t.get(k).is_none(),
                "key {k}"
            );
        }
    }
}
