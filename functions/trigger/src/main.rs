//! Lambda function `trigger`. Run starts with an API key: `POST /api/v1/workflows/{id}/run`, `POST /api/v1/trigger`, `POST /api/v1/runs`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    baton_lambda::http::serve(baton::api::Part::Trigger, baton::api::parts::trigger).await
}
