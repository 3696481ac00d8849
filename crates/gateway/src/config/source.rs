//! Where each setting's value comes from (a command-line flag, the environment or `.env`, the
//! TOML file, or the built-in default), and so the key a problem with it is named by: the one
//! the operator has to change.

use std::str::FromStr;

use super::error::Problems;
use super::{ConfigError, Vars};

/// One setting's two names: its environment variable and its key in the TOML file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    pub env: &'static str,
    pub toml: &'static str,
}

impl Key {
    pub const fn new(env: &'static str, toml: &'static str) -> Self {
        Self { env, toml }
    }
}

/// The layer a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Flag,
    Env,
    File,
    /// Nothing set it. Its key is the TOML key, where one would write it (a default is never
    /// wrong, so the key shows only if a check involves other settings).
    Default,
}

/// A setting's value and the key it came from, so that a check on the value names that key.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sourced<T> {
    pub value: T,
    pub key: &'static str,
    pub source: Source,
}

impl<T> Sourced<T> {
    /// A problem with this value, named by the key it came from.
    pub fn problem(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.key, message)
    }

    /// A command-line flag, when given, wins over every other layer.
    pub fn or_flag(self, flag: &'static str, value: Option<T>) -> Self {
        match value {
            Some(value) => Self {
                value,
                key: flag,
                source: Source::Flag,
            },
            None => self,
        }
    }
}

/// The problem with a count or a duration that may not be 0.
pub(super) const AT_LEAST_1: &str = "must be at least 1";

/// A variable's value. Set but empty counts as unset: an uncommented `SLUICE_X=` line copied
/// from `.env.example` means "the default", not "invalid".
pub(super) fn var<'a>(vars: &'a Vars, name: &str) -> Option<&'a str> {
    vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

fn parse_num<T: FromStr>(name: &str, v: &str) -> Result<T, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| ConfigError::new(name, format!("'{v}' is not a valid number")))
}

fn truthy(name: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(
            name,
            format!("'{v}' is not on/off, true/false or 1/0"),
        )),
    }
}

/// A comma-separated variable as a list (the TOML file writes an array instead).
fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Reads settings from the variables (the file's values are handed in), keeping every problem.
pub(super) struct Reader<'a> {
    pub vars: &'a Vars,
    pub problems: Problems,
}

impl<'a> Reader<'a> {
    pub fn new(vars: &'a Vars) -> Self {
        Self {
            vars,
            problems: Problems::default(),
        }
    }

