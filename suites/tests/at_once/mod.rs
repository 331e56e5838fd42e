//! Checking a table's cells several at a time inside one test, for tables whose cells spend
//! their time waiting on scenario timelines rather than on the CPU (libtest runs only two
//! tests at once on 2 cores). Every cell runs to the end; the test fails listing each cell
//! that failed, with its error.

use std::future::Future;

use anyhow::{ensure, Result};
use futures_util::stream::{self, StreamExt};

/// Runs `check` on every cell of `cells`, `at_once` at a time; `name` names a cell in the
/// failure. `what` says what the table is ("the Go SDK's library cells").
pub async fn check_each<'a, T, F, Fut>(
    what: &str,
    cells: &'a [T],
    at_once: usize,
    name: impl Fn(&T) -> String,
    check: F,
) -> Result<()>
where
    F: Fn(&'a T) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let results: Vec<(String, Result<()>)> = stream::iter(cells)
        .map(|cell| {
            let label = name(cell);
            let run = check(cell);
            async move { (label, run.await) }
        })
        .buffer_unordered(at_once.max(1))
        .collect()
        .await;
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|(label, result)| result.err().map(|e| format!("{label}: {e:#}")))
        .collect();
    ensure!(
        failed.is_empty(),
        "{} of {} {what} failed:\n\n{}",
        failed.len(),
        cells.len(),
        failed.join("\n\n")
    );
    Ok(())
}
