//! Hooks: the built-in guards and actions, and shell hooks, behind one runner.

pub mod builtins;
