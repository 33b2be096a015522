use serde_json::{Value, json};

use super::*;

fn ctx() -> Value {
    json!({
        "input": {
            "amount": 1500,
            "customer": {"email": "ada@example.com", "name": "ada lovelace", "tier": "gold"},
            "items": [
                {"product": "widget", "quantity": 2, "price": 10},
                {"product": "gadget", "quantity": 1, "price": 5}
            ],
            "tags": ["b", "a", "b", "c"],
            "nums": [3, 1, 2],
            "text": "  Hello, World  ",
            "csv": "a,b,c",
            "flag": true,
            "zero": 0,
            "empty": "",
            "nothing": null,
            "obj": {"x": 1, "y": 2, "some key": "spaced"}
        },
        "steps": {"create-invoice": {"output": {"number": "INV-7", "total": 25}}},
        "vars": {"rate": 2, "field": "x"}
    })
}

fn r(t: &str) -> Value {
    render_str(t, &ctx()).unwrap_or_else(|e| panic!("render {t:?} failed: {e}"))
}

fn e(x: &str) -> Value {
    eval(x, &ctx()).unwrap_or_else(|err| panic!("eval {x:?} failed: {err}"))
}

fn err(t: &str) -> String {
    match render_str(t, &ctx()) {
        Ok(v) => panic!("render {t:?} should fail, got {v}"),
        Err(Error::Validation { message, .. }) => message,
        Err(other) => panic!("render {t:?}: expected a validation error, got {other:?}"),
    }
}

fn eval_err(x: &str) -> String {
    match eval(x, &ctx()) {
        Ok(v) => panic!("eval {x:?} should fail, got {v}"),
        Err(Error::Validation { message, .. }) => message,
        Err(other) => panic!("eval {x:?}: expected a validation error, got {other:?}"),
    }
}

fn approx(v: &Value, want: f64) {
    let got = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!((got - want).abs() < 1e-9, "got {got}, want {want}");
}

// --- typed vs text ------------------------------------------------------------------------

#[test]
fn single_expression_keeps_number_type() {
    assert_eq!(r("{{input.amount}}"), json!(1500));
    assert_eq!(r("  {{ input.amount }}\n"), json!(1500));
}

#[test]
fn single_expression_keeps_object_array_and_bool_types() {
    assert_eq!(r("{{input.obj}}"), json!({"x": 1, "y": 2, "some key": "spaced"}));
    assert_eq!(r("{{input.nums}}"), json!([3, 1, 2]));
    assert_eq!(r("{{input.flag}}"), json!(true));
    assert_eq!(r("{{input.nothing}}"), Value::Null);
}

#[test]
fn mixed_text_renders_a_string() {
    assert_eq!(r("Amount: {{input.amount}}!"), json!("Amount: 1500!"));
    assert_eq!(r("{{input.customer.email}} / {{input.flag}}"), json!("ada@example.com / true"));
    assert_eq!(r("n={{input.nothing}};"), json!("n=;"));
    assert_eq!(r("o={{input.nums}}"), json!("o=[3,1,2]"));
    assert_eq!(r("{{input.zero}}{{input.zero}}"), json!("00"));
}

#[test]
fn strings_without_placeholders_are_untouched() {
    assert_eq!(r("plain }} text"), json!("plain }} text"));
    let long = "x".repeat(MAX_SOURCE_LEN * 2);
    assert_eq!(render_str(&long, &ctx()).unwrap(), json!(long));
}

#[test]
fn literal_braces_via_string_expression() {
    assert_eq!(r("a {{ '{{' }} b"), json!("a {{ b"));
    assert_eq!(r("{{ 'x }} y' }}"), json!("x }} y"));
}

#[test]
fn render_walks_arrays_and_objects_but_not_keys() {
    let tpl = json!({
        "{{input.amount}}": "{{input.amount}}",
        "list": ["{{input.customer.tier}}", 7, null, {"deep": "Hi {{input.customer.name}}"}]
    });
    let out = render(&tpl, &ctx()).unwrap();
    assert_eq!(
        out,
        json!({
            "{{input.amount}}": 1500,
            "list": ["gold", 7, null, {"deep": "Hi ada lovelace"}]
        })
    );
}

#[test]
fn render_error_carries_the_value_path() {
    let tpl = json!({"body": {"list": ["ok", "{{ input.x | bogus }}"]}});
    match render(&tpl, &ctx()) {
        Err(Error::Validation { message, details }) => {
            assert!(message.contains("unknown filter 'bogus'"), "{message}");
            assert_eq!(details[0].path, vec![json!("body"), json!("list"), json!(1)]);
        }
        other => panic!("{other:?}"),
    }
}

// --- paths --------------------------------------------------------------------------------

#[test]
fn numeric_path_segment_indexes_arrays() {
    assert_eq!(r("{{input.items.0.product}}"), json!("widget"));
    assert_eq!(r("{{input.items.1.price}}"), json!(5));
}

#[test]
fn hyphenated_step_id_is_one_segment() {
    assert_eq!(r("{{steps.create-invoice.output.number}}"), json!("INV-7"));
    assert_eq!(r("No. {{ steps.create-invoice.output.number }}"), json!("No. INV-7"));
}

#[test]
fn subtraction_needs_spaces_after_a_path() {
    assert_eq!(e("steps.create-invoice.output.total - 5"), json!(20));
    // Without spaces the hyphen belongs to the segment name, which does not exist.
    assert_eq!(e("steps.create-invoice.output.total-5"), Value::Null);
    // A root name never takes a hyphen.
    assert_eq!(eval("a-b", &json!({"a": 5, "b": 2})).unwrap(), json!(3));
}

