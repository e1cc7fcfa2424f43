//! The wire protocol between a short-lived front-end process and a resident agent
//! (`mvnet_core::resident` is the agent's side), and the caller's side of it.
//!
//! It lives in its own small crate so that the CNI plugin's forwarder (`mvnet-cni`, the
//! binary a runtime starts for every ADD) can speak it without linking the whole core:
//! starting a 0.6 MB binary costs a fraction of starting the 8 MB one that does the work.
//!
//! One request is one datagram to the agent's unix datagram socket:
//! - caller → agent: `MVN3`, a length-prefixed JSON header ([`Header`]), the length-prefixed
//!   stdin, and SCM_RIGHTS fds: the caller's network namespace, the write end of a pipe
//!   (the "taken" pipe), the agent's end of a fresh socket pair (the reply channel), and,
//!   for a stdin larger than [`INLINE_MAX`], a memfd holding it (the inline stdin is empty);
//! - agent → caller, on the socket pair: `D` + a reason (declined: do the work yourself),
//!   or, once the work is done, `R`, the exit status byte, stdout and stderr, each
//!   length-prefixed.
//!
//! Why a datagram: with a stream connection, `connect` woke the agent's worker once (its
//! `accept` returned and its read found nothing yet) and the request's bytes woke it again;
//! and the worker's reading of them woke the waiting caller once more, for nothing (a unix
//! stream socket wakes every sleeper on its queue when its send buffer drains). One
//! datagram wakes the worker once; nobody sleeps on the caller's datagram socket.
//!
//! An agent that takes the request writes one byte into the taken pipe before it starts.
//! A caller whose reply channel ends without an answer reads that pipe: a byte there means
//! the agent took the command and ended mid-way (`Forwarded::Lost`); none, that nothing
//! was done. An agent that dies with the request still queued closes its fds with it, so
//! the caller sees the same end.

pub mod arena;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Set to anything to never use or start an agent.
pub const OFF_ENV: &str = "MVNET_NO_AGENT";
/// Set by a forwarder for the binary it hands a command to after the agent that took it
/// ended: that binary then reports the loss as it does when it forwards itself.
pub const LOST_ENV: &str = "MVNET_AGENT_LOST";
/// The first bytes of every request.
pub const MAGIC: &[u8; 4] = b"MVN3";
/// A stdin up to this size travels in the request's datagram; a larger one in a memfd.
pub const INLINE_MAX: usize = 32 * 1024;
/// The largest stdin the agent accepts in a memfd (a CNI config is kilobytes).
pub const BIG_STDIN_MAX: u64 = 16 << 20;
/// The largest request datagram (the agent's receive buffer): the header and an inline
/// stdin. Unix datagrams up to the sender's buffer (about 208 KiB by default) are fine.
pub const DATAGRAM_MAX: usize = 64 * 1024;

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

/// The agent's socket for callers on `cpu`, beside its shared `socket`
/// (`cni-agent.sock` → `cni-agent.cpu3.sock`): its workers run on that CPU only.
pub fn cpu_socket(socket: &Path, cpu: usize) -> std::path::PathBuf {
    let stem = socket
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    socket.with_file_name(format!("{stem}.cpu{cpu}.sock"))
}

/// This thread kept on the CPU it runs on, until dropped (then it may run where it could
/// before). Why: see the agent's per-CPU sockets (`cpu_socket`): the worker there wakes on
/// our CPU, and its answer wakes us on it, with no wake-up of an idle virtual CPU between.
struct OnThisCpu {
    cpu: usize,
    before: libc::cpu_set_t,
}

impl OnThisCpu {
    fn new() -> Option<OnThisCpu> {
        // SAFETY: sched_getcpu has no arguments.
        let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).ok()?;
        // SAFETY: all-zero cpu_set_t values are valid; the calls fill in or read sets that
        // live for the calls, with their own size; 0 is this thread.
        unsafe {
            let mut before: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of_val(&before), &mut before) != 0 {
                return None;
            }
            let mut only: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut only);
            if libc::sched_setaffinity(0, std::mem::size_of_val(&only), &only) != 0 {
                return None;
            }
            Some(OnThisCpu { cpu, before })
        }
    }
}

