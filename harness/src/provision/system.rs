//! The system packages the harness cannot provision itself — the browser, Python's `venv`,
//! Node.js and npm, nftables, iproute2, redis-server — checked on this machine, and the one
//! install command (Debian/Ubuntu package names) for those it lacks, for `faultline doctor`.
//!
//! Node.js and npm are the one pair that cannot simply be listed together: NodeSource's
//! `nodejs` ships npm and conflicts with Debian's `npm` package ("nodejs : Conflicts: npm"),
//! and one conflicting name makes apt-get install nothing at all. So npm is asked for only
//! when it is still missing once Node.js is there.

use super::ProvisionEnv;

/// One tool the harness needs from the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemTool {
    /// What it is called on `PATH` (or how it is checked).
    pub tool: &'static str,
    /// The Debian/Ubuntu packages that provide it.
    pub packages: &'static [&'static str],
    /// What the harness needs it for.
    pub needed_for: &'static str,
    /// Whether this machine has it.
    pub present: bool,
}

/// Checks each system tool on this machine.
pub fn survey(env: &ProvisionEnv) -> Vec<SystemTool> {
    let on_path = |names: &[&str]| names.iter().any(|name| env.find_on_path(name).is_some());
    let venv = || {
        let python = env.python.clone().or_else(|| env.find_on_path("python3"))?;
        let status = super::command_std(&python, env)
            .args(["-c", "import venv, ensurepip"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(())
    };
    vec![
        SystemTool {
            tool: "chromium",
            packages: &["chromium"],
            needed_for: "the js client's browser (or set CHROMIUM_BIN)",
            present: env.chromium_bin.is_some()
                || on_path(&["chromium", "chromium-browser", "google-chrome"]),
        },
        SystemTool {
            tool: "python3 with venv",
            packages: &["python3", "python3-venv"],
            needed_for: "the upstream-rust client's venv (or set FAULTLINE_PYTHON)",
            present: venv().is_some(),
        },
        SystemTool {
            tool: "node",
            packages: &["nodejs"],
            needed_for: "the js client's driver",
            present: on_path(&["node"]),
        },
        SystemTool {
            tool: "npm",
            packages: &["npm"],
            needed_for: "installing the js client's pinned packages (first use only)",
            present: on_path(&["npm"]),
        },
        SystemTool {
            tool: "nft",
            packages: &["nftables"],
            needed_for: "kernel-level faults for the SDKs faultline does not own",
            present: on_path(&["nft"]),
        },
        SystemTool {
            tool: "ip",
            packages: &["iproute2"],
            needed_for: "network namespaces",
            present: on_path(&["ip"]),
        },
        SystemTool {
            tool: "redis-server",
            packages: &["redis-server"],
            needed_for: "the cluster lane (or set REDIS_SERVER_BIN)",
            present: env.redis_server_bin.is_some() || on_path(&["redis-server"]),
        },
    ]
}

/// Whether this process runs as root (then the install command needs no `sudo`).
pub fn running_as_root() -> bool {
    #[cfg(target_os = "linux")]
    return rustix::process::geteuid().is_root();
    #[cfg(not(target_os = "linux"))]
    return false;
}

/// The shell command that installs what `tools` lacks with apt-get (`sudo` unless `root`),
/// or `None` when nothing is missing. npm is left out of the first `apt-get install` when
/// Node.js is installed by it too, and asked for afterwards only if still missing (see the
/// module documentation).
pub fn install_command(tools: &[SystemTool], root: bool) -> Option<String> {
    let sudo = if root { "" } else { "sudo " };
    let missing = |tool: &str| tools.iter().any(|t| t.tool == tool && !t.present);
    let npm_after_node = missing("npm") && missing("node");
    let packages: Vec<&str> = tools
        .iter()
        .filter(|t| !(t.present || (npm_after_node && t.tool == "npm")))
        .flat_map(|t| t.packages.iter().copied())
        .collect();
    if packages.is_empty() {
        return None;
    }
    let mut command = format!("{sudo}apt-get install {}", packages.join(" "));
    if npm_after_node {
        command.push_str(&format!(
            " && {{ command -v npm >/dev/null || {sudo}apt-get install npm; }}"
        ));
    }
    Some(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(missing: &[&str]) -> Vec<SystemTool> {
        let all = ["chromium", "python3 with venv", "node", "npm", "nft", "ip", "redis-server"];
        all.iter()
            .map(|tool| SystemTool {
                tool,
                packages: match *tool {
                    "python3 with venv" => &["python3", "python3-venv"],
                    "node" => &["nodejs"],
                    "nft" => &["nftables"],
                    "ip" => &["iproute2"],
                    "chromium" => &["chromium"],
                    "npm" => &["npm"],
                    _ => &["redis-server"],
                },
                needed_for: "",
                present: !missing.contains(tool),
            })
            .collect()
    }

    #[test]
    fn nothing_missing_needs_no_command() {
        assert_eq!(install_command(&tools(&[]), false), None);
    }

    #[test]
    fn only_what_is_missing_is_installed() {
        assert_eq!(
            install_command(&tools(&["chromium", "nft"]), true).as_deref(),
            Some("apt-get install chromium nftables")
        );
    }

    /// NodeSource's nodejs conflicts with Debian's npm: a machine without either gets Node.js
    /// first and npm only if that Node.js did not bring it.
    #[test]
    fn npm_is_asked_for_only_once_node_is_there() {
        assert_eq!(
            install_command(&tools(&["node", "npm", "redis-server"]), false).as_deref(),
            Some(
                "sudo apt-get install nodejs redis-server && { command -v npm >/dev/null || sudo \
                 apt-get install npm; }"
            )
        );
        assert_eq!(
            install_command(&tools(&["npm"]), false).as_deref(),
            Some("sudo apt-get install npm"),
            "Debian's Node.js without npm"
        );
    }
}
