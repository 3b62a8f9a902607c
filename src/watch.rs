//! Noticing that files read at start-up (TLS certificates, the htpasswd
//! file) have changed, so they can be read again without a restart. A
//! stamp is each file's modification time, length and inode, read through
//! symlinks: an editor's in-place write, `mv` over the file and a
//! Kubernetes secret's symlink swap all change it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

/// A set of files and what they looked like when last read.
pub struct Watched {
    paths: Vec<PathBuf>,
    seen: Mutex<Vec<Stamp>>,
}

impl Watched {
    /// Starts watching `paths` as they are now (just read).
    pub fn new(paths: Vec<PathBuf>) -> Watched {
        let seen = paths.iter().map(|p| stamp(p)).collect();
        Watched {
            paths,
            seen: Mutex::new(seen),
        }
    }

    /// Whether any file changed since the last call (or since `new`); the
    /// change counts as seen either way, so a bad file is reported once.
    pub fn changed(&self) -> bool {
        let now: Vec<Stamp> = self.paths.iter().map(|p| stamp(p)).collect();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == now {
            return false;
        }
        *seen = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_rewrites_and_replacements() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, "one").unwrap();
        let w = Watched::new(vec![a.clone()]);
        assert!(!w.changed());
        std::fs::write(&a, "longer").unwrap();
        assert!(w.changed());
        assert!(!w.changed());
        let b = dir.path().join("b");
        std::fs::write(&b, "longer").unwrap();
        std::fs::rename(&b, &a).unwrap();
        assert!(w.changed(), "a new inode");
        std::fs::remove_file(&a).unwrap();
        assert!(w.changed(), "gone");
    }
}
