//! The wire protocol between a short-lived front-end process and a resident agent
//! (`mvnet_core::resident` is the agent's side), and the caller's side of it.
//!
//! It lives in its own small crate so that the CNI plugin's forwarder (`mvnet-cni`, the
//! binary a runtime starts for every ADD) can speak it without linking the whole core:
//! starting a 0.6 MB binary costs a fraction of starting the 8 MB one that does the work.
//!
//! One request on a fresh unix-socket connection:
//! - caller → agent: `MVN1`, a length-prefixed JSON header ([`Header`]), the length-prefixed
//!   stdin, and the caller's network namespace as an SCM_RIGHTS fd on the first bytes;
//! - agent → caller: `D` + a reason (declined: do the work yourself), or `A` (accepted),
//!   then the exit status byte, stdout and stderr, each length-prefixed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Set to anything to never use or start an agent.
pub const OFF_ENV: &str = "MVNET_NO_AGENT";
/// Set by a forwarder for the binary it hands a command to after the agent that took it
/// ended: that binary then reports the loss as it does when it forwards itself.
pub const LOST_ENV: &str = "MVNET_AGENT_LOST";
/// The first bytes of every request.
pub const MAGIC: &[u8; 4] = b"MVN1";

/// A forwarded command: the caller's CNI_*/MVNET_* environment, its arguments (argv[0]
/// first) and its stdin.
#[derive(Serialize, Deserialize)]
pub struct Request {
    pub env: BTreeMap<String, String>,
    pub args: Vec<String>,
    #[serde(skip)]
    pub stdin: Vec<u8>,
}

impl Request {
    pub fn var(&self, k: &str) -> Option<String> {
        self.env.get(k).cloned()
    }
}

/// What a command prints on stdout, and its exit status.
pub struct Reply {
    pub stdout: String,
    pub status: u8,
}

/// What the caller sends besides the command.
#[derive(Serialize, Deserialize)]
pub struct Header {
    /// The binary that would do the work if no agent did (see [`file_identity`]): an agent
    /// only serves commands of its own binary.
    pub exe: String,
    /// The caller's mount namespace: paths (a netns file, the state root) must mean the same.
    pub mnt: String,
    pub request: Request,
}

/// The answer of [`forward`].
pub enum Forwarded {
    /// The agent's reply; its stderr was written to ours.
    Served(Reply),
    /// Do the work here; `start_agent`: no agent could take it (start one afterwards).
    NotServed { start_agent: bool },
    /// The agent took the command and ended before it answered.
    Lost,
}

/// Hands a command to the agent listening on `socket`, for the binary whose identity is
/// `exe` (the agent compares it with its own).
pub fn forward(socket: &Path, exe: Option<String>, args: Vec<String>, stdin: &[u8]) -> Forwarded {
    if std::env::var_os(OFF_ENV).is_some() {
        return Forwarded::NotServed { start_agent: false };
    }
    let began = Instant::now();
    let start = Forwarded::NotServed { start_agent: true };
    // The whole request is ready before we connect: the agent's worker then wakes once,
    // with the request waiting, rather than for the connection and again for the data.
    let prepared = (|| {
        let header = Header {
            exe: exe?,
            mnt: mnt_identity()?,
            request: Request {
                env: std::env::vars()
                    .filter(|(k, _)| k.starts_with("CNI_") || k.starts_with("MVNET_"))
                    .collect::<BTreeMap<String, String>>(),
                args,
                stdin: Vec::new(),
            },
        };
        let netns = std::fs::File::open("/proc/thread-self/ns/net").ok()?;
        Some((header, netns))
    })();
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return start;
    };
    let Some((header, netns)) = prepared else {
        return Forwarded::NotServed { start_agent: false };
    };
    let timing = header.request.env.contains_key("MVNET_TIMING");
    if send_request(&stream, &header, stdin, netns.as_raw_fd()).is_err() {
        return start;
    }
    let sent = began.elapsed();
    let mut verdict = [0u8; 1];
    if stream.read_exact(&mut verdict).is_err() || verdict[0] != b'A' {
        // Declined (another binary or environment) or gone before taking it: our turn.
        return start;
    }
    match read_reply(&mut stream) {
        Ok((reply, stderr)) => {
            if !stderr.is_empty() {
                let _ = std::io::stderr().write_all(stderr.as_bytes());
            }
            if timing {
                let _ = writeln!(
                    std::io::stderr(),
                    "mvnet forward timing: connect+send={:.3}ms until-reply={:.3}ms",
                    sent.as_secs_f64() * 1e3,
                    (began.elapsed() - sent).as_secs_f64() * 1e3
                );
            }
            Forwarded::Served(reply)
        }
        Err(_) => Forwarded::Lost,
    }
}

