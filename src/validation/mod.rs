//! Checks on what people write that the schema cannot express, or that an
//! older schema let in. Pure: no API calls, so every case is a unit test.
//! The policy controller reports the problems of a policy in its `Ready`
//! condition; an incident's stop its ladder with `RemediationBlocked`. An
//! object with problems is inert: nothing is detected or done for it.

mod alerts;
mod checked;
mod incident;
mod labels;
mod ladder;
mod policy;
mod probes;
mod signals;

pub use checked::Checked;
pub use incident::incident;
pub use labels::{label_selector, qualified_name};
pub use policy::policy;

/// One thing wrong, with the field it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Problems found so far, in field order.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }

    /// A duration checked against its field's bounds.
    pub fn duration(
        &mut self,
        field: impl Into<String>,
        value: &crate::crd::Duration,
        bound: crate::crd::bounds::DurationBound,
    ) {
        if let Some(message) = bound.check(value) {
            self.add(field, message);
        }
    }

    /// A number checked against its range.
    pub fn range(&mut self, field: impl Into<String>, value: i32, min: i32, max: i32) {
        if !(min..=max).contains(&value) {
            self.add(
                field,
                format!("must be between {min} and {max}, not {value}"),
            );
        }
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}

/// The problems as one line, for a condition message.
pub fn summary(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
