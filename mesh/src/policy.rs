//! Policies as a sidecar applies them: traffic permissions, Rego
//! authorization, and the timeouts and retries of calls to a service.

use std::time::Duration;

use parking_lot::Mutex;

use crate::config::{
    Action, AuthorizationPolicy, Policies, RetryPolicy, TimeoutPolicy, TracingPolicy,
};

/// The policies of one config version, compiled.
pub(crate) struct CompiledPolicies {
    policies: Policies,
    authorizers: Vec<Authorizer>,
}

/// A Rego policy, compiled once and evaluated per request.
pub(crate) struct Authorizer {
    name: String,
    to: String,
    query: String,
    // Evaluation needs the engine mutably (it holds the input); requests
    // take turns, which costs microseconds per decision.
    engine: Mutex<regorus::Engine>,
}

/// What a Rego policy sees of a request.
#[derive(Debug, serde::Serialize)]
pub(crate) struct AuthorizationInput<'a> {
    pub(crate) request: RequestInput<'a>,
    pub(crate) source: SourceInput<'a>,
    pub(crate) destination: DestinationInput<'a>,
}

#[derive(Debug, serde::Serialize)]
pub(crate) struct RequestInput<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) headers: std::collections::BTreeMap<&'a str, &'a str>,
}

#[derive(Debug, serde::Serialize)]
pub(crate) struct SourceInput<'a> {
    pub(crate) service: &'a str,
    pub(crate) spiffe_id: &'a str,
}

#[derive(Debug, serde::Serialize)]
pub(crate) struct DestinationInput<'a> {
    pub(crate) service: &'a str,
}

/// Why a call was refused, for the caller (`message`) and the log (`rule`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Denial {
    pub(crate) kind: &'static str,
    pub(crate) rule: String,
    pub(crate) message: String,
}

fn matches(pattern: &str, service: &str) -> bool {
    pattern == "*" || pattern == service
}

impl CompiledPolicies {
    pub(crate) fn compile(policies: Policies) -> Result<Self, String> {
        let authorizers = policies
            .authorization
            .iter()
            .map(Authorizer::compile)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            policies,
            authorizers,
        })
    }

    pub(crate) fn policies(&self) -> &Policies {
        &self.policies
    }

    pub(crate) fn tracing(&self) -> &TracingPolicy {
        &self.policies.tracing
    }

    /// May `from` call `to`? The most specific matching rule decides, deny
    /// first among equals; with permissions on and no rule, no.
    pub(crate) fn permit(&self, from: &str, to: &str) -> Result<(), Denial> {
        let permissions = &self.policies.traffic_permissions;
        if !permissions.enabled {
            return Ok(());
        }
        let specificity = |from: &str, to: &str| u8::from(from != "*") + u8::from(to != "*");
        let decisive = permissions
            .rules
            .iter()
            .filter(|rule| matches(&rule.from, from) && matches(&rule.to, to))
            .max_by_key(|rule| {
                (
                    specificity(&rule.from, &rule.to),
                    rule.action == Action::Deny,
                )
            });
        let denial = |rule: String| Denial {
            kind: "traffic_permission",
            rule,
            message: format!("{from} is not permitted to call {to}"),
        };
        match decisive {
            Some(rule) if rule.action == Action::Allow => Ok(()),
            Some(rule) => Err(denial(rule.name.clone())),
            None => Err(denial(
                "(no rule allows it; permissions deny by default)".into(),
            )),
        }
    }

    /// Whether any request-level authorization policy applies to calls to
    /// `to` (when none does, [`CompiledPolicies::authorize`] needs no input).
    pub(crate) fn authorizes(&self, to: &str) -> bool {
        self.authorizers.iter().any(|a| matches(&a.to, to))
    }

    /// Runs every authorization policy for `to`; the first that does not
    /// say yes refuses the request (an evaluation error refuses too).
    pub(crate) fn authorize(&self, input: &AuthorizationInput<'_>) -> Result<(), Denial> {
        let to = input.destination.service;
        let relevant = self.authorizers.iter().filter(|a| matches(&a.to, to));
        let mut json = None;
        for authorizer in relevant {
            let json = json.get_or_insert_with(|| {
                serde_json::to_string(input).unwrap_or_else(|_| "{}".to_string())
            });
            match authorizer.evaluate(json) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Denial {
                        kind: "authorization",
                        rule: authorizer.name.clone(),
                        message: format!("request denied by policy {}", authorizer.name),
                    })
                }
                Err(e) => {
                    tracing::warn!(policy = %authorizer.name, error = %e, "authorization policy failed; denying");
                    return Err(Denial {
                        kind: "authorization",
                        rule: format!("{} (evaluation failed: {e})", authorizer.name),
                        message: format!("request denied by policy {}", authorizer.name),
                    });
                }
            }
        }
        Ok(())
    }

    /// Connect and per-attempt timeouts of calls to `to`.
    pub(crate) fn timeouts(&self, to: &str) -> (Duration, Duration) {
        most_specific(&self.policies.timeouts, to, |t: &TimeoutPolicy| &t.to)
            .map(|t| (t.connect, t.request))
            .unwrap_or((Duration::from_secs(5), Duration::from_secs(15)))
    }

    /// Attempts after the first for calls to `to`.
    pub(crate) fn retries(&self, to: &str) -> u32 {
        most_specific(&self.policies.retries, to, |r: &RetryPolicy| &r.to)
            .map(|r| r.attempts)
            .unwrap_or(0)
    }
}

