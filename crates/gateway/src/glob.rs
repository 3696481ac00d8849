//! Model-name globs (`*` any run of characters, `?` one character), for provider routing and
//! team model permissions, compiled once at start into a `globset` matcher: a request matches
//! its model against a compiled set, with no allocation.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

pub fn validate(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("must not be empty".into());
    }
    if pattern.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    compile_one(pattern).map(drop)
}

pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// `pattern` as a globset glob in which only `*` and `?` are special: a model name may hold
/// brackets, braces or backslashes, which globset would otherwise read as syntax.
fn compile_one(pattern: &str) -> Result<globset::Glob, String> {
    let mut escaped = String::with_capacity(pattern.len() + 4);
    for c in pattern.chars() {
        if matches!(c, '[' | ']' | '{' | '}' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    GlobBuilder::new(&escaped)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .map_err(|e| e.to_string())
}

/// A list of model patterns, compiled.
#[derive(Debug, Clone)]
pub struct Patterns {
    raw: Vec<String>,
    set: GlobSet,
}

impl Patterns {
    /// Compiles `patterns`; each was checked by [`validate`] when the config was read.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            b.add(compile_one(p)?);
        }
        Ok(Self {
            raw: patterns.to_vec(),
            set: b.build().map_err(|e| e.to_string())?,
        })
    }

    /// Compiles `patterns`, which the config has validated; a list that does not compile
    /// (impossible after validation) matches nothing rather than everything.
    pub fn compiled(patterns: &[String]) -> Self {
        Self::new(patterns).unwrap_or_else(|_| Self {
            raw: Vec::new(),
            set: GlobSet::empty(),
        })
    }

    /// True when any pattern matches `name`.
    pub fn matches(&self, name: &str) -> bool {
        self.set.is_match(name)
    }

    /// The patterns as written.
    pub fn as_written(&self) -> &[String] {
        &self.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        Patterns::new(&[pattern.to_owned()]).unwrap().matches(name)
    }

    #[test]
    fn globs() {
        assert!(matches("*", "gpt-4o"));
        assert!(matches("claude-*", "claude-3-5-sonnet"));
        assert!(!matches("claude-*", "gpt-4o"));
        assert!(matches("llama-*-instruct", "llama-3-8b-instruct"));
        assert!(matches("qwen2.5-7b", "qwen2.5-7b"));
        assert!(!matches("qwen2.5-7b", "qwen2.5-7b-x"));
        assert!(matches("gpt-4?", "gpt-4o"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
        // Slashes and colons are ordinary characters (OpenRouter and Ollama names).
        assert!(matches("*", "meta-llama/llama-3-8b"));
        assert!(matches("openai/*", "openai/gpt-4o"));
        assert!(matches("qwen2.5:*", "qwen2.5:7b"));
        // Only `*` and `?` are special.
        assert!(matches("m[1]", "m[1]"));
        assert!(!matches("m[1]", "m1"));
        assert!(matches("{a,b}", "{a,b}"));
        assert!(!matches("{a,b}", "a"));
        assert!(matches("a\\b", "a\\b"));
    }

    #[test]
    fn any_of_several() {
        let p = Patterns::new(&["llama-*".into(), "qwen2.5-7b".into()]).unwrap();
        assert!(p.matches("llama-3"));
        assert!(p.matches("qwen2.5-7b"));
        assert!(!p.matches("gpt-4o"));
        assert!(!Patterns::new(&[]).unwrap().matches("x"));
    }
}
