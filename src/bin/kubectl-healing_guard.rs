//! `kubectl healing-guard`: the responder's view of incidents and the
//! runbook's actions from the command line (a kubectl plugin: put this
//! binary on PATH). It parses, calls the library and prints.

use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
};

use clap::{CommandFactory, Parser};
use healing_guard_operator::{
    crd::Incident,
    plugin::{
        self, Declaration, PluginError,
        cli::{Cli, Command},
        complete, connect, list,
        output::{self, Format},
        status,
        watch::{self, Update},
    },
};
use k8s_openapi::jiff::Timestamp;
use kube::{Api, ResourceExt};

/// The exit code of a watch stopped with Ctrl-C (128 + SIGINT), so a script
/// can tell it from a watch that saw the incident close.
const INTERRUPTED: u8 = 130;

async fn run(cli: Cli) -> Result<ExitCode, PluginError> {
    let client = connect::client(cli.kubeconfig.as_deref(), cli.context.as_deref()).await?;
    let namespace = cli
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let api: Api<Incident> = Api::namespaced(client.clone(), &namespace);
    let text = match cli.command {
        Command::List {
            all_namespaces,
            open,
            output,
        } => {
            let scope = list::Scope {
                namespace: (!all_namespaces).then_some(namespace),
                open_only: open,
            };
            let incidents = list::fetch(&client, &scope).await?;
            match output {
                Format::Text => list::render(&incidents, all_namespaces, Timestamp::now()),
                format => output::list_document(&incidents, format)?,
            }
        }
        Command::Status {
            name,
            watch: false,
            output,
        } => show(&plugin::get(&api, &name).await?, output)?,
        Command::Status {
            name,
            watch: true,
            output,
        } => return follow(&api, &name, output).await,
        Command::Declare {
            name,
            title,
            severity,
            incident_type,
            target,
            description,
            policy,
            rule,
        } => {
            let declaration = Declaration {
                name,
                title,
                severity,
                incident_type,
                target,
                description,
                policy,
                rule,
            };
            let incident = plugin::declare(&api, declaration).await?;
            format!("incident {} declared", incident.name_any())
        }
        Command::Ack { name, note } => {
            let me = plugin::whoami(&client).await?;
            plugin::ack(&api, &name, &me, note).await?;
            format!("incident {name} acknowledged by {me}")
        }
        Command::Approve { name, step } => {
            let me = plugin::whoami(&client).await?;
            if plugin::approve(&api, &name, &step, &me).await? {
                format!("step {step} of incident {name} approved by {me}")
            } else {
                format!(
                    "step {step} of incident {name} approved in advance by {me} (no step of that name is recorded yet)"
                )
            }
        }
        Command::Resolve {
            name,
            root_cause,
            summary,
            follow_ups,
        } => {
            let me = plugin::whoami(&client).await?;
            plugin::resolve(&api, &name, &me, &root_cause, &summary, &follow_ups).await?;
            format!("incident {name} resolved by {me}")
        }
        Command::ResumeSync { name } => {
            let me = plugin::whoami(&client).await?;
            let owner = plugin::resume_sync(&api, &name, &me).await?;
            format!(
                "incident {name}: {me} asked to resume {owner}; the operator lifts the hold and verifies the release"
            )
        }
        Command::Decline { name, reason } => {
            let me = plugin::whoami(&client).await?;
            plugin::decline(&api, &name, &me, &reason).await?;
            format!("incident {name} declined by {me}")
        }
        Command::Timeline { name } => plugin::timeline(&plugin::get(&api, &name).await?),
        Command::Report { name } => {
            let incident = plugin::get(&api, &name).await?;
            plugin::report_text(&client, &namespace, &incident).await?
        }
        // Answered before a client is made (see main).
        Command::Completion { .. } | Command::Test { .. } | Command::Replay { .. } => String::new(),
    };
    print(&format!("{}\n", text.trim_end()));
    Ok(ExitCode::SUCCESS)
}

/// Writes to stdout; a reader that went away (`| head`) is not an error
/// worth a panic, which is what `println!` makes of it.
fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn show(incident: &Incident, format: Format) -> Result<String, PluginError> {
    match format {
        Format::Text => Ok(status::render(incident, Timestamp::now())),
        format => output::document(incident, format),
    }
}

/// Prints the incident, then again on each change, until it closes (exit 0)
/// or Ctrl-C.
async fn follow(api: &Api<Incident>, name: &str, format: Format) -> Result<ExitCode, PluginError> {
    // On a terminal the view is redrawn in place; in a pipe, appended.
    let redraw = format == Format::Text && std::io::stdout().is_terminal();
    let mut printed = 0;
    let mut failed = None;
    let print = |update: &Update| {
        let text = match update {
            Update::Changed(incident) => match show(incident, format) {
                Ok(text) => text,
                Err(error) => {
                    failed.get_or_insert(error);
                    return;
                }
            },
            Update::Deleted => format!("incident {name} was deleted\n"),
        };
        let mut out = std::io::stdout().lock();
        let separator = match (redraw, format, printed) {
            (true, _, _) => "\x1b[H\x1b[2J",
            (false, _, 0) => "",
            (false, Format::Yaml, _) => "---\n",
            (false, _, _) => "\n",
        };
        let _ = write!(out, "{separator}{text}");
        let _ = out.flush();
        printed += 1;
    };
    tokio::select! {
        watched = watch::follow(api, name, print) => watched?,
        _ = tokio::signal::ctrl_c() => return Ok(ExitCode::from(INTERRUPTED)),
    }
    match failed {
        Some(error) => Err(error),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// kubectl's completion protocol: `__complete WORDS...`.
async fn complete(words: &[String]) -> String {
    let (offer, typed) = complete::offer(&Cli::command(), words);
    let mut found = offer.words;
    if let Some(lookup) = &offer.lookup {
        let partial = words.last().map(String::as_str).unwrap_or_default();
        found.extend(complete::look_up(lookup, &typed, partial).await);
    }
    complete::answer(&found, offer.files)
}

fn main() -> ExitCode {
    // kube's rustls needs a process-wide crypto provider: ring, as in the operator.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(complete::COMPLETE) {
        print(&runtime.block_on(complete(&args[2..])));
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    // Policy tests need no cluster.
    if let Command::Test {
        files,
        output,
        verbose,
    } = &cli.command
    {
        return healing_guard_operator::simulation::test(files, *output, *verbose).finish();
    }
    if let Command::Replay {
        policy,
        incidents,
        output,
    } = &cli.command
    {
        return healing_guard_operator::simulation::replay(policy, incidents, *output).finish();
    }
    if let Command::Completion { shell } = cli.command {
        let mut script = Vec::new();
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "kubectl-healing_guard",
            &mut script,
        );
        print(&String::from_utf8_lossy(&script));
        return ExitCode::SUCCESS;
    }
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
