//! Project slugs: `gh|github|bb|bitbucket/org/repo` and `circleci/<org-id>/<project-id>`.

use std::fmt;

/// The VCS family of a slug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `gh` / `github`.
    GitHub,
    /// `bb` / `bitbucket`.
    Bitbucket,
    /// `circleci` (GitHub App, GitLab, standalone): org and project are opaque ids.
    CircleCi,
}

/// A parsed project slug. Equality treats `gh` ≡ `github` and `bb` ≡ `bitbucket`, and
/// org/repo case-insensitively for VCS slugs (as GitHub and Bitbucket do).
#[derive(Debug, Clone)]
pub struct Slug {
    /// Provider family.
    pub provider: Provider,
    /// Organization (or org id for `circleci/`).
    pub org: String,
    /// Repository (or project id for `circleci/`).
    pub repo: String,
}

impl Slug {
    /// Parses `provider/org/repo` (already percent-decoded).
    pub fn parse(slug: &str) -> Option<Slug> {
        let mut parts = slug.split('/');
        let (provider, org, repo) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || org.is_empty() || repo.is_empty() {
            return None;
        }
        Self::from_parts(provider, org, repo)
    }

    /// Builds a slug from its three segments.
    pub fn from_parts(provider: &str, org: &str, repo: &str) -> Option<Slug> {
        let provider = match provider {
            "gh" | "github" => Provider::GitHub,
            "bb" | "bitbucket" => Provider::Bitbucket,
            "circleci" => Provider::CircleCi,
            _ => return None,
        };
        Some(Slug {
            provider,
            org: org.to_owned(),
            repo: repo.to_owned(),
        })
    }

    /// The short form CircleCI's API answers with (`gh/org/repo`).
    pub fn short(&self) -> String {
        format!("{}/{}/{}", self.short_provider(), self.org, self.repo)
    }

    /// The long form webhooks use (`github/org/repo`).
    pub fn long(&self) -> String {
        let provider = match self.provider {
            Provider::GitHub => "github",
            Provider::Bitbucket => "bitbucket",
            Provider::CircleCi => "circleci",
        };
        format!("{provider}/{}/{}", self.org, self.repo)
    }

    fn short_provider(&self) -> &'static str {
        match self.provider {
            Provider::GitHub => "gh",
            Provider::Bitbucket => "bb",
            Provider::CircleCi => "circleci",
        }
    }

    /// `gh/org` — the organization slug.
    pub fn organization_slug(&self) -> String {
        format!("{}/{}", self.short_provider(), self.org)
    }

    /// Repository URL for `vcs` blocks.
    pub fn repository_url(&self) -> String {
        match self.provider {
            Provider::GitHub => format!("https://github.com/{}/{}", self.org, self.repo),
            Provider::Bitbucket => format!("https://bitbucket.org/{}/{}", self.org, self.repo),
            Provider::CircleCi => format!("https://github.com/{}/{}", self.org, self.repo),
        }
    }

    /// `vcs_info.provider` of `GET /project`.
    pub fn provider_display(&self) -> &'static str {
        match self.provider {
            Provider::GitHub => "GitHub",
            Provider::Bitbucket => "Bitbucket",
            Provider::CircleCi => "CircleCI",
        }
    }
}

impl PartialEq for Slug {
    fn eq(&self, other: &Self) -> bool {
        if self.provider != other.provider {
            return false;
        }
        match self.provider {
            Provider::CircleCi => self.org == other.org && self.repo == other.repo,
            Provider::GitHub | Provider::Bitbucket => {
                self.org.eq_ignore_ascii_case(&other.org)
                    && self.repo.eq_ignore_ascii_case(&other.repo)
            }
        }
    }
}

impl Eq for Slug {}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_case_are_the_same_project() {
        let a = Slug::parse("gh/Acme/API").unwrap();
        let b = Slug::parse("github/acme/api").unwrap();
        assert_eq!(a, b);
        assert_eq!(b.long(), "github/acme/api");
        assert_eq!(
            Slug::parse("bb/a/b").unwrap(),
            Slug::parse("bitbucket/a/b").unwrap()
        );
        assert_ne!(
            Slug::parse("circleci/X/y").unwrap(),
            Slug::parse("circleci/x/y").unwrap()
        );
        assert!(Slug::parse("gitlab/a/b").is_none());
        assert!(Slug::parse("gh/a").is_none());
        assert!(Slug::parse("gh/a/b/c").is_none());
    }
}
