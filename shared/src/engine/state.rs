//! The states a step and a run go through, as their items' `status` holds them. The engine
//! decides on these enums; the strings exist only in the store and the API.
//!
//! A step: `pending` → `running` → `completed` | `failed`, with `sleeping` (a delay),
//! `waiting_human` (any wait: a person, a callback), `joining` (a join counting its
//! incoming edges), `collecting` (a split's body counting its items) on the way, and
//! `skipped` (a branch not taken) or `cancelled` (its run ended first) instead.
//! A run: `running` → `completed` | `failed` | `cancelled` (and back to `running` on redrive).

use crate::store::Item;
use serde_json::Value;

macro_rules! states {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant),*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),*
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl From<$name> for Value {
            fn from(s: $name) -> Value {
                Value::from(s.as_str())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

states! {
    /// A step's state.
    StepStatus {
        Pending => "pending",
        Running => "running",
        Sleeping => "sleeping",
        WaitingHuman => "waiting_human",
        Joining => "joining",
        Collecting => "collecting",
        Completed => "completed",
        Failed => "failed",
        Skipped => "skipped",
        Cancelled => "cancelled",
    }
}

states! {
    /// A run's state.
    RunStatus {
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

impl StepStatus {
    /// The state of a step item. An item without a status is a step not started; one this
    /// build does not know (written by a newer one) is taken as pending, so it is neither
    /// finished nor run twice by mistake: a claim needs the exact state it read.
    pub fn of(step: &Item) -> StepStatus {
        step.str("status").and_then(StepStatus::parse).unwrap_or(StepStatus::Pending)
    }

    /// Finished for good: nothing will change it but a redrive.
    pub const fn is_terminal(self) -> bool {
        matches!(self, StepStatus::Completed | StepStatus::Failed | StepStatus::Skipped | StepStatus::Cancelled)
    }

    /// Counted in the run's `active` counter: it will still finish by itself.
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            StepStatus::Pending
                | StepStatus::Running
                | StepStatus::Sleeping
                | StepStatus::WaitingHuman
                | StepStatus::Collecting
        )
    }
}

impl RunStatus {
    /// The state of a run item (one without a status is running: runs are created so).
    pub fn of(run: &Item) -> RunStatus {
        run.str("status").and_then(RunStatus::parse).unwrap_or(RunStatus::Running)
    }

    pub const fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_text() {
        for s in StepStatus::ALL {
            assert_eq!(StepStatus::parse(s.as_str()), Some(*s));
            assert_eq!(Value::from(*s), Value::from(s.as_str()));
        }
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(StepStatus::parse("done"), None);
    }

    #[test]
    fn terminal_and_active_steps_are_apart() {
        for s in StepStatus::ALL {
            assert!(!(s.is_terminal() && s.is_active()), "{s}");
        }
        assert!(!StepStatus::Joining.is_terminal() && !StepStatus::Joining.is_active(), "a join waits on others");
        let terminal: Vec<_> = StepStatus::ALL.iter().filter(|s| s.is_terminal()).map(|s| s.as_str()).collect();
        assert_eq!(terminal, ["completed", "failed", "skipped", "cancelled"]);
        assert!(RunStatus::Failed.is_terminal() && !RunStatus::Running.is_terminal());
    }
}
