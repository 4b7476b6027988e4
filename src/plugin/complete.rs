//! Shell completion. `completion bash|zsh|fish` prints clap's script for
//! the binary itself; `__complete WORDS...` answers kubectl (1.26 and later),
//! which runs `kubectl_complete-healing_guard WORDS...` for
//! `kubectl healing-guard <TAB>` and reads the answer in cobra's format.
//! What to offer is decided from the command tree (pure); incident names,
//! namespaces and contexts are looked up only when the word calls for them.

use std::{fmt::Write, path::Path};

use clap::{Arg, Command};
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, api::ListParams, config::Kubeconfig};

use crate::crd::Incident;

/// The hidden subcommand kubectl's completion calls.
pub const COMPLETE: &str = "__complete";

/// Cobra's directive: offer only these, no file names.
const NO_FILES: u8 = 4;
/// Cobra's directive: the shell's own completion (file names).
const DEFAULT: u8 = 0;

/// What the word being completed can be.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Offer {
    /// Words known from the command tree, with a description.
    pub words: Vec<(String, String)>,
    /// Values only the cluster or the kubeconfig knows.
    pub lookup: Option<Lookup>,
    /// A path: let the shell complete file names.
    pub files: bool,
}

/// Values to look up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Incidents,
    /// The steps of this incident waiting for approval.
    Steps(String),
    Namespaces,
    Contexts,
}

/// The flags that choose the cluster, read from the words typed so far,
/// so a lookup asks the cluster the command will.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Typed {
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub all_namespaces: bool,
}

/// What to offer for the last of `words` (the one being typed; empty after
/// a space), and the cluster flags typed before it.
pub fn offer(root: &Command, words: &[String]) -> (Offer, Typed) {
    let (partial, before) = match words.split_last() {
        Some((last, before)) => (last.as_str(), before),
        None => ("", &[][..]),
    };
    // Built, clap has given each command its help flag and the global ones.
    let mut root = root.clone();
    root.build();
    let root = &root;
    let mut command = root;
    let mut positionals: Vec<&str> = Vec::new();
    let mut typed = Typed::default();
    let mut pending: Option<&Arg> = None;
    for word in before {
        if let Some(arg) = pending.take() {
            remember(&mut typed, arg, word);
            continue;
        }
        if word.starts_with('-') && word.len() > 1 {
            let (flag, value) = match word.split_once('=') {
                Some((flag, value)) => (flag, Some(value)),
                None => (word.as_str(), None),
            };
            let Some(arg) = find_flag(command, flag) else {
                continue;
            };
            if !takes_value(arg) {
                if arg.get_id() == "all_namespaces" {
                    typed.all_namespaces = true;
                }
            } else if let Some(value) = value {
                remember(&mut typed, arg, value);
            } else {
                pending = Some(arg);
            }
            continue;
        }
        if positionals.is_empty()
            && let Some(sub) = command.find_subcommand(word)
        {
            command = sub;
            continue;
        }
        positionals.push(word);
    }

    let offer = if let Some(arg) = pending {
        values_of(arg)
    } else if partial.starts_with('-') {
        let mut words: Vec<(String, String)> = command
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| Some((format!("--{}", a.get_long()?), help(a))))
            .collect();
        words.sort();
        words.dedup();
        Offer {
            words,
            ..Offer::default()
        }
    } else if command.has_subcommands() && positionals.is_empty() {
        Offer {
            words: command
                .get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(|s| {
                    let about = s.get_about().map(|a| a.to_string()).unwrap_or_default();
                    (s.get_name().to_owned(), about)
                })
                .collect(),
            ..Offer::default()
        }
    } else {
        let positional = command.get_positionals().nth(positionals.len());
        match (positional, positionals.first()) {
            (Some(arg), _) if arg.get_id() == "name" => Offer {
                lookup: Some(Lookup::Incidents),
                ..Offer::default()
            },
            // approve NAME <STEP>: the steps that incident holds for approval.
            (Some(arg), Some(incident)) if arg.get_id() == "step" => Offer {
                lookup: Some(Lookup::Steps((*incident).to_owned())),
                ..Offer::default()
            },
            (Some(arg), _) => values_of(arg),
            (None, _) => Offer::default(),
        }
    };
    let words = offer
        .words
        .into_iter()
        .filter(|(word, _)| word.starts_with(partial))
        .collect();
    (Offer { words, ..offer }, typed)
}

