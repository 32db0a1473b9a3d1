//! What the agent is asked to profile: processes, containers or pods, as the CLI names them.

use std::fmt;

/// One requested target, written `pid:42`, `container:<id>` or `pod:<uid>` on the command line.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Pid(u32),
    /// A container id, bare hex, as found in cgroup paths (the `containerd://` style scheme of
    /// a pod's `containerID` is stripped when parsing).
    Container(String),
    /// A pod uid with dashes, as in `metadata.uid`.
    Pod(String),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a target: {reason} (expected pid:N, container:ID or pod:UID)")]
pub struct ParseTargetError {
    pub input: String,
    pub reason: &'static str,
}

impl std::str::FromStr for Target {
    type Err = ParseTargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseTargetError { input: s.to_owned(), reason };
        let (kind, value) = s.split_once(':').ok_or_else(|| err("missing `KIND:`"))?;
        match kind {
            "pid" => match value.parse::<u32>() {
                Ok(0) | Err(_) => Err(err("a pid is a positive number")),
                Ok(pid) => Ok(Target::Pid(pid)),
            },
            "container" => {
                // "containerd://abc", "docker://abc", "cri-o://abc" -> "abc"
                let id = value.rsplit_once("://").map_or(value, |(_, id)| id).trim_start_matches("//");
                if id.len() < 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(err("a container id is at least 12 hex digits"));
                }
                Ok(Target::Container(id.to_ascii_lowercase()))
            }
            "pod" => {
                let ok = value.len() == 36 && value.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
                if !ok {
                    return Err(err("a pod uid looks like 8-4-4-4-12 hex digits"));
                }
                Ok(Target::Pod(value.to_ascii_lowercase()))
            }
            _ => Err(err("unknown kind")),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Pid(p) => write!(f, "pid:{p}"),
            Target::Container(id) => write!(f, "container:{id}"),
            Target::Pod(uid) => write!(f, "pod:{uid}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_the_cli_sends() {
        assert_eq!("pid:42".parse(), Ok(Target::Pid(42)));
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        for form in [
            format!("container:{id}"),
            format!("container:containerd://{id}"),
            format!("container:docker://{id}"),
            format!("container:cri-o://{id}"),
        ] {
            assert_eq!(form.parse(), Ok(Target::Container(id.into())), "{form}");
        }
        let uid = "5b9e6f8a-1c2d-4e3f-8a9b-0c1d2e3f4a5b";
        assert_eq!(format!("pod:{uid}").parse(), Ok(Target::Pod(uid.into())));
    }

    #[test]
    fn rejects_nonsense_with_a_reason() {
        for bad in ["42", "pid:0", "pid:-1", "pid:x", "container:xyz", "pod:1234", "node:a"] {
            let e = bad.parse::<Target>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
