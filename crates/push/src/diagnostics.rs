//! The one place diagnostics are logged. Every source, the index and compile report
//! [`Diagnostic`]s to the push engine, which sees them all; this log writes each at warn once,
//! when it first appears, and writes one info line when its input has none left (fixed or
//! removed), however many recomputes and unrelated changes happen in between.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{info, warn};

use meshpilot_model::{Diagnostic, ObjectRef, Origin, Stage};

/// What a diagnostic is about: one file or one object of one origin. A fix is logged per
/// input, not per message, so a mistake replaced by another is one new warning, not a fix.
type Input = (Origin, ObjectRef);

/// The diagnostics logged so far, by the input they are about.
#[derive(Debug, Default)]
pub(crate) struct DiagnosticLog {
    logged: BTreeMap<Input, BTreeSet<Diagnostic>>,
}

fn stage_word(stage: Stage) -> &'static str {
    match stage {
        Stage::Parse => "parse",
        Stage::Reference => "reference",
        Stage::Conflict => "conflict",
        Stage::Compile => "compile",
    }
}

impl DiagnosticLog {
    /// Logs what is new in `current` (the complete current set) and which inputs have no
    /// diagnostic any more; returns how many of each were logged.
    pub(crate) fn update<'a>(
        &mut self,
        current: impl IntoIterator<Item = &'a Diagnostic>,
    ) -> (usize, usize) {
        let (mut new, mut fixed) = (0, 0);
        let mut now: BTreeMap<Input, BTreeSet<Diagnostic>> = BTreeMap::new();
        for d in current {
            let input = (d.origin.clone(), d.object.clone());
            let known = self.logged.get(&input).is_some_and(|l| l.contains(d));
            if now.entry(input).or_default().insert(d.clone()) && !known {
                warn!(stage = stage_word(d.stage), severity = ?d.severity, "{d}");
                new += 1;
            }
        }
        for (origin, object) in self.logged.keys() {
            if !now.contains_key(&(origin.clone(), object.clone())) {
                if object.is_unknown() {
                    info!("resolved: {origin}");
                } else {
                    info!("resolved: {origin}: {object}");
                }
                fixed += 1;
            }
        }
        self.logged = now;
        (new, fixed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(name: &str, message: &str) -> Diagnostic {
        Diagnostic::error(
            Stage::Parse,
            Origin::File("a.yaml".into()),
            ObjectRef {
                kind: Some("VirtualService".into()),
                namespace: Some("default".into()),
                name: Some(name.into()),
            },
            "spec.hosts",
            message,
        )
    }

    #[test]
    fn each_error_is_logged_once_and_its_fix_once() {
        let mut log = DiagnosticLog::default();
        let a = error("a", "empty");
        let b = error("b", "empty");
        assert_eq!(log.update([&a]), (1, 0));
        assert_eq!(log.update([&a]), (0, 0), "unchanged: not logged again");
        assert_eq!(log.update([&a, &b]), (1, 0));
        assert_eq!(
            log.update([&error("a", "other"), &b]),
            (1, 0),
            "a new message"
        );
        assert_eq!(log.update([&b]), (0, 1), "a is fixed");
        assert_eq!(log.update([]), (0, 1));
    }
}
