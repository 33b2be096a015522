//! `code` steps through the engine: output, `console.log` in the timeline, failures.

use super::*;

fn flow(code: &str) -> Value {
    json!({"steps": [
        {"id": "s", "type": "starter"},
        {"id": "calc", "type": "function", "config": {"code": code}},
        {"id": "after", "type": "transform", "config": {"mapping": {"doubled": "{{steps.calc.output.total | times: 2}}"}}}]})
}

#[tokio::test]
async fn a_code_step_returns_its_output_and_its_logs_are_in_the_timeline() {
    let e = env();
    install(
        &e.app,
        "wf",
        flow("console.log('items', input.items.length);\nreturn {total: input.items.reduce((s, x) => s + x, 0)}"),
    )
    .await;
    let id = start(&e.app, "wf", json!({"items": [1, 2, 3]})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(step(&r, "calc")["output"], json!({"total": 6}));
    assert_eq!(r["output"], json!({"doubled": 12}));
    let logs: Vec<Value> = events(&e.app, &id).await.into_iter().filter(|ev| ev["type"] == "step.log").collect();
    assert_eq!(logs.len(), 1, "{logs:#?}");
    assert_eq!(logs[0]["step_key"], "calc");
    assert_eq!(logs[0]["data"], json!({"attempt": 1, "lines": ["items 3"]}));
}

#[tokio::test]
async fn a_failing_script_fails_the_run_with_code_error_and_keeps_its_logs() {
    let e = env();
    install(&e.app, "wf", flow("console.log('before');\nthrow new Error('no total')")).await;
    let id = start(&e.app, "wf", json!({})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "failed", "{r:#}");
    assert_eq!(r["error"]["code"], "CODE_ERROR");
    assert_eq!(r["error"]["message"], "Error: no total (line 2)");
    assert!(events(&e.app, &id).await.iter().any(|ev| ev["type"] == "step.log" && ev["data"]["lines"][0] == "before"));
}

#[tokio::test]
async fn a_script_over_its_time_limit_fails_with_timeout_and_the_worker_goes_on() {
    let e = env();
    let mut f = flow("while (true) {}");
    f["steps"][1]["config"]["timeout_ms"] = json!(200);
    install(&e.app, "wf", f).await;
    let id = start(&e.app, "wf", json!({})).await;
    install(&e.app, "ok", flow("return {total: 1}")).await;
    let ok = start(&e.app, "ok", json!({})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!((r["status"].as_str(), r["error"]["code"].as_str()), (Some("failed"), Some("TIMEOUT")), "{r:#}");
    assert_eq!(run(&e.app, &ok).await["output"], json!({"doubled": 2}));
}
