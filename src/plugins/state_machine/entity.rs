//! Entities: reading and initialising one, and listing a machine's entities.

use super::*;

impl StateMachines {
    pub(super) async fn read(
        &self,
        machine: &str,
        entity: &str,
    ) -> Result<EntityRecord, MachineError> {
        let rec = self
            .inner
            .states
            .get(&state_id(machine, entity))
            .await?
            .ok_or_else(|| MachineError::NotInitialized {
                machine: machine.into(),
                entity: entity.into(),
            })?;
        EntityRecord::parse(rec)
    }

    pub async fn state(&self, machine: &str, entity: &str) -> Result<EntityStatus, MachineError> {
        let def = self.definition(machine)?;
        let rec = self.read(machine, entity).await?;
        let state_def = def.states.get(&rec.state);
        Ok(EntityStatus {
            machine: machine.into(),
            entity: entity.into(),
            valid_events: state_def
                .map(|s| s.on.keys().cloned().collect())
                .unwrap_or_default(),
            is_final: state_def.is_some_and(|s| s.is_final()),
            state: rec.state,
            seq: rec.seq,
            entered_at: rec.entered_at,
            context: rec.context,
            deadline: rec.deadline,
        })
    }

    /// Creates the entity in the machine's initial state and runs that state's entry actions.
    pub async fn initialize(
        &self,
        machine: &str,
        entity: &str,
        context: Value,
    ) -> Result<EntityStatus, MachineError> {
        let def = self.definition(machine)?;
        let now = self.inner.clock.now();
        let context = if context.is_null() {
            json!({})
        } else {
            context
        };
        let deadline = deadline_for(&def, &def.initial_state, now, 0);
        let data = json!({
            "machine": machine, "entity": entity, "state": def.initial_state, "seq": 0,
            "context": context, "enteredAt": crate::types::time::rfc3339(now),
            "deadline": deadline, "recent": [],
        });
        let data = data.as_object().cloned().unwrap_or_default();
        match self
            .inner
            .states
            .insert(data, Some(&state_id(machine, entity)))
            .await
        {
            Ok(_) => {}
            Err(DbError::AlreadyExists { .. }) => {
                return Err(MachineError::AlreadyInitialized {
                    machine: machine.into(),
                    entity: entity.into(),
                })
            }
            Err(e) => return Err(e.into()),
        }
        let t = Transition {
            machine,
            entity,
            event: "init",
            from: "",
            to: &def.initial_state,
        };
        let entry = def
            .states
            .get(&def.initial_state)
            .map(|s| s.entry.0.clone())
            .unwrap_or_default();
        self.run_actions(&entry, &t, &context).await;
        if let Some(d) = &deadline {
            self.set_deadline(machine, entity, d).await;
        }
        self.emit(MachineEvent::EntityInitialized {
            machine: machine.into(),
            entity: entity.into(),
            state: def.initial_state.clone(),
        });
        self.state(machine, entity).await
    }

    /// Every entity of a machine, with its status.
    pub async fn entities(&self, machine: &str) -> Result<Vec<EntityRecordSummary>, MachineError> {
        let ids = self
            .inner
            .states
            .ids_with_prefix(&format!("{machine}:"))
            .await?;
        let records = self.inner.states.get_many(&ids).await?;
        Ok(records
            .into_iter()
            .filter_map(|r| EntityRecord::parse(r).ok())
            .filter(|r| r.record.data.get("machine").and_then(Value::as_str) == Some(machine))
            .map(|r| EntityRecordSummary {
                entity: r
                    .record
                    .data
                    .get("entity")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                state: r.state,
                entered_at: r.entered_at,
            })
            .collect())
    }
}
