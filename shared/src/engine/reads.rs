//! What one step message reads: the run item, the step's own item and the few other step
//! items its work can depend on, not the whole run. So a step costs the same at the start
//! of a 200-step chain as at its end, whatever the earlier steps output.
//!
//! For a step of block `B` (computed once per workflow version, see [`Reads::of_graph`]):
//! - `B`'s predecessors: one of them named the step lazily (`next` on its item, see
//!   `snapshot::LAZY`), and their `ev_seq` orders this commit's events after theirs;
//! - every join block reachable from `B`: the plan reads their counters when `B`'s commit
//!   resolves an edge into them, directly or through skipped blocks;
//! - the steps `B`'s templates name (`steps.<id>` in its config, in the `when` of its
//!   outgoing edges, and for a split in those of its body's): [`step_refs`]. A template that
//!   reads `steps` in a way that cannot be seen in its text (`steps[vars.name]`, `steps` as a
//!   whole) makes the block read every step, as before.
//!
//! A split's item step `body[i]` also reads its collection (`body`) and the split, whose
//! output holds the item.

use crate::model::Graph;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};

/// Which step items a step of one block reads besides its own and the run's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Read the whole run (a template reads `steps` in a way [`step_refs`] cannot follow).
    pub all: bool,
    /// Blocks whose steps' `next`/`skip` may name this one, and whose `ev_seq` precede it.
    pub preds: BTreeSet<String>,
    /// Join blocks this block's commit may count on.
    pub joins: BTreeSet<String>,
    /// Blocks the templates name.
    pub refs: BTreeSet<String>,
}

impl Needs {
    /// Every block id to read, own excluded.
    pub fn blocks(&self, own: &str) -> BTreeSet<&str> {
        self.preds.iter().chain(&self.joins).chain(&self.refs).map(String::as_str).filter(|b| *b != own).collect()
    }
}

/// The [`Needs`] of every block of one workflow version.
#[derive(Debug, Default)]
pub struct Reads {
    by_block: HashMap<String, Needs>,
}

impl Reads {
    pub fn of_graph(graph: &Graph) -> Reads {
        let by_block = graph.blocks.iter().map(|b| (b.id.clone(), needs_of(graph, &b.id))).collect();
        Reads { by_block }
    }

    /// What a step of `block` reads; an unknown block reads everything.
    pub fn of(&self, block: &str) -> Needs {
        self.by_block.get(block).cloned().unwrap_or_else(|| Needs { all: true, ..Needs::default() })
    }
}

fn needs_of(graph: &Graph, id: &str) -> Needs {
    let mut refs = StepRefs::default();
    if let Some(b) = graph.block(id) {
        refs.scan_value(&b.config);
    }
    let mut outgoing_of = vec![id.to_string()];
    if graph.block(id).is_some_and(|b| b.kind == "split") {
        // A split's commit also resolves its body's edges when it has no items.
        outgoing_of.extend(graph.outgoing(id).filter(|e| !e.is_error()).map(|e| e.to.clone()));
    }
    for b in &outgoing_of {
        for e in graph.outgoing(b) {
            if let Some(w) = &e.when {
                refs.scan(w);
            }
        }
    }
    let preds = graph.incoming(id).map(|e| e.from.clone()).collect();
    // Joins reachable from the block, itself excluded (its own item is read anyway).
    let mut joins = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut frontier: Vec<String> = graph.outgoing(id).map(|e| e.to.clone()).collect();
    while let Some(b) = frontier.pop() {
        if !seen.insert(b.clone()) {
            continue;
        }
        if graph.incoming(&b).count() > 1 && b != id {
            joins.insert(b.clone());
        }
        frontier.extend(graph.outgoing(&b).map(|e| e.to.clone()));
    }
    Needs { all: refs.all, preds, joins, refs: refs.names }
}

/// The step ids a text can read through a root `steps` name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StepRefs {
    pub all: bool,
    pub names: BTreeSet<String>,
}

/// Where text reads `steps`: `steps.<id>`, `steps?.<id>`, `steps["<id>"]`, `steps['<id>']`.
/// Lexical, so it serves every language a block holds (templates, `when` expressions,
/// scripts): a `steps` that is not a member of something else (`input.steps`) and not
/// followed by one of those forms reads every step. An id with hyphens also counts as each
/// of its hyphen-cut prefixes (`steps.a-1` is a path in a template, a subtraction in
/// JavaScript).
pub fn step_refs(text: &str) -> StepRefs {
    let mut r = StepRefs::default();
    r.scan(text);
    r
}

