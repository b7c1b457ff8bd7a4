//! The one file writer every oxroot program uses: CA keys and the config (the service), the
//! state directory (the device agent), profiles, exports and CRLs (`enrollctl`).
//!
//! ```text
//!  .<name>.tmp.<pid>.<n>  created with O_EXCL and its final mode ─▶ write ─▶ fsync
//!      ├─ Existing::Replace ─▶ rename over <name>          (readers see the old or the new file)
//!      └─ Existing::Refuse  ─▶ link to <name>, fails if it exists ─▶ unlink the temporary
//!  ─▶ fsync the directory (the rename or link itself is durable only then)
//! ```
//!
//! A crash leaves either the old file or the new one, never a torn file, and a secret file
//! never exists on disk with wider permissions than asked for, not even as a temporary. A
//! crash between the write and the rename can leave a temporary behind; the next write of the
//! same name removes it. Two processes must not write the same file at the same time.
#![forbid(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Permission bits of a file only its owner may read (keys, profiles' private keys).
pub const PRIVATE: u32 = 0o600;
/// Permission bits of a public file (certificates, configuration, CRLs).
pub const PUBLIC: u32 = 0o644;

/// What to do when the file already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Replace it atomically.
    Replace,
    /// Leave it alone and fail with [`io::ErrorKind::AlreadyExists`].
    Refuse,
}

/// Marks temporary files: `.<name>.tmp.<pid>.<n>`.
const TEMP_MARK: &str = ".tmp.";

/// Writes `contents` to `path` atomically and durably; `mode` is the permission bits (Unix)
/// the file has from its creation on.
///
/// # Errors
/// The I/O error of the step that failed (with [`Existing::Refuse`],
/// [`io::ErrorKind::AlreadyExists`] if `path` exists). The temporary file is removed and an
/// existing `path` is untouched.
pub fn write_atomically(
    path: &Path,
    contents: &[u8],
    mode: u32,
    existing: Existing,
) -> io::Result<()> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = parent(path);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    remove_stale_temporaries(dir, name);
    let temporary = dir.join(format!(
        ".{name}{TEMP_MARK}{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = write_new(&temporary, contents, mode).and_then(|()| match existing {
        Existing::Replace => fs::rename(&temporary, path),
        // link(2) never replaces: it fails if the name exists, atomically.
        Existing::Refuse => {
            fs::hard_link(&temporary, path).and_then(|()| fs::remove_file(&temporary))
        }
    });
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written?;
    sync_directory(dir)
}

/// Creates `path` exclusively with `mode`, writes and fsyncs it.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes the directory's entries durable (a rename or link is only then).
///
/// # Errors
/// The I/O error.
pub fn sync_directory(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The directory a path's file is in (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Removes temporaries a crashed write of `name` left behind. Best effort: a leftover is
/// harmless (nothing reads it), only untidy.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}{TEMP_MARK}");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The name a crashed write of `path` leaves its temporary under (for tests that simulate
/// one).
#[must_use]
pub fn temporary_name(path: &Path, pid: u32, n: u32) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent(path).join(format!(".{name}{TEMP_MARK}{pid}.{n}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replace_writes_then_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        write_atomically(&path, b"one", PUBLIC, Existing::Replace).unwrap();
        write_atomically(&path, b"two", PUBLIC, Existing::Replace).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(names(dir.path()), ["file"]);
    }

    #[test]
    fn refuse_never_touches_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_atomically(&path, b"first", PRIVATE, Existing::Refuse).unwrap();
        let error = write_atomically(&path, b"second", PRIVATE, Existing::Refuse).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(names(dir.path()), ["key"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_mode_is_the_one_asked_for_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let secret = dir.path().join("secret");
        write_atomically(&secret, b"k", PRIVATE, Existing::Refuse).unwrap();
        assert_eq!(mode(&secret), 0o600);
        let public = dir.path().join("public");
        write_atomically(&public, b"c", PUBLIC, Existing::Replace).unwrap();
        assert_eq!(mode(&public) & 0o600, 0o600);
        assert_eq!(mode(&public) & 0o077 & !0o044, 0);
    }

    #[test]
    fn a_leftover_temporary_is_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crl.pem");
        let leftover = temporary_name(&path, 999, 0);
        fs::write(&leftover, b"half").unwrap();
        write_atomically(&path, b"whole", PUBLIC, Existing::Replace).unwrap();
        assert!(!leftover.exists());
        assert_eq!(names(dir.path()), ["crl.pem"]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub");
        fs::create_dir(&path).unwrap();
        // A directory cannot be replaced by a file: the rename fails after the write.
        assert!(write_atomically(&path, b"x", PUBLIC, Existing::Replace).is_err());
        assert!(path.is_dir());
        assert_eq!(names(dir.path()), ["sub"]);
        let missing = dir.path().join("no/such/dir/file");
        assert!(write_atomically(&missing, b"x", PUBLIC, Existing::Replace).is_err());
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        let error = write_atomically(Path::new("/"), b"x", PUBLIC, Existing::Replace).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
