//! The embedded backend's in-memory state: job counters, leases and the
//! dedup index. One process owns the database file (see the lock in
//! `mod.rs`), so this state is authoritative while the process lives and is
//! rebuilt from the file at open.
//!
//! Invariants:
//! - only the writer thread mutates it, while applying a request inside the
//!   batch transaction; every mutation pushes its inverse on an undo log, so
//!   a request rolled back to its savepoint (or a batch whose commit failed)
//!   leaves memory exactly as the database: [`Mem::rollback_to`];
//! - counters count database rows by state (`pending` includes leased jobs;
//!   `leased` says how many of them are claimed);
//! - the dedup index maps a keyed 128-bit fingerprint of `(scope, key)` to
//!   the row of its newest record. A fingerprint match is only a candidate:
//!   the caller confirms it against the stored key before answering
//!   "duplicate". Fingerprints are keyed with a secret random per store, so
//!   a sender cannot craft colliding ids.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::plog::PayloadRef;

/// A keyed 128-bit fingerprint of `(scope, key)`.
pub(crate) type Fp = [u64; 2];

/// Hashes an index key (two 32-bit halves of a fingerprint's first word):
/// it is already uniformly distributed (a keyed MAC), so hashing it again
/// would only cost time.
#[derive(Default)]
pub(crate) struct FpHasher(u64);

impl Hasher for FpHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `[u32; 2]` keys, but stay correct for anything else.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 << 32) | u64::from(n);
    }
    fn write_usize(&mut self, _n: usize) {}
}

/// Bytes one slot of the dedup index takes (key + value + control byte).
pub(crate) const DEDUP_ENTRY_BYTES: usize = std::mem::size_of::<([u32; 2], u32)>() + 1;

/// The fingerprint function of one store.
#[derive(Clone)]
pub(crate) struct Fingerprinter {
    mac: Hmac<Sha256>,
}

impl Fingerprinter {
    pub(crate) fn new(secret: &[u8]) -> Fingerprinter {
        Fingerprinter {
            mac: Hmac::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    pub(crate) fn fp(&self, scope: &str, key: &str) -> Fp {
        let mut mac = self.mac.clone();
        // Length-prefixed, so ("ab","c") and ("a","bc") differ.
        mac.update(&(scope.len() as u64).to_le_bytes());
        mac.update(scope.as_bytes());
        mac.update(key.as_bytes());
        let out = mac.finalize().into_bytes();
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&out[i..i + 8]);
            u64::from_le_bytes(b)
        };
        [word(0), word(8)]
    }
}

/// Stored form of a fingerprint (16 bytes).
pub(crate) fn fp_to_bytes(fp: Fp) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&fp[0].to_le_bytes());
    b[8..].copy_from_slice(&fp[1].to_le_bytes());
    b
}

pub(crate) fn fp_from_bytes(b: &[u8]) -> Option<Fp> {
    if b.len() != 16 {
        return None;
    }
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&b[..8]);
    hi.copy_from_slice(&b[8..]);
    Some([u64::from_le_bytes(lo), u64::from_le_bytes(hi)])
}

/// Fingerprint -> row of the newest dedup record with that fingerprint.
///
/// Packed for memory (12 bytes a key, 13 a slot): the key is the first 64
/// bits of the 128-bit fingerprint, the value the low 32 bits of the row,
/// whose high bits are those of the newest row (records live in the index
/// are among the last 2^32 written). Either shortcut can only make a lookup
/// land on another record, and every match is confirmed against the stored
/// key before an event is called a duplicate.
///
/// The table is split in [`SHARDS`] by bits of the fingerprint that are not
/// in the key. A hash table grows by allocating one twice its size and
/// moving every entry: for that moment the old and the new table are both
/// held. With shards, only one shard at a time is being moved, so the peak
/// stays near what the grown table holds.
///
/// The shards are of unequal shares (see [`shard_of`]), so they double at
/// different key counts. Equal shards all double at once, and the whole
/// index swings between 15 and 30 bytes a key (27 at 1M keys); staggered,
/// it stays at 20–23 bytes a key at every size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DedupIndex {
    shards: [HashMap<[u32; 2], u32, BuildHasherDefault<FpHasher>>; SHARDS],
    /// The highest row ever indexed.
    max_row: i64,
}

