//! The conformance suite every Store/Queue adapter must pass.
//!
//! Each behaviour is a `pub async fn` that takes the port as a trait object and panics when the
//! adapter breaks the contract; it uses nothing but the traits, so every backend (SQLite,
//! DynamoDB/SQS against moto, …) runs the very same checks. The macros expand to one
//! `#[tokio::test]` per behaviour, named after it:
//!
//! ```ignore
//! mod store_conformance {
//!     baton::store_conformance_tests!(async { make_store().await });
//! }
//! mod queue_conformance {
//!     // The factory must build a queue with max receives = conformance::QUEUE_MAX_RECEIVES.
//!     baton::queue_conformance_tests!(async { make_queue().await });
//! }
//! ```
//!
//! The factory expression is evaluated once per test and must yield an `Arc` of something
//! implementing the port. Store tests only touch partitions with a unique key, so a factory
//! may hand out the same table every time; queue tests assume a fresh, empty queue per call.
//! The calling crate needs `tokio` with the `macros` and `rt-multi-thread` features.

/// The max-receives setting the queue factory must use.
pub const QUEUE_MAX_RECEIVES: u32 = 3;

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($kind:ident, $factory:expr, [$($name:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let port = $factory.await;
                $crate::conformance::$kind::$name(port).await;
            }
        )*
    };
}

/// One `#[tokio::test]` per store behaviour; the argument is an expression that evaluates to a
/// future yielding `Arc<impl Store>` (e.g. an `async { … }` block), evaluated once per test.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::__conformance_tests!(
            store,
            $factory,
            [
                get_missing_returns_none,
                get_many_returns_items_in_key_order_with_gaps,
                put_then_get_roundtrips_attrs_and_ttl,
                put_replaces_whole_item,
                conditional_put_not_exists_conflicts_when_present,
                failed_condition_changes_nothing,
                condition_operators_follow_dynamodb_semantics,
                exists_condition_on_missing_item_conflicts_and_creates_nothing,
                update_on_missing_item_creates_it_and_add_counts_from_zero,
                update_sets_removes_adds_and_returns_new_item,
                update_sets_keeps_and_clears_ttl,
                delete_missing_is_ok_and_conditional_delete_checks,
                transact_is_all_or_nothing,
                transact_rejects_duplicate_keys,
                transact_accepts_max_items,
                transact_rejects_more_than_max_items,
                oversized_item_is_payload_too_large,
                item_just_under_limit_is_accepted,
                one_mib_payloads_roundtrip_through_every_read_and_write,
                many_medium_attributes_roundtrip,
                conditions_on_items_with_large_payloads_still_work,
                large_condition_value_is_validation_error,
                empty_key_parts_are_validation_errors,
                expired_items_are_invisible_and_count_as_absent,
                update_on_expired_item_starts_fresh,
                query_pages_with_cursor_in_order_and_descending,
                query_prefix_and_between_ranges,
                query_is_scoped_to_one_partition,
                query_invalid_arguments_are_validation_errors,
                concurrent_conditional_updates_exactly_one_wins,
                concurrent_adds_are_not_lost,
            ]
        );
    };
}

/// One `#[tokio::test]` per queue behaviour; the argument is an expression that evaluates to a
/// future yielding `Arc<impl Queue>` for a fresh, empty queue whose max-receives setting is
/// [`conformance::QUEUE_MAX_RECEIVES`](crate::conformance::QUEUE_MAX_RECEIVES).
#[macro_export]
macro_rules! queue_conformance_tests {
    ($factory:expr) => {
        $crate::__conformance_tests!(
            queue,
            $factory,
            [
                send_then_receive_roundtrips_body,
                receive_respects_max,
                receive_max_out_of_range_is_validation_error,
                delete_removes_message_and_is_idempotent,
                visibility_timeout_redelivers_with_incremented_count,
                change_visibility_zero_makes_message_visible_again,
                change_visibility_extends_hiding,
                stale_receipt_delete_is_noop,
                stale_receipt_change_visibility_is_noop,
                delayed_message_invisible_until_delay,
                delay_over_max_is_validation_error,
                body_over_max_is_validation_error,
                batch_send_of_25_all_arrive,
                long_poll_wakes_on_send,
                long_poll_returns_empty_after_wait,
                max_receives_moves_to_dead_letters,
                concurrent_receivers_get_every_message,
            ]
        );
    };
}