fn most_specific<'a, T>(items: &'a [T], to: &str, target: impl Fn(&T) -> &String) -> Option<&'a T> {
    items
        .iter()
        .find(|item| target(item) == to)
        .or_else(|| items.iter().find(|item| target(item) == "*"))
}

impl Authorizer {
    pub(crate) fn compile(policy: &AuthorizationPolicy) -> Result<Self, String> {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy(format!("{}.rego", policy.name), policy.rego.clone())
            .map_err(|e| e.to_string())?;
        if !policy.query.starts_with("data.") {
            return Err(format!(
                "query {:?} must name a rule, such as data.weft.authz.allow",
                policy.query
            ));
        }
        Ok(Self {
            name: policy.name.clone(),
            to: policy.to.clone(),
            query: policy.query.clone(),
            engine: Mutex::new(engine),
        })
    }

    fn evaluate(&self, input_json: &str) -> Result<bool, String> {
        let input = regorus::Value::from_json_str(input_json).map_err(|e| e.to_string())?;
        let mut engine = self.engine.lock();
        engine.set_input(input);
        let value = engine
            .eval_rule(self.query.clone())
            .map_err(|e| e.to_string())?;
        Ok(value == regorus::Value::from(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PermissionRule, TrafficPermissions};

    fn rule(name: &str, from: &str, to: &str, action: Action) -> PermissionRule {
        PermissionRule {
            name: name.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            action,
        }
    }

    #[test]
    fn the_most_specific_permission_wins_and_deny_wins_ties() {
        let policies = Policies {
            traffic_permissions: TrafficPermissions {
                enabled: true,
                rules: vec![
                    rule("all-to-db", "*", "db", Action::Allow),
                    rule("mobile-not-db", "mobile", "db", Action::Deny),
                    rule("conductor-anywhere", "conductor", "*", Action::Allow),
                    rule("nobody-to-billing", "*", "billing", Action::Deny),
                ],
            },
            ..Policies::default()
        };
        let compiled = CompiledPolicies::compile(policies).expect("compiles");
        assert_eq!(compiled.permit("conductor", "db"), Ok(()));
        let denied = compiled.permit("mobile", "db").expect_err("denied");
        assert_eq!(denied.rule, "mobile-not-db");
        // One wildcard each: deny wins the tie.
        let denied = compiled.permit("conductor", "billing").expect_err("denied");
        assert_eq!(denied.rule, "nobody-to-billing");
        assert!(compiled.permit("mobile", "search").is_err(), "default deny");
    }

    #[test]
    fn rego_decides_on_method_path_and_caller() {
        let policy = AuthorizationPolicy {
            name: "reads-only".to_string(),
            to: "db".to_string(),
            rego: r#"package weft.authz
default allow := false
allow if {
    input.request.method == "GET"
    startswith(input.request.path, "/accounts")
    input.source.spiffe_id == "spiffe://crm/conductor"
}"#
            .to_string(),
            query: "data.weft.authz.allow".to_string(),
        };
        let compiled = CompiledPolicies::compile(Policies {
            authorization: vec![policy],
            ..Policies::default()
        })
        .expect("compiles");
        let input = |method, path, caller| AuthorizationInput {
            request: RequestInput {
                method,
                path,
                headers: Default::default(),
            },
            source: SourceInput {
                service: "conductor",
                spiffe_id: caller,
            },
            destination: DestinationInput { service: "db" },
        };
        let conductor = "spiffe://crm/conductor";
        assert_eq!(
            compiled.authorize(&input("GET", "/accounts/1", conductor)),
            Ok(())
        );
        let denied = compiled
            .authorize(&input("POST", "/accounts/1", conductor))
            .expect_err("denied");
        assert_eq!(denied.rule, "reads-only");
        assert!(compiled
            .authorize(&input("GET", "/accounts/1", "spiffe://crm/mobile"))
            .is_err());
    }
}
