//! A trace as a tree of spans, its critical path and its error origin.
//!
//! The critical path is the chain of work the trace's end-to-end time waited
//! on. Walk back from the root's end: the child that finished last before
//! that moment (children clipped to their parent) is on the path; the
//! parent's own time after it is the parent's self time on the path; then the
//! walk continues from that child's start among the children that ended
//! before it. A child that ran alongside the one on the path — it ended after
//! the cursor moved past it — is skipped. Jaeger's version takes each
//! parent's last-finishing child once and misattributes such siblings.

use std::collections::HashMap;

/// One span, as the analyses need it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub service: String,
    pub operation: String,
    pub start_ns: i64,
    pub end_ns: i64,
    pub is_error: bool,
    pub status_message: Option<String>,
}

/// The spans of one trace, linked into a tree.
#[derive(Debug)]
pub struct TraceTree {
    pub spans: Vec<SpanRecord>,
    /// Children of each span, by index, in start order.
    children: Vec<Vec<usize>>,
    /// Parent of each span, by index, when it is in the trace.
    parent: Vec<Option<usize>>,
    /// Spans without a parent in the trace: the root first.
    roots: Vec<usize>,
    depth: Vec<usize>,
}

/// A span's share of the critical path.
#[derive(Debug, Clone, PartialEq)]
pub struct PathStep {
    /// Index into [`TraceTree::spans`].
    pub span: usize,
    /// Time in which this span, not one of its children, was what the trace
    /// waited on.
    pub self_ns: i64,
}

