//! Faults a demo service injects into its own requests: added latency or an
//! error, on a fraction of requests, optionally only for requests with one
//! attribute value. Written as `crm-database:latency=300ms:p=0.2`,
//! `crm-salesforce:error=0.1` or `crm-database:latency=500ms:when=customer.tier=gold`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::services::CrmService;

#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub service: CrmService,
    pub effect: Effect,
    /// Fraction of the matching requests affected, 0–1.
    pub probability: f64,
    /// Only requests whose attribute has this value.
    pub when: Option<(Attribute, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect {
    Latency(Duration),
    Error,
}

/// What a fault's `when=` can look at: what every service knows of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    CustomerTier,
    HttpRoute,
    HttpRequestMethod,
}

impl Attribute {
    const ALL: [Attribute; 3] = [
        Attribute::CustomerTier,
        Attribute::HttpRoute,
        Attribute::HttpRequestMethod,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Attribute::CustomerTier => "customer.tier",
            Attribute::HttpRoute => "http.route",
            Attribute::HttpRequestMethod => "http.request.method",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("fault {spec:?}: {reason}")]
pub struct FaultError {
    spec: String,
    reason: String,
}

const SYNTAX: &str =
    "write service:latency=300ms[:p=0.2][:when=customer.tier=gold] or service:error=0.1[:when=…]";

impl FromStr for Fault {
    type Err = FaultError;

    fn from_str(spec: &str) -> Result<Self, FaultError> {
        let fail = |reason: String| FaultError {
            spec: spec.to_string(),
            reason,
        };
        let mut parts = spec.split(':');
        let service = parts.next().unwrap_or_default();
        let service = service.parse::<CrmService>().map_err(fail)?;
        let (mut effect, mut probability, mut when) = (None, None, None);
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| fail(format!("{part:?} is not key=value; {SYNTAX}")))?;
            let duplicate = |what: &str| fail(format!("{what} is given twice"));
            match key {
                "latency" | "error" if effect.is_some() => return Err(duplicate("the effect")),
                "latency" => {
                    let delay = humantime::parse_duration(value).map_err(|e| {
                        fail(format!(
                            "latency {value:?} is not a duration such as 300ms ({e})"
                        ))
                    })?;
                    if delay.is_zero() || delay > Duration::from_secs(60) {
                        return Err(fail(format!(
                            "latency {value} must be more than 0 and at most 60s"
                        )));
                    }
                    effect = Some(Effect::Latency(delay));
                }
                "error" => {
                    effect = Some(Effect::Error);
                    probability = Some(parse_probability(value).map_err(fail)?);
                }
                "p" if probability.is_some() => {
                    return Err(duplicate("the probability (error=RATE is one)"))
                }
                "p" => probability = Some(parse_probability(value).map_err(fail)?),
                "when" if when.is_some() => return Err(duplicate("when")),
                "when" => {
                    let (name, expected) = value
                        .split_once('=')
                        .ok_or_else(|| fail(format!("when {value:?} is not attribute=value")))?;
                    let attribute = Attribute::ALL
                        .into_iter()
                        .find(|a| a.name() == name)
                        .ok_or_else(|| {
                            let known: Vec<_> = Attribute::ALL.iter().map(|a| a.name()).collect();
                            fail(format!("when can test {}, not {name:?}", known.join(", ")))
                        })?;
                    when = Some((attribute, expected.to_string()));
                }
                _ => return Err(fail(format!("unknown key {key:?}; {SYNTAX}"))),
            }
        }
        let effect = effect.ok_or_else(|| fail(format!("no latency= or error=; {SYNTAX}")))?;
        Ok(Fault {
            service,
            effect,
            probability: probability.unwrap_or(1.0),
            when,
        })
    }
}

fn parse_probability(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{value:?} is not a probability between 0 and 1")),
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.service)?;
        match self.effect {
            Effect::Latency(delay) => {
                write!(f, ":latency={}", humantime::format_duration(delay))?;
                if self.probability < 1.0 {
                    write!(f, ":p={}", self.probability)?;
                }
            }
            Effect::Error => write!(f, ":error={}", self.probability)?,
        }
        if let Some((attribute, value)) = &self.when {
            write!(f, ":when={}={value}", attribute.name())?;
        }
        Ok(())
    }
}

