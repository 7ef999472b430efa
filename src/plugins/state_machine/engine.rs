//! Sending an event: the guard, the write-ahead commit of the state and its log entry, rolling an interrupted transition forward, and the actions after it.

use super::*;

impl StateMachines {
    /// Sends an event. With `event_id`, sending the same id again returns the first result and
    /// changes nothing.
    pub async fn send(
        &self,
        machine: &str,
        entity: &str,
        event: &str,
        context: Value,
        event_id: Option<&str>,
    ) -> Result<TransitionResult, MachineError> {
        let mut attempts = crate::types::cas::Attempts::new();
        while attempts.next().await {
            let def = self.definition(machine)?;
            let rec = self.read(machine, entity).await?;
            if let Some(id) = event_id {
                if let Some(prev) = rec
                    .recent
                    .iter()
                    .find(|r| r.event_id.as_deref() == Some(id))
                {
                    return Ok(TransitionResult {
                        replayed: true,
                        ..prev.clone()
                    });
                }
            }
            if let Some(d) = rec
                .deadline
                .clone()
                .filter(|d| d.seq == rec.seq && deadline_due(d, self.inner.clock.now()))
            {
                // The entity's time in this state ran out before this event: that comes first.
                self.commit(
                    &def,
                    &rec,
                    &d.target,
                    &format!("after({})", d.after),
                    &Value::Null,
                    None,
                )
                .await?;
                continue;
            }
            let state_def = def.states.get(&rec.state);
            if state_def.is_some_and(|s| s.is_final()) {
                return Err(MachineError::FinalState {
                    machine: machine.into(),
                    entity: entity.into(),
                    state: rec.state,
                });
            }
            let Some(target) = state_def.and_then(|s| s.on.get(event)).cloned() else {
                return Err(MachineError::InvalidEvent {
                    machine: machine.into(),
                    entity: entity.into(),
                    state: rec.state.clone(),
                    event: event.into(),
                    valid: state_def
                        .map(|s| s.on.keys().cloned().collect::<Vec<_>>().join(", "))
                        .filter(|v| !v.is_empty())
                        .unwrap_or_else(|| "none".into()),
                });
            };
            if let Some(guard) = state_def.and_then(|s| s.guards.get(event)) {
                let t = Transition {
                    machine,
                    entity,
                    event,
                    from: &rec.state,
                    to: &target,
                };
                let input = HookInput::for_transition(
                    guard.as_str(),
                    HookKind::Guard,
                    &t,
                    merge_context(&rec.context, &context),
                );
                let decision = match self
                    .inner
                    .hooks
                    .resolve(&HookRef::Named(guard.clone()), BuiltinKind::Guard)
                {
                    Ok(hook) => self.inner.hooks.guard(&hook, &input).await,
                    Err(e) => Err(e),
                };
                match decision {
                    Ok(GuardDecision::Allow) => {}
                    Ok(GuardDecision::Deny { reason }) => {
                        return Err(MachineError::GuardDenied {
                            guard: guard.clone(),
                            event: event.into(),
                            reason,
                        })
                    }
                    Err(e) => {
                        return Err(MachineError::GuardFailed {
                            guard: guard.clone(),
                            event: event.into(),
                            error: e.to_string(),
                        })
                    }
                }
            }
            match self
                .commit(&def, &rec, &target, event, &context, event_id)
                .await?
            {
                Commit::Done(result) => return Ok(*result),
                Commit::Lost => continue,
            }
        }
        Err(MachineError::Contention {
            machine: machine.into(),
            entity: entity.into(),
        })
    }