/// A binary's identity: device, inode, size and modification time. A binary replaced on
/// disk (an upgrade) gets a new one, so an agent of the old binary is not used.
pub fn file_identity(path: &Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?;
    Some(format!(
        "{}:{}:{}:{}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

/// This thread's mount namespace.
pub fn mnt_identity() -> Option<String> {
    let m = std::fs::metadata("/proc/thread-self/ns/mnt").ok()?;
    Some(format!("{}:{}", m.dev(), m.ino()))
}

fn send_request(
    stream: &UnixStream,
    header: &Header,
    raw: &[u8],
    fd: RawFd,
) -> std::io::Result<()> {
    let head = serde_json::to_vec(header).map_err(std::io::Error::other)?;
    let mut msg = Vec::with_capacity(12 + head.len() + raw.len());
    msg.extend_from_slice(MAGIC);
    msg.extend_from_slice(&(head.len() as u32).to_le_bytes());
    msg.extend_from_slice(&head);
    msg.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    msg.extend_from_slice(raw);
    let sent = send_with_fd(stream.as_raw_fd(), &msg, fd)?;
    (&*stream).write_all(&msg[sent..])
}

/// Reads a request on the agent's side: the header, stdin, and the namespace fd.
pub fn read_request(stream: &UnixStream) -> std::io::Result<(Header, OwnedFd)> {
    // Big enough for most configs; the rest is read from the stream.
    let mut first = vec![0u8; 8 * 1024];
    let (n, fd) = recv_with_fd(stream.as_raw_fd(), &mut first)?;
    let fd = fd.ok_or_else(|| std::io::Error::other("no namespace passed"))?;
    first.truncate(n);
    let mut rest = std::io::Cursor::new(first).chain(stream);
    let mut magic = [0u8; 4];
    rest.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(std::io::Error::other("not a request"));
    }
    let head = read_chunk(&mut rest)?;
    let mut header: Header = serde_json::from_slice(&head).map_err(std::io::Error::other)?;
    header.request.stdin = read_chunk(&mut rest)?;
    Ok((header, fd))
}

fn read_reply(stream: &mut UnixStream) -> std::io::Result<(Reply, String)> {
    let mut status = [0u8; 1];
    stream.read_exact(&mut status)?;
    let stdout = read_chunk(stream)?;
    let stderr = read_chunk(stream)?;
    Ok((
        Reply {
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            status: status[0],
        },
        String::from_utf8_lossy(&stderr).into_owned(),
    ))
}

fn read_chunk(stream: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

/// Appends a length-prefixed chunk (the agent's reply parts).
pub fn write_chunk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

// ---------------------------------------------------------------- SCM_RIGHTS

const CMSG_SPACE: usize = 64;

/// A message of one data buffer (`iov`) with room for control messages (`control`, all
/// of it; a sender sets `msg_controllen` to what it fills in).
fn one_buffer_message(iov: &mut libc::iovec, control: &mut [u8]) -> libc::msghdr {
    // SAFETY: a plain C struct, for which all-zero bytes are a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = control.len() as _;
    msg
}

fn send_with_fd(sock: RawFd, data: &[u8], fd: RawFd) -> std::io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut control = [0u8; CMSG_SPACE];
    let mut msg = one_buffer_message(&mut iov, &mut control);
    // SAFETY: CMSG_SPACE/CMSG_LEN compute sizes only.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    // SAFETY: the control buffer is large enough for one header with one fd.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd);
    }
    // SAFETY: msg points at live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn recv_with_fd(sock: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut control = [0u8; CMSG_SPACE];
    let mut msg = one_buffer_message(&mut iov, &mut control);
    // SAFETY: msg points at live buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut fd = None;
    // SAFETY: walking the control messages the kernel wrote into our buffer.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const RawFd);
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_and_its_namespace_pass_through_a_socket_pair() {
        let (a, b) = UnixStream::pair().unwrap();
        let header = Header {
            exe: "e".into(),
            mnt: "m".into(),
            request: Request {
                env: [("CNI_COMMAND".to_string(), "ADD".to_string())].into(),
                args: vec!["mvnet-cni".into()],
                stdin: Vec::new(),
            },
        };
        let ns = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        send_request(&a, &header, b"{\"x\":1}", ns.as_raw_fd()).unwrap();
        let (h, fd) = read_request(&b).unwrap();
        assert_eq!(h.request.env["CNI_COMMAND"], "ADD");
        assert_eq!(h.request.args, ["mvnet-cni"]);
        assert_eq!(h.request.stdin, b"{\"x\":1}");
        let passed = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(passed.ino(), ns.metadata().unwrap().ino());
    }

    #[test]
    fn a_reply_reads_back_with_its_status_stdout_and_stderr() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let mut out = vec![3u8];
        write_chunk(&mut out, b"{}\n");
        write_chunk(&mut out, b"warning\n");
        a.write_all(&out).unwrap();
        let (reply, stderr) = read_reply(&mut b).unwrap();
        assert_eq!((reply.status, reply.stdout.as_str()), (3, "{}\n"));
        assert_eq!(stderr, "warning\n");
    }
}
