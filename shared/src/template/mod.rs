//! Template rendering and safe expressions (DESIGN.md §4).
//!
//! # Templates
//!
//! Any string inside a block's config may contain `{{ expression }}` placeholders, rendered
//! against a context object (`input`, `steps`, `vars`, `item`, `index`, …):
//!
//! - a string that is exactly one `{{ … }}` (whitespace around it allowed) becomes the
//!   expression's value with its JSON type: `"{{input.items}}"` → an array;
//! - otherwise the placeholders are replaced by text: null → nothing, a string as-is, anything
//!   else compact JSON: `"Total: {{input.total}}"` → `"Total: 42"`;
//! - strings without `{{` are left alone; object keys are never rendered. A literal `{{` in
//!   rendered text is written `{{ '{{' }}`.
//!
//! # Expressions
//!
//! Also used bare, e.g. a condition edge's `when: "input.amount > 1000"` ([`eval`]).
//!
//! - Paths: `input.customer.email`, `items.0.product`, `items[0]`, `items[-1]` (from the end),
//!   `obj["some key"]`, `obj[vars.field]`. Root names are keys of the context. Segments after
//!   a `.` may start with a digit and contain hyphens (`steps.create-invoice.output`), so
//!   subtraction needs spaces: `a.b - 1`, not `a.b-1`. A missing key, an out-of-range index or
//!   a step into a scalar gives `null`, never an error. `.size`, `.first`, `.last` work on
//!   arrays (and `.size` on strings and on objects without a `size` key). `now` is the current
//!   UTC time as RFC 3339 with milliseconds, one instant per [`render`]/[`eval`] call, unless
//!   the context has a `now` key.
//! - Literals: numbers (`2`, `1.5`, `1e3`), `'single'` or `"double"` quoted strings (escapes
//!   `\\ \' \" \n \t \r \/`), `true`, `false`, `null`, arrays `[1, 'a', x]`.
//! - Operators, loosest first: `|` filters; `c ? a : b`; `??`; `or` `||`; `and` `&&`; `not`;
//!   `==` `!=` `<` `<=` `>` `>=` `contains` `in` `not in`; `+` `-`; `*` `/` `%`; unary `-` and
//!   `!`; then `.`/`[]`. `not a == b` is `not (a == b)`, while `!a == b` is `(!a) == b`.
//!   The ternary nests to the right and its branches stop at `|` (`c ? a : b | f` filters the
//!   result; write `c ? (a | f) : b` to filter a branch). `a ?? b` is `b` when `a` is null (a
//!   missing path included), else `a`; `b` is evaluated only then. `x in y` is `y contains x`
//!   (`in`, like `and`, `or`, `not`, `contains`, is a keyword: reach a field named `in` as
//!   `this.in` or `x['in']`).
//!   `and`/`or` short-circuit and give booleans. `+` concatenates text when either side is a
//!   string; otherwise arithmetic needs numbers. Integer arithmetic stays integral while exact
//!   (`2 + 3` → `5`, `6 / 3` → `2`, `7 / 2` → `3.5`); dividing by zero is an error. `==` is deep
//!   equality with `1 == 1.0`; values of different types are unequal. `<`, `>`, … compare
//!   numbers numerically and strings lexicographically and are `false` for anything else.
//!   `contains` tests a substring, an array element or an object key.
//! - Filters (Liquid syntax): `expr | name: arg1, arg2 | name2`. Filter arguments stop at `,`
//!   and `|`; inside an array literal wrap a filtered element in parentheses.
//!   - `map: 'expr'`, `where: 'expr'`, `where: 'expr', value`, `sort`, `sort: 'expr'`: the
//!     string is an expression evaluated per array element, where the element's fields are
//!     root names, `this` is the element, `item` is the element (unless it has an `item`
//!     field) and the outer names (`input`, `vars`, …) stay visible. `map: 'name'` plucks a
//!     field; `where` keeps elements whose expression is truthy (or equals `value`).
//!   - numbers: `sum`, `times`, `plus`, `minus`, `divided_by` (same rules as `/`), `modulo`,
//!     `round` (optional digits, -15..=15), `floor`, `ceil`, `abs`, `min`, `max` (of an array,
//!     or of the input and the argument), `to_number`. Numeric strings are accepted.
//!   - text: `upcase`, `downcase`, `capitalize`, `strip`, `split: ','` (`''` splits into
//!     characters), `join` (default separator `' '`), `replace: from, to`, `append`,
//!     `prepend`; these take strings, numbers, booleans or null (as ""), not arrays or
//!     objects. `to_string` and `json` (compact JSON text) convert anything.
//!   - collections: `size`, `first`, `last`, `keys`, `values`, `reverse`, `uniq`,
//!     `slice: start, length` (length defaults to 1; negative start counts from the end).
//!     `sort`, `min` and `max` order null < booleans < numbers < strings.
//!   - A missing (null) input gives an empty result where that makes sense (`map`, `size`,
//!     `sum`, `join`, `keys`, …); other type mismatches are errors naming the filter.
//!   - `default: x`: `x` when the input is null, `false` or `""`.
//!   - `date` / `date: 'strftime format'`: the input is an RFC 3339 time (its offset is kept;
//!     `2024-05-01` or a time without offset is UTC), a Unix timestamp in seconds (a number or
//!     numeric string) or `"now"`; without a format, RFC 3339. A literal format is checked when
//!     parsing, so a bad one fails at save time. Null stays null.
//!   - `url_encode` (form encoding: space → `+`), `base64_encode`, `base64_decode` (standard or
//!     URL-safe alphabet, padding optional; the bytes must be UTF-8 text), `parse_json` (at
//!     most [`MAX_NESTING`] levels deep; null stays null). Bad input is an error.
//!
//! No loops, no I/O, no calls other than filters.
//!
//! # Bounds
//!
//! Every error (syntax, type, bound) is an [`Error::Validation`] naming the source (cut to 60
//! characters) and the 1-based character position, e.g.
//! `template "{{input.x | bogus}}" at 13: unknown filter 'bogus'` (bare expressions given to
//! [`eval`]/[`check_expr`] say `expression "…"`). Bounds: a string containing `{{`, or an
//! expression, is at most [`MAX_SOURCE_LEN`] bytes (longer plain strings pass through
//! untouched); expressions nest at most
//! [`MAX_NESTING`] levels; one [`render`]/[`eval`] call performs at most [`MAX_OPERATIONS`]
//! operations and copies or produces at most [`MAX_COPY_BYTES`] of data. Every node evaluated
//! is an operation, and so is every element an operator or filter walks (`==` on arrays and
//! objects, `contains`/`in`, `where`, `join`, `uniq`, `min`, …; `sort` about n·log2 n) and
//! every [`BYTES_PER_OPERATION`] bytes of string scanned (`size`, `slice`, `split`,
//! `replace`, comparisons, parsing) or of data copied or produced: no single operation does
//! unbounded work; no produced string (rendered text,
//! `+`, `join`, `replace`, …) exceeds [`MAX_OUTPUT_LEN`] bytes (a single `{{ expr }}` passing a
//! context value through is limited only by [`MAX_COPY_BYTES`]). There is no repetition
//! operator, so nothing allocates in proportion to a number in the template.

