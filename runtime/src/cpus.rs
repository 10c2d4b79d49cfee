//! Which CPUs the workers run on: chosen from the CPUs this process may run on (its affinity
//! mask, as `taskset`, cgroup cpusets and container runtimes set it), never assumed to be
//! `0..n`.

use std::io;

use crate::config::Config;
use crate::error::ServerError;

/// The CPUs the calling thread may run on, in ascending order.
pub(crate) fn allowed() -> io::Result<Vec<usize>> {
    crate::sys::allowed_cpus()
}

/// Resolves `config.cores` into `config.cpus` where no list was given (the first allowed
/// CPUs, wrapping around when more workers than allowed CPUs are asked for), and checks an
/// explicit list against the allowed set when workers are pinned.
pub(crate) fn resolve(config: &mut Config) -> Result<(), ServerError> {
    if !config.cpus.is_empty() && !config.pin {
        return Ok(());
    }
    let allowed = allowed().map_err(|e| {
        ServerError::Config(format!("cannot read the CPUs this process may run on: {e}"))
    })?;
    if allowed.is_empty() {
        return Err(ServerError::Config("this process may run on no CPU".into()));
    }
    if config.cpus.is_empty() {
        config.cpus = allowed.iter().copied().cycle().take(config.cores).collect();
        return Ok(());
    }
    match config.cpus.iter().find(|cpu| !allowed.contains(cpu)) {
        Some(cpu) => Err(ServerError::Config(format!(
            "CPU {cpu} is not one this process may run on (allowed: {allowed:?}); \
             use `cores(n)` to pick from them, or `pin(false)`"
        ))),
        None => Ok(()),
    }
}

/// Where the offload pool's threads run: the CPUs asked for, or else the allowed CPUs the
/// workers are not pinned to; empty (anywhere) when the workers are unpinned or take every
/// allowed CPU.
pub(crate) fn offload(config: &Config) -> Vec<usize> {
    if !config.offload_cpus.is_empty() {
        return config.offload_cpus.clone();
    }
    if !config.pin {
        return Vec::new();
    }
    let allowed = allowed().unwrap_or_default();
    allowed
        .into_iter()
        .filter(|cpu| !config.cpus.contains(cpu))
        .collect()
}

/// Confines the calling thread to `cpus`, logging (not failing) when it cannot.
pub(crate) fn pin_to_set(cpus: &[usize]) {
    if let Err(e) = crate::sys::set_affinity(cpus) {
        log::warn!("ringwire: cannot confine an offload thread to CPUs {cpus:?}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowed_set_holds_the_cpu_we_run_on() {
        let allowed = allowed().unwrap();
        // SAFETY: sched_getcpu takes no arguments.
        let now = unsafe { libc::sched_getcpu() };
        assert!(
            now >= 0 && allowed.contains(&(now as usize)),
            "{now} {allowed:?}"
        );
    }

    #[test]
    fn cores_pick_allowed_cpus_and_wrap_around() {
        let allowed = allowed().unwrap();
        let mut config = Config {
            cpus: Vec::new(),
            cores: allowed.len() + 1,
            ..Config::default()
        };
        resolve(&mut config).unwrap();
        assert_eq!(config.cpus.len(), allowed.len() + 1);
        assert_eq!(config.cpus[..allowed.len()], allowed[..]);
        assert_eq!(config.cpus[allowed.len()], allowed[0]);
    }

    #[test]
    fn an_explicit_cpu_outside_the_set_is_an_error_unless_unpinned() {
        let outside = allowed().unwrap().last().unwrap() + 1;
        let mut config = Config {
            cpus: vec![outside],
            ..Config::default()
        };
        let e = resolve(&mut config).unwrap_err().to_string();
        assert!(e.contains(&format!("CPU {outside} is not one")), "{e}");
        config.pin = false;
        resolve(&mut config).unwrap();
    }
}