/// Shards of [`DedupIndex`].
const SHARDS: usize = 16;

/// Shard `i` takes `SHARDS + i` parts of [`SHARD_PARTS`]: the largest holds
/// nearly twice the smallest, so the shards' doubling points spread over a
/// whole doubling of the index.
const SHARD_PARTS: usize = SHARDS * SHARDS + SHARDS * (SHARDS - 1) / 2;

/// Part -> shard.
const SHARD_OF_PART: [u8; SHARD_PARTS] = {
    let mut t = [0u8; SHARD_PARTS];
    let (mut shard, mut part) = (0, 0);
    while shard < SHARDS {
        let mut k = 0;
        while k < SHARDS + shard {
            t[part] = shard as u8;
            part += 1;
            k += 1;
        }
        shard += 1;
    }
    t
};

fn index_key(fp: Fp) -> [u32; 2] {
    [(fp[0] >> 32) as u32, fp[0] as u32]
}

/// The shard of `fp`: its second word (uniform, and not in the key) scaled
/// to a part, so shard `i` gets a share proportional to `SHARDS + i`.
fn shard_of(fp: Fp) -> usize {
    let part = (u128::from(fp[1]) * SHARD_PARTS as u128) >> 64;
    SHARD_OF_PART[part as usize] as usize
}

impl DedupIndex {
    fn row(&self, low: u32) -> i64 {
        let m = self.max_row;
        m - (m - i64::from(low)).rem_euclid(1 << 32)
    }

    /// The row `fp` points at.
    pub(crate) fn get(&self, fp: Fp) -> Option<i64> {
        self.shards[shard_of(fp)]
            .get(&index_key(fp))
            .map(|low| self.row(*low))
    }

    /// Whether `fp` points at `row`.
    pub(crate) fn points_at(&self, fp: Fp, row: i64) -> bool {
        self.get(fp) == Some(row)
    }

    pub(crate) fn contains(&self, fp: Fp) -> bool {
        self.shards[shard_of(fp)].contains_key(&index_key(fp))
    }

    fn insert(&mut self, fp: Fp, row: i64) -> Option<i64> {
        self.max_row = self.max_row.max(row);
        let prev = self.shards[shard_of(fp)].insert(index_key(fp), row as u32);
        prev.map(|low| self.row(low))
    }

    fn remove(&mut self, fp: Fp) -> Option<i64> {
        let prev = self.shards[shard_of(fp)].remove(&index_key(fp));
        prev.map(|low| self.row(low))
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Bytes the shards' tables hold: a table of `n` slots holds at most
    /// 7/8 of `n` keys (`n` a power of two; fewer than 8 slots hold `n - 1`)
    /// and takes [`DEDUP_ENTRY_BYTES`] a slot.
    pub(crate) fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| match s.capacity() {
                0 => 0,
                c if c < 7 => (c + 1).next_power_of_two(),
                c => (c * 8 / 7).next_power_of_two(),
            })
            .sum::<usize>()
            * DEDUP_ENTRY_BYTES
    }
}

/// Rows per state of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Pending rows, claimed ones included.
    pub pending: u64,
    /// Of the pending rows, those under a live claim.
    pub leased: u64,
    pub done: u64,
    pub dead: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Pending,
    Leased,
    Done,
    Dead,
}

/// A claim held in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseEntry {
    pub token: u64,
    pub until: i64,
    /// Number of the attempt record appended by the claim.
    pub n: i64,
    pub queue: String,
    /// Finished or released by a request of the batch being committed: no
    /// longer a claim for the writer, still shown as one to readers until the
    /// commit makes the job's new state visible (then it is dropped).
    pub ended: bool,
    /// Where the job's payload is, when it is in a segment.
    pub payload: Option<PayloadRef>,
}

/// The jobs whose payload is in one segment, and their bytes there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SegUse {
    pub jobs: u64,
    pub bytes: u64,
}

