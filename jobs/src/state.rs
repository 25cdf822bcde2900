//! Job and task states as the API and the UI report them.

use serde::{Deserialize, Serialize};

/// The state of a job (CONTRACT.md: `scheduled`, `queued`, `running`, `succeeded`, `failed`,
/// `cancelled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its due time.
    Scheduled,
    /// Accepted and waiting for a worker.
    Queued,
    /// At least one task has been launched.
    Running,
    /// Finished; its output is complete.
    Succeeded,
    /// Finished without a complete output; the job's `error` says why.
    Failed,
    /// Cancelled by a user before it finished.
    Cancelled,
}

impl JobState {
    /// Whether the job has ended and will not change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// The lowercase name used in JSON and in the UI.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Every state, in lifecycle order (for metrics and filters).
    pub const ALL: [JobState; 6] = [
        JobState::Scheduled,
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown job state `{s}`"))
    }
}

/// The state of one task of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Not running; waiting for a slot (or for the map phase, for a reduce).
    Pending,
    /// At least one attempt is running.
    Running,
    /// An attempt finished and its output is recorded.
    Succeeded,
    /// It failed `max_attempts` times.
    Failed,
}

impl TaskState {
    /// The lowercase name used in JSON and in the UI.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
        }
    }
}
