//! The `events/` fixtures (what `sam local invoke -e` feeds the functions) parse as API
//! Gateway HTTP API events, reach the function that template.yaml routes them to, and give
//! the public URL when none is configured.

use super::{HttpFunction, origin, source_ip};
use crate::Ports;
use baton::adapters::{Sqlite, SqliteQueue, SqliteStore};
use baton::api::{Part, router};
use baton::aws::AwsSettings;
use baton::config::Config;
use baton::secrets::SecretBox;
use http::StatusCode;
use lambda_http::request::LambdaRequest;
use std::path::PathBuf;
use std::sync::Arc;
use tower::ServiceExt;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events").join(format!("{name}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture as the function receives it: the runtime's deserialization, then lambda_http's
/// conversion into an `http::Request`.
fn request(name: &str) -> lambda_http::Request {
    let event: LambdaRequest = serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}.json: {e}"));
    assert!(matches!(event, LambdaRequest::ApiGatewayV2(_)), "{name}.json is an HTTP API (v2) event");
    event.into()
}

fn ports(dir: &tempfile::TempDir) -> Ports {
    let db = Sqlite::open(&dir.path().join("baton.db")).unwrap();
    Ports {
        store: Arc::new(SqliteStore::new(db.clone())),
        queue: Arc::new(SqliteQueue::new(db, "steps", 10)),
        long_queue: None,
        secrets: Arc::new(SecretBox::ephemeral()),
    }
}

fn function(part: Part, dir: &tempfile::TempDir, public_url: Option<&str>) -> HttpFunction {
    let config = Config {
        app: baton::app::AppConfig::default(),
        public_url: public_url.map(str::to_string),
        worker_queue: Default::default(),
        aws: AwsSettings::from_vars(|k| match k {
            "BATON_TABLE" => Some("t".into()),
            "BATON_QUEUE_URL" => Some("http://127.0.0.1/q".into()),
            "BATON_SECRET_KEY" => Some("ab".repeat(32)),
            _ => None,
        })
        .unwrap(),
    };
    HttpFunction::new(part.router(), config, ports(dir))
}

const HTTP_FIXTURES: [(&str, Part); 6] = [
    ("register", Part::Register),
    ("trigger", Part::Trigger),
    ("hook", Part::Hook),
    ("execute", Part::Execute),
    ("task-complete", Part::TaskComplete),
    ("api", Part::Api),
];

#[tokio::test]
async fn every_http_fixture_reaches_its_function_and_answers_like_the_full_api() {
    for (name, part) in HTTP_FIXTURES {
        assert_eq!(name, part.name());
        let req = request(name);
        assert_eq!(Part::of(req.method(), req.uri().path()), part, "{name}.json");
        let dir = tempfile::tempdir().unwrap();
        let f = function(part, &dir, None);
        let got = f.router(&req).oneshot(request(name)).await.unwrap().status();
        let full_dir = tempfile::tempdir().unwrap();
        let full = router(ports(&full_dir).app(baton::app::AppConfig::default()));
        let want = full.oneshot(request(name)).await.unwrap().status();
        assert_eq!(got, want, "{name}.json");
        // Any other function refuses it with the envelope 404.
        for other in Part::ALL.into_iter().filter(|p| *p != part) {
            let g = function(other, &dir, None);
            let refused = g.router(&req).oneshot(request(name)).await.unwrap().status();
            assert_eq!(refused, StatusCode::NOT_FOUND, "{name}.json on {}", other.name());
        }
    }
    // The register fixture, as is, creates an account.
    let dir = tempfile::tempdir().unwrap();
    let f = function(Part::Register, &dir, None);
    let res = f.router(&request("register")).oneshot(request("register")).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[test]
fn the_public_url_is_the_first_requests_origin_unless_configured() {
    let req = request("trigger");
    assert_eq!(origin(&req).as_deref(), Some("https://abcd123456.execute-api.us-east-1.amazonaws.com"));
    let dir = tempfile::tempdir().unwrap();
    let f = function(Part::Trigger, &dir, None);
    assert_eq!(f.public_url(), None, "not known before a request");
    let _ = f.router(&req);
    assert_eq!(f.public_url(), Some("https://abcd123456.execute-api.us-east-1.amazonaws.com"));
    let configured = function(Part::Trigger, &dir, Some("https://baton.example.com"));
    assert_eq!(configured.public_url(), Some("https://baton.example.com"));
    let _ = configured.router(&req);
    assert_eq!(configured.public_url(), Some("https://baton.example.com"));
}

#[test]
fn the_worker_fixture_is_an_sqs_batch_of_engine_messages() {
    let event: aws_lambda_events::event::sqs::SqsEvent = serde_json::from_str(&fixture("worker")).unwrap();
    assert_eq!(event.records.len(), 2);
    for r in &event.records {
        assert!(r.message_id.is_some() && r.receipt_handle.is_some());
        let body = r.body.as_deref().unwrap();
        serde_json::from_str::<baton::engine::Msg>(body).unwrap_or_else(|e| panic!("{body}: {e}"));
    }
}

#[test]
fn the_client_address_is_api_gateways_source_ip_not_a_forwarded_header() {
    let mut req = request("register");
    req.headers_mut().insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
    assert_eq!(source_ip(&req), Some("203.0.113.7".parse().unwrap()));
}
