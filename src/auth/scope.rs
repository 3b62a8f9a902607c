//! Token scopes as the Docker token specification writes them:
//! `repository:NAME:ACTIONS` (actions comma-separated; `*` is all of
//! them) and `registry:catalog:*`. Names are checked with the repository
//! grammar, so `..` and odd characters never reach the policy.

use super::policy::Action;
use crate::oci::name::NameError;
use crate::oci::RepoName;

/// Most scopes one token request may ask for.
pub const MAX_SCOPES: usize = 16;

/// One requested scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Repository {
        name: RepoName,
        actions: Vec<Action>,
    },
    Catalog,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error("scope {0:?} is not TYPE:NAME:ACTIONS")]
    Malformed(String),
    #[error("scope names an invalid repository: {0}")]
    Name(#[from] NameError),
    #[error("more than {MAX_SCOPES} scopes requested")]
    TooMany,
}

impl Scope {
    /// Parses one scope. Unknown resource types and unknown actions are
    /// ignored (`Ok(None)`, or left out of the action list), as the
    /// specification asks of a token server.
    pub fn parse(s: &str) -> Result<Option<Scope>, ScopeError> {
        let malformed = || ScopeError::Malformed(s.chars().take(200).collect());
        let (kind, rest) = s.split_once(':').ok_or_else(malformed)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(malformed)?;
        // `repository(plugin)` and similar carry a resource class.
        let kind = kind.split_once('(').map_or(kind, |(k, _)| k);
        match kind {
            "repository" => {
                let name = RepoName::parse(name)?;
                let mut list = Vec::new();
                for a in actions.split(',') {
                    let wanted: Vec<Action> = match a.trim() {
                        "*" => Action::ALL.to_vec(),
                        other => Action::parse(other).into_iter().collect(),
                    };
                    for w in wanted {
                        if !list.contains(&w) {
                            list.push(w);
                        }
                    }
                }
                list.sort();
                Ok(Some(Scope::Repository {
                    name,
                    actions: list,
                }))
            }
            "registry" if name == "catalog" => Ok(Some(Scope::Catalog)),
            _ => Ok(None),
        }
    }

    /// Parses every scope of a token request (repeated `scope` parameters,
    /// each possibly several space-separated scopes).
    pub fn parse_all<'a>(
        values: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Scope>, ScopeError> {
        let mut out = Vec::new();
        for v in values {
            for s in v.split(' ').filter(|s| !s.is_empty()) {
                if out.len() >= MAX_SCOPES {
                    return Err(ScopeError::TooMany);
                }
                if let Some(scope) = Scope::parse(s)? {
                    out.push(scope);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str, actions: &[Action]) -> Scope {
        Scope::Repository {
            name: RepoName::parse(name).unwrap(),
            actions: actions.to_vec(),
        }
    }

    #[test]
    fn scopes() {
        use Action::*;
        assert_eq!(
            Scope::parse("repository:golden/app:push,pull").unwrap(),
            Some(repo("golden/app", &[Pull, Push]))
        );
        assert_eq!(
            Scope::parse("repository:a:*").unwrap(),
            Some(repo("a", &[Pull, Push, Delete]))
        );
        assert_eq!(
            Scope::parse("repository(plugin):a:pull,frobnicate").unwrap(),
            Some(repo("a", &[Pull]))
        );
        assert_eq!(
            Scope::parse("registry:catalog:*").unwrap(),
            Some(Scope::Catalog)
        );
        assert_eq!(Scope::parse("plugin:x:pull").unwrap(), None);
        assert!(matches!(
            Scope::parse("repository:../etc:pull"),
            Err(ScopeError::Name(_))
        ));
        assert!(matches!(
            Scope::parse("repository:Golden/App:pull"),
            Err(ScopeError::Name(_))
        ));
        assert!(matches!(
            Scope::parse("repository"),
            Err(ScopeError::Malformed(_))
        ));
        assert!(matches!(
            Scope::parse("repository:a%2Fb:pull"),
            Err(ScopeError::Name(_))
        ));
        let all = Scope::parse_all(["repository:a:pull repository:b:push", "registry:catalog:*"])
            .unwrap();
        assert_eq!(all.len(), 3);
        let many = vec!["repository:a:pull"; MAX_SCOPES + 1];
        assert_eq!(Scope::parse_all(many), Err(ScopeError::TooMany));
    }
}
