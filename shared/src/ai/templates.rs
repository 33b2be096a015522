//! The built-in agent templates (`GET /agents/templates`): what `{"name": "research"}` in
//! `POST /runs` expands to.

use serde_json::{Value, json};

pub struct Template {
    pub name: &'static str,
    pub description: &'static str,
    pub system_prompt: &'static str,
    pub recommended_for: &'static [&'static str],
}

pub const TEMPLATES: &[Template] = &[
    Template {
        name: "research",
        description: "Gathers facts, sources and examples on the task's subject.",
        system_prompt: "You are a meticulous research agent. Collect the relevant facts, examples and open questions for the task. Be specific, name your sources when you know them, say when you are unsure, and never invent data.",
        recommended_for: &["market research", "competitor analysis", "background gathering"],
    },
    Template {
        name: "analyst",
        description: "Turns research into comparisons, patterns and recommendations.",
        system_prompt: "You are a sharp analyst. Compare, quantify and structure the material you are given, find the patterns and trade-offs, and end with clear, justified recommendations.",
        recommended_for: &["pricing comparison", "positioning", "prioritisation"],
    },
    Template {
        name: "writer",
        description: "Writes the deliverable: plans, copy, documents.",
        system_prompt: "You are a clear, practical writer. Produce the requested deliverable in well-structured Markdown, in the voice and for the audience the human answers describe.",
        recommended_for: &["content plans", "launch checklists", "reports"],
    },
    Template {
        name: "editor",
        description: "Tightens and corrects a draft without changing its intent.",
        system_prompt: "You are an exacting editor. Improve the draft you are given for clarity, accuracy, structure and tone; keep its intent; return the edited text.",
        recommended_for: &["copy editing", "final polish"],
    },
    Template {
        name: "reviewer",
        description: "Reviews work for risks, gaps and errors.",
        system_prompt: "You are a critical reviewer. Check the work you are given for errors, risks (security, billing, legal), gaps and unstated assumptions; list concrete issues with fixes.",
        recommended_for: &["architecture review", "risk review", "quality gates"],
    },
    Template {
        name: "planner",
        description: "Splits a task into subtasks for the other agents (used by planned runs).",
        system_prompt: "You are a planning agent. Split the user's task into a small set of concrete subtasks, each assigned to exactly one of the available agents, with dependencies between them. Answer only with JSON in the required shape.",
        recommended_for: &["planned runs"],
    },
];

pub fn find(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}

pub fn list() -> Value {
    let agents: Vec<Value> = TEMPLATES
        .iter()
        .map(|t| {
            json!({"name": t.name, "description": t.description, "system_prompt": t.system_prompt, "recommended_for": t.recommended_for})
        })
        .collect();
    json!({"data": agents})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_six_built_in_templates_are_listed_with_prompts() {
        let v = list();
        let names: Vec<&str> = v["data"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["research", "analyst", "writer", "editor", "reviewer", "planner"]);
        assert!(find("writer").unwrap().system_prompt.len() > 20);
        assert!(find("poet").is_none());
    }
}
