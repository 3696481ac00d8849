//! Config files for the tests: [`ConfigFile`] writes TOML into a fresh temp directory that is
//! removed when the guard is dropped, and can be rewritten while a process reads it (SIGHUP
//! reloads). [`crate::Sluice`] keeps the config file it was started with, so the file lives as
//! long as the process.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// A config file in a temp directory of its own; both are removed on drop.
#[derive(Debug)]
pub struct ConfigFile {
    dir: TempDir,
    path: PathBuf,
}

impl ConfigFile {
    /// Writes `toml` to `sluice.toml` in a fresh temp directory.
    pub fn new(toml: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sluice-cfg-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("sluice.toml");
        let file = Self { dir, path };
        file.write(toml);
        file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as a string, for `--config`.
    pub fn arg(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }

    /// The temp directory holding the file (a clean working directory for a process, too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces the file's contents with `toml`.
    pub fn write(&self, toml: &str) {
        std::fs::write(&self.path, toml).expect("write config");
    }
}

/// Writes `toml` to a fresh file in a fresh temp directory and returns its path; the file is
/// never removed (it lives until the process exits and after).
///
/// Kept for older callers: prefer [`ConfigFile::new`] (removed on drop) or
/// [`crate::Builder::config`] (the running `Sluice` keeps its config file).
pub fn config_file(toml: &str) -> PathBuf {
    let file = ConfigFile::new(toml);
    let _ = file.dir.keep();
    file.path
}
