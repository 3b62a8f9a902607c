//! Who may do what. Access rules pair a repository glob with, per action
//! (pull, push, delete), the principals it is granted to: users, groups,
//! `authenticated` (anyone logged in) and `anonymous` (everyone). The
//! first rule whose glob matches the repository name decides; no matching
//! rule means no access. [`decide`] is the one function every request's
//! operation goes through. It is pure (no I/O, no clock), so a table of
//! unit tests pins it down.
//!
//! Globs are matched on the repository name as the client sends it; `*`
//! stays within one path component and `**` crosses them, so
//! `golden/*` covers `golden/base` but not `golden/team/base`. A mirrored
//! repository has several spellings (`alpine`, `library/alpine`,
//! `docker.io/library/alpine`, `?ns=`, an alias), so for it a rule also
//! matches its full name `<upstream>/<repository>`: whichever way a client
//! spells it, a rule written for the full name applies.

use globset::{GlobBuilder, GlobMatcher};
use std::collections::{BTreeMap, BTreeSet};

/// What a request does to a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
}

/// Who is asking, once their credentials have been checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    Anonymous,
    /// An htpasswd user, or the common name of a client certificate.
    User(String),
}

impl Identity {
    /// The name audit lines and logs use.
    pub fn name(&self) -> &str {
        match self {
            Identity::Anonymous => "anonymous",
            Identity::User(u) => u,
        }
    }
}

/// Whom a rule grants an action to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Everyone, logged in or not.
    Anonymous,
    /// Anyone logged in.
    Authenticated,
    User(String),
    /// `group:NAME`, a `[groups]` entry.
    Group(String),
}

impl Principal {
    pub fn parse(s: &str) -> Result<Principal, PolicyError> {
        let bad = || PolicyError::Principal(s.to_string());
        match s {
            "anonymous" => Ok(Principal::Anonymous),
            "authenticated" => Ok(Principal::Authenticated),
            _ => match s.strip_prefix("group:") {
                Some(g) if valid_user_name(g) => Ok(Principal::Group(g.to_string())),
                Some(_) => Err(bad()),
                None if valid_user_name(s) => Ok(Principal::User(s.to_string())),
                None => Err(bad()),
            },
        }
    }
}

/// A user or group name: printable, no spaces or colons (htpasswd uses
/// the colon as its separator, rules use it for `group:`), and not one of
/// the words rules reserve (`anonymous`, `authenticated`).
pub fn valid_user_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s != "anonymous"
        && s != "authenticated"
        && s.chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && c != ':')
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("access rule repositories = {pattern:?} is not a valid glob: {message}")]
    Pattern { pattern: String, message: String },
    #[error(
        "{0:?} is not a principal: expected a user name, group:NAME, authenticated or anonymous"
    )]
    Principal(String),
    #[error("access rule repositories = {pattern:?} names group:{group}, which [groups] does not define")]
    UnknownGroup { pattern: String, group: String },
    #[error("admins = {0:?}: an admin must log in (a user name, group:NAME or authenticated)")]
    AnonymousAdmin(String),
}

/// One `[[access]]` rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pattern: String,
    matcher: GlobMatcher,
    pull: Vec<Principal>,
    push: Vec<Principal>,
    delete: Vec<Principal>,
}

impl Rule {
    pub fn new(
        pattern: &str,
        pull: Vec<Principal>,
        push: Vec<Principal>,
        delete: Vec<Principal>,
    ) -> Result<Rule, PolicyError> {
        let bad = |message: String| PolicyError::Pattern {
            pattern: pattern.to_string(),
            message,
        };
        if pattern.is_empty() {
            return Err(bad("empty".into()));
        }
        let matcher = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| bad(e.kind().to_string()))?
            .compile_matcher();
        Ok(Rule {
            pattern: pattern.to_string(),
            matcher,
            pull,
            push,
            delete,
        })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    fn granted(&self, action: Action) -> &[Principal] {
        match action {
            Action::Pull => &self.pull,
            Action::Push => &self.push,
            Action::Delete => &self.delete,
        }
    }
}

/// Where a repository's content lives, as far as access is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A local namespace: pushed content.
    Local,
    /// Mirrored from a public upstream.
    Mirror,
    /// Mirrored from an upstream Wharf logs in to: never anonymous.
    PrivateMirror,
}

