//! Lambda function `execute`. Sync execute: `POST /api/v1/workflows/{id}/execute`, driven inline up to the sync deadline.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    baton_lambda::http::serve(baton::api::Part::Execute, baton::api::parts::execute).await
}
