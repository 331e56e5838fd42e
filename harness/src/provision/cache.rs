//! The cache source: a build made earlier into `<cache>/bin/<program>-<version>`.

use super::command::is_executable;
use super::order::Search;
use super::Source;

/// Looks for the cached build, recording the attempt.
pub(super) fn find(search: &mut Search<'_>) -> Option<Source> {
    let cached = search.env.cached_binary(search.program, search.version);
    if is_executable(&cached) {
        search.choose("cache", format!("{}", cached.display()), Source::Cache(cached))
    } else {
        search.record("cache", false, format!("no {}", cached.display()));
        None
    }
}
