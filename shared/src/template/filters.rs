//! Liquid-style filters. `map`, `where`, `sort: 'expr'` and `default` live in the evaluator
//! (they need the scope or keep the input borrowed); everything else is here.

use std::collections::HashSet;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat};
use serde_json::Value;

use super::eval::Evaluator;
use super::value::{
    Arith, Num, arith, check_len, cmp_total, coerce_num, describe, integral, json_limited, num_value, parse_num,
    string_bytes, to_text, type_name,
};
use super::{Fail, MAX_NESTING, MAX_SOURCE_LEN, R};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    Map,
    Where,
    Sum,
    Times,
    Plus,
    Minus,
    DividedBy,
    Modulo,
    Round,
    Floor,
    Ceil,
    Abs,
    Default,
    Size,
    First,
    Last,
    Join,
    Upcase,
    Downcase,
    Capitalize,
    Strip,
    Split,
    Json,
    ToNumber,
    ToText,
    Keys,
    Values,
    Reverse,
    Sort,
    Uniq,
    Slice,
    Replace,
    Append,
    Prepend,
    Min,
    Max,
    Date,
    UrlEncode,
    Base64Encode,
    Base64Decode,
    ParseJson,
}

/// Name, filter, minimum and maximum number of arguments.
const TABLE: &[(&str, Filter, usize, usize)] = &[
    ("map", Filter::Map, 1, 1),
    ("where", Filter::Where, 1, 2),
    ("sum", Filter::Sum, 0, 0),
    ("times", Filter::Times, 1, 1),
    ("plus", Filter::Plus, 1, 1),
    ("minus", Filter::Minus, 1, 1),
    ("divided_by", Filter::DividedBy, 1, 1),
    ("modulo", Filter::Modulo, 1, 1),
    ("round", Filter::Round, 0, 1),
    ("floor", Filter::Floor, 0, 0),
    ("ceil", Filter::Ceil, 0, 0),
    ("abs", Filter::Abs, 0, 0),
    ("default", Filter::Default, 1, 1),
    ("size", Filter::Size, 0, 0),
    ("first", Filter::First, 0, 0),
    ("last", Filter::Last, 0, 0),
    ("join", Filter::Join, 0, 1),
    ("upcase", Filter::Upcase, 0, 0),
    ("downcase", Filter::Downcase, 0, 0),
    ("capitalize", Filter::Capitalize, 0, 0),
    ("strip", Filter::Strip, 0, 0),
    ("split", Filter::Split, 1, 1),
    ("json", Filter::Json, 0, 0),
    ("to_number", Filter::ToNumber, 0, 0),
    ("to_string", Filter::ToText, 0, 0),
    ("keys", Filter::Keys, 0, 0),
    ("values", Filter::Values, 0, 0),
    ("reverse", Filter::Reverse, 0, 0),
    ("sort", Filter::Sort, 0, 1),
    ("uniq", Filter::Uniq, 0, 0),
    ("slice", Filter::Slice, 1, 2),
    ("replace", Filter::Replace, 2, 2),
    ("append", Filter::Append, 1, 1),
    ("prepend", Filter::Prepend, 1, 1),
    ("min", Filter::Min, 0, 1),
    ("max", Filter::Max, 0, 1),
    ("date", Filter::Date, 0, 1),
    ("url_encode", Filter::UrlEncode, 0, 0),
    ("base64_encode", Filter::Base64Encode, 0, 0),
    ("base64_decode", Filter::Base64Decode, 0, 0),
    ("parse_json", Filter::ParseJson, 0, 0),
];

impl Filter {
    pub(crate) fn from_name(name: &str) -> Option<Filter> {
        TABLE.iter().find(|e| e.0 == name).map(|e| e.1)
    }

    fn entry(self) -> &'static (&'static str, Filter, usize, usize) {
        TABLE.iter().find(|e| e.1 == self).unwrap_or(&TABLE[0])
    }

    pub(crate) fn name(self) -> &'static str {
        self.entry().0
    }

    pub(crate) fn arity(self) -> (usize, usize) {
        let e = self.entry();
        (e.2, e.3)
    }

    /// The first argument is an expression (a string) evaluated per element.
    pub(crate) fn takes_expression(self) -> bool {
        matches!(self, Filter::Map | Filter::Where | Filter::Sort)
    }
}

