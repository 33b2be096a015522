//! Property tests: the parser and the evaluator never panic, stay within their bounds on any
//! input, and literals round-trip. Case counts are kept small so the suite runs in seconds.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// Tokens that make up expressions, so generated text reaches deep into the grammar instead
/// of failing on its first character.
const TOKENS: &[&str] = &[
    "x",
    "y",
    "v",
    "this",
    "item",
    "now",
    "input",
    ".",
    ".a",
    ".0",
    ".size",
    ".first",
    "[",
    "]",
    "[0]",
    "[-1]",
    "(",
    ")",
    ",",
    ":",
    "?",
    "??",
    "|",
    "||",
    "&&",
    "!",
    "-",
    "+",
    "*",
    "/",
    "%",
    "==",
    "!=",
    "<",
    ">=",
    "and",
    "or",
    "not",
    "in",
    "not in",
    "contains",
    "1",
    "0",
    "-2.5",
    "1e3",
    "'s'",
    "\"t\"",
    "''",
    "true",
    "false",
    "null",
    "[1, 'a']",
    "map: 'a'",
    "where: 'a', 1",
    "sort",
    "sort: 'a'",
    "size",
    "join: ','",
    "split: ''",
    "date",
    "date: '%Y-%m-%d'",
    "parse_json",
    "base64_decode",
    "base64_encode",
    "url_encode",
    "default: 0",
    "slice: 1, 2",
    "replace: 'a', 'b'",
    "uniq",
    "reverse",
    "keys",
    "sum",
    "min",
    "max",
    "round: 2",
    "json",
    "{{",
    "}}",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..40).prop_map(|t| t.join(" "))
}

/// Expressions that parse: names, literals, operators, ternaries, filters (with expression
/// arguments that are themselves generated expressions).
fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        prop::sample::select(&["x", "y", "v", "s", "big", "n", "this", "now", "v.a", "v[0]", "v.size", "x.b.0"][..])
            .prop_map(str::to_owned),
        any::<i32>().prop_map(|i| i.to_string()),
        (-1e6f64..1e6).prop_map(|f| format!("{f:?}")),
        "[a-z %{}'\\[\\]]{0,8}".prop_map(|s| literal(&Value::String(s))),
        Just("null".to_owned()),
        Just("true".to_owned()),
    ];
    leaf.prop_recursive(4, 48, 4, |inner| {
        let filter = prop_oneof![
            prop::sample::select(
                &[
                    "size",
                    "first",
                    "last",
                    "sort",
                    "uniq",
                    "reverse",
                    "keys",
                    "values",
                    "sum",
                    "min",
                    "max",
                    "json",
                    "to_string",
                    "to_number",
                    "upcase",
                    "strip",
                    "floor",
                    "abs",
                    "date",
                    "url_encode",
                    "base64_encode",
                    "base64_decode",
                    "parse_json",
                ][..]
            )
            .prop_map(str::to_owned),
            (
                prop::sample::select(
                    &[
                        "join",
                        "split",
                        "default",
                        "plus",
                        "times",
                        "divided_by",
                        "modulo",
                        "round",
                        "append",
                        "slice",
                        "min",
                        "date"
                    ][..]
                ),
                inner.clone()
            )
                .prop_map(|(f, a)| format!("{f}: ({a})")),
            (prop::sample::select(&["map", "where", "sort"][..]), inner.clone())
                .prop_map(|(f, a)| format!("{f}: {}", literal(&Value::String(a)))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("replace: ({a}), ({b})")),
        ];
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(
                    &["+", "-", "*", "/", "%", "==", "!=", "<", ">=", "and", "or", "??", "in", "not in", "contains"][..]
                ),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
            (inner.clone(), inner.clone(), inner.clone()).prop_map(|(c, a, b)| format!("({c}) ? ({a}) : ({b})")),
            inner.clone().prop_map(|a| format!("not ({a})")),
            inner.clone().prop_map(|a| format!("-({a})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a})[{b}]")),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            (inner, filter).prop_map(|(a, f)| format!("({a}) | {f}")),
        ]
    })
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-c0]{1,2}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON value without objects (the expression language has no object literals), as a
/// template literal.
fn literal_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        // i64::MIN is written `-9223372036854775808`: the negation of a literal too large for an
        // integer, so it reads as a float.
        (i64::MIN + 1..=i64::MAX).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| prop::collection::vec(inner, 0..5).prop_map(Value::Array))
}

