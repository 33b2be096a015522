//! Lambda function `api`. Every other route of the API (reads, management, meta): API Gateway's catch-all.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    baton_lambda::http::serve(baton::api::Part::Api, baton::api::parts::api).await
}
