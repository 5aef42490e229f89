//! Secrets: read from a file or an environment variable, never printed.

use authwatch_pipeline::config::SecretRef;
use std::fmt;

/// A secret value. `Debug` and `Display` print `[redacted]`; it is not `Serialize`, so it cannot
/// end up in an audit record or a log line by accident. [`Secret::expose`] is the one way out,
/// used only where the value goes on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for an `Authorization` header, a token request or a signature.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Loads the secret `what` (e.g. `respond.okta.token`) from the file or variable `source`
    /// names. A file wins over a variable; one trailing newline is dropped (files written by
    /// `echo` or mounted from Kubernetes secrets often end with one).
    pub fn load(what: &str, source: &SecretRef) -> Result<Secret, SecretError> {
        let value = if let Some(path) = &source.file {
            std::fs::read_to_string(path).map_err(|e| SecretError::File {
                what: what.to_owned(),
                path: path.display().to_string(),
                message: e.to_string(),
            })?
        } else if let Some(var) = &source.env {
            std::env::var(var).map_err(|_| SecretError::Env {
                what: what.to_owned(),
                var: var.clone(),
            })?
        } else {
            return Err(SecretError::Missing {
                what: what.to_owned(),
            });
        };
        let value = value
            .strip_suffix("\r\n")
            .or_else(|| value.strip_suffix('\n'))
            .unwrap_or(&value)
            .to_owned();
        if value.is_empty() {
            return Err(SecretError::Empty {
                what: what.to_owned(),
            });
        }
        Ok(Secret(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A secret could not be loaded. Whose fault: the operator's; not retryable. The messages name
/// where the secret was looked for, never its value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Neither a file nor a variable is configured.
    #[error("{what}: no secret configured (set {what}.file or {what}.env)")]
    Missing {
        /// The config key.
        what: String,
    },
    /// The file cannot be read.
    #[error("{what}: cannot read secret file {path}: {message}")]
    File {
        /// The config key.
        what: String,
        /// The file.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// The variable is not set (or not Unicode).
    #[error("{what}: environment variable {var} is not set")]
    Env {
        /// The config key.
        what: String,
        /// The variable.
        var: String,
    },
    /// The secret is empty.
    #[error("{what}: the secret is empty")]
    Empty {
        /// The config key.
        what: String,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn loads_from_file_and_reports_sources_without_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        let source = SecretRef {
            file: Some(path),
            env: None,
        };
        assert_eq!(Secret::load("k", &source).unwrap().expose(), "s3cr3t");
        let e = Secret::load("respond.okta.token", &SecretRef::default()).unwrap_err();
        assert!(e.to_string().contains("respond.okta.token.file"), "{e}");
        let e = Secret::load(
            "k",
            &SecretRef {
                file: None,
                env: Some("AUTHWATCH_TEST_SURELY_UNSET_VARIABLE".to_owned()),
            },
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("AUTHWATCH_TEST_SURELY_UNSET_VARIABLE")
        );
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let e = Secret::load(
            "k",
            &SecretRef {
                file: Some(dir.path().join("empty")),
                env: None,
            },
        )
        .unwrap_err();
        assert!(matches!(e, SecretError::Empty { .. }));
    }
}