fn find_flag<'a>(command: &'a Command, flag: &str) -> Option<&'a Arg> {
    let matches = |a: &&Arg| match flag.strip_prefix("--") {
        Some(long) => a.get_long() == Some(long),
        None => flag
            .strip_prefix('-')
            .and_then(|s| s.chars().next())
            .is_some_and(|c| a.get_short() == Some(c)),
    };
    command.get_arguments().find(matches)
}

fn takes_value(arg: &Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.takes_values())
}

fn remember(typed: &mut Typed, arg: &Arg, value: &str) {
    let slot = match arg.get_id().as_str() {
        "kubeconfig" => &mut typed.kubeconfig,
        "context" => &mut typed.context,
        "namespace" => &mut typed.namespace,
        _ => return,
    };
    *slot = Some(value.to_owned());
}

fn values_of(arg: &Arg) -> Offer {
    let lookup = match arg.get_id().as_str() {
        "namespace" => Some(Lookup::Namespaces),
        "context" => Some(Lookup::Contexts),
        "kubeconfig" => {
            return Offer {
                files: true,
                ..Offer::default()
            };
        }
        _ => None,
    };
    Offer {
        words: arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| {
                let help = v.get_help().map(|h| h.to_string()).unwrap_or_default();
                (v.get_name().to_owned(), help)
            })
            .collect(),
        lookup,
        files: false,
    }
}

fn help(arg: &Arg) -> String {
    let text = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
    // One line: the shells show descriptions beside the word.
    text.lines().next().unwrap_or_default().to_owned()
}

/// The answer as cobra writes it: one `word\tdescription` a line, then
/// `:directive`.
pub fn answer(words: &[(String, String)], files: bool) -> String {
    let mut out = String::new();
    for (word, description) in words {
        if description.is_empty() {
            let _ = writeln!(out, "{word}");
        } else {
            let _ = writeln!(out, "{word}\t{description}");
        }
    }
    let _ = writeln!(out, ":{}", if files { DEFAULT } else { NO_FILES });
    out
}

/// The values a lookup finds, beginning with `partial`. Completion must
/// never fail loudly: what cannot be read offers nothing.
pub async fn look_up(lookup: &Lookup, typed: &Typed, partial: &str) -> Vec<(String, String)> {
    let found = match lookup {
        Lookup::Contexts => contexts(typed.kubeconfig.as_deref()),
        Lookup::Namespaces | Lookup::Incidents | Lookup::Steps(_) => {
            names(lookup, typed).await.unwrap_or_default()
        }
    };
    found
        .into_iter()
        .filter(|(word, _)| word.starts_with(partial))
        .collect()
}

fn contexts(path: Option<&str>) -> Vec<(String, String)> {
    let file = match path {
        Some(path) => Kubeconfig::read_from(Path::new(path)),
        None => Kubeconfig::read(),
    };
    file.map(|f| {
        f.contexts
            .into_iter()
            .map(|c| (c.name, String::new()))
            .collect()
    })
    .unwrap_or_default()
}