#[test]
fn bracket_indexes_and_keys() {
    assert_eq!(e("input.items[0].product"), json!("widget"));
    assert_eq!(e("input.items[-1].product"), json!("gadget"));
    assert_eq!(e("input.obj[\"some key\"]"), json!("spaced"));
    assert_eq!(e("input.obj['x']"), json!(1));
    assert_eq!(e("input.obj[vars.field]"), json!(1));
    assert_eq!(e("input.nums[1 + 1]"), json!(2));
    assert_eq!(e("[10, 20, 30][1]"), json!(20));
}

#[test]
fn missing_path_is_null() {
    assert_eq!(r("{{input.nope.deeper.still}}"), Value::Null);
    assert_eq!(r("{{nope}}"), Value::Null);
    assert_eq!(e("input.items.9.product"), Value::Null);
    assert_eq!(e("input.items[-9]"), Value::Null);
    assert_eq!(e("input.amount.x"), Value::Null);
    assert_eq!(r("[{{input.nope}}]"), json!("[]"));
}

#[test]
fn size_first_last_properties() {
    assert_eq!(e("input.items.size"), json!(2));
    assert_eq!(e("input.items.first.product"), json!("widget"));
    assert_eq!(e("input.items.last.product"), json!("gadget"));
    assert_eq!(e("input.csv.size"), json!(5));
    assert_eq!(e("input.obj.size"), json!(3));
}

// --- literals and operators ---------------------------------------------------------------

#[test]
fn literals() {
    assert_eq!(e("42"), json!(42));
    assert_eq!(e("-1.5"), json!(-1.5));
    assert_eq!(e("1e3"), json!(1000.0));
    assert_eq!(e("'it\\'s'"), json!("it's"));
    assert_eq!(e("\"a\\nb\""), json!("a\nb"));
    assert_eq!(e("true"), json!(true));
    assert_eq!(e("null"), Value::Null);
    assert_eq!(e("[1, 'two', [3], ]"), json!([1, "two", [3]]));
    assert_eq!(e("[]"), json!([]));
}

#[test]
fn integer_arithmetic_stays_integral() {
    assert_eq!(e("2 + 3"), json!(5));
    assert_eq!(e("2 * 3 - 10"), json!(-4));
    assert_eq!(e("6 / 3"), json!(2));
    assert_eq!(e("7 / 2"), json!(3.5));
    assert_eq!(e("7 % 3"), json!(1));
    assert_eq!(e("2 + 3 * 4"), json!(14));
    assert_eq!(e("(2 + 3) * 4"), json!(20));
    assert_eq!(e("10 - 2 - 3"), json!(5));
    assert_eq!(e("2.5 * 2"), json!(5.0));
    assert_eq!(e("-input.amount"), json!(-1500));
    assert_eq!(e("9223372036854775807 + 1"), json!(9223372036854775808.0));
}

#[test]
fn plus_concatenates_when_a_side_is_a_string() {
    assert_eq!(e("'a' + 1"), json!("a1"));
    assert_eq!(e("1 + 'a'"), json!("1a"));
    assert_eq!(e("input.customer.tier + '/' + input.flag"), json!("gold/true"));
    assert_eq!(e("'x' + input.nothing"), json!("x"));
}

#[test]
fn arithmetic_on_non_numbers_is_an_error() {
    assert!(eval_err("input.obj * 2").contains("cannot multiply object and number"));
    assert!(eval_err("-'a'").contains("cannot negate string"));
    assert!(eval_err("input.nothing - 1").contains("cannot subtract null and number"));
}

#[test]
fn division_by_zero_is_an_error() {
    let m = eval_err("input.amount / 0");
    assert!(m.contains("division by zero"), "{m}");
    assert!(m.starts_with("expression \"input.amount / 0\" at 14:"), "{m}");
    assert!(eval_err("1.5 / 0.0").contains("division by zero"));
    assert!(eval_err("5 % 0").contains("modulo by zero"));
    assert!(err("{{ input.amount | divided_by: 0 }}").contains("filter 'divided_by': division by zero"));
    assert!(err("{{ 5 | modulo: 0 }}").contains("modulo by zero"));
}

#[test]
fn comparisons() {
    assert_eq!(e("input.amount > 1000"), json!(true));
    assert_eq!(e("input.amount >= 1500"), json!(true));
    assert_eq!(e("input.amount < 1500"), json!(false));
    assert_eq!(e("input.amount <= 1500.0"), json!(true));
    assert_eq!(e("input.amount == 1500.0"), json!(true));
    assert_eq!(e("input.amount != 1500"), json!(false));
    assert_eq!(e("'abc' < 'abd'"), json!(true));
    assert_eq!(e("'b' > 'a'"), json!(true));
    assert_eq!(e("'1500' == input.amount"), json!(false));
    assert_eq!(e("input.missing > 5"), json!(false));
    assert_eq!(e("input.missing == null"), json!(true));
    assert_eq!(e("'10' > 9"), json!(false));
    assert_eq!(e("input.nums == [3, 1, 2.0]"), json!(true));
}

#[test]
fn condition_expressions_with_and_or_not() {
    assert_eq!(e("input.amount > 1000 and input.customer.tier == 'gold'"), json!(true));
    assert_eq!(e("input.amount > 1000 && input.customer.tier == 'silver'"), json!(false));
    assert_eq!(e("input.amount > 5000 or input.flag"), json!(true));
    assert_eq!(e("input.amount > 5000 || input.zero"), json!(false));
    assert_eq!(e("not input.amount > 5000"), json!(true));
    assert_eq!(e("!input.flag"), json!(false));
    assert_eq!(e("not input.flag and input.flag"), json!(false));
    assert_eq!(e("not (input.flag and input.zero)"), json!(true));
    assert_eq!(e("input.zero or input.empty or input.customer.name"), json!(true));
    assert_eq!(e("input.flag and (input.amount < 10 or input.tags contains 'c')"), json!(true));
    // `and` binds tighter than `or`.
    assert_eq!(e("true or false and false"), json!(true));
    // Short-circuit: the right side is never evaluated.
    assert_eq!(e("false and 1 / 0"), json!(false));
    assert_eq!(e("true or 1 / 0"), json!(true));
}

