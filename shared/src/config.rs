//! The Lambda functions' configuration: every environment variable read once, at cold start,
//! into one typed value. `template.yaml` sets exactly these names.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `BATON_RATE_LIMIT` | run starts per account per minute; calls per minute of each door without a key, and of each client address across them | 500 |
//! | `BATON_REGISTER_LIMIT` | registrations per client address (API Gateway's `sourceIp`) per hour | 10 |
//! | `BATON_LEASE_SECS` | step lease: longer than the worker's timeout, shorter than the queue's visibility timeout | 60 |
//! | `BATON_PUBLIC_URL` | base URL shown to callers (trigger URLs) | taken from the first request's host |
//! | `BATON_ALLOW_PRIVATE_TARGETS` | `1`: callbacks and HTTP blocks may reach private addresses | `0` |
//! | `BATON_WORKER_QUEUE` | which queue a worker function drains: `steps`, or `long` for the long-step worker | `steps` |
//! | `BATON_MANAGED_PROVIDER` | JSON `{provider, base_url, api_key, model}`: the provider of managed trial runs (template parameter, NoEcho) | none: a planned run needs `provider_id` |
//! | `BATON_TRIAL_RUNS` | planned runs per account on the managed provider | 3 |
//! | `BATON_RUN_RETENTION_DAYS` | days a finished run is kept ([`crate::retention`]); `0`: for ever | 30 |
//! | `BATON_TABLE`, `BATON_BUCKET`, `BATON_QUEUE_URL`, … | the AWS backend: see [`crate::aws`] | `BATON_BUCKET`: `<table>-payloads` |

use crate::app::AppConfig;
use crate::aws::AwsSettings;
use crate::error::Error;
use serde_json::Value;
use std::time::Duration;

/// Everything a function needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// The application settings. `app.public_url` is empty when [`Config::public_url`] is
    /// `None`: the HTTP functions then fill it in from the first request they serve (the
    /// template cannot pass the API's own URL to its functions without a circular reference).
    pub app: AppConfig,
    /// `BATON_PUBLIC_URL`, without a trailing slash.
    pub public_url: Option<String>,
    /// The queue a worker function's event source mapping delivers from.
    pub worker_queue: WorkerQueue,
    pub aws: AwsSettings,
}

/// The queue a worker function drains (`BATON_WORKER_QUEUE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WorkerQueue {
    /// The step queue: blocks that need more than the invocation has go on to the long-step
    /// queue (`BATON_LONG_QUEUE_URL`) if there is one.
    #[default]
    Steps,
    /// The long-step queue: its messages' visibility is changed there, and nothing is
    /// handed on.
    Long,
}

/// Which variables are missing or malformed: all of them, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {}", .problems.join("; "))]
pub struct ConfigError {
    /// One line per variable, each starting with its name.
    pub problems: Vec<String>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `var` (for tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| var(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let mut problems = Vec::new();
        let defaults = AppConfig::default();

        let mut number = |name: &str, default: u64, max: u64| match get(name) {
            None => default,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => n,
                _ => {
                    problems.push(format!("{name} must be a whole number from 1 to {max}, not `{v}`"));
                    default
                }
            },
        };
        let rate_limit_per_minute = number("BATON_RATE_LIMIT", defaults.rate_limit_per_minute, 1_000_000);
        let register_limit_per_hour = number("BATON_REGISTER_LIMIT", defaults.register_limit_per_hour, 1_000_000);
        // SQS's longest visibility timeout is 12 hours; a lease never needs to outlive it.
        let lease = Duration::from_secs(number("BATON_LEASE_SECS", defaults.lease.as_secs(), 43_200));

        let public_url = get("BATON_PUBLIC_URL").map(|u| u.trim_end_matches('/').to_string());
        if let Some(u) = &public_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            problems.push(format!("BATON_PUBLIC_URL must start with https:// or http://, not `{u}`"));
        }
        let allow_private_targets = match get("BATON_ALLOW_PRIVATE_TARGETS").as_deref() {
            None | Some("0" | "false" | "no") => false,
            Some("1" | "true" | "yes") => true,
            Some(v) => {
                problems.push(format!("BATON_ALLOW_PRIVATE_TARGETS must be 1 or 0, not `{v}`"));
                false
            }
        };

