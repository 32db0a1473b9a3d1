//! Completion: the scripts of `completion bash|zsh|fish` (clap_complete, from the same clap
//! definition as the parser, so they cannot drift), and `__complete`, the protocol kubectl
//! (>= 1.26) speaks with a plugin's `kubectl_complete-eagle` for `kubectl eagle <TAB>`: the
//! words after `eagle` come as arguments, the last one being the word under the cursor; the
//! answer is one candidate a line (`value<TAB>description`), then `:DIRECTIVE` (cobra's bit set).
//!
//! What is static (subcommands, flags, their possible values) is answered here from clap's
//! definition; what lives in the cluster (`TYPE/NAME`, run ids) becomes a [`CompletionPlan`]
//! that `commands::complete` answers from the API.

use clap::{Arg, Args, Command, ValueEnum};

use crate::cluster::api::Connection;
use crate::commands::complete::{Candidate, CompletionPlan, Directive, Lookup};

/// The shells `completion` writes a script for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to write the script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

impl CompletionArgs {
    /// The script, for the name the shell sees (`kubectl-eagle`; `kubectl eagle` goes through
    /// kubectl's own completion and `kubectl_complete-eagle`).
    pub fn script(&self, mut cli: Command) -> Vec<u8> {
        let name = "kubectl-eagle";
        let mut out = Vec::new();
        match self.shell {
            Shell::Bash => {
                // clap_complete 4.6's bash script names a subcommand's case arm after the bin
                // name with `-` replaced twice over (`kubectl__subcmd__eagle__subcmd__list`)
                // but looks it up once (`kubectl__eagle__subcmd__list`), so no subcommand of a
                // hyphenated name completes its flags. Generated for `kubectl_eagle`, the two
                // agree; only the command `complete` registers is then renamed. Its word lists
                // also offer hidden subcommands: `__complete` is taken out of them.
                clap_complete::generate(clap_complete::Shell::Bash, &mut cli, "kubectl_eagle", &mut out);
                let script = String::from_utf8(out).expect("clap_complete writes UTF-8");
                let script: Vec<String> = script
                    .lines()
                    .map(|line| match line.trim_start() {
                        l if l.starts_with("complete -F ") => line.replace(" kubectl_eagle", &format!(" {name}")),
                        l if l.starts_with("opts=") => line.replace(" __complete", ""),
                        _ => line.to_owned(),
                    })
                    .collect();
                return (script.join("\n") + "\n").into_bytes();
            }
            Shell::Zsh => clap_complete::generate(clap_complete::Shell::Zsh, &mut cli, name, &mut out),
            Shell::Fish => clap_complete::generate(clap_complete::Shell::Fish, &mut cli, name, &mut out),
        }
        out
    }
}

#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct CompleteArgs {
    /// The words after `kubectl eagle`; the last is the one being completed.
    #[arg(num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub words: Vec<String>,
}

/// The kinds `TYPE/NAME` accepts, as completion offers them.
const TARGET_KINDS: [&str; 9] =
    ["pod", "deployment", "statefulset", "daemonset", "replicaset", "job", "service", "namespace", "pid"];

impl CompleteArgs {
    /// The plan, from the words and the definition of the whole command line, `cli`.
    pub fn into_plan(self, cli: Command) -> CompletionPlan {
        plan(cli, self.words)
    }
}

