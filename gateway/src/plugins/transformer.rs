//! `request-transformer` and `response-transformer`: header edits in Kong's
//! order — remove, rename, replace (only if present), add (only if absent), append.

use std::sync::Arc;

use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::{forward, header_name, Middleware};
use crate::http::{ProxyRequest, ProxyResponse, ProxyService};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HeaderList {
    /// `name` for remove, `old:new` for rename, `name:value` otherwise.
    headers: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Settings {
    remove: HeaderList,
    rename: HeaderList,
    replace: HeaderList,
    add: HeaderList,
    append: HeaderList,
}

#[derive(Default)]
struct Edits {
    remove: Vec<HeaderName>,
    rename: Vec<(HeaderName, HeaderName)>,
    replace: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    append: Vec<(HeaderName, HeaderValue)>,
}

fn pairs(list: &HeaderList, what: &str) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    list.headers
        .iter()
        .map(|entry| {
            let (n, v) = entry
                .split_once(':')
                .ok_or_else(|| format!("{what}: {entry:?} is not name:value"))?;
            let value = HeaderValue::try_from(v.trim())
                .map_err(|_| format!("{what}: {entry:?} has an invalid value"))?;
            Ok((header_name(n)?, value))
        })
        .collect()
}

impl Edits {
    fn new(settings: &Settings) -> Result<Self, String> {
        Ok(Self {
            remove: settings
                .remove
                .headers
                .iter()
                .map(|h| header_name(h))
                .collect::<Result<_, _>>()?,
            rename: settings
                .rename
                .headers
                .iter()
                .map(|entry| {
                    let (from, to) = entry
                        .split_once(':')
                        .ok_or_else(|| format!("rename: {entry:?} is not old:new"))?;
                    Ok((header_name(from)?, header_name(to)?))
                })
                .collect::<Result<_, String>>()?,
            replace: pairs(&settings.replace, "replace")?,
            add: pairs(&settings.add, "add")?,
            append: pairs(&settings.append, "append")?,
        })
    }

    fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (from, to) in &self.rename {
            let values: Vec<HeaderValue> = headers.get_all(from).iter().cloned().collect();
            if !values.is_empty() {
                headers.remove(from);
                for value in values {
                    headers.append(to.clone(), value);
                }
            }
        }
        for (name, value) in &self.replace {
            if headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        for (name, value) in &self.add {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        for (name, value) in &self.append {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// Edits the request's headers before forwarding, or the response's after.
pub(crate) struct Transformer {
    edits: Edits,
    on_response: bool,
}

impl Transformer {
    pub(crate) fn request(settings: Settings) -> Result<Self, String> {
        Ok(Self {
            edits: Edits::new(&settings)?,
            on_response: false,
        })
    }

    pub(crate) fn response(settings: Settings) -> Result<Self, String> {
        Ok(Self {
            edits: Edits::new(&settings)?,
            on_response: true,
        })
    }
}

impl Middleware for Transformer {
    fn handle(
        self: Arc<Self>,
        mut request: ProxyRequest,
        next: ProxyService,
    ) -> BoxFuture<'static, ProxyResponse> {
        if !self.on_response {
            self.edits.apply(request.headers_mut());
        }
        Box::pin(async move {
            let mut response = forward(next, request).await;
            if self.on_response {
                self.edits.apply(response.headers_mut());
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_run_in_kongs_order() {
        let settings: Settings = serde_json::from_value(serde_json::json!({
            "remove": {"headers": ["x-secret"]},
            "rename": {"headers": ["x-old:x-new"]},
            "replace": {"headers": ["x-new:replaced", "x-missing:nope"]},
            "add": {"headers": ["x-added:1", "x-present:2"]},
            "append": {"headers": ["x-present:3"]}
        }))
        .unwrap();
        let edits = Edits::new(&settings).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-secret", HeaderValue::from_static("s"));
        headers.insert("x-old", HeaderValue::from_static("o"));
        headers.insert("x-present", HeaderValue::from_static("p"));
        edits.apply(&mut headers);
        assert!(!headers.contains_key("x-secret") && !headers.contains_key("x-old"));
        assert!(!headers.contains_key("x-missing"));
        assert_eq!(headers["x-new"], "replaced");
        assert_eq!(headers["x-added"], "1");
        let present: Vec<_> = headers.get_all("x-present").iter().collect();
        assert_eq!(present, ["p", "3"]);
    }
}