        let worker_queue = match get("BATON_WORKER_QUEUE").as_deref() {
            None | Some("steps") => WorkerQueue::Steps,
            Some("long") => WorkerQueue::Long,
            Some(v) => {
                problems.push(format!("BATON_WORKER_QUEUE must be `steps` or `long`, not `{v}`"));
                WorkerQueue::Steps
            }
        };
        let run_retention = match crate::retention::parse_days(get("BATON_RUN_RETENTION_DAYS").as_deref()) {
            Ok(r) => r,
            Err(e) => {
                problems.push(e);
                defaults.run_retention
            }
        };

        let ai = crate::ai::AiSettings::from_vars(&var).unwrap_or_else(|e| {
            problems.push(e);
            crate::ai::AiSettings::default()
        });
        let aws = match AwsSettings::from_vars(&var) {
            Ok(s) => Some(s),
            Err(Error::Validation { details, .. }) if !details.is_empty() => {
                problems.extend(details.into_iter().map(|d| d.message));
                None
            }
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        match aws {
            Some(aws) if problems.is_empty() => Ok(Config {
                app: AppConfig {
                    rate_limit_per_minute,
                    register_limit_per_hour,
                    lease,
                    public_url: public_url.clone().unwrap_or_default(),
                    allow_private_targets,
                    max_receives: aws.max_receives,
                    run_retention,
                    ai,
                    ..defaults
                },
                public_url,
                worker_queue,
                aws,
            }),
            _ => Err(ConfigError { problems }),
        }
    }

