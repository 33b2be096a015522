//! Pratt parser: tokens → [`Node`] tree.
//!
//! Same-precedence binary operators, path steps and filter chains are stored flat
//! ([`Kind::Chain`], [`Kind::Path`], [`Kind::Filters`]), so a long `a + b + c + …` or
//! `x | f | g | …` does not make a deep tree. Recursion happens only through parentheses,
//! brackets, prefix operators, filter arguments and right-hand sides, and is capped at
//! [`MAX_NESTING`] parser frames.

use std::ops::Range;
use std::rc::Rc;

use serde_json::Value;

use super::filters::{self, Filter};
use super::lexer::{Mode, Tok, Token, lex};
use super::{Fail, MAX_NESTING, MAX_SOURCE_LEN, R, char_pos, quote};

#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    /// Byte offset in the source the node was parsed from.
    pub(crate) pos: usize,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Lit(Value),
    /// A root name looked up in the scope (`input`, `steps`, an element field in `map`).
    Root(String),
    Array(Vec<Node>),
    Path(Box<Node>, Vec<Step>),
    Neg(Box<Node>),
    Not(Box<Node>),
    /// `first op rhs op rhs …`, all operators of the same precedence, folded left.
    Chain(Box<Node>, Vec<Link>),
    /// `cond ? then : otherwise`.
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Filters(Box<Node>, Vec<FilterCall>),
}

#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) op: BinOp,
    pub(crate) pos: usize,
    pub(crate) rhs: Node,
}

#[derive(Debug)]
pub(crate) enum Step {
    /// `.name` (also `.0`, `.create-invoice`).
    Name(String),
    /// `[expr]`.
    Index(Node),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    /// `??`: the right side when the left is null.
    Coalesce,
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    /// `x in y`: `y contains x`.
    In,
    /// `x not in y`.
    NotIn,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    /// Binding power; higher binds tighter.
    fn bp(self) -> u8 {
        match self {
            BinOp::Coalesce => 3,
            BinOp::Or => 4,
            BinOp::And => 5,
            BinOp::Eq
            | BinOp::Ne
            | BinOp::Lt
            | BinOp::Le
            | BinOp::Gt
            | BinOp::Ge
            | BinOp::Contains
            | BinOp::In
            | BinOp::NotIn => 7,
            BinOp::Add | BinOp::Sub => 8,
            BinOp::Mul | BinOp::Div | BinOp::Rem => 9,
        }
    }

    fn from_tok(t: &Tok) -> Option<BinOp> {
        Some(match t {
            Tok::Coalesce => BinOp::Coalesce,
            Tok::OrOr => BinOp::Or,
            Tok::AndAnd => BinOp::And,
            Tok::EqEq => BinOp::Eq,
            Tok::NotEq => BinOp::Ne,
            Tok::Lt => BinOp::Lt,
            Tok::Le => BinOp::Le,
            Tok::Gt => BinOp::Gt,
            Tok::Ge => BinOp::Ge,
            Tok::Plus => BinOp::Add,
            Tok::Minus => BinOp::Sub,
            Tok::Star => BinOp::Mul,
            Tok::Slash => BinOp::Div,
            Tok::Percent => BinOp::Rem,
            Tok::Ident(w) => match w.as_str() {
                "or" => BinOp::Or,
                "and" => BinOp::And,
                "contains" => BinOp::Contains,
                "in" => BinOp::In,
                _ => return None,
            },
            _ => return None,
        })
    }
}

/// `|` binds loosest: `a + b | f` is `(a + b) | f`; filter arguments stop at `|` and `,`.
const PIPE_BP: u8 = 1;
/// `c ? a : b` binds looser than everything but `|`, as in JavaScript; it nests to the right
/// (`a ? b : c ? d : e`), and its branches stop at `|` (`c ? a : b | f` filters the result).
const TERNARY_BP: u8 = 2;
/// `not x == y` is `not (x == y)`; `not a and b` is `(not a) and b`.
const NOT_BP: u8 = 6;
/// Operand of unary `-` and `!`: only a primary with its path steps.
const UNARY_BP: u8 = 9;

