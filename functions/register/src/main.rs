//! Lambda function `register`. `POST /api/v1/auth/register`: creates an account and its first API key.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    baton_lambda::http::serve(baton::api::Part::Register, baton::api::parts::register).await
}
