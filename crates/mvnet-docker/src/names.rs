//! Docker's names for its networks. No plugin call carries a network's name, so the plugin
//! asks Docker's API, and only from a background thread, after the call that created the
//! network has been answered: dockerd waits on its plugins while it starts, and a plugin
//! that calls back into dockerd from inside a request can deadlock it (the top complaint
//! about docker-net-dhcp). A name that cannot be learned only costs the mvnet-side label.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mvnet_core::engine::Engine;

/// Where Docker's API listens (`--docker-host`; `unix://` is optional).
pub fn socket_path(host: &str) -> PathBuf {
    PathBuf::from(host.strip_prefix("unix://").unwrap_or(host))
}

/// `GET path` on Docker's API; the JSON body of a 200 answer.
fn get(socket: &Path, path: &str) -> Result<serde_json::Value, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    let limit = Some(Duration::from_secs(5));
    s.set_read_timeout(limit).map_err(|e| e.to_string())?;
    s.set_write_timeout(limit).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    parse_response(&raw)
}

/// Status line and body of an HTTP/1.0 answer (no chunking: HTTP/1.0 has none).
fn parse_response(raw: &[u8]) -> Result<serde_json::Value, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("a truncated HTTP answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("HTTP {status}"));
    }
    serde_json::from_str(body).map_err(|e| format!("bad JSON: {e}"))
}

/// The hostname of the container that holds `endpoint_id` on network `network_id`, from
/// Docker's API (empty when Docker does not say; only ever called off Docker's path).
pub fn container_hostname(docker: &Path, network_id: &str, endpoint_id: &str) -> String {
    let Ok(net) = get(docker, &format!("/networks/{network_id}")) else {
        return String::new();
    };
    let Some(containers) = net["Containers"].as_object() else {
        return String::new();
    };
    let Some(id) = containers
        .iter()
        .find(|(_, c)| c["EndpointID"].as_str() == Some(endpoint_id))
        .map(|(id, _)| id.clone())
    else {
        return String::new();
    };
    get(docker, &format!("/containers/{id}/json"))
        .ok()
        .and_then(|c| c["Config"]["Hostname"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Learns the names of the Docker networks in `ids` and records them, retrying for a while
/// (Docker commits a network only after `CreateNetwork` has been answered).
pub fn learn_in_background(root: PathBuf, docker: PathBuf, ids: Vec<String>) {
    if ids.is_empty() {
        return;
    }
    std::thread::spawn(move || {
        let mut pending = ids;
        for attempt in 0..40 {
            std::thread::sleep(Duration::from_millis(if attempt == 0 { 100 } else { 500 }));
            pending.retain(|id| match get(&docker, &format!("/networks/{id}")) {
                Ok(v) => {
                    let name = v["Name"].as_str().unwrap_or_default().to_string();
                    if name.is_empty() {
                        return true;
                    }
                    match Engine::open_existing(&root)
                        .and_then(|mut e| e.record_runtime_name(id, &name))
                    {
                        Ok(n) => eprintln!(
                            "mvnet-docker: Docker network {name} is mvnet network {}",
                            n.name
                        ),
                        Err(e) => eprintln!("mvnet-docker: cannot record the name of {id}: {e}"),
                    }
                    false
                }
                // Not there yet (404), or dockerd busy: try again later.
                Err(e) => {
                    if attempt == 39 {
                        eprintln!("mvnet-docker: cannot learn Docker's name for network {id}: {e}");
                    } else if attempt == 0 {
                        eprintln!("mvnet-docker: Docker's name for network {id}: not yet ({e})");
                    }
                    true
                }
            });
            if pending.is_empty() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"Name\":\"web\"}\n";
        assert_eq!(parse_response(ok).unwrap()["Name"], "web");
        let missing = b"HTTP/1.0 404 Not Found\r\n\r\n{\"message\":\"no such network\"}";
        assert_eq!(parse_response(missing).unwrap_err(), "HTTP 404");
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n").is_err());
        assert_eq!(
            socket_path("unix:///var/run/docker.sock"),
            PathBuf::from("/var/run/docker.sock")
        );
    }
}
