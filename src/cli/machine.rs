//! `s3db-run machine …`: drive the manifest's state machines from the shell.

use serde_json::Value;

use super::exit;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: super::DatabaseArgs,
    #[command(subcommand)]
    pub command: MachineCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum MachineCommand {
    /// List the machines with their initial and other states.
    List {
        #[arg(long = "output", visible_alias = "format", value_enum, default_value_t = super::Output::Human)]
        output: super::Output,
    },
    /// Create an entity in the machine's initial state.
    Init {
        machine: String,
        entity: String,
        #[arg(long, value_name = "JSON")]
        context: Option<String>,
    },
    /// Send an event; prints the transition as JSON, or exits 1 with the reason it was refused.
    Send {
        machine: String,
        entity: String,
        event: String,
        #[arg(long, value_name = "JSON")]
        context: Option<String>,
        /// Sending the same id again returns the first result and changes nothing.
        #[arg(long = "event-id")]
        event_id: Option<String>,
    },
    /// Print an entity's state and the events it accepts, as JSON.
    State { machine: String, entity: String },
    /// Print an entity's transitions, newest first, as JSON lines.
    History {
        machine: String,
        entity: String,
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Print a machine as a Graphviz (dot) or Mermaid diagram.
    Graph {
        machine: String,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

pub fn run(args: &Args) -> u8 {
    super::block_on(run_async(args))
}

fn parse_context(text: Option<&str>) -> Result<Value, u8> {
    match text {
        None => Ok(Value::Object(Default::default())),
        Some(t) => serde_json::from_str(t).map_err(|e| {
            eprintln!("error: --context is not JSON: {e}");
            exit::USAGE
        }),
    }
}

async fn run_async(args: &Args) -> u8 {
    let (checked, runtime) = match args.target.runtime().await {
        Ok(built) => built,
        Err(code) => return code,
    };
    let m = &checked.manifest;
    let Some(machines) = runtime.machines else {
        eprintln!(
            "error: {} defines no state machines",
            args.target.manifest.display()
        );
        return exit::INVALID;
    };
    let context = match &args.command {
        MachineCommand::Init { context, .. } | MachineCommand::Send { context, .. } => {
            match parse_context(context.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            }
        }
        _ => Value::Null,
    };
    let print = |v: &dyn erased::Json| println!("{}", v.json());
    let outcome: Result<(), crate::plugins::state_machine::MachineError> = async {
        match &args.command {
            MachineCommand::List {
                output: super::Output::Json,
            } => {
                let list: Vec<Value> = m
                    .machines
                    .iter()
                    .map(|(name, def)| {
                        serde_json::json!({
                            "name": name,
                            "initialState": def.initial_state,
                            "states": def.states.keys().collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                println!("{}", Value::Array(list));
            }
            MachineCommand::List { .. } => {
                for (name, def) in &m.machines {
                    let states: Vec<&str> = def.states.keys().map(String::as_str).collect();
                    println!(
                        "{name}\tinitial={}\tstates={}",
                        def.initial_state,
                        states.join(",")
                    );
                }
            }
            MachineCommand::Init {
                machine, entity, ..
            } => print(&machines.initialize(machine, entity, context).await?),
            MachineCommand::Send {
                machine,
                entity,
                event,
                event_id,
                ..
            } => print(
                &machines
                    .send(machine, entity, event, context, event_id.as_deref())
                    .await?,
            ),
            MachineCommand::State { machine, entity } => {
                print(&machines.state(machine, entity).await?)
            }
            MachineCommand::History {
                machine,
                entity,
                limit,
                offset,
            } => {
                for entry in machines.history(machine, entity, *limit, *offset).await? {
                    println!("{entry}");
                }
            }
            MachineCommand::Graph { machine, format } => match format {
                GraphFormat::Dot => print!("{}", machines.graph_dot(machine)?),
                GraphFormat::Mermaid => print!("{}", machines.graph_mermaid(machine)?),
            },
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit::INVALID
        }
    }
}

/// Anything that prints as one JSON line.
mod erased {
    pub trait Json {
        fn json(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}