impl Serialize for Fault {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fault {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spec = String::deserialize(deserializer)?;
        spec.parse().map_err(serde::de::Error::custom)
    }
}

/// What a service knows of a request when it decides on faults.
pub struct RequestFacts<'a> {
    pub customer_tier: &'a str,
    pub http_route: &'a str,
    pub http_request_method: &'a str,
}

impl RequestFacts<'_> {
    fn get(&self, attribute: Attribute) -> &str {
        match attribute {
            Attribute::CustomerTier => self.customer_tier,
            Attribute::HttpRoute => self.http_route,
            Attribute::HttpRequestMethod => self.http_request_method,
        }
    }
}

/// What the faults decided for one request.
#[derive(Debug, Default, PartialEq)]
pub struct Injected {
    pub delay: Duration,
    pub error: bool,
}

/// One service's live faults, replaced as a whole at run time.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<RwLock<Vec<Fault>>>);

impl Faults {
    pub fn new(faults: Vec<Fault>) -> Self {
        Self(Arc::new(RwLock::new(faults)))
    }

    pub fn replace(&self, faults: Vec<Fault>) {
        *self.0.write() = faults;
    }

    pub fn list(&self) -> Vec<Fault> {
        self.0.read().clone()
    }

    /// Each matching fault fires independently with its probability; the
    /// longest of the fired delays applies.
    pub fn decide(&self, request: &RequestFacts<'_>) -> Injected {
        let mut injected = Injected::default();
        for fault in self.0.read().iter() {
            let matches = fault
                .when
                .as_ref()
                .is_none_or(|(attribute, value)| request.get(*attribute) == value);
            if !matches || fastrand::f64() >= fault.probability {
                continue;
            }
            match fault.effect {
                Effect::Latency(delay) => injected.delay = injected.delay.max(delay),
                Effect::Error => injected.error = true,
            }
        }
        injected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_forms_parse_and_print_back() {
        for spec in [
            "crm-database:latency=300ms:p=0.2",
            "crm-salesforce:error=0.1",
            "crm-database:latency=500ms:when=customer.tier=gold",
            "crm-conductor:error=1:when=http.route=/accounts/{id}/profile",
        ] {
            let fault: Fault = spec.parse().unwrap();
            assert_eq!(fault.to_string(), spec);
        }
        let fault: Fault = "crm-database:latency=300ms:p=0.2".parse().unwrap();
        assert_eq!(fault.service, CrmService::Database);
        assert_eq!(fault.effect, Effect::Latency(Duration::from_millis(300)));
        assert_eq!(fault.probability, 0.2);
    }

    #[test]
    fn a_bad_fault_names_its_problem() {
        for (spec, expected) in [
            ("crm-nothing:error=0.1", "unknown service"),
            ("crm-database", "no latency= or error="),
            ("crm-database:latency=soon", "not a duration"),
            ("crm-database:error=2", "not a probability"),
            ("crm-database:error=0.1:p=0.5", "given twice"),
            (
                "crm-database:latency=1s:when=customer.id=7",
                "when can test customer.tier",
            ),
            ("crm-database:latency=1s:delay", "not key=value"),
        ] {
            let error = spec.parse::<Fault>().unwrap_err().to_string();
            assert!(error.contains(expected), "{spec}: {error}");
        }
    }

    #[test]
    fn only_matching_requests_are_affected() {
        let faults = Faults::new(vec![
            "crm-database:latency=500ms:when=customer.tier=gold"
                .parse()
                .unwrap(),
            "crm-database:latency=200ms".parse().unwrap(),
        ]);
        let request = |tier| RequestFacts {
            customer_tier: tier,
            http_route: "/accounts/{id}",
            http_request_method: "GET",
        };
        assert_eq!(
            faults.decide(&request("gold")).delay,
            Duration::from_millis(500)
        );
        assert_eq!(
            faults.decide(&request("bronze")).delay,
            Duration::from_millis(200)
        );
        let never = Faults::new(vec!["crm-database:error=0".parse().unwrap()]);
        assert!(!never.decide(&request("gold")).error);
    }
}
