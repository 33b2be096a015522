//! Value semantics shared by operators and filters: numbers, equality, ordering, text.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::io::Write;

use serde_json::{Number, Value};

use super::MAX_OUTPUT_LEN;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Num {
    I(i64),
    F(f64),
}

impl Num {
    pub(crate) fn f(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// A JSON number as [`Num`]; integers beyond i64 become floats.
pub(crate) fn as_num(v: &Value) -> Option<Num> {
    let Value::Number(n) = v else { return None };
    match n.as_i64() {
        Some(i) => Some(Num::I(i)),
        None => n.as_f64().map(Num::F),
    }
}

/// Like [`as_num`], but also accepts a numeric string (`"12"`, `" 1.5 "`), as filters do.
pub(crate) fn coerce_num(v: &Value) -> Option<Num> {
    match v {
        Value::String(s) => parse_num(s.trim()),
        _ => as_num(v),
    }
}

pub(crate) fn parse_num(s: &str) -> Option<Num> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(Num::I(i));
    }
    let f: f64 = s.parse().ok()?;
    f.is_finite().then_some(Num::F(f))
}

pub(crate) fn num_value(n: Num) -> Result<Value, String> {
    match n {
        Num::I(i) => Ok(Value::from(i)),
        Num::F(f) => Number::from_f64(f).map(Value::Number).ok_or_else(|| "result is not a finite number".to_owned()),
    }
}

/// A float with no fractional part that fits an i64 becomes an integer.
pub(crate) fn integral(f: f64) -> Num {
    if f.fract() == 0.0 && (-9.2e18..=9.2e18).contains(&f) { Num::I(f as i64) } else { Num::F(f) }
}

/// Integer arithmetic while exact (falls back to float on overflow or inexact division).
pub(crate) fn arith(op: Arith, a: Num, b: Num) -> Result<Num, String> {
    if let (Num::I(x), Num::I(y)) = (a, b) {
        let exact = match op {
            Arith::Add => x.checked_add(y),
            Arith::Sub => x.checked_sub(y),
            Arith::Mul => x.checked_mul(y),
            Arith::Div => {
                if y == 0 {
                    return Err("division by zero".to_owned());
                }
                match x.checked_rem(y) {
                    Some(0) => x.checked_div(y),
                    _ => None,
                }
            }
            Arith::Rem => {
                if y == 0 {
                    return Err("modulo by zero".to_owned());
                }
                x.checked_rem(y)
            }
        };
        if let Some(v) = exact {
            return Ok(Num::I(v));
        }
    }
    let (x, y) = (a.f(), b.f());
    let r = match op {
        Arith::Add => x + y,
        Arith::Sub => x - y,
        Arith::Mul => x * y,
        Arith::Div | Arith::Rem if y == 0.0 => {
            return Err(if op == Arith::Div { "division by zero" } else { "modulo by zero" }.to_owned());
        }
        Arith::Div => x / y,
        Arith::Rem => x % y,
    };
    if r.is_finite() { Ok(Num::F(r)) } else { Err("result is not a finite number".to_owned()) }
}

fn num_cmp(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::I(x), Num::I(y)) => Some(x.cmp(&y)),
        _ => a.f().partial_cmp(&b.f()),
    }
}

/// Ordering for `<`, `>`, …: numbers numerically, strings lexicographically, else none.
pub(crate) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => num_cmp(as_num(a)?, as_num(b)?),
    }
}

/// `==`: deep equality where `1 == 1.0`; values of different types are never equal.
pub(crate) fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => {
            matches!(as_num(a).zip(as_num(b)).and_then(|(x, y)| num_cmp(x, y)), Some(Ordering::Equal))
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| loose_eq(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| loose_eq(v, w)))
        }
        _ => a == b,
    }
}

/// The bytes of a string value (0 for anything else): what comparing it may walk.
pub(crate) fn string_bytes(v: &Value) -> usize {
    v.as_str().map_or(0, str::len)
}

pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(_) => match as_num(v) {
            Some(Num::I(i)) => i != 0,
            Some(Num::F(f)) => f != 0.0,
            None => false,
        },
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// What `default` replaces: null, false and "".
pub(crate) fn is_blank(v: &Value) -> bool {
    matches!(v, Value::Null | Value::Bool(false)) || v.as_str() == Some("")
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A type name plus a short preview for scalars, for error messages.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let mut p: String = s.chars().take(24).collect();
            if p.len() < s.len() {
                p.push('…');
            }
            format!("string {p:?}")
        }
        Value::Number(n) => format!("number {n}"),
        Value::Bool(b) => format!("boolean {b}"),
        other => type_name(other).to_owned(),
    }
}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// Total order for `sort`, `min`, `max`: by type (null < boolean < number < string < array <
/// object), then by value; arrays and objects compare equal among themselves.
pub(crate) fn cmp_total(a: &Value, b: &Value) -> Ordering {
    rank(a).cmp(&rank(b)).then_with(|| match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Number(_), Value::Number(_)) => {
            as_num(a).zip(as_num(b)).and_then(|(x, y)| num_cmp(x, y)).unwrap_or(Ordering::Equal)
        }
        _ => Ordering::Equal,
    })
}

/// Text form used by mixed templates, `+` and string filters: null → "", a string as-is,
/// anything else compact JSON (at most [`MAX_OUTPUT_LEN`] bytes).
pub(crate) fn to_text(v: &Value) -> Result<Cow<'_, str>, String> {
    match v {
        Value::Null => Ok(Cow::Borrowed("")),
        Value::String(s) => Ok(Cow::Borrowed(s)),
        other => json_limited(other).map(Cow::Owned),
    }
}

/// Compact JSON, refusing to produce more than [`MAX_OUTPUT_LEN`] bytes.
pub(crate) fn json_limited(v: &Value) -> Result<String, String> {
    struct Limited(Vec<u8>);
    impl Write for Limited {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0.len() + buf.len() > MAX_OUTPUT_LEN {
                return Err(std::io::Error::other("too long"));
            }
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = Limited(Vec::new());
    serde_json::to_writer(&mut w, v).map_err(|_| too_long())?;
    String::from_utf8(w.0).map_err(|_| "JSON output is not UTF-8".to_owned())
}

pub(crate) fn too_long() -> String {
    format!("text longer than {MAX_OUTPUT_LEN} bytes")
}

/// Fails unless a string of `len` bytes is within [`MAX_OUTPUT_LEN`].
pub(crate) fn check_len(len: usize) -> Result<(), String> {
    if len > MAX_OUTPUT_LEN { Err(too_long()) } else { Ok(()) }
}
