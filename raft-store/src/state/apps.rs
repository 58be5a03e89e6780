//! Apps: the namespaces jobs live in.
//!
//! Owns `Command::CreateApp` and the lookup by which other commands require
//! an app to exist. No command changes or removes an app once created.

use super::State;
use crate::command::{CommandError, Reply};
use crate::model::{validate_app, App};

impl State {
    pub(super) fn create_app(&mut self, name: &str, secret: &str, now_ms: i64) -> Result<Reply, CommandError> {
        validate_app(name, secret).map_err(CommandError::Invalid)?;
        if self.app(name).is_some() {
            return Err(CommandError::AlreadyExists(format!("app {name:?}")));
        }
        self.put_app(&App {
            name: name.to_owned(),
            secret: secret.to_owned(),
            created_at_ms: now_ms,
            retention: Default::default(),
        });
        Ok(Reply::AppCreated { name: name.to_owned() })
    }

    /// The app named `name`, or the refusal of a command that needs it.
    pub(super) fn require_app(&self, name: &str) -> Result<App, CommandError> {
        self.app(name)
            .ok_or_else(|| CommandError::NotFound(format!("app {name:?}")))
    }
}
