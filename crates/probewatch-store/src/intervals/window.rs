//! One check's runs and results held in memory for a repair, so that a back end whose every
//! statement is a round trip (PostgreSQL) reads what the repairs of many checks need in a
//! few statements, repairs each check in memory with the same [`super::repair_check`] as
//! everywhere, and writes the changes back in a few statements more. Repaired through the
//! database, each check cost ~9 statements: after an out-of-order backlog at 100,000 checks
//! that was 4 s of server time and 4× the ingest's own client time.
//!
//! A window knows which stored runs it did not read. A repair that would look at them, or
//! at results the window does not hold, fails with [`Missing`] rather than answer wrongly;
//! the caller then reads the results asked for, or repairs that check through the database.

use std::collections::{BTreeMap, BTreeSet};

use super::{CheckState, Run, RunResult, RunTable};

/// The stored runs read on each side of a check's dirty span: a repair looks at the run
/// containing its start and the one before, and at the two runs after its end.
pub(crate) const RUNS_EACH_SIDE: usize = 2;

/// What a repair in a [`Window`] needed that the window does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// The check's stored results from `from` to `until`, both included.
    Results { from: i64, until: i64 },
    /// Stored runs that were not read.
    Runs,
}

/// One check's stored runs around a dirty span (see the module doc), and what a repair
/// changed in them.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    check_id: i64,
    state: CheckState,
    /// The stored runs read, and those written since, by start.
    runs: BTreeMap<i64, Run>,
    /// Start-time ranges `[from, until)` that may hold stored runs that were not read.
    unread: Vec<(i64, i64)>,
    /// The stored results read: their range (both ends included) and the rows, by time.
    results: Option<((i64, i64), Vec<RunResult>)>,
    /// What the repair did, for [`Window::changes`].
    deleted: Vec<(i64, i64)>,
    written: BTreeSet<i64>,
    set_open: Option<(Option<Run>, Option<i64>)>,
}

/// What a repair in a [`Window`] changed: apply the deletions first, then the writes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Stored runs starting in each `[from, until)` are gone.
    pub deleted: Vec<(i64, i64)>,
    /// Runs to insert or replace (by start).
    pub written: Vec<Run>,
    /// The check's new open run and usual interval, when set.
    pub open: Option<(Option<Run>, Option<i64>)>,
}

impl Window {
    /// The window for repairing `check_id` around its dirty span `[lo, hi]`: `before`, the
    /// stored runs starting at or before `lo`, newest first, and `after`, those starting
    /// after `hi`, oldest first, each at most [`RUNS_EACH_SIDE`] (fewer: there are no more).
    /// Stored runs all start before the open run in `state`, so none is unread past it.
    pub(crate) fn around(
        check_id: i64,
        state: CheckState,
        (lo, hi): (i64, i64),
        before: &[Run],
        after: &[Run],
    ) -> Window {
        let mut unread = Vec::new();
        if let Some(oldest) = before.get(RUNS_EACH_SIDE - 1) {
            unread.push((i64::MIN, oldest.start));
        }
        if lo < hi {
            unread.push((lo.saturating_add(1), hi.saturating_add(1)));
        }
        if let Some(newest) = after.get(RUNS_EACH_SIDE - 1) {
            let open = state.open.map_or(i64::MAX, |o| o.start);
            unread.push((newest.start.saturating_add(1), open));
        }
        Window {
            check_id,
            state,
            runs: before.iter().chain(after).map(|r| (r.start, *r)).collect(),
            unread,
            results: None,
            deleted: Vec::new(),
            written: BTreeSet::new(),
            set_open: None,
        }
    }

    /// Gives the window the check's stored results from `from` to `until` (both included),
    /// oldest first.
    pub(crate) fn hold_results(&mut self, from: i64, until: i64, rows: Vec<RunResult>) {
        self.results = Some(((from, until), rows));
    }