impl Drop for OnThisCpu {
    fn drop(&mut self) {
        // SAFETY: the set saved in `new`, with its own size; 0 is this thread.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&self.before), &self.before) };
    }
}

/// Hands a command to the agent listening on `socket` (or on its socket for this CPU, when
/// it has one), for the binary whose identity is `exe` (the agent compares it with its own).
pub fn forward(socket: &Path, exe: Option<String>, args: Vec<String>, stdin: &[u8]) -> Forwarded {
    if std::env::var_os(OFF_ENV).is_some() {
        return Forwarded::NotServed { start_agent: false };
    }
    let began = Instant::now();
    let start = Forwarded::NotServed { start_agent: true };
    // The whole request is ready before we send it: one datagram wakes the agent's worker.
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
        let taken = taken_pipe().ok()?;
        let (mine, theirs) = UnixStream::pair().ok()?;
        let big = if stdin.len() > INLINE_MAX {
            Some(memfd_holding(c"mvnet-request", stdin).ok()?)
        } else {
            None
        };
        let inline = if big.is_some() { &[][..] } else { stdin };
        let msg = encode_request(&header, inline).ok()?;
        let door = UnixDatagram::unbound().ok()?;
        Some((header, msg, netns, taken, mine, theirs, big, door))
    })();
    let Some((header, msg, netns, (taken, taken_w), mut stream, theirs, big, door)) = prepared
    else {
        return Forwarded::NotServed { start_agent: false };
    };
    let mut fds = vec![netns.as_raw_fd(), taken_w.as_raw_fd(), theirs.as_raw_fd()];
    if let Some(f) = &big {
        fds.push(f.as_raw_fd());
    }
    // Kept on this CPU until we return: whoever we hand over to (an exec of the full plugin,
    // the agent that plugin may start) gets our CPUs back.
    let here = OnThisCpu::new();
    let sent = here
        .as_ref()
        .and_then(|h| send_datagram(&door, &cpu_socket(socket, h.cpu), &msg, &fds).ok())
        .or_else(|| send_datagram(&door, socket, &msg, &fds).ok());
    if sent.is_none() {
        // Nobody there: the work is done here, and an agent started for the next one.
        return start;
    }
    // Only the agent holds these now: its ends are the only ones that can mark the pipe or
    // answer, and they close when it ends.
    drop((taken_w, theirs, big));
    let timing = header.request.env.contains_key("MVNET_TIMING");
    let sent = began.elapsed();
    let mut verdict = [0u8; 1];
    if stream.read_exact(&mut verdict).is_err() || verdict[0] != b'R' {
        // Declined, or gone: did it take the command first?
        return if verdict[0] != b'D' && was_taken(&taken) {
            Forwarded::Lost
        } else {
            start
        };
    }
    match read_reply(&mut stream) {
        Ok((reply, stderr)) => {
            if !stderr.is_empty() {
                let _ = std::io::stderr().write_all(stderr.as_bytes());
            }
            if timing {
                let _ = writeln!(
                    std::io::stderr(),
                    "mvnet forward timing: send={:.3}ms until-reply={:.3}ms",
                    sent.as_secs_f64() * 1e3,
                    (began.elapsed() - sent).as_secs_f64() * 1e3
                );
            }
            Forwarded::Served(reply)
        }
        Err(_) => Forwarded::Lost,
    }
}

/// The taken pipe: (read end, write end), both close-on-exec; the read end does not block.
fn taken_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Whether the agent marked the taken pipe.
fn was_taken(read_end: &OwnedFd) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: a read of at most one byte into a live buffer, from a non-blocking pipe.
    unsafe { libc::read(read_end.as_raw_fd(), b.as_mut_ptr().cast(), 1) == 1 }
}

