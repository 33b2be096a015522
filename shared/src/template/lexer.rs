//! Tokenizer for template expressions.
//!
//! Context-sensitive in one place only: the token after a `.` is a path *segment*, which may
//! start with a digit (`items.0`) and contain inner hyphens (`steps.create-invoice`).

use serde_json::Number;

use super::{Fail, R};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Num(Number),
    Str(String),
    /// A root name, keyword or filter name: `[A-Za-z_][A-Za-z0-9_]*`.
    Ident(String),
    /// A path segment after `.`: `[A-Za-z0-9_][A-Za-z0-9_-]*`, trailing hyphens excluded.
    Seg(String),
    Dot,
    LBracket,
    RBracket,
    LParen,
    RParen,
    Comma,
    Colon,
    Pipe,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    EqEq,
    NotEq,
    Gt,
    Ge,
    Lt,
    Le,
    AndAnd,
    OrOr,
    Bang,
    Question,
    /// `??`
    Coalesce,
    /// `}}` in a template, end of input in a bare expression.
    End,
}

impl Tok {
    /// How the token is named in an error message.
    pub(crate) fn describe(&self) -> String {
        let sym = match self {
            Tok::Num(n) => return format!("number {n}"),
            Tok::Str(_) => return "string".to_owned(),
            Tok::Ident(s) | Tok::Seg(s) => return format!("'{s}'"),
            Tok::End => return "end of expression".to_owned(),
            Tok::Dot => ".",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::Pipe => "|",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
            Tok::EqEq => "==",
            Tok::NotEq => "!=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            Tok::Bang => "!",
            Tok::Question => "?",
            Tok::Coalesce => "??",
        };
        format!("'{sym}'")
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    /// Byte offset in the source.
    pub(crate) pos: usize,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// Inside `{{ … }}`: stop at `}}`. `open` is the offset of the `{{`.
    Template { open: usize },
    /// A bare expression: stop at the end of input.
    Expr,
}

/// Tokenizes `src` from byte offset `start`. The returned tokens always end with [`Tok::End`];
/// the offset is where scanning stopped (just after `}}` in template mode).
pub(crate) fn lex(src: &str, start: usize, mode: Mode) -> R<(Vec<Token>, usize)> {
    let b = src.as_bytes();
    let n = b.len();
    let mut i = start;
    let mut out: Vec<Token> = Vec::new();
    loop {
        while i < n && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        if i >= n {
            return match mode {
                Mode::Expr => {
                    out.push(Token { tok: Tok::End, pos: n });
                    Ok((out, n))
                }
                Mode::Template { open } => Err(Fail::new(open, "'{{' is not closed by '}}'")),
            };
        }
        let c = b[i];
        if matches!(mode, Mode::Template { .. }) && c == b'}' && b.get(i + 1) == Some(&b'}') {
            out.push(Token { tok: Tok::End, pos: i });
            return Ok((out, i + 2));
        }
        let start = i;
        if matches!(out.last(), Some(Token { tok: Tok::Dot, .. })) {
            if !(c.is_ascii_alphanumeric() || c == b'_') {
                return Err(Fail::new(i, "expected a name after '.'"));
            }
            while i < n && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'-') {
                i += 1;
            }
            while b[i - 1] == b'-' {
                i -= 1;
            }
            out.push(Token { tok: Tok::Seg(src[start..i].to_owned()), pos: start });
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < n && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Token { tok: Tok::Ident(src[start..i].to_owned()), pos: start });
            continue;
        }
        if c.is_ascii_digit() {
            let (num, end) = lex_number(src, i)?;
            out.push(Token { tok: Tok::Num(num), pos: start });
            i = end;
            continue;
        }
        if c == b'\'' || c == b'"' {
            let (s, end) = lex_string(src, i, c as char)?;
            out.push(Token { tok: Tok::Str(s), pos: start });
            i = end;
            continue;
        }
        let next_is = |x: u8| b.get(i + 1) == Some(&x);
        let (tok, len) = match c {
            b'.' => (Tok::Dot, 1),
            b'[' => (Tok::LBracket, 1),
            b']' => (Tok::RBracket, 1),
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b',' => (Tok::Comma, 1),
            b':' => (Tok::Colon, 1),
            b'+' => (Tok::Plus, 1),
            b'-' => (Tok::Minus, 1),
            b'*' => (Tok::Star, 1),
            b'/' => (Tok::Slash, 1),
            b'%' => (Tok::Percent, 1),
            b'|' if next_is(b'|') => (Tok::OrOr, 2),
            b'|' => (Tok::Pipe, 1),
            b'&' if next_is(b'&') => (Tok::AndAnd, 2),
            b'&' => return Err(Fail::new(i, "unexpected '&' (use '&&' or 'and')")),
            b'=' if next_is(b'=') => (Tok::EqEq, 2),
            b'=' => return Err(Fail::new(i, "unexpected '=' (use '==' to compare)")),
            b'!' if next_is(b'=') => (Tok::NotEq, 2),
            b'!' => (Tok::Bang, 1),
            b'>' if next_is(b'=') => (Tok::Ge, 2),
            b'>' => (Tok::Gt, 1),
            b'<' if next_is(b'=') => (Tok::Le, 2),
            b'<' => (Tok::Lt, 1),
            b'?' if next_is(b'?') => (Tok::Coalesce, 2),
            b'?' => (Tok::Question, 1),
            _ => {
                let ch = src.get(i..).and_then(|s| s.chars().next()).unwrap_or('?');
                return Err(Fail::new(i, format!("unexpected character '{ch}'")));
            }
        };
        out.push(Token { tok, pos: start });
        i += len;
    }
}

/// `digits ('.' digits)? ([eE] [+-]? digits)?`; integers that fit an i64 stay integers.
fn lex_number(src: &str, start: usize) -> R<(Number, usize)> {
    let b = src.as_bytes();
    let n = b.len();
    let digit_at = |j: usize| j < n && b[j].is_ascii_digit();
    let mut i = start;
    while digit_at(i) {
        i += 1;
    }
    let mut float = false;
    if i < n && b[i] == b'.' && digit_at(i + 1) {
        float = true;
        i += 1;
        while digit_at(i) {
            i += 1;
        }
    }
    if i < n && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < n && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if digit_at(j) {
            float = true;
            i = j;
            while digit_at(i) {
                i += 1;
            }
        }
    }
    let text = &src[start..i];
    if !float && let Ok(v) = text.parse::<i64>() {
        return Ok((Number::from(v), i));
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(|num| (num, i))
        .ok_or_else(|| Fail::new(start, format!("number {text} is out of range")))
}

/// A quoted string starting at `start` (the quote). Escapes: `\\ \' \" \n \t \r \/`.
fn lex_string(src: &str, start: usize, quote: char) -> R<(String, usize)> {
    let body = &src[start + 1..];
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((off, c)) = chars.next() {
        if c == quote {
            return Ok((out, start + 1 + off + 1));
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some((_, 'n')) => out.push('\n'),
            Some((_, 't')) => out.push('\t'),
            Some((_, 'r')) => out.push('\r'),
            Some((_, e @ ('\\' | '\'' | '"' | '/'))) => out.push(e),
            Some((_, other)) => {
                return Err(Fail::new(start + 1 + off, format!("unknown escape '\\{other}'")));
            }
            None => break,
        }
    }
    Err(Fail::new(start, "string is not closed"))
}
