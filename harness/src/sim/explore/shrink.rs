//! [`shrink`]: a smaller case that still breaks the same invariant — by dropping steps
//! (halves, quarters, …, single steps, as in delta debugging), then participants no step
//! names, then moving steps earlier. Every candidate is a full re-run with the same seed.

use super::{run_case, Case, ExploreError, Run};
use crate::judge::{violations, Violation};

/// The result of shrinking.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The smallest failing case found.
    pub case: Case,
    /// What it broke.
    pub violations: Vec<Violation>,
    /// Its run.
    pub run: Run,
    /// How many runs shrinking took.
    pub runs: usize,
}

/// Shrinks `case`, which broke `broken`, spending at most `max_runs` runs. The result
/// breaks the same invariant as `broken[0]`.
pub fn shrink(case: &Case, broken: &[Violation], max_runs: usize) -> Result<Shrunk, ExploreError> {
    let invariant = broken.first().map_or(0, |v| v.invariant);
    let mut runs = 1;
    let run = run_case(case)?;
    let found = violations(&run.record);
    let mut best = Shrunk { case: case.clone(), violations: found, run, runs };
    let try_case = |candidate: Case, best: &mut Shrunk, runs: &mut usize| {
        if *runs >= max_runs {
            return Ok::<_, ExploreError>(false);
        }
        *runs += 1;
        let run = run_case(&candidate)?;
        let found = violations(&run.record);
        if found.iter().any(|v| v.invariant == invariant) {
            *best = Shrunk { case: candidate, violations: found, run, runs: *runs };
            return Ok(true);
        }
        Ok(false)
    };
    'outer: loop {
        // Drop chunks of steps, largest first.
        let len = best.case.schedule.steps.len();
        let mut size = len.div_ceil(2).max(1);
        while size >= 1 && len > 0 {
            for start in (0..len).step_by(size) {
                let mut candidate = best.case.clone();
                candidate.schedule.steps.drain(start..(start + size).min(len));
                if try_case(candidate, &mut best, &mut runs)? {
                    continue 'outer;
                }
            }
            if size == 1 {
                break;
            }
            size = size.div_ceil(2);
        }
        // Fewer participants, if the last one is not named by any step.
        let last = format!("p{}", best.case.participants - 1);
        if best.case.participants > 2 && !best.case.schedule.mentions(&last) {
            let mut candidate = best.case.clone();
            candidate.participants -= 1;
            if try_case(candidate, &mut best, &mut runs)? {
                continue 'outer;
            }
        }
        // Each step as early as its predecessor allows (halfway there).
        for index in 0..best.case.schedule.steps.len() {
            let floor = if index == 0 { 2_000 } else { best.case.schedule.steps[index - 1].at_ms };
            let at = best.case.schedule.steps[index].at_ms;
            if at > floor + 100 {
                let mut candidate = best.case.clone();
                candidate.schedule.steps[index].at_ms = floor + (at - floor) / 2;
                if try_case(candidate, &mut best, &mut runs)? {
                    continue 'outer;
                }
            }
        }
        break;
    }
    best.runs = runs;
    Ok(best)
}
