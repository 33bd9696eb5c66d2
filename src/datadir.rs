//! The data directory (the folder of `store.path`). It holds every token and the admin
//! key's file, so it is kept private: the folder 0700 and every file of logplex in it 0600
//! (its folders 0700), checked at each start, where a looser mode is fixed with a warning.
//! Only what is logplex's own is changed: a folder open to others that also holds files of
//! someone else (`/var/lib`, a project's root) is left as it is, with a warning (logplex's
//! files in it are still 0600), never made 0700 under its other users; files that are not
//! logplex's are only reported. A folder anyone may write to is refused: another user
//! could put links there in place of our files.
//!
//! It has one owner at a time: an exclusive lock (`flock`) on `logplex.lock`, which records
//! the owner's pid so that a second `serve` can say who holds it. The kernel drops the lock
//! when the owner exits, however it exits, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The lock file in the data directory.
pub const LOCK_FILE: &str = "logplex.lock";
/// The admin key, readable by the owner only, for the local CLI.
pub const KEY_FILE: &str = "admin.key";
/// The durable log's folder, by default in the data directory.
pub const LOG_DIR: &str = "log";

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data directory {dir} is in use by another logplex (pid {pid})")]
    InUse { dir: String, pid: String },
    #[error("data directory {dir} is shared ({why}): give store.path a folder of its own")]
    Shared { dir: String, why: String },
    #[error("data directory {dir}: {what}: {source}")]
    Io {
        dir: String,
        what: &'static str,
        source: std::io::Error,
    },
}

/// Whether `name` is one of logplex's entries in a data directory whose database file is
/// `db_name`: the database with its `-wal`, `-shm`, `-journal` (and the `.new` a first
/// start makes), `admin.key`, the lock, the durable log's folder.
pub fn is_ours(name: &str, db_name: &str) -> bool {
    name == KEY_FILE
        || name == LOCK_FILE
        || name == LOG_DIR
        || name == db_name
        || name.strip_prefix(db_name).is_some_and(|rest| {
            matches!(rest, "-wal" | "-shm" | "-journal" | ".new" | ".new-journal")
        })
}

/// The lock of a data directory, held while the server runs and released when dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    pub dir: PathBuf,
}

/// Creates the directory (0700) when missing, makes sure it is private, and takes its
/// lock. Blocking.
pub fn lock(dir: &Path, db_name: &str) -> Result<DirLock, DataDirError> {
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
    let shared = |why: String| DataDirError::Shared {
        dir: shown.clone(),
        why,
    };
    if mode & 0o1000 != 0 {
        return Err(shared("it has the sticky bit, like /tmp".into()));
    }
    if mode & 0o002 != 0 {
        return Err(shared("anyone may write in it".into()));
    }
    if mode & 0o077 != 0 {
        let foreign = std::fs::read_dir(dir)
            .map_err(io("cannot list it"))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| !is_ours(n, db_name));
        match foreign {
            Some(name) => tracing::warn!(
                "data directory {shown} is mode {mode:04o}, open to other users, and holds \
                 {name:?}, which is not logplex's: left as it is (logplex's own files in it \
                 are 0600); give store.path a folder of its own"
            ),
            None => {
                tracing::warn!(
                    "data directory {shown} was mode {mode:04o}, open to other users: set to 0700"
                );
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io("cannot make it private"))?;
            }
        }
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

