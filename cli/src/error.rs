//! The CLI's one error type and its exit codes: 2 for usage (clap's own code, kept for the
//! mistakes only found after parsing), 1 for everything the server or the network said.

use std::process::ExitCode;

pub type Result<T, E = CliError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or the configuration is wrong: nothing was sent.
    #[error("{0}")]
    Usage(String),
    /// The server answered with its error envelope (`{"error": {code, message, details}}`).
    #[error("{message}")]
    Api { status: u16, code: String, message: String, details: Vec<String> },
    /// Nothing answered: connection refused, DNS, TLS, timeout.
    #[error("cannot reach Baton at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// Something answered, but not the Baton API (e.g. not JSON).
    #[error("{0}")]
    Protocol(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// `run --wait` saw the run end without completing (or gave up waiting).
    #[error("{0}")]
    RunEnded(String),
}

impl CliError {
    pub fn usage(msg: impl Into<String>) -> Self {
        CliError::Usage(msg.into())
    }

    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        CliError::Io { path: path.to_string(), source }
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }

    /// What `main` prints on stderr: the message, then the validation details one per line.
    pub fn report(&self) -> String {
        let mut s = format!("error: {self}");
        if let CliError::Api { details, .. } = self {
            for d in details {
                s.push_str("\n  ");
                s.push_str(d);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_exit_2_and_api_errors_exit_1() {
        assert_eq!(CliError::usage("x").exit_code(), ExitCode::from(2));
        let api = CliError::Api { status: 404, code: "NOT_FOUND".into(), message: "not found".into(), details: vec![] };
        assert_eq!(api.exit_code(), ExitCode::from(1));
        assert_eq!(CliError::RunEnded("failed".into()).exit_code(), ExitCode::from(1));
    }

    #[test]
    fn report_lists_validation_details_under_the_message() {
        let e = CliError::Api {
            status: 400,
            code: "VALIDATION_ERROR".into(),
            message: "invalid workflow".into(),
            details: vec!["blocks.0.type: unknown block type".into()],
        };
        assert_eq!(e.report(), "error: invalid workflow\n  blocks.0.type: unknown block type");
    }
}
