//! Directory walking shared by the scanner and one-shot imports.

use std::fs::Metadata;
use std::path::{Path, PathBuf};

use crate::filter::Filter;

/// Walks `start` (inside `root`) depth-first without following symlinks.
///
/// `on_dir` is called for every directory *before* its entries are read, so a caller that
/// adds an inotify watch there cannot miss a file created during the walk: it is either seen
/// by the walk or reported by the watch. `on_file` gets every regular file the filter accepts,
/// with its metadata. Symlinks are never followed: a link into the spool would count a file
/// twice, and a link out of it would read files the spool's owner did not put there.
/// Unreadable directories are logged and skipped.
pub fn walk_files(
    root: &Path,
    start: &Path,
    filter: &Filter,
    skip_dirs: &[PathBuf],
    on_dir: &mut dyn FnMut(&Path),
    on_file: &mut dyn FnMut(PathBuf, Metadata),
) {
    let mut stack = vec![start.to_path_buf()];
    while let Some(dir) = stack.pop() {
        on_dir(&dir);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err, "cannot read spool directory");
                continue;
            }
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            let Ok(relative) = path.strip_prefix(root) else {
                continue;
            };
            if file_type.is_dir() {
                if filter.accepts_dir(relative) && !skip_dirs.iter().any(|s| path.starts_with(s)) {
                    stack.push(path);
                }
            } else if file_type.is_file() && filter.accepts_file(relative) {
                // The file may vanish between listing and stat; that is not an error.
                if let Ok(meta) = std::fs::symlink_metadata(&path) {
                    on_file(path, meta);
                }
            } else if file_type.is_symlink() && filter.accepts_file(relative) {
                tracing::debug!(path = %path.display(), "ignoring symlink in spool");
            }
        }
    }
}
