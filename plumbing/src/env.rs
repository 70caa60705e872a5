//! Secrets named by environment variable. Config files never hold a key inline: they name the
//! variable that does, as `env:NAME`, so a config can be committed and shared. Variables are
//! read through [`Env`] so tests pass a map instead of changing the process environment, which
//! every test thread shares.

use std::collections::HashMap;
use std::hash::BuildHasher;

/// Where `env:NAME` references are looked up.
pub trait Env {
    /// The value of variable `name`, if set.
    fn var(&self, name: &str) -> Option<String>;

    /// The value of variable `name`, trimmed (`name` is trimmed too). A blank name, an unset
    /// variable or a blank value is an error: a secret that is empty would be sent as one.
    fn read(&self, name: &str) -> Result<String, EnvError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(EnvError::NoName);
        }
        match self.var(name) {
            Some(value) if !value.trim().is_empty() => Ok(value.trim().to_string()),
            Some(_) => Err(EnvError::Empty(name.to_string())),
            None => Err(EnvError::Unset(name.to_string())),
        }
    }

    /// Resolves an `env:NAME` reference: the variable's name and its value, as [`Env::read`]
    /// reads it. Anything not starting with `env:` is taken for a secret written inline, and
    /// refused.
    fn resolve<'r>(&self, reference: &'r str) -> Result<(&'r str, String), EnvError> {
        let name = reference
            .strip_prefix("env:")
            .ok_or(EnvError::Inline)?
            .trim();
        Ok((name, self.read(name)?))
    }
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Why a secret could not be read. Messages say what is expected; the caller prefixes the
/// field or flag that named the secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// The reference does not start with `env:`.
    #[error("secrets are given by environment variable name, as \"env:NAME\", never inline")]
    Inline,
    /// The variable's name is blank.
    #[error("expected an environment variable name")]
    NoName,
    /// The variable is not set.
    #[error("environment variable {0} is not set")]
    Unset(String),
    /// The variable is set to nothing but white space.
    #[error("environment variable {0} is empty")]
    Empty(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> HashMap<String, String> {
        HashMap::from([
            ("KEY".to_string(), " gsk_secret\n".to_string()),
            ("BLANK".to_string(), " ".to_string()),
        ])
    }

    #[test]
    fn a_reference_names_a_variable_whose_value_is_read_trimmed() {
        let env = vars();
        assert_eq!(
            env.resolve("env:KEY"),
            Ok(("KEY", "gsk_secret".to_string()))
        );
        assert_eq!(
            env.resolve("env: KEY "),
            Ok(("KEY", "gsk_secret".to_string()))
        );
        assert_eq!(env.read(" KEY"), Ok("gsk_secret".to_string()));
    }

    #[test]
    fn inline_secrets_blank_names_and_missing_or_empty_variables_are_refused() {
        let env = vars();
        assert_eq!(env.resolve("gsk_secret"), Err(EnvError::Inline));
        assert_eq!(env.resolve("env: "), Err(EnvError::NoName));
        assert_eq!(env.resolve("env:NOPE"), Err(EnvError::Unset("NOPE".into())));
        assert_eq!(env.read("BLANK"), Err(EnvError::Empty("BLANK".into())));
        assert_eq!(
            EnvError::Unset("NOPE".into()).to_string(),
            "environment variable NOPE is not set"
        );
    }

    #[test]
    fn the_process_environment_is_read_through_the_same_trait() {
        let env: &dyn Env = &ProcessEnv;
        assert_eq!(
            env.var("SPILLWAY_PLUMBING_SURELY_UNSET"),
            None,
            "an unset variable reads as None"
        );
    }
}
