//! `code` (alias `function`): a JavaScript function body run by QuickJS-NG (rquickjs) in this
//! process, with `input`, `steps`, `vars`, `item` and `index` in scope; its return value,
//! as JSON, is the step's output.
//!
//! The sandbox is QuickJS's bare language: no module loader, no `fetch`, `require`,
//! `process`, `XMLHttpRequest` or timers — only `console.log`, whose lines are kept with the
//! step. Each step gets a fresh runtime with a memory limit (`memory_mb`) and an interrupt
//! handler that ends the script at its time limit (`timeout_ms`); QuickJS makes that
//! interruption uncatchable, and its regex engine polls the same handler, so neither
//! `try { while (true) {} } catch {}` nor a catastrophic regex outlives the limit. The script
//! runs on a blocking thread, never on the async runtime's workers.

use serde_json::Value;
use std::time::Duration;
#[cfg(feature = "js")]
use {
    super::{BlockContext, Outcome, StepError, invalid},
    crate::graph::Block,
    rquickjs::function::Rest,
    rquickjs::{Context, Ctx, Function, Runtime, Value as JsValue},
    serde_json::json,
    std::cell::RefCell,
    std::rc::Rc,
    std::sync::Arc,
    std::sync::atomic::{AtomicBool, Ordering},
    std::time::Instant,
};

pub const DEFAULT_MEMORY_MB: u64 = 64;
pub const MAX_MEMORY_MB: u64 = 512;
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// The largest return value, as JSON (a step output the stores still carry with the rest).
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// A script's source, at most.
pub const MAX_SOURCE_BYTES: usize = 64 * 1024;
/// `console.log` keeps at most this many lines of at most [`MAX_LOG_LINE`] characters.
pub const MAX_LOG_LINES: usize = 200;
pub const MAX_LOG_LINE: usize = 2_000;
/// Scripts running at once in this process: they are CPU-bound (more than the cores buys
/// nothing) and each may take `memory_mb`, so a Lambda worker handling a batch stays
/// within its memory. A step waits for a slot within its own deadline.
#[cfg(feature = "js")]
static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT_SCRIPTS);
pub const MAX_CONCURRENT_SCRIPTS: usize = 2;
/// The script's file name in stack traces and messages.
#[cfg(feature = "js")]
const FILE: &str = "code";
/// The wrapper puts the body on the line after this one: reported lines are the body's.
#[cfg(feature = "js")]
const HEAD: &str = "(function (input, steps, vars, item, index) {\n";

/// What a script came to, with the lines it logged.
#[cfg(feature = "js")]
#[derive(Debug, PartialEq)]
pub struct Ran {
    pub result: Result<Value, StepError>,
    pub logs: Vec<String>,
}

/// The limits of one run, read from the block's config.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub memory_bytes: usize,
    pub timeout: Duration,
}

/// Reads `code` (or `script`), `memory_mb` and `timeout_ms`: the check at save and at run.
pub fn config(c: &Value) -> Result<(String, Limits), String> {
    let src = match c.get("code").or_else(|| c.get("script")) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return Err("`code` must not be empty".into()),
        Some(_) => return Err("`code` must be a string (a JavaScript function body)".into()),
        None => return Err("code needs `code` (a JavaScript function body that returns the output)".into()),
    };
    if src.len() > MAX_SOURCE_BYTES {
        return Err(format!("`code` is {} bytes; at most {MAX_SOURCE_BYTES}", src.len()));
    }
    let num = |k: &str, default: u64, max: u64| -> Result<u64, String> {
        match c.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => match v.as_u64() {
                Some(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(format!("`{k}` must be an integer from 1 to {max}")),
            },
        }
    };
    let memory_mb = num("memory_mb", DEFAULT_MEMORY_MB, MAX_MEMORY_MB)?;
    let timeout_ms = num("timeout_ms", DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS)?;
    Ok((src, Limits { memory_bytes: (memory_mb * 1024 * 1024) as usize, timeout: Duration::from_millis(timeout_ms) }))
}