/// Dedup bookkeeping of one scope.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    /// Keys of this scope in the index.
    pub keys: u64,
    /// No record of this scope below this row is indexed any more (evicted
    /// early); eviction resumes from here.
    pub evict_from: i64,
    /// No record of this scope below this row is left in the table: the
    /// purge of expired records resumes from here.
    pub purge_from: i64,
}

/// The inverse of one mutation.
enum Undo {
    Count {
        queue: String,
        field: Field,
        delta: i64,
    },
    Lease {
        seq: i64,
        prev: Option<LeaseEntry>,
    },
    Dedup {
        fp: Fp,
        prev: Option<i64>,
    },
    ScopeKeys {
        scope: String,
        delta: i64,
    },
    SegUse {
        seg: u32,
        bytes: u64,
        delta: i64,
    },
    /// A payload put in the trash.
    Trashed,
    /// The trash emptied into the batch.
    TrashTaken(Vec<i64>),
}

pub(crate) struct Mem {
    pub counts: HashMap<String, Counts>,
    pub leases: HashMap<i64, LeaseEntry>,
    pub dedup: DedupIndex,
    pub scopes: HashMap<String, Scope>,
    /// Per payload segment, the job rows pointing into it.
    pub segs: BTreeMap<u32, SegUse>,
    /// Where the purge's walk over old jobs resumes (not undone on
    /// rollback: it is only a position).
    pub purge_cursor: i64,
    /// Per queue: no pending job below this row (a lower bound, raised by
    /// `stats` as jobs complete, lowered when an older job becomes pending
    /// again), and a generation that changes whenever it is lowered.
    floors: HashMap<String, (i64, u64)>,
    /// Leases ended in the current batch, dropped once it commits.
    ended: Vec<i64>,
    /// Rows of delivered jobs whose payload is still to be deleted.
    trash: Vec<i64>,
    /// The next job row: rows are never reused while this process runs, so
    /// nothing kept in memory (a lease, the trash) can name a later job.
    next_seq: i64,
    next_token: u64,
    undo: Vec<Undo>,
}

fn apply_delta(v: &mut u64, delta: i64) {
    *v = if delta >= 0 {
        v.saturating_add(delta.unsigned_abs())
    } else {
        v.saturating_sub(delta.unsigned_abs())
    };
}

impl Mem {
    pub(crate) fn new() -> Mem {
        Mem {
            counts: HashMap::new(),
            leases: HashMap::new(),
            dedup: DedupIndex::default(),
            scopes: HashMap::new(),
            segs: BTreeMap::new(),
            purge_cursor: 0,
            floors: HashMap::new(),
            ended: Vec::new(),
            trash: Vec::new(),
            next_seq: 1,
            next_token: 1,
            undo: Vec::new(),
        }
    }

    /// Sets where job rows start (above every row in the file).
    pub(crate) fn set_next_seq(&mut self, seq: i64) {
        self.next_seq = seq.max(1);
    }

    /// A new job row (not undone: a skipped row number is harmless).
    pub(crate) fn next_seq(&mut self) -> i64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Marks the payload of job row `seq` for deletion (undoable).
    pub(crate) fn trash_payload(&mut self, seq: i64) {
        self.trash.push(seq);
        self.undo.push(Undo::Trashed);
    }

    pub(crate) fn trash_len(&self) -> usize {
        self.trash.len()
    }

    /// Empties the trash for deletion (undoable).
    pub(crate) fn take_trash(&mut self) -> Vec<i64> {
        let taken = std::mem::take(&mut self.trash);
        self.undo.push(Undo::TrashTaken(taken.clone()));
        taken
    }

    /// A fresh fencing token (never reused within the process; tokens need
    /// no undo: a skipped number is harmless).
    pub(crate) fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    fn bump(&mut self, queue: &str, field: Field, delta: i64) {
        let c = self.counts.entry(queue.to_owned()).or_default();
        let v = match field {
            Field::Pending => &mut c.pending,
            Field::Leased => &mut c.leased,
            Field::Done => &mut c.done,
            Field::Dead => &mut c.dead,
        };
        apply_delta(v, delta);
    }

    /// Adds `delta` to a counter (undoable).
    pub(crate) fn count(&mut self, queue: &str, field: Field, delta: i64) {
        if delta == 0 {
            return;
        }
        self.bump(queue, field, delta);
        self.undo.push(Undo::Count {
            queue: queue.to_owned(),
            field,
            delta,
        });
    }

