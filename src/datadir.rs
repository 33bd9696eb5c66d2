//! The data directory (the folder of `store.path`). It holds every token and the admin
//! key's file, so it is kept private: the folder 0700 and every file in it 0600 (folders
//! 0700), checked at each start (a looser mode on what belongs to our user is fixed, with a
//! warning). It has one owner at a time: an
//! exclusive lock (`flock`) on `logplex.lock`, which records the owner's pid so that a
//! second `serve` can say who holds it. The kernel drops the lock when the owner exits,
//! however it exits, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The lock file in the data directory.
pub const LOCK_FILE: &str = "logplex.lock";
/// The admin key, readable by the owner only, for the local CLI.
pub const KEY_FILE: &str = "admin.key";

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data directory {dir} is in use by another logplex (pid {pid})")]
    InUse { dir: String, pid: String },
    #[error("data directory {dir} is shared ({why}): give store.path a folder of its own")]
    Shared { dir: String, why: &'static str },
    #[error("data directory {dir}: {what}: {source}")]
    Io {
        dir: String,
        what: &'static str,
        source: std::io::Error,
    },
}

/// The lock of a data directory, held while the server runs and released when dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    pub dir: PathBuf,
}

/// Creates the directory (0700) when missing, makes sure it is private, and takes its
/// lock. Blocking.
pub fn lock(dir: &Path) -> Result<DirLock, DataDirError> {
    let shown = dir.display().to_string();
    let io = |what: &'static str| {
        let dir = shown.clone();
        move |source| DataDirError::Io { dir, what, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("cannot create it"))?;
    let meta = std::fs::metadata(dir).map_err(io("cannot read it"))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o1000 != 0 {
        return Err(DataDirError::Shared {
            dir: shown,
            why: "it has the sticky bit, like /tmp",
        });
    }
    if mode & 0o002 != 0 {
        return Err(DataDirError::Shared {
            dir: shown,
            why: "anyone may write in it",
        });
    }
    if mode & 0o077 != 0 {
        tracing::warn!(
            "data directory {shown} was mode {:04o}, open to other users: set to 0700",
            mode
        );
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("cannot make it private"))?;
    }
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io("cannot open its lock file"))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            return Err(DataDirError::InUse {
                dir: shown,
                pid: holder(&mut file),
            })
        }
        Err(e) => return Err(io("cannot lock it")(e.into())),
    }
    file.set_len(0).map_err(io("cannot write its lock file"))?;
    writeln!(file, "{}", std::process::id()).map_err(io("cannot write its lock file"))?;
    Ok(DirLock {
        _file: file,
        dir: dir.to_path_buf(),
    })
}

/// The pid the lock's holder wrote (it writes it just after locking: wait a little).
fn holder(file: &mut File) -> String {
    for _ in 0..10 {
        let mut s = String::new();
        if file.read_to_string(&mut s).is_ok() {
            if let Ok(pid) = s.trim().parse::<u32>() {
                return pid.to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        use std::io::Seek;
        let _ = file.rewind();
    }
    "unknown".into()
}

/// Checks the mode of everything in the directory (and in its folders, such as the
/// durable log's): what belongs to this process's user and is open to others is made
/// private, files 0600 and folders 0700, with a warning; anything else open to others is
/// only reported. Symbolic links are not followed.
pub fn make_private(dir: &Path) -> Result<(), DataDirError> {
    walk_private(dir, dir, rustix::process::geteuid().as_raw(), 0)
}

fn walk_private(top: &Path, dir: &Path, me: u32, depth: usize) -> Result<(), DataDirError> {
    use std::os::unix::fs::MetadataExt;
    let io = |what: &'static str| {
        let dir = top.display().to_string();
        move |source| DataDirError::Io { dir, what, source }
    };
    let entries = std::fs::read_dir(dir).map_err(io("cannot list it"))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            let private = if meta.is_dir() { 0o700 } else { 0o600 };
            if meta.uid() == me {
                tracing::warn!(
                    "{} was mode {mode:04o}, open to other users: set to {private:04o}",
                    path.display()
                );
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(private))
                    .map_err(io("cannot make a file private"))?;
            } else {
                tracing::warn!(
                    "{} in the data directory is mode {mode:04o} and belongs to user {}: \
                     left as it is",
                    path.display(),
                    meta.uid()
                );
            }
        }
        if meta.is_dir() && depth < 4 {
            walk_private(top, &path, me, depth + 1)?;
        }
    }
    Ok(())
}

/// Writes a file readable by the owner only (0600, also when it existed with another mode).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(contents)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_at_a_time_and_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let first = lock(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let e = lock(&dir).unwrap_err().to_string();
        assert!(
            e.ends_with(&format!(
                "is in use by another logplex (pid {})",
                std::process::id()
            )),
            "{e}"
        );
        drop(first);
        let _again = lock(&dir).unwrap();

        std::fs::write(dir.join("logplex.db-wal"), b"x").unwrap();
        std::fs::set_permissions(dir.join("logplex.db-wal"), PermissionsExt::from_mode(0o644))
            .unwrap();
        std::fs::create_dir(dir.join("log")).unwrap();
        std::fs::set_permissions(dir.join("log"), PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("log/00000000000000000000.log"), b"x").unwrap();
        std::fs::set_permissions(
            dir.join("log/00000000000000000000.log"),
            PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        let outside = tmp.path().join("outside.txt");
        std::fs::write(&outside, b"x").unwrap();
        std::fs::set_permissions(&outside, PermissionsExt::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        make_private(&dir).unwrap();
        let mode_of =
            |n: &str| std::fs::metadata(dir.join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode_of("logplex.db-wal"), 0o600);
        assert_eq!(mode_of("log"), 0o700);
        assert_eq!(mode_of("log/00000000000000000000.log"), 0o600);
        assert_eq!(mode_of(LOCK_FILE), 0o600);
        assert_eq!(
            std::fs::metadata(&outside).unwrap().permissions().mode() & 0o777,
            0o644,
            "links are not followed"
        );
    }

    #[test]
    fn a_shared_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), PermissionsExt::from_mode(0o1777)).unwrap();
        let e = lock(tmp.path()).unwrap_err();
        assert!(matches!(e, DataDirError::Shared { .. }), "{e}");
    }
}