#[test]
fn contains_operator() {
    assert_eq!(e("input.customer.email contains '@example'"), json!(true));
    assert_eq!(e("input.tags contains 'a'"), json!(true));
    assert_eq!(e("input.nums contains 2.0"), json!(true));
    assert_eq!(e("input.tags contains 'z'"), json!(false));
    assert_eq!(e("input.obj contains 'x'"), json!(true));
    assert_eq!(e("input.nothing contains 'x'"), json!(false));
}

#[test]
fn eval_accepts_a_braced_single_expression() {
    assert_eq!(e("{{ input.amount > 1000 }}"), json!(true));
    assert!(eval_err("{{ input.amount }} and text").contains("expected one expression"));
}

#[test]
fn truthy_table() {
    for v in [json!(false), json!(null), json!(0), json!(0.0), json!(""), json!([]), json!({})] {
        assert!(!truthy(&v), "{v} should be falsy");
    }
    for v in [json!(true), json!(1), json!(-0.5), json!("0"), json!("false"), json!([0]), json!({"a": null})] {
        assert!(truthy(&v), "{v} should be truthy");
    }
}

// --- filters ------------------------------------------------------------------------------

#[test]
fn filter_chain_example_from_the_design() {
    let v = r("{{input.items | map: 'quantity * price' | sum | times: 1.08}}");
    approx(&v, 27.0);
    assert_eq!(r("{{input.items | map: 'quantity * price' | sum}}"), json!(25));
}

#[test]
fn filter_map_plucks_and_computes() {
    assert_eq!(e("input.items | map: 'product'"), json!(["widget", "gadget"]));
    assert_eq!(e("input.items | map: 'this.price * vars.rate'"), json!([20, 10]));
    assert_eq!(e("input.items | map: 'item.quantity'"), json!([2, 1]));
    assert_eq!(e("input.nums | map: 'this * 10'"), json!([30, 10, 20]));
    assert_eq!(e("input.nothing | map: 'x'"), json!([]));
    // The expression may be computed.
    assert_eq!(e("input.items | map: 'pro' + 'duct'"), json!(["widget", "gadget"]));
    // Nested map over nested arrays.
    let c = json!({"orders": [{"lines": [{"n": 1}, {"n": 2}]}, {"lines": [{"n": 3}]}]});
    assert_eq!(eval("orders | map: 'lines | map: \"n\" | sum'", &c).unwrap(), json!([3, 3]));
}

#[test]
fn filter_where_keeps_matching_elements() {
    assert_eq!(e("input.items | where: 'price > 6' | map: 'product'"), json!(["widget"]));
    assert_eq!(e("input.items | where: 'product', 'gadget' | size"), json!(1));
    assert_eq!(e("input.nums | where: 'this >= 2'"), json!([3, 2]));
}

#[test]
fn filter_sum_and_math() {
    assert_eq!(e("input.nums | sum"), json!(6));
    assert_eq!(e("[1, '2', null, 0.5] | sum"), json!(3.5));
    assert_eq!(e("[] | sum"), json!(0));
    assert_eq!(e("input.amount | times: 2"), json!(3000));
    assert_eq!(e("input.amount | plus: 1"), json!(1501));
    assert_eq!(e("input.amount | minus: 500"), json!(1000));
    assert_eq!(e("input.amount | divided_by: 4"), json!(375));
    assert_eq!(e("7 | divided_by: 2"), json!(3.5));
    assert_eq!(e("7 | modulo: 4"), json!(3));
    assert_eq!(e("'3' | times: '4'"), json!(12));
    assert!(eval_err("'abc' | times: 2").contains("input must be a number, got string \"abc\""));
}

#[test]
fn filter_round_floor_ceil_abs() {
    assert_eq!(e("2.5 | round"), json!(3));
    assert_eq!(e("2.71828 | round: 2"), json!(2.72));
    assert_eq!(e("1234 | round: -2"), json!(1200));
    assert_eq!(e("7 | round: 2"), json!(7));
    assert_eq!(e("2.7 | floor"), json!(2));
    assert_eq!(e("2.1 | ceil"), json!(3));
    assert_eq!(e("-4 | abs"), json!(4));
    assert_eq!(e("-4.5 | abs"), json!(4.5));
    assert!(eval_err("1 | round: 99").contains("digits must be between"));
}

#[test]
fn filter_default() {
    assert_eq!(e("input.nothing | default: 'n/a'"), json!("n/a"));
    assert_eq!(e("input.empty | default: 'n/a'"), json!("n/a"));
    assert_eq!(e("false | default: 1"), json!(1));
    assert_eq!(e("input.zero | default: 1"), json!(0));
    assert_eq!(e("input.customer.tier | default: 'n/a'"), json!("gold"));
}

#[test]
fn filter_size_first_last() {
    assert_eq!(e("input.items | size"), json!(2));
    assert_eq!(e("input.customer.name | size"), json!(12));
    assert_eq!(e("input.obj | size"), json!(3));
    assert_eq!(e("input.nothing | size"), json!(0));
    assert_eq!(e("input.tags | first"), json!("b"));
    assert_eq!(e("input.tags | last"), json!("c"));
    assert_eq!(e("'héllo' | last"), json!("o"));
    assert_eq!(e("[] | first"), Value::Null);
    assert_eq!(e("(input.items | last).product"), json!("gadget"));
    assert_eq!(e("input.items | size > 1"), json!(true));
}

#[test]
fn filter_join_split() {
    assert_eq!(e("input.tags | join: ', '"), json!("b, a, b, c"));
    assert_eq!(e("input.tags | join"), json!("b a b c"));
    assert_eq!(e("[1, null, 'x', [2]] | join: '-'"), json!("1--x-[2]"));
    assert_eq!(e("input.csv | split: ','"), json!(["a", "b", "c"]));
    assert_eq!(e("'héy' | split: ''"), json!(["h", "é", "y"]));
}

