//! The payload log: the stored requests of pending jobs, appended to segment
//! files beside the database instead of written into it.
//!
//! A payload written into SQLite is written at least twice (the WAL, then
//! the checkpoint's copy into the database file), and its page again when
//! the row is deleted. Here it is written once: appended to the active
//! segment (`<db file>-payload-<8 digits>`), and written out with one
//! `write` per group commit, then synced (`fdatasync`, by the store's
//! segment syncer thread) **while** SQLite writes and syncs the commit that
//! makes the job rows pointing at it durable: two waits for the disk at
//! once instead of one after the other. Nothing of a batch is answered
//! before both syncs are done, and the next batch starts only then, so a
//! power loss can leave at most the newest commit pointing at bytes that
//! are not on disk; that batch was never answered. Each job row records the
//! body's CRC-32 and the log [`position`] synced before its batch, and open
//! checks the payloads at or past the newest row's and drops that batch if
//! one did not survive (`drop_unsynced_tail` in the store). A segment file is
//! retired once no job row points into it, after the commit that dropped the
//! last reference, by the store's checkpointer thread: it is kept as a
//! spare (`<db file>-payload-spare-<n>`, at most [`SPARES_MAX`]) and a
//! later segment takes it over by a rename, or it is deleted (unlinking
//! 64 MiB takes the filesystem ~10 ms, which the writer's waiting batch
//! should not pay); a crash in between leaves a file nothing points at,
//! which the next open retires.
//!
//! Why spares: appending to a new file makes every `fdatasync` commit the
//! filesystem's journal too (the file's size and its newly allocated
//! blocks), while overwriting the blocks of a spare is data only. Stale
//! bytes in a spare are never taken for a payload: every read checks the
//! record's header (the job row, which only grows) against the row, and
//! open checks the newest batch's payloads by their CRC-32.
//!
//! Payloads that must outlive their segment for long are moved into the
//! database's `payload` table ("relocated") by the writer: a dead letter
//! (kept for `dead_retention`) and a job that waits for a retry. A few
//! long-lived jobs therefore never pin whole segments; what pins a segment
//! is a backlog that was not attempted yet (or the pending jobs of a paused
//! or orphaned queue).
//!
//! A record is `seq` (i64, little endian), `len` (u32, little endian) and
//! the body. The job row holds (segment, offset, length); a read checks the
//! record's header against the job's row and length.
//!
//! The writer thread owns [`PayloadLog`]; readers (the admin API) read
//! committed payloads through [`SegmentFiles::read`].

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes before each body: the job row (i64) and the body length (u32).
pub(crate) const HEADER_LEN: u64 = 12;

/// A segment takes no more records once it holds this many bytes (a single
/// record larger than that gets a segment of its own).
pub(crate) const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Retired segment files kept for new segments to take over.
pub(crate) const SPARES_MAX: usize = 2;

/// What [`SegmentFiles::retire`] did with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retired {
    Spare,
    Deleted,
    Gone,
}

/// Where a payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PayloadRef {
    pub seg: u32,
    pub off: u64,
    pub len: u32,
}

impl PayloadRef {
    /// Bytes the record takes in its segment.
    pub(crate) fn disk_bytes(&self) -> u64 {
        HEADER_LEN + u64::from(self.len)
    }

    /// From a job row's `pseg`, `poff`, `plen` (all set or none).
    pub(crate) fn from_columns(
        seg: Option<i64>,
        off: Option<i64>,
        len: Option<i64>,
    ) -> Option<PayloadRef> {
        let (seg, off, len) = (seg?, off?, len?);
        Some(PayloadRef {
            seg: u32::try_from(seg).ok()?,
            off: u64::try_from(off).ok()?,
            len: u32::try_from(len).ok()?,
        })
    }
}

