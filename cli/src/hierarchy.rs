//! The hierarchy frames that `merge.rs` puts above the code frames of every stack:
//! `namespace/NS;KIND/NAME;pod/NAME;container/NAME;comm (pid)`, each level optional
//! (`--group-by`), always in that order, `container/<id>` alone when the placement is unknown.
//!
//! Folded files carry no marker for them, so they are recognised by shape, and only at the
//! start of a stack: summaries and checks count code frames only (a pod name must not match a
//! function pattern), pprof carries the levels as sample labels, and `diff` drops the levels
//! that change from run to run (pod names, pids).

/// A level of the hierarchy, in stack order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Namespace,
    Workload,
    Pod,
    Container,
    Process,
}

impl Level {
    pub const ALL: [Level; 5] = [Level::Namespace, Level::Workload, Level::Pod, Level::Container, Level::Process];

    /// The pprof label key of this level.
    pub fn key(self) -> &'static str {
        match self {
            Level::Namespace => "namespace",
            Level::Workload => "workload",
            Level::Pod => "pod",
            Level::Container => "container",
            Level::Process => "process",
        }
    }

    /// The prefix of the frame name that the label value leaves out.
    fn prefix(self) -> &'static str {
        match self {
            Level::Namespace => "namespace/",
            Level::Pod => "pod/",
            Level::Container => "container/",
            Level::Workload | Level::Process => "",
        }
    }

    /// The label value of a frame of this level (`namespace/shop` -> `shop`).
    pub fn value(self, frame: &str) -> &str {
        frame.strip_prefix(self.prefix()).unwrap_or(frame)
    }

    /// The frame a label value stands for (`shop` -> `namespace/shop`).
    pub fn frame(self, value: &str) -> String {
        format!("{}{value}", self.prefix())
    }
}

/// The hierarchy levels at the start of `frames`, as (level, index) pairs in stack order.
/// At least one frame is always left as code: a stack that is all hierarchy keeps its last
/// frame as its leaf.
pub fn levels(frames: &[&str]) -> Vec<(Level, usize)> {
    let mut found = Vec::with_capacity(5);
    let mut i = 0;
    let n = frames.len();
    if n > 0 && frames[0].starts_with("namespace/") && frames[0].len() > "namespace/".len() {
        found.push((Level::Namespace, 0));
        i = 1;
        if i < n && is_workload(frames[i]) {
            found.push((Level::Workload, i));
            i += 1;
        }
        if i < n && is_named(frames[i], "pod/") {
            found.push((Level::Pod, i));
            i += 1;
        }
    }
    if i < n && is_named(frames[i], "container/") {
        found.push((Level::Container, i));
        i += 1;
    }
    if i < n && is_process(frames[i]) {
        found.push((Level::Process, i));
        i += 1;
    }
    if i == n && n > 0 {
        found.pop();
    }
    found
}

/// How many leading frames are hierarchy frames (see [`levels`]).
pub fn prefix_len(frames: &[&str]) -> usize {
    levels(frames).last().map_or(0, |(_, i)| i + 1)
}

fn is_named(frame: &str, prefix: &str) -> bool {
    frame.len() > prefix.len() && frame.starts_with(prefix)
}

/// `deployment/api`, `statefulset/db`, `pod/solo`, `rollout/web`: a lowercase kind, a name.
fn is_workload(frame: &str) -> bool {
    let Some((kind, name)) = frame.split_once('/') else { return false };
    !kind.is_empty()
        && !name.is_empty()
        && kind != "container"
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

/// `comm (pid)`.
fn is_process(frame: &str) -> bool {
    let Some(rest) = frame.strip_suffix(')') else { return false };
    let Some((comm, pid)) = rest.rsplit_once(" (") else { return false };
    !comm.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
}

/// The stack with the levels that differ between two runs of the same workload dropped or
/// made stable, so two profiles can be compared: pod names (replicas are replaced on every
/// rollout), container ids shown when a placement was unknown, and pids (`comm (pid)` becomes
/// `comm`). Namespace, workload and container name stay.
pub fn stable_stack(stack: &str) -> String {
    let frames: Vec<&str> = stack.split(';').collect();
    let levels = levels(&frames);
    let skip = levels.last().map_or(0, |(_, i)| i + 1);
    let mut out = String::with_capacity(stack.len());
    let mut push = |frame: &str| {
        if !out.is_empty() {
            out.push(';');
        }
        out.push_str(frame);
    };
    for (level, i) in levels {
        let frame = frames[i];
        match level {
            Level::Pod => {}
            Level::Container if is_container_id(Level::Container.value(frame)) => {}
            Level::Process => push(frame.rsplit_once(" (").map_or(frame, |(comm, _)| comm)),
            _ => push(frame),
        }
    }
    for frame in &frames[skip..] {
        push(frame);
    }
    out
}

/// The code frames of a stack only.
pub fn code_stack(stack: &str) -> &str {
    let frames: Vec<&str> = stack.split(';').collect();
    let skip = prefix_len(&frames);
    let offset: usize = frames[..skip].iter().map(|f| f.len() + 1).sum();
    &stack[offset..]
}

/// merge.rs shows the first 12 characters of an unknown container's id.
fn is_container_id(value: &str) -> bool {
    value.len() == 12 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(stack: &str) -> Vec<(Level, &str)> {
        let frames: Vec<&str> = stack.split(';').collect();
        levels(&frames).into_iter().map(|(l, i)| (l, frames[i])).collect()
    }

    #[test]
    fn recognises_every_group_by_level() {
        use Level::*;
        assert_eq!(
            split("namespace/shop;deployment/api;pod/api-1;container/app;api (10);main;hot"),
            [
                (Namespace, "namespace/shop"),
                (Workload, "deployment/api"),
                (Pod, "pod/api-1"),
                (Container, "container/app"),
                (Process, "api (10)")
            ]
        );
        assert_eq!(
            split("namespace/shop;pod/solo;pod/solo;main"),
            [(Namespace, "namespace/shop"), (Workload, "pod/solo"), (Pod, "pod/solo")]
        );
        assert_eq!(split("namespace/shop;main;hot"), [(Namespace, "namespace/shop")]);
        assert_eq!(
            split("container/0123456789ab;api (7);main"),
            [(Container, "container/0123456789ab"), (Process, "api (7)")]
        );
        assert_eq!(split("server (4242);main;work"), [(Process, "server (4242)")]);
        assert_eq!(split("main;hot"), []);
        // A code frame that only looks like a level further down is code.
        assert_eq!(split("main;pod/x;y (1)"), []);
        // All hierarchy: the last frame stays as the leaf.
        assert_eq!(split("namespace/shop;api (3)"), [(Namespace, "namespace/shop")]);
        assert_eq!(split("api (3)"), []);
    }

    #[test]
    fn stable_stacks_drop_what_changes_between_runs() {
        assert_eq!(
            stable_stack("namespace/shop;deployment/api;pod/api-7d9f-x2;container/app;api (10);main;hot"),
            "namespace/shop;deployment/api;container/app;api;main;hot"
        );
        assert_eq!(stable_stack("container/0123456789ab;api (7);main"), "api;main");
        assert_eq!(stable_stack("main;hot"), "main;hot");
        assert_eq!(code_stack("namespace/shop;deployment/api;main;hot"), "main;hot");
        assert_eq!(code_stack("main;hot"), "main;hot");
    }
}