#[derive(Debug)]
pub(crate) struct FilterCall {
    pub(crate) filter: Filter,
    /// Offset of the filter name.
    pub(crate) pos: usize,
    pub(crate) args: Vec<Node>,
    /// For `map`/`where`/`sort` with a string-literal first argument: that expression, parsed.
    pub(crate) sub: Option<Rc<SubExpr>>,
}

/// An expression given as a string argument (`map: 'quantity * price'`).
#[derive(Debug)]
pub(crate) struct SubExpr {
    pub(crate) src: String,
    pub(crate) node: Node,
}

pub(crate) enum Segment {
    Text(Range<usize>),
    Expr(Node),
}

fn check_len(src: &str) -> R<()> {
    if src.len() > MAX_SOURCE_LEN {
        return Err(Fail::new(0, format!("longer than {MAX_SOURCE_LEN} bytes")));
    }
    Ok(())
}

/// Splits a template into literal text and `{{ … }}` expressions.
pub(crate) fn parse_template(src: &str) -> R<Vec<Segment>> {
    check_len(src)?;
    let mut segs = Vec::new();
    let mut i = 0;
    while let Some(off) = src[i..].find("{{") {
        let open = i + off;
        if off > 0 {
            segs.push(Segment::Text(i..open));
        }
        let (toks, end) = lex(src, open + 2, Mode::Template { open })?;
        if toks.len() == 1 {
            return Err(Fail::new(open, "empty '{{ }}'"));
        }
        segs.push(Segment::Expr(Parser::new(toks, 0).parse_all()?));
        i = end;
    }
    if i < src.len() {
        segs.push(Segment::Text(i..src.len()));
    }
    Ok(segs)
}

/// Parses a bare expression; `depth` is the nesting already used by an enclosing expression.
pub(crate) fn parse_expr(src: &str, depth: usize) -> R<Node> {
    check_len(src)?;
    let (toks, _) = lex(src, 0, Mode::Expr)?;
    Parser::new(toks, depth).parse_all()
}

/// Re-anchors an error inside a string-argument expression at the argument's position.
pub(crate) fn wrap_sub(src: &str, f: Fail, pos: usize) -> Fail {
    Fail::new(pos, format!("in expression {} at {}: {}", quote(src), char_pos(src, f.pos), f.msg))
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
    depth: usize,
}

impl Parser {
    fn new(toks: Vec<Token>, depth: usize) -> Self {
        Parser { toks, i: 0, depth }
    }

    fn peek(&self) -> &Token {
        &self.toks[self.i]
    }

    /// The token after the current one (the final `End` if there is none).
    fn peek_second(&self) -> &Tok {
        &self.toks[(self.i + 1).min(self.toks.len() - 1)].tok
    }