    /// Sets or clears the lease of job row `seq` (undoable); keeps the
    /// `leased` counter in step. Answers the previous lease.
    pub(crate) fn set_lease(&mut self, seq: i64, lease: Option<LeaseEntry>) -> Option<LeaseEntry> {
        if let Some(l) = &lease {
            self.bump(&l.queue, Field::Leased, 1);
        }
        let prev = match lease {
            Some(l) => self.leases.insert(seq, l),
            None => self.leases.remove(&seq),
        };
        if let Some(p) = prev.as_ref().filter(|p| !p.ended) {
            let q = p.queue.clone();
            self.bump(&q, Field::Leased, -1);
        }
        self.undo.push(Undo::Lease {
            seq,
            prev: prev.clone(),
        });
        prev
    }

    /// The live claim of job row `seq`, if any (ended ones are not).
    pub(crate) fn lease(&self, seq: i64) -> Option<&LeaseEntry> {
        self.leases.get(&seq).filter(|l| !l.ended)
    }

    /// Ends the claim of job row `seq` (undoable): the writer sees it gone at
    /// once, readers once the batch has committed ([`Mem::commit`]).
    pub(crate) fn end_lease(&mut self, seq: i64) {
        let Some(cur) = self.lease(seq).cloned() else {
            return;
        };
        let mut ended = cur.clone();
        ended.ended = true;
        self.bump(&cur.queue, Field::Leased, -1);
        self.leases.insert(seq, ended);
        self.ended.push(seq);
        self.undo.push(Undo::Lease {
            seq,
            prev: Some(cur),
        });
    }

    /// Points `fp` at dedup row `row` without undo (rebuilding at open);
    /// answers whether the fingerprint is new.
    pub(crate) fn index_dedup(&mut self, fp: Fp, row: i64) -> bool {
        self.dedup.insert(fp, row).is_none()
    }

    /// Points `fp` at dedup row `row`, or removes it (undoable).
    pub(crate) fn set_dedup(&mut self, fp: Fp, row: Option<i64>) {
        let prev = match row {
            Some(r) => self.dedup.insert(fp, r),
            None => self.dedup.remove(fp),
        };
        self.undo.push(Undo::Dedup { fp, prev });
    }

    /// Adds `delta` to a scope's key count (undoable).
    pub(crate) fn scope_keys(&mut self, scope: &str, delta: i64) {
        apply_delta(
            &mut self.scopes.entry(scope.to_owned()).or_default().keys,
            delta,
        );
        self.undo.push(Undo::ScopeKeys {
            scope: scope.to_owned(),
            delta,
        });
    }

    /// One more (`delta` 1) or one fewer (-1) job row points at a payload
    /// of `bytes` in segment `seg` (undoable).
    pub(crate) fn seg_use(&mut self, seg: u32, bytes: u64, delta: i64) {
        self.bump_seg(seg, bytes, delta);
        self.undo.push(Undo::SegUse { seg, bytes, delta });
    }

    fn bump_seg(&mut self, seg: u32, bytes: u64, delta: i64) {
        let u = self.segs.entry(seg).or_default();
        apply_delta(&mut u.jobs, delta);
        let b = i64::try_from(bytes).unwrap_or(i64::MAX);
        apply_delta(&mut u.bytes, if delta >= 0 { b } else { -b });
    }

    /// The undo log's position, for [`Mem::rollback_to`].
    pub(crate) fn mark(&self) -> usize {
        self.undo.len()
    }

