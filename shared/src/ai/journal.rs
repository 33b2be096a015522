//! The journal of provider answers: an agent step writes each answer (`AI#{step}#{call}`
//! in the run's partition) before it returns, so a redelivery of the step — its worker died
//! between the answer and the commit — reads the answer instead of calling (and paying)
//! again. The same records carry the step's usage, which the run view sums.

use super::wire::{Answer, Usage};
use crate::error::{Error, Result};
use crate::keys;
use crate::store::{Attrs, Cond, Item, Query, Store};
use serde_json::{Value, json};

/// One journaled answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub answer: Answer,
    pub provider: String,
    pub latency_ms: u64,
}

/// List prices (USD per million input / output tokens) of common models; a model not
/// listed has no cost (`null`), never a guessed one.
const PRICES: &[(&str, f64, f64)] = &[
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4o", 2.50, 10.00),
    ("claude-3-5-haiku", 0.80, 4.00),
    ("claude-3-haiku", 0.25, 1.25),
    ("claude-haiku-4", 1.00, 5.00),
    ("claude-sonnet-4", 3.00, 15.00),
    ("claude-3-7-sonnet", 3.00, 15.00),
    ("claude-3-5-sonnet", 3.00, 15.00),
    ("gemini-2.0-flash-lite", 0.075, 0.30),
    ("gemini-2.0-flash", 0.10, 0.40),
    ("gemini-2.5-flash-lite", 0.10, 0.40),
    ("gemini-2.5-flash", 0.30, 2.50),
    ("gemini-2.5-pro", 1.25, 10.00),
];

/// The list-price cost of `usage` on `model` (the longest listed name the model id
/// contains, so `anthropic.claude-3-haiku-…-v1:0` and dated ids match).
pub fn cost_usd(model: &str, usage: &Usage) -> Option<f64> {
    let m = model.to_lowercase();
    let (_, inp, out) = PRICES.iter().filter(|(name, _, _)| m.contains(name)).max_by_key(|(name, _, _)| name.len())?;
    let c = (usage.input_tokens as f64 * inp + usage.output_tokens as f64 * out) / 1_000_000.0;
    Some((c * 1e8).round() / 1e8)
}

fn entry_of(item: &Item) -> Option<Entry> {
    let answer: Answer = serde_json::from_value(item.get("answer")?.clone()).ok()?;
    Some(Entry {
        answer,
        provider: item.str("provider").unwrap_or_default().to_string(),
        latency_ms: item.i64("latency_ms").unwrap_or(0) as u64,
    })
}

/// The journaled answers of one step, by call number.
pub async fn of_step(store: &dyn Store, run_id: &str, step_key: &str) -> Result<Vec<(u32, Entry)>> {
    let q = Query::prefix(keys::run_pk(run_id), keys::ai_calls_prefix(step_key));
    let page = store.query(q).await?;
    Ok(page.items.iter().filter_map(|i| Some((i.i64("call")? as u32, entry_of(i)?))).collect())
}

/// Journals an answer. When another delivery of the same step journaled first, its answer
/// is the one kept and returned: every delivery goes on with the same answer.
pub async fn record(store: &dyn Store, run_id: &str, step_key: &str, call: u32, e: Entry) -> Result<Entry> {
    let key = keys::ai_call(run_id, step_key, call);
    let mut a = Attrs::new();
    a.insert("step_key".into(), json!(step_key));
    a.insert("call".into(), json!(call));
    a.insert("answer".into(), serde_json::to_value(&e.answer)?);
    a.insert("provider".into(), json!(e.provider));
    a.insert("latency_ms".into(), json!(e.latency_ms));
    a.insert("at".into(), json!(crate::ids::now_ms()));
    match store.put(Item::new(key.clone(), a), Some(Cond::NotExists)).await {
        Ok(()) => Ok(e),
        Err(Error::Conflict(_)) => {
            let item = store.get(&key).await?.ok_or_else(|| Error::internal("journal entry vanished"))?;
            entry_of(&item).ok_or_else(|| Error::internal("unreadable journal entry"))
        }
        Err(err) => Err(err),
    }
}

/// Forgets a step's answers (a step that failed on its answer starts afresh when redriven).
pub async fn forget(store: &dyn Store, run_id: &str, step_key: &str) -> Result<()> {
    for (call, _) in of_step(store, run_id, step_key).await? {
        store.delete(&keys::ai_call(run_id, step_key, call), None).await?;
    }
    Ok(())
}