    /// What the repair changed.
    pub(crate) fn changes(&self) -> Changes {
        Changes {
            deleted: self.deleted.clone(),
            written: self
                .written
                .iter()
                .filter_map(|start| self.runs.get(start).copied())
                .collect(),
            open: self.set_open,
        }
    }

    /// Fails when stored runs starting in `[from, until)` may exist unread.
    fn read(&self, from: i64, until: i64) -> Result<(), Missing> {
        match self.unread.iter().any(|&(a, b)| a < until && from < b) {
            true => Err(Missing::Runs),
            false => Ok(()),
        }
    }

    fn this(&self, check_id: i64) -> Result<(), Missing> {
        match check_id == self.check_id {
            true => Ok(()),
            false => Err(Missing::Runs),
        }
    }

    /// The held results in `[from, until)`, or what to read for them.
    fn held(&self, from: i64, until: i64) -> Result<&[RunResult], Missing> {
        let missing = Missing::Results {
            from,
            until: until.max(from),
        };
        let Some(((held_from, held_until), rows)) = &self.results else {
            return Err(missing);
        };
        if from < until && (from < *held_from || until.saturating_sub(1) > *held_until) {
            return Err(missing);
        }
        let start = rows.partition_point(|r| r.0 < from);
        let end = rows.partition_point(|r| r.0 < until);
        Ok(&rows[start..end.max(start)])
    }
}

impl RunTable for Window {
    type Error = Missing;

    fn check_state(&mut self, check_id: i64) -> Result<CheckState, Missing> {
        self.this(check_id)?;
        Ok(self.state)
    }

    fn set_open(
        &mut self,
        check_id: i64,
        open: Option<Run>,
        usual: Option<i64>,
    ) -> Result<(), Missing> {
        self.this(check_id)?;
        self.state.open = open;
        self.state.usual = usual;
        self.set_open = Some((open, usual));
        Ok(())
    }

    fn run_at_or_before(&mut self, check_id: i64, ts: i64) -> Result<Option<Run>, Missing> {
        self.this(check_id)?;
        let found = self.runs.range(..=ts).next_back().map(|(_, r)| *r);
        let from = found.map_or(i64::MIN, |r| r.start.saturating_add(1));
        self.read(from, ts.saturating_add(1))?;
        Ok(found)
    }

    fn runs_after(&mut self, check_id: i64, ts: i64, limit: i64) -> Result<Vec<Run>, Missing> {
        self.this(check_id)?;
        let from = ts.saturating_add(1);
        let limit = usize::try_from(limit).unwrap_or(0);
        let found: Vec<Run> = self
            .runs
            .range(from..)
            .take(limit)
            .map(|(_, r)| *r)
            .collect();
        // Up to the last one found when the limit stopped the walk, else to the end.
        let until = match found.last() {
            Some(last) if found.len() == limit => last.start,
            _ if limit == 0 => from,
            _ => i64::MAX,
        };
        self.read(from, until)?;
        Ok(found)
    }

    fn delete_runs(&mut self, check_id: i64, from: i64, until: i64) -> Result<(), Missing> {
        self.this(check_id)?;
        if from >= until {
            return Ok(());
        }
        let gone: Vec<i64> = self.runs.range(from..until).map(|(k, _)| *k).collect();
        for start in gone {
            self.runs.remove(&start);
            self.written.remove(&start);
        }
        // What was unread in the range is now known: nothing.
        self.unread = self
            .unread
            .iter()
            .flat_map(|&(a, b)| [(a, b.min(from)), (a.max(until), b)])
            .filter(|(a, b)| a < b)
            .collect();
        self.deleted.push((from, until));
        Ok(())
    }

    fn write_runs(&mut self, check_id: i64, runs: &[Run]) -> Result<(), Missing> {
        self.this(check_id)?;
        for r in runs {
            self.runs.insert(r.start, *r);
            self.written.insert(r.start);
        }
        Ok(())
    }