    /// Reverts every mutation made since `mark`, newest first.
    pub(crate) fn rollback_to(&mut self, mark: usize) {
        if mark == 0 {
            // The whole batch is undone: nothing it ended stays ended.
            self.ended.clear();
        }
        while self.undo.len() > mark {
            let Some(u) = self.undo.pop() else { break };
            match u {
                Undo::Count {
                    queue,
                    field,
                    delta,
                } => self.bump(&queue, field, -delta),
                Undo::Lease { seq, prev } => {
                    if let Some(cur) = self.leases.remove(&seq).filter(|c| !c.ended) {
                        self.bump(&cur.queue, Field::Leased, -1);
                    }
                    if let Some(p) = prev {
                        if !p.ended {
                            self.bump(&p.queue, Field::Leased, 1);
                        }
                        self.leases.insert(seq, p);
                    }
                }
                Undo::Dedup { fp, prev } => {
                    match prev {
                        Some(r) => self.dedup.insert(fp, r),
                        None => self.dedup.remove(fp),
                    };
                }
                Undo::SegUse { seg, bytes, delta } => self.bump_seg(seg, bytes, -delta),
                Undo::Trashed => {
                    self.trash.pop();
                }
                Undo::TrashTaken(taken) => self.trash = taken,
                Undo::ScopeKeys { scope, delta } => {
                    if let Some(s) = self.scopes.get_mut(&scope) {
                        apply_delta(&mut s.keys, -delta);
                    }
                }
            }
        }
    }

    /// Forgets the undo log: everything since the last commit is durable.
    /// Claims ended by the batch are dropped now that readers can see the
    /// jobs' new state.
    pub(crate) fn commit(&mut self) {
        self.undo.clear();
        for seq in std::mem::take(&mut self.ended) {
            if self.leases.get(&seq).is_some_and(|l| l.ended) {
                self.leases.remove(&seq);
            }
        }
    }

    /// The pending floor of `queue` and its generation.
    pub(crate) fn pending_floor(&self, queue: &str) -> (i64, u64) {
        self.floors.get(queue).copied().unwrap_or((0, 0))
    }

    /// Job row `seq` of `queue` is pending again: the floor goes down to it.
    /// Not undone on rollback (a floor that is too low only costs a longer
    /// walk).
    pub(crate) fn lower_pending_floor(&mut self, queue: &str, seq: i64) {
        let f = self.floors.entry(queue.to_owned()).or_insert((0, 0));
        if seq < f.0 {
            f.0 = seq;
        }
        f.1 += 1;
    }

    /// Raises the floor to `seq` (the first pending row found at or above
    /// it), unless it was lowered since `generation` was read.
    pub(crate) fn raise_pending_floor(&mut self, queue: &str, seq: i64, generation: u64) {
        let f = self.floors.entry(queue.to_owned()).or_insert((0, 0));
        if f.1 == generation && seq > f.0 {
            f.0 = seq;
        }
    }

