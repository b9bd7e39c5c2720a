//! Directories held open, and every file operation done relative to them.
//!
//! A state directory is user-supplied and may sit in a directory another
//! user can write to; a path that was checked can be swapped for a symlink
//! before it is used. So bgt opens the state directory once
//! (`O_DIRECTORY|O_NOFOLLOW`), checks owner and mode on that descriptor, and
//! reaches everything below it through the `*at` calls: the directory that
//! was checked is the one used, and no name inside it is ever followed when
//! it is a symlink (each open, stat, rename and unlink is `NOFOLLOW`).
//!
//! The paths kept beside the descriptors are for messages and JSON only.

use nix::dir::Dir as DirStream;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags, openat, renameat2};
use nix::sys::stat::{FileStat, Mode, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Mode of every directory bgt creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file bgt creates.
pub const FILE_MODE: u32 = 0o600;

/// An open directory and the path it was opened by (for messages).
#[derive(Debug)]
pub struct DirFd {
    fd: OwnedFd,
    path: PathBuf,
}

/// What a file system has free, as [`DirFd::free_space`] tells.
pub struct FreeSpace {
    pub bytes: u64,
    pub blocks: u64,
    pub inodes: u64,
}

/// Whether a file has no other name than ours: written in place, a file
/// with a second link (a `cp -al` copy of the state directory) would
/// change under that name too.
fn only_link(info: &std::fs::Metadata) -> bool {
    info.nlink() == 1
}

/// How to open a file below a [`DirFd`]; symlinks are never followed.
#[derive(Clone, Copy, Debug)]
pub enum Access {
    Read,
    /// Read and write an existing file.
    ReadWrite,
    /// Append to an existing file.
    Append,
    /// Create a new file (0600) that must not exist yet.
    CreateNew,
    /// Open for read and write, creating it (0600) if needed.
    CreateOrOpen,
}

/// A name part of this writer's own, for the files it writes before renaming
/// them into place: the pid tells processes apart, the count the threads of
/// one process (two `bg_stop` at once in the MCP server, `bgt stop T T`),
/// so that no two writers ever share a temp file.
pub fn writer_tag() -> String {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}.{n}", std::process::id())
}

fn io(err: Errno) -> io::Error {
    io::Error::from(err)
}

impl From<DirFd> for OwnedFd {
    fn from(dir: DirFd) -> OwnedFd {
        dir.fd
    }
}