/// The names of the segment files of one database. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct SegmentFiles {
    dir: PathBuf,
    prefix: String,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl SegmentFiles {
    /// Segments of the database at `db`, in the same directory.
    pub(crate) fn for_db(db: &Path) -> SegmentFiles {
        let dir = db
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let name = db
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "store".into());
        SegmentFiles {
            dir,
            prefix: format!("{name}-payload-"),
        }
    }

    pub(crate) fn path(&self, seg: u32) -> PathBuf {
        self.dir.join(format!("{}{seg:08}", self.prefix))
    }

    fn spare_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}spare-{i}", self.prefix))
    }

    /// Retires the segment file at `path` (nothing points into it): kept as
    /// a spare while fewer than [`SPARES_MAX`] are, deleted otherwise (and
    /// where the rename fails otherwise, e.g. a filesystem without
    /// `RENAME_NOREPLACE`, so that retired files never pile up). Gone
    /// already is fine.
    pub(crate) fn retire(&self, path: &Path) -> io::Result<Retired> {
        for i in 0..SPARES_MAX {
            match rename_noreplace(path, &self.spare_path(i)) {
                Ok(true) => return Ok(Retired::Spare),
                Ok(false) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Retired::Gone),
                Err(_) => break,
            }
        }
        match std::fs::remove_file(path) {
            Ok(()) => Ok(Retired::Deleted),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Retired::Gone),
            Err(e) => Err(e),
        }
    }

    /// Gives a spare the name of segment `seg`; whether there was one. Never
    /// replaces a file of that name. A spare that cannot be renamed is left
    /// (the caller creates the segment anew).
    fn take_spare(&self, seg: u32) -> bool {
        let path = self.path(seg);
        for i in 0..SPARES_MAX {
            match rename_noreplace(&self.spare_path(i), &path) {
                Ok(taken) => return taken,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => return false,
            }
        }
        false
    }

    /// The spares on disk.
    #[cfg(test)]
    pub(crate) fn spares(&self) -> usize {
        (0..SPARES_MAX)
            .filter(|i| self.spare_path(*i).exists())
            .count()
    }

    /// The segments on disk: (id, length in bytes).
    pub(crate) fn list(&self) -> io::Result<Vec<(u32, u64)>> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&self.prefix)) else {
                continue;
            };
            if rest.len() != 8 || !rest.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(id) = rest.parse::<u32>() else {
                continue;
            };
            found.push((id, entry.metadata()?.len()));
        }
        found.sort_unstable();
        Ok(found)
    }

    /// Reads the payload of job row `seq` (a reader's copy of a committed
    /// record). `NotFound` if the segment is gone (the job was delivered
    /// since the caller read its row).
    pub(crate) fn read(&self, r: PayloadRef, seq: i64) -> io::Result<Vec<u8>> {
        read_record(&File::open(self.path(r.seg))?, r, seq)
    }
}

/// Renames `from` to `to` unless `to` exists (answers false then).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<bool> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn read_record(f: &File, r: PayloadRef, seq: i64) -> io::Result<Vec<u8>> {
    // One read for the header and the body.
    let mut rec = vec![0u8; HEADER_LEN as usize + r.len as usize];
    f.read_exact_at(&mut rec, r.off)?;
    check_header(&rec, r, seq)?;
    rec.drain(..HEADER_LEN as usize);
    Ok(rec)
}

fn check_header(head: &[u8], r: PayloadRef, seq: i64) -> io::Result<()> {
    let mut s = [0u8; 8];
    s.copy_from_slice(&head[..8]);
    let mut l = [0u8; 4];
    l.copy_from_slice(&head[8..12]);
    if i64::from_le_bytes(s) != seq || u32::from_le_bytes(l) != r.len {
        return Err(invalid(format!(
            "payload record of job row {seq} in segment {} at offset {} does not match its row",
            r.seg, r.off
        )));
    }
    Ok(())
}

/// The writer's side: appends, flushes, reads back and deletes segments.
pub(crate) struct PayloadLog {
    files: SegmentFiles,
    segment_bytes: u64,
    /// The segment new payloads go to, and its length counting what is
    /// still buffered.
    active: u32,
    active_len: u64,
    /// Appended since the last flush: (segment, offset of the first byte,
    /// bytes). Usually one entry; two when the batch filled a segment.
    pending: Vec<(u32, u64, Vec<u8>)>,
    /// Segments that exist on disk (created by a flush, or found at open).
    on_disk: BTreeSet<u32>,
    open: HashMap<u32, Arc<File>>,
    /// Everything before this position (see [`position`]) is known to be on
    /// disk: the end of the log at the last sync that succeeded.
    synced: i64,
}

/// A place in the log as one ordered number: segment, then offset (records
/// are appended in order, segments numbered in order).
pub(crate) fn position(seg: u32, off: u64) -> i64 {
    (i64::from(seg) << 32) | (off & 0xffff_ffff) as i64
}

impl PayloadLog {
    /// A log whose first new segment is `next`; `on_disk` are the segments
    /// found at open.
    pub(crate) fn new(
        files: SegmentFiles,
        segment_bytes: u64,
        next: u32,
        on_disk: impl IntoIterator<Item = u32>,
    ) -> PayloadLog {
        PayloadLog {
            files,
            segment_bytes: segment_bytes.max(1),
            active: next,
            active_len: 0,
            pending: Vec::new(),
            on_disk: on_disk.into_iter().collect(),
            open: HashMap::new(),
            // What the segments before `next` hold was either synced or is
            // checked at open; nothing of `next` is written yet.
            synced: position(next, 0),
        }
    }

