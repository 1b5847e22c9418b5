//! The process's open-file limit. Every connection is a file descriptor, and Linux starts a
//! process with a soft limit of 1 024 whatever `server.max_connections` says: past it, `accept`
//! fails with EMFILE, and so does every database or Redis connection the process opens next. The
//! soft limit may be raised up to the hard one without privileges (as Go's runtime does), so a
//! server raises it once at start; when even the hard limit cannot hold the configured
//! connections, fewer are admitted and the operator is told which setting to change.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

use crate::config::Role;

/// Descriptors beside the connections: database and Redis pools, the listener, log files, the
/// runtime's own.
const RESERVE: u64 = 1024;

/// The kernel's ceiling for one process's descriptors when the hard limit says unlimited.
const NR_OPEN: &str = "/proc/sys/fs/nr_open";

/// What the soft open-file limit was, and is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Raised {
    before: u64,
    now: u64,
}

/// Descriptors one connection takes: a gateway also holds an upstream connection for each client
/// it is proxying.
fn per_connection(role: Role) -> u64 {
    match role {
        Role::Gateway => 2,
        Role::All | Role::Order => 1,
    }
}

/// Descriptors `role` needs to serve `max_connections` at once, the [`RESERVE`] included.
fn needed(role: Role, max_connections: usize) -> u64 {
    (max_connections as u64)
        .saturating_mul(per_connection(role))
        .saturating_add(RESERVE)
}

/// Raises the soft open-file limit to the hard one.
fn raise() -> std::io::Result<Raised> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    // `None` is unlimited: the soft limit is then already as high as it goes.
    let Some(before) = current else {
        return Ok(Raised {
            before: u64::MAX,
            now: u64::MAX,
        });
    };
    let ceiling = maximum.unwrap_or_else(|| {
        std::fs::read_to_string(NR_OPEN)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(before)
    });
    if ceiling <= before {
        return Ok(Raised {
            before,
            now: before,
        });
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(ceiling),
            maximum,
        },
    )?;
    Ok(Raised {
        before,
        now: ceiling,
    })
}

/// At start-up: raises the limit, and returns how many connections fit in it: `max_connections`,
/// or fewer when even the hard limit cannot hold them with the [`RESERVE`] beside. Past that
/// many, a new client waits in the listen backlog; let through, it would take the descriptor a
/// database or Redis connection needs next, and fail the requests already admitted.
pub fn prepare(role: Role, max_connections: usize) -> usize {
    let limit = match raise() {
        Ok(Raised { before, now }) => {
            if now != before {
                tracing::debug!(before, now, "raised the open-file limit");
            }
            now
        }
        Err(error) => {
            let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
            tracing::warn!(%error, limit, "cannot raise the open-file limit");
            limit
        }
    };
    let fitting = fitting(role, max_connections, limit);
    if fitting < max_connections {
        tracing::warn!(
            max_connections,
            lowered_to = fitting,
            open_file_limit = limit,
            "server.max_connections is lowered to fit the open-file limit (raise the hard limit: `ulimit -Hn`, systemd's LimitNOFILE)"
        );
    }
    fitting
}

/// How many of `max_connections` fit in `limit` descriptors, the [`RESERVE`] kept aside (at least
/// one, so a server under a tiny limit still serves).
fn fitting(role: Role, max_connections: usize, limit: u64) -> usize {
    if needed(role, max_connections) <= limit {
        return max_connections;
    }
    let fit = limit.saturating_sub(RESERVE) / per_connection(role);
    usize::try_from(fit)
        .unwrap_or(usize::MAX)
        .clamp(1, max_connections)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each test runs in its own process (nextest), so changing this process's limit is its own.

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let Rlimit { maximum, .. } = getrlimit(Resource::Nofile);
        // Below the hard limit, whatever it is here.
        let low = maximum.map_or(256, |hard| (hard / 2).min(256));
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(low),
                maximum,
            },
        )
        .expect("lowering the soft limit is always allowed");

        let raised = raise().expect("raising up to the hard limit needs no privilege");

        assert_eq!(raised.before, low);
        assert!(raised.now > low, "{raised:?}");
        let after = getrlimit(Resource::Nofile);
        assert_eq!(after.current, Some(raised.now));
        assert_eq!(after.maximum, maximum, "the hard limit stays");
        if let Some(hard) = maximum {
            assert_eq!(raised.now, hard);
        }
    }

    #[test]
    fn raising_twice_changes_nothing_the_second_time() {
        let first = raise().expect("raise");
        let second = raise().expect("raise again");
        assert_eq!(second.before, first.now);
        assert_eq!(second.now, first.now);
    }

    #[test]
    fn connections_are_lowered_to_what_the_limit_holds_beside_the_reserve() {
        assert_eq!(fitting(Role::All, 20_000, 1_048_576), 20_000);
        assert_eq!(fitting(Role::All, 20_000, 20_000), 20_000 - 1024);
        assert_eq!(fitting(Role::Order, 500, 1024 + 500), 500);
        assert_eq!(fitting(Role::Gateway, 20_000, 20_000), (20_000 - 1024) / 2);
        assert_eq!(
            fitting(Role::All, 20_000, 1024),
            1,
            "a tiny limit still serves"
        );
        assert_eq!(fitting(Role::All, 20_000, u64::MAX), 20_000);
    }

    #[test]
    fn a_gateway_counts_an_upstream_descriptor_per_connection() {
        assert_eq!(needed(Role::Order, 20_000), 20_000 + RESERVE);
        assert_eq!(needed(Role::All, 20_000), 20_000 + RESERVE);
        assert_eq!(needed(Role::Gateway, 20_000), 40_000 + RESERVE);
        assert_eq!(needed(Role::Gateway, usize::MAX), u64::MAX);
    }
}
