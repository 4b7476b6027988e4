//! Status conditions merged the Kubernetes way: `lastTransitionTime` moves
//! only when the status really changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition to set, without the bookkeeping fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate<'a> {
    pub type_: &'a str,
    pub status: bool,
    pub reason: &'a str,
    pub message: String,
}

/// Sets or replaces the condition of the update's type. Returns whether
/// anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    update: ConditionUpdate<'_>,
    observed_generation: Option<i64>,
    now: &Time,
) -> bool {
    let status = if update.status { "True" } else { "False" };
    let existing = conditions.iter_mut().find(|c| c.type_ == update.type_);
    match existing {
        Some(condition) => {
            let unchanged = condition.status == status
                && condition.reason == update.reason
                && condition.message == update.message
                && condition.observed_generation == observed_generation;
            if unchanged {
                return false;
            }
            if condition.status != status {
                condition.last_transition_time = now.clone();
            }
            condition.status = status.to_owned();
            condition.reason = update.reason.to_owned();
            condition.message = update.message;
            condition.observed_generation = observed_generation;
            true
        }
        None => {
            conditions.push(Condition {
                type_: update.type_.to_owned(),
                status: status.to_owned(),
                reason: update.reason.to_owned(),
                message: update.message,
                observed_generation,
                last_transition_time: now.clone(),
            });
            true
        }
    }
}

/// Whether the condition of that type is present with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn time(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn ready(status: bool, message: &str) -> ConditionUpdate<'static> {
        ConditionUpdate {
            type_: "Ready",
            status,
            reason: "Checked",
            message: message.into(),
        }
    }

    #[test]
    fn adds_a_new_condition() {
        let mut conditions = vec![];
        assert!(set_condition(
            &mut conditions,
            ready(true, "ok"),
            Some(1),
            &time(10)
        ));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].status, "True");
        assert_eq!(conditions[0].last_transition_time, time(10));
    }

    #[test]
    fn same_status_keeps_transition_time() {
        let mut conditions = vec![];
        set_condition(&mut conditions, ready(true, "ok"), Some(1), &time(10));
        assert!(set_condition(
            &mut conditions,
            ready(true, "still ok"),
            Some(2),
            &time(20)
        ));
        assert_eq!(conditions[0].last_transition_time, time(10));
        assert_eq!(conditions[0].message, "still ok");
        assert!(!set_condition(
            &mut conditions,
            ready(true, "still ok"),
            Some(2),
            &time(30)
        ));
    }

    #[test]
    fn status_flip_moves_transition_time() {
        let mut conditions = vec![];
        set_condition(&mut conditions, ready(true, "ok"), Some(1), &time(10));
        set_condition(&mut conditions, ready(false, "broken"), Some(1), &time(20));
        assert_eq!(conditions[0].last_transition_time, time(20));
        assert!(!is_true(&conditions, "Ready"));
    }
}
