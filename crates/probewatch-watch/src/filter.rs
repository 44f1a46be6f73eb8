//! Which files and directories of a spool are watched: include/exclude globs.

use std::path::Path;

use globset::{Glob, GlobSet, GlobSetBuilder};

/// Exclusions every spool gets unless its config replaces them: hidden files, editor swap
/// and backup files, and the `*.tmp` names that write-then-rename writers use.
pub const DEFAULT_EXCLUDE: &[&str] = &[".*", "*.tmp", "*.swp", "*~"];

/// A bad glob in the config.
#[derive(Debug, thiserror::Error)]
#[error("invalid glob {pattern:?}: {source}")]
pub struct FilterError {
    /// The pattern as written.
    pub pattern: String,
    /// What globset said.
    pub source: globset::Error,
}

/// Include and exclude globs. A pattern without `/` matches a file's name; a pattern with
/// `/` matches its path relative to the spool root. Exclude patterns also prune directories.
#[derive(Debug, Clone)]
pub struct Filter {
    include: GlobSet,
    exclude: GlobSet,
}

fn build(patterns: &[String]) -> Result<GlobSet, FilterError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern).map_err(|source| FilterError {
            pattern: pattern.clone(),
            source,
        })?;
        builder.add(glob);
    }
    builder.build().map_err(|source| FilterError {
        pattern: patterns.join(" "),
        source,
    })
}

impl Filter {
    /// Builds a filter; an empty include list means every file.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter, FilterError> {
        let include = if include.is_empty() {
            vec!["*".to_string()]
        } else {
            include.to_vec()
        };
        Ok(Filter {
            include: build(&include)?,
            exclude: build(exclude)?,
        })
    }

    fn matches(set: &GlobSet, relative: &Path) -> bool {
        let name_matches = relative
            .file_name()
            .is_some_and(|name| set.is_match(Path::new(name)));
        name_matches || set.is_match(relative)
    }

    /// True when a file at `relative` (to the spool root) is to be ingested.
    pub fn accepts_file(&self, relative: &Path) -> bool {
        Self::matches(&self.include, relative) && !Self::matches(&self.exclude, relative)
    }

    /// True when a directory at `relative` is to be watched and scanned.
    pub fn accepts_dir(&self, relative: &Path) -> bool {
        !Self::matches(&self.exclude, relative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_skip_temporary_and_hidden_files() {
        let f = Filter::new(&strings(&["*.xml"]), &strings(DEFAULT_EXCLUDE)).expect("valid");
        assert!(f.accepts_file(Path::new("a.xml")));
        assert!(f.accepts_file(Path::new("sub/dir/a.xml")));
        assert!(!f.accepts_file(Path::new(".a.xml")));
        assert!(!f.accepts_file(Path::new("a.xml.tmp")));
        assert!(!f.accepts_file(Path::new("a.xml~")));
        assert!(!f.accepts_file(Path::new("a.txt")));
        assert!(!f.accepts_dir(Path::new(".staging")));
        assert!(f.accepts_dir(Path::new("web")));
    }

    #[test]
    fn relative_path_patterns() {
        let f = Filter::new(&strings(&["web/*.xml"]), &[]).expect("valid");
        assert!(f.accepts_file(Path::new("web/a.xml")));
        assert!(!f.accepts_file(Path::new("db/a.xml")));
        assert!(Filter::new(&strings(&["a[b"]), &[]).is_err());
    }
}