    /// The names of the variables a problem list mentions (for logs).
    pub fn named(problems: &[String]) -> Vec<Value> {
        problems.iter().filter_map(|p| p.split_whitespace().next()).map(Value::from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_vars(|k| map.get(k).cloned())
    }

    const AWS: [(&str, &str); 3] = [
        ("BATON_TABLE", "baton-prod"),
        ("BATON_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/baton-steps"),
        ("BATON_KMS_KEY_ID", "alias/baton-prod"),
    ];

    #[test]
    fn an_empty_environment_names_every_required_variable() {
        let err = config(&[]).unwrap_err();
        let text = err.to_string();
        for name in ["BATON_TABLE", "BATON_QUEUE_URL", "BATON_KMS_KEY_ID"] {
            assert!(text.contains(name), "`{text}` names {name}");
        }
        assert_eq!(Config::named(&err.problems), ["BATON_TABLE", "BATON_QUEUE_URL", "BATON_KMS_KEY_ID"]);
    }

    #[test]
    fn bad_app_settings_are_reported_together_with_missing_aws_ones() {
        let err = config(&[
            ("BATON_RATE_LIMIT", "lots"),
            ("BATON_LEASE_SECS", "0"),
            ("BATON_PUBLIC_URL", "api.example.com"),
            ("BATON_ALLOW_PRIVATE_TARGETS", "maybe"),
            ("BATON_RUN_RETENTION_DAYS", "-1"),
            ("BATON_TABLE", "t"),
            ("BATON_BUCKET", "no_underscores"),
        ])
        .unwrap_err();
        assert_eq!(
            Config::named(&err.problems),
            [
                "BATON_RATE_LIMIT",
                "BATON_LEASE_SECS",
                "BATON_PUBLIC_URL",
                "BATON_ALLOW_PRIVATE_TARGETS",
                "BATON_RUN_RETENTION_DAYS",
                "BATON_BUCKET",
                "BATON_QUEUE_URL",
                "BATON_KMS_KEY_ID"
            ]
        );
        assert!(err.to_string().contains("not `lots`"));
    }

    #[test]
    fn the_minimal_environment_takes_the_defaults() {
        let c = config(&AWS).unwrap();
        let d = AppConfig::default();
        assert_eq!(c.app.rate_limit_per_minute, d.rate_limit_per_minute);
        assert_eq!(c.app.lease, d.lease);
        assert!(!c.app.allow_private_targets);
        assert_eq!(c.app.run_retention, Some(Duration::from_secs(30 * 24 * 3600)));
        assert_eq!(c.public_url, None);
        assert_eq!(c.app.public_url, "", "filled in from the first request");
        assert_eq!(c.aws.table, "baton-prod");
        assert_eq!(c.aws.bucket, "baton-prod-payloads", "the payload bucket is named after the table");
        assert_eq!(c.aws.kms_key_id.as_deref(), Some("alias/baton-prod"));
    }

    #[test]
    fn every_setting_is_read() {
        let mut vars = AWS.to_vec();
        vars.extend([
            ("BATON_RATE_LIMIT", "42"),
            ("BATON_LEASE_SECS", "90"),
            ("BATON_PUBLIC_URL", "https://baton.example.com/"),
            ("BATON_ALLOW_PRIVATE_TARGETS", "1"),
            ("BATON_MAX_RECEIVES", "3"),
            ("BATON_DLQ_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/baton-dlq"),
            ("BATON_RUN_RETENTION_DAYS", "7"),
            ("BATON_BUCKET", "baton-prod-payloadbucket-1a2b3c"),
        ]);
        let c = config(&vars).unwrap();
        assert_eq!(c.app.run_retention, Some(Duration::from_secs(7 * 24 * 3600)));
        assert_eq!(c.app.rate_limit_per_minute, 42);
        assert_eq!(c.app.lease, Duration::from_secs(90));
        assert_eq!(c.public_url.as_deref(), Some("https://baton.example.com"));
        assert_eq!(c.app.public_url, "https://baton.example.com");
        assert!(c.app.allow_private_targets);
        assert_eq!(c.aws.max_receives, 3);
        assert!(c.aws.dlq_url.is_some());
        assert_eq!(c.aws.bucket, "baton-prod-payloadbucket-1a2b3c");
        assert_eq!(c.worker_queue, WorkerQueue::Steps);
    }

    #[test]
    fn the_long_step_worker_is_told_by_its_queue() {
        let mut vars = AWS.to_vec();
        vars.extend([
            ("BATON_WORKER_QUEUE", "long"),
            ("BATON_LONG_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/baton-long"),
        ]);
        let c = config(&vars).unwrap();
        assert_eq!(c.worker_queue, WorkerQueue::Long);
        assert!(c.aws.long_queue_url.as_deref().is_some_and(|u| u.ends_with("/baton-long")));
        vars.push(("BATON_WORKER_QUEUE", "slow"));
        let vars: Vec<_> = vars.into_iter().filter(|(k, v)| *k != "BATON_WORKER_QUEUE" || *v == "slow").collect();
        assert_eq!(Config::named(&config(&vars).unwrap_err().problems), ["BATON_WORKER_QUEUE"]);
        let vars: Vec<_> = AWS.iter().copied().chain([("BATON_LONG_QUEUE_URL", "baton-long")]).collect();
        assert_eq!(Config::named(&config(&vars).unwrap_err().problems), ["BATON_LONG_QUEUE_URL"]);
    }

    #[test]
    fn run_retention_is_days_zero_keeps_runs_for_ever_and_anything_else_is_refused() {
        let with = |v: &str| {
            let mut vars = AWS.to_vec();
            vars.push(("BATON_RUN_RETENTION_DAYS", v));
            config(&vars)
        };
        assert_eq!(with("").unwrap().app.run_retention, Some(Duration::from_secs(30 * 24 * 3600)));
        assert_eq!(with(" 90 ").unwrap().app.run_retention, Some(Duration::from_secs(90 * 24 * 3600)));
        assert_eq!(with("0").unwrap().app.run_retention, None);
        for bad in ["-1", "thirty", "1.5", "36501", "99999999999999999999"] {
            let err = with(bad).unwrap_err();
            assert_eq!(Config::named(&err.problems), ["BATON_RUN_RETENTION_DAYS"], "{bad}");
            assert!(err.to_string().contains(&format!("not `{bad}`")), "{err}");
        }
    }
}
