//! Rules of `server:`: the listen address.

use super::*;

impl Checker<'_> {
    pub(super) fn server(&mut self) {
        if self
            .m
            .server
            .listen
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            let span = self.span(&["server", "listen"]);
            self.emit(
                Diagnostic::error(
                    "manifest::invalid_listen",
                    span,
                    format!("`{}` is not an address and port", self.m.server.listen),
                )
                .with_help("write IP:PORT, such as `127.0.0.1:7070` or `0.0.0.0:7070`"),
            );
        }
    }
}
