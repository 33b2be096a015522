//! Lambda function `worker`: SQS step messages → one block each, partial batch failures.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    baton_lambda::worker::serve().await
}
