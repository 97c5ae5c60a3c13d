//! `[circleci]`: where the API is, which token to use by default, the workflow parameter name.

use serde::Deserialize;

use crate::error::Problems;
use crate::path::FieldPath;
use crate::rules;

pub const DEFAULT_API_URL: &str = "https://circleci.com/api/v2";
pub const DEFAULT_TOKEN_NAME: &str = "default";
pub const DEFAULT_WORKFLOW_PARAMETER: &str = "run-workflow";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircleCiSettings {
    /// API v2 base URL; CircleCI server installs use their own host.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Name of the token (in the tokens secret) used when a target names none.
    #[serde(default = "default_token")]
    pub token: String,
    /// `workflow = "x"` on a target sets this string pipeline parameter to "x".
    #[serde(default = "default_workflow_parameter")]
    pub workflow_parameter: String,
}

fn default_api_url() -> String {
    DEFAULT_API_URL.to_owned()
}
fn default_token() -> String {
    DEFAULT_TOKEN_NAME.to_owned()
}
fn default_workflow_parameter() -> String {
    DEFAULT_WORKFLOW_PARAMETER.to_owned()
}

impl Default for CircleCiSettings {
    fn default() -> Self {
        Self {
            api_url: default_api_url(),
            token: default_token(),
            workflow_parameter: default_workflow_parameter(),
        }
    }
}

impl CircleCiSettings {
    pub(crate) fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        rules::api_url(&self.api_url, &path.key("api_url"), problems);
        rules::secret_name(&self.token, &path.key("token"), problems);
        rules::parameter_name(
            &self.workflow_parameter,
            &path.key("workflow_parameter"),
            problems,
        );
    }
}
