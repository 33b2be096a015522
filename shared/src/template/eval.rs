//! Tree-walking evaluator with an operation budget, a depth cap and a cap on the data it may
//! copy. Values read from the context are borrowed ([`Cow::Borrowed`]) until something needs an
//! owned copy, and every copy is charged.

use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

use serde_json::Value;

use super::filters::{self, Filter};
use super::parser::{self, BinOp, FilterCall, Kind, Link, Node, Step, SubExpr, wrap_sub};
use chrono::{DateTime, SecondsFormat, Utc};

use super::value::{
    self, Arith, as_num, check_len, cmp_total, compare, is_blank, loose_eq, num_value, string_bytes, to_text, truthy,
    type_name,
};
use super::{BYTES_PER_OPERATION, Fail, MAX_COPY_BYTES, MAX_EVAL_DEPTH, MAX_OPERATIONS, R};

pub(crate) static NULL: Value = Value::Null;

/// Parsed string-argument expressions kept per call, so `map` inside `map` parses once.
const CACHE_ENTRIES: usize = 64;

/// Where root names are looked up.
pub(crate) enum Scope<'a> {
    /// The render context: `input`, `steps`, `vars`, …
    Root(&'a Value),
    /// Inside `map`/`where`/`sort`: `this` is the element, then the element's fields, then
    /// `item` (the element), then the enclosing scope.
    Elem { el: &'a Value, parent: &'a Scope<'a> },
}

impl<'a> Scope<'a> {
    /// The value of a root name, `None` when no scope has it.
    fn lookup(&self, name: &str) -> Option<&'a Value> {
        match *self {
            Scope::Root(ctx) => ctx.get(name),
            Scope::Elem { el, parent } => {
                if name == "this" {
                    return Some(el);
                }
                if let Some(v) = el.as_object().and_then(|o| o.get(name)) {
                    return Some(v);
                }
                if name == "item" {
                    return Some(el);
                }
                parent.lookup(name)
            }
        }
    }
}

#[derive(Default)]
pub(crate) struct Evaluator {
    ops: u64,
    depth: usize,
    copied: usize,
    /// Bytes of strings and collections walked (compared, searched, parsed, converted).
    scanned: usize,
    cache: HashMap<String, Rc<SubExpr>>,
    /// `now`, read once per call so every use in one render agrees.
    now: Option<DateTime<Utc>>,
}

impl Evaluator {
    /// The time of this render/eval call.
    pub(crate) fn now(&mut self) -> DateTime<Utc> {
        *self.now.get_or_insert_with(Utc::now)
    }

    /// Charges walking `n` bytes: one operation per [`BYTES_PER_OPERATION`], counted over the
    /// whole call so that many short walks add up.
    pub(crate) fn scan(&mut self, n: usize, pos: usize) -> R<()> {
        let before = self.scanned / BYTES_PER_OPERATION;
        self.scanned = self.scanned.saturating_add(n);
        self.tick((self.scanned / BYTES_PER_OPERATION - before) as u64, pos)
    }

    /// Charges `n` operations against the budget.
    pub(crate) fn tick(&mut self, n: u64, pos: usize) -> R<()> {
        self.ops = self.ops.saturating_add(n);
        if self.ops > MAX_OPERATIONS {
            return Err(Fail::new(pos, format!("evaluation budget of {MAX_OPERATIONS} operations exceeded")));
        }
        Ok(())
    }

    /// Charges `n` bytes of produced data.
    /// Copying costs operations too (one per [`BYTES_PER_OPERATION`]), so the operation budget
    /// bounds all the work of a call.
    pub(crate) fn charge_bytes(&mut self, n: usize, pos: usize) -> R<()> {
        let before = self.copied / BYTES_PER_OPERATION;
        self.copied = self.copied.saturating_add(n);
        if self.copied > MAX_COPY_BYTES {
            return Err(Fail::new(pos, format!("evaluation produced more than {MAX_COPY_BYTES} bytes of data")));
        }
        self.tick((self.copied / BYTES_PER_OPERATION - before) as u64, pos)
    }