/// A step's usage (all its calls) as the API shows it.
fn usage_view(entries: &[&Entry]) -> Value {
    let sum = |f: fn(&Usage) -> u64| entries.iter().map(|e| f(&e.answer.usage)).sum::<u64>();
    let cost: Option<f64> =
        entries.iter().map(|e| cost_usd(&e.answer.model, &e.answer.usage)).try_fold(0.0, |acc, c| c.map(|c| acc + c));
    let last = entries.last();
    json!({
        "input_tokens": sum(|u| u.input_tokens),
        "output_tokens": sum(|u| u.output_tokens),
        "cached_tokens": sum(|u| u.cached_tokens),
        "model": last.map(|e| e.answer.model.clone()),
        "provider": last.map(|e| e.provider.clone()),
        "latency_ms": entries.iter().map(|e| e.latency_ms).sum::<u64>(),
        "cost_usd": cost.map(|c| (c * 1e8).round() / 1e8),
        "calls": entries.len(),
    })
}

/// Usage per step key, and the run's totals, from every journaled answer of the run.
pub async fn run_usage(store: &dyn Store, run_id: &str) -> Result<(serde_json::Map<String, Value>, Value)> {
    let items = crate::store::query_all(store, Query::prefix(keys::run_pk(run_id), keys::AI_PREFIX)).await?;
    let mut by_step: std::collections::BTreeMap<String, Vec<Entry>> = Default::default();
    for it in &items {
        if let (Some(k), Some(e)) = (it.str("step_key"), entry_of(it)) {
            by_step.entry(k.to_string()).or_default().push(e);
        }
    }
    let all: Vec<&Entry> = by_step.values().flatten().collect();
    let mut total = usage_view(&all);
    if let Value::Object(o) = &mut total {
        o.remove("model");
        o.remove("provider");
    }
    let steps = by_step.iter().map(|(k, es)| (k.clone(), usage_view(&es.iter().collect::<Vec<_>>()))).collect();
    Ok((steps, total))
}

/// Tokens (input + output) the run's calls have used so far.
pub async fn run_tokens(store: &dyn Store, run_id: &str) -> Result<u64> {
    let (_, total) = run_usage(store, run_id).await?;
    Ok(total["input_tokens"].as_u64().unwrap_or(0) + total["output_tokens"].as_u64().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemStore;

    fn entry(text: &str, i: u64, o: u64) -> Entry {
        Entry {
            answer: Answer {
                text: text.into(),
                structured: None,
                usage: Usage { input_tokens: i, output_tokens: o, cached_tokens: 0 },
                model: "gpt-4o-mini-2024-07-18".into(),
            },
            provider: "openai".into(),
            latency_ms: 12,
        }
    }

    #[tokio::test]
    async fn the_first_journaled_answer_wins_for_every_delivery() {
        let store = MemStore::new();
        let a = record(&store, "run_1", "write", 1, entry("first", 1, 1)).await.unwrap();
        let b = record(&store, "run_1", "write", 1, entry("second", 1, 1)).await.unwrap();
        assert_eq!(a.answer.text, "first");
        assert_eq!(b.answer.text, "first");
        assert_eq!(of_step(&store, "run_1", "write").await.unwrap().len(), 1);
        // `write` and `write-2` are different steps.
        assert!(of_step(&store, "run_1", "write-2").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn usage_is_summed_per_step_and_for_the_run_with_list_price_cost() {
        let store = MemStore::new();
        record(&store, "run_1", "a", 1, entry("x", 1_000_000, 0)).await.unwrap();
        record(&store, "run_1", "a", 2, entry("y", 0, 1_000_000)).await.unwrap();
        record(&store, "run_1", "b", 1, entry("z", 10, 5)).await.unwrap();
        let (steps, total) = run_usage(&store, "run_1").await.unwrap();
        assert_eq!(steps["a"]["calls"], 2);
        assert_eq!(steps["a"]["cost_usd"], 0.75);
        assert_eq!(total["input_tokens"], 1_000_010);
        assert_eq!(run_tokens(&store, "run_1").await.unwrap(), 2_000_015);
        forget(&store, "run_1", "a").await.unwrap();
        assert!(of_step(&store, "run_1", "a").await.unwrap().is_empty());
    }

    #[test]
    fn unknown_models_have_no_cost_rather_than_a_guess() {
        assert_eq!(cost_usd("llama3.2", &Usage { input_tokens: 5, output_tokens: 5, cached_tokens: 0 }), None);
        let u = Usage { input_tokens: 1_000_000, output_tokens: 1_000_000, cached_tokens: 0 };
        assert_eq!(cost_usd("anthropic.claude-3-haiku-20240307-v1:0", &u), Some(1.5));
    }
}