    /// The position before which everything is known to be on disk: a row
    /// written now records it, so that open knows which payloads to check
    /// (see `drop_unsynced_tail`).
    pub(crate) fn synced(&self) -> i64 {
        self.synced
    }

    pub(crate) fn files(&self) -> &SegmentFiles {
        &self.files
    }

    /// The segment new payloads go to.
    pub(crate) fn active(&self) -> u32 {
        self.active
    }

    /// Segments on disk (the active one once it was flushed).
    pub(crate) fn on_disk(&self) -> impl Iterator<Item = u32> + '_ {
        self.on_disk.iter().copied()
    }

    /// Appends the payload of job row `seq` (memory only until [`flush`]).
    ///
    /// [`flush`]: PayloadLog::flush
    pub(crate) fn append(&mut self, seq: i64, body: &[u8]) -> io::Result<PayloadRef> {
        let len = u32::try_from(body.len())
            .map_err(|_| invalid(format!("payload of {} bytes is too large", body.len())))?;
        let rec = HEADER_LEN + u64::from(len);
        if self.active_len > 0 && self.active_len + rec > self.segment_bytes {
            self.rotate();
        }
        let off = self.active_len;
        let buf = match self.pending.last_mut() {
            Some((seg, _, buf)) if *seg == self.active => buf,
            _ => {
                self.pending
                    .push((self.active, off, Vec::with_capacity(64 * 1024)));
                let last = self.pending.len() - 1;
                &mut self.pending[last].2
            }
        };
        buf.extend_from_slice(&seq.to_le_bytes());
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(body);
        self.active_len += rec;
        Ok(PayloadRef {
            seg: self.active,
            off,
            len,
        })
    }

    fn rotate(&mut self) {
        self.active = self.active.saturating_add(1);
        self.active_len = 0;
    }

    /// Whether anything was appended since the last flush.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes what was appended and makes it durable (`fdatasync`; a new
    /// segment's directory entry is synced when the file is created).
    #[cfg(test)]
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        for file in self.write_pending()? {
            file.sync_data()?;
        }
        self.mark_synced();
        Ok(())
    }

    /// Writes what was appended, without waiting for the disk; answers the
    /// files to sync (see [`mark_synced`]).
    ///
    /// [`mark_synced`]: PayloadLog::mark_synced
    pub(crate) fn write_pending(&mut self) -> io::Result<Vec<Arc<File>>> {
        let pending = std::mem::take(&mut self.pending);
        let mut written = Vec::with_capacity(pending.len());
        for (seg, start, bytes) in &pending {
            let file = self.file(*seg, true)?;
            file.write_all_at(bytes, *start)?;
            written.push(Arc::clone(file));
        }
        Ok(written)
    }

    /// The files [`write_pending`] answered were synced: everything written
    /// so far is on disk.
    ///
    /// [`write_pending`]: PayloadLog::write_pending
    pub(crate) fn mark_synced(&mut self) {
        self.synced = position(self.active, self.active_len);
    }

    /// After a failed flush or commit: drops what is buffered, and the next
    /// payloads go to a fresh segment (whatever a failed write left in the
    /// current one is never pointed at).
    pub(crate) fn abandon(&mut self) {
        self.pending.clear();
        if self.active_len > 0 {
            self.rotate();
        }
    }

    /// The payload at `r` of job row `seq`: from the buffer if it was
    /// appended in the batch being applied, else from its segment.
    pub(crate) fn read(&mut self, r: PayloadRef, seq: i64) -> io::Result<Vec<u8>> {
        for (seg, start, bytes) in &self.pending {
            if *seg == r.seg && r.off >= *start {
                let from = usize::try_from(r.off - start).unwrap_or(usize::MAX);
                let to = from
                    .saturating_add(HEADER_LEN as usize)
                    .saturating_add(r.len as usize);
                if let Some(rec) = bytes.get(from..to) {
                    check_header(&rec[..HEADER_LEN as usize], r, seq)?;
                    return Ok(rec[HEADER_LEN as usize..].to_vec());
                }
            }
        }
        read_record(self.file(r.seg, false)?, r, seq)
    }

    /// Forgets segment `seg` (nothing points into it any more) and answers
    /// the file's path, for the caller to delete.
    pub(crate) fn forget(&mut self, seg: u32) -> PathBuf {
        self.open.remove(&seg);
        self.on_disk.remove(&seg);
        self.files.path(seg)
    }

    /// Deletes segment `seg` (nothing points into it any more).
    #[cfg(test)]
    pub(crate) fn remove(&mut self, seg: u32) -> io::Result<()> {
        match std::fs::remove_file(self.forget(seg)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn file(&mut self, seg: u32, create: bool) -> io::Result<&Arc<File>> {
        if !self.open.contains_key(&seg) {
            let path = self.files.path(seg);
            let file = if create {
                // A spare's blocks are overwritten in place.
                let spare = self.files.take_spare(seg);
                match OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(!spare)
                    .open(&path)
                {
                    Ok(f) => {
                        // The new name must survive a power loss before any
                        // committed row points into the file.
                        File::open(&self.files.dir)?.sync_all()?;
                        f
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        OpenOptions::new().read(true).write(true).open(&path)?
                    }
                    Err(e) => return Err(e),
                }
            } else {
                File::open(&path)?
            };
            self.on_disk.insert(seg);
            self.open.insert(seg, Arc::new(file));
        }
        self.open
            .get(&seg)
            .ok_or_else(|| io::Error::other("segment handle vanished"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_segments_are_spares_that_new_segments_take_over() {
        let dir = tempfile::tempdir().unwrap();
        let files = SegmentFiles::for_db(&dir.path().join("s.db"));
        let mut log = PayloadLog::new(files.clone(), 100, 1, []);
        for seq in 1..=4 {
            // 12 + 80 bytes: one record a segment.
            log.append(seq, &[seq as u8; 80]).unwrap();
        }
        log.flush().unwrap();
        assert_eq!(files.list().unwrap().len(), 4);
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let first = ino(&files.path(1));
        // Two become spares, the third is deleted; spares are not segments.
        for (seg, want) in [
            (1, Retired::Spare),
            (2, Retired::Spare),
            (3, Retired::Deleted),
        ] {
            assert_eq!(files.retire(&log.forget(seg)).unwrap(), want);
        }
        assert_eq!(files.retire(&files.path(3)).unwrap(), Retired::Gone);
        assert_eq!(files.spares(), 2);
        assert_eq!(files.list().unwrap(), vec![(4, 92)]);
        // The next segment is a spare renamed: the old bytes are still
        // there, behind what is written, and never read for a payload.
        let r = log.append(9, b"new").unwrap();
        assert_eq!(r.seg, 5);
        log.flush().unwrap();
        assert_eq!(files.spares(), 1);
        assert_eq!(ino(&files.path(5)), first);
        assert_eq!(files.list().unwrap(), vec![(4, 92), (5, 92)]);
        assert_eq!(files.read(r, 9).unwrap(), b"new");
        assert!(files
            .read(
                PayloadRef {
                    off: 0,
                    len: 80,
                    seg: 5
                },
                1
            )
            .is_err());
        // A spare never replaces a segment that exists.
        std::fs::write(files.path(6), b"keep").unwrap();
        assert!(!files.take_spare(6));
        assert_eq!(std::fs::read(files.path(6)).unwrap(), b"keep");
        assert_eq!(files.spares(), 1);
    }

    #[test]
    fn appended_records_read_back_before_and_after_the_flush_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let files = SegmentFiles::for_db(&dir.path().join("s.db"));
        let mut log = PayloadLog::new(files.clone(), 100, 1, []);
        let a = log.append(1, &[7u8; 40]).unwrap();
        let b = log.append(2, b"hello").unwrap();
        // 52 + 17 bytes fit in 100; the next 52 do not.
        let c = log.append(3, &[9u8; 40]).unwrap();
        assert_eq!(
            (a.seg, a.off, b.seg, b.off, c.seg, c.off),
            (1, 0, 1, 52, 2, 0)
        );
        assert_eq!(log.read(b, 2).unwrap(), b"hello");
        log.flush().unwrap();
        assert_eq!(log.read(a, 1).unwrap(), vec![7u8; 40]);
        assert_eq!(files.read(c, 3).unwrap(), vec![9u8; 40]);
        assert_eq!(files.list().unwrap(), vec![(1, 69), (2, 52)]);
        // A row that does not match the record is refused.
        assert!(files.read(b, 1).is_err());
        assert!(log.read(PayloadRef { len: 4, ..b }, 2).is_err());
        log.remove(1).unwrap();
        assert!(files.read(a, 1).is_err());
        assert_eq!(log.on_disk().collect::<Vec<_>>(), vec![2]);
        // After a failure nothing more goes into the segment.
        log.append(4, b"x").unwrap();
        log.abandon();
        assert!(!log.has_pending());
        assert_eq!(log.append(5, b"y").unwrap().seg, 3);
    }
}
