//! The single-table key layout, in one place so every adapter and service agrees.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | account | `ACCT#{acct}` | `ACCOUNT` |
//! | API key metadata (listing) | `ACCT#{acct}` | `KEY#{key_id}` |
//! | API key lookup by hash | `APIKEY#{sha256}` | `APIKEY` |
//! | workflow head | `ACCT#{acct}#WF` | `{wf_id}` |
//! | workflow version | `WF#{acct}#{wf_id}` | `V#{version:010}` |
//! | run | `RUN#{run_id}` | `RUN` |
//! | step | `RUN#{run_id}` | `STEP#{step_key}` |
//! | split item step (`{block}[{i}]`) | `RUN#{run_id}` | `ITEM#{block}#{i:06}` |
//! | task | `RUN#{run_id}` | `TASK#{task_id}` |
//! | event | `RUN#{run_id}` | `EVT#{ms:013}#{seq:06}#{rand}` |
//! | callback delivery | `RUN#{run_id}` | `CB#{delivery_id}` |
//! | run index (listing) | `ACCT#{acct}#RUNS` | `{run_id}` |
//! | idempotency record (TTL) | `IDEM#{acct}#{wf_id}#{key}` | `IDEM` |
//! | rate-limit window (TTL) | `RL#{key_id}#{minute}` | `RL` |
//! | trigger (listing, per workflow) | `TRIGS#{acct}#{wf_id}` | `{trigger_id}` |
//! | trigger lookup by token hash | `HOOK#{sha256}` | `HOOK` |
//! | app (listing) | `ACCT#{acct}#APPS` | `{app_id}` |
//! | app lookup by id (no account at the door) | `APP#{app_id}` | `APP` |
//! | connection | `ACCT#{acct}#CONN` | `{connection_id}` |
//! | webhook block index (claim of a `webhook_id`) | `WEBHOOK#{uuid}` | `WEBHOOK` |
//! | secrets data key (AWS: KMS-encrypted blob) | `CONFIG` | `SECRETS#DATAKEY` |
//! | model provider (listing and lookup) | `ACCT#{acct}#PROV` | `{provider_id}` |
//! | managed-trial counter | `ACCT#{acct}` | `TRIAL` |
//! | journaled provider answer of an agent step | `RUN#{run_id}` | `AI#{step_key}#{call}` |
//!
//! Everything in a run's partition, and the run's index entry, is *run data*: it expires with
//! the run ([`run_part`], [`crate::retention`]). A new kind of item written for a run goes into
//! the run's partition, or is named in [`run_part`].

use crate::store::Key;

