//! What a step message reads: one batch of the run item, its step and the steps its block
//! depends on, the same at the end of a long chain as at its start; the whole run only when
//! a template reads `steps` in a way its text does not show.

use super::*;

/// A starter and `n` transforms, each adding one to its predecessor's output.
fn counting_chain(n: usize) -> Value {
    let mut blocks = vec![json!({"id": "start", "type": "starter"})];
    let mut edges = Vec::new();
    let mut prev = "start".to_string();
    for i in 1..=n {
        let source = if i == 1 { "input.n".to_string() } else { format!("steps.{prev}.output.n") };
        let id = format!("t{i}");
        blocks.push(
            json!({"id": id, "type": "transform", "config": {"mapping": {"n": format!("{{{{{source} | plus: 1}}}}")}}}),
        );
        edges.push(json!({"from": prev, "to": id}));
        prev = id;
    }
    json!({"blocks": blocks, "edges": edges})
}

/// Handles the queue's messages one at a time (sending what each publishes) until the queue
/// is empty, and returns the reads of each step message, by step key, in order.
async fn reads_by_step(e: &Env) -> Vec<(String, crate::testing::Reads)> {
    let mut out = Vec::new();
    loop {
        let msgs = e.app.queue.receive(1, Duration::from_secs(5), Duration::from_millis(200)).await.unwrap();
        let Some(m) = msgs.into_iter().next() else { return out };
        let before = e.counts.reads();
        let h = e.app.engine.handle_message(&m.body).await;
        let after = e.counts.reads();
        e.app.engine.send(h.publish.into_iter().map(|m| (m, Duration::ZERO)).collect()).await.unwrap();
        e.app.queue.delete(&m.receipt).await.unwrap();
        if let Ok(Msg::Step { s, .. }) = serde_json::from_str::<Msg>(&m.body) {
            let d = crate::testing::Reads {
                gets: after.gets - before.gets,
                get_manys: after.get_manys - before.get_manys,
                queries: after.queries - before.queries,
                items: after.items - before.items,
            };
            out.push((s, d));
        }
    }
}

#[tokio::test]
async fn every_step_of_a_long_chain_reads_one_batch_of_the_same_few_items() {
    let e = env();
    install(&e.app, "long", counting_chain(60)).await;
    let id = start(&e.app, "long", json!({"n": 0})).await;
    let reads = reads_by_step(&e).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"n": 60}));
    assert_eq!(reads.len(), 61);
    for (k, d) in &reads {
        assert_eq!((d.get_manys, d.gets, d.queries), (1, 0, 0), "{k}: one batch, no query: {d:?}");
    }
    // The starter and `t1` (whose template reads the input) read the run item; every later
    // transform also the step its template names, its predecessor's (its own has no item
    // before its claim), however long the run already is.
    assert_eq!((reads[0].1.items, reads[1].1.items), (1, 1), "{reads:?}");
    assert!(reads[2..].iter().all(|(_, d)| d.items == 2), "{reads:?}");
}

#[tokio::test]
async fn a_template_reading_steps_wholesale_reads_the_run() {
    let e = env();
    let def = json!({"blocks": [
        {"id": "start", "type": "starter"},
        {"id": "all", "type": "transform", "config": {"mapping": {"seen": "{{steps | keys}}"}}}],
      "edges": [{"from": "start", "to": "all"}]});
    install(&e.app, "wide", def).await;
    let id = start(&e.app, "wide", json!({})).await;
    let reads = reads_by_step(&e).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    let mut seen: Vec<&str> = r["output"]["seen"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    seen.sort();
    assert_eq!(seen, ["all", "start"], "{r:#}");
    assert_eq!(reads[1].0, "all");
    assert!(reads[1].1.queries >= 1, "{:?}", reads[1]);
}

#[tokio::test]
async fn a_template_naming_a_skipped_step_sees_it_skipped() {
    let e = env();
    let def = json!({"blocks": [
        {"id": "start", "type": "starter"},
        {"id": "check", "type": "condition"},
        {"id": "big", "type": "transform", "config": {"mapping": {"v": "big"}}},
        {"id": "small", "type": "transform", "config": {"mapping": {"v": "small"}}},
        {"id": "join", "type": "transform", "config": {"mapping": {
            "big": "{{steps.big.status}}", "small": "{{steps.small.status}}", "v": "{{steps.big.output.v}}"}}}],
      "edges": [
        {"from": "start", "to": "check"},
        {"from": "check", "to": "big", "when": "input.amount > 1000"},
        {"from": "check", "to": "small"},
        {"from": "big", "to": "join"},
        {"from": "small", "to": "join"}]});
    install(&e.app, "branch", def).await;
    let id = start(&e.app, "branch", json!({"amount": 5000})).await;
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"big": "completed", "small": "skipped", "v": "big"}), "{r:#}");
}

#[tokio::test]
async fn step_messages_of_older_builds_read_the_whole_run_and_still_run() {
    let e = env();
    install(&e.app, "wf", chain5()).await;
    let id = start(&e.app, "wf", json!({"n": 4})).await;
    let m = e.app.queue.receive(1, Duration::from_secs(5), Duration::from_millis(200)).await.unwrap().remove(0);
    let Ok(Msg::Step { r, s, p: Some(_) }) = serde_json::from_str::<Msg>(&m.body) else { panic!("{}", m.body) };
    let old = json!({"t": "step", "r": r, "s": s}).to_string();
    let before = e.counts.reads();
    let h = e.app.engine.handle_message(&old).await;
    assert!(e.counts.reads().queries > before.queries, "the whole run was read");
    e.app.engine.send(h.publish.into_iter().map(|m| (m, Duration::ZERO)).collect()).await.unwrap();
    e.app.queue.delete(&m.receipt).await.unwrap();
    drain(&e.app, Duration::from_secs(10)).await;
    let r = run(&e.app, &id).await;
    assert_eq!(r["status"], "completed", "{r:#}");
    assert_eq!(r["output"], json!({"result": 7}));
    assert_eq!(e.counts.commits_of(&id, "start"), 1);
}
