//! Why a network-namespace topology or one of its faults could not be had, each with the
//! cause and the fix.

/// A program the namespaces are built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tool {
    /// `ip` (namespaces, veth pairs, addresses, routes).
    Ip,
    /// `nft` (the drop and loss rules).
    Nft,
    /// `tc` (rate limits).
    Tc,
}

impl Tool {
    /// The command's name.
    pub fn program(self) -> &'static str {
        match self {
            Tool::Ip => "ip",
            Tool::Nft => "nft",
            Tool::Tc => "tc",
        }
    }

    /// The Debian/Ubuntu package that installs it.
    pub fn package(self) -> &'static str {
        match self {
            Tool::Ip | Tool::Tc => "iproute2",
            Tool::Nft => "nftables",
        }
    }
}

/// A topology or a fault could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Not Linux: there are no network namespaces.
    #[error(
        "kernel-level faults need Linux network namespaces, and this is {os}; run this \
         scenario on Linux (a VM or a Linux CI runner), or fault faultline-sdk through \
         faultline::net's socket wrappers instead"
    )]
    NotLinux {
        /// The operating system (`std::env::consts::OS`).
        os: &'static str,
    },
    /// Not root.
    #[error(
        "network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN; this process runs as \
         uid {uid}); run faultline or the tests as root (`sudo -E cargo test …`), or in a \
         container started with `--privileged`"
    )]
    NotRoot {
        /// The effective user id.
        uid: u32,
    },
    /// A program is missing.
    #[error(
        "`{}` was not found on PATH; install the package `{}` (`apt-get install {}`)",
        tool.program(), tool.package(), tool.package()
    )]
    MissingTool {
        /// Which one.
        tool: Tool,
    },
    /// A command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// A command could not be started (other than not found).
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The thread that enters a namespace failed.
    #[error("cannot enter the network namespace {namespace}: {source}")]
    Enter {
        /// The namespace.
        namespace: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// More clients than one topology's address block holds.
    #[error("a topology holds at most {max} clients, {asked} were asked for")]
    TooManyClients {
        /// Asked for.
        asked: usize,
        /// The limit.
        max: usize,
    },
    /// This process has created so many topologies that the next one's interface name
    /// would be longer than Linux allows.
    #[error(
        "this process has created {count} topologies; the next one's interface name would \
         exceed Linux's 15 characters; reuse topologies instead of creating one per case"
    )]
    TooManyTopologies {
        /// Topologies created so far.
        count: u32,
    },
    /// Every address block of the benchmarking range is in use in the root namespace.
    #[error(
        "every /24 of 198.18.0.0/15 is routed in the root namespace already (by other \
         faultline runs or by something else on this machine); end other runs, or remove \
         the routes (`ip -4 route show 198.18.0.0/15`)"
    )]
    NoFreeBlock,
    /// A fault's parameter is out of range.
    #[error("invalid fault: {0}")]
    InvalidFault(String),
}