/// A `date` format, parsed; refused when it has an unknown `%` directive. Used at save time for
/// a literal format, and at run time.
fn date_format(fmt: &str) -> Result<Vec<Item<'_>>, String> {
    if fmt.len() > MAX_SOURCE_LEN {
        return Err(format!("format longer than {MAX_SOURCE_LEN} bytes"));
    }
    StrftimeItems::new(fmt)
        .parse()
        .map_err(|_| format!("invalid format {fmt:?} (strftime directives such as %Y-%m-%d)"))
}

pub(crate) fn check_date_format(fmt: &str) -> Result<(), String> {
    date_format(fmt).map(drop)
}

/// Decodes the standard and the URL-safe alphabet, with or without padding.
const BASE64_CONFIG: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, BASE64_CONFIG);
const BASE64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, BASE64_CONFIG);

/// Applies a filter whose arguments are already evaluated.
pub(crate) fn apply(ev: &mut Evaluator, f: Filter, input: &Value, args: &[Value], pos: usize) -> R<Value> {
    let mut cx = Cx { ev, f, pos };
    let arg = |i: usize| args.get(i);
    match f {
        Filter::Sum => cx.sum(input),
        Filter::Times => cx.math(input, args, Arith::Mul),
        Filter::Plus => cx.math(input, args, Arith::Add),
        Filter::Minus => cx.math(input, args, Arith::Sub),
        Filter::DividedBy => cx.math(input, args, Arith::Div),
        Filter::Modulo => cx.math(input, args, Arith::Rem),
        Filter::Round => cx.round(input, arg(0)),
        Filter::Floor => cx.unary_num(input, |f| integral(f.floor())),
        Filter::Ceil => cx.unary_num(input, |f| integral(f.ceil())),
        Filter::Abs => {
            let n = cx.num(input, "input")?;
            let r = match n {
                Num::I(i) => i.checked_abs().map_or(Num::F((i as f64).abs()), Num::I),
                Num::F(x) => Num::F(x.abs()),
            };
            cx.value(r)
        }
        Filter::Size => match input {
            Value::Array(a) => Ok(Value::from(a.len())),
            Value::String(s) => {
                cx.ev.scan(s.len(), pos)?;
                Ok(Value::from(s.chars().count()))
            }
            Value::Object(o) => Ok(Value::from(o.len())),
            Value::Null => Ok(Value::from(0)),
            other => Err(cx.expected("an array, string or object", other)),
        },
        Filter::First | Filter::Last => cx.first_last(input),
        Filter::Join => cx.join(input, arg(0)),
        Filter::Upcase => cx.map_text(input, |s| s.to_uppercase()),
        Filter::Downcase => cx.map_text(input, |s| s.to_lowercase()),
        Filter::Capitalize => cx.map_text(input, |s| {
            let mut chars = s.chars();
            match chars.next() {
                Some(c) => c.to_uppercase().chain(chars.flat_map(char::to_lowercase)).collect(),
                None => String::new(),
            }
        }),
        Filter::Strip => cx.map_text(input, |s| s.trim().to_owned()),
        Filter::Split => cx.split(input, arg(0)),
        Filter::Json => {
            let s = json_limited(input).map_err(|m| cx.fail(m))?;
            cx.string(s)
        }
        Filter::ToNumber => match input {
            Value::Number(_) => cx.ev.copy(input, pos),
            Value::String(s) => match cx.ev.scan(s.len(), pos).map(|()| parse_num(s.trim()))? {
                Some(n) => cx.value(n),
                None => Err(cx.fail(format!("cannot convert {} to a number", describe(input)))),
            },
            Value::Bool(b) => Ok(Value::from(i64::from(*b))),
            Value::Null => Ok(Value::from(0)),
            other => Err(cx.expected("a number, string or boolean", other)),
        },
        Filter::ToText => {
            let s = cx.text(input)?.into_owned();
            cx.string(s)
        }
        Filter::Keys | Filter::Values => cx.keys_values(input),
        Filter::Reverse => match input {
            Value::Array(a) => {
                cx.ev.tick(a.len() as u64, pos)?;
                let mut out = cx.ev.copy(input, pos)?;
                if let Value::Array(v) = &mut out {
                    v.reverse();
                }
                Ok(out)
            }
            Value::String(s) => cx.string(s.chars().rev().collect()),
            Value::Null => Ok(Value::Null),
            other => Err(cx.expected("an array or string", other)),
        },
        Filter::Sort => {
            let items = cx.array(input)?;
            cx.ev.charge_sort(items.len(), items.iter().map(string_bytes).sum(), pos)?;
            let mut out = Vec::with_capacity(items.len());
            for v in items {
                out.push(cx.ev.copy(v, pos)?);
            }
            out.sort_by(cmp_total);
            Ok(Value::Array(out))
        }
        Filter::Uniq => cx.uniq(input),
        Filter::Slice => cx.slice(input, args),
        Filter::Replace => cx.replace(input, args),
        Filter::Append | Filter::Prepend => {
            let s = cx.scalar_text(input)?;
            let extra = cx.scalar_text(&args[0])?;
            check_len(s.len() + extra.len()).map_err(|m| cx.fail(m))?;
            let out = if f == Filter::Append { format!("{s}{extra}") } else { format!("{extra}{s}") };
            cx.string(out)
        }
        Filter::Min | Filter::Max => cx.min_max(input, arg(0)),
        Filter::Date => cx.date(input, arg(0)),
        Filter::UrlEncode => {
            let s = cx.scalar_text(input)?;
            cx.ev.scan(s.len(), pos)?;
            let mut out = String::new();
            for piece in url::form_urlencoded::byte_serialize(s.as_bytes()) {
                check_len(out.len() + piece.len()).map_err(|m| cx.fail(m))?;
                out.push_str(piece);
            }
            cx.string(out)
        }
        Filter::Base64Encode => {
            let s = cx.scalar_text(input)?;
            check_len(s.len().div_ceil(3) * 4).map_err(|m| cx.fail(m))?;
            let out = BASE64_STANDARD.encode(s.as_bytes());
            cx.string(out)
        }
        Filter::Base64Decode => {
            let s = cx.scalar_text(input)?;
            cx.ev.scan(s.len(), pos)?;
            let engine = if s.contains(['-', '_']) { &BASE64_URL_SAFE } else { &BASE64_STANDARD };
            let bytes = engine.decode(s.as_bytes()).map_err(|e| cx.fail(format!("invalid base64: {e}")))?;
            let text = String::from_utf8(bytes).map_err(|_| cx.fail("the decoded bytes are not UTF-8 text"))?;
            cx.string(text)
        }
        Filter::ParseJson => cx.parse_json(input),
        // Handled by the evaluator.
        Filter::Map | Filter::Where | Filter::Default => Err(cx.fail("internal: misrouted filter")),
    }
}