/// `v` written in the expression language.
fn literal(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(a) => format!("[{}]", a.iter().map(literal).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// Only validation errors, never a panic or another kind of error.
fn assert_validation(r: &Result<Value>) {
    if let Err(e) = r {
        assert!(matches!(e, Error::Validation { .. }), "{e:?}");
    }
}

/// Generous: the budget keeps each call to milliseconds; debug builds on a busy CI machine are
/// slow, and only runaway work would take this long.
const SLOW: Duration = Duration::from_secs(5);

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_arbitrary_text(src in any::<String>()) {
        let _ = check_expr(&src);
        let _ = check(&Value::String(src.clone()));
        let _ = check(&Value::String(format!("{{{{ {src} }}}}")));
    }

    #[test]
    fn parser_never_panics_on_token_soup(src in token_soup()) {
        let t = Instant::now();
        let _ = check_expr(&src);
        let _ = check(&Value::String(format!("a {{{{ {src} }}}} b")));
        prop_assert!(t.elapsed() < SLOW);
    }

    #[test]
    fn parser_refuses_sources_over_the_length_bound(fill in "[a-z+ ]{1,8}", extra in 1usize..64) {
        let body = fill.repeat(MAX_SOURCE_LEN / fill.len().max(1) + 1);
        let src = format!("{{{{ {} }}}}", &body[..MAX_SOURCE_LEN.min(body.len())]);
        let src = format!("{src}{}", "x".repeat(extra));
        let m = check(&Value::String(src)).unwrap_err().to_string();
        prop_assert!(m.contains("longer than 65536 bytes"), "{}", m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn evaluator_never_panics_and_stays_within_the_budget(src in expr(), x in json_value(), y in json_value()) {
        // `big` and `s` make scans expensive, so runaway work would show in the time.
        let big: Vec<Value> = (0..2_000).map(|i| json!({"a": i, "b": [i]})).collect();
        let ctx = json!({"x": x, "y": y, "v": {"a": [1, "2", null], "0": 3}, "s": "ab,c ".repeat(4_000),
            "big": big, "n": 7});
        let t = Instant::now();
        let r = eval(&src, &ctx);
        assert_validation(&r);
        let r2 = render(&json!({"a": format!("{{{{ {src} }}}}"), "b": format!("[{{{{ {src} }}}}]")}), &ctx);
        assert_validation(&r2);
        prop_assert!(t.elapsed() < SLOW, "{} took {:?}", src, t.elapsed());
        // The same expression gives the same answer as a bare expression and inside `{{ }}`
        // (except for `now`, which moves on between the calls).
        if let (Ok(a), Ok(b)) = (&r, &r2) && !src.contains("now") {
            prop_assert_eq!(a, &b["a"]);
        }
    }

    #[test]
    fn token_soup_evaluates_without_panicking(src in token_soup(), x in json_value()) {
        let ctx = json!({"x": x, "y": [1, 2], "v": {"a": "b"}, "input": {"a": 1}});
        assert_validation(&eval(&src, &ctx));
        assert_validation(&render_str(&format!("= {{{{ {src} }}}}"), &ctx));
    }

    #[test]
    fn a_literal_evaluates_to_its_json(v in literal_value()) {
        let src = literal(&v);
        prop_assume!(src.len() <= MAX_SOURCE_LEN);
        prop_assert_eq!(eval(&src, &json!({})).unwrap(), v.clone());
        // Through a template: typed when alone, compact JSON (strings as-is) in text.
        prop_assert_eq!(render_str(&format!("{{{{ {src} }}}}"), &json!({})).unwrap(), v.clone());
        let text = match &v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        prop_assert_eq!(render_str(&format!("<{{{{ {src} }}}}>"), &json!({})).unwrap(), json!(format!("<{text}>")));
        prop_assert_eq!(eval(&format!("{src} | json | parse_json"), &json!({})).unwrap(), v.clone());
        prop_assert_eq!(eval(&format!("{src} == {src}"), &json!({})).unwrap(), json!(true));
    }

    #[test]
    fn a_context_value_passes_through_unchanged(v in json_value()) {
        let ctx = json!({"v": v});
        prop_assert_eq!(render_str("{{ v }}", &ctx).unwrap(), v.clone());
        prop_assert_eq!(eval("v | json | parse_json", &ctx).unwrap(), v.clone());
        prop_assert_eq!(eval("v ?? 0", &ctx).unwrap(), if v.is_null() { json!(0) } else { v.clone() });
    }

    #[test]
    fn base64_and_url_encoding_round_trip(s in any::<String>()) {
        let ctx = json!({"s": s});
        prop_assert_eq!(eval("s | base64_encode | base64_decode", &ctx).unwrap(), json!(s));
        let enc = eval("s | url_encode", &ctx).unwrap();
        let enc = enc.as_str().unwrap();
        prop_assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"%+-._*".contains(&b)), "{}", enc);
        let back: String = url::form_urlencoded::parse(format!("k={enc}").as_bytes()).next().unwrap().1.into_owned();
        prop_assert_eq!(back, s);
    }

    #[test]
    fn a_timestamp_between_years_1_and_9999_formats_as_rfc3339_and_parses_back(secs in -62_135_596_800i64..253_402_300_800) {
        let ctx = json!({"t": secs});
        let text = eval("t | date", &ctx).unwrap();
        prop_assert_eq!(eval("t | date | date: '%s'", &ctx).unwrap(), json!(secs.to_string()));
        prop_assert_eq!(eval("(t | date) == (t | date | date)", &ctx).unwrap(), json!(true), "{}", text);
    }
}