mod eval;
mod filters;
mod lexer;
mod parser;
mod value;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::error::{Error, Result};
use eval::{Evaluator, Scope};
use parser::{Node, Segment};

/// Longest template string or expression, in bytes.
pub const MAX_SOURCE_LEN: usize = 64 * 1024;
/// Deepest nesting of an expression: parser recursion (parentheses, brackets, prefix operators,
/// operands) and the height of the parsed tree are both capped.
pub const MAX_NESTING: usize = 64;
/// Operations one `render`/`eval` call may perform.
pub const MAX_OPERATIONS: u64 = 100_000;
/// Walking (comparing, searching, converting, parsing) or producing this many bytes of a string
/// or collection costs one operation, so no operation does unbounded work.
pub const BYTES_PER_OPERATION: usize = 256;
/// Longest string a template may produce, in bytes.
pub const MAX_OUTPUT_LEN: usize = 1024 * 1024;
/// Data one `render`/`eval` call may copy out of the context or produce, measured as about
/// its compact-JSON size in bytes.
pub const MAX_COPY_BYTES: usize = 16 * 1024 * 1024;
/// Deepest JSON value `render`/`check` walk through.
const MAX_VALUE_DEPTH: usize = 128;
/// Deepest evaluation recursion, expressions inside `map` strings included. Parsed trees are at
/// most [`MAX_NESTING`] high, so only expressions nested through `map`/`where`/`sort` strings
/// can reach it; it keeps the stack within about 0.6 MiB even in debug builds.
const MAX_EVAL_DEPTH: usize = 128;

