//! The per-function partition of the router: each Lambda function serves exactly its
//! routes, the way the full router would, and the envelope 404 for every other path.

use super::{Part, ROUTES, router, router_for};
use crate::app::{App, AppConfig, AppState};
use crate::testing::{MemQueue, MemStore};
use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

fn state() -> AppState {
    App::new(
        Arc::new(MemStore::new()),
        Arc::new(MemQueue::new()),
        Arc::new(crate::secrets::SecretBox::ephemeral()),
        AppConfig::default(),
    )
}

async fn call(app: &Router, method: &Method, path: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"name": "Acme"}).to_string()))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// One concrete request per route of the table, plus routes that fall to `api`.
fn samples() -> Vec<(Method, &'static str, Part)> {
    vec![
        (Method::POST, "/api/v1/auth/register", Part::Register),
        (Method::POST, "/api/v1/workflows/wf_1/run", Part::Trigger),
        (Method::POST, "/api/v1/trigger", Part::Trigger),
        (Method::POST, "/api/v1/runs", Part::Trigger),
        (Method::POST, "/api/v1/workflows/wf_1/execute", Part::Execute),
        (Method::POST, "/api/v1/runs/run_1/tasks/task_1/complete", Part::TaskComplete),
        (Method::POST, "/api/v1/hooks/tok_1", Part::Hook),
        (Method::GET, "/api/v1/hooks/tok_1", Part::Hook),
        (Method::POST, "/api/v1/webhooks/wh_1", Part::Hook),
        (Method::POST, "/api/webhooks/wh_1", Part::Hook),
        (Method::POST, "/api/v1/callback", Part::Hook),
        (Method::GET, "/api/v1/health", Part::Api),
        (Method::GET, "/api/v1/runs", Part::Api),
        (Method::GET, "/api/v1/runs/run_1", Part::Api),
        (Method::GET, "/api/v1/runs/run_1/tasks", Part::Api),
        (Method::POST, "/api/v1/workflows", Part::Api),
        (Method::GET, "/api/v1/workflows/wf_1", Part::Api),
        (Method::PUT, "/api/v1/auth/register", Part::Api),
        (Method::GET, "/api/v1/no/such/route", Part::Api),
    ]
}

#[test]
fn every_route_of_the_table_belongs_to_its_part() {
    for (method, path, part) in samples() {
        assert_eq!(Part::of(&method, path), part, "{method} {path}");
    }
    // Segments must be non-empty and counted exactly, like API Gateway's matching.
    assert_eq!(Part::of(&Method::POST, "/api/v1/workflows//run"), Part::Api);
    assert_eq!(Part::of(&Method::POST, "/api/v1/workflows/a/b/run"), Part::Api);
    assert_eq!(Part::of(&Method::POST, "/api/v1/hooks/"), Part::Api);
    assert_eq!(Part::of(&Method::POST, "/api/v1/hooks/a/b"), Part::Hook);
    assert_eq!(Part::of(&Method::POST, "/api/v1/auth/register/x"), Part::Api);
    assert_eq!(Part::of(&Method::GET, "/api/v1/trigger"), Part::Api);
    assert!(ROUTES.iter().all(|r| r.2 != Part::Api), "api is the catch-all, never listed");
}

#[tokio::test]
async fn each_part_answers_its_routes_like_the_full_router_and_404_for_the_rest() {
    let s = state();
    let full = router(s.clone());
    for part in Part::ALL {
        let only = router_for(part, s.clone());
        for (method, path, owner) in samples() {
            let (status, body) = call(&only, &method, path).await;
            if owner == part {
                let (want, _) = call(&full, &method, path).await;
                assert_eq!(status, want, "{} on {method} {path}: {body}", part.name());
            } else {
                assert_eq!(status, StatusCode::NOT_FOUND, "{} on {method} {path}: {body}", part.name());
                assert_eq!(body["error"]["code"], "NOT_FOUND", "{} on {method} {path}", part.name());
                assert_eq!(body["error"]["message"], format!("No route for {method} {path}"));
            }
        }
    }
}

#[tokio::test]
async fn parts_reach_their_handlers() {
    let s = state();
    let (status, body) = call(&router_for(Part::Register, s.clone()), &Method::POST, "/api/v1/auth/register").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["api_key"].as_str().unwrap().starts_with("bk_"));
    // Run starts need a key: the handler answers, not the partition.
    let (status, body) = call(&router_for(Part::Trigger, s.clone()), &Method::POST, "/api/v1/trigger").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHORIZED")));
    let (status, _) = call(&router_for(Part::Api, s.clone()), &Method::GET, "/api/v1/health").await;
    assert_eq!(status, StatusCode::OK);
    // Wrong method on a route API Gateway sends to the catch-all: the api function's 405.
    let (status, _) = call(&router_for(Part::Api, s), &Method::PUT, "/api/v1/auth/register").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn only_the_execute_part_plugs_in_the_block_executors() {
    let bare = || {
        App::without_block_executors(
            Arc::new(MemStore::new()),
            Arc::new(MemQueue::new()),
            None,
            Arc::new(crate::secrets::SecretBox::ephemeral()),
            AppConfig::default(),
        )
    };
    for part in Part::ALL {
        let s = bare();
        let _ = router_for(part, s.clone());
        assert_eq!(s.engine.executor("agent").is_some(), part == Part::Execute, "{}", part.name());
    }
    assert!(state().engine.executor("agent").is_some(), "App::new runs steps, so it has them");
}
