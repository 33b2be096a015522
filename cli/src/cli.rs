//! The command line. Parsing errors are clap's (exit 2).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "baton", version, about = "Drive a Baton server over its HTTP API", propagate_version = true)]
pub struct Cli {
    /// The server's URL (its root or its `/api/v1`). Else BATON_URL, else `baton login`'s file,
    /// else http://127.0.0.1:3000.
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// An API key. Else BATON_API_KEY, else `baton login`'s file.
    #[arg(long, global = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check --url and --api-key against the server and save them to
    /// $XDG_CONFIG_HOME/baton/config.json (else ~/.config/baton/config.json), mode 0600.
    Login,
    /// Create, replace and list workflows.
    #[command(subcommand)]
    Workflows(WorkflowsCmd),
    /// Start a run of a workflow, and with --wait follow it.
    Run(RunArgs),
    /// List, inspect, cancel and redrive runs.
    #[command(subcommand)]
    Runs(RunsCmd),
    /// The tasks a run waits on a person for: list and answer them.
    #[command(subcommand)]
    Tasks(TasksCmd),
    /// Trigger URLs: start runs without an API key.
    #[command(subcommand)]
    Triggers(TriggersCmd),
    /// Webhook helpers.
    #[command(subcommand)]
    Hooks(HooksCmd),
}

#[derive(Debug, Subcommand)]
pub enum WorkflowsCmd {
    /// Create or replace the workflow in FILE (JSON). With an `id`, `PUT /workflows/{id}/graph`
    /// (creates it, or saves a new version); without, `POST /workflows`.
    Apply {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// List workflows.
    List(Page),
    /// Show one workflow, its graph included.
    Show { id: String },
}

#[derive(Debug, Args)]
pub struct Page {
    /// At most this many items.
    #[arg(long)]
    pub limit: Option<u32>,
    /// Continue from a `next_cursor` a previous page gave.
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workflow's id.
    pub workflow: String,
    /// The run input: JSON, or @FILE (@- reads stdin).
    #[arg(long, value_name = "JSON|@FILE")]
    pub input: Option<String>,
    /// Follow the run, progress on stderr, until it ends or waits for a person. Exit 0 when it
    /// completed (its output on stdout) or waits for a person (the task and its prompt), 1 when
    /// it failed or was cancelled (its error on stderr).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (exit 1; the run goes on).
    #[arg(long, value_name = "SECS", requires = "wait")]
    pub timeout: Option<u64>,
    /// Starting twice with the same key returns the first run.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RunsCmd {
    /// List runs, newest first.
    List {
        /// Only runs in this status (running, waiting_human, completed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        #[command(flatten)]
        page: Page,
    },
    /// A run's status, timing, each step with its duration, and the last error.
    Show { run: String },
    /// A run's timeline.
    Events {
        run: String,
        #[command(flatten)]
        page: Page,
    },
    /// Cancel a run.
    Cancel { run: String },
    /// Retry a failed run's failed steps.
    Redrive { run: String },
}

#[derive(Debug, Subcommand)]
pub enum TasksCmd {
    /// The tasks of a run.
    List {
        #[arg(long, value_name = "RUN")]
        run: String,
    },
    /// Answer a question: its answer becomes the step's output.
    Answer {
        run: String,
        task: String,
        #[command(flatten)]
        answer: AnswerValue,
    },
    /// Approve an approval task.
    Approve {
        run: String,
        task: String,
        #[arg(long)]
        feedback: Option<String>,
    },
    /// Reject an approval task (the step fails with REJECTED unless the block continues).
    Reject {
        run: String,
        task: String,
        #[arg(long)]
        feedback: Option<String>,
    },
}

#[derive(Debug, Args)]
#[group(id = "answer_value", required = true, multiple = false)]
pub struct AnswerValue {
    /// The answer as JSON, or @FILE (@- reads stdin).
    #[arg(long, value_name = "JSON|@FILE")]
    pub output: Option<String>,
    /// The answer as a plain string.
    #[arg(long)]
    pub text: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TriggersCmd {
    /// Create a trigger URL for a workflow; its token is shown once.
    Create {
        workflow: String,
        #[arg(long)]
        name: Option<String>,
        /// Where the runs it starts report (callbacks).
        #[arg(long, value_name = "URL")]
        callback_url: Option<String>,
    },
    /// List a workflow's triggers.
    List { workflow: String },
}

#[derive(Debug, Subcommand)]
pub enum HooksCmd {
    /// Print the `X-Signature-256: sha256=<hex>` header for a body: HMAC-SHA256 of its exact
    /// bytes, as `openssl dgst -sha256 -hmac SECRET` computes it.
    Sign {
        #[arg(long)]
        secret: String,
        /// The body: a literal string, or @FILE (@- reads stdin).
        #[arg(long, value_name = "TEXT|@FILE")]
        body: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use std::path::Path;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("baton").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let c = parse(&["runs", "show", "run_1", "--json", "--url", "http://h:1"]).unwrap();
        assert!(c.json);
        assert_eq!(c.url.as_deref(), Some("http://h:1"));
        assert!(matches!(c.command, Command::Runs(RunsCmd::Show { run }) if run == "run_1"));
        let c = parse(&["--api-key", "k", "workflows", "list"]).unwrap();
        assert_eq!(c.api_key.as_deref(), Some("k"));
        assert!(!c.json);
    }

    #[test]
    fn run_takes_input_wait_and_timeout() {
        let c = parse(&["run", "orders", "--input", r#"{"a":1}"#, "--wait", "--timeout", "5"]).unwrap();
        let Command::Run(r) = c.command else { panic!("not a run") };
        assert_eq!(r.workflow, "orders");
        assert_eq!(r.input.as_deref(), Some(r#"{"a":1}"#));
        assert!(r.wait);
        assert_eq!(r.timeout, Some(5));
    }

    #[test]
    fn a_timeout_without_wait_is_a_usage_error() {
        let e = parse(&["run", "orders", "--timeout", "5"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn an_unknown_flag_is_a_usage_error_with_exit_code_2() {
        let e = parse(&["runs", "list", "--bogus"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownArgument);
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn answer_needs_exactly_one_of_output_and_text() {
        assert!(parse(&["tasks", "answer", "r", "t", "--text", "yes"]).is_ok());
        assert!(parse(&["tasks", "answer", "r", "t", "--output", "1"]).is_ok());
        assert_eq!(parse(&["tasks", "answer", "r", "t"]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
        let both = parse(&["tasks", "answer", "r", "t", "--text", "a", "--output", "1"]).unwrap_err();
        assert_eq!(both.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn workflows_apply_requires_a_file() {
        let c = parse(&["workflows", "apply", "-f", "wf.json"]).unwrap();
        assert!(matches!(c.command, Command::Workflows(WorkflowsCmd::Apply { file }) if file == Path::new("wf.json")));
        assert_eq!(parse(&["workflows", "apply"]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn hooks_sign_takes_secret_and_body() {
        let c = parse(&["hooks", "sign", "--secret", "s", "--body", "@body.json"]).unwrap();
        assert!(
            matches!(c.command, Command::Hooks(HooksCmd::Sign { secret, body }) if secret == "s" && body == "@body.json")
        );
    }

    #[test]
    fn tasks_list_needs_the_run() {
        assert_eq!(parse(&["tasks", "list"]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
        let c = parse(&["tasks", "list", "--run", "run_1"]).unwrap();
        assert!(matches!(c.command, Command::Tasks(TasksCmd::List { run }) if run == "run_1"));
    }
}
