//! `template.yaml` agrees with the code: API Gateway routes each path to the function whose
//! part of the router serves it (`baton::api::ROUTES`), every function is built from its own
//! crate and binary, and the environment is exactly what `Config::from_env` reads.
//! (`sam validate --lint` and `cfn-lint` check the template itself, in infra/test-all.sh.)

use baton::api::{Part, ROUTES};
use baton::config::Config;
use std::collections::BTreeSet;
use std::sync::Mutex;

fn template() -> String {
    std::fs::read_to_string(baton_tests::workspace_root().join("template.yaml")).expect("read template.yaml")
}

/// A resource's lines: from `  <name>:` to the next line indented by two spaces.
fn resource<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let head = format!("  {name}:");
    let mut lines = text.lines().skip_while(|l| *l != head);
    let mut out: Vec<&str> = lines.next().into_iter().collect();
    out.extend(lines.take_while(|l| l.is_empty() || l.starts_with("   ")));
    out
}

fn value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.trim().strip_prefix(key).and_then(|rest| rest.strip_prefix(':')).map(str::trim)
}

fn resource_name(part: Part) -> String {
    let mut name: String = part.name().split('-').map(|w| w[..1].to_uppercase() + &w[1..]).collect();
    name.push_str("Function");
    name
}

#[test]
fn every_route_goes_to_the_function_that_serves_it() {
    let text = template();
    let mut in_template = BTreeSet::new();
    for part in Part::ALL {
        let lines = resource(&text, &resource_name(part));
        assert!(!lines.is_empty(), "template.yaml has no {}", resource_name(part));
        let mut method = None;
        for line in &lines {
            if let Some(m) = value(line, "Method") {
                method = Some(m.to_string());
            }
            if let Some(p) = value(line, "Path") {
                in_template.insert((part.name(), method.take().expect("Method before Path"), p.to_string()));
            }
        }
    }
    let mut in_code: BTreeSet<(&str, String, String)> =
        ROUTES.iter().map(|(m, p, part)| (part.name(), m.unwrap_or("ANY").to_string(), p.to_string())).collect();
    // Everything else: API Gateway's catch-all, served by `api`.
    in_code.insert((Part::Api.name(), "ANY".into(), "/{proxy+}".into()));
    assert_eq!(in_template, in_code);
}

#[test]
fn every_function_is_built_from_its_own_crate_with_cargo_lambda() {
    let text = template();
    for part in Part::ALL
        .iter()
        .copied()
        .map(|p| (resource_name(p), p.name()))
        .chain([("WorkerFunction".into(), "worker"), ("LongWorkerFunction".into(), "worker")])
    {
        let (resource_name, function) = part;
        let lines = resource(&text, &resource_name);
        let get =
            |key: &str| lines.iter().find_map(|l| value(l, key)).unwrap_or_else(|| panic!("{resource_name}: no {key}"));
        assert_eq!(get("BuildMethod"), "rust-cargolambda", "{resource_name}");
        assert_eq!(get("Binary"), function, "{resource_name}");
        assert_eq!(get("CodeUri"), format!("functions/{function}"), "{resource_name}");
        let manifest =
            std::fs::read_to_string(baton_tests::workspace_root().join("functions").join(function).join("Cargo.toml"))
                .unwrap_or_else(|e| panic!("functions/{function}/Cargo.toml: {e}"));
        assert!(
            manifest.contains(&format!("name = \"{function}\"")),
            "functions/{function} builds the binary `{function}`"
        );
    }
}

#[test]
fn the_environment_is_exactly_what_the_functions_read() {
    let text = template();
    // Set for every function (Globals) or for one (the workers' queue settings).
    let set: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.trim().split_once(':').map(|(k, _)| k.to_string()))
        .filter(|k| k.starts_with("BATON_") && k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    let read = Mutex::new(BTreeSet::new());
    // Answer the required ones, so the whole success path (optional variables too) runs.
    let config = Config::from_vars(|name| {
        read.lock().unwrap().insert(name.to_string());
        match name {
            "BATON_TABLE" => Some("t".into()),
            "BATON_QUEUE_URL" => Some("https://sqs.us-east-1.amazonaws.com/1/q".into()),
            "BATON_KMS_KEY_ID" => Some("alias/k".into()),
            _ => None,
        }
    });
    assert!(config.is_ok(), "{config:?}");
    let mut read = read.into_inner().unwrap();
    // Development only: never set on AWS (the template creates the resources and the key).
    for dev in ["BATON_CREATE_RESOURCES", "BATON_SECRET_KEY"] {
        assert!(read.remove(dev), "Config reads {dev}");
    }
    assert_eq!(set, read);
}

#[test]
fn the_payload_bucket_expires_each_lifetime_class_and_every_function_may_read_it() {
    let text = template();
    let bucket = resource(&text, "PayloadBucket");
    assert!(!bucket.is_empty(), "template.yaml has a PayloadBucket");
    let mut rules = Vec::new();
    let mut prefix = None;
    for line in &bucket {
        if let Some(p) = value(line, "Prefix") {
            prefix = Some(p.to_string());
        }
        if let Some(d) = value(line, "ExpirationInDays") {
            rules.push((prefix.take().expect("Prefix before ExpirationInDays"), d.parse::<u32>().unwrap()));
        }
    }
    let want: Vec<(String, u32)> = baton::adapters::s3::LIFETIME_DAYS
        .iter()
        .map(|d| (format!("{}/", baton::adapters::s3::lifetime_prefix(*d)), *d))
        .collect();
    assert_eq!(rules, want, "one rule per class, each expiring after its class's days");
    assert!(!bucket.iter().any(|l| l.contains(baton::adapters::s3::KEEP_PREFIX)), "keep/ never expires");
    for name in ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"] {
        assert!(bucket.iter().any(|l| value(l, name) == Some("true")), "PayloadBucket: {name}");
    }
    assert!(bucket.iter().any(|l| value(l, "SSEAlgorithm").is_some()), "PayloadBucket is encrypted");
    for part in
        Part::ALL.iter().copied().map(resource_name).chain(["WorkerFunction".into(), "LongWorkerFunction".into()])
    {
        let lines = resource(&text, &part).join("\n");
        assert!(lines.contains("s3:GetObject"), "{part} may read values kept in S3");
        assert!(lines.contains("${PayloadBucket.Arn}/*"), "{part}: on the bucket's objects only");
        assert!(!lines.contains("s3:*") && !lines.contains("s3:DeleteObject"), "{part}: no more than that");
    }
}