    /// Takes the current token; the final `End` is never consumed.
    fn advance(&mut self) -> Token {
        let t = self.toks[self.i].clone();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn expect(&mut self, tok: Tok, what: &str) -> R<()> {
        let t = self.advance();
        if t.tok == tok {
            Ok(())
        } else {
            Err(Fail::new(t.pos, format!("expected {what}, found {}", t.tok.describe())))
        }
    }

    fn parse_all(mut self) -> R<Node> {
        let node = self.parse_bp(0)?;
        let t = self.peek();
        if t.tok != Tok::End {
            return Err(Fail::new(t.pos, format!("unexpected {}", t.tok.describe())));
        }
        check_height(&node, 1)?;
        Ok(node)
    }

    fn parse_bp(&mut self, min: u8) -> R<Node> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(Fail::new(self.peek().pos, format!("expression nested deeper than {MAX_NESTING} levels")));
        }
        let mut lhs = self.parse_prefix()?;
        loop {
            let pos = self.peek().pos;
            match &self.peek().tok {
                Tok::Dot => {
                    self.advance();
                    let t = self.advance();
                    let Tok::Seg(name) = t.tok else {
                        return Err(Fail::new(t.pos, "expected a name after '.'"));
                    };
                    lhs = push_step(lhs, Step::Name(name));
                }
                Tok::LBracket => {
                    self.advance();
                    let idx = self.parse_bp(0)?;
                    self.expect(Tok::RBracket, "']'")?;
                    lhs = push_step(lhs, Step::Index(idx));
                }
                Tok::Pipe => {
                    if PIPE_BP <= min {
                        break;
                    }
                    self.advance();
                    let call = self.parse_filter()?;
                    lhs = push_filter(lhs, call);
                }
                Tok::Question => {
                    if TERNARY_BP <= min {
                        break;
                    }
                    self.advance();
                    let then = self.parse_bp(PIPE_BP)?;
                    self.expect(Tok::Colon, "':' (a ternary is 'cond ? a : b')")?;
                    let otherwise = self.parse_bp(PIPE_BP)?;
                    let pos = lhs.pos;
                    lhs = Node { kind: Kind::Cond(Box::new(lhs), Box::new(then), Box::new(otherwise)), pos };
                }
                Tok::Ident(w) if w == "not" && matches!(self.peek_second(), Tok::Ident(n) if n == "in") => {
                    let op = BinOp::NotIn;
                    if op.bp() <= min {
                        break;
                    }
                    self.advance();
                    self.advance();
                    let rhs = self.parse_bp(op.bp())?;
                    lhs = push_link(lhs, Link { op, pos, rhs });
                }
                t => {
                    let Some(op) = BinOp::from_tok(t) else { break };
                    if op.bp() <= min {
                        break;
                    }
                    self.advance();
                    let rhs = self.parse_bp(op.bp())?;
                    lhs = push_link(lhs, Link { op, pos, rhs });
                }
            }
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn parse_prefix(&mut self) -> R<Node> {
        let t = self.advance();
        let pos = t.pos;
        let kind = match t.tok {
            Tok::Num(n) => Kind::Lit(Value::Number(n)),
            Tok::Str(s) => Kind::Lit(Value::String(s)),
            Tok::Ident(name) => match name.as_str() {
                "true" => Kind::Lit(Value::Bool(true)),
                "false" => Kind::Lit(Value::Bool(false)),
                "null" => Kind::Lit(Value::Null),
                "not" => Kind::Not(Box::new(self.parse_bp(NOT_BP)?)),
                "and" | "or" | "contains" | "in" => {
                    return Err(Fail::new(pos, format!("unexpected '{name}'")));
                }
                _ => Kind::Root(name),
            },
            Tok::LParen => {
                let inner = self.parse_bp(0)?;
                self.expect(Tok::RParen, "')'")?;
                return Ok(inner);
            }
            Tok::LBracket => Kind::Array(self.parse_array()?),
            Tok::Minus => {
                let inner = self.parse_bp(UNARY_BP)?;
                match inner.kind {
                    Kind::Lit(Value::Number(n)) => Kind::Lit(negate_literal(&n)),
                    kind => Kind::Neg(Box::new(Node { kind, pos: inner.pos })),
                }
            }
            Tok::Bang => Kind::Not(Box::new(self.parse_bp(UNARY_BP)?)),
            Tok::End => return Err(Fail::new(pos, "expected an expression")),
            other => return Err(Fail::new(pos, format!("unexpected {}", other.describe()))),
        };
        Ok(Node { kind, pos })
    }

    /// After `[`: `]` or `expr (, expr)* ,? ]`.
    fn parse_array(&mut self) -> R<Vec<Node>> {
        let mut items = Vec::new();
        loop {
            if self.peek().tok == Tok::RBracket {
                self.advance();
                return Ok(items);
            }
            items.push(self.parse_bp(0)?);
            if self.peek().tok == Tok::Comma {
                self.advance();
                continue;
            }
            self.expect(Tok::RBracket, "',' or ']'")?;
            return Ok(items);
        }
    }

    /// After `|`: `name (: arg (, arg)*)?`.
    fn parse_filter(&mut self) -> R<FilterCall> {
        let t = self.advance();
        let Tok::Ident(name) = t.tok else {
            return Err(Fail::new(t.pos, "expected a filter name after '|'"));
        };
        let filter = Filter::from_name(&name).ok_or_else(|| Fail::new(t.pos, format!("unknown filter '{name}'")))?;
        let mut args = Vec::new();
        if self.peek().tok == Tok::Colon {
            self.advance();
            loop {
                args.push(self.parse_bp(PIPE_BP)?);
                if self.peek().tok != Tok::Comma {
                    break;
                }
                self.advance();
            }
        }
        let (min, max) = filter.arity();
        if args.len() < min || args.len() > max {
            let wanted = match (min, max) {
                (0, 0) => "no arguments".to_owned(),
                (1, 1) => "1 argument".to_owned(),
                (a, b) if a == b => format!("{a} arguments"),
                (a, b) => format!("{a} to {b} arguments"),
            };
            return Err(Fail::new(t.pos, format!("filter '{name}' takes {wanted}, got {}", args.len())));
        }
        if filter == Filter::Date
            && let Some(Node { kind: Kind::Lit(Value::String(fmt)), pos }) = args.first()
        {
            filters::check_date_format(fmt).map_err(|m| Fail::new(*pos, format!("filter 'date': {m}")))?;
        }
        let mut sub = None;
        if filter.takes_expression()
            && let Some(Node { kind: Kind::Lit(Value::String(src)), pos }) = args.first()
        {
            let node = parse_expr(src, self.depth).map_err(|f| wrap_sub(src, f, *pos))?;
            sub = Some(Rc::new(SubExpr { src: src.clone(), node }));
        }
        Ok(FilterCall { filter, pos: t.pos, args, sub })
    }
}

/// The tree may be higher than the parser recursion (`a * b + c == d and e or f` nests five
/// nodes in one frame); evaluation recursion follows the tree, so cap its height too.
fn check_height(node: &Node, depth: usize) -> R<()> {
    if depth > MAX_NESTING {
        return Err(Fail::new(node.pos, format!("expression nested deeper than {MAX_NESTING} levels")));
    }
    let d = depth + 1;
    match &node.kind {
        Kind::Lit(_) | Kind::Root(_) => Ok(()),
        Kind::Array(items) => items.iter().try_for_each(|n| check_height(n, d)),
        Kind::Path(base, steps) => {
            check_height(base, d)?;
            steps.iter().try_for_each(|s| match s {
                Step::Index(n) => check_height(n, d),
                Step::Name(_) => Ok(()),
            })
        }
        Kind::Neg(inner) | Kind::Not(inner) => check_height(inner, d),
        Kind::Cond(c, a, b) => [c, a, b].into_iter().try_for_each(|n| check_height(n, d)),
        Kind::Chain(first, links) => {
            check_height(first, d)?;
            links.iter().try_for_each(|l| check_height(&l.rhs, d))
        }
        Kind::Filters(base, calls) => {
            check_height(base, d)?;
            calls.iter().flat_map(|c| &c.args).try_for_each(|n| check_height(n, d))
        }
    }
}

fn negate_literal(n: &serde_json::Number) -> Value {
    if let Some(v) = n.as_i64().and_then(i64::checked_neg) {
        return Value::from(v);
    }
    n.as_f64().and_then(|f| serde_json::Number::from_f64(-f)).map_or(Value::Null, Value::Number)
}

fn push_step(lhs: Node, step: Step) -> Node {
    let mut lhs = lhs;
    if let Kind::Path(_, steps) = &mut lhs.kind {
        steps.push(step);
        return lhs;
    }
    let pos = lhs.pos;
    Node { kind: Kind::Path(Box::new(lhs), vec![step]), pos }
}

fn push_filter(lhs: Node, call: FilterCall) -> Node {
    let mut lhs = lhs;
    if let Kind::Filters(_, calls) = &mut lhs.kind {
        calls.push(call);
        return lhs;
    }
    let pos = lhs.pos;
    Node { kind: Kind::Filters(Box::new(lhs), vec![call]), pos }
}

fn push_link(lhs: Node, link: Link) -> Node {
    let mut lhs = lhs;
    if let Kind::Chain(_, links) = &mut lhs.kind
        && links[0].op.bp() == link.op.bp()
    {
        links.push(link);
        return lhs;
    }
    let pos = lhs.pos;
    Node { kind: Kind::Chain(Box::new(lhs), vec![link]), pos }
}