    /// `==`: deep equality ([`loose_eq`]) that pays one operation per pair of values compared
    /// and the bytes of equal-length strings it compares.
    pub(crate) fn eq(&mut self, a: &Value, b: &Value, pos: usize) -> R<bool> {
        self.tick(1, pos)?;
        match (a, b) {
            (Value::Array(x), Value::Array(y)) => {
                if x.len() != y.len() {
                    return Ok(false);
                }
                for (p, q) in x.iter().zip(y) {
                    if !self.eq(p, q, pos)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            (Value::Object(x), Value::Object(y)) => {
                if x.len() != y.len() {
                    return Ok(false);
                }
                for (k, v) in x {
                    self.scan(k.len(), pos)?;
                    match y.get(k) {
                        Some(w) if self.eq(v, w, pos)? => {}
                        _ => return Ok(false),
                    }
                }
                Ok(true)
            }
            (Value::String(x), Value::String(y)) => {
                if x.len() == y.len() {
                    self.scan(x.len(), pos)?;
                }
                Ok(x == y)
            }
            _ => Ok(loose_eq(a, b)),
        }
    }

    /// `hay contains needle` (and `needle in hay`): a substring, an array element (by `==`) or
    /// an object key; false for anything else.
    pub(crate) fn contains(&mut self, hay: &Value, needle: &Value, pos: usize) -> R<bool> {
        match hay {
            Value::String(s) => {
                let n = match needle {
                    Value::String(n) => Cow::Borrowed(n.as_str()),
                    Value::Number(_) | Value::Bool(_) => Cow::Owned(needle.to_string()),
                    _ => return Ok(false),
                };
                self.scan(s.len() + n.len(), pos)?;
                Ok(s.contains(n.as_ref()))
            }
            Value::Array(a) => {
                for x in a {
                    if self.eq(x, needle, pos)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Value::Object(o) => match needle.as_str() {
                Some(k) => {
                    self.scan(k.len(), pos)?;
                    Ok(o.contains_key(k))
                }
                None => Ok(false),
            },
            _ => Ok(false),
        }
    }

    /// Charges sorting `n` values whose strings hold `bytes` bytes: about n·log2(n)
    /// comparisons, each string taking part in about log2(n) of them. Charged before sorting,
    /// so an over-budget sort never starts.
    pub(crate) fn charge_sort(&mut self, n: usize, bytes: usize, pos: usize) -> R<()> {
        let log = u64::from(usize::BITS - n.leading_zeros());
        self.tick((n as u64).saturating_mul(log), pos)?;
        self.scan(bytes.saturating_mul(log as usize), pos)
    }

    /// Charges about the compact-JSON size of `v`; stops walking as soon as the allowance is
    /// spent, so the walk costs no more than the copy it guards.
    pub(crate) fn charge_value(&mut self, v: &Value, pos: usize) -> R<()> {
        let scalar = |v: &Value| match v {
            Value::String(s) => 3 + s.len(),
            _ => 8,
        };
        if !matches!(v, Value::Array(_) | Value::Object(_)) {
            return self.charge_bytes(scalar(v), pos);
        }
        let mut stack = vec![v];
        while let Some(v) = stack.pop() {
            let n = match v {
                Value::Array(a) => {
                    stack.extend(a.iter());
                    2
                }
                Value::Object(o) => {
                    let mut n = 2;
                    for (k, x) in o {
                        n += 4 + k.len();
                        stack.push(x);
                    }
                    n
                }
                other => scalar(other),
            };
            self.charge_bytes(n, pos)?;
        }
        Ok(())
    }

    /// A charged deep copy.
    pub(crate) fn copy(&mut self, v: &Value, pos: usize) -> R<Value> {
        self.charge_value(v, pos)?;
        Ok(v.clone())
    }

    /// Turns a result into an owned value, charging a copy if it was borrowed.
    pub(crate) fn own(&mut self, v: Cow<'_, Value>, pos: usize) -> R<Value> {
        match v {
            Cow::Borrowed(b) => self.copy(b, pos),
            Cow::Owned(o) => Ok(o),
        }
    }

    // Recursion runs eval → eval_kind → (one small helper) → eval, so every helper on that
    // path is kept out of line and lean; work that does not recurse lives in separate
    // functions, so its temporaries do not sit in the recursive frames.

    pub(crate) fn eval<'a>(&mut self, node: &Node, sc: &Scope<'a>) -> R<Cow<'a, Value>> {
        self.tick(1, node.pos)?;
        if self.depth >= MAX_EVAL_DEPTH {
            return Err(Fail::new(node.pos, "expression evaluation nested too deeply"));
        }
        self.depth += 1;
        let r = self.eval_kind(node, sc);
        self.depth -= 1;
        r
    }

    #[inline(never)]
    fn eval_kind<'a>(&mut self, node: &Node, sc: &Scope<'a>) -> R<Cow<'a, Value>> {
        match &node.kind {
            Kind::Lit(v) => self.copy(v, node.pos).map(Cow::Owned),
            Kind::Root(name) => Ok(match sc.lookup(name) {
                Some(v) => Cow::Borrowed(v),
                // `now` is the current time unless the context has a `now` of its own.
                None if name == "now" => Cow::Owned(self.now_value()),
                None => Cow::Borrowed(&NULL),
            }),
            Kind::Array(items) => self.eval_array(items, sc),
            Kind::Path(base, steps) => self.eval_path(base, steps, sc),
            Kind::Neg(inner) | Kind::Not(inner) => self.eval_unary(node, inner, sc),
            Kind::Chain(first, links) => self.eval_chain(first, links, sc),
            Kind::Cond(cond, then, otherwise) => self.eval_cond(cond, then, otherwise, sc),
            Kind::Filters(base, calls) => self.eval_filters(base, calls, sc),
        }
    }

