//! The agent's parser for the usual shapes of `network connect|disconnect`, the commands a
//! runtime runs per container. clap copies and rebuilds a subcommand's definition on every
//! parse: 0.11 ms of each forwarded connect, a tenth of the agent's work for it. This reads
//! the plain forms only (long options, `--opt VALUE` or `--opt=VALUE`, the two
//! positionals) and gives up, returning None, on anything else: help, short or unknown
//! options, `--`, a repeated option, an empty value or one starting with `-`, a missing or
//! extra positional, `--netns` with a container. clap then parses it as before, so every
//! error and every unusual form reads exactly as it did. A test checks, over thousands
//! of generated command lines, that whatever this accepts clap parses to the same value.

use std::path::PathBuf;

use crate::cli::{Cli, Command, NetworkCmd};

/// `args` as clap would parse it (argv[0] first), or None: let clap do it.
pub fn parse(args: &[String]) -> Option<Cli> {
    let (sub, rest) = match args {
        [_, network, sub, rest @ ..] if network == "network" => (sub.as_str(), rest),
        _ => return None,
    };
    let connect = match sub {
        "connect" => true,
        "disconnect" => false,
        _ => return None,
    };
    let mut single = Single::default();
    let mut force = false;
    let mut driver_opt = Vec::new();
    let mut positionals: Vec<String> = Vec::new();
    let mut tokens = rest.iter();
    while let Some(token) = tokens.next() {
        let Some(long) = token.strip_prefix("--") else {
            if token.starts_with('-') || token.is_empty() {
                return None;
            }
            positionals.push(token.clone());
            continue;
        };
        let (name, inline) = match long.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (long, None),
        };
        if name == "force" && connect {
            if inline.is_some() || force {
                return None;
            }
            force = true;
            continue;
        }
        let slot = match name {
            "netns" => &mut single.netns,
            "ip" if connect => &mut single.ip,
            "ip6" if connect => &mut single.ip6,
            "mac-address" if connect => &mut single.mac_address,
            "ifname" if connect => &mut single.ifname,
            "driver-opt" if connect => {
                driver_opt.push(value(inline, &mut tokens)?);
                continue;
            }
            _ => return None,
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(value(inline, &mut tokens)?);
    }
    let mut positionals = positionals.into_iter();
    let network = positionals.next()?;
    let container = positionals.next();
    if positionals.next().is_some() || container.is_some() == single.netns.is_some() {
        return None;
    }
    let netns = single.netns;
    let command = if connect {
        NetworkCmd::Connect {
            ip: single.ip,
            ip6: single.ip6,
            mac_address: single.mac_address,
            force,
            ifname: single.ifname,
            driver_opt,
            netns,
            network,
            container,
        }
    } else {
        NetworkCmd::Disconnect {
            netns,
            network,
            container,
        }
    };
    Some(Cli {
        root: root()?,
        command: Command::Network(command),
    })
}

/// The options that may be given once.
#[derive(Default)]
struct Single {
    netns: Option<String>,
    ip: Option<String>,
    ip6: Option<String>,
    mac_address: Option<String>,
    ifname: Option<String>,
}

/// An option's value: after `=`, else the next token; not empty, not like an option.
fn value<'a>(
    inline: Option<String>,
    tokens: &mut impl Iterator<Item = &'a String>,
) -> Option<String> {
    let v = match inline {
        Some(v) => v,
        None => tokens.next()?.clone(),
    };
    (!v.is_empty() && !v.starts_with('-')).then_some(v)
}

/// `--root`'s value without the option: MVNET_ROOT, else the default (as clap's `env` and
/// `default_value`); an empty or non-UTF-8 MVNET_ROOT is clap's to judge.
fn root() -> Option<PathBuf> {
    match std::env::var("MVNET_ROOT") {
        Ok(r) if !r.is_empty() => Some(PathBuf::from(r)),
        Ok(_) => None,
        Err(std::env::VarError::NotPresent) => {
            Some(PathBuf::from(mvnet_core::engine::DEFAULT_ROOT))
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn the_usual_forms_are_read_here() {
        for a in [
            &[
                "mvnet",
                "network",
                "connect",
                "n",
                "--netns",
                "/run/netns/x",
            ][..],
            &["mvnet", "network", "connect", "n", "c"],
            &[
                "mvnet",
                "network",
                "connect",
                "--ip=10.0.0.2",
                "n",
                "c",
                "--ifname",
                "eth1",
            ],
            &["mvnet", "network", "disconnect", "n", "--netns=/p"],
            &["mvnet", "network", "disconnect", "n", "c"],
        ] {
            let quick = parse(&argv(a)).unwrap_or_else(|| panic!("{a:?} left to clap"));
            let clap = Cli::try_parse_from(a).unwrap();
            assert_eq!(format!("{quick:?}"), format!("{clap:?}"), "{a:?}");
        }
    }

    /// Generated command lines: every one the quick parser reads, clap must read to the
    /// same value; and most lines that clap reads must be read here too.
    #[test]
    fn whatever_is_read_here_clap_reads_the_same() {
        // Options of connect (the first two also of disconnect), each once at most.
        let options: [&[&str]; 10] = [
            &["--ip", "10.0.0.2"],
            &["--ip=10.0.0.3"],
            &["--ip6", "fd00::2"],
            &["--mac-address", "02:00:00:00:00:01"],
            &["--mac-address=02:00:00:00:00:02"],
            &["--force"],
            &["--ifname", "eth3"],
            &["--ifname=e"],
            &["--driver-opt", "a=b"],
            &["--driver-opt=c=d"],
        ];
        let odd = [
            "--netns",
            "--ip",
            "/p",
            "-h",
            "--help",
            "--",
            "--bogus",
            "",
            "-x",
            "--ip=",
            "--root",
            "--root=/r",
            "-",
            "--netns=-z",
            "--force=true",
            "-f",
            "n",
            "c",
            "--driver-opt",
        ];
        // A fixed pseudo-random sequence (xorshift): the same cases on every run.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let (mut read, mut refused) = (0, 0);
        for _ in 0..4000 {
            let connect = next(2) == 0;
            // Pieces: the network, the container or a namespace, some options; then
            // shuffled, and now and then something odd put in.
            let mut pieces: Vec<&[&str]> = vec![&["n"]];
            pieces.push(match next(3) {
                0 => &["c"],
                1 => &["--netns", "/p"],
                _ => &["--netns=/q"],
            });
            for _ in 0..next(4) {
                let o = options[next(options.len())];
                if connect || next(4) == 0 {
                    pieces.push(o);
                }
            }
            if next(3) == 0 {
                pieces.push(std::slice::from_ref(&odd[next(odd.len())]));
            }
            for i in (1..pieces.len()).rev() {
                pieces.swap(i, next(i + 1));
            }
            let mut a = vec![
                "mvnet",
                "network",
                if connect { "connect" } else { "disconnect" },
            ];
            a.extend(pieces.concat());
            let clap = Cli::try_parse_from(&a);
            let Some(quick) = parse(&argv(&a)) else {
                refused += usize::from(clap.is_ok());
                continue;
            };
            read += 1;
            match clap {
                Ok(clap) => assert_eq!(format!("{quick:?}"), format!("{clap:?}"), "{a:?}"),
                Err(e) => panic!("{a:?}: read here as {quick:?}, but clap says: {e}"),
            }
        }
        assert!(read > 1500, "only {read} of 4000 read here");
        assert!(
            refused * 4 < read,
            "{refused} lines clap reads were left to it, {read} read here"
        );
    }
}