    /// Writes the log entry (create-only) and the new state (compare-and-swap); the winner runs
    /// the actions.
    pub(super) async fn commit(
        &self,
        def: &MachineDef,
        rec: &EntityRecord,
        target: &str,
        event: &str,
        context: &Value,
        event_id: Option<&str>,
    ) -> Result<Commit, MachineError> {
        let machine = rec.text("machine").to_string();
        let entity = rec.text("entity").to_string();
        let seq = rec.seq + 1;
        let now = self.inner.clock.now();
        let timestamp = crate::types::time::rfc3339(now);
        let merged = merge_context(&rec.context, context);
        let result = TransitionResult {
            machine: machine.clone(),
            entity: entity.clone(),
            from: rec.state.clone(),
            to: target.to_string(),
            event: event.to_string(),
            timestamp: timestamp.clone(),
            seq,
            event_id: event_id.map(str::to_string),
            action_errors: Vec::new(),
            replayed: false,
        };
        if let Some(log) = &self.inner.log {
            let entry = json!({
                "machine": machine, "entity": entity, "seq": seq, "from": rec.state, "to": target,
                "event": event, "eventId": event_id, "timestamp": timestamp, "context": context,
                "actionErrors": [],
            });
            match log
                .insert(
                    entry.as_object().cloned().unwrap_or_default(),
                    Some(&log_id(&machine, &entity, seq)),
                )
                .await
            {
                Ok(_) => {}
                Err(DbError::AlreadyExists { .. }) => {
                    self.roll_forward(def, rec).await?;
                    return Ok(Commit::Lost);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let data = self.next_state(def, rec, &result, now);
        match self.inner.states.replace(&rec.record, data).await {
            Ok(_) => {}
            Err(DbError::Conflict { .. }) if self.inner.log.is_some() => {
                // Our log entry owns `seq`; the state can only have moved to it by another
                // sender rolling our entry forward, and that sender ran the actions.
                return Ok(Commit::Done(Box::new(result)));
            }
            Err(DbError::Conflict { .. }) => return Ok(Commit::Lost),
            Err(e) => return Err(e.into()),
        }
        self.trim_log(&machine, &entity, seq).await;
        self.left_deadline(rec).await;
        let errors = self.after_commit(def, &result, &merged).await;
        if !errors.is_empty() {
            if let Some(log) = &self.inner.log {
                let patch = json!({ "actionErrors": errors })
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                if let Err(e) = log
                    .update(&log_id(&machine, &entity, seq), &patch, None)
                    .await
                {
                    tracing::warn!(error = %e, "could not record action errors on the transition log");
                }
            }
        }
        Ok(Commit::Done(Box::new(TransitionResult {
            action_errors: errors,
            ..result
        })))
    }

    pub(super) fn next_state(
        &self,
        def: &MachineDef,
        rec: &EntityRecord,
        result: &TransitionResult,
        now: DateTime<Utc>,
    ) -> Map<String, Value> {
        let mut recent: Vec<Value> = rec
            .recent
            .iter()
            .filter(|r| r.event_id.is_some())
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .collect();
        if result.event_id.is_some() {
            recent.push(serde_json::to_value(result).unwrap_or_default());
        }
        let skip = recent.len().saturating_sub(EVENT_ID_WINDOW);
        let recent: Vec<Value> = recent.into_iter().skip(skip).collect();
        let mut data = rec.record.data.clone();
        data.insert("state".into(), Value::String(result.to.clone()));
        data.insert("seq".into(), Value::from(result.seq));
        data.insert("enteredAt".into(), Value::String(result.timestamp.clone()));
        data.insert("lastEvent".into(), Value::String(result.event.clone()));
        data.insert(
            "deadline".into(),
            serde_json::to_value(deadline_for(def, &result.to, now, result.seq))
                .unwrap_or(Value::Null),
        );
        data.insert("recent".into(), Value::Array(recent));
        data
    }

    /// Completes a transition whose log entry exists but whose state write never happened.
    pub(super) async fn roll_forward(
        &self,
        def: &MachineDef,
        rec: &EntityRecord,
    ) -> Result<(), MachineError> {
        let Some(log) = &self.inner.log else {
            return Ok(());
        };
        let machine = rec.text("machine");
        let entity = rec.text("entity");
        let Some(entry) = log.get(&log_id(machine, entity, rec.seq + 1)).await? else {
            return Ok(());
        };
        let Some(result) = recent_from_json(&entry.to_json()) else {
            return Err(MachineError::Corrupt(
                entry.id.clone(),
                "unreadable transition log entry".into(),
            ));
        };
        if result.from != rec.state {
            return Err(MachineError::Corrupt(
                entry.id.clone(),
                format!("log says from `{}`, state is `{}`", result.from, rec.state),
            ));
        }
        let at = DateTime::parse_from_rfc3339(&result.timestamp)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|_| self.inner.clock.now());
        let data = self.next_state(def, rec, &result, at);
        match self.inner.states.replace(&rec.record, data).await {
            Ok(_) => {
                tracing::info!(
                    machine,
                    entity,
                    seq = result.seq,
                    "rolled an interrupted transition forward"
                );
                self.trim_log(machine, entity, result.seq).await;
                let context = merge_context(
                    &rec.context,
                    entry.data.get("context").unwrap_or(&Value::Null),
                );
                self.left_deadline(rec).await;
                self.after_commit(def, &result, &context).await;
                Ok(())
            }
            Err(DbError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Exit actions of the old state, entry actions of the new one, the deadline, the event.
    pub(super) async fn after_commit(
        &self,
        def: &MachineDef,
        result: &TransitionResult,
        context: &Value,
    ) -> Vec<ActionFailure> {
        let t = Transition {
            machine: &result.machine,
            entity: &result.entity,
            event: &result.event,
            from: &result.from,
            to: &result.to,
        };
        let exit = def
            .states
            .get(&result.from)
            .map(|s| s.exit.0.clone())
            .unwrap_or_default();
        let entry = def
            .states
            .get(&result.to)
            .map(|s| s.entry.0.clone())
            .unwrap_or_default();
        let mut errors = self.run_actions(&exit, &t, context).await;
        errors.extend(self.run_actions(&entry, &t, context).await);
        // The instant the commit stored the deadline from, so that the index entry has the
        // stored due time (and is found again by it).
        let entered = DateTime::parse_from_rfc3339(&result.timestamp)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|_| self.inner.clock.now());
        if let Some(d) = deadline_for(def, &result.to, entered, result.seq) {
            self.set_deadline(&result.machine, &result.entity, &d).await;
        }
        self.emit(MachineEvent::Transition {
            machine: result.machine.clone(),
            entity: result.entity.clone(),
            from: result.from.clone(),
            to: result.to.clone(),
            event: result.event.clone(),
            context: context.clone(),
            seq: result.seq,
        });
        errors
    }

    pub(super) async fn run_actions(
        &self,
        names: &[String],
        t: &Transition<'_>,
        context: &Value,
    ) -> Vec<ActionFailure> {
        let mut failures = Vec::new();
        for name in names {
            let input =
                HookInput::for_transition(name.as_str(), HookKind::Action, t, context.clone());
            let outcome = match self
                .inner
                .hooks
                .resolve(&HookRef::Named(name.clone()), BuiltinKind::Action)
            {
                Ok(hook) => self.inner.hooks.action(&hook, &input).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                tracing::warn!(action = %name, machine = t.machine, entity = t.entity, error = %e, "state machine action failed");
                self.emit(MachineEvent::ActionError {
                    action: name.clone(),
                    machine: t.machine.into(),
                    entity: t.entity.into(),
                    error: e.to_string(),
                });
                failures.push(ActionFailure {
                    action: name.clone(),
                    error: e.to_string(),
                });
            }
        }
        failures
    }
}