pub fn account(acct: &str) -> Key {
    Key::new(format!("ACCT#{acct}"), "ACCOUNT")
}
pub fn api_key_meta(acct: &str, key_id: &str) -> Key {
    Key::new(format!("ACCT#{acct}"), format!("KEY#{key_id}"))
}
pub fn api_key_lookup(hash: &str) -> Key {
    Key::new(format!("APIKEY#{hash}"), "APIKEY")
}
pub fn workflows_pk(acct: &str) -> String {
    format!("ACCT#{acct}#WF")
}
pub fn workflow(acct: &str, wf: &str) -> Key {
    Key::new(workflows_pk(acct), wf)
}
pub fn versions_pk(acct: &str, wf: &str) -> String {
    format!("WF#{acct}#{wf}")
}
pub fn version(acct: &str, wf: &str, v: u64) -> Key {
    Key::new(versions_pk(acct, wf), format!("V#{v:010}"))
}
/// Partition-key prefix of every run's partition.
pub const RUN_PK_PREFIX: &str = "RUN#";
/// Sort key of a run's own item (its header) in the run's partition.
pub const RUN_SK: &str = "RUN";
pub fn run_pk(run: &str) -> String {
    format!("{RUN_PK_PREFIX}{run}")
}
pub fn run(run: &str) -> Key {
    Key::new(run_pk(run), RUN_SK)
}
/// Which part of a run an item is; `None` for items that belong to no run (accounts, keys,
/// workflows, triggers, apps, idempotency records, rate-limit windows, configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunPart<'a> {
    /// The run item ([`run`]).
    Header(&'a str),
    /// The run's entry in its account's run list ([`run_index`]).
    Index(&'a str),
    /// Anything else in the run's partition: steps, split items, tasks, events, callback
    /// deliveries.
    Other(&'a str),
}

impl<'a> RunPart<'a> {
    pub fn run_id(&self) -> &'a str {
        match *self {
            RunPart::Header(r) | RunPart::Index(r) | RunPart::Other(r) => r,
        }
    }
}

/// Whether `key` holds run data, and which part of which run: the one place that decides
/// what expires with a run.
pub fn run_part(key: &Key) -> Option<RunPart<'_>> {
    if let Some(run) = key.pk.strip_prefix(RUN_PK_PREFIX) {
        return Some(if key.sk == RUN_SK { RunPart::Header(run) } else { RunPart::Other(run) });
    }
    if key.pk.starts_with("ACCT#") && key.pk.ends_with("#RUNS") {
        return Some(RunPart::Index(&key.sk));
    }
    if key.pk.starts_with(WAIT_TOKEN_PREFIX) {
        return Some(RunPart::Other(&key.sk));
    }
    None
}
/// A step's item. A split's item steps (`block[i]`) sort under `ITEM#`, before `RUN`: the
/// run snapshot's range leaves them out, so a step's read does not grow with a split's width,
/// and a collection reads them in index order.
pub fn step(run: &str, step_key: &str) -> Key {
    match split_item(step_key) {
        Some((block, i)) => Key::new(run_pk(run), format!("{ITEM_PREFIX}{block}#{i:06}")),
        None => Key::new(run_pk(run), format!("STEP#{step_key}")),
    }
}
pub const ITEM_PREFIX: &str = "ITEM#";
/// Sort-key prefix of the item steps of the split body `block`.
pub fn items_prefix(block: &str) -> String {
    format!("{ITEM_PREFIX}{block}#")
}
/// `("block", i)` for an item step key `block[i]`.
pub fn split_item(step_key: &str) -> Option<(&str, usize)> {
    let (block, rest) = step_key.split_once('[')?;
    let i = rest.strip_suffix(']')?.parse().ok()?;
    Some((block, i))
}
/// The step key of an item step's sort key (`ITEM#block#000003` → `block[3]`).
pub fn item_step_key(sk: &str) -> Option<String> {
    let (block, i) = sk.strip_prefix(ITEM_PREFIX)?.rsplit_once('#')?;
    Some(format!("{block}[{}]", i.parse::<usize>().ok()?))
}
const WAIT_TOKEN_PREFIX: &str = "WAITTOKEN#";
/// Partition of the lookup of a wait by the hash of its token (see `engine::wait`): one
/// item, found by a query since its sort key is the run id (so it expires with the run).
pub fn wait_token_pk(hash: &str) -> String {
    format!("{WAIT_TOKEN_PREFIX}{hash}")
}
pub fn wait_token(hash: &str, run: &str) -> Key {
    Key::new(wait_token_pk(hash), run)
}
pub fn task(run: &str, task: &str) -> Key {
    Key::new(run_pk(run), format!("TASK#{task}"))
}
pub fn event(run: &str, ms: i64, seq: usize) -> Key {
    let r: u16 = rand::random();
    Key::new(run_pk(run), format!("EVT#{ms:013}#{seq:06}#{r:04x}"))
}
/// Sort-key prefix of a run's callback deliveries (`CB#` sorts before `EVT#` and `RUN`, so
/// the run snapshot's range leaves them out).
pub const CALLBACK_PREFIX: &str = "CB#";
pub fn callback(run: &str, delivery: &str) -> Key {
    Key::new(run_pk(run), format!("{CALLBACK_PREFIX}{delivery}"))
}
pub fn runs_index_pk(acct: &str) -> String {
    format!("ACCT#{acct}#RUNS")
}
pub fn run_index(acct: &str, run: &str) -> Key {
    Key::new(runs_index_pk(acct), run)
}
pub fn idempotency(acct: &str, wf: &str, key: &str) -> Key {
    Key::new(format!("IDEM#{acct}#{wf}#{key}"), "IDEM")
}
/// One fixed window of a rate limit: `bucket` names who is counted and for what.
pub fn rate_window(bucket: &str, window: i64) -> Key {
    Key::new(format!("RL#{bucket}#{window}"), "RL")
}
pub fn triggers_pk(acct: &str, wf: &str) -> String {
    format!("TRIGS#{acct}#{wf}")
}
pub fn trigger(acct: &str, wf: &str, trigger_id: &str) -> Key {
    Key::new(triggers_pk(acct, wf), trigger_id)
}
pub fn hook_lookup(token_hash: &str) -> Key {
    Key::new(format!("HOOK#{token_hash}"), "HOOK")
}
pub fn apps_pk(acct: &str) -> String {
    format!("ACCT#{acct}#APPS")
}
pub fn app_listing(acct: &str, app_id: &str) -> Key {
    Key::new(apps_pk(acct), app_id)
}
pub fn app(app_id: &str) -> Key {
    Key::new(format!("APP#{app_id}"), "APP")
}
pub fn connections_pk(acct: &str) -> String {
    format!("ACCT#{acct}#CONN")
}
pub fn connection(acct: &str, id: &str) -> Key {
    Key::new(connections_pk(acct), id)
}
pub fn webhook(webhook_id: &str) -> Key {
    Key::new(format!("WEBHOOK#{webhook_id}"), "WEBHOOK")
}
pub fn providers_pk(acct: &str) -> String {
    format!("ACCT#{acct}#PROV")
}
pub fn provider(acct: &str, provider_id: &str) -> Key {
    Key::new(providers_pk(acct), provider_id)
}
pub fn trial(acct: &str) -> Key {
    Key::new(format!("ACCT#{acct}"), "TRIAL")
}
/// Sort-key prefix of a run's journaled provider answers; sorts before `RUN`, so the run
/// snapshot's range never reads them.
pub const AI_PREFIX: &str = "AI#";
/// Sort-key prefix of one step's journaled answers.
pub fn ai_calls_prefix(step_key: &str) -> String {
    format!("{AI_PREFIX}{step_key}#")
}
/// The journaled answer to call `call` (1: the call, 2: the repair) of an agent step.
pub fn ai_call(run: &str, step_key: &str, call: u32) -> Key {
    Key::new(run_pk(run), format!("{}{call}", ai_calls_prefix(step_key)))
}
pub fn secrets_data_key() -> Key {
    Key::new("CONFIG", "SECRETS#DATAKEY")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_of_a_run_is_run_data_and_nothing_else_is() {
        let r = "run_01hzz";
        assert_eq!(run_part(&run(r)), Some(RunPart::Header(r)));
        assert_eq!(run_part(&run_index("acct_1", r)), Some(RunPart::Index(r)));
        for k in [
            step(r, "a"),
            step(r, "body[7]"),
            task(r, "task_1"),
            event(r, 1, 2),
            callback(r, "dlv_1"),
            ai_call(r, "write", 1),
        ] {
            assert_eq!(run_part(&k), Some(RunPart::Other(r)), "{k:?}");
        }
        for k in [
            account("acct_1"),
            api_key_meta("acct_1", "key_1"),
            api_key_lookup("abc"),
            workflow("acct_1", "wf"),
            version("acct_1", "wf", 1),
            idempotency("acct_1", "wf", "k"),
            rate_window("key_1", 7),
            trigger("acct_1", "wf", "trg_1"),
            hook_lookup("abc"),
            app_listing("acct_1", "app_1"),
            app("app_1"),
            webhook("u"),
            secrets_data_key(),
            provider("acct_1", "prov_1"),
            trial("acct_1"),
        ] {
            assert_eq!(run_part(&k), None, "{k:?}");
        }
    }
}
