//! What is wrong with a configuration: [`ConfigError`], and the [`Problems`] collected while
//! checking so that one run names every mistake in a file, not just the first.

/// What is wrong with the configuration: the first problem found, and every other one found in
/// the same pass (a file is checked whole, so that one run names all of its mistakes).
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
    pub more: Vec<(String, String)>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.more.is_empty() {
            return write!(f, "invalid configuration: {}: {}", self.key, self.message);
        }
        write!(
            f,
            "invalid configuration, {} problems:\n  {}: {}",
            self.more.len() + 1,
            self.key,
            self.message
        )?;
        for (k, m) in &self.more {
            write!(f, "\n  {k}: {m}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
            more: Vec::new(),
        }
    }

    /// Every problem, the first one included.
    pub fn problems(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once((self.key.as_str(), self.message.as_str()))
            .chain(self.more.iter().map(|(k, m)| (k.as_str(), m.as_str())))
    }
}

/// Problems collected while checking, so that checking goes on past the first. They are
/// reported in the order they were found.
#[derive(Debug, Default)]
pub(super) struct Problems(Vec<ConfigError>);

impl Problems {
    pub(super) fn push(&mut self, e: ConfigError) {
        self.0.extend(
            e.problems()
                .map(|(k, m)| ConfigError::new(k, m))
                .collect::<Vec<_>>(),
        );
    }

    /// The value, or `None` with its error kept.
    pub(super) fn take<T>(&mut self, r: Result<T, ConfigError>) -> Option<T> {
        r.map_err(|e| self.push(e)).ok()
    }

    pub(super) fn finish(self) -> Result<(), ConfigError> {
        let mut all = self.0.into_iter();
        match all.next() {
            None => Ok(()),
            Some(mut first) => {
                first.more = all.map(|e| (e.key, e.message)).collect();
                Err(first)
            }
        }
    }
}
