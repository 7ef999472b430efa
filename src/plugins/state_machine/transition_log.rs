//! The transition log: its retention and the history of an entity.

use super::*;

impl StateMachines {
    /// Applies `transitionRetention` after transition `seq` committed: removes the entry
    /// `maxPerEntity` before it. Far behind the entity's state, it plays no part in roll-forward
    /// (which only reads `seq + 1`). A failure only leaves an entry behind, so it is logged.
    pub(super) async fn trim_log(&self, machine: &str, entity: &str, seq: u64) {
        let (Some(log), Some(retention)) =
            (&self.inner.log, &self.inner.config.transition_retention)
        else {
            return;
        };
        let Some(old) = seq.checked_sub(retention.max_per_entity).filter(|s| *s > 0) else {
            return;
        };
        if let Err(e) = log.delete(&log_id(machine, entity, old), None).await {
            tracing::warn!(machine, entity, seq = old, error = %e, "could not trim the transition log");
        }
    }

    /// Transitions of an entity, newest first.
    pub async fn history(
        &self,
        machine: &str,
        entity: &str,
        limit: Option<usize>,
        offset: usize,
    ) -> Result<Vec<Value>, MachineError> {
        self.definition(machine)?;
        let Some(log) = &self.inner.log else {
            return Ok(Vec::new());
        };
        let prefix = format!("{}:", state_id(machine, entity));
        let mut ids: Vec<String> = log
            .ids_with_prefix(&prefix)
            .await?
            .into_iter()
            .filter(|id| id[prefix.len()..].bytes().all(|b| b.is_ascii_digit()))
            .collect();
        ids.reverse();
        let page: Vec<String> = ids
            .into_iter()
            .skip(offset)
            .take(limit.unwrap_or(usize::MAX))
            .collect();
        Ok(log
            .get_many(&page)
            .await?
            .into_iter()
            .map(|r| r.to_json())
            .collect())
    }
}
