//! AI runs: model providers, the calls agent blocks make through them, agent templates and
//! the planner that turns a task into a workflow.
//!
//! `providers` keeps the account's provider records (keys sealed); `wire` speaks each
//! provider's HTTP format and classifies its failures once for all kinds; `call` sends a
//! request through the guarded client (SigV4 for Bedrock); `journal` keeps a step's answers
//! so a redelivered step never calls (never bills) twice; `templates` and `planner` serve
//! planned runs (`POST /runs`).

pub mod call;
/// A scripted model provider on loopback, for tests (and the cost measure of an agent step).
#[cfg(any(test, feature = "test-support"))]
pub mod fake;
pub mod journal;
pub mod planner;
pub mod providers;
pub mod runs;
pub mod templates;
pub mod wire;

use serde_json::Value;

/// The operator's managed provider for trial runs (`BATON_MANAGED_PROVIDER`) and how many
/// runs each account may make on it (`BATON_TRIAL_RUNS`).
#[derive(Clone, Debug)]
pub struct AiSettings {
    pub managed: Option<providers::Resolved>,
    pub trial_runs: u64,
}

impl Default for AiSettings {
    fn default() -> Self {
        AiSettings { managed: None, trial_runs: DEFAULT_TRIAL_RUNS }
    }
}

/// Default `BATON_TRIAL_RUNS`.
pub const DEFAULT_TRIAL_RUNS: u64 = 3;

impl AiSettings {
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(|n| std::env::var(n).ok())
    }

    /// Reads the two variables through `var`; a malformed one is an error naming it (the
    /// key is never part of the message).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |n: &str| var(n).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let trial_runs = match get("BATON_TRIAL_RUNS") {
            None => DEFAULT_TRIAL_RUNS,
            Some(v) => v.parse::<u64>().map_err(|_| format!("BATON_TRIAL_RUNS must be a whole number, not `{v}`"))?,
        };
        let managed = match get("BATON_MANAGED_PROVIDER") {
            None => None,
            Some(raw) => {
                let v: Value = serde_json::from_str(&raw).map_err(|_| {
                    "BATON_MANAGED_PROVIDER must be JSON {\"provider\", \"base_url\", \"api_key\", \"model\"}"
                        .to_string()
                })?;
                Some(providers::Resolved::managed(&v).map_err(|m| format!("BATON_MANAGED_PROVIDER: {m}"))?)
            }
        };
        Ok(AiSettings { managed, trial_runs })
    }
}

#[cfg(test)]
mod flow_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_to_three_trial_runs_and_no_managed_provider() {
        let s = AiSettings::from_vars(|_| None).unwrap();
        assert_eq!(s.trial_runs, 3);
        assert!(s.managed.is_none());
    }

    #[test]
    fn a_managed_provider_is_read_from_json_and_its_key_never_appears_in_errors() {
        let raw =
            r#"{"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-secret", "model": "m"}"#;
        let s = AiSettings::from_vars(|n| (n == "BATON_MANAGED_PROVIDER").then(|| raw.to_string())).unwrap();
        let m = s.managed.unwrap();
        assert_eq!(m.kind, providers::Kind::OpenAi);
        assert_eq!(m.model, "m");
        let bad = r#"{"provider": "nope", "api_key": "sk-secret"}"#;
        let e = AiSettings::from_vars(|n| (n == "BATON_MANAGED_PROVIDER").then(|| bad.to_string())).unwrap_err();
        assert!(e.contains("BATON_MANAGED_PROVIDER") && !e.contains("sk-secret"), "{e}");
        let e = AiSettings::from_vars(|n| (n == "BATON_TRIAL_RUNS").then(|| "many".to_string())).unwrap_err();
        assert!(e.contains("BATON_TRIAL_RUNS"));
    }
}
