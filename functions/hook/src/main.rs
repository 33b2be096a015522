//! Lambda function `hook`. Doors without an API key: trigger URLs (`/api/v1/hooks/{token}`), webhooks, inbound callbacks.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    baton_lambda::http::serve(baton::api::Part::Hook, baton::api::parts::hook).await
}
