//! Rules of `cache:`: each driver's options and required settings.

use super::*;

impl Checker<'_> {
    pub(super) fn cache(&mut self) {
        let Some(cache) = &self.m.cache else { return };
        let allowed = cache.driver.options();
        self.driver_options("cache", cache.driver.name(), &["cache", "config"], allowed);
        if cache.driver == CacheDriver::Filesystem
            && cache.config.directory.is_none()
            && cache.config.path.is_none()
        {
            let span = if self.node(&["cache", "config"]).is_some() {
                self.key_span(&["cache", "config"])
            } else {
                self.key_span(&["cache", "driver"])
            };
            self.emit(
                Diagnostic::error(
                    "manifest::cache_missing_directory",
                    span,
                    "the filesystem cache driver needs a folder",
                )
                .with_help("add `config: { directory: ./cache }`"),
            );
        }
        for (path, size) in [
            (&["cache", "maxSize"][..], Some(cache.max_size)),
            (&["cache", "config", "maxSize"][..], cache.config.max_size),
        ] {
            if size == Some(0) {
                let span = self.span(path);
                self.emit(
                    Diagnostic::error(
                        "manifest::invalid_value",
                        span,
                        "`maxSize` must be at least 1",
                    )
                    .with_help("give the number of entries the cache may hold"),
                );
            }
        }
    }
}
