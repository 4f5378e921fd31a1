//! Route matching: which route, and so which service and plugin stack, a
//! request belongs to.
//!
//! Every condition of a route must hold (host, path, method, headers). When
//! several routes match, the most specific wins, as in Kong: an exact host
//! over a wildcard over none, more header conditions, a method condition,
//! then regex paths by `regex_priority`, then the longest prefix.

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderName, Method};
use regex::Regex;

use crate::config::RouteConfig;
use crate::http::{ClientConnection, ProxyRequest, ProxyService};

enum HostMatch {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
}

enum PathMatch {
    Prefix(Arc<str>),
    Regex {
        regex: Regex,
        source: Arc<str>,
        priority: i32,
    },
}

/// A route ready to match, with the stack its requests go through.
pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    pub(crate) service: Arc<str>,
    hosts: Vec<HostMatch>,
    paths: Vec<PathMatch>,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, Vec<String>)>,
    pub(crate) strip_path: bool,
    pub(crate) preserve_host: bool,
    /// Reached over plain HTTP, over HTTPS.
    http: bool,
    https: bool,
    /// What plain HTTP gets when only HTTPS is allowed.
    pub(crate) https_redirect_status_code: u16,
    /// `http.route` of a route without path conditions.
    any_path: Arc<str>,
    pub(crate) stack: ProxyService,
}

/// What matched: the route, and how much of the path its path condition
/// consumed (removed upstream when the route strips its path).
pub(crate) struct Matched {
    pub(crate) route: Arc<Route>,
    /// Length of the path's prefix that matched.
    pub(crate) consumed: usize,
    /// `http.route`: the path condition that matched, or `/` for none.
    pub(crate) template: Arc<str>,
}

/// Specificity of a match; the greatest wins.
type Rank = (u8, usize, bool, (u8, i32, usize));

impl Route {
    pub(crate) fn new(
        service: &str,
        config: &RouteConfig,
        stack: ProxyService,
    ) -> Result<Self, String> {
        let hosts = config
            .hosts
            .iter()
            .map(|h| {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix('*') {
                    Some(suffix) => HostMatch::Suffix(suffix.to_string()),
                    None => HostMatch::Exact(h),
                }
            })
            .collect();
        let paths = config
            .paths
            .iter()
            .map(|p| match p.strip_prefix('~') {
                Some(pattern) => Regex::new(&format!("^(?:{pattern})"))
                    .map(|regex| PathMatch::Regex {
                        regex,
                        source: Arc::from(p.as_str()),
                        priority: config.regex_priority,
                    })
                    .map_err(|e| e.to_string()),
                None => Ok(PathMatch::Prefix(Arc::from(p.as_str()))),
            })
            .collect::<Result<_, _>>()?;
        let methods = config
            .methods
            .iter()
            .map(|m| {
                m.to_ascii_uppercase()
                    .parse::<Method>()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        let headers = config
            .headers
            .iter()
            .map(|(name, values)| {
                HeaderName::from_bytes(name.as_bytes())
                    .map(|n| (n, values.iter().map(|v| v.to_ascii_lowercase()).collect()))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name: Arc::from(config.name.as_str()),
            service: Arc::from(service),
            hosts,
            paths,
            methods,
            headers,
            strip_path: config.strip_path,
            preserve_host: config.preserve_host,
            http: config.protocols.iter().any(|p| p == "http"),
            https: config.protocols.iter().any(|p| p == "https"),
            https_redirect_status_code: config.https_redirect_status_code,
            any_path: Arc::from("/"),
            stack,
        })
    }

    /// How specifically this route matches `request`, with the length of the
    /// path it consumed and the path condition; `None` when it does not match.
    fn rank(&self, request: &ProxyRequest, host: &str) -> Option<(Rank, usize, &Arc<str>)> {
        if !self.methods.is_empty() && !self.methods.contains(request.method()) {
            return None;
        }
        // A plain-HTTP request still matches an HTTPS-only route, to be told
        // to upgrade ([`Route::wants_https`]); HTTPS never matches HTTP-only.
        if is_https(request) && !self.https {
            return None;
        }
        let host_rank = if self.hosts.is_empty() {
            0
        } else {
            self.hosts
                .iter()
                .filter_map(|h| match h {
                    HostMatch::Exact(exact) if exact == host => Some(2),
                    HostMatch::Suffix(suffix) if host.ends_with(suffix.as_str()) => Some(1),
                    _ => None,
                })
                .max()?
        };
        for (name, accepted) in &self.headers {
            let present = request.headers().get_all(name).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| accepted.iter().any(|a| a.eq_ignore_ascii_case(v)))
            });
            if !present {
                return None;
            }
        }
        let path = request.uri().path();
        let (path_rank, consumed, template) = if self.paths.is_empty() {
            ((0, 0, 0), 0, &self.any_path)
        } else {
            self.paths
                .iter()
                .filter_map(|p| match p {
                    PathMatch::Prefix(prefix) => {
                        let matches = path == &**prefix
                            || (path.starts_with(&**prefix)
                                && (prefix.ends_with('/')
                                    || path.as_bytes().get(prefix.len()) == Some(&b'/')));
                        matches.then(|| ((1, 0, prefix.len()), prefix.len(), prefix))
                    }
                    PathMatch::Regex {
                        regex,
                        source,
                        priority,
                    } => regex
                        .find(path)
                        .map(|m| ((2, *priority, m.len()), m.end(), source)),
                })
                .max_by_key(|(rank, _, _)| *rank)?
        };
        Some((
            (
                host_rank,
                self.headers.len(),
                !self.methods.is_empty(),
                path_rank,
            ),
            consumed,
            template,
        ))
    }
}

