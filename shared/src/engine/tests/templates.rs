//! Templates inside runs: the newer syntax and filters in a block's config and an edge's
//! `when`, a template that spends its budget failing its step, and save-time checks.

use super::*;

fn order_flow() -> Value {
    json!({"blocks": [
        {"id": "start", "type": "starter"},
        {"id": "shape", "type": "transform", "config": {"mapping": {
            "tier": "{{ input.customer.tier ?? 'standard' }}",
            "size": "{{ input.items | size > 2 ? 'large' : 'small' }}",
            "day": "{{ input.ordered_at | date: '%Y-%m-%d' }}",
            "link": "https://shop.test/search?q={{ input.query | url_encode }}",
            "token": "{{ input.user | append: ':' | append: input.pass | base64_encode }}",
            "meta": "{{ input.meta_json | parse_json }}",
            "stamped": "{{ (now | date: '%Y') == ('now' | date: '%Y') }}"}}},
        {"id": "vip", "type": "transform", "config": {"mapping": {"route": "vip"}}},
        {"id": "plain", "type": "transform", "config": {"mapping": {"route": "plain"}}},
        {"id": "done", "type": "response", "config": {"body": {
            "shape": "{{ steps.shape.output }}",
            "route": "{{ steps.vip.output.route ?? steps.plain.output.route }}"}}}],
      "edges": [
        {"from": "start", "to": "shape"},
        {"from": "shape", "to": "vip", "when": "steps.shape.output.tier in ['gold', 'platinum'] and 'rush' not in input.flags"},
        {"from": "shape", "to": "plain", "when": "not (steps.shape.output.tier in ['gold', 'platinum']) or 'rush' in input.flags"},
        {"from": "vip", "to": "done"},
        {"from": "plain", "to": "done"}]})
}

#[tokio::test]
async fn a_run_renders_coalesce_ternary_in_and_the_new_filters() {
    let e = env();
    install(&e.app, "wf", order_flow()).await;
    let input = json!({
        "customer": {"tier": "gold"}, "items": [1, 2, 3], "ordered_at": "2024-05-01T23:30:00-02:00",
        "query": "red shoes & more", "user": "ada", "pass": "s3cret", "meta_json": "{\"source\": \"web\", \"n\": [1]}",
        "flags": ["gift"]});
    let id = start(&e.app, "wf", input).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(
        r["output"],
        json!({"route": "vip", "shape": {
            "tier": "gold", "size": "large", "day": "2024-05-01",
            "link": "https://shop.test/search?q=red+shoes+%26+more", "token": "YWRhOnMzY3JldA==",
            "meta": {"source": "web", "n": [1]}, "stamped": true}})
    );
    assert_eq!(step(&r, "plain")["status"], "skipped");

    // Missing values take the `??` side and the other branch.
    let id =
        start(&e.app, "wf", json!({"items": [], "ordered_at": 0, "query": "", "meta_json": "null", "flags": ["rush"]}))
            .await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"]["route"], "plain");
    assert_eq!(r["output"]["shape"]["tier"], "standard");
    assert_eq!(r["output"]["shape"]["size"], "small");
    assert_eq!(r["output"]["shape"]["day"], "1970-01-01");
    assert_eq!(r["output"]["shape"]["token"], "Og==");
}

#[tokio::test]
async fn a_template_that_rescans_a_large_input_fails_its_step_with_the_budget_error_quickly() {
    let e = env();
    // 1,000 comparisons of two 20,000-element arrays: 20 million element steps unbudgeted.
    let check = vec!["input.a == input.b"; 1_000].join(" and ");
    install(
        &e.app,
        "wf",
        json!({"steps": [
        {"id": "start", "type": "starter"},
        {"id": "scan", "type": "transform", "config": {"mapping": {"same": format!("{{{{ {check} }}}}")}}}]}),
    )
    .await;
    let big: Vec<i64> = (0..20_000).collect();
    let id = start(&e.app, "wf", json!({"a": big, "b": big})).await;
    let t0 = Instant::now();
    drain(&e.app, Duration::from_secs(20)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "failed", "{r:#}");
    let err = &step(&r, "scan")["error"];
    assert_eq!(err["code"], "TEMPLATE_ERROR", "{err:#}");
    assert!(err["message"].as_str().unwrap().contains("evaluation budget of 100000 operations exceeded"), "{err:#}");
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
}

#[test]
fn a_workflow_with_a_bad_template_is_refused_when_saved() {
    let blocks = json!([
        {"id": "start", "type": "starter"},
        {"id": "t", "type": "transform", "config": {"mapping": {"day": "{{ input.at | date: '%Y-%Q' }}"}}}]);
    let edges = json!([{"from": "start", "to": "t", "when": "input.x ? 1"}]);
    match build_graph(Some(&blocks), Some(&edges), None) {
        Err(Error::Validation { details, .. }) => {
            let all = format!("{details:?}");
            assert!(all.contains("filter 'date': invalid format \\\"%Y-%Q\\\""), "{all}");
            assert!(all.contains("expected ':' (a ternary is 'cond ? a : b')"), "{all}");
        }
        other => panic!("{other:?}"),
    }
}