/// Walks the words through clap's definition: which subcommand, which flag wants a value,
/// which positional is being typed.
fn plan(mut root: Command, mut words: Vec<String>) -> CompletionPlan {
    root.build(); // adds --help and --version
    let partial = words.pop().unwrap_or_default();
    let mut cmd = &root;
    let mut conn = Connection::default();
    let mut namespace = None;
    let mut eagle_namespace = "kube-eagle".to_owned();
    let mut positionals = 0;
    let mut pending: Option<&Arg> = None; // a flag whose value is the next word
    let mut after_dashes = false;
    for word in &words {
        if let Some(flag) = pending.take() {
            match flag.get_id().as_str() {
                "kubeconfig" => conn.kubeconfig = Some(word.into()),
                "context" => conn.context = Some(word.clone()),
                "namespace" => namespace = Some(word.clone()),
                "eagle_namespace" => eagle_namespace = word.clone(),
                "as_user" => conn.impersonate_user = Some(word.clone()),
                "as_group" => conn.impersonate_groups.push(word.clone()),
                _ => {}
            }
            continue;
        }
        if after_dashes {
            continue;
        }
        if word == "--" {
            after_dashes = true;
            continue;
        }
        if let Some(flag) = word.strip_prefix("--") {
            let (name, value) = flag.split_once('=').map_or((flag, None), |(n, v)| (n, Some(v)));
            if let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(name)) {
                match value {
                    Some(v) => match arg.get_id().as_str() {
                        "kubeconfig" => conn.kubeconfig = Some(v.into()),
                        "context" => conn.context = Some(v.to_owned()),
                        "namespace" => namespace = Some(v.to_owned()),
                        "eagle_namespace" => eagle_namespace = v.to_owned(),
                        "as_user" => conn.impersonate_user = Some(v.to_owned()),
                        "as_group" => conn.impersonate_groups.push(v.to_owned()),
                        _ => {}
                    },
                    None if takes_value(arg) => pending = Some(arg),
                    None => {}
                }
            }
            continue;
        }
        if word.len() == 2 && word.starts_with('-') {
            let short = word.chars().nth(1);
            if let Some(arg) = cmd.get_arguments().find(|a| a.get_short() == short) {
                if takes_value(arg) {
                    pending = Some(arg);
                }
            }
            continue;
        }
        if word.starts_with('-') {
            continue; // -d10s, -abc: a value attached, or flags together
        }
        match cmd.find_subcommand(word) {
            Some(sub) if positionals == 0 && cmd.has_subcommands() => cmd = sub,
            _ => positionals += 1,
        }
    }
    if after_dashes {
        return CompletionPlan::fixed(Vec::new(), Directive::DEFAULT); // a command line to run
    }
    if let Some(flag) = pending {
        let values = possible_values(flag);
        if values.is_empty() {
            return CompletionPlan::fixed(Vec::new(), Directive::DEFAULT); // a path, a name: the shell's
        }
        return CompletionPlan::fixed(filter(values, &partial), Directive::NO_FILE);
    }
    if partial.starts_with('-') {
        let flags = cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| Some(Candidate::new(format!("--{}", a.get_long()?), help(a))));
        return CompletionPlan::fixed(filter(flags.collect(), &partial), Directive::NO_FILE);
    }
    if cmd.has_subcommands() {
        let subs = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| Candidate::new(s.get_name().to_owned(), s.get_about().map(|a| a.to_string())));
        return CompletionPlan::fixed(filter(subs.collect(), &partial), Directive::NO_FILE);
    }
    match cmd.get_name() {
        "profile" => match partial.split_once('/') {
            None => {
                let kinds = TARGET_KINDS.iter().map(|k| Candidate::new(format!("{k}/"), None)).collect();
                CompletionPlan::fixed(filter(kinds, &partial), Directive::NO_FILE | Directive::NO_SPACE)
            }
            Some((kind, prefix)) => CompletionPlan {
                candidates: Vec::new(),
                directive: Directive::NO_FILE,
                lookup: Some(Lookup::Targets { conn, namespace, kind: kind.to_owned(), prefix: prefix.to_owned() }),
            },
        },
        "fetch" | "clean" => CompletionPlan {
            candidates: Vec::new(),
            directive: Directive::NO_FILE,
            lookup: Some(Lookup::Runs { conn, eagle_namespace, prefix: partial }),
        },
        _ => {
            let positional = cmd.get_positionals().nth(positionals);
            match positional.map(possible_values) {
                Some(values) if !values.is_empty() => {
                    CompletionPlan::fixed(filter(values, &partial), Directive::NO_FILE)
                }
                Some(_) => CompletionPlan::fixed(Vec::new(), Directive::DEFAULT), // a file
                None => CompletionPlan::fixed(Vec::new(), Directive::NO_FILE),
            }
        }
    }
}

fn takes_value(arg: &Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.takes_values()) || arg.get_action().takes_values()
}

fn possible_values(arg: &Arg) -> Vec<Candidate> {
    arg.get_possible_values()
        .into_iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| Candidate::new(v.get_name().to_owned(), v.get_help().map(|h| h.to_string())))
        .collect()
}

fn help(arg: &Arg) -> Option<String> {
    arg.get_help().map(|h| h.to_string().lines().next().unwrap_or_default().to_owned())
}

fn filter(candidates: Vec<Candidate>, partial: &str) -> Vec<Candidate> {
    candidates.into_iter().filter(|c| c.value.starts_with(partial)).collect()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::args::Cli;

    fn complete(words: &[&str]) -> CompletionPlan {
        plan(Cli::command(), words.iter().map(|w| (*w).to_owned()).collect())
    }

    fn values(plan: &CompletionPlan) -> Vec<&str> {
        plan.candidates.iter().map(|c| c.value.as_str()).collect()
    }

    #[test]
    fn subcommands_and_flags_come_from_the_parser() {
        let plan = complete(&["pro"]);
        assert_eq!(values(&plan), ["profile"]);
        assert_eq!(plan.directive, Directive::NO_FILE);
        assert!(complete(&[""]).candidates.iter().all(|c| c.value != "__complete"), "hidden stays hidden");
        assert_eq!(values(&complete(&["list", "--out"])), ["--output"]);
        assert_eq!(values(&complete(&["fetch", "--group-by", "wo"])), ["workload"]);
        assert_eq!(values(&complete(&["completion", "b"])), ["bash"]);
    }

    #[test]
    fn a_flag_value_and_a_file_go_to_the_shell() {
        assert_eq!(complete(&["profile", "-o", ""]).directive, Directive::DEFAULT);
        assert_eq!(complete(&["check", ""]).directive, Directive::DEFAULT);
        assert_eq!(complete(&["profile", "--", "./ser"]).directive, Directive::DEFAULT);
    }

    #[test]
    fn targets_are_kinds_then_names_from_the_cluster() {
        let kinds = complete(&["profile", "-d", "5s", "dep"]);
        assert_eq!(values(&kinds), ["deployment/"]);
        assert_eq!(kinds.directive, Directive::NO_FILE | Directive::NO_SPACE);
        let names = complete(&["profile", "-n", "shop", "--context=prod", "deployment/a"]);
        match names.lookup {
            Some(Lookup::Targets { conn, namespace, kind, prefix }) => {
                assert_eq!(conn.context.as_deref(), Some("prod"));
                assert_eq!(namespace.as_deref(), Some("shop"));
                assert_eq!((kind.as_str(), prefix.as_str()), ("deployment", "a"));
            }
            other => panic!("{other:?}"),
        }
        match complete(&["fetch", "--eagle-namespace", "prof", "9e"]).lookup {
            Some(Lookup::Runs { eagle_namespace, prefix, .. }) => {
                assert_eq!((eagle_namespace.as_str(), prefix.as_str()), ("prof", "9e"))
            }
            other => panic!("{other:?}"),
        }
    }
}