/// A problem at a byte offset of one source text.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) pos: usize,
    pub(crate) msg: String,
}

impl Fail {
    pub(crate) fn new(pos: usize, msg: impl Into<String>) -> Self {
        Fail { pos, msg: msg.into() }
    }
}

pub(crate) type R<T> = std::result::Result<T, Fail>;

/// Renders every string inside `value` (recursively through arrays/objects; object keys are not
/// rendered) against `ctx`. A string that is exactly one `{{ expr }}` (surrounding whitespace
/// allowed) keeps the expression's JSON type; mixed text renders a string (null renders as
/// empty, strings as-is, other values as compact JSON). Errors carry the failing string's
/// location in `value` as a detail path.
pub fn render(value: &Value, ctx: &Value) -> Result<Value> {
    let mut ev = Evaluator::default();
    let mut path = Vec::new();
    render_value(value, ctx, &mut ev, &mut path, 0)
}

/// Renders one template string; see [`render`].
pub fn render_str(template: &str, ctx: &Value) -> Result<Value> {
    let mut ev = Evaluator::default();
    render_template(template, ctx, &mut ev).map_err(|f| to_error("template", template, f, &[]))
}

/// Evaluates an expression (no braces), e.g. a condition edge's `when`: `input.amount > 1000`.
/// A `when` written as a single `{{ expr }}` is accepted too.
pub fn eval(expr: &str, ctx: &Value) -> Result<Value> {
    let fail = |f| to_error("expression", expr, f, &[]);
    let node = compile_expr(expr).map_err(fail)?;
    let mut ev = Evaluator::default();
    let v = ev.eval(&node, &Scope::Root(ctx)).map_err(fail)?;
    ev.own(v, node.pos).map_err(fail)
}

/// Truthiness for conditions: false, null, 0, "", [] and {} are false.
pub fn truthy(v: &Value) -> bool {
    value::truthy(v)
}

/// Parse-only check used when a workflow is saved: Ok if every `{{…}}` in `value`'s strings
/// parses (filter names and argument counts included).
pub fn check(value: &Value) -> Result<()> {
    check_value(value, &mut Vec::new(), 0)
}

/// Parse-only check of an expression; see [`eval`].
pub fn check_expr(expr: &str) -> Result<()> {
    compile_expr(expr).map(drop).map_err(|f| to_error("expression", expr, f, &[]))
}

fn compile_expr(expr: &str) -> R<Node> {
    if !expr.trim_start().starts_with("{{") {
        return parser::parse_expr(expr, 0);
    }
    let mut segs = parser::parse_template(expr)?;
    match single_expr(expr, &segs) {
        Some(i) => match segs.swap_remove(i) {
            Segment::Expr(node) => Ok(node),
            Segment::Text(_) => Err(Fail::new(0, "internal: not an expression")),
        },
        None => Err(Fail::new(0, "expected one expression, not text with '{{ }}' placeholders")),
    }
}