impl Route {
    /// Whether `request` came over plain HTTP to a route that allows only
    /// HTTPS, and so gets `https_redirect_status_code` instead of a proxy.
    pub(crate) fn wants_https(&self, request: &ProxyRequest) -> bool {
        !self.http && !is_https(request)
    }
}

/// A `Host` value without its port (`[::1]` keeps its colons).
pub(crate) fn without_port(host: &str) -> &str {
    host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            name
        } else {
            host
        }
    })
}

fn is_https(request: &ProxyRequest) -> bool {
    request
        .extensions()
        .get::<ClientConnection>()
        .is_some_and(|c| c.scheme == "https")
}

/// All routes of a configuration.
#[derive(Default)]
pub(crate) struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub(crate) fn new(routes: Vec<Route>) -> Self {
        Self {
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    /// The most specific route for `request`.
    pub(crate) fn find(&self, request: &ProxyRequest) -> Option<Matched> {
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().host())
            .unwrap_or_default();
        let host = without_port(host);
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        self.routes
            .iter()
            .filter_map(|route| {
                route
                    .rank(request, &host)
                    .map(|(rank, consumed, template)| (rank, route, consumed, template))
            })
            .max_by_key(|(rank, ..)| *rank)
            .map(|(_, route, consumed, template)| Matched {
                route: route.clone(),
                consumed,
                template: template.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Body;

    fn route(name: &str, yaml: &str) -> Route {
        let config: RouteConfig =
            serde_yaml_ng::from_str(&format!("name: {name}\n{yaml}")).unwrap();
        let stack = ProxyService::new(tower::service_fn(|_: ProxyRequest| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
        }));
        Route::new("svc", &config, stack).unwrap()
    }

    fn request(method: &str, host: &str, path: &str) -> ProxyRequest {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .body(Body::empty())
            .unwrap()
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            route("api", "paths: [/api]"),
            route("api-users", "paths: [/api/users]"),
            route("versioned", "paths: ['~/v\\d+/items']\nregex_priority: 5"),
            route("admin-host", "hosts: [admin.example.com]\npaths: [/api]"),
            route("any-sub", "hosts: ['*.example.com']"),
            route("posts-only", "paths: [/orders]\nmethods: [POST]"),
            route("v2-header", "paths: [/orders]\nheaders: {x-version: [v2]}"),
        ])
    }

    fn matched(request: ProxyRequest) -> Option<(String, String)> {
        let path = request.uri().path();
        table()
            .find(&request)
            .map(|m| (m.route.name.to_string(), path[..m.consumed].to_string()))
    }

    #[test]
    fn the_longest_prefix_wins_and_prefixes_match_whole_segments() {
        assert_eq!(
            matched(request("GET", "x", "/api/users/7")),
            Some(("api-users".into(), "/api/users".into()))
        );
        assert_eq!(
            matched(request("GET", "x", "/api/orders")),
            Some(("api".into(), "/api".into()))
        );
        assert_eq!(
            matched(request("GET", "x", "/api")),
            Some(("api".into(), "/api".into()))
        );
        assert_eq!(matched(request("GET", "x", "/apix")), None);
    }

    #[test]
    fn regex_paths_hosts_methods_and_headers_select_routes() {
        assert_eq!(
            matched(request("GET", "x", "/v12/items/3")),
            Some(("versioned".into(), "/v12/items".into()))
        );
        assert_eq!(
            matched(request("GET", "admin.example.com:8000", "/api/users"))
                .unwrap()
                .0,
            "admin-host"
        );
        assert_eq!(
            matched(request("GET", "shop.example.com", "/other"))
                .unwrap()
                .0,
            "any-sub"
        );
        assert_eq!(
            matched(request("POST", "x", "/orders")).unwrap().0,
            "posts-only"
        );
        assert_eq!(matched(request("GET", "x", "/orders")), None);
        let mut v2 = request("GET", "x", "/orders");
        v2.headers_mut().insert("x-version", "V2".parse().unwrap());
        assert_eq!(matched(v2).unwrap().0, "v2-header");
    }
}