#[test]
fn filter_case_and_strip() {
    assert_eq!(e("input.customer.tier | upcase"), json!("GOLD"));
    assert_eq!(e("'MiXeD' | downcase"), json!("mixed"));
    assert_eq!(e("input.customer.name | capitalize"), json!("Ada lovelace"));
    assert_eq!(e("'hELLO' | capitalize"), json!("Hello"));
    assert_eq!(e("input.text | strip"), json!("Hello, World"));
    assert_eq!(e("42 | upcase"), json!("42"));
    assert_eq!(e("input.nothing | upcase"), json!(""));
    assert!(eval_err("input.customer | upcase").contains("expected text, got object"));
    assert!(eval_err("input.nums | append: 'x'").contains("expected text, got array"));
}

#[test]
fn filter_json_to_number_to_string() {
    assert_eq!(e("input.obj | json"), json!(r#"{"x":1,"y":2,"some key":"spaced"}"#));
    assert_eq!(e("'42' | to_number"), json!(42));
    assert_eq!(e("' 2.5 ' | to_number"), json!(2.5));
    assert_eq!(e("true | to_number"), json!(1));
    assert!(eval_err("'x1' | to_number").contains("cannot convert string \"x1\" to a number"));
    assert_eq!(e("42 | to_string"), json!("42"));
    assert_eq!(e("input.nums | to_string"), json!("[3,1,2]"));
    assert_eq!(e("input.nothing | to_string"), json!(""));
}

#[test]
fn filter_keys_values() {
    assert_eq!(e("input.obj | keys"), json!(["x", "y", "some key"]));
    assert_eq!(e("input.obj | values"), json!([1, 2, "spaced"]));
    assert!(eval_err("input.nums | keys").contains("expected an object, got array"));
}

#[test]
fn filter_reverse_sort_uniq() {
    assert_eq!(e("input.nums | reverse"), json!([2, 1, 3]));
    assert_eq!(e("'abc' | reverse"), json!("cba"));
    assert_eq!(e("input.nums | sort"), json!([1, 2, 3]));
    assert_eq!(e("input.tags | sort"), json!(["a", "b", "b", "c"]));
    assert_eq!(e("[2, 'a', null, 1, true] | sort"), json!([null, true, 1, 2, "a"]));
    assert_eq!(e("input.items | sort: 'price' | map: 'product'"), json!(["gadget", "widget"]));
    assert_eq!(e("input.tags | uniq"), json!(["b", "a", "c"]));
    assert_eq!(e("[1, 1.0, '1', [1], [1]] | uniq"), json!([1, "1", [1]]));
}

#[test]
fn filter_slice() {
    assert_eq!(e("input.tags | slice: 1, 2"), json!(["a", "b"]));
    assert_eq!(e("input.tags | slice: -1"), json!(["c"]));
    assert_eq!(e("input.tags | slice: 10, 2"), json!([]));
    assert_eq!(e("'hello' | slice: 1, 3"), json!("ell"));
    assert_eq!(e("'hello' | slice: -3, 99"), json!("llo"));
}

#[test]
fn filter_replace_append_prepend() {
    assert_eq!(e("input.csv | replace: ',', ' & '"), json!("a & b & c"));
    assert_eq!(e("'aaa' | replace: 'a', ''"), json!(""));
    assert_eq!(e("input.customer.tier | append: '!'"), json!("gold!"));
    assert_eq!(e("input.customer.tier | prepend: 'tier: '"), json!("tier: gold"));
    assert_eq!(e("5 | append: 1"), json!("51"));
}

#[test]
fn filter_min_max() {
    assert_eq!(e("input.nums | min"), json!(1));
    assert_eq!(e("input.nums | max"), json!(3));
    assert_eq!(e("input.tags | max"), json!("c"));
    assert_eq!(e("[] | max"), Value::Null);
    assert_eq!(e("5 | min: 3"), json!(3));
    assert_eq!(e("5 | max: 7.5"), json!(7.5));
}

#[test]
fn filter_argument_count_is_checked_when_parsing() {
    assert!(check_expr("x | times").unwrap_err().to_string().contains("filter 'times' takes 1 argument, got 0"));
    assert!(check_expr("x | upcase: 1").unwrap_err().to_string().contains("takes no arguments"));
    assert!(check_expr("x | replace: 'a'").unwrap_err().to_string().contains("takes 2 arguments"));
    assert!(check_expr("x | slice: 1, 2, 3").unwrap_err().to_string().contains("1 to 2 arguments"));
}

// --- errors -------------------------------------------------------------------------------

#[test]
fn unknown_filter_is_named_with_template_and_position() {
    assert_eq!(err("{{input.x | bogus}}"), "template \"{{input.x | bogus}}\" at 13: unknown filter 'bogus'");
}

#[test]
fn errors_name_template_and_position() {
    assert_eq!(err("Hi {{ input.x + }}"), "template \"Hi {{ input.x + }}\" at 17: expected an expression");
    assert_eq!(err("{{ a b }}"), "template \"{{ a b }}\" at 6: unexpected 'b'");
    assert_eq!(err("{{ a = 1 }}"), "template \"{{ a = 1 }}\" at 6: unexpected '=' (use '==' to compare)");
    assert_eq!(err("{{ 'abc }}"), "template \"{{ 'abc }}\" at 4: string is not closed");
    assert_eq!(err("{{ (a }}"), "template \"{{ (a }}\" at 7: expected ')', found end of expression");
    assert_eq!(err("{{ a. }}"), "template \"{{ a. }}\" at 7: expected a name after '.'");
    assert_eq!(err("{{}}"), "template \"{{}}\" at 1: empty '{{ }}'");
    // Positions count characters, not bytes.
    assert_eq!(err("é {{ 1 / 0 }}"), "template \"é {{ 1 / 0 }}\" at 8: division by zero");
    // Runtime errors inside a map expression point at the argument and into the expression.
    let m = err("{{ input.items | map: 'price / 0' }}");
    assert!(m.ends_with("at 23: in expression \"price / 0\" at 7: division by zero"), "{m}");
    let m = err("{{ input.items | map: 'price +' }}");
    assert!(m.ends_with("at 23: in expression \"price +\" at 8: expected an expression"), "{m}");
}

#[test]
fn long_templates_are_truncated_in_messages() {
    let t = format!("{{{{ {} | bogus }}}}", "input.x".repeat(40));
    let at = t.find("bogus").unwrap() + 1;
    assert_eq!(err(&t), format!("template \"{}…\" at {at}: unknown filter 'bogus'", &t[..59]));
}

#[test]
fn check_catches_unbalanced_braces() {
    let bad = json!({"a": ["fine {{input.x}}", {"b": "oops {{ input.x "}]});
    match check(&bad) {
        Err(Error::Validation { message, details }) => {
            assert_eq!(message, "template \"oops {{ input.x \" at 6: '{{' is not closed by '}}'");
            assert_eq!(details[0].path, vec![json!("a"), json!(1), json!("b")]);
        }
        other => panic!("{other:?}"),
    }
    assert!(check(&json!({"a": "{{ x }} and {{ y | upcase }}", "n": 1})).is_ok());
    assert!(check(&json!("{{ x | bogus }}")).is_err());
    assert!(check(&json!("{{ x | map: 'a +' }}")).is_err());
    assert!(check(&json!("{{ {{ x }} }}")).is_err());
    assert!(check(&json!("closing only }} is text")).is_ok());
}

#[test]
fn check_expr_validates_conditions() {
    assert!(check_expr("input.amount > 1000 and not input.flag").is_ok());
    let m = check_expr("input.amount >").unwrap_err().to_string();
    assert_eq!(m, "expression \"input.amount >\" at 15: expected an expression");
    assert!(check_expr("input.amount )").is_err());
}

// --- bounds -------------------------------------------------------------------------------

#[test]
fn deep_nesting_is_bounded() {
    let ok = format!("{}1{}", "(".repeat(60), ")".repeat(60));
    assert_eq!(e(&ok), json!(1));
    for deep in [
        format!("{}1{}", "(".repeat(100), ")".repeat(100)),
        format!("{}1", "-".repeat(10_000)),
        format!("{}x", "not ".repeat(10_000)),
        format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)),
        format!("{}0{}", "x[".repeat(5_000), "]".repeat(5_000)),
    ] {
        let m = eval_err(&deep);
        assert!(m.contains("nested deeper than 64 levels"), "{m}");
        assert!(check_expr(&deep).is_err());
    }
}