fn unique(tag: &str) -> String {
    format!("conformance#{tag}#{}", ulid::Ulid::new())
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(r: crate::Result<T>, what: &str) {
    match r {
        Err(crate::Error::Conflict(_)) => {}
        other => panic!("{what}: expected Conflict, got {other:?}"),
    }
}

#[track_caller]
fn assert_validation<T: std::fmt::Debug>(r: crate::Result<T>, what: &str) {
    match r {
        Err(crate::Error::Validation { .. }) => {}
        other => panic!("{what}: expected Validation, got {other:?}"),
    }
}

/// Store behaviours.
pub mod store {
    use super::{assert_conflict, assert_validation, now_secs, unique};
    use crate::Error;
    use crate::store::{
        Attrs, Cond, Item, Key, MAX_COND_VALUE_BYTES, MAX_ITEM_BYTES, MAX_PAYLOAD_BYTES, MAX_QUERY_LIMIT,
        MAX_TRANSACT_ITEMS, Query, SkRange, Store, Update, Write, query_all,
    };
    use serde_json::{Value, json};
    use std::sync::Arc;

    fn attrs(v: Value) -> Attrs {
        match v {
            Value::Object(m) => m,
            other => panic!("attrs must be an object, got {other}"),
        }
    }

    fn item(key: &Key, v: Value) -> Item {
        Item::new(key.clone(), attrs(v))
    }

    async fn sks(store: &dyn Store, q: Query) -> Vec<String> {
        query_all(store, q).await.unwrap().into_iter().map(|i| i.key.sk).collect()
    }

    fn put_w(key: &Key, v: Value, cond: Option<Cond>) -> Write {
        Write::Put { item: item(key, v), cond }
    }

    pub async fn get_missing_returns_none(store: Arc<dyn Store>) {
        let pk = unique("get-missing");
        assert_eq!(store.get(&Key::new(&pk, "nothing")).await.unwrap(), None);
    }

    pub async fn get_many_returns_items_in_key_order_with_gaps(store: Arc<dyn Store>) {
        let pk = unique("get-many");
        assert_eq!(store.get_many(&[]).await.unwrap(), Vec::<Option<Item>>::new());
        // More keys than one DynamoDB request takes, some missing, one expired, one repeated,
        // one holding a value too large for a DynamoDB item, one in another partition.
        let mut keys = Vec::new();
        for i in 0..130 {
            let key = Key::new(&pk, format!("k{i:03}"));
            if i % 3 != 0 {
                store.put(item(&key, json!({"i": i})), None).await.unwrap();
            }
            keys.push(key);
        }
        let expired = Key::new(&pk, "expired");
        let mut it = item(&expired, json!({"i": -1}));
        it.expires_at = Some(now_secs() - 10);
        store.put(it, None).await.unwrap();
        let large = Key::new(&pk, "large");
        let big = "x".repeat(crate::store::MAX_PAYLOAD_BYTES - 2);
        store.put(item(&large, json!({"big": big})), None).await.unwrap();
        let other = Key::new(unique("get-many-other"), "k001");
        store.put(item(&other, json!({"i": "other"})), None).await.unwrap();
        keys.extend([expired, large.clone(), keys[1].clone(), other]);

        let got = store.get_many(&keys).await.unwrap();
        assert_eq!(got.len(), keys.len());
        for (i, (k, g)) in keys.iter().zip(&got).enumerate().take(130) {
            match g {
                Some(it) => {
                    assert!(i % 3 != 0, "{k:?} was never written");
                    assert_eq!(&it.key, k);
                    assert_eq!(it.get("i"), Some(&json!(i)));
                }
                None => assert!(i % 3 == 0, "{k:?} is missing"),
            }
        }
        assert_eq!(got[130], None, "an expired item is invisible");
        assert_eq!(got[131].as_ref().and_then(|it| it.str("big")).map(str::len), Some(big.len()));
        assert_eq!(got[132].as_ref().and_then(|it| it.get("i")), Some(&json!(1)), "a repeated key");
        assert_eq!(got[133].as_ref().and_then(|it| it.get("i")), Some(&json!("other")), "keys of any partition");
        assert_eq!(got[131], store.get(&large).await.unwrap(), "the same item as get reads");
    }

    pub async fn put_then_get_roundtrips_attrs_and_ttl(store: Arc<dyn Store>) {
        let key = Key::new(unique("roundtrip"), "item");
        let expires = now_secs() + 3600;
        let mut it = item(
            &key,
            json!({
                "s": "text", "n": 42, "neg": -7, "f": 1.5, "big": 9_007_199_254_740_993_i64,
                "b": true, "nul": null, "unicode": "héllo ✓ 𝄞",
                "list": [1, "two", {"three": 3}], "map": {"a": {"b": "c"}, "empty": {}}
            }),
        );
        it.expires_at = Some(expires);
        store.put(it.clone(), None).await.unwrap();
        let got = store.get(&key).await.unwrap().expect("item present");
        assert_eq!(got, it);
        assert_eq!(got.i64("big"), Some(9_007_199_254_740_993));
        assert_eq!(got.str("unicode"), Some("héllo ✓ 𝄞"));
    }

    pub async fn put_replaces_whole_item(store: Arc<dyn Store>) {
        let key = Key::new(unique("replace"), "item");
        let mut first = item(&key, json!({"a": 1, "b": 2}));
        first.expires_at = Some(now_secs() + 3600);
        store.put(first, None).await.unwrap();
        store.put(item(&key, json!({"c": 3})), None).await.unwrap();
        let got = store.get(&key).await.unwrap().unwrap();
        assert_eq!(got.attrs, attrs(json!({"c": 3})));
        assert_eq!(got.expires_at, None, "a put without TTL clears the TTL");
    }

    pub async fn conditional_put_not_exists_conflicts_when_present(store: Arc<dyn Store>) {
        let key = Key::new(unique("put-not-exists"), "claim");
        store.put(item(&key, json!({"owner": "a"})), Some(Cond::NotExists)).await.unwrap();
        let again = store.put(item(&key, json!({"owner": "b"})), Some(Cond::NotExists)).await;
        assert_conflict(again, "second put with NotExists");
        assert_eq!(store.get(&key).await.unwrap().unwrap().str("owner"), Some("a"));
        store.put(item(&key, json!({"owner": "c"})), Some(Cond::Exists)).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap().unwrap().str("owner"), Some("c"));
    }

    pub async fn failed_condition_changes_nothing(store: Arc<dyn Store>) {
        let key = Key::new(unique("failed-cond"), "item");
        let original = item(&key, json!({"v": 1, "keep": "yes"}));
        store.put(original.clone(), None).await.unwrap();
        let wrong = || Some(Cond::eq("v", 2));
        assert_conflict(store.put(item(&key, json!({"v": 9})), wrong()).await, "put");
        let upd = Update::default().set("v", 9).add("n", 1).remove("keep");
        assert_conflict(store.update(&key, upd, wrong()).await, "update");
        assert_conflict(store.delete(&key, wrong()).await, "delete");
        assert_eq!(store.get(&key).await.unwrap(), Some(original));
    }

    pub async fn condition_operators_follow_dynamodb_semantics(store: Arc<dyn Store>) {
        let key = Key::new(unique("cond-ops"), "item");
        let it = item(&key, json!({"n": 5, "s": "m", "flag": true}));
        store.put(it.clone(), None).await.unwrap();
        let absent = || Cond::AttrAbsent("missing".into());
        let n = |c: fn(String, Value) -> Cond, v: Value| c("n".into(), v);
        let cases: Vec<(Cond, bool)> = vec![
            (Cond::Exists, true),
            (Cond::NotExists, false),
            (Cond::eq("n", 5), true),
            (Cond::eq("n", 5.0), true),
            (Cond::eq("n", 6), false),
            (Cond::eq("n", "5"), false),
            (Cond::eq("s", "m"), true),
            (Cond::eq("flag", true), true),
            (Cond::eq("missing", 5), false),
            (n(Cond::Lt, json!(6)), true),
            (n(Cond::Lt, json!(10)), true),
            (n(Cond::Lt, json!(5)), false),
            (n(Cond::Le, json!(5)), true),
            (n(Cond::Le, json!(4)), false),
            (n(Cond::Gt, json!(4)), true),
            (n(Cond::Gt, json!(5)), false),
            (n(Cond::Ge, json!(5)), true),
            (n(Cond::Ge, json!(6)), false),
            (n(Cond::Gt, json!(-1.5)), true),
            (n(Cond::Lt, json!("z")), false),
            (Cond::Lt("s".into(), json!("n")), true),
            (Cond::Gt("s".into(), json!("n")), false),
            (Cond::Lt("missing".into(), json!(1)), false),
            (Cond::Not(Box::new(Cond::Lt("missing".into(), json!(1)))), true),
            (absent(), true),
            (Cond::AttrAbsent("n".into()), false),
            (Cond::eq("n", 5).and(Cond::eq("s", "m")), true),
            (Cond::eq("n", 5).and(Cond::eq("s", "x")), false),
            (Cond::Or(vec![Cond::eq("n", 0), Cond::eq("s", "m")]), true),
            (Cond::Or(vec![Cond::eq("n", 0), Cond::eq("s", "x")]), false),
            (Cond::Not(Box::new(Cond::eq("n", 5))), false),
            (Cond::And(vec![absent(), Cond::Not(Box::new(Cond::Or(vec![Cond::eq("s", "x")])))]), true),
        ];
        for (cond, holds) in cases {
            let r = store.put(it.clone(), Some(cond.clone())).await;
            match (holds, r) {
                (true, Ok(())) | (false, Err(Error::Conflict(_))) => {}
                (_, r) => {
                    panic!("condition {cond:?} should {}hold; put returned {r:?}", if holds { "" } else { "not " })
                }
            }
        }
        let missing = Key::new(key.pk.clone(), "missing");
        for (cond, holds) in [
            (Cond::NotExists, true),
            (Cond::AttrAbsent("n".into()), true),
            (Cond::Not(Box::new(Cond::eq("n", 5))), true),
            (Cond::Exists, false),
            (Cond::eq("n", 5), false),
        ] {
            let r = store.transact(vec![Write::Check { key: missing.clone(), cond: cond.clone() }]).await;
            match (holds, r) {
                (true, Ok(())) | (false, Err(Error::Conflict(_))) => {}
                (_, r) => panic!("condition {cond:?} on a missing item: transact returned {r:?}"),
            }
        }
    }

    pub async fn exists_condition_on_missing_item_conflicts_and_creates_nothing(store: Arc<dyn Store>) {
        let key = Key::new(unique("exists-missing"), "item");
        let upd = Update::default().set("a", 1);
        assert_conflict(store.update(&key, upd, Some(Cond::Exists)).await, "update with Exists");
        assert_conflict(store.delete(&key, Some(Cond::Exists)).await, "delete with Exists");
        assert_eq!(store.get(&key).await.unwrap(), None);
    }

    pub async fn update_on_missing_item_creates_it_and_add_counts_from_zero(store: Arc<dyn Store>) {
        let key = Key::new(unique("update-creates"), "counter");
        let got = store.update(&key, Update::default().set("a", "x").add("count", 1), None).await.unwrap();
        assert_eq!(got.key, key);
        assert_eq!(got.attrs, attrs(json!({"a": "x", "count": 1})));
        assert_eq!(store.get(&key).await.unwrap(), Some(got));
        let got = store.update(&key, Update::default().add("count", 2), None).await.unwrap();
        assert_eq!(got.i64("count"), Some(3));
        let got = store.update(&key, Update::default().add("count", -5).add("other", 7), None).await.unwrap();
        assert_eq!(got.i64("count"), Some(-2));
        assert_eq!(got.i64("other"), Some(7));
        assert_eq!(store.get(&key).await.unwrap().unwrap().i64("count"), Some(-2));
        let created = Key::new(key.pk.clone(), "conditional");
        let got = store.update(&created, Update::default().add("n", 1), Some(Cond::NotExists)).await.unwrap();
        assert_eq!(got.i64("n"), Some(1));
    }

    pub async fn update_sets_removes_adds_and_returns_new_item(store: Arc<dyn Store>) {
        let key = Key::new(unique("update-ops"), "item");
        store.put(item(&key, json!({"a": 1, "b": 2, "c": "keep", "n": 10})), None).await.unwrap();
        let upd = Update::default().set("a", 10).set("d", json!({"deep": [1, 2]})).remove("b").add("n", 5);
        let got = store.update(&key, upd, Some(Cond::eq("a", 1))).await.unwrap();
        assert_eq!(got.attrs, attrs(json!({"a": 10, "c": "keep", "n": 15, "d": {"deep": [1, 2]}})));
        assert_eq!(store.get(&key).await.unwrap(), Some(got));
        let got = store.update(&key, Update::default().remove("never-there"), None).await.unwrap();
        assert_eq!(got.i64("n"), Some(15));
    }

    pub async fn update_sets_keeps_and_clears_ttl(store: Arc<dyn Store>) {
        let key = Key::new(unique("update-ttl"), "item");
        let t = now_secs() + 3600;
        let got = store.update(&key, Update { expires_at: Some(Some(t)), ..Update::default().set("a", 1) }, None);
        assert_eq!(got.await.unwrap().expires_at, Some(t));
        assert_eq!(store.get(&key).await.unwrap().unwrap().expires_at, Some(t));
        let got = store.update(&key, Update::default().set("b", 2), None).await.unwrap();
        assert_eq!(got.expires_at, Some(t), "an update without TTL change keeps it");
        assert_eq!(store.get(&key).await.unwrap().unwrap().expires_at, Some(t));
        let got = store.update(&key, Update { expires_at: Some(None), ..Update::default() }, None).await.unwrap();
        assert_eq!(got.expires_at, None);
        let now = store.get(&key).await.unwrap().unwrap();
        assert_eq!(now.expires_at, None);
        assert_eq!(now.attrs, attrs(json!({"a": 1, "b": 2})));
    }

    pub async fn delete_missing_is_ok_and_conditional_delete_checks(store: Arc<dyn Store>) {
        let key = Key::new(unique("delete"), "item");
        store.delete(&key, None).await.unwrap();
        store.delete(&key, Some(Cond::NotExists)).await.unwrap();
        store.put(item(&key, json!({"v": 1})), None).await.unwrap();
        assert_conflict(store.delete(&key, Some(Cond::eq("v", 2))).await, "delete with wrong v");
        assert!(store.get(&key).await.unwrap().is_some());
        store.delete(&key, Some(Cond::eq("v", 1))).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap(), None);
        store.delete(&key, None).await.unwrap();
    }

    pub async fn transact_is_all_or_nothing(store: Arc<dyn Store>) {
        let pk = unique("transact");
        let (a, b, c, d) = (Key::new(&pk, "a"), Key::new(&pk, "b"), Key::new(&pk, "c"), Key::new(&pk, "d"));
        store.put(item(&a, json!({"v": 1})), None).await.unwrap();
        store.put(item(&b, json!({"v": 1})), None).await.unwrap();
        let writes = |last: Write| {
            vec![
                put_w(&c, json!({"new": true}), Some(Cond::NotExists)),
                Write::Update { key: a.clone(), update: Update::default().add("v", 1), cond: Some(Cond::eq("v", 1)) },
                Write::Delete { key: b.clone(), cond: Some(Cond::Exists) },
                last,
            ]
        };
        let before = query_all(store.as_ref(), Query::partition(&pk)).await.unwrap();
        let failing = writes(Write::Check { key: d.clone(), cond: Cond::Exists });
        assert_conflict(store.transact(failing).await, "transaction with a failing check");
        assert_eq!(query_all(store.as_ref(), Query::partition(&pk)).await.unwrap(), before, "nothing changed");
        // A failing condition on the first write cancels the later ones too.
        let first_fails = vec![
            Write::Update { key: a.clone(), update: Update::default().set("x", 1), cond: Some(Cond::eq("v", 7)) },
            put_w(&d, json!({}), None),
        ];
        assert_conflict(store.transact(first_fails).await, "transaction failing first");
        assert_eq!(query_all(store.as_ref(), Query::partition(&pk)).await.unwrap(), before, "nothing changed");

        let passing = writes(Write::Check { key: d.clone(), cond: Cond::NotExists });
        store.transact(passing).await.unwrap();
        assert_eq!(store.get(&a).await.unwrap().unwrap().i64("v"), Some(2));
        assert_eq!(store.get(&b).await.unwrap(), None);
        assert_eq!(store.get(&c).await.unwrap().unwrap().get("new"), Some(&json!(true)));
        assert_eq!(store.get(&d).await.unwrap(), None, "a check writes nothing");
    }

    pub async fn transact_rejects_duplicate_keys(store: Arc<dyn Store>) {
        let pk = unique("transact-dup");
        let (a, b) = (Key::new(&pk, "a"), Key::new(&pk, "b"));
        let writes = vec![
            put_w(&b, json!({"v": 1}), None),
            put_w(&a, json!({"v": 1}), None),
            Write::Update { key: a.clone(), update: Update::default().add("v", 1), cond: None },
        ];
        assert_validation(store.transact(writes).await, "two writes on one key");
        let writes = vec![put_w(&a, json!({"v": 1}), None), Write::Check { key: a.clone(), cond: Cond::NotExists }];
        assert_validation(store.transact(writes).await, "a write and a check on one key");
        assert_eq!(store.get(&a).await.unwrap(), None);
        assert_eq!(store.get(&b).await.unwrap(), None);
    }

    pub async fn transact_accepts_max_items(store: Arc<dyn Store>) {
        let pk = unique("transact-max");
        let writes: Vec<Write> =
            (0..MAX_TRANSACT_ITEMS).map(|i| put_w(&Key::new(&pk, format!("{i:04}")), json!({"i": i}), None)).collect();
        store.transact(writes).await.unwrap();
        assert_eq!(sks(store.as_ref(), Query::partition(&pk)).await.len(), MAX_TRANSACT_ITEMS);
    }

    pub async fn transact_rejects_more_than_max_items(store: Arc<dyn Store>) {
        let pk = unique("transact-too-many");
        let writes: Vec<Write> =
            (0..=MAX_TRANSACT_ITEMS).map(|i| put_w(&Key::new(&pk, format!("{i:04}")), json!({"i": i}), None)).collect();
        assert_validation(store.transact(writes).await, "transaction over the limit");
        assert!(sks(store.as_ref(), Query::partition(&pk)).await.is_empty());
    }

    pub async fn oversized_item_is_payload_too_large(store: Arc<dyn Store>) {
        let pk = unique("too-large");
        let key = Key::new(&pk, "big");
        let blob = "x".repeat(MAX_ITEM_BYTES + 1);
        let too_large = |r: crate::Result<()>, what: &str| match r {
            Err(Error::PayloadTooLarge(_)) => {}
            other => panic!("{what}: expected PayloadTooLarge, got {other:?}"),
        };
        too_large(store.put(item(&key, json!({"blob": blob})), None).await, "put");
        let r = store.update(&key, Update::default().set("blob", blob.clone()), None).await.map(|_| ());
        too_large(r, "update");
        let other = Key::new(&pk, "other");
        let writes = vec![put_w(&other, json!({"v": 1}), None), put_w(&key, json!({"blob": blob}), None)];
        too_large(store.transact(writes).await, "transact");
        assert_eq!(store.get(&other).await.unwrap(), None, "the transaction wrote nothing");
        // An update that grows an item past the limit is rejected too, alone or in a transaction.
        let half = "y".repeat(MAX_ITEM_BYTES / 2 + 1024);
        store.put(item(&key, json!({"a": half, "n": 1})), None).await.unwrap();
        let r = store.update(&key, Update::default().set("b", half.clone()), None).await.map(|_| ());
        too_large(r, "growing update");
        let grow = Write::Update { key: key.clone(), update: Update::default().set("b", half.clone()), cond: None };
        too_large(store.transact(vec![put_w(&other, json!({"v": 1}), None), grow]).await, "growing transact update");
        let got = store.get(&key).await.unwrap().unwrap();
        assert_eq!((got.get("b"), got.get("a")), (None, Some(&json!(half))));
        assert_eq!(store.get(&other).await.unwrap(), None, "the transaction wrote nothing");
        // Replacing the large value by another as large keeps the item under the limit.
        let again = "z".repeat(MAX_ITEM_BYTES / 2 + 1024);
        let got = store.update(&key, Update::default().set("a", again.clone()).add("n", 1), None).await.unwrap();
        assert_eq!((got.get("a"), got.i64("n")), (Some(&json!(again)), Some(2)));
    }

    pub async fn item_just_under_limit_is_accepted(store: Arc<dyn Store>) {
        let key = Key::new(unique("under-limit"), "big");
        let it = item(&key, json!({"blob": "x".repeat(MAX_ITEM_BYTES - 1024)}));
        store.put(it.clone(), None).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap(), Some(it));
    }

    /// A JSON document of about `bytes` bytes with every JSON type in it (numbers of every
    /// kind, nested maps and lists, unicode and escapes), different for each `seed`.
    fn document(bytes: usize, seed: u64) -> Value {
        let mut rows = Vec::new();
        let mut size = 0;
        let mut i: u64 = 0;
        while size < bytes {
            let row = json!({
                "i": i, "seed": seed, "neg": -(i as i64), "f": i as f64 + 0.25, "ok": i.is_multiple_of(2), "none": null,
                "text": format!("row {i} of {seed}: héllo ✓ 𝄞 \"quoted\" \\ tab\t"),
                "tags": ["a", i, {"deep": [i, [], {}]}],
            });
            size += serde_json::to_vec(&row).unwrap().len() + 1;
            rows.push(row);
            i += 1;
        }
        json!({"rows": rows})
    }

    pub async fn one_mib_payloads_roundtrip_through_every_read_and_write(store: Arc<dyn Store>) {
        let pk = unique("payload");
        let (a, b, c, d) = (Key::new(&pk, "a"), Key::new(&pk, "b"), Key::new(&pk, "c"), Key::new(&pk, "d"));
        // A run item's worst case: a 1 MiB input and a 1 MiB output, plus small attributes.
        let input = json!("i".repeat(MAX_PAYLOAD_BYTES - 2));
        let output = document(MAX_PAYLOAD_BYTES - 1024, 1);
        assert!(serde_json::to_vec(&output).unwrap().len() <= MAX_PAYLOAD_BYTES);
        let mut run = item(&a, json!({"status": "running", "input": input, "output": output, "n": 1}));
        run.expires_at = Some(now_secs() + 3600);
        store.put(run.clone(), Some(Cond::NotExists)).await.unwrap();
        assert_eq!(store.get(&a).await.unwrap().as_ref(), Some(&run), "put, then get");

        // Transaction: a put and an update that each write a payload, beside small writes.
        let big_b = document(MAX_PAYLOAD_BYTES - 1024, 2);
        let big_c = json!("c".repeat(MAX_PAYLOAD_BYTES - 2));
        store.put(item(&c, json!({"status": "pending"})), None).await.unwrap();
        store
            .transact(vec![
                put_w(&b, json!({"output": big_b, "k": "b"}), Some(Cond::NotExists)),
                Write::Update {
                    key: c.clone(),
                    update: Update::default().set("status", "done").set("output", big_c.clone()),
                    cond: Some(Cond::eq("status", "pending")),
                },
                Write::Update { key: a.clone(), update: Update::default().add("n", 1), cond: Some(Cond::Exists) },
                Write::Check { key: d.clone(), cond: Cond::NotExists },
            ])
            .await
            .unwrap();
        assert_eq!(store.get(&b).await.unwrap().unwrap().attrs, attrs(json!({"output": big_b, "k": "b"})));
        let got_c = store.get(&c).await.unwrap().unwrap();
        assert_eq!(got_c.attrs, attrs(json!({"status": "done", "output": big_c})), "transact update");

        // Update: the returned item and a later read hold the new payload; a small update of
        // an item with payloads returns them too.
        let big_d = document(MAX_PAYLOAD_BYTES - 4096, 3);
        let got = store.update(&d, Update::default().set("output", big_d.clone()).set("s", "x"), None).await.unwrap();
        assert_eq!(got.attrs, attrs(json!({"output": big_d, "s": "x"})), "update returns the new item");
        let got = store.update(&a, Update::default().set("status", "completed"), None).await.unwrap();
        run.attrs.insert("status".into(), json!("completed"));
        run.attrs.insert("n".into(), json!(2));
        assert_eq!(got, run, "a small update returns the payloads it did not touch");

        // Query: every item of the partition, payloads resolved, in order; pages too.
        let all = query_all(store.as_ref(), Query::partition(&pk)).await.unwrap();
        assert_eq!(all.iter().map(|i| i.key.sk.as_str()).collect::<Vec<_>>(), ["a", "b", "c", "d"]);
        assert_eq!(all[0], run);
        assert_eq!(all[3].get("output"), Some(&big_d));
        let page = store.query(Query { limit: 1, descending: true, ..Query::partition(&pk) }).await.unwrap();
        assert_eq!(page.items[0].get("output"), Some(&big_d));

        // A payload replaced by a small value, then removed, is gone from reads.
        let got = store.update(&b, Update::default().set("output", "small"), None).await.unwrap();
        assert_eq!(got.attrs, attrs(json!({"output": "small", "k": "b"})));
        let got = store.update(&c, Update::default().remove("output"), None).await.unwrap();
        assert_eq!(got.attrs, attrs(json!({"status": "done"})));
        assert_eq!(store.get(&c).await.unwrap().unwrap().attrs, attrs(json!({"status": "done"})));
        // And a put replaces an item with payloads whole.
        store.put(item(&d, json!({"v": 1})), None).await.unwrap();
        assert_eq!(store.get(&d).await.unwrap().unwrap().attrs, attrs(json!({"v": 1})));
    }

    pub async fn many_medium_attributes_roundtrip(store: Arc<dyn Store>) {
        // Twenty values of 40 KiB: each small, together twice DynamoDB's own item limit.
        let key = Key::new(unique("medium"), "item");
        let mut v = serde_json::Map::new();
        for i in 0..20 {
            v.insert(format!("part{i:02}"), json!(format!("{i:02}").repeat(20 * 1024)));
        }
        let it = item(&key, Value::Object(v.clone()));
        store.put(it.clone(), None).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap(), Some(it));
        // The same through an update of a fresh item.
        let key = Key::new(unique("medium"), "updated");
        let update = Update { set: v.clone(), ..Update::default() };
        let got = store.update(&key, update, Some(Cond::NotExists)).await.unwrap();
        assert_eq!(got.attrs, v);
        assert_eq!(store.get(&key).await.unwrap().unwrap().attrs, v);
    }

    pub async fn conditions_on_items_with_large_payloads_still_work(store: Arc<dyn Store>) {
        // What the engine does to a step holding a large output: claims and counters on its
        // small attributes; conditions comparing with the payload's attribute are false.
        let key = Key::new(unique("payload-cond"), "step");
        let output = json!("o".repeat(MAX_PAYLOAD_BYTES / 2));
        store.put(item(&key, json!({"status": "completed", "output": output, "claim": "t1"})), None).await.unwrap();
        assert_conflict(
            store.update(&key, Update::default().set("x", 1), Some(Cond::AttrAbsent("output".into()))).await,
            "the payload attribute is present",
        );
        assert_conflict(
            store.update(&key, Update::default().set("x", 1), Some(Cond::eq("output", "o"))).await,
            "the payload is not a small value",
        );
        let cond = Cond::eq("status", "completed")
            .and(Cond::eq("claim", "t1"))
            .and(Cond::Not(Box::new(Cond::eq("output", "o"))));
        let got = store.update(&key, Update::default().add("seen", 1).remove("claim"), Some(cond)).await.unwrap();
        assert_eq!(got.get("output"), Some(&output));
        assert_eq!(got.i64("seen"), Some(1));
        store.delete(&key, Some(Cond::eq("status", "completed"))).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap(), None);
    }

    pub async fn large_condition_value_is_validation_error(store: Arc<dyn Store>) {
        let key = Key::new(unique("cond-size"), "item");
        store.put(item(&key, json!({"v": 1})), None).await.unwrap();
        let big = json!("v".repeat(MAX_COND_VALUE_BYTES));
        let fits = json!("v".repeat(MAX_COND_VALUE_BYTES - 2));
        assert_validation(store.put(item(&key, json!({})), Some(Cond::eq("v", big.clone()))).await, "put");
        let upd = || Update::default().set("w", 1);
        assert_validation(
            store.update(&key, upd(), Some(Cond::Not(Box::new(Cond::eq("v", big.clone()))))).await,
            "update",
        );
        assert_validation(store.delete(&key, Some(Cond::Lt("v".into(), big.clone()))).await, "delete");
        let check = Write::Check { key: key.clone(), cond: Cond::Or(vec![Cond::Exists, Cond::eq("v", big.clone())]) };
        assert_validation(store.transact(vec![check]).await, "transact");
        assert_eq!(store.get(&key).await.unwrap().unwrap().attrs, attrs(json!({"v": 1})), "nothing changed");
        // At the limit, the condition is evaluated as usual.
        assert_conflict(store.update(&key, upd(), Some(Cond::eq("v", fits))).await, "a value at the limit");
    }

    pub async fn empty_key_parts_are_validation_errors(store: Arc<dyn Store>) {
        let pk = unique("empty-key");
        assert_validation(store.put(item(&Key::new(&pk, ""), json!({})), None).await, "empty sort key");
        assert_validation(store.put(item(&Key::new("", "x"), json!({})), None).await, "empty partition key");
    }

    pub async fn expired_items_are_invisible_and_count_as_absent(store: Arc<dyn Store>) {
        let pk = unique("expired");
        let past = now_secs() - 10;
        let expired = |sk: &str, v: Value| Item { expires_at: Some(past), ..item(&Key::new(&pk, sk), v) };
        for sk in ["a", "b", "c", "d"] {
            store.put(expired(sk, json!({"old": true})), None).await.unwrap();
        }
        let live = Item { expires_at: Some(now_secs() + 3600), ..item(&Key::new(&pk, "live"), json!({})) };
        store.put(live.clone(), None).await.unwrap();

        assert_eq!(store.get(&Key::new(&pk, "a")).await.unwrap(), None, "get");
        assert_eq!(sks(store.as_ref(), Query::partition(&pk)).await, vec!["live"], "query");
        assert_eq!(store.get(&live.key).await.unwrap(), Some(live.clone()));

        store.put(item(&Key::new(&pk, "a"), json!({"new": true})), Some(Cond::NotExists)).await.unwrap();
        let a = store.get(&Key::new(&pk, "a")).await.unwrap().unwrap();
        assert_eq!((a.attrs, a.expires_at), (attrs(json!({"new": true})), None));

        let b = Key::new(&pk, "b");
        assert_conflict(store.update(&b, Update::default().set("x", 1), Some(Cond::Exists)).await, "update Exists");
        assert_conflict(store.put(item(&b, json!({})), Some(Cond::eq("old", true))).await, "put on expired attr");
        let c = Key::new(&pk, "c");
        assert_conflict(store.delete(&c, Some(Cond::Exists)).await, "delete Exists");
        let d = Key::new(&pk, "d");
        assert_conflict(store.transact(vec![Write::Check { key: d.clone(), cond: Cond::Exists }]).await, "check");
        store.transact(vec![Write::Check { key: d, cond: Cond::NotExists }]).await.unwrap();
        store.delete(&c, Some(Cond::NotExists)).await.unwrap();
        assert_eq!(sks(store.as_ref(), Query::partition(&pk)).await, vec!["a", "live"]);
    }

    pub async fn update_on_expired_item_starts_fresh(store: Arc<dyn Store>) {
        let key = Key::new(unique("expired-update"), "window");
        let old = Item { expires_at: Some(now_secs() - 5), ..item(&key, json!({"count": 41, "stale": "x"})) };
        store.put(old, None).await.unwrap();
        let got = store.update(&key, Update::default().add("count", 1), None).await.unwrap();
        assert_eq!(got.attrs, attrs(json!({"count": 1})), "the expired item's attributes are gone");
        assert_eq!(got.expires_at, None);
        assert_eq!(store.get(&key).await.unwrap(), Some(got));
    }

    pub async fn query_pages_with_cursor_in_order_and_descending(store: Arc<dyn Store>) {
        let pk = unique("pages");
        let mut order: Vec<usize> = (0..25).collect();
        order.reverse();
        order.swap(3, 17);
        for i in order {
            store.put(item(&Key::new(&pk, format!("item#{i:02}")), json!({"i": i})), None).await.unwrap();
        }
        let expected: Vec<String> = (0..25).map(|i| format!("item#{i:02}")).collect();
        for descending in [false, true] {
            let mut q = Query { limit: 7, descending, ..Query::partition(&pk) };
            let mut seen = Vec::new();
            let mut pages = 0;
            loop {
                let page = store.query(q.clone()).await.unwrap();
                pages += 1;
                assert!(page.items.len() <= 7, "page larger than the limit");
                for it in &page.items {
                    assert_eq!(it.key.pk, pk);
                    assert_eq!(it.i64("i"), Some(it.key.sk[5..].parse().unwrap()));
                }
                seen.extend(page.items.into_iter().map(|i| i.key.sk));
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => break,
                }
                assert!(pages < 30, "cursor does not advance");
            }
            assert!(pages >= 4, "25 items in pages of 7 need at least 4 pages, got {pages}");
            let mut want = expected.clone();
            if descending {
                want.reverse();
            }
            assert_eq!(seen, want, "descending = {descending}");
        }
        // A cursor resumes right after the last item returned.
        let first = store.query(Query { limit: 3, ..Query::partition(&pk) }).await.unwrap();
        let cursor = first.next_cursor.expect("more items follow");
        let next = store.query(Query { limit: 2, cursor: Some(cursor), ..Query::partition(&pk) }).await.unwrap();
        let got: Vec<&str> = next.items.iter().map(|i| i.key.sk.as_str()).collect();
        assert_eq!(got, ["item#03", "item#04"]);
    }

    pub async fn query_prefix_and_between_ranges(store: Arc<dyn Store>) {
        let pk = unique("ranges");
        for sk in ["a", "a#", "a#1", "a#2", "a#2#x", "a$", "ab", "b#1", "a#\u{10FFFF}"] {
            store.put(item(&Key::new(&pk, sk), json!({})), None).await.unwrap();
        }
        let q = |range: SkRange, descending: bool| Query { range, descending, limit: 2, ..Query::partition(&pk) };
        let prefix = |p: &str| SkRange::Prefix(p.to_string());
        let between = |a: &str, b: &str| SkRange::Between(a.to_string(), b.to_string());
        let s = store.as_ref();
        assert_eq!(sks(s, q(prefix("a#"), false)).await, ["a#", "a#1", "a#2", "a#2#x", "a#\u{10FFFF}"]);
        assert_eq!(sks(s, q(prefix("a#"), true)).await, ["a#\u{10FFFF}", "a#2#x", "a#2", "a#1", "a#"]);
        assert_eq!(sks(s, q(prefix("a#2"), false)).await, ["a#2", "a#2#x"]);
        assert_eq!(sks(s, q(prefix("b"), false)).await, ["b#1"]);
        assert!(sks(s, q(prefix("c"), false)).await.is_empty());
        assert_eq!(sks(s, q(between("a#1", "a#2"), false)).await, ["a#1", "a#2"]);
        assert_eq!(sks(s, q(between("a#1", "a#2#x"), true)).await, ["a#2#x", "a#2", "a#1"]);
        assert_eq!(sks(s, q(between("a$", "b"), false)).await, ["a$", "ab"]);
        assert_eq!(sks(s, q(between("a#1", "a#1"), false)).await, ["a#1"]);
        assert!(sks(s, q(between("a#3", "a#4"), false)).await.is_empty());
        assert_eq!(sks(s, Query::prefix(&pk, "a")).await.len(), 8);
    }

    pub async fn query_is_scoped_to_one_partition(store: Arc<dyn Store>) {
        let pk = unique("scope");
        let neighbours = [format!("{pk}x"), format!("{pk}#"), pk[..pk.len() - 1].to_string()];
        for p in neighbours.iter().chain([&pk]) {
            store.put(item(&Key::new(p, "s#1"), json!({"pk": p})), None).await.unwrap();
        }
        let got = query_all(store.as_ref(), Query::prefix(&pk, "s#")).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].key, Key::new(&pk, "s#1"));
        assert!(query_all(store.as_ref(), Query::partition(unique("empty"))).await.unwrap().is_empty());
    }

    pub async fn query_invalid_arguments_are_validation_errors(store: Arc<dyn Store>) {
        let pk = unique("query-invalid");
        store.put(item(&Key::new(&pk, "a"), json!({})), None).await.unwrap();
        let q = |limit: usize| Query { limit, ..Query::partition(&pk) };
        assert_validation(store.query(q(0)).await, "limit 0");
        assert_validation(store.query(q(MAX_QUERY_LIMIT + 1)).await, "limit above the maximum");
        assert_eq!(store.query(q(MAX_QUERY_LIMIT)).await.unwrap().items.len(), 1);
        let reversed = Query { range: SkRange::Between("b".into(), "a".into()), ..q(10) };
        assert_validation(store.query(reversed).await, "between with lower > upper");
    }

    pub async fn concurrent_conditional_updates_exactly_one_wins(store: Arc<dyn Store>) {
        let key = Key::new(unique("race"), "lease");
        store.put(item(&key, json!({"state": "free"})), None).await.unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (store, key, barrier) = (store.clone(), key.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let upd = Update::default().set("state", "taken").set("owner", i);
                    store.update(&key, upd, Some(Cond::eq("state", "free"))).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(it) => {
                    assert_eq!(it.i64("owner"), Some(i as i64));
                    winners.push(i);
                }
                Err(e) => assert!(e.is_conflict(), "loser {i} got {e:?} instead of Conflict"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one conditional update wins, got {winners:?}");
        let final_item = store.get(&key).await.unwrap().unwrap();
        assert_eq!(final_item.i64("owner"), Some(winners[0] as i64));
    }

    pub async fn concurrent_adds_are_not_lost(store: Arc<dyn Store>) {
        let key = Key::new(unique("adds"), "counter");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    for _ in 0..20 {
                        store.update(&key, Update::default().add("n", 1), None).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(store.get(&key).await.unwrap().unwrap().i64("n"), Some(160));
    }
}

/// Queue behaviours. Each expects a fresh, empty queue with max receives
/// [`QUEUE_MAX_RECEIVES`](crate::conformance::QUEUE_MAX_RECEIVES).
pub mod queue {
    use super::{QUEUE_MAX_RECEIVES, assert_validation};
    use crate::queue::{MAX_BODY_BYTES, MAX_DELAY, MAX_RECEIVE, Message, Queue, Received};
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    const LONG: Duration = Duration::from_secs(30);
    const SEC: Duration = Duration::from_secs(1);

    /// Receives exactly one message, waiting up to `wait`.
    async fn one(q: &dyn Queue, visibility: Duration, wait: Duration) -> Received {
        let mut got = q.receive(1, visibility, wait).await.unwrap();
        assert_eq!(got.len(), 1, "expected one message within {wait:?}");
        got.pop().unwrap()
    }

    async fn none(q: &dyn Queue, wait: Duration) {
        let got = q.receive(MAX_RECEIVE, LONG, wait).await.unwrap();
        assert!(got.is_empty(), "expected no message, got {got:?}");
    }

    /// Receives (and deletes) until `n` distinct bodies arrived or `within` passed.
    async fn drain(q: &dyn Queue, n: usize, within: Duration) -> HashSet<String> {
        let deadline = Instant::now() + within;
        let mut bodies = HashSet::new();
        while bodies.len() < n && Instant::now() < deadline {
            for m in q.receive(MAX_RECEIVE, LONG, SEC).await.unwrap() {
                q.delete(&m.receipt).await.unwrap();
                bodies.insert(m.body);
            }
        }
        bodies
    }

    pub async fn send_then_receive_roundtrips_body(q: Arc<dyn Queue>) {
        let body = r#"{"run":"run_1","step":"é✓𝄞","n":[1,2]}"#;
        q.send(Message::now(body)).await.unwrap();
        let m = one(q.as_ref(), LONG, Duration::from_secs(5)).await;
        assert_eq!(m.body, body);
        assert_eq!(m.receive_count, 1);
        assert!(!m.id.is_empty() && !m.receipt.is_empty());
        q.delete(&m.receipt).await.unwrap();
    }

    pub async fn receive_respects_max(q: Arc<dyn Queue>) {
        q.send_batch((0..5).map(|i| Message::now(format!("m{i}"))).collect()).await.unwrap();
        let got = q.receive(2, LONG, Duration::from_secs(5)).await.unwrap();
        assert!((1..=2).contains(&got.len()), "receive(2) returned {}", got.len());
        let mut bodies: HashSet<String> = got.iter().map(|m| m.body.clone()).collect();
        for m in &got {
            q.delete(&m.receipt).await.unwrap();
        }
        bodies.extend(drain(q.as_ref(), 5 - bodies.len(), Duration::from_secs(10)).await);
        assert_eq!(bodies.len(), 5);
    }

    pub async fn receive_max_out_of_range_is_validation_error(q: Arc<dyn Queue>) {
        assert_validation(q.receive(0, LONG, Duration::ZERO).await, "receive(0)");
        assert_validation(q.receive(MAX_RECEIVE + 1, LONG, Duration::ZERO).await, "receive(MAX_RECEIVE + 1)");
    }

    pub async fn delete_removes_message_and_is_idempotent(q: Arc<dyn Queue>) {
        q.send(Message::now("bye")).await.unwrap();
        let m = one(q.as_ref(), SEC, Duration::from_secs(5)).await;
        q.delete(&m.receipt).await.unwrap();
        q.delete(&m.receipt).await.unwrap();
        // Past the visibility timeout it would be back, had it not been deleted.
        none(q.as_ref(), Duration::from_millis(2000)).await;
    }

    pub async fn visibility_timeout_redelivers_with_incremented_count(q: Arc<dyn Queue>) {
        q.send(Message::now("again")).await.unwrap();
        let first = one(q.as_ref(), SEC, Duration::from_secs(5)).await;
        assert_eq!(first.receive_count, 1);
        let hidden = q.receive(MAX_RECEIVE, LONG, Duration::ZERO).await.unwrap();
        assert!(hidden.is_empty(), "a received message is hidden for its visibility timeout");
        let second = one(q.as_ref(), LONG, Duration::from_secs(5)).await;
        assert_eq!((second.id.as_str(), second.body.as_str()), (first.id.as_str(), "again"));
        assert_eq!(second.receive_count, 2);
        assert_ne!(second.receipt, first.receipt, "each receive has its own receipt");
        q.delete(&second.receipt).await.unwrap();
    }

    pub async fn change_visibility_zero_makes_message_visible_again(q: Arc<dyn Queue>) {
        q.send(Message::now("retry")).await.unwrap();
        let first = one(q.as_ref(), LONG, Duration::from_secs(5)).await;
        q.change_visibility(&first.receipt, Duration::ZERO).await.unwrap();
        let second = one(q.as_ref(), LONG, Duration::from_secs(3)).await;
        assert_eq!(second.id, first.id);
        assert_eq!(second.receive_count, 2);
        q.delete(&second.receipt).await.unwrap();
    }

    pub async fn change_visibility_extends_hiding(q: Arc<dyn Queue>) {
        q.send(Message::now("slow work")).await.unwrap();
        let m = one(q.as_ref(), SEC, Duration::from_secs(5)).await;
        q.change_visibility(&m.receipt, LONG).await.unwrap();
        none(q.as_ref(), Duration::from_millis(2000)).await;
        q.delete(&m.receipt).await.unwrap();
    }

    pub async fn stale_receipt_delete_is_noop(q: Arc<dyn Queue>) {
        q.send(Message::now("stale")).await.unwrap();
        let first = one(q.as_ref(), LONG, Duration::from_secs(5)).await;
        q.change_visibility(&first.receipt, Duration::ZERO).await.unwrap();
        let second = one(q.as_ref(), LONG, Duration::from_secs(3)).await;
        assert_eq!(second.receive_count, 2);
        q.delete(&first.receipt).await.unwrap();
        // Still there: the current receipt still controls it.
        q.change_visibility(&second.receipt, Duration::ZERO).await.unwrap();
        let third = one(q.as_ref(), LONG, Duration::from_secs(3)).await;
        assert_eq!((third.id.as_str(), third.receive_count), (first.id.as_str(), 3));
        q.delete(&third.receipt).await.unwrap();
    }

    pub async fn stale_receipt_change_visibility_is_noop(q: Arc<dyn Queue>) {
        q.send(Message::now("stale visibility")).await.unwrap();
        let first = one(q.as_ref(), LONG, Duration::from_secs(5)).await;
        q.change_visibility(&first.receipt, Duration::ZERO).await.unwrap();
        let second = one(q.as_ref(), LONG, Duration::from_secs(3)).await;
        q.change_visibility(&first.receipt, Duration::ZERO).await.unwrap();
        none(q.as_ref(), SEC).await;
        q.delete(&second.receipt).await.unwrap();
    }

    pub async fn delayed_message_invisible_until_delay(q: Arc<dyn Queue>) {
        let sent = Instant::now();
        q.send(Message::delayed("later", SEC)).await.unwrap();
        let early = q.receive(MAX_RECEIVE, LONG, Duration::ZERO).await.unwrap();
        assert!(early.is_empty(), "a delayed message is invisible before its delay");
        let m = one(q.as_ref(), LONG, Duration::from_secs(5)).await;
        assert_eq!(m.body, "later");
        assert!(sent.elapsed() >= Duration::from_millis(900), "delivered after {:?}", sent.elapsed());
        q.delete(&m.receipt).await.unwrap();
    }

    pub async fn delay_over_max_is_validation_error(q: Arc<dyn Queue>) {
        let too_late = || Message::delayed("x", MAX_DELAY + SEC);
        assert_validation(q.send(too_late()).await, "send");
        assert_validation(q.send_batch(vec![Message::now("ok"), too_late()]).await, "send_batch");
        q.send(Message::delayed("max", MAX_DELAY)).await.unwrap();
    }

    pub async fn body_over_max_is_validation_error(q: Arc<dyn Queue>) {
        assert_validation(q.send(Message::now("x".repeat(MAX_BODY_BYTES + 1))).await, "send");
        let big = "y".repeat(MAX_BODY_BYTES);
        q.send(Message::now(big.clone())).await.unwrap();
        let m = one(q.as_ref(), LONG, Duration::from_secs(5)).await;
        assert_eq!(m.body, big);
        q.delete(&m.receipt).await.unwrap();
    }

    pub async fn batch_send_of_25_all_arrive(q: Arc<dyn Queue>) {
        let bodies: HashSet<String> = (0..25).map(|i| format!("batch-{i}")).collect();
        q.send_batch(bodies.iter().map(Message::now).collect()).await.unwrap();
        let got = drain(q.as_ref(), 25, Duration::from_secs(20)).await;
        assert_eq!(got, bodies);
    }

    pub async fn long_poll_wakes_on_send(q: Arc<dyn Queue>) {
        let started = Instant::now();
        let poller = {
            let q = q.clone();
            tokio::spawn(async move { q.receive(1, LONG, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        q.send(Message::now("wake up")).await.unwrap();
        let got = poller.await.unwrap().unwrap();
        assert_eq!(got.len(), 1, "the long poll returns the message sent while it waited");
        assert_eq!(got[0].body, "wake up");
        assert!(started.elapsed() < Duration::from_secs(5), "woke only after {:?}", started.elapsed());
        q.delete(&got[0].receipt).await.unwrap();
    }

    pub async fn long_poll_returns_empty_after_wait(q: Arc<dyn Queue>) {
        let started = Instant::now();
        let got = q.receive(MAX_RECEIVE, LONG, SEC).await.unwrap();
        assert!(got.is_empty());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(900), "returned after {waited:?}, before the wait");
        assert!(waited < Duration::from_secs(5), "returned only after {waited:?}");
    }

    pub async fn max_receives_moves_to_dead_letters(q: Arc<dyn Queue>) {
        assert!(q.dead_letters(10).await.unwrap().is_empty());
        q.send(Message::now("poison")).await.unwrap();
        let mut id = None;
        for n in 1..=QUEUE_MAX_RECEIVES {
            let m = one(q.as_ref(), LONG, Duration::from_secs(5)).await;
            assert_eq!(m.receive_count, n);
            assert_eq!(id.get_or_insert_with(|| m.id.clone()), &m.id);
            q.change_visibility(&m.receipt, Duration::ZERO).await.unwrap();
        }
        none(q.as_ref(), SEC).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let dead = loop {
            let dead = q.dead_letters(10).await.unwrap();
            if !dead.is_empty() || Instant::now() > deadline {
                break dead;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(dead.len(), 1, "the message is in the dead letters");
        assert_eq!(dead[0].body, "poison");
        assert_eq!(q.dead_letters(10).await.unwrap().len(), 1, "listing dead letters keeps them");
        none(q.as_ref(), Duration::ZERO).await;
    }

    pub async fn concurrent_receivers_get_every_message(q: Arc<dyn Queue>) {
        let bodies: HashSet<String> = (0..50).map(|i| format!("job-{i}")).collect();
        q.send_batch(bodies.iter().map(Message::now).collect()).await.unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (q, received) = (q.clone(), received.clone());
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while received.load(Ordering::SeqCst) < 50 && Instant::now() < deadline {
                        for m in q.receive(MAX_RECEIVE, LONG, SEC).await.unwrap() {
                            q.delete(&m.receipt).await.unwrap();
                            received.fetch_add(1, Ordering::SeqCst);
                            got.push(m.body);
                        }
                    }
                    got
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for w in workers {
            seen.extend(w.await.unwrap());
        }
        assert_eq!(seen, bodies);
    }
}