impl AsFd for DirFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl DirFd {
    /// Opens a directory by path, refusing a symlink as its last component.
    pub fn open(path: &Path) -> io::Result<DirFd> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .map_err(io)?;
        Ok(DirFd {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Wraps a descriptor handed over by another process (the supervisor's task directory).
    pub fn from_fd(fd: OwnedFd, path: PathBuf) -> DirFd {
        DirFd { fd, path }
    }

    /// The path this directory was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Duplicates the descriptor (close-on-exec).
    pub fn try_clone(&self) -> io::Result<DirFd> {
        Ok(DirFd {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// Owner, mode and type of the directory itself, from the descriptor.
    pub fn stat(&self) -> io::Result<FileStat> {
        fstat(self.fd.as_fd()).map_err(io)
    }

    /// Opens the subdirectory `name` (never through a symlink).
    pub fn open_dir(&self, name: &str) -> io::Result<DirFd> {
        let fd = openat(
            self.fd.as_fd(),
            name,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .map_err(io)?;
        Ok(DirFd {
            fd,
            path: self.path.join(name),
        })
    }

    /// Creates the subdirectory `name` with mode 0700 (whatever the umask).
    pub fn create_dir(&self, name: &str) -> io::Result<()> {
        mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(DIR_MODE)).map_err(io)
    }

    /// Opens (or creates, per `access`) the file `name`; never follows a symlink.
    /// Created files are 0600 whatever the umask.
    pub fn open_file(&self, name: &str, access: Access) -> io::Result<File> {
        let base = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let flags = match access {
            Access::Read => OFlag::O_RDONLY,
            Access::ReadWrite => OFlag::O_RDWR,
            Access::Append => OFlag::O_WRONLY | OFlag::O_APPEND,
            Access::CreateNew => OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL,
            Access::CreateOrOpen => OFlag::O_RDWR | OFlag::O_CREAT,
        };
        let fd = openat(
            self.fd.as_fd(),
            name,
            base | flags,
            Mode::from_bits_truncate(FILE_MODE),
        )
        .map_err(io)?;
        let file = File::from(fd);
        // One fstat answers both questions (a task start opens six files).
        let info = fstat(file.as_fd()).map_err(io)?;
        if info.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG {
            return Err(io::Error::other("not a regular file"));
        }
        // A file we may just have created: its mode must not depend on the
        // umask. Never widen one we did not create, though.
        if matches!(access, Access::CreateNew | Access::CreateOrOpen)
            && info.st_mode & 0o777 & !FILE_MODE != 0
        {
            fchmod(file.as_fd(), Mode::from_bits_truncate(FILE_MODE)).map_err(io)?;
        }
        Ok(file)
    }

    /// Reads the whole file `name`.
    pub fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let fd = openat(
            self.fd.as_fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        read_regular(File::from(fd))
    }

    /// Reads the whole file at `path` (such as `t-3f9a2c/meta.json`) below
    /// this directory in one open: `openat2` with `RESOLVE_BENEATH |
    /// RESOLVE_NO_SYMLINKS` refuses a symlink in any component and any way
    /// out of this directory, the guarantee `open_dir` + [`DirFd::read`] give
    /// in two opens. `status` reads thousands of records, so the saved open
    /// and close count. Fails (ENOSYS, EPERM under some sandboxes) where the
    /// kernel lacks it: callers fall back to the two opens, which also give
    /// the precise message for any other failure.
    pub fn read_beneath(&self, path: &str) -> io::Result<Vec<u8>> {
        use nix::fcntl::{OpenHow, ResolveFlag, openat2};
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        let fd = openat2(self.fd.as_fd(), path, how).map_err(io)?;
        read_regular(File::from(fd))
    }

    /// Type, owner and mode of `name` itself (a symlink is reported as one).
    pub fn stat_at(&self, name: &str) -> io::Result<FileStat> {
        fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io)
    }

    /// True when `name` exists (as anything, a symlink included).
    pub fn exists(&self, name: &str) -> bool {
        self.stat_at(name).is_ok()
    }

    /// Creates the file `name` (0600), empty: a file already there is a
    /// leftover of a killed writer of ours (temp and spare names are ours
    /// alone), removed first, never opened and reused.
    pub fn create_fresh(&self, name: &str) -> io::Result<File> {
        match self.open_file(name, Access::CreateNew) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EEXIST) => {
                self.remove_file(name)?;
                self.open_file(name, Access::CreateNew)
            }
            other => other,
        }
    }

    /// Writes `data` to `name` so readers see the old or the new content,
    /// never a mix: a private temp file, fsync'd when `durable`, renamed over.
    pub fn write_atomic(&self, name: &str, data: &[u8], durable: bool) -> io::Result<()> {
        let tmp = format!(".{name}.{}.tmp", writer_tag());
        let result = (|| {
            let mut file = self.create_fresh(&tmp)?;
            file.write_all(data)?;
            if durable {
                file.sync_all()?;
            }
            self.rename(&tmp, name)
        })();
        if result.is_err() {
            let _ = self.remove_file(&tmp);
        }
        result
    }

    /// Creates `name` (0600) with at least `size` bytes of blocks allocated,
    /// rounded up to whole 4 KiB blocks, for a later write that must not
    /// need free space ([`DirFd::replace_with`]); nothing is left when it
    /// fails.
    pub fn reserve(&self, name: &str, size: usize) -> io::Result<()> {
        let size = size.next_multiple_of(4096);
        let result = (|| {
            let mut file = self.create_fresh(name)?;
            // The blocks must exist, not a hole or a bare set_len: fallocate
            // allocates them (tmpfs too) in one call; where it is not
            // supported, real zeros do.
            use nix::fcntl::{FallocateFlags, fallocate};
            match fallocate(&file, FallocateFlags::empty(), 0, size as i64) {
                Ok(()) => Ok(()),
                Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => file.write_all(&vec![0u8; size]),
                Err(e) => Err(io(e)),
            }
        })();
        if result.is_err() {
            let _ = self.remove_file(name);
        }
        result
    }

    /// Writes `data` in place into the file `reserved` (made by
    /// [`DirFd::reserve`], never opened by a reader, so the write tears no
    /// read, and its blocks allocated, so it needs no free space), cuts it
    /// to size, fsyncs it when `durable` and renames it over `name`.
    /// `Ok(false)`: it is too small for `data`, or has another link (left
    /// as it is).
    ///
    /// Not durable, it is less safe than [`DirFd::write_atomic`] after a
    /// power loss: ext4 starts the writeback of a temp file renamed over
    /// another (auto_da_alloc) but not of blocks allocated ahead, so such a
    /// write may read as zeros after a crash soon after.
    pub fn replace_with(
        &self,
        reserved: &str,
        name: &str,
        data: &[u8],
        durable: bool,
    ) -> io::Result<bool> {
        let file = self.open_file(reserved, Access::ReadWrite)?;
        let info = file.metadata()?;
        if info.len() < data.len() as u64 || !only_link(&info) {
            return Ok(false);
        }
        file.write_all_at(data, 0)?;
        file.set_len(data.len() as u64)?;
        if durable {
            file.sync_all()?;
        }
        self.rename(reserved, name)?;
        Ok(true)
    }

    /// Replaces the content of `name`, a small file every reader and writer
    /// of which holds one lock (a cursor, a queue's counter), so nobody
    /// reads it while it changes. An existing file is rewritten in place:
    /// one `pwrite` at offset 0, padded with spaces to the file's length (its
    /// readers skip trailing white space; a one-page write is not cut short
    /// by a signal, so a kill leaves the old or the new content, never a
    /// mix). That needs no free block (a full disk) and makes and frees no
    /// inode. A new file, one that may not be only ours (a planted symlink;
    /// a hard link: a copy made with `cp -al` must not change) or one over a
    /// page is written through [`DirFd::write_atomic`].
    pub fn rewrite_locked(&self, name: &str, data: &[u8]) -> io::Result<()> {
        const PAGE: usize = 4096;
        if let Ok(existing) = self.open_file(name, Access::ReadWrite) {
            let info = existing.metadata()?;
            let len = info.len() as usize;
            if len <= PAGE && data.len() <= PAGE && only_link(&info) {
                let mut padded = data.to_vec();
                padded.resize(data.len().max(len), b' ');
                return existing.write_all_at(&padded, 0);
            }
        }
        self.write_atomic(name, data, false)
    }

    /// Free blocks and inodes of the file system this directory is on (the
    /// blocks kept back for root count for root), if `statvfs` tells.
    pub fn free_space(&self) -> Option<FreeSpace> {
        let fs = nix::sys::statvfs::fstatvfs(&self.fd).ok()?;
        let blocks = if nix::unistd::geteuid().is_root() {
            fs.blocks_free()
        } else {
            fs.blocks_available()
        };
        Some(FreeSpace {
            bytes: blocks * fs.fragment_size(),
            blocks,
            inodes: fs.files_available(),
        })
    }

    /// Renames `from` to `to` within this directory, replacing `to`.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        nix::fcntl::renameat(self.fd.as_fd(), from, self.fd.as_fd(), to).map_err(io)
    }

    /// Renames `from` to `to` within this directory; fails with EEXIST when
    /// `to` exists.
    pub fn rename_noreplace(&self, from: &str, to: &str) -> io::Result<()> {
        match renameat2(
            self.fd.as_fd(),
            from,
            self.fd.as_fd(),
            to,
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Err(Errno::EINVAL | Errno::ENOSYS) => {
                // A filesystem without RENAME_NOREPLACE: rename(2) refuses a
                // non-empty directory as target, and ours never are empty.
                if self.exists(to) {
                    return Err(io::Error::from_raw_os_error(nix::libc::EEXIST));
                }
                self.rename(from, to)
            }
            other => other.map_err(io),
        }
    }

    /// Removes the file (or symlink) `name`.
    pub fn remove_file(&self, name: &str) -> io::Result<()> {
        unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir).map_err(io)
    }

    /// Removes `name` and, if it is a directory, everything in it, without
    /// ever following a symlink: links are unlinked, never entered.
    pub fn remove_tree(&self, name: &str) -> io::Result<()> {
        match self.remove_file(name) {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(nix::libc::EISDIR | nix::libc::EPERM)) => {}
            Err(e) => return Err(e),
        }
        let sub = self.open_dir(name)?;
        for entry in sub.entries()? {
            let Some(entry) = entry.to_str() else {
                // bgt never writes such names; remove them all the same.
                sub.remove_tree_os(&entry)?;
                continue;
            };
            sub.remove_tree(entry)?;
        }
        unlinkat(self.fd.as_fd(), name, UnlinkatFlags::RemoveDir).map_err(io)
    }