#[cfg(feature = "js")]
/// The step: the script on a blocking thread, its time limit shortened to what is left of
/// the step's deadline.
pub(super) async fn run(block: &Block, cx: &BlockContext<'_>) -> (Outcome, Vec<String>) {
    let (src, mut limits) = match config(&block.config) {
        Ok(c) => c,
        Err(m) => return (Outcome::Fail(invalid(m)), Vec::new()),
    };
    let Ok(_slot) = SLOTS.acquire().await else {
        return (Outcome::Fail(StepError::fatal("CODE_ERROR", "the script runner is shut down")), Vec::new());
    };
    limits.timeout = limits.timeout.min(cx.remaining());
    let scope = json!({
        "input": cx.data.get("input").cloned().unwrap_or(Value::Null),
        "steps": cx.data.get("steps").cloned().unwrap_or_else(|| json!({})),
        "vars": cx.data.get("vars").cloned().unwrap_or_else(|| json!({})),
        "item": cx.data.get("item").cloned().unwrap_or(Value::Null),
        "index": cx.data.get("index").cloned().unwrap_or(Value::Null),
    });
    // Dropping this future (the engine's deadline) leaves the thread to end at the
    // interrupt, which comes no later than that deadline.
    match tokio::task::spawn_blocking(move || execute(&src, &scope, &limits)).await {
        Ok(ran) => (ran.result.map_or_else(Outcome::Fail, Outcome::Output), ran.logs),
        Err(e) => (Outcome::Fail(StepError::fatal("CODE_ERROR", format!("the script's thread failed: {e}"))), vec![]),
    }
}

#[cfg(feature = "js")]
/// Runs `src` (a function body) on `scope` (`input`, `steps`, `vars`, `item`, `index`) in a
/// fresh runtime. Blocking: call it off the async runtime.
pub fn execute(src: &str, scope: &Value, limits: &Limits) -> Ran {
    let logs = Rc::new(RefCell::new(Vec::new()));
    let result = sandboxed(src, scope, limits, &logs);
    let logs = logs.take();
    Ran { result, logs }
}

#[cfg(feature = "js")]
fn sandboxed(src: &str, scope: &Value, limits: &Limits, logs: &Rc<RefCell<Vec<String>>>) -> Result<Value, StepError> {
    let setup = |e: rquickjs::Error| StepError::fatal("CODE_ERROR", format!("the sandbox could not start: {e}"));
    let rt = Runtime::new().map_err(setup)?;
    rt.set_memory_limit(limits.memory_bytes);
    let interrupted = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + limits.timeout;
    let flag = interrupted.clone();
    rt.set_interrupt_handler(Some(Box::new(move || {
        let over = Instant::now() >= deadline;
        if over {
            flag.store(true, Ordering::Relaxed);
        }
        over
    })));
    let ctx = Context::full(&rt).map_err(setup)?;
    let out = ctx.with(|ctx| -> Result<Value, StepError> {
        let fail = |e: rquickjs::Error| failure(&ctx, e, &interrupted, limits);
        install_console(&ctx, logs.clone()).map_err(fail)?;
        // Global code in strict mode (the default options), named for stack traces.
        let mut opts = rquickjs::context::EvalOptions::default();
        opts.filename = Some(FILE.into());
        let f: Function = ctx.eval_with_options(format!("{HEAD}{src}\n}})"), opts).map_err(fail)?;
        let arg = |k: &str| ctx.json_parse(scope[k].to_string());
        let args = (arg("input"), arg("steps"), arg("vars"), arg("item"), arg("index"));
        let args = (
            args.0.map_err(fail)?,
            args.1.map_err(fail)?,
            args.2.map_err(fail)?,
            args.3.map_err(fail)?,
            args.4.map_err(fail)?,
        );
        let mut ret: JsValue = f.call(args).map_err(fail)?;
        if let Some(p) = ret.as_promise() {
            // An `async` body, or one returning a promise: settle it (its jobs are ours).
            ret = p.finish::<JsValue>().map_err(fail)?;
        }
        let text = match ctx.json_stringify(ret).map_err(fail)? {
            Some(s) => s.to_string().map_err(fail)?,
            None => "null".to_string(),
        };
        if text.len() > MAX_OUTPUT_BYTES {
            return Err(StepError::fatal(
                "OUTPUT_TOO_LARGE",
                format!("the script returned {} bytes of JSON; at most {MAX_OUTPUT_BYTES}", text.len()),
            ));
        }
        serde_json::from_str(&text)
            .map_err(|e| StepError::fatal("CODE_ERROR", format!("the return value is not JSON: {e}")))
    });
    drop(ctx);
    drop(rt);
    out
}