/// What a request asks to do, as the policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// `/v2/`: only asks who the caller is.
    Ping,
    /// `/v2/_catalog`: lists repositories (each entry is then checked for pull).
    Catalog,
    Repo {
        /// The name as the client sent it.
        name: &'a str,
        /// A mirrored repository's full name, `<upstream>/<repository>`.
        full: Option<&'a str>,
        place: Place,
        action: Action,
    },
    /// `/admin/...`: maintenance of the whole store (garbage collection,
    /// verify), for the principals in `admins`.
    Admin,
}

/// The access policy, built once from the config.
#[derive(Clone, Debug)]
pub struct Policy {
    /// No authentication configured: everything routing allows.
    open: bool,
    anonymous_pull: bool,
    rules: Vec<Rule>,
    groups: BTreeMap<String, BTreeSet<String>>,
    /// Who may run maintenance (`admins`): nobody unless named.
    admins: Vec<Principal>,
}

/// The answer for one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Not granted: 401 for an anonymous caller (log in), 403 otherwise.
    Deny,
    /// A write to a mirrored repository: refused for everybody.
    ReadOnly,
}

impl Policy {
    /// No users, certificates or rules configured: anyone may do anything
    /// routing allows (pushes only in local namespaces).
    pub fn open() -> Policy {
        Policy {
            open: true,
            anonymous_pull: true,
            rules: Vec::new(),
            groups: BTreeMap::new(),
            admins: Vec::new(),
        }
    }

    /// The same policy, with `admins` allowed maintenance ([`Op::Admin`]).
    /// Anonymous callers never are; groups must be defined.
    pub fn with_admins(mut self, admins: Vec<Principal>) -> Result<Policy, PolicyError> {
        for p in &admins {
            match p {
                Principal::Anonymous => {
                    return Err(PolicyError::AnonymousAdmin("anonymous".into()))
                }
                Principal::Group(g) if !self.groups.contains_key(g) => {
                    return Err(PolicyError::UnknownGroup {
                        pattern: "admins".into(),
                        group: g.clone(),
                    })
                }
                _ => {}
            }
        }
        self.admins = admins;
        Ok(self)
    }