/// The agent's side: marks the request taken (see the module's notes). False when the
/// caller has gone already (its read end is closed): then nothing may be done for it.
pub fn mark_taken(pipe: &OwnedFd) -> bool {
    // SAFETY: a write of one byte from a live buffer; a closed read end gives EPIPE (the
    // process ignores SIGPIPE, as Rust programs do).
    unsafe { libc::write(pipe.as_raw_fd(), b"T".as_ptr().cast(), 1) == 1 }
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

/// A request's bytes: the magic, the header and the stdin, each length-prefixed.
fn encode_request(header: &Header, stdin: &[u8]) -> std::io::Result<Vec<u8>> {
    let head = serde_json::to_vec(header).map_err(std::io::Error::other)?;
    let mut msg = Vec::with_capacity(12 + head.len() + stdin.len());
    msg.extend_from_slice(MAGIC);
    write_chunk(&mut msg, &head);
    write_chunk(&mut msg, stdin);
    if msg.len() > DATAGRAM_MAX {
        return Err(std::io::Error::other(
            "the request is too large for a datagram",
        ));
    }
    Ok(msg)
}

/// A memfd named `name` holding `bytes`, positioned at its start: a stdin too large for
/// the request's datagram, or the config the forwarder hands to the full plugin.
pub fn memfd_holding(name: &std::ffi::CStr, bytes: &[u8]) -> std::io::Result<std::fs::File> {
    use std::io::Seek;
    // SAFETY: memfd_create with a valid C string; the fd is ours.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    f.write_all(bytes)?;
    f.rewind()?;
    Ok(f)
}

/// A request as the agent receives it.
pub struct Incoming {
    pub header: Header,
    /// The caller's network namespace.
    pub netns: OwnedFd,
    /// The write end of the caller's taken pipe ([`mark_taken`]).
    pub taken: OwnedFd,
    /// Where the answer goes; it hangs up when the caller ends.
    pub reply: UnixStream,
}

/// Waits for a request on the agent's datagram socket `door` (`buf`: at least
/// [`DATAGRAM_MAX`] bytes, reused between calls). An error for anything that is not a
/// whole request; its fds are closed then, so its caller sees the agent decline.
pub fn receive_request(door: &UnixDatagram, buf: &mut [u8]) -> std::io::Result<Incoming> {
    let (n, flags, mut fds) = recv_with_fds(door.as_raw_fd(), buf)?;
    if flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 || !(3..=4).contains(&fds.len()) {
        return Err(std::io::Error::other("not a whole request"));
    }
    let big = if fds.len() == 4 { fds.pop() } else { None };
    let reply = UnixStream::from(fds.pop().expect("three fds"));
    let taken = fds.pop().expect("three fds");
    let netns = fds.pop().expect("three fds");
    let mut rest = &buf[..n];
    let mut magic = [0u8; 4];
    rest.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(std::io::Error::other("not a request"));
    }
    let head = read_chunk(&mut rest)?;
    let mut header: Header = serde_json::from_slice(&head).map_err(std::io::Error::other)?;
    header.request.stdin = read_chunk(&mut rest)?;
    if let Some(fd) = big {
        // Read before the caller's uid is checked (that check needs the whole request), so
        // only what cannot block or grow without end: a regular file (the memfd), up to
        // its size at this moment and at most BIG_STDIN_MAX.
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::from(fd);
        let meta = f.metadata()?;
        if !meta.is_file() || meta.len() > BIG_STDIN_MAX {
            return Err(std::io::Error::other(
                "the stdin fd is not a memfd of a sane size",
            ));
        }
        f.seek(SeekFrom::Start(0))?;
        f.take(meta.len()).read_to_end(&mut header.request.stdin)?;
    }
    Ok(Incoming {
        header,
        netns,
        taken,
        reply,
    })
}

/// Reads what follows the `R` of a reply.
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

/// Sends `data` with `fds` as one datagram from `sock` to the socket bound at `to`.
fn send_datagram(
    sock: &UnixDatagram,
    to: &Path,
    data: &[u8],
    fds: &[RawFd],
) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: a plain C struct, for which all-zero bytes are a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let path = to.as_os_str().as_bytes();
    if path.len() >= addr.sun_path.len() {
        return Err(std::io::Error::other("socket path too long"));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(path) {
        *d = *s as libc::c_char;
    }
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut control = [0u8; CMSG_SPACE];
    let mut msg = one_buffer_message(&mut iov, &mut control);
    msg.msg_name = &mut addr as *mut _ as *mut libc::c_void;
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE/CMSG_LEN compute sizes only.
    let space = unsafe { libc::CMSG_SPACE(bytes) } as usize;
    assert!(space <= CMSG_SPACE, "room for the fds");
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer is large enough for one header with these fds (above).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(bytes) as _;
        let at = libc::CMSG_DATA(cmsg) as *mut RawFd;
        for (i, fd) in fds.iter().enumerate() {
            std::ptr::write_unaligned(at.add(i), *fd);
        }
    }
    // SAFETY: msg points at live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Receives into `buf`, with the fds passed on these bytes (all of them, in order: each is
