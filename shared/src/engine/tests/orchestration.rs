//! Child runs: the `orchestration` block starts a run of another workflow and waits for it.

use super::*;

fn parent_flow(child: &str) -> Value {
    json!({"steps": [
        {"id": "start", "type": "starter"},
        {"id": "call", "type": "orchestration", "config": {"workflow_id": child, "input": {"n": "{{input.n}}"}}},
        {"id": "after", "type": "transform", "config": {"mapping": {"got": "{{steps.call.output.doubled}}"}}}]})
}

fn doubler() -> Value {
    json!({"steps": [
        {"id": "start", "type": "starter"},
        {"id": "d", "type": "transform", "config": {"mapping": {"doubled": "{{input.n | times: 2}}"}}}]})
}

async fn child_of(app: &AppState, parent: &Value, step_key: &str) -> String {
    let s = step(parent, step_key);
    let task_id = s["task_id"].as_str().unwrap_or_else(|| panic!("no wait on {step_key}: {parent:#}"));
    let t = parent["tasks"].as_array().unwrap().iter().find(|t| t["task_id"] == task_id).unwrap();
    let _ = app;
    t["prompt"]["child_run_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_childs_output_is_the_steps_output_and_the_parent_resumes_once() {
    let e = env();
    install(&e.app, "child", doubler()).await;
    install(&e.app, "parent", parent_flow("child")).await;
    let id = start(&e.app, "parent", json!({"n": 21})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(step(&r, "call")["output"], json!({"doubled": 42}));
    assert_eq!(r["output"], json!({"got": 42}));
    assert_eq!(r["parent_run_id"], Value::Null);
    let child_id = child_of(&e.app, &r, "call").await;
    let c = run(&e.app, &child_id).await;
    assert_eq!(c["status"], "completed", "{c:#}");
    assert_eq!(c["parent_run_id"], id.as_str());
    assert_eq!(c["parent_step_key"], "call");
    assert!(!c.to_string().contains("token"), "the resume token is never shown: {c:#}");
    assert_eq!(e.counts.commits_of(&id, "call"), 1, "resumed exactly once");
    // The child's end again (a redelivery, the safety message): nothing more lands.
    let h = e.app.engine.handle_message(&Msg::Child { r: child_id.clone() }.encode()).await;
    assert!(h.publish.is_empty());
    drain(&e.app, Duration::from_secs(5)).await;
    assert_eq!(e.counts.commits_of(&id, "call"), 1, "resumed exactly once");
    assert_eq!(run(&e.app, &id).await["status"], "completed");
}

#[tokio::test]
async fn a_failed_child_fails_the_step_with_child_failed_and_its_message() {
    let e = env();
    install(
        &e.app,
        "child",
        json!({"steps": [
            {"id": "start", "type": "starter"},
            {"id": "boom", "type": "orchestration", "config": {"workflow_id": "not_there"}}]}),
    )
    .await;
    install(&e.app, "parent", parent_flow("child")).await;
    let id = start(&e.app, "parent", json!({"n": 1})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "failed", "{r:#}");
    let err = &step(&r, "call")["error"];
    assert_eq!(err["code"], "CHILD_FAILED", "{r:#}");
    let child_id = child_of(&e.app, &r, "call").await;
    let c = run(&e.app, &child_id).await;
    assert_eq!(c["status"], "failed");
    let child_msg = c["error"]["message"].as_str().unwrap();
    assert_eq!(c["error"]["code"], "CHILD_NOT_FOUND", "{c:#}");
    assert!(err["message"].as_str().unwrap().contains(child_msg), "{err} carries {child_msg}");
    assert_eq!(e.counts.commits_of(&id, "call"), 1);
}

#[tokio::test]
async fn cancelling_the_parent_cancels_its_waiting_child() {
    let e = env();
    install(
        &e.app,
        "child",
        json!({"steps": [
            {"id": "start", "type": "starter"},
            {"id": "ask", "type": "human", "config": {"kind": "question", "prompt": "Name?"}}]}),
    )
    .await;
    install(&e.app, "parent", parent_flow("child")).await;
    let id = start(&e.app, "parent", json!({"n": 1})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(step(&r, "call")["status"], "waiting_human", "{r:#}");
    // Only a person's wait makes a run `waiting_human`: the parent waits on a run.
    assert_eq!(r["status"], "running", "{r:#}");
    let child_id = child_of(&e.app, &r, "call").await;
    assert_eq!(run(&e.app, &child_id).await["status"], "waiting_human");
    e.app.engine.cancel_run(ACCT, &id).await.unwrap();
    drain(&e.app, Duration::from_secs(5)).await;
    assert_eq!(run(&e.app, &id).await["status"], "cancelled");
    let c = run(&e.app, &child_id).await;
    assert_eq!(c["status"], "cancelled", "{c:#}");
}

#[tokio::test]
async fn a_cancelled_child_fails_the_step_with_child_cancelled() {
    let e = env();
    install(
        &e.app,
        "child",
        json!({"steps": [
            {"id": "start", "type": "starter"},
            {"id": "ask", "type": "human", "config": {"kind": "question", "prompt": "Name?"}}]}),
    )
    .await;
    install(&e.app, "parent", parent_flow("child")).await;
    let id = start(&e.app, "parent", json!({"n": 1})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let child_id = child_of(&e.app, &run(&e.app, &id).await, "call").await;
    e.app.engine.cancel_run(ACCT, &child_id).await.unwrap();
    drain(&e.app, Duration::from_secs(5)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "failed", "{r:#}");
    assert_eq!(step(&r, "call")["error"]["code"], "CHILD_CANCELLED", "{r:#}");
}

#[tokio::test]
async fn nesting_stops_at_depth_8_with_an_error_that_says_depth() {
    let e = env();
    // A workflow that runs itself: every run starts a child until the depth limit.
    install(
        &e.app,
        "rec",
        json!({"steps": [
            {"id": "start", "type": "starter"},
            {"id": "again", "type": "orchestration", "config": {"workflow_id": "rec"}}]}),
    )
    .await;
    let id = start(&e.app, "rec", json!({})).await;
    drain(&e.app, Duration::from_secs(20)).await;
    let mut r = run(&e.app, &id).await;
    let mut chain = vec![id.clone()];
    while step(&r, "again")["error"]["code"] == "CHILD_FAILED" {
        let c = child_of(&e.app, &r, "again").await;
        r = run(&e.app, &c).await;
        chain.push(c);
    }
    assert_eq!(chain.len(), 8, "eight runs nest: {chain:?}");
    let err = &step(&r, "again")["error"];
    assert_eq!(err["code"], "NESTING_TOO_DEEP", "{r:#}");
    assert!(err["message"].as_str().unwrap().contains("depth 8"), "{err}");
    assert_eq!(run(&e.app, &id).await["status"], "failed");
}

#[tokio::test]
async fn a_missing_child_workflow_fails_the_step() {
    let e = env();
    install(&e.app, "parent", parent_flow("nope")).await;
    let id = start(&e.app, "parent", json!({"n": 1})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(step(&r, "call")["error"]["code"], "CHILD_NOT_FOUND", "{r:#}");
}

#[tokio::test]
async fn a_redelivered_orchestration_step_starts_one_child() {
    let e = env();
    install(&e.app, "child", doubler()).await;
    install(&e.app, "parent", parent_flow("child")).await;
    let id = start(&e.app, "parent", json!({"n": 2})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    // The step message again (as after a crash): the same child, no second resume.
    let h = e.app.engine.handle_message(&Msg::step(&id, "call").encode()).await;
    drop(h);
    drain(&e.app, Duration::from_secs(5)).await;
    let runs =
        e.app.engine.list_runs(ACCT, crate::engine::RunFilter { limit: 100, ..Default::default() }).await.unwrap();
    let children = runs["data"].as_array().unwrap().iter().filter(|r| r["workflow_id"] == "child").count();
    assert_eq!(children, 1);
    assert_eq!(e.counts.commits_of(&id, "call"), 1);
}

#[tokio::test]
async fn saving_checks_the_child_workflow() {
    let s = crate::testing::MemStore::new();
    let body = |cfg: Value| json!({"name": "p", "steps": [{"id": "start", "type": "starter"}, {"id": "call", "type": "orchestration", "config": cfg}]});
    let Err(Error::Validation { message, details }) = crate::workflows::create(&s, ACCT, body(json!({}))).await else {
        panic!("a missing workflow_id is refused")
    };
    assert!(message.contains("workflow_id"), "{message}");
    assert_eq!(details[0].path[0], "steps", "{details:?}");
    let Err(Error::Validation { details, .. }) =
        crate::workflows::create(&s, ACCT, body(json!({"workflow_id": "wf_nope"}))).await
    else {
        panic!("an unknown workflow is refused")
    };
    assert_eq!(details[0].path, vec![json!("steps"), json!(1), json!("config"), json!("workflow_id")]);
    let child = json!({"id": "wf_child", "name": "c", "steps": [{"id": "start", "type": "starter"}]});
    crate::workflows::create(&s, ACCT, child).await.unwrap();
    crate::workflows::create(&s, ACCT, body(json!({"workflow_id": "wf_child", "version": 1}))).await.unwrap();
    crate::workflows::create(&s, ACCT, body(json!({"workflow_id": "{{input.which}}"}))).await.unwrap();
    let Err(Error::Validation { .. }) =
        crate::workflows::create(&s, ACCT, body(json!({"workflow_id": "wf_child", "version": 0}))).await
    else {
        panic!("version 0 is refused")
    };
}
