//! What a task is, independent of HTTP and SQL: its fields, its statuses and the rule for
//! titles. Inputs that reach storage are already valid by type ([`Title`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A stored task, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    /// Assigned by storage; never reused after a delete.
    pub id: i64,
    /// 1 to 200 characters.
    pub title: String,
    /// Free text, absent unless set.
    pub description: Option<String>,
    /// Where the task stands.
    pub status: TaskStatus,
    /// RFC 3339, UTC, microseconds.
    pub created_at: String,
    /// RFC 3339, UTC, microseconds; equals `created_at` until the first change.
    pub updated_at: String,
}

/// Where a task stands. Written in JSON, queries and the database as `todo`, `in_progress`
/// and `done`. Read through [`FromStr`] so JSON, query and database share one error message
/// (and a JSON `null` or number is a type error, not a syntax error).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum TaskStatus {
    /// Not started (the default for new tasks).
    #[default]
    Todo,
    /// Being worked on.
    InProgress,
    /// Finished.
    Done,
}

impl TaskStatus {
    /// Every status, in workflow order.
    pub const ALL: [Self; 3] = [Self::Todo, Self::InProgress, Self::Done];

    /// The wire and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Todo => "todo",
            Self::InProgress => "in_progress",
            Self::Done => "done",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of `todo`, `in_progress`, `done`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}; expected one of todo, in_progress, done")]
pub struct UnknownStatus(pub String);

impl FromStr for TaskStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

impl TryFrom<String> for TaskStatus {
    type Error = UnknownStatus;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

/// A title that obeys the rule: 1 to [`Title::MAX_CHARS`] characters (Unicode scalar values,
/// not bytes), not only whitespace. Kept exactly as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

/// Why a title was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TitleError {
    /// Empty, or only whitespace.
    #[error("title must not be empty or blank")]
    Blank,
    /// Longer than [`Title::MAX_CHARS`].
    #[error("title must be at most {max} characters, got {chars}", max = Title::MAX_CHARS)]
    TooLong {
        /// Its length in characters.
        chars: usize,
    },
}

impl Title {
    /// The longest title, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Checks `text` against the rule.
    pub fn new(text: String) -> Result<Self, TitleError> {
        if text.trim().is_empty() {
            return Err(TitleError::Blank);
        }
        let chars = text.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(TitleError::TooLong { chars });
        }
        Ok(Self(text))
    }

    /// The title text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A task to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// Its title.
    pub title: Title,
    /// Its description, if any.
    pub description: Option<String>,
    /// Its starting status.
    pub status: TaskStatus,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskChanges {
    /// A new title.
    pub title: Option<Title>,
    /// A new description; `Some(None)` removes it.
    pub description: Option<Option<String>>,
    /// A new status.
    pub status: Option<TaskStatus>,
}

impl TaskChanges {
    /// True when nothing would change.
    pub fn is_empty(&self) -> bool {
        self.title.is_none() && self.description.is_none() && self.status.is_none()
    }

    /// Applies the changes to `task` (its timestamps are the caller's business).
    pub fn apply_to(self, task: &mut Task) {
        if let Some(title) = self.title {
            task.title = title.0;
        }
        if let Some(description) = self.description {
            task.description = description;
        }
        if let Some(status) = self.status {
            task.status = status;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_rule_counts_characters_not_bytes() {
        let cases: &[(String, Result<(), TitleError>)] = &[
            ("a".into(), Ok(())),
            ("x".repeat(200), Ok(())),
            ("é".repeat(200), Ok(())),  // 400 bytes, 200 characters
            ("🦀".repeat(200), Ok(())), // 800 bytes
            ("  padded  ".into(), Ok(())),
            ("x".repeat(201), Err(TitleError::TooLong { chars: 201 })),
            ("é".repeat(201), Err(TitleError::TooLong { chars: 201 })),
            (String::new(), Err(TitleError::Blank)),
            (" \t\n ".into(), Err(TitleError::Blank)),
        ];
        for (text, expected) in cases {
            let got = Title::new(text.clone()).map(|t| assert_eq!(t.as_str(), text));
            assert_eq!(&got, expected, "title of {} chars", text.chars().count());
        }
    }

    #[test]
    fn status_names_round_trip() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{status}\"")
            );
        }
        assert_eq!(
            "In_Progress".parse::<TaskStatus>(),
            Err(UnknownStatus("In_Progress".into()))
        );
    }
}