    /// Counters of `queue` (zeros when unknown).
    pub(crate) fn counts_of(&self, queue: &str) -> Counts {
        self.counts.get(queue).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(token: u64, queue: &str) -> LeaseEntry {
        LeaseEntry {
            token,
            until: 10,
            n: 1,
            queue: queue.into(),
            ended: false,
            payload: None,
        }
    }

    #[test]
    fn rollback_restores_counts_leases_and_index() {
        let mut m = Mem::new();
        m.count("q", Field::Pending, 2);
        m.set_lease(1, Some(lease(1, "q")));
        m.set_dedup([1, 2], Some(7));
        m.scope_keys("q", 1);
        m.commit();
        let before = (
            m.counts_of("q"),
            m.leases.clone(),
            m.dedup.clone(),
            m.scopes["q"].keys,
        );

        let mark = m.mark();
        m.count("q", Field::Pending, -1);
        m.count("q", Field::Done, 1);
        m.end_lease(1);
        assert!(m.lease(1).is_none(), "ended for the writer");
        assert!(m.leases.contains_key(&1), "still visible to readers");
        m.set_lease(1, None);
        m.set_lease(2, Some(lease(2, "q")));
        m.set_lease(2, Some(lease(3, "q")));
        m.set_dedup([1, 2], Some(9));
        m.set_dedup([3, 4], Some(10));
        m.set_dedup([1, 2], None);
        m.scope_keys("q", 1);
        assert_eq!(m.counts_of("q").leased, 1);
        assert_eq!(m.dedup.get([1, 2]), None);
        m.rollback_to(mark);

        assert_eq!(m.counts_of("q"), before.0);
        assert_eq!(m.leases, before.1);
        // (The highest row seen is only a bound and stays raised.)
        assert_eq!(m.dedup.len(), before.2.len());
        assert_eq!(m.dedup.get([1, 2]), before.2.get([1, 2]));
        assert_eq!(m.dedup.get([3, 4]), None);
        assert_eq!(m.scopes["q"].keys, before.3);
        assert_eq!(m.counts_of("q").leased, 1);
    }

    #[test]
    fn segment_use_is_undone_with_its_request() {
        let mut m = Mem::new();
        m.seg_use(1, 100, 1);
        m.commit();
        let mark = m.mark();
        m.seg_use(1, 100, -1);
        m.seg_use(2, 50, 1);
        assert_eq!(m.segs[&1], SegUse { jobs: 0, bytes: 0 });
        m.rollback_to(mark);
        assert_eq!(
            m.segs[&1],
            SegUse {
                jobs: 1,
                bytes: 100
            }
        );
        assert_eq!(m.segs[&2], SegUse::default());
    }

    #[test]
    fn ended_leases_are_dropped_at_commit_and_restored_by_rollback() {
        let mut m = Mem::new();
        m.set_lease(1, Some(lease(1, "q")));
        m.set_lease(2, Some(lease(2, "q")));
        m.commit();
        m.end_lease(1);
        assert_eq!(m.counts_of("q").leased, 1);
        m.commit();
        assert!(!m.leases.contains_key(&1));
        m.end_lease(2);
        m.rollback_to(0);
        m.commit();
        assert_eq!(m.lease(2).map(|l| l.token), Some(2));
        assert_eq!(m.counts_of("q").leased, 1);
    }

    #[test]
    fn the_index_restores_full_rows_from_their_low_bits() {
        let mut m = Mem::new();
        let big = (5i64 << 32) + 7;
        m.set_dedup([9, 9], Some(big - 10));
        m.set_dedup([8, 8], Some(big));
        assert_eq!(m.dedup.get([9, 9]), Some(big - 10));
        assert_eq!(m.dedup.get([8, 8]), Some(big));
        assert!(m.dedup.points_at([8, 8], big));
        assert!(!m.dedup.points_at([8, 8], big - (1 << 32)));
    }

    #[test]
    fn shards_take_staggered_shares() {
        for i in 0..SHARDS {
            let parts = SHARD_OF_PART.iter().filter(|s| **s as usize == i).count();
            assert_eq!(parts, SHARDS + i, "shard {i}");
        }
        assert_eq!(shard_of([0, 0]), 0);
        assert_eq!(shard_of([0, u64::MAX]), SHARDS - 1);
        assert_eq!(
            shard_of([0, u64::MAX / 2]),
            SHARD_OF_PART[SHARD_PARTS / 2] as usize
        );
    }

    /// The staggered shards keep the index at 20–23 bytes a key whatever
    /// the key count, where equal shards swing between 15 and 30.
    #[test]
    fn the_index_stays_near_its_average_bytes_per_key() {
        let mut idx = DedupIndex::default();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            // splitmix64: uniform words, as a keyed MAC gives.
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let (mut lo, mut hi) = (f64::MAX, 0f64);
        for n in 1..=400_000i64 {
            idx.insert([next(), next()], n);
            if n >= 20_000 && n % 5_000 == 0 {
                let per_key = idx.bytes() as f64 / n as f64;
                lo = lo.min(per_key);
                hi = hi.max(per_key);
            }
        }
        assert_eq!(idx.len(), 400_000);
        assert!(
            lo >= 19.0 && hi <= 23.5,
            "bytes a key from {lo:.1} to {hi:.1}"
        );
    }

    #[test]
    fn fingerprints_are_keyed_and_length_prefixed() {
        let a = Fingerprinter::new(b"secret-a");
        let b = Fingerprinter::new(b"secret-b");
        assert_eq!(a.fp("s", "k"), a.fp("s", "k"));
        assert_ne!(a.fp("s", "k"), b.fp("s", "k"));
        assert_ne!(a.fp("ab", "c"), a.fp("a", "bc"));
        let fp = a.fp("s", "k");
        assert_eq!(fp_from_bytes(&fp_to_bytes(fp)), Some(fp));
        assert_eq!(fp_from_bytes(&[0; 15]), None);
    }
}