    fn result_interval(&mut self, check_id: i64, ts: i64) -> Result<Option<i64>, Missing> {
        self.this(check_id)?;
        let rows = self.held(ts, ts.saturating_add(1))?;
        Ok(rows.first().and_then(|r| r.2))
    }

    fn scan_results(
        &mut self,
        check_id: i64,
        from: i64,
        until: i64,
        f: &mut dyn FnMut(i64, u8, Option<i64>),
    ) -> Result<(), Missing> {
        self.this(check_id)?;
        for &(ts, status, own) in self.held(from, until)? {
            f(ts, status, own);
        }
        Ok(())
    }

    fn mark_dirty(&mut self, _check_id: i64, _lo: i64, _hi: i64) -> Result<(), Missing> {
        // A repair never marks a span; an ingest does not run in a window.
        Err(Missing::Runs)
    }

    fn take_dirty(&mut self, check_id: i64) -> Result<Option<(i64, i64)>, Missing> {
        self.this(check_id)?;
        Ok(None)
    }
}

/// How a repair in a [`Window`] went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Repaired: these are the changes to write.
    Done(Changes),
    /// It reads the check's results from `from` to `until` (both included): give them to
    /// the window ([`Window::hold_results`]) and try again.
    NeedsResults { from: i64, until: i64 },
    /// It looks at runs the window did not read: repair this check through the database.
    Unheld,
}

