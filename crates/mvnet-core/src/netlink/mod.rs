//! A small synchronous rtnetlink client over netlink-packet-route. One socket per network
//! namespace: a socket stays bound to the namespace it was opened in, so we open it there
//! once (see `netns::run_in`) instead of moving the process between namespaces.

mod addr;
mod link;
mod route;

pub use link::{IpvlanLink, Link, MacvlanLink, ProbeKind, VethEnd};
pub use route::Route;

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::KernelContext;
use crate::netns::Netns;
use crate::Result;

pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

thread_local! {
    /// A receive buffer of a socket that was closed, for the next one on this thread: a
    /// resident process (the CNI agent) opens sockets per request, and 64 KiB freed and
    /// allocated again each time is an munmap and an mmap with musl's allocator.
    static SPARE_BUFFER: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

impl Drop for Netlink {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let _ = SPARE_BUFFER.try_with(|b| *b.borrow_mut() = Some(buf));
    }
}

impl Netlink {
    /// A socket in the calling thread's current network namespace.
    pub fn new() -> Result<Netlink> {
        let open = || -> io::Result<Socket> {
            let mut sock = Socket::new(NETLINK_ROUTE)?;
            sock.bind_auto()?;
            sock.connect(&SocketAddr::new(0, 0))?;
            Ok(sock)
        };
        let sock = open().kernel("open rtnetlink socket")?;
        let buf = SPARE_BUFFER
            .with(|b| b.borrow_mut().take())
            .unwrap_or_else(|| Vec::with_capacity(64 * 1024));
        Ok(Netlink { sock, seq: 0, buf })
    }

    /// A socket bound inside `ns`.
    pub fn in_netns(ns: &Netns) -> Result<Netlink> {
        crate::netns::run_in(ns, Netlink::new)?
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.sock.send(&out, 0)?;
        Ok(self.seq)
    }

    /// Reads replies to `seq` until the ACK, the error, or the end of a dump, each parsed
    /// by netlink-packet-route.
    fn receive(
        &mut self,
        seq: u32,
        mut on_message: impl FnMut(RouteNetlinkMessage),
    ) -> io::Result<()> {
        let mut bad = None;
        self.receive_raw(seq, |_, whole, _| {
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(whole) {
                Ok(packet) => {
                    if let NetlinkPayload::InnerMessage(m) = packet.payload {
                        on_message(m);
                    }
                }
                Err(e) => {
                    bad.get_or_insert_with(|| {
                        io::Error::new(io::ErrorKind::InvalidData, e.to_string())
                    });
                }
            }
        })?;
        bad.map_or(Ok(()), Err)
    }

    /// Reads replies to `seq` until the ACK, the error, or the end of a dump, and calls
    /// `on_message(type, whole message, payload)` for each of the others, unparsed. Links
    /// are parsed by hand from here: netlink-packet-route's full parse (every attribute,
    /// the per-protocol settings included) was most of the CPU time of a look-up.
    fn receive_raw(
        &mut self,
        seq: u32,
        mut on_message: impl FnMut(u16, &[u8], &[u8]),
    ) -> io::Result<()> {
        const NLMSG_ERROR: u16 = 2;
        const NLMSG_DONE: u16 = 3;
        loop {
            self.buf.clear();
            let n = self.sock.recv(&mut self.buf, 0)?;
            let mut rest = &self.buf[..n];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                if len < 16 || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                let msg_seq = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
                let (whole, payload) = (&rest[..len], &rest[16..len]);
                rest = &rest[((len + 3) & !3).min(rest.len())..];
                if msg_seq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = payload
                            .get(0..4)
                            .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                            .ok_or_else(|| {
                                io::Error::new(io::ErrorKind::InvalidData, "short netlink error")
                            })?;
                        return match code {
                            0 => Ok(()),
                            c => Err(io::Error::from_raw_os_error(-c)),
                        };
                    }
                    _ => on_message(kind, whole, payload),
                }
            }
        }
    }

    /// Sends a request that changes something and waits for the kernel's verdict.
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let seq = self.send(msg, flags | NLM_F_ACK)?;
        self.receive(seq, |_| {})
    }

    /// Sends a request and collects the answers (a dump, or a single GET).
    pub fn query(
        &mut self,
        msg: RouteNetlinkMessage,
        dump: bool,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        // A plain GET has no terminator unless an ACK is requested; dumps end with DONE.
        let seq = self.send(msg, if dump { NLM_F_DUMP } else { NLM_F_ACK })?;
        let mut out = Vec::new();
        self.receive(seq, |m| out.push(m))?;
        Ok(out)
    }
}
