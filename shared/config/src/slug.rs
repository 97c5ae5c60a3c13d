//! CircleCI project slugs: `gh/org/repo`, `bitbucket/org/repo`, or opaque `circleci/<org-id>/<project-id>`.

use std::fmt;
use std::str::FromStr;

/// The VCS part of a slug. `gh` and `github` (likewise `bb` and `bitbucket`) name the same
/// provider: CircleCI's API accepts both and webhooks spell them out in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Vcs {
    GitHub,
    Bitbucket,
    /// Projects of GitHub App / GitLab / standalone orgs: `circleci/<org-id>/<project-id>`.
    CircleCi,
}

impl Vcs {
    pub fn short(self) -> &'static str {
        match self {
            Vcs::GitHub => "gh",
            Vcs::Bitbucket => "bb",
            Vcs::CircleCi => "circleci",
        }
    }

    pub fn long(self) -> &'static str {
        match self {
            Vcs::GitHub => "github",
            Vcs::Bitbucket => "bitbucket",
            Vcs::CircleCi => "circleci",
        }
    }
}

/// A parsed project slug; equality ignores the gh/github spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectSlug {
    pub vcs: Vcs,
    pub org: String,
    pub repo: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error(
        "`{0}` is not a project slug: expected `gh/<org>/<repo>`, `bb/<org>/<repo>` or `circleci/<org-id>/<project-id>`"
    )]
    Shape(String),
    #[error("unknown VCS `{0}` in project slug (expected gh, github, bb, bitbucket or circleci)")]
    Vcs(String),
    #[error("`{0}` contains characters that are not allowed in a project slug segment")]
    Characters(String),
}

impl ProjectSlug {
    /// The slug with CircleCI's short VCS spelling (`gh/acme/api`), our canonical form.
    pub fn canonical(&self) -> String {
        format!("{}/{}/{}", self.vcs.short(), self.org, self.repo)
    }

    /// The slug as webhooks spell it (`github/acme/api`).
    pub fn long(&self) -> String {
        format!("{}/{}/{}", self.vcs.long(), self.org, self.repo)
    }

    /// The three path segments, unencoded; callers percent-encode each one separately.
    pub fn segments(&self) -> [&str; 3] {
        [self.vcs.short(), &self.org, &self.repo]
    }

    /// Whether both name the same repository (used by `revision` correlation and selection).
    pub fn same_repo(&self, other: &ProjectSlug) -> bool {
        self == other
    }
}

impl fmt::Display for ProjectSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl FromStr for ProjectSlug {
    type Err = SlugError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split('/').collect();
        let [vcs, org, repo] = parts.as_slice() else {
            return Err(SlugError::Shape(text.to_owned()));
        };
        let vcs = match vcs.to_ascii_lowercase().as_str() {
            "gh" | "github" => Vcs::GitHub,
            "bb" | "bitbucket" => Vcs::Bitbucket,
            "circleci" => Vcs::CircleCi,
            _ => return Err(SlugError::Vcs((*vcs).to_owned())),
        };
        for segment in [org, repo] {
            if !valid_segment(segment) {
                return Err(SlugError::Characters((*segment).to_owned()));
            }
        }
        Ok(Self {
            vcs,
            org: (*org).to_owned(),
            repo: (*repo).to_owned(),
        })
    }
}

/// Org and repository names on GitHub/Bitbucket, and CircleCI's UUIDs, use only these.
/// Rejecting everything else keeps `..`, spaces and control characters out of URL paths.
fn valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 100
        && segment != "."
        && segment != ".."
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gh_and_github_are_the_same_project() {
        let short: ProjectSlug = "gh/acme/api".parse().unwrap();
        let long: ProjectSlug = "github/acme/api".parse().unwrap();
        assert_eq!(short, long);
        assert_eq!(long.canonical(), "gh/acme/api");
        assert_eq!(short.long(), "github/acme/api");
        let bb: ProjectSlug = "bitbucket/acme/api".parse().unwrap();
        assert_eq!(bb.canonical(), "bb/acme/api");
        assert_ne!(bb, short);
    }

    #[test]
    fn opaque_circleci_slugs_are_accepted() {
        let slug: ProjectSlug =
            "circleci/9f1c8a0e-0000-4000-8000-000000000001/4a7f0000-0000-4000-8000-0000000000aa"
                .parse()
                .unwrap();
        assert_eq!(slug.vcs, Vcs::CircleCi);
    }

    #[test]
    fn malformed_slugs_are_rejected() {
        for bad in [
            "acme/api",
            "gh/acme/api/extra",
            "gh//api",
            "svn/acme/api",
            "gh/../api",
            "gh/ac me/api",
            "gh/acme/a\u{7}pi",
            "",
        ] {
            assert!(
                bad.parse::<ProjectSlug>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