impl Window {
    /// Repairs the check around its dirty `span` in a copy of the window (the window stays
    /// as read, so it can be tried again with results).
    pub(crate) fn attempt(&self, span: (i64, i64)) -> Attempt {
        let mut copy = self.clone();
        match super::repair_check(&mut copy, self.check_id, span.0, span.1) {
            Ok(()) => Attempt::Done(copy.changes()),
            Err(Missing::Results { from, until }) if self.results.is_none() => {
                Attempt::NeedsResults { from, until }
            }
            Err(_) => Attempt::Unheld,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intervals::push;

    /// A small deterministic generator (xorshift), so a failing seed can be replayed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    const INTERVAL: i64 = 10;

    /// Runs from scratch over `results` (sorted), the last one open.
    fn runs_of(results: &BTreeMap<i64, (u8, Option<i64>)>) -> (Vec<Run>, Option<Run>) {
        let mut runs = Vec::new();
        for (&ts, &(status, _)) in results {
            push(&mut runs, ts, status, 3 * INTERVAL);
        }
        let open = runs.pop();
        (runs, open)
    }

    /// A repair in a window read as the PostgreSQL back end reads it (two runs each side of
    /// the dirty span, then the results it asks for) changes the stored runs into exactly
    /// the runs computed from scratch over every result, late and rewritten ones included.
    #[test]
    fn a_repair_in_a_window_equals_runs_from_scratch() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut needed_results, mut done_at_once) = (0, 0);
        for _ in 0..2_000 {
            // Results every interval, a few silences, statuses in stretches.
            let mut all = BTreeMap::new();
            let (mut ts, mut status) = (0i64, 0u8);
            for _ in 0..rng.below(60) + 2 {
                ts += match rng.below(12) {
                    0 => 5 * INTERVAL,
                    1 => 2 * INTERVAL,
                    _ => INTERVAL,
                };
                if rng.below(5) == 0 {
                    status = [0, 1, 2][rng.below(3) as usize];
                }
                let own = (rng.below(2) == 0).then_some(INTERVAL);
                all.insert(ts, (status, own));
            }
            // Some results arrive late, some are rewritten; the newest was stored in order.
            let newest = *all.keys().next_back().expect("results");
            let mut stored = all.clone();
            let mut span: Option<(i64, i64)> = None;
            for (&t, &(s, own)) in &all {
                if t == newest || rng.below(6) != 0 {
                    continue;
                }
                if rng.below(2) == 0 {
                    stored.remove(&t);
                } else {
                    stored.insert(t, ((s + 1) % 3, own));
                }
                span = Some(span.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))));
            }
            let Some((lo, hi)) = span else { continue };
            let (closed, open) = runs_of(&stored);
            let mut table: BTreeMap<i64, Run> = closed.iter().map(|r| (r.start, *r)).collect();
            let state = CheckState {
                declared: Some(INTERVAL),
                usual: Some(INTERVAL),
                open,
            };
            let before: Vec<Run> = table.range(..=lo).rev().take(2).map(|(_, r)| *r).collect();
            let after: Vec<Run> = table.range(hi + 1..).take(2).map(|(_, r)| *r).collect();
            let mut window = Window::around(7, state, (lo, hi), &before, &after);
            let changes = match window.attempt((lo, hi)) {
                Attempt::Done(changes) => {
                    done_at_once += 1;
                    changes
                }
                Attempt::NeedsResults { from, until } => {
                    needed_results += 1;
                    let rows = all
                        .range(from..=until)
                        .map(|(&t, &(s, own))| (t, s, own))
                        .collect();
                    window.hold_results(from, until, rows);
                    match window.attempt((lo, hi)) {
                        Attempt::Done(changes) => changes,
                        other => panic!("second attempt: {other:?}"),
                    }
                }
                Attempt::Unheld => panic!("a repair looked past the runs read"),
            };
            for (from, until) in changes.deleted {
                table.retain(|start, _| *start < from || *start >= until);
            }
            table.extend(changes.written.iter().map(|r| (r.start, *r)));
            let (want_closed, want_open) = runs_of(&all);
            assert_eq!(table.into_values().collect::<Vec<_>>(), want_closed);
            assert_eq!(changes.open.and_then(|o| o.0), want_open);
        }
        // Both paths were taken.
        assert!(needed_results > 1_000, "{needed_results}");
        assert_eq!(done_at_once, 0);
    }

    /// A repair that would look at runs the window did not read says so instead of
    /// answering from what it holds.
    #[test]
    fn a_window_refuses_to_answer_for_runs_it_did_not_read() {
        let run = |start, end| Run {
            start,
            end,
            status: 0,
            results: 1,
        };
        let state = CheckState {
            declared: Some(INTERVAL),
            usual: Some(INTERVAL),
            open: Some(run(1_000, 1_000)),
        };
        let before = [run(100, 110), run(50, 60)];
        let after = [run(500, 510), run(600, 610)];
        let mut window = Window::around(7, state, (200, 300), &before, &after);
        assert_eq!(window.run_at_or_before(7, 150), Ok(Some(run(100, 110))));
        assert_eq!(window.run_at_or_before(7, 40), Err(Missing::Runs));
        assert_eq!(window.run_at_or_before(7, 250), Err(Missing::Runs));
        assert_eq!(window.runs_after(7, 300, 2), Ok(after.to_vec()));
        assert_eq!(window.runs_after(7, 300, 3), Err(Missing::Runs));
        assert_eq!(window.runs_after(7, 150, 1), Err(Missing::Runs));
        assert_eq!(window.run_at_or_before(8, 150), Err(Missing::Runs));
        // Deleting the unread span makes it known: empty.
        window.delete_runs(7, 101, 301).expect("delete");
        assert_eq!(window.run_at_or_before(7, 250), Ok(Some(run(100, 110))));
        assert_eq!(window.runs_after(7, 150, 1), Ok(vec![run(500, 510)]));
        // Past the last run read, up to the open run, is unread; the open run is the newest.
        window.write_runs(7, &[run(1_000, 1_000)]).expect("write");
        assert_eq!(window.run_at_or_before(7, 900), Err(Missing::Runs));
        assert_eq!(
            window.run_at_or_before(7, i64::MAX),
            Ok(Some(run(1_000, 1_000)))
        );
    }
}
