//! Where the server and the key come from: a flag, else the environment (`BATON_URL`,
//! `BATON_API_KEY`), else the file `baton login` writes, else (the URL only) the local
//! server's default address.

use crate::error::{CliError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where `baton-local` listens unless told otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:3000";

/// The config file: `$XDG_CONFIG_HOME/baton/config.json`, else `~/.config/baton/config.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// What a command runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The server's root, without `/api/v1` and without a trailing slash.
    pub url: String,
    pub api_key: Option<String>,
}

/// The config file's path; `env` looks a variable up (a parameter, so tests need not touch
/// the process environment). `None` when neither variable gives an absolute directory.
pub fn path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    // The XDG spec ignores relative values; so do we.
    let absolute = |v: Option<String>| v.filter(|v| Path::new(v).is_absolute()).map(PathBuf::from);
    let dir = absolute(env("XDG_CONFIG_HOME")).or_else(|| absolute(env("HOME")).map(|h| h.join(".config")))?;
    Some(dir.join("baton").join("config.json"))
}

/// The file's settings; a missing file is no settings, an unreadable or malformed one an error
/// (silently ignoring it would send requests to the wrong server).
pub fn load(path: &Path) -> Result<Option<Config>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CliError::usage(format!("{}: not a Baton config file ({e})", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::io(path.display(), e)),
    }
}

/// Writes the file readable by its owner only: it holds an API key.
pub fn save(path: &Path, config: &Config) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| CliError::io(dir.display(), e))?;
    }
    let io = |e| CliError::io(path.display(), e);
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io)?;
    // `mode` applies only when the file is created; an older file may be wider open.
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    let mut body = serde_json::to_vec_pretty(config).map_err(|e| CliError::Protocol(e.to_string()))?;
    body.push(b'\n');
    f.write_all(&body).map_err(io)
}

/// Flag over environment over file; the URL falls back to [`DEFAULT_URL`].
pub fn resolve(
    flag_url: Option<&str>,
    flag_key: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<&Config>,
) -> Settings {
    let pick = |flag: Option<&str>, var: &str, from_file: Option<&String>| {
        flag.map(str::to_string).or_else(|| env(var)).or_else(|| from_file.cloned()).filter(|v| !v.is_empty())
    };
    let url = pick(flag_url, "BATON_URL", file.and_then(|f| f.url.as_ref())).unwrap_or_else(|| DEFAULT_URL.into());
    let api_key = pick(flag_key, "BATON_API_KEY", file.and_then(|f| f.api_key.as_ref()));
    Settings { url: normalize_url(&url), api_key }
}

/// Accepts the server's root or its API base: `http://h:3000`, `http://h:3000/`, `http://h:3000/api/v1`.
pub fn normalize_url(url: &str) -> String {
    let u = url.trim().trim_end_matches('/');
    u.strip_suffix("/api/v1").unwrap_or(u).trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    fn file(url: &str, key: &str) -> Config {
        Config { url: Some(url.into()), api_key: Some(key.into()) }
    }

    #[test]
    fn a_flag_wins_over_the_environment_and_the_file() {
        let env = env_of(&[("BATON_URL", "http://env:1"), ("BATON_API_KEY", "env-key")]);
        let s = resolve(Some("http://flag:1"), Some("flag-key"), &env, Some(&file("http://file:1", "file-key")));
        assert_eq!(s, Settings { url: "http://flag:1".into(), api_key: Some("flag-key".into()) });
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let env = env_of(&[("BATON_URL", "http://env:1"), ("BATON_API_KEY", "env-key")]);
        let s = resolve(None, None, &env, Some(&file("http://file:1", "file-key")));
        assert_eq!(s, Settings { url: "http://env:1".into(), api_key: Some("env-key".into()) });
    }

    #[test]
    fn the_file_is_used_when_nothing_else_is_set_and_each_value_is_resolved_alone() {
        let env = env_of(&[("BATON_API_KEY", "env-key")]);
        let s = resolve(None, None, &env, Some(&file("http://file:1", "file-key")));
        assert_eq!(s, Settings { url: "http://file:1".into(), api_key: Some("env-key".into()) });
    }

    #[test]
    fn without_any_setting_the_url_is_the_local_default_and_there_is_no_key() {
        let s = resolve(None, None, &env_of(&[]), None);
        assert_eq!(s, Settings { url: DEFAULT_URL.into(), api_key: None });
    }

    #[test]
    fn an_empty_variable_counts_as_unset() {
        let env = env_of(&[("BATON_API_KEY", "")]);
        let s = resolve(None, None, &env, Some(&file("http://file:1", "file-key")));
        assert_eq!(s.api_key, None, "an empty BATON_API_KEY is taken as set, so it hides the file");
        let s = resolve(None, None, &env_of(&[("BATON_URL", "")]), None);
        assert_eq!(s.url, DEFAULT_URL);
    }

    #[test]
    fn the_api_base_and_trailing_slashes_are_stripped_from_the_url() {
        for u in ["http://h:3000", "http://h:3000/", "http://h:3000/api/v1", "http://h:3000/api/v1/", " http://h:3000 "]
        {
            assert_eq!(normalize_url(u), "http://h:3000", "{u}");
        }
        assert_eq!(normalize_url("https://h/prefix/api/v1"), "https://h/prefix");
    }

    #[test]
    fn the_config_path_prefers_xdg_config_home_then_home() {
        let p = path(&env_of(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/home/u")]));
        assert_eq!(p, Some(PathBuf::from("/x/baton/config.json")));
        let p = path(&env_of(&[("XDG_CONFIG_HOME", "relative"), ("HOME", "/home/u")]));
        assert_eq!(p, Some(PathBuf::from("/home/u/.config/baton/config.json")));
        assert_eq!(path(&env_of(&[])), None);
    }

    #[test]
    fn save_writes_an_owner_only_file_that_load_reads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("baton").join("config.json");
        assert_eq!(load(&p).unwrap(), None);
        // A file left wider open by someone else is narrowed on the next save.
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "{}").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = file("http://h:1", "k");
        save(&p, &c).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load(&p).unwrap(), Some(c));
    }

    #[test]
    fn a_malformed_config_file_is_an_error_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, "url = x").unwrap();
        let e = load(&p).unwrap_err();
        assert!(e.to_string().contains("not a Baton config file"), "{e}");
    }
}