/// The index of the only expression segment, if everything else is whitespace.
fn single_expr(src: &str, segs: &[Segment]) -> Option<usize> {
    let mut found = None;
    for (i, seg) in segs.iter().enumerate() {
        match seg {
            Segment::Text(r) if src[r.clone()].trim().is_empty() => {}
            Segment::Text(_) => return None,
            Segment::Expr(_) if found.is_some() => return None,
            Segment::Expr(_) => found = Some(i),
        }
    }
    found
}

fn render_value(value: &Value, ctx: &Value, ev: &mut Evaluator, path: &mut Vec<Value>, depth: usize) -> Result<Value> {
    if depth > MAX_VALUE_DEPTH {
        return Err(too_deep(path));
    }
    Ok(match value {
        Value::String(s) => render_template(s, ctx, ev).map_err(|f| to_error("template", s, f, path))?,
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                path.push(Value::from(i));
                out.push(render_value(v, ctx, ev, path, depth + 1)?);
                path.pop();
            }
            Value::Array(out)
        }
        Value::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, v) in map {
                path.push(Value::String(k.clone()));
                out.insert(k.clone(), render_value(v, ctx, ev, path, depth + 1)?);
                path.pop();
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

fn render_template(src: &str, ctx: &Value, ev: &mut Evaluator) -> R<Value> {
    if !src.contains("{{") {
        return Ok(Value::String(src.to_owned()));
    }
    let segs = parser::parse_template(src)?;
    let root = Scope::Root(ctx);
    if let Some(i) = single_expr(src, &segs)
        && let Segment::Expr(node) = &segs[i]
    {
        let v = ev.eval(node, &root)?;
        return ev.own(v, node.pos);
    }
    let mut out = String::new();
    for seg in &segs {
        let (piece, pos) = match seg {
            Segment::Text(r) => (std::borrow::Cow::Borrowed(&src[r.clone()]), r.start),
            Segment::Expr(node) => {
                let v = ev.eval(node, &root)?;
                let text = value::to_text(&v).map_err(|m| Fail::new(node.pos, m))?;
                (std::borrow::Cow::Owned(text.into_owned()), node.pos)
            }
        };
        if out.len() + piece.len() > MAX_OUTPUT_LEN {
            return Err(Fail::new(pos, format!("rendered text longer than {MAX_OUTPUT_LEN} bytes")));
        }
        out.push_str(&piece);
    }
    ev.charge_bytes(out.len(), 0)?;
    Ok(Value::String(out))
}

fn check_value(value: &Value, path: &mut Vec<Value>, depth: usize) -> Result<()> {
    if depth > MAX_VALUE_DEPTH {
        return Err(too_deep(path));
    }
    match value {
        Value::String(s) if s.contains("{{") => {
            parser::parse_template(s).map_err(|f| to_error("template", s, f, path))?;
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(Value::from(i));
                check_value(v, path, depth + 1)?;
                path.pop();
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                path.push(Value::String(k.clone()));
                check_value(v, path, depth + 1)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

fn too_deep(path: &[Value]) -> Error {
    Error::validation_at(path.to_vec(), format!("value nested deeper than {MAX_VALUE_DEPTH} levels"))
}

/// `{kind} "{source, truncated}" at {1-based char position}: {message}`.
fn to_error(kind: &str, src: &str, f: Fail, path: &[Value]) -> Error {
    let message = format!("{kind} {} at {}: {}", quote(src), char_pos(src, f.pos), f.msg);
    if path.is_empty() { Error::validation(message) } else { Error::validation_at(path.to_vec(), message) }
}

/// The source in double quotes, cut to 60 characters, control characters escaped.
pub(crate) fn quote(src: &str) -> String {
    const KEEP: usize = 60;
    let mut out = String::from("\"");
    for (i, c) in src.chars().enumerate() {
        if i == KEEP - 1 && src.chars().nth(KEEP).is_some() {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// 1-based character position of byte offset `pos`.
pub(crate) fn char_pos(src: &str, pos: usize) -> usize {
    src.get(..pos).map_or(1, |s| s.chars().count() + 1)
}