    fn remove_tree_os(&self, name: &std::ffi::OsStr) -> io::Result<()> {
        match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(()),
            Err(_) => unlinkat(self.fd.as_fd(), name, UnlinkatFlags::RemoveDir).map_err(io),
        }
    }

    /// Names in this directory, without `.` and `..`.
    pub fn entries(&self) -> io::Result<Vec<OsString>> {
        let fd = openat(
            self.fd.as_fd(),
            ".",
            OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .map_err(io)?;
        let mut stream = DirStream::from_fd(fd).map_err(io)?;
        let mut names = Vec::new();
        for entry in stream.iter() {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        }
        Ok(names)
    }
}

/// Reads all of `file`, which must be a regular file, with one `fstat` and
/// (for a file that does not change meanwhile) one `read`: the buffer is one
/// byte larger than the size `fstat` gave, so a read that returns exactly
/// that size has reached the end. Anything else (a file that grew or shrank)
/// is read on until `read` returns 0.
fn read_regular(mut file: File) -> io::Result<Vec<u8>> {
    let info = fstat(file.as_fd()).map_err(io)?;
    if info.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG {
        return Err(io::Error::other("not a regular file"));
    }
    let size = usize::try_from(info.st_size).unwrap_or(0);
    // Sized from fstat, but a (planted, sparse) huge file grows the buffer
    // as it is read instead of asking for all of it at once.
    let mut data = vec![0u8; size.min(1 << 20) + 1];
    let mut len = 0;
    loop {
        match file.read(&mut data[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len == size {
                    break;
                }
                if len == data.len() {
                    data.try_reserve(len)
                        .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
                    data.resize(len * 2, 0);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    data.truncate(len);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In place (same inode, so no new block) only into a file of its own;
    /// shorter content is padded, a hard-linked copy keeps what it had.
    #[test]
    fn rewrite_locked_writes_in_place_only_into_a_file_of_its_own() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let dir = DirFd::open(root.path()).unwrap();
        let ino = || std::fs::metadata(root.path().join("c")).unwrap().ino();
        let text = || std::fs::read_to_string(root.path().join("c")).unwrap();
        dir.rewrite_locked("c", b"12345\n").unwrap();
        let first = ino();
        dir.rewrite_locked("c", b"7\n").unwrap();
        assert_eq!(ino(), first, "rewritten in place");
        assert_eq!(text(), "7\n    ");
        assert_eq!(text().trim(), "7");
        std::fs::hard_link(root.path().join("c"), root.path().join("copy")).unwrap();
        dir.rewrite_locked("c", b"8\n").unwrap();
        assert_ne!(ino(), first, "a hard-linked file is replaced");
        assert_eq!(text(), "8\n");
        let copy = std::fs::read_to_string(root.path().join("copy")).unwrap();
        assert_eq!(copy, "7\n    ");
    }

    #[test]
    fn remove_tree_never_follows_links() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "x").unwrap();
        let dir = DirFd::open(root.path()).unwrap();
        dir.create_dir("t").unwrap();
        let t = dir.open_dir("t").unwrap();
        t.write_atomic("a", b"1", false).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("t/link")).unwrap();
        dir.remove_tree("t").unwrap();
        assert!(!root.path().join("t").exists());
        assert!(outside.path().join("keep").exists());
    }

    #[test]
    fn reads_whole_files_and_never_through_links_or_out() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let dir = DirFd::open(root.path()).unwrap();
        dir.create_dir("t").unwrap();
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        for (name, data) in [("empty", &b""[..]), ("small", b"{}\n"), ("big", &big)] {
            std::fs::write(root.path().join("t").join(name), data).unwrap();
            assert_eq!(dir.open_dir("t").unwrap().read(name).unwrap(), data);
            match dir.read_beneath(&format!("t/{name}")) {
                // A kernel before 5.6: callers take the two-open path.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSYS) => {}
                read => assert_eq!(read.unwrap(), data),
            }
        }
        std::fs::write(outside.path().join("meta.json"), "secret").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("l")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("meta.json"),
            root.path().join("t/meta.json"),
        )
        .unwrap();
        for path in ["l/meta.json", "t/meta.json", "../x/meta.json", "t"] {
            assert!(dir.read_beneath(path).is_err(), "{path} was read");
        }
        let escape = format!("{}/meta.json", outside.path().display());
        assert!(dir.read_beneath(&escape).is_err(), "absolute path was read");
    }

    #[test]
    fn files_are_private_and_links_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = DirFd::open(root.path()).unwrap();
        let file = dir.open_file("f", Access::CreateNew).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("l")).unwrap();
        assert!(dir.open_file("l", Access::Read).is_err());
        assert!(dir.open_dir("l").is_err());
    }
}