    #[inline(never)]
    fn eval_array<'a>(&mut self, items: &[Node], sc: &Scope<'a>) -> R<Cow<'a, Value>> {
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let v = self.eval(it, sc)?;
            out.push(self.own(v, it.pos)?);
        }
        Ok(Cow::Owned(Value::Array(out)))
    }

    #[inline(never)]
    fn eval_unary<'a>(&mut self, node: &Node, inner: &Node, sc: &Scope<'a>) -> R<Cow<'a, Value>> {
        let v = self.eval(inner, sc)?;
        unary(node, &v).map(Cow::Owned)
    }

    #[inline(never)]
    fn now_value(&mut self) -> Value {
        Value::String(self.now().to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    #[inline(never)]
    fn eval_cond<'a>(&mut self, cond: &Node, then: &Node, otherwise: &Node, sc: &Scope<'a>) -> R<Cow<'a, Value>> {
        let c = self.eval(cond, sc)?;
        if truthy(&c) { self.eval(then, sc) } else { self.eval(otherwise, sc) }
    }

    #[inline(never)]
    fn eval_path<'a>(&mut self, base: &Node, steps: &[Step], sc: &Scope<'a>) -> R<Cow<'a, Value>> {
        let mut cur = self.eval(base, sc)?;
        for step in steps {
            cur = match step {
                Step::Name(name) => {
                    // `.size` of a string counts its characters.
                    if let (Value::String(s), "size") = (cur.as_ref(), name.as_str()) {
                        self.scan(s.len(), base.pos)?;
                    }
                    get(cur, Key::Name(name))
                }
                Step::Index(idx) => {
                    let k = self.eval(idx, sc)?;
                    if let Value::String(s) = k.as_ref() {
                        self.scan(s.len(), idx.pos)?;
                    }
                    get(cur, Key::Val(&k))
                }
            };
        }
        Ok(cur)
    }

    #[inline(never)]
    fn eval_chain<'a>(&mut self, first: &Node, links: &[Link], sc: &Scope<'a>) -> R<Cow<'a, Value>> {
        let mut acc = self.eval(first, sc)?;
        if links.first().is_some_and(|l| l.op == BinOp::Coalesce) {
            // The first operand that is not null (or the last one); later ones are not evaluated.
            for l in links {
                if !acc.is_null() {
                    break;
                }
                acc = self.eval(&l.rhs, sc)?;
            }
            return Ok(acc);
        }
        let logical = match links.first().map(|l| l.op) {
            Some(BinOp::And) => Some(false),
            Some(BinOp::Or) => Some(true),
            _ => None,
        };
        if let Some(stop_when) = logical {
            // `and` stops at the first falsy operand, `or` at the first truthy one.
            for l in links {
                if truthy(&acc) == stop_when {
                    return Ok(Cow::Owned(Value::Bool(stop_when)));
                }
                acc = self.eval(&l.rhs, sc)?;
            }
            return Ok(Cow::Owned(Value::Bool(truthy(&acc))));
        }
        for l in links {
            let rhs = self.eval(&l.rhs, sc)?;
            acc = Cow::Owned(self.binary(l.op, &acc, &rhs, l.pos)?);
        }
        Ok(acc)
    }

    #[inline(never)]
    fn eval_filters<'a>(&mut self, base: &Node, calls: &[FilterCall], sc: &Scope<'a>) -> R<Cow<'a, Value>> {
        let mut cur = self.eval(base, sc)?;
        for call in calls {
            self.tick(1, call.pos)?;
            cur = if call.filter.takes_expression() && !call.args.is_empty() {
                Cow::Owned(self.apply_scoped(call, &cur, sc)?)
            } else {
                self.apply_filter(call, cur, sc)?
            };
        }
        Ok(cur)
    }

    #[inline(never)]
    fn binary(&mut self, op: BinOp, a: &Value, b: &Value, pos: usize) -> R<Value> {
        use std::cmp::Ordering::{Equal, Greater, Less};
        if let (Value::String(x), Value::String(y)) = (a, b)
            && matches!(op, BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge)
        {
            self.scan(x.len().min(y.len()), pos)?;
        }
        let cmp = |want: &[std::cmp::Ordering]| Value::Bool(compare(a, b).is_some_and(|o| want.contains(&o)));
        let arith = match op {
            BinOp::Eq => return Ok(Value::Bool(self.eq(a, b, pos)?)),
            BinOp::Ne => return Ok(Value::Bool(!self.eq(a, b, pos)?)),
            BinOp::Lt => return Ok(cmp(&[Less])),
            BinOp::Le => return Ok(cmp(&[Less, Equal])),
            BinOp::Gt => return Ok(cmp(&[Greater])),
            BinOp::Ge => return Ok(cmp(&[Greater, Equal])),
            BinOp::Contains => return Ok(Value::Bool(self.contains(a, b, pos)?)),
            BinOp::In => return Ok(Value::Bool(self.contains(b, a, pos)?)),
            BinOp::NotIn => return Ok(Value::Bool(!self.contains(b, a, pos)?)),
            BinOp::And => return Ok(Value::Bool(truthy(a) && truthy(b))),
            BinOp::Or => return Ok(Value::Bool(truthy(a) || truthy(b))),
            // Evaluated by `eval_chain` (it short-circuits); kept here for completeness.
            BinOp::Coalesce => return self.copy(if a.is_null() { b } else { a }, pos),
            BinOp::Add if a.is_string() || b.is_string() => {
                let fail = |m| Fail::new(pos, m);
                let (x, y) = (to_text(a).map_err(fail)?, to_text(b).map_err(fail)?);
                check_len(x.len() + y.len()).map_err(fail)?;
                self.charge_bytes(x.len() + y.len(), pos)?;
                return Ok(Value::String(format!("{x}{y}")));
            }
            BinOp::Add => (Arith::Add, "add"),
            BinOp::Sub => (Arith::Sub, "subtract"),
            BinOp::Mul => (Arith::Mul, "multiply"),
            BinOp::Div => (Arith::Div, "divide"),
            BinOp::Rem => (Arith::Rem, "take the remainder of"),
        };
        let (Some(x), Some(y)) = (as_num(a), as_num(b)) else {
            return Err(Fail::new(pos, format!("cannot {} {} and {}", arith.1, type_name(a), type_name(b))));
        };
        value::arith(arith.0, x, y).and_then(num_value).map_err(|m| Fail::new(pos, m))
    }

    /// A filter with plain arguments (evaluated in the current scope).
    #[inline(never)]
    fn apply_filter<'a>(&mut self, call: &FilterCall, input: Cow<'a, Value>, sc: &Scope<'a>) -> R<Cow<'a, Value>> {
        let mut args = Vec::with_capacity(call.args.len());
        for a in &call.args {
            let v = self.eval(a, sc)?;
            args.push(self.own(v, a.pos)?);
        }
        if call.filter == Filter::Default {
            return Ok(match args.pop() {
                Some(fallback) if is_blank(&input) => Cow::Owned(fallback),
                _ => input,
            });
        }
        filters::apply(self, call.filter, &input, &args, call.pos).map(Cow::Owned)
    }

    /// `map`, `where` and `sort` with an expression argument evaluated per element.
    #[inline(never)]
    fn apply_scoped(&mut self, call: &FilterCall, input: &Value, sc: &Scope<'_>) -> R<Value> {
        let sub = match &call.sub {
            Some(s) => Rc::clone(s),
            None => {
                let v = self.eval(&call.args[0], sc)?;
                self.compile_value(call, &v)?
            }
        };
        let items: &[Value] = match input {
            Value::Array(a) => a,
            Value::Null => &[],
            other => return Err(expected_array(call, other)),
        };
        match call.filter {
            Filter::Map => self.scoped_map(call, &sub, items, sc),
            Filter::Where => self.scoped_where(call, &sub, items, sc),
            _ => self.scoped_sort(call, &sub, items, sc),
        }
    }

    #[inline(never)]
    fn scoped_map(&mut self, call: &FilterCall, sub: &SubExpr, items: &[Value], sc: &Scope<'_>) -> R<Value> {
        let mut out = Vec::with_capacity(items.len().min(1024));
        for el in items {
            self.tick(1, call.pos)?;
            let v = self.eval_in(sub, el, sc, call.args[0].pos)?;
            out.push(self.own(v, call.pos)?);
        }
        Ok(Value::Array(out))
    }

    #[inline(never)]
    fn scoped_where(&mut self, call: &FilterCall, sub: &SubExpr, items: &[Value], sc: &Scope<'_>) -> R<Value> {
        let want = match call.args.get(1) {
            Some(a) => {
                let v = self.eval(a, sc)?;
                Some(self.own(v, a.pos)?)
            }
            None => None,
        };
        let mut out = Vec::new();
        for el in items {
            self.tick(1, call.pos)?;
            let v = self.eval_in(sub, el, sc, call.args[0].pos)?;
            let keep = match &want {
                Some(w) => self.eq(&v, w, call.pos)?,
                None => truthy(&v),
            };
            if keep {
                out.push(self.copy(el, call.pos)?);
            }
        }
        Ok(Value::Array(out))
    }

    #[inline(never)]
    fn scoped_sort(&mut self, call: &FilterCall, sub: &SubExpr, items: &[Value], sc: &Scope<'_>) -> R<Value> {
        let mut keyed = Vec::with_capacity(items.len().min(1024));
        for (i, el) in items.iter().enumerate() {
            self.tick(1, call.pos)?;
            keyed.push((self.eval_in(sub, el, sc, call.args[0].pos)?, i));
        }
        let bytes = keyed.iter().map(|k| string_bytes(&k.0)).sum();
        self.charge_sort(keyed.len(), bytes, call.pos)?;
        keyed.sort_by(|a, b| cmp_total(&a.0, &b.0));
        let mut out = Vec::with_capacity(keyed.len());
        for (_, i) in &keyed {
            out.push(self.copy(&items[*i], call.pos)?);
        }
        Ok(Value::Array(out))
    }

    #[inline(never)]
    fn eval_in<'t>(&mut self, sub: &SubExpr, el: &'t Value, parent: &'t Scope<'t>, pos: usize) -> R<Cow<'t, Value>> {
        let sc = Scope::Elem { el, parent };
        self.eval(&sub.node, &sc).map_err(|f| wrap_sub(&sub.src, f, pos))
    }

    /// The expression of `map: <computed string>`.
    #[inline(never)]
    fn compile_value(&mut self, call: &FilterCall, v: &Value) -> R<Rc<SubExpr>> {
        let pos = call.args[0].pos;
        match v {
            Value::String(src) => self.compile(src, pos),
            other => Err(Fail::new(
                pos,
                format!("filter '{}' needs an expression string, got {}", call.filter.name(), type_name(other)),
            )),
        }
    }

    /// Parses an expression string computed at run time (cached for the call).
    fn compile(&mut self, src: &str, pos: usize) -> R<Rc<SubExpr>> {
        if let Some(s) = self.cache.get(src) {
            return Ok(Rc::clone(s));
        }
        self.tick(1 + src.len() as u64 / 8, pos)?;
        let node = parser::parse_expr(src, 0).map_err(|f| wrap_sub(src, f, pos))?;
        let sub = Rc::new(SubExpr { src: src.to_owned(), node });
        if self.cache.len() < CACHE_ENTRIES {
            self.cache.insert(src.to_owned(), Rc::clone(&sub));
        }
        Ok(sub)
    }
}