/// ours to close, kept or not).
/// Also returns the message's flags (MSG_TRUNC, MSG_CTRUNC).
fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, i32, Vec<OwnedFd>)> {
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
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into our buffer.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, msg.msg_flags, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            exe: "e".into(),
            mnt: "m".into(),
            request: Request {
                env: [("CNI_COMMAND".to_string(), "ADD".to_string())].into(),
                args: vec!["mvnet-cni".into()],
                stdin: Vec::new(),
            },
        }
    }

    /// A private directory for sockets, removed on drop.
    struct Dir(std::path::PathBuf);
    impl Dir {
        fn new(what: &str) -> Dir {
            let d =
                std::env::temp_dir().join(format!("mvnet-forward-{what}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_request_its_fds_and_a_large_stdin_pass_in_one_datagram() {
        let dir = Dir::new("dgram");
        let at = dir.0.join("agent.sock");
        let agent = UnixDatagram::bind(&at).unwrap();
        let mut buf = vec![0u8; DATAGRAM_MAX];
        let big = vec![b'x'; INLINE_MAX + 1];
        for stdin in [&b"{\"x\":1}"[..], &big[..]] {
            let ns = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
            let (taken, taken_w) = taken_pipe().unwrap();
            let (mut mine, theirs) = UnixStream::pair().unwrap();
            let memfd =
                (stdin.len() > INLINE_MAX).then(|| memfd_holding(c"mvnet-request", stdin).unwrap());
            let mut fds = vec![ns.as_raw_fd(), taken_w.as_raw_fd(), theirs.as_raw_fd()];
            fds.extend(memfd.as_ref().map(|f| f.as_raw_fd()));
            let inline = if memfd.is_some() { &[][..] } else { stdin };
            let msg = encode_request(&header(), inline).unwrap();
            send_datagram(&UnixDatagram::unbound().unwrap(), &at, &msg, &fds).unwrap();
            drop((taken_w, theirs, memfd));
            let got = receive_request(&agent, &mut buf).unwrap();
            let h = &got.header;
            assert_eq!(h.request.env["CNI_COMMAND"], "ADD");
            assert_eq!(h.request.args, ["mvnet-cni"]);
            assert_eq!(h.request.stdin, stdin);
            let passed =
                std::fs::metadata(format!("/proc/self/fd/{}", got.netns.as_raw_fd())).unwrap();
            assert_eq!(passed.ino(), ns.metadata().unwrap().ino());
            // The reply channel leads back to the caller.
            (&got.reply).write_all(b"R").unwrap();
            let mut r = [0u8; 1];
            mine.read_exact(&mut r).unwrap();
            assert_eq!(&r, b"R");
            // The pipe: unmarked until the agent marks it; then marked.
            assert!(!was_taken(&taken));
            assert!(mark_taken(&got.taken));
            assert!(was_taken(&taken));
            // A caller gone: marking fails, and its reply channel says it hung up.
            drop(taken);
            assert!(!mark_taken(&got.taken));
        }
        // A request too large for a datagram is not sent at all.
        let mut huge = header();
        huge.request.args = vec!["y".repeat(DATAGRAM_MAX)];
        assert!(encode_request(&huge, b"").is_err());
        // Anything else is refused: no fds, or not our magic.
        let junk = UnixDatagram::unbound().unwrap();
        junk.send_to(b"MVN3", &at).unwrap();
        assert!(receive_request(&agent, &mut buf).is_err());
        let (_keep, theirs) = UnixStream::pair().unwrap();
        let fd = theirs.as_raw_fd();
        send_datagram(&junk, &at, b"MVN2\0\0\0\0\0\0\0\0", &[fd, fd, fd]).unwrap();
        assert!(receive_request(&agent, &mut buf).is_err());
        // A fourth fd that is not a regular file (here an empty pipe, whose writer stays
        // open) is refused at once instead of blocking the agent's worker on a read.
        let (pipe_r, _pipe_w) = taken_pipe().unwrap();
        let msg = encode_request(&header(), b"").unwrap();
        send_datagram(&junk, &at, &msg, &[fd, fd, fd, pipe_r.as_raw_fd()]).unwrap();
        let err = receive_request(&agent, &mut buf)
            .err()
            .expect("a pipe is refused");
        assert!(err.to_string().contains("not a memfd"), "{err}");
    }

    /// The caller's view of each way an agent can answer, through a real socket.
    #[test]
    fn served_declined_lost_or_untouched() {
        let dir = Dir::new("ways");
        let sock = dir.0.join("agent.sock");
        let door = UnixDatagram::bind(&sock).unwrap();
        // What the agent does with each request, in turn.
        let agent = std::thread::spawn(move || {
            let mut buf = vec![0u8; DATAGRAM_MAX];
            for way in ["reply", "decline", "take and die", "die"] {
                let got = receive_request(&door, &mut buf).unwrap();
                let mut s = &got.reply;
                match way {
                    "reply" => {
                        assert!(mark_taken(&got.taken));
                        let mut out = vec![b'R', 7];
                        write_chunk(&mut out, b"out");
                        write_chunk(&mut out, b"");
                        s.write_all(&out).unwrap();
                    }
                    "decline" => {
                        let mut out = vec![b'D'];
                        write_chunk(&mut out, b"no");
                        s.write_all(&out).unwrap();
                    }
                    "take and die" => {
                        assert!(mark_taken(&got.taken));
                    }
                    _ => {}
                }
            }
            door
        });
        let call = || forward(&sock, Some("exe".into()), vec!["x".into()], b"{}");
        match call() {
            Forwarded::Served(r) => assert_eq!((r.status, r.stdout.as_str()), (7, "out")),
            _ => panic!("served"),
        }
        assert!(matches!(call(), Forwarded::NotServed { start_agent: true }));
        assert!(matches!(call(), Forwarded::Lost));
        assert!(matches!(call(), Forwarded::NotServed { start_agent: true }));
        // An agent that ends with a request still queued: its fds close with its socket.
        let door = agent.join().unwrap();
        let queued = std::thread::spawn(move || call_at(&dir.0.join("agent.sock")));
        while door_queue_is_empty(&door) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(door);
        assert!(matches!(
            queued.join().unwrap(),
            Forwarded::NotServed { start_agent: true }
        ));
        // And no agent at all.
        assert!(matches!(call(), Forwarded::NotServed { start_agent: true }));
    }

    fn call_at(sock: &Path) -> Forwarded {
        forward(sock, Some("exe".into()), vec!["x".into()], b"{}")
    }

    fn door_queue_is_empty(door: &UnixDatagram) -> bool {
        let mut pfd = libc::pollfd {
            fd: door.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd, without waiting.
        unsafe { libc::poll(&mut pfd, 1, 0) == 0 }
    }

    #[test]
    fn each_cpu_has_its_socket_beside_the_shared_one() {
        let shared = Path::new("/r/cni-agent.sock");
        assert_eq!(
            cpu_socket(shared, 3),
            Path::new("/r/cni-agent.cpu3.sock").to_path_buf()
        );
    }

    #[test]
    fn a_caller_is_kept_on_its_cpu_only_while_it_forwards() {
        let all = |set: &libc::cpu_set_t| {
            (0..libc::CPU_SETSIZE as usize)
                // SAFETY: reads a bit within the set's size.
                .filter(|c| unsafe { libc::CPU_ISSET(*c, set) })
                .count()
        };
        let now = || {
            // SAFETY: fills in a valid set of its own size, for this thread.
            let mut s: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&s), &mut s) };
            s
        };
        std::thread::spawn(move || {
            let before = all(&now());
            let here = OnThisCpu::new().expect("pinned");
            assert_eq!(all(&now()), 1);
            // SAFETY: sched_getcpu has no arguments.
            assert_eq!(unsafe { libc::sched_getcpu() } as usize, here.cpu);
            drop(here);
            assert_eq!(all(&now()), before);
        })
        .join()
        .unwrap();
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