impl TraceTree {
    /// Links `spans` by parent id. A span whose parent is not in the trace
    /// (lost, or not sampled) becomes a root; the root is the earliest span
    /// without a parent id, else the earliest parentless one.
    pub fn new(spans: Vec<SpanRecord>) -> Self {
        let index: HashMap<&str, usize> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.span_id.as_str(), i))
            .collect();
        let mut children = vec![Vec::new(); spans.len()];
        let mut parent = vec![None; spans.len()];
        let mut roots = Vec::new();
        for (i, span) in spans.iter().enumerate() {
            match span
                .parent_span_id
                .as_deref()
                .and_then(|p| index.get(p))
                .filter(|&&p| p != i)
            {
                Some(&p) => {
                    children[p].push(i);
                    parent[i] = Some(p);
                }
                None => roots.push(i),
            }
        }
        let by_start = |a: &usize, b: &usize| {
            (spans[*a].start_ns, &spans[*a].span_id).cmp(&(spans[*b].start_ns, &spans[*b].span_id))
        };
        for list in &mut children {
            list.sort_by(by_start);
        }
        roots.sort_by(|a, b| {
            let key = |i: &usize| (spans[*i].parent_span_id.is_some(), spans[*i].start_ns);
            key(a).cmp(&key(b))
        });
        let mut tree = Self {
            depth: vec![0; spans.len()],
            spans,
            children,
            parent,
            roots,
        };
        tree.compute_depths();
        tree
    }

    fn compute_depths(&mut self) {
        let mut stack: Vec<(usize, usize)> = self.roots.iter().map(|&r| (r, 0)).collect();
        let mut seen = vec![false; self.spans.len()];
        while let Some((span, depth)) = stack.pop() {
            // Parent links that loop would otherwise spin forever.
            if std::mem::replace(&mut seen[span], true) {
                continue;
            }
            self.depth[span] = depth;
            stack.extend(self.children[span].iter().map(|&c| (c, depth + 1)));
        }
    }

    pub fn root(&self) -> Option<usize> {
        self.roots.first().copied()
    }

    pub fn children(&self, span: usize) -> &[usize] {
        &self.children[span]
    }

    pub fn depth(&self, span: usize) -> usize {
        self.depth[span]
    }

    /// The root's end minus its start: the trace's end-to-end time.
    pub fn duration_ns(&self) -> i64 {
        self.root()
            .map_or(0, |r| self.spans[r].end_ns - self.spans[r].start_ns)
    }

    /// The critical path from the root, each span with its self time on it,
    /// in the order the walk found them (root first).
    pub fn critical_path(&self) -> Vec<PathStep> {
        match self.root() {
            Some(root) => self.critical_path_from(root),
            None => Vec::new(),
        }
    }

    /// The critical path of the work under `root` (any span of the trace).
    pub fn critical_path_from(&self, root: usize) -> Vec<PathStep> {
        struct Frame {
            span: usize,
            start: i64,
            cursor: i64,
            /// (child, clipped start, clipped end), latest end first.
            children: Vec<(usize, i64, i64)>,
            next: usize,
        }
        let frame = |span: usize, start: i64, end: i64| Frame {
            span,
            start,
            cursor: end,
            children: {
                let mut list: Vec<(usize, i64, i64)> = self.children[span]
                    .iter()
                    .map(|&c| {
                        let s = &self.spans[c];
                        (c, s.start_ns.max(start), s.end_ns.min(end))
                    })
                    .filter(|(_, s, e)| s <= e)
                    .collect();
                list.sort_by_key(|&(_, start, end)| std::cmp::Reverse((end, start)));
                list
            },
            next: 0,
        };
        let mut self_ns: Vec<(usize, i64)> = Vec::new();
        let mut position: HashMap<usize, usize> = HashMap::new();
        let mut add = |span: usize, ns: i64, self_ns: &mut Vec<(usize, i64)>| {
            let at = *position.entry(span).or_insert_with(|| {
                self_ns.push((span, 0));
                self_ns.len() - 1
            });
            self_ns[at].1 += ns.max(0);
        };
        let root_span = &self.spans[root];
        let mut stack = vec![frame(root, root_span.start_ns, root_span.end_ns)];
        add(root, 0, &mut self_ns);
        let mut visited = vec![false; self.spans.len()];
        visited[root] = true;
        while let Some(top) = stack.last_mut() {
            while top.next < top.children.len() && top.children[top.next].2 > top.cursor {
                top.next += 1;
            }
            if let Some(&(child, start, end)) = top.children.get(top.next) {
                top.next += 1;
                if visited[child] {
                    continue;
                }
                visited[child] = true;
                let parent = top.span;
                let gap = top.cursor - end;
                top.cursor = top.cursor.min(start);
                add(parent, gap, &mut self_ns);
                add(child, 0, &mut self_ns);
                stack.push(frame(child, start, end));
            } else {
                let (span, gap) = (top.span, top.cursor - top.start);
                stack.pop();
                add(span, gap, &mut self_ns);
            }
        }
        self_ns
            .into_iter()
            .map(|(span, self_ns)| PathStep { span, self_ns })
            .collect()
    }

    /// Self time on `path` added up per (service, operation).
    pub fn self_by_operation(&self, path: &[PathStep]) -> HashMap<(String, String), i64> {
        let mut totals = HashMap::new();
        for step in path {
            let s = &self.spans[step.span];
            *totals
                .entry((s.service.clone(), s.operation.clone()))
                .or_insert(0) += step.self_ns;
        }
        totals
    }

    /// Where the trace's error started: the deepest error span none of whose
    /// children failed (an error that propagated up leaves error spans all
    /// the way to the root; the origin is the bottom of that chain). Ties go
    /// to the one that ended first, as an error is noticed before it spreads.
    pub fn error_origin(&self) -> Option<usize> {
        (0..self.spans.len())
            .filter(|&i| self.spans[i].is_error)
            .filter(|&i| !self.children[i].iter().any(|&c| self.spans[c].is_error))
            .max_by(|&a, &b| {
                self.depth[a]
                    .cmp(&self.depth[b])
                    .then(self.spans[b].end_ns.cmp(&self.spans[a].end_ns))
            })
    }

    /// The span below `span` on the critical path that took most of its
    /// time, if one did: the deepest span on the path under `span` whose own
    /// self time is at least half of `span`'s duration. Geometry only; see
    /// [`TraceTree::gave_up_on`] for whether `span` failed because of it.
    pub fn dominant_wait(&self, span: usize, path: &[PathStep]) -> Option<usize> {
        let whole = self.spans[span].end_ns - self.spans[span].start_ns;
        if whole <= 0 {
            return None;
        }
        path.iter()
            .filter(|step| step.span != span && self.is_descendant(step.span, span))
            .filter(|step| step.self_ns * 2 >= whole)
            .max_by_key(|step| (step.self_ns, self.depth[step.span]))
            .map(|step| step.span)
    }

    /// Whether failing `span` looks like a timeout waiting on `waited`: the
    /// awaited work was still running when `span` ended (a caller that gives
    /// up ends first), or `span`'s status says it timed out.
    pub fn gave_up_on(&self, span: usize, waited: usize) -> bool {
        let (caller, callee) = (&self.spans[span], &self.spans[waited]);
        let outlived = callee.end_ns >= caller.end_ns;
        let says_timeout = caller.status_message.as_deref().is_some_and(|m| {
            let m = m.to_ascii_lowercase();
            m.contains("timeout") || m.contains("timed out") || m.contains("deadline")
        });
        outlived || says_timeout
    }

    fn is_descendant(&self, span: usize, ancestor: usize) -> bool {
        let mut current = span;
        // Bounded: parent links that loop must not spin forever.
        for _ in 0..self.spans.len() {
            match self.parent[current] {
                Some(p) if p == ancestor => return true,
                Some(p) => current = p,
                None => return false,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(id, parent, start_ms, end_ms, error)`.
    fn tree(spans: &[(&str, Option<&str>, i64, i64, bool)]) -> TraceTree {
        TraceTree::new(
            spans
                .iter()
                .map(|&(id, parent, start, end, is_error)| SpanRecord {
                    span_id: id.to_string(),
                    parent_span_id: parent.map(str::to_string),
                    service: format!("svc-{id}"),
                    operation: format!("op-{id}"),
                    start_ns: start * 1_000_000,
                    end_ns: end * 1_000_000,
                    is_error,
                    status_message: None,
                })
                .collect(),
        )
    }

    fn path_ms(tree: &TraceTree) -> Vec<(String, i64)> {
        let mut path: Vec<(String, i64)> = tree
            .critical_path()
            .into_iter()
            .map(|s| (tree.spans[s.span].span_id.clone(), s.self_ns / 1_000_000))
            .collect();
        path.sort();
        path
    }

    fn steps(expected: &[(&str, i64)]) -> Vec<(String, i64)> {
        let mut steps: Vec<(String, i64)> = expected
            .iter()
            .map(|(s, ms)| (s.to_string(), *ms))
            .collect();
        steps.sort();
        steps
    }

    #[test]
    fn sequential_children_are_all_on_the_path() {
        // root 0-100: a 10-40, b 40-90.
        let t = tree(&[
            ("root", None, 0, 100, false),
            ("a", Some("root"), 10, 40, false),
            ("b", Some("root"), 40, 90, false),
        ]);
        assert_eq!(path_ms(&t), steps(&[("root", 20), ("a", 30), ("b", 50)]));
    }

    #[test]
    fn a_sibling_that_overlaps_the_one_on_the_path_is_not_on_it() {
        // root 0-100: slow 10-90 and fast 20-50 run concurrently; the root
        // waited on slow only. Jaeger's walk would also put fast on the path
        // (it ends before slow's end) and charge it 30 ms.
        let t = tree(&[
            ("root", None, 0, 100, false),
            ("slow", Some("root"), 10, 90, false),
            ("fast", Some("root"), 20, 50, false),
        ]);
        assert_eq!(path_ms(&t), steps(&[("root", 20), ("slow", 80)]));
    }

    #[test]
    fn a_child_that_outlives_its_parent_is_clipped_to_the_parent_end() {
        // An async child keeps running after root answered at 50.
        let t = tree(&[
            ("root", None, 0, 50, false),
            ("async", Some("root"), 30, 200, false),
            ("early", Some("root"), 5, 25, false),
        ]);
        assert_eq!(
            path_ms(&t),
            steps(&[("root", 10), ("async", 20), ("early", 20)])
        );
    }

    #[test]
    fn the_path_descends_through_nested_fan_outs() {
        // root 0-100 → conductor 5-95 → { salesforce 10-40 ‖ database 10-90 }
        let t = tree(&[
            ("root", None, 0, 100, false),
            ("conductor", Some("root"), 5, 95, false),
            ("salesforce", Some("conductor"), 10, 40, false),
            ("database", Some("conductor"), 10, 90, false),
        ]);
        let path = path_ms(&t);
        assert_eq!(
            path,
            steps(&[("root", 10), ("conductor", 10), ("database", 80)])
        );
        let total: i64 = path.iter().map(|(_, ms)| ms).sum();
        assert_eq!(total, 100, "self times on the path add up to the trace");
    }

    #[test]
    fn the_error_origin_is_the_deepest_error_without_failing_children() {
        let t = tree(&[
            ("mobile", None, 0, 100, true),
            ("conductor", Some("mobile"), 5, 95, true),
            ("database", Some("conductor"), 10, 90, true),
            ("salesforce", Some("conductor"), 10, 20, false),
        ]);
        assert_eq!(t.spans[t.error_origin().unwrap()].span_id, "database");
        let healthy = tree(&[("a", None, 0, 1, false)]);
        assert_eq!(healthy.error_origin(), None);
    }

    #[test]
    fn a_timeout_points_at_the_span_it_waited_on() {
        // conductor gives up at 95 ms while the database runs until 300.
        let t = tree(&[
            ("mobile", None, 0, 100, true),
            ("conductor", Some("mobile"), 5, 95, true),
            ("database", Some("conductor"), 10, 300, false),
        ]);
        let origin = t.error_origin().unwrap();
        assert_eq!(t.spans[origin].span_id, "conductor");
        let path = t.critical_path();
        let waited = t.dominant_wait(origin, &path).unwrap();
        assert_eq!(t.spans[waited].span_id, "database");
        assert!(t.gave_up_on(origin, waited));
        // A failure after a normal, finished call is not a timeout.
        let finished = tree(&[
            ("conductor", None, 0, 100, true),
            ("salesforce", Some("conductor"), 5, 90, false),
        ]);
        let path = finished.critical_path();
        let waited = finished.dominant_wait(0, &path).unwrap();
        assert!(!finished.gave_up_on(0, waited));
        // A quick failure waited on nothing.
        let quick = tree(&[
            ("conductor", None, 0, 100, true),
            ("database", Some("conductor"), 10, 20, false),
        ]);
        let path = quick.critical_path();
        assert_eq!(quick.dominant_wait(quick.root().unwrap(), &path), None);
    }

    #[test]
    fn orphans_and_parent_cycles_do_not_hang_or_panic() {
        let t = tree(&[
            ("a", Some("b"), 0, 10, false),
            ("b", Some("a"), 0, 10, false),
            ("c", Some("missing"), 0, 5, false),
        ]);
        let _ = t.critical_path();
        let _ = t.error_origin();
        assert!(t.root().is_some());
        assert!(TraceTree::new(Vec::new()).critical_path().is_empty());
    }
}
