//! Hooks: the built-in guards and actions, and shell hooks, behind one runner. Every plugin
//! (state machines, scheduler, backup callbacks) runs its hooks through `HookRunner`.

pub mod builtins;
pub mod input;
pub mod runner;
pub mod shell;
pub mod template;

pub use input::{GuardDecision, HookInput, HookKind, Transition};
pub use runner::{
    BackupOps, HookError, HookRunner, MachineOps, OpsError, PluginSet, Plugins, ResolvedHook,
};
