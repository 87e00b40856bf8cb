//! Runs `lab/lab.sh`, the one description of the topology. The script is
//! embedded at build time, so a `tether` binary carries it and needs no
//! checkout; it runs as `bash -c SCRIPT lab.sh COMMAND ARGS...`.

use std::process::{Command as StdCommand, Output};

use tokio::process::Command;

use crate::error::LabError;

/// `lab/lab.sh`, verbatim.
pub const LAB_SCRIPT: &str = include_str!("../../../lab/lab.sh");

/// Whether `id` is a lab id lab.sh accepts (`[A-Za-z0-9_.-]{0,32}`).
pub(crate) fn valid_id(id: &str) -> bool {
    id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn command_line(args: &[&str]) -> String {
    args.join(" ")
}

fn check(args: &[&str], output: Output) -> Result<String, LabError> {
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    for line in stderr.lines() {
        tracing::debug!(event = "lab.script.stderr", command = args.first().copied(), line);
    }
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(LabError::Script {
            command: command_line(args),
            status: output.status.to_string(),
            stderr,
        })
    }
}

/// Runs `lab.sh ARGS...` with `LAB_ID=id`; returns its stdout.
pub(crate) async fn run(id: &str, args: &[&str]) -> Result<String, LabError> {
    tracing::debug!(event = "lab.script", lab = id, command = command_line(args));
    let output = Command::new("bash")
        .arg("-c")
        .arg(LAB_SCRIPT)
        .arg("lab.sh")
        .args(args)
        .env("LAB_ID", id)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| LabError::Spawn { command: command_line(args), source })?;
    check(args, output)
}

/// [`run`], blocking the calling thread (for `Drop`).
pub(crate) fn run_blocking(id: &str, args: &[&str]) -> Result<String, LabError> {
    let output = StdCommand::new("bash")
        .arg("-c")
        .arg(LAB_SCRIPT)
        .arg("lab.sh")
        .args(args)
        .env("LAB_ID", id)
        .output()
        .map_err(|source| LabError::Spawn { command: command_line(args), source })?;
    check(args, output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_the_script_rule() {
        assert!(valid_id(""));
        assert!(valid_id("ci-3_a.b"));
        assert!(!valid_id("a b"));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(&"x".repeat(33)));
    }

    #[tokio::test]
    async fn env_needs_no_root_and_bad_ids_are_refused_by_the_script() {
        let env = run("unit", &["env"]).await.expect("lab.sh env runs");
        assert!(env.contains("PHONE_NS=tether-phone-unit"), "{env}");
        let err = run("a b", &["env"]).await.expect_err("bad id").to_string();
        assert!(err.contains("LAB_ID must match"), "{err}");
        let err = run("unit", &["frobnicate"]).await.expect_err("bad command").to_string();
        assert!(err.contains("usage: lab.sh"), "{err}");
    }
}