#[test]
fn long_flat_chains_do_not_recurse() {
    // Same-precedence chains are stored flat, so length is bounded only by the source size.
    let sum = vec!["1"; 5_000].join(" + ");
    assert_eq!(e(&sum), json!(5_000));
    let filters = format!("1{}", " | plus: 1".repeat(3_000));
    assert_eq!(e(&filters), json!(3_001));
    let path = format!("input{}", ".a".repeat(5_000));
    assert_eq!(e(&path), Value::Null);
}

#[test]
fn deepest_accepted_expression_evaluates_on_a_small_stack() {
    // Grow a many-operator nesting until the parser refuses it; the last accepted one must
    // evaluate on a 1 MiB stack (tokio's workers have 2 MiB).
    let mut x = "1".to_owned();
    let mut accepted = x.clone();
    loop {
        let next = format!("(({x}) * 1 + 0 == 1 and true or false | to_number) | plus: 0");
        if check_expr(&next).is_err() {
            assert!(eval_err(&next).contains("nested deeper than 64 levels"));
            break;
        }
        accepted = next.clone();
        x = next;
    }
    let c = ctx();
    let result = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || eval(&accepted, &c).map_err(|e| e.to_string()))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(result, Ok(json!(1)));
}

#[test]
fn recursive_expressions_from_data_are_bounded() {
    // The map expression comes from the data and maps itself again at every level.
    let c = json!({"d": [1], "src": "[this] | map: src"});
    let run = move || eval("d | map: src", &c).map(|_| ()).map_err(|e| e.to_string());
    let thread = std::thread::Builder::new().stack_size(1024 * 1024).spawn(run).unwrap();
    let m = thread.join().unwrap().unwrap_err();
    assert!(m.contains("expression evaluation nested too deeply"), "{m}");
}