async fn names(lookup: &Lookup, typed: &Typed) -> Option<Vec<(String, String)>> {
    let client: Client = super::connect::client(
        typed.kubeconfig.as_deref().map(Path::new),
        typed.context.as_deref(),
    )
    .await
    .ok()?;
    let list = ListParams::default();
    let namespace = typed
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let incidents = Api::<Incident>::namespaced(client.clone(), &namespace);
    Some(match lookup {
        Lookup::Namespaces => Api::<Namespace>::all(client)
            .list_metadata(&list)
            .await
            .ok()?
            .items
            .into_iter()
            .filter_map(|n| Some((n.metadata.name?, String::new())))
            .collect(),
        Lookup::Steps(name) => {
            let incident = incidents.get(name).await.ok()?;
            super::status::awaiting_approval(&incident)
                .into_iter()
                .map(|step| {
                    let about = format!("{}, round {}", step.action, step.attempt);
                    (step.name.clone(), about)
                })
                .collect()
        }
        // Read from the kubeconfig, never the cluster.
        Lookup::Contexts => return None,
        Lookup::Incidents => {
            let mut incidents = incidents.list(&list).await.ok()?.items;
            super::list::order(&mut incidents);
            incidents
                .iter()
                .map(|i| {
                    let about = format!(
                        "{} {} {}",
                        i.spec.severity,
                        super::status::phase(i),
                        i.spec.title
                    );
                    (kube::ResourceExt::name_any(i), about)
                })
                .collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::plugin::cli::Cli;

    fn offered(words: &[&str]) -> (Offer, Typed) {
        let words: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
        offer(&Cli::command(), &words)
    }

    fn words(offer: &Offer) -> Vec<&str> {
        offer.words.iter().map(|(w, _)| w.as_str()).collect()
    }

    #[test]
    fn the_first_word_is_a_command() {
        let (offer, _) = offered(&[""]);
        assert_eq!(
            words(&offer),
            [
                "list",
                "status",
                "declare",
                "ack",
                "approve",
                "resolve",
                "resume-sync",
                "decline",
                "timeline",
                "report",
                "test",
                "replay",
                "completion",
                "help"
            ]
        );
        let (offer, _) = offered(&["a"]);
        assert_eq!(words(&offer), ["ack", "approve"]);
        assert_eq!(offer.words[0].1, "Acknowledge an incident as yourself");
        assert_eq!(offer.lookup, None);
    }

    #[test]
    fn a_name_is_looked_up_in_the_namespace_and_context_typed() {
        let (offer, typed) = offered(&["--context", "prod", "approve", "-n", "shop", "api"]);
        assert_eq!(offer.lookup, Some(Lookup::Incidents));
        assert_eq!(
            typed,
            Typed {
                context: Some("prod".into()),
                namespace: Some("shop".into()),
                ..Typed::default()
            }
        );
        // The second word of approve is a step of that incident.
        let (offer, _) = offered(&["approve", "api-outage", ""]);
        assert_eq!(offer.lookup, Some(Lookup::Steps("api-outage".into())));
        // And there is no third.
        let (offer, _) = offered(&["approve", "api-outage", "scale", ""]);
        assert_eq!(offer, Offer::default());
        let (offer, typed) = offered(&["--kubeconfig=/tmp/kc", "status", "-w", ""]);
        assert_eq!(offer.lookup, Some(Lookup::Incidents));
        assert_eq!(typed.kubeconfig.as_deref(), Some("/tmp/kc"));
    }

    #[test]
    fn flag_values_come_from_the_flag() {
        let (offer, _) = offered(&["list", "-o", ""]);
        assert_eq!(words(&offer), ["text", "json", "yaml"]);
        let (offer, _) = offered(&["status", "api", "--output", "y"]);
        assert_eq!(words(&offer), ["yaml"]);
        let (offer, _) = offered(&["list", "-n", ""]);
        assert_eq!(offer.lookup, Some(Lookup::Namespaces));
        let (offer, _) = offered(&["--context", ""]);
        assert_eq!(offer.lookup, Some(Lookup::Contexts));
        let (offer, _) = offered(&["--kubeconfig", ""]);
        assert!(offer.files);
        let (offer, _) = offered(&["completion", ""]);
        assert_eq!(
            words(&offer),
            ["bash", "elvish", "fish", "powershell", "zsh"]
        );
    }

    #[test]
    fn flags_are_the_command_s_and_the_global_ones() {
        let (offer, _) = offered(&["list", "--"]);
        assert_eq!(
            words(&offer),
            [
                "--all-namespaces",
                "--context",
                "--help",
                "--kubeconfig",
                "--namespace",
                "--open",
                "--output"
            ]
        );
    }

    #[test]
    fn the_answer_is_in_cobra_s_format() {
        let found = vec![
            ("api-outage".to_owned(), "P0 Mitigating API down".to_owned()),
            ("db".to_owned(), String::new()),
        ];
        assert_eq!(
            answer(&found, false),
            "api-outage\tP0 Mitigating API down\ndb\n:4\n"
        );
        assert_eq!(answer(&[], true), ":0\n");
    }
}
