//! A planned run on the AWS adapters: `baton-local` with `BATON_BACKEND=aws` on DynamoDB +
//! SQS (moto, started by this test) and a fake OpenAI-compatible server on 127.0.0.1 as its
//! managed provider plans, asks T1, runs the agents and ends with the last task's output;
//! the provider's answers are journaled in the table.

use axum::Router;
use axum::extract::State;
use baton_tests::moto::{REGION, moto, unique_name};
use baton_tests::{Api, Server, ServerOptions};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Chat Completions: a two-task plan for the planner, a short answer for an agent.
async fn chat(State(calls): State<Arc<Mutex<usize>>>, axum::Json(body): axum::Json<Value>) -> axum::Json<Value> {
    *calls.lock().unwrap() += 1;
    let content = if body.get("response_format").is_some() {
        json!({"tasks": [
            {"id": "r", "title": "Research", "agent": "research", "prompt": "Find facts", "depends_on": []},
            {"id": "w", "title": "Write", "agent": "writer", "prompt": "Write it up", "depends_on": ["r"]}]})
        .to_string()
    } else {
        let user = body["messages"].as_array().and_then(|m| m.last()).and_then(|m| m["content"].as_str()).unwrap_or("");
        format!("answer (human said: {})", user.contains("freelancers"))
    };
    axum::Json(json!({"model": "gpt-4o-mini", "choices": [{"message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5}}))
}

async fn until(api: &Api, run_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = api.run(run_id).await.unwrap();
        if done(&run) || Instant::now() > deadline {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_run_completes_on_dynamodb_and_sqs_with_its_answers_journaled() {
    let calls = Arc::new(Mutex::new(0usize));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = format!("http://{}/v1", listener.local_addr().unwrap());
    let app = Router::new().route("/v1/chat/completions", axum::routing::post(chat)).with_state(calls.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });

    let (table, queue) = (unique_name("ai"), unique_name("ai-steps"));
    let managed = json!({"provider": "openai", "base_url": fake, "api_key": "sk-managed", "model": "gpt-4o-mini"});
    let server = Server::start(
        ServerOptions::default()
            .workers(2)
            .env("BATON_BACKEND", "aws")
            .env("AWS_ENDPOINT_URL", moto().endpoint())
            .env("AWS_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("BATON_TABLE", &table)
            .env("BATON_QUEUE_URL", &queue)
            .env("BATON_CREATE_RESOURCES", "1")
            .env("BATON_ALLOW_PRIVATE_TARGETS", "1")
            .env("BATON_MANAGED_PROVIDER", managed.to_string()),
    );
    let mut api = Api::for_server(&server);
    api.register("aws-ai").await.unwrap();
    let body = json!({"task": "Write a launch note", "agents": [{"name": "research"}, {"name": "writer"}], "ask_me_about": ["audience"]});
    let (code, run) = api.post("/runs", &body).await.unwrap();
    assert_eq!(code, 201, "{run}\n{}", server.log_tail(40));
    let run_id = run["run_id"].as_str().unwrap().to_string();

    let run = until(&api, &run_id, |r| r["status"] == "waiting_human").await;
    assert_eq!(run["tasks"][0]["id"], "T1", "{run}");
    let (code, b) =
        api.post(&format!("/runs/{run_id}/tasks/T1/complete"), &json!({"output": "solo freelancers"})).await.unwrap();
    assert_eq!(code, 200, "{b}");
    let run = until(&api, &run_id, |r| r["status"] == "completed" || r["status"] == "failed").await;
    assert_eq!(run["status"], "completed", "{run}\n{}", server.log_tail(40));
    assert_eq!(run["output"], "answer (human said: true)");
    assert_eq!(run["usage"]["input_tokens"], 30, "planner + two agents");
    assert_eq!(*calls.lock().unwrap(), 3);

    // The answers are journaled in the table, in the run's partition.
    let ddb = aws_sdk_dynamodb::Client::new(&moto().sdk_config().await);
    let store = baton::adapters::DynamoStore::new(ddb, &table);
    use baton::store::{Query, Store};
    let q = Query::prefix(baton::keys::run_pk(&run_id), baton::keys::AI_PREFIX);
    let journaled = store.query(q).await.unwrap().items;
    let steps: Vec<&str> = journaled.iter().filter_map(|i| i.str("step_key")).collect();
    assert_eq!(steps, ["T2", "T3", "plan"], "the plan step journals the planner's answer like an agent step");
}
