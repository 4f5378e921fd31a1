//! The URIs a proxy sends requests to: built from parts it has already
//! parsed (a target's authority, the request's own path), not formatted and
//! parsed again on every request.

use http::uri::{Authority, Parts, PathAndQuery, Scheme};
use http::Uri;

/// The path and query of `uri`, `/` when it has none.
pub fn path_and_query(uri: &Uri) -> PathAndQuery {
    uri.path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}

/// `scheme://authority` followed by `path`; none without an authority.
pub fn absolute(scheme: Scheme, authority: Option<Authority>, path: PathAndQuery) -> Option<Uri> {
    let mut parts = Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority?);
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_and_a_request_path_make_the_uri_sent_upstream() {
        let request: Uri = "/accounts/7?sort=name".parse().unwrap();
        let uri = absolute(
            Scheme::HTTP,
            Some(Authority::from_static("127.0.0.1:9001")),
            path_and_query(&request),
        );
        assert_eq!(
            uri.unwrap().to_string(),
            "http://127.0.0.1:9001/accounts/7?sort=name"
        );
        let authority_only: Uri = "http://crm".parse().unwrap();
        assert_eq!(path_and_query(&authority_only).as_str(), "/");
        assert!(absolute(Scheme::HTTPS, None, path_and_query(&request)).is_none());
    }
}
