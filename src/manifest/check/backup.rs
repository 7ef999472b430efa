//! Rules of `backup:`: drivers and their options, destinations, paths, encryption.

use super::*;

impl Checker<'_> {
    pub(super) fn backup(&mut self) {
        let Some(b) = &self.m.backup else { return };
        if let Some(legacy) = &b.destinations {
            if self.has_key(&["backup"], "driver") || self.has_key(&["backup"], "config") {
                let span = self.key_span(&["backup", "destinations"]);
                self.emit(
                    Diagnostic::error(
                        "manifest::backup_legacy_conflict",
                        span,
                        "the legacy `destinations` list cannot be combined with `driver`/`config`",
                    )
                    .with_help(
                        "move the destinations to `driver: multi` with `config.destinations`",
                    ),
                );
            }
            if legacy.is_empty() {
                let span = self.span(&["backup", "destinations"]);
                self.no_destinations(span);
            }
            for (i, d) in legacy.iter().enumerate() {
                let idx = i.to_string();
                let path = ["backup", "destinations", idx.as_str()];
                self.destination(d.kind, d.path.as_deref(), &path);
            }
        } else {
            self.backup_driver(b.driver, &b.config, &["backup"]);
        }
        if let Some(enc) = &b.encryption {
            let given = [
                enc.key.is_some(),
                enc.key_file.is_some(),
                enc.key_command.is_some(),
            ]
            .iter()
            .filter(|g| **g)
            .count();
            let span = self.key_span(&["backup", "encryption"]);
            if given != 1 {
                self.emit(
                    Diagnostic::error(
                        "manifest::encryption_key",
                        span,
                        if given == 0 {
                            "encryption needs a key".to_string()
                        } else {
                            "give the encryption key one way only".to_string()
                        },
                    )
                    .with_help("set exactly one of `key` (e.g. \"${BACKUP_KEY}\"), `keyFile` or `keyCommand`"),
                );
            } else if enc
                .key
                .as_ref()
                .is_some_and(|k| k.expose().trim().is_empty())
            {
                let span = self.span(&["backup", "encryption", "key"]);
                self.emit(
                    Diagnostic::error(
                        "manifest::encryption_key",
                        span,
                        "the encryption key is empty",
                    )
                    .with_help("set the variable it comes from, or use `keyFile`/`keyCommand`"),
                );
            }
            if enc.key_derivation.algorithm == KdfAlgorithm::Pbkdf2 {
                let iterations = enc.key_derivation.iterations.unwrap_or(600_000);
                if iterations < 600_000 {
                    let span = self.span(&["backup", "encryption", "keyDerivation", "iterations"]);
                    self.emit(
                        Diagnostic::warning(
                            "manifest::weak_key_derivation",
                            span,
                            format!(
                                "{iterations} PBKDF2 iterations are below the recommended 600000"
                            ),
                        )
                        .with_help(
                            "raise `iterations` to 600000 or more, or use the default `argon2id`",
                        ),
                    );
                }
            }
        }
        for key in ["include", "exclude"] {
            let names = if key == "include" {
                b.include.clone().unwrap_or_default()
            } else {
                b.exclude.clone()
            };
            for (i, name) in names.iter().enumerate() {
                let idx = i.to_string();
                let span = self.span(&["backup", key, idx.as_str()]);
                self.check_resource_name(name, span);
            }
        }
        for (key, hook) in [
            ("onBackupStart", &b.on_backup_start),
            ("onBackupComplete", &b.on_backup_complete),
            ("onBackupError", &b.on_backup_error),
            ("onRestoreStart", &b.on_restore_start),
            ("onRestoreComplete", &b.on_restore_complete),
            ("onRestoreError", &b.on_restore_error),
        ] {
            if let Some(h) = hook {
                self.hook_ref(h, BuiltinKind::Action, &["backup", key]);
            }
        }
    }

    pub(super) fn no_destinations(&mut self, span: Span) {
        self.emit(
            Diagnostic::error(
                "manifest::multi_no_destinations",
                span,
                "the multi backup driver needs at least one destination",
            )
            .with_help("list destinations under `config.destinations`, each `{ driver: filesystem|s3, config: {…} }`"),
        );
    }

    pub(super) fn backup_driver(
        &mut self,
        driver: BackupDriver,
        config: &BackupDriverConfig,
        path: &[&str],
    ) {
        let config_path = [path, &["config"]].concat();
        self.driver_options("backup", driver.name(), &config_path, driver.options());
        match driver {
            BackupDriver::Multi => match &config.destinations {
                None => {
                    let span = self.key_span(&config_path);
                    let span = if span == Span::default() {
                        self.key_span(path)
                    } else {
                        span
                    };
                    self.no_destinations(span);
                }
                Some(list) if list.is_empty() => {
                    let span = self.span(&[&config_path[..], &["destinations"]].concat());
                    self.no_destinations(span);
                }
                Some(list) => {
                    for (i, d) in list.iter().enumerate() {
                        let idx = i.to_string();
                        let dpath = [&config_path[..], &["destinations", idx.as_str()]].concat();
                        if d.driver == BackupDriver::Multi {
                            let span = self.span(&[&dpath[..], &["driver"]].concat());
                            self.emit(
                                Diagnostic::error(
                                    "manifest::nested_multi",
                                    span,
                                    "a multi destination cannot itself be `multi`",
                                )
                                .with_help("list every destination directly in one `multi` driver"),
                            );
                            continue;
                        }
                        self.backup_driver(d.driver, &d.config, &dpath);
                    }
                }
            },
            _ => {
                let cpath = if self.node(&config_path).is_some() {
                    config_path.clone()
                } else {
                    path.to_vec()
                };
                self.destination(driver, config.path.as_deref(), &cpath);
                if let Some(text) = &config.connection {
                    let problem = match text
                        .expose()
                        .parse::<crate::store::connection::Connection>()
                    {
                        Ok(crate::store::connection::Connection::S3(_)) => None,
                        Ok(_) => Some(format!(
                            "`{}` is not an s3:// connection string",
                            text.redacted()
                        )),
                        Err(e) => Some(format!(
                            "`{}` is not a valid connection string: {}",
                            e.redacted, e.reason
                        )),
                    };
                    if let Some(message) = problem {
                        let span = self.span(&[&config_path[..], &["connection"]].concat());
                        self.emit(
                            Diagnostic::error("manifest::invalid_connection", span, message)
                                .with_help("write s3://KEY:SECRET@BUCKET/prefix?region=…&endpoint=https://HOST (usually from a variable: \"${BACKUP_S3}\")"),
                        );
                    }
                }
                if driver == BackupDriver::S3
                    && config.bucket.is_none()
                    && config.connection.is_none()
                    && !self.m.database.connection.expose().starts_with("s3://")
                {
                    // A warning: `--connection` or S3DB_CONNECTION may put the database on S3.
                    let span = self.key_span(&cpath);
                    self.emit(
                        Diagnostic::warning(
                            "manifest::backup_missing_bucket",
                            span,
                            "the s3 backup driver has no `bucket` and the database is not on S3, so there is no bucket to default to",
                        )
                        .with_help("add `bucket: my-backups` to the driver's config"),
                    );
                }
                if config.kms_key_id.is_some()
                    && config.server_side_encryption != Some(ServerSideEncryption::AwsKms)
                {
                    let span = self.key_span(&[&config_path[..], &["kmsKeyId"]].concat());
                    self.emit(
                        Diagnostic::warning(
                            "manifest::option_not_for_driver",
                            span,
                            "`kmsKeyId` has no effect without `serverSideEncryption: aws:kms`",
                        )
                        .with_help("add `serverSideEncryption: aws:kms`, or remove `kmsKeyId`"),
                    );
                }
            }
        }
    }

    /// A filesystem destination needs a path; every path may use only the known templates.
    pub(super) fn destination(
        &mut self,
        driver: BackupDriver,
        path_value: Option<&str>,
        config_at: &[&str],
    ) {
        match path_value {
            None if driver == BackupDriver::Filesystem => {
                let span = self.key_span(config_at);
                self.emit(
                    Diagnostic::error(
                        "manifest::backup_missing_path",
                        span,
                        "the filesystem backup driver needs a `path`",
                    )
                    .with_help("add `path: ./backups/{date}/` (templates: {date} {time} {year} {month} {day} {backupId} {type})"),
                );
            }
            Some(p) => {
                let span = self.span(&[config_at, &["path"]].concat());
                for var in template_vars(p) {
                    if !PATH_TEMPLATE_VARS.contains(&var.as_str()) {
                        let help = did_you_mean(&var, PATH_TEMPLATE_VARS.iter().copied())
                            .unwrap_or_else(|| {
                                format!("the templates are {{{}}}", PATH_TEMPLATE_VARS.join("} {"))
                            });
                        self.emit(
                            Diagnostic::error(
                                "manifest::path_template",
                                span,
                                format!("`{{{var}}}` is not a path template"),
                            )
                            .with_help(help),
                        );
                    }
                }
            }
            None => {}
        }
    }

    /// Options that the chosen driver ignores are warnings: the author likely meant another
    /// driver.
    pub(super) fn driver_options(
        &mut self,
        plugin: &str,
        driver: &str,
        config_path: &[&str],
        allowed: &[&str],
    ) {
        let Some(config) = self.node(config_path) else {
            return;
        };
        let present: Vec<(String, Span)> = config
            .entries()
            .iter()
            .map(|(k, _)| (k.name.clone(), k.span))
            .collect();
        for (key, span) in present {
            if !allowed.contains(&key.as_str()) {
                self.emit(
                    Diagnostic::warning(
                        "manifest::option_not_for_driver",
                        span,
                        format!("`{key}` has no effect with the {plugin} driver `{driver}`"),
                    )
                    .with_help(format!("options of `{driver}`: {}", allowed.join(", "))),
                );
            }
        }
    }
}