#[cfg(feature = "js")]
/// `console.log` (and `info`, `warn`, `error`, `debug`): each call one line, strings as they
/// are, other values as JSON.
fn install_console<'js>(ctx: &Ctx<'js>, logs: Rc<RefCell<Vec<String>>>) -> rquickjs::Result<()> {
    let console = rquickjs::Object::new(ctx.clone())?;
    for level in ["log", "info", "warn", "error", "debug"] {
        let logs = logs.clone();
        let f = Function::new(ctx.clone(), move |ctx: Ctx<'js>, args: Rest<JsValue<'js>>| {
            let mut logs = logs.borrow_mut();
            if logs.len() >= MAX_LOG_LINES {
                return;
            }
            let parts: Vec<String> = args.0.into_iter().map(|v| show(&ctx, v)).collect();
            let mut line = parts.join(" ");
            if line.chars().count() > MAX_LOG_LINE {
                line = line.chars().take(MAX_LOG_LINE).collect::<String>() + "…";
            }
            logs.push(line);
            if logs.len() == MAX_LOG_LINES {
                logs.push(format!("(further lines dropped: at most {MAX_LOG_LINES} are kept)"));
            }
        })?;
        console.set(level, f)?;
    }
    ctx.globals().set("console", console)
}

#[cfg(feature = "js")]
fn show<'js>(ctx: &Ctx<'js>, v: JsValue<'js>) -> String {
    if let Some(s) = v.as_string() {
        return s.to_string().unwrap_or_default();
    }
    if let Some(e) = v.as_exception() {
        return e.message().map(|m| format!("Error: {m}")).unwrap_or_else(|| "Error".into());
    }
    match ctx.json_stringify(v) {
        Ok(Some(s)) => s.to_string().unwrap_or_default(),
        // undefined, functions, symbols, cyclic values
        _ => "undefined".into(),
    }
}

#[cfg(feature = "js")]
/// What a failed QuickJS call means for the step.
fn failure(ctx: &Ctx<'_>, e: rquickjs::Error, interrupted: &AtomicBool, limits: &Limits) -> StepError {
    if interrupted.load(Ordering::Relaxed) {
        return StepError::fatal(
            "TIMEOUT",
            format!("the script did not finish within {} ms (timeout_ms)", limits.timeout.as_millis()),
        );
    }
    let mb = limits.memory_bytes / (1024 * 1024);
    let oom = || StepError::fatal("MEMORY_LIMIT", format!("the script used more than {mb} MB of memory (memory_mb)"));
    if matches!(e, rquickjs::Error::Allocation) {
        return oom();
    }
    if !matches!(e, rquickjs::Error::Exception) {
        return StepError::fatal("CODE_ERROR", e.to_string());
    }
    let thrown = ctx.catch();
    let (message, stack) = match thrown.as_exception() {
        Some(ex) => (ex.message().unwrap_or_default(), ex.stack().unwrap_or_default()),
        None => (show(ctx, thrown.clone()), String::new()),
    };
    if message == "out of memory" {
        return oom();
    }
    let name = thrown
        .as_object()
        .and_then(|o| o.get::<_, rquickjs::Coerced<String>>("name").ok())
        .map(|n| n.0)
        .filter(|n| !n.is_empty() && thrown.as_exception().is_some());
    let head = match name {
        Some(n) => format!("{n}: {message}"),
        None => format!("Uncaught {message}"),
    };
    let msg = match line_of(&stack) {
        Some(line) => format!("{head} (line {line})"),
        None => head,
    };
    StepError::fatal("CODE_ERROR", msg)
}

