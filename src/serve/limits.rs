//! Fitting the connection limit to the descriptors the process may open, so
//! that excess clients wait in the kernel's backlog instead of meeting EMFILE.

/// Descriptors kept aside for everything but client connections: stdio, the
/// passed sockets, the runtime, the backend's pipes, probes, the engine API.
pub const RESERVED_DESCRIPTORS: u64 = 64;
/// Descriptors one forwarded connection holds: the client and the upstream.
pub const DESCRIPTORS_PER_CONNECTION: u64 = 2;

/// The most connections that fit in `open_files_limit` descriptors when
/// `open_now` are already open (the passed sockets, anything inherited).
pub fn connections_that_fit(open_files_limit: u64, open_now: u64) -> usize {
    let fit = open_files_limit.saturating_sub(RESERVED_DESCRIPTORS + open_now)
        / DESCRIPTORS_PER_CONNECTION;
    usize::try_from(fit.max(1)).unwrap_or(usize::MAX)
}

/// How many descriptors this process has open now (0 if /proc cannot tell).
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// Raises the soft open-files limit to the hard one and returns
/// `connections_max`, lowered (with a warning) if it would not fit.
pub fn fit_connections(connections_max: usize) -> usize {
    let limit = match crate::sys::raise_open_files_limit() {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(target: "idlegate::limits", "cannot read the open-files limit: {e}");
            return connections_max;
        }
    };
    let fit = connections_that_fit(limit, open_descriptors());
    if connections_max > fit {
        tracing::warn!(target: "idlegate::limits",
            "--connections-max {connections_max} needs more descriptors than the limit of {limit} \
             (LimitNOFILE=) allows: serving at most {fit} connections at once, the rest wait in the backlog"
        );
        return fit;
    }
    connections_max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_the_limit() {
        assert_eq!(connections_that_fit(1024, 0), 480);
        assert_eq!(connections_that_fit(1024, 100), 430);
        assert_eq!(connections_that_fit(64, 0), 1);
        assert_eq!(connections_that_fit(0, 10), 1);
        assert!(open_descriptors() >= 3, "stdio at least");
    }
}