/// Checks the mode of every entry of the directory: logplex's own (see [`is_ours`]) are
/// made private when they are open to others, files 0600 and folders 0700, with a warning;
/// anything else open to others is only reported. Symbolic links are not followed.
pub fn make_private(dir: &Path, db_name: &str) -> Result<(), DataDirError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DataDirError::Io {
        dir: dir.display().to_string(),
        what: "cannot list it",
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if meta.file_type().is_symlink() || mode & 0o077 == 0 {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_ours(&name, db_name) {
            let private = if meta.is_dir() { 0o700 } else { 0o600 };
            tracing::warn!(
                "{} was mode {mode:04o}, open to other users: set to {private:04o}",
                path.display()
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(private)).map_err(
                |source| DataDirError::Io {
                    dir: dir.display().to_string(),
                    what: "cannot make a file private",
                    source,
                },
            )?;
        } else {
            tracing::warn!(
                "{} in the data directory is mode {mode:04o}; not logplex's, left as it is",
                path.display()
            );
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

    fn mode_of(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn one_owner_at_a_time_and_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let first = lock(&dir, "logplex.db").unwrap();
        assert_eq!(mode_of(&dir), 0o700);
        let e = lock(&dir, "logplex.db").unwrap_err().to_string();
        assert!(
            e.ends_with(&format!(
                "is in use by another logplex (pid {})",
                std::process::id()
            )),
            "{e}"
        );
        drop(first);
        let _again = lock(&dir, "logplex.db").unwrap();

        let loose = |n: &str| {
            std::fs::set_permissions(dir.join(n), PermissionsExt::from_mode(0o644)).unwrap()
        };
        std::fs::write(dir.join("logplex.db-wal"), b"x").unwrap();
        loose("logplex.db-wal");
        std::fs::create_dir(dir.join(LOG_DIR)).unwrap();
        std::fs::set_permissions(dir.join(LOG_DIR), PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        loose("notes.txt");
        let outside = tmp.path().join("outside.txt");
        std::fs::write(&outside, b"x").unwrap();
        std::fs::set_permissions(&outside, PermissionsExt::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("logplex.db-shm")).unwrap();
        make_private(&dir, "logplex.db").unwrap();
        assert_eq!(mode_of(&dir.join("logplex.db-wal")), 0o600);
        assert_eq!(mode_of(&dir.join(LOG_DIR)), 0o700);
        assert_eq!(mode_of(&dir.join(LOCK_FILE)), 0o600);
        assert_eq!(
            mode_of(&dir.join("notes.txt")),
            0o644,
            "not ours: reported only"
        );
        assert_eq!(mode_of(&outside), 0o644, "links are not followed");
    }

    #[test]
    fn only_a_folder_of_our_own_is_made_private() {
        let tmp = tempfile::tempdir().unwrap();
        // Open to others, with only logplex's files: made 0700.
        let ours = tmp.path().join("ours");
        std::fs::create_dir(&ours).unwrap();
        std::fs::write(ours.join("logplex.db"), b"x").unwrap();
        std::fs::write(ours.join(KEY_FILE), b"x").unwrap();
        std::fs::set_permissions(&ours, PermissionsExt::from_mode(0o755)).unwrap();
        drop(lock(&ours, "logplex.db").unwrap());
        assert_eq!(mode_of(&ours), 0o700);
        // Open to others and holding someone else's files: left as it was (ours are 0600).
        let project = tmp.path().join("project");
        std::fs::create_dir(&project).unwrap();
        std::fs::write(project.join("Cargo.toml"), b"x").unwrap();
        std::fs::set_permissions(&project, PermissionsExt::from_mode(0o755)).unwrap();
        drop(lock(&project, "logplex.db").unwrap());
        assert_eq!(mode_of(&project), 0o755);
        assert_eq!(mode_of(&project.join(LOCK_FILE)), 0o600);
        // Sticky, like /tmp: refused.
        std::fs::set_permissions(tmp.path(), PermissionsExt::from_mode(0o1777)).unwrap();
        let e = lock(tmp.path(), "logplex.db").unwrap_err();
        assert!(matches!(e, DataDirError::Shared { .. }), "{e}");
    }

    #[test]
    fn our_names() {
        for n in [
            "logplex.db",
            "logplex.db-wal",
            "logplex.db-shm",
            "admin.key",
            "logplex.lock",
            "log",
        ] {
            assert!(is_ours(n, "logplex.db"), "{n}");
        }
        for n in ["logplex.dbx", "notes.txt", "logplex.db-backup", "other.db"] {
            assert!(!is_ours(n, "logplex.db"), "{n}");
        }
    }
}