#[test]
fn huge_map_is_bounded_by_the_budget() {
    let items: Vec<Value> = (0..200_000).map(|i| json!({"q": i, "p": 1})).collect();
    let c = json!({"input": {"items": items}});
    match render_str("{{ input.items | map: 'q * p' | sum }}", &c) {
        Err(Error::Validation { message, .. }) => {
            assert!(message.contains("evaluation budget of 100000 operations exceeded"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // A smaller array is fine.
    let items: Vec<Value> = (0..1_000).map(|i| json!({"q": i, "p": 1})).collect();
    let c = json!({"input": {"items": items}});
    assert_eq!(render_str("{{ input.items | map: 'q * p' | sum }}", &c).unwrap(), json!(499_500));
}

#[test]
fn budget_is_shared_across_one_render_call() {
    let items: Vec<Value> = (0..30_000).map(|i| json!(i)).collect();
    let c = json!({"items": items});
    assert!(render_str("{{ items | sum }}", &c).is_ok());
    let many = json!(["{{ items | sum }}", "{{ items | sum }}", "{{ items | sum }}", "{{ items | sum }}"]);
    assert!(render(&many, &c).unwrap_err().to_string().contains("budget"));
}

#[test]
fn template_length_is_bounded() {
    let t = format!("{{{{ '{}' }}}}", "x".repeat(MAX_SOURCE_LEN));
    assert!(err(&t).contains("longer than 65536 bytes"));
    let x = format!("'{}'", "x".repeat(MAX_SOURCE_LEN));
    assert!(eval_err(&x).contains("longer than 65536 bytes"));
}

#[test]
fn rendered_output_is_bounded() {
    let big = "x".repeat(MAX_OUTPUT_LEN / 2 + 1);
    let c = json!({"big": big});
    assert!(render_str("{{big}}{{big}}", &c).unwrap_err().to_string().contains("longer than 1048576 bytes"));
    assert!(eval("big + big", &c).unwrap_err().to_string().contains("longer than 1048576 bytes"));
    assert!(eval("big | append: big", &c).is_err());
    assert!(eval("[big, big, big] | join", &c).is_err());
    assert!(eval("[big, big] | json", &c).is_err());
    // `replace` is sized before it allocates.
    let c = json!({"s": "a".repeat(10_000), "long": "y".repeat(1_000)});
    assert!(eval("s | replace: 'a', long", &c).unwrap_err().to_string().contains("longer than"));
}

#[test]
fn times_cannot_repeat_strings_or_allocate() {
    // There is no repetition: `times` is arithmetic only.
    assert!(eval_err("'ab' | times: 1000000000").contains("input must be a number"));
    assert!(eval_err("'ab' * 1000000000").contains("cannot multiply string and number"));
    assert_eq!(e("2 | times: 1000000000000"), json!(2_000_000_000_000_i64));
}

#[test]
fn copying_large_values_repeatedly_is_bounded() {
    // Each element would copy the whole array: n² data without the copy cap.
    let items: Vec<Value> = (0..20_000).map(|i| json!({"i": i, "pad": "xxxxxxxxxxxxxxxx"})).collect();
    let c = json!({"input": {"items": items}});
    let m = render_str("{{ input.items | map: 'input.items' }}", &c).unwrap_err().to_string();
    assert!(m.contains("bytes of data") || m.contains("budget"), "{m}");
}

#[test]
fn dynamic_map_expression_is_parsed_and_checked() {
    let c = json!({"items": [{"a": 1}], "expr": "a +", "n": 5});
    assert!(eval("items | map: expr", &c).unwrap_err().to_string().contains("in expression \"a +\""));
    assert!(eval("items | map: n", &c).unwrap_err().to_string().contains("needs an expression string"));
}

#[test]
fn value_nesting_is_bounded() {
    let mut v = json!("{{ input.amount }}");
    for _ in 0..200 {
        v = json!([v]);
    }
    assert!(render(&v, &ctx()).unwrap_err().to_string().contains("nested deeper than 128"));
    assert!(check(&v).is_err());
}

// --- ternary, ??, in ----------------------------------------------------------------------

#[test]
fn ternary_picks_a_branch_and_evaluates_only_that_one() {
    assert_eq!(e("input.amount > 1000 ? 'big' : 'small'"), json!("big"));
    assert_eq!(e("input.zero ? 'yes' : 'no'"), json!("no"));
    assert_eq!(e("true ? 1 : 1 / 0"), json!(1));
    assert_eq!(e("false ? 1 / 0 : 2"), json!(2));
    // Nests to the right, and a ternary may sit in either branch.
    assert_eq!(e("input.amount < 10 ? 'small' : input.amount < 2000 ? 'medium' : 'large'"), json!("medium"));
    assert_eq!(e("true ? false ? 1 : 2 : 3"), json!(2));
    assert_eq!(r("Size: {{ input.items.size > 1 ? 'many' : 'one' }}"), json!("Size: many"));
}

#[test]
fn ternary_binds_looser_than_operators_and_tighter_than_filters() {
    assert_eq!(e("1 + 1 == 2 and input.flag ? 'a' : 'b'"), json!("a"));
    assert_eq!(e("not input.flag ? 'a' : 'b'"), json!("b"));
    // `|` applies to the whole ternary; a filter inside a branch needs parentheses.
    assert_eq!(e("input.flag ? 'a' : 'b' | upcase"), json!("A"));
    assert_eq!(e("input.flag ? (input.customer.tier | upcase) : 'none'"), json!("GOLD"));
    // A ternary is a filter argument like any expression.
    assert_eq!(e("input.nothing | default: input.flag ? 'on' : 'off'"), json!("on"));
    assert_eq!(e("input.tags | slice: input.flag ? 1 : 0, 2"), json!(["a", "b"]));
    let m = check_expr("input.flag ? 'a'").unwrap_err().to_string();
    assert!(m.contains("expected ':' (a ternary is 'cond ? a : b'), found end of expression"), "{m}");
    assert!(check_expr("input.flag ? 'a' | upcase : 'b'").is_err());
}

#[test]
fn coalesce_replaces_null_only() {
    assert_eq!(e("input.nothing ?? 'n/a'"), json!("n/a"));
    assert_eq!(e("input.missing.deeper ?? 'n/a'"), json!("n/a"));
    assert_eq!(e("input.zero ?? 5"), json!(0));
    assert_eq!(e("input.empty ?? 'x'"), json!(""));
    assert_eq!(e("false ?? true"), json!(false));
    assert_eq!(e("input.missing ?? input.nothing ?? 3"), json!(3));
    assert_eq!(e("input.amount ?? 1 / 0"), json!(1500));
    // Looser than `or` and arithmetic, tighter than the ternary and `|`.
    assert_eq!(e("input.nothing ?? 1 + 1"), json!(2));
    assert_eq!(e("input.nothing ?? input.zero or input.flag"), json!(true));
    assert_eq!(e("input.nothing ?? 'a' | upcase"), json!("A"));
    assert_eq!(e("input.nothing ?? false ? 'y' : 'n'"), json!("n"));
    // The value keeps its type (and is not copied through text).
    assert_eq!(r("{{ input.missing ?? input.nums }}"), json!([3, 1, 2]));
}

#[test]
fn in_tests_membership_substrings_and_keys() {
    assert_eq!(e("'a' in input.tags"), json!(true));
    assert_eq!(e("'z' in input.tags"), json!(false));
    assert_eq!(e("2.0 in input.nums"), json!(true));
    assert_eq!(e("'@example' in input.customer.email"), json!(true));
    assert_eq!(e("'some key' in input.obj"), json!(true));
    assert_eq!(e("'x' in input.nothing"), json!(false));
    assert_eq!(e("'z' not in input.tags"), json!(true));
    assert_eq!(e("'a' not in input.tags"), json!(false));
    assert_eq!(e("not 'a' in input.tags"), json!(false));
    assert_eq!(e("input.customer.tier in ['gold', 'platinum'] and input.amount > 1000"), json!(true));
    assert!(check_expr("in input.tags").unwrap_err().to_string().contains("unexpected 'in'"));
    assert!(check_expr("'a' not input.tags").is_err());
    // A field named `in` is still reachable.
    assert_eq!(eval("this.in", &json!({"this": {"in": 1}})).unwrap(), json!(1));
}

// --- dates --------------------------------------------------------------------------------

#[test]
fn date_formats_rfc3339_timestamps_and_plain_dates() {
    assert_eq!(e("'2024-05-01T12:34:56Z' | date: '%Y-%m-%d'"), json!("2024-05-01"));
    assert_eq!(e("'2024-05-01T12:34:56Z' | date: '%d/%m/%Y %H:%M'"), json!("01/05/2024 12:34"));
    // The input's offset is kept.
    assert_eq!(e("'2024-05-01T23:30:00-02:00' | date: '%Y-%m-%d %H:%M %z'"), json!("2024-05-01 23:30 -0200"));
    assert_eq!(e("0 | date: '%Y-%m-%d %H:%M:%S'"), json!("1970-01-01 00:00:00"));
    assert_eq!(e("1714566896 | date: '%Y-%m-%d'"), json!("2024-05-01"));
    assert_eq!(e("'1714566896' | date: '%s'"), json!("1714566896"));
    assert_eq!(e("1.5 | date: '%S%.3f'"), json!("01.500"));
    assert_eq!(e("'2024-05-01' | date: '%A %e %B'"), json!("Wednesday  1 May"));
    assert_eq!(e("'2024-05-01T08:00:00' | date: '%H:%M %Z'"), json!("08:00 +00:00"));
    // Without a format: RFC 3339.
    assert_eq!(e("1714566896 | date"), json!("2024-05-01T12:34:56Z"));
    assert_eq!(e("input.nothing | date: '%Y'"), Value::Null);
}

#[test]
fn date_errors_name_the_problem() {
    assert!(eval_err("'yesterday' | date: '%Y'").contains("cannot read string \"yesterday\" as a time"));
    assert!(eval_err("input.nums | date: '%Y'").contains("expected a time string, a Unix timestamp or 'now'"));
    let m = eval_err("1e300 | date");
    assert!(m.contains("filter 'date': timestamp number 1e+300 is out of range"), "{m}");
    assert!(eval_err("0 | date: 5").contains("expected a format string, got number"));
    // A literal format is checked when the template is saved; a computed one when it runs.
    let m = check_expr("input.at | date: '%Y-%Q'").unwrap_err().to_string();
    assert!(m.contains("filter 'date': invalid format \"%Y-%Q\""), "{m}");
    assert!(check(&json!({"a": "{{ x | date: '%Y-%m-%d' }}"})).is_ok());
    assert!(check(&json!({"a": "{{ x | date: '%' }}"})).is_err());
    assert!(eval("0 | date: f", &json!({"f": "%Q"})).unwrap_err().to_string().contains("invalid format"));
}

#[test]
fn now_is_the_current_time_once_per_call() {
    let before = chrono::Utc::now();
    let v = e("now");
    let after = chrono::Utc::now();
    let at = chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert!(before - chrono::Duration::milliseconds(1) <= at && at <= after, "{at} not in {before}..{after}");
    assert!(v.as_str().unwrap().ends_with('Z'));
    assert_eq!(e("now | date: '%Y'"), json!(before.format("%Y").to_string()));
    assert_eq!(e("'now' | date: '%Y'"), json!(before.format("%Y").to_string()));
    // One instant per call.
    assert_eq!(e("now == ('now' | date: '%Y-%m-%dT%H:%M:%S%.3fZ')"), json!(true));
    let out = render(&json!(["{{ now }}", "{{ now }}", "at {{ now }}"]), &ctx()).unwrap();
    assert_eq!(out[0], out[1]);
    assert_eq!(out[2], json!(format!("at {}", out[0].as_str().unwrap())));
    // A context value named `now` wins.
    assert_eq!(eval("now", &json!({"now": 5})).unwrap(), json!(5));
}

// --- encodings and JSON ---------------------------------------------------------------------

#[test]
fn url_encode_escapes_for_query_strings() {
    assert_eq!(e("'a b&c=d/é?' | url_encode"), json!("a+b%26c%3Dd%2F%C3%A9%3F"));
    assert_eq!(e("'safe-._*Az09' | url_encode"), json!("safe-._*Az09"));
    assert_eq!(r("https://x.test/?q={{ input.customer.name | url_encode }}"), json!("https://x.test/?q=ada+lovelace"));
    assert_eq!(e("42 | url_encode"), json!("42"));
    assert!(eval_err("input.tags | url_encode").contains("expected text, got array"));
}

#[test]
fn base64_round_trips_and_refuses_bad_input() {
    assert_eq!(e("'hello' | base64_encode"), json!("aGVsbG8="));
    assert_eq!(e("'' | base64_encode"), json!(""));
    assert_eq!(e("'aGVsbG8=' | base64_decode"), json!("hello"));
    assert_eq!(e("'aGVsbG8' | base64_decode"), json!("hello"));
    assert_eq!(e("'héllo ✓' | base64_encode | base64_decode"), json!("héllo ✓"));
    // The URL-safe alphabet decodes too.
    assert_eq!(e("'???' | base64_encode"), json!("Pz8/"));
    assert_eq!(e("'Pz8_' | base64_decode"), json!("???"));
    assert!(eval_err("'not base64!' | base64_decode").contains("filter 'base64_decode': invalid base64"));
    assert!(eval_err("'/w==' | base64_decode").contains("not UTF-8 text"));
}

#[test]
fn parse_json_reads_text_into_values() {
    assert_eq!(e(r#"'{"a": [1, 2.5, "x"], "b": null}' | parse_json"#), json!({"a": [1, 2.5, "x"], "b": null}));
    assert_eq!(e(r#"('{"a": {"b": 7}}' | parse_json).a.b"#), json!(7));
    assert_eq!(e("' 42 ' | parse_json"), json!(42));
    assert_eq!(e("input.obj | json | parse_json"), e("input.obj"));
    assert_eq!(e("input.nothing | parse_json"), Value::Null);
    assert!(eval_err("'{\"a\": ' | parse_json").contains("filter 'parse_json': invalid JSON: EOF while parsing"));
    assert!(eval_err("input.nums | parse_json").contains("expected a string, got array"));
    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    let m = eval("s | parse_json", &json!({"s": deep})).unwrap_err().to_string();
    assert!(m.contains("JSON nested deeper than 64 levels"), "{m}");
    let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
    assert!(eval("s | parse_json", &json!({"s": ok})).is_ok());
}

// --- budget: scans pay per element -------------------------------------------------------

fn budget_err(expr: &str, c: &Value) -> std::time::Duration {
    let t = std::time::Instant::now();
    let res = eval(expr, c);
    let took = t.elapsed();
    match res {
        Err(Error::Validation { message, .. }) => {
            assert!(message.contains("evaluation budget of 100000 operations exceeded"), "{expr}: {message}")
        }
        other => panic!("{expr}: expected the budget error, got {other:?}"),
    }
    took
}

/// `n` copies of `item`, joined with `sep`: one expression that repeats a scan.
fn repeat(item: &str, sep: &str, n: usize) -> String {
    vec![item; n].join(sep)
}

#[test]
fn scanning_a_large_value_many_times_runs_out_of_budget_quickly() {
    let big: Vec<Value> = (0..50_000).map(|i| json!({"i": i})).collect();
    let text = "x".repeat(1 << 20);
    let keys: Vec<String> = (0..50_000).map(|i| i.to_string()).collect();
    let c = json!({"a": big, "b": big, "s": text, "t": text, "h": "x".repeat(1 << 19), "keys": keys});
    // Each of these would walk ~50k elements or 1 MiB per use, a thousand times, without a
    // per-element charge (seconds to minutes of work); with it, a few uses spend the budget.
    for expr in [
        repeat("a == b", " and ", 1_000),
        repeat("a != b", " or ", 1_000),
        repeat("a contains -1", " or ", 1_000),
        repeat("-1 in a", " or ", 1_000),
        repeat("s == t", " and ", 1_000),
        repeat("s contains 'y'", " or ", 1_000),
        repeat("(s | size)", " + ", 1_000),
        repeat("s.size", " + ", 1_000),
        repeat("(a | size) + (s | slice: 5, 1 | size)", " + ", 1_000),
        repeat("s < t", " or ", 1_000),
        repeat("(s | split: ',' | size)", " + ", 1_000),
        repeat("(s | replace: 'y', 'z' | size)", " + ", 1_000),
        repeat("(s | upcase | size)", " + ", 1_000),
        repeat("(s | url_encode | size)", " + ", 1_000),
        repeat("(keys | join: ',' | size)", " + ", 1_000),
        repeat("(keys | sort | size)", " + ", 1_000),
        repeat("(keys | uniq | size)", " + ", 1_000),
        repeat("(keys | max | size)", " + ", 1_000),
        repeat("(a | where: 'i', -1 | size)", " + ", 1_000),
        repeat("(h + h | size)", " + ", 1_000),
    ] {
        let took = budget_err(&expr, &c);
        assert!(took < std::time::Duration::from_secs(3), "{}…: took {took:?}", &expr[..40]);
    }
}

#[test]
fn scans_within_the_budget_still_work() {
    let big: Vec<Value> = (0..5_000).map(|i| json!(i)).collect();
    let c = json!({"a": big, "b": big, "s": "x".repeat(1 << 20)});
    assert_eq!(eval("a == b and 4999 in a and (s | size) == 1048576", &c).unwrap(), json!(true));
    assert_eq!(eval("a | sort | last", &c).unwrap(), json!(4_999));
    // Passing a large value through copies it, which is bounded by bytes, not elements.
    let items: Vec<Value> = (0..200_000).map(|i| json!(i)).collect();
    let c = json!({"items": items});
    assert_eq!(render_str("{{ items }}", &c).unwrap().as_array().unwrap().len(), 200_000);
}

#[test]
fn sorting_long_strings_is_charged_for_their_length() {
    // 2 000 strings of 8 KiB with a common prefix: each comparison walks most of both.
    let prefix = "p".repeat(8 * 1024);
    let keys: Vec<Value> = (0..2_000).map(|i| json!(format!("{prefix}{i:05}"))).collect();
    let c = json!({"keys": keys});
    budget_err("keys | sort | size", &c);
    let short: Vec<Value> = (0..2_000).map(|i| json!(format!("{i:05}"))).collect();
    assert_eq!(eval("short | sort | size", &json!({"short": short})).unwrap(), json!(2_000));
}