    pub fn var(&self, name: &str) -> Option<&'a str> {
        var(self.vars, name)
    }

    pub fn push(&mut self, e: ConfigError) {
        self.problems.push(e);
    }

    /// The one place the layers meet: the variable when it is set, else the file's value, else
    /// `default`; with the key of the layer that won. A variable that does not parse is a
    /// problem named by the variable, and the default stands in for it (not the file's value,
    /// which the variable was meant to override), so that no second problem follows from it.
    pub fn pick<T>(
        &mut self,
        key: Key,
        file: Option<T>,
        default: T,
        parse: impl FnOnce(&'static str, &str) -> Result<T, ConfigError>,
    ) -> Sourced<T> {
        let (value, key, source) = match (self.var(key.env), file) {
            (Some(text), _) => match parse(key.env, text) {
                Ok(v) => (v, key.env, Source::Env),
                Err(e) => {
                    self.push(e);
                    (default, key.env, Source::Env)
                }
            },
            (None, Some(v)) => (v, key.toml, Source::File),
            (None, None) => (default, key.toml, Source::Default),
        };
        Sourced { value, key, source }
    }

    pub fn num<T: FromStr>(&mut self, key: Key, file: Option<T>, default: T) -> Sourced<T> {
        self.pick(key, file, default, parse_num)
    }

    /// A number without a default (`None`: unset, decided elsewhere).
    pub fn num_opt<T: FromStr>(&mut self, key: Key, file: Option<T>) -> Sourced<Option<T>> {
        self.pick(key, file.map(Some), None, |k, v| parse_num(k, v).map(Some))
    }

    /// On/off: `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off` in a variable.
    pub fn switch(&mut self, key: Key, file: Option<bool>, default: bool) -> Sourced<bool> {
        self.pick(key, file, default, truthy)
    }

    /// Text without a default.
    pub fn text(&mut self, key: Key, file: Option<String>) -> Sourced<Option<String>> {
        self.pick(key, file.map(Some), None, |_, v| Ok(Some(v.to_owned())))
    }

    /// A list: comma-separated in a variable, an array in the file; empty when unset.
    pub fn list(&mut self, key: Key, file: Option<Vec<String>>) -> Sourced<Vec<String>> {
        self.pick(key, file, Vec::new(), |_, v| Ok(split_list(v)))
    }

    /// "must be at least 1" under the value's key when it is 0.
    pub fn at_least_1<T: PartialEq + From<u8>>(&mut self, s: &Sourced<T>) {
        if s.value == T::from(0) {
            self.push(s.problem(AT_LEAST_1));
        }
    }

    pub fn finish(self) -> Result<(), ConfigError> {
        self.problems.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::vars;
    use super::*;

    const K: Key = Key::new("SLUICE_K", "k");

    #[test]
    fn the_key_is_the_layer_that_set_the_value() {
        let set = vars(&[("SLUICE_K", "7")]);
        let mut r = Reader::new(&set);
        let s = r.num(K, Some(3u64), 1);
        assert_eq!((s.value, s.key, s.source), (7, "SLUICE_K", Source::Env));
        let empty = vars(&[("SLUICE_K", "")]);
        let mut r = Reader::new(&empty);
        let s = r.num(K, Some(3u64), 1);
        assert_eq!(
            (s.value, s.key, s.source),
            (3, "k", Source::File),
            "an empty variable is unset"
        );
        let s = r.num::<u64>(K, None, 1);
        assert_eq!((s.value, s.key, s.source), (1, "k", Source::Default));
        let s = r.num(K, Some(3u64), 1).or_flag("--k", Some(9));
        assert_eq!((s.value, s.key, s.source), (9, "--k", Source::Flag));
        let s = r.num(K, Some(3u64), 1).or_flag("--k", None);
        assert_eq!((s.value, s.key), (3, "k"));
        assert!(r.finish().is_ok());
    }

    #[test]
    fn a_bad_variable_is_named_and_the_default_stands_in() {
        let v = vars(&[("SLUICE_K", "soon")]);
        let mut r = Reader::new(&v);
        let s = r.num(K, Some(0u64), 5);
        assert_eq!((s.value, s.key), (5, "SLUICE_K"));
        r.at_least_1(&s);
        let e = r.finish().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: SLUICE_K: 'soon' is not a valid number"
        );
    }

    #[test]
    fn a_zero_is_named_by_where_it_was_written() {
        let none = Vars::new();
        let mut r = Reader::new(&none);
        let s = r.num(K, Some(0u64), 5);
        r.at_least_1(&s);
        let e = r.finish().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: k: must be at least 1"
        );
        let v = vars(&[("SLUICE_K", "0")]);
        let mut r = Reader::new(&v);
        let s = r.num(K, Some(3u64), 5);
        r.at_least_1(&s);
        assert_eq!(r.finish().unwrap_err().key, "SLUICE_K");
    }

    #[test]
    fn switches_lists_and_text() {
        let v = vars(&[("SLUICE_K", "off"), ("SLUICE_L", " a, ,b ")]);
        let mut r = Reader::new(&v);
        assert!(!r.switch(K, Some(true), true).value);
        let l = r.list(Key::new("SLUICE_L", "l"), Some(vec!["x".into()]));
        assert_eq!(
            (l.value, l.key),
            (vec!["a".to_owned(), "b".to_owned()], "SLUICE_L")
        );
        let t = r.text(Key::new("SLUICE_T", "t"), Some("f".into()));
        assert_eq!((t.value.as_deref(), t.key), (Some("f"), "t"));
        let bad = vars(&[("SLUICE_K", "maybe")]);
        let mut r = Reader::new(&bad);
        assert!(
            r.switch(K, Some(false), true).value,
            "the default stands in"
        );
        assert_eq!(
            r.finish().unwrap_err().message,
            "'maybe' is not on/off, true/false or 1/0"
        );
    }
}
