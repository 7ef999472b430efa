//! Rules of `database:`: the connection string, attribute rules, partitions over declared attributes.

use super::*;

impl Checker<'_> {
    pub(super) fn known_resources(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .m
            .database
            .resources
            .keys()
            .map(String::as_str)
            .collect();
        let sm = &self.m.state_machine;
        if !self.m.machines.is_empty() {
            names.push(&sm.state_resource);
            if sm.persist_transitions {
                names.push(&sm.transition_log_resource);
            }
        }
        if self.m.scheduler.persist_jobs && !self.m.jobs.is_empty() {
            names.push(&self.m.scheduler.job_history_resource);
        }
        names
    }

    pub(super) fn check_resource_name(&mut self, name: &str, span: Span) {
        // On an s3db.js database, resources are defined in its s3db.json, not here; a missing
        // one is reported when it is used.
        if name.contains("{{")
            || self.m.database.format == crate::manifest::model::DatabaseFormat::S3dbjs
        {
            return;
        }
        let known = self.known_resources();
        if !known.contains(&name) {
            let help = did_you_mean(name, known.iter().copied())
                .unwrap_or_else(|| "declare it under `database.resources`".to_string());
            self.emit(
                Diagnostic::error(
                    "manifest::unknown_resource",
                    span,
                    format!("resource `{name}` is not declared"),
                )
                .with_help(help),
            );
        }
    }

    pub(super) fn database(&mut self) {
        let parsed = self
            .m
            .database
            .connection
            .expose()
            .parse::<crate::store::connection::Connection>();
        if let Err(e) = parsed {
            if !self.broken.sections.contains("database") {
                let span = self.span(&["database", "connection"]);
                self.emit(
                    Diagnostic::error(
                        "manifest::invalid_connection",
                        span,
                        format!("`{}` is not a valid connection string: {}", e.redacted, e.reason),
                    )
                    .with_help(
                        "use s3://[KEY:SECRET@]BUCKET/prefix?region=…&endpoint=http://HOST:PORT, file://PATH or memory://BUCKET/prefix",
                    ),
                );
            }
        }
        for (rname, res) in &self.m.database.resources {
            let native = self.m.database.format == crate::manifest::model::DatabaseFormat::Native;
            for (attr, text) in res.attributes.iter().filter(|_| native) {
                if let Err(e) = text.parse::<AttributeSpec>() {
                    let span = self.span(&["database", "resources", rname, "attributes", attr]);
                    self.emit(
                        Diagnostic::error(
                            "manifest::invalid_attribute",
                            span,
                            format!("attribute `{rname}.{attr}`: {}", e.message),
                        )
                        .with_help(e.help),
                    );
                }
            }
            for (pname, part) in &res.partitions {
                for field in part.fields.keys() {
                    let declared = res.attributes.contains_key(field)
                        || (res.timestamps && matches!(field.as_str(), "createdAt" | "updatedAt"));
                    if !declared {
                        let span = self.key_span(&[
                            "database",
                            "resources",
                            rname,
                            "partitions",
                            pname,
                            "fields",
                            field,
                        ]);
                        let help = did_you_mean(field, res.attributes.keys().map(String::as_str))
                            .unwrap_or_else(|| {
                                format!("declare `{field}` under the resource's attributes")
                            });
                        self.emit(
                            Diagnostic::error(
                                "manifest::unknown_attribute",
                                span,
                                format!("partition `{pname}` uses `{field}`, which is not an attribute of `{rname}`"),
                            )
                            .with_help(help),
                        );
                    }
                }
            }
        }
    }
}
