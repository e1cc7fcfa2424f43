//! The wire protocol between a short-lived front-end process and a resident agent
//! (`mvnet_core::resident` is the agent's side), and the caller's side of it.
//!
//! It lives in its own small crate so that the CNI plugin's forwarder (`mvnet-cni`, the
//! binary a runtime starts for every ADD) can speak it without linking the whole core:
//! starting a 0.6 MB binary costs a fraction of starting the 8 MB one that does the work.
//!
//! One request on a fresh unix-socket connection:
//! - caller → agent: `MVN2`, a length-prefixed JSON header ([`Header`]), the length-prefixed
//!   stdin, and two SCM_RIGHTS fds on the first bytes: the caller's network namespace, and
//!   the write end of a pipe (the "taken" pipe);
//! - agent → caller: `D` + a reason (declined: do the work yourself), or, once the work is
//!   done, `R`, the exit status byte, stdout and stderr, each length-prefixed.
//!
//! An agent that takes the request writes one byte into the taken pipe before it starts.
//! A caller whose connection ends without an answer reads that pipe: a byte there means
//! the agent took the command and ended mid-way (`Forwarded::Lost`); none, that nothing
//! was done. (Version 1 sent that byte on the socket, which woke the waiting caller once
//! more per request, for nothing.)

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
pub const MAGIC: &[u8; 4] = b"MVN2";

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
        let taken = taken_pipe().ok()?;
        Some((header, netns, taken))
    })();
    // Kept on this CPU until we return: whoever we hand over to (an exec of the full plugin,
    // the agent that plugin may start) gets our CPUs back.
    let here = OnThisCpu::new();
    let door = here
        .as_ref()
        .and_then(|h| UnixStream::connect(cpu_socket(socket, h.cpu)).ok());
    let Some(mut stream) = door.or_else(|| UnixStream::connect(socket).ok()) else {
        return start;
    };
    let Some((header, netns, (taken, taken_w))) = prepared else {
        return Forwarded::NotServed { start_agent: false };
    };
    let timing = header.request.env.contains_key("MVNET_TIMING");
    let fds = [netns.as_raw_fd(), taken_w.as_raw_fd()];
    if send_request(&stream, &header, stdin, &fds).is_err() {
        return start;
    }
    // Only the agent holds the write end now: its end is the only one that can mark it.
    drop(taken_w);
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

fn send_request(
    stream: &UnixStream,
    header: &Header,
    raw: &[u8],
    fds: &[RawFd],
) -> std::io::Result<()> {
    let head = serde_json::to_vec(header).map_err(std::io::Error::other)?;
    let mut msg = Vec::with_capacity(12 + head.len() + raw.len());
    msg.extend_from_slice(MAGIC);
    msg.extend_from_slice(&(head.len() as u32).to_le_bytes());
    msg.extend_from_slice(&head);
    msg.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    msg.extend_from_slice(raw);
    let sent = send_with_fds(stream.as_raw_fd(), &msg, fds)?;
    (&*stream).write_all(&msg[sent..])
}

/// A request as the agent reads it.
pub struct Incoming {
    pub header: Header,
    /// The caller's network namespace.
    pub netns: OwnedFd,
    /// The write end of the caller's taken pipe ([`mark_taken`]).
    pub taken: OwnedFd,
}

/// Reads a request on the agent's side: the header, stdin, and the two fds.
pub fn read_request(stream: &UnixStream) -> std::io::Result<Incoming> {
    // Big enough for most configs; the rest is read from the stream.
    let mut first = vec![0u8; 8 * 1024];
    let (n, mut fds) = recv_with_fds(stream.as_raw_fd(), &mut first)?;
    if fds.len() != 2 {
        return Err(std::io::Error::other(
            "not the namespace and the taken pipe",
        ));
    }
    let taken = fds.pop().expect("two fds");
    let netns = fds.pop().expect("two fds");
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
    Ok(Incoming {
        header,
        netns,
        taken,
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

fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> std::io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut control = [0u8; CMSG_SPACE];
    let mut msg = one_buffer_message(&mut iov, &mut control);
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
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Receives into `buf`, with the fds passed on these bytes (all of them, in order: each is
/// ours to close, kept or not).
fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
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
    Ok((n as usize, fds))
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
        let (taken, taken_w) = taken_pipe().unwrap();
        let fds = [ns.as_raw_fd(), taken_w.as_raw_fd()];
        send_request(&a, &header, b"{\"x\":1}", &fds).unwrap();
        drop(taken_w);
        let got = read_request(&b).unwrap();
        let h = &got.header;
        assert_eq!(h.request.env["CNI_COMMAND"], "ADD");
        assert_eq!(h.request.args, ["mvnet-cni"]);
        assert_eq!(h.request.stdin, b"{\"x\":1}");
        let passed = std::fs::metadata(format!("/proc/self/fd/{}", got.netns.as_raw_fd())).unwrap();
        assert_eq!(passed.ino(), ns.metadata().unwrap().ino());
        // The pipe: unmarked until the agent marks it; then marked.
        assert!(!was_taken(&taken));
        assert!(mark_taken(&got.taken));
        assert!(was_taken(&taken));
        // A caller gone: marking fails, so the agent does nothing for it.
        drop(taken);
        assert!(!mark_taken(&got.taken));
    }

    /// The caller's view of each way an agent can answer, through a real socket.
    #[test]
    fn served_declined_lost_or_untouched() {
        let dir = std::env::temp_dir().join(format!("mvnet-forward-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        struct Gone(std::path::PathBuf);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _gone = Gone(dir.clone());
        let sock = dir.join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        // What the agent does with each request, in turn.
        let agent = std::thread::spawn(move || {
            for way in ["reply", "decline", "take and die", "die"] {
                let (mut s, _) = listener.accept().unwrap();
                let got = read_request(&s).unwrap();
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
        });
        let call = || forward(&sock, Some("exe".into()), vec!["x".into()], b"{}");
        match call() {
            Forwarded::Served(r) => assert_eq!((r.status, r.stdout.as_str()), (7, "out")),
            _ => panic!("served"),
        }
        assert!(matches!(call(), Forwarded::NotServed { start_agent: true }));
        assert!(matches!(call(), Forwarded::Lost));
        assert!(matches!(call(), Forwarded::NotServed { start_agent: true }));
        agent.join().unwrap();
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
