//! Lambda function `task-complete`. A person's answer: `POST /api/v1/runs/{id}/tasks/{task_id}/complete`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    baton_lambda::http::serve(baton::api::Part::TaskComplete, baton::api::parts::task_complete).await
}
