//! Checking a run against a scenario's `expect`, with a readable diff.
//!
//! - `starts`: the exact list, in order; each time exact or a window.
//! - `ends`: these appear in this order; other ends may come between.
//! - `final`: any subset of state, path and phase.

use std::fmt::Write as _;

use crate::ActionOutcome;
use crate::scenario::{Expectation, ExpectedEnd, OutcomeName};
use crate::simulation::{Record, Trace};

/// How a run fell short of its scenario; empty `problems` means it passed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckOutcome {
    /// One line per problem, for a summary.
    pub problems: Vec<String>,
    /// A human-readable report (side-by-side starts, ends, final).
    pub report: String,
}

impl CheckOutcome {
    /// Whether the run met every expectation.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks `trace` against `expect`.
pub fn check(expect: &Expectation, trace: &Trace) -> CheckOutcome {
    let mut verdict = CheckOutcome::default();
    if let Some(expected) = &expect.starts {
        check_starts(expected, trace, &mut verdict);
    }
    if !expect.ends.is_empty() {
        check_ends(&expect.ends, trace, &mut verdict);
    }
    check_final(expect, trace, &mut verdict);
    verdict
}

fn check_starts(
    expected: &[crate::scenario::ExpectedStart],
    trace: &Trace,
    verdict: &mut CheckOutcome,
) {
    let actual: Vec<(u64, &'static str)> = trace
        .starts()
        .filter_map(|r| match r {
            Record::Start { kind, .. } => Some((r.at_ms(), kind.name())),
            Record::Event { .. } | Record::End { .. } => None,
        })
        .collect();
    let rows = expected.len().max(actual.len());
    let mut table = String::new();
    let mut first_bad = None;
    for i in 0..rows {
        let want = expected.get(i);
        let got = actual.get(i);
        let fine = match (want, got) {
            (Some(w), Some(&(ms, name))) => w.action.name() == name && w.at_ms.contains(ms),
            _ => false,
        };
        if !fine && first_bad.is_none() {
            first_bad = Some(i + 1);
        }
        let want_text =
            want.map_or_else(|| "(nothing)".to_owned(), |w| format!("{} at {}", w.action, w.at_ms));
        let got_text = got.map_or_else(|| "(nothing)".to_owned(), |(ms, n)| format!("{n} at {ms}"));
        let mark = if fine { "" } else { "  <-- differs" };
        let _ = writeln!(table, "    {:>2}  {want_text:<28} {got_text:<22}{mark}", i + 1);
    }
    if let Some(row) = first_bad {
        verdict.problems.push(format!(
            "starts differ from #{row}: expected {} start(s), got {}",
            expected.len(),
            actual.len()
        ));
        let _ = writeln!(
            verdict.report,
            "  starts:\n    {:>2}  {:<28} {:<22}",
            "#", "expected", "actual"
        );
        verdict.report.push_str(&table);
    }
}

fn outcome_matches(want: OutcomeName, got: ActionOutcome) -> bool {
    matches!(
        (want, got),
        (OutcomeName::Ok, ActionOutcome::Succeeded)
            | (OutcomeName::Failed, ActionOutcome::Failed(_))
            | (OutcomeName::Cancelled, ActionOutcome::Cancelled)
    )
}

fn check_ends(expected: &[ExpectedEnd], trace: &Trace, verdict: &mut CheckOutcome) {
    let mut actual = trace.ends().filter_map(|r| match *r {
        Record::End { kind, outcome, .. } => Some((r.at_ms(), kind, outcome)),
        Record::Event { .. } | Record::Start { .. } => None,
    });
    for (i, want) in expected.iter().enumerate() {
        let found = actual.by_ref().any(|(_, kind, outcome)| {
            kind == want.action && outcome_matches(want.outcome, outcome)
        });
        if !found {
            verdict.problems.push(format!(
                "ends: expected end #{} ({} {}) does not appear in order",
                i + 1,
                want.action,
                want.outcome.name()
            ));
            let _ = writeln!(verdict.report, "  ends: expected, in this order:");
            for (j, w) in expected.iter().enumerate() {
                let mark = if j == i { "  <-- not found" } else { "" };
                let _ = writeln!(verdict.report, "    {} {}{mark}", w.action, w.outcome.name());
            }
            let _ = writeln!(verdict.report, "  ends: actual:");
            for r in trace.ends() {
                if let Record::End { kind, outcome, .. } = *r {
                    let _ = writeln!(
                        verdict.report,
                        "    {} {} at {}",
                        kind,
                        outcome.name(),
                        r.at_ms()
                    );
                }
            }
            return;
        }
    }
}

fn check_final(expect: &Expectation, trace: &Trace, verdict: &mut CheckOutcome) {
    let want = &expect.final_state;
    let got = &trace.final_state;
    let mut mismatch = |field: &str, want: &str, got: &str| {
        verdict.problems.push(format!("final {field}: expected {want}, got {got}"));
        let _ = writeln!(verdict.report, "  final {field}: expected {want}, got {got}");
    };
    if let Some(state) = want.state
        && state.name() != got.state.name()
    {
        mismatch("state", state.name(), &got.state.to_string());
    }
    if let Some(path) = want.path
        && path != got.path
    {
        mismatch("path", path.name(), got.path.name());
    }
    if let Some(phase) = want.phase
        && phase != got.phase
    {
        mismatch("phase", phase.name(), got.phase.name());
    }
}