impl StepRefs {
    fn scan_value(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.scan(s),
            Value::Array(a) => a.iter().for_each(|x| self.scan_value(x)),
            Value::Object(o) => o.values().for_each(|x| self.scan_value(x)),
            _ => {}
        }
    }

    fn scan(&mut self, text: &str) {
        let b = text.as_bytes();
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$';
        let mut from = 0;
        while let Some(at) = text[from..].find("steps").map(|i| i + from) {
            from = at + 5;
            if (at > 0 && ident(b[at - 1])) || b.get(at + 5).copied().is_some_and(ident) {
                continue;
            }
            let before = text[..at].trim_end();
            if before.ends_with('.') {
                // A member (`input.steps`), not the root name.
                continue;
            }
            let rest = text[at + 5..].trim_start();
            let rest = rest.strip_prefix('?').unwrap_or(rest);
            if let Some(after) = rest.strip_prefix('.') {
                let after = after.trim_start();
                let name: String = after
                    .bytes()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'$'))
                    .map(char::from)
                    .collect();
                let name = name.trim_end_matches('-');
                if name.is_empty() {
                    self.all = true;
                    continue;
                }
                let mut cut = name;
                self.names.insert(cut.to_string());
                while let Some(i) = cut.rfind('-') {
                    cut = &cut[..i];
                    if !cut.is_empty() {
                        self.names.insert(cut.to_string());
                    }
                }
            } else if let Some(after) = rest.strip_prefix('[') {
                let after = after.trim_start();
                let quoted = after.chars().next().filter(|q| matches!(q, '"' | '\''));
                match quoted.and_then(|q| after[1..].find(q).map(|end| (&after[1..1 + end], &after[2 + end..]))) {
                    Some((name, tail)) if tail.trim_start().starts_with(']') && !name.contains('\\') => {
                        self.names.insert(name.to_string());
                    }
                    _ => self.all = true,
                }
            } else {
                self.all = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(text: &str) -> (bool, Vec<String>) {
        let r = step_refs(text);
        (r.all, r.names.into_iter().collect())
    }

    #[test]
    fn template_paths_name_their_steps() {
        assert_eq!(
            names("{{steps.create-invoice.output.number}}"),
            (false, vec!["create".into(), "create-invoice".into()])
        );
        assert_eq!(
            names("No. {{ steps . fetch . output }} and {{steps.b}}"),
            (false, vec!["b".into(), "fetch".into()])
        );
        assert_eq!(
            names(r#"steps["with space"].output + steps['q'].x"#),
            (false, vec!["q".into(), "with space".into()])
        );
        assert_eq!(names("return steps?.load?.output.total"), (false, vec!["load".into()]));
        assert_eq!(names("input.amount > 10"), (false, vec![]));
    }

    #[test]
    fn steps_read_in_ways_text_cannot_follow_read_everything() {
        assert!(names("{{steps}}").0);
        assert!(names("{{steps[vars.which].output}}").0);
        assert!(names("Object.keys(steps).length").0);
        assert!(names("steps[\"a\\\"b\"]").0, "escapes inside the name");
    }

    #[test]
    fn other_words_and_members_are_not_the_steps_root() {
        assert_eq!(names("{{input.steps}} {{mysteps.x}} {{steps_done}} {{input . steps . a}}"), (false, vec![]));
    }

    #[test]
    fn a_block_reads_its_predecessors_reachable_joins_and_named_steps() {
        let graph: Graph = serde_json::from_value(json!({
            "blocks": [
                {"id": "a", "type": "transform", "config": {"value": "{{input.x}}"}},
                {"id": "b", "type": "transform", "config": {"value": "{{steps.a.output}}"}},
                {"id": "c", "type": "transform", "config": {}},
                {"id": "d", "type": "transform", "config": {}},
                {"id": "j", "type": "transform", "config": {"value": "{{steps}}"}}
            ],
            "edges": [
                {"from": "a", "to": "b", "when": "steps.a.output > 1"},
                {"from": "a", "to": "c"},
                {"from": "b", "to": "d"},
                {"from": "d", "to": "j"},
                {"from": "c", "to": "j"}
            ]
        }))
        .unwrap();
        let reads = Reads::of_graph(&graph);
        let a = reads.of("a");
        assert!(!a.all && a.preds.is_empty());
        assert_eq!(a.joins, BTreeSet::from(["j".to_string()]));
        assert_eq!(a.refs, BTreeSet::from(["a".to_string()]));
        assert_eq!(a.blocks("a"), BTreeSet::from(["j"]), "its own item is read anyway");
        let d = reads.of("d");
        assert_eq!(d.preds, BTreeSet::from(["b".to_string()]));
        assert_eq!(d.joins, BTreeSet::from(["j".to_string()]));
        assert!(reads.of("j").all);
        assert!(reads.of("nope").all);
    }
}