fn unary(node: &Node, v: &Value) -> R<Value> {
    if let Kind::Not(_) = node.kind {
        return Ok(Value::Bool(!truthy(v)));
    }
    let n = as_num(v).ok_or_else(|| Fail::new(node.pos, format!("cannot negate {}", type_name(v))))?;
    value::arith(Arith::Sub, value::Num::I(0), n).and_then(num_value).map_err(|m| Fail::new(node.pos, m))
}

fn expected_array(call: &FilterCall, got: &Value) -> Fail {
    Fail::new(call.pos, format!("filter '{}' expects an array, got {}", call.filter.name(), type_name(got)))
}

enum Key<'k> {
    /// `.name`
    Name(&'k str),
    /// `[value]`
    Val(&'k Value),
}

enum Found<'v> {
    Ref(&'v Value),
    Val(Value),
}

/// One path step. Missing keys, out-of-range indexes and steps into scalars give null.
fn get<'a>(cur: Cow<'a, Value>, key: Key<'_>) -> Cow<'a, Value> {
    match cur {
        Cow::Borrowed(v) => match lookup(v, key) {
            Found::Ref(r) => Cow::Borrowed(r),
            Found::Val(x) => Cow::Owned(x),
        },
        Cow::Owned(v) => match lookup(&v, key) {
            Found::Ref(r) => Cow::Owned(r.clone()),
            Found::Val(x) => Cow::Owned(x),
        },
    }
}

fn lookup<'v>(v: &'v Value, key: Key<'_>) -> Found<'v> {
    match (v, key) {
        (Value::Object(o), Key::Name(n)) => match o.get(n) {
            Some(x) => Found::Ref(x),
            None if n == "size" => Found::Val(Value::from(o.len())),
            None => Found::Ref(&NULL),
        },
        (Value::Object(o), Key::Val(k)) => {
            let found = match k {
                Value::String(s) => o.get(s.as_str()),
                Value::Number(n) => o.get(n.to_string().as_str()),
                _ => None,
            };
            Found::Ref(found.unwrap_or(&NULL))
        }
        (Value::Array(a), Key::Name(n)) => match n {
            "size" => Found::Val(Value::from(a.len())),
            "first" => Found::Ref(a.first().unwrap_or(&NULL)),
            "last" => Found::Ref(a.last().unwrap_or(&NULL)),
            _ => Found::Ref(n.parse::<i64>().ok().and_then(|i| index(a, i)).unwrap_or(&NULL)),
        },
        (Value::Array(a), Key::Val(k)) => Found::Ref(int_index(k).and_then(|i| index(a, i)).unwrap_or(&NULL)),
        (Value::String(s), Key::Name("size")) => Found::Val(Value::from(s.chars().count())),
        _ => Found::Ref(&NULL),
    }
}

fn int_index(k: &Value) -> Option<i64> {
    match k {
        Value::Number(n) => {
            n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64))
        }
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// `a[i]`, negative `i` counting from the end.
fn index(a: &[Value], i: i64) -> Option<&Value> {
    let len = i64::try_from(a.len()).ok()?;
    let j = if i < 0 { i.checked_add(len)? } else { i };
    usize::try_from(j).ok().and_then(|j| a.get(j))
}