    /// A policy of `rules` (the defaults when empty) over `groups`.
    /// `anonymous_pull == false` refuses anonymous callers everything.
    pub fn new(
        rules: Vec<Rule>,
        groups: BTreeMap<String, Vec<String>>,
        anonymous_pull: bool,
        local_namespaces: &[String],
    ) -> Result<Policy, PolicyError> {
        let rules = if rules.is_empty() {
            default_rules(local_namespaces)?
        } else {
            rules
        };
        for r in &rules {
            for p in Action::ALL.iter().flat_map(|a| r.granted(*a)) {
                if let Principal::Group(g) = p {
                    if !groups.contains_key(g) {
                        return Err(PolicyError::UnknownGroup {
                            pattern: r.pattern.clone(),
                            group: g.clone(),
                        });
                    }
                }
            }
        }
        Ok(Policy {
            open: false,
            anonymous_pull,
            rules,
            groups: groups
                .into_iter()
                .map(|(g, members)| (g, members.into_iter().collect()))
                .collect(),
            admins: Vec::new(),
        })
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether `principal` covers `who` for content at `place`.
    fn covers(&self, principal: &Principal, who: &Identity, place: Place) -> bool {
        match (principal, who) {
            (Principal::Anonymous, Identity::Anonymous) => place != Place::PrivateMirror,
            (Principal::Anonymous, Identity::User(_)) => true,
            (Principal::Authenticated, Identity::User(_)) => true,
            (Principal::User(u), Identity::User(n)) => u == n,
            (Principal::Group(g), Identity::User(n)) => {
                self.groups.get(g).is_some_and(|m| m.contains(n))
            }
            (_, Identity::Anonymous) => false,
        }
    }
}

/// The rules used when none are written: everyone may pull everything,
/// anyone logged in may push and delete in the local namespaces.
fn default_rules(local_namespaces: &[String]) -> Result<Vec<Rule>, PolicyError> {
    let mut rules = Vec::new();
    for ns in local_namespaces {
        rules.push(Rule::new(
            &format!("{{{ns},{ns}/**}}"),
            vec![Principal::Anonymous],
            vec![Principal::Authenticated],
            vec![Principal::Authenticated],
        )?);
    }
    rules.push(Rule::new("**", vec![Principal::Anonymous], vec![], vec![])?);
    Ok(rules)
}

/// The one access decision: may `who` perform `op`?
pub fn decide(policy: &Policy, who: &Identity, op: &Op<'_>) -> Decision {
    if let Op::Repo { place, action, .. } = op {
        if *place != Place::Local && *action != Action::Pull {
            return Decision::ReadOnly;
        }
    }
    if policy.open {
        return Decision::Allow;
    }
    if *who == Identity::Anonymous && !policy.anonymous_pull {
        return Decision::Deny;
    }
    let allowed = match op {
        Op::Admin => policy
            .admins
            .iter()
            .any(|p| policy.covers(p, who, Place::Local)),
        // Asking who you are needs a name: an anonymous ping is how clients
        // learn where to log in (401 with the token realm).
        Op::Ping => *who != Identity::Anonymous,
        Op::Catalog => match who {
            Identity::User(_) => true,
            Identity::Anonymous => policy
                .rules
                .iter()
                .any(|r| r.pull.contains(&Principal::Anonymous)),
        },
        Op::Repo {
            name,
            full,
            place,
            action,
        } => policy
            .rules
            .iter()
            .find(|r| r.matcher.is_match(name) || full.is_some_and(|f| r.matcher.is_match(f)))
            .is_some_and(|r| {
                r.granted(*action)
                    .iter()
                    .any(|p| policy.covers(p, who, *place))
            }),
    };
    if allowed {
        Decision::Allow
    } else {
        Decision::Deny
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Decision::*;
    use Place::*;

    fn p(list: &[&str]) -> Vec<Principal> {
        list.iter().map(|s| Principal::parse(s).unwrap()).collect()
    }

    fn rule(pattern: &str, pull: &[&str], push: &[&str], delete: &[&str]) -> Rule {
        Rule::new(pattern, p(pull), p(push), p(delete)).unwrap()
    }

    fn written() -> Policy {
        let groups = BTreeMap::from([(
            "ci".to_string(),
            vec!["builder1".to_string(), "builder2".to_string()],
        )]);
        Policy::new(
            vec![
                rule(
                    "golden/*",
                    &["anonymous"],
                    &["alice", "group:ci"],
                    &["alice"],
                ),
                rule("secret/**", &["authenticated"], &["alice"], &[]),
                rule("team/*/app", &["bob"], &["bob"], &["bob"]),
                rule("docker.io/**", &["anonymous"], &[], &[]),
                rule("library/*", &["anonymous"], &[], &[]),
                rule("ghcr.io/**", &["anonymous"], &[], &[]),
            ],
            groups,
            true,
            &["golden".into()],
        )
        .unwrap()
    }

    fn user(u: &str) -> Identity {
        Identity::User(u.into())
    }

    fn repo(name: &str, place: Place, action: Action) -> Op<'_> {
        Op::Repo {
            name,
            full: None,
            place,
            action,
        }
    }

    fn mirrored<'a>(name: &'a str, full: &'a str, place: Place, action: Action) -> Op<'a> {
        Op::Repo {
            name,
            full: Some(full),
            place,
            action,
        }
    }

    #[test]
    fn maintenance_is_for_admins_only() {
        let admins = written().with_admins(p(&["alice", "group:ci"])).unwrap();
        for (who, want) in [
            (user("alice"), Allow),
            (user("builder2"), Allow),
            (user("bob"), Deny),
            (Identity::Anonymous, Deny),
        ] {
            assert_eq!(decide(&admins, &who, &Op::Admin), want, "{who:?}");
        }
        // Nobody unless named; everyone when access control is off.
        assert_eq!(decide(&written(), &user("alice"), &Op::Admin), Deny);
        assert_eq!(
            decide(&Policy::open(), &Identity::Anonymous, &Op::Admin),
            Allow
        );
        let all = written().with_admins(p(&["authenticated"])).unwrap();
        assert_eq!(decide(&all, &user("bob"), &Op::Admin), Allow);
        assert_eq!(decide(&all, &Identity::Anonymous, &Op::Admin), Deny);
        assert!(written().with_admins(p(&["anonymous"])).is_err());
        assert!(written().with_admins(p(&["group:nope"])).is_err());
    }

    #[test]
    fn the_table() {
        let pol = written();
        let anon = Identity::Anonymous;
        let table: Vec<(Identity, Op, Decision)> = vec![
            // The documented example: anonymous pull, alice and group:ci push, alice deletes.
            (anon.clone(), repo("golden/base", Local, Pull), Allow),
            (user("carol"), repo("golden/base", Local, Pull), Allow),
            (anon.clone(), repo("golden/base", Local, Push), Deny),
            (user("alice"), repo("golden/base", Local, Push), Allow),
            (user("builder1"), repo("golden/base", Local, Push), Allow),
            (user("builder3"), repo("golden/base", Local, Push), Deny),
            (user("builder1"), repo("golden/base", Local, Delete), Deny),
            (user("alice"), repo("golden/base", Local, Delete), Allow),
            (anon.clone(), repo("golden/base", Local, Delete), Deny),
            // `*` stays in one component: no rule matches deeper names.
            (user("alice"), repo("golden/team/base", Local, Push), Deny),
            (anon.clone(), repo("golden/team/base", Local, Pull), Deny),
            // `**` crosses components; authenticated covers every user.
            (user("carol"), repo("secret/a/b", Local, Pull), Allow),
            (anon.clone(), repo("secret/a/b", Local, Pull), Deny),
            (user("carol"), repo("secret/a/b", Local, Delete), Deny),
            (user("bob"), repo("team/x/app", Local, Delete), Allow),
            (user("alice"), repo("team/x/app", Local, Pull), Deny),
            // No rule matches: no access, even for a known user.
            (user("alice"), repo("other/thing", Local, Pull), Deny),
            // Mirrors are read-only for everybody, whatever the rules say.
            (
                user("alice"),
                repo("library/alpine", Mirror, Push),
                ReadOnly,
            ),
            (
                anon.clone(),
                repo("library/alpine", Mirror, Delete),
                ReadOnly,
            ),
            (anon.clone(), repo("library/alpine", Mirror, Pull), Allow),
            // A private upstream is never anonymous, even under an anonymous grant.
            (
                anon.clone(),
                repo("ghcr.io/org/app", PrivateMirror, Pull),
                Deny,
            ),
            (
                user("carol"),
                repo("ghcr.io/org/app", PrivateMirror, Pull),
                Allow,
            ),
            (anon.clone(), repo("ghcr.io/org/app", Mirror, Pull), Allow),
            // Ping needs a name; the catalog is open to anonymous callers
            // only when some rule lets them pull.
            (anon.clone(), Op::Ping, Deny),
            (user("x"), Op::Ping, Allow),
            (anon.clone(), Op::Catalog, Allow),
            (user("x"), Op::Catalog, Allow),
        ];
        for (who, op, want) in table {
            assert_eq!(decide(&pol, &who, &op), want, "{who:?} {op:?}");
        }
    }

    #[test]
    fn defaults_anonymous_pull_and_authenticated_local_writes() {
        let pol = Policy::new(vec![], BTreeMap::new(), true, &["golden".into()]).unwrap();
        let anon = Identity::Anonymous;
        let table = [
            (anon.clone(), repo("golden/base", Local, Pull), Allow),
            (anon.clone(), repo("golden/base", Local, Push), Deny),
            (anon.clone(), repo("golden/base", Local, Delete), Deny),
            (user("a"), repo("golden/base", Local, Push), Allow),
            (user("a"), repo("golden/x/y/z", Local, Delete), Allow),
            (user("a"), repo("golden", Local, Push), Allow),
            (anon.clone(), repo("golden", Local, Pull), Allow),
            (anon.clone(), repo("library/alpine", Mirror, Pull), Allow),
            (anon.clone(), repo("ghcr.io/o/a", PrivateMirror, Pull), Deny),
            (user("a"), repo("ghcr.io/o/a", PrivateMirror, Pull), Allow),
            (user("a"), repo("library/alpine", Mirror, Push), ReadOnly),
            (anon.clone(), Op::Catalog, Allow),
        ];
        for (who, op, want) in table {
            assert_eq!(decide(&pol, &who, &op), want, "{who:?} {op:?}");
        }
    }

    #[test]
    fn anonymous_pull_off_refuses_anonymous_everything() {
        let pol = Policy::new(vec![], BTreeMap::new(), false, &["golden".into()]).unwrap();
        let anon = Identity::Anonymous;
        for op in [
            repo("golden/base", Local, Pull),
            repo("library/alpine", Mirror, Pull),
            Op::Catalog,
            Op::Ping,
        ] {
            assert_eq!(decide(&pol, &anon, &op), Deny, "{op:?}");
        }
        assert_eq!(
            decide(&pol, &user("a"), &repo("library/alpine", Mirror, Pull)),
            Allow
        );
        // Even a rule that names anonymous does not override the switch.
        let pol = Policy::new(
            vec![rule("**", &["anonymous"], &[], &[])],
            BTreeMap::new(),
            false,
            &[],
        )
        .unwrap();
        assert_eq!(decide(&pol, &anon, &repo("x", Local, Pull)), Deny);
    }

    #[test]
    fn open_policy_allows_what_routing_allows() {
        let pol = Policy::open();
        let anon = Identity::Anonymous;
        assert_eq!(decide(&pol, &anon, &repo("golden/x", Local, Delete)), Allow);
        assert_eq!(decide(&pol, &anon, &Op::Ping), Allow);
        assert_eq!(
            decide(&pol, &anon, &repo("library/x", Mirror, Push)),
            ReadOnly
        );
    }

    #[test]
    fn mirrored_names_match_by_their_full_name_too() {
        let pol = Policy::new(
            vec![
                rule("ghcr.io/org/secret/**", &["alice"], &[], &[]),
                rule("docker.io/**", &["authenticated"], &[], &[]),
                rule("**", &["anonymous"], &[], &[]),
            ],
            BTreeMap::new(),
            true,
            &[],
        )
        .unwrap();
        let bob = user("bob");
        let full = "ghcr.io/org/secret/x";
        // However the client spells it, the rule for the full name applies.
        for spelled in ["ghcr.io/org/secret/x", "gh/org/secret/x", "org/secret/x"] {
            assert_eq!(
                decide(&pol, &bob, &mirrored(spelled, full, Mirror, Pull)),
                Deny,
                "{spelled}"
            );
            assert_eq!(
                decide(&pol, &user("alice"), &mirrored(spelled, full, Mirror, Pull)),
                Allow
            );
        }
        let hub = "docker.io/library/alpine";
        for spelled in ["alpine", "library/alpine", "docker.io/alpine"] {
            assert_eq!(
                decide(
                    &pol,
                    &Identity::Anonymous,
                    &mirrored(spelled, hub, Mirror, Pull)
                ),
                Deny,
                "{spelled}"
            );
            assert_eq!(
                decide(&pol, &bob, &mirrored(spelled, hub, Mirror, Pull)),
                Allow
            );
        }
        // A rule on the spelling clients use matches too.
        let pol = Policy::new(
            vec![rule("library/*", &["anonymous"], &[], &[])],
            BTreeMap::new(),
            true,
            &[],
        )
        .unwrap();
        let op = mirrored("library/alpine", hub, Mirror, Pull);
        assert_eq!(decide(&pol, &Identity::Anonymous, &op), Allow);
    }

    #[test]
    fn first_matching_rule_decides() {
        let pol = Policy::new(
            vec![
                rule("golden/frozen", &["anonymous"], &[], &[]),
                rule("golden/*", &["anonymous"], &["alice"], &["alice"]),
            ],
            BTreeMap::new(),
            true,
            &[],
        )
        .unwrap();
        let alice = user("alice");
        assert_eq!(
            decide(&pol, &alice, &repo("golden/frozen", Local, Push)),
            Deny
        );
        assert_eq!(
            decide(&pol, &alice, &repo("golden/other", Local, Push)),
            Allow
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(matches!(
            Rule::new("golden/[", vec![], vec![], vec![]),
            Err(PolicyError::Pattern { .. })
        ));
        assert!(Rule::new("", vec![], vec![], vec![]).is_err());
        for bad in ["", "grup:ci:x", "group:", "two words", "a\u{7}b"] {
            assert!(Principal::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Principal::parse("group:ci").unwrap(),
            Principal::Group("ci".into())
        );
        let e = Policy::new(
            vec![rule("x/*", &["group:nope"], &[], &[])],
            BTreeMap::new(),
            true,
            &[],
        )
        .unwrap_err();
        assert!(matches!(e, PolicyError::UnknownGroup { .. }), "{e}");
    }
}