/// One filter application: the evaluator (for budget and copies) plus names for errors.
struct Cx<'e> {
    ev: &'e mut Evaluator,
    f: Filter,
    pos: usize,
}

impl Cx<'_> {
    fn fail(&self, msg: impl std::fmt::Display) -> Fail {
        Fail::new(self.pos, format!("filter '{}': {msg}", self.f.name()))
    }

    fn expected(&self, what: &str, got: &Value) -> Fail {
        self.fail(format!("expected {what}, got {}", type_name(got)))
    }

    fn num(&mut self, v: &Value, which: &str) -> R<Num> {
        self.ev.scan(string_bytes(v), self.pos)?;
        coerce_num(v).ok_or_else(|| self.fail(format!("{which} must be a number, got {}", describe(v))))
    }

    fn int(&mut self, v: &Value, which: &str) -> R<i64> {
        match self.num(v, which)? {
            Num::I(i) => Ok(i),
            Num::F(f) => match integral(f) {
                Num::I(i) => Ok(i),
                Num::F(_) => Err(self.fail(format!("{which} must be a whole number"))),
            },
        }
    }

    fn value(&self, n: Num) -> R<Value> {
        num_value(n).map_err(|m| self.fail(m))
    }

    fn text<'v>(&self, v: &'v Value) -> R<std::borrow::Cow<'v, str>> {
        to_text(v).map_err(|m| self.fail(m))
    }

    /// Text for string filters: arrays and objects are refused (use `json` or `to_string`).
    fn scalar_text<'v>(&self, v: &'v Value) -> R<std::borrow::Cow<'v, str>> {
        match v {
            Value::Array(_) | Value::Object(_) => Err(self.expected("text", v)),
            _ => self.text(v),
        }
    }

    /// A produced string: length-checked and charged.
    fn string(&mut self, s: String) -> R<Value> {
        check_len(s.len()).map_err(|m| self.fail(m))?;
        self.ev.charge_bytes(s.len() + 16, self.pos)?;
        Ok(Value::String(s))
    }

    fn array<'v>(&self, v: &'v Value) -> R<&'v [Value]> {
        match v {
            Value::Array(a) => Ok(a),
            Value::Null => Ok(&[]),
            other => Err(self.expected("an array", other)),
        }
    }

    fn math(&mut self, input: &Value, args: &[Value], op: Arith) -> R<Value> {
        let a = self.num(input, "input")?;
        let b = self.num(&args[0], "argument")?;
        let r = arith(op, a, b).map_err(|m| self.fail(m))?;
        self.value(r)
    }

    fn unary_num(&mut self, input: &Value, f: impl Fn(f64) -> Num) -> R<Value> {
        match self.num(input, "input")? {
            Num::I(i) => Ok(Value::from(i)),
            Num::F(x) => self.value(f(x)),
        }
    }

    fn round(&mut self, input: &Value, digits: Option<&Value>) -> R<Value> {
        let n = self.num(input, "input")?;
        let d = match digits {
            Some(d) => self.int(d, "digits")?,
            None => 0,
        };
        if !(-15..=15).contains(&d) {
            return Err(self.fail("digits must be between -15 and 15"));
        }
        if let (Num::I(i), true) = (n, d >= 0) {
            return Ok(Value::from(i));
        }
        let x = n.f();
        let p = 10f64.powi(d.unsigned_abs() as i32);
        let r = if d >= 0 { (x * p).round() / p } else { (x / p).round() * p };
        let r = if r.is_finite() { r } else { x };
        self.value(if d <= 0 { integral(r) } else { Num::F(r) })
    }

    fn sum(&mut self, input: &Value) -> R<Value> {
        let items = self.array(input)?;
        self.ev.tick(items.len() as u64, self.pos)?;
        let mut acc = Num::I(0);
        for v in items {
            if v.is_null() {
                continue;
            }
            self.ev.scan(string_bytes(v), self.pos)?;
            let n = coerce_num(v).ok_or_else(|| self.fail(format!("cannot add {}", describe(v))))?;
            acc = arith(Arith::Add, acc, n).map_err(|m| self.fail(m))?;
        }
        self.value(acc)
    }

    fn first_last(&mut self, input: &Value) -> R<Value> {
        let first = self.f == Filter::First;
        match input {
            Value::Array(a) => match if first { a.first() } else { a.last() } {
                Some(v) => self.ev.copy(v, self.pos),
                None => Ok(Value::Null),
            },
            Value::String(s) => {
                let c = if first { s.chars().next() } else { s.chars().next_back() };
                Ok(c.map_or(Value::Null, |c| Value::String(c.to_string())))
            }
            Value::Null => Ok(Value::Null),
            other => Err(self.expected("an array or string", other)),
        }
    }

    fn join(&mut self, input: &Value, sep: Option<&Value>) -> R<Value> {
        let sep = match sep {
            Some(s) => self.scalar_text(s)?.into_owned(),
            None => " ".to_owned(),
        };
        let items = match input {
            Value::Array(a) => a,
            Value::Null => return Ok(Value::String(String::new())),
            other @ Value::Object(_) => {
                return Err(self.expected("an array", other));
            }
            other => {
                let s = self.text(other)?.into_owned();
                return self.string(s);
            }
        };
        self.ev.tick(items.len() as u64, self.pos)?;
        let mut out = String::new();
        for (i, v) in items.iter().enumerate() {
            let t = self.text(v)?;
            let sep_len = if i > 0 { sep.len() } else { 0 };
            check_len(out.len() + sep_len + t.len()).map_err(|m| self.fail(m))?;
            if i > 0 {
                out.push_str(&sep);
            }
            out.push_str(&t);
        }
        self.string(out)
    }

    fn map_text(&mut self, input: &Value, f: impl Fn(&str) -> String) -> R<Value> {
        let s = self.scalar_text(input)?;
        // Case mapping can grow a string a few times; refuse inputs that could exceed the cap.
        check_len(s.len()).map_err(|m| self.fail(m))?;
        self.ev.scan(s.len(), self.pos)?;
        let out = f(&s);
        self.string(out)
    }

    fn split(&mut self, input: &Value, sep: Option<&Value>) -> R<Value> {
        if input.is_null() {
            return Ok(Value::Array(Vec::new()));
        }
        let s = self.scalar_text(input)?;
        let sep = match sep {
            Some(v) => self.scalar_text(v)?.into_owned(),
            None => String::new(),
        };
        self.ev.scan(s.len(), self.pos)?;
        let mut out = Vec::new();
        let mut push = |cx: &mut Self, piece: &str| -> R<()> {
            cx.ev.tick(1, cx.pos)?;
            cx.ev.charge_bytes(piece.len() + 16, cx.pos)?;
            out.push(Value::String(piece.to_owned()));
            Ok(())
        };
        if sep.is_empty() {
            let mut buf = [0u8; 4];
            for c in s.chars() {
                push(self, c.encode_utf8(&mut buf))?;
            }
        } else {
            for piece in s.split(sep.as_str()) {
                push(self, piece)?;
            }
        }
        Ok(Value::Array(out))
    }

    fn keys_values(&mut self, input: &Value) -> R<Value> {
        let o = match input {
            Value::Object(o) => o,
            Value::Null => return Ok(Value::Array(Vec::new())),
            other => return Err(self.expected("an object", other)),
        };
        self.ev.tick(o.len() as u64, self.pos)?;
        let mut out = Vec::with_capacity(o.len());
        for (k, v) in o {
            if self.f == Filter::Keys {
                self.ev.charge_bytes(k.len() + 16, self.pos)?;
                out.push(Value::String(k.clone()));
            } else {
                out.push(self.ev.copy(v, self.pos)?);
            }
        }
        Ok(Value::Array(out))
    }

    fn uniq(&mut self, input: &Value) -> R<Value> {
        let items = self.array(input)?;
        self.ev.tick(items.len() as u64, self.pos)?;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for v in items {
            let key = match v {
                // 1 and 1.0 are the same value.
                Value::Number(_) => match coerce_num(v) {
                    Some(Num::F(f)) => match integral(f) {
                        Num::I(i) => format!("n{i}"),
                        Num::F(f) => format!("n{f}"),
                    },
                    Some(Num::I(i)) => format!("n{i}"),
                    None => format!("n{v}"),
                },
                other => serde_json::to_string(other).unwrap_or_default(),
            };
            self.ev.scan(key.len(), self.pos)?;
            if seen.insert(key) {
                out.push(self.ev.copy(v, self.pos)?);
            }
        }
        Ok(Value::Array(out))
    }

    fn slice(&mut self, input: &Value, args: &[Value]) -> R<Value> {
        let start = self.int(&args[0], "start")?;
        let len = match args.get(1) {
            Some(v) => self.int(v, "length")?,
            None => 1,
        };
        if len < 0 {
            return Err(self.fail("length must not be negative"));
        }
        let range = |n: usize| -> (usize, usize) {
            let n = n as i64;
            let s = if start < 0 { (n + start).max(0) } else { start.min(n) };
            let e = s.saturating_add(len).min(n);
            (s as usize, e as usize)
        };
        match input {
            Value::Array(a) => {
                let (s, e) = range(a.len());
                self.ev.tick((e - s) as u64, self.pos)?;
                let mut out = Vec::with_capacity(e - s);
                for v in &a[s..e] {
                    out.push(self.ev.copy(v, self.pos)?);
                }
                Ok(Value::Array(out))
            }
            Value::String(st) => {
                self.ev.scan(st.len(), self.pos)?;
                let (s, e) = range(st.chars().count());
                self.string(st.chars().skip(s).take(e - s).collect())
            }
            Value::Null => Ok(Value::Null),
            other => Err(self.expected("an array or string", other)),
        }
    }

    fn replace(&mut self, input: &Value, args: &[Value]) -> R<Value> {
        let s = self.scalar_text(input)?;
        let from = self.scalar_text(&args[0])?;
        let to = self.scalar_text(&args[1])?;
        // Size the result before building it: `replace: 'a', <long text>` must not blow up.
        self.ev.scan(s.len().saturating_mul(2), self.pos)?;
        let count = s.matches(from.as_ref()).count();
        let len = (s.len() - count * from.len()).saturating_add(count.saturating_mul(to.len()));
        check_len(len).map_err(|m| self.fail(m))?;
        self.ev.tick(count as u64, self.pos)?;
        let out = s.replace(from.as_ref(), &to);
        self.string(out)
    }

    fn min_max(&mut self, input: &Value, other: Option<&Value>) -> R<Value> {
        let want = if self.f == Filter::Min { std::cmp::Ordering::Less } else { std::cmp::Ordering::Greater };
        if let Some(b) = other {
            let (x, y) = (self.num(input, "input")?, self.num(b, "argument")?);
            let pick_y = match (x, y) {
                (Num::I(p), Num::I(q)) => q.cmp(&p) == want,
                _ => y.f().partial_cmp(&x.f()) == Some(want),
            };
            return self.value(if pick_y { y } else { x });
        }
        let items = self.array(input)?;
        self.ev.tick(items.len() as u64, self.pos)?;
        self.ev.scan(items.iter().map(string_bytes).sum(), self.pos)?;
        let mut best: Option<&Value> = None;
        for v in items.iter().filter(|v| !v.is_null()) {
            if best.is_none_or(|b| cmp_total(v, b) == want) {
                best = Some(v);
            }
        }
        match best {
            Some(v) => self.ev.copy(v, self.pos),
            None => Ok(Value::Null),
        }
    }

    /// `date`: an RFC 3339 time (a date alone is midnight UTC, a time without offset is UTC), a
    /// Unix timestamp in seconds (a number or a numeric string) or `"now"`, formatted with a
    /// strftime format; without one, as RFC 3339. The input's offset is kept.
    fn date(&mut self, input: &Value, fmt: Option<&Value>) -> R<Value> {
        let at: DateTime<FixedOffset> = match input {
            Value::Null => return Ok(Value::Null),
            Value::Number(_) => self.timestamp(input)?,
            Value::String(s) => {
                self.ev.scan(s.len(), self.pos)?;
                let t = s.trim();
                if t == "now" {
                    self.ev.now().fixed_offset()
                } else if parse_num(t).is_some() {
                    self.timestamp(input)?
                } else if let Ok(d) = DateTime::parse_from_rfc3339(t) {
                    d
                } else if let Ok(d) = NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f") {
                    d.and_utc().fixed_offset()
                } else if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
                    d.and_time(NaiveTime::MIN).and_utc().fixed_offset()
                } else {
                    return Err(self.fail(format!(
                        "cannot read {} as a time (RFC 3339 like 2024-05-01T12:00:00Z, a Unix timestamp or 'now')",
                        describe(input)
                    )));
                }
            }
            other => return Err(self.expected("a time string, a Unix timestamp or 'now'", other)),
        };
        let Some(fmt) = fmt else {
            return self.string(at.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        };
        let fmt = match fmt {
            Value::String(f) => f,
            other => return Err(self.expected("a format string", other)),
        };
        let items = date_format(fmt).map_err(|m| self.fail(m))?;
        self.ev.tick(items.len() as u64, self.pos)?;
        let mut out = String::new();
        write!(out, "{}", at.format_with_items(items.iter()))
            .map_err(|_| self.fail(format!("cannot format with {fmt:?}")))?;
        self.string(out)
    }

    fn timestamp(&mut self, v: &Value) -> R<DateTime<FixedOffset>> {
        let at = match self.num(v, "timestamp")? {
            Num::I(secs) => DateTime::from_timestamp(secs, 0),
            Num::F(f) => {
                let secs = f.floor();
                // Whole seconds within ±2^62 fit an i64; chrono's range is far smaller anyway.
                let nanos = ((f - secs) * 1e9).round().min(999_999_999.0) as u32;
                (secs.abs() < 4.6e18).then(|| DateTime::from_timestamp(secs as i64, nanos)).flatten()
            }
        };
        at.map(|d| d.fixed_offset()).ok_or_else(|| self.fail(format!("timestamp {} is out of range", describe(v))))
    }

    /// `parse_json`: JSON text to a value; invalid JSON is an error, null stays null.
    fn parse_json(&mut self, input: &Value) -> R<Value> {
        let s = match input {
            Value::Null => return Ok(Value::Null),
            Value::String(s) => s,
            other => return Err(self.expected("a string", other)),
        };
        self.ev.scan(s.len(), self.pos)?;
        let v: Value = serde_json::from_str(s).map_err(|e| self.fail(format!("invalid JSON: {e}")))?;
        // Values nest at most as deep as a parsed expression can build, which keeps stored step
        // outputs well inside what JSON readers accept.
        if nested_deeper_than(&v, MAX_NESTING) {
            return Err(self.fail(format!("JSON nested deeper than {MAX_NESTING} levels")));
        }
        self.ev.charge_value(&v, self.pos)?;
        Ok(v)
    }
}

/// Whether arrays and objects in `v` nest more than `max` levels (a scalar is level 0).
fn nested_deeper_than(v: &Value, max: usize) -> bool {
    let mut stack = vec![(v, 0)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        if d + 1 > max {
            return true;
        }
        stack.extend(children.map(|c| (c, d + 1)));
    }
    false
}