#[cfg(feature = "js")]
/// The body's line the error points at: the first frame of the script's file in the stack.
fn line_of(stack: &str) -> Option<u64> {
    let at = stack.find(&format!("{FILE}:"))? + FILE.len() + 1;
    let digits: String = stack[at..].chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().ok()?;
    // Line 1 of the file is the wrapper's head.
    (n > 1).then(|| n - 1)
}

#[cfg(all(test, feature = "js"))]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { memory_bytes: 16 * 1024 * 1024, timeout: Duration::from_millis(300) }
    }

    fn scope() -> Value {
        json!({"input": {"n": 2, "items": [{"q": 2, "p": 3}, {"q": 1, "p": 4}]},
               "steps": {"calc": {"status": "completed", "output": {"total": 10}}},
               "vars": {"rate": 1.5}, "item": "x", "index": 3})
    }

    fn code_error(r: &Ran) -> &StepError {
        match &r.result {
            Err(e) => e,
            Ok(v) => panic!("expected an error, got {v}"),
        }
    }

    #[test]
    fn the_return_value_is_the_output_with_the_scope_in_reach() {
        let src = "const sum = input.items.reduce((s, i) => s + i.q * i.p, 0);
                   return {sum, total: steps.calc.output.total, rate: vars.rate, item, index, n: input.n};";
        let r = execute(src, &scope(), &limits());
        assert_eq!(r.result, Ok(json!({"sum": 10, "total": 10, "rate": 1.5, "item": "x", "index": 3, "n": 2})));
    }

    #[test]
    fn no_return_is_null_and_an_async_body_is_settled() {
        assert_eq!(execute("let x = 1;", &scope(), &limits()).result, Ok(Value::Null));
        let r = execute("return (async () => { await null; return input.n * 2 })()", &scope(), &limits());
        assert_eq!(r.result, Ok(json!(4)));
    }

    #[test]
    fn console_log_lines_are_kept_in_order() {
        let r = execute("console.log('a', 1, {b: 2}); console.error('oops'); return 0", &scope(), &limits());
        assert_eq!(r.logs, vec!["a 1 {\"b\":2}".to_string(), "oops".to_string()]);
    }

    #[test]
    fn logging_is_bounded() {
        let r = execute("for (let i = 0; i < 1000; i++) console.log('x'.repeat(5000)); return 1", &scope(), &limits());
        assert_eq!(r.result, Ok(json!(1)));
        assert_eq!(r.logs.len(), MAX_LOG_LINES + 1);
        assert!(r.logs[0].chars().count() <= MAX_LOG_LINE + 1);
        assert!(r.logs[MAX_LOG_LINES].contains("dropped"));
    }

    #[test]
    fn a_thrown_error_is_code_error_with_its_message_and_line() {
        let r = execute("const a = 1;\nconst b = 2;\nthrow new Error('bad total ' + (a + b));", &scope(), &limits());
        let e = code_error(&r);
        assert_eq!(e.code, "CODE_ERROR");
        assert!(!e.retryable);
        assert_eq!(e.message, "Error: bad total 3 (line 3)");
    }

    #[test]
    fn a_type_error_and_a_syntax_error_name_their_line() {
        let e = code_error(&execute("let x = null;\nreturn x.y;", &scope(), &limits())).clone();
        assert!(e.message.starts_with("TypeError:") && e.message.ends_with("(line 2)"), "{}", e.message);
        let e = code_error(&execute("let x = 1;\nlet = = 2;", &scope(), &limits())).clone();
        assert_eq!(e.code, "CODE_ERROR");
        assert!(e.message.starts_with("SyntaxError:") && e.message.contains("(line 2)"), "{}", e.message);
    }

    #[test]
    fn throwing_a_non_error_value_is_reported_too() {
        let e = code_error(&execute("throw 'nope'", &scope(), &limits())).clone();
        assert_eq!((e.code.as_str(), e.message.as_str()), ("CODE_ERROR", "Uncaught nope"));
    }

    #[test]
    fn an_endless_loop_inside_try_ends_at_the_time_limit() {
        let e =
            code_error(&execute("while (true) { try { while (true) {} } catch (e) {} }", &scope(), &limits())).clone();
        assert_eq!(e.code, "TIMEOUT");
        assert!(e.message.contains("300 ms"), "{}", e.message);
    }

    #[test]
    fn a_catastrophic_regex_ends_at_the_time_limit() {
        let src = "return /^(a+)+$/.test('a'.repeat(40) + 'b')";
        assert_eq!(code_error(&execute(src, &scope(), &limits())).code, "TIMEOUT");
    }

    #[test]
    fn using_more_memory_than_allowed_is_memory_limit() {
        let src = "const a = []; while (true) a.push('x'.repeat(1024) + a.length); return a.length";
        let e = code_error(&execute(src, &scope(), &limits())).clone();
        assert_eq!(e.code, "MEMORY_LIMIT");
        assert!(e.message.contains("16 MB"), "{}", e.message);
        // Caught and ignored, the limit still holds: the next allocation fails again.
        let src = "const a = []; try { while (true) a.push('y'.repeat(4096)) } catch (e) {} return a.map(x => x + 'z').length";
        assert_eq!(code_error(&execute(src, &scope(), &limits())).code, "MEMORY_LIMIT");
    }

    #[test]
    fn an_output_over_the_size_limit_is_refused() {
        let src = format!("return 'x'.repeat({})", MAX_OUTPUT_BYTES + 10);
        let lim = Limits { memory_bytes: 64 * 1024 * 1024, ..limits() };
        assert_eq!(code_error(&execute(&src, &scope(), &lim)).code, "OUTPUT_TOO_LARGE");
    }

    #[test]
    fn deep_recursion_is_an_error_not_a_crash() {
        let e = code_error(&execute("function f(n) { return f(n + 1) + 1 } return f(0)", &scope(), &limits())).clone();
        assert_eq!(e.code, "CODE_ERROR");
        assert!(e.message.contains("stack"), "{}", e.message);
    }

    #[test]
    fn there_is_no_io_in_the_sandbox() {
        let src = "return [typeof fetch, typeof require, typeof process, typeof XMLHttpRequest, typeof setTimeout, typeof std, typeof os]";
        let r = execute(src, &scope(), &limits());
        assert_eq!(r.result, Ok(json!(vec!["undefined"; 7])));
        let e = code_error(&execute("return import('fs')", &scope(), &limits())).clone();
        assert_eq!(e.code, "CODE_ERROR", "{}", e.message);
    }

    #[test]
    fn a_value_json_cannot_carry_is_an_error() {
        assert_eq!(code_error(&execute("return 10n", &scope(), &limits())).code, "CODE_ERROR");
        assert_eq!(execute("return {f() {}, n: NaN}", &scope(), &limits()).result, Ok(json!({"n": null})));
    }

    #[test]
    fn config_is_checked_with_clear_messages() {
        assert!(config(&json!({})).unwrap_err().contains("needs `code`"));
        assert!(config(&json!({"code": 3})).unwrap_err().contains("must be a string"));
        assert!(config(&json!({"code": "return 1", "memory_mb": 0})).unwrap_err().contains("memory_mb"));
        assert!(config(&json!({"code": "return 1", "timeout_ms": "5s"})).unwrap_err().contains("timeout_ms"));
        let (_, l) = config(&json!({"script": "return 1"})).unwrap();
        assert_eq!(l, Limits { memory_bytes: 64 << 20, timeout: Duration::from_secs(5) });
    }
}
